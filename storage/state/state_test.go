package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// t0 is deliberately not UTC and has nanoseconds, to check both survive.
var t0 = time.Date(2025, 3, 4, 5, 6, 7, 123456789, time.FixedZone("CET", 3600))

func openAt(t *testing.T, path string) *DB {
	t.Helper()
	db, err := Open(context.Background(), path, zap.NewNop())
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() {
		if err := db.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return db
}

func newDB(t *testing.T) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "state.db")
	return openAt(t, path), path
}

// rawDB opens the database file directly, bypassing this package, as an
// attacker with file access (or a careless admin) would.
func rawDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	raw, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	return raw
}

func wantErr(t *testing.T, what string, err, target error) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: got error %v, want %v", what, err, target)
	}
}

func TestOpenFileModesPragmasAndMigrations(t *testing.T) {
	ctx := context.Background()
	// '?', '%' and '#' must not be read as URI syntax.
	dir := filepath.Join(t.TempDir(), "we?ird%20#dir")
	path := filepath.Join(dir, "state.db")

	core, logs := observer.New(zapcore.InfoLevel)
	db, err := Open(ctx, path, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	if n := logs.FilterMessage("applied migration").FilterField(zap.Int64("version", 1)).Len(); n != 1 {
		t.Errorf("first Open logged %d applications of migration 1, want 1; logs: %v", n, logs.All())
	}
	if _, err := db.CreateAccount(ctx, Account{Name: "alice"}); err != nil { // something in the WAL
		t.Fatal(err)
	}
	for p, want := range map[string]os.FileMode{dir: 0o700, path: 0o600, path + "-wal": 0o600} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("mode of %s = %v, want %v", p, got, want)
		}
	}

	// Every pooled connection gets the pragmas, not just the first.
	conns := make([]*sql.Conn, 3)
	for i := range conns {
		if conns[i], err = db.sql.Conn(ctx); err != nil {
			t.Fatal(err)
		}
		defer conns[i].Close()
	}
	for i, c := range conns {
		for pragma, want := range map[string]string{
			"journal_mode": "wal", "foreign_keys": "1", "synchronous": "2", "busy_timeout": "10000",
		} {
			var got string
			if err := c.QueryRowContext(ctx, "PRAGMA "+pragma).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("conn %d: PRAGMA %s = %q, want %q", i, pragma, got, want)
			}
		}
	}

	// A second Open of the same file (the admin command) migrates nothing
	// and sees the data.
	core2, logs2 := observer.New(zapcore.InfoLevel)
	db2, err := Open(ctx, path, zap.New(core2))
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if n := logs2.FilterMessage("applied migration").Len(); n != 0 {
		t.Errorf("second Open applied %d migrations, want 0", n)
	}
	if _, err := db2.AccountByName(ctx, "alice"); err != nil {
		t.Errorf("second handle: %v", err)
	}
}

