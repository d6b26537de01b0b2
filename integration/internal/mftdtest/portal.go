package mftdtest

import (
	"bufio"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"hash"
	"io"
	"log"
	"math/big"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestCA is a throwaway certificate authority and one leaf certificate it signed for
// "localhost" (DNS SAN localhost, IP SANs 127.0.0.1 and ::1), both ECDSA P-256 and valid from an
// hour ago for 24 hours. The CA's key is not kept.
type TestCA struct {
	CAFile   string // PEM of the CA certificate: a portal's ca_file, curl --cacert
	CertFile string // PEM of the leaf certificate, for a server outside this process
	KeyFile  string // PEM (PKCS #8) of the leaf's private key

	pool *x509.CertPool
	leaf tls.Certificate
}

// NewTestCA creates the CA and the leaf and writes ca.pem, cert.pem and key.pem into dir.
func NewTestCA(dir string) (*TestCA, error) {
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	caTmpl := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "mftd test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("test CA: %w", err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		return nil, fmt.Errorf("test CA: %w", err)
	}
	leafKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: randomSerial(),
		Subject:      pkix.Name{CommonName: "localhost"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(24 * time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		DNSNames:     []string{"localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		return nil, fmt.Errorf("test CA: leaf: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(leafKey)
	if err != nil {
		return nil, err
	}
	ca := &TestCA{
		CAFile:   filepath.Join(dir, "ca.pem"),
		CertFile: filepath.Join(dir, "cert.pem"),
		KeyFile:  filepath.Join(dir, "key.pem"),
		pool:     x509.NewCertPool(),
		leaf:     tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: leafKey},
	}
	ca.pool.AddCert(caCert)
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{ca.CAFile, "CERTIFICATE", caDER}, {ca.CertFile, "CERTIFICATE", leafDER}, {ca.KeyFile, "PRIVATE KEY", keyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			return nil, err
		}
	}
	return ca, nil
}

// CertPool holds the CA certificate only.
func (ca *TestCA) CertPool() *x509.CertPool { return ca.pool }

// ServerTLSConfig serves the leaf certificate, TLS 1.2 or later, HTTP/1.1 only.
func (ca *TestCA) ServerTLSConfig() *tls.Config {
	return &tls.Config{
		Certificates: []tls.Certificate{ca.leaf},
		MinVersion:   tls.VersionTLS12,
		NextProtos:   []string{"http/1.1"},
	}
}

func randomSerial() *big.Int {
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 64))
	if err != nil {
		panic(err) // crypto/rand does not fail on Linux
	}
	return n
}

// The portal push methods, as in the portal config (policy.PortalPut, PortalPost, PortalTus).
const (
	PortalPut  = "put"
	PortalPost = "post"
	PortalTus  = "tus"
)

// portalBufSize is how much of a body the portal reads before it writes and hashes it.
const portalBufSize = 256 << 10

// PortalOptions shape a fake portal. Method, and Dir unless Discard, are required.
//
// Every request is answered in this order: RedirectTo (307), then the token (401), then, for
// an upload request, Status5xx (503) before any other check of the request, then the method's
// own checks. An upload request is the PUT (put), the POST (post) or a PATCH (tus) of a body;
// tus creation, HEAD and OPTIONS are not.
type PortalOptions struct {
	Method string // PortalPut, PortalPost or PortalTus
	// Token is the bearer token every request must carry ("Authorization: Bearer TOKEN", the
	// scheme in any case); "" requires none. A missing or wrong one gets 401 with
	// "WWW-Authenticate: Bearer" and a fixed body that echoes nothing; its body is not read.
	Token string
	// RedirectTo: every request is answered 307 with this Location, before the token check,
	// its body unread, and nothing is stored.
	RedirectTo string
	// FailAfter > 0: the first upload request whose body (for post, the whole multipart body)
	// reaches FailAfter bytes has its connection closed abruptly once exactly FailAfter bytes
	// have been read: the connection is hijacked and its TCP socket closed with SO_LINGER 0 (a
	// reset, no TLS close_notify, no response). It happens once; later requests are served
	// normally. put and post keep nothing of that request; tus keeps the FailAfter bytes, so a
	// HEAD then reports the offset the PATCH started at plus FailAfter.
	FailAfter int64
	// Status5xx > 0: the first Status5xx upload requests are answered 503 after their body has
	// been read to the end (and counted in BytesReceived), so that the client reads the answer
	// and may reuse the connection. Those requests do not count for FailAfter.
	Status5xx int
	// Discard keeps no bytes on disk: the portal only counts and hashes them.
	Discard bool
	// Dir is where completed uploads are stored, as Dir/ID (Received.Path); an upload in
	// progress is Dir/ID.part. It is created if missing.
	Dir string
}

