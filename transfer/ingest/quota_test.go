package ingest

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/storage/state"
)

// quotaService is a service with its own live settings holding the
// default Arrivals quota q.
func (e *env) quotaService(sc scanner.Scanner, q policy.UserQuota) (*Service, *policy.Live) {
	e.t.Helper()
	live := policy.NewLive(policy.Settings{
		Limits: policy.Limits{MaxFileSize: testMaxSize}, IncompleteUploads: testTTL,
		Quotas: policy.Quotas{UserArrivalsBytes: q.ArrivalsBytes, UserArrivalsFiles: q.ArrivalsFiles},
	})
	cfg := testConfig
	cfg.Settings = live
	s, err := New(cfg, zaptest.NewLogger(e.t), e.db, e.store(), sc)
	if err != nil {
		e.t.Fatal(err)
	}
	return s, live
}

// usage is owner's usage as Service.ArrivalsUsage reports it.
func usage(t *testing.T, s *Service, owner string) policy.ArrivalsUsage {
	t.Helper()
	u, err := s.ArrivalsUsage(context.Background(), owner)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func wantUsage(t *testing.T, s *Service, owner string, want policy.ArrivalsUsage) {
	t.Helper()
	if got := usage(t, s, owner); got != want {
		t.Fatalf("usage of %s = %+v, want %+v", owner, got, want)
	}
}

// wantQuotaError checks err is a refusal by quota q.
func wantQuotaError(t *testing.T, what string, err error, q policy.Quota) *policy.QuotaError {
	t.Helper()
	var qe *policy.QuotaError
	if !errors.As(err, &qe) || !errors.Is(err, policy.ErrQuotaExceeded) || qe.Quota != q {
		t.Fatalf("%s: %v, want a refusal by the %s quota", what, err, q)
	}
	return qe
}

// lastAudit is the newest audit record.
func (e *env) lastAudit() state.AuditRecord {
	e.t.Helper()
	seq, _, err := e.db.AuditHead(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	recs, err := e.db.AuditSince(context.Background(), seq-1, 1)
	if err != nil || len(recs) != 1 {
		e.t.Fatalf("audit record %d: %v, %v", seq, recs, err)
	}
	return recs[0]
}

// TestQuotaReserveAndRelease: an upload of known length reserves its length
// and a file when it is created; a creation that does not fit is refused,
// audited, and records nothing; completion turns the reservation into the
// file (counted once); termination, expiry and quarantine free it.
func TestQuotaReserveAndRelease(t *testing.T) {
	e := newEnv(t)
	sc := &verdictByName{quarantine: "bad"}
	s, live := e.quotaService(sc, policy.UserQuota{ArrivalsBytes: 100_000, ArrivalsFiles: 3})
	run(t, s)
	ctx := context.Background()

	data := randBytes(60_000, 1)
	a := create(t, s, "alice", "a.bin", int64(len(data)))
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: 60_000, Files: 1, ReservedBytes: 60_000, ReservedFiles: 1})

	_, err := s.Create(ctx, CreateRequest{Owner: "alice", Filename: "b.bin", Length: 40_001, RemoteAddr: "192.0.2.1:5"})
	qe := wantQuotaError(t, "a creation past the bytes quota", err, policy.QuotaArrivalsBytes)
	if qe.Subject != "alice" || qe.Limit != 100_000 || qe.Used != 60_000 || qe.Want != 40_001 {
		t.Errorf("refusal %+v, want alice's: limit 100000, used 60000, wants 40001", qe)
	}
	rec := e.lastAudit()
	if rec.Action != "upload.create" || rec.Actor != "alice" || !strings.HasPrefix(rec.Result, "refused: Arrivals quota of alice exceeded") || rec.RemoteAddr != "192.0.2.1:5" {
		t.Errorf("audit of the refusal: %+v", rec)
	}
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: 60_000, Files: 1, ReservedBytes: 60_000, ReservedFiles: 1})
	// Others have their own quota.
	bob := create(t, s, "bob", "b.bin", 90_000)

	// Complete: the reservation becomes the file, counted once.
	if _, err := write(s, a.ID, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e, a.ID, state.StatusAvailable)
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: 60_000, Files: 1})

	// Exactly the rest fits; terminating it frees it.
	c := create(t, s, "alice", "c.bin", 40_000)
	if _, err := s.Create(ctx, CreateRequest{Owner: "alice", Filename: "d.bin", Length: 1}); err == nil {
		t.Fatal("a byte past a full quota was accepted")
	}
	unlock, _ := s.TryLock(c.ID)
	err = s.Terminate(ctx, c.ID, "alice", "")
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: 60_000, Files: 1})

	// Expiry frees it.
	set := *live.Load()
	set.IncompleteUploads = time.Millisecond
	live.Store(set)
	x := create(t, s, "alice", "x.bin", 40_000)
	set.IncompleteUploads = testTTL
	live.Store(set)
	time.Sleep(2 * time.Millisecond)
	if err := s.Sweep(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.upload(x.ID); got.Status != state.StatusTerminated {
		t.Fatalf("expired upload is %s", got.Status)
	}
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: 60_000, Files: 1})

	// A quarantined file is not in Arrivals and does not count.
	bad := randBytes(30_000, 2)
	q := create(t, s, "alice", "bad", int64(len(bad)))
	if _, err := write(s, q.ID, 0, bytes.NewReader(bad)); err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e, q.ID, state.StatusQuarantined)
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: 60_000, Files: 1})

	// The files quota: two more files, the third refused; an empty file
	// counts as a file.
	create(t, s, "alice", "empty", 0)
	create(t, s, "alice", "small.bin", 10)
	_, err = s.Create(ctx, CreateRequest{Owner: "alice", Filename: "one-too-many", Length: 1})
	wantQuotaError(t, "a creation past the files quota", err, policy.QuotaArrivalsFiles)
	_, err = s.Create(ctx, CreateRequest{Owner: "alice", Filename: "stream", Length: LengthUnknown})
	wantQuotaError(t, "an unknown-length creation past the files quota", err, policy.QuotaArrivalsFiles)

	// A raised quota applies at once.
	set.Quotas.Users = map[string]policy.UserQuota{"alice": {ArrivalsFiles: 10}}
	live.Store(set)
	create(t, s, "alice", "one-more", 1)
	if got := usage(t, s, "bob"); got.Bytes != bob.Length {
		t.Errorf("bob's usage %+v, want his own reservation only", got)
	}
}

