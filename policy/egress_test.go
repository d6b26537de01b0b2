package policy

import (
	"errors"
	"net/netip"
	"net/url"
	"strings"
	"testing"
)

func TestCheckPortal(t *testing.T) {
	tests := []struct {
		url  string
		ok   bool
		host string // PortalAddr when ok
	}{
		{"https://upload.portal.example/api/files", true, "upload.portal.example:443"},
		{"https://Upload.Portal.EXAMPLE/api", true, "upload.portal.example:443"},
		{"HTTPS://upload.portal.example/", true, "upload.portal.example:443"},
		{"https://upload.portal.example./api", true, "upload.portal.example:443"},
		{"https://upload.portal.example:8443/x?project=7", true, "upload.portal.example:8443"},
		{"https://upload.portal.example:443/", true, "upload.portal.example:443"},
		{"https://bücher.example/", true, "xn--bcher-kva.example:443"},
		{"https://xn--bcher-kva.example/", true, "xn--bcher-kva.example:443"},
		{"https://portal/", true, "portal:443"},
		{"https://123.example/", true, "123.example:443"},
		{"https://0x7f.example/", true, "0x7f.example:443"},

		{"http://upload.portal.example/", false, ""},
		{"ftp://upload.portal.example/", false, ""},
		{"//upload.portal.example/", false, ""},
		{"upload.portal.example/api", false, ""},
		{"https:upload.portal.example", false, ""},
		{"https://user@upload.portal.example/", false, ""},
		{"https://user:pw@upload.portal.example/", false, ""},
		{"https://@upload.portal.example/", false, ""},
		{"https://upload.portal.example@evil.example/", false, ""},
		{"https://upload.portal.example/#frag", false, ""},
		{"https://upload.portal.example/#", false, ""},
		{"https:///api", false, ""},
		{"https://:443/", false, ""},
		{"https://upload.portal.example:/", false, ""},
		{"https://upload.portal.example:0/", false, ""},
		{"https://upload.portal.example:0443/", false, ""},
		{"https://upload.portal.example:65536/", false, ""},
		{"https://upload.portal.example../", false, ""},
		{"https://.upload.portal.example/", false, ""},
		{"https://upload..portal.example/", false, ""},
		{"https://*.portal.example/", false, ""},
		{"https://%2A.portal.example/", false, ""},
		{"https://up_load.portal.example/", false, ""},
		{"https://-upload.portal.example/", false, ""},
		{"https://upload-.portal.example/", false, ""},
		{"https://xn--zz.example/", false, ""},
		{"https://" + strings.Repeat("a", 64) + ".example/", false, ""},
		{"https://" + strings.Repeat("abcdefgh.", 32) + "example/", false, ""},
		// IP literals in every spelling.
		{"https://127.0.0.1/", false, ""},
		{"https://127.0.0.1./", false, ""},
		{"https://169.254.169.254/latest/meta-data/", false, ""},
		{"https://2130706433/", false, ""},
		{"https://0x7f.1/", false, ""},
		{"https://0x7f000001/", false, ""},
		{"https://0177.0.0.1/", false, ""},
		{"https://127.1/", false, ""},
		{"https://1.2.3.0x4/", false, ""},
		{"https://example.0x/", false, ""},
		{"https://[::1]/", false, ""},
		{"https://[::ffff:127.0.0.1]/", false, ""},
		{"https://[fe80::1%25eth0]/", false, ""},
		{"https://１２７.０.０.１/", false, ""},
		{"https://127。0。0。1/", false, ""},
	}
	for _, tt := range tests {
		p := Portal{Name: "ukds", URL: tt.url, Method: PortalPut}
		err := CheckPortal(p)
		if (err == nil) != tt.ok {
			t.Errorf("CheckPortal(%q) = %v, want ok=%v", tt.url, err, tt.ok)
			continue
		}
		if err != nil {
			if !errors.Is(err, ErrBadPortal) {
				t.Errorf("CheckPortal(%q) = %v, not ErrBadPortal", tt.url, err)
			}
			if strings.Contains(err.Error(), tt.url) {
				t.Errorf("CheckPortal(%q) error %q echoes the URL", tt.url, err)
			}
			if u, err := url.Parse(tt.url); err == nil && PortalHostMatches(p, u) {
				t.Errorf("PortalHostMatches of a refused portal %q", tt.url)
			}
			continue
		}
		if addr, err := PortalAddr(p); err != nil || addr != tt.host {
			t.Errorf("PortalAddr(%q) = %q, %v; want %q", tt.url, addr, err, tt.host)
		}
	}
}

