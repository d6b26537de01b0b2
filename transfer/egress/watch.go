package egress

import (
	"container/heap"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"github.com/zeebo/blake3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"
)

// StagedFile is one settled version of a file staged for egress.
type StagedFile struct {
	Share, User, Path string // staged at <Dir>/<Share>/<User>/<Path>; Path slash-separated
	Size              int64
	ModTime           time.Time
	SHA256            string // lower-case hex of exactly Size bytes
	// BLAKE3 is the lower-case hex BLAKE3-256 of the same bytes, hashed in
	// the same read (each buffer read went into both).
	BLAKE3 string
}

// WatchConfig configures a Watcher.
type WatchConfig struct {
	Dir    string        // staging_dir; must exist
	Settle time.Duration // a file is ready once unchanged this long (default 5s)
	Rescan time.Duration // full rescan period as a safety net (default 5m)
	// Check is the path gate (required): share, user and path must pass it
	// to become items. Files it refuses are skipped and logged once, at
	// warn, without content.
	Check func(share, user, path string) error
	// Known reports whether this exact version (size and mtime) was hashed
	// and reported before (e.g. before a restart): then the file is not
	// re-hashed and not reported again, and counts as reported (its removal
	// is reported as gone). nil: nothing is known.
	Known func(share, user, path string, size int64, mtime time.Time) bool
}

// Defaults of WatchConfig, and the one hashing buffer's size.
const (
	defaultSettle = 5 * time.Second
	defaultRescan = 5 * time.Minute
	hashBufSize   = 1 << 20
)

// Watcher watches the staging folder <Dir>/<share>/<user>/<path...> and
// reports the files in it that have settled. See Run.
type Watcher struct {
	cfg WatchConfig
	log *zap.Logger
}

