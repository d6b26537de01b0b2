package state

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// fullEgressItem has every field set, its times not in UTC and with
// nanoseconds, to check that all of them survive.
func fullEgressItem(id string) EgressItem {
	return EgressItem{
		ID:          id,
		Share:       "s",
		Owner:       "mark",
		Path:        "out/cohort 2024 ✓.csv",
		Size:        1 << 40,
		ModTime:     t0.Add(-time.Hour),
		SHA256:      strings.Repeat("ab", 32),
		BLAKE3:      strings.Repeat("ef", 32),
		Status:      "awaiting_approval",
		Portal:      "https://portal.example.org/upload",
		RequestedBy: "mark",
		RequestedAt: t0.Add(time.Second),
		DecidedBy:   "olga",
		DecidedAt:   t0.Add(2 * time.Second),
		Findings:    `{"identifiers":[{"kind":"nhs_number","line":3}]}`,
		Reason:      "identifiers found",
		TusURL:      "https://portal.example.org/files/abc",
		Receipt:     `{"id":"r1"}`,
		Attempts:    3,
		CreatedAt:   t0,
		UpdatedAt:   t0.Add(3*time.Second + 1),
	}
}

// egressItem is an item of owner's file at path in share with status,
// created at created.
func egressItem(id, share, owner, path, status string, created time.Time) EgressItem {
	return EgressItem{ID: id, Share: share, Owner: owner, Path: path, Size: 10, SHA256: strings.Repeat("cd", 32),
		Status: status, CreatedAt: created}
}

func egressRec(action, id string) AuditRecord {
	return AuditRecord{Actor: "tester", Action: action, Object: "egress:" + id, Result: "ok"}
}

func mustCreateEgressItems(t *testing.T, db *DB, items ...EgressItem) {
	t.Helper()
	for _, it := range items {
		if err := db.CreateEgressItem(context.Background(), it, egressRec("egress.stage", it.ID)); err != nil {
			t.Fatal(err)
		}
	}
}