// verdictByName quarantines the file named quarantine and passes the rest.
type verdictByName struct{ quarantine string }

func (v *verdictByName) Scan(ctx context.Context, f scanner.File) (scanner.Verdict, error) {
	clean, err := (&stubScanner{}).Scan(ctx, f)
	if err == nil && f.Name == v.quarantine {
		return scanner.Verdict{Action: scanner.Quarantine, Reason: "Test.Finding", SHA256: clean.SHA256}, nil
	}
	return clean, err
}

// TestQuotaUnknownLength: an upload of unknown length (SFTP) takes bytes
// while they fit; the write that would cross the quota is refused with the
// quota error and keeps what was durable; a stream that ends exactly at
// the quota completes; a reservation made meanwhile shrinks the room.
func TestQuotaUnknownLength(t *testing.T) {
	e := newEnv(t)
	const limit = 3*testCheckpoint + 100
	s, _ := e.quotaService(&stubScanner{}, policy.UserQuota{ArrivalsBytes: limit})
	run(t, s)
	ctx := context.Background()

	// Crossing: refused at the buffer that would cross; the checkpoints
	// before it stay, resumable.
	data := randBytes(5*testCheckpoint, 4)
	u := create(t, s, "alice", "stream.bin", LengthUnknown)
	off, err := write(s, u.ID, 0, bytes.NewReader(data))
	qe := wantQuotaError(t, "a stream crossing the quota", err, policy.QuotaArrivalsBytes)
	if qe.Limit != limit || qe.Subject != "alice" {
		t.Errorf("refusal %+v", qe)
	}
	if off != 3*testCheckpoint {
		t.Fatalf("durable offset after the refusal: %d, want the last checkpoint %d", off, 3*testCheckpoint)
	}
	got := e.upload(u.ID)
	if got.Status != state.StatusUploading || got.Offset != off || !bytes.Equal(got.HashState, hashStateOf(data[:off])) {
		t.Fatalf("after the refusal: %s at %d; want uploading at %d with its hash state", got.Status, got.Offset, off)
	}
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: off, Files: 1, ReservedBytes: off, ReservedFiles: 1})
	// Resuming fails again at once, keeping everything.
	if off2, err := write(s, u.ID, off, bytes.NewReader(data[off:])); !errors.Is(err, policy.ErrQuotaExceeded) || off2 != off {
		t.Fatalf("resumed past the quota: %d, %v", off2, err)
	}
	// Exactly to the quota: accepted; Finish fixes the length.
	if off2, err := write(s, u.ID, off, bytes.NewReader(data[off:limit])); err != nil || off2 != limit {
		t.Fatalf("write up to the quota: %d, %v", off2, err)
	}
	unlock, _ := s.TryLock(u.ID)
	err = s.Finish(ctx, u.ID, "alice", "")
	unlock()
	if err != nil {
		t.Fatal(err)
	}
	waitStatus(t, e, u.ID, state.StatusAvailable)
	wantUsage(t, s, "alice", policy.ArrivalsUsage{Bytes: limit, Files: 1})

	// Another user: a reservation made while a stream is paused leaves the
	// stream only the room that is left.
	v := create(t, s, "bob", "stream.bin", LengthUnknown)
	if off, err := write(s, v.ID, 0, bytes.NewReader(data[:testCheckpoint])); err != nil || off != testCheckpoint {
		t.Fatalf("bob's first write: %d, %v", off, err)
	}
	create(t, s, "bob", "known.bin", limit-testCheckpoint-10)
	off, err = write(s, v.ID, testCheckpoint, bytes.NewReader(data[testCheckpoint:2*testCheckpoint]))
	wantQuotaError(t, "a stream after the rest was reserved", err, policy.QuotaArrivalsBytes)
	if off != testCheckpoint {
		t.Fatalf("bob's durable offset %d, want %d", off, testCheckpoint)
	}
	if off, err := write(s, v.ID, testCheckpoint, bytes.NewReader(data[testCheckpoint:testCheckpoint+10])); err != nil || off != testCheckpoint+10 {
		t.Fatalf("the last 10 bytes of room: %d, %v", off, err)
	}
}
