package sftpd

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/ingest"
)

// chunkSize is the size of the pooled buffers that hold writes received
// ahead of a gap (OpenSSH's default write size).
const chunkSize = 32 << 10

// Why a stream ends without completing; ingest sees them as the client's
// errors and keeps every byte received before them.
var (
	errGaveUp       = errors.New("sftpd: the client truncated the file; kept as a partial upload")
	errSessionEnded = errors.New("sftpd: the login's session ended")
)

// writer is one open /upload/ file: a pkg/sftp io.WriterAt that turns
// pipelined writes, which may arrive in any order, into the in-order byte
// stream of one long Ingest.Write call, so hashing and checkpointing happen
// in ingest exactly as for tus, and nothing is ever read back.
//
// A write at the next in-order offset is handed to Ingest without a copy:
// WriteAt returns once Ingest has read it (backpressure). A write further
// ahead is copied into pooled chunks and held until the gap before it
// fills. Held bytes stay within the reorder window: no held byte lies more
// than Config.Window past what Ingest has read, and the chunks holding them
// total at most Window. A write that does not fit waits while bytes move;
// once nothing has moved for reorderWait with Ingest starved for the gap,
// it is refused. So are writes that overlap bytes already written or held,
// start before the durable offset the file was resumed at, or pass
// limits.max_file_size. A refusal is sticky: every later write fails too,
// and the close that follows keeps the partial resumable rather than
// completing a file with a hole.
//
// Close after a clean SSH_FXP_CLOSE ends the stream, waits for Ingest.Write
// and completes the upload (Ingest.Finish). When the connection drops,
// pkg/sftp's RequestServer calls TransferError and then Close on every
// open file: the stream then ends with an error, Ingest keeps the bytes it
// received, and the partial stays resumable. The upload's lock is held from
// open until Close returns.
type writer struct {
	t      *tree
	ctx    context.Context // the open request's values, never cancelled: WriterAt and Close take no context
	id     string
	name   string
	path   string
	start  int64 // the durable offset at open
	max    int64 // limits.max_file_size
	unlock func()
	log    *zap.Logger

	maxChunks int
	lastAuth  atomic.Int64  // unix nanoseconds of the last session check
	written   chan struct{} // closed when Ingest.Write returned

	mu      sync.Mutex
	changed chan struct{} // closed and replaced whenever the state below changes
	next    int64         // end of the bytes queued for Ingest
	read    int64         // end of the bytes Ingest has read
	moved   time.Time     // when next or read last advanced
	queue   []*piece      // in-order bytes waiting for Ingest
	ahead   []held        // writes beyond next: sorted, disjoint
	chunks  int           // pooled chunks in use (held or queued)
	free    [][]byte      // idle pooled chunks
	err     error         // the first refusal or failure; every later write fails with it
	gaveUp  bool          // the client truncated the file: keep it partial
	// finalSize is a size the client set together with the file's times
	// (-1: none): the close completes the upload only if it is every byte
	// received.
	finalSize int64
	lost      error // the connection dropped (TransferError)
	end       error // set by Close: what the stream ends with after the queue
	stopped   bool  // Ingest.Write returned
	durable   int64 // Ingest.Write's result
	ingErr    error // Ingest.Write's error
}

// piece is a run of in-order bytes waiting for Ingest. chunk is the pooled
// buffer b lies in, or nil when b is the client's packet itself, which is
// valid only until its WriteAt returns (WriteAt waits until it is read).
type piece struct {
	b     []byte
	chunk []byte
}

// held is a write received ahead of next, copied into chunks.
type held struct {
	off, n int64
	pieces []*piece
}

// startWriter begins the Ingest.Write of upload u at its durable offset.
// The caller holds u's lock; the writer releases it when it closes.
func (t *tree) startWriter(ctx context.Context, u state.Upload, unlock func()) *writer {
	limit := t.c.limits().MaxFileSize
	now := time.Now()
	w := &writer{
		t: t, ctx: context.WithoutCancel(ctx),
		id: u.ID, name: u.Filename, path: "/" + dirUpload + "/" + u.Filename,
		start: u.Offset, max: limit, unlock: unlock, finalSize: -1,
		maxChunks: int(max(1, (t.window+chunkSize-1)/chunkSize)),
		written:   make(chan struct{}),
		changed:   make(chan struct{}),
		next:      u.Offset, read: u.Offset, moved: now,
	}
	w.log = t.log.With(zap.String("upload_id", u.ID), logPath(w.path))
	w.lastAuth.Store(now.UnixNano())
	go w.ingest()
	return w
}

