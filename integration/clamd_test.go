package integration

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
	"github.com/mftd/mftd/scanner"
)

// The scanner's clamd client against a real clamd (integration/scripts/clamd.sh) with the test
// signature database. The replies these tests provoke, as clamd 1.4.6 sends them, are in the
// parseReply table of scanner/clamd_test.go.

func newClamdClient(t *testing.T, cfg scanner.ClamdConfig) *scanner.Clamd {
	t.Helper()
	c, err := scanner.NewClamd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func clamdFound(name string) scanner.Verdict {
	return scanner.Verdict{Action: scanner.Quarantine, Engine: "clamd", Reason: name}
}

// EICAR and the test signature are found, with the names clamd reports, wherever they are in a
// file; random bytes and an empty file are clean. Over TCP and the unix socket, two scans at once.
func TestClamdClientVerdicts(t *testing.T) {
	cd := mftdtest.StartClamd(t)
	ctx := testCtx(t, 3*time.Minute)
	random := readAllData(t, 20<<20, 41)
	buried := bytes.Clone(random[:8<<20])
	copy(buried[5<<20+7:], mftdtest.ClamdTestSignature)
	clean := scanner.Verdict{Clean: true, Engine: "clamd"}
	cases := []struct {
		name string
		data []byte
		want scanner.Verdict
	}{
		{"EICAR", []byte(eicar), clamdFound(mftdtest.ClamdEICARName)},
		{"EICAR in text", []byte("a letter\n" + eicar + "\nregards\n"), clamdFound(mftdtest.ClamdEICARName)},
		{"test signature", []byte("ordinary text " + mftdtest.ClamdTestSignature + " more text"), clamdFound(mftdtest.ClamdTestSignatureName)},
		{"test signature 5 MiB into random bytes", buried, clamdFound(mftdtest.ClamdTestSignatureName)},
		{"20 MiB of random bytes", random, clean},
		{"empty", nil, clean},
	}
	for _, addr := range []string{cd.Addr(), cd.SocketAddr()} {
		c := newClamdClient(t, scanner.ClamdConfig{Address: addr, Timeout: time.Minute, Conns: 2})
		errs := make(chan error, len(cases))
		for _, tc := range cases {
			go func() {
				v, err := c.ScanStream(ctx, bytes.NewReader(tc.data))
				switch {
				case err != nil:
					errs <- err
				case v != tc.want:
					errs <- errors.New(tc.name + ": verdict " + verdictString(v) + ", want " + verdictString(tc.want))
				default:
					errs <- nil
				}
			}()
		}
		for range cases {
			if err := <-errs; err != nil {
				t.Errorf("%s: %v", addr, err)
			}
		}
	}
}

func verdictString(v scanner.Verdict) string {
	if v.Clean {
		return "clean (" + v.Engine + ")"
	}
	return "not clean (" + v.Engine + "): " + v.Reason
}

// Every sample of clamav-testfiles (packed executables, archives, documents, mail) is found:
// clamd unpacks them to reach the test program inside.
func TestClamdClientTestFiles(t *testing.T) {
	cd := mftdtest.StartClamd(t)
	ctx := testCtx(t, 3*time.Minute)
	c := newClamdClient(t, scanner.ClamdConfig{Address: cd.SocketAddr(), Timeout: time.Minute})
	entries, err := os.ReadDir(mftdtest.ClamavTestFiles)
	if err != nil {
		t.Fatalf("%v (package clamav-testfiles; integration/scripts/setup.sh installs it)", err)
	}
	n := 0
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		n++
		path := filepath.Join(mftdtest.ClamavTestFiles, e.Name())
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		v, err := c.ScanStream(ctx, f)
		f.Close()
		if err != nil {
			t.Errorf("%s: %v", e.Name(), err)
		} else if v != clamdFound(mftdtest.ClamdTestFileName) {
			t.Errorf("%s: %s, want %s found", e.Name(), verdictString(v), mftdtest.ClamdTestFileName)
		}
	}
	if n < 40 {
		t.Errorf("%d files in %s, want the 44 of clamav-testfiles", n, mftdtest.ClamavTestFiles)
	}
}

