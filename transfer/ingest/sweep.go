package ingest

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
)

// sweepBatch bounds the expired uploads one sweep handles; the rest wait
// for the next.
const sweepBatch = 1000

// Sweep discards what no upload needs any more:
//
//   - uploads left unfinished past their expiry: terminated (audited, as
//     "system") and their stored bytes deleted, which on S3 aborts the
//     multipart upload and deletes the tail;
//   - remains under uploads/ that no upload in progress or in the check
//     stage references (a storage write whose session was never recorded, a
//     delete that failed), once nothing has written to them for the
//     incomplete-upload time, which any live upload would have expired in.
//
// Run calls it every SweepInterval; an upload busy with a request is left
// for the next sweep.
func (s *Service) Sweep(ctx context.Context) error {
	return errors.Join(s.sweepExpired(ctx), s.sweepOrphans(ctx))
}

func (s *Service) sweepExpired(ctx context.Context) error {
	us, err := s.db.UploadsWithStatus(ctx, state.StatusUploading, sweepBatch)
	if err != nil {
		return fmt.Errorf("ingest: sweep: %w", err)
	}
	var errs []error
	for _, u := range us {
		if s.now().Before(u.ExpiresAt) {
			continue
		}
		unlock, ok := s.TryLock(u.ID)
		if !ok {
			continue // a request is writing it; the next sweep sees it
		}
		err := s.expire(ctx, u)
		unlock()
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (s *Service) expire(ctx context.Context, u state.Upload) error {
	err := s.db.Transition(ctx, u.ID, state.StatusUploading, state.StatusTerminated, "",
		"expired: not completed within retention.incomplete_uploads", "")
	if errors.Is(err, state.ErrConflict) {
		return nil // completed or terminated meanwhile
	}
	if err != nil {
		return fmt.Errorf("ingest: expire %s: %w", u.ID, err)
	}
	if err := s.audit(ctx, "system", "upload.expire", u.ID, "ok", ""); err != nil {
		return err
	}
	s.cfg.Metrics.UploadFailed(metrics.FailExpired)
	s.log.Info("expired upload discarded", zap.String("upload_id", u.ID), zap.String("user", u.Owner), zap.Int64("offset", u.Offset))
	if err := s.store.Delete(ctx, u.Key); err != nil {
		// The orphan sweep retries once the remains are old enough.
		return fmt.Errorf("ingest: delete expired upload %s: %w", u.ID, err)
	}
	s.cfg.Metrics.RetentionDeletion(metrics.RetentionUploads)
	return nil
}

func (s *Service) sweepOrphans(ctx context.Context) error {
	prefix := storage.PrefixUploads + "/"
	last := map[string]time.Time{}
	note := func(k string, t time.Time) {
		if t.After(last[k]) || last[k].IsZero() {
			last[k] = t
		}
	}
	err := s.store.List(ctx, prefix, func(o storage.ObjectInfo) error {
		note(o.Key, o.ModTime)
		return nil
	})
	if err != nil {
		return fmt.Errorf("ingest: sweep: %w", err)
	}
	if lo, ok := s.store.(storage.Leftovers); ok {
		err := lo.Pending(ctx, prefix, func(k string, t time.Time) error {
			note(k, t)
			return nil
		})
		if err != nil {
			return fmt.Errorf("ingest: sweep: %w", err)
		}
	}
	cutoff := s.now().Add(-s.cfg.Settings.Load().IncompleteUploads)
	var errs []error
	for _, key := range slices.Sorted(maps.Keys(last)) {
		if last[key].After(cutoff) {
			continue
		}
		id := strings.TrimPrefix(key, prefix)
		u, err := s.db.GetUpload(ctx, id)
		switch {
		case errors.Is(err, state.ErrNotFound):
		case err != nil:
			errs = append(errs, err)
			continue
		case u.Status == state.StatusUploading || u.Status == state.StatusProcessing || u.Status == state.StatusPublishing:
			continue // live: it expires or is published by its own path
		}
		if err := s.store.Delete(ctx, key); err != nil {
			errs = append(errs, fmt.Errorf("ingest: delete orphaned %s: %w", storage.RedactKey(key), err))
			continue
		}
		s.log.Info("orphaned upload remains deleted", zap.String("key", storage.RedactKey(key)), zap.Time("last_written", last[key]))
		s.cfg.Metrics.RetentionDeletion(metrics.RetentionUploads)
	}
	return errors.Join(errs...)
}
