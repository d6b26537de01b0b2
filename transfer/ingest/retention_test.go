package ingest

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/scanner/scannertest"
	"github.com/mftd/mftd/storage/state"
)

const day = 24 * time.Hour

// testClock is the service's clock, moved by the test while Run may read it.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// retentionService is a service with its own live settings (30 days for
// Arrivals and quarantine) and a clock the test moves.
func (e *env) retentionService(sc scanner.Scanner) (*Service, *policy.Live, *testClock) {
	e.t.Helper()
	live := policy.NewLive(policy.Settings{
		Limits: policy.Limits{MaxFileSize: testMaxSize}, IncompleteUploads: testTTL,
		ArrivalsRetention: 30 * day, QuarantineRetention: 30 * day,
	})
	cfg := testConfig
	cfg.Settings = live
	s, err := New(cfg, zaptest.NewLogger(e.t), e.db, e.store(), sc)
	if err != nil {
		e.t.Fatal(err)
	}
	clk := &testClock{t: time.Now()}
	s.now = clk.now
	return s, live, clk
}

// uploadUntil uploads data as name for owner and runs the check stage until
// the upload reaches status want; Run is stopped again before it returns,
// so no sweep runs behind the test's back.
func (e *env) uploadUntil(s *Service, owner, name string, data []byte, want string) state.Upload {
	e.t.Helper()
	u := create(e.t, s, owner, name, int64(len(data)))
	if _, err := write(s, u.ID, 0, bytes.NewReader(data)); err != nil {
		e.t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(ctx) }()
	defer func() { stop(); <-done }()
	return waitStatus(e.t, e, u.ID, want)
}