func TestCheckPortalNameAndMethod(t *testing.T) {
	const u = "https://upload.portal.example/"
	for _, p := range []Portal{
		{Name: "", URL: u, Method: PortalPut},
		{Name: "UKDS", URL: u, Method: PortalPut},
		{Name: "uk ds", URL: u, Method: PortalPut},
		{Name: "ukds", URL: u, Method: ""},
		{Name: "ukds", URL: u, Method: "PUT"},
		{Name: "ukds", URL: u, Method: "patch"},
	} {
		if err := CheckPortal(p); !errors.Is(err, ErrBadPortal) {
			t.Errorf("CheckPortal(%+v) = %v, want ErrBadPortal", p, err)
		}
	}
	for _, m := range []string{PortalPut, PortalPost, PortalTus} {
		if err := CheckPortal(Portal{Name: "ukds", URL: u, Method: m}); err != nil {
			t.Errorf("method %q: %v", m, err)
		}
	}
}

func TestPortalHostMatches(t *testing.T) {
	allowed := Portal{Name: "ukds", URL: "https://upload.portal.example/api/files", Method: PortalTus}
	tests := []struct {
		target string
		want   bool
	}{
		{"https://upload.portal.example/api/files", true},
		{"https://upload.portal.example/other/path?x=1", true},
		{"https://UPLOAD.portal.example/", true},
		{"https://upload.portal.example./", true},
		{"https://upload.portal.example:443/", true},
		{"HTTPS://upload.portal.example/", true},

		{"http://upload.portal.example/", false},
		{"https://upload.portal.example:8443/", false},
		{"https://upload.portal.example../", false},
		{"https://evil.example/", false},
		{"https://upload.portal.example.evil.example/", false},
		{"https://evil.upload.portal.example/", false},
		{"https://portal.example/", false},
		{"https://upload.portal.example@evil.example/", false},
		{"https://evil.example@upload.portal.example/", false},
		{"https://user:pw@upload.portal.example/", false},
		{"https://127.0.0.1/", false},
		{"https://2130706433/", false},
		{"https://[::1]/", false},
		{"//upload.portal.example/", false},
	}
	for _, tt := range tests {
		if got := PortalHostMatches(allowed, mustParse(t, tt.target)); got != tt.want {
			t.Errorf("PortalHostMatches(%q) = %v, want %v", tt.target, got, tt.want)
		}
	}
	if PortalHostMatches(allowed, nil) {
		t.Error("PortalHostMatches(nil) = true")
	}
	// Punycode and Unicode spellings are one host.
	idn := Portal{Name: "idn", URL: "https://bücher.example/", Method: PortalPut}
	for _, s := range []string{"https://xn--bcher-kva.example/", "https://BÜCHER.example/", "https://bücher.example./"} {
		if !PortalHostMatches(idn, mustParse(t, s)) {
			t.Errorf("PortalHostMatches(bücher.example, %q) = false", s)
		}
	}
	// A non-default portal port must be named.
	p8443 := Portal{Name: "p", URL: "https://upload.portal.example:8443/", Method: PortalPut}
	if PortalHostMatches(p8443, mustParse(t, "https://upload.portal.example/")) {
		t.Error("port 443 matched a portal on 8443")
	}
}

