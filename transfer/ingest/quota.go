package ingest

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// Arrivals quotas (policy.Settings.Quotas, read live).
//
// What counts is policy.ArrivalsUsage, computed from the state database
// (state.ArrivalsUsage): the owner's files in Arrivals, plus every upload
// being received or checked. There is no separate counter to keep in step,
// so every release follows from a status change or a deleted file row:
// completion turns the reservation into the file (one transaction,
// state.PublishFile), termination, expiry, rejection and quarantine end it
// (a quarantined file does not count: it is not in Arrivals; released by an
// administrator it counts again, even past the quota), and a move into a
// share or a deletion removes the file row.
//
// An upload of known length reserves all of it when it is created, checked
// and recorded in one transaction (state.CreateUploadChecked). An upload of
// unknown length (SFTP) reserves a file when it is created and its bytes as
// they become durable: the room left is read again at every checkpoint
// (limits.checkpoint_bytes) and bounds the bytes taken until the next one,
// so a stream alone stops exactly at the quota, and concurrent streams or
// creations by the same user can together pass it by at most one
// checkpoint's worth each.

// ArrivalsUsage is owner's current usage, for display.
func (s *Service) ArrivalsUsage(ctx context.Context, owner string) (policy.ArrivalsUsage, error) {
	u, err := s.db.ArrivalsUsage(ctx, owner)
	if err != nil {
		return policy.ArrivalsUsage{}, err
	}
	return usageOf(u), nil
}

func usageOf(u state.ArrivalsUsage) policy.ArrivalsUsage {
	return policy.ArrivalsUsage{
		Bytes:         u.FileBytes + u.ReservedBytes,
		Files:         u.Files + u.ReservedFiles,
		ReservedBytes: u.ReservedBytes,
		ReservedFiles: u.ReservedFiles,
	}
}

// reserveBytes is what creating u reserves: its length, or nothing yet
// while it is unknown.
func reserveBytes(length int64) int64 { return max(length, 0) }

// precheckQuota refuses a creation that cannot fit before any storage is
// touched. It decides nothing for good: recordUpload does, atomically.
func (s *Service) precheckQuota(ctx context.Context, req CreateRequest, q policy.UserQuota) error {
	if q == (policy.UserQuota{}) {
		return nil
	}
	usage, err := s.db.ArrivalsUsage(ctx, req.Owner)
	if err != nil {
		return fmt.Errorf("ingest: create upload: %w", err)
	}
	return policy.CheckArrivals(req.Owner, q, usageOf(usage), reserveBytes(req.Length), 1)
}

// recordUpload records u, reserving its length and one file against its
// owner's quota q in the same transaction.
func (s *Service) recordUpload(ctx context.Context, u state.Upload, q policy.UserQuota) error {
	if q == (policy.UserQuota{}) {
		return s.db.CreateUpload(ctx, u)
	}
	return s.db.CreateUploadChecked(ctx, u, func(usage state.ArrivalsUsage) error {
		return policy.CheckArrivals(u.Owner, q, usageOf(usage), reserveBytes(u.Length), 1)
	})
}

// refuseQuota audits a creation refused by a quota and returns the refusal.
func (s *Service) refuseQuota(ctx context.Context, req CreateRequest, refusal error) error {
	var qe *policy.QuotaError
	if !errors.As(refusal, &qe) {
		return refusal
	}
	s.log.Info("upload refused: quota", zap.String("user", req.Owner), zap.String("proto", req.Proto),
		zap.String("quota", string(qe.Quota)), zap.Int64("bytes", req.Length))
	if err := s.audit(ctx, req.Owner, "upload.create", req.Owner, "refused: "+qe.Error(), req.RemoteAddr); err != nil {
		return errors.Join(refusal, err)
	}
	return qe
}

// streamQuota bounds the bytes an upload of unknown length takes by its
// owner's Arrivals bytes quota, the room re-read at every checkpoint.
type streamQuota struct {
	s     *Service
	owner string
	start int64 // the upload's durable offset when this write began

	// cap is read by the feed's consumer (segment.next) and replaced
	// between segments; nil: no limit.
	cap atomic.Pointer[byteCap]
}

// byteCap: at most n bytes of the request's body, counted from its start;
// more is refused with err.
type byteCap struct {
	n   int64
	err error
}

// newStreamQuota returns nil for an upload of known length, whose length
// was reserved when it was created.
func (s *Service) newStreamQuota(u state.Upload) *streamQuota {
	if u.Length >= 0 {
		return nil
	}
	return &streamQuota{s: s, owner: u.Owner, start: u.Offset}
}

// update sets the cap from the owner's usage now, which counts this upload
// at durable, its recorded offset.
func (q *streamQuota) update(ctx context.Context, durable int64) error {
	if q == nil {
		return nil
	}
	uq := q.s.cfg.Settings.Load().Quotas.ForUser(q.owner)
	if uq.ArrivalsBytes <= 0 {
		q.cap.Store(nil)
		return nil
	}
	su, err := q.s.db.ArrivalsUsage(ctx, q.owner)
	if err != nil {
		return fmt.Errorf("ingest: quota of %s: %w", q.owner, err)
	}
	usage := usageOf(su)
	room := uq.ArrivalsBytes - usage.Bytes
	q.cap.Store(&byteCap{
		n: durable - q.start + room,
		err: &policy.QuotaError{Quota: policy.QuotaArrivalsBytes, Subject: q.owner,
			Limit: uq.ArrivalsBytes, Used: usage.Bytes},
	})
	return nil
}

// allow reports nil if the body may reach total bytes, or the refusal.
func (q *streamQuota) allow(total int64) error {
	if q == nil {
		return nil
	}
	if c := q.cap.Load(); c != nil && total > c.n {
		return c.err
	}
	return nil
}
