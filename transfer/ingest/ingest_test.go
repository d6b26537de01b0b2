package ingest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/scanner/scannertest"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/local"
	"github.com/mftd/mftd/storage/state"
)

const (
	testCheckpoint = 64 << 10
	testMaxSize    = 10 << 20
	testTTL        = time.Hour
)

var testConfig = Config{
	CheckpointBytes: testCheckpoint,
	BufferSize:      16 << 10,
	Buffers:         4,
	Settings:        policy.NewLive(policy.Settings{Limits: policy.Limits{MaxFileSize: testMaxSize}, IncompleteUploads: testTTL}),
	Workers:         1,
	RetryInterval:   20 * time.Millisecond,
}

// env is a state database and an object directory that outlive any one
// Service built on them, as they outlive a killed process.
type env struct {
	t    *testing.T
	db   *state.DB
	root string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	db, err := state.Open(context.Background(), filepath.Join(t.TempDir(), "db"), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &env{t: t, db: db, root: t.TempDir()}
}

// store opens a new local backend on the environment's directory.
func (e *env) store() *local.Backend {
	e.t.Helper()
	b, err := local.New(e.root, zaptest.NewLogger(e.t))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { b.Close() })
	return b
}

func (e *env) service(store storage.Backend, sc scanner.Scanner) *Service {
	e.t.Helper()
	s, err := New(testConfig, zaptest.NewLogger(e.t), e.db, store, sc)
	if err != nil {
		e.t.Fatal(err)
	}
	return s
}

// run starts s's check-and-publish worker until the test ends.
func run(t *testing.T, s *Service) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// stored is the object at key, or nil.
func (e *env) stored(key string) []byte {
	b, err := os.ReadFile(filepath.Join(e.root, filepath.FromSlash(key)))
	if err != nil {
		return nil
	}
	return b
}