// ingest runs the one Ingest.Write of this handle.
func (w *writer) ingest() {
	c := w.t.c
	off, err := c.ing.Write(w.ctx, ingest.WriteRequest{
		ID: w.id, Offset: w.start, Body: stream{w}, Length: -1,
		Actor: c.user, RemoteAddr: c.remote, Proto: "sftp",
	})
	w.mu.Lock()
	defer w.mu.Unlock()
	w.stopped = true
	w.durable, w.ingErr = off, err
	if w.end == nil && w.err == nil {
		// Ingest gave up while the client was still writing.
		if err == nil {
			err = errors.New("ingest: write returned before the end of the stream")
		}
		w.err = w.ingestFailure(err)
	}
	w.drop()
	w.notify()
	close(w.written)
}

// stream is the in-order body Ingest.Write reads.
type stream struct{ w *writer }

func (s stream) Read(p []byte) (int, error) { return s.w.readStream(p) }

func (w *writer) readStream(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for len(w.queue) == 0 {
		if w.end != nil {
			return 0, w.end
		}
		w.wait(time.Time{})
	}
	n := 0
	for n < len(p) && len(w.queue) > 0 {
		pc := w.queue[0]
		m := copy(p[n:], pc.b)
		n += m
		pc.b = pc.b[m:]
		if len(pc.b) == 0 {
			w.queue[0] = nil
			w.queue = w.queue[1:]
			w.release(pc)
		}
	}
	w.read += int64(n)
	w.moved = time.Now()
	w.notify()
	return n, nil
}

