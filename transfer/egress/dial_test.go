package egress

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mftd/mftd/policy"
)

// testPKI is a test CA and a server certificate it signed for the test
// host names.
type testPKI struct {
	caPEM []byte
	pool  *x509.CertPool
	cert  tls.Certificate
}

func newPKI(t *testing.T) testPKI {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	caTmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "mftd egress test CA"},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	leafTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2),
		Subject:      pkix.Name{CommonName: "portal.test"},
		DNSNames:     []string{"portal.test", "other.test", "localhost"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(ca)
	return testPKI{
		caPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}),
		pool:  pool,
		cert:  tls.Certificate{Certificate: [][]byte{leafDER}, PrivateKey: key},
	}
}

// server is an httptest TLS server on 127.0.0.1 that counts the
// connections it accepts.
type server struct {
	*httptest.Server
	conns atomic.Int64
	port  string
}

func newServer(t *testing.T, pki testPKI, h http.Handler) *server {
	t.Helper()
	s := &server{Server: httptest.NewUnstartedServer(h)}
	s.TLS = &tls.Config{Certificates: []tls.Certificate{pki.cert}}
	s.Config.ConnState = func(_ net.Conn, cs http.ConnState) {
		if cs == http.StateNew {
			s.conns.Add(1)
		}
	}
	s.StartTLS()
	t.Cleanup(s.Close)
	_, s.port, _ = net.SplitHostPort(s.Listener.Addr().String())
	return s
}

// fakeDNS resolves the test names; any other name does not exist.
func fakeDNS(names map[string][]netip.Addr) lookupFunc {
	return func(_ context.Context, _, host string) ([]netip.Addr, error) {
		if a, ok := names[host]; ok {
			return append([]netip.Addr(nil), a...), nil
		}
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
}

var loopback = []netip.Addr{netip.MustParseAddr("127.0.0.1")}

// fixture: the portal at portal.test, another server at other.test, both
// on 127.0.0.1, and a client for the portal allowing private addresses.
type fixture struct {
	portal, other *server
	p             policy.Portal
	client        *http.Client
}

func newFixture(t *testing.T, h http.Handler) *fixture {
	t.Helper()
	pki := newPKI(t)
	f := &fixture{}
	f.portal = newServer(t, pki, h)
	f.other = newServer(t, pki, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "other") }))
	f.p = policy.Portal{Name: "ukds", URL: "https://portal.test:" + f.portal.port + "/api/files", Method: policy.PortalPut, AllowPrivate: true}
	f.client = newClient(f.p, pki.pool, fakeDNS(map[string][]netip.Addr{"portal.test": loopback, "other.test": loopback}))
	t.Cleanup(f.client.CloseIdleConnections)
	return f
}

func (f *fixture) url(host, path string) string {
	return "https://" + host + path
}

func get(c *http.Client, u string) (string, error) {
	resp, err := c.Get(u)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return "", err
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %s", resp.Status)
	}
	return string(b), nil
}

func hello(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }

// TestLoopbackRefused: the real resolver, a portal name that resolves to
// loopback, no AllowPrivate: refused before connecting, and the error names
// the address class but not the bearer token.
func TestLoopbackRefused(t *testing.T) {
	pki := newPKI(t)
	srv := newServer(t, pki, http.HandlerFunc(hello))
	p := policy.Portal{Name: "ukds", URL: "https://localhost:" + srv.port + "/", Method: policy.PortalPut}
	c := NewClient(p, pki.pool)
	defer c.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPut, p.URL, strings.NewReader("data"))
	req.Header.Set("Authorization", "Bearer s3cret-token")
	resp, err := c.Do(req)
	if err == nil {
		resp.Body.Close()
		t.Fatal("a portal on loopback was reached without AllowPrivate")
	}
	var ae *AddressError
	if !errors.Is(err, ErrForbiddenAddress) || !errors.As(err, &ae) || ae.Class != "loopback" {
		t.Fatalf("error %v, want a loopback *AddressError", err)
	}
	if msg := err.Error(); !strings.Contains(msg, "loopback") || strings.Contains(msg, "s3cret") {
		t.Fatalf("error %q: want the class, not the token", msg)
	}
	if n := srv.conns.Load(); n != 0 {
		t.Fatalf("the server saw %d connections", n)
	}
}

// TestAllowPrivate: the same portal with AllowPrivate, through the real
// resolver and the CA pool: it works.
func TestAllowPrivate(t *testing.T) {
	pki := newPKI(t)
	srv := newServer(t, pki, http.HandlerFunc(hello))
	p := policy.Portal{Name: "ukds", URL: "https://localhost:" + srv.port + "/", Method: policy.PortalPut, AllowPrivate: true}
	c := NewClient(p, pki.pool)
	defer c.CloseIdleConnections()
	if body, err := get(c, p.URL); err != nil || body != "hello" {
		t.Fatalf("GET = %q, %v", body, err)
	}
}

