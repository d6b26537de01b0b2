package local

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"unsafe"

	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
)

// handleVersion is the format version written into every Handle.
const handleVersion = 1

// handle is the JSON form of a storage.Handle of this backend, for example
// {"v":1,"offset":1048576}: the file at the upload's key is the upload, so
// its durable length is all there is to record.
type handle struct {
	V      int   `json:"v"`
	Offset int64 `json:"offset"`
}

func encodeHandle(off int64) storage.Handle {
	b, err := json.Marshal(handle{V: handleVersion, Offset: off})
	if err != nil {
		panic(err) // two integers always marshal
	}
	return b
}

func decodeHandle(h storage.Handle) (int64, error) {
	var v handle
	if err := json.Unmarshal(h, &v); err != nil {
		return 0, fmt.Errorf("bad handle: %w", err)
	}
	if v.V != handleVersion {
		return 0, fmt.Errorf("bad handle: version %d, want %d", v.V, handleVersion)
	}
	if v.Offset < 0 {
		return 0, fmt.Errorf("bad handle: negative offset %d", v.Offset)
	}
	return v.Offset, nil
}

// upload is a file being written at its final key. The file's length beyond
// off is never trusted: Resume and Commit cut it back to off.
type upload struct {
	b    *Backend
	key  string
	f    *os.File // nil after Commit or Abort
	df   *os.File // the same file opened for direct I/O, or nil
	off  int64    // durable bytes
	done string   // "committed" or "aborted" once f is closed
}

// WriteAlignment implements storage.Aligned: chunks whose buffers start at
// file offsets (and memory addresses) that are multiples of it are written
// with direct I/O.
func (u *upload) WriteAlignment() int {
	if u.df == nil {
		return 1
	}
	return directAlign
}

// Close releases the upload's descriptors; the file stays as durable as
// the last WriteChunk left it, to be resumed from Handle().
func (u *upload) Close() error {
	if u.f == nil {
		return nil
	}
	err := u.closeFiles()
	u.f, u.done = nil, "closed"
	if err != nil {
		return wrap("close", u.key, err)
	}
	return nil
}

// closeFiles closes the upload's descriptors and returns the first error.
func (u *upload) closeFiles() error {
	var derr error
	if u.df != nil {
		derr = u.df.Close()
		u.df = nil
	}
	err := u.f.Close()
	if err == nil {
		err = derr
	}
	return err
}

var _ storage.Upload = (*upload)(nil)

func (u *upload) Handle() storage.Handle { return encodeHandle(u.off) }

func (u *upload) Offset() int64 { return u.off }

func (u *upload) usable() error {
	if u.f == nil {
		return fmt.Errorf("upload already %s", u.done)
	}
	return nil
}

// WriteChunk copies r to the file from off and makes it durable. Bytes r
// yielded before a read error or a cancelled ctx are kept, synced and
// counted; after a write or sync error nothing of this chunk is counted and
// the file is cut back to the previous offset.
func (u *upload) WriteChunk(ctx context.Context, off int64, r io.Reader) (int64, error) {
	if err := u.usable(); err != nil {
		return 0, wrap("write", u.key, err)
	}
	if off != u.off {
		return 0, wrap("write", u.key, fmt.Errorf("%w: write at %d, durable offset is %d",
			storage.ErrOffsetMismatch, off, u.off))
	}
	if err := ctx.Err(); err != nil {
		return 0, wrap("write", u.key, err)
	}
	w := &chunkWriter{ctx: ctx, f: u.f, df: u.df, off: off}
	_, copyErr := io.Copy(w, r)
	if w.err == nil && w.n > 0 {
		w.err = datasync(u.f)
	}
	if w.err != nil {
		u.rollback()
		return 0, wrap("write", u.key, w.err)
	}
	u.off += w.n
	if copyErr != nil {
		return w.n, wrap("write", u.key, copyErr)
	}
	return w.n, nil
}

// rollback cuts the file back to the durable offset after a failed write,
// so that bytes of unknown state never become part of the object. If that
// fails too, Commit or a Resume cuts it.
func (u *upload) rollback() {
	if err := u.f.Truncate(u.off); err != nil {
		u.b.log.Warn("truncate after failed write", zap.String("key", storage.RedactKey(u.key)),
			zap.Int64("offset", u.off), zap.Error(err))
	}
}

