package state

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func shareRec(action, object string) AuditRecord {
	return AuditRecord{Actor: "tester", Action: action, Object: object, Result: "ok"}
}

// shareAuditLen is the length of the verified audit chain.
func shareAuditLen(t *testing.T, db *DB) int64 {
	t.Helper()
	n, err := db.VerifyAudit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// wantShareAudited fails unless err is nil and exactly one record was added, or
// err matches target and none was.
func wantShareAudited(t *testing.T, db *DB, what string, before int64, err, target error) {
	t.Helper()
	want := before + 1
	if target != nil {
		want = before
		if !errors.Is(err, target) {
			t.Fatalf("%s: error %v, want %v", what, err, target)
		}
	} else if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if got := shareAuditLen(t, db); got != want {
		t.Fatalf("%s: audit chain has %d records, want %d", what, got, want)
	}
}

func TestProjects(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)

	n := shareAuditLen(t, db)
	err := db.CreateProject(ctx, Project{Name: "p", Owner: "olga", CreatedAt: t0, CreatedBy: "cli:root"}, shareRec("project.create", "project:p"))
	wantShareAudited(t, db, "create project", n, err, nil)
	n++
	err = db.CreateProject(ctx, Project{Name: "p", Owner: "zed"}, shareRec("project.create", "project:p"))
	wantShareAudited(t, db, "create the project again", n, err, ErrExist)
	if err := db.CreateProject(ctx, Project{Name: "q", Owner: "quinn"}, shareRec("project.create", "project:q")); err != nil {
		t.Fatal(err)
	}
	n++
	if err := db.CreateProject(ctx, Project{Name: "r"}, shareRec("project.create", "project:r")); err == nil {
		t.Error("created a project without an owner")
	}
	if err := db.CreateProject(ctx, Project{Name: "r", Owner: "x"}, AuditRecord{}); err == nil {
		t.Error("created a project without an audit action")
	}
	if _, err := db.GetProject(ctx, "r"); !errors.Is(err, ErrNotFound) {
		t.Errorf("the unaudited project exists: %v", err)
	}

	for _, u := range []string{"adam", "abby", "adam"} { // the second put of adam changes nothing
		err := db.PutProjectAdmin(ctx, "p", u, "olga", t0, shareRec("project.admin.put", "project:p"))
		wantShareAudited(t, db, "put admin "+u, n, err, nil)
		n++
	}
	err = db.PutProjectAdmin(ctx, "nope", "adam", "olga", t0, shareRec("project.admin.put", "project:nope"))
	wantShareAudited(t, db, "put admin in a missing project", n, err, ErrNotFound)

	p, err := db.GetProject(ctx, "p")
	if err != nil {
		t.Fatal(err)
	}
	want := Project{Name: "p", Owner: "olga", Admins: []string{"abby", "adam"}, CreatedAt: t0.UTC(), CreatedBy: "cli:root"}
	if diff := cmp.Diff(want, p); diff != "" {
		t.Errorf("GetProject (-want +got):\n%s", diff)
	}

	err = db.DeleteProjectAdmin(ctx, "p", "abby", shareRec("project.admin.delete", "project:p"))
	wantShareAudited(t, db, "delete admin", n, err, nil)
	n++
	err = db.DeleteProjectAdmin(ctx, "p", "abby", shareRec("project.admin.delete", "project:p"))
	wantShareAudited(t, db, "delete admin again", n, err, ErrNotFound)

	err = db.SetProjectOwner(ctx, "p", "carol", shareRec("project.owner.set", "project:p"))
	wantShareAudited(t, db, "set owner", n, err, nil)
	n++
	err = db.SetProjectOwner(ctx, "nope", "carol", shareRec("project.owner.set", "project:nope"))
	wantShareAudited(t, db, "set owner of a missing project", n, err, ErrNotFound)

	all, err := db.Projects(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[0].Name != "p" || all[0].Owner != "carol" || !cmp.Equal(all[0].Admins, []string{"adam"}) ||
		all[1].Name != "q" || all[1].Owner != "quinn" || len(all[1].Admins) != 0 {
		t.Errorf("Projects = %+v", all)
	}
}

func TestSharesAndMembers(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	for _, p := range []Project{{Name: "p", Owner: "olga"}, {Name: "q", Owner: "quinn"}} {
		if err := db.CreateProject(ctx, p, shareRec("project.create", p.Name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.PutProjectAdmin(ctx, "p", "adam", "olga", t0, shareRec("project.admin.put", "p")); err != nil {
		t.Fatal(err)
	}
	n := shareAuditLen(t, db)
	err := db.CreateShare(ctx, Share{Name: "s", Project: "p", CreatedAt: t0, CreatedBy: "adam"}, shareRec("share.create", "share:s"))
	wantShareAudited(t, db, "create share", n, err, nil)
	n++
	err = db.CreateShare(ctx, Share{Name: "s", Project: "q", CreatedBy: "quinn"}, shareRec("share.create", "share:s"))
	wantShareAudited(t, db, "create a share of the same name in another project", n, err, ErrExist)
	err = db.CreateShare(ctx, Share{Name: "t", Project: "nope", CreatedBy: "quinn"}, shareRec("share.create", "share:t"))
	wantShareAudited(t, db, "create a share in a missing project", n, err, ErrNotFound)
	if err := db.CreateShare(ctx, Share{Name: "u", Project: "q", CreatedBy: "quinn"}, shareRec("share.create", "share:u")); err != nil {
		t.Fatal(err)
	}
	n++
	if s, err := db.GetShare(ctx, "s"); err != nil || s != (Share{Name: "s", Project: "p", CreatedAt: t0.UTC(), CreatedBy: "adam"}) {
		t.Errorf("GetShare = %+v, %v", s, err)
	}
	if _, err := db.GetShare(ctx, "t"); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetShare of a missing share: %v", err)
	}
	if names, err := db.ProjectShares(ctx, "p"); err != nil || !cmp.Equal(names, []string{"s"}) {
		t.Errorf("ProjectShares(p) = %q, %v", names, err)
	}

	err = db.PutShareMember(ctx, ShareMember{Share: "s", User: "mark", AddedBy: "adam", AddedAt: t0}, shareRec("share.member.put", "share:s"))
	wantShareAudited(t, db, "put member", n, err, nil)
	n++
	// Granting outbound keeps who added the member and when.
	err = db.PutShareMember(ctx, ShareMember{Share: "s", User: "mark", Outbound: true, AddedBy: "olga"}, shareRec("share.outbound.grant", "share:s"))
	wantShareAudited(t, db, "grant outbound", n, err, nil)
	n++
	err = db.PutShareMember(ctx, ShareMember{Share: "t", User: "mark", AddedBy: "olga"}, shareRec("share.member.put", "share:t"))
	wantShareAudited(t, db, "put member of a missing share", n, err, ErrNotFound)
	if err := db.PutShareMember(ctx, ShareMember{Share: "u", User: "mark", AddedBy: "quinn"}, shareRec("share.member.put", "share:u")); err != nil {
		t.Fatal(err)
	}
	n++
	ms, err := db.ShareMembers(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]ShareMember{{Share: "s", User: "mark", Outbound: true, AddedBy: "adam", AddedAt: t0.UTC()}}, ms); diff != "" {
		t.Errorf("ShareMembers (-want +got):\n%s", diff)
	}

	for _, tc := range []struct {
		user string
		want []UserShare
	}{
		{"olga", []UserShare{{Share: "s", Project: "p", ProjectOwner: "olga"}}},
		{"adam", []UserShare{{Share: "s", Project: "p", ProjectOwner: "olga", Admin: true}}},
		{"mark", []UserShare{{Share: "s", Project: "p", ProjectOwner: "olga", Member: true, Outbound: true}, {Share: "u", Project: "q", ProjectOwner: "quinn", Member: true}}},
		{"quinn", []UserShare{{Share: "u", Project: "q", ProjectOwner: "quinn"}}},
		{"nina", nil},
	} {
		got, err := db.UserShares(ctx, tc.user)
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("UserShares(%s) (-want +got):\n%s", tc.user, diff)
		}
	}

	err = db.DeleteShareMember(ctx, "s", "mark", shareRec("share.member.delete", "share:s"))
	wantShareAudited(t, db, "delete member", n, err, nil)
	n++
	err = db.DeleteShareMember(ctx, "s", "mark", shareRec("share.member.delete", "share:s"))
	wantShareAudited(t, db, "delete member again", n, err, ErrNotFound)
	if got, err := db.UserShares(ctx, "mark"); err != nil || len(got) != 1 || got[0].Share != "u" {
		t.Errorf("after removal from s, UserShares(mark) = %+v, %v", got, err)
	}
}

// publishArrival publishes an Arrivals file of owner through an upload, as ingest does.
func publishArrival(t *testing.T, db *DB, id, owner, name string, size int64, created time.Time) File {
	t.Helper()
	ctx := context.Background()
	u := fullUpload(id)
	u.Owner, u.Status = owner, StatusPublishing
	if err := db.CreateUpload(ctx, u); err != nil {
		t.Fatal(err)
	}
	f := File{Key: "arrivals/" + owner + "/" + name, Owner: owner, Name: name, Size: size,
		SHA256: strings.Repeat(id[len(id)-1:], 64), CreatedAt: created, UploadID: id}
	if err := db.PublishFile(ctx, f); err != nil {
		t.Fatal(err)
	}
	f.CreatedAt = f.CreatedAt.UTC()
	return f
}

func TestBeginMove(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	if err := db.CreateProject(ctx, Project{Name: "p", Owner: "olga"}, shareRec("project.create", "p")); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateShare(ctx, Share{Name: "s", Project: "p", CreatedBy: "olga"}, shareRec("share.create", "s")); err != nil {
		t.Fatal(err)
	}
	a := publishArrival(t, db, "u1", "mark", "x.csv", 600, t0)
	b := publishArrival(t, db, "u2", "mark", "y.csv", 500, t0.Add(time.Minute))
	noLimit := func(int64) error { return nil }
	moved := t0.Add(time.Hour)

	n := shareAuditLen(t, db)
	got, err := db.BeginMove(ctx, a, ShareFile{Share: "s", Path: "raw/x.csv", Key: "shares/s/raw/x.csv", MovedBy: "mark", MovedAt: moved},
		noLimit, shareRec("arrival.move", a.Key))
	wantShareAudited(t, db, "move", n, err, nil)
	n++
	want := ShareFile{Share: "s", Path: "raw/x.csv", Key: "shares/s/raw/x.csv", Size: 600, SHA256: a.SHA256,
		CreatedAt: t0.UTC(), MovedAt: moved.UTC(), MovedBy: "mark", UploadID: "u1"}
	if diff := cmp.Diff(ShareMove{File: want, From: a}, got); diff != "" {
		t.Errorf("BeginMove (-want +got):\n%s", diff)
	}
	// In progress: not listed, but its path is taken and its bytes count.
	if files, err := db.ShareFiles(ctx, "s"); err != nil || len(files) != 0 {
		t.Errorf("ShareFiles with the move in progress = %+v, %v; want none", files, err)
	}
	if err := db.FinishMove(ctx, got.File); err != nil {
		t.Fatal(err)
	}
	files, err := db.ShareFiles(ctx, "s")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]ShareFile{want}, files); diff != "" {
		t.Errorf("ShareFiles (-want +got):\n%s", diff)
	}
	if _, err := db.ArrivalByKey(ctx, a.Key); !errors.Is(err, ErrNotFound) {
		t.Errorf("the moved file is still in Arrivals: %v", err)
	}
	if f, err := db.ArrivalByKey(ctx, b.Key); err != nil || !cmp.Equal(f, b) {
		t.Errorf("ArrivalByKey(%s) = %+v, %v; want %+v", b.Key, f, err, b)
	}

	// The quota check sees the share's usage; its refusal changes nothing.
	var saw int64 = -1
	errQuota := errors.New("over quota")
	_, err = db.BeginMove(ctx, b, ShareFile{Share: "s", Path: "y.csv", Key: "shares/s/y.csv", MovedBy: "mark"},
		func(used int64) error { saw = used; return errQuota }, shareRec("arrival.move", b.Key))
	wantShareAudited(t, db, "move refused by the quota check", n, err, errQuota)
	if saw != 600 {
		t.Errorf("the quota check saw %d bytes used, want 600", saw)
	}
	if _, err := db.ArrivalByKey(ctx, b.Key); err != nil {
		t.Errorf("after a refused move the file left Arrivals: %v", err)
	}
	if used, err := db.ShareUsage(ctx, "s"); err != nil || used != 600 {
		t.Errorf("ShareUsage = %d, %v; want 600", used, err)
	}

	for _, tc := range []struct {
		name string
		from File
		dst  ShareFile
		want error
	}{
		{"path taken", b, ShareFile{Share: "s", Path: "raw/x.csv", Key: "shares/s/raw/x.csv"}, ErrExist},
		{"no such share", b, ShareFile{Share: "t", Path: "y.csv", Key: "shares/t/y.csv"}, ErrNotFound},
		{"already moved", a, ShareFile{Share: "s", Path: "again.csv", Key: "shares/s/again.csv"}, ErrNotFound},
		{"another upload under the key", File{Key: b.Key, UploadID: "u9"}, ShareFile{Share: "s", Path: "y.csv", Key: "shares/s/y.csv"}, ErrNotFound},
	} {
		_, err := db.BeginMove(ctx, tc.from, tc.dst, noLimit, shareRec("arrival.move", tc.from.Key))
		wantShareAudited(t, db, tc.name, n, err, tc.want)
	}
	// A file and a folder never share a name; names that only look alike
	// (a LIKE pattern, a longer name) are no conflict.
	for p, want := range map[string]bool{
		"raw/x.csv": true, "raw": true, "raw/x.csv/deeper": true, "raw/x.csv/a/b": true,
		"raw/y.csv": false, "ra": false, "raw/x": false, "raw/x.csv2": false, "raw2/x.csv": false, "r%": false, "raw_x.csv": false,
	} {
		if got, err := db.SharePathTaken(ctx, "s", p); err != nil || got != want {
			t.Errorf("SharePathTaken(s, %q) = %v, %v; want %v", p, got, err, want)
		}
		if !want {
			continue
		}
		_, err = db.BeginMove(ctx, b, ShareFile{Share: "s", Path: p, Key: "shares/s/" + p}, noLimit, shareRec("arrival.move", b.Key))
		wantShareAudited(t, db, "move to "+p, n, err, ErrExist)
	}
	if taken, err := db.SharePathTaken(ctx, "t", "raw"); err != nil || taken {
		t.Errorf("SharePathTaken in another share = %v, %v", taken, err)
	}
	if _, err := db.BeginMove(ctx, b, ShareFile{Share: "s", Path: "y.csv"}, noLimit, shareRec("arrival.move", b.Key)); err == nil {
		t.Error("moved without a destination key")
	}
}

