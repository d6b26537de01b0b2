package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// The bounds TestBadInput runs the daemon with: short, so that slow clients are cut in seconds.
const (
	readHeaderTimeout = time.Second
	idleTimeout       = 2 * time.Second
	checkpointBytes   = 1 << 20
	maxMetadataBytes  = 4 << 10 // limits.max_metadata_bytes, the daemon's default
)

var badInputOptions = mftdtest.Options{
	CheckpointBytes:   "1MiB",
	ReadHeaderTimeout: "1s",
	IdleTimeout:       "2s",
	MaxHeaderBytes:    "8KiB",
}

// Slow, stalled and oversized requests are bounded and leave nothing behind; an upload running
// alongside them is not disturbed; and nothing that was sent in the process — passwords, codes,
// tokens, metadata — shows up in the daemon's log.
func TestBadInput(t *testing.T) {
	d := startDaemon(t, badInputOptions)
	var sec secrets
	alice := signIn(t, d, "alice", &sec)
	bob := signIn(t, d, "bob", &sec)
	carol := signIn(t, d, "carol", &sec)
	failedLogin(t, d, "alice", &sec)

	t.Run("slow headers", func(t *testing.T) {
		t.Run("silent", func(t *testing.T) {
			t.Parallel()
			slowHeaders(t, d, 0)
		})
		t.Run("trickling", func(t *testing.T) {
			t.Parallel()
			slowHeaders(t, d, 200*time.Millisecond)
		})
	})
	t.Run("stalled body", func(t *testing.T) { stalledBody(t, d, alice, bob, &sec) })
	t.Run("oversize headers", func(t *testing.T) { oversizeHeaders(t, d, carol, &sec) })

	// An expected hash that does not match: the upload is rejected, so this sha256 value is
	// metadata and nothing else (a matching one also appears as the computed hash, which is
	// logged on purpose).
	ctx := testCtx(t, time.Minute)
	data := readAllData(t, 64<<10, 21)
	wrong := mftdtest.SHA256Hex([]byte("not the data"))
	url := createSecret(t, ctx, alice, int64(len(data)), map[string]string{"filename": "mismatch-7f3a.bin", "sha256": wrong}, &sec)
	sec.add("a sha256 metadata value", wrong)
	patch(t, ctx, alice.Client, url, 0, bytes.NewReader(data), int64(len(data)), "")
	if info := waitTerminal(t, ctx, alice.Client, url, time.Minute); info.Status != "rejected" {
		t.Errorf("upload with a wrong expected sha256: status %q, want rejected", info.Status)
	}

	d.Stop()
	t.Run("logs hold no secrets", func(t *testing.T) { checkLog(t, d.LogPath, &sec) })
}

// session is a signed-in user with what they sent to sign in.
type session struct {
	mftdtest.User
	*mftdtest.Client
}

// signIn adds an account and signs it in, recording password, TOTP secret, code and token.
func signIn(t *testing.T, d *mftdtest.Daemon, name string, sec *secrets) session {
	t.Helper()
	u := d.AddUser(name)
	at := time.Now()
	token := d.Login(u, at)
	sec.add("a password", u.Password)
	sec.add("a TOTP secret", u.Secret)
	sec.addCode("a TOTP code", mftdtest.Code(t, u.Secret, at))
	sec.add("a bearer token", token)
	return session{User: u, Client: d.Client(token)}
}

// failedLogin tries to sign in as name with a wrong password and a made-up code, recording both.
func failedLogin(t *testing.T, d *mftdtest.Daemon, name string, sec *secrets) {
	t.Helper()
	pw, code := mftdtest.RandomPassword(), "493017"
	sec.add("a wrong password", pw)
	sec.addCode("a wrong TOTP code", code)
	r, err := d.PostLogin(name, pw, code)
	if err != nil || r.Status != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password: %+v %v; want 401", r, err)
	}
}

// createSecret creates an upload with meta, recording the raw header and every value's base64.
func createSecret(t *testing.T, ctx context.Context, c session, size int64, meta map[string]string, sec *secrets) string {
	t.Helper()
	sec.addMetadata(meta)
	return create(t, ctx, c.Client, size, meta)
}