// Received is one completed upload.
type Received struct {
	Method        string // PortalPut, PortalPost or PortalTus
	Name          string // from Content-Disposition ("upload" if absent), the multipart filename or tus metadata
	Size          int64  // the file's bytes received
	SHA256        string // hex SHA-256 of the bytes received, computed by the portal
	ClaimedSHA256 string // hex SHA-256 the client claimed (Repr-Digest, field sha256, metadata sha256); "" if none
	ID            string // the id the portal gave: in the JSON answer and Location (put, post), the upload URL's last segment (tus)
	Auth          string // the Authorization header of the request that completed the upload
	Path          string // the stored file, Dir/ID; "" with Discard
}

// PortalRequest is one request a portal answered.
type PortalRequest struct {
	Method string
	Path   string
	Status int    // 0 when the portal broke the connection (FailAfter)
	Auth   string // the Authorization header
	Bytes  int64  // body bytes read
}

// Portal is an HTTPS upload portal in the test process, serving https://localhost:PORT/upload
// over HTTP/1.1 (so that FailAfter can hijack the connection) on 127.0.0.1 only, with a leaf of
// a TestCA.
//
// put: "PUT /upload" of the raw body, Content-Length required (411 otherwise), the name from
// Content-Disposition (filename* or filename; "upload" if there is no header), an optional
// Repr-Digest (sha-256 only; other algorithms ignored):
//
//	Content-Disposition: attachment; filename*=UTF-8''NAME
//	Repr-Digest: sha-256=:BASE64:
//
// post: "POST /upload" of multipart/form-data with a part "file" that has a filename (400
// otherwise) and an optional field "sha256" of 64 hex digits, in any order; other fields are
// ignored. A chunked body is accepted.
//
// put and post answer 201 with {"id":"ID"} and "Location: /files/ID". The bytes read must
// match Content-Length and the claimed digest, else 400 and nothing is kept.
//
// tus: tus 1.0.0 core and creation. "POST /upload" with Upload-Length and Upload-Metadata
// (filename required, sha256 optional: base64 of 64 hex digits) answers 201 with an absolute
// Location https://HOST/upload/ID (HOST from the request); HEAD answers 200 with Upload-Offset
// and Upload-Length; PATCH (application/offset+octet-stream, Upload-Offset equal to the
// upload's offset or 409, no more than Upload-Length or 413) answers 204 with the new
// Upload-Offset. The upload completes when its offset reaches its length; if it then does not
// match the claimed sha256, that PATCH is answered 400, nothing is kept, and later PATCHes get
// 410. Tus-Resumable: 1.0.0 is required on every request but OPTIONS (412 otherwise).
// Deferred length, creation-with-upload, termination and checksums are not offered.
type Portal struct {
	URL  string // https://localhost:PORT/upload
	Addr string // 127.0.0.1:PORT

	o     PortalOptions
	srv   *http.Server
	mux   *http.ServeMux
	log   *lockedBuffer
	conns atomic.Int64
	bytes atomic.Int64
	fired atomic.Bool // FailAfter has broken a connection

	mu       sync.Mutex
	closed   bool
	active   sync.WaitGroup // requests being served; Add only under mu while !closed
	refused  int            // upload requests answered 503
	received []Received
	requests []PortalRequest
	changed  chan struct{} // closed and replaced when an upload completes
	uploads  map[string]*tusUpload
}

