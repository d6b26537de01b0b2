package integration

import (
	"errors"
	"io"
	"net"
	"sync"
	"testing"
)

// faultProxy forwards raw TCP from 127.0.0.1:PORT to a target (TLS passes through untouched) and
// can cut one connection: close both of its sides once it has carried a number of bytes from
// client to server. Every other connection, before and after, passes unharmed.
type faultProxy struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu       sync.Mutex
	conns    int   // connections accepted so far
	cutConn  int   // 1-based connection to cut; 0: whichever connection first reaches cutAfter
	cutAfter int64 // client→server bytes after which to cut; <= 0: no cut armed
	cuts     int   // connections cut so far
	open     map[net.Conn]struct{}
	wg       sync.WaitGroup
}

// startProxy listens on a free port of 127.0.0.1 and forwards to target until the test ends.
func startProxy(t *testing.T, target string) *faultProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &faultProxy{t: t, ln: ln, target: target, open: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Addr is host:port to give clients instead of the target's.
func (p *faultProxy) Addr() string { return p.ln.Addr().String() }

// CutAfter arms one cut: connection number conn (1-based, counting every connection accepted so
// far), or with conn 0 whichever connection first carries bytes, is closed on both sides once it
// has carried that many bytes from client to server.
func (p *faultProxy) CutAfter(conn int, bytes int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.cutConn, p.cutAfter = conn, bytes
}

// Cuts is how many connections the proxy has cut.
func (p *faultProxy) Cuts() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.cuts
}

func (p *faultProxy) accept() {
	defer p.wg.Done()
	for {
		c, err := p.ln.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		p.conns++
		n := p.conns
		p.open[c] = struct{}{}
		p.mu.Unlock()
		p.wg.Add(1)
		go p.serve(n, c)
	}
}

// limit reports how many more client→server bytes connection n may carry when it has carried
// sent, or -1 for no limit.
func (p *faultProxy) limit(n int, sent int64) int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cutAfter <= 0 || (p.cutConn != 0 && p.cutConn != n) {
		return -1
	}
	return max(p.cutAfter-sent, 0)
}

// claimCut disarms the cut for connection n; false if another connection got it first.
func (p *faultProxy) claimCut(n int) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.cutAfter <= 0 || (p.cutConn != 0 && p.cutConn != n) {
		return false
	}
	p.cutAfter = 0
	p.cuts++
	return true
}

func (p *faultProxy) serve(n int, client net.Conn) {
	defer p.wg.Done()
	server, err := net.Dial("tcp", p.target)
	if err != nil {
		p.t.Logf("proxy: connection %d: dial %s: %v", n, p.target, err)
		p.drop(client)
		return
	}
	p.mu.Lock()
	p.open[server] = struct{}{}
	p.mu.Unlock()

	done := make(chan struct{})
	go func() { // server → client, untouched
		defer close(done)
		io.Copy(client, server)
		closeWrite(client)
	}()

	buf := make([]byte, 64<<10)
	var sent int64
	cut := false
	for {
		m, rerr := client.Read(buf)
		if m > 0 {
			chunk := buf[:m]
			if lim := p.limit(n, sent); lim >= 0 && int64(m) >= lim {
				if p.claimCut(n) {
					chunk = chunk[:lim]
					cut = true
				}
			}
			if _, werr := server.Write(chunk); werr != nil {
				break
			}
			sent += int64(len(chunk))
			if cut {
				p.t.Logf("proxy: cut connection %d after %d bytes client→server", n, sent)
				break
			}
		}
		if rerr != nil {
			if errors.Is(rerr, io.EOF) {
				closeWrite(server)
				<-done // let the answer through, then close both
			}
			break
		}
	}
	p.drop(client)
	p.drop(server)
	<-done
}

func closeWrite(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok {
		tc.CloseWrite()
	}
}

func (p *faultProxy) drop(c net.Conn) {
	c.Close()
	p.mu.Lock()
	delete(p.open, c)
	p.mu.Unlock()
}

func (p *faultProxy) close() {
	p.ln.Close()
	p.mu.Lock()
	for c := range p.open {
		c.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}