// slowHeaders opens a TLS connection and sends the start of a request, then nothing (trickle 0)
// or one more header line every trickle. The server must close the connection once
// read_header_timeout has passed: not at once, and well within 10 s. Meanwhile the daemon
// answers other requests.
func slowHeaders(t *testing.T, d *mftdtest.Daemon, trickle time.Duration) {
	const limit = 10 * time.Second
	conn := dialTLS(t, d)
	defer conn.Close()
	if _, err := io.WriteString(conn, "POST /files/ HTTP/1.1\r\nHost: x\r\n"); err != nil {
		t.Fatalf("write the first header lines: %v", err)
	}
	start := time.Now()
	conn.SetReadDeadline(start.Add(limit))
	type result struct {
		got     []byte
		err     error
		elapsed time.Duration
	}
	closed := make(chan result, 1)
	go func() {
		got, err := io.ReadAll(conn) // nil error: EOF, the server closed the connection
		closed <- result{got, err, time.Since(start)}
	}()

	ctx := testCtx(t, limit)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.URL("/readyz"), nil)
	if resp, err := d.HTTP().Do(req); err != nil {
		t.Errorf("GET /readyz while a client sends headers slowly: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("GET /readyz while a client sends headers slowly: %s", resp.Status)
		}
	}

	var res result
	if trickle > 0 {
		tick := time.NewTicker(trickle)
		defer tick.Stop()
	feed:
		for i := 0; ; i++ {
			select {
			case res = <-closed:
				break feed
			case <-tick.C:
				// The write fails once the server has closed; the reader reports that.
				fmt.Fprintf(conn, "X-Slow-%d: %d\r\n", i, i)
			}
		}
	} else {
		res = <-closed
	}
	var ne net.Error
	if errors.As(res.err, &ne) && ne.Timeout() {
		t.Fatalf("connection still open %v after a request's first header lines (read_header_timeout %v)", limit, readHeaderTimeout)
	}
	t.Logf("server closed the connection after %v (%v); it sent %q", res.elapsed.Round(time.Millisecond), res.err, truncateBytes(res.got, 200))
	if res.elapsed < readHeaderTimeout/2 {
		t.Errorf("server closed the connection after %v, before read_header_timeout (%v) could have passed: not the timeout at work", res.elapsed, readHeaderTimeout)
	}
	if bytes.HasPrefix(res.got, []byte("HTTP/1.1 2")) {
		t.Errorf("incomplete request answered with success: %q", truncateBytes(res.got, 200))
	}
}

