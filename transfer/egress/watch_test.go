package egress

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// waitFor bounds every wait for a callback: generous, for a loaded machine
// running -race.
const waitFor = 15 * time.Second

// watched is a running Watcher's callbacks, as channels.
type watched struct {
	ready chan StagedFile
	gone  chan string // share/user/path
	stop  func()      // cancels Run and waits for it to return
}

// startWatch runs a Watcher on cfg (Settle 200ms and a Check that passes all
// unless set) until the test ends or stop is called.
func startWatch(t *testing.T, cfg WatchConfig, log *zap.Logger) *watched {
	t.Helper()
	if cfg.Settle == 0 {
		cfg.Settle = 200 * time.Millisecond
	}
	if cfg.Check == nil {
		cfg.Check = func(string, string, string) error { return nil }
	}
	if log == nil {
		log = zaptest.NewLogger(t, zaptest.Level(zapcore.WarnLevel))
	}
	w, err := NewWatcher(cfg, log)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	wd := &watched{ready: make(chan StagedFile, 100), gone: make(chan string, 100)}
	var busy atomic.Int32 // callbacks under way: never more than one
	enter := func() {
		if busy.Add(1) != 1 {
			t.Error("callbacks called concurrently")
		}
	}
	done := make(chan error, 1)
	go func() {
		done <- w.Run(ctx, func(_ context.Context, f StagedFile) {
			enter()
			defer busy.Add(-1)
			wd.ready <- f
		}, func(_ context.Context, share, user, path string) {
			enter()
			defer busy.Add(-1)
			wd.gone <- share + "/" + user + "/" + path
		})
	}()
	var once sync.Once
	wd.stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Errorf("Run returned %v, want context.Canceled", err)
				}
			case <-time.After(waitFor):
				t.Error("Run did not return after its context ended")
			}
		})
	}
	t.Cleanup(wd.stop)
	return wd
}

// readies waits for n ready calls and returns them by share/user/path;
// a second call for one path (before n arrive) fails the test.
func (wd *watched) readies(t *testing.T, n int) map[string]StagedFile {
	t.Helper()
	got := make(map[string]StagedFile)
	for len(got) < n {
		select {
		case f := <-wd.ready:
			key := f.Share + "/" + f.User + "/" + f.Path
			if _, dup := got[key]; dup {
				t.Fatalf("%s reported twice: %+v", key, f)
			}
			got[key] = f
		case <-time.After(waitFor):
			t.Fatalf("%d of %d ready calls after %v: %v", len(got), n, waitFor, got)
		}
	}
	return got
}

// readyOne waits for the ready call of key; any other fails the test.
func (wd *watched) readyOne(t *testing.T, key string) StagedFile {
	t.Helper()
	for k, f := range wd.readies(t, 1) {
		if k != key {
			t.Fatalf("ready for %s (%+v), want %s", k, f, key)
		}
		return f
	}
	panic("unreachable")
}

// gones waits for the gone calls of keys, in any order; another fails the
// test.
func (wd *watched) gones(t *testing.T, keys ...string) {
	t.Helper()
	want := make(map[string]bool)
	for _, k := range keys {
		want[k] = true
	}
	for len(want) > 0 {
		select {
		case k := <-wd.gone:
			if !want[k] {
				t.Fatalf("gone for %s, want %v", k, keys)
			}
			delete(want, k)
		case <-time.After(waitFor):
			t.Fatalf("no gone for %v after %v", want, waitFor)
		}
	}
}

// quiet fails the test if a callback is pending.
func (wd *watched) quiet(t *testing.T) {
	t.Helper()
	select {
	case f := <-wd.ready:
		t.Fatalf("unexpected ready: %+v", f)
	case k := <-wd.gone:
		t.Fatalf("unexpected gone: %s", k)
	default:
	}
}

// stage writes data to dir/rel, making the folders on the way.
func stageAt(t *testing.T, dir, rel string, data []byte) {
	t.Helper()
	p := filepath.Join(dir, filepath.FromSlash(rel))
	noErr(t, os.MkdirAll(filepath.Dir(p), 0o755))
	noErr(t, os.WriteFile(p, data, 0o644))
}

func sha256Hex(data []byte) string {
	h := sha256.Sum256(data)
	return hex.EncodeToString(h[:])
}

// checkStaged fails the test unless f is the file dir/key with contents data.
func checkStaged(t *testing.T, dir, key string, f StagedFile, data []byte) {
	t.Helper()
	fi, err := os.Lstat(filepath.Join(dir, filepath.FromSlash(key)))
	noErr(t, err)
	if f.Size != int64(len(data)) || f.SHA256 != sha256Hex(data) || !f.ModTime.Equal(fi.ModTime()) {
		t.Fatalf("%s: got size %d, sha256 %s, mtime %v; want %d, %s, %v", key, f.Size, f.SHA256, f.ModTime, len(data), sha256Hex(data), fi.ModTime())
	}
	if b3 := blake3.Sum256(data); f.BLAKE3 != hex.EncodeToString(b3[:]) {
		t.Fatalf("%s: got blake3 %s, want %x", key, f.BLAKE3, b3)
	}
}

