package state

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pressly/goose/v3"
)

func hashOf(s string) []byte {
	h := sha256.Sum256([]byte(s))
	return h[:]
}

func mustAccount(t *testing.T, db *DB, name string) Account {
	t.Helper()
	a, err := db.CreateAccount(context.Background(), Account{Name: name, PasswordHash: "h", TOTPSecret: "S"})
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// session returns a session of account opened at created, live for 8 hours.
func session(accountID int64, id string, created time.Time) Session {
	return Session{
		ID:         id,
		TokenHash:  hashOf("token " + id),
		AccountID:  accountID,
		CreatedAt:  created,
		LastSeen:   created,
		ExpiresAt:  created.Add(8 * time.Hour),
		RemoteAddr: "192.0.2.1",
	}
}

func mustOpenSession(t *testing.T, db *DB, s Session) Session {
	t.Helper()
	if err := db.OpenSession(context.Background(), s); err != nil {
		t.Fatalf("OpenSession %s: %v", s.ID, err)
	}
	return s
}

func sessionIDs(t *testing.T, db *DB, accountID int64) []string {
	t.Helper()
	ss, err := db.SessionsOf(context.Background(), accountID)
	if err != nil {
		t.Fatal(err)
	}
	ids := []string{}
	for _, s := range ss {
		ids = append(ids, s.ID)
	}
	return ids
}

// --- failure counters ---

func TestRecordFailureWindowsAndLocks(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	l := FailureLimits{Threshold: 3, Window: 10 * time.Minute, LockFor: 5 * time.Minute}
	at := func(d time.Duration) time.Time { return t0.Add(d) }

	for i, tc := range []struct {
		at        time.Duration
		count     int
		lockedEnd time.Duration // 0: not locked
		locked    bool
	}{
		{0, 1, 0, false},
		{time.Minute, 2, 0, false},
		{2 * time.Minute, 3, 7 * time.Minute, true},                               // threshold reached: locks
		{3 * time.Minute, 4, 7 * time.Minute, false},                              // already locked: not extended, not reported again
		{8 * time.Minute, 5, 13 * time.Minute, true},                              // lock over, still over threshold in the window: locks again
		{10 * time.Minute, 6, 13 * time.Minute, false},                            // exactly Window after its start: same window
		{10*time.Minute + 1, 1, 13 * time.Minute, false},                          // a new window; the lock stands
		{20 * time.Minute, 2, 0, false},                                           // same (second) window; lock over
		{20*time.Minute + 2, 1, 0, false},                                         // third window
		{21 * time.Minute, 2, 0, false},                                           //
		{22 * time.Minute, 3, 27 * time.Minute, true},                             // threshold in the third window
		{45 * time.Minute, 1, 0, false},                                           // long after: a new count
		{45*time.Minute + time.Second, 2, 0, false},                               //
		{45*time.Minute + 2*time.Second, 3, 50*time.Minute + 2*time.Second, true}, //
	} {
		count, until, locked, err := db.RecordFailure(ctx, FailAccount, "alice", at(tc.at), l)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		var wantUntil time.Time
		if tc.lockedEnd != 0 {
			wantUntil = at(tc.lockedEnd)
		}
		if count != tc.count || !until.Equal(wantUntil) || locked != tc.locked {
			t.Errorf("step %d at +%v: RecordFailure = %d, %v, %t; want %d, %v, %t",
				i, tc.at, count, until, locked, tc.count, wantUntil, tc.locked)
		}
	}
}

func TestLockedUntilFailureCountAndClear(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	l := FailureLimits{Threshold: 2, Window: 10 * time.Minute, LockFor: 5 * time.Minute}

	until, err := db.LockedUntil(ctx, FailAccount, "alice", t0)
	if err != nil || !until.IsZero() {
		t.Fatalf("LockedUntil with no failures = %v, %v; want zero", until, err)
	}
	for _, d := range []time.Duration{0, time.Minute} {
		if _, _, _, err := db.RecordFailure(ctx, FailAccount, "alice", t0.Add(d), l); err != nil {
			t.Fatal(err)
		}
	}
	// The same subject string of another kind is another counter.
	if n, _, locked, err := db.RecordFailure(ctx, FailAddress, "alice", t0, l); err != nil || n != 1 || locked {
		t.Fatalf("address counter = %d, locked %t, %v; want 1, false", n, locked, err)
	}

	end := t0.Add(6 * time.Minute)
	for _, tc := range []struct {
		kind, subject string
		at            time.Duration
		want          time.Time
	}{
		{FailAccount, "alice", time.Minute, end},
		{FailAccount, "alice", 6*time.Minute - 1, end},
		{FailAccount, "alice", 6 * time.Minute, time.Time{}}, // the lock's end is not locked
		{FailAccount, "alice", time.Hour, time.Time{}},
		{FailAddress, "alice", time.Minute, time.Time{}},
		{FailAccount, "bob", time.Minute, time.Time{}},
	} {
		got, err := db.LockedUntil(ctx, tc.kind, tc.subject, t0.Add(tc.at))
		if err != nil || !got.Equal(tc.want) {
			t.Errorf("LockedUntil(%s, %s, +%v) = %v, %v; want %v", tc.kind, tc.subject, tc.at, got, err, tc.want)
		}
	}

	for _, tc := range []struct {
		at     time.Duration
		window time.Duration
		want   int
	}{
		{time.Minute, 10 * time.Minute, 2},
		{10 * time.Minute, 10 * time.Minute, 2},
		{10*time.Minute + 1, 10 * time.Minute, 0},
		{time.Hour, 2 * time.Hour, 2},
	} {
		got, err := db.FailureCount(ctx, FailAccount, "alice", t0.Add(tc.at), tc.window)
		if err != nil || got != tc.want {
			t.Errorf("FailureCount(+%v, window %v) = %d, %v; want %d", tc.at, tc.window, got, err, tc.want)
		}
	}

	if err := db.ClearFailures(ctx, FailAccount, "alice"); err != nil {
		t.Fatal(err)
	}
	if got, err := db.LockedUntil(ctx, FailAccount, "alice", t0.Add(time.Minute)); err != nil || !got.IsZero() {
		t.Errorf("LockedUntil after ClearFailures = %v, %v; want zero", got, err)
	}
	if got, err := db.FailureCount(ctx, FailAccount, "alice", t0.Add(time.Minute), time.Hour); err != nil || got != 0 {
		t.Errorf("FailureCount after ClearFailures = %d, %v; want 0", got, err)
	}
	if got, err := db.FailureCount(ctx, FailAddress, "alice", t0, time.Hour); err != nil || got != 1 {
		t.Errorf("address counter after clearing the account's = %d, %v; want 1", got, err)
	}
	if n, until, locked, err := db.RecordFailure(ctx, FailAccount, "alice", t0.Add(2*time.Minute), l); err != nil || n != 1 || !until.IsZero() || locked {
		t.Errorf("RecordFailure after ClearFailures = %d, %v, %t, %v; want 1, zero, false", n, until, locked, err)
	}
	if err := db.ClearFailures(ctx, FailAccount, "nobody"); err != nil {
		t.Errorf("ClearFailures of an unknown subject: %v", err)
	}

	// Pruning keeps live windows and locks.
	if _, _, _, err := db.RecordFailure(ctx, FailAddress, "192.0.2.7", t0, FailureLimits{Threshold: 1, Window: time.Minute, LockFor: time.Hour}); err != nil {
		t.Fatal(err)
	}
	n, err := db.PruneFailures(ctx, t0.Add(30*time.Minute), 29*time.Minute)
	if err != nil || n != 1 { // the address "alice": old window, not locked
		t.Errorf("PruneFailures = %d, %v; want 1", n, err)
	}
	if got, _ := db.LockedUntil(ctx, FailAddress, "192.0.2.7", t0.Add(30*time.Minute)); got.IsZero() {
		t.Error("PruneFailures removed a live lock")
	}
	if got, _ := db.FailureCount(ctx, FailAccount, "alice", t0.Add(2*time.Minute), time.Hour); got != 1 {
		t.Errorf("PruneFailures removed a counter in its window: count %d", got)
	}
}

func TestRecordFailureRefusesBadArguments(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	good := FailureLimits{Threshold: 5, Window: time.Minute, LockFor: time.Minute}
	for _, tc := range []struct {
		name          string
		kind, subject string
		l             FailureLimits
	}{
		{"zero threshold", FailAccount, "alice", FailureLimits{Window: time.Minute, LockFor: time.Minute}},
		{"zero window", FailAccount, "alice", FailureLimits{Threshold: 5, LockFor: time.Minute}},
		{"zero lock", FailAccount, "alice", FailureLimits{Threshold: 5, Window: time.Minute}},
		{"empty kind", "", "alice", good},
		{"empty subject", FailAddress, "", good},
	} {
		if _, _, _, err := db.RecordFailure(ctx, tc.kind, tc.subject, t0, tc.l); err == nil {
			t.Errorf("%s: RecordFailure succeeded", tc.name)
		}
	}
}

// Two handles on one file, as the daemon and an admin command (or two nodes)
// would have, record failures of one subject concurrently: each is counted
// exactly once, and exactly one reports the lock.
func TestRecordFailureConcurrentTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	handles := []*DB{openAt(t, path), openAt(t, path)}
	const goroutines, each = 8, 10
	const total = 2 * goroutines * each
	l := FailureLimits{Threshold: total / 2, Window: time.Hour, LockFor: time.Hour}

	type result struct {
		count  int
		locked bool
		err    error
	}
	results := make(chan result, total)
	var wg sync.WaitGroup
	for _, db := range handles {
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range each {
					n, _, locked, err := db.RecordFailure(ctx, FailAddress, "198.51.100.9", t0, l)
					results <- result{n, locked, err}
				}
			}()
		}
	}
	wg.Wait()
	close(results)

	counts := map[int]bool{}
	var lockedAt []int
	for r := range results {
		if r.err != nil {
			t.Errorf("RecordFailure: %v", r.err)
			continue
		}
		if counts[r.count] {
			t.Errorf("count %d returned twice", r.count)
		}
		counts[r.count] = true
		if r.locked {
			lockedAt = append(lockedAt, r.count)
		}
	}
	for i := 1; i <= total; i++ {
		if !counts[i] {
			t.Errorf("no failure was counted as number %d", i)
		}
	}
	if len(lockedAt) != 1 || lockedAt[0] != l.Threshold {
		t.Errorf("locked reported at counts %v, want exactly [%d]", lockedAt, l.Threshold)
	}
	for i, db := range handles {
		if n, err := db.FailureCount(ctx, FailAddress, "198.51.100.9", t0, time.Hour); err != nil || n != total {
			t.Errorf("handle %d: FailureCount = %d, %v; want %d", i, n, err, total)
		}
	}
}

