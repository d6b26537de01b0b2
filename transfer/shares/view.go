package shares

import (
	"context"
	"fmt"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// Shares lists the shares a has a role in, by name, with the role and the
// outbound right. Refused to an emergency-code session (policy.ErrDenied).
func (s *Service) Shares(ctx context.Context, a Actor) ([]ShareInfo, error) {
	req := a.request(policy.ActionSharesList)
	if err := s.decide(ctx, policy.Snapshot{}, req, a, "user:"+a.User, "", whatShare); err != nil {
		return nil, err
	}
	rows, err := s.db.UserShares(ctx, a.User)
	if err != nil {
		return nil, err
	}
	out := make([]ShareInfo, 0, len(rows))
	for _, r := range rows {
		snap := policy.Snapshot{Project: policy.Project{Name: r.Project, Owner: r.ProjectOwner}, Share: r.Share}
		if r.Admin {
			snap.Project.Admins = []string{a.User}
		}
		if r.Member {
			snap.Members = map[string]bool{a.User: r.Outbound}
		}
		role := snap.RoleOf(a.User)
		if role == policy.RoleNone {
			continue
		}
		out = append(out, ShareInfo{Name: r.Share, Project: r.Project, Role: string(role), Outbound: r.Member && r.Outbound})
	}
	return out, nil
}

// SharesOf is Shares for user in a normal session: the view of another
// door (SFTP) that has checked the session itself.
func (s *Service) SharesOf(ctx context.Context, user string) ([]ShareInfo, error) {
	return s.Shares(ctx, Actor{User: user})
}

// ShareFiles lists share's files by path, for a member of the share or the
// IAO or an IAA of its project. For anyone else, and for a share that does
// not exist, the error is a NotFoundError (state.ErrNotFound), and the
// refusal is audited. A name that is no share name is both a NotFoundError
// and policy.ErrBadName.
func (s *Service) ShareFiles(ctx context.Context, a Actor, share string) ([]state.ShareFile, error) {
	if err := policy.CheckShareName(share); err != nil {
		// Both: a bad name (400 to the API), and no such share to a door
		// that just lists what exists.
		return nil, fmt.Errorf("%w: %w", &NotFoundError{What: whatShare}, err)
	}
	snap, err := s.shareSnapshot(ctx, share)
	if err != nil {
		return nil, err
	}
	if err := s.decide(ctx, snap, a.request(policy.ActionShareFiles), a, "share:"+share, "", whatShare); err != nil {
		return nil, err
	}
	files, err := s.db.ShareFiles(ctx, share)
	if err != nil {
		return nil, fmt.Errorf("shares: list files of %s: %w", share, err)
	}
	return files, nil
}

// Files is ShareFiles for user in a normal session (see SharesOf).
func (s *Service) Files(ctx context.Context, user, share string) ([]state.ShareFile, error) {
	return s.ShareFiles(ctx, Actor{User: user}, share)
}

// Snapshot is what decisions about share read, loaded fresh: its project,
// members and their outbound rights; the zero snapshot if there is no such
// share. For other doors' decisions (egress).
func (s *Service) Snapshot(ctx context.Context, share string) (policy.Snapshot, error) {
	return s.shareSnapshot(ctx, share)
}