// TestForbiddenAddresses: every class of internal address the name may
// resolve to is refused without AllowPrivate, also when only one of the
// name's addresses is internal.
func TestForbiddenAddresses(t *testing.T) {
	public := netip.MustParseAddr("192.0.2.10") // TEST-NET-1: never dialled, the check comes first
	tests := []struct {
		addr, class string
	}{
		{"127.0.0.1", "loopback"},
		{"127.255.0.9", "loopback"},
		{"::1", "loopback"},
		{"::ffff:127.0.0.1", "loopback"},
		{"10.1.2.3", "private"},
		{"172.16.0.1", "private"},
		{"192.168.1.1", "private"},
		{"::ffff:10.0.0.1", "private"},
		{"fc00::1", "private"},
		{"fd00:ec2::254", "private"},
		{"169.254.169.254", "link-local"},
		{"::ffff:169.254.169.254", "link-local"},
		{"fe80::1", "link-local"},
		{"0.0.0.0", "unspecified"},
		{"0.1.2.3", "unspecified"},
		{"::", "unspecified"},
		{"224.0.0.1", "multicast"},
		{"ff02::1", "multicast"},
		{"100.64.0.1", "carrier-grade NAT"},
		{"100.127.255.254", "carrier-grade NAT"},
		{"255.255.255.255", "reserved"},
		{"64:ff9b::a9fe:a9fe", "link-local (NAT64)"},
		{"::7f00:1", "IPv4-compatible"},
	}
	for _, tt := range tests {
		a := netip.MustParseAddr(tt.addr)
		if got := AddressClass(a); got != tt.class {
			t.Errorf("AddressClass(%s) = %q, want %q", a, got, tt.class)
		}
		p := policy.Portal{Name: "ukds", URL: "https://portal.test/", Method: policy.PortalPut}
		c := newClient(p, nil, fakeDNS(map[string][]netip.Addr{"portal.test": {public, a}}))
		_, err := get(c, p.URL)
		var ae *AddressError
		if !errors.As(err, &ae) || ae.Class != tt.class || !strings.Contains(err.Error(), tt.class) {
			t.Errorf("%s: error %v, want a %s *AddressError", tt.addr, err, tt.class)
		}
	}
	for _, s := range []string{"192.0.2.10", "8.8.8.8", "2001:db8::1", "100.128.0.1", "172.32.0.1", "::ffff:8.8.8.8", "64:ff9b::808:808"} {
		if c := AddressClass(netip.MustParseAddr(s)); c != "" {
			t.Errorf("AddressClass(%s) = %q, want public", s, c)
		}
	}
}

// TestOtherHostRefusedAtDial: the client dials nothing but the portal's
// host and port; the other server sees no connection.
func TestOtherHostRefusedAtDial(t *testing.T) {
	f := newFixture(t, http.HandlerFunc(hello))
	for _, u := range []string{
		f.url("other.test:"+f.other.port, "/"),
		f.url("127.0.0.1:"+f.other.port, "/"),
		f.url("127.0.0.1:"+f.portal.port, "/"), // the portal's address, but not its name
		f.url("portal.test:"+f.other.port, "/"),
		f.url("portal.test", "/"),
		"http://portal.test:" + f.portal.port + "/", // the portal's host and port, in the clear
	} {
		if _, err := get(f.client, u); !errors.Is(err, ErrWrongHost) {
			t.Errorf("GET %s: %v, want ErrWrongHost", u, err)
		}
	}
	if n := f.other.conns.Load() + f.portal.conns.Load(); n != 0 {
		t.Fatalf("servers saw %d connections", n)
	}
	if body, err := get(f.client, f.url("PORTAL.test.:"+f.portal.port, "/")); err != nil || body != "hello" {
		t.Fatalf("GET of the portal spelt differently = %q, %v", body, err)
	}
}

// TestRedirects: same-host https redirects are followed up to 3 times;
// a redirect to another host or to http fails the request and the other
// host sees no connection.
func TestRedirects(t *testing.T) {
	var f *fixture
	mux := http.NewServeMux()
	mux.HandleFunc("/hop/{n}", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.PathValue("n"))
		if n == 0 {
			io.WriteString(w, "arrived")
			return
		}
		http.Redirect(w, r, "/hop/"+strconv.Itoa(n-1), http.StatusFound)
	})
	mux.HandleFunc("/elsewhere", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://other.test:"+f.other.port+"/", http.StatusTemporaryRedirect)
	})
	mux.HandleFunc("/elsewhere-ip", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://127.0.0.1:"+f.other.port+"/", http.StatusFound)
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://portal.test:"+f.portal.port+"/hop/0", http.StatusFound)
	})
	mux.HandleFunc("/userinfo", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "https://portal.test@other.test:"+f.other.port+"/", http.StatusFound)
	})
	f = newFixture(t, mux)
	base := f.url("portal.test:"+f.portal.port, "")

	if body, err := get(f.client, base+"/hop/3"); err != nil || body != "arrived" {
		t.Fatalf("3 same-host redirects: %q, %v", body, err)
	}
	if _, err := get(f.client, base+"/hop/4"); !errors.Is(err, ErrRedirect) {
		t.Fatalf("4 redirects: %v, want ErrRedirect", err)
	}
	for _, path := range []string{"/elsewhere", "/elsewhere-ip", "/plain", "/userinfo"} {
		if _, err := get(f.client, base+path); !errors.Is(err, ErrRedirect) {
			t.Errorf("%s: %v, want ErrRedirect", path, err)
		}
	}
	// A PUT with a body, redirected (307) to another host.
	req, _ := http.NewRequest(http.MethodPut, base+"/elsewhere", strings.NewReader("file"))
	if resp, err := f.client.Do(req); !errors.Is(err, ErrRedirect) {
		if err == nil {
			resp.Body.Close()
		}
		t.Errorf("PUT redirected elsewhere: %v, want ErrRedirect", err)
	}
	if n := f.other.conns.Load(); n != 0 {
		t.Fatalf("the other host saw %d connections", n)
	}
}

