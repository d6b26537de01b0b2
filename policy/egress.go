package policy

import (
	"errors"
	"fmt"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/net/idna"
)

// ActionEgressRequest names an egress request in audit records. It is
// decided by DecideEgress, not DecideShare (which refuses it as unknown).
const ActionEgressRequest Action = "egress.request"

// ErrBadPortal is wrapped by CheckPortal refusals.
var ErrBadPortal = errors.New("policy: invalid portal")

// The portal push methods.
const (
	PortalPut  = "put"  // the raw body
	PortalPost = "post" // a multipart form
	PortalTus  = "tus"  // a tus upload, resumable
)

// maxHostLen bounds a host name in its ASCII (A-label) form, as DNS does.
const maxHostLen = 253

// Portal is one admin-allowlisted egress destination.
type Portal struct {
	Name   string // as a share name (CheckShareName's rule)
	URL    string // https, a host name (never an IP literal), optional port
	Method string // PortalPut, PortalPost or PortalTus
	// AllowPrivate lets the egress client connect to loopback, private,
	// link-local and other internal addresses: for on-premises portals and
	// tests only.
	AllowPrivate bool
}

// CheckPortal reports whether p may be allowlisted: a valid name, a known
// method, and a URL that is https, has no userinfo, no fragment and a host
// name that is neither an IP literal in any spelling (dotted, decimal,
// octal, hex, bracketed IPv6) nor a wildcard. The host is compared in its
// normal form: lower-case, one trailing dot removed, Unicode labels
// converted to punycode (IDNA 2008 lookup rules, golang.org/x/net/idna),
// then plain letters, digits and hyphens. Refusals wrap ErrBadPortal and
// never echo the URL (it may carry a query the admin did not mean to log).
func CheckPortal(p Portal) error {
	if err := checkGroupName("portal", p.Name); err != nil {
		return fmt.Errorf("%w: %w", ErrBadPortal, err)
	}
	switch p.Method {
	case PortalPut, PortalPost, PortalTus:
	default:
		return fmt.Errorf("%w: portal %s: method is put, post or tus", ErrBadPortal, p.Name)
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		return fmt.Errorf("%w: portal %s: the URL does not parse", ErrBadPortal, p.Name)
	}
	if u.Fragment != "" || strings.Contains(p.URL, "#") {
		return fmt.Errorf("%w: portal %s: the URL has a fragment", ErrBadPortal, p.Name)
	}
	if _, _, err := portalAddr(u); err != nil {
		return fmt.Errorf("%w: portal %s: %w", ErrBadPortal, p.Name, err)
	}
	return nil
}

// PortalAddr is p's URL's normalised host and port ("host:443" when the
// URL names no port): the one address an egress client for p may dial. It
// fails when CheckPortal does.
func PortalAddr(p Portal) (string, error) {
	if err := CheckPortal(p); err != nil {
		return "", err
	}
	u, _ := url.Parse(p.URL) // CheckPortal parsed it
	host, port, _ := portalAddr(u)
	return host + ":" + port, nil
}

// PortalHostMatches reports whether target is on allowed's host: https,
// no userinfo, and after normalisation (as CheckPortal) the same host name
// and port (443 when absent). It is false when allowed fails CheckPortal or
// target's host is an IP literal in any spelling. The path is not compared:
// it decides where a connection may go, such as whether a redirect may be
// followed, not which resource is asked for.
func PortalHostMatches(allowed Portal, target *url.URL) bool {
	if target == nil || CheckPortal(allowed) != nil {
		return false
	}
	u, _ := url.Parse(allowed.URL)
	ah, ap, _ := portalAddr(u)
	th, tp, err := portalAddr(target)
	return err == nil && th == ah && tp == ap
}

// portalAddr checks u as an allowlistable https URL and returns its
// normalised host and port. Its errors are fixed messages.
func portalAddr(u *url.URL) (host, port string, err error) {
	switch {
	case !strings.EqualFold(u.Scheme, "https"):
		return "", "", errors.New("the URL is not https")
	case u.Opaque != "":
		return "", "", errors.New("the URL has no host")
	case u.User != nil:
		return "", "", errors.New("the URL has userinfo")
	}
	host, err = normalHost(u.Hostname())
	if err != nil {
		return "", "", err
	}
	port, err = normalPort(u)
	if err != nil {
		return "", "", err
	}
	return host, port, nil
}

