package shares

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/ingest"
)

// faultStore is a storage.Backend whose Move calls move, which may call
// the real one.
type faultStore struct {
	storage.Backend
	move func(ctx context.Context, src, dst string) error
}

func (f *faultStore) Move(ctx context.Context, src, dst string) error { return f.move(ctx, src, dst) }

// crash is what a faultStore panics with to stop the process where it
// stands: no code of the move runs after it.
type crash struct{}

// service is a new Service (a restarted daemon's) on e's database, with
// store.
func (e *env) service(store storage.Backend) *Service {
	e.t.Helper()
	svc, err := New(Config{}, zap.NewNop(), e.db, store, e.settings)
	if err != nil {
		e.t.Fatal(err)
	}
	return svc
}

// moveCrashing runs svc.Move and returns true if it crashed.
func moveCrashing(t *testing.T, svc *Service, a Actor, name, share, path string) (f state.ShareFile, err error, crashed bool) {
	t.Helper()
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(crash); !ok {
				panic(r)
			}
			crashed = true
		}
	}()
	f, err = svc.Move(context.Background(), a, name, share, path)
	return f, err, false
}

// copyObject writes a copy of src at dst, as an interrupted S3 move leaves it.
func (e *env) copyObject(src, dst string) {
	e.t.Helper()
	e.put(dst, e.object(src))
}

// put stores data at key.
func (e *env) put(key string, data []byte) {
	e.t.Helper()
	ctx := context.Background()
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
}

// consistent fails unless every object under arrivals/ and shares/ is
// recorded (no orphan, except those in allowed) and every file listed in
// share s has its bytes, with the recorded SHA-256.
func (e *env) consistent(allowed ...string) {
	e.t.Helper()
	ctx := context.Background()
	files, err := e.db.ShareFiles(ctx, "s")
	if err != nil {
		e.t.Fatal(err)
	}
	listed := map[string]bool{}
	for _, f := range files {
		listed[f.Key] = true
		sum := sha256.Sum256(e.object(f.Key))
		if e.object(f.Key) == nil || hex.EncodeToString(sum[:]) != f.SHA256 {
			e.t.Errorf("listed share file %s: object %q does not have the recorded SHA-256", f.Path, e.object(f.Key))
		}
	}
	for _, prefix := range []string{storage.PrefixArrivals + "/", storage.PrefixShares + "/"} {
		err := e.store.List(ctx, prefix, func(o storage.ObjectInfo) error {
			recorded := listed[o.Key]
			if strings.HasPrefix(o.Key, storage.PrefixArrivals+"/") {
				held, err := e.db.FileExists(ctx, o.Key)
				if err != nil {
					return err
				}
				recorded = held
			}
			for _, k := range allowed {
				recorded = recorded || k == o.Key
			}
			if !recorded {
				e.t.Errorf("orphan: object %s is recorded nowhere", o.Key)
			}
			return nil
		})
		if err != nil {
			e.t.Fatal(err)
		}
	}
}

