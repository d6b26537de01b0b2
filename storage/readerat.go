package storage

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
)

// ObjectReader gives random access (io.ReaderAt) to a committed object,
// for readers that need it, such as a zip's central directory, while reads
// in order cost one request: it keeps the last reader open and goes on
// reading it while each ReadAt starts where the previous one ended; only a
// jump opens the object again, from the new offset to the end.
//
// It holds the context it was made with (an io.ReaderAt has no room for
// one): make one per task and Close it when the task is done. ReadAt calls
// are serialised.
type ObjectReader struct {
	ctx  context.Context
	b    Backend
	key  string
	size int64

	mu    sync.Mutex
	rc    io.ReadCloser
	pos   int64 // offset of the next byte rc returns
	opens int
}

var _ io.ReaderAt = (*ObjectReader)(nil)

// NewObjectReader returns an ObjectReader for the size bytes of key.
func NewObjectReader(ctx context.Context, b Backend, key string, size int64) *ObjectReader {
	return &ObjectReader{ctx: ctx, b: b, key: key, size: size}
}

// Size is the object's size as given to NewObjectReader.
func (r *ObjectReader) Size() int64 { return r.size }

// Opens reports how many times the object has been opened.
func (r *ObjectReader) Opens() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opens
}

// ReadAt implements io.ReaderAt.
func (r *ObjectReader) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("storage: read %s at %d: negative offset", RedactKey(r.key), off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	want := p
	if rest := r.size - off; int64(len(want)) > rest {
		want = want[:rest]
	}
	if r.rc == nil || r.pos != off {
		if r.rc != nil {
			r.rc.Close()
			r.rc = nil
		}
		rc, err := r.b.Open(r.ctx, r.key, off, -1)
		if err != nil {
			return 0, err
		}
		r.rc, r.pos = rc, off
		r.opens++
	}
	n, err := io.ReadFull(r.rc, want)
	r.pos += int64(n)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		// The object is shorter than its recorded size.
		return n, fmt.Errorf("storage: read %s at %d: object ends before its size %d: %w", RedactKey(r.key), off+int64(n), r.size, io.ErrUnexpectedEOF)
	}
	if err != nil {
		r.rc.Close()
		r.rc = nil
		return n, err
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// Close releases the open reader, if any.
func (r *ObjectReader) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.rc == nil {
		return nil
	}
	err := r.rc.Close()
	r.rc = nil
	return err
}
