package egress

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// countConn counts the writes that reach the socket.
type countConn struct {
	net.Conn
	mu     sync.Mutex
	writes []int
}

func (c *countConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, len(p))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countConn) count() []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]int(nil), c.writes...)
}

// TestBatchedTLS: after the handshake, the records of one write leave in
// one socket write (not one per 16 KiB record), an io.Copy goes in 256 KiB
// writes, every byte arrives in order, an answer is read after a write,
// and Close still delivers close_notify.
func TestBatchedTLS(t *testing.T) {
	pki := newPKI(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pki.cert}})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	type result struct {
		data []byte
		err  error
	}
	got := make(chan result, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			got <- result{err: err}
			return
		}
		defer c.Close()
		var all []byte
		buf := make([]byte, 64<<10)
		for {
			n, err := c.Read(buf)
			all = append(all, buf[:n]...)
			if bytes.HasSuffix(all, []byte("PING")) {
				if _, err := c.Write([]byte("PONG")); err != nil {
					got <- result{err: err}
					return
				}
				all = all[:len(all)-4]
			}
			if err != nil {
				got <- result{data: all, err: err}
				return
			}
		}
	}()

	raw, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	cc := &countConn{Conn: raw}
	bc := &batchConn{Conn: cc}
	tc := tls.Client(bc, &tls.Config{RootCAs: pki.pool, ServerName: "portal.test", MinVersion: tls.VersionTLS12, DynamicRecordSizingDisabled: true})
	if err := tc.Handshake(); err != nil {
		t.Fatal(err)
	}
	bc.setBatching()
	fc := &flushConn{Conn: tc, bc: bc}
	handshake := len(cc.count())

	data := make([]byte, 3<<20+12345)
	rand.Read(data)
	if _, err := fc.Write(data[:128<<10]); err != nil { // 8 records
		t.Fatal(err)
	}
	if w := cc.count()[handshake:]; len(w) != 1 {
		t.Errorf("a 128 KiB write left in %d socket writes %v, want 1", len(w), w)
	}
	// An answer arrives after a write: nothing waits in the batch.
	if _, err := fc.Write([]byte("PING")); err != nil {
		t.Fatal(err)
	}
	pong := make([]byte, 4)
	if _, err := io.ReadFull(fc, pong); err != nil || string(pong) != "PONG" {
		t.Fatalf("answer %q, %v", pong, err)
	}
	before := len(cc.count())
	if n, err := io.Copy(fc, bytes.NewReader(data[128<<10:])); err != nil || n != int64(len(data)-128<<10) {
		t.Fatalf("copy: %d, %v", n, err)
	}
	w := cc.count()[before:]
	if max := (len(data)-128<<10)/(copyBufSize) + 1; len(w) > max {
		t.Errorf("io.Copy of %d bytes left in %d socket writes, want at most %d", len(data)-128<<10, len(w), max)
	}
	beforeClose := len(cc.count())
	if err := fc.Close(); err != nil {
		t.Fatal(err)
	}
	// Close wrote the close_notify alert (one small record) out of the
	// batch before closing the socket.
	if w := cc.count()[beforeClose:]; len(w) != 1 || w[0] > 64 {
		t.Errorf("socket writes at close: %v, want one close_notify record", w)
	}
	r := <-got
	if !errors.Is(r.err, io.EOF) {
		t.Errorf("the server's last read: %v, want io.EOF", r.err)
	}
	if !bytes.Equal(r.data, data) {
		t.Errorf("the server got %d bytes, not the %d written in order", len(r.data), len(data))
	}
}