func (e *env) upload(id string) state.Upload {
	e.t.Helper()
	u, err := e.db.GetUpload(context.Background(), id)
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func randBytes(n int, seed byte) []byte {
	b := make([]byte, n)
	_, _ = rand.NewChaCha8([32]byte{seed}).Read(b)
	return b
}

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// hashStateOf is the marshalled SHA-256 state after hashing b.
func hashStateOf(b []byte) []byte {
	h := sha256.New()
	h.Write(b)
	return marshalHash(h)
}

func create(t *testing.T, s *Service, owner, name string, length int64) state.Upload {
	t.Helper()
	u, err := s.Create(context.Background(), CreateRequest{Owner: owner, Filename: name, Length: length, Proto: "test"})
	if err != nil {
		t.Fatalf("Create: %v", err)
	}
	return u
}

func write(s *Service, id string, off int64, body io.Reader) (int64, error) {
	unlock, ok := s.TryLock(id)
	if !ok {
		return 0, ErrLocked
	}
	defer unlock()
	return s.Write(context.Background(), WriteRequest{ID: id, Offset: off, Body: body, Length: -1})
}

func TestCandidateName(t *testing.T) {
	tests := []struct {
		name string
		i    int
		want string
	}{
		{"report.csv", 0, "report.csv"},
		{"report.csv", 1, "report (1).csv"},
		{"report.csv", 12, "report (12).csv"},
		{"archive.tar.gz", 2, "archive.tar (2).gz"},
		{"README", 1, "README (1)"},
		{".bashrc", 1, ".bashrc (1)"},
		{".config.yaml", 3, ".config (3).yaml"},
		{"naïve café.txt", 1, "naïve café (1).txt"},
		{strings.Repeat("a", 251) + ".txt", 0, strings.Repeat("a", 251) + ".txt"},
		{strings.Repeat("a", 251) + ".txt", 1, strings.Repeat("a", 247) + " (1).txt"},
		{strings.Repeat("b", 255), 1, strings.Repeat("b", 251) + " (1)"},
		// Truncation never splits a character.
		{strings.Repeat("é", 125) + ".txt", 1, strings.Repeat("é", 123) + " (1).txt"},
		// Truncation that leaves a trailing space or dot drops it.
		{strings.Repeat("a", 244) + " xy.txt", 100, strings.Repeat("a", 244) + " (100).txt"},
	}
	for _, tt := range tests {
		if got := candidateName(tt.name, tt.i); got != tt.want {
			t.Errorf("candidateName(%.20q... (%d bytes), %d) = %q, want %q", tt.name, len(tt.name), tt.i, got, tt.want)
		}
	}
}

// TestCandidateNameValid: every candidate for a valid name is itself a valid,
// different name within the length limit, whatever the name's shape.
func TestCandidateNameValid(t *testing.T) {
	names := []string{
		"a", "report.csv", ".bashrc", "archive.tar.gz", "x.y.z.",
		strings.Repeat("a", 255),
		strings.Repeat("a", 251) + ".txt",
		strings.Repeat("é", 127),
		strings.Repeat("日本", 42) + ".csv",
		"a." + strings.Repeat("x", 253),      // an extension too long to keep whole
		"." + strings.Repeat("x", 254),       // a dotfile at the limit
		strings.Repeat("a.", 127) + "b",      // many dots
		"x" + strings.Repeat(" ", 250) + "y", // spaces where the cut falls
		"e\u0301" + strings.Repeat("e\u0301", 84),
	}
	for _, name := range names {
		clean, err := storage.CleanName(name)
		if err != nil {
			continue // not a name an upload can have
		}
		for _, i := range []int{1, 2, 9, 10, 99, 999} {
			got := candidateName(clean, i)
			if len(got) > storage.MaxNameBytes || !utf8.ValidString(got) {
				t.Errorf("candidateName(%.20q... (%d bytes), %d) = %d bytes", clean, len(clean), i, len(got))
				continue
			}
			if c, err := storage.CleanName(got); err != nil || c != got {
				t.Errorf("candidateName(%.20q... (%d bytes), %d) = %q, which the path gate refuses: %v", clean, len(clean), i, got, err)
			}
			if !strings.Contains(got, fmt.Sprintf(" (%d)", i)) || got == clean {
				t.Errorf("candidateName(%.20q..., %d) = %q, lacks its suffix", clean, i, got)
			}
			if _, err := storage.ArrivalKey("alice", got); err != nil {
				t.Errorf("candidateName(%.20q..., %d) = %q, not a valid key: %v", clean, i, got, err)
			}
		}
	}
}

func TestNewRejectsBadConfig(t *testing.T) {
	e := newEnv(t)
	for _, mut := range []func(*Config){
		func(c *Config) { c.CheckpointBytes = 0 },
		func(c *Config) { c.BufferSize = 0 },
		func(c *Config) { c.Buffers = 1 },
		func(c *Config) { c.Settings = nil },
		func(c *Config) { c.Workers = 0 },
	} {
		cfg := testConfig
		mut(&cfg)
		if _, err := New(cfg, zaptest.NewLogger(t), e.db, e.store(), scannertest.Builtin(t, 0)); err == nil {
			t.Errorf("New(%+v) accepted an invalid config", cfg)
		}
	}
}

func TestTryLock(t *testing.T) {
	e := newEnv(t)
	s := e.service(e.store(), scannertest.Builtin(t, 0))
	unlock, ok := s.TryLock("a")
	if !ok {
		t.Fatal("first TryLock failed")
	}
	if _, ok := s.TryLock("a"); ok {
		t.Fatal("second TryLock on a held upload succeeded")
	}
	if u, ok := s.TryLock("b"); !ok {
		t.Fatal("TryLock on another upload failed")
	} else {
		u()
	}
	unlock()
	unlock() // a second call must not release someone else's lock
	again, ok := s.TryLock("a")
	if !ok {
		t.Fatal("TryLock after unlock failed")
	}
	unlock()
	if _, ok := s.TryLock("a"); ok {
		t.Fatal("a stale unlock released the new holder's lock")
	}
	again()
}

// errDisk is the storage failure flakyBackend injects.
var errDisk = errors.New("injected: disk write failed")

// flakyBackend is a storage.Backend whose uploads fail once WriteChunk has
// taken budget bytes in total (budget < 0: never).
type flakyBackend struct {
	storage.Backend
	mu     sync.Mutex
	budget int64
}

func (b *flakyBackend) setBudget(n int64) {
	b.mu.Lock()
	b.budget = n
	b.mu.Unlock()
}

func (b *flakyBackend) Create(ctx context.Context, key string) (storage.Upload, error) {
	u, err := b.Backend.Create(ctx, key)
	if err != nil {
		return nil, err
	}
	return &flakyUpload{Upload: u, b: b}, nil
}

func (b *flakyBackend) Resume(ctx context.Context, key string, h storage.Handle) (storage.Upload, error) {
	u, err := b.Backend.Resume(ctx, key, h)
	if err != nil {
		return nil, err
	}
	return &flakyUpload{Upload: u, b: b}, nil
}

type flakyUpload struct {
	storage.Upload
	b *flakyBackend
}

func (u *flakyUpload) WriteChunk(ctx context.Context, off int64, r io.Reader) (int64, error) {
	return u.Upload.WriteChunk(ctx, off, &budgetReader{r: r, b: u.b})
}

// budgetReader passes bytes on while the budget lasts, then fails.
type budgetReader struct {
	r io.Reader
	b *flakyBackend
}

func (br *budgetReader) Read(p []byte) (int, error) {
	n, err := br.r.Read(p)
	br.b.mu.Lock()
	defer br.b.mu.Unlock()
	if br.b.budget < 0 {
		return n, err
	}
	if int64(n) > br.b.budget {
		k := int(br.b.budget)
		br.b.budget = 0
		return k, errDisk
	}
	br.b.budget -= int64(n)
	return n, err
}

// TestWriteStorageFailure: a backend that fails midway leaves the upload at
// its last checkpoint, with the hash state of exactly those bytes, and a
// retry from there produces the right file.
func TestWriteStorageFailure(t *testing.T) {
	tests := []struct {
		name       string
		budget     int64
		wantOffset int64
	}{
		{"in the first checkpoint", 10_000, 0},
		{"right after a checkpoint", 2 * testCheckpoint, 2 * testCheckpoint},
		{"in the third checkpoint", 150_000, 2 * testCheckpoint},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			fb := &flakyBackend{Backend: e.store(), budget: -1}
			s := e.service(fb, scannertest.Builtin(t, 0))
			data := randBytes(300_000, 1)
			u := create(t, s, "alice", "data.bin", int64(len(data)))

			fb.setBudget(tt.budget)
			off, err := write(s, u.ID, 0, bytes.NewReader(data))
			if !errors.Is(err, errDisk) {
				t.Fatalf("Write = %d, %v; want the storage error", off, err)
			}
			if isClientError(err) {
				t.Errorf("a storage failure was reported as the client's: %v", err)
			}
			if off != tt.wantOffset {
				t.Errorf("Write returned offset %d, want %d", off, tt.wantOffset)
			}
			got := e.upload(u.ID)
			if got.Offset != tt.wantOffset || got.Status != state.StatusUploading {
				t.Fatalf("after the failure: offset %d status %s, want %d uploading", got.Offset, got.Status, tt.wantOffset)
			}
			if !bytes.Equal(got.HashState, hashStateOf(data[:tt.wantOffset])) {
				t.Error("the recorded hash state does not cover exactly the recorded bytes")
			}
			if n := len(e.stored(u.Key)); int64(n) != tt.wantOffset {
				t.Errorf("%d bytes stored, offset %d", n, tt.wantOffset)
			}

			fb.setBudget(-1)
			off, err = write(s, u.ID, got.Offset, bytes.NewReader(data[got.Offset:]))
			if err != nil || off != int64(len(data)) {
				t.Fatalf("retry: Write = %d, %v", off, err)
			}
			got = e.upload(u.ID)
			if got.Status != state.StatusProcessing || got.SHA256 != sumHex(data) {
				t.Errorf("after the retry: status %s sha256 %s, want processing %s", got.Status, got.SHA256, sumHex(data))
			}
			if !bytes.Equal(e.stored(u.Key), data) {
				t.Error("the stored bytes differ from the data")
			}
		})
	}
}

