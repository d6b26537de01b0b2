package state

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// FilesCreatedBefore pages through the files older than the cutoff, oldest
// first, keys breaking ties, and never returns a younger one.
func TestFilesCreatedBefore(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	var want []File
	for i, age := range []time.Duration{5, 3, 3, 3, 2, 1, 0} {
		id := fmt.Sprintf("u%d", i)
		u := fullUpload(id)
		u.Status = StatusPublishing
		if err := db.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
		f := File{Key: fmt.Sprintf("arrivals/alice/f%d", i), Owner: "alice", Name: fmt.Sprintf("f%d", i),
			CreatedAt: t0.Add(-age * time.Hour), UploadID: id}
		if err := db.PublishFile(ctx, f); err != nil {
			t.Fatal(err)
		}
		if age > 1 {
			want = append(want, f)
		}
	}
	cutoff := t0.Add(-time.Hour) // the file exactly an hour old is not before it
	var got []File
	var cur FileCursor
	for pages := 0; ; pages++ {
		if pages > 10 {
			t.Fatal("paging does not end")
		}
		page, err := db.FilesCreatedBefore(ctx, cutoff, cur, 2)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) > 2 {
			t.Fatalf("page of %d files, limit 2", len(page))
		}
		if len(page) == 0 {
			break
		}
		got = append(got, page...)
		cur = page[len(page)-1].After()
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("files created before the cutoff (-want +got):\n%s", diff)
	}
	if _, err := db.FilesCreatedBefore(ctx, cutoff, FileCursor{}, 0); err == nil {
		t.Error("limit 0 accepted")
	}
}

// DeleteFile removes the row and writes the audit record together, only for
// the upload that owns the row, and once.
func TestDeleteFile(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	u := fullUpload("u1")
	u.Status = StatusPublishing
	if err := db.CreateUpload(ctx, u); err != nil {
		t.Fatal(err)
	}
	f := File{Key: "arrivals/alice/x", Owner: "alice", Name: "x", CreatedAt: t0, UploadID: "u1"}
	if err := db.PublishFile(ctx, f); err != nil {
		t.Fatal(err)
	}
	rec := AuditRecord{Actor: "system", Action: "arrival.expire", Object: f.Key, Result: "deleted"}

	other := f
	other.UploadID = "u2"
	if held, err := db.HoldsFile(ctx, other); err != nil || held {
		t.Errorf("HoldsFile(another upload under the same key) = %v, %v", held, err)
	}
	if held, err := db.HoldsFile(ctx, f); err != nil || !held {
		t.Errorf("HoldsFile(f) = %v, %v", held, err)
	}
	_, err := db.DeleteFile(ctx, other, rec)
	wantErr(t, "another upload's file under the same key", err, ErrNotFound)
	if seq, _, _ := db.AuditHead(ctx); seq != 0 {
		t.Errorf("a refused delete wrote %d audit records", seq)
	}

	got, err := db.DeleteFile(ctx, f, rec)
	if err != nil {
		t.Fatal(err)
	}
	if got.Seq != 1 || got.Action != "arrival.expire" || got.Object != f.Key {
		t.Errorf("audit record %+v", got)
	}
	if ok, _ := db.FileExists(ctx, f.Key); ok {
		t.Error("the row is still there")
	}
	if up, err := db.GetUpload(ctx, "u1"); err != nil || up.Status != StatusDeleted || up.Reason == "" {
		t.Errorf("the upload after its file expired: %+v, %v; want status deleted with a reason", up.Status, err)
	}
	_, err = db.DeleteFile(ctx, f, rec)
	wantErr(t, "second delete", err, ErrNotFound)
	if n, err := db.VerifyAudit(ctx); err != nil || n != 1 {
		t.Errorf("VerifyAudit = %d, %v; want 1 record", n, err)
	}
	recs, err := db.AuditSince(ctx, 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]AuditRecord{got}, recs); diff != "" {
		t.Errorf("AuditSince (-want +got):\n%s", diff)
	}
	if recs, err := db.AuditSince(ctx, 1, 10); err != nil || len(recs) != 0 {
		t.Errorf("AuditSince(1) = %v, %v; want none", recs, err)
	}
}

// DeleteQuarantined moves a quarantined upload to deleted with its audit
// record; anything else is refused and writes nothing.
func TestQuarantinedBeforeAndDelete(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	for _, id := range []string{"old", "young", "live"} {
		u := fullUpload(id)
		if id != "live" {
			u.Status = StatusQuarantined
		}
		if err := db.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	// updated_at is set when an upload moves; age "young" by moving it
	// later than the others.
	if _, err := db.sql.ExecContext(ctx, `UPDATE uploads SET updated_at = $1 WHERE id = 'young'`, t0.Add(time.Hour).UnixNano()); err != nil {
		t.Fatal(err)
	}
	us, err := db.QuarantinedBefore(ctx, t0.Add(time.Minute), 10)
	if err != nil {
		t.Fatal(err)
	}
	if len(us) != 1 || us[0].ID != "old" {
		t.Fatalf("QuarantinedBefore = %v, want only old", us)
	}

	rec := AuditRecord{Actor: "system", Action: "quarantine.expire", Object: "old", Result: "deleted"}
	_, err = db.DeleteQuarantined(ctx, "live", "retention", rec)
	wantErr(t, "an upload not in quarantine", err, ErrConflict)
	_, err = db.DeleteQuarantined(ctx, "nope", "retention", rec)
	wantErr(t, "an unknown upload", err, ErrNotFound)
	if seq, _, _ := db.AuditHead(ctx); seq != 0 {
		t.Errorf("refused deletes wrote %d audit records", seq)
	}
	if _, err := db.DeleteQuarantined(ctx, "old", "retention", rec); err != nil {
		t.Fatal(err)
	}
	if u := mustGet(t, db, "old"); u.Status != StatusDeleted || u.Reason != "retention" {
		t.Errorf("after delete: status %s reason %q", u.Status, u.Reason)
	}
	_, err = db.DeleteQuarantined(ctx, "old", "retention", rec)
	wantErr(t, "a second delete", err, ErrConflict)
	if seq, _, _ := db.AuditHead(ctx); seq != 1 {
		t.Errorf("audit records: %d, want 1", seq)
	}
}
