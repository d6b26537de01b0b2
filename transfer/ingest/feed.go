package ingest

import (
	"errors"
	"hash"
	"io"
	"sync"
)

// feed reads a client's body in its own goroutine into a bounded set of
// pooled buffers, so reading (TLS decryption) overlaps hashing and writing.
// At most cfg.Buffers buffers are in use per transfer.
type feed struct {
	s       *Service
	ch      chan []byte
	quit    chan struct{}
	done    chan struct{}
	stopped sync.Once
	err     error // valid once ch is closed: nil at a clean end of body
}

// head, if > 0, is the length of the first buffer (so that later ones start
// at aligned offsets).
func (s *Service) startFeed(body io.Reader, remaining int64, head int) *feed {
	f := &feed{
		s:    s,
		ch:   make(chan []byte, s.cfg.Buffers-2),
		quit: make(chan struct{}),
		done: make(chan struct{}),
	}
	go f.run(body, remaining, head)
	return f
}

func (f *feed) run(body io.Reader, remaining int64, head int) {
	defer close(f.done)
	defer close(f.ch)
	var total int64
	for {
		bp := f.s.bufs.Get().(*[]byte)
		b := *bp
		if head > 0 {
			b, head = b[:min(head, len(b))], 0
		}
		n, err := readFull(body, b)
		if total+int64(n) > remaining {
			f.s.bufs.Put(bp)
			f.err = ErrTooLarge
			return
		}
		total += int64(n)
		if n > 0 {
			select {
			case f.ch <- (*bp)[:n]:
			case <-f.quit:
				f.s.bufs.Put(bp)
				return
			}
		} else {
			f.s.bufs.Put(bp)
		}
		switch {
		case err == nil:
		case errors.Is(err, io.EOF):
			return
		default:
			f.err = &ClientError{Err: err}
			return
		}
	}
}

// readFull is io.ReadFull without its translation of a short read into
// io.ErrUnexpectedEOF: it returns io.EOF only at the body's clean end, and
// the body's own error (io.ErrUnexpectedEOF for a connection cut before the
// declared length) as it is, so a dropped client is told from a finished one.
func readFull(r io.Reader, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := r.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// release returns a buffer handed out by the feed to the pool.
func (f *feed) release(b []byte) {
	b = b[:cap(b)]
	f.s.bufs.Put(&b)
}

// stop ends the feed and waits for its goroutine, so the body is never
// touched after the request's handler returns.
func (f *feed) stop() {
	f.stopped.Do(func() { close(f.quit) })
	for b := range f.ch {
		f.release(b)
	}
	<-f.done
}

// segment is one checkpoint's worth of a feed, as an io.Reader for
// storage.Upload.WriteChunk. Every byte it hands out is hashed first, so the
// hash covers exactly what the backend received; fed counts those bytes.
type segment struct {
	feed  *feed
	limit int64
	sum   hash.Hash // the whole-file SHA-256
	check hash.Hash // the request's checksum, or nil
	// quota, if not nil, bounds the body bytes handed out; base is how
	// many the earlier segments of the request handed out.
	quota *streamQuota
	base  int64
	fed   int64
	eof   bool   // the feed is exhausted
	cur   []byte // current buffer (Read path)
	pos   int
}

// next returns the next buffer of the feed, hashed, or an error: io.EOF at
// the segment's limit or the body's clean end.
func (s *segment) next() ([]byte, error) {
	if s.fed >= s.limit {
		return nil, io.EOF
	}
	b, ok := <-s.feed.ch
	if !ok {
		s.eof = true
		if s.feed.err != nil {
			return nil, s.feed.err
		}
		return nil, io.EOF
	}
	if err := s.quota.allow(s.base + s.fed + int64(len(b))); err != nil {
		s.feed.release(b)
		return nil, err
	}
	s.sum.Write(b)
	if s.check != nil {
		s.check.Write(b)
	}
	s.fed += int64(len(b))
	return b, nil
}

// WriteTo hands whole buffers to w, avoiding a copy.
func (s *segment) WriteTo(w io.Writer) (int64, error) {
	var n int64
	if s.cur != nil {
		m, err := w.Write(s.cur[s.pos:])
		n += int64(m)
		s.feed.release(s.cur)
		s.cur = nil
		if err != nil {
			return n, err
		}
	}
	for {
		b, err := s.next()
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
		m, werr := w.Write(b)
		n += int64(m)
		s.feed.release(b)
		if werr != nil {
			return n, werr
		}
	}
}

// Read implements io.Reader for backends that do not use WriteTo.
func (s *segment) Read(p []byte) (int, error) {
	if s.cur == nil {
		b, err := s.next()
		if err != nil {
			return 0, err
		}
		s.cur, s.pos = b, 0
	}
	n := copy(p, s.cur[s.pos:])
	s.pos += n
	if s.pos == len(s.cur) {
		s.feed.release(s.cur)
		s.cur = nil
	}
	return n, nil
}