// normalHost is h lower-cased, without one trailing dot, in punycode, and
// checked to be a host name of letter-digit-hyphen labels that no URL
// parser reads as an IP address.
func normalHost(h string) (string, error) {
	if h == "" {
		return "", errors.New("the URL has no host")
	}
	if strings.Contains(h, "*") {
		return "", errors.New("the host is a wildcard")
	}
	if _, err := netip.ParseAddr(h); err == nil || strings.ContainsAny(h, ":[]%") {
		return "", errors.New("the host is an IP literal")
	}
	h = strings.ToLower(h)
	h = strings.TrimSuffix(h, ".")
	a, err := idna.Lookup.ToASCII(h)
	if err != nil {
		return "", errors.New("the host is not a valid host name")
	}
	if a == "" || len(a) > maxHostLen {
		return "", errors.New("the host is not a valid host name")
	}
	labels := strings.Split(a, ".")
	for _, l := range labels {
		if !ldhLabel(l) {
			return "", errors.New("the host is not a valid host name")
		}
	}
	if numericLabel(labels[len(labels)-1]) {
		// WHATWG URL: a host whose last label is a number is an IPv4
		// address (2130706433, 0x7f.1, 0177.0.0.1, 127.1).
		return "", errors.New("the host is an IP literal")
	}
	return a, nil
}