func mustGetEgressItem(t *testing.T, db *DB, id string) EgressItem {
	t.Helper()
	it, err := db.GetEgressItem(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

func egressIDs(items []EgressItem) []string {
	var ids []string
	for _, it := range items {
		ids = append(ids, it.ID)
	}
	return ids
}

func TestEgressItemRoundTrip(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)

	it := fullEgressItem("e1")
	n := shareAuditLen(t, db)
	err := db.CreateEgressItem(ctx, it, egressRec("egress.request", "e1"))
	wantShareAudited(t, db, "create", n, err, nil)
	n++
	got := mustGetEgressItem(t, db, "e1")
	if diff := cmp.Diff(it.asStored(), got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for name, tm := range map[string]time.Time{"ModTime": got.ModTime, "RequestedAt": got.RequestedAt,
		"DecidedAt": got.DecidedAt, "CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt} {
		if tm.Location() != time.UTC {
			t.Errorf("%s in %v, want UTC", name, tm.Location())
		}
	}

	// The id is taken: nothing is added, nothing audited, the item stays.
	other := egressItem("e1", "t", "nina", "x", "staged", t0.Add(time.Hour))
	err = db.CreateEgressItem(ctx, other, egressRec("egress.stage", "e1"))
	wantShareAudited(t, db, "create with a taken id", n, err, ErrExist)
	if diff := cmp.Diff(got, mustGetEgressItem(t, db, "e1")); diff != "" {
		t.Errorf("a refused create changed the item (-before +after):\n%s", diff)
	}
	if _, err := db.CurrentEgressItem(ctx, "t", "nina", "x"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the refused item is current at its path: %v", err)
	}

	// Unset times: created now, updated when created; unset optional times
	// stay zero.
	before := time.Now()
	if err := db.CreateEgressItem(ctx, egressItem("e2", "s", "mark", "y", "staged", time.Time{}), egressRec("egress.stage", "e2")); err != nil {
		t.Fatal(err)
	}
	n++
	e2 := mustGetEgressItem(t, db, "e2")
	if e2.CreatedAt.Before(before) || e2.CreatedAt.After(time.Now()) || !e2.UpdatedAt.Equal(e2.CreatedAt) {
		t.Errorf("unset times stored as created %v, updated %v; want now (after %v), twice", e2.CreatedAt, e2.UpdatedAt, before)
	}
	if !e2.ModTime.IsZero() || !e2.RequestedAt.IsZero() || !e2.DecidedAt.IsZero() {
		t.Errorf("unset times read back as %v, %v, %v; want zero", e2.ModTime, e2.RequestedAt, e2.DecidedAt)
	}

	for name, bad := range map[string]func(*EgressItem){
		"no id":     func(it *EgressItem) { it.ID = "" },
		"no share":  func(it *EgressItem) { it.Share = "" },
		"no owner":  func(it *EgressItem) { it.Owner = "" },
		"no path":   func(it *EgressItem) { it.Path = "" },
		"no status": func(it *EgressItem) { it.Status = "" },
	} {
		it := egressItem("bad", "s", "mark", "z", "staged", t0)
		bad(&it)
		if err := db.CreateEgressItem(ctx, it, egressRec("egress.stage", "bad")); err == nil {
			t.Errorf("%s: created", name)
		}
	}
	if err := db.CreateEgressItem(ctx, egressItem("bad", "s", "mark", "z", "staged", t0), AuditRecord{}); err == nil {
		t.Error("created an item without an audit action")
	}
	if got := shareAuditLen(t, db); got != n {
		t.Errorf("refused creates: audit chain has %d records, want %d", got, n)
	}
	_, err = db.GetEgressItem(ctx, "bad")
	wantErr(t, "get a refused item", err, ErrNotFound)
}

// A path's current item is its newest: by creation time, then by order of
// creation, whatever the ids; other owners, shares and paths do not count.
func TestCurrentEgressItem(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	mustCreateEgressItems(t, db,
		egressItem("v1", "s", "mark", "out/a.csv", "sent", t0),
		egressItem("z2", "s", "mark", "out/a.csv", "withdrawn", t0.Add(time.Minute)),
		egressItem("a3", "s", "mark", "out/a.csv", "staged", t0.Add(time.Minute)),  // same time, created after z2
		egressItem("v0", "s", "mark", "out/a.csv", "sent", t0.Add(30*time.Second)), // created last, but older
		egressItem("n1", "s", "nina", "out/a.csv", "staged", t0.Add(time.Hour)),
		egressItem("t1", "t", "mark", "out/a.csv", "staged", t0.Add(time.Hour)),
		egressItem("b1", "s", "mark", "out/b.csv", "staged", t0.Add(time.Hour)),
		egressItem("p1", "s", "mark", "out", "staged", t0.Add(time.Hour)),
	)
	for _, tc := range []struct{ share, owner, path, want string }{
		{"s", "mark", "out/a.csv", "a3"},
		{"s", "nina", "out/a.csv", "n1"},
		{"t", "mark", "out/a.csv", "t1"},
		{"s", "mark", "out/b.csv", "b1"},
		{"s", "mark", "out", "p1"},
	} {
		got, err := db.CurrentEgressItem(ctx, tc.share, tc.owner, tc.path)
		if err != nil || got.ID != tc.want {
			t.Errorf("CurrentEgressItem(%s, %s, %s) = %s, %v; want %s", tc.share, tc.owner, tc.path, got.ID, err, tc.want)
		}
	}
	if got := mustGetEgressItem(t, db, "a3"); !cmp.Equal(got, mustCurrent(t, db, "s", "mark", "out/a.csv")) {
		t.Errorf("the current item differs from the item itself")
	}
	for _, p := range [][3]string{{"s", "mark", "out/c.csv"}, {"s", "olga", "out/a.csv"}, {"u", "mark", "out/a.csv"}, {"s", "mark", "out/"}} {
		_, err := db.CurrentEgressItem(ctx, p[0], p[1], p[2])
		wantErr(t, fmt.Sprintf("current item of %v", p), err, ErrNotFound)
	}
}

func mustCurrent(t *testing.T, db *DB, share, owner, path string) EgressItem {
	t.Helper()
	it, err := db.CurrentEgressItem(context.Background(), share, owner, path)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

func TestEgressItems(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	mustCreateEgressItems(t, db,
		egressItem("m1", "s", "mark", "a", "sent", t0),
		egressItem("n1", "s", "nina", "a", "staged", t0.Add(time.Minute)),
		egressItem("m3", "s", "mark", "b", "staged", t0.Add(2*time.Minute)),
		egressItem("m2", "s", "mark", "a", "staged", t0.Add(2*time.Minute)), // same time as m3, created after
		egressItem("t1", "t", "mark", "a", "staged", t0.Add(time.Hour)),
		egressItem("m0", "s", "mark", "c", "staged", t0.Add(-time.Minute)),
	)
	for _, tc := range []struct {
		share, owner string
		limit        int
		want         []string
	}{
		{"s", "", 10, []string{"m2", "m3", "n1", "m1", "m0"}},
		{"s", "", 3, []string{"m2", "m3", "n1"}},
		{"s", "mark", 10, []string{"m2", "m3", "m1", "m0"}},
		{"s", "mark", 1, []string{"m2"}},
		{"s", "nina", 10, []string{"n1"}},
		{"t", "", 10, []string{"t1"}},
		{"t", "nina", 10, nil},
		{"u", "", 10, nil},
	} {
		got, err := db.EgressItems(ctx, tc.share, tc.owner, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, egressIDs(got)); diff != "" {
			t.Errorf("EgressItems(%q, %q, %d) (-want +got):\n%s", tc.share, tc.owner, tc.limit, diff)
		}
	}
	got, err := db.EgressItems(ctx, "s", "nina", 1)
	if err != nil || len(got) != 1 || !cmp.Equal(got[0], mustGetEgressItem(t, db, "n1")) {
		t.Errorf("EgressItems(s, nina) = %+v, %v; want the whole item n1", got, err)
	}
	if _, err := db.EgressItems(ctx, "s", "", 0); err == nil {
		t.Error("EgressItems with limit 0: no error")
	}
}

func TestEgressItemsWithStatus(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	items := []EgressItem{
		egressItem("q2", "s", "mark", "a", "queued", t0),
		egressItem("c1", "s", "mark", "b", "checking", t0),
		egressItem("q1", "t", "nina", "a", "queued", t0),
		egressItem("s1", "s", "mark", "c", "sent", t0),
		egressItem("p1", "s", "mark", "d", "pushing", t0),
		egressItem("c2", "s", "nina", "b", "checking", t0),
	}
	updated := map[string]time.Duration{"q1": 1, "c1": 2, "q2": 3, "c2": 3, "s1": 0, "p1": 0} // c2 ties q2, created after
	for i := range items {
		items[i].UpdatedAt = t0.Add(updated[items[i].ID] * time.Minute)
	}
	mustCreateEgressItems(t, db, items...)
	for _, tc := range []struct {
		statuses []string
		limit    int
		want     []string
	}{
		{[]string{"checking", "queued"}, 10, []string{"q1", "c1", "q2", "c2"}},
		{[]string{"queued", "checking"}, 2, []string{"q1", "c1"}},
		{[]string{"checking"}, 10, []string{"c1", "c2"}},
		{[]string{"sent", "pushing"}, 10, []string{"s1", "p1"}},
		{[]string{"failed"}, 10, nil},
		{nil, 10, nil},
	} {
		got, err := db.EgressItemsWithStatus(ctx, tc.statuses, tc.limit)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, egressIDs(got)); diff != "" {
			t.Errorf("EgressItemsWithStatus(%q, %d) (-want +got):\n%s", tc.statuses, tc.limit, diff)
		}
	}

	// An update sends an item to the back of its queue.
	if _, err := db.UpdateEgressItem(ctx, "q1", []string{"queued"}, func(it *EgressItem) error {
		it.Attempts++
		return nil
	}, AuditRecord{}); err != nil {
		t.Fatal(err)
	}
	got, err := db.EgressItemsWithStatus(ctx, []string{"queued"}, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"q2", "q1"}, egressIDs(got)); diff != "" {
		t.Errorf("queued after q1 was updated (-want +got):\n%s", diff)
	}
	if _, err := db.EgressItemsWithStatus(ctx, []string{"queued"}, 0); err == nil {
		t.Error("EgressItemsWithStatus with limit 0: no error")
	}
}

func TestUpdateEgressItem(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	mustCreateEgressItems(t, db, fullEgressItem("e1"))
	n := shareAuditLen(t, db)
	orig := mustGetEgressItem(t, db, "e1")

	// Allowed: changed, stored, audited.
	decided := t0.Add(time.Hour)
	start := time.Now()
	got, err := db.UpdateEgressItem(ctx, "e1", []string{"checking", "awaiting_approval"}, func(it *EgressItem) error {
		if diff := cmp.Diff(orig, *it); diff != "" {
			t.Errorf("change was given (-stored +given):\n%s", diff)
		}
		it.Status, it.DecidedBy, it.DecidedAt, it.Reason = "approved", "olga", decided, ""
		it.BLAKE3 = strings.Repeat("12", 32)
		return nil
	}, egressRec("egress.approve", "e1"))
	wantShareAudited(t, db, "approve", n, err, nil)
	n++
	want := orig
	want.Status, want.DecidedBy, want.DecidedAt, want.Reason = "approved", "olga", decided.UTC(), ""
	want.BLAKE3 = strings.Repeat("12", 32)
	want.UpdatedAt = got.UpdatedAt
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("updated item (-want +got):\n%s", diff)
	}
	if got.UpdatedAt.Before(start) || got.UpdatedAt.After(time.Now()) || got.UpdatedAt.Location() != time.UTC {
		t.Errorf("UpdatedAt = %v, want now (after %v) in UTC", got.UpdatedAt, start)
	}
	if diff := cmp.Diff(got, mustGetEgressItem(t, db, "e1")); diff != "" {
		t.Errorf("returned and stored item differ (-returned +stored):\n%s", diff)
	}
	if recs, err := db.AuditSince(ctx, n-1, 10); err != nil || len(recs) != 1 || recs[0].Action != "egress.approve" || recs[0].Object != "egress:e1" {
		t.Errorf("audit record of the update = %+v, %v", recs, err)
	}
	stored := got

	// Each refusal writes nothing and audits nothing.
	errStop := errors.New("stop")
	for _, tc := range []struct {
		name   string
		id     string
		from   []string
		change func(*EgressItem) error
		target error // nil: any error
	}{
		{"wrong status", "e1", []string{"awaiting_approval", "checking"}, func(it *EgressItem) error {
			t.Error("wrong status: change was called")
			it.Status = "rejected"
			return nil
		}, ErrConflict},
		{"change refuses", "e1", []string{"approved"}, func(it *EgressItem) error {
			it.Status, it.Reason = "pushing", "half-done"
			return fmt.Errorf("portal gone: %w", errStop)
		}, errStop},
		{"unknown id", "nope", []string{"approved"}, func(*EgressItem) error { return nil }, ErrNotFound},
		{"no from status", "e1", nil, func(*EgressItem) error { return nil }, nil},
		{"change alters the id", "e1", []string{"approved"}, func(it *EgressItem) error { it.ID = "e2"; return nil }, nil},
		{"change alters the share", "e1", []string{"approved"}, func(it *EgressItem) error { it.Share = "t"; return nil }, nil},
		{"change alters the owner", "e1", []string{"approved"}, func(it *EgressItem) error { it.Owner = "nina"; return nil }, nil},
		{"change alters the path", "e1", []string{"approved"}, func(it *EgressItem) error { it.Path = "other"; return nil }, nil},
		{"change alters the creation time", "e1", []string{"approved"}, func(it *EgressItem) error {
			it.CreatedAt = it.CreatedAt.Add(time.Nanosecond)
			return nil
		}, nil},
		{"change empties the status", "e1", []string{"approved"}, func(it *EgressItem) error { it.Status = ""; return nil }, nil},
	} {
		_, err := db.UpdateEgressItem(ctx, tc.id, tc.from, tc.change, egressRec("egress.update", tc.id))
		if tc.target != nil {
			wantShareAudited(t, db, tc.name, n, err, tc.target)
		} else {
			if err == nil {
				t.Errorf("%s: no error", tc.name)
			}
			if got := shareAuditLen(t, db); got != n {
				t.Errorf("%s: audit chain has %d records, want %d", tc.name, got, n)
			}
		}
		if errors.Is(err, ErrConflict) && tc.target != ErrConflict {
			t.Errorf("%s: error %v looks like a lost race", tc.name, err)
		}
		if diff := cmp.Diff(stored, mustGetEgressItem(t, db, "e1")); diff != "" {
			t.Errorf("%s changed the item (-before +after):\n%s", tc.name, diff)
		}
	}

	// No audit action: bookkeeping, written but not audited.
	got, err = db.UpdateEgressItem(ctx, "e1", []string{"approved"}, func(it *EgressItem) error {
		it.TusURL, it.Attempts = "https://portal.example.org/files/def", it.Attempts+1
		return nil
	}, AuditRecord{})
	if err != nil {
		t.Fatalf("bookkeeping: %v", err)
	}
	if got := shareAuditLen(t, db); got != n {
		t.Errorf("bookkeeping: audit chain has %d records, want %d (none added)", got, n)
	}
	if got.TusURL != "https://portal.example.org/files/def" || got.Attempts != stored.Attempts+1 || got.Status != "approved" {
		t.Errorf("after bookkeeping: %+v", got)
	}
	if diff := cmp.Diff(got, mustGetEgressItem(t, db, "e1")); diff != "" {
		t.Errorf("bookkeeping: returned and stored item differ (-returned +stored):\n%s", diff)
	}
}

