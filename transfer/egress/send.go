package egress

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
)

// ReceiptJSON is the receipt an item keeps once sent.
type ReceiptJSON struct {
	Portal   string    `json:"portal"`
	Method   string    `json:"method"`
	URL      string    `json:"url"`
	Status   int       `json:"status"`
	PortalID string    `json:"portal_id,omitempty"`
	SHA256   string    `json:"sha256"`
	Size     int64     `json:"size"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished"`
	Attempts int       `json:"attempts"`
}

// push sends a queued item. The request is decided again first, against the
// live settings and the share as it is now: a right revoked, a portal taken
// off the share's list or a share without egress since the request stops
// it. The pusher sends the bytes only if they hash to the item's BLAKE3
// (or SHA-256 when it has none): the digests the watcher took of the bytes
// that were checked and approved.
func (s *Service) push(ctx context.Context, it state.EgressItem) {
	log := s.log.With(zap.String("item", it.ID), zap.String("portal", it.Portal))
	eg := s.settings()
	snap, err := s.snaps.Snapshot(ctx, it.Share)
	if err != nil {
		log.Error("load the share for a push", zap.Error(err))
		s.retryLater(it.ID)
		return
	}
	d := policy.DecideEgress(policy.EgressRequest{
		Actor: it.RequestedBy, Share: snap, SharePortals: eg.Shares[it.Share].Portals, Portal: it.Portal,
	})
	p, known := eg.Portals[it.Portal]
	if d.Allow && !known {
		d = policy.Decision{Reason: "the portal is no longer configured", Err: policy.ErrDenied}
	}
	if !d.Allow {
		s.fail(ctx, it, StatusQueued, metrics.EgressRefused, "no longer allowed: "+d.Reason)
		return
	}
	pusher, err := s.pusher(p, it.ID)
	if err != nil {
		s.fail(ctx, it, StatusQueued, metrics.EgressFailed, err.Error())
		return
	}
	it, err = s.db.UpdateEgressItem(ctx, it.ID, []string{string(StatusQueued)}, func(i *state.EgressItem) error {
		i.Status = string(StatusPushing)
		i.Attempts++
		return nil
	}, s.record("system", "", "egress.push", it.ID, fmt.Sprintf("ok: pushing %d bytes, sha256 %s, to portal %s (%s)", it.Size, it.SHA256, p.Name, p.Method)))
	if err != nil {
		if !errors.Is(err, state.ErrConflict) {
			log.Error("start a push", zap.Error(err))
		}
		return
	}
	src := Source{
		Name: path.Base(it.Path), Size: it.Size, SHA256: it.SHA256, BLAKE3: it.BLAKE3,
		Open: func() (io.ReadSeekCloser, error) {
			f, _, err := OpenStaged(s.cfg.StagingDir, it.Share, it.Owner, it.Path)
			if err != nil {
				return nil, fmt.Errorf("%w: %w", ErrChanged, err)
			}
			return f, nil
		},
	}
	log.Info("egress push", zap.Int64("bytes", it.Size), zap.String("method", p.Method))
	rc, err := pusher.Push(ctx, src, it.TusURL)
	if err != nil && ctx.Err() != nil {
		// Stopping: the item stays pushing and is queued again at start.
		log.Info("egress push interrupted by shutdown", zap.Error(err))
		return
	}
	if err != nil {
		reason := "push failed: " + err.Error()
		if errors.Is(err, ErrChanged) {
			reason = "the staged file changed after it was checked: nothing complete was sent"
		}
		s.fail(ctx, it, StatusPushing, metrics.EgressFailed, reason)
		return
	}
	s.sent(ctx, it, rc, eg.RemoveSent)
}

// pusher builds the pusher for portal p, reading its CA and token files
// now (so that a rotated credential is used from the next push on).
func (s *Service) pusher(p policy.EgressPortal, id string) (*Pusher, error) {
	var pool *x509.CertPool
	if p.CAFile != "" {
		pem, err := os.ReadFile(p.CAFile)
		if err != nil {
			return nil, fmt.Errorf("portal %s: read its CA file: %w", p.Name, err)
		}
		if pool, err = CertPool(pem); err != nil {
			return nil, fmt.Errorf("portal %s: %w", p.Name, err)
		}
	}
	var token string
	if p.TokenFile != "" {
		b, err := os.ReadFile(p.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("portal %s: read its token file: %w", p.Name, errors.Unwrap(err))
		}
		token = string(bytes.TrimSpace(b))
	}
	return &Pusher{
		Portal: p.Portal,
		Client: NewClient(p.Portal, pool),
		Token:  token,
		Retry:  Backoff{Attempts: s.settings().Attempts},
		OnTusURL: func(ctx context.Context, u string) error {
			_, err := s.db.UpdateEgressItem(ctx, id, []string{string(StatusPushing)}, func(i *state.EgressItem) error {
				i.TusURL = u
				return nil
			}, state.AuditRecord{})
			return err
		},
		Log: s.log.Named("push"),
	}, nil
}

// sent records a delivered item with its receipt, then removes the staged
// file if so configured (and it is still the version sent).
func (s *Service) sent(ctx context.Context, it state.EgressItem, rc Receipt, remove bool) {
	log := s.log.With(zap.String("item", it.ID), zap.String("portal", it.Portal))
	receipt, _ := json.Marshal(ReceiptJSON{
		Portal: rc.Portal, Method: rc.Method, URL: rc.URL, Status: rc.Status, PortalID: rc.PortalID,
		SHA256: rc.SHA256, Size: rc.Size, Started: rc.Started.UTC(), Finished: rc.Finished.UTC(), Attempts: rc.Attempts,
	})
	ctx = context.WithoutCancel(ctx) // the bytes are out: record it
	_, err := s.db.UpdateEgressItem(ctx, it.ID, []string{string(StatusPushing)}, func(i *state.EgressItem) error {
		i.Status, i.Receipt, i.Reason = string(StatusSent), string(receipt), ""
		return nil
	}, s.record("system", "", "egress.sent", it.ID, fmt.Sprintf("ok: %d bytes, sha256 %s, to portal %s, status %d, portal id %q",
		rc.Size, rc.SHA256, rc.Portal, rc.Status, rc.PortalID)))
	if err != nil {
		log.Error("record a sent item (it was delivered)", zap.Error(err))
		return
	}
	s.mets.Egress(metrics.EgressSent)
	s.mets.EgressSentBytes(rc.Size)
	log.Info("egress sent", zap.Int64("bytes", rc.Size), zap.Int("status", rc.Status), zap.Duration("duration", rc.Finished.Sub(rc.Started)))
	if !remove {
		return
	}
	switch err := RemoveStaged(s.cfg.StagingDir, it.Share, it.Owner, it.Path, it.Size, it.ModTime); {
	case err == nil:
		log.Info("sent file removed from staging")
	case errors.Is(err, ErrChanged):
		log.Info("sent file not removed from staging: it changed since", zap.Error(err))
	default:
		log.Warn("remove a sent file from staging", zap.Error(err))
	}
}
