package scanner

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/iotest"
	"time"
)

// Replies observed from clamd 1.4.6 (Debian's clamav-daemon) with the test
// signature database of integration/scripts/clamd.sh, and, marked "source",
// replies read in clamd's source (clamd/server-th.c, clamd/scanner.c:
// conn_reply_error appends " ERROR"; scanfd sends "stream: " + cl_strerror
// + " ERROR").
var parseReplyCases = []struct {
	reply  string
	want   Verdict
	err    bool
	unavlb bool // the error wraps ErrUnavailable
}{
	{reply: "stream: OK\x00", want: Verdict{Clean: true, Engine: "clamd"}},
	{reply: "stream: OK\n", want: Verdict{Clean: true, Engine: "clamd"}},
	{reply: "stream: OK", want: Verdict{Clean: true, Engine: "clamd"}},
	{reply: "stream: Eicar-Test-Signature.UNOFFICIAL FOUND\x00", want: found("Eicar-Test-Signature.UNOFFICIAL")},
	{reply: "stream: Eicar-Test-Signature.UNOFFICIAL FOUND\n", want: found("Eicar-Test-Signature.UNOFFICIAL")},
	{reply: "stream: Mftd-Test-Signature.UNOFFICIAL FOUND\x00", want: found("Mftd-Test-Signature.UNOFFICIAL")},
	{reply: "stream: ClamAV-Test-File.UNOFFICIAL FOUND\x00", want: found("ClamAV-Test-File.UNOFFICIAL")},
	{reply: "stream: Heuristics.Limits.Exceeded.MaxFileSize FOUND\x00", want: found("Heuristics.Limits.Exceeded.MaxFileSize")},
	{reply: "stream: Heuristics.Limits.Exceeded.MaxScanSize FOUND\x00", want: found("Heuristics.Limits.Exceeded.MaxScanSize")},
	{reply: "stream: Heuristics.Limits.Exceeded.MaxRecursion FOUND\x00", want: found("Heuristics.Limits.Exceeded.MaxRecursion")},
	{reply: "stream: Heuristics.Limits.Exceeded.MaxFiles FOUND\x00", want: found("Heuristics.Limits.Exceeded.MaxFiles")},
	{reply: "stream: Heuristics.Encrypted.Zip FOUND\x00", want: found("Heuristics.Encrypted.Zip")},
	// Names of the official databases (a clamd with daily.cvd).
	{reply: "stream: Win.Test.EICAR_HDB-1 FOUND\x00", want: found("Win.Test.EICAR_HDB-1")},
	{reply: "stream: Clamav.Test.File-6 FOUND\x00", want: found("Clamav.Test.File-6")},
	// A name with spaces and colons, and one that ends in " FOUND" itself.
	{reply: "stream: Sanesecurity.Foxhole.Zip_fs217: Odd Name FOUND\x00", want: found("Sanesecurity.Foxhole.Zip_fs217: Odd Name")},
	{reply: "stream: X FOUND FOUND\x00", want: found("X FOUND")},
	{reply: "INSTREAM size limit exceeded. ERROR\x00", want: Verdict{Action: Quarantine, Engine: "clamd", Reason: clamdTooLargeReason}},
	{reply: "COMMAND READ TIMED OUT\n", err: true, unavlb: true},
	{reply: "UNKNOWN COMMAND\x00", err: true},
	{reply: "UNKNOWN COMMAND\n", err: true},
	{reply: "PONG\x00", err: true},
	{reply: "ClamAV 1.4.6\x00", err: true},
	// IDSESSION replies carry the command's number: never taken for clean.
	{reply: "1: PONG\x00", err: true},
	{reply: "2: stream: OK\x00", err: true},
	{reply: "1: stream: Eicar-Test-Signature.UNOFFICIAL FOUND\x00", err: true},
	// source
	{reply: "Error processing command. ERROR\x00", err: true},
	{reply: "Error writing to temporary file ERROR\x00", err: true},
	{reply: "stream: Can't allocate memory ERROR\x00", err: true},
	{reply: "stream: Can't create temporary file ERROR\x00", err: true},
	{reply: "stream: Not a regular file ERROR\x00", err: true},
	{reply: "Only nCMDS\\n and zCMDS\\0 are accepted inside IDSESSION. ERROR\x00", err: true},
	// Malformed.
	{reply: "", err: true},
	{reply: "\x00", err: true},
	{reply: "stream: OK\r\n", err: true},
	{reply: "stream: OK\x00stream: OK", err: true},
	{reply: " stream: OK", err: true},
	{reply: "stream:  FOUND", err: true},
	{reply: "stream: FOUND", err: true},
	{reply: "stream:  Eicar FOUND", err: true},
	{reply: "stream: Ei\x01car FOUND", err: true},
	{reply: "stream: OK FOUND", want: found("OK")},
	{reply: "STREAM: OK", err: true},
}

