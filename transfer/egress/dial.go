// Package egress sends staged files out of mftd to allowlisted portals.
// It is the only part of mftd that opens a connection out.
package egress

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"syscall"
	"time"

	"github.com/mftd/mftd/policy"
)

// ErrForbiddenAddress: the portal's name resolved to an address the egress
// client does not connect to (loopback, private, link-local, ...) and the
// portal is not AllowPrivate. Returned as an *AddressError.
var ErrForbiddenAddress = errors.New("egress: address refused")

// ErrWrongHost: a connection to a host or port other than the portal's was
// asked for, and refused before any name lookup.
var ErrWrongHost = errors.New("egress: not the portal's host")

// ErrRedirect: a redirect to another host, to plain http, or one too many.
var ErrRedirect = errors.New("egress: redirect refused")

// maxRedirects is how many same-host https redirects a request follows.
const maxRedirects = 3

// Timeouts of the egress client. There is no overall request timeout:
// pushes stream files of any size; callers bound them with the context.
const (
	dialTimeout           = 30 * time.Second
	tlsHandshakeTimeout   = 15 * time.Second
	responseHeaderTimeout = 5 * time.Minute // after the whole body is sent
	idleConnTimeout       = 90 * time.Second
)

// AddressError is a refusal to connect to Addr, which is of Class
// ("loopback", "private", "link-local", ...). It matches ErrForbiddenAddress.
type AddressError struct {
	Portal string
	Addr   netip.Addr
	Class  string
}

func (e *AddressError) Error() string {
	return fmt.Sprintf("egress: portal %s: refused to connect to %s, a %s address (the portal does not allow private addresses)", e.Portal, e.Addr, e.Class)
}

// Is matches ErrForbiddenAddress.
func (e *AddressError) Is(target error) bool { return target == ErrForbiddenAddress }

// NewClient returns an HTTP client that talks only to p's host and port:
//
//   - it sends nothing but https requests to p's host and port, and dials
//     nothing but p's normalised host:port (policy.PortalAddr): any other
//     scheme, host, port or IP literal is refused with ErrWrongHost;
//   - it resolves the host itself and refuses, unless p.AllowPrivate, if
//     any address is loopback, private (RFC 1918, fc00::/7), link-local
//     (169.254/16 with the cloud metadata address, fe80::/10), unspecified,
//     multicast, broadcast or reserved, carrier-grade NAT (100.64/10), or an
//     IPv4-mapped or NAT64 form of one of those; then it connects to the
//     checked address itself, so there is no second lookup (no DNS
//     rebinding window), and checks the address again at connect;
//   - it ignores proxy environment variables;
//   - TLS is 1.2 or later, verified against caPool, or the system roots
//     when caPool is nil (CertPool builds the system roots plus a portal's
//     CA);
//   - it follows at most 3 redirects, only to https on the same host and
//     port; any other redirect fails the request with ErrRedirect, and the
//     other host is never contacted.
//
// A portal that fails policy.CheckPortal gets a client whose every request
// fails with that error. Errors name the portal, host and address class,
// never request headers; a request URL is echoed by net/http's *url.Error,
// so credentials never go in the URL.
func NewClient(p policy.Portal, caPool *x509.CertPool) *http.Client {
	return newClient(p, caPool, net.DefaultResolver.LookupNetIP)
}

// lookupFunc is net.Resolver.LookupNetIP; tests replace it.
type lookupFunc func(ctx context.Context, network, host string) ([]netip.Addr, error)

func newClient(p policy.Portal, caPool *x509.CertPool, lookup lookupFunc) *http.Client {
	addr, err := policy.PortalAddr(p)
	g := &guard{portal: p, addr: addr, err: err, lookup: lookup}
	g.dialer = &net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second, ControlContext: g.control}
	tlsConfig := &tls.Config{
		MinVersion: tls.VersionTLS12,
		RootCAs:    caPool,
		// Full 16 KiB records from the first byte: pushes are bulk
		// transfers, not pages waiting on their first bytes.
		DynamicRecordSizingDisabled: true,
	}
	tr := &http.Transport{
		Proxy:                 nil, // never from the environment
		DialContext:           g.dial,
		DialTLSContext:        g.dialTLS(tlsConfig),
		ResponseHeaderTimeout: responseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		IdleConnTimeout:       idleConnTimeout,
		MaxIdleConnsPerHost:   4,
		// A push's body goes out in large writes (the default is 4 KiB).
		WriteBufferSize: 64 << 10,
	}
	return &http.Client{Transport: portalOnly{g: g, rt: tr}, CheckRedirect: g.checkRedirect}
}

// portalOnly refuses, before anything is dialled, a request that is not
// https to the portal's host and port: the dialler alone would carry a
// plain http:// request to the right host:port in the clear.
type portalOnly struct {
	g  *guard
	rt http.RoundTripper
}

func (p portalOnly) RoundTrip(req *http.Request) (*http.Response, error) {
	if p.g.err == nil && !policy.PortalHostMatches(p.g.portal, req.URL) {
		if req.Body != nil {
			req.Body.Close() // a RoundTripper always closes the body
		}
		return nil, fmt.Errorf("egress: portal %s: a request that is not https to the portal's host and port: %w", p.g.portal.Name, ErrWrongHost)
	}
	return p.rt.RoundTrip(req)
}