// StartPortal starts a portal on 127.0.0.1:0 serving ca's leaf certificate. It is stopped at
// cleanup (connections closed, running handlers awaited); if the test failed, its request log
// is printed. Invalid options fail the test.
func StartPortal(tb testing.TB, ca *TestCA, o PortalOptions) *Portal {
	tb.Helper()
	switch o.Method {
	case PortalPut, PortalPost, PortalTus:
	default:
		tb.Fatalf("portal: method %q is not put, post or tus", o.Method)
	}
	if o.FailAfter < 0 || o.Status5xx < 0 {
		tb.Fatal("portal: FailAfter and Status5xx must not be negative")
	}
	if o.RedirectTo != "" {
		if u, err := url.Parse(o.RedirectTo); err != nil || !u.IsAbs() {
			tb.Fatalf("portal: RedirectTo %q is not an absolute URL", o.RedirectTo)
		}
	}
	if !o.Discard {
		if o.Dir == "" {
			tb.Fatal("portal: Dir is required unless Discard")
		}
		if err := os.MkdirAll(o.Dir, 0o755); err != nil {
			tb.Fatal(err)
		}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	p := &Portal{
		URL:     "https://localhost:" + strconv.Itoa(port) + "/upload",
		Addr:    ln.Addr().String(),
		o:       o,
		log:     &lockedBuffer{},
		changed: make(chan struct{}),
		uploads: map[string]*tusUpload{},
	}
	p.routes()
	p.srv = &http.Server{
		Handler:           p,
		TLSConfig:         ca.ServerTLSConfig(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       time.Minute,
		ErrorLog:          log.New(p.log, "http: ", log.Lmicroseconds),
		Protocols:         new(http.Protocols),
	}
	p.srv.Protocols.SetHTTP1(true)
	served := make(chan error, 1)
	go func() { served <- p.srv.ServeTLS(countingListener{ln, &p.conns}, "", "") }()
	tb.Cleanup(func() {
		p.mu.Lock()
		p.closed = true
		p.mu.Unlock()
		p.srv.Close()
		if err := <-served; !errors.Is(err, http.ErrServerClosed) {
			tb.Errorf("portal %s: serve: %v", p.URL, err)
		}
		idle := make(chan struct{})
		go func() { p.active.Wait(); close(idle) }()
		select {
		case <-idle:
		case <-time.After(30 * time.Second):
			tb.Errorf("portal %s: requests still running 30s after close", p.URL)
		}
		if tb.Failed() {
			tb.Logf("portal %s (%s) log:\n%s", p.URL, o.Method, p.log.String())
		}
	})
	return p
}

// Connections is the number of TCP connections the portal ever accepted, whether or not their
// TLS handshake succeeded.
func (p *Portal) Connections() int64 { return p.conns.Load() }

// BytesReceived counts every request body byte the portal read, across completed, refused (503)
// and broken requests.
func (p *Portal) BytesReceived() int64 { return p.bytes.Load() }

// Received lists the completed uploads in the order they completed.
func (p *Portal) Received() []Received {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.received)
}

// Requests lists the requests answered so far, in the order they finished.
func (p *Portal) Requests() []PortalRequest {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.requests)
}

// WaitReceived waits until at least n uploads have completed and returns them; after timeout
// it returns those that did with an error.
func (p *Portal) WaitReceived(n int, timeout time.Duration) ([]Received, error) {
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		p.mu.Lock()
		got, changed := slices.Clone(p.received), p.changed
		p.mu.Unlock()
		if len(got) >= n {
			return got, nil
		}
		select {
		case <-changed:
		case <-deadline.C:
			return got, fmt.Errorf("portal %s: %d of %d uploads completed after %v", p.URL, len(got), n, timeout)
		}
	}
}

// countingListener counts accepted connections and gives each a read buffer of
// portalBufSize, so that TLS records are not read one system call each.
type countingListener struct {
	net.Listener
	n *atomic.Int64
}

func (l countingListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	l.n.Add(1)
	return &bufferedConn{Conn: c, r: bufio.NewReaderSize(c, portalBufSize)}, nil
}

type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (c *bufferedConn) Read(b []byte) (int, error) { return c.r.Read(b) }

func (p *Portal) routes() {
	p.mux = http.NewServeMux()
	switch p.o.Method {
	case PortalPut:
		p.mux.HandleFunc("PUT /upload", p.servePut)
	case PortalPost:
		p.mux.HandleFunc("POST /upload", p.servePost)
	case PortalTus:
		p.mux.HandleFunc("OPTIONS /upload", p.tusOptions)
		p.mux.HandleFunc("OPTIONS /upload/{id}", p.tusOptions)
		p.mux.HandleFunc("POST /upload", tusResumable(p.tusCreate))
		p.mux.HandleFunc("HEAD /upload/{id}", tusResumable(p.tusHead))
		p.mux.HandleFunc("PATCH /upload/{id}", tusResumable(p.tusPatch))
	}
}

