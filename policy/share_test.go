package policy

import (
	"errors"
	"maps"
	"strings"
	"testing"
)

// The actors of the role table. "ruth" was a member of the share and has
// been removed; "nina" never was one.
const (
	admin   = "cli:root"
	iao     = "olga"
	iaa     = "adam"
	member  = "mark"
	nonmem  = "nina"
	removed = "ruth"
)

// snapshots returns the project snapshot (for project actions) and the
// share snapshot (for share actions) of project p, owned by olga with adam
// as IAA, and its share s with mark as a member; ruth was one, removed
// before the decision.
func snapshots() (project, share Snapshot) {
	p := Project{Name: "p", Owner: iao, Admins: []string{iaa}}
	members := map[string]bool{member: false, removed: true}
	delete(members, removed) // the removal
	return Snapshot{Project: p}, Snapshot{Project: p, Share: "s", Members: maps.Clone(members)}
}

// TestDecideShareRoles runs every role against every action.
func TestDecideShareRoles(t *testing.T) {
	const (
		ok = "ok"
		d  = "denied"    // ErrDenied, not ErrNotVisible: 403
		nv = "invisible" // ErrNotVisible: 404
	)
	roles := []string{"admin", "IAO", "IAA", "member", "non-member", "removed member"}
	actors := map[string]string{"admin": admin, "IAO": iao, "IAA": iaa, "member": member, "non-member": nonmem, "removed member": removed}
	type action struct {
		name    string
		project bool // decided on the project snapshot
		req     ShareRequest
	}
	actions := []struct {
		action
		want [6]string // by roles
	}{
		{action{"project create", true, ShareRequest{Action: ActionProjectCreate, Target: "zed"}}, [6]string{ok, d, d, d, d, d}},
		{action{"project list", true, ShareRequest{Action: ActionProjectList}}, [6]string{ok, d, d, d, d, d}},
		{action{"project set owner", true, ShareRequest{Action: ActionProjectSetOwner, Target: "zed"}}, [6]string{ok, d, d, d, d, d}},
		{action{"project admin put", true, ShareRequest{Action: ActionProjectAdminPut, Target: "zed"}}, [6]string{ok, ok, d, nv, nv, nv}},
		{action{"project admin delete", true, ShareRequest{Action: ActionProjectAdminDelete, Target: iaa}}, [6]string{ok, ok, d, nv, nv, nv}},
		{action{"share create", true, ShareRequest{Action: ActionShareCreate}}, [6]string{nv, ok, ok, nv, nv, nv}},
		{action{"member put", false, ShareRequest{Action: ActionMemberPut, Target: "zed"}}, [6]string{nv, ok, ok, d, nv, nv}},
		{action{"member put with outbound", false, ShareRequest{Action: ActionMemberPut, Target: "zed", Outbound: true}}, [6]string{nv, ok, ok, d, nv, nv}},
		{action{"member put of self with outbound", false, ShareRequest{Action: ActionMemberPut, Target: member, Outbound: true}}, [6]string{nv, ok, ok, d, nv, nv}},
		{action{"member delete", false, ShareRequest{Action: ActionMemberDelete, Target: member}}, [6]string{nv, ok, ok, d, nv, nv}},
		{action{"outbound grant", false, ShareRequest{Action: ActionOutboundGrant, Target: member}}, [6]string{nv, ok, ok, d, nv, nv}},
		{action{"outbound revoke", false, ShareRequest{Action: ActionOutboundRevoke, Target: member}}, [6]string{nv, ok, ok, d, nv, nv}},
		{action{"list own shares", false, ShareRequest{Action: ActionSharesList}}, [6]string{ok, ok, ok, ok, ok, ok}},
		{action{"list share files", false, ShareRequest{Action: ActionShareFiles}}, [6]string{nv, ok, ok, ok, nv, nv}},
		{action{"move own arrival in", false, ShareRequest{Action: ActionArrivalMove, Owner: "$actor"}}, [6]string{nv, ok, ok, ok, nv, nv}},
		{action{"move another's arrival in", false, ShareRequest{Action: ActionArrivalMove, Owner: "zed"}}, [6]string{nv, d, d, d, nv, nv}},
		{action{"unknown action", false, ShareRequest{Action: "share.delete"}}, [6]string{d, d, d, d, d, d}},
	}
	projectSnap, shareSnap := snapshots()
	for _, a := range actions {
		for i, role := range roles {
			for _, emergency := range []bool{false, true} {
				name := a.name + "/" + role
				want := a.want[i]
				if emergency {
					name += "/emergency"
					want = d // refused, and without saying whether the share exists
				}
				t.Run(name, func(t *testing.T) {
					req := a.req
					req.Actor = actors[role]
					req.Admin = role == "admin"
					req.Emergency = emergency
					if req.Owner == "$actor" {
						req.Owner = req.Actor
					}
					snap := shareSnap
					if a.project {
						snap = projectSnap
					}
					checkDecision(t, DecideShare(snap, req), want)
				})
			}
		}
	}
}