// pending is the number of moves in progress.
func (e *env) pending() int {
	e.t.Helper()
	ms, err := e.db.PendingMoves(context.Background(), 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(ms)
}

// A crash or a storage failure at any step of a move leaves it recorded
// and unlisted, out of Arrivals; the restarted daemon's Recover finishes
// it: the file is listed in the share with its bytes and SHA-256, and no
// object is left behind.
func TestRecoverFinishesMoves(t *testing.T) {
	for _, tc := range []struct {
		name string
		// move stands in for the storage move of the failing daemon.
		move    func(e *env, real func() error, src, dst string) error
		crashes bool
	}{
		{"crash after the move is recorded", func(*env, func() error, string, string) error { panic(crash{}) }, true},
		{"crash after the bytes moved", func(_ *env, real func() error, _, _ string) error {
			if err := real(); err != nil {
				return err
			}
			panic(crash{})
		}, true},
		{"crash in an interrupted copy (S3: copied, source not deleted)", func(e *env, _ func() error, src, dst string) error {
			e.copyObject(src, dst)
			panic(crash{})
		}, true},
		{"storage fails before moving", func(*env, func() error, string, string) error {
			return fmt.Errorf("s3: move: %w", storage.ErrUnavailable)
		}, false},
		{"storage fails after moving", func(_ *env, real func() error, _, _ string) error {
			if err := real(); err != nil {
				return err
			}
			return fmt.Errorf("s3: move: remove source: %w", storage.ErrUnavailable)
		}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t)
			e.project()
			data := []byte("cohort data, " + tc.name)
			f := e.arrival("mark", "x.csv", data, time.Now())
			failing := e.service(&faultStore{Backend: e.store, move: func(ctx context.Context, src, dst string) error {
				return tc.move(e, func() error { return e.store.Move(ctx, src, dst) }, src, dst)
			}})
			_, err, crashed := moveCrashing(t, failing, mark, "x.csv", "s", "raw/x.csv")
			if crashed != tc.crashes {
				t.Fatalf("crashed = %v, want %v", crashed, tc.crashes)
			}
			if !tc.crashes && !errors.Is(err, storage.ErrUnavailable) {
				t.Fatalf("Move with a failing store: %v, want the storage error", err)
			}

			// Between the steps: recorded, not listed, out of Arrivals
			// (and of the retention sweep's sight).
			if files, _ := e.svc.Files(ctx, "mark", "s"); len(files) != 0 {
				t.Errorf("listed before the move is finished: %+v", files)
			}
			if held, err := e.db.HoldsFile(ctx, f); err != nil || held {
				t.Errorf("the Arrival is still recorded during the move: %v, %v", held, err)
			}
			if n := e.pending(); n != 1 {
				t.Fatalf("%d moves in progress, want 1", n)
			}
			e.arrival("mark", "y.csv", []byte("another"), time.Now())
			var ee *ExistError
			if _, err := e.svc.Move(ctx, mark, "y.csv", "s", "raw/x.csv"); !errors.As(err, &ee) {
				t.Errorf("a second move to the path of a move in progress: %v, want an ExistError", err)
			}

			restarted := e.service(e.store)
			for range 2 { // the second changes nothing
				if err := restarted.Recover(ctx); err != nil {
					t.Fatalf("Recover: %v", err)
				}
			}
			files, err := restarted.Files(ctx, "mark", "s")
			if err != nil || len(files) != 1 || files[0].Path != "raw/x.csv" || files[0].SHA256 != f.SHA256 || files[0].MovedBy != "mark" {
				t.Fatalf("after Recover, the share lists %+v, %v; want raw/x.csv with SHA-256 %s", files, err, f.SHA256)
			}
			if b := e.object("shares/s/raw/x.csv"); !bytes.Equal(b, data) {
				t.Errorf("share object = %q, want %q", b, data)
			}
			if b := e.object(f.Key); b != nil {
				t.Errorf("the Arrivals object is left: %q", b)
			}
			if n := e.pending(); n != 0 {
				t.Errorf("%d moves in progress after Recover", n)
			}
			e.consistent()
			if n := e.audits("arrival.move", "ok arrivals/mark/x.csv -> shares/s/raw/x.csv sha256="+f.SHA256); n != 1 {
				t.Errorf("%d audit records of the move, want 1", n)
			}
			if n := e.audits("arrival.move", "undone"); n != 0 {
				t.Errorf("%d moves undone, want none", n)
			}
		})
	}
}

