// Package local is the embedded object backend: objects are regular files
// under one directory, at root/<key>.
//
// Every file operation goes through an os.Root, so no key, symbolic link or
// ".." can reach outside the root directory. Keys must also be clean relative
// slash-separated paths (as storage.Key builds them); anything else is
// refused before the file system is touched.
//
// Objects are regular files only: a symbolic link or a directory at a key is
// not an object (Stat and Open report ErrNotFound, List skips it). Uploads in
// progress live at their key like committed objects, so they are visible to
// Stat, Open and List; callers keep them under the uploads/ prefix.
package local

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"
	"syscall"

	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
)

const (
	filePerm = 0o600
	dirPerm  = 0o700
)

// errBadKey is wrapped by the error of every operation given a key that is
// not a clean relative path. Such a key never comes out of storage.Key; it
// means a caller built a key by hand.
var errBadKey = errors.New("not a clean relative key")

// Backend is a storage.Backend on a local directory. It is safe for
// concurrent use.
type Backend struct {
	root     *os.Root
	log      *zap.Logger
	readBufs sync.Pool // aligned buffers of direct readers
}

var _ storage.Backend = (*Backend)(nil)

// New opens (creating it with mode 0700 if missing) the directory root and
// returns a backend that keeps its objects under it. A nil log discards
// logging. The caller closes the Backend when done.
func New(root string, log *zap.Logger) (*Backend, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if root == "" {
		return nil, errors.New("local: empty root directory")
	}
	if err := os.MkdirAll(root, dirPerm); err != nil {
		return nil, fmt.Errorf("local: create root %q: %w", root, err)
	}
	r, err := os.OpenRoot(root)
	if err != nil {
		return nil, fmt.Errorf("local: open root %q: %w", root, err)
	}
	b := &Backend{root: r, log: log}
	b.readBufs.New = newAlignedBuf
	return b, nil
}

// Close releases the root directory. Uploads and readers already handed out
// stay usable; new operations fail.
func (b *Backend) Close() error { return b.root.Close() }

// checkKey refuses keys that are not clean, relative, slash-separated paths
// naming something below the root.
func checkKey(key string) error {
	switch {
	case key == "" || key == ".":
		return errBadKey
	case path.IsAbs(key) || path.Clean(key) != key:
		return errBadKey
	case key == ".." || strings.HasPrefix(key, "../"):
		return errBadKey
	case strings.ContainsAny(key, "\\\x00"):
		return errBadKey
	}
	return nil
}

// wrap names the operation and key and classifies err.
func wrap(op, key string, err error) error {
	return fmt.Errorf("local: %s %s: %w", op, storage.RedactKey(key), classify(scrubPath(err)))
}

// scrubPath drops the file path from a file-system error: it would repeat
// the key unredacted (see storage.RedactKey). The error still matches
// fs.ErrNotExist and the like.
func scrubPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return &fs.PathError{Op: pe.Op, Path: "(object)", Err: pe.Err}
	}
	var le *os.LinkError
	if errors.As(err, &le) {
		return &os.LinkError{Op: le.Op, Old: "(object)", New: "(object)", Err: le.Err}
	}
	return err
}

// classify adds storage.ErrNotFound or storage.ErrExist to a file-system
// error so that errors.Is matches the storage sentinels.
func classify(err error) error {
	switch {
	case errors.Is(err, storage.ErrNotFound), errors.Is(err, storage.ErrExist):
		return err
	case isNotExist(err):
		return fmt.Errorf("%w: %w", storage.ErrNotFound, err)
	case errors.Is(err, fs.ErrExist):
		return fmt.Errorf("%w: %w", storage.ErrExist, err)
	}
	return err
}

// isNotExist reports whether err says there is nothing at a path, including
// because one of its parents is a file.
func isNotExist(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ENOTDIR)
}

// openRegular opens the regular file at key. A symbolic link at key is not
// followed, even to a target inside the root: it is reported as not found.
func (b *Backend) openRegular(key string, flag int) (*os.File, fs.FileInfo, error) {
	li, err := b.root.Lstat(key)
	if err != nil {
		return nil, nil, err
	}
	if !li.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%w: not a regular file", fs.ErrNotExist)
	}
	f, err := b.root.OpenFile(key, flag, 0)
	if err != nil {
		return nil, nil, err
	}
	fi, err := f.Stat()
	if err == nil && !os.SameFile(li, fi) {
		err = fmt.Errorf("%w: replaced while opening", fs.ErrNotExist)
	}
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// mkdirs creates dir and its missing parents below the root and makes the
// new directory entries durable.
func (b *Backend) mkdirs(dir string) error {
	if dir == "." {
		return nil
	}
	if fi, err := b.root.Stat(dir); err == nil && fi.IsDir() {
		return nil
	}
	var created []string
	parts := strings.Split(dir, "/")
	for i := range parts {
		p := strings.Join(parts[:i+1], "/")
		err := b.root.Mkdir(p, dirPerm)
		switch {
		case err == nil:
			created = append(created, p)
		case errors.Is(err, fs.ErrExist):
			// Either a directory (fine) or a file, which makes the next
			// step fail with a clear error.
		default:
			return err
		}
	}
	for _, p := range created {
		if err := b.syncDir(path.Dir(p)); err != nil {
			return err
		}
	}
	return nil
}