func randomBytes(t *testing.T, n int) []byte {
	b := make([]byte, n)
	_, err := rand.Read(b)
	noErr(t, err)
	return b
}

// A file written in chunks, with pauses shorter than Settle, is reported
// once, when it stopped changing, with the hash of all of it.
func TestWatchSettlesChunkedWrite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	noErr(t, os.MkdirAll(filepath.Join(dir, "s", "u"), 0o755))
	wd := startWatch(t, WatchConfig{Dir: dir, Settle: time.Second}, nil)

	f, err := os.Create(filepath.Join(dir, "s", "u", "data.csv"))
	noErr(t, err)
	var all []byte
	for i := range 6 {
		chunk := randomBytes(t, 100_000+i)
		all = append(all, chunk...)
		_, err := f.Write(chunk)
		noErr(t, err)
		time.Sleep(100 * time.Millisecond)
		wd.quiet(t) // not reported while it is being written
	}
	noErr(t, f.Close())
	checkStaged(t, dir, "s/u/data.csv", wd.readyOne(t, "s/u/data.csv"), all)

	stageAt(t, dir, "s/u/after.txt", []byte("after"))
	wd.readyOne(t, "s/u/after.txt") // and not data.csv again
}

// Files staged before Run are found by its first scan, at any depth; a
// file of several hashing buffers is hashed whole.
func TestWatchInitialScan(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	small, big := []byte("staged before the start"), randomBytes(t, 3*hashBufSize+12345)
	stageAt(t, dir, "s/u/a.txt", small)
	stageAt(t, dir, "s/u/d1/d2/big.bin", big)
	wd := startWatch(t, WatchConfig{Dir: dir}, nil)
	got := wd.readies(t, 2)
	checkStaged(t, dir, "s/u/a.txt", got["s/u/a.txt"], small)
	checkStaged(t, dir, "s/u/d1/d2/big.bin", got["s/u/d1/d2/big.bin"], big)
	wd.quiet(t)
}

// After a restart, versions Known to have been reported are neither
// hashed nor reported again, but still count as reported (their removal is
// gone); a new version of one is reported.
func TestWatchKnownAfterRestart(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	stageAt(t, dir, "s/u/a.txt", []byte("a, first version"))
	stageAt(t, dir, "s/u/b.txt", []byte("b"))

	first := startWatch(t, WatchConfig{Dir: dir}, nil)
	reported := first.readies(t, 2) // what the state database would hold
	first.stop()

	var mu sync.Mutex
	known := make(map[string]int) // Known calls that answered true, by path
	asked := make(map[string]int) // all Known calls, by path
	stageAt(t, dir, "s/u/c.txt", []byte("c, new while mftd was down"))
	second := startWatch(t, WatchConfig{Dir: dir, Known: func(share, user, path string, size int64, mtime time.Time) bool {
		mu.Lock()
		defer mu.Unlock()
		key := share + "/" + user + "/" + path
		asked[key]++
		f, ok := reported[key]
		if ok && f.Size == size && f.ModTime.Equal(mtime) {
			known[key]++
			return true
		}
		return false
	}}, nil)
	second.readyOne(t, "s/u/c.txt")
	// Files settle in the order they were seen: once a file staged now is
	// reported, a and b have been decided.
	stageAt(t, dir, "s/u/sentinel.txt", []byte("staged after c was reported"))
	second.readyOne(t, "s/u/sentinel.txt")
	mu.Lock()
	if known["s/u/a.txt"] != 1 || known["s/u/b.txt"] != 1 || asked["s/u/c.txt"] != 1 {
		t.Errorf("Known answered true %v, was asked %v; want a and b known once, c asked once", known, asked)
	}
	mu.Unlock()

	a2 := []byte("a, second version")
	stageAt(t, dir, "s/u/a.txt", a2)
	checkStaged(t, dir, "s/u/a.txt", second.readyOne(t, "s/u/a.txt"), a2)
	noErr(t, os.Remove(filepath.Join(dir, "s", "u", "b.txt")))
	second.gones(t, "s/u/b.txt")
	second.quiet(t)
}