// ServeHTTP counts the body, then answers RedirectTo, the token check, and the method's routes.
func (p *Portal) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		http.Error(w, "portal closing", http.StatusServiceUnavailable)
		return
	}
	p.active.Add(1)
	p.mu.Unlock()
	defer p.active.Done()

	body := &countingBody{rc: r.Body, p: p}
	r.Body = body
	sw := &statusWriter{ResponseWriter: w}
	defer func() { p.logRequest(r, sw, body) }()
	if p.o.Method == PortalTus {
		sw.Header().Set("Tus-Resumable", "1.0.0")
	}
	if p.o.RedirectTo != "" {
		sw.Header().Set("Location", p.o.RedirectTo)
		sw.WriteHeader(http.StatusTemporaryRedirect)
		return
	}
	if !p.authorized(r) {
		sw.Header().Set("WWW-Authenticate", `Bearer realm="mftd test portal"`)
		http.Error(sw, "unauthorized", http.StatusUnauthorized)
		return
	}
	p.mux.ServeHTTP(sw, r)
}

func (p *Portal) authorized(r *http.Request) bool {
	if p.o.Token == "" {
		return true
	}
	scheme, cred, ok := strings.Cut(r.Header.Get("Authorization"), " ")
	return ok && strings.EqualFold(scheme, "Bearer") && subtle.ConstantTimeCompare([]byte(cred), []byte(p.o.Token)) == 1
}

// logRequest records r in Requests and the portal's log (never its Authorization header).
func (p *Portal) logRequest(r *http.Request, sw *statusWriter, body *countingBody) {
	status := sw.status
	switch {
	case sw.broken:
		status = 0
	case status == 0:
		status = http.StatusOK
	}
	fmt.Fprintf(p.log, "%s %s %s -> %d, %d body bytes\n", time.Now().Format("15:04:05.000000"), r.Method, r.URL.Path, status, body.n)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.requests = append(p.requests, PortalRequest{Method: r.Method, Path: r.URL.Path, Status: status, Auth: r.Header.Get("Authorization"), Bytes: body.n})
}

// record adds a completed upload and wakes WaitReceived.
func (p *Portal) record(rc Received) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.received = append(p.received, rc)
	close(p.changed)
	p.changed = make(chan struct{})
}

// refuse5xx answers r 503 if it is one of the first Status5xx upload requests, after reading
// its body to the end.
func (p *Portal) refuse5xx(w http.ResponseWriter, r *http.Request) bool {
	p.mu.Lock()
	refuse := p.refused < p.o.Status5xx
	if refuse {
		p.refused++
	}
	p.mu.Unlock()
	if !refuse {
		return false
	}
	io.Copy(io.Discard, r.Body)
	http.Error(w, "portal unavailable", http.StatusServiceUnavailable)
	return true
}

// errFailAfter is the read error of the body FailAfter breaks.
var errFailAfter = errors.New("portal: FailAfter reached")

// countingBody counts a request body's bytes into the portal's total and, once armed for an
// upload request, stops it at FailAfter bytes.
type countingBody struct {
	rc    io.ReadCloser
	p     *Portal
	n     int64
	armed bool // FailAfter applies to this body
	fired bool // this body was stopped at FailAfter: break the connection
}

// arm makes FailAfter apply to this body if it has not broken a connection yet.
func (b *countingBody) arm() { b.armed = b.p.o.FailAfter > 0 && !b.p.fired.Load() }

func (b *countingBody) Read(buf []byte) (int, error) {
	if b.fired {
		return 0, errFailAfter
	}
	if b.armed {
		left := b.p.o.FailAfter - b.n
		switch {
		case left > 0:
			if int64(len(buf)) > left {
				buf = buf[:left]
			}
		case b.p.fired.CompareAndSwap(false, true):
			b.fired = true
			return 0, errFailAfter
		default: // another request got there first
			b.armed = false
		}
	}
	n, err := b.rc.Read(buf)
	b.n += int64(n)
	b.p.bytes.Add(int64(n))
	return n, err
}

func (b *countingBody) Close() error { return b.rc.Close() }

func bodyOf(r *http.Request) *countingBody { return r.Body.(*countingBody) }

// statusWriter remembers the status sent; http.ResponseController reaches the connection
// through Unwrap.
type statusWriter struct {
	http.ResponseWriter
	status int
	broken bool
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// breakConn closes w's connection abruptly: the TCP socket is reset, with no TLS close_notify
// and no response.
func breakConn(w http.ResponseWriter) {
	if sw, ok := w.(*statusWriter); ok {
		sw.broken = true
	}
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // closes the connection too
	}
	if tc, ok := conn.(*tls.Conn); ok {
		conn = tc.NetConn()
	}
	if bc, ok := conn.(*bufferedConn); ok {
		conn = bc.Conn
	}
	if tcp, ok := conn.(*net.TCPConn); ok {
		tcp.SetLinger(0)
	}
	conn.Close()
}

