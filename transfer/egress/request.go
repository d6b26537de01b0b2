package egress

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
)

// maxList bounds a listing of items.
const maxList = 1000

// Request asks for the staged file <share>/<a.User>/<path> to be pushed to
// portal. It is decided first (policy.DecideEgress: a member with the
// outbound right, in a normal session, a share with egress, a portal on its
// list); a refusal is audited and matches policy.ErrDenied. Then the
// file's current item must be staged (or ended in a way that allows asking
// again, with the same bytes still staged): it becomes "checking", audited,
// and the checks start. ErrNotStaged if there is no ready staged file at
// path, ErrBusy if a request for it is under way.
func (s *Service) Request(ctx context.Context, a Actor, share, p, portal string) (state.EgressItem, error) {
	eg := s.settings()
	snap, err := s.snaps.Snapshot(ctx, share)
	if err != nil {
		return state.EgressItem{}, err
	}
	d := policy.DecideEgress(policy.EgressRequest{
		Actor: a.User, Emergency: a.Emergency, Share: snap,
		SharePortals: eg.Shares[share].Portals, Portal: portal,
	})
	if !d.Allow {
		s.mets.Egress(metrics.EgressRefused)
		rec := s.record(a.User, a.RemoteAddr, string(policy.ActionEgressRequest), "-",
			fmt.Sprintf("denied: share %s, portal %s: %s", share, portal, d.Reason))
		rec.Object = "egress-request:" + share
		if _, err := s.db.Audit(context.WithoutCancel(ctx), rec); err != nil {
			return state.EgressItem{}, fmt.Errorf("egress: audit refusal: %w", err)
		}
		return state.EgressItem{}, fmt.Errorf("egress: request by %s: %w", a.User, d.Err)
	}
	clean, err := storage.CleanSharePath(p)
	if err != nil {
		return state.EgressItem{}, err
	}
	cur, err := s.db.CurrentEgressItem(ctx, share, a.User, clean)
	if errors.Is(err, state.ErrNotFound) {
		return state.EgressItem{}, ErrNotStaged
	}
	if err != nil {
		return state.EgressItem{}, err
	}
	now := s.cfg.Now()
	result := fmt.Sprintf("ok: %s/%s to portal %s, %d bytes, sha256 %s: %s", share, clean, portal, cur.Size, cur.SHA256, d.Reason)
	requested := func(it *state.EgressItem) error {
		it.Status, it.Portal, it.RequestedBy, it.RequestedAt = string(StatusChecking), portal, a.User, now
		return nil
	}
	var it state.EgressItem
	switch st := Status(cur.Status); {
	case st == StatusStaged:
		it, err = s.db.UpdateEgressItem(ctx, cur.ID, []string{string(StatusStaged)}, requested,
			s.record(a.User, a.RemoteAddr, string(policy.ActionEgressRequest), cur.ID, result))
		if errors.Is(err, state.ErrConflict) {
			return state.EgressItem{}, ErrBusy // requested by a concurrent call
		}
	case st.Retryable():
		// Ask again for the same bytes: a new item, if they are still
		// staged unchanged.
		f, fi, oerr := OpenStaged(s.cfg.StagingDir, share, a.User, clean)
		if oerr != nil {
			return state.EgressItem{}, ErrNotStaged
		}
		f.Close()
		if fi.Size() != cur.Size || !fi.ModTime().Equal(cur.ModTime) {
			return state.EgressItem{}, ErrNotStaged // changed: the watcher records the new version once settled
		}
		it = state.EgressItem{ID: newID(), Share: share, Owner: a.User, Path: clean, Size: cur.Size, ModTime: cur.ModTime, SHA256: cur.SHA256, BLAKE3: cur.BLAKE3}
		_ = requested(&it)
		err = s.db.CreateEgressItem(ctx, it, s.record(a.User, a.RemoteAddr, string(policy.ActionEgressRequest), it.ID, result))
	case st.Active():
		return state.EgressItem{}, ErrBusy
	default: // gone, withdrawn
		return state.EgressItem{}, ErrNotStaged
	}
	if err != nil {
		return state.EgressItem{}, err
	}
	s.log.Info("egress requested", zap.String("item", it.ID), zap.String("user", a.User), zap.String("portal", portal))
	s.Wake()
	return it, nil
}

// Items lists the items of share that a may see, newest first: their own,
// or, for the IAO and the IAAs of the share's project, everyone's (they
// review them). ErrNotFound for a share a has no role in.
func (s *Service) Items(ctx context.Context, a Actor, share string) ([]state.EgressItem, error) {
	snap, err := s.snaps.Snapshot(ctx, share)
	if err != nil {
		return nil, err
	}
	switch snap.RoleOf(a.User) {
	case policy.RoleIAO, policy.RoleIAA:
		return s.db.EgressItems(ctx, share, "", maxList)
	case policy.RoleMember:
		return s.db.EgressItems(ctx, share, a.User, maxList)
	}
	return nil, ErrNotFound
}

