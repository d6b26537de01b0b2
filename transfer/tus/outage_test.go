package tus_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/mftd/mftd/storage"
)

// outageStore is a backend whose uploads, while down is set, store bytes up
// to offset failAt and then fail with storage.ErrUnavailable: object storage
// that went away mid-upload.
type outageStore struct {
	storage.Backend
	down   atomic.Bool
	failAt int64
}

func (s *outageStore) Resume(ctx context.Context, key string, h storage.Handle) (storage.Upload, error) {
	up, err := s.Backend.Resume(ctx, key, h)
	if err != nil {
		return nil, err
	}
	return &outageUpload{Upload: up, s: s}, nil
}

type outageUpload struct {
	storage.Upload
	s *outageStore
}

func (u *outageUpload) WriteChunk(ctx context.Context, off int64, r io.Reader) (int64, error) {
	if !u.s.down.Load() {
		return u.Upload.WriteChunk(ctx, off, r)
	}
	n, err := u.Upload.WriteChunk(ctx, off, io.LimitReader(r, max(0, u.s.failAt-off)))
	if err != nil || n < u.s.failAt-off {
		return n, err // the body ended before failAt
	}
	return n, fmt.Errorf("test: store went away: %w", storage.ErrUnavailable)
}

// Storage that becomes unavailable mid-PATCH answers 503 with Retry-After
// (tus clients retry a 5xx), keeps the offset at durable, hashed bytes, and
// the upload completes once storage is back.
func TestStorageUnavailable(t *testing.T) {
	var s *outageStore
	f := newFixtureStore(t, incompleteTTL, func(b storage.Backend) storage.Backend {
		s = &outageStore{Backend: b, failAt: 2*checkpointBytes + checkpointBytes/2}
		return s
	})
	data := randBytes(5*checkpointBytes+123, 41)
	id := f.create(f.alice, int64(len(data)), metadata("filename", "outage.bin", "sha256", sha256Hex(data)))

	// Two checkpoints are stored whole; the third write fails halfway, and
	// its stored half is not counted (it was not recorded with its hash).
	s.down.Store(true)
	resp, body := f.patch(f.alice, id, 0, data[:4*checkpointBytes], nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("PATCH while storage is down: %d %q (Retry-After %q), want 503 with Retry-After", resp.StatusCode, body, resp.Header.Get("Retry-After"))
	}
	off := f.offset(f.alice, id)
	if off != 2*checkpointBytes {
		t.Fatalf("offset after the outage: %d, want %d (the last checkpoint before the failure)", off, 2*checkpointBytes)
	}
	resp, body = f.patch(f.alice, id, off, data[off:], nil)
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Fatalf("PATCH while storage is still down: %d %q, want 503", resp.StatusCode, body)
	}

	s.down.Store(false)
	f.mustPatch(f.alice, id, off, data[off:])
	st := f.settle(f.alice, id)
	if st.Status != "available" || st.SHA256 != sha256Hex(data) {
		t.Fatalf("after storage came back: %+v, want available with the data's SHA-256", st)
	}
}
