package ingest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner/scannertest"
)

// The check stage's reads wait in proportion to what they read while an
// upload is receiving bytes, and not at all otherwise; the bytes are the same.
func TestPacedReaderAt(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for _, busy := range []bool{false, true} {
		var waited time.Duration
		p := &pacedReaderAt{
			ctx: context.Background(), r: bytes.NewReader(data), rate: 1 << 20,
			busy: func() bool { return busy },
			wait: func(_ context.Context, d time.Duration) { waited += d },
		}
		got, err := io.ReadAll(io.NewSectionReader(p, 0, int64(len(data))))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("busy=%v: read %d bytes, %v", busy, len(got), err)
		}
		want := time.Duration(0)
		if busy {
			want = time.Second // 1 MiB at 1 MiB/s
		}
		if d := waited - want; d < -time.Millisecond || d > time.Millisecond { // integer rounding per read
			t.Errorf("busy=%v: waited %v in all, want %v", busy, waited, want)
		}
	}
}

// A checkpoint interval replaced in the live settings (a configuration
// reload) applies to the next write: a storage failure then keeps the bytes
// up to the last checkpoint of the new interval.
func TestLiveCheckpoint(t *testing.T) {
	e := newEnv(t)
	fb := &flakyBackend{Backend: e.store(), budget: -1}
	cfg := testConfig
	cfg.Settings = policy.NewLive(policy.Settings{Limits: policy.Limits{MaxFileSize: testMaxSize}, IncompleteUploads: testTTL})
	s, err := New(cfg, zaptest.NewLogger(t), e.db, fb, scannertest.Builtin(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	next := *cfg.Settings.Load()
	next.CheckpointBytes = 16 << 10 // a quarter of testCheckpoint
	cfg.Settings.Store(next)
	data := randBytes(100_000, 7)
	u := create(t, s, "alice", "live.bin", int64(len(data)))
	fb.setBudget(40_000)
	off, err := write(s, u.ID, 0, bytes.NewReader(data))
	if !errors.Is(err, errDisk) || off != 32<<10 {
		t.Fatalf("Write = %d, %v; want the storage error at offset %d (two 16 KiB checkpoints; %d with the configured interval)", off, err, 32<<10, 0)
	}
}
