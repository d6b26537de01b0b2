package storagetest

import (
	"bytes"
	"context"
	"errors"
	"io"
	"sync"
	"testing"
	"testing/iotest"

	"github.com/mftd/mftd/storage"
)

func testRoundTrip(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "roundtrip")
	p := data(1, 1<<20+17)
	u := create(t, b, k)
	write(t, u, p, nil)
	commit(t, u, k, int64(len(p)))
	wantObject(t, b, k, p)
}

func testZeroLength(t *testing.T, b storage.Backend) {
	for _, withChunk := range []bool{false, true} {
		k := key(t, storage.PrefixUploads, "empty")
		if withChunk {
			k = key(t, storage.PrefixUploads, "empty-chunk")
		}
		u := create(t, b, k)
		if withChunk {
			write(t, u, nil, bytes.NewReader(nil))
		}
		commit(t, u, k, 0)
		wantObject(t, b, k, []byte{})
		if got := read(t, b, k, 0, 0); len(got) != 0 {
			t.Errorf("Open(%q, 0, 0) read %d bytes, want 0", k, len(got))
		}
	}
}

func testWrongOffset(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "offset")
	first, second := data(2, 10), data(3, 20)
	u := create(t, b, k)
	write(t, u, first, nil)
	for _, off := range []int64{-1, 0, 5, 9, 11, 1 << 40} {
		n, err := u.WriteChunk(t.Context(), off, bytes.NewReader(data(4, 7)))
		if !errors.Is(err, storage.ErrOffsetMismatch) || n != 0 {
			t.Errorf("WriteChunk(%d) at offset 10 = %d, %v; want 0, ErrOffsetMismatch", off, n, err)
		}
		if got := u.Offset(); got != 10 {
			t.Fatalf("after WriteChunk(%d) was refused: Offset() = %d, want 10", off, got)
		}
	}
	write(t, u, second, nil)
	commit(t, u, k, 30)
	wantObject(t, b, k, append(first, second...))
}

// testSeveralChunks writes chunks of awkward sizes through readers that do
// and do not implement io.WriterTo and return data in small pieces.
func testSeveralChunks(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "chunks")
	chunks := []struct {
		p []byte
		r func([]byte) io.Reader
	}{
		{data(5, 1), nil},
		{nil, nil},
		{data(6, 300), func(p []byte) io.Reader { return iotest.OneByteReader(bytes.NewReader(p)) }},
		{data(7, 64<<10+1), func(p []byte) io.Reader { return iotest.HalfReader(bytes.NewReader(p)) }},
		{data(8, 100<<10), func(p []byte) io.Reader { return iotest.DataErrReader(bytes.NewReader(p)) }},
		{data(9, 1<<20+3), func(p []byte) io.Reader { return struct{ io.Reader }{bytes.NewReader(p)} }},
		{data(10, 3), nil},
	}
	u := create(t, b, k)
	var want []byte
	for _, c := range chunks {
		var r io.Reader
		if c.r != nil {
			r = c.r(c.p)
		}
		write(t, u, c.p, r)
		want = append(want, c.p...)
	}
	commit(t, u, k, int64(len(want)))
	wantObject(t, b, k, want)
}

// testLargeChunks crosses the 5 MiB minimum part size of S3 multipart
// uploads from both sides, with a Resume in between.
func testLargeChunks(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "large")
	sizes := []int{5<<20 + 1, 5<<20 - 1, 7, 6 << 20}
	var want []byte
	u := create(t, b, k)
	for i, n := range sizes {
		p := data(uint64(20+i), n)
		write(t, u, p, nil)
		want = append(want, p...)
		if i == 1 {
			u = resume(t, b, k, u.Handle(), int64(len(want)))
		}
	}
	commit(t, u, k, int64(len(want)))
	wantObject(t, b, k, want)
}

