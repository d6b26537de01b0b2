package local

import (
	"bytes"
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/storagetest"
)

func newAt(t *testing.T, dir string) *Backend {
	t.Helper()
	b, err := New(dir, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New(%q): %v", dir, err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newAt(t, t.TempDir()) })
}

func put(t *testing.T, b *Backend, key string, p []byte) {
	t.Helper()
	u, err := b.Create(t.Context(), key)
	if err != nil {
		t.Fatalf("Create(%q): %v", key, err)
	}
	if n, err := u.WriteChunk(t.Context(), 0, bytes.NewReader(p)); err != nil || n != int64(len(p)) {
		t.Fatalf("WriteChunk(%q) = %d, %v", key, n, err)
	}
	if _, err := u.Commit(t.Context()); err != nil {
		t.Fatalf("Commit(%q): %v", key, err)
	}
}

func fileSize(t *testing.T, path string) int64 {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fi.Size()
}

// files lists every file, link and directory under dir, relative to it.
func files(t *testing.T, dir string) []string {
	t.Helper()
	var got []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		got = append(got, filepath.ToSlash(rel))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return got
}

func TestNewPermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	b := newAt(t, dir)
	fi, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o700 {
		t.Errorf("root created with mode %v, want 0700", perm)
	}
	put(t, b, "arrivals/alice/f", []byte("x"))
	for name, want := range map[string]fs.FileMode{"arrivals/alice": 0o700, "arrivals/alice/f": 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if perm := fi.Mode().Perm(); perm != want {
			t.Errorf("%s created with mode %v, want %v", name, perm, want)
		}
	}
}