func checkDecision(t *testing.T, d Decision, want string) {
	t.Helper()
	if d.Reason == "" {
		t.Error("decision has no reason")
	}
	if d.Allow != (d.Err == nil) {
		t.Fatalf("decision %+v: Allow and Err disagree", d)
	}
	var got string
	switch {
	case d.Allow:
		got = "ok"
	case errors.Is(d.Err, ErrNotVisible):
		got = "invisible"
		if !errors.Is(d.Err, ErrDenied) {
			t.Errorf("ErrNotVisible does not wrap ErrDenied")
		}
	case errors.Is(d.Err, ErrDenied):
		got = "denied"
	default:
		t.Fatalf("decision %+v: unexpected error", d)
	}
	if got != want {
		t.Errorf("decision %s (%s), want %s", got, d.Reason, want)
	}
}

// Edge cases outside the role table: no actor, no target, a share that
// does not exist, a snapshot whose project is unset.
func TestDecideShareEdges(t *testing.T) {
	_, share := snapshots()
	for _, tc := range []struct {
		name string
		snap Snapshot
		req  ShareRequest
		want string
	}{
		{"no actor", share, ShareRequest{Action: ActionSharesList}, "denied"},
		{"no actor, empty owner move", share, ShareRequest{Action: ActionArrivalMove}, "denied"},
		{"member put without target", share, ShareRequest{Actor: iao, Action: ActionMemberPut}, "denied"},
		{"admin put without target", share, ShareRequest{Actor: admin, Admin: true, Action: ActionProjectAdminPut}, "denied"},
		{"set owner without target", share, ShareRequest{Actor: admin, Admin: true, Action: ActionProjectSetOwner}, "denied"},
		{"files of a share that does not exist", Snapshot{}, ShareRequest{Actor: member, Action: ActionShareFiles}, "invisible"},
		{"move into a share that does not exist", Snapshot{}, ShareRequest{Actor: member, Action: ActionArrivalMove, Owner: member}, "invisible"},
		{"member put in a share that does not exist", Snapshot{}, ShareRequest{Actor: iao, Action: ActionMemberPut, Target: "zed"}, "invisible"},
		{"share create in a project that does not exist", Snapshot{}, ShareRequest{Actor: iao, Action: ActionShareCreate}, "invisible"},
		{"member list without a share name", Snapshot{Members: map[string]bool{member: false}}, ShareRequest{Actor: member, Action: ActionShareFiles}, "invisible"},
		{"an admin's CLI actor named like the IAO is still no IAO", share, ShareRequest{Actor: iao, Admin: true, Action: ActionShareCreate}, "invisible"},
	} {
		t.Run(tc.name, func(t *testing.T) { checkDecision(t, DecideShare(tc.snap, tc.req), tc.want) })
	}
}

