package api

import (
	"bytes"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"testing/iotest"
)

// scriptConn is a net.Conn whose reads come from r.
type scriptConn struct {
	net.Conn
	r io.Reader
}

func (c *scriptConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func newBuffered(r io.Reader) *bufferedConn {
	p := &sync.Pool{New: func() any { b := make([]byte, connReadBuffer); return &b }}
	return &bufferedConn{Conn: &scriptConn{r: r}, pool: p}
}

func TestBufferedConnDeliversEveryByte(t *testing.T) {
	data := make([]byte, 3*connReadBuffer+12345)
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	for name, src := range map[string]io.Reader{
		"whole":     bytes.NewReader(data),
		"one byte":  iotest.OneByteReader(bytes.NewReader(data)),
		"half":      iotest.HalfReader(bytes.NewReader(data)),
		"data+EOF":  iotest.DataErrReader(bytes.NewReader(data)),
		"truncated": io.LimitReader(bytes.NewReader(data), int64(len(data))),
	} {
		t.Run(name, func(t *testing.T) {
			c := newBuffered(src)
			var got []byte
			buf := make([]byte, 16<<10+5) // a TLS record's worth, odd-sized
			for {
				n, err := c.Read(buf)
				got = append(got, buf[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					t.Fatalf("Read: %v", err)
				}
			}
			if !bytes.Equal(got, data) {
				t.Fatalf("got %d bytes that differ from the %d sent", len(got), len(data))
			}
			if c.buf != nil {
				t.Error("a drained connection still holds its buffer")
			}
		})
	}
}

// dataErrConn returns its data and err from the same Read call.
type dataErrReader struct {
	data []byte
	err  error
}

func (r *dataErrReader) Read(p []byte) (int, error) {
	if r.data == nil {
		return 0, io.EOF
	}
	n := copy(p, r.data)
	r.data = nil
	return n, r.err
}

func TestBufferedConnErrorAfterData(t *testing.T) {
	boom := errors.New("connection reset")
	c := newBuffered(&dataErrReader{data: []byte("abc"), err: boom})
	p := make([]byte, 10)
	n, err := c.Read(p)
	if n != 3 || err != nil || string(p[:3]) != "abc" {
		t.Fatalf("first Read = %d %q, %v; want the 3 bytes and no error", n, p[:n], err)
	}
	if _, err := c.Read(p); !errors.Is(err, boom) {
		t.Fatalf("second Read error = %v, want %v", err, boom)
	}
}

func TestBufferedConnLargeReadBypassesBuffer(t *testing.T) {
	data := bytes.Repeat([]byte{7}, 2*connReadBuffer)
	c := newBuffered(bytes.NewReader(data))
	p := make([]byte, 2*connReadBuffer)
	n, err := c.Read(p)
	if err != nil || n != len(data) {
		t.Fatalf("Read = %d, %v; want %d", n, err, len(data))
	}
	if c.buf != nil {
		t.Error("a read larger than the buffer took a buffer")
	}
}