func found(name string) Verdict {
	return Verdict{Action: Quarantine, Engine: "clamd", Reason: name}
}

func TestParseReply(t *testing.T) {
	for _, tc := range parseReplyCases {
		got, err := parseReply(tc.reply)
		switch {
		case tc.err && err == nil:
			t.Errorf("parseReply(%q) = %+v, want an error", tc.reply, got)
		case tc.err && errors.Is(err, ErrUnavailable) != tc.unavlb:
			t.Errorf("parseReply(%q): error %v; wraps ErrUnavailable: %v, want %v", tc.reply, err, !tc.unavlb, tc.unavlb)
		case !tc.err && err != nil:
			t.Errorf("parseReply(%q): %v", tc.reply, err)
		case !tc.err && got != tc.want:
			t.Errorf("parseReply(%q) = %+v, want %+v", tc.reply, got, tc.want)
		}
	}
}

func TestParseReplyQuotesAtMost200Bytes(t *testing.T) {
	_, err := parseReply("stream: " + strings.Repeat("x", 3000) + " ERROR")
	if err == nil || !strings.Contains(err.Error(), "unexpected reply") || len(err.Error()) > 300 {
		t.Fatalf("error %q: want an unexpected reply quoting at most 200 bytes", err)
	}
}

func TestNewClamdAddress(t *testing.T) {
	good := map[string]string{
		"tcp://127.0.0.1:3310":          "tcp",
		"tcp://[::1]:3310":              "tcp",
		"tcp://clamd.internal:3310":     "tcp",
		"unix:///run/clamav/clamd.ctl":  "unix",
		"unix:///tmp/dir with space/so": "unix",
	}
	for addr, network := range good {
		c, err := NewClamd(ClamdConfig{Address: addr})
		if err != nil {
			t.Errorf("NewClamd(%q): %v", addr, err)
			continue
		}
		if c.network != network || c.Address() != addr {
			t.Errorf("NewClamd(%q): network %q, Address %q", addr, c.network, c.Address())
		}
	}
	bad := []string{
		"", "127.0.0.1:3310", "localhost", "tcp://", "tcp://127.0.0.1", "tcp://:3310", "tcp://127.0.0.1:0",
		"tcp://127.0.0.1:65536", "tcp://127.0.0.1:clamd", "tcp://127.0.0.1:3310/", "tcp://127.0.0.1:-1",
		"TCP://127.0.0.1:3310", "udp://127.0.0.1:3310", "http://127.0.0.1:3310", "unix://", "unix://clamd.sock",
		"unix:/run/clamd.ctl", "unix:///run/clamd\x00.ctl", "/run/clamav/clamd.ctl", "tcp:127.0.0.1:3310",
	}
	for _, addr := range bad {
		if _, err := NewClamd(ClamdConfig{Address: addr}); err == nil {
			t.Errorf("NewClamd(%q): no error", addr)
		}
	}
}

