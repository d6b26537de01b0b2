package ingest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash"
	"io"

	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
)

// WriteRequest is one run of bytes from a client (a tus PATCH body).
type WriteRequest struct {
	ID     string
	Offset int64
	Body   io.Reader
	// Checksum, if set, must hash the whole body to Want, or none of the
	// body is kept (ErrChecksumMismatch).
	Checksum hash.Hash
	Want     []byte
	// Length, if ≥ 0, is the declared body length (Content-Length); a body
	// longer than the upload's remaining bytes is refused before any is read.
	Length     int64
	Actor      string
	RemoteAddr string
	Proto      string // for metrics: "tus", "sftp"
}

// ClientError wraps an error reading the client's body (a dropped
// connection, a stalled client). Bytes received before it are kept.
type ClientError struct{ Err error }

func (e *ClientError) Error() string { return "ingest: reading the client's data: " + e.Err.Error() }
func (e *ClientError) Unwrap() error { return e.Err }

// Write appends req.Body at req.Offset and returns the durable offset
// afterwards, which covers exactly the bytes that survive a crash together
// with the SHA-256 state that covers them. The caller holds the upload's lock
// (TryLock) and has checked ownership.
//
// Received bytes are made durable and recorded every CheckpointBytes, and
// when the client goes away midway, so a resumed upload re-sends little.
// A body with a checksum is all or nothing; a body that runs past the
// upload's length is refused and none of it kept.
// An upload of unknown length stops with a *policy.QuotaError
// (policy.ErrQuotaExceeded) before it would pass its owner's Arrivals bytes
// quota, keeping the bytes up to the last checkpoint (see quota.go).
// When the last byte arrives the upload completes and enters the check stage.
func (s *Service) Write(ctx context.Context, req WriteRequest) (int64, error) {
	u, err := s.db.GetUpload(ctx, req.ID)
	if err != nil {
		return 0, err
	}
	switch {
	case u.Status != state.StatusUploading:
		return u.Offset, ErrNotWritable
	case !s.now().Before(u.ExpiresAt):
		return u.Offset, ErrExpired
	case req.Offset != u.Offset:
		return u.Offset, ErrOffsetMismatch
	case req.Length > s.remaining(u):
		return u.Offset, ErrTooLarge
	}
	up, err := s.store.Resume(ctx, u.Key, u.Handle)
	if err != nil {
		return u.Offset, fmt.Errorf("ingest: resume upload %s: %w", u.ID, err)
	}
	defer up.Close() // after Commit, a no-op
	h, err := unmarshalHash(u.HashState)
	if err != nil {
		return u.Offset, err
	}
	log := s.log.With(zap.String("upload_id", u.ID), zap.String("user", u.Owner))
	s.cfg.Metrics.UploadStarted()
	defer s.cfg.Metrics.UploadEnded()
	s.writing.Add(1)
	defer s.writing.Add(-1)

	// allOrNothing: nothing is recorded before the whole body checked out.
	allOrNothing := req.Checksum != nil
	start := checkpoint{off: u.Offset, handle: u.Handle, hash: u.HashState}
	last := start
	// Progress is recorded whether or not the request is still there: a
	// record that commits but reports the request's cancellation would
	// otherwise be followed by a roll back of the bytes it declares durable.
	bg := context.WithoutCancel(ctx)
	rollback := func(to checkpoint, cause error) (int64, error) {
		if last.off != to.off {
			if err := s.db.CommitProgress(bg, u.ID, last.off, to.off, to.handle, to.hash); err != nil {
				return last.off, errors.Join(cause, fmt.Errorf("ingest: roll back upload %s: %w", u.ID, err))
			}
		}
		if ru, err := s.store.Resume(bg, u.Key, to.handle); err != nil {
			// Harmless: the recorded offset is unchanged, and the next
			// write resumes from it, which discards them then.
			log.Warn("refused bytes not discarded yet", zap.Error(err))
		} else {
			_ = ru.Close()
		}
		return to.off, cause
	}

	// Cut the first buffer so the rest start at offsets the backend writes
	// fastest (direct I/O on local disk).
	head := 0
	if a, ok := up.(storage.Aligned); ok {
		if al := int64(a.WriteAlignment()); al > 1 && int64(s.cfg.BufferSize)%al == 0 {
			head = int((al - u.Offset%al) % al)
		}
	}
	every := s.cfg.CheckpointBytes
	if c := s.cfg.Settings.Load().CheckpointBytes; c > 0 {
		every = c // live: the configuration file may have been reloaded
	}
	quota := s.newStreamQuota(u)
	if err := quota.update(ctx, u.Offset); err != nil {
		return u.Offset, err
	}
	feed := s.startFeed(req.Body, s.remaining(u), head)
	defer feed.stop()
	off := u.Offset
	for {
		seg := &segment{feed: feed, limit: every, sum: h, check: req.Checksum,
			quota: quota, base: off - u.Offset}
		n, werr := up.WriteChunk(ctx, off, seg)
		off += n
		if werr != nil && seg.fed == n && ctx.Err() != nil && errors.Is(werr, ctx.Err()) {
			// The request ended (the HTTP server cancels it when the
			// client's connection drops): the client went away, and the n
			// bytes written before that are durable and hashed.
			werr = &ClientError{Err: werr}
		}
		if werr != nil && (seg.fed != n || !isClientError(werr)) {
			// A storage failure, an overflow, or bytes hashed but not
			// stored: keep nothing unverified.
			if errors.Is(werr, ErrTooLarge) || allOrNothing {
				return rollback(start, werr)
			}
			return rollback(last, werr)
		}
		if !allOrNothing && off > last.off {
			cp := checkpoint{off: off, handle: up.Handle(), hash: marshalHash(h)}
			if err := s.db.CommitProgress(bg, u.ID, last.off, cp.off, cp.handle, cp.hash); err != nil {
				return rollback(last, fmt.Errorf("ingest: record progress of %s: %w", u.ID, err))
			}
			s.cfg.Metrics.ReceivedBytes(req.Proto, cp.off-last.off)
			last = cp
			if werr == nil && !seg.eof {
				if err := quota.update(bg, last.off); err != nil {
					return last.off, err
				}
			}
		}
		if werr != nil {
			if allOrNothing {
				return rollback(start, werr)
			}
			log.Info("client went away; received bytes kept", zap.Int64("offset", off), zap.Error(werr))
			return off, werr
		}
		if seg.eof {
			break
		}
	}
	if allOrNothing {
		if req.Checksum != nil && !bytes.Equal(req.Checksum.Sum(nil), req.Want) {
			return rollback(start, ErrChecksumMismatch)
		}
		if off > start.off {
			cp := checkpoint{off: off, handle: up.Handle(), hash: marshalHash(h)}
			if err := s.db.CommitProgress(bg, u.ID, start.off, cp.off, cp.handle, cp.hash); err != nil {
				return rollback(start, fmt.Errorf("ingest: record progress of %s: %w", u.ID, err))
			}
			s.cfg.Metrics.ReceivedBytes(req.Proto, cp.off-start.off)
		}
	}
	if u.Length >= 0 && off == u.Length {
		u.Offset = off
		if err := s.complete(ctx, u, up, h, req.RemoteAddr); err != nil {
			return off, err
		}
	}
	return off, nil
}

// remaining is how many more bytes u takes: up to its length, or, for an
// upload of unknown length, up to the largest file.
func (s *Service) remaining(u state.Upload) int64 {
	if u.Length < 0 {
		return s.cfg.Settings.Load().Limits.MaxFileSize - u.Offset
	}
	return u.Length - u.Offset
}

type checkpoint struct {
	off    int64
	handle []byte
	hash   []byte
}

func isClientError(err error) bool {
	var ce *ClientError
	return errors.As(err, &ce)
}
