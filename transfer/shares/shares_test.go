package shares

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/local"
	"github.com/mftd/mftd/storage/state"
)

type env struct {
	t        *testing.T
	svc      *Service
	db       *state.DB
	dbPath   string
	store    storage.Backend
	settings *policy.Live
	uploads  int
}

var (
	root  = Actor{User: "cli:root", Admin: true}
	olga  = Actor{User: "olga", RemoteAddr: "192.0.2.1:1"} // IAO
	adam  = Actor{User: "adam"}                            // IAA
	mark  = Actor{User: "mark"}                            // member
	nina  = Actor{User: "nina"}                            // in nothing
	markE = Actor{User: "mark", Emergency: true}
)

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	dbPath := filepath.Join(dir, "state.db")
	db, err := state.Open(ctx, dbPath, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := local.New(filepath.Join(dir, "objects"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	settings := policy.NewLive(policy.Settings{})
	svc, err := New(Config{}, zap.NewNop(), db, store, settings)
	if err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{"olga", "adam", "mark", "nina", "zoe", "carol"} {
		if _, err := db.CreateAccount(ctx, state.Account{Name: u}); err != nil {
			t.Fatal(err)
		}
	}
	return &env{t: t, svc: svc, db: db, dbPath: dbPath, store: store, settings: settings}
}

// project makes project p (IAO olga, IAA adam) with share s (member mark).
func (e *env) project() {
	e.t.Helper()
	ctx := context.Background()
	must(e.t, e.svc.CreateProject(ctx, root, "p", "olga"))
	must(e.t, e.svc.PutProjectAdmin(ctx, olga, "p", "adam"))
	if _, err := e.svc.CreateShare(ctx, olga, "p", "s"); err != nil {
		e.t.Fatal(err)
	}
	must(e.t, e.svc.PutMember(ctx, adam, "s", "mark", false))
}

// arrival stores data as owner's Arrivals file name, as ingest publishes it.
func (e *env) arrival(owner, name string, data []byte, created time.Time) state.File {
	e.t.Helper()
	ctx := context.Background()
	e.uploads++
	id := "up" + strings.Repeat("x", e.uploads)
	key, err := storage.ArrivalKey(owner, name)
	if err != nil {
		e.t.Fatal(err)
	}
	up, err := e.store.Create(ctx, key)
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := up.WriteChunk(ctx, 0, bytes.NewReader(data)); err != nil {
		e.t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		e.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	if err := e.db.CreateUpload(ctx, state.Upload{ID: id, Owner: owner, Filename: name, Length: int64(len(data)), Status: state.StatusPublishing, Key: key}); err != nil {
		e.t.Fatal(err)
	}
	f := state.File{Key: key, Owner: owner, Name: name, Size: int64(len(data)), SHA256: hex.EncodeToString(sum[:]), CreatedAt: created, UploadID: id}
	if err := e.db.PublishFile(ctx, f); err != nil {
		e.t.Fatal(err)
	}
	return f
}

// object returns the bytes at key, or nil if there is no object.
func (e *env) object(key string) []byte {
	e.t.Helper()
	r, err := e.store.Open(context.Background(), key, 0, -1)
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		e.t.Fatal(err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		e.t.Fatal(err)
	}
	return b
}

// audits counts audit records of action whose result starts with result.
func (e *env) audits(action, result string) int {
	e.t.Helper()
	raw, err := sql.Open("sqlite", e.dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		e.t.Fatal(err)
	}
	defer raw.Close()
	var n int
	if err := raw.QueryRow(`SELECT COUNT(*) FROM audit WHERE action_name = ? AND result LIKE ?`, action, result+"%").Scan(&n); err != nil {
		e.t.Fatal(err)
	}
	return n
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func wantNotFound(t *testing.T, what string, err error) {
	t.Helper()
	var nf *NotFoundError
	if !errors.As(err, &nf) || !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("%s: error %v, want a NotFoundError", what, err)
	}
}

func wantDenied(t *testing.T, what string, err error) {
	t.Helper()
	var nf *NotFoundError
	if !errors.Is(err, policy.ErrDenied) || errors.As(err, &nf) {
		t.Fatalf("%s: error %v, want policy.ErrDenied (403), not a NotFoundError", what, err)
	}
}

func TestGovernance(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.project()

	// Project creation and ownership are the system administrator's.
	wantDenied(t, "IAO creates a project", e.svc.CreateProject(ctx, olga, "q", "olga"))
	wantDenied(t, "IAO sets the owner", e.svc.SetProjectOwner(ctx, olga, "p", "adam"))
	if err := e.svc.CreateProject(ctx, root, "p", "zoe"); !errors.Is(err, state.ErrExist) {
		t.Errorf("second project p: %v, want ErrExist", err)
	}
	wantNotFound(t, "project for no account", e.svc.CreateProject(ctx, root, "q", "ghost"))
	if err := e.svc.CreateProject(ctx, root, "Bad Name", "olga"); !errors.Is(err, policy.ErrBadName) {
		t.Errorf("bad project name: %v", err)
	}

	// IAAs: the IAO adds and removes them; an IAA does not.
	wantDenied(t, "IAA adds an IAA", e.svc.PutProjectAdmin(ctx, adam, "p", "zoe"))
	wantDenied(t, "IAA removes an IAA", e.svc.DeleteProjectAdmin(ctx, adam, "p", "adam"))
	wantNotFound(t, "member adds an IAA", e.svc.PutProjectAdmin(ctx, mark, "p", "zoe"))
	wantNotFound(t, "outsider adds an IAA", e.svc.PutProjectAdmin(ctx, nina, "p", "zoe"))
	wantNotFound(t, "IAO adds an IAA to a project that does not exist", e.svc.PutProjectAdmin(ctx, olga, "nope", "zoe"))
	wantNotFound(t, "IAO adds no account", e.svc.PutProjectAdmin(ctx, olga, "p", "ghost"))
	must(t, e.svc.PutProjectAdmin(ctx, olga, "p", "Zoe")) // canonicalised
	must(t, e.svc.DeleteProjectAdmin(ctx, root, "p", "zoe"))
	wantNotFound(t, "remove a non-IAA", e.svc.DeleteProjectAdmin(ctx, olga, "p", "zoe"))

	// Shares: created by the IAO or an IAA; names unique.
	if _, err := e.svc.CreateShare(ctx, adam, "p", "t"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.svc.CreateShare(ctx, olga, "p", "t"); !errors.Is(err, state.ErrExist) {
		t.Errorf("second share t: %v, want ErrExist", err)
	}
	_, err := e.svc.CreateShare(ctx, mark, "p", "u")
	wantNotFound(t, "member creates a share", err)
	_, err = e.svc.CreateShare(ctx, root, "p", "u")
	wantNotFound(t, "system administrator creates a share", err)
	if _, err := e.svc.CreateShare(ctx, olga, "p", "../x"); !errors.Is(err, policy.ErrBadName) {
		t.Errorf("bad share name: %v", err)
	}

	// Members and the outbound right: the IAO and IAAs only.
	wantDenied(t, "member adds a member", e.svc.PutMember(ctx, mark, "s", "zoe", false))
	wantDenied(t, "member grants themself outbound", e.svc.PutMember(ctx, mark, "s", "mark", true))
	wantNotFound(t, "outsider adds a member", e.svc.PutMember(ctx, nina, "s", "nina", false))
	wantNotFound(t, "outsider adds a member to a share that does not exist", e.svc.PutMember(ctx, nina, "nope", "nina", false))
	wantNotFound(t, "system administrator adds a member", e.svc.PutMember(ctx, root, "s", "zoe", false))
	wantNotFound(t, "IAA adds no account", e.svc.PutMember(ctx, adam, "s", "ghost", false))
	must(t, e.svc.PutMember(ctx, olga, "s", "mark", true))
	must(t, e.svc.PutMember(ctx, adam, "s", "zoe", true))
	must(t, e.svc.PutMember(ctx, adam, "s", "zoe", false))

	for _, tc := range []struct {
		a    Actor
		want []ShareInfo
	}{
		{olga, []ShareInfo{{"s", "p", "iao", false}, {"t", "p", "iao", false}}},
		{adam, []ShareInfo{{"s", "p", "iaa", false}, {"t", "p", "iaa", false}}},
		{mark, []ShareInfo{{"s", "p", "member", true}}},
		{Actor{User: "zoe"}, []ShareInfo{{"s", "p", "member", false}}},
		{nina, []ShareInfo{}},
	} {
		got, err := e.svc.Shares(ctx, tc.a)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(tc.want) {
			t.Errorf("Shares(%s) = %+v, want %+v", tc.a.User, got, tc.want)
			continue
		}
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("Shares(%s) = %+v, want %+v", tc.a.User, got, tc.want)
			}
		}
	}

	// Ownership changes hands.
	must(t, e.svc.SetProjectOwner(ctx, root, "p", "carol"))
	wantNotFound(t, "former IAO adds a member", e.svc.PutMember(ctx, olga, "s", "nina", false))
	must(t, e.svc.PutMember(ctx, Actor{User: "carol"}, "s", "nina", false))
	wantNotFound(t, "owner of a project that does not exist", e.svc.SetProjectOwner(ctx, root, "nope", "carol"))

	// Emergency sessions change nothing and see nothing.
	carolE := Actor{User: "carol", Emergency: true}
	wantDenied(t, "emergency IAO adds a member", e.svc.PutMember(ctx, carolE, "s", "zoe", false))
	wantDenied(t, "emergency IAO removes a member", e.svc.DeleteMember(ctx, carolE, "s", "zoe"))
	wantDenied(t, "emergency IAO adds an IAA", e.svc.PutProjectAdmin(ctx, carolE, "p", "zoe"))
	_, err = e.svc.CreateShare(ctx, carolE, "p", "v")
	wantDenied(t, "emergency IAO creates a share", err)
	_, err = e.svc.Shares(ctx, carolE)
	wantDenied(t, "emergency list", err)
	_, err = e.svc.ShareFiles(ctx, carolE, "s")
	wantDenied(t, "emergency files", err)
	wantDenied(t, "emergency files of a share that does not exist", func() error { _, err := e.svc.ShareFiles(ctx, carolE, "nope"); return err }())

	for _, c := range []struct {
		action, result string
		want           int
	}{
		{"project.create", "ok owner=olga", 1},
		{"project.create", "denied", 1},
		{"project.owner.set", "ok owner=carol previous=olga", 1},
		{"project.owner.set", "denied", 1},
		{"project.admin.put", "ok user=adam", 1},
		{"project.admin.put", "ok user=zoe", 1},
		{"project.admin.put", "denied", 5},
		{"project.admin.delete", "ok user=zoe", 1},
		{"project.admin.delete", "denied", 1},
		{"share.create", "ok project=p", 2},
		{"share.create", "denied", 3},
		{"share.member.put", "ok user=mark outbound=false new_member=true", 1},
		{"share.member.put", "ok user=nina outbound=false new_member=true", 1},
		{"share.member.put", "denied", 6},
		{"share.outbound.grant", "ok user=mark outbound=true", 1},
		{"share.outbound.grant", "ok user=zoe outbound=true new_member=true", 1},
		{"share.outbound.grant", "denied user=mark", 1},
		{"share.outbound.revoke", "ok user=zoe outbound=false", 1},
		{"share.member.delete", "denied", 1},
		{"shares.list", "denied", 1},
		{"share.files", "denied", 2},
	} {
		if n := e.audits(c.action, c.result); n != c.want {
			t.Errorf("%d %s audit records with result %q, want %d", n, c.action, c.result, c.want)
		}
	}
	if _, err := e.db.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
	// Refusals name no more than the caller gave: no record of a refusal
	// leaks into an answer (checked by the types above), and each one was
	// written with the caller's address.
	if n := e.audits("project.create", "denied"); n != 1 {
		t.Errorf("project.create refusals: %d", n)
	}
}

// A member removed by an IAA is refused at their very next request.
func TestRemovalCountsAtOnce(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.project()
	if _, err := e.svc.Files(ctx, "mark", "s"); err != nil {
		t.Fatalf("member lists files: %v", err)
	}
	if got, _ := e.svc.SharesOf(ctx, "mark"); len(got) != 1 {
		t.Fatalf("SharesOf(mark) = %+v", got)
	}
	must(t, e.svc.DeleteMember(ctx, adam, "s", "mark"))
	_, err := e.svc.Files(ctx, "mark", "s")
	wantNotFound(t, "removed member lists files", err)
	if got, err := e.svc.SharesOf(ctx, "mark"); err != nil || len(got) != 0 {
		t.Errorf("SharesOf(removed member) = %+v, %v", got, err)
	}
	e.arrival("mark", "x.csv", []byte("x"), time.Now())
	_, err = e.svc.Move(ctx, mark, "x.csv", "s", "x.csv")
	wantNotFound(t, "removed member moves a file in", err)
	wantNotFound(t, "removing again", e.svc.DeleteMember(ctx, adam, "s", "mark"))
	_, err = e.svc.Files(ctx, "mark", "Not A Share")
	wantNotFound(t, "bad share name", err)
	if !errors.Is(err, policy.ErrBadName) {
		t.Errorf("bad share name: %v does not wrap ErrBadName", err)
	}
}

func TestMove(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.project()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)
	data := []byte("cohort data")
	f := e.arrival("mark", "x.csv", data, created)
	other := e.arrival("nina", "n.csv", []byte("nina's"), created)

	got, err := e.svc.Move(ctx, mark, "x.csv", "s", "raw/2025/x.csv")
	if err != nil {
		t.Fatal(err)
	}
	if got.SHA256 != f.SHA256 || !got.CreatedAt.Equal(created) || got.Size != int64(len(data)) ||
		got.Key != "shares/s/raw/2025/x.csv" || got.Path != "raw/2025/x.csv" || got.MovedBy != "mark" {
		t.Errorf("Move = %+v; want the Arrival's hash %s and creation time %v", got, f.SHA256, created)
	}
	if b := e.object("shares/s/raw/2025/x.csv"); !bytes.Equal(b, data) {
		t.Errorf("share object = %q, want %q", b, data)
	}
	if b := e.object(f.Key); b != nil {
		t.Errorf("the Arrival's object is still there")
	}
	if fs, _ := e.db.FilesByOwner(ctx, "mark"); len(fs) != 0 {
		t.Errorf("Arrivals of mark after the move: %+v", fs)
	}
	for _, a := range []Actor{mark, olga, adam} {
		files, err := e.svc.ShareFiles(ctx, a, "s")
		if err != nil || len(files) != 1 || files[0] != got {
			t.Errorf("ShareFiles as %s = %+v, %v; want [%+v]", a.User, files, err, got)
		}
	}
	_, err = e.svc.ShareFiles(ctx, nina, "s")
	wantNotFound(t, "outsider lists files", err)

	// Nobody moves what is not theirs, nor into a share they are not in.
	_, err = e.svc.Move(ctx, nina, "n.csv", "s", "n.csv")
	wantNotFound(t, "outsider moves in", err)
	_, err = e.svc.Move(ctx, mark, "n.csv", "s", "n.csv")
	wantNotFound(t, "member moves another's Arrival (looked up in their own)", err)
	_, err = e.svc.Move(ctx, olga, "x.csv", "s", "again.csv")
	wantNotFound(t, "IAO moves a file gone from their Arrivals", err)
	_, err = e.svc.Move(ctx, markE, "x.csv", "s", "again.csv")
	wantDenied(t, "emergency move", err)
	if b := e.object(other.Key); b == nil {
		t.Error("nina's Arrival was touched")
	}

	// Bad names.
	for _, tc := range []struct{ name, share, path string }{
		{"a/b", "s", "x"}, {"..", "s", "x"}, {"y.csv", "S", "x"}, {"y.csv", "s", "../x"},
		{"y.csv", "s", ""}, {"y.csv", "s", "a//b"}, {"y.csv", "s", "/abs"},
	} {
		_, err := e.svc.Move(ctx, mark, tc.name, tc.share, tc.path)
		if !errors.Is(err, storage.ErrInvalidName) && !errors.Is(err, policy.ErrBadName) {
			t.Errorf("Move(%q, %q, %q) = %v, want a bad-name error", tc.name, tc.share, tc.path, err)
		}
	}

	// Nothing is overwritten.
	g := e.arrival("mark", "y.csv", []byte("second"), created)
	_, err = e.svc.Move(ctx, mark, "y.csv", "s", "raw/2025/x.csv")
	var ee *ExistError
	if !errors.As(err, &ee) || !errors.Is(err, state.ErrExist) {
		t.Fatalf("move onto a taken path: %v, want an ExistError", err)
	}
	if b := e.object("shares/s/raw/2025/x.csv"); !bytes.Equal(b, data) {
		t.Errorf("the share file was overwritten: %q", b)
	}
	if b := e.object(g.Key); !bytes.Equal(b, []byte("second")) {
		t.Errorf("the refused Arrival's object = %q", b)
	}

	// A file and a folder never share a name.
	for _, p := range []string{"raw/2025/x.csv/inner", "raw/2025", "raw"} {
		if _, err := e.svc.Move(ctx, mark, "y.csv", "s", p); !errors.As(err, &ee) {
			t.Errorf("move to %q, a file's folder or below a file: %v, want an ExistError", p, err)
		}
	}
	if b := e.object(g.Key); !bytes.Equal(b, []byte("second")) {
		t.Errorf("the refused Arrival's object = %q", b)
	}

	// The Arrival's record goes (as the retention sweeper would delete it)
	// after it was looked up, before the move is recorded: nothing moves.
	raw, err := sql.Open("sqlite", e.dbPath+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	e.svc.cfg.Now = func() time.Time {
		if _, err := raw.Exec(`DELETE FROM files WHERE object_key = ?`, g.Key); err != nil {
			t.Error(err)
		}
		return time.Now()
	}
	_, err = e.svc.Move(ctx, mark, "y.csv", "s", "later/y.csv")
	e.svc.cfg.Now = time.Now
	wantNotFound(t, "move whose Arrival record went", err)
	if b := e.object(g.Key); !bytes.Equal(b, []byte("second")) {
		t.Errorf("after an unrecorded move, the Arrival's object = %q; want it untouched", b)
	}
	if b := e.object("shares/s/later/y.csv"); b != nil {
		t.Errorf("after an unrecorded move, the share holds %q", b)
	}
	if files, _ := e.db.ShareFiles(ctx, "s"); len(files) != 1 {
		t.Errorf("after an unrecorded move, the share lists %+v", files)
	}

	if n := e.audits("arrival.move", "ok arrivals/mark/x.csv -> shares/s/raw/2025/x.csv sha256="+f.SHA256); n != 1 {
		t.Errorf("%d audit records of the move, want 1", n)
	}
	// Refused by policy: nina's and the emergency session's. (A file that is
	// not in the mover's Arrivals is no refusal: there was nothing to move.)
	if n := e.audits("arrival.move", "denied"); n != 2 {
		t.Errorf("%d arrival.move refusals audited, want 2", n)
	}
}

func TestMoveQuota(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.project()
	e.settings.Store(policy.Settings{Quotas: policy.Quotas{ShareBytes: 10, Shares: map[string]int64{"big": 0}}})
	e.arrival("mark", "a", []byte("123456"), time.Now())
	e.arrival("mark", "b", []byte("12345"), time.Now())
	e.arrival("mark", "c", []byte("1234"), time.Now())
	if _, err := e.svc.Move(ctx, mark, "a", "s", "a"); err != nil {
		t.Fatal(err)
	}
	_, err := e.svc.Move(ctx, mark, "b", "s", "b")
	var qe *policy.QuotaError
	if !errors.Is(err, policy.ErrQuotaExceeded) || !errors.As(err, &qe) || qe.Quota != policy.QuotaShareBytes || qe.Subject != "s" || qe.Used != 6 || qe.Want != 5 {
		t.Fatalf("move over the quota: %#v", err)
	}
	if fs, _ := e.db.FilesByOwner(ctx, "mark"); len(fs) != 2 {
		t.Errorf("after a refused move, mark's Arrivals: %+v", fs)
	}
	if _, err := e.svc.Move(ctx, mark, "c", "s", "c"); err != nil {
		t.Fatalf("a move that fits exactly: %v", err)
	}
	if n := e.audits("arrival.move", "denied arrivals/mark/b -> shares/s/b: quota of share s exceeded"); n != 1 {
		t.Errorf("%d audited quota refusals, want 1", n)
	}

	// A live settings change applies to the next move; an override of 0
	// lifts the limit for one share.
	e.settings.Store(policy.Settings{Quotas: policy.Quotas{ShareBytes: 10, Shares: map[string]int64{"s": 0}}})
	if _, err := e.svc.Move(ctx, mark, "b", "s", "b"); err != nil {
		t.Fatalf("move after the quota was lifted: %v", err)
	}
}