func TestNewClamdConfig(t *testing.T) {
	c, err := NewClamd(ClamdConfig{Address: "tcp://127.0.0.1:3310"})
	if err != nil {
		t.Fatal(err)
	}
	if c.timeout != 5*time.Minute || c.maxStream != 100<<20 || cap(c.slots) != 2 || c.chunk != 256<<10 {
		t.Errorf("defaults: timeout %v, max stream %d, conns %d, chunk %d", c.timeout, c.maxStream, cap(c.slots), c.chunk)
	}
	for _, cfg := range []ClamdConfig{
		{Timeout: -1}, {MaxStreamSize: -1}, {Conns: -1}, {ChunkSize: -1}, {ChunkSize: 16<<20 + 1},
	} {
		cfg.Address = "tcp://127.0.0.1:3310"
		if _, err := NewClamd(cfg); err == nil {
			t.Errorf("NewClamd(%+v): no error", cfg)
		}
	}
}

// A fake clamd: a listener whose connections are served by a handler, each in
// its own goroutine. It is closed, and its handlers waited for, at cleanup.
func fakeClamd(t *testing.T, network string, handle func(net.Conn)) string {
	t.Helper()
	var ln net.Listener
	var err error
	var addr string
	switch network {
	case "tcp":
		ln, err = net.Listen("tcp", "127.0.0.1:0")
		if err == nil {
			addr = "tcp://" + ln.Addr().String()
		}
	case "unix":
		path := filepath.Join(t.TempDir(), "clamd.sock")
		ln, err = net.Listen("unix", path)
		addr = "unix://" + path
	}
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(30 * time.Second))
				handle(conn)
			})
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
	})
	return addr
}

// received is what the fake read from one connection.
type received struct {
	cmd        string
	raw        []byte // every byte read, the command included
	lens       []uint32
	data       []byte
	terminated bool // the zero-length chunk arrived
}

// readCommand reads a z-command ("zPING\x00") and returns its name ("PING").
func readCommand(br *bufio.Reader) (string, error) {
	cmd, err := br.ReadString(0)
	if err != nil {
		return "", err
	}
	name, ok := strings.CutPrefix(strings.TrimSuffix(cmd, "\x00"), "z")
	if !ok {
		return "", fmt.Errorf("command %q without the z prefix", cmd)
	}
	return name, nil
}

// readChunks reads INSTREAM chunks up to the zero-length one or an error.
func readChunks(r io.Reader, got *received) error {
	for {
		var hdr [4]byte
		if _, err := io.ReadFull(r, hdr[:]); err != nil {
			return err
		}
		n := binary.BigEndian.Uint32(hdr[:])
		got.lens = append(got.lens, n)
		if n == 0 {
			got.terminated = true
			return nil
		}
		if n > 1<<20 {
			return fmt.Errorf("chunk of %d bytes", n)
		}
		b := make([]byte, n)
		if _, err := io.ReadFull(r, b); err != nil {
			return err
		}
		got.data = append(got.data, b...)
	}
}

// answer is a handler that reads a command (and the stream of an INSTREAM),
// sends it to rec, then replies.
func answer(reply string, rec chan<- received) func(net.Conn) {
	return func(conn net.Conn) {
		var got received
		var raw bytes.Buffer
		br := bufio.NewReader(io.TeeReader(conn, &raw))
		cmd, err := readCommand(br)
		got.cmd = cmd
		if err == nil && cmd == "INSTREAM" {
			err = readChunks(br, &got)
		}
		got.raw = raw.Bytes()
		if rec != nil {
			rec <- got
		}
		if err == nil {
			io.WriteString(conn, reply)
		}
	}
}