// NewWatcher checks cfg and returns a watcher of cfg.Dir. A nil log logs
// nothing.
func NewWatcher(cfg WatchConfig, log *zap.Logger) (*Watcher, error) {
	if cfg.Dir == "" {
		return nil, errors.New("egress: watch: no staging folder")
	}
	if cfg.Check == nil {
		return nil, errors.New("egress: watch: no path gate (Check)")
	}
	dir, err := filepath.Abs(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("egress: watch %s: %w", cfg.Dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("egress: watch: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("egress: watch %s: not a directory", dir)
	}
	cfg.Dir = dir
	if cfg.Settle <= 0 {
		cfg.Settle = defaultSettle
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = defaultRescan
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Watcher{cfg: cfg, log: log.Named("watch")}, nil
}

// Run watches until ctx ends, then returns ctx.Err(); it returns another
// error if Dir cannot be watched or is removed or renamed. It starts with a
// full scan (a restart misses nothing), then follows fsnotify events: every
// directory below Dir is watched as it appears, and scanned (files moved in
// with their directory make no events). On an event overflow, and every
// Rescan, it scans everything again.
//
// Only regular files with one link at <share>/<user>/<path...> are items;
// symlinks are never followed, and hidden and temporary names (see
// ignoredName) are skipped. ready is called once per settled version of an
// item: after its size and mtime stayed the same, with no event for it, for
// Settle, and after it was hashed (one file at a time, with one buffer)
// without changing meanwhile. gone is called once when an item that was
// reported (or Known) is removed, renamed away, or stops being an item.
// Callbacks, Check and Known are called from Run's goroutine, never
// concurrently. Run may be called again after it returned.
func (w *Watcher) Run(ctx context.Context, ready func(context.Context, StagedFile), gone func(ctx context.Context, share, user, path string)) error {
	fsw, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("egress: watch %s: %w", w.cfg.Dir, err)
	}
	defer fsw.Close()
	root, err := openRoot(w.cfg.Dir)
	if err != nil {
		return fmt.Errorf("egress: watch %s: %w", w.cfg.Dir, err)
	}
	defer unix.Close(root)
	if err := fsw.Add(w.cfg.Dir); err != nil {
		return fmt.Errorf("egress: watch %s: %w", w.cfg.Dir, err)
	}
	r := &run{
		cfg: w.cfg, log: w.log, fsw: fsw, root: root, ready: ready, gone: gone,
		top:     &dirNode{},
		buf:     make([]byte, hashBufSize),
		results: make(chan hashResult, 1),
	}
	defer r.stopHash()
	if err := r.walk(ctx, nil, r.top); err != nil {
		return err
	}

	rescan := time.NewTicker(w.cfg.Rescan)
	defer rescan.Stop()
	settle := time.NewTimer(time.Hour)
	defer settle.Stop()
	for {
		r.startHash(ctx)
		r.arm(settle)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case ev, ok := <-fsw.Events:
			if !ok {
				return fmt.Errorf("egress: watch %s: the event stream ended", w.cfg.Dir)
			}
			if err := r.event(ctx, ev); err != nil {
				return err
			}
		case err, ok := <-fsw.Errors:
			if !ok {
				return fmt.Errorf("egress: watch %s: the event stream ended", w.cfg.Dir)
			}
			if !errors.Is(err, fsnotify.ErrEventOverflow) {
				r.log.Warn("egress staging watch", zap.Error(err))
				continue
			}
			r.log.Warn("egress staging watch: events were lost; scanning the staging folder again")
			r.rescan(ctx)
		case <-rescan.C:
			r.rescan(ctx)
		case <-settle.C:
			r.settleDue(ctx, time.Now())
		case res := <-r.results:
			r.finish(ctx, res)
		}
	}
}

// ignoredName reports whether a file or directory named name is an editor's
// or browser's temporary or partial file, or hidden: nothing at or below it
// is an item. Suffixes match in any case (Windows clients write FOO.TMP).
func ignoredName(name string) bool {
	if strings.HasPrefix(name, ".") || strings.HasPrefix(name, "~$") || strings.HasSuffix(name, "~") {
		return true
	}
	switch strings.ToLower(path.Ext(name)) {
	case ".tmp", ".swp", ".swx", ".part", ".partial", ".crdownload":
		return true
	}
	return false
}

// stamp identifies a version of a file as the watcher sees it: a new inode
// (a file replaced by rename, even with the same size and mtime) is a new
// version to hash; only size, mtime and hash decide whether it is reported.
type stamp struct {
	size     int64
	mtime    int64 // Unix nanoseconds
	dev, ino uint64
}

func stampOf(st *unix.Stat_t) stamp {
	return stamp{size: st.Size, mtime: st.Mtim.Nano(), dev: uint64(st.Dev), ino: st.Ino}
}

func stampOfInfo(fi os.FileInfo) stamp {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return stamp{size: fi.Size(), mtime: fi.ModTime().UnixNano()}
	}
	return stamp{size: st.Size, mtime: st.Mtim.Nano(), dev: uint64(st.Dev), ino: st.Ino}
}

// version is what a ready call reported.
type version struct {
	size, mtime int64
	sha256      string // "" for a version Known from before
}

// fileState is a regular file with one link at an item's place.
type fileState struct {
	comps   []string // share, user, path components
	obs     stamp    // as last seen
	changed time.Time
	gen     uint64 // counts changes, so a hash of an older state is dropped

	inHeap, inQueue bool
	dead            bool // no longer tracked
	failed          bool // could not be read; retried at the next rescan

	settled    stamp // the version last decided (hashed or Known)
	hasSettled bool
	reported   bool // ready was called (or Known said so), gone not yet
	rep        version
}

func (f *fileState) share() string { return f.comps[0] }
func (f *fileState) user() string  { return f.comps[1] }
func (f *fileState) path() string  { return strings.Join(f.comps[2:], "/") }

// dirNode is a directory below Dir, watched and scanned.
type dirNode struct {
	dev, ino uint64
	walked   bool // scanned at least once
	files    map[string]*fileState
	dirs     map[string]*dirNode
	noted    map[string]string // names not taken, by the reason logged
}

// dueEntry: fs is looked at again at the time at.
type dueEntry struct {
	at time.Time
	fs *fileState
}

// dueHeap orders dueEntries by time (container/heap).
type dueHeap []dueEntry