// testReaderFailsMidway: a client connection that breaks mid-chunk. What
// became durable is counted, Offset agrees, and the upload continues from
// there, in the same Upload or after a Resume from its Handle.
func testReaderFailsMidway(t *testing.T, b storage.Backend) {
	for _, tc := range []struct {
		name   string
		plain  bool // hide io.WriterTo
		resume bool
	}{
		{"WriterTo", false, false},
		{"WriterToResume", false, true},
		{"Plain", true, false},
		{"PlainResume", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := key(t, storage.PrefixUploads, "midway-"+tc.name)
			head, p := data(30, 1000), data(31, 300<<10)
			sent := 200 << 10
			u := create(t, b, k)
			write(t, u, head, nil)
			n, err := u.WriteChunk(t.Context(), 1000, errReader(p[:sent], errBoom, tc.plain))
			if !errors.Is(err, errBoom) {
				t.Fatalf("WriteChunk from a failing reader: err = %v, want errBoom", err)
			}
			if n < 0 || n > int64(sent) {
				t.Fatalf("WriteChunk from a reader that failed after %d bytes = %d", sent, n)
			}
			if got := u.Offset(); got != 1000+n {
				t.Fatalf("after WriteChunk = %d from 1000: Offset() = %d, want %d", n, got, 1000+n)
			}
			if tc.resume {
				u = resume(t, b, k, u.Handle(), 1000+n)
			}
			write(t, u, p[n:], nil)
			commit(t, u, k, int64(len(head)+len(p)))
			wantObject(t, b, k, append(head, p...))
		})
	}

	t.Run("AtOnce", func(t *testing.T) {
		k := key(t, storage.PrefixUploads, "midway-at-once")
		head := data(32, 50)
		u := create(t, b, k)
		write(t, u, head, nil)
		n, err := u.WriteChunk(t.Context(), 50, iotest.ErrReader(errBoom))
		if !errors.Is(err, errBoom) || n != 0 {
			t.Fatalf("WriteChunk from a reader that fails at once = %d, %v; want 0, errBoom", n, err)
		}
		if got := u.Offset(); got != 50 {
			t.Fatalf("Offset() = %d, want 50", got)
		}
		commit(t, u, k, 50)
		wantObject(t, b, k, head)
	})
}

// testCancelledContext: a WriteChunk under a cancelled context fails, and
// what it reports as durable is what the upload continues from.
func testCancelledContext(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "cancelled")
	head, p := data(40, 100), data(41, 64<<10)
	u := create(t, b, k)
	write(t, u, head, nil)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	n, err := u.WriteChunk(ctx, 100, bytes.NewReader(p))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteChunk with a cancelled context: err = %v, want context.Canceled", err)
	}
	if got := u.Offset(); got != 100+n || n < 0 || n > int64(len(p)) {
		t.Fatalf("WriteChunk with a cancelled context = %d; Offset() = %d", n, got)
	}
	write(t, u, p[n:], nil)
	commit(t, u, k, int64(len(head)+len(p)))
	wantObject(t, b, k, append(head, p...))
}

// testResumeOlderHandle: Resume restores exactly the state a handle
// describes, discarding everything written after it, however much that is.
func testResumeOlderHandle(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "older")
	a, bb, c := data(50, 4000), data(51, 70<<10), data(52, 5000)
	u := create(t, b, k)
	write(t, u, a, nil)
	h1 := bytes.Clone(u.Handle())
	write(t, u, bb, nil)
	h2 := u.Handle()

	// The newest handle loses nothing; an older one drops what came after.
	_ = resume(t, b, k, h2, int64(len(a)+len(bb)))
	u = resume(t, b, k, h1, int64(len(a)))
	write(t, u, c, nil)
	commit(t, u, k, int64(len(a)+len(c)))
	wantObject(t, b, k, append(bytes.Clone(a), c...))

	// The handle of a new upload rolls everything back.
	k0 := key(t, storage.PrefixUploads, "older-0")
	u = create(t, b, k0)
	h0 := u.Handle()
	write(t, u, a, nil)
	u = resume(t, b, k0, h0, 0)
	write(t, u, c, nil)
	commit(t, u, k0, int64(len(c)))
	wantObject(t, b, k0, c)
}

// testResumeMissing: the upload's object is gone (aborted, swept); its old
// handle cannot bring it back.
func testResumeMissing(t *testing.T, b storage.Backend) {
	for _, how := range []string{"abort", "delete"} {
		k := key(t, storage.PrefixUploads, "gone-"+how)
		u := create(t, b, k)
		write(t, u, data(60, 100), nil)
		h := u.Handle()
		switch how {
		case "abort":
			if err := u.Abort(t.Context()); err != nil {
				t.Fatalf("Abort(%q): %v", k, err)
			}
		case "delete":
			if err := b.Delete(t.Context(), k); err != nil {
				t.Fatalf("Delete(%q) of an upload in progress: %v", k, err)
			}
		}
		if _, err := b.Resume(t.Context(), k, h); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Resume(%q) after %s: err = %v, want ErrNotFound", k, how, err)
		}
	}
	never := key(t, storage.PrefixUploads, "never-created")
	u := create(t, b, key(t, storage.PrefixUploads, "some-upload"))
	if _, err := b.Resume(t.Context(), never, u.Handle()); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Resume(%q) of a key never created: err = %v, want ErrNotFound", never, err)
	}
}

func testResumeBadHandle(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "badhandle")
	u := create(t, b, k)
	write(t, u, data(61, 10), nil)
	if _, err := b.Resume(t.Context(), k, storage.Handle("\x00not a handle")); err == nil {
		t.Errorf("Resume(%q) with a garbage handle succeeded", k)
	}
}