// errStore marks a failure to write received bytes (an answer 500, not the client's fault).
var errStore = errors.New("portal: store")

// hashFile writes bytes to a file (unless nil) and a hash.
type hashFile struct {
	f *os.File
	h hash.Hash
}

func (hf hashFile) Write(b []byte) (int, error) {
	if hf.f != nil {
		if _, err := hf.f.Write(b); err != nil {
			return 0, fmt.Errorf("%w: %w", errStore, err)
		}
	}
	return hf.h.Write(b)
}

var portalBufs = sync.Pool{New: func() any { b := make([]byte, portalBufSize); return &b }}

// copyBody copies src to dst in blocks of up to portalBufSize, filling each block before it is
// written, and returns the bytes written. A write error wraps errStore.
func copyBody(dst io.Writer, src io.Reader) (int64, error) {
	bp := portalBufs.Get().(*[]byte)
	defer portalBufs.Put(bp)
	buf := *bp
	var total int64
	for {
		n, rerr := 0, error(nil)
		for n < len(buf) && rerr == nil {
			var m int
			m, rerr = src.Read(buf[n:])
			n += m
		}
		if n > 0 {
			if _, err := dst.Write(buf[:n]); err != nil {
				return total, err
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil
		}
		if rerr != nil {
			return total, rerr
		}
	}
}

// upload is one put or post file being received.
type upload struct {
	id        string
	tmp, path string // "" with Discard
	f         *os.File
	h         hash.Hash
	n         int64
}

func (p *Portal) newUpload() (*upload, error) {
	u := &upload{id: newID(), h: sha256.New()}
	if p.o.Discard {
		return u, nil
	}
	u.path = filepath.Join(p.o.Dir, u.id)
	u.tmp = u.path + ".part"
	f, err := os.OpenFile(u.tmp, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", errStore, err)
	}
	u.f = f
	return u, nil
}

func (u *upload) copyFrom(r io.Reader) error {
	n, err := copyBody(hashFile{u.f, u.h}, r)
	u.n += n
	return err
}

func (u *upload) sum() string { return hex.EncodeToString(u.h.Sum(nil)) }

// abort removes what was stored.
func (u *upload) abort() {
	if u.f != nil {
		u.f.Close()
		os.Remove(u.tmp)
	}
}

// commit closes and renames the file to Dir/ID.
func (u *upload) commit() error {
	if u.f == nil {
		return nil
	}
	err := u.f.Close()
	if err == nil {
		err = os.Rename(u.tmp, u.path)
	}
	if err != nil {
		os.Remove(u.tmp)
		return fmt.Errorf("%w: %w", errStore, err)
	}
	return nil
}

// readFailed answers a body that could not be read or stored: the connection is broken if
// FailAfter stopped it, else 500 for a store error and 400 for a read error.
func readFailed(w http.ResponseWriter, body *countingBody, err error) {
	switch {
	case body.fired:
		breakConn(w)
	case errors.Is(err, errStore):
		http.Error(w, "portal could not store the upload", http.StatusInternalServerError)
	default:
		http.Error(w, "the request body could not be read", http.StatusBadRequest)
	}
}

// finish checks the upload against Content-Length and the claimed digest, then keeps and
// records it and answers 201, or answers 400 and keeps nothing.
func (p *Portal) finish(w http.ResponseWriter, r *http.Request, u *upload, bodyLen int64, name, claimed string) {
	if r.ContentLength >= 0 && bodyLen != r.ContentLength {
		u.abort()
		http.Error(w, "the body does not match Content-Length", http.StatusBadRequest)
		return
	}
	sum := u.sum()
	if claimed != "" && claimed != sum {
		u.abort()
		http.Error(w, "the body does not match the claimed sha-256", http.StatusBadRequest)
		return
	}
	if err := u.commit(); err != nil {
		readFailed(w, bodyOf(r), err)
		return
	}
	p.record(Received{Method: p.o.Method, Name: name, Size: u.n, SHA256: sum, ClaimedSHA256: claimed,
		ID: u.id, Auth: r.Header.Get("Authorization"), Path: u.path})
	w.Header().Set("Location", "/files/"+u.id)
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	fmt.Fprintf(w, "{\"id\":%q}\n", u.id)
}

func (p *Portal) servePut(w http.ResponseWriter, r *http.Request) {
	if p.refuse5xx(w, r) {
		return
	}
	if r.ContentLength < 0 {
		http.Error(w, "Content-Length required", http.StatusLengthRequired)
		return
	}
	name := "upload"
	if cd := r.Header.Get("Content-Disposition"); cd != "" {
		_, params, err := mime.ParseMediaType(cd)
		if err != nil {
			http.Error(w, "Content-Disposition does not parse", http.StatusBadRequest)
			return
		}
		if fn := params["filename"]; fn != "" {
			name = fn
		}
	}
	claimed, err := parseReprDigest(r.Header.Values("Repr-Digest"))
	if err != nil {
		http.Error(w, "Repr-Digest: "+err.Error(), http.StatusBadRequest)
		return
	}
	u, err := p.newUpload()
	if err != nil {
		readFailed(w, bodyOf(r), err)
		return
	}
	body := bodyOf(r)
	body.arm()
	if err := u.copyFrom(body); err != nil {
		u.abort()
		readFailed(w, body, err)
		return
	}
	p.finish(w, r, u, body.n, name, claimed)
}

func (p *Portal) servePost(w http.ResponseWriter, r *http.Request) {
	if p.refuse5xx(w, r) {
		return
	}
	body := bodyOf(r)
	body.arm()
	mr, err := r.MultipartReader()
	if err != nil {
		http.Error(w, "multipart/form-data required", http.StatusBadRequest)
		return
	}
	var (
		u             *upload
		name, claimed string
		sawDigest     bool
	)
	abort := func() {
		if u != nil {
			u.abort()
		}
	}
	fail := func(status int, msg string) {
		abort()
		http.Error(w, msg, status)
	}
	for {
		part, err := mr.NextRawPart()
		if err == io.EOF {
			break
		}
		if err != nil {
			if body.fired {
				abort()
				breakConn(w)
				return
			}
			fail(http.StatusBadRequest, "the multipart body does not parse")
			return
		}
		disp, params, err := mime.ParseMediaType(part.Header.Get("Content-Disposition"))
		if err != nil || disp != "form-data" {
			fail(http.StatusBadRequest, "a part has no Content-Disposition: form-data")
			return
		}
		switch params["name"] {
		case "sha256":
			v, err := io.ReadAll(io.LimitReader(part, 129))
			if err != nil {
				abort()
				readFailed(w, body, err)
				return
			}
			if sawDigest {
				fail(http.StatusBadRequest, "field sha256 given twice")
				return
			}
			sawDigest = true
			if claimed, err = parseHexDigest(string(v)); err != nil {
				fail(http.StatusBadRequest, "field sha256: "+err.Error())
				return
			}
		case "file":
			if u != nil {
				fail(http.StatusBadRequest, "part file given twice")
				return
			}
			if name = params["filename"]; name == "" {
				fail(http.StatusBadRequest, "part file has no filename")
				return
			}
			if u, err = p.newUpload(); err != nil {
				readFailed(w, body, err)
				return
			}
			if err := u.copyFrom(part); err != nil {
				abort()
				readFailed(w, body, err)
				return
			}
		default:
			if _, err := io.Copy(io.Discard, part); err != nil {
				abort()
				readFailed(w, body, err)
				return
			}
		}
	}
	if u == nil {
		fail(http.StatusBadRequest, "no part file")
		return
	}
	if _, err := io.Copy(io.Discard, body); err != nil { // the epilogue
		u.abort()
		readFailed(w, body, err)
		return
	}
	p.finish(w, r, u, body.n, name, claimed)
}

// tusUpload is one tus upload's state.
type tusUpload struct {
	id, name, claimed, metadata string
	length                      int64
	tmp, path                   string // "" with Discard

	mu     sync.Mutex
	offset int64
	h      hash.Hash
	done   bool
	bad    bool // overflowed or failed its digest check: no more PATCHes
}

func tusResumable(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Tus-Resumable") != "1.0.0" {
			w.Header().Set("Tus-Version", "1.0.0")
			http.Error(w, "Tus-Resumable: 1.0.0 required", http.StatusPreconditionFailed)
			return
		}
		next(w, r)
	}
}