// CertPool is the system roots plus the certificates in caPEM (a portal's
// ca_file), for NewClient. Empty caPEM: the system roots alone.
func CertPool(caPEM []byte) (*x509.CertPool, error) {
	pool, err := x509.SystemCertPool()
	if err != nil {
		return nil, fmt.Errorf("egress: system roots: %w", err)
	}
	if len(caPEM) > 0 && !pool.AppendCertsFromPEM(caPEM) {
		return nil, errors.New("egress: the CA file holds no PEM certificate")
	}
	return pool, nil
}

// guard is the egress client's dialer and redirect policy for one portal.
type guard struct {
	portal policy.Portal
	addr   string // normalised host:port, "" if err
	err    error  // the portal's CheckPortal refusal
	lookup lookupFunc
	dialer *net.Dialer
}

// dial connects to addr, which must be the portal's, at an address checked
// by resolve.
func (g *guard) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	if g.err != nil {
		return nil, fmt.Errorf("egress: %w", g.err)
	}
	if !policy.PortalHostMatches(g.portal, &url.URL{Scheme: "https", Host: addr}) {
		return nil, fmt.Errorf("egress: portal %s: dial %s: %w", g.portal.Name, addr, ErrWrongHost)
	}
	ips, port, err := g.resolve(ctx)
	if err != nil {
		return nil, err
	}
	var errs []error
	for _, ip := range ips {
		c, err := g.dialer.DialContext(ctx, network, netip.AddrPortFrom(ip, port).String())
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("egress: portal %s: connect to %s: %w", g.portal.Name, g.addr, errors.Join(errs...))
}

// resolve looks the portal's host up and checks every address: one
// forbidden address refuses the name, so that which address is tried
// first cannot matter.
func (g *guard) resolve(ctx context.Context) ([]netip.Addr, uint16, error) {
	host, p, _ := net.SplitHostPort(g.addr)
	port, _ := strconv.ParseUint(p, 10, 16) // PortalAddr's port is 1..65535
	ips, err := g.lookup(ctx, "ip", host)
	if err != nil {
		return nil, 0, fmt.Errorf("egress: portal %s: resolve %s: %w", g.portal.Name, host, err)
	}
	if len(ips) == 0 {
		return nil, 0, fmt.Errorf("egress: portal %s: resolve %s: no address", g.portal.Name, host)
	}
	for i, ip := range ips {
		ips[i] = ip.Unmap()
		if err := g.check(ip); err != nil {
			return nil, 0, err
		}
	}
	return ips, uint16(port), nil
}

// check refuses ip unless it is a public address or the portal allows
// private ones.
func (g *guard) check(ip netip.Addr) error {
	if g.portal.AllowPrivate {
		return nil
	}
	if class := AddressClass(ip); class != "" {
		return &AddressError{Portal: g.portal.Name, Addr: ip, Class: class}
	}
	return nil
}

// control checks the address the socket actually connects to: a second
// line behind resolve.
func (g *guard) control(_ context.Context, _, address string, _ syscall.RawConn) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("egress: portal %s: connect to %q: not an address", g.portal.Name, address)
	}
	return g.check(ap.Addr())
}

// checkRedirect follows a redirect only to https on the portal's host and
// port, at most maxRedirects times. The Location is not echoed: it may be
// a presigned URL.
func (g *guard) checkRedirect(req *http.Request, via []*http.Request) error {
	if len(via) > maxRedirects {
		return fmt.Errorf("egress: portal %s: more than %d redirects: %w", g.portal.Name, maxRedirects, ErrRedirect)
	}
	if !policy.PortalHostMatches(g.portal, req.URL) {
		return fmt.Errorf("egress: portal %s: redirect away from the portal's https host: %w", g.portal.Name, ErrRedirect)
	}
	return nil
}

// The address ranges refused beyond those netip classifies.
var (
	nat64    = netip.MustParsePrefix("64:ff9b::/96") // embeds an IPv4 address
	reserved = []struct {
		prefix netip.Prefix
		class  string
	}{
		{netip.MustParsePrefix("0.0.0.0/8"), "unspecified"}, // "this network"
		{netip.MustParsePrefix("100.64.0.0/10"), "carrier-grade NAT"},
		{netip.MustParsePrefix("192.0.0.0/24"), "reserved"},
		{netip.MustParsePrefix("240.0.0.0/4"), "reserved"}, // with broadcast
		{netip.MustParsePrefix("::/96"), "IPv4-compatible"},
		{netip.MustParsePrefix("fec0::/10"), "site-local"},
	}
)

// AddressClass names why the egress client refuses to connect to a (by
// default), or is "" for an address it connects to.
func AddressClass(a netip.Addr) string {
	a = a.Unmap()
	if a.Is6() && nat64.Contains(a) {
		b := a.As16()
		if c := AddressClass(netip.AddrFrom4([4]byte(b[12:]))); c != "" {
			return c + " (NAT64)"
		}
	}
	switch {
	case !a.IsValid():
		return "invalid"
	case a.IsUnspecified():
		return "unspecified"
	case a.IsLoopback():
		return "loopback"
	case a.IsPrivate():
		return "private"
	case a.IsLinkLocalUnicast():
		return "link-local"
	case a.IsMulticast():
		return "multicast"
	}
	for _, r := range reserved {
		if r.prefix.Contains(a) {
			return r.class
		}
	}
	return ""
}
