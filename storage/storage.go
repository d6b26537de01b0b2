// Package storage defines the object backend that holds uploads, Arrivals,
// quarantine and shares, and the one function that turns client-supplied
// names into object keys.
//
// Backends implement a small resumable-write surface (Backend, Upload); every
// backend passes the conformance suite in storage/storagetest.
package storage

import (
	"context"
	"errors"
	"io"
	"time"
)

// Sentinel errors. Backends wrap them with the operation and key.
var (
	// ErrNotFound: the key does not exist.
	ErrNotFound = errors.New("storage: not found")
	// ErrExist: the destination key already exists; nothing was overwritten.
	ErrExist = errors.New("storage: already exists")
	// ErrOffsetMismatch: a write did not start at the upload's durable offset.
	ErrOffsetMismatch = errors.New("storage: offset mismatch")
	// ErrUnavailable: the store could not be reached or answered that it
	// is overloaded or failing; the same call may succeed later.
	ErrUnavailable = errors.New("storage: temporarily unavailable")
)

// Handle is a backend's opaque, serialisable description of an upload's
// durable state. It is persisted with the upload session after every
// successful WriteChunk and handed back to Backend.Resume.
type Handle []byte

// ObjectInfo describes a stored object.
type ObjectInfo struct {
	Key     string
	Size    int64
	ModTime time.Time
}

// Backend stores objects under keys built by the functions in keys.go.
// Implementations are safe for concurrent use.
type Backend interface {
	// Create starts a new, empty upload at key. The key must not exist.
	Create(ctx context.Context, key string) (Upload, error)
	// Resume reopens the upload at key in exactly the state that h
	// describes: anything written after h was taken (for example by a
	// process killed between a write and the commit of its handle) is
	// discarded. Resume is also how a caller rolls back a write it refused.
	Resume(ctx context.Context, key string, h Handle) (Upload, error)
	// Open reads n bytes of a committed object from off (n < 0: to the end).
	// The caller closes the reader.
	Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error)
	// Stat describes a committed object; ErrNotFound if there is none.
	Stat(ctx context.Context, key string) (ObjectInfo, error)
	// List calls fn for every committed object whose key starts with prefix,
	// in lexical key order; an error from fn stops the listing and is returned.
	List(ctx context.Context, prefix string, fn func(ObjectInfo) error) error
	// Move renames a committed object. It never overwrites: if dst exists it
	// returns ErrExist and leaves both objects as they were.
	Move(ctx context.Context, src, dst string) error
	// Delete removes a committed object or an upload in progress. Deleting a
	// key that does not exist is not an error.
	Delete(ctx context.Context, key string) error
}

// Upload is one resumable write in progress. An Upload is used by one
// goroutine at a time; callers serialise access (see the per-upload lock in
// transfer/ingest).
type Upload interface {
	// Handle describes the durable state after the last successful WriteChunk.
	Handle() Handle
	// Offset is the number of bytes that are durable: they survive a crash of
	// the process and of the machine once WriteChunk has returned.
	Offset() int64
	// WriteChunk appends everything r yields, starting at off, which must equal
	// Offset() (else ErrOffsetMismatch and nothing is written). When it
	// returns, n bytes are durable and Offset() has advanced by n; on error,
	// n counts what became durable before the error and the caller must
	// persist Handle() or Resume from an older one.
	WriteChunk(ctx context.Context, off int64, r io.Reader) (n int64, err error)
	// Commit turns the upload into a committed object at its key.
	Commit(ctx context.Context) (ObjectInfo, error)
	// Abort discards the upload and everything written to it.
	Abort(ctx context.Context) error
	// Close releases the upload's resources and keeps what is durable, to
	// be resumed later from Handle(). Closing after Commit, Abort or Close
	// does nothing.
	Close() error
}

// Leftovers is implemented by backends whose uploads in progress keep state
// that List does not show (S3: multipart uploads and tail objects), so that a
// sweeper can find what no upload session references any more.
type Leftovers interface {
	// Pending calls fn, in key order, for each key under prefix that has an
	// upload in progress or the remains of one, with the last time it was
	// written to.
	Pending(ctx context.Context, prefix string, fn func(key string, last time.Time) error) error
}

// Aligned is implemented by uploads that write fastest when each buffer
// handed to them starts at a file offset, and a memory address, that are
// multiples of WriteAlignment (for example, direct I/O on local disk).
// Callers that can cut their buffers to fit do so; others lose only speed.
type Aligned interface {
	WriteAlignment() int
}