func TestDecideEgress(t *testing.T) {
	_, share := snapshots() // olga IAO, adam IAA, mark member without outbound, nina outsider
	share.Members["otto"] = true
	share.Members[iaa] = true // adam is also a member with the outbound right
	portals := []string{"ukds", "ega"}
	tests := []struct {
		name      string
		r         EgressRequest
		allow     bool
		invisible bool   // ErrNotVisible rather than plain ErrDenied
		why       string // in the reason
	}{
		{"member with outbound", EgressRequest{Actor: "otto", Share: share, SharePortals: portals, Portal: "ega"}, true, false, "outbound right"},
		{"IAA who is a member with outbound", EgressRequest{Actor: iaa, Share: share, SharePortals: portals, Portal: "ukds"}, true, false, "outbound right"},
		{"IAO without membership", EgressRequest{Actor: iao, Share: share, SharePortals: portals, Portal: "ukds"}, false, false, "project role"},
		{"member without outbound", EgressRequest{Actor: member, Share: share, SharePortals: portals, Portal: "ukds"}, false, false, "without the outbound right"},
		{"non-member", EgressRequest{Actor: nonmem, Share: share, SharePortals: portals, Portal: "ukds"}, false, true, "not in the share"},
		{"removed member", EgressRequest{Actor: removed, Share: share, SharePortals: portals, Portal: "ukds"}, false, true, "not in the share"},
		{"emergency session", EgressRequest{Actor: "otto", Emergency: true, Share: share, SharePortals: portals, Portal: "ukds"}, false, false, "emergency"},
		{"portal not listed", EgressRequest{Actor: "otto", Share: share, SharePortals: portals, Portal: "other"}, false, false, "not on the share's list"},
		{"portal case differs", EgressRequest{Actor: "otto", Share: share, SharePortals: portals, Portal: "UKDS"}, false, false, "not on the share's list"},
		{"no portal", EgressRequest{Actor: "otto", Share: share, SharePortals: portals}, false, false, "no portal"},
		{"share without egress", EgressRequest{Actor: "otto", Share: share, Portal: "ukds"}, false, false, "no egress"},
		{"share with an empty list", EgressRequest{Actor: "otto", Share: share, SharePortals: []string{}, Portal: "ukds"}, false, false, "no egress"},
		{"no actor", EgressRequest{Share: share, SharePortals: portals, Portal: "ukds"}, false, false, "no actor"},
		{"share that does not exist", EgressRequest{Actor: "otto", SharePortals: portals, Portal: "ukds"}, false, true, "not in the share"},
		{"non-member, share without egress", EgressRequest{Actor: nonmem, Share: share, Portal: "ukds"}, false, true, "not in the share"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideEgress(tt.r)
			if d.Allow != tt.allow || d.Allow != (d.Err == nil) || d.Reason == "" {
				t.Fatalf("DecideEgress = %+v, want allow=%v", d, tt.allow)
			}
			if !strings.Contains(d.Reason, tt.why) {
				t.Fatalf("reason %q, want it to say %q", d.Reason, tt.why)
			}
			if d.Allow {
				return
			}
			if !errors.Is(d.Err, ErrDenied) || errors.Is(d.Err, ErrNotVisible) != tt.invisible {
				t.Fatalf("DecideEgress error %v, want ErrDenied with invisible=%v", d.Err, tt.invisible)
			}
		})
	}
}

func TestDecideEgressReview(t *testing.T) {
	_, share := snapshots() // olga IAO, adam IAA, mark member without outbound, nina outsider
	share.Members["otto"] = true
	share.Members[iaa] = true // adam is also a member with the outbound right
	rev := func(actor string, a Action, requester string) EgressReview {
		return EgressReview{Actor: actor, Action: a, Share: share, Requester: requester}
	}
	tests := []struct {
		name      string
		r         EgressReview
		allow     bool
		invisible bool
		why       string
	}{
		{"IAO approves a member's item", rev(iao, ActionEgressApprove, "otto"), true, false, "iao"},
		{"IAA rejects a member's item", rev(iaa, ActionEgressReject, "otto"), true, false, "iaa"},
		{"IAA cannot approve their own item", rev(iaa, ActionEgressApprove, iaa), false, false, "their own"},
		{"requester who is not a reviewer", rev("otto", ActionEgressApprove, "otto"), false, false, "their own"},
		{"another member cannot approve", rev(member, ActionEgressApprove, "otto"), false, true, "neither"},
		{"another member cannot view", rev(member, ActionEgressView, "otto"), false, true, "neither"},
		{"outsider", rev(nonmem, ActionEgressApprove, "otto"), false, true, "neither"},
		{"requester views", rev("otto", ActionEgressView, "otto"), true, false, "requester"},
		{"IAO views", rev(iao, ActionEgressView, "otto"), true, false, "IAO"},
		{"emergency IAO", EgressReview{Actor: iao, Emergency: true, Action: ActionEgressApprove, Share: share, Requester: "otto"}, false, false, "emergency"},
		{"unknown action", rev(iao, ActionShareCreate, "otto"), false, false, "unknown action"},
		{"no share", EgressReview{Actor: iao, Action: ActionEgressApprove, Requester: "otto"}, false, true, "neither"},
		{"no actor", EgressReview{Action: ActionEgressApprove, Share: share, Requester: "otto"}, false, false, "no actor"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := DecideEgressReview(tt.r)
			if d.Allow != tt.allow || d.Allow != (d.Err == nil) || d.Reason == "" {
				t.Fatalf("DecideEgressReview = %+v, want allow=%v", d, tt.allow)
			}
			if !strings.Contains(d.Reason, tt.why) {
				t.Fatalf("reason %q, want it to say %q", d.Reason, tt.why)
			}
			if !d.Allow && (!errors.Is(d.Err, ErrDenied) || errors.Is(d.Err, ErrNotVisible) != tt.invisible) {
				t.Fatalf("error %v, want ErrDenied with invisible=%v", d.Err, tt.invisible)
			}
		})
	}
}