func newTestClamd(t *testing.T, cfg ClamdConfig) *Clamd {
	t.Helper()
	c, err := NewClamd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func frame(chunks ...string) []byte {
	b := []byte("zINSTREAM\x00")
	for _, c := range chunks {
		b = binary.BigEndian.AppendUint32(b, uint32(len(c)))
		b = append(b, c...)
	}
	return binary.BigEndian.AppendUint32(b, 0)
}

func TestClamdInstreamFraming(t *testing.T) {
	const data = "0123456789abcdefghij" // 20 bytes
	cases := []struct {
		name string
		r    func() io.Reader
		want []byte
	}{
		{"chunks and a tail", func() io.Reader { return strings.NewReader(data) }, frame("0123456", "789abcd", "efghij")},
		{"one byte at a time", func() io.Reader { return iotest.OneByteReader(strings.NewReader(data)) }, frame("0123456", "789abcd", "efghij")},
		{"whole chunks", func() io.Reader { return strings.NewReader(data[:14]) }, frame("0123456", "789abcd")},
		{"data with EOF", func() io.Reader { return iotest.DataErrReader(strings.NewReader(data[:9])) }, frame("0123456", "78")},
		{"empty", func() io.Reader { return strings.NewReader("") }, frame()},
	}
	for _, network := range []string{"tcp", "unix"} {
		for _, tc := range cases {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				rec := make(chan received, 1)
				addr := fakeClamd(t, network, answer("stream: OK\x00", rec))
				c := newTestClamd(t, ClamdConfig{Address: addr, ChunkSize: 7})
				v, err := c.ScanStream(testCtx(t), tc.r())
				if err != nil {
					t.Fatal(err)
				}
				if v != (Verdict{Clean: true, Engine: "clamd"}) {
					t.Errorf("verdict %+v, want clean", v)
				}
				if got := <-rec; !bytes.Equal(got.raw, tc.want) {
					t.Errorf("clamd received\n%q\nwant\n%q", got.raw, tc.want)
				}
			})
		}
	}
}

func TestClamdScanFound(t *testing.T) {
	addr := fakeClamd(t, "tcp", answer("stream: Win.Test.EICAR_HDB-1 FOUND\x00", nil))
	c := newTestClamd(t, ClamdConfig{Address: addr})
	v, err := c.ScanStream(testCtx(t), strings.NewReader("content"))
	if err != nil {
		t.Fatal(err)
	}
	if v != found("Win.Test.EICAR_HDB-1") {
		t.Errorf("verdict %+v", v)
	}
}

func TestClamdPingVersion(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			rec := make(chan received, 2)
			addr := fakeClamd(t, network, func(conn net.Conn) {
				var raw bytes.Buffer
				cmd, err := readCommand(bufio.NewReader(io.TeeReader(conn, &raw)))
				rec <- received{cmd: cmd, raw: raw.Bytes()}
				switch {
				case err != nil:
				case cmd == "PING":
					io.WriteString(conn, "PONG\x00")
				case cmd == "VERSION":
					io.WriteString(conn, "ClamAV 1.4.6/27480/Tue Nov 25 09:32:01 2025\x00")
				}
			})
			c := newTestClamd(t, ClamdConfig{Address: addr})
			ctx := testCtx(t)
			if err := c.Ping(ctx); err != nil {
				t.Fatalf("Ping: %v", err)
			}
			if got := <-rec; string(got.raw) != "zPING\x00" {
				t.Errorf("Ping sent %q", got.raw)
			}
			v, err := c.Version(ctx)
			if err != nil || v != "ClamAV 1.4.6/27480/Tue Nov 25 09:32:01 2025" {
				t.Errorf("Version = %q, %v", v, err)
			}
			if got := <-rec; string(got.raw) != "zVERSION\x00" {
				t.Errorf("Version sent %q", got.raw)
			}
		})
	}
}