// stalledBody: alice's PATCH sends 9 MiB of a 32 MiB upload and stalls without closing. The
// server cuts it after idle_timeout and keeps what arrived; alice resumes from the offset HEAD
// reports and the file arrives whole. Bob uploads at a steady pace throughout, unaffected.
func stalledBody(t *testing.T, d *mftdtest.Daemon, alice, bob session, sec *secrets) {
	const size = 32 << 20
	const fed = 9 << 20
	const bobSize = 24 << 20
	ctx := testCtx(t, 2*time.Minute)
	data := readAllData(t, size, 22)
	sum := mftdtest.SHA256Hex(data)
	bobData := readAllData(t, bobSize, 23)
	bobSum := mftdtest.SHA256Hex(bobData)
	url := createSecret(t, ctx, alice, size, map[string]string{"filename": "secret-metadata-value-7f3a.csv", "sha256": sum}, sec)
	sec.add("a metadata file name", "secret-metadata-value-7f3a.csv")
	bobURL := createSecret(t, ctx, bob, bobSize, map[string]string{"filename": "steady-7f3a.bin", "sha256": bobSum}, sec)

	type result struct {
		r   *mftdtest.Response
		err error
		at  time.Time
	}
	send := func(c session, url string, body *io.PipeReader, n int64) <-chan result {
		done := make(chan result, 1)
		go func() {
			r, err := c.Patch(ctx, url, 0, body, n, "")
			body.CloseWithError(errors.New("PATCH returned"))
			done <- result{r, err, time.Now()}
		}()
		return done
	}

	apr, apw := io.Pipe()
	defer apw.CloseWithError(errors.New("test over")) // only now does alice's body end
	aliceDone := send(alice, url, apr, size)
	if _, err := apw.Write(data[:fed]); err != nil {
		t.Fatalf("alice's PATCH took %d bytes, then: %v", fed, err)
	}
	stalled := time.Now()

	// Bob: 1 MiB every 125 ms, from before alice is cut until after.
	bpr, bpw := io.Pipe()
	bobDone := send(bob, bobURL, bpr, bobSize)
	go func() {
		for off := 0; off < bobSize; off += 1 << 20 {
			if _, err := bpw.Write(bobData[off : off+1<<20]); err != nil {
				return
			}
			time.Sleep(125 * time.Millisecond)
		}
		bpw.Close()
	}()

	var res result
	select {
	case res = <-aliceDone:
	case <-time.After(idleTimeout + 5*time.Second):
		t.Fatalf("alice's PATCH, stalled after %d bytes, still open %v later (idle_timeout %v)", fed, idleTimeout+5*time.Second, idleTimeout)
	}
	waited := res.at.Sub(stalled)
	t.Logf("stalled PATCH ended %v after the last byte: response %v, error %v", waited.Round(time.Millisecond), res.r, res.err)
	if waited < idleTimeout/2 {
		t.Errorf("stalled PATCH ended %v after the last byte, before idle_timeout (%v) could have passed", waited, idleTimeout)
	}
	off := head(t, ctx, alice.Client, url)
	if off < fed-checkpointBytes || off > fed {
		t.Fatalf("after the stalled PATCH was cut, Upload-Offset is %d; want the received bytes kept: between %d and %d", off, fed-checkpointBytes, fed)
	}
	if res.err == nil {
		// An answer is optional (the client is not reading), but it must not claim success,
		// and an offset it gives must be the one kept.
		if res.r.Status < 400 {
			t.Errorf("stalled PATCH answered %s; want a 4xx or no answer (the request did not complete)", res.r)
		}
		if o := res.r.Header.Get("Upload-Offset"); o != "" && res.r.Offset() != off {
			t.Errorf("stalled PATCH answered Upload-Offset %s, but HEAD says %d", o, off)
		}
	}

	patch(t, ctx, alice.Client, url, off, bytes.NewReader(data[off:]), size-off, "")
	wantAvailable(t, waitTerminal(t, ctx, alice.Client, url, time.Minute), size, sum)
	findArrival(t, arrivals(t, ctx, alice.Client), "secret-metadata-value-7f3a.csv")

	br := <-bobDone
	if br.err != nil {
		t.Fatalf("bob's steady PATCH while alice's stalled: %v", br.err)
	}
	if br.r.Status != http.StatusNoContent || br.r.Offset() != bobSize {
		t.Fatalf("bob's steady PATCH while alice's stalled: %s; want 204 with Upload-Offset %d", br.r, bobSize)
	}
	if br.at.Before(res.at) {
		t.Errorf("bob's PATCH finished before alice's was cut: it did not run alongside it")
	}
	wantAvailable(t, waitTerminal(t, ctx, bob.Client, bobURL, time.Minute), bobSize, bobSum)
}

// oversizeHeaders: a header block past max_header_bytes gets 431, and metadata past
// max_metadata_bytes (in a header block that fits) gets 400; neither creates an upload or an
// audit record, and carol's next upload works as if nothing happened.
func oversizeHeaders(t *testing.T, d *mftdtest.Daemon, carol session, sec *secrets) {
	ctx := testCtx(t, time.Minute)
	uploads := func() int {
		return dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM uploads WHERE owner = ?`, carol.Name)
	}
	audits := func() int {
		return dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE actor = ?`, carol.Name)
	}
	uploadsBefore, auditBefore := uploads(), audits()

	cases := []struct {
		name string
		pad  int // bytes of a second metadata value
		want int
	}{
		// 16 KiB of base64: past max_header_bytes (8 KiB) and the 4 KiB of slack Go's
		// server reads beyond it.
		{"header block past max_header_bytes", 12 << 10, http.StatusRequestHeaderFieldsTooLarge},
		{"metadata past max_metadata_bytes", maxMetadataBytes, http.StatusBadRequest},
	}
	for _, c := range cases {
		meta := map[string]string{
			"filename": "oversize-7f3a.csv",
			"note":     strings.Repeat("oversize-metadata-7f3a ", c.pad/23+1)[:c.pad],
		}
		sec.addMetadata(meta)
		r, err := carol.Create(ctx, 1<<20, meta)
		if err != nil {
			t.Errorf("%s (Upload-Metadata of %d bytes): %v", c.name, len(mftdtest.EncodeMetadata(meta)), err)
			continue
		}
		if r.Status != c.want {
			t.Errorf("%s (Upload-Metadata of %d bytes): %s; want %d", c.name, len(mftdtest.EncodeMetadata(meta)), r, c.want)
		}
		if loc := r.Header.Get("Location"); loc != "" {
			t.Errorf("%s: answered with Location %q", c.name, loc)
		}
	}
	if n := uploads(); n != uploadsBefore {
		t.Errorf("carol has %d uploads after oversize requests, %d before", n, uploadsBefore)
	}
	if n := audits(); n != auditBefore {
		t.Errorf("carol has %d audit records after oversize requests, %d before", n, auditBefore)
	}

	data := readAllData(t, 256<<10, 24)
	url := createSecret(t, ctx, carol, int64(len(data)), map[string]string{"filename": "after-7f3a.csv"}, sec)
	patch(t, ctx, carol.Client, url, 0, bytes.NewReader(data), int64(len(data)), "")
	wantAvailable(t, waitTerminal(t, ctx, carol.Client, url, time.Minute), int64(len(data)), mftdtest.SHA256Hex(data))
	if files := arrivals(t, ctx, carol.Client); len(files) != 1 || files[0].Name != "after-7f3a.csv" {
		t.Errorf("carol's arrivals: %+v, want only after-7f3a.csv", files)
	}
	if n := uploads(); n != uploadsBefore+1 {
		t.Errorf("carol has %d uploads after one more, want %d", n, uploadsBefore+1)
	}
}

