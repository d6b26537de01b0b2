package ingest

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"path"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
)

// complete seals a fully received upload and queues it for checking. The
// SHA-256 recorded here was computed as the bytes arrived.
func (s *Service) complete(ctx context.Context, u state.Upload, up storage.Upload, h hash.Hash, remote string) error {
	if _, err := up.Commit(ctx); err != nil {
		return fmt.Errorf("ingest: commit upload %s: %w", u.ID, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	if err := s.db.Transition(ctx, u.ID, state.StatusUploading, state.StatusProcessing, sum, "", ""); err != nil {
		return fmt.Errorf("ingest: queue upload %s: %w", u.ID, err)
	}
	if err := s.audit(ctx, u.Owner, "upload.complete", u.ID, "ok sha256="+sum, remote); err != nil {
		return err
	}
	s.cfg.Metrics.UploadCompleted()
	s.log.Info("upload complete", zap.String("upload_id", u.ID), zap.String("user", u.Owner),
		zap.Int64("bytes", u.Length), zap.String("sha256", sum))
	s.notify()
	return nil
}

// Run checks and publishes completed uploads until ctx ends: those queued
// before a restart, and each new one as it completes. A file that cannot be
// judged (a scanner error) stays queued and is retried, after
// RetryInterval, then twice as long each time up to MaxRetryInterval, or at
// once after Retry; it never becomes visible unchecked.
func (s *Service) Run(ctx context.Context) error {
	s.recoverComplete(ctx)
	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		inflight = map[string]bool{}
		failures = map[string]int{} // consecutive failed attempts
		retryAt  = map[string]time.Time{}
		sem      = make(chan struct{}, s.cfg.Workers)
	)
	tick := time.NewTicker(min(s.cfg.RetryInterval, time.Second))
	defer tick.Stop()
	defer wg.Wait()
	wg.Add(1)
	go func() {
		defer wg.Done()
		s.sweepLoop(ctx)
	}()
	for {
		var queued []state.Upload
		for _, st := range []string{state.StatusProcessing, state.StatusPublishing} {
			us, err := s.db.UploadsWithStatus(ctx, st, 1000)
			if err != nil && ctx.Err() == nil {
				s.log.Error("list queued uploads", zap.Error(err))
			}
			queued = append(queued, us...)
		}
		for _, u := range queued {
			mu.Lock()
			skip := inflight[u.ID] || s.now().Before(retryAt[u.ID])
			if !skip {
				inflight[u.ID] = true
			}
			mu.Unlock()
			if skip {
				continue
			}
			select {
			case sem <- struct{}{}:
			case <-ctx.Done():
				return nil
			}
			wg.Add(1)
			go func(u state.Upload) {
				defer wg.Done()
				defer func() { <-sem }()
				err := s.process(ctx, u)
				mu.Lock()
				delete(inflight, u.ID)
				var wait time.Duration
				if err != nil {
					failures[u.ID]++
					wait = backoff(s.cfg.RetryInterval, s.cfg.MaxRetryInterval, failures[u.ID])
					retryAt[u.ID] = s.now().Add(wait)
				} else {
					delete(failures, u.ID)
					delete(retryAt, u.ID)
				}
				s.cfg.Metrics.ScanWaiting(len(failures))
				mu.Unlock()
				if err != nil && ctx.Err() == nil {
					s.log.Warn("upload not yet checked; will retry", zap.String("upload_id", u.ID),
						zap.Duration("retry_in", wait), zap.Error(err))
				}
			}(u)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.wake:
		case <-s.retry:
			mu.Lock()
			clear(retryAt)
			mu.Unlock()
		case <-tick.C:
		}
	}
}

// Retry makes every waiting upload be tried again now, for example when the
// scanner answers again after an outage.
func (s *Service) Retry() {
	select {
	case s.retry <- struct{}{}:
	default:
	}
}

// backoff is the wait after the n-th consecutive failure: base, doubling,
// at most limit.
func backoff(base, limit time.Duration, n int) time.Duration {
	d := base
	for i := 1; i < n && d < limit; i++ {
		d *= 2
	}
	return min(d, limit)
}

// sweepLoop calls Sweep now and every SweepInterval until ctx ends.
func (s *Service) sweepLoop(ctx context.Context) {
	t := time.NewTicker(s.cfg.SweepInterval)
	defer t.Stop()
	for {
		if err := s.Sweep(ctx); err != nil && ctx.Err() == nil {
			s.log.Warn("sweep incomplete; retried next time", zap.Duration("interval", s.cfg.SweepInterval), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// recoverComplete finishes uploads whose last byte was recorded but whose
// completion was cut short by a crash.
func (s *Service) recoverComplete(ctx context.Context) {
	us, err := s.db.UploadsWithStatus(ctx, state.StatusUploading, 100000)
	if err != nil {
		s.log.Error("list uploads to recover", zap.Error(err))
		return
	}
	for _, u := range us {
		if u.Length == 0 || u.Offset != u.Length {
			continue
		}
		unlock, ok := s.TryLock(u.ID)
		if !ok {
			continue
		}
		err := func() error {
			up, err := s.store.Resume(ctx, u.Key, u.Handle)
			if err != nil {
				return err
			}
			defer up.Close()
			h, err := unmarshalHash(u.HashState)
			if err != nil {
				return err
			}
			return s.complete(ctx, u, up, h, "")
		}()
		unlock()
		if err != nil {
			s.log.Error("recover completed upload", zap.String("upload_id", u.ID), zap.Error(err))
		}
	}
}

// process takes one queued upload one step further: check it, then publish
// or quarantine or reject it. An error leaves it queued.
func (s *Service) process(ctx context.Context, u state.Upload) error {
	log := s.log.With(zap.String("upload_id", u.ID), zap.String("user", u.Owner))
	if u.Status == state.StatusPublishing {
		return s.publish(ctx, u, log)
	}
	if u.ExpectedSHA256 != "" && u.ExpectedSHA256 != u.SHA256 {
		return s.reject(ctx, u, "the file's SHA-256 does not match the sha256 given when the upload was created", log)
	}
	qkey, err := storage.QuarantineKey(u.ID)
	if err != nil {
		return err
	}
	if _, err := s.store.Stat(ctx, u.Key); errors.Is(err, storage.ErrNotFound) {
		// A crash between moving the bytes to quarantine and recording it.
		if _, serr := s.store.Stat(ctx, qkey); serr == nil {
			return s.recordQuarantine(ctx, u, qkey, "malware found (recovered after a restart)", log)
		}
		return fmt.Errorf("stat %s: %w", storage.RedactKey(u.Key), err)
	} else if err != nil {
		return fmt.Errorf("stat %s: %w", storage.RedactKey(u.Key), err)
	}
	obj := storage.NewObjectReader(ctx, s.store, u.Key, u.Length)
	defer obj.Close()
	start := s.now()
	paced := &pacedReaderAt{ctx: ctx, r: obj, busy: func() bool { return s.writing.Load() > 0 }, rate: scanPace}
	v, err := s.scan.Scan(ctx, scanner.File{Name: u.Filename, Size: u.Length, R: paced})
	if err != nil {
		s.cfg.Metrics.Verdict(metrics.VerdictError)
		return fmt.Errorf("scan: %w", err)
	}
	log.Info("upload checked", zap.String("verdict", verdictName(v)), zap.String("engine", v.Engine),
		zap.Int64("bytes", u.Length), zap.Duration("duration", s.now().Sub(start)))
	if v.Clean && v.SHA256 != u.SHA256 {
		// The bytes changed after they were hashed: never publish them.
		v = scanner.Verdict{Action: scanner.Quarantine, Reason: "stored bytes do not match the SHA-256 taken as they arrived"}
	}
	switch {
	case !v.Clean && v.Action == scanner.Reject:
		s.cfg.Metrics.Verdict(metrics.VerdictRefused)
		return s.reject(ctx, u, v.Reason, log)
	case !v.Clean:
		s.cfg.Metrics.Verdict(metrics.VerdictInfected)
		if err := s.store.Move(ctx, u.Key, qkey); err != nil {
			return fmt.Errorf("quarantine: %w", err)
		}
		return s.recordQuarantine(ctx, u, qkey, v.Reason, log)
	}
	s.cfg.Metrics.Verdict(metrics.VerdictClean)
	dst, err := s.freeArrivalKey(ctx, u, 0)
	if err != nil {
		return err
	}
	if err := s.db.Transition(ctx, u.ID, state.StatusProcessing, state.StatusPublishing, "", "", dst); err != nil {
		return err
	}
	u.Status, u.Key = state.StatusPublishing, dst
	return s.publish(ctx, u, log)
}

func verdictName(v scanner.Verdict) string {
	switch {
	case v.Clean:
		return "clean"
	case v.Action == scanner.Reject:
		return "refused: " + v.Reason
	}
	return "quarantine: " + v.Reason
}

func (s *Service) recordQuarantine(ctx context.Context, u state.Upload, qkey, reason string, log *zap.Logger) error {
	if err := s.db.Transition(ctx, u.ID, state.StatusProcessing, state.StatusQuarantined, "", reason, qkey); err != nil {
		return err
	}
	s.cfg.Metrics.UploadFailed(metrics.FailQuarantined)
	log.Warn("upload quarantined", zap.String("verdict", reason), zap.String("sha256", u.SHA256))
	return s.audit(ctx, u.Owner, "upload.quarantine", u.ID, "quarantined: "+reason, "")
}

func (s *Service) reject(ctx context.Context, u state.Upload, reason string, log *zap.Logger) error {
	if err := s.db.Transition(ctx, u.ID, state.StatusProcessing, state.StatusRejected, "", reason, ""); err != nil {
		return err
	}
	if err := s.store.Delete(ctx, u.Key); err != nil {
		log.Warn("delete rejected upload", zap.Error(err))
	}
	s.cfg.Metrics.UploadFailed(metrics.FailRejected)
	log.Info("upload rejected", zap.String("verdict", reason))
	return s.audit(ctx, u.Owner, "upload.reject", u.ID, "rejected: "+reason, "")
}

// publish moves a checked upload's bytes to the Arrivals key recorded in
// u.Key and records the file. It is safe to repeat after a crash at any
// point: the bytes are at the upload key, or already at the destination.
func (s *Service) publish(ctx context.Context, u state.Upload, log *zap.Logger) error {
	src, err := storage.UploadKey(u.ID)
	if err != nil {
		return err
	}
	for attempt := 1; ; attempt++ {
		err := s.store.Move(ctx, src, u.Key)
		if errors.Is(err, storage.ErrExist) || errors.Is(err, storage.ErrNotFound) {
			if _, serr := s.store.Stat(ctx, src); errors.Is(serr, storage.ErrNotFound) {
				err = nil // moved before a restart
			} else if errors.Is(err, storage.ErrExist) {
				// Another file took the name first: choose the next one.
				dst, ferr := s.freeArrivalKey(ctx, u, attempt)
				if ferr != nil {
					return ferr
				}
				if terr := s.db.Transition(ctx, u.ID, state.StatusPublishing, state.StatusPublishing, "", "", dst); terr != nil {
					return terr
				}
				u.Key = dst
				continue
			}
		}
		if err != nil {
			return fmt.Errorf("publish: %w", err)
		}
		break
	}
	now := s.now().UTC()
	f := state.File{Key: u.Key, Owner: u.Owner, Name: path.Base(u.Key), Size: u.Length, SHA256: u.SHA256, CreatedAt: now, UploadID: u.ID}
	if err := s.db.PublishFile(ctx, f); err != nil {
		return fmt.Errorf("publish: record %s: %w", storage.RedactKey(u.Key), err)
	}
	log.Info("upload published", zap.String("key", storage.RedactKey(u.Key)), zap.String("sha256", u.SHA256), zap.Int64("bytes", u.Length))
	return s.audit(ctx, u.Owner, "upload.publish", u.ID, "ok "+u.Key+" sha256="+u.SHA256, "")
}

// freeArrivalKey returns the first Arrivals key for u's file name, from the
// n-th candidate on ("name", "name (1)", "name (2)", ...), that neither a
// recorded file nor a stored object holds.
func (s *Service) freeArrivalKey(ctx context.Context, u state.Upload, n int) (string, error) {
	for i := n; i < n+1000; i++ {
		key, err := storage.ArrivalKey(u.Owner, candidateName(u.Filename, i))
		if err != nil {
			return "", err
		}
		taken, err := s.db.FileExists(ctx, key)
		if err != nil {
			return "", err
		}
		if taken {
			continue
		}
		if _, err := s.store.Stat(ctx, key); errors.Is(err, storage.ErrNotFound) {
			return key, nil
		} else if err != nil {
			return "", err
		}
	}
	return "", fmt.Errorf("ingest: no free name for %s in %s's Arrivals", u.ID, u.Owner)
}

// candidateName is name for i = 0, else name with " (i)" before its
// extension, shortened so the result stays within storage.MaxNameBytes.
func candidateName(name string, i int) string {
	if i == 0 {
		return name
	}
	base, ext := name, ""
	if dot := strings.LastIndexByte(name, '.'); dot > 0 {
		base, ext = name[:dot], name[dot:]
	}
	suffix := fmt.Sprintf(" (%d)", i)
	if len(suffix)+len(ext) >= storage.MaxNameBytes {
		// No room for the suffix before so long an extension: shorten
		// the name as a whole instead.
		base, ext = name, ""
	}
	for len(base)+len(suffix)+len(ext) > storage.MaxNameBytes && len(base) > 0 {
		r := []rune(base)
		base = string(r[:len(r)-1])
	}
	return strings.TrimRight(base, " .") + suffix + ext
}