// --- account settings ---

func TestAccountSettings(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)

	a, err := db.CreateAccount(ctx, Account{Name: "alice", PasswordHash: "old", TOTPSecret: "OLD", Email: "alice@example.org"})
	if err != nil {
		t.Fatal(err)
	}
	d, err := db.CreateAccount(ctx, Account{Name: "dora", Disabled: true})
	if err != nil {
		t.Fatal(err)
	}
	if got, err := db.AccountByName(ctx, "dora"); err != nil || !got.Disabled || got.ID != d.ID {
		t.Errorf("CreateAccount(Disabled) read back as %+v, %v", got, err)
	}
	if err := db.UseTOTPStep(ctx, a.ID, 100); err != nil {
		t.Fatal(err)
	}

	if err := db.SetPassword(ctx, a.ID, "new"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetTOTPSecret(ctx, a.ID, "NEW"); err != nil {
		t.Fatal(err)
	}
	if err := db.SetEmail(ctx, a.ID, "a.smith@example.org"); err != nil {
		t.Fatal(err)
	}
	want := a
	want.PasswordHash, want.TOTPSecret, want.TOTPLastStep, want.Email = "new", "NEW", 0, "a.smith@example.org"
	got, err := db.AccountByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("account after settings (-want +got):\n%s", diff)
	}
	// The new secret's codes start afresh: an early step is accepted.
	if err := db.UseTOTPStep(ctx, a.ID, 1); err != nil {
		t.Errorf("UseTOTPStep after SetTOTPSecret: %v", err)
	}
	if err := db.SetEmail(ctx, a.ID, ""); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.AccountByName(ctx, "alice"); got.Email != "" {
		t.Errorf("Email after SetEmail(\"\") = %q", got.Email)
	}

	unknown := a.ID + 100
	for name, err := range map[string]error{
		"SetPassword":   db.SetPassword(ctx, unknown, "x"),
		"SetTOTPSecret": db.SetTOTPSecret(ctx, unknown, "X"),
		"SetEmail":      db.SetEmail(ctx, unknown, "x@example.org"),
		"SetDisabled":   db.SetDisabled(ctx, unknown, true),
	} {
		wantErr(t, name+" of unknown account", err, ErrNotFound)
	}
}

