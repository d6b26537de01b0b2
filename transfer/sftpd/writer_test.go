package sftpd

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"hash/fnv"
	"io"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

const block = 32 << 10

// rig is one writer fed directly (no request server), so a test controls
// the exact order of writes. Ingest reads in its own goroutine.
type rig struct {
	ing  *memIngest
	tree *tree
	w    *writer
	id   string
	file []byte // the whole file the writes come from, durable prefix included
}

func newRig(t testing.TB, window int64, file []byte, durable int, setup ...func(*rig)) *rig {
	return newRigMax(t, window, 1<<40, file, durable, setup...)
}

// newRigMax builds a rig; setup runs before the writer starts.
func newRigMax(t testing.TB, window, maxSize int64, file []byte, durable int, setup ...func(*rig)) *rig {
	t.Helper()
	ing := newMemIngest()
	id := ing.addPartial("f.bin", file[:durable], time.Now())
	c := &conn{
		token: treeToken, user: treeUser, remote: treeRemote, auth: &sessionAuth{}, ing: ing,
		cfg: Config{Settings: liveMax(maxSize), Window: window}, log: zap.NewNop(),
	}
	tr := newTree(c)
	tr.reorderWait = 0
	tr.earlyWait = 0 // early writes are copied at once unless a test says otherwise
	unlock, ok := ing.TryLock(id)
	if !ok {
		t.Fatal("lock")
	}
	r := &rig{ing: ing, tree: tr, id: id, file: file}
	for _, f := range setup {
		f(r)
	}
	r.w = tr.startWriter(context.Background(), state.Upload{ID: id, Filename: "f.bin", Offset: int64(durable)}, unlock)
	t.Cleanup(func() { _ = r.w.Close() }) // a no-op after the test's own Close
	return r
}

// write writes file[off:off+n] at off.
func (r *rig) write(off, n int) error {
	m, err := r.w.WriteAt(r.file[off:off+n], int64(off))
	if err == nil && m != n {
		return errors.New("short write without an error")
	}
	return err
}

func (r *rig) received() []byte {
	_, b := r.ing.upload(r.id)
	return b
}

// completed asserts that Close succeeded and ingest received exactly the file.
func (r *rig) completed(t *testing.T) {
	t.Helper()
	if err := r.w.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	if got := r.received(); !bytes.Equal(got, r.file) {
		t.Fatalf("ingest received %d bytes that are not the %d-byte file", len(got), len(r.file))
	}
	if got := r.ing.callsOf("finish"); len(got) != 1 {
		t.Fatalf("finish calls = %v", got)
	}
	if r.ing.locked(r.id) {
		t.Fatal("lock held after close")
	}
}

// keptPartial asserts that Close failed (or was a teardown), nothing was
// completed, and ingest holds a prefix of the file.
func (r *rig) keptPartial(t *testing.T, wantPrefix int) {
	t.Helper()
	if got := r.ing.callsOf("finish"); len(got) != 0 {
		t.Fatalf("finish calls = %v", got)
	}
	u, got := r.ing.upload(r.id)
	if u.Status != state.StatusUploading {
		t.Fatalf("status %s", u.Status)
	}
	if !bytes.Equal(got, r.file[:len(got)]) {
		t.Fatal("ingest received bytes that are not a prefix of the file")
	}
	if wantPrefix >= 0 && len(got) != wantPrefix {
		t.Fatalf("ingest kept %d bytes; want %d", len(got), wantPrefix)
	}
	if r.ing.locked(r.id) {
		t.Fatal("lock held after close")
	}
}

func permutation(n int, seed uint64) []int {
	return rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)).Perm(n)
}

func TestWriterInOrder(t *testing.T) {
	r := newRig(t, 256<<10, randomBytes(t, 10*block+5), 0)
	for off := 0; off < len(r.file); off += block {
		if err := r.write(off, min(block, len(r.file)-off)); err != nil {
			t.Fatal(err)
		}
	}
	r.completed(t)
}