func testCreateExisting(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "exists")
	p := data(70, 100)

	// An upload in progress holds its key.
	u := create(t, b, k)
	write(t, u, p[:40], nil)
	if _, err := b.Create(t.Context(), k); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("Create(%q) over an upload in progress: err = %v, want ErrExist", k, err)
	}
	write(t, u, p[40:], nil)
	commit(t, u, k, 100)

	// So does a committed object, which stays as it was.
	if _, err := b.Create(t.Context(), k); !errors.Is(err, storage.ErrExist) {
		t.Fatalf("Create(%q) over a committed object: err = %v, want ErrExist", k, err)
	}
	wantObject(t, b, k, p)
}

func testAbort(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "aborted")
	u := create(t, b, k)
	write(t, u, data(80, 5000), nil)
	if err := u.Abort(t.Context()); err != nil {
		t.Fatalf("Abort(%q): %v", k, err)
	}
	wantNotFound(t, b, k)
	if err := b.List(t.Context(), storage.PrefixUploads+"/", func(info storage.ObjectInfo) error {
		t.Errorf("List after Abort: %q", info.Key)
		return nil
	}); err != nil {
		t.Fatalf("List: %v", err)
	}
	// The key is free again.
	p := data(81, 10)
	put(t, b, k, p)
	wantObject(t, b, k, p)
}

// testConcurrentUploads runs independent uploads side by side (run with
// -race), each interleaving writes with the others.
func testConcurrentUploads(t *testing.T, b storage.Backend) {
	const uploads, chunks = 8, 4
	want := make([][]byte, uploads)
	keys := make([]string, uploads)
	for i := range uploads {
		keys[i] = key(t, storage.PrefixUploads, "concurrent-"+string(rune('a'+i)))
		want[i] = data(uint64(100+i), chunks*(32<<10)+i)
	}
	ctx := t.Context()
	var wg sync.WaitGroup
	for i := range uploads {
		wg.Go(func() {
			if err := upload(ctx, b, keys[i], want[i], chunks); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	for i := range uploads {
		wantObject(t, b, keys[i], want[i])
	}
}

// upload stores p at k in n chunks without calling t.Fatal, for goroutines.
func upload(ctx context.Context, b storage.Backend, k string, p []byte, n int) error {
	u, err := b.Create(ctx, k)
	if err != nil {
		return err
	}
	size := len(p) / n
	for off := 0; off < len(p); off += size {
		end := min(off+size, len(p))
		w, err := u.WriteChunk(ctx, int64(off), bytes.NewReader(p[off:end]))
		if err != nil {
			return err
		}
		if w != int64(end-off) || u.Offset() != int64(end) {
			return errors.New(k + ": short write")
		}
	}
	_, err = u.Commit(ctx)
	return err
}

// testConcurrentCreateSameKey: of racing Creates of one key, exactly one
// wins; the others get ErrExist.
func testConcurrentCreateSameKey(t *testing.T, b storage.Backend) {
	const racers = 8
	k := key(t, storage.PrefixUploads, "race")
	ctx := t.Context()
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		winners []storage.Upload
	)
	for range racers {
		wg.Go(func() {
			u, err := b.Create(ctx, k)
			switch {
			case err == nil:
				mu.Lock()
				winners = append(winners, u)
				mu.Unlock()
			case !errors.Is(err, storage.ErrExist):
				t.Errorf("racing Create(%q): err = %v, want nil or ErrExist", k, err)
			}
		})
	}
	wg.Wait()
	if len(winners) != 1 {
		t.Fatalf("%d racing Creates of one key succeeded, want exactly 1", len(winners))
	}
	p := data(90, 1000)
	write(t, winners[0], p, nil)
	commit(t, winners[0], k, 1000)
	wantObject(t, b, k, p)
}

// testCloseThenResume: Close keeps what is durable and releases the upload;
// it refuses further writes, Resume from its handle carries on, and Close
// after Commit changes nothing.
func testCloseThenResume(t *testing.T, b storage.Backend) {
	k := key(t, storage.PrefixUploads, "closed")
	a, c := data(60, 3000), data(61, 9000)
	u := create(t, b, k)
	write(t, u, a, nil)
	h := bytes.Clone(u.Handle())
	if err := u.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if err := u.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if n, err := u.WriteChunk(t.Context(), int64(len(a)), bytes.NewReader(c)); err == nil || n != 0 {
		t.Fatalf("WriteChunk after Close = %d, %v; want 0 and an error", n, err)
	}
	u = resume(t, b, k, h, int64(len(a)))
	write(t, u, c, nil)
	commit(t, u, k, int64(len(a)+len(c)))
	if err := u.Close(); err != nil {
		t.Fatalf("Close after Commit: %v", err)
	}
	wantObject(t, b, k, append(bytes.Clone(a), c...))
}