func TestSetDisabled(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	now := time.Now()
	a := mustAccount(t, db, "alice")
	b := mustAccount(t, db, "bob")
	s1 := mustOpenSession(t, db, session(a.ID, "a1", now))
	mustOpenSession(t, db, session(a.ID, "a2", now))
	sb := mustOpenSession(t, db, session(b.ID, "b1", now))
	if err := db.PutCode(ctx, a.ID, CodeEmergency, hashOf("12345678"), now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}

	if err := db.SetDisabled(ctx, a.ID, true); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.AccountByName(ctx, "alice"); !got.Disabled {
		t.Error("account not disabled")
	}
	if ids := sessionIDs(t, db, a.ID); len(ids) != 0 {
		t.Errorf("sessions of a disabled account: %v", ids)
	}
	_, _, err := db.SessionByToken(ctx, s1.TokenHash, now, 0)
	wantErr(t, "SessionByToken of disabled account", err, ErrNotFound)
	_, err = db.SessionAccount(ctx, s1.TokenHash, now)
	wantErr(t, "SessionAccount of disabled account", err, ErrNotFound)
	wantErr(t, "OpenSession for disabled account", db.OpenSession(ctx, session(a.ID, "a3", now)), ErrNotFound)
	wantErr(t, "CreateSession for disabled account", db.CreateSession(ctx, hashOf("x"), a.ID, now.Add(time.Hour)), ErrNotFound)
	wantErr(t, "code of disabled account", db.UseCode(ctx, a.ID, CodeEmergency, hashOf("12345678"), now), ErrNotFound)
	if _, _, err := db.SessionByToken(ctx, sb.TokenHash, now, 0); err != nil {
		t.Errorf("another account's session: %v", err)
	}

	if err := db.SetDisabled(ctx, a.ID, false); err != nil {
		t.Fatal(err)
	}
	if got, _ := db.AccountByName(ctx, "alice"); got.Disabled {
		t.Error("account still disabled after re-enabling")
	}
	_, _, err = db.SessionByToken(ctx, s1.TokenHash, now, 0)
	wantErr(t, "old session after re-enabling", err, ErrNotFound)
	s3 := mustOpenSession(t, db, session(a.ID, "a3", now))
	if _, got, err := db.SessionByToken(ctx, s3.TokenHash, now, 0); err != nil || got.Name != "alice" {
		t.Errorf("new session after re-enabling = %v, %v", got.Name, err)
	}

	// A session that survives beside a disabled flag (written by another
	// tool) is refused all the same.
	if _, err := db.sql.ExecContext(ctx, `UPDATE accounts SET disabled = 1 WHERE id = $1`, a.ID); err != nil {
		t.Fatal(err)
	}
	_, _, err = db.SessionByToken(ctx, s3.TokenHash, now, 0)
	wantErr(t, "session of an account disabled behind its back", err, ErrNotFound)
}