// WriteAt accepts one SFTP write. See writer.
func (w *writer) WriteAt(p []byte, off int64) (int, error) {
	if err := w.recheck(); err != nil {
		return 0, err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	end := off + int64(len(p))
	var (
		early     time.Time // until when an early write waits for its predecessor
		earlyDone bool      // that wait is over: copy it if it is still early
	)
	for {
		switch {
		case w.err != nil:
			return 0, w.err
		case w.end != nil || w.stopped:
			return 0, failure("the file is closed")
		case off < 0:
			return 0, w.refuse(off, len(p), failure("write at a negative offset"))
		case off > w.max-int64(len(p)):
			return 0, w.refuse(off, len(p), failure("the file would exceed the maximum file size of %d bytes", w.max))
		case len(p) == 0:
			return 0, nil
		case off < w.start:
			return 0, w.refuse(off, len(p), failure("write at offset %d: the first %d bytes were received before; resume at offset %d", off, w.start, w.start))
		case off < w.next || w.overlapsHeld(off, end):
			return 0, w.refuse(off, len(p), failure("write at offset %d overlaps data already written", off))
		case off == w.next:
			return w.pass(p)
		case end-w.read <= w.t.window && w.chunks+chunksFor(len(p)) <= w.maxChunks:
			// pkg/sftp hands a client's in-order writes to several
			// goroutines, so a write is often early only by the one
			// being handled next to it: wait a moment for it and pass
			// this one without a copy; copy it only if it stays early.
			if !earlyDone {
				if early.IsZero() {
					early = time.Now().Add(w.t.earlyWait)
				}
				// Either way the state may have changed while mu was
				// released: decide again.
				earlyDone = !w.wait(early)
				continue
			}
			w.hold(p, off)
			return len(p), nil
		}
		// Too far ahead for now. While Ingest has bytes to read, it makes
		// room; once it waits for the gap, only the gap helps.
		var deadline time.Time
		if len(w.queue) == 0 {
			deadline = w.moved.Add(w.t.reorderWait)
		}
		if !w.wait(deadline) {
			return 0, w.refuse(off, len(p), failure("write at offset %d is too far ahead of the data received in order (offset %d; reorder window %d bytes)", off, w.next, w.t.window))
		}
	}
}

// pass queues the in-order p, and the held writes it makes contiguous, and
// waits until Ingest has read them. The caller holds mu.
func (w *writer) pass(p []byte) (int, error) {
	w.queue = append(w.queue, &piece{b: p})
	w.next += int64(len(p))
	for len(w.ahead) > 0 && w.ahead[0].off == w.next {
		h := w.ahead[0]
		w.ahead[0] = held{}
		w.ahead = w.ahead[1:]
		w.queue = append(w.queue, h.pieces...)
		w.next += h.n
	}
	target := w.next
	w.moved = time.Now()
	w.notify()
	for w.read < target && !w.stopped {
		w.wait(time.Time{})
	}
	if w.read < target {
		// Ingest stopped first; drop already took p out of the queue.
		if w.err == nil {
			return 0, failure("the upload failed")
		}
		return 0, w.err
	}
	return len(p), nil
}

// hold copies p, written at off ahead of next, into pooled chunks. The
// caller holds mu and checked that it fits.
func (w *writer) hold(p []byte, off int64) {
	h := held{off: off, n: int64(len(p)), pieces: make([]*piece, 0, chunksFor(len(p)))}
	for rest := p; len(rest) > 0; {
		var c []byte
		if k := len(w.free); k > 0 {
			c, w.free = w.free[k-1], w.free[:k-1]
		} else {
			c = make([]byte, chunkSize)
		}
		w.chunks++
		m := copy(c, rest)
		rest = rest[m:]
		h.pieces = append(h.pieces, &piece{b: c[:m], chunk: c})
	}
	i, _ := slices.BinarySearchFunc(w.ahead, off, func(h held, off int64) int { return cmp.Compare(h.off, off) })
	w.ahead = slices.Insert(w.ahead, i, h)
}

// overlapsHeld reports whether [off, end) overlaps a held write.
func (w *writer) overlapsHeld(off, end int64) bool {
	i := sort.Search(len(w.ahead), func(i int) bool { return w.ahead[i].off+w.ahead[i].n > off })
	return i < len(w.ahead) && w.ahead[i].off < end
}

func chunksFor(n int) int { return (n + chunkSize - 1) / chunkSize }

// release returns a read piece's chunk to the pool.
func (w *writer) release(pc *piece) {
	if pc.chunk != nil {
		w.free = append(w.free, pc.chunk[:chunkSize])
		w.chunks--
	}
}

// dropHeld discards the held writes: they can no longer be passed on.
func (w *writer) dropHeld() {
	for _, h := range w.ahead {
		for _, pc := range h.pieces {
			w.release(pc)
		}
	}
	w.ahead = nil
}

// drop discards everything once Ingest has stopped reading.
func (w *writer) drop() {
	for _, pc := range w.queue {
		w.release(pc)
	}
	w.queue = nil
	w.dropHeld()
	w.free = nil
}

// notify wakes everyone waiting for a change. The caller holds mu.
func (w *writer) notify() {
	close(w.changed)
	w.changed = make(chan struct{})
}

// wait releases mu until the state changes or deadline passes (zero: no
// deadline), and reports false if the deadline passed.
func (w *writer) wait(deadline time.Time) bool {
	ch := w.changed
	var expired <-chan time.Time
	if !deadline.IsZero() {
		d := time.Until(deadline)
		if d <= 0 {
			return false
		}
		tm := time.NewTimer(d)
		defer tm.Stop()
		expired = tm.C
	}
	w.mu.Unlock()
	defer w.mu.Lock()
	select {
	case <-ch:
		return true
	case <-expired:
		return false
	}
}

// refuse makes err the handle's sticky error. The caller holds mu.
func (w *writer) refuse(off int64, n int, err error) error {
	w.err = err
	w.log.Info("write refused", zap.Int64("offset", off), zap.Int("bytes", n), zap.Error(err))
	return err
}

// recheck re-checks the session at most every authEvery while writing.
func (w *writer) recheck() error {
	now := time.Now().UnixNano()
	last := w.lastAuth.Load()
	if time.Duration(now-last) < w.t.authEvery || !w.lastAuth.CompareAndSwap(last, now) {
		return nil
	}
	if _, err := w.t.authorize(w.ctx, "write", w.path); err != nil {
		w.mu.Lock()
		if w.err == nil {
			w.err = err
		}
		w.mu.Unlock()
		return err
	}
	return nil
}

// giveUp records that the client truncated the open file (OpenSSH does so
// only when a resumed transfer failed or was interrupted): its close keeps
// the partial instead of completing it. Nothing else changes.
//
// A size set together with the file's times is how lftp finishes every
// upload (FSETSTAT, then CLOSE, possibly before its last writes are
// handled): Close decides, completing the upload if the size is every byte
// received. OpenSSH's interrupted reput sends the size alone.
func (w *writer) giveUp(size int64, withTimes bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if withTimes {
		w.finalSize = size
		return
	}
	w.gaveUp = true
	w.log.Info("client truncated the file; it stays a partial upload", zap.Int64("bytes", size), zap.Int64("offset", w.next))
}

// TransferError is called by pkg/sftp's RequestServer, before Close, for
// each file still open when the connection ends (never on SSH_FXP_CLOSE).
func (w *writer) TransferError(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.lost = err
}

// Close ends the stream. Unless the connection dropped, a write was
// refused, a gap remains, the client truncated the file or the session
// ended, it completes the upload; otherwise the bytes received stay a
// resumable partial upload. The answer goes to the client's SSH_FXP_CLOSE.
func (w *writer) Close() error {
	w.mu.Lock()
	if w.end != nil {
		w.mu.Unlock()
		return nil
	}
	var end, answer error
	switch {
	case w.lost != nil:
		end = fmt.Errorf("sftpd: connection lost: %w", w.lost)
	case w.err != nil:
		end, answer = w.err, w.err
	case len(w.ahead) > 0:
		w.err = failure("the file has a gap at offset %d (written out of order, never filled); the first %d bytes are kept: resume with reput", w.next, w.next)
		end, answer = w.err, w.err
	case w.gaveUp:
		end = errGaveUp
	case w.finalSize >= 0 && w.finalSize != w.next:
		w.log.Info("client set a size other than the bytes it wrote; it stays a partial upload", zap.Int64("bytes", w.finalSize), zap.Int64("offset", w.next))
		end = errGaveUp
	}
	w.mu.Unlock()
	if end == nil {
		if _, err := w.t.authorize(w.ctx, "close", w.path); err != nil {
			end, answer = errSessionEnded, err
		}
	}
	complete := end == nil
	if complete {
		end = io.EOF
	}
	w.mu.Lock()
	w.end = end
	w.dropHeld()
	w.notify()
	w.mu.Unlock()
	<-w.written

	w.mu.Lock()
	durable, ingErr, next := w.durable, w.ingErr, w.next
	if complete && w.err != nil {
		complete, answer = false, w.err // Ingest failed after the last write
	}
	w.mu.Unlock()
	if complete && ingErr != nil {
		complete, answer = false, w.ingestFailure(ingErr)
	}
	if complete && durable != next {
		complete = false
		w.log.Error("ingest stored fewer bytes than it read", zap.Int64("offset", durable), zap.Int64("bytes", next), zap.Error(ingErr))
		answer = failure("the upload is incomplete: %d bytes were stored; resume with reput", durable)
	}
	if complete {
		c := w.t.c
		if err := c.ing.Finish(w.ctx, w.id, c.user, c.remote); err != nil {
			complete = false
			answer = w.finishFailure(err)
		}
	}
	w.t.closed(w, complete, durable)
	w.unlock()
	if complete {
		w.log.Info("upload complete", zap.String("op", "close"), zap.Int64("bytes", durable))
		return nil
	}
	w.log.Info("upload left partial", zap.String("op", "close"), zap.Int64("offset", durable), zap.NamedError("reason", end))
	return answer
}

// ingestFailure logs Ingest.Write's error and returns the client's answer.
func (w *writer) ingestFailure(err error) error {
	if qerr, ok := quotaFailure(err); ok {
		w.log.Info("write refused: quota", zap.Error(err))
		return failure("%s; the data received up to the last checkpoint is kept in /%s/: free space, then resume with reput", qerr, dirUpload)
	}
	switch {
	case errors.Is(err, ingest.ErrTooLarge):
		return failure("the file exceeds the maximum file size of %d bytes", w.max)
	case errors.Is(err, ingest.ErrExpired):
		return failure("the upload expired; upload the file again")
	case errors.Is(err, ingest.ErrNotWritable):
		return failure("the upload no longer accepts data")
	case errors.Is(err, ingest.ErrOffsetMismatch), errors.Is(err, state.ErrConflict):
		return failure("the upload changed meanwhile; resume it again")
	case errors.Is(err, storage.ErrUnavailable):
		w.log.Warn("storage unavailable", zap.Error(err))
		return failure("storage is temporarily unavailable; the data received so far is kept: resume later")
	}
	w.log.Error("upload failed", zap.Error(err))
	return failure("the upload failed; the data received so far is kept")
}

// finishFailure logs Ingest.Finish's error and returns the client's answer.
func (w *writer) finishFailure(err error) error {
	switch {
	case errors.Is(err, ingest.ErrTooLarge):
		return failure("the file exceeds the maximum file size of %d bytes", w.max)
	case errors.Is(err, ingest.ErrExpired):
		return failure("the upload expired; upload the file again")
	case errors.Is(err, ingest.ErrNotWritable):
		return failure("the upload was already completed or removed")
	}
	w.log.Error("completing the upload failed", zap.Error(err))
	return failure("the upload could not be completed; the data received is kept")
}

// quotaFailure is the answer to a refusal by a quota (policy.QuotaError,
// whose message is written for its subject, this user): an SSH_FX_FAILURE
// that names the quota. ok is false for any other error.
func quotaFailure(err error) (answer error, ok bool) {
	var qe *policy.QuotaError
	if !errors.As(err, &qe) {
		return nil, false
	}
	return failure("%s", qe.Error()), true
}