// A stream over clamd's StreamMaxLength is refused by clamd mid-stream: not clean, held. A stream
// over the client's MaxStreamSize is not sent at all: not clean, held; one of exactly
// MaxStreamSize bytes is scanned.
func TestClamdClientStreamLimit(t *testing.T) {
	cd := mftdtest.StartClamdWith(t, mftdtest.ClamdOptions{StreamMaxLength: "1M"})
	ctx := testCtx(t, 2*time.Minute)
	data := readAllData(t, 3<<20, 43)

	over := newClamdClient(t, scanner.ClamdConfig{Address: cd.Addr(), MaxStreamSize: 8 << 20})
	for range 3 {
		v, err := over.ScanStream(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("3 MiB to a clamd with StreamMaxLength 1M: %v", err)
		}
		// clamd's "INSTREAM size limit exceeded. ERROR", not the client's own limit (which
		// names its size).
		if want := clamdFound("larger than the malware scanner's stream limit; held for review"); v != want {
			t.Fatalf("3 MiB to a clamd with StreamMaxLength 1M: %s; want %s", verdictString(v), verdictString(want))
		}
	}

	within := newClamdClient(t, scanner.ClamdConfig{Address: cd.Addr(), MaxStreamSize: 1 << 20})
	v, err := within.ScanStream(ctx, bytes.NewReader(data[:1<<20]))
	if err != nil || !v.Clean {
		t.Errorf("exactly 1 MiB: %s, %v; want clean", verdictString(v), err)
	}
	v, err = within.ScanStream(ctx, bytes.NewReader(data[:1<<20+1]))
	if err != nil || v.Clean || v.Action != scanner.Quarantine || !strings.Contains(v.Reason, "(1048576 bytes)") {
		t.Errorf("1 MiB + 1 byte: %s, %v; want held over the 1048576-byte limit", verdictString(v), err)
	}
}

// Ping and Version answer over TCP and the unix socket; with clamd stopped every command fails
// with ErrUnavailable (the file is tried again later), and once it is started again they work.
func TestClamdClientPingOutage(t *testing.T) {
	cd := mftdtest.StartClamd(t)
	ctx := testCtx(t, 2*time.Minute)
	var clients []*scanner.Clamd
	for _, addr := range []string{cd.Addr(), cd.SocketAddr()} {
		c := newClamdClient(t, scanner.ClamdConfig{Address: addr, Timeout: 10 * time.Second})
		clients = append(clients, c)
		if err := c.Ping(ctx); err != nil {
			t.Fatalf("Ping %s: %v", addr, err)
		}
		v, err := c.Version(ctx)
		if err != nil || !strings.HasPrefix(v, "ClamAV 1.") {
			t.Errorf("Version %s: %q, %v", addr, v, err)
		}
	}

	cd.Stop()
	for _, c := range clients {
		if err := c.Ping(ctx); !errors.Is(err, scanner.ErrUnavailable) {
			t.Errorf("Ping %s with clamd stopped: %v; want ErrUnavailable", c.Address(), err)
		}
		if _, err := c.Version(ctx); !errors.Is(err, scanner.ErrUnavailable) {
			t.Errorf("Version %s with clamd stopped: %v; want ErrUnavailable", c.Address(), err)
		}
		v, err := c.ScanStream(ctx, strings.NewReader(eicar))
		if !errors.Is(err, scanner.ErrUnavailable) {
			t.Errorf("ScanStream %s with clamd stopped: %s, %v; want ErrUnavailable", c.Address(), verdictString(v), err)
		}
	}

	cd.Start()
	for _, c := range clients {
		if err := c.Ping(ctx); err != nil {
			t.Errorf("Ping %s after restart: %v", c.Address(), err)
		}
		v, err := c.ScanStream(ctx, strings.NewReader(eicar))
		if err != nil || v != clamdFound(mftdtest.ClamdEICARName) {
			t.Errorf("ScanStream %s after restart: %s, %v", c.Address(), verdictString(v), err)
		}
	}

	// A scan cut short by its context ends with the context's error, not ErrUnavailable.
	cctx, cancel := context.WithCancel(ctx)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(make([]byte, 1<<20))
		cancel()
		pw.Write(make([]byte, 1<<20))
		pw.Close()
	}()
	_, err := clients[0].ScanStream(cctx, pr)
	pr.Close()
	if !errors.Is(err, context.Canceled) || errors.Is(err, scanner.ErrUnavailable) {
		t.Errorf("ScanStream cancelled mid-stream: %v; want context.Canceled", err)
	}
}
