package egress

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func TestRemoveStaged(t *testing.T) {
	dir := stagingTree(t)
	user := filepath.Join(dir, "s", "u")
	stat := func(p string) os.FileInfo {
		t.Helper()
		fi, err := os.Lstat(filepath.Join(user, p))
		noErr(t, err)
		return fi
	}

	// The version sent is removed.
	fi := stat("sub/deep.txt")
	noErr(t, RemoveStaged(dir, "s", "u", "sub/deep.txt", fi.Size(), fi.ModTime()))
	if _, err := os.Lstat(filepath.Join(user, "sub", "deep.txt")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("sent file still there: %v", err)
	}
	// Gone already, or its folder gone: nothing to do.
	noErr(t, RemoveStaged(dir, "s", "u", "sub/deep.txt", fi.Size(), fi.ModTime()))
	noErr(t, RemoveStaged(dir, "s", "u", "nodir/x.txt", 1, time.Now()))

	// A file rewritten since (other size, or same size and a new time) is
	// the user's new version: kept.
	fi = stat("ok.txt")
	noErr(t, os.WriteFile(filepath.Join(user, "ok.txt"), []byte("HELLO"), 0o644))
	noErr(t, os.Chtimes(filepath.Join(user, "ok.txt"), time.Now(), fi.ModTime().Add(time.Second)))
	if err := RemoveStaged(dir, "s", "u", "ok.txt", fi.Size(), fi.ModTime()); !errors.Is(err, ErrChanged) {
		t.Fatalf("rewritten file: got %v, want ErrChanged", err)
	}
	if err := RemoveStaged(dir, "s", "u", "ok.txt", fi.Size()+1, stat("ok.txt").ModTime()); !errors.Is(err, ErrChanged) {
		t.Fatalf("other size: got %v, want ErrChanged", err)
	}
	stat("ok.txt")

	// Nothing reached through a symlink, a hardlink or a bad name is
	// removed, and what it points to stays.
	for _, p := range []string{"linkfile", "outfile", "hard.txt", "linkdir/deep.txt", "outdir/secret.txt", "fifo", "../u/ok.txt"} {
		var size int64
		var mtime time.Time
		if fi, err := os.Stat(filepath.Join(user, p)); err == nil {
			size, mtime = fi.Size(), fi.ModTime()
		}
		if err := RemoveStaged(dir, "s", "u", p, size, mtime); !errors.Is(err, ErrNotStageable) {
			t.Errorf("%s: got %v, want ErrNotStageable", p, err)
		}
	}
	for _, p := range []string{"linkfile", "outfile", "hard.txt", "fifo", "ok.txt"} {
		stat(p)
	}
	if _, err := os.Stat(filepath.Join(user, "outdir", "secret.txt")); err != nil {
		t.Fatalf("file outside the staging folder touched: %v", err)
	}
	if err := RemoveStaged(dir, "linkshare", "u", "ok.txt", 5, time.Now()); !errors.Is(err, ErrNotStageable) {
		t.Errorf("symlinked share: got %v, want ErrNotStageable", err)
	}
}
