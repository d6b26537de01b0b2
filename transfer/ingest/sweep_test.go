package ingest

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/scanner/scannertest"
	"github.com/mftd/mftd/storage/state"
)

// A sweep terminates uploads past their expiry (audited, bytes deleted),
// deletes remains under uploads/ that no live upload references once they
// are older than the incomplete-upload time, and leaves alone live uploads,
// young remains, and uploads busy with a request.
func TestSweep(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s := e.service(e.store(), scannertest.Builtin(t, 0))
	start := time.Now()

	expired := create(t, s, "alice", "expired.bin", 10)
	if _, err := write(s, expired.ID, 0, strings.NewReader("01234")); err != nil {
		t.Fatal(err)
	}
	busy := create(t, s, "alice", "busy.bin", 10)
	later := start.Add(testTTL + time.Minute)
	s.now = func() time.Time { return later }
	live := create(t, s, "alice", "live.bin", 10)
	if _, err := write(s, live.ID, 0, strings.NewReader("01234")); err != nil {
		t.Fatal(err)
	}
	// A terminated upload whose bytes could not be deleted, remains no
	// session ever recorded, and remains written to a moment ago.
	gone := create(t, s, "alice", "gone.bin", 10)
	if err := e.db.Transition(ctx, gone.ID, state.StatusUploading, state.StatusTerminated, "", "test", ""); err != nil {
		t.Fatal(err)
	}
	orphan := filepath.Join(e.root, "uploads", "0123456789abcdef0123456789abcdef")
	young := filepath.Join(e.root, "uploads", "fedcba9876543210fedcba9876543210")
	for _, p := range []string{orphan, young} {
		if err := os.WriteFile(p, []byte("remains"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	old := start.Add(-time.Minute)
	for _, p := range []string{orphan, filepath.Join(e.root, filepath.FromSlash(gone.Key))} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Chtimes(young, later, later); err != nil {
		t.Fatal(err)
	}

	unlock, ok := s.TryLock(busy.ID)
	if !ok {
		t.Fatal("TryLock")
	}
	seq, _, err := e.db.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Sweep(ctx); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	unlock()

	if u := e.upload(expired.ID); u.Status != state.StatusTerminated || !strings.Contains(u.Reason, "expired") {
		t.Errorf("expired upload: status %s (%q), want terminated as expired", u.Status, u.Reason)
	}
	if e.stored(expired.Key) != nil {
		t.Error("the expired upload's bytes are still stored")
	}
	if u := e.upload(busy.ID); u.Status != state.StatusUploading || e.stored(busy.Key) == nil {
		t.Errorf("an expired upload busy with a request was swept (status %s)", u.Status)
	}
	if u := e.upload(live.ID); u.Status != state.StatusUploading || string(e.stored(live.Key)) != "01234" {
		t.Errorf("a live upload was touched: status %s, stored %q", u.Status, e.stored(live.Key))
	}
	if e.stored(gone.Key) != nil {
		t.Error("the terminated upload's old remains are still stored")
	}
	if _, err := os.Stat(orphan); !os.IsNotExist(err) {
		t.Errorf("old remains with no session: %v, want deleted", err)
	}
	if _, err := os.Stat(young); err != nil {
		t.Errorf("young remains with no session were deleted: %v", err)
	}
	if after, _, _ := e.db.AuditHead(ctx); after != seq+1 {
		t.Errorf("audit records added by the sweep: %d, want 1 (the expiry)", after-seq)
	}

	// The busy one goes once it is free.
	if err := s.Sweep(ctx); err != nil {
		t.Fatalf("second Sweep: %v", err)
	}
	if u := e.upload(busy.ID); u.Status != state.StatusTerminated || e.stored(busy.Key) != nil {
		t.Errorf("expired upload after its request ended: status %s, want terminated and deleted", u.Status)
	}
}