// FuzzPortalURL: CheckPortal and PortalHostMatches never panic; a URL
// CheckPortal accepts round-trips through url.URL.String and matches
// itself; nothing with userinfo, another scheme or an IP host ever
// matches.
func FuzzPortalURL(f *testing.F) {
	for _, s := range []string{
		"https://upload.portal.example/api/files", "https://Upload.Portal.Example.:8443/x?y=1",
		"https://bücher.example/", "https://xn--bcher-kva.example/", "https://a@b.example/",
		"https://2130706433/", "https://0x7f.1/", "https://[::1]/", "https://127.0.0.1/", "http://x.example/",
		"https://*.example/", "https://x.example../", "https://１２７.０.０.１/", "https://x.example:0443/",
	} {
		f.Add(s, "https://upload.portal.example/")
	}
	f.Fuzz(func(t *testing.T, raw, target string) {
		p := Portal{Name: "p", URL: raw, Method: PortalPut}
		fixed := Portal{Name: "fixed", URL: "https://upload.portal.example/", Method: PortalPut}
		if tu, err := url.Parse(target); err == nil {
			PortalHostMatches(p, tu)
			if PortalHostMatches(fixed, tu) {
				if tu.User != nil || !strings.EqualFold(tu.Scheme, "https") {
					t.Fatalf("%q matched with userinfo or not https", target)
				}
				if _, err := netip.ParseAddr(tu.Hostname()); err == nil {
					t.Fatalf("%q matched with an IP host", target)
				}
			}
		}
		if err := CheckPortal(p); err != nil {
			if !errors.Is(err, ErrBadPortal) {
				t.Fatalf("CheckPortal(%q) = %v, not ErrBadPortal", raw, err)
			}
			return
		}
		u, err := url.Parse(raw)
		if err != nil {
			t.Fatalf("CheckPortal accepted %q, which does not parse: %v", raw, err)
		}
		addr, err := PortalAddr(p)
		if err != nil {
			t.Fatalf("PortalAddr(%q): %v", raw, err)
		}
		host, _, _ := strings.Cut(addr, ":")
		if _, err := netip.ParseAddr(host); err == nil || numericLabel(host[strings.LastIndexByte(host, '.')+1:]) {
			t.Fatalf("CheckPortal accepted %q with an IP host %q", raw, host)
		}
		for _, l := range strings.Split(host, ".") {
			if !ldhLabel(l) {
				t.Fatalf("CheckPortal accepted %q, normal host %q", raw, host)
			}
		}
		// Round trip.
		again := Portal{Name: "p", URL: u.String(), Method: PortalPut}
		if a2, err := PortalAddr(again); err != nil || a2 != addr {
			t.Fatalf("%q -> %q: PortalAddr %q, %v; want %q", raw, u.String(), a2, err, addr)
		}
		// Reflexive, also through the re-parsed form.
		if !PortalHostMatches(p, u) || !PortalHostMatches(again, u) || !PortalHostMatches(p, mustParse(t, u.String())) {
			t.Fatalf("%q does not match itself", raw)
		}
		if !PortalHostMatches(p, &url.URL{Scheme: "https", Host: addr}) {
			t.Fatalf("%q does not match its own address %q", raw, addr)
		}
		// Userinfo, http and IP forms never match.
		for _, mod := range []func(v *url.URL){
			func(v *url.URL) { v.User = url.User("") },
			func(v *url.URL) { v.User = url.UserPassword("a", "b") },
			func(v *url.URL) { v.Scheme = "http" },
			func(v *url.URL) { v.Host = "127.0.0.1" },
			func(v *url.URL) { v.Host = "2130706433" },
			func(v *url.URL) { v.Host = "[::1]" },
			func(v *url.URL) { v.Host = "0x7f.1" },
		} {
			v := *u
			mod(&v)
			if PortalHostMatches(p, &v) {
				t.Fatalf("%q matched %q", raw, v.String())
			}
		}
	})
}

func mustParse(t *testing.T, s string) *url.URL {
	t.Helper()
	u, err := url.Parse(s)
	if err != nil {
		t.Fatalf("url.Parse(%q): %v", s, err)
	}
	return u
}
