package ingest

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/mftd/mftd/scanner/scannertest"
	"github.com/mftd/mftd/storage/state"
)

// An upload of unknown length (SFTP) takes writes until its writer finishes
// it: Finish fixes the length at the durable offset, and the file is checked
// and published with the SHA-256 of exactly the bytes written.
func TestUnknownLength(t *testing.T) {
	e := newEnv(t)
	s := e.service(e.store(), scannertest.Builtin(t, testMaxSize))
	run(t, s)
	ctx := context.Background()
	data := randBytes(3*testCheckpoint+77, 9)

	u := create(t, s, "alice", "stream.bin", LengthUnknown)
	if off, err := write(s, u.ID, 0, bytes.NewReader(data[:testCheckpoint+5])); err != nil || off != testCheckpoint+5 {
		t.Fatalf("Write = %d, %v", off, err)
	}
	if got := e.upload(u.ID); got.Status != state.StatusUploading || got.Length != LengthUnknown {
		t.Fatalf("after a write of unknown length: %s, length %d; want still uploading, unknown", got.Status, got.Length)
	}
	ps, err := s.Partials(ctx, "alice")
	if err != nil || len(ps) != 1 || ps[0].ID != u.ID || ps[0].Offset != testCheckpoint+5 {
		t.Fatalf("Partials = %+v, %v; want the one upload at its offset", ps, err)
	}
	if ps, _ := s.Partials(ctx, "bob"); len(ps) != 0 {
		t.Fatalf("bob's partials: %+v", ps)
	}
	known := create(t, s, "alice", "known.bin", 10)
	if ps, _ := s.Partials(ctx, "alice"); len(ps) != 1 {
		t.Fatalf("Partials lists uploads of known length too: %+v", ps)
	}

	if off, err := write(s, u.ID, testCheckpoint+5, bytes.NewReader(data[testCheckpoint+5:])); err != nil || off != int64(len(data)) {
		t.Fatalf("second Write = %d, %v", off, err)
	}
	if err := s.Finish(ctx, u.ID, "bob", ""); !errors.Is(err, state.ErrNotFound) {
		t.Fatalf("Finish by another user: %v, want ErrNotFound", err)
	}
	if err := s.Finish(ctx, known.ID, "alice", ""); !errors.Is(err, ErrNotWritable) {
		t.Fatalf("Finish of an upload of known length: %v, want ErrNotWritable", err)
	}
	unlock, _ := s.TryLock(u.ID)
	err = s.Finish(ctx, u.ID, "alice", "")
	unlock()
	if err != nil {
		t.Fatalf("Finish: %v", err)
	}
	got := waitStatus(t, e, u.ID, state.StatusAvailable)
	if got.Length != int64(len(data)) || got.SHA256 != sumHex(data) {
		t.Fatalf("published: length %d sha256 %s; want %d %s", got.Length, got.SHA256, len(data), sumHex(data))
	}
	if !bytes.Equal(e.stored(got.Key), data) {
		t.Fatal("published bytes differ")
	}
	if ps, _ := s.Partials(ctx, "alice"); len(ps) != 0 {
		t.Fatalf("Partials after Finish: %+v", ps)
	}
	files, err := s.Arrivals(ctx, "alice")
	if err != nil || len(files) != 1 || files[0].Name != "stream.bin" || files[0].Size != int64(len(data)) {
		t.Fatalf("Arrivals = %+v, %v", files, err)
	}
}

// Without a length, limits.max_file_size still bounds the upload.
func TestUnknownLengthTooLarge(t *testing.T) {
	e := newEnv(t)
	s := e.service(e.store(), scannertest.Builtin(t, 0))
	if _, err := s.Create(context.Background(), CreateRequest{Owner: "alice", Filename: "x", Length: -2}); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Create with length -2: %v, want ErrTooLarge", err)
	}
	u := create(t, s, "alice", "huge.bin", LengthUnknown)
	big := randBytes(int(testMaxSize)+1, 3)
	if _, err := write(s, u.ID, 0, bytes.NewReader(big)); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("Write past limits.max_file_size: %v, want ErrTooLarge", err)
	}
	if got := e.upload(u.ID); got.Offset != 0 {
		t.Fatalf("offset after the refused write: %d, want 0", got.Offset)
	}
}
