package ingest

import (
	"context"
	"io"
	"time"
)

// scanPace is how fast the check stage reads a stored file while uploads are
// receiving bytes: checks run in the background and yield the disk and the
// CPU to uploads, which a user is waiting on, rather than slow them down.
// With no upload active they read at full speed.
const scanPace = 64 << 20 // bytes per second

// pacedReaderAt reads from r, and while busy() waits after each read long
// enough to keep to rate bytes per second.
type pacedReaderAt struct {
	ctx  context.Context
	r    io.ReaderAt
	busy func() bool
	rate int64
	wait func(context.Context, time.Duration) // sleep; nil: a timer that ctx cuts short
}

func (p *pacedReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := p.r.ReadAt(b, off)
	if n > 0 && p.busy() {
		d := time.Duration(int64(n) * int64(time.Second) / p.rate)
		if p.wait != nil {
			p.wait(p.ctx, d)
		} else {
			sleep(p.ctx, d)
		}
	}
	return n, err
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