// dialTLS connects to the daemon over TLS, trusting its certificate, speaking HTTP/1.1.
func dialTLS(t *testing.T, d *mftdtest.Daemon) *tls.Conn {
	t.Helper()
	pem, err := os.ReadFile(d.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		t.Fatalf("%s: no certificate", d.CertFile())
	}
	conn, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", d.Addr,
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("TLS connection to mftd: %v", err)
	}
	return conn
}

// dbCount runs a COUNT query on the state database while the daemon runs.
func dbCount(t *testing.T, path, query string, args ...any) int {
	t.Helper()
	db, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func truncateBytes(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// secrets are strings that no line of the daemon's log may contain.
type secrets struct {
	mu    sync.Mutex
	items []secret
}

type secret struct {
	what, value string
	digits      bool // a number: matched only where no digit is next to it
}

func (s *secrets) add(what, value string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, secret{what: what, value: value})
}

func (s *secrets) addCode(what, code string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.items = append(s.items, secret{what: what, value: code, digits: true})
}

// addMetadata records the raw Upload-Metadata header of meta and the base64 of every value.
func (s *secrets) addMetadata(meta map[string]string) {
	s.add("a raw Upload-Metadata header", mftdtest.EncodeMetadata(meta))
	for k, v := range meta {
		s.add("the base64 of metadata "+k, base64.StdEncoding.EncodeToString([]byte(v)))
	}
}

// checkLog reads the daemon's whole log and fails for every line holding a secret. Lines are
// JSON objects (log.format json); their string keys and values are searched, so that numbers
// (timestamps, durations) cannot pass for a TOTP code. Other lines are searched whole.
func checkLog(t *testing.T, path string, sec *secrets) {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var jsonLines int
	msgs := map[string]bool{}
	for i, line := range strings.Split(string(b), "\n") {
		if line == "" || strings.HasPrefix(line, "=== ") { // the harness's start markers
			continue
		}
		text := line
		var obj map[string]any
		if json.Unmarshal([]byte(line), &obj) == nil {
			jsonLines++
			if m, ok := obj["msg"].(string); ok {
				msgs[m] = true
			}
			var sb strings.Builder
			collectStrings(&sb, obj)
			text = sb.String()
		}
		for _, s := range sec.items {
			if containsSecret(text, s) {
				t.Errorf("log line %d contains %s (%q): %s", i+1, s.what, s.value, truncateBytes([]byte(line), 400))
			}
		}
	}
	// The search means something only if the log recorded the activity.
	for _, m := range []string{"login", "login failed", "upload created", "request"} {
		if !msgs[m] {
			t.Errorf("the daemon's log (%d JSON lines) has no %q line: is it the log of this run?", jsonLines, m)
		}
	}
}

func collectStrings(sb *strings.Builder, v any) {
	switch v := v.(type) {
	case string:
		sb.WriteString(v)
		sb.WriteByte('\n')
	case map[string]any:
		for k, x := range v {
			sb.WriteString(k)
			sb.WriteByte('\n')
			collectStrings(sb, x)
		}
	case []any:
		for _, x := range v {
			collectStrings(sb, x)
		}
	}
}

func containsSecret(text string, s secret) bool {
	if !s.digits {
		return strings.Contains(text, s.value)
	}
	for i := 0; ; {
		j := strings.Index(text[i:], s.value)
		if j < 0 {
			return false
		}
		j += i
		end := j + len(s.value)
		if (j == 0 || !isDigit(text[j-1])) && (end == len(text) || !isDigit(text[end])) {
			return true
		}
		i = j + 1
	}
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }
