package shares

import (
	"context"
	"fmt"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// CreateProject creates project with owner as its IAO: system
// administrators only. Errors: a bad project name (policy.ErrBadName), no
// such owner account (NotFoundError), a taken name (ExistError), a refusal
// (policy.ErrDenied).
func (s *Service) CreateProject(ctx context.Context, a Actor, project, owner string) error {
	if err := policy.CheckProjectName(project); err != nil {
		return err
	}
	object := "project:" + project
	req := a.request(policy.ActionProjectCreate)
	req.Target = targetName(owner)
	if err := s.decide(ctx, policy.Snapshot{}, req, a, object, "owner="+req.Target, whatProject); err != nil {
		return err
	}
	owner, err := s.account(ctx, owner)
	if err != nil {
		return err
	}
	err = s.db.CreateProject(ctx, state.Project{Name: project, Owner: owner, CreatedAt: s.cfg.Now(), CreatedBy: a.User},
		s.record(a, string(req.Action), object, "ok owner="+owner))
	return stateErr(err, "", whatProject)
}

// SetProjectOwner makes owner the IAO of project, in place of the present
// one: system administrators only.
func (s *Service) SetProjectOwner(ctx context.Context, a Actor, project, owner string) error {
	if err := policy.CheckProjectName(project); err != nil {
		return err
	}
	object := "project:" + project
	snap, err := s.projectSnapshot(ctx, project)
	if err != nil {
		return err
	}
	req := a.request(policy.ActionProjectSetOwner)
	req.Target = targetName(owner)
	if err := s.decide(ctx, snap, req, a, object, "owner="+req.Target, whatProject); err != nil {
		return err
	}
	if snap.Project.Name == "" {
		return &NotFoundError{What: whatProject}
	}
	owner, err = s.account(ctx, owner)
	if err != nil {
		return err
	}
	err = s.db.SetProjectOwner(ctx, project, owner,
		s.record(a, string(req.Action), object, fmt.Sprintf("ok owner=%s previous=%s", owner, snap.Project.Owner)))
	return stateErr(err, whatProject, "")
}

// PutProjectAdmin makes user an IAA of project: its IAO or a system
// administrator. Adding an IAA again changes nothing (and is audited).
func (s *Service) PutProjectAdmin(ctx context.Context, a Actor, project, user string) error {
	return s.projectAdmin(ctx, a, policy.ActionProjectAdminPut, project, user)
}

// DeleteProjectAdmin removes user from project's IAAs: its IAO or a
// system administrator. NotFoundError if user is not one.
func (s *Service) DeleteProjectAdmin(ctx context.Context, a Actor, project, user string) error {
	return s.projectAdmin(ctx, a, policy.ActionProjectAdminDelete, project, user)
}

func (s *Service) projectAdmin(ctx context.Context, a Actor, action policy.Action, project, user string) error {
	if err := policy.CheckProjectName(project); err != nil {
		return err
	}
	object := "project:" + project
	snap, err := s.projectSnapshot(ctx, project)
	if err != nil {
		return err
	}
	req := a.request(action)
	req.Target = targetName(user)
	if err := s.decide(ctx, snap, req, a, object, "user="+req.Target, whatProject); err != nil {
		return err
	}
	if snap.Project.Name == "" { // only a system administrator gets here
		return &NotFoundError{What: whatProject}
	}
	rec := s.record(a, string(action), object, "ok user="+req.Target)
	if action == policy.ActionProjectAdminDelete {
		// No account check: an IAA whose account is gone can still be removed.
		return stateErr(s.db.DeleteProjectAdmin(ctx, project, req.Target, rec), whatAdmin, "")
	}
	if user, err = s.account(ctx, user); err != nil {
		return err
	}
	return stateErr(s.db.PutProjectAdmin(ctx, project, user, a.User, s.cfg.Now(), rec), whatProject, "")
}

// Projects lists every project: system administrators only.
func (s *Service) Projects(ctx context.Context, a Actor) ([]state.Project, error) {
	if d := policy.DecideShare(policy.Snapshot{}, a.request(policy.ActionProjectList)); !d.Allow {
		return nil, fmt.Errorf("shares: list projects: %w", d.Err)
	}
	return s.db.Projects(ctx)
}

// CreateShare creates share in project: the project's IAO or an IAA.
// Share names are unique across projects (ExistError). A project the actor
// is not IAO or IAA of is a NotFoundError.
func (s *Service) CreateShare(ctx context.Context, a Actor, project, share string) (state.Share, error) {
	if err := policy.CheckProjectName(project); err != nil {
		return state.Share{}, err
	}
	if err := policy.CheckShareName(share); err != nil {
		return state.Share{}, err
	}
	object := "share:" + share
	snap, err := s.projectSnapshot(ctx, project)
	if err != nil {
		return state.Share{}, err
	}
	req := a.request(policy.ActionShareCreate)
	if err := s.decide(ctx, snap, req, a, object, "project="+project, whatProject); err != nil {
		return state.Share{}, err
	}
	sh := state.Share{Name: share, Project: project, CreatedAt: s.cfg.Now(), CreatedBy: a.User}
	err = s.db.CreateShare(ctx, sh, s.record(a, string(req.Action), object, "ok project="+project))
	if err != nil {
		return state.Share{}, stateErr(err, whatProject, whatShare)
	}
	return sh, nil
}

// PutMember makes user a member of share with the outbound right as given,
// or changes an existing member's right: the IAO or an IAA of the share's
// project; nobody else may grant the outbound right. The audit action is
// share.outbound.grant or .revoke when the right changes, else
// share.member.put. A share the actor is not in is a NotFoundError.
func (s *Service) PutMember(ctx context.Context, a Actor, share, user string, outbound bool) error {
	if err := policy.CheckShareName(share); err != nil {
		return err
	}
	object := "share:" + share
	snap, err := s.shareSnapshot(ctx, share)
	if err != nil {
		return err
	}
	target := targetName(user)
	had, member := snap.Members[target]
	action := policy.ActionMemberPut
	switch {
	case outbound && !had:
		action = policy.ActionOutboundGrant
	case !outbound && had:
		action = policy.ActionOutboundRevoke
	}
	req := a.request(action)
	req.Target, req.Outbound = target, outbound
	detail := fmt.Sprintf("user=%s outbound=%t", target, outbound)
	if err := s.decide(ctx, snap, req, a, object, detail, whatShare); err != nil {
		return err
	}
	if user, err = s.account(ctx, user); err != nil {
		return err
	}
	if !member {
		detail += " new_member=true"
	}
	err = s.db.PutShareMember(ctx, state.ShareMember{Share: share, User: user, Outbound: outbound, AddedBy: a.User, AddedAt: s.cfg.Now()},
		s.record(a, string(action), object, "ok "+detail))
	return stateErr(err, whatShare, "")
}

// DeleteMember removes user from share: the IAO or an IAA of the share's
// project. The removal counts from the member's next request.
func (s *Service) DeleteMember(ctx context.Context, a Actor, share, user string) error {
	if err := policy.CheckShareName(share); err != nil {
		return err
	}
	object := "share:" + share
	snap, err := s.shareSnapshot(ctx, share)
	if err != nil {
		return err
	}
	req := a.request(policy.ActionMemberDelete)
	req.Target = targetName(user)
	if err := s.decide(ctx, snap, req, a, object, "user="+req.Target, whatShare); err != nil {
		return err
	}
	err = s.db.DeleteShareMember(ctx, share, req.Target, s.record(a, string(req.Action), object, "ok user="+req.Target))
	return stateErr(err, whatMember, "")
}

// ProjectShares lists the names of project's shares: system administrators
// only.
func (s *Service) ProjectShares(ctx context.Context, a Actor, project string) ([]string, error) {
	if d := policy.DecideShare(policy.Snapshot{}, a.request(policy.ActionProjectList)); !d.Allow {
		return nil, fmt.Errorf("shares: list shares of project %s: %w", project, d.Err)
	}
	return s.db.ProjectShares(ctx, project)
}
