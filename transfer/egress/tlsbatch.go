package egress

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
)

// batchLimit bounds the TLS records a batchConn holds before it writes
// them out.
const batchLimit = 256 << 10

// dialTLS dials with g and runs the TLS handshake itself over a batchConn,
// so that the records of one large write (a push's body arrives in 32 KiB
// to 64 KiB writes, two to four 16 KiB records) leave in one system call
// rather than one each: fewer, larger segments for both ends.
func (g *guard) dialTLS(cfg *tls.Config) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		raw, err := g.dial(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			raw.Close()
			return nil, err
		}
		c := cfg.Clone()
		c.ServerName = strings.TrimSuffix(host, ".")
		bc := &batchConn{Conn: raw}
		tc := tls.Client(bc, c)
		hctx, cancel := context.WithTimeout(ctx, tlsHandshakeTimeout)
		defer cancel()
		if err := tc.HandshakeContext(hctx); err != nil {
			raw.Close()
			return nil, err
		}
		bc.setBatching()
		return &flushConn{Conn: tc, bc: bc}, nil
	}
}

// batchConn collects what TLS writes once batching is on, until flush.
// The handshake goes out unbatched (it waits for answers).
type batchConn struct {
	net.Conn
	mu       sync.Mutex
	batching bool
	buf      []byte
	err      error
}

func (b *batchConn) setBatching() {
	b.mu.Lock()
	b.batching = true
	b.mu.Unlock()
}

func (b *batchConn) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.batching {
		return b.Conn.Write(p)
	}
	if b.err != nil {
		return 0, b.err
	}
	b.buf = append(b.buf, p...)
	if len(b.buf) >= batchLimit {
		if err := b.flushLocked(); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

func (b *batchConn) flush() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.flushLocked()
}

func (b *batchConn) flushLocked() error {
	if b.err != nil {
		return b.err
	}
	if len(b.buf) == 0 {
		return nil
	}
	_, err := b.Conn.Write(b.buf)
	b.buf = b.buf[:0]
	b.err = err
	return err
}

// Close writes out what is held (a close_notify alert) and closes.
func (b *batchConn) Close() error {
	b.flush()
	return b.Conn.Close()
}

// flushConn is the TLS connection the transport uses: every write leaves
// in full before it returns, and anything TLS wrote while reading (a key
// update's answer) leaves before the next read waits.
type flushConn struct {
	*tls.Conn
	bc  *batchConn
	buf []byte // ReadFrom's; the transport writes from one goroutine
}

func (f *flushConn) Write(p []byte) (int, error) {
	n, err := f.Conn.Write(p)
	if ferr := f.bc.flush(); err == nil {
		err = ferr
	}
	return n, err
}

func (f *flushConn) Read(p []byte) (int, error) {
	if err := f.bc.flush(); err != nil {
		return 0, err
	}
	return f.Conn.Read(p)
}

// copyBufSize is the largest write ReadFrom hands TLS at once.
const copyBufSize = 256 << 10

// ReadFrom is how the transport copies a request body to the connection
// (net/http's persistConnWriter uses io.Copy): in writes of up to 256 KiB
// rather than io.Copy's 32 KiB, each leaving in one system call.
func (f *flushConn) ReadFrom(r io.Reader) (int64, error) {
	if f.buf == nil {
		f.buf = make([]byte, copyBufSize)
	}
	var total int64
	for {
		n, rerr := r.Read(f.buf)
		if n > 0 {
			m, werr := f.Write(f.buf[:n])
			total += int64(m)
			if werr != nil {
				return total, werr
			}
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}