// --- sessions ---

func TestOpenSessionAndSessionByToken(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	a := mustAccount(t, db, "alice")
	s := session(a.ID, "sess-1", t0)
	s.Emergency = true
	mustOpenSession(t, db, s)

	gotS, gotA, err := db.SessionByToken(ctx, s.TokenHash, t0, 0)
	if err != nil {
		t.Fatal(err)
	}
	want := s
	want.CreatedAt, want.LastSeen, want.ExpiresAt = s.CreatedAt.UTC(), s.LastSeen.UTC(), s.ExpiresAt.UTC()
	if diff := cmp.Diff(want, gotS); diff != "" {
		t.Errorf("session (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(a, gotA); diff != "" {
		t.Errorf("account of session (-want +got):\n%s", diff)
	}

	const idle = 30 * time.Minute
	for _, tc := range []struct {
		name string
		at   time.Duration
		idle time.Duration
		live bool
	}{
		{"fresh", 0, idle, true},
		{"idle just under the limit", idle - 1, idle, true},
		{"idle at the limit", idle, idle, false},
		{"idle long", 2 * time.Hour, idle, false},
		{"no idle limit", 2 * time.Hour, 0, true},
		{"negative idle: no limit", 2 * time.Hour, -time.Second, true},
		{"just before absolute expiry", 8*time.Hour - 1, 0, true},
		{"at absolute expiry", 8 * time.Hour, 0, false},
		{"after absolute expiry", 9 * time.Hour, 0, false},
	} {
		_, _, err := db.SessionByToken(ctx, s.TokenHash, t0.Add(tc.at), tc.idle)
		if tc.live && err != nil {
			t.Errorf("%s: %v", tc.name, err)
		}
		if !tc.live && !errors.Is(err, ErrNotFound) {
			t.Errorf("%s: got %v, want ErrNotFound", tc.name, err)
		}
	}
	_, _, err = db.SessionByToken(ctx, hashOf("other"), t0, 0)
	wantErr(t, "unknown token", err, ErrNotFound)

	// TouchSession extends the idle limit, never beyond the absolute end,
	// and never moves LastSeen back.
	if err := db.TouchSession(ctx, s.ID, t0.Add(7*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if err := db.TouchSession(ctx, s.ID, t0.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	got, _, err := db.SessionByToken(ctx, s.TokenHash, t0.Add(7*time.Hour+idle-1), idle)
	if err != nil {
		t.Fatalf("touched session: %v", err)
	}
	if !got.LastSeen.Equal(t0.Add(7 * time.Hour)) {
		t.Errorf("LastSeen = %v, want %v (moved back?)", got.LastSeen, t0.Add(7*time.Hour))
	}
	_, _, err = db.SessionByToken(ctx, s.TokenHash, t0.Add(8*time.Hour), idle)
	wantErr(t, "touched session at absolute expiry", err, ErrNotFound)
	wantErr(t, "TouchSession of unknown session", db.TouchSession(ctx, "nope", t0), ErrNotFound)

	// Defaults: LastSeen = CreatedAt.
	d := session(a.ID, "defaults", t0)
	d.LastSeen = time.Time{}
	mustOpenSession(t, db, d)
	if got, _, err := db.SessionByToken(ctx, d.TokenHash, t0, time.Minute); err != nil || !got.LastSeen.Equal(t0) {
		t.Errorf("session without LastSeen: LastSeen %v, %v; want %v", got.LastSeen, err, t0)
	}

	dupToken := session(a.ID, "sess-2", t0)
	dupToken.TokenHash = s.TokenHash
	for _, tc := range []struct {
		name string
		s    Session
		want error
	}{
		{"duplicate id", session(a.ID, "sess-1", t0), ErrExist},
		{"duplicate token", dupToken, ErrExist},
		{"unknown account", session(a.ID+100, "sess-3", t0), ErrNotFound},
	} {
		wantErr(t, tc.name, db.OpenSession(ctx, tc.s), tc.want)
	}
	for _, tc := range []struct {
		name string
		mod  func(*Session)
	}{
		{"empty id", func(s *Session) { s.ID = "" }},
		{"empty token hash", func(s *Session) { s.TokenHash = nil }},
		{"no expiry", func(s *Session) { s.ExpiresAt = time.Time{} }},
	} {
		s := session(a.ID, "bad", t0)
		tc.mod(&s)
		if err := db.OpenSession(ctx, s); err == nil {
			t.Errorf("OpenSession with %s succeeded", tc.name)
		}
	}
}

func TestSessionsOfAndEndSessions(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	a := mustAccount(t, db, "alice")
	b := mustAccount(t, db, "bob")
	mustOpenSession(t, db, session(a.ID, "a-middle", t0.Add(time.Minute)))
	mustOpenSession(t, db, session(a.ID, "a-old", t0))
	mustOpenSession(t, db, session(a.ID, "a-new", t0.Add(2*time.Minute)))
	expired := session(a.ID, "a-expired", t0.Add(-24*time.Hour))
	mustOpenSession(t, db, expired)
	sb := mustOpenSession(t, db, session(b.ID, "b-only", t0))

	if diff := cmp.Diff([]string{"a-new", "a-middle", "a-old", "a-expired"}, sessionIDs(t, db, a.ID)); diff != "" {
		t.Errorf("SessionsOf order (-want +got):\n%s", diff)
	}
	if ids := sessionIDs(t, db, a.ID+b.ID+100); len(ids) != 0 {
		t.Errorf("sessions of unknown account: %v", ids)
	}

	// Ending another account's session: refused, and nothing deleted.
	wantErr(t, "EndSession of another account's session", db.EndSession(ctx, a.ID, sb.ID), ErrNotFound)
	if _, _, err := db.SessionByToken(ctx, sb.TokenHash, t0, 0); err != nil {
		t.Errorf("bob's session after alice tried to end it: %v", err)
	}
	if got := len(sessionIDs(t, db, a.ID)); got != 4 {
		t.Errorf("alice has %d sessions, want 4", got)
	}

	if err := db.EndSession(ctx, a.ID, "a-old"); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "EndSession twice", db.EndSession(ctx, a.ID, "a-old"), ErrNotFound)

	n, err := db.PruneSessions(ctx, t0.Add(time.Hour), 0)
	if err != nil || n != 1 {
		t.Errorf("PruneSessions = %d, %v; want 1 (the expired one)", n, err)
	}

	n, err = db.EndSessions(ctx, a.ID, "a-new")
	if err != nil || n != 1 {
		t.Errorf("EndSessions(keep a-new) = %d, %v; want 1", n, err)
	}
	if diff := cmp.Diff([]string{"a-new"}, sessionIDs(t, db, a.ID)); diff != "" {
		t.Errorf("sessions after EndSessions (-want +got):\n%s", diff)
	}
	n, err = db.EndSessions(ctx, a.ID, "")
	if err != nil || n != 1 {
		t.Errorf("EndSessions(keep none) = %d, %v; want 1", n, err)
	}
	if ids := sessionIDs(t, db, a.ID); len(ids) != 0 {
		t.Errorf("sessions after EndSessions(\"\"): %v", ids)
	}
	if diff := cmp.Diff([]string{"b-only"}, sessionIDs(t, db, b.ID)); diff != "" {
		t.Errorf("bob's sessions after alice's were ended (-want +got):\n%s", diff)
	}

	// Idle pruning.
	n, err = db.PruneSessions(ctx, t0.Add(time.Hour), 30*time.Minute)
	if err != nil || n != 1 {
		t.Errorf("PruneSessions(idle) = %d, %v; want 1", n, err)
	}
}

func TestCreateSessionWrapper(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	a := mustAccount(t, db, "alice")
	before := time.Now()
	exp := before.Add(time.Hour)
	for _, token := range []string{"t1", "t2"} {
		if err := db.CreateSession(ctx, hashOf(token), a.ID, exp); err != nil {
			t.Fatal(err)
		}
	}
	ss, err := db.SessionsOf(ctx, a.ID)
	if err != nil || len(ss) != 2 {
		t.Fatalf("SessionsOf = %d sessions, %v", len(ss), err)
	}
	if ss[0].ID == "" || ss[0].ID == ss[1].ID {
		t.Errorf("session ids %q and %q: want distinct, non-empty", ss[0].ID, ss[1].ID)
	}
	for _, s := range ss {
		if s.CreatedAt.Before(before.Truncate(0)) || !s.LastSeen.Equal(s.CreatedAt) || s.Emergency {
			t.Errorf("CreateSession stored %+v", s)
		}
	}
	// SessionAccount applies no idle limit.
	if got, err := db.SessionAccount(ctx, hashOf("t1"), exp.Add(-time.Second)); err != nil || got.ID != a.ID {
		t.Errorf("SessionAccount near expiry = %v, %v", got.Name, err)
	}
	if err := db.CreateSession(ctx, nil, a.ID, exp); err == nil {
		t.Error("CreateSession with empty token hash succeeded")
	}
}

// --- one-time codes ---

func TestCodes(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	a := mustAccount(t, db, "alice")
	b := mustAccount(t, db, "bob")
	exp := t0.Add(30 * time.Minute)

	put := func(acct int64, purpose, code string) {
		t.Helper()
		if err := db.PutCode(ctx, acct, purpose, hashOf(code), exp); err != nil {
			t.Fatal(err)
		}
	}
	put(a.ID, CodeReset, "first")
	put(a.ID, CodeReset, "second") // voids "first"
	put(a.ID, CodeEmergency, "first")
	put(b.ID, CodeReset, "bobs")

	for _, tc := range []struct {
		name    string
		acct    int64
		purpose string
		code    string
		at      time.Duration
		want    error
	}{
		{"replaced code", a.ID, CodeReset, "first", time.Minute, ErrNotFound},
		{"wrong code", a.ID, CodeReset, "guess", time.Minute, ErrNotFound},
		{"another account's code", a.ID, CodeReset, "bobs", time.Minute, ErrNotFound},
		{"another purpose's code", a.ID, CodeEmergencyAuth, "second", time.Minute, ErrNotFound},
		{"at expiry", a.ID, CodeReset, "second", 30 * time.Minute, ErrNotFound},
		{"after expiry", a.ID, CodeReset, "second", time.Hour, ErrNotFound},
		{"valid", a.ID, CodeReset, "second", 30*time.Minute - 1, nil},
		{"used", a.ID, CodeReset, "second", time.Minute, ErrNotFound},
		{"other purpose unaffected", a.ID, CodeEmergency, "first", time.Minute, nil},
		{"other purpose used", a.ID, CodeEmergency, "first", time.Minute, ErrNotFound},
		{"other account unaffected", b.ID, CodeReset, "bobs", time.Minute, nil},
	} {
		err := db.UseCode(ctx, tc.acct, tc.purpose, hashOf(tc.code), t0.Add(tc.at))
		if tc.want == nil && err != nil || tc.want != nil && !errors.Is(err, tc.want) {
			t.Errorf("%s: UseCode = %v, want %v", tc.name, err, tc.want)
		}
	}

	// A new code after a used one works once.
	put(a.ID, CodeReset, "third")
	if err := db.UseCode(ctx, a.ID, CodeReset, hashOf("third"), t0); err != nil {
		t.Errorf("new code after a used one: %v", err)
	}
	wantErr(t, "empty hash", db.UseCode(ctx, a.ID, CodeReset, nil, t0), ErrNotFound)
	wantErr(t, "PutCode for unknown account",
		db.PutCode(ctx, a.ID+b.ID+100, CodeReset, hashOf("x"), exp), ErrNotFound)
	if err := db.PutCode(ctx, a.ID, CodeReset, nil, exp); err == nil {
		t.Error("PutCode with empty hash succeeded")
	}
	if err := db.UseCode(ctx, a.ID, CodeReset, hashOf("third"), time.Time{}); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("UseCode at the zero time = %v, want a non-ErrNotFound error", err)
	}
}

func TestUseCodeConcurrent(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	handles := []*DB{openAt(t, path), openAt(t, path)}
	a := mustAccount(t, handles[0], "alice")
	code := hashOf("87654321")
	if err := handles[0].PutCode(ctx, a.ID, CodeEmergency, code, t0.Add(24*time.Hour)); err != nil {
		t.Fatal(err)
	}
	const goroutines = 16
	errs := make(chan error, 2*goroutines)
	var wg sync.WaitGroup
	for _, db := range handles {
		for range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs <- db.UseCode(ctx, a.ID, CodeEmergency, code, t0.Add(time.Minute))
			}()
		}
	}
	wg.Wait()
	close(errs)
	wins := 0
	for err := range errs {
		switch {
		case err == nil:
			wins++
		case !errors.Is(err, ErrNotFound):
			t.Errorf("UseCode: %v", err)
		}
	}
	if wins != 1 {
		t.Errorf("%d concurrent uses of one code succeeded, want exactly 1", wins)
	}
}

