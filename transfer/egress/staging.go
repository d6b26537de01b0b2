package egress

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
)

// watcherActor is the audit actor of what the staging watcher records: it
// saw the file appear; no one asked for anything yet.
const watcherActor = "system:egress-watcher"

// checkStagedName is the path gate for staged files: a share name, a user
// name as mftd writes it, and a path the share path gate leaves unchanged
// (NFC, no "..", no control characters, length limits).
func checkStagedName(share, user, p string) error {
	if err := policy.CheckShareName(share); err != nil {
		return err
	}
	if u, err := policy.CanonicalUsername(user); err != nil || u != user {
		return fmt.Errorf("egress: %q is not a user name as mftd writes it", user)
	}
	clean, err := storage.CleanSharePath(p)
	if err != nil {
		return err
	}
	if clean != p {
		return fmt.Errorf("egress: path %q is not in its normal form (%q)", p, clean)
	}
	return nil
}

// known reports whether this version of the file was recorded before (a
// restart's rescan then does not hash it again).
func (s *Service) known(share, user, p string, size int64, mtime time.Time) bool {
	cur, err := s.db.CurrentEgressItem(context.Background(), share, user, p)
	if err != nil {
		return false
	}
	st := Status(cur.Status)
	return st != StatusGone && st != StatusWithdrawn && cur.Size == size && cur.ModTime.Equal(mtime)
}

// staged records a settled version of a staged file: a new item, or the
// staged item updated. A request under way for an earlier version is
// withdrawn (the bytes it was about are gone), except a push in progress:
// it sends the bytes it has open only if they still hash to what was
// checked, and fails otherwise.
func (s *Service) staged(ctx context.Context, f StagedFile) {
	log := s.log.With(zap.String("share", f.Share), zap.String("user", f.User), zap.String("path", f.Path))
	cur, err := s.db.CurrentEgressItem(ctx, f.Share, f.User, f.Path)
	switch {
	case errors.Is(err, state.ErrNotFound):
	case err != nil:
		log.Error("record a staged file", zap.Error(err))
		return
	default:
		st := Status(cur.Status)
		if cur.SHA256 == f.SHA256 && cur.Size == f.Size && cur.ModTime.Equal(f.ModTime) && st != StatusGone && st != StatusWithdrawn {
			return
		}
		switch {
		case st == StatusStaged:
			_, err := s.db.UpdateEgressItem(ctx, cur.ID, []string{string(StatusStaged)}, func(it *state.EgressItem) error {
				it.Size, it.ModTime, it.SHA256, it.BLAKE3 = f.Size, f.ModTime, f.SHA256, f.BLAKE3
				return nil
			}, s.record(watcherActor, "", "egress.stage", cur.ID, fmt.Sprintf("ok: %s/%s/%s changed, %d bytes, sha256 %s", f.Share, f.User, f.Path, f.Size, f.SHA256)))
			if err == nil {
				log.Info("staged file changed", zap.String("item", cur.ID), zap.Int64("bytes", f.Size))
				return
			}
			if !errors.Is(err, state.ErrConflict) {
				log.Error("record a staged file", zap.Error(err))
				return
			}
			// Requested meanwhile: a new item below.
		case st.Active() && st != StatusPushing:
			s.withdraw(ctx, cur, "the staged file changed after the request")
		}
	}
	it := state.EgressItem{
		ID: newID(), Share: f.Share, Owner: f.User, Path: f.Path,
		Size: f.Size, ModTime: f.ModTime, SHA256: f.SHA256, BLAKE3: f.BLAKE3, Status: string(StatusStaged),
	}
	if err := s.db.CreateEgressItem(ctx, it, s.record(watcherActor, "", "egress.stage", it.ID,
		fmt.Sprintf("ok: %s/%s/%s staged, %d bytes, sha256 %s", f.Share, f.User, f.Path, f.Size, f.SHA256))); err != nil {
		log.Error("record a staged file", zap.Error(err))
		return
	}
	log.Info("staged file ready", zap.String("item", it.ID), zap.Int64("bytes", f.Size))
}

// removed records that a staged file went away: its staged item is gone, a
// request under way is withdrawn (a push in progress decides for itself).
func (s *Service) removed(ctx context.Context, share, user, p string) {
	cur, err := s.db.CurrentEgressItem(ctx, share, user, p)
	if err != nil {
		if !errors.Is(err, state.ErrNotFound) {
			s.log.Error("record a removed staged file", zap.String("share", share), zap.String("user", user), zap.Error(err))
		}
		return
	}
	switch st := Status(cur.Status); {
	case st == StatusStaged:
		_, err = s.db.UpdateEgressItem(ctx, cur.ID, []string{string(StatusStaged)}, func(it *state.EgressItem) error {
			it.Status = string(StatusGone)
			return nil
		}, s.record(watcherActor, "", "egress.gone", cur.ID, "ok: the staged file was removed"))
		if err != nil && !errors.Is(err, state.ErrConflict) {
			s.log.Error("record a removed staged file", zap.String("item", cur.ID), zap.Error(err))
		}
	case st.Active() && st != StatusPushing:
		s.withdraw(ctx, cur, "the staged file was removed after the request")
	}
}

// withdraw ends a request whose file changed or went away.
func (s *Service) withdraw(ctx context.Context, it state.EgressItem, reason string) {
	st := Status(it.Status)
	if err := checkMove(st, StatusWithdrawn); err != nil {
		s.log.Error("withdraw", zap.String("item", it.ID), zap.Error(err))
		return
	}
	_, err := s.db.UpdateEgressItem(ctx, it.ID, []string{it.Status}, func(i *state.EgressItem) error {
		i.Status, i.Reason = string(StatusWithdrawn), reason
		return nil
	}, s.record(watcherActor, "", "egress.withdraw", it.ID, "withdrawn: "+reason))
	switch {
	case err == nil:
		s.log.Info("egress request withdrawn", zap.String("item", it.ID), zap.String("reason", reason))
	case errors.Is(err, state.ErrConflict):
		// It moved on meanwhile; its next step sees the change.
	default:
		s.log.Error("withdraw", zap.String("item", it.ID), zap.Error(err))
	}
}
