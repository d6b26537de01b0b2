package s3

import (
	"context"
	"sync"

	"golang.org/x/sync/semaphore"
)

// buffers hands out part buffers within a fixed budget shared by every
// upload of a backend. Buffers are recycled through a sync.Pool, so memory
// that no upload needs goes back to the garbage collector.
type buffers struct {
	size int
	sem  *semaphore.Weighted
	pool sync.Pool
}

func newBuffers(size int, n int64) *buffers {
	b := &buffers{size: size, sem: semaphore.NewWeighted(n)}
	b.pool.New = func() any {
		p := make([]byte, size)
		return &p
	}
	return b
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
	p := b.pool.Get().(*[]byte)
	return (*p)[:0]
}

// put returns a buffer from get or tryGet to the budget.
func (b *buffers) put(buf []byte) {
	if cap(buf) == b.size {
		buf = buf[:cap(buf)]
		b.pool.Put(&buf)
	}
	b.sem.Release(1)
}