// TestSymlinkEscape plants symbolic links inside the root that point outside
// it, absolute and relative, at a directory and at a file, and shows that no
// operation reads, writes, truncates, creates or removes anything outside.
func TestSymlinkEscape(t *testing.T) {
	tmp := t.TempDir()
	rootDir, outside := filepath.Join(tmp, "root"), filepath.Join(tmp, "outside")
	secret := []byte("identifiable data outside the root")
	if err := os.MkdirAll(outside, 0o700); err != nil {
		t.Fatal(err)
	}
	secretPath := filepath.Join(outside, "secret")
	if err := os.WriteFile(secretPath, secret, 0o600); err != nil {
		t.Fatal(err)
	}
	b := newAt(t, rootDir)
	put(t, b, "uploads/x", []byte("mine"))
	if err := os.MkdirAll(filepath.Join(rootDir, "arrivals"), 0o700); err != nil {
		t.Fatal(err)
	}
	links := map[string]string{
		"absdir":  outside,
		"reldir":  filepath.Join("..", "..", "outside"),
		"absfile": secretPath,
		"relfile": filepath.Join("..", "..", "outside", "secret"),
		"inside":  filepath.Join("..", "uploads", "x"), // inside the root, still not an object
	}
	for name, target := range links {
		if err := os.Symlink(target, filepath.Join(rootDir, "arrivals", name)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := t.Context()
	h0 := encodeHandle(0)

	for _, dir := range []string{"arrivals/absdir", "arrivals/reldir"} {
		through := dir + "/secret"
		if rc, err := b.Open(ctx, through, 0, -1); err == nil {
			p, _ := io.ReadAll(rc)
			rc.Close()
			t.Errorf("Open(%q) through a link out of the root succeeded, read %q", through, p)
		}
		if info, err := b.Stat(ctx, through); err == nil {
			t.Errorf("Stat(%q) through a link out of the root = %+v", through, info)
		}
		if _, err := b.Resume(ctx, through, h0); err == nil {
			t.Errorf("Resume(%q) through a link out of the root succeeded", through)
		}
		if _, err := b.Create(ctx, dir+"/new"); err == nil {
			t.Errorf("Create(%q) through a link out of the root succeeded", dir+"/new")
		}
		if err := b.Move(ctx, "uploads/x", dir+"/stolen"); err == nil {
			t.Errorf("Move(uploads/x, %q) through a link out of the root succeeded", dir+"/stolen")
		}
		if err := b.Move(ctx, through, "uploads/stolen"); err == nil {
			t.Errorf("Move(%q, uploads/stolen) through a link out of the root succeeded", through)
		}
		_ = b.Delete(ctx, through) // may fail or do nothing; the check is below
		if err := b.List(ctx, dir+"/", func(info storage.ObjectInfo) error {
			t.Errorf("List(%q) through a link out of the root: %q", dir+"/", info.Key)
			return nil
		}); err != nil {
			t.Errorf("List(%q): %v", dir+"/", err)
		}
	}

	for _, link := range []string{"arrivals/absfile", "arrivals/relfile", "arrivals/inside"} {
		if rc, err := b.Open(ctx, link, 0, -1); !errors.Is(err, storage.ErrNotFound) {
			if err == nil {
				rc.Close()
			}
			t.Errorf("Open(%q) of a symbolic link: err = %v, want ErrNotFound", link, err)
		}
		if _, err := b.Stat(ctx, link); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("Stat(%q) of a symbolic link: err = %v, want ErrNotFound", link, err)
		}
		if _, err := b.Resume(ctx, link, h0); err == nil {
			t.Errorf("Resume(%q) of a symbolic link succeeded", link)
		}
		if _, err := b.Create(ctx, link); !errors.Is(err, storage.ErrExist) {
			t.Errorf("Create(%q) over a symbolic link: err = %v, want ErrExist", link, err)
		}
		if err := b.Move(ctx, link, "uploads/stolen"); err == nil {
			t.Errorf("Move(%q, uploads/stolen) of a symbolic link succeeded", link)
		}
		if err := b.Move(ctx, "uploads/x", link); !errors.Is(err, storage.ErrExist) {
			t.Errorf("Move(uploads/x, %q) onto a symbolic link: err = %v, want ErrExist", link, err)
		}
	}
	// Links are not objects: List shows only the real one.
	var keys []string
	if err := b.List(ctx, "", func(info storage.ObjectInfo) error {
		keys = append(keys, info.Key)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(keys, []string{"uploads/x"}) {
		t.Errorf("List(\"\") = %q, want only uploads/x", keys)
	}
	// Deleting a link removes the link, not its target.
	if err := b.Delete(ctx, "arrivals/absfile"); err != nil {
		t.Errorf("Delete(arrivals/absfile): %v", err)
	}
	if _, err := os.Lstat(filepath.Join(rootDir, "arrivals", "absfile")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Delete(arrivals/absfile) left the link: %v", err)
	}

	// Nothing outside changed, nothing was stolen into the root.
	if got, err := os.ReadFile(secretPath); err != nil || !bytes.Equal(got, secret) {
		t.Errorf("file outside the root is now %q, %v; want %q", got, err, secret)
	}
	if got := files(t, outside); !slices.Equal(got, []string{".", "secret"}) {
		t.Errorf("outside the root: %q, want only secret", got)
	}
	if _, err := os.Lstat(filepath.Join(rootDir, "uploads", "stolen")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("uploads/stolen exists: %v", err)
	}
	if got, err := os.ReadFile(filepath.Join(rootDir, "uploads", "x")); err != nil || string(got) != "mine" {
		t.Errorf("uploads/x = %q, %v; want it unchanged", got, err)
	}
}

// TestBadKeys: keys that are not clean relative paths are refused by every
// operation before the file system is touched.
func TestBadKeys(t *testing.T) {
	tmp := t.TempDir()
	rootDir := filepath.Join(tmp, "root", "store")
	victims := []string{filepath.Join(tmp, "x"), filepath.Join(tmp, "root", "x"), filepath.Join(tmp, "abs")}
	if err := os.MkdirAll(filepath.Join(tmp, "root"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, v := range victims {
		if err := os.WriteFile(v, []byte("victim"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	b := newAt(t, rootDir)
	put(t, b, "uploads/good", []byte("good"))
	before := files(t, tmp)

	bad := []string{
		"", ".", "..", "../x", "../../x", "uploads/../../x", "/abs", "/etc/passwd", filepath.Join(tmp, "x"),
		"a//b", "a/", "./a", "a/./b", "a/../b", "uploads/", `a\b`, `..\x`, "a\x00b",
	}
	ctx := t.Context()
	h := encodeHandle(0)
	for _, k := range bad {
		ops := map[string]func() error{
			"Create": func() error { _, err := b.Create(ctx, k); return err },
			"Resume": func() error { _, err := b.Resume(ctx, k, h); return err },
			"Open":   func() error { _, err := b.Open(ctx, k, 0, -1); return err },
			"Stat":   func() error { _, err := b.Stat(ctx, k); return err },
			"Delete": func() error { return b.Delete(ctx, k) },
			"MoveTo": func() error { return b.Move(ctx, "uploads/good", k) },
			"MoveFrom": func() error {
				return b.Move(ctx, k, "uploads/new")
			},
		}
		for name, op := range ops {
			if err := op(); !errors.Is(err, errBadKey) {
				t.Errorf("%s(%q): err = %v, want errBadKey", name, k, err)
			}
		}
	}
	for _, prefix := range []string{"../", "../x", "/abs", "/", "a//b/", "uploads/../", `..\x/`} {
		if err := b.List(ctx, prefix, func(storage.ObjectInfo) error { return nil }); !errors.Is(err, errBadKey) {
			t.Errorf("List(%q): err = %v, want errBadKey", prefix, err)
		}
	}
	if after := files(t, tmp); !slices.Equal(before, after) {
		t.Errorf("bad keys changed the file tree:\nbefore %q\nafter  %q", before, after)
	}
	for _, v := range victims {
		if got, err := os.ReadFile(v); err != nil || string(got) != "victim" {
			t.Errorf("%s = %q, %v; want it unchanged", v, got, err)
		}
	}
}

// TestResumeTruncates: bytes written after a handle was taken (a process
// killed before it saved the newer handle) are cut off the file by Resume.
func TestResumeTruncates(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	ctx := t.Context()
	const key = "uploads/trunc"
	path := filepath.Join(dir, "uploads", "trunc")
	p := bytes.Repeat([]byte("0123456789"), 300)

	u, err := b.Create(ctx, key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(p[:1000])); err != nil {
		t.Fatal(err)
	}
	h := u.Handle()
	if _, err := u.WriteChunk(ctx, 1000, bytes.NewReader(p[1000:1500])); err != nil {
		t.Fatal(err)
	}
	// And a write that never returned, straight to the file.
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.Write(bytes.Repeat([]byte("!"), 700))
	f.Close()
	if got := fileSize(t, path); got != 2200 {
		t.Fatalf("file has %d bytes before Resume, want 2200", got)
	}

	u, err = b.Resume(ctx, key, h)
	if err != nil {
		t.Fatalf("Resume: %v", err)
	}
	if got := u.Offset(); got != 1000 {
		t.Errorf("Resume: Offset() = %d, want 1000", got)
	}
	if got := fileSize(t, path); got != 1000 {
		t.Errorf("file has %d bytes after Resume at 1000", got)
	}
	if _, err := u.WriteChunk(ctx, 1000, bytes.NewReader(p[1000:])); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, p) {
		t.Errorf("after Resume and the rest: file = %d bytes, want %d bytes of the upload", len(got), len(p))
	}
}

// TestResumeShortFile: a file shorter than its handle lost durable bytes;
// Resume says so and leaves the file alone.
func TestResumeShortFile(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	ctx := t.Context()
	u, err := b.Create(ctx, "uploads/short")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(make([]byte, 1000))); err != nil {
		t.Fatal(err)
	}
	h := u.Handle()
	path := filepath.Join(dir, "uploads", "short")
	if err := os.Truncate(path, 500); err != nil {
		t.Fatal(err)
	}
	_, err = b.Resume(ctx, "uploads/short", h)
	if err == nil || !strings.Contains(err.Error(), "data lost") {
		t.Errorf("Resume of a file shorter than its handle: err = %v, want a data loss error", err)
	}
	if got := fileSize(t, path); got != 500 {
		t.Errorf("Resume changed the short file to %d bytes", got)
	}
}

func TestHandleFormat(t *testing.T) {
	if got, want := string(encodeHandle(1234)), `{"v":1,"offset":1234}`; got != want {
		t.Errorf("encodeHandle(1234) = %s, want %s", got, want)
	}
	if off, err := decodeHandle(encodeHandle(1 << 40)); err != nil || off != 1<<40 {
		t.Errorf("decodeHandle(encodeHandle(1<<40)) = %d, %v", off, err)
	}
	for _, h := range []string{"", "null", "{}", `{"v":2,"offset":1}`, `{"v":1,"offset":-1}`, `{"v":1,"offset":"1"}`, "\x00\x00\x00\x00\x00\x00\x00\x01"} {
		if off, err := decodeHandle(storage.Handle(h)); err == nil {
			t.Errorf("decodeHandle(%q) = %d, want an error", h, off)
		}
	}
}

// TestReaderFailsExact: this backend keeps every byte the reader yielded
// before failing, and the file holds exactly those.
func TestReaderFailsExact(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	ctx := t.Context()
	u, err := b.Create(ctx, "uploads/exact")
	if err != nil {
		t.Fatal(err)
	}
	boom := errors.New("boom")
	for _, plain := range []bool{false, true} {
		off := u.Offset()
		var r io.Reader = io.MultiReader(bytes.NewReader(make([]byte, 100_000)), errorReader{boom})
		if plain {
			r = struct{ io.Reader }{r}
		}
		n, err := u.WriteChunk(ctx, off, r)
		if !errors.Is(err, boom) || n != 100_000 || u.Offset() != off+n {
			t.Errorf("WriteChunk (plain %v) = %d, %v; Offset() = %d; want 100000, boom, %d", plain, n, err, u.Offset(), off+100_000)
		}
		if got := fileSize(t, filepath.Join(dir, "uploads", "exact")); got != u.Offset() {
			t.Errorf("file has %d bytes, Offset() = %d", got, u.Offset())
		}
	}
}

type errorReader struct{ err error }

func (e errorReader) Read([]byte) (int, error) { return 0, e.err }

// cancellingReader yields 1000 bytes, then cancels its context while
// yielding 500 more, then would go on for another MiB.
type cancellingReader struct {
	cancel context.CancelFunc
	reads  int
}

func (c *cancellingReader) Read(p []byte) (int, error) {
	c.reads++
	switch c.reads {
	case 1:
		return copy(p, make([]byte, 1000)), nil
	case 2:
		c.cancel()
		return copy(p, make([]byte, 500)), nil
	case 3:
		return copy(p, make([]byte, min(len(p), 1<<20))), nil
	}
	return 0, io.EOF
}

// TestCancelMidChunk: bytes taken from the reader before the context was
// cancelled are written, synced and counted; then the write stops.
func TestCancelMidChunk(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	u, err := b.Create(t.Context(), "uploads/cancel")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	n, err := u.WriteChunk(ctx, 0, &cancellingReader{cancel: cancel})
	if !errors.Is(err, context.Canceled) || n != 1500 || u.Offset() != 1500 {
		t.Errorf("WriteChunk cancelled mid-chunk = %d, %v; Offset() = %d; want 1500, context.Canceled, 1500", n, err, u.Offset())
	}
	if got := fileSize(t, filepath.Join(dir, "uploads", "cancel")); got != 1500 {
		t.Errorf("file has %d bytes, want 1500", got)
	}
}

// TestWriteErrorKeepsOffset: when the file refuses a write, nothing of the
// chunk counts, Offset and Handle stay, and the upload goes on afterwards.
func TestWriteErrorKeepsOffset(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	ctx := t.Context()
	su, err := b.Create(ctx, "uploads/werr")
	if err != nil {
		t.Fatal(err)
	}
	u := su.(*upload)
	if _, err := u.WriteChunk(ctx, 0, bytes.NewReader([]byte("hello "))); err != nil {
		t.Fatal(err)
	}
	h := u.Handle()
	good := u.f
	ro, err := b.root.Open("uploads/werr") // read-only: every write fails
	if err != nil {
		t.Fatal(err)
	}
	u.f = ro
	n, err := u.WriteChunk(ctx, 6, bytes.NewReader([]byte("broken")))
	u.f = good
	ro.Close()
	if err == nil || n != 0 || errors.Is(err, storage.ErrOffsetMismatch) {
		t.Errorf("WriteChunk to a file that refuses writes = %d, %v; want 0 and the write error", n, err)
	}
	if u.Offset() != 6 || !bytes.Equal(u.Handle(), h) {
		t.Errorf("after a write error: Offset() = %d, Handle() = %s; want 6, %s", u.Offset(), u.Handle(), h)
	}
	if _, err := u.WriteChunk(ctx, 6, bytes.NewReader([]byte("world"))); err != nil {
		t.Fatal(err)
	}
	if _, err := u.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(filepath.Join(dir, "uploads", "werr")); string(got) != "hello world" {
		t.Errorf("file = %q, want %q", got, "hello world")
	}
}

// TestCommitCutsStrayBytes: bytes beyond the durable offset (a failed write
// whose cleanup also failed) never become part of the object.
func TestCommitCutsStrayBytes(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	ctx := t.Context()
	u, err := b.Create(ctx, "uploads/stray")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteChunk(ctx, 0, strings.NewReader("kept")); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "uploads", "stray")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("stray")
	f.Close()
	info, err := u.Commit(ctx)
	if err != nil || info.Size != 4 {
		t.Fatalf("Commit = %+v, %v; want size 4", info, err)
	}
	if got, _ := os.ReadFile(path); string(got) != "kept" {
		t.Errorf("committed file = %q, want %q", got, "kept")
	}
}

// TestMoveCompletesInterrupted: a Move killed between link and remove leaves
// both names on one file; the retried Move finishes the job.
func TestMoveCompletesInterrupted(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	put(t, b, "uploads/m", []byte("payload"))
	if err := os.MkdirAll(filepath.Join(dir, "arrivals", "alice"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "uploads", "m"), filepath.Join(dir, "arrivals", "alice", "m")); err != nil {
		t.Fatal(err)
	}
	if err := b.Move(t.Context(), "uploads/m", "arrivals/alice/m"); err != nil {
		t.Fatalf("retried Move: %v", err)
	}
	if _, err := b.Stat(t.Context(), "uploads/m"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat(uploads/m) after Move: %v, want ErrNotFound", err)
	}
	if got, err := os.ReadFile(filepath.Join(dir, "arrivals", "alice", "m")); err != nil || string(got) != "payload" {
		t.Errorf("arrivals/alice/m = %q, %v", got, err)
	}
}

// TestDeleteDirectory: a directory is not an object; Delete leaves it and
// what is in it.
func TestDeleteDirectory(t *testing.T) {
	dir := t.TempDir()
	b := newAt(t, dir)
	put(t, b, "arrivals/alice/f", []byte("f"))
	if err := b.Delete(t.Context(), "arrivals/alice"); err != nil {
		t.Errorf("Delete of a directory: %v, want nil", err)
	}
	if _, err := b.Stat(t.Context(), "arrivals/alice/f"); err != nil {
		t.Errorf("Delete of its directory removed arrivals/alice/f: %v", err)
	}
}