// Directories that appear after the start are watched and scanned: one
// made with its file right away, a tree moved in from outside with files
// already inside (no events for those), and a whole share moved in.
func TestWatchNewDirectories(t *testing.T) {
	t.Parallel()
	dir, outside := t.TempDir(), t.TempDir()
	wd := startWatch(t, WatchConfig{Dir: dir}, nil)

	stageAt(t, dir, "s/u/new/deeper/f.txt", []byte("made after the start"))
	stageAt(t, outside, "tree/x.txt", []byte("x"))
	stageAt(t, outside, "tree/y/z.txt", []byte("z"))
	noErr(t, os.Rename(filepath.Join(outside, "tree"), filepath.Join(dir, "s", "u", "moved")))
	stageAt(t, outside, "s2/u2/w.txt", []byte("w"))
	noErr(t, os.Rename(filepath.Join(outside, "s2"), filepath.Join(dir, "s2")))

	got := wd.readies(t, 4)
	for _, k := range []string{"s/u/new/deeper/f.txt", "s/u/moved/x.txt", "s/u/moved/y/z.txt", "s2/u2/w.txt"} {
		if _, ok := got[k]; !ok {
			t.Errorf("%s not reported; got %v", k, got)
		}
	}
	// The moved-in folders are watched, not just scanned once.
	stageAt(t, dir, "s/u/moved/y/later.txt", []byte("later"))
	wd.readyOne(t, "s/u/moved/y/later.txt")
	wd.quiet(t)
}

// Editor and partial files, symlinks (to a file and to a folder outside),
// a FIFO, a hardlink, files above <share>/<user>/ and names the path gate
// refuses are never reported, through events and rescans alike, and each
// refusal is logged once.
func TestWatchNeverReports(t *testing.T) {
	t.Parallel()
	dir, outside := t.TempDir(), t.TempDir()
	secret := filepath.Join(outside, "secret.txt")
	noErr(t, os.WriteFile(secret, []byte("not staged"), 0o644))
	core, logs := observer.New(zapcore.DebugLevel)
	var checked atomic.Int32
	wd := startWatch(t, WatchConfig{Dir: dir, Rescan: 300 * time.Millisecond, Check: func(share, user, path string) error {
		checked.Add(1)
		if strings.Contains(path, "refused") {
			return errors.New("refused name")
		}
		return nil
	}}, zap.New(core))

	temps := []string{".hidden", "~$report.docx", "notes.txt~", "x.tmp", "Y.TMP", "a.swp", "a.swx",
		"dl.part", "dl.partial", "dl.crdownload", ".git/config", "cache.tmp/inner.txt"}
	for _, name := range temps {
		stageAt(t, dir, "s/u/"+name, []byte("temporary"))
	}
	user := filepath.Join(dir, "s", "u")
	noErr(t, os.Symlink(secret, filepath.Join(user, "link-file")))
	noErr(t, os.Symlink(outside, filepath.Join(user, "link-dir")))
	noErr(t, unix.Mkfifo(filepath.Join(user, "fifo"), 0o600))
	noErr(t, os.Link(secret, filepath.Join(user, "hard.txt")))
	stageAt(t, dir, "top.txt", []byte("depth 1"))
	stageAt(t, dir, "s/share-level.txt", []byte("depth 2"))
	stageAt(t, dir, "s/u/refused.txt", []byte("the gate says no"))
	stageAt(t, dir, "s/u/ok.txt", []byte("the one item"))
	wd.readyOne(t, "s/u/ok.txt")

	// A file appearing behind the directory symlink is not seen either.
	noErr(t, os.WriteFile(filepath.Join(outside, "later.txt"), []byte("later"), 0o644))
	time.Sleep(time.Second) // a few rescans
	stageAt(t, dir, "s/u/ok2.txt", []byte("second item"))
	wd.readyOne(t, "s/u/ok2.txt")
	wd.quiet(t)

	if checked.Load() == 0 {
		t.Error("the path gate was never asked")
	}
	for _, p := range []string{"link-file", "link-dir", "fifo", "hard.txt", "refused.txt"} {
		n := logs.FilterMessage("egress staging: not an item").FilterField(zap.String("path", p)).Len()
		warns := logs.FilterLevelExact(zapcore.WarnLevel).FilterField(zap.String("path", p)).Len()
		if n != 1 || warns != 1 {
			t.Errorf("%s: logged %d times (%d at warn), want once at warn", p, n, warns)
		}
	}
	for _, p := range []string{"top.txt", "s/share-level.txt"} {
		if n := logs.FilterField(zap.String("path", p)).Len(); n != 1 {
			t.Errorf("%s: logged %d times, want once", p, n)
		}
	}
	if n := logs.FilterLevelExact(zapcore.WarnLevel).FilterField(zap.String("path", "x.tmp")).Len(); n != 0 {
		t.Errorf("a temporary file logged at warn %d times", n)
	}
}