func TestAccounts(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)

	a, err := db.CreateAccount(ctx, Account{
		Name: "alice", PasswordHash: "$argon2id$v=19$x", TOTPSecret: "JBSWY3DPEHPK3PXP", CreatedAt: t0,
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID == 0 {
		t.Error("CreateAccount assigned no ID")
	}
	got, err := db.AccountByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("AccountByName differs from CreateAccount (-created +got):\n%s", diff)
	}
	if got.CreatedAt.Location() != time.UTC || !got.CreatedAt.Equal(t0) {
		t.Errorf("CreatedAt = %v, want %v in UTC", got.CreatedAt, t0)
	}

	_, err = db.CreateAccount(ctx, Account{Name: "alice"})
	wantErr(t, "duplicate name", err, ErrExist)

	b, err := db.CreateAccount(ctx, Account{Name: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	if b.ID == a.ID {
		t.Errorf("two accounts share ID %d", a.ID)
	}
	_, err = db.AccountByName(ctx, "carol")
	wantErr(t, "unknown name", err, ErrNotFound)
}

func TestUseTOTPStep(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	a, err := db.CreateAccount(ctx, Account{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		step int64
		want error
	}{
		{100, nil},
		{100, ErrReplay}, // same code twice
		{99, ErrReplay},  // an older code
		{101, nil},
		{0, ErrReplay},
		{150, nil},
	} {
		err := db.UseTOTPStep(ctx, a.ID, tc.step)
		if !errors.Is(err, tc.want) || (tc.want == nil && err != nil) {
			t.Errorf("UseTOTPStep(%d) = %v, want %v", tc.step, err, tc.want)
		}
	}
	got, err := db.AccountByName(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if got.TOTPLastStep != 150 {
		t.Errorf("TOTPLastStep = %d, want 150", got.TOTPLastStep)
	}
	wantErr(t, "unknown account", db.UseTOTPStep(ctx, a.ID+100, 1), ErrNotFound)
}

func TestSessions(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	a, err := db.CreateAccount(ctx, Account{Name: "alice"})
	if err != nil {
		t.Fatal(err)
	}
	token := []byte{0x00, 0x01, 0xfe, 0xff}
	expires := t0.Add(time.Hour)
	if err := db.CreateSession(ctx, token, a.ID, expires); err != nil {
		t.Fatal(err)
	}

	got, err := db.SessionAccount(ctx, token, expires.Add(-time.Nanosecond))
	if err != nil {
		t.Fatalf("unexpired session: %v", err)
	}
	if diff := cmp.Diff(a, got); diff != "" {
		t.Errorf("session account (-want +got):\n%s", diff)
	}
	_, err = db.SessionAccount(ctx, token, expires)
	wantErr(t, "session at its expiry", err, ErrNotFound)
	_, err = db.SessionAccount(ctx, token, expires.Add(time.Minute))
	wantErr(t, "expired session", err, ErrNotFound)
	_, err = db.SessionAccount(ctx, []byte{0x00, 0x01, 0xfe}, t0)
	wantErr(t, "unknown token", err, ErrNotFound)

	// foreign_keys is on: a session for nobody is refused.
	wantErr(t, "session of unknown account", db.CreateSession(ctx, []byte{9}, a.ID+100, expires), ErrNotFound)
	wantErr(t, "duplicate token", db.CreateSession(ctx, token, a.ID, expires), ErrExist)
}

func fullUpload(id string) Upload {
	return Upload{
		ID:             id,
		Owner:          "alice",
		Filename:       "cohort 2024 ✓.csv",
		Length:         1 << 40,
		Offset:         4096,
		Handle:         []byte{0x00, 0xff, 'h', 0x00},
		HashState:      []byte("sha\x03\x00\x01state"),
		Metadata:       "filename Y29ob3J0,checksum abc",
		ExpectedSHA256: strings.Repeat("ab", 32),
		SHA256:         strings.Repeat("cd", 32),
		Status:         StatusUploading,
		Reason:         "none yet",
		Key:            "uploads/" + id,
		CreatedAt:      t0,
		UpdatedAt:      t0.Add(time.Second + 1),
		ExpiresAt:      t0.Add(7 * 24 * time.Hour),
	}
}

func TestUploadRoundTrip(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	u := fullUpload("u1")
	if err := db.CreateUpload(ctx, u); err != nil {
		t.Fatal(err)
	}
	got, err := db.GetUpload(ctx, "u1")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(u, got); diff != "" {
		t.Errorf("round trip (-want +got):\n%s", diff)
	}
	for name, tm := range map[string]time.Time{"CreatedAt": got.CreatedAt, "UpdatedAt": got.UpdatedAt, "ExpiresAt": got.ExpiresAt} {
		if tm.Location() != time.UTC {
			t.Errorf("%s in %v, want UTC", name, tm.Location())
		}
	}

	wantErr(t, "duplicate id", db.CreateUpload(ctx, fullUpload("u1")), ErrExist)
	_, err = db.GetUpload(ctx, "nope")
	wantErr(t, "unknown id", err, ErrNotFound)
}

func mustGet(t *testing.T, db *DB, id string) Upload {
	t.Helper()
	u, err := db.GetUpload(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

func TestCommitProgress(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	u := fullUpload("u1")
	u.Offset, u.Handle, u.HashState = 0, nil, nil
	if err := db.CreateUpload(ctx, u); err != nil {
		t.Fatal(err)
	}

	if err := db.CommitProgress(ctx, "u1", 0, 100, []byte("h100"), []byte("s100")); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, db, "u1")
	if got.Offset != 100 || string(got.Handle) != "h100" || string(got.HashState) != "s100" {
		t.Errorf("after commit: offset %d handle %q state %q, want 100 h100 s100", got.Offset, got.Handle, got.HashState)
	}
	if !got.UpdatedAt.After(u.UpdatedAt) {
		t.Errorf("UpdatedAt not advanced: %v", got.UpdatedAt)
	}

	// A writer that still believes the offset is 0 loses, and changes nothing.
	before := got
	wantErr(t, "stale offset", db.CommitProgress(ctx, "u1", 0, 50, []byte("h50"), []byte("s50")), ErrConflict)
	if diff := cmp.Diff(before, mustGet(t, db, "u1")); diff != "" {
		t.Errorf("stale commit changed the row (-before +after):\n%s", diff)
	}

	// Rolling back to a smaller durable offset is allowed.
	if err := db.CommitProgress(ctx, "u1", 100, 40, []byte("h40"), []byte("s40")); err != nil {
		t.Fatal(err)
	}
	if got := mustGet(t, db, "u1"); got.Offset != 40 {
		t.Errorf("offset after rollback = %d, want 40", got.Offset)
	}

	// Only an uploading upload takes progress.
	if err := db.Transition(ctx, "u1", StatusUploading, StatusProcessing, "", "", ""); err != nil {
		t.Fatal(err)
	}
	wantErr(t, "not uploading", db.CommitProgress(ctx, "u1", 40, 80, nil, nil), ErrConflict)
	wantErr(t, "unknown id", db.CommitProgress(ctx, "nope", 0, 1, nil, nil), ErrNotFound)
}

func TestTransition(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	u := fullUpload("u1")
	if err := db.CreateUpload(ctx, u); err != nil {
		t.Fatal(err)
	}

	// Empty sha256 and key leave those columns alone; reason is always set.
	if err := db.Transition(ctx, "u1", StatusUploading, StatusProcessing, "", "", ""); err != nil {
		t.Fatal(err)
	}
	got := mustGet(t, db, "u1")
	if got.Status != StatusProcessing || got.SHA256 != u.SHA256 || got.Key != u.Key || got.Reason != "" {
		t.Errorf("after uploading→processing: status %q sha %q key %q reason %q", got.Status, got.SHA256, got.Key, got.Reason)
	}

	before := got
	wantErr(t, "wrong from status",
		db.Transition(ctx, "u1", StatusUploading, StatusTerminated, "", "late", ""), ErrConflict)
	if diff := cmp.Diff(before, mustGet(t, db, "u1")); diff != "" {
		t.Errorf("conflicting transition changed the row (-before +after):\n%s", diff)
	}

	sum := strings.Repeat("ef", 32)
	if err := db.Transition(ctx, "u1", StatusProcessing, StatusQuarantined, sum, "Eicar-Signature", "quarantine/u1"); err != nil {
		t.Fatal(err)
	}
	got = mustGet(t, db, "u1")
	if got.Status != StatusQuarantined || got.SHA256 != sum || got.Key != "quarantine/u1" || got.Reason != "Eicar-Signature" {
		t.Errorf("after processing→quarantined: %+v", got)
	}
	wantErr(t, "unknown id", db.Transition(ctx, "nope", StatusUploading, StatusProcessing, "", "", ""), ErrNotFound)
}

func TestUploadsWithStatus(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	for i, id := range []string{"c", "a", "b", "d"} {
		u := fullUpload(id)
		u.CreatedAt = t0.Add(time.Duration(i) * time.Minute) // c oldest, then a, b, d
		if id == "b" {
			u.Status = StatusProcessing
		}
		if err := db.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	list, err := db.UploadsWithStatus(ctx, StatusUploading, 2)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, u := range list {
		ids = append(ids, u.ID)
	}
	if diff := cmp.Diff([]string{"c", "a"}, ids); diff != "" {
		t.Errorf("oldest two uploading (-want +got):\n%s", diff)
	}
}

func TestPublishFile(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	for _, id := range []string{"u1", "u2"} {
		u := fullUpload(id)
		u.Status = StatusPublishing
		if err := db.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	sum := strings.Repeat("12", 32)
	f := File{Key: "arrivals/alice/x.csv", Owner: "alice", Name: "x.csv", Size: 42, SHA256: sum, CreatedAt: t0, UploadID: "u1"}
	if err := db.PublishFile(ctx, f); err != nil {
		t.Fatal(err)
	}
	u1 := mustGet(t, db, "u1")
	if u1.Status != StatusAvailable || u1.Key != f.Key || u1.SHA256 != sum {
		t.Errorf("published upload: status %q key %q sha %q", u1.Status, u1.Key, u1.SHA256)
	}
	if ok, err := db.FileExists(ctx, f.Key); err != nil || !ok {
		t.Errorf("FileExists = %v, %v; want true", ok, err)
	}

	// Same key from another upload: refused, nothing changes.
	u2before := mustGet(t, db, "u2")
	f2 := f
	f2.UploadID, f2.Size = "u2", 7
	wantErr(t, "key taken", db.PublishFile(ctx, f2), ErrExist)
	if diff := cmp.Diff(u2before, mustGet(t, db, "u2")); diff != "" {
		t.Errorf("refused publish changed upload u2 (-before +after):\n%s", diff)
	}
	files, err := db.FilesByOwner(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]File{f}, files); diff != "" {
		t.Errorf("files after refused publish (-want +got):\n%s", diff)
	}

	// An upload that is not publishing (u1 is available now) or belongs to
	// someone else: the file row is rolled back.
	for name, g := range map[string]File{
		"not publishing": {Key: "arrivals/alice/y.csv", Owner: "alice", Name: "y.csv", UploadID: "u1"},
		"other owner":    {Key: "arrivals/bob/y.csv", Owner: "bob", Name: "y.csv", UploadID: "u2"},
	} {
		wantErr(t, name, db.PublishFile(ctx, g), ErrConflict)
		if ok, err := db.FileExists(ctx, g.Key); err != nil || ok {
			t.Errorf("%s: FileExists(%s) = %v, %v after a failed publish; want false", name, g.Key, ok, err)
		}
	}
	wantErr(t, "unknown upload",
		db.PublishFile(ctx, File{Key: "arrivals/alice/z", Owner: "alice", UploadID: "nope"}), ErrNotFound)
}

func TestFilesByOwner(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	publish := func(id, owner, name string) File {
		u := fullUpload(id)
		u.Owner, u.Status = owner, StatusPublishing
		if err := db.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
		f := File{Key: "arrivals/" + owner + "/" + name, Owner: owner, Name: name, Size: 1, CreatedAt: t0, UploadID: id}
		if err := db.PublishFile(ctx, f); err != nil {
			t.Fatal(err)
		}
		return f
	}
	b := publish("u1", "alice", "b.txt")
	publish("u2", "bob", "a.txt")
	a := publish("u3", "alice", "a.txt")

	got, err := db.FilesByOwner(ctx, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]File{a, b}, got); diff != "" {
		t.Errorf("alice's files by name (-want +got):\n%s", diff)
	}
	if got, err := db.FilesByOwner(ctx, "carol"); err != nil || len(got) != 0 {
		t.Errorf("carol's files = %v, %v; want none", got, err)
	}
}

func TestAuditHashIsUnambiguous(t *testing.T) {
	base := AuditRecord{Seq: 1, Time: t0, Actor: "ab", Action: "c", Object: "o", Result: "ok"}
	shifted := base
	shifted.Actor, shifted.Action = "a", "bc"
	if auditHash(base) == auditHash(shifted) {
		t.Error("moving a byte from actor to action does not change the hash")
	}
	later := base
	later.Time = base.Time.Add(time.Nanosecond)
	if auditHash(base) == auditHash(later) {
		t.Error("a nanosecond of time does not change the hash")
	}
}

// appendAudit writes n records and returns them as Audit returned them.
func appendAudit(t *testing.T, db *DB, n int) []AuditRecord {
	t.Helper()
	var out []AuditRecord
	for i := 1; i <= n; i++ {
		r, err := db.Audit(context.Background(), AuditRecord{
			Time: t0.Add(time.Duration(i) * time.Second), Actor: "alice", Action: "upload.create",
			Object: fmt.Sprintf("u%d", i), Result: "ok", RemoteAddr: "192.0.2.1:5000",
		})
		if err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func TestAuditChainVerifies(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	if n, err := db.VerifyAudit(ctx); err != nil || n != 0 {
		t.Fatalf("empty chain: VerifyAudit = %d, %v", n, err)
	}
	recs := appendAudit(t, db, 10)
	for i, r := range recs {
		if r.Seq != int64(i+1) {
			t.Errorf("record %d has seq %d", i+1, r.Seq)
		}
		if i > 0 && r.PrevHash != recs[i-1].Hash {
			t.Errorf("record %d: PrevHash does not link to record %d", r.Seq, i)
		}
		if r.Time.Location() != time.UTC {
			t.Errorf("record %d: time not UTC", r.Seq)
		}
	}
	if recs[0].PrevHash != "" {
		t.Errorf("first record PrevHash = %q, want empty", recs[0].PrevHash)
	}
	n, err := db.VerifyAudit(ctx)
	if err != nil || n != 10 {
		t.Fatalf("VerifyAudit = %d, %v; want 10, nil", n, err)
	}
	seq, hash, err := db.AuditHead(ctx)
	if err != nil || seq != 10 || hash != recs[9].Hash {
		t.Errorf("AuditHead = %d, %q, %v; want 10, %q", seq, hash, err, recs[9].Hash)
	}

	// A record's time defaults to now.
	r, err := db.Audit(ctx, AuditRecord{Action: "login"})
	if err != nil {
		t.Fatal(err)
	}
	if time.Since(r.Time) > time.Minute || r.Time.Location() != time.UTC {
		t.Errorf("default time = %v", r.Time)
	}
}

func TestAuditTamperDetected(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		name   string
		tamper func(t *testing.T, raw *sql.DB)
		want   string
	}{
		{"edit actor", execSQL(`UPDATE audit SET actor = 'mallory' WHERE seq = 3`), "audit record 3: hash does not match"},
		{"edit result", execSQL(`UPDATE audit SET result = 'ok ' WHERE seq = 3`), "audit record 3: hash does not match"},
		{"edit time", execSQL(`UPDATE audit SET at = at + 1 WHERE seq = 3`), "audit record 3: hash does not match"},
		{"delete", execSQL(`DELETE FROM audit WHERE seq = 3`), "audit record 3: missing"},
		{"delete and renumber", execSQL(
			`DELETE FROM audit WHERE seq = 3`,
			`UPDATE audit SET seq = -seq WHERE seq > 3`,
			`UPDATE audit SET seq = -seq - 1 WHERE seq < 0`,
		), "audit record 3: hash does not match"},
		{"swap seq", execSQL(
			`UPDATE audit SET seq = -1 WHERE seq = 3`,
			`UPDATE audit SET seq = 3 WHERE seq = 5`,
			`UPDATE audit SET seq = 5 WHERE seq = -1`,
		), "audit record 3:"},
		{"edit and rehash", func(t *testing.T, raw *sql.DB) {
			// The forger recomputes record 3's own hash; record 4 still
			// points at the original.
			r, err := scanAudit(raw.QueryRow(`SELECT ` + auditCols + ` FROM audit WHERE seq = 3`))
			if err != nil {
				t.Fatal(err)
			}
			r.Actor = "mallory"
			if _, err := raw.Exec(`UPDATE audit SET actor = $1, hash = $2 WHERE seq = 3`, r.Actor, auditHash(r)); err != nil {
				t.Fatal(err)
			}
		}, "audit record 4: previous-hash link broken"},
		{"insert before first", execSQL(`INSERT INTO audit (` + auditCols + `) VALUES (0, 1, 'x', 'y', '', '', '', '', '')`),
			"audit record 0: unexpected sequence number"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			db, path := newDB(t)
			appendAudit(t, db, 10)
			if _, err := db.VerifyAudit(ctx); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tc.tamper(t, rawDB(t, path))
			n, err := db.VerifyAudit(ctx)
			if !errors.Is(err, ErrAuditBroken) {
				t.Fatalf("VerifyAudit after tampering = %d, %v; want ErrAuditBroken", n, err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func execSQL(stmts ...string) func(*testing.T, *sql.DB) {
	return func(t *testing.T, raw *sql.DB) {
		t.Helper()
		for _, s := range stmts {
			if _, err := raw.Exec(s); err != nil {
				t.Fatalf("%s: %v", s, err)
			}
		}
	}
}

// Truncating the end leaves a valid chain; only a head kept elsewhere shows it.
func TestAuditTruncationNeedsExternalHead(t *testing.T) {
	ctx := context.Background()
	db, path := newDB(t)
	appendAudit(t, db, 5)
	seq, hash, err := db.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	execSQL(`DELETE FROM audit WHERE seq = 5`)(t, rawDB(t, path))
	if n, err := db.VerifyAudit(ctx); err != nil || n != 4 {
		t.Fatalf("VerifyAudit = %d, %v; want 4, nil", n, err)
	}
	seq2, hash2, err := db.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seq2 == seq || hash2 == hash {
		t.Errorf("head after truncation = %d %s, same as before", seq2, hash2)
	}
}

// Two handles on one file, as the daemon and an admin command would have,
// append concurrently: every append succeeds (no SQLITE_BUSY) and the result
// is one unbroken chain.
func TestAuditConcurrentWritersTwoHandles(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "state.db")
	handles := []*DB{openAt(t, path), openAt(t, path)}

	const goroutines, each = 8, 15
	var (
		wg   sync.WaitGroup
		mu   sync.Mutex
		seqs = map[int64]bool{}
	)
	errs := make(chan error, len(handles)*goroutines*each)
	for h, db := range handles {
		for g := range goroutines {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range each {
					r, err := db.Audit(ctx, AuditRecord{
						Actor: fmt.Sprintf("h%d-g%d", h, g), Action: "test.append", Object: fmt.Sprint(i), Result: "ok",
					})
					if err != nil {
						errs <- err
						continue
					}
					mu.Lock()
					seqs[r.Seq] = true
					mu.Unlock()
				}
			}()
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Errorf("Audit: %v", err)
	}
	const total = 2 * goroutines * each
	if len(seqs) != total {
		t.Errorf("%d distinct seqs returned, want %d", len(seqs), total)
	}
	for _, db := range handles {
		n, err := db.VerifyAudit(ctx)
		if err != nil || n != total {
			t.Errorf("VerifyAudit = %d, %v; want %d, nil", n, err, total)
		}
	}
}

// Processes starting together on a fresh database must not both migrate.
func TestConcurrentOpenOfFreshDatabase(t *testing.T) {
	for round := range 5 {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("state%d.db", round))
		var wg sync.WaitGroup
		errs := make([]error, 4)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				db, err := Open(context.Background(), path, zap.NewNop())
				if err == nil {
					err = db.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Errorf("round %d, Open %d: %v", round, i, err)
			}
		}
	}
}
