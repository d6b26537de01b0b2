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
//   - Arrivals older than the live Settings' ArrivalsRetention, counted
//     from their recorded creation time, and quarantined files older than
//     QuarantineRetention, counted from when they were quarantined: the
//     object deleted first, then its record, each deletion one audit record
//     (actor "system") committed with it.
//
// Run calls it every SweepInterval; an upload busy with a request is left
// for the next sweep.
func (s *Service) Sweep(ctx context.Context) error {
	return errors.Join(s.sweepExpired(ctx), s.sweepOrphans(ctx), s.sweepArrivals(ctx), s.sweepQuarantine(ctx))
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

// sweepArrivals deletes the Arrivals whose recorded creation time is older
// than the live retention.arrivals; zero keeps them. Files are read in
// batches of sweepBatch; one that fails is retried by the next sweep.
func (s *Service) sweepArrivals(ctx context.Context) error {
	keep := s.cfg.Settings.Load().ArrivalsRetention
	if keep <= 0 {
		return nil
	}
	cutoff := s.now().Add(-keep)
	var errs []error
	var cur state.FileCursor
	for {
		fs, err := s.db.FilesCreatedBefore(ctx, cutoff, cur, sweepBatch)
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("ingest: sweep Arrivals: %w", err))...)
		}
		for _, f := range fs {
			errs = append(errs, s.expireArrival(ctx, f, keep))
		}
		if len(fs) < sweepBatch || ctx.Err() != nil {
			return errors.Join(errs...)
		}
		cur = fs[len(fs)-1].After()
	}
}

// expireArrival deletes one Arrivals file: its object, then its row
// together with the audit record. A crash in between leaves a row whose
// object is gone, which the next sweep finishes.
func (s *Service) expireArrival(ctx context.Context, f state.File, keep time.Duration) error {
	// The listing may be stale: a file moved into a share since frees its
	// key for a new upload of the same name, whose bytes must stay.
	if held, err := s.db.HoldsFile(ctx, f); err != nil || !held {
		return err
	}
	if err := s.store.Delete(ctx, f.Key); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("ingest: delete expired Arrival %s: %w", storage.RedactKey(f.Key), err)
	}
	_, err := s.db.DeleteFile(ctx, f, state.AuditRecord{
		Actor: "system", Action: "arrival.expire", Object: f.Key,
		Result: fmt.Sprintf("deleted: older than retention.arrivals (%s); created %s; sha256=%s",
			keep, f.CreatedAt.UTC().Format(time.RFC3339), f.SHA256),
	})
	if errors.Is(err, state.ErrNotFound) {
		return nil // moved into a share, or deleted by another sweeper, meanwhile
	}
	if err != nil {
		return fmt.Errorf("ingest: expire Arrival %s: %w", storage.RedactKey(f.Key), err)
	}
	s.cfg.Metrics.RetentionDeletion(metrics.RetentionArrivals)
	s.log.Info("Arrival deleted: retention period over", zap.String("key", storage.RedactKey(f.Key)),
		zap.String("user", f.Owner), zap.String("upload_id", f.UploadID), zap.Time("created_at", f.CreatedAt),
		zap.Duration("retention", keep))
	return nil
}

// sweepQuarantine deletes the files quarantined longer than the live
// retention.quarantine; zero keeps them. Batches of sweepBatch, until one
// is short or fails (the rest wait for the next sweep).
func (s *Service) sweepQuarantine(ctx context.Context) error {
	keep := s.cfg.Settings.Load().QuarantineRetention
	if keep <= 0 {
		return nil
	}
	cutoff := s.now().Add(-keep)
	for {
		us, err := s.db.QuarantinedBefore(ctx, cutoff, sweepBatch)
		if err != nil {
			return fmt.Errorf("ingest: sweep quarantine: %w", err)
		}
		var errs []error
		for _, u := range us {
			errs = append(errs, s.expireQuarantined(ctx, u, keep))
		}
		if err := errors.Join(errs...); err != nil || len(us) < sweepBatch || ctx.Err() != nil {
			return err
		}
	}
}

// expireQuarantined deletes one quarantined file: its object, then the
// upload moves to deleted together with the audit record.
func (s *Service) expireQuarantined(ctx context.Context, u state.Upload, keep time.Duration) error {
	qkey, err := storage.QuarantineKey(u.ID)
	if err != nil {
		return err
	}
	if err := s.store.Delete(ctx, qkey); err != nil && !errors.Is(err, storage.ErrNotFound) {
		return fmt.Errorf("ingest: delete expired quarantined %s: %w", u.ID, err)
	}
	_, err = s.db.DeleteQuarantined(ctx, u.ID,
		fmt.Sprintf("retention: deleted after %s in quarantine (verdict: %s)", keep, u.Reason),
		state.AuditRecord{
			Actor: "system", Action: "quarantine.expire", Object: u.ID,
			Result: fmt.Sprintf("deleted: quarantined longer than retention.quarantine (%s); quarantined %s; verdict was: %s",
				keep, u.UpdatedAt.UTC().Format(time.RFC3339), u.Reason),
		})
	if errors.Is(err, state.ErrConflict) || errors.Is(err, state.ErrNotFound) {
		return nil // released or deleted meanwhile
	}
	if err != nil {
		return fmt.Errorf("ingest: expire quarantined %s: %w", u.ID, err)
	}
	s.cfg.Metrics.RetentionDeletion(metrics.RetentionQuarantine)
	s.log.Info("quarantined file deleted: retention period over", zap.String("upload_id", u.ID),
		zap.String("user", u.Owner), zap.Time("quarantined_at", u.UpdatedAt), zap.Duration("retention", keep))
	return nil
}
