// Package ingest is the protocol-neutral core of the upload door: durable,
// resumable writes with a streaming SHA-256 (Write), and the stage that
// checks a completed file and publishes it to its owner's Arrivals or
// quarantines it (Run). Protocol edges (tus, SFTP) authenticate, ask policy,
// take the per-upload lock and call in here.
package ingest

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
)

// Errors the protocol edges map to answers.
var (
	// ErrOffsetMismatch: a write did not start at the durable offset.
	ErrOffsetMismatch = errors.New("ingest: offset does not match the upload's offset")
	// ErrTooLarge: more bytes than the upload's declared length.
	ErrTooLarge = errors.New("ingest: more data than the upload's length")
	// ErrChecksumMismatch: a chunk's checksum did not match; none of it was kept.
	ErrChecksumMismatch = errors.New("ingest: checksum mismatch")
	// ErrExpired: the upload expired before it completed.
	ErrExpired = errors.New("ingest: upload expired")
	// ErrNotWritable: the upload is complete, terminated or otherwise closed.
	ErrNotWritable = errors.New("ingest: upload no longer accepts data")
	// ErrLocked: another request holds the upload.
	ErrLocked = errors.New("ingest: upload is busy with another request")
)

// Config bounds the ingest core. All fields are required.
type Config struct {
	CheckpointBytes int64 // make received bytes durable at least this often
	BufferSize      int   // size of one transfer buffer
	Buffers         int   // buffers per transfer (≥ 2)
	// Settings are the live limits, retention and quotas (reloaded with the
	// configuration file); required.
	Settings         *policy.Live
	Workers          int              // concurrent check-and-publish workers
	RetryInterval    time.Duration    // first wait before a failed check is retried; default 10s
	MaxRetryInterval time.Duration    // the wait doubles after each failure up to this; default 5m
	SweepInterval    time.Duration    // how often Run calls Sweep; default 1m
	Metrics          *metrics.Metrics // nil: none
}

// Service is the ingest core. It is safe for concurrent use.
type Service struct {
	cfg   Config
	log   *zap.Logger
	db    *state.DB
	store storage.Backend
	scan  scanner.Scanner
	now   func() time.Time

	bufs  sync.Pool
	locks *lockSet
	wake  chan struct{}
	retry chan struct{}
	// writing counts the writes in progress (bytes arriving), which the
	// check stage yields to.
	writing atomic.Int64
}

// New returns a Service. Run must be called for completed uploads to be
// checked and published.
func New(cfg Config, log *zap.Logger, db *state.DB, store storage.Backend, sc scanner.Scanner) (*Service, error) {
	switch {
	case cfg.CheckpointBytes <= 0, cfg.BufferSize <= 0, cfg.Buffers < 2, cfg.Settings == nil, cfg.Workers <= 0:
		return nil, fmt.Errorf("ingest: invalid config %+v", cfg)
	}
	if cfg.RetryInterval <= 0 {
		cfg.RetryInterval = 10 * time.Second
	}
	if cfg.MaxRetryInterval < cfg.RetryInterval {
		cfg.MaxRetryInterval = max(cfg.RetryInterval, 5*time.Minute)
	}
	if cfg.SweepInterval <= 0 {
		cfg.SweepInterval = time.Minute
	}
	s := &Service{
		cfg: cfg, log: log, db: db, store: store, scan: sc,
		now:   time.Now,
		locks: newLockSet(),
		wake:  make(chan struct{}, 1),
		retry: make(chan struct{}, 1),
	}
	s.bufs.New = func() any { b := make([]byte, cfg.BufferSize); return &b }
	return s, nil
}

// LengthUnknown is the Length of an upload whose size is known only when
// its writer finishes it (SFTP): see Finish.
const LengthUnknown = -1

// CreateRequest describes a new upload. Filename must already have passed
// storage.CleanName and the caller must have asked policy.
type CreateRequest struct {
	Owner          string
	Filename       string
	Length         int64
	Metadata       string // raw protocol metadata, kept to echo back; never logged
	ExpectedSHA256 string // lower-case hex or ""
	RemoteAddr     string
	Proto          string
}

// Create starts a new upload and records it. A zero-length upload is
// complete at once. It reserves the upload's length and one file against
// its owner's Arrivals quota, or refuses with a *policy.QuotaError
// (policy.ErrQuotaExceeded; audited): see quota.go.
func (s *Service) Create(ctx context.Context, req CreateRequest) (state.Upload, error) {
	set := s.cfg.Settings.Load()
	if req.Length < LengthUnknown || req.Length > set.Limits.MaxFileSize {
		return state.Upload{}, ErrTooLarge
	}
	quota := set.Quotas.ForUser(req.Owner)
	if err := s.precheckQuota(ctx, req, quota); err != nil {
		return state.Upload{}, s.refuseQuota(ctx, req, err)
	}
	id := newID()
	key, err := storage.UploadKey(id)
	if err != nil {
		return state.Upload{}, err
	}
	up, err := s.store.Create(ctx, key)
	if err != nil {
		return state.Upload{}, fmt.Errorf("ingest: create upload %s: %w", id, err)
	}
	defer up.Close() // the first write resumes it from its handle
	now := s.now().UTC()
	u := state.Upload{
		ID: id, Owner: req.Owner, Filename: req.Filename, Length: req.Length,
		Handle: up.Handle(), HashState: marshalHash(sha256.New()),
		Metadata: req.Metadata, ExpectedSHA256: req.ExpectedSHA256,
		Status: state.StatusUploading, Key: key,
		CreatedAt: now, UpdatedAt: now, ExpiresAt: now.Add(set.IncompleteUploads),
	}
	if err := s.recordUpload(ctx, u, quota); err != nil {
		_ = up.Abort(context.WithoutCancel(ctx))
		if errors.Is(err, policy.ErrQuotaExceeded) {
			return state.Upload{}, s.refuseQuota(ctx, req, err)
		}
		return state.Upload{}, fmt.Errorf("ingest: record upload %s: %w", id, err)
	}
	if err := s.audit(ctx, req.Owner, "upload.create", id, "ok", req.RemoteAddr); err != nil {
		return state.Upload{}, err
	}
	s.log.Info("upload created", zap.String("upload_id", id), zap.String("user", req.Owner),
		zap.String("proto", req.Proto), zap.Int64("bytes", req.Length))
	if req.Length == 0 {
		if err := s.complete(ctx, u, up, sha256.New(), req.RemoteAddr); err != nil {
			return state.Upload{}, err
		}
		return s.db.GetUpload(ctx, id)
	}
	return u, nil
}