// --- migration ---

// migrationsUpTo returns the embedded migrations up to and including version.
func migrationsUpTo(t *testing.T, version int) fs.FS {
	t.Helper()
	out := fstest.MapFS{}
	for v := 1; v <= version; v++ {
		matches, err := fs.Glob(migrationFiles, fmt.Sprintf("migrations/%05d_*.sql", v))
		if err != nil || len(matches) != 1 {
			t.Fatalf("migration %d: %v %v", v, matches, err)
		}
		data, err := migrationFiles.ReadFile(matches[0])
		if err != nil {
			t.Fatal(err)
		}
		out[filepath.Base(matches[0])] = &fstest.MapFile{Data: data}
	}
	return out
}

func gooseProvider(t *testing.T, sdb *sql.DB, fsys fs.FS) *goose.Provider {
	t.Helper()
	p, err := goose.NewProvider(goose.DialectSQLite3, sdb, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A database made by migration 1, with an account and a signed-in session,
// is migrated by Open: the account reads back with the new fields unset and
// the session keeps working, with its token hash as its id.
func TestMigrationKeepsAccountsAndSessions(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	old, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)&_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := gooseProvider(t, old, migrationsUpTo(t, 1)).Up(ctx); err != nil {
		t.Fatalf("migration 1: %v", err)
	}
	token := hashOf("old token")
	created := time.Now().Add(-time.Minute)
	for _, q := range []struct {
		query string
		args  []any
	}{
		{`INSERT INTO accounts (id, name, password_hash, totp_secret, totp_last_step, created_at)
		  VALUES (1, 'alice', 'ph', 'SECRET', 42, $1)`, []any{t0.UnixNano()}},
		{`INSERT INTO sessions (token_hash, account_id, created_at, expires_at) VALUES ($1, 1, $2, $3)`,
			[]any{toHex(token), created.UnixNano(), created.Add(time.Hour).UnixNano()}},
	} {
		if _, err := old.ExecContext(ctx, q.query, q.args...); err != nil {
			t.Fatal(err)
		}
	}
	if err := old.Close(); err != nil {
		t.Fatal(err)
	}

	db := openAt(t, path)
	want := Account{ID: 1, Name: "alice", PasswordHash: "ph", TOTPSecret: "SECRET", TOTPLastStep: 42, CreatedAt: t0.UTC()}
	got, err := db.AccountByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("migrated account (-want +got):\n%s", diff)
	}
	check := func(when string) {
		t.Helper()
		if got, err := db.SessionAccount(ctx, token, time.Now()); err != nil || got.ID != 1 {
			t.Errorf("%s: SessionAccount of the old session = %v, %v", when, got.Name, err)
		}
		s, _, err := db.SessionByToken(ctx, token, time.Now(), time.Hour)
		if err != nil {
			t.Fatalf("%s: SessionByToken with idle limit: %v", when, err)
		}
		if s.ID != toHex(token) || !s.LastSeen.Equal(s.CreatedAt) || s.Emergency || s.RemoteAddr != "" {
			t.Errorf("%s: migrated session = %+v; want id = token hash, last seen = created", when, s)
		}
	}
	check("after migration 2")

	// The unique id index holds.
	dup := session(1, toHex(token), time.Now())
	wantErr(t, "session with a migrated session's id", db.OpenSession(ctx, dup), ErrExist)
	mustOpenSession(t, db, session(1, "new", time.Now()))

	// Down and up again.
	// (The database is at the latest migration: the provider needs them all.)
	matches, _ := fs.Glob(migrationFiles, "migrations/*.sql")
	p := gooseProvider(t, db.sql, migrationsUpTo(t, len(matches)))
	if _, err := p.DownTo(ctx, 1); err != nil {
		t.Fatalf("migration 2 down: %v", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migration 2 up again: %v", err)
	}
	check("after down and up")
	if n := len(sessionIDs(t, db, 1)); n != 2 {
		t.Errorf("%d sessions after down and up, want 2", n)
	}
}