func (p *Portal) tusOptions(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Tus-Version", "1.0.0")
	w.Header().Set("Tus-Extension", "creation")
	w.WriteHeader(http.StatusNoContent)
}

func (p *Portal) tusCreate(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Upload-Defer-Length") != "" {
		http.Error(w, "Upload-Defer-Length is not supported", http.StatusBadRequest)
		return
	}
	length, err := parseTusUint(r.Header.Get("Upload-Length"))
	if err != nil {
		http.Error(w, "Upload-Length: "+err.Error(), http.StatusBadRequest)
		return
	}
	if r.ContentLength != 0 {
		http.Error(w, "creation-with-upload is not supported", http.StatusBadRequest)
		return
	}
	raw := r.Header.Get("Upload-Metadata")
	md, err := parseTusMetadata(raw)
	if err != nil {
		http.Error(w, "Upload-Metadata: "+err.Error(), http.StatusBadRequest)
		return
	}
	u := &tusUpload{id: newID(), name: string(md["filename"]), metadata: raw, length: length, h: sha256.New()}
	if u.name == "" {
		http.Error(w, "Upload-Metadata: filename required", http.StatusBadRequest)
		return
	}
	if v, ok := md["sha256"]; ok {
		if u.claimed, err = parseHexDigest(string(v)); err != nil {
			http.Error(w, "Upload-Metadata: sha256: "+err.Error(), http.StatusBadRequest)
			return
		}
	}
	if !p.o.Discard {
		u.path = filepath.Join(p.o.Dir, u.id)
		u.tmp = u.path + ".part"
		if err := os.WriteFile(u.tmp, nil, 0o600); err != nil {
			http.Error(w, "portal could not store the upload", http.StatusInternalServerError)
			return
		}
	}
	if length == 0 {
		if status, msg := p.tusComplete(u, r); status != 0 {
			http.Error(w, msg, status)
			return
		}
	}
	p.mu.Lock()
	p.uploads[u.id] = u
	p.mu.Unlock()
	w.Header().Set("Location", "https://"+r.Host+"/upload/"+u.id)
	w.WriteHeader(http.StatusCreated)
}