func (h dueHeap) Len() int           { return len(h) }
func (h dueHeap) Less(i, j int) bool { return h[i].at.Before(h[j].at) }
func (h dueHeap) Swap(i, j int)      { h[i], h[j] = h[j], h[i] }
func (h *dueHeap) Push(x any)        { *h = append(*h, x.(dueEntry)) }
func (h *dueHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = dueEntry{}
	*h = old[:len(old)-1]
	return e
}

// hashJob is the one hash under way.
type hashJob struct {
	fs     *fileState
	gen    uint64
	cancel context.CancelFunc
}

type hashResult struct {
	job *hashJob
	got stamp
	sum string // SHA-256
	b3  string // BLAKE3
	err error
}

// errChanged: the file changed between its last look and the end of its
// hash.
var errChanged = errors.New("egress: staged file changed while it was read")

// run is the state of one Run; only Run's goroutine touches it (the hash
// goroutine gets its arguments and answers on results).
type run struct {
	cfg   WatchConfig
	log   *zap.Logger
	fsw   *fsnotify.Watcher
	root  int // descriptor of cfg.Dir
	ready func(context.Context, StagedFile)
	gone  func(ctx context.Context, share, user, path string)

	top     *dirNode
	due     dueHeap
	queue   []*fileState // settled, waiting for the hasher
	armed   time.Time
	cur     *hashJob
	buf     []byte
	results chan hashResult

	unwatched int   // directories a walk could not watch
	watchErr  error // the first reason
}

// abs is the path of comps below Dir.
func (r *run) abs(comps []string) string {
	return filepath.Join(append([]string{r.cfg.Dir}, comps...)...)
}

// node returns the tracked directory comps, or nil.
func (r *run) node(comps []string) *dirNode {
	n := r.top
	for _, c := range comps {
		if n = n.dirs[c]; n == nil {
			return nil
		}
	}
	return n
}

// event handles one fsnotify event: whatever it says, the path is looked at
// again (events may be stale: a watched directory may have moved).
func (r *run) event(ctx context.Context, ev fsnotify.Event) error {
	if ev.Name == r.cfg.Dir {
		if ev.Has(fsnotify.Remove) || ev.Has(fsnotify.Rename) {
			return fmt.Errorf("egress: watch %s: the staging folder was removed or renamed", r.cfg.Dir)
		}
		return nil
	}
	rel, ok := strings.CutPrefix(ev.Name, r.cfg.Dir+string(filepath.Separator))
	if !ok || rel == "" {
		return nil
	}
	r.examine(ctx, strings.Split(rel, "/"), ev.Op)
	return nil
}

// examine looks at the path comps after an event (op) or a due time (op 0).
func (r *run) examine(ctx context.Context, comps []string, op fsnotify.Op) {
	parent := r.node(comps[:len(comps)-1])
	if parent == nil {
		return // below an untracked directory: a stale event
	}
	name := comps[len(comps)-1]
	if ignoredName(name) {
		r.note(parent, comps, "hidden or temporary name", zapcore.DebugLevel, nil)
		return
	}
	var st unix.Stat_t
	if err := lstatBeneath(r.root, comps, &st); err != nil {
		if vanished(err) {
			r.drop(ctx, parent, comps)
			delete(parent.noted, name)
			return
		}
		r.log.Warn("egress staging: cannot look at a staged path", zap.String("path", strings.Join(comps, "/")), zap.Error(err))
		if f := parent.files[name]; f != nil {
			r.fail(f)
		}
		return
	}
	sub := r.consider(ctx, parent, comps, &st, op != 0)
	// A directory created, moved in or replaced is scanned whole: what came
	// with it made no events.
	if sub != nil && (!sub.walked || op.Has(fsnotify.Create) || op.Has(fsnotify.Rename) || op.Has(fsnotify.Remove)) {
		_ = r.walk(ctx, comps, sub) // comps is not nil: no error
	}
}

// vanished reports whether err says the path is not there (any more) as a
// directory entry mftd would look at.
func vanished(err error) bool {
	return errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrNotStageable)
}