// TestProxyEnvironmentIgnored: with proxy variables pointing at a listener,
// requests still go straight to the portal and the proxy sees nothing.
func TestProxyEnvironmentIgnored(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var proxied atomic.Int64
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			proxied.Add(1)
			c.Close()
		}
	}()
	t.Cleanup(func() { ln.Close() })
	proxy := "http://" + ln.Addr().String()
	for _, k := range []string{"HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"} {
		t.Setenv(k, proxy)
	}
	t.Setenv("NO_PROXY", "")
	t.Setenv("no_proxy", "")

	f := newFixture(t, http.HandlerFunc(hello))
	// net/http reads the environment once per process, so a test that ran
	// first could hide a proxy function from the requests below.
	po, ok := f.client.Transport.(portalOnly)
	if !ok {
		t.Fatalf("the egress client's transport is a %T", f.client.Transport)
	}
	if tr, ok := po.rt.(*http.Transport); !ok || tr.Proxy != nil {
		t.Fatal("the egress transport has a proxy function")
	}
	if body, err := get(f.client, f.p.URL); err != nil || body != "hello" {
		t.Fatalf("GET = %q, %v", body, err)
	}
	if n := proxied.Load(); n != 0 {
		t.Fatalf("the proxy saw %d connections", n)
	}
	if n := f.portal.conns.Load(); n != 1 {
		t.Fatalf("the portal saw %d connections, want 1", n)
	}
}

// TestTLS: the portal's certificate must verify against the pool, and TLS
// below 1.2 is refused.
func TestTLS(t *testing.T) {
	pki := newPKI(t)
	dns := fakeDNS(map[string][]netip.Addr{"portal.test": loopback})
	srv := newServer(t, pki, http.HandlerFunc(hello))
	p := policy.Portal{Name: "ukds", URL: "https://portal.test:" + srv.port + "/", Method: policy.PortalPut, AllowPrivate: true}

	var unknown x509.UnknownAuthorityError
	if _, err := get(newClient(p, nil, dns), p.URL); !errors.As(err, &unknown) {
		t.Errorf("system roots only: %v, want an unknown authority", err)
	}
	if _, err := get(newClient(p, newPKI(t).pool, dns), p.URL); !errors.As(err, &unknown) {
		t.Errorf("another CA: %v, want an unknown authority", err)
	}
	pool, err := CertPool(pki.caPEM)
	if err != nil {
		t.Fatal(err)
	}
	if body, err := get(newClient(p, pool, dns), p.URL); err != nil || body != "hello" {
		t.Errorf("system roots plus the test CA: %q, %v", body, err)
	}
	if _, err := CertPool([]byte("not a certificate")); err == nil {
		t.Error("CertPool accepted a file with no certificate")
	}

	old := httptest.NewUnstartedServer(http.HandlerFunc(hello))
	old.TLS = &tls.Config{Certificates: []tls.Certificate{pki.cert}, MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	old.StartTLS()
	defer old.Close()
	_, port, _ := net.SplitHostPort(old.Listener.Addr().String())
	p.URL = "https://portal.test:" + port + "/"
	if _, err := get(newClient(p, pki.pool, dns), p.URL); err == nil || !strings.Contains(err.Error(), "protocol version") {
		t.Errorf("TLS 1.1 server: %v, want a protocol version failure", err)
	}
}

// TestInvalidPortal: a portal that fails CheckPortal gets a client that
// dials nothing.
func TestInvalidPortal(t *testing.T) {
	for _, u := range []string{"https://127.0.0.1/", "http://portal.test/", "https://a@portal.test/"} {
		p := policy.Portal{Name: "ukds", URL: u, Method: policy.PortalPut, AllowPrivate: true}
		c := newClient(p, nil, fakeDNS(map[string][]netip.Addr{"portal.test": loopback}))
		if _, err := get(c, "https://portal.test/"); !errors.Is(err, policy.ErrBadPortal) {
			t.Errorf("portal %q: %v, want ErrBadPortal", u, err)
		}
	}
}