// Item is one item, for its requester (owner) or a reviewer of its share.
func (s *Service) Item(ctx context.Context, a Actor, id string) (state.EgressItem, error) {
	it, _, err := s.reviewable(ctx, a, id, policy.ActionEgressView)
	return it, err
}

// reviewable loads item id and decides action on it for a: ErrNotFound for
// an item a may not see (audited for approve and reject), policy.ErrDenied
// (audited) for a refusal.
func (s *Service) reviewable(ctx context.Context, a Actor, id string, action policy.Action) (state.EgressItem, policy.Decision, error) {
	it, err := s.db.GetEgressItem(ctx, id)
	if errors.Is(err, state.ErrNotFound) {
		return state.EgressItem{}, policy.Decision{}, ErrNotFound
	}
	if err != nil {
		return state.EgressItem{}, policy.Decision{}, err
	}
	snap, err := s.snaps.Snapshot(ctx, it.Share)
	if err != nil {
		return state.EgressItem{}, policy.Decision{}, err
	}
	d := policy.DecideEgressReview(policy.EgressReview{Actor: a.User, Emergency: a.Emergency, Action: action, Share: snap, Requester: it.Owner})
	if d.Allow {
		return it, d, nil
	}
	if action != policy.ActionEgressView {
		rec := s.record(a.User, a.RemoteAddr, string(action), id, "denied: "+d.Reason)
		if _, err := s.db.Audit(context.WithoutCancel(ctx), rec); err != nil {
			return state.EgressItem{}, d, fmt.Errorf("egress: audit refusal: %w", err)
		}
	}
	if errors.Is(d.Err, policy.ErrNotVisible) {
		return state.EgressItem{}, d, ErrNotFound
	}
	return state.EgressItem{}, d, fmt.Errorf("egress: %s of %s by %s: %w", action, id, a.User, d.Err)
}

// Approve lets an item that awaits approval be pushed. Only the IAO or an
// IAA of the project, never the requester, in a normal session
// (policy.DecideEgressReview). What is approved is the item's SHA-256: the
// push sends those bytes or nothing. ErrState if the item does not await
// approval.
func (s *Service) Approve(ctx context.Context, a Actor, id string) (state.EgressItem, error) {
	return s.review(ctx, a, id, policy.ActionEgressApprove, StatusQueued, "")
}

// Reject ends an item that awaits approval, with the reviewer's reason.
func (s *Service) Reject(ctx context.Context, a Actor, id, reason string) (state.EgressItem, error) {
	return s.review(ctx, a, id, policy.ActionEgressReject, StatusRejected, reason)
}

func (s *Service) review(ctx context.Context, a Actor, id string, action policy.Action, next Status, reason string) (state.EgressItem, error) {
	it, d, err := s.reviewable(ctx, a, id, action)
	if err != nil {
		return state.EgressItem{}, err
	}
	if Status(it.Status) != StatusAwaitingApproval {
		return it, fmt.Errorf("%w: the item is %s", ErrState, it.Status)
	}
	now := s.cfg.Now()
	result := fmt.Sprintf("ok: sha256 %s to portal %s: %s", it.SHA256, it.Portal, d.Reason)
	if next == StatusRejected {
		result = fmt.Sprintf("rejected: %s: %s", reason, d.Reason)
	}
	out, err := s.db.UpdateEgressItem(ctx, id, []string{string(StatusAwaitingApproval)}, func(i *state.EgressItem) error {
		i.Status, i.DecidedBy, i.DecidedAt = string(next), a.User, now
		if next == StatusRejected {
			i.Reason = "rejected by " + a.User
			if reason != "" {
				i.Reason += ": " + reason
			}
		}
		return nil
	}, s.record(a.User, a.RemoteAddr, string(action), id, result))
	if errors.Is(err, state.ErrConflict) {
		cur, gerr := s.db.GetEgressItem(ctx, id)
		if gerr != nil {
			return state.EgressItem{}, gerr
		}
		return cur, fmt.Errorf("%w: the item is %s", ErrState, cur.Status)
	}
	if err != nil {
		return state.EgressItem{}, err
	}
	if next == StatusRejected {
		s.mets.Egress(metrics.EgressRejected)
	}
	s.log.Info("egress "+string(next), zap.String("item", id), zap.String("user", a.User))
	s.Wake()
	return out, nil
}
