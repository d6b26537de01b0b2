package egress

import (
	"fmt"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// RemoveStaged removes <dir>/<share>/<user>/<path> once it has been sent,
// if it is still the version sent: a regular file with one link, size bytes
// long and last modified at mtime. A file replaced or rewritten since is
// left where it is (ErrChanged): it is the user's new version, not the one
// delivered. The path is resolved as OpenStaged resolves it (no symlink
// followed below dir) and the file is unlinked from the directory
// descriptor that was checked, so a path swapped in between cannot redirect
// the removal. Removing what is no longer there is not an error.
func RemoveStaged(dir, share, user, path string, size int64, mtime time.Time) error {
	comps, err := stagedComponents(share, user, path)
	if err != nil {
		return err
	}
	rel := strings.Join(comps, "/")
	root, err := openRoot(dir)
	if err != nil {
		return fmt.Errorf("egress: open staging folder %s: %w", dir, err)
	}
	defer unix.Close(root)
	parent, err := openDirBeneath(root, comps[:len(comps)-1])
	if err == unix.ENOENT {
		return nil
	}
	if err != nil {
		return fmt.Errorf("egress: remove staged %q: %w", rel, err)
	}
	defer unix.Close(parent)
	name := comps[len(comps)-1]
	var st unix.Stat_t
	switch err := fstatAt(parent, name, &st); {
	case err == unix.ENOENT:
		return nil
	case err != nil:
		return fmt.Errorf("egress: remove staged %q: %w", rel, err)
	}
	if err := stageable(st.Mode, uint64(st.Nlink)); err != nil {
		return fmt.Errorf("egress: remove staged %q: %w", rel, err)
	}
	if st.Size != size || st.Mtim.Nano() != mtime.UnixNano() {
		return fmt.Errorf("%w: %q is %d bytes, modified %s, not the %d bytes of %s sent",
			ErrChanged, rel, st.Size, time.Unix(0, st.Mtim.Nano()).UTC().Format(time.RFC3339Nano),
			size, mtime.UTC().Format(time.RFC3339Nano))
	}
	if err := unix.Unlinkat(parent, name, 0); err != nil && err != unix.ENOENT {
		return fmt.Errorf("egress: remove staged %q: %w", rel, err)
	}
	return nil
}