// syncDir makes the entries of dir durable.
func (b *Backend) syncDir(dir string) error {
	if runtime.GOOS == "windows" {
		return nil // directories cannot be fsynced; NTFS journals metadata
	}
	d, err := b.root.Open(dir)
	if err != nil {
		return err
	}
	err = d.Sync()
	if cerr := d.Close(); err == nil {
		err = cerr
	}
	return err
}

// Create starts a new, empty upload at key. The file is created exclusively
// with mode 0600 and, with its directory entry, is durable on return.
func (b *Backend) Create(ctx context.Context, key string) (storage.Upload, error) {
	if err := checkKey(key); err != nil {
		return nil, wrap("create", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap("create", key, err)
	}
	dir := path.Dir(key)
	if err := b.mkdirs(dir); err != nil {
		return nil, wrap("create", key, err)
	}
	f, err := b.root.OpenFile(key, os.O_RDWR|os.O_CREATE|os.O_EXCL, filePerm)
	if err != nil {
		return nil, wrap("create", key, err)
	}
	if err := f.Sync(); err != nil {
		return nil, wrap("create", key, b.discard(f, key, err))
	}
	if err := b.syncDir(dir); err != nil {
		return nil, wrap("create", key, b.discard(f, key, err))
	}
	b.log.Debug("upload created", zap.String("key", storage.RedactKey(key)))
	return &upload{b: b, key: key, f: f, df: b.openDirect(key, f)}, nil
}

// discard closes and removes a file whose creation failed half-way and
// returns err.
func (b *Backend) discard(f *os.File, key string, err error) error {
	f.Close()
	if rerr := b.root.Remove(key); rerr != nil && !errors.Is(rerr, fs.ErrNotExist) {
		b.log.Warn("remove half-created upload", zap.String("key", storage.RedactKey(key)), zap.Error(rerr))
	}
	return err
}

// Resume reopens the upload at key in the state h describes: the file is
// truncated to the handle's offset, discarding anything written after the
// handle was taken, and that length is made durable. A file shorter than
// the handle's offset means bytes reported durable were lost; Resume refuses
// it and leaves the file alone.
func (b *Backend) Resume(ctx context.Context, key string, h storage.Handle) (storage.Upload, error) {
	if err := checkKey(key); err != nil {
		return nil, wrap("resume", key, err)
	}
	off, err := decodeHandle(h)
	if err != nil {
		return nil, wrap("resume", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap("resume", key, err)
	}
	f, fi, err := b.openRegular(key, os.O_RDWR)
	if err != nil {
		return nil, wrap("resume", key, err)
	}
	switch size := fi.Size(); {
	case size < off:
		f.Close()
		return nil, wrap("resume", key, fmt.Errorf(
			"data lost: file has %d bytes but the handle records %d durable bytes", size, off))
	case size > off:
		if err := f.Truncate(off); err != nil {
			f.Close()
			return nil, wrap("resume", key, err)
		}
		if err := f.Sync(); err != nil {
			f.Close()
			return nil, wrap("resume", key, err)
		}
		b.log.Info("resume discarded bytes written after the handle",
			zap.String("key", storage.RedactKey(key)), zap.Int64("offset", off), zap.Int64("bytes", size-off))
	}
	return &upload{b: b, key: key, f: f, df: b.openDirect(key, f), off: off}, nil
}

// Open returns a reader of n bytes of the object at key from off (n < 0: to
// the end; fewer if the object ends first). An off beyond the end is an error.
func (b *Backend) Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if err := checkKey(key); err != nil {
		return nil, wrap("open", key, err)
	}
	if err := ctx.Err(); err != nil {
		return nil, wrap("open", key, err)
	}
	if off < 0 {
		return nil, wrap("open", key, fmt.Errorf("negative offset %d", off))
	}
	f, fi, err := b.openRegular(key, os.O_RDONLY)
	if err != nil {
		return nil, wrap("open", key, err)
	}
	if off > fi.Size() {
		f.Close()
		return nil, wrap("open", key, fmt.Errorf("offset %d is beyond the end (%d bytes)", off, fi.Size()))
	}
	end := fi.Size()
	if n >= 0 {
		end = min(end, off+n)
	}
	if end-off >= directReadSize {
		if df := b.openDirectRead(key, f); df != nil {
			f.Close()
			return newDirectReader(&b.readBufs, df, off, end), nil
		}
	}
	if _, err := f.Seek(off, io.SeekStart); err != nil {
		f.Close()
		return nil, wrap("open", key, err)
	}
	if n < 0 {
		return f, nil
	}
	return &limitedFile{LimitedReader: io.LimitedReader{R: f, N: n}, f: f}, nil
}

// limitedFile reads at most N bytes of f and closes f.
type limitedFile struct {
	io.LimitedReader
	f *os.File
}

func (l *limitedFile) Close() error { return l.f.Close() }

// Stat describes the regular file at key.
func (b *Backend) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	if err := checkKey(key); err != nil {
		return storage.ObjectInfo{}, wrap("stat", key, err)
	}
	if err := ctx.Err(); err != nil {
		return storage.ObjectInfo{}, wrap("stat", key, err)
	}
	fi, err := b.root.Lstat(key)
	if err != nil {
		return storage.ObjectInfo{}, wrap("stat", key, err)
	}
	if !fi.Mode().IsRegular() {
		return storage.ObjectInfo{}, wrap("stat", key, fmt.Errorf("%w: not a regular file", fs.ErrNotExist))
	}
	return storage.ObjectInfo{Key: key, Size: fi.Size(), ModTime: fi.ModTime()}, nil
}