// chunkWriter writes to the file and tells file errors apart from the
// reader's errors and cancellation. It checks ctx after each write, so that
// bytes already taken from the reader are not dropped. The aligned middle of
// each write goes through the direct descriptor when there is one; heads and
// tails that are not whole aligned blocks go through the page cache.
type chunkWriter struct {
	ctx context.Context
	f   *os.File
	df  *os.File // nil: buffered only
	off int64    // file offset of the next byte
	n   int64    // bytes written
	err error    // the first file write error
}

func (c *chunkWriter) Write(p []byte) (int, error) {
	written := 0
	for written < len(p) {
		q := p[written:]
		var m int
		var err error
		if d := directLen(c.df, c.off, q); d > 0 {
			m, err = c.df.WriteAt(q[:d], c.off)
		} else {
			if c.df != nil && c.off%directAlign != 0 {
				// Write only up to the next aligned offset, so the rest
				// can go direct if its memory is aligned too.
				q = q[:min(len(q), int(directAlign-c.off%directAlign))]
			}
			m, err = c.f.WriteAt(q, c.off)
		}
		written += m
		c.off += int64(m)
		c.n += int64(m)
		if err != nil {
			c.err = err
			return written, err
		}
	}
	return written, c.ctx.Err()
}

// directLen is how many bytes of p, written at off, can go through df: a
// whole number of aligned blocks from an aligned offset and address.
func directLen(df *os.File, off int64, p []byte) int {
	if df == nil || off%directAlign != 0 || len(p) < directAlign || uintptr(unsafe.Pointer(&p[0]))%directAlign != 0 {
		return 0
	}
	return len(p) - len(p)%directAlign
}

// Commit makes the file exactly Offset() bytes long and durable, closes it,
// and describes the object now readable at the upload's key.
func (u *upload) Commit(ctx context.Context) (storage.ObjectInfo, error) {
	if err := u.usable(); err != nil {
		return storage.ObjectInfo{}, wrap("commit", u.key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, wrap("commit", u.key, err)
	}
	fi, err := u.commit()
	if err != nil {
		return storage.ObjectInfo{}, wrap("commit", u.key, err)
	}
	u.b.log.Debug("upload committed", zap.String("key", storage.RedactKey(u.key)), zap.Int64("bytes", u.off))
	return storage.ObjectInfo{Key: u.key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

func (u *upload) commit() (fs.FileInfo, error) {
	fi, err := u.f.Stat()
	if err != nil {
		return nil, err
	}
	switch {
	case fi.Size() < u.off:
		return nil, fmt.Errorf("data lost: file has %d bytes, %d were durable", fi.Size(), u.off)
	case fi.Size() > u.off:
		if err := u.f.Truncate(u.off); err != nil {
			return nil, err
		}
	}
	if err := u.f.Sync(); err != nil {
		return nil, err
	}
	if fi, err = u.f.Stat(); err != nil {
		return nil, err
	}
	if err := u.closeFiles(); err != nil {
		return nil, err
	}
	u.f, u.done = nil, "committed"
	return fi, nil
}

// Abort closes and removes the upload's file. It runs to the end even if
// ctx is already cancelled: cleaning up must not depend on the request.
func (u *upload) Abort(context.Context) error {
	if err := u.usable(); err != nil {
		return wrap("abort", u.key, err)
	}
	cerr := u.closeFiles()
	u.f, u.done = nil, "aborted"
	err := u.b.root.Remove(u.key)
	if isNotExist(err) {
		err = nil
	}
	if err == nil {
		if serr := u.b.syncDir(path.Dir(u.key)); serr != nil {
			u.b.log.Warn("sync directory after abort", zap.String("key", storage.RedactKey(u.key)), zap.Error(serr))
		}
	}
	if err == nil && cerr != nil && !errors.Is(cerr, os.ErrClosed) {
		u.b.log.Warn("close aborted upload", zap.String("key", storage.RedactKey(u.key)), zap.Error(cerr))
	}
	if err != nil {
		return wrap("abort", u.key, err)
	}
	u.b.log.Debug("upload aborted", zap.String("key", storage.RedactKey(u.key)))
	return nil
}
