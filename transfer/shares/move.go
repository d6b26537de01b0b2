package shares

import (
	"context"
	"errors"

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
// The move is recorded first (state.DB.BeginMove: the file leaves Arrivals
// and holds its path and quota in the share, unlisted), then the bytes
// move, then the file is listed; a crash anywhere leaves a move that
// Recover finishes. If the bytes cannot be moved (gone from Arrivals, or
// an object no record knows at the share key), the record is undone and
// the file is back in Arrivals: NotFoundError or ExistError. Any other
// storage error is returned with the move recorded and unfinished, for
// Recover to finish.
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
	if s.store == nil {
		return state.ShareFile{}, errors.New("shares: move: no storage backend")
	}
	f, err := s.db.ArrivalByKey(ctx, src)
	if err != nil {
		return state.ShareFile{}, stateErr(err, whatArrival, "")
	}
	release, ok := s.claim(dst.Key)
	if !ok {
		// Another move to that path is under way (or being recovered).
		return state.ShareFile{}, &ExistError{What: whatFile}
	}
	defer release()
	limit := s.settings.Load().Quotas.ForShare(share)
	check := func(used int64) error { return policy.CheckShareQuota(share, limit, used, f.Size) }
	dst.MovedAt, dst.MovedBy = s.cfg.Now(), a.User
	m, err := s.db.BeginMove(ctx, f, dst, check,
		s.record(a, string(req.Action), object, "ok "+detail+" sha256="+f.SHA256))
	var qe *policy.QuotaError
	if errors.As(err, &qe) {
		return state.ShareFile{}, s.refuseQuota(ctx, a, object, detail, qe)
	}
	if err != nil {
		return state.ShareFile{}, stateErr(err, whatArrival, whatFile)
	}
	// Recorded: carry it through even if the client goes away now.
	if err := s.complete(context.WithoutCancel(ctx), m, a); err != nil {
		return state.ShareFile{}, err
	}
	return m.File, nil
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
