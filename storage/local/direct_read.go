package local

import (
	"io"
	"os"
	"sync"
	"unsafe"
)

// directReadSize is the size of one direct read, and of a reader's buffer.
const directReadSize = 1 << 20

// newAlignedBuf allocates a direct-read buffer aligned to directAlign.
func newAlignedBuf() any {
	raw := make([]byte, directReadSize+directAlign)
	pad := (directAlign - int(uintptr(unsafe.Pointer(&raw[0]))%directAlign)) % directAlign
	b := raw[pad : pad+directReadSize]
	return &b
}

// directReader reads a file through a direct-I/O descriptor in aligned
// blocks, so a whole-file read (the check stage re-reads every upload) does
// not pay for filling the page cache with bytes nobody reads again.
type directReader struct {
	pool   *sync.Pool
	f      *os.File
	buf    *[]byte
	pos    int64 // file offset of the next byte to return
	end    int64 // file offset to stop at
	chunk  []byte
	closed bool
}

func newDirectReader(pool *sync.Pool, f *os.File, off, end int64) *directReader {
	return &directReader{pool: pool, f: f, buf: pool.Get().(*[]byte), pos: off, end: end}
}

func (r *directReader) Read(p []byte) (int, error) {
	if r.closed {
		return 0, os.ErrClosed
	}
	if len(r.chunk) == 0 {
		if r.pos >= r.end {
			return 0, io.EOF
		}
		start := r.pos - r.pos%directAlign
		n, err := r.f.ReadAt(*r.buf, start)
		if n <= int(r.pos-start) {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF // the file shrank under us
			}
			return 0, err
		}
		r.chunk = (*r.buf)[r.pos-start : min(int64(n), r.end-start)]
	}
	n := copy(p, r.chunk)
	r.chunk = r.chunk[n:]
	r.pos += int64(n)
	return n, nil
}

func (r *directReader) Close() error {
	if r.closed {
		return os.ErrClosed
	}
	r.closed = true
	r.pool.Put(r.buf)
	r.buf, r.chunk = nil, nil
	return r.f.Close()
}