func TestWriterReversedWithinWindow(t *testing.T) {
	const n = 32
	r := newRig(t, n*block, randomBytes(t, n*block), 0)
	for i := n - 1; i >= 0; i-- {
		if err := r.write(i*block, block); err != nil {
			t.Fatalf("block %d: %v", i, err)
		}
		if r.w.chunks > r.w.maxChunks {
			t.Fatalf("%d chunks in use; the window allows %d", r.w.chunks, r.w.maxChunks)
		}
	}
	r.completed(t)
}

func TestWriterPermutations(t *testing.T) {
	const n = 64
	for seed := range uint64(25) {
		r := newRig(t, n*block, randomBytes(t, n*block), 0)
		for _, i := range permutation(n, seed) {
			if err := r.write(i*block, block); err != nil {
				t.Fatalf("seed %d block %d: %v", seed, i, err)
			}
		}
		r.completed(t)
	}
}

// TestWriterResume: writes continue at the durable offset a resumed file
// was opened at, in any order within the window.
func TestWriterResume(t *testing.T) {
	file := randomBytes(t, 20*block+100)
	r := newRig(t, 1<<20, file, 5*block+100)
	for _, i := range permutation(15, 7) {
		off := 5*block + 100 + i*block
		if err := r.write(off, block); err != nil {
			t.Fatal(err)
		}
	}
	r.completed(t)
	if got := r.ing.callsOf("write"); len(got) != 1 {
		t.Errorf("write calls = %v", got)
	}
}

func TestWriterRefusals(t *testing.T) {
	tests := []struct {
		name    string
		durable int
		writes  [][2]int // off, n: all but the last succeed; the last is refused
		kept    int      // bytes ingest keeps
	}{
		{"before the durable offset", 3 * block, [][2]int{{3*block - 1, block}}, 3 * block},
		{"at 0 on resume", 3 * block, [][2]int{{0, block}}, 3 * block},
		{"duplicate of a passed write", 0, [][2]int{{0, block}, {0, block}}, block},
		{"overlaps a passed write", 0, [][2]int{{0, block}, {block - 1, block}}, block},
		{"duplicate of a held write", 0, [][2]int{{2 * block, block}, {2 * block, block}}, 0},
		{"starts inside a held write", 0, [][2]int{{2 * block, block}, {2*block + 10, block}}, 0},
		{"ends inside a held write", 0, [][2]int{{2 * block, block}, {block + 10, block}}, 0},
		{"covers a held write", 0, [][2]int{{2 * block, 10}, {block, 2 * block}}, 0},
		{"in order into a held write", 0, [][2]int{{block, block}, {0, block + 1}}, 0},
		{"beyond the window", 0, [][2]int{{4*block + 1, block}}, 0},
		{"held bytes beyond the window", 0, [][2]int{{block, block}, {2 * block, block}, {3 * block, block}, {4 * block, block}}, 0},
		{"negative offset", 0, [][2]int{{0, block}, {-1, 1}}, block},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			file := randomBytes(t, 16*block)
			r := newRig(t, 4*block, file, tt.durable)
			for i, wr := range tt.writes {
				var err error
				if wr[0] < 0 {
					_, err = r.w.WriteAt(file[:wr[1]], int64(wr[0]))
				} else {
					err = r.write(wr[0], wr[1])
				}
				last := i == len(tt.writes)-1
				switch {
				case !last && err != nil:
					t.Fatalf("write %d: %v", i, err)
				case last && err == nil:
					t.Fatalf("write %d (%d bytes at %d) succeeded", i, wr[1], wr[0])
				case last:
					var se *statusError
					if !errors.As(err, &se) {
						t.Fatalf("refusal %v is not an answer for the client", err)
					}
				}
			}
			// The refusal is sticky: even a write that would fit fails.
			if err := r.write(r.w.nextOffset(), 1); err == nil {
				t.Error("a write after the refusal succeeded")
			}
			if err := r.w.Close(); err == nil {
				t.Error("close after a refusal succeeded")
			}
			r.keptPartial(t, tt.kept)
		})
	}
}

// nextOffset is the writer's next in-order offset.
func (w *writer) nextOffset() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return int(w.next)
}