func TestClamdPingUnexpectedReply(t *testing.T) {
	for _, reply := range []string{"UNKNOWN COMMAND\x00", "1: PONG\x00", "PONGPONG\x00"} {
		addr := fakeClamd(t, "tcp", answer(reply, nil))
		c := newTestClamd(t, ClamdConfig{Address: addr})
		err := c.Ping(testCtx(t))
		if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "unexpected reply") {
			t.Errorf("Ping answered %q: error %v, want an unexpected reply", reply, err)
		}
		if _, err := c.Version(testCtx(t)); err == nil {
			t.Errorf("Version answered %q: no error", reply)
		}
	}
}

// countingReader counts the bytes read from it.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// endless is a reader that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = 'x'
	}
	return len(p), nil
}

func TestClamdMaxStreamSize(t *testing.T) {
	const limit = 100
	t.Run("at the limit", func(t *testing.T) {
		rec := make(chan received, 1)
		addr := fakeClamd(t, "tcp", answer("stream: OK\x00", rec))
		c := newTestClamd(t, ClamdConfig{Address: addr, MaxStreamSize: limit, ChunkSize: 30})
		v, err := c.ScanStream(testCtx(t), strings.NewReader(strings.Repeat("a", limit)))
		if err != nil || !v.Clean {
			t.Fatalf("ScanStream of %d bytes: %+v, %v; want clean", limit, v, err)
		}
		got := <-rec
		if len(got.data) != limit || !got.terminated {
			t.Errorf("clamd received %d bytes, terminated %v; want %d and the terminator", len(got.data), got.terminated, limit)
		}
	})
	for _, tc := range []struct {
		name string
		r    io.Reader
	}{
		{"one byte over", strings.NewReader(strings.Repeat("a", limit+1))},
		{"endless", endless{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rec := make(chan received, 1)
			addr := fakeClamd(t, "tcp", answer("stream: OK\x00", rec))
			c := newTestClamd(t, ClamdConfig{Address: addr, MaxStreamSize: limit, ChunkSize: 30})
			cr := &countingReader{r: tc.r}
			v, err := c.ScanStream(testCtx(t), cr)
			if err != nil {
				t.Fatal(err)
			}
			want := Verdict{Action: Quarantine, Engine: "clamd", Reason: "larger than the malware scanner's stream limit (100 bytes); held for review"}
			if v != want {
				t.Errorf("verdict %+v, want %+v", v, want)
			}
			if cr.n > limit+1 {
				t.Errorf("read %d bytes of the stream, want at most %d", cr.n, limit+1)
			}
			got := <-rec
			if len(got.data) > limit || got.terminated {
				t.Errorf("clamd received %d bytes, terminated %v; want at most %d and no terminator", len(got.data), got.terminated, limit)
			}
		})
	}
}

