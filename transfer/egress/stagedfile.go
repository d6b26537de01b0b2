package egress

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"

	"golang.org/x/sys/unix"
)

// ErrNotStageable: the staged path is not a plain file mftd may read. It is
// wrapped by every refusal: a symlink anywhere in the path, a hardlinked
// file, a FIFO, device, socket or directory, a component that is not a
// directory, and a name with "..", ".", an empty component, NUL or a
// backslash. A path that does not exist is not a refusal: its error matches
// fs.ErrNotExist instead.
var ErrNotStageable = errors.New("egress: not a regular staged file")

// Flags of every directory opened on the way to a staged file: read (to
// list it), never through a symlink.
const stagedDirFlags = unix.O_RDONLY | unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_CLOEXEC

// stagedFileFlags opens the staged file itself. O_NONBLOCK: a FIFO swapped
// in after the type check does not block the open; O_NOCTTY: nor does a
// terminal become ours.
const stagedFileFlags = unix.O_RDONLY | unix.O_NOFOLLOW | unix.O_NONBLOCK | unix.O_NOCTTY | unix.O_CLOEXEC

// OpenStaged opens <dir>/<share>/<user>/<path> (path: slash-separated,
// relative) for reading and returns the file and its fstat info; the caller
// closes the file. dir is the administrator's staging folder and is opened
// as configured; below it no symlink is ever followed: the directories are
// resolved with openat2 (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS |
// RESOLVE_NO_MAGICLINKS) from a descriptor of dir, or, where openat2 is
// unavailable, one openat(O_NOFOLLOW|O_DIRECTORY) per component. The last
// component is fstatat'ed without following and opened only if it is a
// regular file, with O_NOFOLLOW|O_NONBLOCK; the open file is checked again
// (regular, exactly one link: a hardlink could expose a file from outside
// the user's area). Refusals wrap ErrNotStageable; names are checked before
// the filesystem is touched.
func OpenStaged(dir, share, user, path string) (*os.File, os.FileInfo, error) {
	return openStaged(dir, share, user, path, openDirBeneath)
}

// dirOpener opens the directory root/comps... (comps may be empty: root
// itself) with stagedDirFlags, following no symlink.
type dirOpener func(root int, comps []string) (int, error)

func openStaged(dir, share, user, path string, openDir dirOpener) (*os.File, os.FileInfo, error) {
	comps, err := stagedComponents(share, user, path)
	if err != nil {
		return nil, nil, err
	}
	rel := strings.Join(comps, "/")
	root, err := openRoot(dir)
	if err != nil {
		return nil, nil, fmt.Errorf("egress: open staging folder %s: %w", dir, err)
	}
	defer unix.Close(root)
	parent, err := openDir(root, comps[:len(comps)-1])
	if err != nil {
		return nil, nil, fmt.Errorf("egress: open staged %q: %w", rel, err)
	}
	defer unix.Close(parent)
	f, fi, err := openLeaf(parent, comps[len(comps)-1], filepath.Join(dir, rel))
	if err != nil {
		return nil, nil, fmt.Errorf("egress: open staged %q: %w", rel, err)
	}
	return f, fi, nil
}

// stagedComponents checks share, user (one component each) and path (one
// or more, slash-separated) and returns them as one list of components.
func stagedComponents(share, user, path string) ([]string, error) {
	if badComponent(share) {
		return nil, fmt.Errorf("%w: bad share name %q", ErrNotStageable, share)
	}
	if badComponent(user) {
		return nil, fmt.Errorf("%w: bad user name %q", ErrNotStageable, user)
	}
	comps := append([]string{share, user}, strings.Split(path, "/")...)
	for _, c := range comps[2:] {
		if badComponent(c) {
			return nil, fmt.Errorf("%w: bad path %q", ErrNotStageable, path)
		}
	}
	return comps, nil
}

// badComponent reports whether c cannot be one component of a staged path.
func badComponent(c string) bool {
	return c == "" || c == "." || c == ".." || strings.ContainsAny(c, "/\\\x00")
}

// openRoot opens the staging folder itself (symlinks in dir are the
// administrator's and are followed).
func openRoot(dir string) (int, error) {
	return retryEINTR(func() (int, error) {
		return unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	})
}