// consider takes the entry comps (in parent) with the lstat st into
// account. For a directory it returns its node, to walk.
func (r *run) consider(ctx context.Context, parent *dirNode, comps []string, st *unix.Stat_t, event bool) *dirNode {
	name := comps[len(comps)-1]
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFDIR:
		r.dropFile(ctx, parent, comps)
		delete(parent.noted, name)
		sub := parent.dirs[name]
		if sub != nil && (sub.dev != uint64(st.Dev) || sub.ino != st.Ino) {
			r.dropDir(ctx, parent, comps) // another directory now
			sub = nil
		}
		if sub == nil {
			sub = &dirNode{dev: uint64(st.Dev), ino: st.Ino}
			if parent.dirs == nil {
				parent.dirs = make(map[string]*dirNode)
			}
			parent.dirs[name] = sub
		}
		return sub
	case unix.S_IFREG:
		r.dropDir(ctx, parent, comps)
		if reason, level, err := r.refusal(comps, st); reason != "" {
			r.dropFile(ctx, parent, comps)
			r.note(parent, comps, reason, level, err)
			return nil
		}
		delete(parent.noted, name)
		f := parent.files[name]
		if f == nil {
			f = &fileState{comps: slices.Clone(comps)}
			if parent.files == nil {
				parent.files = make(map[string]*fileState)
			}
			parent.files[name] = f
		}
		r.observe(f, stampOf(st), event)
	default:
		r.drop(ctx, parent, comps)
		r.note(parent, comps, "a "+fileKind(st.Mode)+", not followed", zapcore.WarnLevel, nil)
	}
	return nil
}

// refusal says why the regular file comps is not an item ("" if it is one)
// and at which level that is logged.
func (r *run) refusal(comps []string, st *unix.Stat_t) (string, zapcore.Level, error) {
	if len(comps) < 3 {
		return "not in a <share>/<user>/ folder", zapcore.DebugLevel, nil
	}
	share, user, p := comps[0], comps[1], strings.Join(comps[2:], "/")
	if _, err := stagedComponents(share, user, p); err != nil {
		return "a name mftd cannot stage", zapcore.WarnLevel, err
	}
	if err := r.cfg.Check(share, user, p); err != nil {
		return "refused by the path gate", zapcore.WarnLevel, err
	}
	if st.Nlink != 1 {
		return "a hardlinked file", zapcore.WarnLevel, nil
	}
	return "", 0, nil
}

// note logs, once per name and reason, why the entry comps is not an item.
func (r *run) note(parent *dirNode, comps []string, reason string, level zapcore.Level, err error) {
	name := comps[len(comps)-1]
	if parent.noted[name] == reason {
		return
	}
	if parent.noted == nil {
		parent.noted = make(map[string]string)
	}
	parent.noted[name] = reason
	fields := []zap.Field{zap.String("reason", reason)}
	if len(comps) >= 3 {
		fields = append(fields, zap.String("share", comps[0]), zap.String("user", comps[1]), zap.String("path", strings.Join(comps[2:], "/")))
	} else {
		fields = append(fields, zap.String("path", strings.Join(comps, "/")))
	}
	if err != nil {
		fields = append(fields, zap.Error(err))
	}
	r.log.Log(level, "egress staging: not an item", fields...)
}

// observe records that f was seen with s (event: an event for it arrived).
// A change, an event, or a failed read to retry starts its settling again.
func (r *run) observe(f *fileState, s stamp, event bool) {
	if !event && s == f.obs && !f.failed {
		return
	}
	f.obs, f.failed = s, false
	f.changed = time.Now()
	f.gen++
	if r.cur != nil && r.cur.fs == f {
		r.cur.cancel()
	}
	if !f.inHeap {
		f.inHeap = true
		heap.Push(&r.due, dueEntry{at: f.changed.Add(r.cfg.Settle), fs: f})
	}
}

// fail marks f unreadable for now: it waits (in no queue) for an event or
// the next rescan to try again.
func (r *run) fail(f *fileState) {
	f.failed = true
}

// drop forgets the entry comps, file or directory.
func (r *run) drop(ctx context.Context, parent *dirNode, comps []string) {
	r.dropFile(ctx, parent, comps)
	r.dropDir(ctx, parent, comps)
}