func TestWriterMaxFileSize(t *testing.T) {
	file := randomBytes(t, 4*block)
	r := newRigMax(t, 1<<20, 3*block+5, file, 0)
	if err := r.write(0, 3*block); err != nil {
		t.Fatal(err)
	}
	err := r.write(3*block, block)
	if err == nil || !strings.Contains(err.Error(), "maximum file size") {
		t.Fatalf("write past the limit: %v", err)
	}
	if _, err := r.w.WriteAt(file[:1], 1<<62); err == nil {
		t.Fatal("a write near the largest offset succeeded")
	}
	if err := r.w.Close(); err == nil {
		t.Error("close succeeded")
	}
	r.keptPartial(t, 3*block)
}

// TestWriterWaitsForGap: a write beyond the window waits for the gap
// rather than failing at once, and succeeds when the gap fills.
func TestWriterWaitsForGap(t *testing.T) {
	r := newRig(t, 2*block, randomBytes(t, 4*block), 0, func(r *rig) { r.tree.reorderWait = 10 * time.Second })
	if err := r.write(block, block); err != nil { // held
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- r.write(3*block, block) }() // 4 blocks past what ingest read: waits
	select {
	case err := <-done:
		t.Fatalf("the write beyond the window returned at once: %v", err)
	case <-time.After(50 * time.Millisecond):
	}
	if err := r.write(0, block); err != nil { // fills the gap
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatalf("the waiting write: %v", err)
	}
	if err := r.write(2*block, block); err != nil {
		t.Fatal(err)
	}
	r.completed(t)
}

// TestWriterGapNeverFills: a write beyond the window is refused once
// nothing has moved for reorderWait; it does not hang.
func TestWriterGapNeverFills(t *testing.T) {
	// Nothing moves after the writer starts, so reorderWait counts from
	// its start, not from the refused write's.
	start := time.Now()
	r := newRig(t, 2*block, randomBytes(t, 4*block), 0, func(r *rig) { r.tree.reorderWait = 100 * time.Millisecond })
	if err := r.write(block, block); err != nil {
		t.Fatal(err)
	}
	err := r.write(3*block, block)
	if err == nil || !strings.Contains(err.Error(), "too far ahead") {
		t.Fatalf("write beyond the window: %v", err)
	}
	if d := time.Since(start); d < 100*time.Millisecond || d > 5*time.Second {
		t.Errorf("refused after %v; want about 100ms", d)
	}
	if err := r.w.Close(); err == nil {
		t.Error("close succeeded")
	}
	r.keptPartial(t, 0)
}

// TestWriterBackpressure: with a slow ingest, concurrent writers in a
// shuffled order neither fail nor hold more than the window.
func TestWriterBackpressure(t *testing.T) {
	const n = 128
	r := newRig(t, 8*block, randomBytes(t, n*block), 0, func(r *rig) {
		r.tree.reorderWait = 10 * time.Second
		r.tree.earlyWait = 2 * time.Millisecond // some early writes wait, some are copied
		r.ing.readDelay = 20 * time.Microsecond
		r.ing.readSize = 4 << 10
	})
	offs := make(chan int)
	go func() {
		defer close(offs)
		for base := 0; base < n; base += 8 {
			for _, i := range permutation(8, uint64(base)) {
				offs <- base + i
			}
		}
	}()
	errs := make(chan error, 8)
	peak := make(chan int, 8)
	for range 8 {
		go func() {
			most := 0
			for i := range offs {
				if err := r.write(i*block, block); err != nil {
					errs <- err
				}
				r.w.mu.Lock()
				most = max(most, r.w.chunks)
				r.w.mu.Unlock()
			}
			peak <- most
			errs <- nil
		}()
	}
	for range 8 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
		if p := <-peak; p > r.w.maxChunks {
			t.Fatalf("%d chunks in use; the window allows %d", p, r.w.maxChunks)
		}
	}
	r.completed(t)
}

func TestWriterGapAtClose(t *testing.T) {
	r := newRig(t, 1<<20, randomBytes(t, 4*block), 0)
	if err := r.write(0, block); err != nil {
		t.Fatal(err)
	}
	if err := r.write(2*block, block); err != nil {
		t.Fatal(err)
	}
	err := r.w.Close()
	if err == nil || !strings.Contains(err.Error(), "gap") {
		t.Fatalf("close with a gap: %v", err)
	}
	r.keptPartial(t, block)
	if r.w.chunks != 0 {
		t.Errorf("%d chunks still in use", r.w.chunks)
	}
}

