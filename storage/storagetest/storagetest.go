// Package storagetest is the conformance suite that every storage.Backend
// passes: the local disk backend and the S3 backend run the same tests.
//
// The suite relies only on the contract written in package storage. It does
// not assume that an upload in progress is visible (or invisible) to Stat,
// Open or List, nor anything about the bytes of a Handle.
package storagetest

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"testing"
	"testing/iotest"
	"time"

	"github.com/mftd/mftd/storage"
)

// Run runs the conformance suite. newBackend returns an empty backend for
// one subtest; it registers its own cleanup with t.Cleanup.
func Run(t *testing.T, newBackend func(t *testing.T) storage.Backend) {
	tests := []struct {
		name string
		fn   func(t *testing.T, b storage.Backend)
	}{
		{"RoundTrip", testRoundTrip},
		{"ZeroLength", testZeroLength},
		{"WrongOffset", testWrongOffset},
		{"SeveralChunks", testSeveralChunks},
		{"LargeChunks", testLargeChunks},
		{"ReaderFailsMidway", testReaderFailsMidway},
		{"CancelledContext", testCancelledContext},
		{"ResumeOlderHandle", testResumeOlderHandle},
		{"CloseThenResume", testCloseThenResume},
		{"ResumeMissing", testResumeMissing},
		{"ResumeBadHandle", testResumeBadHandle},
		{"CreateExisting", testCreateExisting},
		{"OpenRanges", testOpenRanges},
		{"Missing", testMissing},
		{"List", testList},
		{"ListStops", testListStops},
		{"Move", testMove},
		{"MoveExisting", testMoveExisting},
		{"Delete", testDelete},
		{"Abort", testAbort},
		{"ConcurrentUploads", testConcurrentUploads},
		{"ConcurrentCreateSameKey", testConcurrentCreateSameKey},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.fn(t, newBackend(t)) })
	}
}

var errBoom = errors.New("storagetest: reader failed")

// key builds a key with storage.Key, as every caller does.
func key(t *testing.T, prefix string, parts ...string) string {
	t.Helper()
	k, err := storage.Key(prefix, parts...)
	if err != nil {
		t.Fatalf("storage.Key(%q, %q): %v", prefix, parts, err)
	}
	return k
}

// data returns n deterministic pseudo-random bytes; different seeds give
// different bytes, so a mix-up between objects shows.
func data(seed uint64, n int) []byte {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	binary.LittleEndian.PutUint64(s[8:], uint64(n))
	p := make([]byte, n)
	rand.NewChaCha8(s).Read(p)
	return p
}

func create(t *testing.T, b storage.Backend, k string) storage.Upload {
	t.Helper()
	u, err := b.Create(t.Context(), k)
	if err != nil {
		t.Fatalf("Create(%q): %v", k, err)
	}
	if got := u.Offset(); got != 0 {
		t.Fatalf("Create(%q): Offset() = %d, want 0", k, got)
	}
	return u
}

func resume(t *testing.T, b storage.Backend, k string, h storage.Handle, wantOff int64) storage.Upload {
	t.Helper()
	u, err := b.Resume(t.Context(), k, h)
	if err != nil {
		t.Fatalf("Resume(%q): %v", k, err)
	}
	if got := u.Offset(); got != wantOff {
		t.Fatalf("Resume(%q): Offset() = %d, want %d", k, got, wantOff)
	}
	return u
}

// write writes p at the upload's offset from r (bytes.Reader if nil) and
// checks that all of it became durable.
func write(t *testing.T, u storage.Upload, p []byte, r io.Reader) {
	t.Helper()
	if r == nil {
		r = bytes.NewReader(p)
	}
	off := u.Offset()
	n, err := u.WriteChunk(t.Context(), off, r)
	if err != nil {
		t.Fatalf("WriteChunk(%d, %d bytes): %v", off, len(p), err)
	}
	if n != int64(len(p)) {
		t.Fatalf("WriteChunk(%d, %d bytes) = %d", off, len(p), n)
	}
	if got := u.Offset(); got != off+n {
		t.Fatalf("after WriteChunk(%d) of %d bytes: Offset() = %d, want %d", off, n, got, off+n)
	}
}

func commit(t *testing.T, u storage.Upload, k string, size int64) storage.ObjectInfo {
	t.Helper()
	info, err := u.Commit(t.Context())
	if err != nil {
		t.Fatalf("Commit(%q): %v", k, err)
	}
	if info.Key != k || info.Size != size {
		t.Fatalf("Commit(%q) = {Key: %q, Size: %d}, want {Key: %q, Size: %d}", k, info.Key, info.Size, k, size)
	}
	checkModTime(t, "Commit", info)
	return info
}

// put stores p at k as one chunk.
func put(t *testing.T, b storage.Backend, k string, p []byte) {
	t.Helper()
	u := create(t, b, k)
	write(t, u, p, nil)
	commit(t, u, k, int64(len(p)))
}

func checkModTime(t *testing.T, op string, info storage.ObjectInfo) {
	t.Helper()
	if d := time.Since(info.ModTime); info.ModTime.IsZero() || d > time.Hour || d < -time.Hour {
		t.Errorf("%s(%q): ModTime %v is not about now", op, info.Key, info.ModTime)
	}
}

// read reads the object at k from off, n bytes.
func read(t *testing.T, b storage.Backend, k string, off, n int64) []byte {
	t.Helper()
	rc, err := b.Open(t.Context(), k, off, n)
	if err != nil {
		t.Fatalf("Open(%q, %d, %d): %v", k, off, n, err)
	}
	defer rc.Close()
	p, err := io.ReadAll(rc)
	if err != nil {
		t.Fatalf("reading Open(%q, %d, %d): %v", k, off, n, err)
	}
	if err := rc.Close(); err != nil {
		t.Fatalf("closing Open(%q, %d, %d): %v", k, off, n, err)
	}
	return p
}

// wantObject checks the committed object at k: its Stat and its content.
func wantObject(t *testing.T, b storage.Backend, k string, want []byte) {
	t.Helper()
	info, err := b.Stat(t.Context(), k)
	if err != nil {
		t.Fatalf("Stat(%q): %v", k, err)
	}
	if info.Key != k || info.Size != int64(len(want)) {
		t.Errorf("Stat(%q) = {Key: %q, Size: %d}, want {Key: %q, Size: %d}", k, info.Key, info.Size, k, len(want))
	}
	checkModTime(t, "Stat", info)
	if got := read(t, b, k, 0, -1); !bytes.Equal(got, want) {
		t.Errorf("content of %q: %s", k, diffBytes(got, want))
	}
}

// diffBytes describes how got differs from want without printing megabytes.
func diffBytes(got, want []byte) string {
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	return fmt.Sprintf("got %d bytes, want %d; first difference at byte %d", len(got), len(want), i)
}

// wantNotFound checks that Stat and Open of k report storage.ErrNotFound.
func wantNotFound(t *testing.T, b storage.Backend, k string) {
	t.Helper()
	if info, err := b.Stat(t.Context(), k); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat(%q) = %+v, %v; want ErrNotFound", k, info, err)
	}
	rc, err := b.Open(t.Context(), k, 0, -1)
	if err == nil {
		rc.Close()
	}
	if !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Open(%q) error = %v; want ErrNotFound", k, err)
	}
}

// errReader yields p, then fails with err (hiding any io.WriterTo of its
// parts when plain is set).
func errReader(p []byte, err error, plain bool) io.Reader {
	r := io.MultiReader(bytes.NewReader(p), iotest.ErrReader(err))
	if plain {
		return struct{ io.Reader }{r}
	}
	return r
}