// A move whose bytes cannot be moved is undone, whether Move or Recover
// finds out: the file is back in Arrivals and nothing is left behind.
func TestMoveUndone(t *testing.T) {
	ctx := context.Background()
	created := time.Date(2025, 1, 2, 3, 4, 5, 6, time.UTC)

	t.Run("bytes gone during the move", func(t *testing.T) {
		e := newEnv(t)
		e.project()
		f := e.arrival("mark", "x.csv", []byte("x"), created)
		// The object goes (as an expiring sweep deletes it) between the
		// record and the storage move.
		svc := e.service(&faultStore{Backend: e.store, move: func(ctx context.Context, src, dst string) error {
			must(t, e.store.Delete(ctx, src))
			return e.store.Move(ctx, src, dst)
		}})
		_, err := svc.Move(ctx, mark, "x.csv", "s", "x.csv")
		wantNotFound(t, "move of vanished bytes", err)
		if got, err := e.db.ArrivalByKey(ctx, f.Key); err != nil || got != f {
			t.Errorf("after the undo, the Arrival is %+v, %v; want %+v back", got, err, f)
		}
		if files, _ := e.db.ShareFiles(ctx, "s"); len(files) != 0 || e.pending() != 0 {
			t.Errorf("after the undo, the share lists %+v, %d moves in progress", files, e.pending())
		}
		if n := e.audits("arrival.move", "undone arrivals/mark/x.csv -> shares/s/x.csv: the file's bytes are gone"); n != 1 {
			t.Errorf("%d audited undos, want 1", n)
		}
		e.consistent()
	})

	t.Run("bytes gone before recovery", func(t *testing.T) {
		e := newEnv(t)
		e.project()
		f := e.arrival("mark", "x.csv", []byte("x"), created)
		crashing := e.service(&faultStore{Backend: e.store, move: func(context.Context, string, string) error { panic(crash{}) }})
		if _, _, crashed := moveCrashing(t, crashing, mark, "x.csv", "s", "x.csv"); !crashed {
			t.Fatal("no crash")
		}
		must(t, e.store.Delete(ctx, f.Key))
		must(t, e.service(e.store).Recover(ctx))
		if got, err := e.db.ArrivalByKey(ctx, f.Key); err != nil || got != f {
			t.Errorf("after the undo, the Arrival is %+v, %v; want %+v back", got, err, f)
		}
		if e.pending() != 0 {
			t.Error("the move is still in progress")
		}
		if n := e.audits("arrival.move", "undone"); n != 1 {
			t.Errorf("%d audited undos, want 1", n)
		}
		e.consistent()
	})

	t.Run("share key held by an unrecorded object", func(t *testing.T) {
		e := newEnv(t)
		e.project()
		f := e.arrival("mark", "x.csv", []byte("mine"), created)
		e.put("shares/s/x.csv", []byte("left behind by an older mftd"))
		_, err := e.svc.Move(ctx, mark, "x.csv", "s", "x.csv")
		var ee *ExistError
		if !errors.As(err, &ee) {
			t.Fatalf("move onto an unrecorded object: %v, want an ExistError", err)
		}
		if got, err := e.db.ArrivalByKey(ctx, f.Key); err != nil || got != f || !bytes.Equal(e.object(f.Key), []byte("mine")) {
			t.Errorf("after the undo, the Arrival is %+v, %v; want %+v back with its bytes", got, err, f)
		}
		if b := e.object("shares/s/x.csv"); !bytes.Equal(b, []byte("left behind by an older mftd")) {
			t.Errorf("the unrecorded object was touched: %q", b)
		}
		if files, _ := e.db.ShareFiles(ctx, "s"); len(files) != 0 || e.pending() != 0 {
			t.Errorf("after the undo, the share lists %+v, %d moves in progress", files, e.pending())
		}
		e.consistent("shares/s/x.csv")
	})

	t.Run("share key held by an unrecorded copy of the same bytes", func(t *testing.T) {
		e := newEnv(t)
		e.project()
		f := e.arrival("mark", "x.csv", []byte("mine"), created)
		e.put("shares/s/x.csv", []byte("mine"))
		got, err := e.svc.Move(ctx, mark, "x.csv", "s", "x.csv")
		if err != nil || got.SHA256 != f.SHA256 {
			t.Fatalf("move onto a copy of the same bytes = %+v, %v", got, err)
		}
		if b := e.object(f.Key); b != nil {
			t.Errorf("the Arrivals object is left: %q", b)
		}
		e.consistent()
	})
}

