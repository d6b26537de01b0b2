package policy

import (
	"fmt"
	"slices"
)

// Project, share and membership actions: who may govern a share, who may
// see into it, and who may move a file into it. DecideShare is their one
// decision.
const (
	ActionProjectCreate      Action = "project.create"
	ActionProjectList        Action = "project.list"
	ActionProjectSetOwner    Action = "project.owner.set"
	ActionProjectAdminPut    Action = "project.admin.put"
	ActionProjectAdminDelete Action = "project.admin.delete"
	ActionShareCreate        Action = "share.create"
	ActionMemberPut          Action = "share.member.put"
	ActionMemberDelete       Action = "share.member.delete"
	ActionOutboundGrant      Action = "share.outbound.grant"
	ActionOutboundRevoke     Action = "share.outbound.revoke"
	ActionSharesList         Action = "shares.list"
	ActionShareFiles         Action = "share.files"
	ActionArrivalMove        Action = "arrival.move"
)

// ErrNotVisible is a refusal of an actor who is not in the project or share
// at all (or it does not exist): callers answer as if it did not exist
// (404), so share and project names do not leak. It wraps ErrDenied.
var ErrNotVisible = fmt.Errorf("%w: not a member of the project or share", ErrDenied)

// Role is what a user is to a share or project. A user with several roles
// has the highest: owner, then administrator, then member.
type Role string

// The roles. A system administrator is no role: administrators act through
// the CLI on the host (ShareRequest.Admin), never through the API.
const (
	RoleNone   Role = ""
	RoleMember Role = "member" // member of the share
	RoleIAA    Role = "iaa"    // Information Asset Administrator: an administrator of the project
	RoleIAO    Role = "iao"    // Information Asset Owner: the project's one owner
)

// Project is a project as decisions see it.
type Project struct {
	Name   string
	Owner  string   // the IAO; never empty for a project that exists
	Admins []string // the IAAs
}

// Snapshot is the state a share decision reads, loaded fresh for every
// request (nothing is cached, so a removal counts at the next request).
// For project actions Share and Members are empty; for a project or share
// that does not exist, the snapshot is the zero value.
type Snapshot struct {
	Project Project
	Share   string          // the share acted on, "" for project actions
	Members map[string]bool // the share's members and their outbound right
}

// RoleOf is user's role in the snapshot's project and share.
func (s Snapshot) RoleOf(user string) Role {
	switch {
	case user == "":
		return RoleNone
	case s.Project.Name != "" && s.Project.Owner == user:
		return RoleIAO
	case s.Project.Name != "" && slices.Contains(s.Project.Admins, user):
		return RoleIAA
	}
	if _, ok := s.Members[user]; ok && s.Share != "" {
		return RoleMember
	}
	return RoleNone
}

// ShareRequest is one project, share or membership operation to decide.
type ShareRequest struct {
	// Actor is the authenticated, canonical user name, or for a system
	// administrator the CLI's actor ("cli:NAME"); never empty.
	Actor string
	// Admin: a system administrator acting through the CLI on the host.
	Admin bool
	// Emergency: the actor's session was opened with an emergency code.
	// It may not change, see into or move into any share.
	Emergency bool
	Action    Action
	// Target is the user acted on: the member, the IAA, the new owner.
	Target string
	// Outbound is the outbound right asked for by share.member.put.
	Outbound bool
	// Owner is, for arrival.move, the owner of the Arrival moved.
	Owner string
}

// DecideShare is a pure decision over one request and a snapshot of the
// project and share it concerns. The rules:
//
//   - project.create, project.owner.set and project.list: system
//     administrators only;
//   - project.admin.put and .delete: the project's IAO, or a system
//     administrator;
//   - share.create: the project's IAO or an IAA;
//   - share.member.put, .delete, share.outbound.grant and .revoke: the IAO
//     or an IAA of the share's project; share.member.put with Outbound set
//     is a grant and is decided as one;
//   - shares.list: anyone signed in (each sees only their own shares);
//   - share.files: a member of the share, or the IAO or an IAA of its project;
//   - arrival.move: the same, moving an Arrival of their own.
//
// A system administrator has no role in shares: they neither create shares,
// manage members, nor see into or move into a share. A removed member is a
// non-member. Everything is refused to an emergency-code session, and to an
// empty actor; unknown actions are refused.
//
// A refusal of an actor who is not in the project (for project actions) or
// the share (for share actions) at all is ErrNotVisible, else ErrDenied.
func DecideShare(s Snapshot, r ShareRequest) Decision {
	if r.Actor == "" {
		return deny(ErrDenied, "no actor")
	}
	if r.Emergency {
		return deny(ErrDenied, "not allowed in an emergency-code session")
	}
	if r.Action == ActionMemberPut && r.Outbound {
		r.Action = ActionOutboundGrant
	}
	role := RoleNone
	if !r.Admin {
		role = s.RoleOf(r.Actor)
	}
	governs := role == RoleIAO || role == RoleIAA
	switch r.Action {
	case ActionProjectCreate, ActionProjectSetOwner, ActionProjectList:
		if !r.Admin {
			return deny(ErrDenied, "only a system administrator creates and lists projects and sets their owner")
		}
		if r.Action == ActionProjectSetOwner && r.Target == "" {
			return deny(ErrDenied, "no new owner")
		}
		return allow("system administrator")
	case ActionProjectAdminPut, ActionProjectAdminDelete:
		switch {
		case !r.Admin && !governs:
			return deny(ErrNotVisible, "not the project's IAO or an IAA")
		case r.Target == "":
			return deny(ErrDenied, "no target user")
		case r.Admin:
			return allow("system administrator")
		case role != RoleIAO:
			return deny(ErrDenied, "only the project's IAO adds and removes IAAs")
		}
		return allow("the project's IAO")
	case ActionShareCreate:
		if !governs {
			return deny(ErrNotVisible, "not the project's IAO or an IAA")
		}
		return allow("the project's " + string(role))
	case ActionMemberPut, ActionMemberDelete, ActionOutboundGrant, ActionOutboundRevoke:
		switch {
		case role == RoleNone:
			return deny(ErrNotVisible, "not in the share")
		case !governs:
			return deny(ErrDenied, "only the IAO or an IAA of the share's project manages members and outbound rights")
		case r.Target == "":
			return deny(ErrDenied, "no target user")
		}
		return allow("the project's " + string(role))
	case ActionSharesList:
		return allow("own shares")
	case ActionShareFiles:
		if role == RoleNone {
			return deny(ErrNotVisible, "not in the share")
		}
		return allow("share " + string(role))
	case ActionArrivalMove:
		switch {
		case role == RoleNone:
			return deny(ErrNotVisible, "not in the share")
		case r.Owner != r.Actor:
			return deny(ErrDenied, "not the actor's own Arrival")
		}
		return allow("share " + string(role) + " moving their own Arrival")
	}
	return deny(ErrDenied, "unknown action")
}

// CheckShareQuota decides whether add more bytes fit in share, which holds
// used bytes, under limit (0: no limit): nil, or a *QuotaError naming the
// share_bytes quota (ErrQuotaExceeded). A share already over a lowered
// limit takes nothing more.
func CheckShareQuota(share string, limit, used, add int64) error {
	if limit > 0 && add > 0 && (used > limit || add > limit-used) {
		return &QuotaError{Quota: QuotaShareBytes, Subject: share, Limit: limit, Used: used, Want: add}
	}
	return nil
}