// cancelBackend is a storage.Backend whose uploads cancel the request (as
// the HTTP server does when the client's connection drops) once at bytes
// have passed through WriteChunk.
type cancelBackend struct {
	storage.Backend
	at     int64
	cancel context.CancelFunc
	seen   int64
}

func (b *cancelBackend) Resume(ctx context.Context, key string, h storage.Handle) (storage.Upload, error) {
	u, err := b.Backend.Resume(ctx, key, h)
	if err != nil {
		return nil, err
	}
	return &cancelUpload{Upload: u, b: b}, nil
}

type cancelUpload struct {
	storage.Upload
	b *cancelBackend
}

func (u *cancelUpload) WriteChunk(ctx context.Context, off int64, r io.Reader) (int64, error) {
	return u.Upload.WriteChunk(ctx, off, readFunc(func(p []byte) (int, error) {
		n, err := r.Read(p)
		u.b.seen += int64(n)
		if u.b.seen >= u.b.at {
			u.b.cancel()
		}
		return n, err
	}))
}

type readFunc func([]byte) (int, error)

func (f readFunc) Read(p []byte) (int, error) { return f(p) }

// TestWriteCancelled: a request cancelled midway (the client went away)
// keeps the bytes that were made durable, beyond the last checkpoint, and
// records them although the request's context is done.
func TestWriteCancelled(t *testing.T) {
	const buf = 16 << 10
	tests := []struct {
		name string
		at   int64 // cancel with the buffer that reaches this many bytes
		want int64
	}{
		{"with a checkpoint's last buffer", testCheckpoint, testCheckpoint},
		{"between checkpoints", 80_000, 5 * buf},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newEnv(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			cb := &cancelBackend{Backend: e.store(), at: tt.at, cancel: cancel}
			s := e.service(cb, scannertest.Builtin(t, 0))
			data := randBytes(200_000, 6)
			u := create(t, s, "alice", "cancelled.bin", int64(len(data)))
			unlock, _ := s.TryLock(u.ID)
			off, err := s.Write(ctx, WriteRequest{ID: u.ID, Body: bytes.NewReader(data), Length: -1})
			unlock()
			if !errors.Is(err, context.Canceled) || !isClientError(err) {
				t.Errorf("Write = %v, want the cancellation as a client error", err)
			}
			// The buffer that came with the cancellation was written,
			// synced and hashed: it is kept.
			if got := e.upload(u.ID); off != tt.want || got.Offset != tt.want || !bytes.Equal(got.HashState, hashStateOf(data[:tt.want])) {
				t.Fatalf("Write returned offset %d, recorded %d; want %d with its hash state", off, got.Offset, tt.want)
			}
			if n := len(e.stored(u.Key)); int64(n) != tt.want {
				t.Errorf("%d bytes stored, want %d", n, tt.want)
			}
			if off, err := write(s, u.ID, tt.want, bytes.NewReader(data[tt.want:])); err != nil || off != int64(len(data)) {
				t.Fatalf("resumed Write = %d, %v", off, err)
			}
			if got := e.upload(u.ID); got.SHA256 != sumHex(data) {
				t.Errorf("sha256 %s, want %s", got.SHA256, sumHex(data))
			}
		})
	}
}