// Finish fixes the length of an upload of unknown length at its durable
// offset and completes it into the check stage. The caller holds the lock.
func (s *Service) Finish(ctx context.Context, id, actor, remote string) error {
	u, err := s.db.GetUpload(ctx, id)
	if err != nil {
		return err
	}
	switch {
	case u.Owner != actor:
		return state.ErrNotFound
	case u.Status != state.StatusUploading || u.Length >= 0:
		return ErrNotWritable
	}
	if err := s.db.FixLength(ctx, id, u.Offset); err != nil {
		return fmt.Errorf("ingest: finish %s: %w", id, err)
	}
	u.Length = u.Offset
	up, err := s.store.Resume(ctx, u.Key, u.Handle)
	if err != nil {
		return fmt.Errorf("ingest: finish %s: %w", id, err)
	}
	defer up.Close()
	h, err := unmarshalHash(u.HashState)
	if err != nil {
		return err
	}
	return s.complete(ctx, u, up, h, remote)
}

// Audit appends a record to the audit chain (for the doors' own events,
// such as refused operations).
func (s *Service) Audit(ctx context.Context, actor, action, object, result, remote string) error {
	return s.audit(ctx, actor, action, object, result, remote)
}

// Partials lists owner's incomplete uploads of unknown length.
func (s *Service) Partials(ctx context.Context, owner string) ([]state.Upload, error) {
	return s.db.PartialUploads(ctx, owner)
}

// Arrivals lists owner's Arrivals.
func (s *Service) Arrivals(ctx context.Context, owner string) ([]state.File, error) {
	return s.db.FilesByOwner(ctx, owner)
}

// Settings are the live limits, retention and quotas the service reads.
func (s *Service) Settings() *policy.Live { return s.cfg.Settings }

// Get returns an upload's record.
func (s *Service) Get(ctx context.Context, id string) (state.Upload, error) {
	return s.db.GetUpload(ctx, id)
}

// TryLock takes the per-upload lock for one request, or reports false if
// another request holds it. Writes and terminations must hold it.
func (s *Service) TryLock(id string) (unlock func(), ok bool) { return s.locks.tryLock(id) }

// Terminate discards an incomplete upload. The caller holds the lock.
func (s *Service) Terminate(ctx context.Context, id, actor, remote string) error {
	u, err := s.db.GetUpload(ctx, id)
	if err != nil {
		return err
	}
	if u.Status != state.StatusUploading {
		return ErrNotWritable
	}
	if err := s.db.Transition(ctx, id, state.StatusUploading, state.StatusTerminated, "", "terminated by the owner", ""); err != nil {
		return fmt.Errorf("ingest: terminate %s: %w", id, err)
	}
	if err := s.audit(ctx, actor, "upload.terminate", id, "ok", remote); err != nil {
		return err
	}
	s.cfg.Metrics.UploadFailed(metrics.FailTerminated)
	if err := s.store.Delete(context.WithoutCancel(ctx), u.Key); err != nil {
		s.log.Warn("delete terminated upload", zap.String("upload_id", id), zap.Error(err))
	}
	return nil
}

func (s *Service) audit(ctx context.Context, actor, action, object, result, remote string) error {
	_, err := s.db.Audit(context.WithoutCancel(ctx), state.AuditRecord{
		Actor: actor, Action: action, Object: object, Result: result, RemoteAddr: remote,
	})
	if err != nil {
		return fmt.Errorf("ingest: audit %s %s: %w", action, object, err)
	}
	return nil
}

func (s *Service) notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

func newID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // crypto/rand.Read never fails on supported platforms
	return hex.EncodeToString(b[:])
}

func marshalHash(h hash.Hash) []byte {
	b, err := h.(encoding.BinaryMarshaler).MarshalBinary()
	if err != nil {
		panic(fmt.Sprintf("ingest: sha256 state does not marshal: %v", err)) // cannot happen for crypto/sha256
	}
	return b
}

func unmarshalHash(state []byte) (hash.Hash, error) {
	h := sha256.New()
	if len(state) == 0 {
		return h, nil
	}
	if err := h.(encoding.BinaryUnmarshaler).UnmarshalBinary(state); err != nil {
		return nil, fmt.Errorf("ingest: restore sha256 state: %w", err)
	}
	return h, nil
}