// Move renames the object at src to dst without ever overwriting: it links
// dst to src's file (which fails if dst exists), then removes src, and makes
// both directories durable. If a previous Move was interrupted after the
// link, Move completes it.
func (b *Backend) Move(ctx context.Context, src, dst string) error {
	if err := b.move(ctx, src, dst); err != nil {
		return fmt.Errorf("local: move %q to %q: %w", src, dst, classify(err))
	}
	b.log.Debug("object moved", zap.String("key", storage.RedactKey(src)), zap.String("dst", storage.RedactKey(dst)))
	return nil
}

func (b *Backend) move(ctx context.Context, src, dst string) error {
	if err := checkKey(src); err != nil {
		return err
	}
	if err := checkKey(dst); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	si, err := b.root.Lstat(src)
	if err != nil {
		return err
	}
	if !si.Mode().IsRegular() {
		return fmt.Errorf("%w: source is not a regular file", storage.ErrNotFound)
	}
	if src == dst {
		return storage.ErrExist
	}
	if err := b.mkdirs(path.Dir(dst)); err != nil {
		return err
	}
	if err := b.root.Link(src, dst); err != nil {
		if !errors.Is(err, fs.ErrExist) {
			return err
		}
		// dst exists. Only if it is src's own file (a Move interrupted
		// between link and remove) is there anything left to do.
		di, derr := b.root.Lstat(dst)
		if derr != nil || !os.SameFile(si, di) {
			return err
		}
		b.log.Info("completing an interrupted move", zap.String("key", storage.RedactKey(src)), zap.String("dst", storage.RedactKey(dst)))
	}
	if err := b.root.Remove(src); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := b.syncDir(path.Dir(dst)); err != nil {
		return err
	}
	if path.Dir(src) != path.Dir(dst) {
		return b.syncDir(path.Dir(src))
	}
	return nil
}

// Delete removes the file at key. A missing key, or a directory, is not an
// object and is left alone without error. Empty parent directories are kept
// (removing them would race with a concurrent Create below them).
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := checkKey(key); err != nil {
		return wrap("delete", key, err)
	}
	if err := ctx.Err(); err != nil {
		return wrap("delete", key, err)
	}
	fi, err := b.root.Lstat(key)
	if isNotExist(err) {
		return nil
	}
	if err != nil {
		return wrap("delete", key, err)
	}
	if fi.IsDir() {
		return nil
	}
	if err := b.root.Remove(key); err != nil && !isNotExist(err) {
		return wrap("delete", key, err)
	}
	if err := b.syncDir(path.Dir(key)); err != nil {
		b.log.Warn("sync directory after delete", zap.String("key", storage.RedactKey(key)), zap.Error(err))
	}
	b.log.Debug("object deleted", zap.String("key", storage.RedactKey(key)))
	return nil
}