func TestClamdPoolBound(t *testing.T) {
	var (
		mu        sync.Mutex
		active    int
		maxActive int
		total     int
	)
	arrived := make(chan struct{}, 3)
	release := make(chan struct{})
	done := make(chan struct{})
	addr := fakeClamd(t, "tcp", func(conn net.Conn) {
		mu.Lock()
		active++
		total++
		maxActive = max(maxActive, active)
		mu.Unlock()
		var got received
		br := bufio.NewReader(conn)
		_, err := readCommand(br)
		if err == nil {
			err = readChunks(br, &got)
		}
		arrived <- struct{}{}
		select {
		case <-release:
		case <-done:
		}
		// Leave before replying: the client gives its slot back only after
		// the reply, so a bounded client never has more than Conns here.
		mu.Lock()
		active--
		mu.Unlock()
		if err == nil {
			io.WriteString(conn, "stream: OK\x00")
		}
	})
	t.Cleanup(func() { close(done) })

	c := newTestClamd(t, ClamdConfig{Address: addr, Conns: 2})
	ctx := testCtx(t)
	errs := make(chan error, 3)
	for i := range 3 {
		go func() {
			_, err := c.ScanStream(ctx, strings.NewReader(fmt.Sprintf("file %d", i)))
			errs <- err
		}()
	}
	for range 2 {
		select {
		case <-arrived:
		case <-ctx.Done():
			t.Fatal("two scans did not reach clamd")
		}
	}
	// The third scan waits for a slot. An unbounded client would connect a
	// third time now; give it the chance before counting.
	time.Sleep(100 * time.Millisecond)
	mu.Lock()
	if total != 2 {
		t.Errorf("%d connections with two scans held, want 2", total)
	}
	mu.Unlock()
	for range 3 {
		release <- struct{}{}
	}
	for range 3 {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if maxActive > 2 || total != 3 {
		t.Errorf("at most %d connections at once of %d, want at most 2 of 3", maxActive, total)
	}
	if n := len(c.slots); n != 0 {
		t.Errorf("%d slots still taken", n)
	}
}

func TestClamdCancel(t *testing.T) {
	t.Run("mid-stream", func(t *testing.T) {
		started := make(chan struct{})
		gone := make(chan error, 1)
		addr := fakeClamd(t, "tcp", func(conn net.Conn) {
			br := bufio.NewReader(conn)
			readCommand(br)
			io.ReadFull(br, make([]byte, 64<<10))
			close(started)
			// Stop reading until the client goes: its writes block.
			time.Sleep(200 * time.Millisecond)
			_, err := io.Copy(io.Discard, br)
			gone <- err
		})
		c := newTestClamd(t, ClamdConfig{Address: addr, ChunkSize: 16 << 10})
		ctx, cancel := context.WithCancel(testCtx(t))
		go func() {
			<-started
			cancel()
		}()
		_, err := c.ScanStream(ctx, endless{})
		if !errors.Is(err, context.Canceled) || errors.Is(err, ErrUnavailable) {
			t.Fatalf("error %v, want context.Canceled", err)
		}
		if err := <-gone; err != nil && !isConnReset(err) {
			t.Errorf("clamd side: %v", err)
		}
		if n := len(c.slots); n != 0 {
			t.Errorf("%d slots still taken", n)
		}
	})
	t.Run("waiting for a slot", func(t *testing.T) {
		hold := make(chan struct{})
		arrived := make(chan struct{}, 1)
		addr := fakeClamd(t, "tcp", func(conn net.Conn) {
			br := bufio.NewReader(conn)
			cmd, err := readCommand(br)
			if err != nil {
				return
			}
			if cmd == "PING" {
				io.WriteString(conn, "PONG\x00")
				return
			}
			readChunks(br, &received{})
			arrived <- struct{}{}
			<-hold
			io.WriteString(conn, "stream: OK\x00")
		})
		t.Cleanup(func() { close(hold) })
		c := newTestClamd(t, ClamdConfig{Address: addr, Conns: 1})
		ctx := testCtx(t)
		first := make(chan error, 1)
		go func() {
			_, err := c.ScanStream(ctx, strings.NewReader("x"))
			first <- err
		}()
		<-arrived
		ctx2, cancel := context.WithCancel(ctx)
		cancel()
		if _, err := c.ScanStream(ctx2, strings.NewReader("x")); !errors.Is(err, context.Canceled) {
			t.Errorf("error %v, want context.Canceled", err)
		}
		// PING and VERSION take no slot: a health check is not held up by scans.
		if err := c.Ping(ctx); err != nil {
			t.Errorf("Ping while the only slot is taken: %v", err)
		}
		hold <- struct{}{}
		if err := <-first; err != nil {
			t.Errorf("first scan: %v", err)
		}
	})
}

func isConnReset(err error) bool {
	return err != nil && strings.Contains(err.Error(), "connection reset")
}

func TestClamdUnavailable(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "tcp://" + closed.Addr().String()
	closed.Close()

	cases := []struct {
		name   string
		handle func(net.Conn) // nil: nothing listens
	}{
		{"connection refused", nil},
		{"closed at once", func(net.Conn) {}},
		{"closed after the stream", answer("", nil)},
		{"no reply", func(conn net.Conn) {
			br := bufio.NewReader(conn)
			readCommand(br)
			readChunks(br, &received{})
			time.Sleep(time.Second)
		}},
		{"clamd read timeout", func(conn net.Conn) {
			readCommand(bufio.NewReader(conn))
			io.WriteString(conn, "COMMAND READ TIMED OUT\n")
		}},
	}
	for _, network := range []string{"tcp", "unix"} {
		for _, tc := range cases {
			t.Run(network+"/"+tc.name, func(t *testing.T) {
				addr := refused
				if tc.handle != nil {
					addr = fakeClamd(t, network, tc.handle)
				} else if network == "unix" {
					addr = "unix://" + filepath.Join(t.TempDir(), "none.sock")
				}
				c := newTestClamd(t, ClamdConfig{Address: addr, Timeout: 300 * time.Millisecond, ChunkSize: 1024})
				v, err := c.ScanStream(testCtx(t), strings.NewReader(strings.Repeat("data", 1000)))
				if !errors.Is(err, ErrUnavailable) {
					t.Errorf("ScanStream: %+v, %v; want ErrUnavailable", v, err)
				}
				if err != nil && strings.Contains(err.Error(), "data") {
					t.Errorf("error %q holds file contents", err)
				}
				if err := c.Ping(testCtx(t)); !errors.Is(err, ErrUnavailable) {
					t.Errorf("Ping: %v; want ErrUnavailable", err)
				}
				if n := len(c.slots); n != 0 {
					t.Errorf("%d slots still taken", n)
				}
			})
		}
	}
}

// clamd refuses a stream over its StreamMaxLength mid-stream: it answers and
// closes while the client is still sending, and the client's write fails.
// The answer is the verdict.
func TestClamdRefusedMidStream(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			addr := fakeClamd(t, network, func(conn net.Conn) {
				br := bufio.NewReader(conn)
				readCommand(br)
				io.ReadFull(br, make([]byte, 100<<10))
				io.WriteString(conn, "INSTREAM size limit exceeded. ERROR\x00")
			})
			c := newTestClamd(t, ClamdConfig{Address: addr, ChunkSize: 64 << 10})
			v, err := c.ScanStream(testCtx(t), io.LimitReader(endless{}, 50<<20))
			if err != nil {
				t.Fatal(err)
			}
			if want := (Verdict{Action: Quarantine, Engine: "clamd", Reason: clamdTooLargeReason}); v != want {
				t.Errorf("verdict %+v, want %+v", v, want)
			}
		})
	}
}