// Deciders racing from the same status, on two handles as the daemon and
// an admin command would be: exactly one wins each round, the others get
// ErrConflict, and the stored item and the audit chain show only the
// winner.
func TestUpdateEgressItemConcurrentDeciders(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	handles := []*DB{openAt(t, path), openAt(t, path)}
	db := handles[0]
	decisions := []string{"approved", "rejected", "withdrawn"}

	const rounds = 10
	for round := range rounds {
		id := fmt.Sprintf("e%d", round)
		mustCreateEgressItems(t, db, egressItem(id, "s", "mark", "a", "awaiting_approval", t0))
		n := shareAuditLen(t, db)

		var wg sync.WaitGroup
		start := make(chan struct{})
		errs := make([]error, len(decisions))
		for i, to := range decisions {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[i] = handles[i%len(handles)].UpdateEgressItem(ctx, id, []string{"awaiting_approval"}, func(it *EgressItem) error {
					it.Status, it.DecidedBy = to, "decider-"+to
					return nil
				}, egressRec("egress."+to, id))
			}()
		}
		close(start)
		wg.Wait()

		winner := -1
		for i, err := range errs {
			switch {
			case err == nil && winner >= 0:
				t.Fatalf("round %d: both %s and %s won", round, decisions[winner], decisions[i])
			case err == nil:
				winner = i
			case !errors.Is(err, ErrConflict):
				t.Fatalf("round %d: %s: %v, want nil or ErrConflict", round, decisions[i], err)
			}
		}
		if winner < 0 {
			t.Fatalf("round %d: nobody won: %v", round, errs)
		}
		got := mustGetEgressItem(t, handles[1], id)
		if got.Status != decisions[winner] || got.DecidedBy != "decider-"+decisions[winner] {
			t.Errorf("round %d: %s won but the item is %s decided by %s", round, decisions[winner], got.Status, got.DecidedBy)
		}
		recs, err := db.AuditSince(ctx, n, 10)
		if err != nil || len(recs) != 1 || recs[0].Action != "egress."+decisions[winner] {
			t.Errorf("round %d: audit records after the race = %+v, %v; want only the winner's", round, recs, err)
		}
	}
	if n, err := handles[1].VerifyAudit(ctx); err != nil || n != 2*rounds {
		t.Errorf("VerifyAudit = %d, %v; want %d, nil", n, err, 2*rounds)
	}
}

