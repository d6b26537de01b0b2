package shares

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
)

// Move moves the file name of a's own Arrivals into share at path (see
// storage.CleanSharePath): a member of the share, or the IAO or an IAA of
// its project. The SHA-256 recorded when the bytes arrived and their
// creation time travel with the file; it leaves Arrivals (and Arrivals
// retention). Nothing is overwritten.
//
// Errors: bad names or path (policy.ErrBadName, storage.ErrInvalidName); a
// share a is not in, or no such file in a's Arrivals (NotFoundError); the
// path taken in the share (ExistError); over the share's byte quota (a
// *policy.QuotaError, policy.ErrQuotaExceeded); a refusal
// (policy.ErrDenied).
//
// The bytes are moved first, then the move is recorded; if recording fails,
// the bytes are moved back.
func (s *Service) Move(ctx context.Context, a Actor, name, share, path string) (state.ShareFile, error) {
	src, dst, err := moveKeys(a.User, name, share, path)
	if err != nil {
		return state.ShareFile{}, err
	}
	object := "share:" + share
	detail := src + " -> " + dst.Key
	snap, err := s.shareSnapshot(ctx, share)
	if err != nil {
		return state.ShareFile{}, err
	}
	req := a.request(policy.ActionArrivalMove)
	req.Owner = a.User // the key is in a's own Arrivals
	if err := s.decide(ctx, snap, req, a, object, detail, whatShare); err != nil {
		return state.ShareFile{}, err
	}
	f, err := s.db.ArrivalByKey(ctx, src)
	if err != nil {
		return state.ShareFile{}, stateErr(err, whatArrival, "")
	}
	limit := s.settings.Load().Quotas.ForShare(share)
	check := func(used int64) error { return policy.CheckShareQuota(share, limit, used, f.Size) }
	// A first look at the quota, so that bytes are not moved only to be
	// moved back; MoveArrival decides it for good.
	if used, err := s.db.ShareUsage(ctx, share); err != nil {
		return state.ShareFile{}, err
	} else if err := check(used); err != nil {
		return state.ShareFile{}, s.refuseQuota(ctx, a, object, detail, err)
	}
	if s.store == nil {
		return state.ShareFile{}, errors.New("shares: move: no storage backend")
	}
	// Also a first look: a folder of that name (or a file where the path
	// needs a folder) would make some backends fail the move obscurely.
	if taken, err := s.db.SharePathTaken(ctx, share, dst.Path); err != nil {
		return state.ShareFile{}, err
	} else if taken {
		return state.ShareFile{}, &ExistError{What: whatFile}
	}

	switch err := s.store.Move(ctx, src, dst.Key); {
	case errors.Is(err, storage.ErrExist):
		return state.ShareFile{}, &ExistError{What: whatFile}
	case errors.Is(err, storage.ErrNotFound):
		return state.ShareFile{}, &NotFoundError{What: whatArrival} // deleted meanwhile
	case err != nil:
		return state.ShareFile{}, fmt.Errorf("shares: move %s: %w", storage.RedactKey(src), err)
	}
	dst.MovedAt, dst.MovedBy = s.cfg.Now(), a.User
	// The bytes have moved: record it even if the client goes away now.
	moved, err := s.db.MoveArrival(context.WithoutCancel(ctx), f, dst, check,
		s.record(a, string(req.Action), object, "ok "+detail+" sha256="+f.SHA256))
	if err != nil {
		s.moveBack(ctx, src, dst.Key)
		if errors.Is(err, policy.ErrQuotaExceeded) {
			return state.ShareFile{}, s.refuseQuota(ctx, a, object, detail, err)
		}
		return state.ShareFile{}, stateErr(err, whatArrival, whatFile)
	}
	return moved, nil
}

// moveKeys checks the client's names and builds the source and destination
// keys of a move.
func moveKeys(user, name, share, path string) (string, state.ShareFile, error) {
	if err := policy.CheckShareName(share); err != nil {
		return "", state.ShareFile{}, err
	}
	clean, err := storage.CleanName(name)
	if err != nil {
		return "", state.ShareFile{}, err
	}
	src, err := storage.ArrivalKey(user, clean)
	if err != nil {
		return "", state.ShareFile{}, err
	}
	p, err := storage.CleanSharePath(path)
	if err != nil {
		return "", state.ShareFile{}, err
	}
	key, err := storage.ShareKey(share, p)
	if err != nil {
		return "", state.ShareFile{}, err
	}
	return src, state.ShareFile{Share: share, Path: p, Key: key}, nil
}

// refuseQuota audits a refusal by the share quota and returns err.
func (s *Service) refuseQuota(ctx context.Context, a Actor, object, detail string, err error) error {
	if aerr := s.audit(ctx, a, string(policy.ActionArrivalMove), object, "denied "+detail+": "+err.Error()); aerr != nil {
		return aerr
	}
	return err
}

// moveBack undoes the storage move of a move that could not be recorded,
// even if the request was cancelled. If that fails too, the bytes stay at
// the share key with no record, and the keys are logged (redacted).
func (s *Service) moveBack(ctx context.Context, src, dst string) {
	if err := s.store.Move(context.WithoutCancel(ctx), dst, src); err != nil {
		s.log.Error("move into a share not recorded, and the bytes could not be moved back",
			zap.String("key", storage.RedactKey(dst)), zap.String("arrival", storage.RedactKey(src)), zap.Error(err))
	}
}