// Each step of a move leaves a state a crash may stop in: after BeginMove
// the file is out of Arrivals (and out of the retention sweep's sight),
// holds its path and quota, is not listed, and is a pending move; after
// FinishMove it is listed; UndoMove puts the Arrival back as it was.
func TestMoveSteps(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	if err := db.CreateProject(ctx, Project{Name: "p", Owner: "olga"}, shareRec("project.create", "p")); err != nil {
		t.Fatal(err)
	}
	if err := db.CreateShare(ctx, Share{Name: "s", Project: "p", CreatedBy: "olga"}, shareRec("share.create", "s")); err != nil {
		t.Fatal(err)
	}
	a := publishArrival(t, db, "u1", "mark", "x.csv", 600, t0)
	b := publishArrival(t, db, "u2", "mark", "y.csv", 500, t0)
	noLimit := func(int64) error { return nil }
	begin := func(f File, p string) ShareMove {
		t.Helper()
		m, err := db.BeginMove(ctx, f, ShareFile{Share: "s", Path: p, Key: "shares/s/" + p, MovedBy: "mark"}, noLimit, shareRec("arrival.move", f.Key))
		if err != nil {
			t.Fatal(err)
		}
		return m
	}
	pending := func() []ShareMove {
		t.Helper()
		ms, err := db.PendingMoves(ctx, 10)
		if err != nil {
			t.Fatal(err)
		}
		return ms
	}

	ma := begin(a, "a.csv")
	mb := begin(b, "dir/b.csv")
	if diff := cmp.Diff([]ShareMove{ma, mb}, pending()); diff != "" {
		t.Errorf("PendingMoves (-want +got):\n%s", diff)
	}
	if got, err := db.PendingMove(ctx, "s", "dir/b.csv"); err != nil || !cmp.Equal(got, mb) {
		t.Errorf("PendingMove = %+v, %v; want %+v", got, err, mb)
	}
	// What the retention sweep reads no longer shows the Arrivals.
	if fs, err := db.FilesCreatedBefore(ctx, t0.Add(time.Hour), FileCursor{}, 10); err != nil || len(fs) != 0 {
		t.Errorf("FilesCreatedBefore during the moves = %+v, %v", fs, err)
	}
	if held, err := db.HoldsFile(ctx, a); err != nil || held {
		t.Errorf("HoldsFile during the move = %v, %v", held, err)
	}
	if used, err := db.ShareUsage(ctx, "s"); err != nil || used != 1100 {
		t.Errorf("ShareUsage during the moves = %d, %v; want 1100", used, err)
	}
	for _, p := range []string{"a.csv", "dir", "dir/b.csv/c"} {
		if taken, err := db.SharePathTaken(ctx, "s", p); err != nil || !taken {
			t.Errorf("SharePathTaken(%q) during the moves = %v, %v", p, taken, err)
		}
	}
	if files, err := db.ShareFiles(ctx, "s"); err != nil || len(files) != 0 {
		t.Errorf("ShareFiles during the moves = %+v, %v", files, err)
	}

	// Finish a; finishing again (a repeat after a crash) changes nothing,
	// and a finished move cannot be undone.
	for range 2 {
		if err := db.FinishMove(ctx, ma.File); err != nil {
			t.Fatal(err)
		}
	}
	n := shareAuditLen(t, db)
	_, err := db.UndoMove(ctx, ma, shareRec("arrival.move", a.Key))
	wantShareAudited(t, db, "undo a finished move", n, err, ErrNotFound)
	stale := ma
	stale.File.UploadID = "u9"
	if err := db.FinishMove(ctx, stale.File); !errors.Is(err, ErrNotFound) {
		t.Errorf("FinishMove of another upload's move = %v, want ErrNotFound", err)
	}

	// Undo b: the Arrival is back as it was, the share path free.
	restored, err := db.UndoMove(ctx, mb, shareRec("arrival.move", b.Key))
	wantShareAudited(t, db, "undo", n, err, nil)
	n++
	if !restored {
		t.Error("UndoMove did not restore the Arrival")
	}
	if got, err := db.ArrivalByKey(ctx, b.Key); err != nil || !cmp.Equal(got, b) {
		t.Errorf("after the undo, ArrivalByKey = %+v, %v; want %+v", got, err, b)
	}
	_, err = db.UndoMove(ctx, mb, shareRec("arrival.move", b.Key))
	wantShareAudited(t, db, "undo again", n, err, ErrNotFound)
	if err := db.FinishMove(ctx, mb.File); !errors.Is(err, ErrNotFound) {
		t.Errorf("FinishMove of an undone move = %v, want ErrNotFound", err)
	}
	if len(pending()) != 0 {
		t.Errorf("PendingMoves after finish and undo = %+v", pending())
	}
	if _, err := db.PendingMove(ctx, "s", "a.csv"); !errors.Is(err, ErrNotFound) {
		t.Errorf("PendingMove of a finished move = %v, want ErrNotFound", err)
	}
	if used, err := db.ShareUsage(ctx, "s"); err != nil || used != 600 {
		t.Errorf("ShareUsage = %d, %v; want 600", used, err)
	}
	if files, err := db.ShareFiles(ctx, "s"); err != nil || len(files) != 1 || files[0] != ma.File {
		t.Errorf("ShareFiles = %+v, %v; want [%+v]", files, err, ma.File)
	}

	// A later file took the Arrivals key meanwhile: it stays, and the
	// moved one is not put back over it.
	mb = begin(b, "b.csv")
	later := publishArrival(t, db, "u3", "mark", "y.csv", 7, t0.Add(time.Hour))
	n = shareAuditLen(t, db)
	restored, err = db.UndoMove(ctx, mb, shareRec("arrival.move", b.Key))
	wantShareAudited(t, db, "undo onto a taken key", n, err, nil)
	if restored {
		t.Error("UndoMove restored the Arrival over a later file")
	}
	if got, err := db.ArrivalByKey(ctx, b.Key); err != nil || !cmp.Equal(got, later) {
		t.Errorf("after the undo, ArrivalByKey = %+v, %v; want the later file %+v", got, err, later)
	}
	if _, err := db.PendingMoves(ctx, 0); err == nil {
		t.Error("PendingMoves with limit 0: no error")
	}
}