// openDirBeneath opens root/comps... with openat2, which refuses any
// symlink and any escape from root in one call; without openat2 (ENOSYS,
// or EPERM from a seccomp filter that predates it) it walks the components.
func openDirBeneath(root int, comps []string) (int, error) {
	if len(comps) == 0 {
		return openAt(root, ".", stagedDirFlags)
	}
	how := unix.OpenHow{
		Flags:   stagedDirFlags,
		Resolve: unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS,
	}
	name := strings.Join(comps, "/")
	for range 3 {
		fd, err := unix.Openat2(root, name, &how)
		switch {
		case err == nil:
			return fd, nil
		case err == unix.EINTR || err == unix.EAGAIN: // EAGAIN: a racing rename; retry
			continue
		case err == unix.ENOSYS || err == unix.EPERM:
			return openDirWalk(root, comps)
		}
		return -1, resolveError(err)
	}
	return -1, resolveError(unix.EAGAIN)
}

// openDirWalk opens root/comps... one component at a time, each with
// O_NOFOLLOW|O_DIRECTORY: a symlink or non-directory anywhere stops it.
// The components are checked (no "..", ".", "/"), so it cannot climb out.
func openDirWalk(root int, comps []string) (int, error) {
	fd, err := openAt(root, ".", stagedDirFlags)
	if err != nil {
		return -1, err
	}
	for _, c := range comps {
		next, err := openAt(fd, c, stagedDirFlags)
		unix.Close(fd)
		if err != nil {
			return -1, resolveError(err)
		}
		fd = next
	}
	return fd, nil
}

// openLeaf opens name in the directory parent if it is a regular file with
// one link. name is shown as full in the returned file.
func openLeaf(parent int, name, full string) (*os.File, os.FileInfo, error) {
	var st unix.Stat_t
	if err := fstatAt(parent, name, &st); err != nil {
		return nil, nil, err
	}
	// Nothing but a regular file is ever opened: opening a device or FIFO
	// can act on it.
	if err := stageable(st.Mode, uint64(st.Nlink)); err != nil {
		return nil, nil, err
	}
	fd, err := openAt(parent, name, stagedFileFlags)
	if err != nil {
		return nil, nil, resolveError(err)
	}
	f := os.NewFile(uintptr(fd), full)
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	sys, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		f.Close()
		return nil, nil, fmt.Errorf("%w: no stat information", ErrNotStageable)
	}
	if err := stageable(sys.Mode, uint64(sys.Nlink)); err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, fi, nil
}

// stageable refuses all but a regular file with exactly one link.
func stageable(mode uint32, nlink uint64) error {
	if mode&unix.S_IFMT != unix.S_IFREG {
		return fmt.Errorf("%w: a %s", ErrNotStageable, fileKind(mode))
	}
	if nlink != 1 {
		return fmt.Errorf("%w: a file with %d hard links", ErrNotStageable, nlink)
	}
	return nil
}

// fileKind names the type in mode.
func fileKind(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "regular file"
	case unix.S_IFDIR:
		return "directory"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "FIFO"
	case unix.S_IFSOCK:
		return "socket"
	case unix.S_IFCHR, unix.S_IFBLK:
		return "device"
	}
	return "special file"
}

// resolveError turns the errors of a resolution that met a symlink, an
// escape or a non-directory into refusals; others (ENOENT: fs.ErrNotExist,
// EACCES, ...) are returned as they are.
func resolveError(err error) error {
	switch err {
	case unix.ELOOP:
		return fmt.Errorf("%w: a symlink in the path: %w", ErrNotStageable, err)
	case unix.EXDEV:
		return fmt.Errorf("%w: the path leaves the staging folder: %w", ErrNotStageable, err)
	case unix.ENOTDIR:
		return fmt.Errorf("%w: a component of the path is not a directory: %w", ErrNotStageable, err)
	}
	return err
}

// lstatBeneath fills st with the lstat of root/comps..., resolving the
// directories as OpenStaged does. Empty comps: root itself.
func lstatBeneath(root int, comps []string, st *unix.Stat_t) error {
	if len(comps) == 0 {
		return unix.Fstat(root, st)
	}
	parent, err := openDirBeneath(root, comps[:len(comps)-1])
	if err != nil {
		return err
	}
	defer unix.Close(parent)
	return fstatAt(parent, comps[len(comps)-1], st)
}

// fstatAt is fstatat(AT_SYMLINK_NOFOLLOW), retried on EINTR.
func fstatAt(dirfd int, name string, st *unix.Stat_t) error {
	_, err := retryEINTR(func() (int, error) {
		return 0, unix.Fstatat(dirfd, name, st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return resolveError(err)
}

// openAt is openat, retried on EINTR.
func openAt(dirfd int, name string, flags int) (int, error) {
	return retryEINTR(func() (int, error) { return unix.Openat(dirfd, name, flags, 0) })
}

// retryEINTR calls fn until it does not fail with EINTR (network
// filesystems can interrupt opens and stats).
func retryEINTR(fn func() (int, error)) (int, error) {
	for {
		n, err := fn()
		if err != unix.EINTR {
			return n, err
		}
	}
}
