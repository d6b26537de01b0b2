package ingest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"

	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
)

// Errors of the quarantine operations.
var (
	// ErrNotQuarantined: the upload exists but is not in quarantine.
	ErrNotQuarantined = errors.New("ingest: upload is not quarantined")
	// ErrReasonRequired: releasing or deleting needs a reason for the audit trail.
	ErrReasonRequired = errors.New("ingest: a reason is required")
	// ErrContentChanged: the quarantined bytes are not those that were
	// judged; they are not released.
	ErrContentChanged = errors.New("ingest: quarantined content changed since it was checked")
)

// maxReasonBytes bounds an administrator's reason.
const maxReasonBytes = 500

// Quarantined lists the uploads in quarantine, oldest first.
func (s *Service) Quarantined(ctx context.Context, limit int) ([]state.Upload, error) {
	return s.db.UploadsWithStatus(ctx, state.StatusQuarantined, limit)
}

// Release hands a quarantined upload back to the pipeline to be published
// to its owner's Arrivals, overriding its verdict: an administrator's
// decision, audited with actor and reason. The verdict was about particular
// bytes, so the release is refused (ErrContentChanged, audited) unless the
// quarantined bytes still have the SHA-256 recorded when they arrived. The
// running daemon publishes the file (status publishing, then available).
func (s *Service) Release(ctx context.Context, id, actor, reason string) (state.Upload, error) {
	u, qkey, reason, err := s.quarantined(ctx, id, reason)
	if err != nil {
		return state.Upload{}, err
	}
	src, err := storage.UploadKey(u.ID)
	if err != nil {
		return state.Upload{}, err
	}
	// The bytes are in quarantine, or already back at the upload key if
	// an earlier release stopped half way.
	from := qkey
	if _, err := s.store.Stat(ctx, qkey); errors.Is(err, storage.ErrNotFound) {
		from = src
	} else if err != nil {
		return state.Upload{}, err
	}
	sum, err := s.hashObject(ctx, from)
	if err != nil {
		return state.Upload{}, fmt.Errorf("ingest: read quarantined %s: %w", u.ID, err)
	}
	if sum != u.SHA256 {
		if err := s.Audit(ctx, actor, "quarantine.release", u.ID, "refused: content changed (sha256 "+sum+", recorded "+u.SHA256+"); reason given: "+reason, ""); err != nil {
			return state.Upload{}, err
		}
		return state.Upload{}, ErrContentChanged
	}
	if from == qkey {
		if err := s.store.Move(ctx, qkey, src); err != nil {
			return state.Upload{}, fmt.Errorf("ingest: move %s out of quarantine: %w", u.ID, err)
		}
	}
	dst, err := s.freeArrivalKey(ctx, u, 0)
	if err != nil {
		return state.Upload{}, err
	}
	if err := s.db.Transition(ctx, u.ID, state.StatusQuarantined, state.StatusPublishing, "", "", dst); err != nil {
		return state.Upload{}, err
	}
	if err := s.Audit(ctx, actor, "quarantine.release", u.ID, "released: "+reason+"; verdict was: "+u.Reason+"; sha256="+sum, ""); err != nil {
		return state.Upload{}, err
	}
	s.log.Warn("quarantined upload released by an administrator", zap.String("upload_id", u.ID), zap.String("user", u.Owner), zap.String("actor", actor))
	s.notify()
	u.Status, u.Key = state.StatusPublishing, dst
	return u, nil
}

// Delete removes a quarantined upload's bytes for good; its record stays,
// status deleted, with the reason. Audited with actor and reason.
func (s *Service) Delete(ctx context.Context, id, actor, reason string) error {
	u, qkey, reason, err := s.quarantined(ctx, id, reason)
	if err != nil {
		return err
	}
	if err := s.store.Delete(ctx, qkey); err != nil {
		return fmt.Errorf("ingest: delete quarantined %s: %w", u.ID, err)
	}
	if err := s.db.Transition(ctx, u.ID, state.StatusQuarantined, state.StatusDeleted, "", "deleted from quarantine: "+reason+" (verdict: "+u.Reason+")", ""); err != nil {
		return err
	}
	s.log.Warn("quarantined upload deleted by an administrator", zap.String("upload_id", u.ID), zap.String("user", u.Owner), zap.String("actor", actor))
	return s.Audit(ctx, actor, "quarantine.delete", u.ID, "deleted: "+reason+"; verdict was: "+u.Reason, "")
}

// quarantined returns upload id if it is in quarantine, its quarantine key
// and the reason cleaned up.
func (s *Service) quarantined(ctx context.Context, id, reason string) (state.Upload, string, string, error) {
	reason = strings.Join(strings.Fields(reason), " ")
	if reason == "" {
		return state.Upload{}, "", "", ErrReasonRequired
	}
	if len(reason) > maxReasonBytes {
		return state.Upload{}, "", "", fmt.Errorf("ingest: the reason is longer than %d bytes", maxReasonBytes)
	}
	u, err := s.db.GetUpload(ctx, id)
	if err != nil {
		return state.Upload{}, "", "", err
	}
	if u.Status != state.StatusQuarantined {
		return state.Upload{}, "", "", fmt.Errorf("%w (it is %s)", ErrNotQuarantined, u.Status)
	}
	qkey, err := storage.QuarantineKey(u.ID)
	if err != nil {
		return state.Upload{}, "", "", err
	}
	return u, qkey, reason, nil
}

// hashObject returns the hex SHA-256 of the object at key.
func (s *Service) hashObject(ctx context.Context, key string) (string, error) {
	rc, err := s.store.Open(ctx, key, 0, -1)
	if err != nil {
		return "", err
	}
	defer rc.Close()
	h := sha256.New()
	if _, err := io.Copy(h, rc); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}