// A reported file that changes is reported again, with the new hash.
func TestWatchReportsNewVersion(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	wd := startWatch(t, WatchConfig{Dir: dir}, nil)
	v1, v2 := []byte("version one"), []byte("version two") // same size: the mtime tells them apart
	stageAt(t, dir, "s/u/f.txt", v1)
	checkStaged(t, dir, "s/u/f.txt", wd.readyOne(t, "s/u/f.txt"), v1)
	stageAt(t, dir, "s/u/f.txt", v2)
	checkStaged(t, dir, "s/u/f.txt", wd.readyOne(t, "s/u/f.txt"), v2)
	v3 := []byte("version three, longer")
	stageAt(t, dir, "s/u/f.txt.part", v3) // the usual download: a partial file, renamed over
	noErr(t, os.Rename(filepath.Join(dir, "s/u/f.txt.part"), filepath.Join(dir, "s/u/f.txt")))
	checkStaged(t, dir, "s/u/f.txt", wd.readyOne(t, "s/u/f.txt"), v3)
	wd.quiet(t)
}

// Removing a reported file, renaming it out of the tree or within it,
// moving its folder out, or replacing it by a symlink calls gone; a rename
// within the tree is also a new file.
func TestWatchGone(t *testing.T) {
	t.Parallel()
	dir, outside := t.TempDir(), t.TempDir()
	wd := startWatch(t, WatchConfig{Dir: dir}, nil)
	for _, k := range []string{"removed", "renamed-out", "renamed", "dir/in-removed-dir", "moved/in-moved-dir", "symlinked"} {
		stageAt(t, dir, "s/u/"+k, []byte(k))
	}
	wd.readies(t, 6)

	user := filepath.Join(dir, "s", "u")
	noErr(t, os.Remove(filepath.Join(user, "removed")))
	noErr(t, os.Rename(filepath.Join(user, "renamed-out"), filepath.Join(outside, "renamed-out")))
	noErr(t, os.Rename(filepath.Join(user, "renamed"), filepath.Join(user, "renamed-to")))
	noErr(t, os.RemoveAll(filepath.Join(user, "dir")))
	noErr(t, os.Rename(filepath.Join(user, "moved"), filepath.Join(outside, "moved"))) // no event for its file
	noErr(t, os.Remove(filepath.Join(user, "symlinked")))
	noErr(t, os.Symlink(filepath.Join(outside, "renamed-out"), filepath.Join(user, "symlinked")))

	wd.gones(t, "s/u/removed", "s/u/renamed-out", "s/u/renamed", "s/u/dir/in-removed-dir", "s/u/moved/in-moved-dir", "s/u/symlinked")
	checkStaged(t, dir, "s/u/renamed-to", wd.readyOne(t, "s/u/renamed-to"), []byte("renamed"))
	wd.quiet(t)

	// A file that was never reported goes without a gone call.
	stageAt(t, dir, "s/u/x.tmp", []byte("temporary"))
	noErr(t, os.Remove(filepath.Join(user, "x.tmp")))
	stageAt(t, dir, "s/u/last", []byte("last"))
	wd.readyOne(t, "s/u/last")
	wd.quiet(t)
}

func TestNewWatcherRefusesBadConfig(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	noErr(t, os.WriteFile(file, nil, 0o644))
	pass := func(string, string, string) error { return nil }
	for name, cfg := range map[string]WatchConfig{
		"no dir":       {Check: pass},
		"missing dir":  {Dir: filepath.Join(dir, "missing"), Check: pass},
		"not a dir":    {Dir: file, Check: pass},
		"no path gate": {Dir: dir},
	} {
		if _, err := NewWatcher(cfg, nil); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}

// Run fails, rather than watching nothing, when the staging folder is
// renamed away.
func TestWatchStagingFolderRenamed(t *testing.T) {
	t.Parallel()
	dir := filepath.Join(t.TempDir(), "staging")
	stageAt(t, dir, "s/u/f.txt", []byte("f"))
	w, err := NewWatcher(WatchConfig{Dir: dir, Settle: 100 * time.Millisecond, Check: func(string, string, string) error { return nil }}, nil)
	noErr(t, err)
	ready := make(chan StagedFile, 1)
	done := make(chan error, 1)
	go func() {
		done <- w.Run(context.Background(), func(_ context.Context, f StagedFile) { ready <- f }, func(context.Context, string, string, string) {})
	}()
	select {
	case <-ready: // Run is watching
	case err := <-done:
		t.Fatalf("Run returned %v", err)
	case <-time.After(waitFor):
		t.Fatal("no ready call")
	}
	noErr(t, os.Rename(dir, dir+".old"))
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "removed or renamed") {
			t.Fatalf("Run returned %v, want the staging folder's removal", err)
		}
	case <-time.After(waitFor):
		t.Fatal("Run still running after its staging folder was renamed away")
	}
}
