package scanner

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
)

// engineStub is a StreamScanner that reads what it is given, up to stop
// bytes (all if 0), and answers verdict or err.
type engineStub struct {
	stop    int64
	verdict Verdict
	err     error
	read    int64
}

func (e *engineStub) ScanStream(ctx context.Context, r io.Reader) (Verdict, error) {
	var n int64
	var err error
	if e.stop > 0 {
		n, err = io.CopyN(io.Discard, r, e.stop)
	} else {
		n, err = io.Copy(io.Discard, r)
	}
	e.read = n
	if err != nil && !errors.Is(err, io.EOF) {
		return Verdict{}, err
	}
	if e.err != nil {
		return Verdict{}, e.err
	}
	return e.verdict, nil
}

// countingReaderAt counts the bytes read through it.
type countingReaderAt struct {
	r     io.ReaderAt
	bytes int64
}

func (c *countingReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes += int64(n)
	return n, err
}

func newTestBuiltin(t *testing.T) *Builtin {
	t.Helper()
	b, err := NewBuiltin(BuiltinConfig{DenyTypes: DefaultDenyTypes(), TempDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func sum(p []byte) string {
	h := sha256.Sum256(p)
	return hex.EncodeToString(h[:])
}

func zipOf(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, data := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestChecker(t *testing.T) {
	ctx := context.Background()
	plain := bytes.Repeat([]byte("research data, row after row\n"), 10000)
	elf := append([]byte("\x7fELF\x02\x01\x01\x00"), make([]byte, 200)...)
	found := Verdict{Action: Quarantine, Reason: "Win.Test.Found", Engine: "clamd"}
	tests := []struct {
		name   string
		data   []byte
		engine *engineStub // nil: no engine
		clean  bool
		action Action
		reason string
	}{
		{name: "clean without engine", data: plain, clean: true},
		{name: "clean with engine", data: plain, engine: &engineStub{verdict: Verdict{Clean: true, Engine: "clamd"}}, clean: true},
		{name: "engine finding", data: plain, engine: &engineStub{verdict: found}, action: Quarantine, reason: "Win.Test.Found"},
		{name: "engine stops early, built-in still sees every byte", data: append(bytes.Clone(plain), eicar...),
			engine: &engineStub{stop: 10, verdict: found}, action: Quarantine, reason: "Win.Test.Found"},
		{name: "built-in finding, engine clean", data: append(bytes.Clone(plain), eicar...),
			engine: &engineStub{verdict: Verdict{Clean: true}}, action: Quarantine, reason: EICARName},
		{name: "denied type", data: elf, engine: &engineStub{verdict: Verdict{Clean: true}}, action: Reject},
		{name: "malware in a denied type is kept, not deleted", data: elf, engine: &engineStub{verdict: found}, action: Quarantine, reason: "Win.Test.Found"},
		{name: "archive pass after a clean stream", data: zipOf(t, map[string][]byte{"inner/eicar.txt": eicar}),
			engine: &engineStub{verdict: Verdict{Clean: true}}, action: Quarantine, reason: EICARName},
		{name: "clean archive", data: zipOf(t, map[string][]byte{"a.csv": plain, "b.csv": plain}),
			engine: &engineStub{verdict: Verdict{Clean: true}}, clean: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var engine StreamScanner
			if tt.engine != nil {
				engine = tt.engine
			}
			c := NewChecker(newTestBuiltin(t), engine)
			r := &countingReaderAt{r: bytes.NewReader(tt.data)}
			v, err := c.Scan(ctx, File{Name: "f", Size: int64(len(tt.data)), R: r})
			if err != nil {
				t.Fatal(err)
			}
			if v.Clean != tt.clean {
				t.Fatalf("verdict %+v, want clean=%v", v, tt.clean)
			}
			if !tt.clean && (v.Action != tt.action || (tt.reason != "" && !strings.HasPrefix(v.Reason, tt.reason))) {
				t.Fatalf("verdict %+v, want action %v reason %q", v, tt.action, tt.reason)
			}
			if v.SHA256 != sum(tt.data) {
				t.Errorf("SHA256 %s, want the SHA-256 of the bytes judged %s", v.SHA256, sum(tt.data))
			}
			if r.bytes < int64(len(tt.data)) {
				t.Errorf("read %d of %d bytes", r.bytes, len(tt.data))
			}
		})
	}
}

// TestCheckerReadsOnce: a plain file is read exactly once, whatever the
// number of checks that see it.
func TestCheckerReadsOnce(t *testing.T) {
	data := bytes.Repeat([]byte{1, 2, 3, 4, 5, 6, 7}, 300000)
	r := &countingReaderAt{r: bytes.NewReader(data)}
	c := NewChecker(newTestBuiltin(t), &engineStub{verdict: Verdict{Clean: true}})
	if _, err := c.Scan(context.Background(), File{Name: "f", Size: int64(len(data)), R: r}); err != nil {
		t.Fatal(err)
	}
	if r.bytes != int64(len(data)) {
		t.Fatalf("read %d bytes of a %d-byte file, want each byte once", r.bytes, len(data))
	}
}

// TestCheckerEngineError: an engine that cannot judge gives an error, never
// a verdict.
func TestCheckerEngineError(t *testing.T) {
	data := []byte("some bytes")
	down := fmt.Errorf("dial: %w", ErrUnavailable)
	c := NewChecker(newTestBuiltin(t), &engineStub{err: down})
	v, err := c.Scan(context.Background(), File{Name: "f", Size: int64(len(data)), R: bytes.NewReader(data)})
	if !errors.Is(err, ErrUnavailable) {
		t.Fatalf("Scan = %+v, %v; want ErrUnavailable", v, err)
	}
}

func TestWorse(t *testing.T) {
	clean := Verdict{Clean: true}
	q := Verdict{Action: Quarantine, Reason: "q"}
	r := Verdict{Action: Reject, Reason: "r"}
	for _, tt := range []struct{ a, b, want Verdict }{
		{clean, clean, clean}, {clean, q, q}, {q, clean, q}, {r, q, q}, {q, r, q}, {r, clean, r},
		{Verdict{Action: Quarantine, Reason: "first"}, Verdict{Action: Quarantine, Reason: "second"}, Verdict{Action: Quarantine, Reason: "first"}},
	} {
		if got := worse(tt.a, tt.b); got != tt.want {
			t.Errorf("worse(%+v, %+v) = %+v, want %+v", tt.a, tt.b, got, tt.want)
		}
	}
}