// TestWriterTeardown: the request server reports a lost connection with
// TransferError before it closes the file: no completion, bytes kept.
func TestWriterTeardown(t *testing.T) {
	r := newRig(t, 1<<20, randomBytes(t, 4*block), 0)
	if err := r.write(0, block+7); err != nil {
		t.Fatal(err)
	}
	if err := r.write(2*block, block); err != nil { // held, beyond a gap
		t.Fatal(err)
	}
	r.w.TransferError(io.ErrUnexpectedEOF)
	_ = r.w.Close()
	r.keptPartial(t, block+7)
}

func TestWriterIngestFails(t *testing.T) {
	r := newRig(t, 1<<20, randomBytes(t, 8*block), 0, func(r *rig) { r.ing.failAt = 2*block + 3 })
	var err error
	for off := 0; off < len(r.file) && err == nil; off += block {
		err = r.write(off, block)
	}
	if err == nil || !strings.Contains(err.Error(), "temporarily unavailable") {
		t.Fatalf("write after the failure: %v", err)
	}
	if err := r.w.Close(); err == nil {
		t.Error("close succeeded")
	}
	r.keptPartial(t, 2*block+3)
}

// FuzzReorder: any order and sizes of writes either deliver exactly the
// file to ingest and complete it, or are refused cleanly: an answer for
// the client, nothing completed, and ingest holding a prefix of the file.
// The writer never holds more than its window.
func FuzzReorder(f *testing.F) {
	f.Add([]byte{0x03, 0x00, 0x40, 0x00, 0x7f, 0x7f, 0x7f, 0x7f})
	f.Add([]byte{0x07, 0x05, 0xff, 0xff, 0x01, 0x02, 0x03, 0xff, 0x80})
	f.Add([]byte{0x80, 0x00, 0x10, 0x00, 0x20, 0x20, 0x20, 0x20, 0x20})
	f.Add([]byte{0x41, 0x10, 0x08, 0x00, 0x00, 0x00, 0x00})
	f.Add([]byte{0x00, 0x00, 0x00, 0x01})
	f.Fuzz(func(t *testing.T, data []byte) {
		var h [8]byte
		sum := fnv.New64a()
		sum.Write(data)
		binary.LittleEndian.PutUint64(h[:], sum.Sum64())
		rng := rand.New(rand.NewPCG(binary.LittleEndian.Uint64(h[:]), 1))
		at := func(i int) int {
			if i < len(data) {
				return int(data[i])
			}
			return 0
		}
		window := int64(1+at(0)%8) * block
		size := 1 + (at(2)<<8|at(3))*4 // up to 256 KiB
		durable := min(at(1)*97, size)
		file := make([]byte, size)
		for i := range file {
			file[i] = byte(rng.Uint32())
		}
		// Cut [durable, size) into writes of fuzzed sizes, in a fuzzed order.
		type wr struct{ off, n int }
		var writes []wr
		for off, k := durable, 4; off < size; k++ {
			n := block
			if k < len(data) {
				n = 1 + at(k)*257
			}
			n = min(n, size-off)
			writes = append(writes, wr{off, n})
			off += n
		}
		rng.Shuffle(len(writes), func(i, j int) { writes[i], writes[j] = writes[j], writes[i] })
		faulty := false
		if at(0)&0x80 != 0 && len(writes) > 0 { // the same write twice
			writes = slices.Insert(writes, rng.IntN(len(writes)+1), writes[rng.IntN(len(writes))])
			faulty = true
		}
		if at(0)&0x40 != 0 && durable > 0 { // a write before the durable offset
			writes = slices.Insert(writes, rng.IntN(len(writes)+1), wr{durable - 1, min(2, size-durable+1)})
			faulty = true
		}

		r := newRig(t, window, file, durable)
		refused := false
		for _, w := range writes {
			err := r.write(w.off, w.n)
			if err != nil {
				var se *statusError
				if !errors.As(err, &se) {
					t.Fatalf("refusal %v is not an answer for the client", err)
				}
				refused = true
			} else if refused {
				t.Fatalf("a write (%d at %d) succeeded after a refusal", w.n, w.off)
			}
			if r.w.chunks > r.w.maxChunks {
				t.Fatalf("%d chunks in use; the window allows %d", r.w.chunks, r.w.maxChunks)
			}
		}
		if faulty && !refused {
			t.Fatal("a duplicate or rewinding write was accepted")
		}
		if refused {
			if err := r.w.Close(); err == nil {
				t.Fatal("close after a refusal succeeded")
			}
			r.keptPartial(t, -1)
			return
		}
		r.completed(t)
	})
}