func TestClamdBadReply(t *testing.T) {
	for _, reply := range []string{
		strings.Repeat("stream: OK", 500), // no terminator within 4 KiB
		"2: stream: OK\x00",
		"stream: Can't allocate memory ERROR\x00",
		"UNKNOWN COMMAND\x00",
	} {
		addr := fakeClamd(t, "tcp", answer(reply, nil))
		c := newTestClamd(t, ClamdConfig{Address: addr})
		v, err := c.ScanStream(testCtx(t), strings.NewReader("content"))
		if err == nil || errors.Is(err, ErrUnavailable) || v.Clean {
			t.Errorf("reply %.40q: %+v, %v; want an error, not ErrUnavailable", reply, v, err)
		}
	}
}

func TestClamdReadError(t *testing.T) {
	addr := fakeClamd(t, "tcp", answer("stream: OK\x00", nil))
	c := newTestClamd(t, ClamdConfig{Address: addr, ChunkSize: 10})
	broken := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader(strings.Repeat("a", 25)), iotest.ErrReader(broken))
	v, err := c.ScanStream(testCtx(t), r)
	if !errors.Is(err, broken) || errors.Is(err, ErrUnavailable) || v.Clean {
		t.Errorf("%+v, %v; want the reader's error", v, err)
	}
}
