package egress

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stagingTree builds, in a fresh staging folder, a user's area with a
// plain file and every kind of entry OpenStaged must refuse. It returns the
// staging folder.
func stagingTree(t *testing.T) string {
	t.Helper()
	dir, outside := t.TempDir(), t.TempDir()
	user := filepath.Join(dir, "s", "u")
	noErr(t, os.MkdirAll(filepath.Join(user, "sub"), 0o755))
	noErr(t, os.WriteFile(filepath.Join(user, "ok.txt"), []byte("hello"), 0o644))
	noErr(t, os.WriteFile(filepath.Join(user, "sub", "deep.txt"), []byte("deep"), 0o644))
	secret := filepath.Join(outside, "secret.txt")
	noErr(t, os.WriteFile(secret, []byte("secret"), 0o644))
	noErr(t, os.Symlink("sub", filepath.Join(user, "linkdir")))           // to a directory inside the tree
	noErr(t, os.Symlink(outside, filepath.Join(user, "outdir")))          // to a directory outside
	noErr(t, os.Symlink("ok.txt", filepath.Join(user, "linkfile")))       // to a file inside the tree
	noErr(t, os.Symlink(secret, filepath.Join(user, "outfile")))          // to a file outside
	noErr(t, os.Symlink("u", filepath.Join(dir, "s", "linkuser")))        // as the user component
	noErr(t, os.Symlink("s", filepath.Join(dir, "linkshare")))            // as the share component
	noErr(t, os.Symlink("/proc/self/root", filepath.Join(user, "magic"))) // towards a magic link
	noErr(t, os.Link(secret, filepath.Join(user, "hard.txt")))
	noErr(t, unix.Mkfifo(filepath.Join(user, "fifo"), 0o600))
	return dir
}

