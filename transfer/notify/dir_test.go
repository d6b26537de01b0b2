package notify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

const secretCode = "48213907"

func newTestDir(t *testing.T) (*Dir, string, *observer.ObservedLogs) {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "mail") // NewDir creates it
	core, logs := observer.New(zapcore.DebugLevel)
	d, err := NewDir(dir, zap.New(core))
	if err != nil {
		t.Fatalf("NewDir: %v", err)
	}
	return d, dir, logs
}

func readOnly(t *testing.T, dir string) (string, *mail.Message, []byte) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Fatalf("directory holds %v, want exactly one message file", names)
	}
	name := entries[0].Name()
	raw, err := os.ReadFile(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	msg, err := mail.ReadMessage(f)
	if err != nil {
		t.Fatalf("%s is not a parseable message: %v", name, err)
	}
	return name, msg, raw
}

func TestDirWritesMessage(t *testing.T) {
	d, dir, logs := newTestDir(t)
	fixed := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	d.now = func() time.Time { return fixed }
	m := Message{
		User:    "alice",
		Email:   "alice@example.org",
		Subject: "Your mftd code " + secretCode,
		Body:    "Your code is " + secretCode + ".\nIt expires in 30 minutes.\n",
	}
	if err := d.Notify(context.Background(), m); err != nil {
		t.Fatalf("Notify: %v", err)
	}

	name, msg, _ := readOnly(t, dir)
	if want := fmt.Sprintf("%d-alice.eml", fixed.UnixNano()); name != want {
		t.Errorf("file name %q, want %q", name, want)
	}
	fi, err := os.Stat(filepath.Join(dir, name))
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("mode %v, want 0600", fi.Mode().Perm())
	}
	to, err := msg.Header.AddressList("To")
	if err != nil || len(to) != 1 || to[0].Address != "alice@example.org" {
		t.Errorf("To = %v (%v), want alice@example.org", to, err)
	}
	if from, err := msg.Header.AddressList("From"); err != nil || len(from) != 1 {
		t.Errorf("From = %v (%v), want one address", from, err)
	}
	if got := msg.Header.Get("Subject"); got != m.Subject {
		t.Errorf("Subject = %q, want %q", got, m.Subject)
	}
	if date, err := msg.Header.Date(); err != nil || !date.Equal(fixed) {
		t.Errorf("Date = %v (%v), want %v", date, err, fixed)
	}
	body, err := io.ReadAll(msg.Body)
	if err != nil {
		t.Fatal(err)
	}
	if want := strings.ReplaceAll(m.Body, "\n", "\r\n"); string(body) != want {
		t.Errorf("body %q, want %q", body, want)
	}

	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, secretCode) || strings.Contains(line, "alice@example.org") {
			t.Errorf("log line carries the code or the address: %s", line)
		}
	}
	if logs.FilterField(zap.String("user", "alice")).Len() != 1 {
		t.Errorf("want one log line naming the user, got %v", logs.All())
	}
}

func TestDirNoAddressAndUnicodeSubject(t *testing.T) {
	d, dir, _ := newTestDir(t)
	m := Message{User: "björn", Subject: "Código de emergência", Body: "Olá"}
	if err := d.Notify(context.Background(), m); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	name, msg, raw := readOnly(t, dir)
	if !strings.HasSuffix(name, "-björn.eml") {
		t.Errorf("file name %q", name)
	}
	if got := msg.Header.Get("X-Mftd-User"); got != "björn" {
		t.Errorf("X-Mftd-User = %q", got)
	}
	if got := msg.Header.Get("To"); got != "undisclosed-recipients:;" {
		t.Errorf("To = %q", got)
	}
	subj, err := new(mime.WordDecoder).DecodeHeader(msg.Header.Get("Subject"))
	if err != nil || subj != m.Subject {
		t.Errorf("Subject decodes to %q (%v), want %q", subj, err, m.Subject)
	}
	if !strings.Contains(string(raw), "\r\n\r\nOlá\r\n") {
		t.Errorf("body not as written: %q", raw)
	}
}

func TestDirRefusesBadMessages(t *testing.T) {
	d, dir, _ := newTestDir(t)
	for _, m := range []Message{
		{User: "", Subject: "s", Body: "b"},
		{User: "../etc", Subject: "s", Body: "b"},
		{User: "a/b", Subject: "s", Body: "b"},
		{User: `a\b`, Subject: "s", Body: "b"},
		{User: "a\x00b", Subject: "s", Body: "b"},
		{User: "alice", Subject: "s\r\nBcc: mallory@example.org", Body: "b"},
		{User: "alice", Email: "alice@example.org\r\nBcc: mallory@example.org", Subject: "s", Body: "b"},
		{User: "alice", Email: "not an address", Subject: "s", Body: "b"},
		{User: "alice", Email: "Alice <alice@example.org>", Subject: "s", Body: "b"},
	} {
		if err := d.Notify(context.Background(), m); !errors.Is(err, ErrInvalidMessage) {
			t.Errorf("Notify(%+v) = %v, want ErrInvalidMessage", m, err)
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 0 {
		t.Errorf("refused messages left %d files", len(entries))
	}
}

func TestDirConcurrentUniqueNames(t *testing.T) {
	d, dir, _ := newTestDir(t)
	fixed := time.Unix(1_700_000_000, 0)
	d.now = func() time.Time { return fixed } // every message at the same instant
	const n = 20
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			errs <- d.Notify(context.Background(), Message{User: "alice", Subject: "s", Body: "b"})
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != n {
		t.Fatalf("%d files, want %d (names collided or temp files left)", len(entries), n)
	}
	for _, e := range entries {
		if !strings.HasSuffix(e.Name(), "-alice.eml") || strings.HasPrefix(e.Name(), ".") {
			t.Errorf("unexpected file %q", e.Name())
		}
	}
}

func TestDirCancelledContext(t *testing.T) {
	d, dir, _ := newTestDir(t)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := d.Notify(ctx, Message{User: "alice", Subject: "s", Body: "b"}); !errors.Is(err, context.Canceled) {
		t.Errorf("Notify = %v, want context.Canceled", err)
	}
	if entries, _ := os.ReadDir(dir); len(entries) != 0 {
		t.Errorf("cancelled Notify left %d files", len(entries))
	}
}

func TestNewDirRefusesFile(t *testing.T) {
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NewDir(file, zap.NewNop()); err == nil {
		t.Error("NewDir on a regular file succeeded")
	}
	if _, err := NewDir("", zap.NewNop()); err == nil {
		t.Error("NewDir with no path succeeded")
	}
}
