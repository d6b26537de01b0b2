package s3

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// buffers hands out part buffers within a fixed budget shared by every
// upload of a backend. Up to keep buffers that no upload holds are kept for
// reuse (enough for one upload at full concurrency, so a steady upload
// allocates nothing); more are left to the garbage collector. A sync.Pool
// would drop them at every other collection and make the heap churn
// through fresh 16 MiB allocations, which shows as resident memory.
type buffers struct {
	size int
	sem  *semaphore.Weighted

	mu   sync.Mutex
	idle [][]byte
	keep int
}

func newBuffers(size int, n int64, keep int) *buffers {
	return &buffers{size: size, sem: semaphore.NewWeighted(n), keep: keep}
}

// get waits until the budget has room for a buffer, or ctx ends.
func (b *buffers) get(ctx context.Context) ([]byte, error) {
	if err := b.sem.Acquire(ctx, 1); err != nil {
		return nil, err
	}
	return b.take(), nil
}

// tryGet returns a buffer if the budget has room now, else nil.
func (b *buffers) tryGet() []byte {
	if !b.sem.TryAcquire(1) {
		return nil
	}
	return b.take()
}

func (b *buffers) take() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	if n := len(b.idle); n > 0 {
		buf := b.idle[n-1]
		b.idle = b.idle[:n-1]
		return buf[:0]
	}
	return make([]byte, 0, b.size)
}

// put returns a buffer from get or tryGet to the budget.
func (b *buffers) put(buf []byte) {
	b.mu.Lock()
	if cap(buf) == b.size && len(b.idle) < b.keep {
		b.idle = append(b.idle, buf[:0])
	}
	b.mu.Unlock()
	b.sem.Release(1)
}