func (p *Portal) tusUpload(id string) *tusUpload {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.uploads[id]
}

func (p *Portal) tusHead(w http.ResponseWriter, r *http.Request) {
	u := p.tusUpload(r.PathValue("id"))
	if u == nil {
		http.NotFound(w, r)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Upload-Offset", strconv.FormatInt(u.offset, 10))
	w.Header().Set("Upload-Length", strconv.FormatInt(u.length, 10))
	if u.metadata != "" {
		w.Header().Set("Upload-Metadata", u.metadata)
	}
	w.WriteHeader(http.StatusOK)
}

func (p *Portal) tusPatch(w http.ResponseWriter, r *http.Request) {
	if p.refuse5xx(w, r) {
		return
	}
	u := p.tusUpload(r.PathValue("id"))
	if u == nil {
		http.NotFound(w, r)
		return
	}
	if r.Header.Get("Content-Type") != "application/offset+octet-stream" {
		http.Error(w, "Content-Type: application/offset+octet-stream required", http.StatusUnsupportedMediaType)
		return
	}
	offset, err := parseTusUint(r.Header.Get("Upload-Offset"))
	if err != nil {
		http.Error(w, "Upload-Offset: "+err.Error(), http.StatusBadRequest)
		return
	}
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.bad:
		http.Error(w, "the upload failed", http.StatusGone)
		return
	case offset != u.offset:
		http.Error(w, "Upload-Offset does not match the upload's offset", http.StatusConflict)
		return
	case r.ContentLength > u.length-u.offset:
		http.Error(w, "the body goes past Upload-Length", http.StatusRequestEntityTooLarge)
		return
	}
	body := bodyOf(r)
	body.arm()
	remaining := u.length - u.offset
	var f *os.File
	if u.tmp != "" {
		if f, err = os.OpenFile(u.tmp, os.O_WRONLY, 0); err == nil {
			_, err = f.Seek(u.offset, io.SeekStart)
		}
		if err != nil {
			if f != nil {
				f.Close()
			}
			u.bad = true
			http.Error(w, "portal could not store the upload", http.StatusInternalServerError)
			return
		}
	}
	// The bytes that arrived are kept even if the body breaks off, as a tus server does.
	n, err := copyBody(hashFile{f, u.h}, io.LimitReader(body, remaining))
	u.offset += n
	if f != nil {
		if cerr := f.Close(); cerr != nil && err == nil {
			err = fmt.Errorf("%w: %w", errStore, cerr)
		}
	}
	if err != nil {
		if errors.Is(err, errStore) {
			u.bad = true
		}
		readFailed(w, body, err)
		return
	}
	if r.ContentLength < 0 && n == remaining {
		if m, _ := body.Read(make([]byte, 1)); m > 0 {
			u.bad = true
			http.Error(w, "the body goes past Upload-Length", http.StatusRequestEntityTooLarge)
			return
		}
	}
	if u.offset == u.length && !u.done {
		if status, msg := p.tusComplete(u, r); status != 0 {
			http.Error(w, msg, status)
			return
		}
	}
	w.Header().Set("Upload-Offset", strconv.FormatInt(u.offset, 10))
	w.WriteHeader(http.StatusNoContent)
}