// The retention sweep cannot delete a file that a move has recorded, so it
// cannot race a move into losing or orphaning the bytes: the Arrival left
// the database before its bytes move.
func TestSweepDuringMove(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t)
	e.project()
	old := time.Now().Add(-48 * time.Hour) // past retention
	e.settings.Store(policy.Settings{ArrivalsRetention: 24 * time.Hour})
	sweeper, err := ingest.New(ingest.Config{CheckpointBytes: 1 << 20, BufferSize: 1 << 16, Buffers: 2, Settings: e.settings, Workers: 1},
		zap.NewNop(), e.db, e.store, nil)
	if err != nil {
		t.Fatal(err)
	}
	sweep := func() {
		t.Helper()
		if err := sweeper.Sweep(ctx); err != nil {
			t.Fatalf("Sweep: %v", err)
		}
	}

	// The sweep is armed: an expired Arrival that nobody moves goes.
	e.arrival("mark", "w.csv", []byte("w data"), old)

	// A sweep between the record and the storage move.
	f := e.arrival("mark", "x.csv", []byte("x data"), old)
	svc := e.service(&faultStore{Backend: e.store, move: func(ctx context.Context, src, dst string) error {
		sweep()
		return e.store.Move(ctx, src, dst)
	}})
	if _, err := svc.Move(ctx, mark, "x.csv", "s", "x.csv"); err != nil {
		t.Fatalf("move with a sweep in between: %v", err)
	}

	// Sweeps while a crashed move waits for recovery; and Recover does not
	// take over a move under way.
	g := e.arrival("mark", "y.csv", []byte("y data"), old)
	crashing := e.service(&faultStore{Backend: e.store, move: func(context.Context, string, string) error { panic(crash{}) }})
	if _, _, crashed := moveCrashing(t, crashing, mark, "y.csv", "s", "y.csv"); !crashed {
		t.Fatal("no crash")
	}
	sweep()
	h := e.arrival("mark", "z.csv", []byte("z data"), time.Now())
	restarted := e.service(e.store)
	var during error
	restarted.store = &faultStore{Backend: e.store, move: func(ctx context.Context, src, dst string) error {
		if src == h.Key {
			during = restarted.Recover(ctx) // finishes y.csv, leaves z.csv to its Move
		}
		return e.store.Move(ctx, src, dst)
	}}
	if _, err := restarted.Move(ctx, mark, "z.csv", "s", "z.csv"); err != nil || during != nil {
		t.Fatalf("move with Recover in between: %v; Recover: %v", err, during)
	}
	sweep()

	files, err := e.db.ShareFiles(ctx, "s")
	if err != nil || len(files) != 3 {
		t.Fatalf("the share lists %+v, %v; want x.csv, y.csv and z.csv", files, err)
	}
	for i, want := range []state.File{f, g, h} {
		if files[i].SHA256 != want.SHA256 {
			t.Errorf("%s: SHA-256 %s, want %s", files[i].Path, files[i].SHA256, want.SHA256)
		}
	}
	if n := e.audits("arrival.expire", ""); n != 1 {
		t.Errorf("the sweeps expired %d files, want 1 (w.csv, not moved)", n)
	}
	if fs, _ := e.db.FilesByOwner(ctx, "mark"); len(fs) != 0 {
		t.Errorf("Arrivals left: %+v", fs)
	}
	if e.pending() != 0 {
		t.Error("moves still in progress")
	}
	e.consistent()
}

// Recover with no storage fails rather than undoing anything.
func TestRecoverWithoutStore(t *testing.T) {
	e := newEnv(t)
	if err := e.service(nil).Recover(context.Background()); err == nil {
		t.Error("Recover without a store: no error")
	}
}
