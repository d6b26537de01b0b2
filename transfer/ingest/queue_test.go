package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/storage/state"
)

func TestBackoff(t *testing.T) {
	for _, tt := range []struct {
		n    int
		want time.Duration
	}{
		{1, 10 * time.Second}, {2, 20 * time.Second}, {3, 40 * time.Second}, {5, 160 * time.Second},
		{6, 5 * time.Minute}, {7, 5 * time.Minute}, {1000, 5 * time.Minute},
	} {
		if got := backoff(10*time.Second, 5*time.Minute, tt.n); got != tt.want {
			t.Errorf("backoff after %d failures = %v, want %v", tt.n, got, tt.want)
		}
	}
}

// TestRetryNow: a file whose check failed waits out its backoff, unless
// Retry says the scanner is back, and then it is checked at once.
func TestRetryNow(t *testing.T) {
	e := newEnv(t)
	sc := &stubScanner{err: fmt.Errorf("dial tcp: connection refused: %w", scanner.ErrUnavailable)}
	cfg := testConfig
	cfg.RetryInterval = time.Hour // no retry by the clock during this test
	s, err := New(cfg, zaptest.NewLogger(t), e.db, e.store(), sc)
	if err != nil {
		t.Fatal(err)
	}
	run(t, s)
	data := randBytes(10_000, 9)
	u := create(t, s, "alice", "later.bin", int64(len(data)))
	if _, err := write(s, u.ID, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for sc.count() < 1 {
		if time.Now().After(deadline) {
			t.Fatal("the completed upload was never checked")
		}
		time.Sleep(5 * time.Millisecond)
	}
	sc.set(nil)
	time.Sleep(300 * time.Millisecond)
	if n, st := sc.count(), e.upload(u.ID).Status; n != 1 || st != state.StatusProcessing {
		t.Fatalf("during the backoff: %d checks, status %s; want 1 check, processing", n, st)
	}
	s.Retry()
	waitStatus(t, e, u.ID, state.StatusAvailable)
}

// verdictScanner answers one fixed verdict, with the SHA-256 of what it read.
type verdictScanner struct{ v scanner.Verdict }

func (s verdictScanner) Scan(ctx context.Context, f scanner.File) (scanner.Verdict, error) {
	v := s.v
	st := &stubScanner{}
	clean, err := st.Scan(ctx, f)
	v.SHA256 = clean.SHA256
	return v, err
}

// TestVerdictActions: a Quarantine verdict moves the bytes to quarantine/,
// a Reject verdict deletes them; neither reaches Arrivals.
func TestVerdictActions(t *testing.T) {
	for _, tt := range []struct {
		action scanner.Action
		status string
	}{
		{scanner.Quarantine, state.StatusQuarantined},
		{scanner.Reject, state.StatusRejected},
	} {
		t.Run(tt.status, func(t *testing.T) {
			e := newEnv(t)
			s := e.service(e.store(), verdictScanner{scanner.Verdict{Action: tt.action, Reason: "Test.Finding"}})
			run(t, s)
			data := randBytes(20_000, 3)
			u := create(t, s, "alice", "f.bin", int64(len(data)))
			if _, err := write(s, u.ID, 0, bytes.NewReader(data)); err != nil {
				t.Fatal(err)
			}
			got := waitStatus(t, e, u.ID, tt.status)
			if got.Reason != "Test.Finding" {
				t.Errorf("reason %q, want the verdict's", got.Reason)
			}
			q := e.stored("quarantine/" + u.ID)
			if tt.action == scanner.Quarantine && !bytes.Equal(q, data) {
				t.Error("the quarantined object is not the upload's bytes")
			}
			if tt.action == scanner.Reject && q != nil {
				t.Error("a rejected file was kept in quarantine")
			}
			if e.stored(u.Key) != nil || e.stored("arrivals/alice/f.bin") != nil {
				t.Error("the bytes are still at the upload key or in Arrivals")
			}
		})
	}
}

// TestReleaseAndDelete: release hands a quarantined file back to be
// published, only with a reason and only if its bytes are unchanged; delete
// removes it. Each is audited.
func TestReleaseAndDelete(t *testing.T) {
	e := newEnv(t)
	s := e.service(e.store(), verdictScanner{scanner.Verdict{Action: scanner.Quarantine, Reason: "Test.Finding"}})
	ctx := context.Background()
	quarantine := func(name string, seed byte) (state.Upload, []byte) {
		data := randBytes(30_000, seed)
		u := create(t, s, "alice", name, int64(len(data)))
		if _, err := write(s, u.ID, 0, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		return u, data
	}
	keep, keepData := quarantine("keep.bin", 1)
	drop, _ := quarantine("drop.bin", 2)
	changed, _ := quarantine("changed.bin", 3)
	notYet, _ := quarantine("not-yet.bin", 4)
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Run(runCtx) }()
	for _, u := range []state.Upload{keep, drop, changed, notYet} {
		waitStatus(t, e, u.ID, state.StatusQuarantined)
	}
	stop()
	<-done

	seq := func() int64 {
		n, _, err := e.db.AuditHead(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	audited := func(what string, before int64, want int64) {
		t.Helper()
		if n := seq() - before; n != want {
			t.Errorf("%s wrote %d audit records, want %d", what, n, want)
		}
	}
	before := seq()
	if _, err := s.Release(ctx, keep.ID, "cli:admin", "  "); !errors.Is(err, ErrReasonRequired) {
		t.Errorf("release without a reason: %v, want ErrReasonRequired", err)
	}
	if _, err := s.Release(ctx, "nope", "cli:admin", "r"); !errors.Is(err, state.ErrNotFound) {
		t.Errorf("release of an unknown id: %v, want ErrNotFound", err)
	}
	audited("refusals for a missing reason and an unknown id", before, 0)
	before = seq()
	if _, err := s.Release(ctx, keep.ID, "cli:admin", "false positive"); err != nil {
		t.Fatal(err)
	}
	audited("a release", before, 1)
	if _, err := s.Release(ctx, keep.ID, "cli:admin", "again"); !errors.Is(err, ErrNotQuarantined) {
		t.Errorf("second release: %v, want ErrNotQuarantined", err)
	}
	if got := e.upload(keep.ID); got.Status != state.StatusPublishing {
		t.Fatalf("released upload is %s, want publishing", got.Status)
	}
	// The daemon's worker publishes it; stopped after, so that nothing else
	// writes audit records while the counts below are taken.
	runCtx, stop = context.WithCancel(ctx)
	done = make(chan struct{})
	go func() { defer close(done); _ = s.Run(runCtx) }()
	waitStatus(t, e, keep.ID, state.StatusAvailable)
	stop()
	<-done
	if !bytes.Equal(e.stored("arrivals/alice/keep.bin"), keepData) {
		t.Error("the released file's bytes are not in Arrivals")
	}

	before = seq()
	if err := s.Delete(ctx, drop.ID, "cli:admin", "confirmed"); err != nil {
		t.Fatal(err)
	}
	audited("a delete", before, 1)
	if got := e.upload(drop.ID); got.Status != state.StatusDeleted || e.stored("quarantine/"+drop.ID) != nil {
		t.Errorf("deleted upload: status %s, object kept %v", got.Status, e.stored("quarantine/"+drop.ID) != nil)
	}

	p := filepath.Join(e.root, "quarantine", changed.ID)
	if err := os.WriteFile(p, []byte("other bytes"), 0o600); err != nil {
		t.Fatal(err)
	}
	before = seq()
	if _, err := s.Release(ctx, changed.ID, "cli:admin", "looks fine"); !errors.Is(err, ErrContentChanged) {
		t.Errorf("release of changed bytes: %v, want ErrContentChanged", err)
	}
	audited("a refused release", before, 1)
	if got := e.upload(changed.ID); got.Status != state.StatusQuarantined {
		t.Errorf("after a refused release: %s, want quarantined", got.Status)
	}

	if _, err := s.Release(ctx, notYet.ID, "cli:admin", ""); !errors.Is(err, ErrReasonRequired) {
		t.Errorf("release without a reason: %v", err)
	}
}