func TestRoleOf(t *testing.T) {
	_, s := snapshots()
	s.Members[iaa] = true // an IAA who is a member too is an IAA
	s.Members[iao] = true
	for user, want := range map[string]Role{iao: RoleIAO, iaa: RoleIAA, member: RoleMember, nonmem: RoleNone, removed: RoleNone, "": RoleNone} {
		if got := s.RoleOf(user); got != want {
			t.Errorf("RoleOf(%q) = %q, want %q", user, got, want)
		}
	}
}

func TestCheckShareQuota(t *testing.T) {
	for _, tc := range []struct {
		limit, used, add int64
		ok               bool
	}{
		{0, 1 << 40, 1 << 40, true}, // no limit
		{100, 0, 100, true},
		{100, 40, 60, true},
		{100, 40, 61, false},
		{100, 101, 0, true}, // nothing added
		{100, 101, 1, false},
		{100, 0, 1<<63 - 1, false}, // no overflow
		{1<<63 - 1, 1<<63 - 2, 2, false},
	} {
		err := CheckShareQuota("study-7", tc.limit, tc.used, tc.add)
		if (err == nil) != tc.ok {
			t.Errorf("CheckShareQuota(limit %d, used %d, add %d) = %v, want ok=%v", tc.limit, tc.used, tc.add, err, tc.ok)
			continue
		}
		if err == nil {
			continue
		}
		var qe *QuotaError
		if !errors.Is(err, ErrQuotaExceeded) || !errors.As(err, &qe) || qe.Quota != QuotaShareBytes || qe.Subject != "study-7" {
			t.Errorf("CheckShareQuota error %#v: want a *QuotaError for share_bytes of study-7", err)
		}
		if msg := err.Error(); !strings.Contains(msg, "share study-7") {
			t.Errorf("quota message %q does not name the share", msg)
		}
	}
}

// FuzzShareName: a share name CheckShareName accepts is plain ASCII that
// no path, shell or case-insensitive file system reads differently, and
// every decision about it is well-formed.
func FuzzShareName(f *testing.F) {
	for _, s := range []string{"study-7", "a", "..", "a/b", "A", "-x", "x_", "é", "con", "a\x00", strings.Repeat("a", 64)} {
		f.Add(s, "mark")
	}
	f.Fuzz(func(t *testing.T, name, user string) {
		if err := CheckShareName(name); err != nil {
			if !errors.Is(err, ErrBadName) {
				t.Fatalf("CheckShareName(%q) = %v, not ErrBadName", name, err)
			}
			// One of two fixed messages: nothing of the name is echoed.
			if msg := err.Error(); msg != CheckShareName("").Error() && msg != CheckShareName("-").Error() {
				t.Fatalf("CheckShareName(%q) error %q is not a fixed message", name, err)
			}
			return
		}
		if len(name) == 0 || len(name) > maxGroupName || name == "." || name == ".." {
			t.Fatalf("CheckShareName accepted %q", name)
		}
		if strings.Trim(name, "abcdefghijklmnopqrstuvwxyz0123456789-_") != "" || name[0] == '-' || name[0] == '_' {
			t.Fatalf("CheckShareName accepted %q", name)
		}
		if err := CheckProjectName(name); err != nil {
			t.Fatalf("CheckProjectName(%q) = %v, CheckShareName accepts it", name, err)
		}
		// Whoever asks, about a share of that name: a decision with a reason,
		// and an outsider never sees in.
		snap := Snapshot{Project: Project{Name: name, Owner: "olga"}, Share: name, Members: map[string]bool{"mark": false}}
		d := DecideShare(snap, ShareRequest{Actor: user, Action: ActionShareFiles})
		if d.Reason == "" || d.Allow != (d.Err == nil) {
			t.Fatalf("DecideShare = %+v", d)
		}
		if d.Allow != (user == "olga" || user == "mark") {
			t.Fatalf("share.files for %q in %q: %+v", user, name, d)
		}
	})
}