func noErr(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestOpenStaged(t *testing.T) {
	openers := []struct {
		name string
		open dirOpener
	}{
		{"openat2", openDirBeneath},
		{"walk", openDirWalk}, // the fallback without openat2
	}
	cases := []struct {
		name              string
		share, user, path string
		want              error // nil: opens
	}{
		{"plain file", "s", "u", "ok.txt", nil},
		{"nested file", "s", "u", "sub/deep.txt", nil},
		{"symlink to a directory in the middle", "s", "u", "linkdir/deep.txt", ErrNotStageable},
		{"symlink to a directory outside in the middle", "s", "u", "outdir/secret.txt", ErrNotStageable},
		{"symlink as the last component", "s", "u", "linkfile", ErrNotStageable},
		{"symlink to a file outside", "s", "u", "outfile", ErrNotStageable},
		{"symlink towards a magic link", "s", "u", "magic/etc/passwd", ErrNotStageable},
		{"symlinked user folder", "s", "linkuser", "ok.txt", ErrNotStageable},
		{"symlinked share folder", "linkshare", "u", "ok.txt", ErrNotStageable},
		{"hardlink", "s", "u", "hard.txt", ErrNotStageable},
		{"fifo", "s", "u", "fifo", ErrNotStageable},
		{"directory", "s", "u", "sub", ErrNotStageable},
		{"file used as a directory", "s", "u", "ok.txt/x", ErrNotStageable},
		{"missing", "s", "u", "nothing.txt", fs.ErrNotExist},
	}
	for _, o := range openers {
		t.Run(o.name, func(t *testing.T) {
			dir := stagingTree(t)
			for _, c := range cases {
				t.Run(c.name, func(t *testing.T) {
					f, fi, err := openStagedNoBlock(t, dir, c.share, c.user, c.path, o.open)
					if c.want != nil {
						if !errors.Is(err, c.want) {
							t.Fatalf("error %v, want %v", err, c.want)
						}
						if f != nil || fi != nil {
							t.Fatal("a refusal returned a file")
						}
						return
					}
					if err != nil {
						t.Fatal(err)
					}
					defer f.Close()
					want, err := os.ReadFile(filepath.Join(dir, c.share, c.user, c.path))
					noErr(t, err)
					got, err := io.ReadAll(f)
					noErr(t, err)
					if string(got) != string(want) || fi.Size() != int64(len(want)) || !fi.Mode().IsRegular() {
						t.Fatalf("read %q (size %d, mode %v), want %q", got, fi.Size(), fi.Mode(), want)
					}
				})
			}
		})
	}
}

// A FIFO is refused without being opened at all (opening a special file
// can act on it): inotify sees no open of it, and does see ours.
func TestOpenStagedNeverOpensSpecialFiles(t *testing.T) {
	dir := stagingTree(t)
	fifo := filepath.Join(dir, "s", "u", "fifo")
	in, err := unix.InotifyInit1(unix.IN_NONBLOCK | unix.IN_CLOEXEC)
	noErr(t, err)
	defer unix.Close(in)
	_, err = unix.InotifyAddWatch(in, fifo, unix.IN_OPEN)
	noErr(t, err)
	opened := func() bool {
		n, err := unix.Read(in, make([]byte, 4096))
		if err != nil && err != unix.EAGAIN {
			t.Fatal(err)
		}
		return n > 0
	}
	for _, open := range []dirOpener{openDirBeneath, openDirWalk} {
		if _, _, err := openStagedNoBlock(t, dir, "s", "u", "fifo", open); !errors.Is(err, ErrNotStageable) {
			t.Fatalf("error %v, want ErrNotStageable", err)
		}
		if opened() {
			t.Fatal("OpenStaged opened the FIFO")
		}
	}
	fd, err := unix.Open(fifo, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
	noErr(t, err)
	unix.Close(fd)
	if !opened() {
		t.Fatal("inotify did not see the FIFO opened")
	}
}

// openStagedNoBlock calls openStaged and fails the test if it blocks (a
// FIFO opened for reading without O_NONBLOCK waits for a writer).
func openStagedNoBlock(t *testing.T, dir, share, user, path string, open dirOpener) (*os.File, os.FileInfo, error) {
	t.Helper()
	type result struct {
		f   *os.File
		fi  os.FileInfo
		err error
	}
	done := make(chan result, 1)
	go func() {
		f, fi, err := openStaged(dir, share, user, path, open)
		done <- result{f, fi, err}
	}()
	select {
	case r := <-done:
		return r.f, r.fi, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("OpenStaged(%q, %q, %q) blocked", share, user, path)
		return nil, nil, nil
	}
}

// Bad names are refused before the filesystem is touched: the staging
// folder here does not exist, and the error is a refusal, not ENOENT.
func TestOpenStagedRefusesBadNames(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "does-not-exist")
	cases := []struct{ share, user, path string }{
		{"s", "u", ".."},
		{"s", "u", "../u/ok.txt"},
		{"s", "u", "sub/../../../../etc/passwd"},
		{"s", "u", "./ok.txt"},
		{"s", "u", "sub/./ok.txt"},
		{"s", "u", "a//b"},
		{"s", "u", "sub/"},
		{"s", "u", "/etc/passwd"},
		{"s", "u", ""},
		{"s", "u", "a\x00b"},
		{"s", "u", `sub\ok.txt`},
		{"..", "u", "ok.txt"},
		{".", "u", "ok.txt"},
		{"", "u", "ok.txt"},
		{"s/t", "u", "ok.txt"},
		{"s", "..", "ok.txt"},
		{"s", "", "ok.txt"},
		{"s", "u/v", "ok.txt"},
		{"s", `u\v`, "ok.txt"},
		{"s", "u\x00", "ok.txt"},
	}
	for _, c := range cases {
		f, _, err := OpenStaged(dir, c.share, c.user, c.path)
		if f != nil {
			f.Close()
		}
		if !errors.Is(err, ErrNotStageable) {
			t.Errorf("OpenStaged(%q, %q, %q): %v, want ErrNotStageable", c.share, c.user, c.path, err)
		}
	}
}

// FuzzStagedComponents: a staged path that is accepted names a place
// strictly below <dir>/<share>/<user>, with nothing that filepath.Join
// would clean away; everything else is a refusal.
func FuzzStagedComponents(f *testing.F) {
	for _, s := range [][3]string{
		{"s", "u", "a.txt"}, {"s", "u", "a/b/c"}, {"s", "u", "../x"}, {"..", "u", "x"},
		{"s", "u", "a//b"}, {"s", "u", "/x"}, {"s", "u", "a\\b"}, {"s", "u", "a\x00"}, {"s", "u", "..."},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, share, user, path string) {
		comps, err := stagedComponents(share, user, path)
		if err != nil {
			if !errors.Is(err, ErrNotStageable) {
				t.Fatalf("refusal %v does not match ErrNotStageable", err)
			}
			return
		}
		if comps[0] != share || comps[1] != user || strings.Join(comps[2:], "/") != path {
			t.Fatalf("components %q of %q, %q, %q", comps, share, user, path)
		}
		joined := filepath.Join(append([]string{"/d"}, comps...)...)
		if want := "/d/" + share + "/" + user + "/" + path; joined != want {
			t.Fatalf("%q, %q, %q joins to %q, want %q", share, user, path, joined, want)
		}
	})
}