// errAfter is a body that yields r and then fails like a dropped connection.
type errAfter struct {
	r   io.Reader
	err error
}

func (e *errAfter) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err == io.EOF {
		return n, e.err
	}
	return n, err
}

func TestWrite(t *testing.T) {
	e := newEnv(t)
	s := e.service(e.store(), scannertest.Builtin(t, 0))
	ctx := context.Background()
	data := randBytes(200_000, 2)

	t.Run("refusals keep nothing", func(t *testing.T) {
		u := create(t, s, "alice", "refused.bin", int64(len(data)))
		if _, err := write(s, u.ID, 0, bytes.NewReader(data[:1000])); err != nil {
			t.Fatal(err)
		}
		sum := sha256.New()
		sum.Write(data[1000:150_000])
		tests := []struct {
			name string
			req  WriteRequest
			want error
		}{
			{"offset behind", WriteRequest{Offset: 0, Body: bytes.NewReader(data), Length: -1}, ErrOffsetMismatch},
			{"offset ahead", WriteRequest{Offset: 2000, Body: bytes.NewReader(data[2000:]), Length: -1}, ErrOffsetMismatch},
			{"declared length too long", WriteRequest{Offset: 1000, Body: bytes.NewReader(data), Length: int64(len(data))}, ErrTooLarge},
			{"body too long", WriteRequest{Offset: 1000, Body: bytes.NewReader(append(bytes.Clone(data[1000:]), 0)), Length: -1}, ErrTooLarge},
			{"checksum mismatch", WriteRequest{Offset: 1000, Body: bytes.NewReader(data[1000:150_001]), Length: -1, Checksum: sha256.New(), Want: sum.Sum(nil)}, ErrChecksumMismatch},
			{"checksummed body cut off", WriteRequest{Offset: 1000, Body: &errAfter{bytes.NewReader(data[1000:100_000]), io.ErrClosedPipe}, Length: -1, Checksum: sha256.New(), Want: sum.Sum(nil)}, io.ErrClosedPipe},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				tt.req.ID = u.ID
				unlock, _ := s.TryLock(u.ID)
				off, err := s.Write(ctx, tt.req)
				unlock()
				if !errors.Is(err, tt.want) || off != 1000 {
					t.Fatalf("Write = %d, %v; want 1000, %v", off, err, tt.want)
				}
				got := e.upload(u.ID)
				if got.Offset != 1000 || !bytes.Equal(got.HashState, hashStateOf(data[:1000])) {
					t.Errorf("offset %d after a refused write, want 1000 with its hash state", got.Offset)
				}
				if n := len(e.stored(u.Key)); n != 1000 {
					t.Errorf("%d bytes stored after a refused write, want 1000", n)
				}
			})
		}
	})
	t.Run("dropped connection keeps what arrived", func(t *testing.T) {
		u := create(t, s, "alice", "dropped.bin", int64(len(data)))
		// A body cut short of its declared length: the HTTP server's
		// io.ErrUnexpectedEOF is the client's failure, not a clean end.
		off, err := write(s, u.ID, 0, &errAfter{bytes.NewReader(data[:100_000]), io.ErrUnexpectedEOF})
		if !isClientError(err) {
			t.Errorf("Write of a cut-off body: %v, want a client error", err)
		}
		if off != 100_000 || e.upload(u.ID).Offset != 100_000 {
			t.Fatalf("offset %d (recorded %d) after 100000 bytes arrived", off, e.upload(u.ID).Offset)
		}
		off, err = write(s, u.ID, 0, &errAfter{bytes.NewReader(nil), io.ErrClosedPipe})
		if !errors.Is(err, ErrOffsetMismatch) {
			t.Fatalf("Write at 0 = %d, %v", off, err)
		}
		off, err = write(s, u.ID, 100_000, &errAfter{bytes.NewReader(data[100_000:150_000]), io.ErrClosedPipe})
		if !isClientError(err) || off != 150_000 {
			t.Fatalf("Write = %d, %v; want 150000 and a client error", off, err)
		}
		if off, err = write(s, u.ID, 150_000, bytes.NewReader(data[150_000:])); err != nil || off != int64(len(data)) {
			t.Fatalf("Write = %d, %v", off, err)
		}
		if got := e.upload(u.ID); got.SHA256 != sumHex(data) || got.Status != state.StatusProcessing {
			t.Errorf("status %s sha256 %s, want processing %s", got.Status, got.SHA256, sumHex(data))
		}
	})
	t.Run("complete upload takes no more", func(t *testing.T) {
		u := create(t, s, "alice", "done.bin", 10)
		if _, err := write(s, u.ID, 0, strings.NewReader("0123456789")); err != nil {
			t.Fatal(err)
		}
		if _, err := write(s, u.ID, 10, strings.NewReader("x")); !errors.Is(err, ErrNotWritable) {
			t.Errorf("Write to a complete upload: %v, want ErrNotWritable", err)
		}
		if err := s.Terminate(ctx, u.ID, "alice", ""); !errors.Is(err, ErrNotWritable) {
			t.Errorf("Terminate of a complete upload: %v, want ErrNotWritable", err)
		}
	})
	t.Run("expired", func(t *testing.T) {
		u := create(t, s, "alice", "late.bin", 10)
		late := e.service(e.store(), scannertest.Builtin(t, 0))
		late.now = func() time.Time { return time.Now().Add(testTTL + time.Minute) }
		if _, err := write(late, u.ID, 0, strings.NewReader("0123456789")); !errors.Is(err, ErrExpired) {
			t.Errorf("Write after expiry: %v, want ErrExpired", err)
		}
		if got := e.upload(u.ID); got.Offset != 0 {
			t.Errorf("offset %d after a refused write", got.Offset)
		}
	})
	t.Run("too large to create", func(t *testing.T) {
		for _, n := range []int64{-2, testMaxSize + 1} {
			if _, err := s.Create(ctx, CreateRequest{Owner: "alice", Filename: "big.bin", Length: n}); !errors.Is(err, ErrTooLarge) {
				t.Errorf("Create(length %d): %v, want ErrTooLarge", n, err)
			}
		}
	})
}