// tusComplete checks a full upload against its claimed digest and keeps and records it, or
// returns the status and message to answer; u.mu is held (or u is not shared yet).
func (p *Portal) tusComplete(u *tusUpload, r *http.Request) (int, string) {
	sum := hex.EncodeToString(u.h.Sum(nil))
	if u.claimed != "" && u.claimed != sum {
		u.bad = true
		if u.tmp != "" {
			os.Remove(u.tmp)
		}
		return http.StatusBadRequest, "the upload does not match the claimed sha256"
	}
	if u.tmp != "" {
		if err := os.Rename(u.tmp, u.path); err != nil {
			u.bad = true
			return http.StatusInternalServerError, "portal could not store the upload"
		}
	}
	u.done = true
	p.record(Received{Method: PortalTus, Name: u.name, Size: u.length, SHA256: sum, ClaimedSHA256: u.claimed,
		ID: u.id, Auth: r.Header.Get("Authorization"), Path: u.path})
	return 0, ""
}

// parseReprDigest returns the hex sha-256 of Repr-Digest header values ("sha-256=:BASE64:",
// members separated by commas, other algorithms ignored), or "" if none names sha-256.
func parseReprDigest(values []string) (string, error) {
	found := ""
	for _, v := range values {
		for member := range strings.SplitSeq(v, ",") {
			if member = strings.TrimSpace(member); member == "" {
				continue
			}
			key, val, ok := strings.Cut(member, "=")
			if !ok {
				return "", errors.New("a member is not key=value")
			}
			if key != "sha-256" {
				continue
			}
			val, _, _ = strings.Cut(val, ";") // parameters
			b64, pre := strings.CutPrefix(val, ":")
			b64, suf := strings.CutSuffix(b64, ":")
			if !pre || !suf || found != "" {
				return "", errors.New("sha-256 must be given once, as a byte sequence :BASE64: of the digest")
			}
			sum, err := base64.StdEncoding.Strict().DecodeString(b64)
			if err != nil || len(sum) != sha256.Size {
				return "", errors.New("sha-256 is not the base64 of 32 bytes")
			}
			found = hex.EncodeToString(sum)
		}
	}
	return found, nil
}

// parseHexDigest accepts 64 hex digits in either case and returns them in lower case.
func parseHexDigest(s string) (string, error) {
	if len(s) != 2*sha256.Size {
		return "", errors.New("not 64 hexadecimal digits")
	}
	if _, err := hex.DecodeString(s); err != nil {
		return "", errors.New("not 64 hexadecimal digits")
	}
	return strings.ToLower(s), nil
}

// parseTusUint parses a tus number: 1 to 19 ASCII digits.
func parseTusUint(s string) (int64, error) {
	if s == "" || len(s) > 19 || strings.TrimLeft(s, "0123456789") != "" {
		return 0, errors.New("not a non-negative decimal integer")
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, errors.New("out of range")
	}
	return n, nil
}

// parseTusMetadata decodes Upload-Metadata: comma-separated "key base64" pairs (the value
// optional), keys unique.
func parseTusMetadata(s string) (map[string][]byte, error) {
	md := map[string][]byte{}
	if strings.TrimSpace(s) == "" {
		return md, nil
	}
	for pair := range strings.SplitSeq(s, ",") {
		key, val, _ := strings.Cut(strings.TrimSpace(pair), " ")
		if key == "" {
			return nil, errors.New("empty key")
		}
		if _, dup := md[key]; dup {
			return nil, errors.New("duplicate key")
		}
		v, err := base64.StdEncoding.Strict().DecodeString(strings.TrimSpace(val))
		if err != nil {
			return nil, errors.New("a value is not base64")
		}
		md[key] = v
	}
	return md, nil
}

// newID is 24 random hex digits.
func newID() string {
	var b [12]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