// dropFile forgets the file comps; gone is called if it was reported.
func (r *run) dropFile(ctx context.Context, parent *dirNode, comps []string) {
	name := comps[len(comps)-1]
	f := parent.files[name]
	if f == nil {
		return
	}
	delete(parent.files, name)
	f.dead = true
	if r.cur != nil && r.cur.fs == f {
		r.cur.cancel()
	}
	if f.reported {
		r.gone(ctx, f.share(), f.user(), f.path())
	}
}

// dropDir forgets the directory comps and all below it, and stops watching
// them.
func (r *run) dropDir(ctx context.Context, parent *dirNode, comps []string) {
	name := comps[len(comps)-1]
	n := parent.dirs[name]
	if n == nil {
		return
	}
	delete(parent.dirs, name)
	for child := range n.files {
		r.dropFile(ctx, n, append(slices.Clip(comps), child))
	}
	for child := range n.dirs {
		r.dropDir(ctx, n, append(slices.Clip(comps), child))
	}
	_ = r.fsw.Remove(r.abs(comps)) // fsnotify may have dropped it already
}

// rescan walks everything again. The staging folder itself is held open,
// so a failure here is transient (out of descriptors): it is logged, and
// the next rescan tries again.
func (r *run) rescan(ctx context.Context) {
	if err := r.walk(ctx, nil, r.top); err != nil {
		r.log.Warn("egress staging: rescan failed", zap.Error(err))
	}
}

// walk watches and scans the directory comps (tracked as n) and everything
// below it; it returns an error only if Dir itself (comps nil) cannot be
// read.
func (r *run) walk(ctx context.Context, comps []string, n *dirNode) error {
	type item struct {
		comps []string
		n     *dirNode
	}
	stack := []item{{comps, n}}
	for len(stack) > 0 {
		it := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		subs, err := r.scanDir(ctx, it.comps, it.n)
		if err != nil {
			if len(it.comps) == 0 {
				return fmt.Errorf("egress: watch %s: %w", r.cfg.Dir, err)
			}
			if vanished(err) {
				if parent := r.node(it.comps[:len(it.comps)-1]); parent != nil && parent.dirs[it.comps[len(it.comps)-1]] == it.n {
					r.dropDir(ctx, parent, it.comps)
				}
			} else {
				r.log.Warn("egress staging: cannot read a directory", zap.String("path", strings.Join(it.comps, "/")), zap.Error(err))
			}
			continue
		}
		for name, sub := range subs {
			stack = append(stack, item{append(slices.Clip(it.comps), name), sub})
		}
	}
	if r.unwatched > 0 {
		r.log.Warn("egress staging: directories not watched; their files are found by the periodic rescan",
			zap.Int("directories", r.unwatched), zap.Duration("rescan", r.cfg.Rescan), zap.Error(r.watchErr))
		r.unwatched, r.watchErr = 0, nil
	}
	return nil
}

