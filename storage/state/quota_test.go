package state

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// quotaUpload is an upload of owner with length and offset in status.
func quotaUpload(id, owner string, length, offset int64, status string) Upload {
	return Upload{ID: id, Owner: owner, Filename: id, Length: length, Offset: offset, Status: status, Key: "uploads/" + id}
}

func TestArrivalsUsage(t *testing.T) {
	ctx := context.Background()
	db, path := newDB(t)
	ups := []Upload{
		quotaUpload("up", "alice", 100, 10, StatusUploading),       // reserved: 100
		quotaUpload("sftp", "alice", -1, 7, StatusUploading),       // unknown length: its offset, 7
		quotaUpload("proc", "alice", 1000, 1000, StatusProcessing), // 1000
		quotaUpload("pub", "alice", 10000, 10000, StatusProcessing),
		quotaUpload("quar", "alice", 1e5, 1e5, StatusQuarantined),
		quotaUpload("rej", "alice", 1e6, 1e6, StatusRejected),
		quotaUpload("term", "alice", 1e7, 5, StatusTerminated),
		quotaUpload("del", "alice", 1e8, 1e8, StatusDeleted),
		quotaUpload("bob", "bob", 1e9, 0, StatusUploading),
	}
	for _, u := range ups {
		if err := db.CreateUpload(ctx, u); err != nil {
			t.Fatal(err)
		}
	}
	// pub is published (publishing → available with its file row, one
	// transaction): it counts once, as a file.
	if err := db.Transition(ctx, "pub", StatusProcessing, StatusPublishing, "", "", "arrivals/alice/pub"); err != nil {
		t.Fatal(err)
	}
	check := func(want ArrivalsUsage) {
		t.Helper()
		got, err := db.ArrivalsUsage(ctx, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("ArrivalsUsage (-want +got):\n%s", diff)
		}
	}
	check(ArrivalsUsage{ReservedBytes: 100 + 7 + 1000 + 10000, ReservedFiles: 4})
	if err := db.PublishFile(ctx, File{Key: "arrivals/alice/pub", Owner: "alice", Name: "pub", Size: 10000, UploadID: "pub"}); err != nil {
		t.Fatal(err)
	}
	check(ArrivalsUsage{FileBytes: 10000, Files: 1, ReservedBytes: 100 + 7 + 1000, ReservedFiles: 3})
	if err := db.Transition(ctx, "up", StatusUploading, StatusTerminated, "", "terminated", ""); err != nil {
		t.Fatal(err)
	}
	if err := db.FixLength(ctx, "sftp", 7); err != nil {
		t.Fatal(err)
	}
	check(ArrivalsUsage{FileBytes: 10000, Files: 1, ReservedBytes: 7 + 1000, ReservedFiles: 2})
	// A file that leaves Arrivals (moved into a share, deleted by the
	// retention sweep: its row goes) leaves the usage.
	if _, err := rawDB(t, path).Exec(`DELETE FROM files WHERE object_key = 'arrivals/alice/pub'`); err != nil {
		t.Fatal(err)
	}
	check(ArrivalsUsage{ReservedBytes: 7 + 1000, ReservedFiles: 2})

	none, err := db.ArrivalsUsage(ctx, "carol")
	if err != nil || none != (ArrivalsUsage{}) {
		t.Errorf("usage of a user with nothing = %+v, %v; want zero", none, err)
	}
}

var errOver = errors.New("over quota")

// limitCheck refuses what would take usage past limit bytes.
func limitCheck(limit, length int64) func(ArrivalsUsage) error {
	return func(u ArrivalsUsage) error {
		if u.FileBytes+u.ReservedBytes+length > limit {
			return fmt.Errorf("%w: %d used", errOver, u.FileBytes+u.ReservedBytes)
		}
		return nil
	}
}

func TestCreateUploadChecked(t *testing.T) {
	ctx := context.Background()
	db, _ := newDB(t)
	var seen ArrivalsUsage
	err := db.CreateUploadChecked(ctx, quotaUpload("a", "alice", 6, 0, StatusUploading), func(u ArrivalsUsage) error {
		seen = u
		return nil
	})
	if err != nil || seen != (ArrivalsUsage{}) {
		t.Fatalf("first creation: %v, saw usage %+v", err, seen)
	}
	err = db.CreateUploadChecked(ctx, quotaUpload("b", "alice", 6, 0, StatusUploading), limitCheck(10, 6))
	wantErr(t, "creation over the limit", err, errOver)
	if _, err := db.GetUpload(ctx, "b"); !errors.Is(err, ErrNotFound) {
		t.Errorf("a refused upload was recorded: %v", err)
	}
	// Another owner's usage is not this one's.
	if err := db.CreateUploadChecked(ctx, quotaUpload("c", "bob", 6, 0, StatusUploading), limitCheck(10, 6)); err != nil {
		t.Errorf("bob's upload: %v", err)
	}
	// The insert's own errors come through.
	err = db.CreateUploadChecked(ctx, quotaUpload("a", "alice", 1, 0, StatusUploading), limitCheck(10, 1))
	wantErr(t, "duplicate id", err, ErrExist)
}

// TestCreateUploadCheckedRace: creations that each fit but together do not,
// started at once on one handle or on two (as two processes would), are
// decided one after the other: exactly one is refused.
func TestCreateUploadCheckedRace(t *testing.T) {
	for _, handles := range []int{1, 2} {
		t.Run(fmt.Sprintf("%d handles", handles), func(t *testing.T) {
			ctx := context.Background()
			db, path := newDB(t)
			dbs := []*DB{db, db}
			if handles == 2 {
				dbs[1] = openAt(t, path)
			}
			const n = 2
			errs := make([]error, n)
			var wg sync.WaitGroup
			start := make(chan struct{})
			for i := range n {
				wg.Go(func() {
					<-start
					u := quotaUpload(fmt.Sprintf("u%d", i), "alice", 6<<20, 0, StatusUploading)
					errs[i] = dbs[i%len(dbs)].CreateUploadChecked(ctx, u, limitCheck(10<<20, u.Length))
				})
			}
			close(start)
			wg.Wait()
			refused := 0
			for _, err := range errs {
				switch {
				case errors.Is(err, errOver):
					refused++
				case err != nil:
					t.Fatalf("creation failed: %v", err)
				}
			}
			if refused != 1 {
				t.Fatalf("%d of %d creations refused, want exactly 1: %v", refused, n, errs)
			}
			u, err := db.ArrivalsUsage(ctx, "alice")
			if err != nil || u.ReservedBytes != 6<<20 || u.ReservedFiles != 1 {
				t.Errorf("usage after the race = %+v, %v; want one 6 MiB reservation", u, err)
			}
		})
	}
}