// TestRestart: a process killed midway (its Service and backend simply
// abandoned, bytes written after the last record still on disk) is replaced
// by a new one on the same database and directory, which resumes from the
// recorded offset and hash state and produces the right SHA-256.
func TestRestart(t *testing.T) {
	e := newEnv(t)
	data := randBytes(300_000, 3)
	first := e.service(e.store(), scannertest.Builtin(t, 0))
	u := create(t, first, "alice", "restart.bin", int64(len(data)))
	const half = 150_000
	if off, err := write(first, u.ID, 0, bytes.NewReader(data[:half])); err != nil || off != half {
		t.Fatalf("Write = %d, %v", off, err)
	}
	// Bytes that reached the file but were never recorded (the process died
	// between the write and the checkpoint).
	f, err := os.OpenFile(filepath.Join(e.root, filepath.FromSlash(u.Key)), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("garbage"), 1000)); err != nil {
		t.Fatal(err)
	}
	f.Close()

	second := e.service(e.store(), scannertest.Builtin(t, 0))
	got := e.upload(u.ID)
	if got.Offset != half {
		t.Fatalf("recorded offset %d, want %d", got.Offset, half)
	}
	if off, err := write(second, u.ID, got.Offset, bytes.NewReader(data[got.Offset:])); err != nil || off != int64(len(data)) {
		t.Fatalf("Write after restart = %d, %v", off, err)
	}
	got = e.upload(u.ID)
	if got.Status != state.StatusProcessing || got.SHA256 != sumHex(data) {
		t.Fatalf("status %s sha256 %s, want processing %s", got.Status, got.SHA256, sumHex(data))
	}
	if !bytes.Equal(e.stored(u.Key), data) {
		t.Error("the stored bytes differ from the data")
	}

	// The new process's worker publishes it.
	run(t, second)
	waitStatus(t, e, u.ID, state.StatusAvailable)
	if !bytes.Equal(e.stored("arrivals/alice/restart.bin"), data) {
		t.Error("the published bytes differ from the data")
	}
}