// Migration 7 goes down (the table with it) and up again.
func TestEgressMigrationDownAndUp(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	mustCreateEgressItems(t, db, egressItem("e1", "s", "mark", "a", "staged", t0))

	matches, _ := fs.Glob(migrationFiles, "migrations/*.sql")
	p := gooseProvider(t, db.sql, migrationsUpTo(t, len(matches)))
	if _, err := p.DownTo(ctx, 6); err != nil {
		t.Fatalf("migration 7 down: %v", err)
	}
	if _, err := db.GetEgressItem(ctx, "e1"); err == nil || errors.Is(err, ErrNotFound) {
		t.Errorf("after migration 7 down, GetEgressItem = %v; want no such table", err)
	}
	if _, err := p.Up(ctx); err != nil {
		t.Fatalf("migration 7 up again: %v", err)
	}
	if _, err := db.GetEgressItem(ctx, "e1"); !errors.Is(err, ErrNotFound) {
		t.Errorf("after down and up, GetEgressItem of an old item = %v; want ErrNotFound", err)
	}
	mustCreateEgressItems(t, db, egressItem("e1", "s", "mark", "a", "staged", t0))
	if got := mustCurrent(t, db, "s", "mark", "a"); got.ID != "e1" {
		t.Errorf("current item after down and up = %s, want e1", got.ID)
	}
}