// auditAfter returns the audit records written after seq.
func (e *env) auditAfter(seq int64) []state.AuditRecord {
	e.t.Helper()
	recs, err := e.db.AuditSince(context.Background(), seq, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func (e *env) auditSeq() int64 {
	e.t.Helper()
	seq, _, err := e.db.AuditHead(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return seq
}

func (e *env) arrivalNames(owner string) []string {
	e.t.Helper()
	fs, err := e.db.FilesByOwner(context.Background(), owner)
	if err != nil {
		e.t.Fatal(err)
	}
	var names []string
	for _, f := range fs {
		names = append(names, f.Name)
	}
	return names
}

// A sweep deletes the Arrivals older than retention.arrivals by their
// recorded creation time (not the object's modification time), object and
// row, with one audit record each; a row whose object is already gone (a
// crash between the two) is finished; a shorter setting applies at the next
// sweep.
func TestRetentionArrivals(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, live, clk := e.retentionService(scannertest.Builtin(t, 0))
	start := clk.now()

	clk.set(start.Add(-31 * day))
	old := e.uploadUntil(s, "alice", "old.bin", []byte("old bytes"), state.StatusAvailable)
	clk.set(start.Add(-40 * day))
	crashed := e.uploadUntil(s, "bob", "crashed.bin", []byte("crashed"), state.StatusAvailable)
	clk.set(start.Add(-29 * day))
	young := e.uploadUntil(s, "alice", "young.bin", []byte("young bytes"), state.StatusAvailable)
	// Modification times say nothing: the old file looks new, the young one old.
	for key, mtime := range map[string]time.Time{old.Key: start, young.Key: start.Add(-365 * day)} {
		if err := os.Chtimes(filepath.Join(e.root, filepath.FromSlash(key)), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Remove(filepath.Join(e.root, filepath.FromSlash(crashed.Key))); err != nil {
		t.Fatal(err)
	}

	clk.set(start)
	seq := e.auditSeq()
	if err := s.Sweep(ctx); err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if got := e.arrivalNames("alice"); len(got) != 1 || got[0] != "young.bin" {
		t.Errorf("alice's Arrivals after the sweep: %q, want only young.bin", got)
	}
	if got := e.arrivalNames("bob"); len(got) != 0 {
		t.Errorf("bob's Arrivals after the sweep: %q, want none (object already gone)", got)
	}
	if e.stored(old.Key) != nil {
		t.Error("the expired Arrival's object is still stored")
	}
	if string(e.stored(young.Key)) != "young bytes" {
		t.Error("the 29-day-old Arrival's object was touched")
	}
	recs := e.auditAfter(seq)
	got := map[string]string{}
	for _, r := range recs {
		if r.Actor != "system" || r.Action != "arrival.expire" {
			t.Errorf("audit record %s by %s on %s, want arrival.expire by system", r.Action, r.Actor, r.Object)
		}
		got[r.Object] = r.Result
	}
	if len(recs) != 2 || got[old.Key] == "" || got[crashed.Key] == "" {
		t.Errorf("audit records of the sweep: %+v, want one each for %s and %s", recs, old.Key, crashed.Key)
	}
	if !strings.Contains(got[old.Key], "sha256="+old.SHA256) {
		t.Errorf("audit result %q does not name the file's SHA-256", got[old.Key])
	}

	// Nothing more to do: a second sweep writes nothing.
	seq = e.auditSeq()
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.auditAfter(seq)); n != 0 {
		t.Errorf("an idle sweep wrote %d audit records", n)
	}

	// A shorter retention, stored live, applies at the next sweep.
	set := *live.Load()
	set.ArrivalsRetention = 28 * day
	live.Store(set)
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.arrivalNames("alice"); len(got) != 0 {
		t.Errorf("alice's Arrivals after retention became 28 days: %q, want none", got)
	}
	if recs := e.auditAfter(seq); len(recs) != 1 || recs[0].Object != young.Key {
		t.Errorf("audit records after the change: %+v, want one for %s", recs, young.Key)
	}
	if e.stored(young.Key) != nil {
		t.Error("the young Arrival's object is still stored")
	}
	if n, err := e.db.VerifyAudit(ctx); err != nil {
		t.Errorf("audit chain after %d records: %v", n, err)
	}
}

// Zero retention keeps everything.
func TestRetentionZeroKeeps(t *testing.T) {
	e := newEnv(t)
	s, live, clk := e.retentionService(verdictScanner{scanner.Verdict{Action: scanner.Quarantine, Reason: "Test.Finding"}})
	start := clk.now()
	clk.set(start.Add(-1000 * day))
	q := e.uploadUntil(s, "alice", "q.bin", []byte("bad"), state.StatusQuarantined)
	live.Store(policy.Settings{Limits: policy.Limits{MaxFileSize: testMaxSize}, IncompleteUploads: testTTL})
	clk.set(start.Add(1000 * day))
	if err := s.Sweep(context.Background()); err != nil {
		t.Fatal(err)
	}
	if u := e.upload(q.ID); u.Status != state.StatusQuarantined || e.stored("quarantine/"+q.ID) == nil {
		t.Errorf("with zero retention the quarantined file is %s, object kept %v", u.Status, e.stored("quarantine/"+q.ID) != nil)
	}
}

// A sweep deletes quarantined files kept longer than retention.quarantine,
// counted from when they were quarantined: object deleted, status deleted
// with reason "retention…", one audit record each.
func TestRetentionQuarantine(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, live, clk := e.retentionService(verdictScanner{scanner.Verdict{Action: scanner.Quarantine, Reason: "Test.Finding"}})
	// Quarantined now (the database stamps the move with the real time);
	// the clock is moved forward instead.
	a := e.uploadUntil(s, "alice", "a.bin", []byte("infected a"), state.StatusQuarantined)
	b := e.uploadUntil(s, "bob", "b.bin", []byte("infected b"), state.StatusQuarantined)
	start := time.Now()

	clk.set(start.Add(29 * day))
	seq := e.auditSeq()
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	for _, u := range []state.Upload{a, b} {
		if got := e.upload(u.ID); got.Status != state.StatusQuarantined || e.stored("quarantine/"+u.ID) == nil {
			t.Errorf("29 days in quarantine: %s is %s", u.ID, got.Status)
		}
	}
	if n := len(e.auditAfter(seq)); n != 0 {
		t.Errorf("a sweep that deleted nothing wrote %d audit records", n)
	}

	clk.set(start.Add(31 * day))
	if err := os.Remove(filepath.Join(e.root, "quarantine", b.ID)); err != nil { // a crash after the object went
		t.Fatal(err)
	}
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	recs := e.auditAfter(seq)
	for _, u := range []state.Upload{a, b} {
		got := e.upload(u.ID)
		if got.Status != state.StatusDeleted || !strings.HasPrefix(got.Reason, "retention") || !strings.Contains(got.Reason, "Test.Finding") {
			t.Errorf("31 days in quarantine: %s is %s (%q), want deleted by retention naming the verdict", u.ID, got.Status, got.Reason)
		}
		if e.stored("quarantine/"+u.ID) != nil {
			t.Errorf("the quarantined object of %s is still stored", u.ID)
		}
	}
	if len(recs) != 2 {
		t.Fatalf("audit records: %+v, want 2", recs)
	}
	for i, u := range []state.Upload{a, b} {
		if r := recs[i]; r.Actor != "system" || r.Action != "quarantine.expire" || r.Object != u.ID {
			t.Errorf("audit record %d: %s by %s on %s, want quarantine.expire by system on %s", i, r.Action, r.Actor, r.Object, u.ID)
		}
	}

	// A longer setting is read live too: a file quarantined now waits.
	set := *live.Load()
	set.QuarantineRetention = 60 * day
	live.Store(set)
	clk.set(time.Now())
	c := e.uploadUntil(s, "carol", "c.bin", []byte("infected c"), state.StatusQuarantined)
	clk.set(time.Now().Add(31 * day))
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.upload(c.ID); got.Status != state.StatusQuarantined {
		t.Errorf("31 days in quarantine with retention 60 days: %s", got.Status)
	}
}

// A file listed as expired but moved away before its turn frees its key for
// a new upload of the same name: the new file's bytes stay.
func TestRetentionStaleListing(t *testing.T) {
	e := newEnv(t)
	ctx := context.Background()
	s, _, clk := e.retentionService(scannertest.Builtin(t, 0))
	start := clk.now()
	clk.set(start.Add(-31 * day))
	e.uploadUntil(s, "alice", "x.bin", []byte("first"), state.StatusAvailable)
	fs, err := e.db.FilesCreatedBefore(ctx, start.Add(-30*day), state.FileCursor{}, 10)
	if err != nil || len(fs) != 1 {
		t.Fatalf("expired files: %v, %v", fs, err)
	}
	stale := fs[0]
	// Moved away (as a move into a share removes the row), then a new
	// upload of the same name takes the key.
	if _, err := e.db.DeleteFile(ctx, stale, state.AuditRecord{Actor: "test", Action: "test.move"}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(filepath.Join(e.root, filepath.FromSlash(stale.Key))); err != nil {
		t.Fatal(err)
	}
	clk.set(start)
	fresh := e.uploadUntil(s, "alice", "x.bin", []byte("second"), state.StatusAvailable)
	if fresh.Key != stale.Key {
		t.Fatalf("the new upload got %s, want the freed %s", fresh.Key, stale.Key)
	}
	seq := e.auditSeq()
	if err := s.expireArrival(ctx, stale, 30*day); err != nil {
		t.Fatal(err)
	}
	if string(e.stored(fresh.Key)) != "second" {
		t.Error("the new file's bytes were deleted for the old one's expiry")
	}
	if n := len(e.auditAfter(seq)); n != 0 {
		t.Errorf("%d audit records for a file that was gone", n)
	}
}