// BenchmarkWriter: 256 KiB writes (OpenSSH -B 261120 -R 64) from the
// request server's 8 workers, in the order they happen to run, into an
// ingest that reads 1 MiB at a time.
func BenchmarkWriter(b *testing.B) {
	const size = 256 << 10
	file := make([]byte, size)
	r := newRig(b, defaultWindow, file, 0, func(r *rig) {
		r.ing.discard = true
		r.ing.readSize = 1 << 20
		r.tree.reorderWait = 10 * time.Second
	})
	b.SetBytes(size)
	offs := make(chan int64, 64)
	errs := make(chan error, 8)
	for range 8 {
		go func() {
			var err error
			for off := range offs {
				if err == nil {
					_, err = r.w.WriteAt(file, off)
				}
			}
			errs <- err
		}()
	}
	b.ResetTimer()
	for i := range b.N {
		offs <- int64(i) * size
	}
	close(offs)
	for range 8 {
		if err := <-errs; err != nil {
			b.Fatal(err)
		}
	}
	if err := r.w.Close(); err != nil {
		b.Fatal(err)
	}
}

// A size set on the open file: alone (OpenSSH's interrupted reput) it keeps
// the partial; with times (lftp's finish, which may arrive before its last
// writes) it completes the upload if it is every byte received by the close.
func TestWriterSizeSetstat(t *testing.T) {
	file := randomBytes(t, 4*block+3)
	writeAll := func(r *rig, upTo int) {
		t.Helper()
		for off := 0; off < upTo; off += block {
			if err := r.write(off, min(block, upTo-off)); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Run("size alone", func(t *testing.T) {
		r := newRig(t, 256<<10, file, 0)
		writeAll(r, len(file))
		r.w.giveUp(int64(len(file)), false)
		_ = r.w.Close()
		r.keptPartial(t, len(file))
	})
	t.Run("size with times, before the last write", func(t *testing.T) {
		r := newRig(t, 256<<10, file, 0)
		writeAll(r, 2*block)
		r.w.giveUp(int64(len(file)), true)
		if err := r.write(2*block, len(file)-2*block); err != nil {
			t.Fatal(err)
		}
		r.completed(t)
	})
	t.Run("size with times, short of the bytes", func(t *testing.T) {
		r := newRig(t, 256<<10, file, 0)
		writeAll(r, len(file))
		r.w.giveUp(int64(2*block), true)
		_ = r.w.Close()
		r.keptPartial(t, len(file))
	})
}

// A write just ahead of the next offset waits for its predecessor (another
// goroutine of pkg/sftp's is handling it) and then passes without a copy.
func TestWriterEarlyWriteWaits(t *testing.T) {
	r := newRig(t, 8*block, randomBytes(t, 2*block), 0, func(r *rig) { r.tree.earlyWait = time.Minute })
	done := make(chan error, 1)
	go func() { done <- r.write(block, block) }()
	// Give it time to reach its wait (nothing observable to poll: it waits
	// with nothing held); had it not waited, it would be held by now.
	time.Sleep(100 * time.Millisecond)
	r.w.mu.Lock()
	held := len(r.w.ahead)
	r.w.mu.Unlock()
	if held != 0 {
		t.Fatal("the early write was copied into the window at once")
	}
	if err := r.write(0, block); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("the early write still waits after its predecessor passed")
	}
	r.w.mu.Lock()
	copied := len(r.w.free) + r.w.chunks
	r.w.mu.Unlock()
	if copied != 0 {
		t.Errorf("%d chunks were used: the early write was copied instead of passed", copied)
	}
	r.completed(t)
}

// liveMax is settings with max_file_size n.
func liveMax(n int64) *policy.Live {
	return policy.NewLive(policy.Settings{Limits: policy.Limits{MaxFileSize: n}})
}