// ldhLabel: 1 to 63 lower-case letters, digits and hyphens, not starting
// or ending with a hyphen.
func ldhLabel(l string) bool {
	if l == "" || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
		return false
	}
	for i := 0; i < len(l); i++ {
		c := l[i]
		if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

// numericLabel: decimal digits, or 0x and hex digits, as an IPv4 parser
// following the WHATWG URL standard reads a number.
func numericLabel(l string) bool {
	if rest, ok := strings.CutPrefix(l, "0x"); ok {
		return strings.Trim(rest, "0123456789abcdef") == ""
	}
	return l != "" && strings.Trim(l, "0123456789") == ""
}

// normalPort is u's port in decimal without leading zeros, 443 when
// absent; 1 to 65535 only.
func normalPort(u *url.URL) (string, error) {
	p := u.Port()
	if p == "" {
		if strings.HasSuffix(u.Host, ":") {
			return "", errors.New("the URL has an empty port")
		}
		return "443", nil
	}
	n, err := strconv.ParseUint(p, 10, 16)
	if err != nil || n == 0 || p[0] == '0' {
		return "", errors.New("the URL has an invalid port")
	}
	return strconv.FormatUint(n, 10), nil
}

// EgressRequest is one request to push a staged file of a share to a
// portal.
type EgressRequest struct {
	// Actor is the authenticated, canonical user name; never empty.
	Actor string
	// Emergency: the actor's session was opened with an emergency code.
	// It never sends anything out.
	Emergency bool
	// Share is the share's snapshot, loaded fresh for the request.
	Share Snapshot
	// SharePortals is the admin's allowlist of portal names for this
	// share; nil or empty: the share has no egress.
	SharePortals []string
	// Portal is the portal name asked for.
	Portal string
}

// DecideEgress is a pure decision over one egress request. It allows only
// a member of the share who holds the outbound right, in a normal session,
// for a share with egress configured, to a portal on that share's list.
// Roles in the project give nothing here: the IAO or an IAA who is not a
// member with the outbound right is refused like any member without it.
//
// An actor who is not in the share or its project at all is refused with
// ErrNotVisible (answered as if the share did not exist), so neither the
// share nor its egress configuration leaks; every other refusal is
// ErrDenied. Reasons are fixed strings for the audit record.
func DecideEgress(r EgressRequest) Decision {
	if r.Actor == "" {
		return deny(ErrDenied, "no actor")
	}
	if r.Emergency {
		return deny(ErrDenied, "not allowed in an emergency-code session")
	}
	s := r.Share
	outbound, member := s.Members[r.Actor]
	switch {
	case s.Share == "" || !member && s.RoleOf(r.Actor) == RoleNone:
		return deny(ErrNotVisible, "not in the share")
	case !member:
		return deny(ErrDenied, "not a member of the share (a project role gives no outbound right)")
	case !outbound:
		return deny(ErrDenied, "member without the outbound right")
	case len(r.SharePortals) == 0:
		return deny(ErrDenied, "the share has no egress")
	case r.Portal == "":
		return deny(ErrDenied, "no portal")
	}
	for _, p := range r.SharePortals {
		if p == r.Portal {
			return allow("member with the outbound right, portal on the share's list")
		}
	}
	return deny(ErrDenied, "portal not on the share's list")
}

// The checks an egress request may run, by their config names.
const (
	EgressCheckMalware     = "malware"     // the malware scanner (built-in checks and clamd)
	EgressCheckIdentifiers = "identifiers" // NHS numbers, UK postcodes, dates of birth
)

// EgressSettings is the administrator's egress configuration, replaced as a
// whole on reload.
type EgressSettings struct {
	Portals map[string]EgressPortal // by name
	Shares  map[string]EgressShare  // by share name; a share not here has no egress
	// Settle: a staged file is ready once unchanged this long.
	Settle time.Duration
	// Attempts of one push before the item fails.
	Attempts int
	// RemoveSent: delete the staged file once it is sent.
	RemoveSent bool
}

// EgressPortal is an allowlisted portal and where its credentials are.
type EgressPortal struct {
	Portal
	CAFile    string // extra CA (PEM); "" for the system roots
	TokenFile string // bearer credential; "" for none
}

// EgressShare is one share's egress.
type EgressShare struct {
	Portals         []string // names of allowlisted portals
	RequireApproval bool
	Checks          []string // EgressCheckMalware, EgressCheckIdentifiers
}

// Has reports whether check is one of the share's checks.
func (s EgressShare) Has(check string) bool { return slices.Contains(s.Checks, check) }

// Actions of the egress review, for audit records.
const (
	ActionEgressApprove Action = "egress.approve"
	ActionEgressReject  Action = "egress.reject"
	ActionEgressView    Action = "egress.view"
)

// EgressReview is a decision on an item by someone other than its
// requester: approving or rejecting it, or viewing it.
type EgressReview struct {
	Actor     string // authenticated, canonical; never empty
	Emergency bool   // the actor's session was opened with an emergency code
	Action    Action // ActionEgressApprove, ActionEgressReject or ActionEgressView
	Share     Snapshot
	Requester string // who asked for the push (the item's owner)
}

// DecideEgressReview is a pure decision over one review. Only the IAO or an
// IAA of the share's project approves or rejects, never the requester (two
// people see every file that leaves), and never in an emergency-code
// session. Viewing is allowed to the requester and to the IAO and IAAs.
// Anyone else is refused with ErrNotVisible, so an item's existence does not
// leak; other refusals are ErrDenied.
func DecideEgressReview(r EgressReview) Decision {
	if r.Actor == "" {
		return deny(ErrDenied, "no actor")
	}
	role := r.Share.RoleOf(r.Actor)
	reviewer := role == RoleIAO || role == RoleIAA
	if r.Share.Share == "" || !reviewer && r.Actor != r.Requester {
		return deny(ErrNotVisible, "neither the requester nor the IAO or an IAA of the project")
	}
	switch r.Action {
	case ActionEgressView:
		return allow("the requester, or the IAO or an IAA of the project")
	case ActionEgressApprove, ActionEgressReject:
	default:
		return deny(ErrDenied, "unknown action")
	}
	switch {
	case r.Emergency:
		return deny(ErrDenied, "not allowed in an emergency-code session")
	case r.Actor == r.Requester:
		// A requester who is not a reviewer ends here too.
		return deny(ErrDenied, "the requester cannot review their own request")
	}
	return allow("the " + string(role) + " of the project, not the requester")
}