// scanDir watches the directory comps, lists it (without following
// anything), takes each entry into account, and forgets what is no longer
// there. It returns the subdirectories to walk.
func (r *run) scanDir(ctx context.Context, comps []string, n *dirNode) (map[string]*dirNode, error) {
	fd, err := openDirBeneath(r.root, comps)
	if err != nil {
		return nil, err
	}
	d := os.NewFile(uintptr(fd), r.abs(comps))
	defer d.Close()
	var dst unix.Stat_t
	if err := unix.Fstat(fd, &dst); err != nil {
		return nil, err
	}
	if len(comps) > 0 && (n.dev != uint64(dst.Dev) || n.ino != dst.Ino) {
		return nil, fmt.Errorf("%w: replaced while it was scanned", fs.ErrNotExist) // the event that replaced it follows
	}
	r.watch(comps, &dst)
	n.walked = true

	seen := make(map[string]bool)
	subs := make(map[string]*dirNode)
	for {
		ents, err := d.ReadDir(512)
		for _, e := range ents {
			name := e.Name()
			child := append(slices.Clip(comps), name)
			if ignoredName(name) {
				seen[name] = true
				r.note(n, child, "hidden or temporary name", zapcore.DebugLevel, nil)
				continue
			}
			var st unix.Stat_t
			if err := fstatAt(fd, name, &st); err != nil {
				if !vanished(err) {
					seen[name] = true // keep what is known of it
					r.log.Warn("egress staging: cannot look at a staged path", zap.String("path", strings.Join(child, "/")), zap.Error(err))
				}
				continue
			}
			seen[name] = true
			if sub := r.consider(ctx, n, child, &st, false); sub != nil {
				subs[name] = sub
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			r.log.Warn("egress staging: cannot list a directory", zap.String("path", strings.Join(comps, "/")), zap.Error(err))
			return subs, nil // an incomplete listing: forget nothing
		}
	}
	for name := range n.files {
		if !seen[name] {
			r.dropFile(ctx, n, append(slices.Clip(comps), name))
		}
	}
	for name := range n.dirs {
		if !seen[name] {
			r.dropDir(ctx, n, append(slices.Clip(comps), name))
		}
	}
	for name := range n.noted {
		if !seen[name] {
			delete(n.noted, name)
		}
	}
	return subs, nil
}

// watch adds an fsnotify watch on the directory comps, which the caller
// opened as dst. fsnotify adds by path and follows symlinks: if the path is
// no longer that directory, the watch is taken off again.
func (r *run) watch(comps []string, dst *unix.Stat_t) {
	p := r.abs(comps)
	if err := r.fsw.Add(p); err != nil {
		r.unwatched++
		if r.watchErr == nil {
			r.watchErr = err
		}
		return
	}
	if len(comps) == 0 {
		return
	}
	var st unix.Stat_t
	if err := lstatBeneath(r.root, comps, &st); err != nil || st.Dev != dst.Dev || st.Ino != dst.Ino {
		_ = r.fsw.Remove(p)
	}
}

// arm sets t to the earliest due time.
func (r *run) arm(t *time.Timer) {
	if len(r.due) == 0 {
		if !r.armed.IsZero() {
			t.Stop()
			r.armed = time.Time{}
		}
		return
	}
	if at := r.due[0].at; !at.Equal(r.armed) {
		t.Reset(time.Until(at))
		r.armed = at
	}
}

// settleDue looks at the files due by now: those unchanged for Settle join
// the hash queue, the others wait again.
func (r *run) settleDue(ctx context.Context, now time.Time) {
	r.armed = time.Time{}
	for len(r.due) > 0 && !r.due[0].at.After(now) {
		f := heap.Pop(&r.due).(dueEntry).fs
		f.inHeap = false
		if f.dead {
			continue
		}
		if at := f.changed.Add(r.cfg.Settle); at.After(now) {
			f.inHeap = true
			heap.Push(&r.due, dueEntry{at: at, fs: f})
			continue
		}
		r.settle(ctx, f)
	}
}

// settle checks that f still looks as it did, and queues it for hashing
// unless this version was decided before.
func (r *run) settle(ctx context.Context, f *fileState) {
	var st unix.Stat_t
	err := lstatBeneath(r.root, f.comps, &st)
	switch {
	case err == nil && st.Mode&unix.S_IFMT == unix.S_IFREG && st.Nlink == 1:
		if s := stampOf(&st); s != f.obs {
			r.observe(f, s, false)
			return
		}
		if f.hasSettled && f.settled == f.obs {
			return
		}
		if !f.inQueue {
			f.inQueue = true
			r.queue = append(r.queue, f)
		}
	case err != nil && !vanished(err):
		r.log.Warn("egress staging: cannot look at a staged file", zap.String("share", f.share()),
			zap.String("user", f.user()), zap.String("path", f.path()), zap.Error(err))
		r.fail(f)
	default:
		r.examine(ctx, f.comps, 0) // gone, or no longer a plain file
	}
}

// startHash starts hashing the next queued file, unless a hash is under
// way. A file Known in this version is settled without a hash.
func (r *run) startHash(ctx context.Context) {
	now := time.Now()
	for r.cur == nil && len(r.queue) > 0 {
		f := r.queue[0]
		r.queue[0] = nil
		r.queue = r.queue[1:]
		f.inQueue = false
		if f.dead || f.changed.Add(r.cfg.Settle).After(now) || (f.hasSettled && f.settled == f.obs) {
			continue // gone, changed again (it is due again later), or decided
		}
		if !f.reported && r.cfg.Known != nil && r.cfg.Known(f.share(), f.user(), f.path(), f.obs.size, time.Unix(0, f.obs.mtime)) {
			f.settled, f.hasSettled = f.obs, true
			f.reported, f.rep = true, version{size: f.obs.size, mtime: f.obs.mtime}
			continue
		}
		hctx, cancel := context.WithCancel(ctx)
		job := &hashJob{fs: f, gen: f.gen, cancel: cancel}
		r.cur = job
		dir, share, user, p, want, buf, results := r.cfg.Dir, f.share(), f.user(), f.path(), f.obs, r.buf, r.results
		go func() {
			got, sum, b3, err := hashStaged(hctx, dir, share, user, p, want, buf)
			results <- hashResult{job: job, got: got, sum: sum, b3: b3, err: err}
		}()
	}
}

// stopHash cancels the hash under way and waits for it.
func (r *run) stopHash() {
	if r.cur != nil {
		r.cur.cancel()
		<-r.results
		r.cur = nil
	}
}

// finish takes a hash's result: a file unchanged since the hash started is
// reported if this version was not; a changed one settles again.
func (r *run) finish(ctx context.Context, res hashResult) {
	job := res.job
	r.cur = nil
	job.cancel()
	f := job.fs
	if f.dead || f.gen != job.gen {
		return // gone, or changed meanwhile: it is due again
	}
	switch {
	case res.err == nil:
		f.settled, f.hasSettled = res.got, true
		v := version{size: res.got.size, mtime: res.got.mtime, sha256: res.sum}
		if f.reported && f.rep == v {
			return
		}
		f.reported, f.rep = true, v
		r.ready(ctx, StagedFile{
			Share: f.share(), User: f.user(), Path: f.path(),
			Size: v.size, ModTime: time.Unix(0, v.mtime), SHA256: v.sha256, BLAKE3: res.b3,
		})
	case errors.Is(res.err, errChanged):
		r.observe(f, res.got, true)
	case vanished(res.err):
		r.examine(ctx, f.comps, 0)
		if !f.dead {
			r.observe(f, f.obs, true) // it looks fine again: try once more after Settle
		}
	case errors.Is(res.err, context.Canceled):
	default:
		r.log.Warn("egress staging: cannot read a staged file", zap.String("share", f.share()),
			zap.String("user", f.user()), zap.String("path", f.path()), zap.Error(res.err))
		r.fail(f)
	}
}

// hashStaged hashes the staged file, which must still be want, streaming
// through buf. It returns the file's stamp and the SHA-256 and BLAKE3 of
// exactly its size in bytes (each buffer read goes into both, so they are
// digests of the same bytes), or errChanged (with the new stamp) if it is
// not want or changed while it was read.
func hashStaged(ctx context.Context, dir, share, user, p string, want stamp, buf []byte) (stamp, string, string, error) {
	f, fi, err := OpenStaged(dir, share, user, p)
	if err != nil {
		return stamp{}, "", "", err
	}
	defer f.Close()
	got := stampOfInfo(fi)
	if got != want {
		return got, "", "", errChanged
	}
	h, h3 := sha256.New(), blake3.New()
	var n int64
	for n < got.size {
		if err := ctx.Err(); err != nil {
			return got, "", "", err
		}
		b := buf
		if rest := got.size - n; rest < int64(len(b)) {
			b = b[:rest]
		}
		m, err := f.Read(b)
		h.Write(b[:m])
		h3.Write(b[:m])
		n += int64(m)
		if err == io.EOF {
			break
		}
		if err != nil {
			return got, "", "", err
		}
	}
	after, err := f.Stat()
	if err != nil {
		return got, "", "", err
	}
	if now := stampOfInfo(after); n != got.size || now != got {
		return now, "", "", errChanged
	}
	return got, hex.EncodeToString(h.Sum(nil)), hex.EncodeToString(h3.Sum(nil)), nil
}