// stubScanner fails while err is set, and otherwise reads the whole file and
// calls it clean.
type stubScanner struct {
	mu    sync.Mutex
	err   error
	calls int
}

func (s *stubScanner) Scan(ctx context.Context, f scanner.File) (scanner.Verdict, error) {
	r := io.NewSectionReader(f.R, 0, f.Size)
	h := sha256.New()
	s.mu.Lock()
	s.calls++
	err := s.err
	s.mu.Unlock()
	if err != nil {
		// A scanner that dies midway through the file.
		_, _ = io.CopyN(io.Discard, r, 1000)
		return scanner.Verdict{}, err
	}
	if _, err := io.Copy(h, r); err != nil {
		return scanner.Verdict{}, err
	}
	return scanner.Verdict{Clean: true, SHA256: hex.EncodeToString(h.Sum(nil))}, nil
}

func (s *stubScanner) set(err error) {
	s.mu.Lock()
	s.err = err
	s.mu.Unlock()
}

func (s *stubScanner) count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

func waitStatus(t *testing.T, e *env, id, want string) state.Upload {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		u := e.upload(id)
		if u.Status == want {
			return u
		}
		if time.Now().After(deadline) {
			t.Fatalf("upload %s is %s after 5s, want %s", id, u.Status, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestScannerErrorFailsClosed: while the scanner errors, the file waits
// (processing, not in Arrivals) and is retried; once the scanner answers
// clean it is published.
func TestScannerErrorFailsClosed(t *testing.T) {
	e := newEnv(t)
	sc := &stubScanner{err: errors.New("clamd: connection refused")}
	s := e.service(e.store(), sc)
	run(t, s)
	data := randBytes(100_000, 4)
	u := create(t, s, "alice", "waiting.bin", int64(len(data)))
	if _, err := write(s, u.ID, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}

	deadline := time.Now().Add(5 * time.Second)
	for sc.count() < 3 {
		if time.Now().After(deadline) {
			t.Fatalf("the scanner was called %d times in 5s; a failed scan must be retried", sc.count())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := e.upload(u.ID); got.Status != state.StatusProcessing {
		t.Fatalf("status %s while the scanner fails, want processing", got.Status)
	}
	if files, err := e.db.FilesByOwner(context.Background(), "alice"); err != nil || len(files) != 0 {
		t.Fatalf("Arrivals while the scanner fails: %v, %v", files, err)
	}
	if e.stored("arrivals/alice/waiting.bin") != nil {
		t.Fatal("an unscanned file is in Arrivals")
	}

	sc.set(nil)
	got := waitStatus(t, e, u.ID, state.StatusAvailable)
	if got.SHA256 != sumHex(data) {
		t.Errorf("sha256 %s, want %s", got.SHA256, sumHex(data))
	}
	files, err := e.db.FilesByOwner(context.Background(), "alice")
	if err != nil || len(files) != 1 || files[0].SHA256 != sumHex(data) || files[0].Name != "waiting.bin" {
		t.Fatalf("Arrivals: %+v, %v", files, err)
	}
	if !bytes.Equal(e.stored("arrivals/alice/waiting.bin"), data) {
		t.Error("the published bytes differ from the data")
	}
}

// TestChangedBytesNeverPublished: bytes that changed on storage after they
// were hashed are not published, even when the scanner calls them clean.
func TestChangedBytesNeverPublished(t *testing.T) {
	e := newEnv(t)
	sc := &stubScanner{}
	s := e.service(e.store(), sc)
	data := randBytes(50_000, 5)
	u := create(t, s, "alice", "tampered.bin", int64(len(data)))
	if _, err := write(s, u.ID, 0, bytes.NewReader(data)); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(e.root, filepath.FromSlash(u.Key))
	bad := bytes.Clone(data)
	bad[25_000] ^= 0xff
	if err := os.WriteFile(p, bad, 0o600); err != nil {
		t.Fatal(err)
	}
	run(t, s)
	got := waitStatus(t, e, u.ID, state.StatusQuarantined)
	if got.Reason == "" {
		t.Error("quarantined without a reason")
	}
	if files, _ := e.db.FilesByOwner(context.Background(), "alice"); len(files) != 0 {
		t.Errorf("changed bytes were published: %+v", files)
	}
}
