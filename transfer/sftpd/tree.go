package sftpd

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pkg/sftp"
	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
)

// The directories of every user's tree.
const (
	dirUpload   = "upload"
	dirArrivals = "arrivals"
	dirShares   = "shares" // only with Config.Shares
)

const (
	defaultWindow = 4 << 20 // Config.Window when unset
	// defaultReorderWait is how long a write ahead of a gap waits, while
	// nothing moves, for the gap to fill before it is refused.
	defaultReorderWait = 10 * time.Second
	// defaultEarlyWait is how long a write just ahead of the next offset
	// waits for its predecessor (being handled by another of pkg/sftp's
	// goroutines) before it is copied into the reorder window.
	defaultEarlyWait = 5 * time.Millisecond
	// defaultAuthEvery is how often an open file re-checks the session
	// between writes (every other operation checks it each time).
	defaultAuthEvery = 30 * time.Second
	// maxDone bounds the names a connection remembers as completed.
	maxDone = 256
)

// handlers returns the pkg/sftp request handlers of c's virtual tree.
func (c *conn) handlers() sftp.Handlers { return newTree(c).handlers() }

// tree is one connection's view of its user's files:
//
//	/                 upload/ and arrivals/
//	/upload/NAME      the user's partial (incomplete) SFTP uploads, with
//	                  their durable size: written here, removable
//	/arrivals/NAME    the user's Arrivals: listed, never read
//	/shares/S/PATH    the files of the shares the user is in: listed,
//	                  never read or changed (shares.go)
//
// Every operation first checks the login's session and asks policy; a
// refusal is answered with SSH_FX_PERMISSION_DENIED and changes nothing.
// Errors sent to the client never carry err.Error() of an internal error.
type tree struct {
	c           *conn
	log         *zap.Logger
	window      int64
	reorderWait time.Duration
	earlyWait   time.Duration
	authEvery   time.Duration
	mounted     time.Time // the directories' time

	mu   sync.Mutex
	open map[string]*writer // names open for writing on this connection (nil: being opened)
	done map[string]int64   // names this connection completed and their sizes, for stat and setstat after close
}

func newTree(c *conn) *tree {
	log := c.log
	if log == nil {
		log = zap.NewNop()
	}
	window := c.cfg.Window
	if window <= 0 {
		window = defaultWindow
	}
	return &tree{
		c: c, log: log,
		window:      window,
		reorderWait: defaultReorderWait,
		earlyWait:   defaultEarlyWait,
		authEvery:   defaultAuthEvery,
		mounted:     time.Now(),
		open:        make(map[string]*writer),
		done:        make(map[string]int64),
	}
}

func (t *tree) handlers() sftp.Handlers {
	return sftp.Handlers{FileGet: t, FilePut: t, FileCmd: t, FileList: t}
}

// Compile-time guards: the optional pkg/sftp interfaces the tree relies on.
var (
	_ sftp.NameLookupFileLister = (*tree)(nil)
	_ sftp.TransferError        = (*writer)(nil)
	_ io.WriterAt               = (*writer)(nil)
	_ io.Closer                 = (*writer)(nil)
)

// kind is what a path names in the tree.
type kind int

const (
	kindRoot        kind = iota + 1
	kindUploadDir        // /upload
	kindArrivalsDir      // /arrivals
	kindPartial          // /upload/NAME
	kindArrival          // /arrivals/NAME
	kindSharesDir        // /shares
	kindShare            // /shares/S
	kindShareItem        // /shares/S/PATH: a file or a folder of share S
)

// node is a resolved path. name is set for kindPartial and kindArrival, and
// is a name storage.CleanName returns unchanged. share is set for kindShare
// and kindShareItem, a name policy.CheckShareName accepts; name is then the
// path inside the share, which storage.CleanSharePath returns unchanged.
type node struct {
	kind  kind
	share string
	name  string
}

// isShares reports whether n is under /shares.
func (n node) isShares() bool {
	return n.kind == kindSharesDir || n.kind == kindShare || n.kind == kindShareItem
}

// resolve maps a request path onto the tree. pkg/sftp hands over absolute,
// cleaned paths ("/upload/../x" arrives as "/x"); anything else, anything
// outside the tree, and a file name the path gate would change or refuse
// is not in the tree (ok false).
func resolve(p string) (node, bool) {
	if p == "" || p[0] != '/' || path.Clean(p) != p {
		return node{}, false
	}
	if p == "/" {
		return node{kind: kindRoot}, true
	}
	dir, name, hasName := strings.Cut(p[1:], "/")
	if !hasName {
		switch dir {
		case dirUpload:
			return node{kind: kindUploadDir}, true
		case dirArrivals:
			return node{kind: kindArrivalsDir}, true
		case dirShares:
			return node{kind: kindSharesDir}, true
		}
		return node{}, false
	}
	if dir == dirShares {
		return resolveShare(name)
	}
	if c, err := storage.CleanName(name); err != nil || c != name {
		return node{}, false
	}
	switch dir {
	case dirUpload:
		return node{kind: kindPartial, name: name}, true
	case dirArrivals:
		return node{kind: kindArrival, name: name}, true
	}
	return node{}, false
}

// statusError is an answer for the client: an SFTP status code and a
// message written for the user (never an internal error's text).
type statusError struct {
	code error // one of pkg/sftp's ErrSSHFx* codes
	msg  string
}

func (e *statusError) Error() string { return e.msg }
func (e *statusError) Unwrap() error { return e.code }

// failure is an SSH_FX_FAILURE with a message for the user.
func failure(format string, args ...any) error {
	return &statusError{code: sftp.ErrSSHFxFailure, msg: fmt.Sprintf(format, args...)}
}

var (
	errDenied = sftp.ErrSSHFxPermissionDenied
	errBusy   = failure("the file is open in another transfer")
)

// authorize checks the login's session: a session ended elsewhere (password
// change, disabled account, expiry) ends this connection's rights here.
func (t *tree) authorize(ctx context.Context, op, p string) (authn.Identity, error) {
	id, err := t.c.auth.Authenticate(ctx, t.c.token)
	if err == nil && id.User != t.c.user {
		err = errors.New("session belongs to another user")
	}
	if err != nil {
		t.log.Info("refused: session no longer valid", zap.String("op", op), logPath(p), zap.Error(err))
		return authn.Identity{}, errDenied
	}
	return id, nil
}

// decide asks policy about one operation on the user's own files.
func (t *tree) decide(id authn.Identity, action policy.Action, size int64) error {
	d := policy.Decide(t.c.limits(), policy.Request{
		Actor: id.User, Action: action, Owner: t.c.user, Size: size, Emergency: id.Emergency,
	})
	if !d.Allow {
		return fmt.Errorf("policy: %s", d.Reason)
	}
	return nil
}

// logPath is how a client's path appears in logs. File names can identify
// people in a safe haven, so every component but the tree's own directory
// names becomes a short digest, as storage.RedactKey does for keys; the
// upload_id, logged where known, leads to the name for those who may see it.
func logPath(p string) zap.Field {
	parts := strings.Split(p, "/")
	for i, s := range parts {
		if s == "" || (i == 1 && (s == dirUpload || s == dirArrivals || s == dirShares)) {
			continue
		}
		sum := sha256.Sum256([]byte(s))
		parts[i] = "~" + hex.EncodeToString(sum[:4])
	}
	return zap.String("path", strings.Join(parts, "/"))
}

// refuse logs and audits a refusal and returns the permission-denied
// answer. The audit record names the path as the log does (file names
// digested: they can identify people).
func (t *tree) refuse(op, p, why string) error {
	lp := logPath(p)
	t.log.Info("refused", zap.String("op", op), lp, zap.String("reason", why))
	if err := t.c.ing.Audit(context.Background(), t.c.user, "sftp."+op, lp.String, "refused: "+why, t.c.remote); err != nil {
		t.log.Error("audit a refusal", zap.Error(err))
	}
	return errDenied
}

// internal logs an internal error and returns a failure that says nothing
// about it.
func (t *tree) internal(op, p string, err error) error {
	t.log.Error("operation failed", zap.String("op", op), logPath(p), zap.Error(err))
	return failure("internal error")
}

// Fileread refuses every read: this is an ingress door; what leaves the
// haven goes through egress.
func (t *tree) Fileread(r *sftp.Request) (io.ReaderAt, error) {
	if _, err := t.authorize(r.Context(), "read", r.Filepath); err != nil {
		return nil, err
	}
	return nil, t.refuse("read", r.Filepath, "reading is not allowed")
}

// Filecmd serves setstat and remove on the user's partials and refuses
// every other command.
func (t *tree) Filecmd(r *sftp.Request) error {
	op := strings.ToLower(r.Method)
	p := r.Filepath
	if r.Method == "Symlink" {
		p = r.Target // pkg/sftp puts the link's own path in Target
	}
	id, err := t.authorize(r.Context(), op, p)
	if err != nil {
		return err
	}
	switch r.Method {
	case "Setstat":
		return t.setstat(r, id)
	case "Remove":
		return t.remove(r, id)
	case "Rename", "PosixRename", "Mkdir", "Rmdir", "Symlink", "Link":
		return t.refuse(op, p, "not allowed")
	}
	t.log.Info("refused", zap.String("op", op), logPath(p), zap.String("reason", "unsupported"))
	return sftp.ErrSSHFxOpUnsupported
}

// setstat accepts attribute changes on the user's own partials as no-ops:
// nothing is stored, the file's size stays its durable size. OpenSSH sends
// them only with put -p (mode and times) and, when a resumed transfer was
// interrupted or failed, to truncate the file at the bytes it saw
// acknowledged; other clients (WinSCP, lftp, rclone) set times after close,
// which is also accepted for a name this connection just completed. A size
// on a file open on this connection means the client gave up on it: the
// close that follows keeps the partial resumable instead of completing it.
func (t *tree) setstat(r *sftp.Request, id authn.Identity) error {
	n, ok := resolve(r.Filepath)
	if !ok || n.kind != kindPartial {
		return t.refuse("setstat", r.Filepath, "not a partial upload")
	}
	if err := t.decide(id, policy.ActionUploadWrite, 0); err != nil {
		return t.refuse("setstat", r.Filepath, err.Error())
	}
	flags := r.AttrFlags()
	if flags.UidGid {
		return t.refuse("setstat", r.Filepath, "owner change")
	}
	t.mu.Lock()
	w := t.open[n.name]
	_, done := t.done[n.name]
	t.mu.Unlock()
	if w != nil {
		if flags.Size {
			w.giveUp(int64(r.Attributes().Size), flags.Acmodtime)
		}
		return nil
	}
	ups, err := t.partials(r.Context(), n.name)
	if err != nil {
		return t.internal("setstat", r.Filepath, err)
	}
	switch {
	case len(ups) == 0 && done && !flags.Size:
		return nil
	case len(ups) == 0:
		return t.refuse("setstat", r.Filepath, "not a partial upload")
	case flags.Size && int64(r.Attributes().Size) != ups[0].Offset:
		return t.refuse("setstat", r.Filepath, "size change")
	}
	return nil
}

// remove terminates the user's partial upload(s) of that name.
func (t *tree) remove(r *sftp.Request, id authn.Identity) error {
	ctx := r.Context()
	n, ok := resolve(r.Filepath)
	if !ok || n.kind != kindPartial {
		return t.refuse("remove", r.Filepath, "not a partial upload")
	}
	if err := t.decide(id, policy.ActionUploadDelete, 0); err != nil {
		return t.refuse("remove", r.Filepath, err.Error())
	}
	ups, err := t.partials(ctx, n.name)
	if err != nil {
		return t.internal("remove", r.Filepath, err)
	}
	if len(ups) == 0 {
		return os.ErrNotExist
	}
	if err := t.terminate(ctx, ups); err != nil {
		if errors.Is(err, errBusy) {
			return errBusy
		}
		return t.internal("remove", r.Filepath, err)
	}
	t.log.Info("partial upload removed", zap.String("op", "remove"), logPath(r.Filepath), zap.String("upload_id", ups[0].ID))
	return nil
}

// terminate takes every upload's lock, then terminates them all; if one is
// busy none is touched (errBusy).
func (t *tree) terminate(ctx context.Context, ups []state.Upload) error {
	var unlocks []func()
	defer func() {
		for _, u := range unlocks {
			u()
		}
	}()
	for _, u := range ups {
		unlock, ok := t.c.ing.TryLock(u.ID)
		if !ok {
			return errBusy
		}
		unlocks = append(unlocks, unlock)
	}
	for _, u := range ups {
		if err := t.c.ing.Terminate(ctx, u.ID, t.c.user, t.c.remote); err != nil {
			return fmt.Errorf("terminate %s: %w", u.ID, err)
		}
	}
	return nil
}

// partials returns the user's partial uploads called name, newest first.
func (t *tree) partials(ctx context.Context, name string) ([]state.Upload, error) {
	all, err := t.c.ing.Partials(ctx, t.c.user)
	if err != nil {
		return nil, err
	}
	var ups []state.Upload
	for _, u := range all {
		if u.Owner == t.c.user && u.Filename == name {
			ups = append(ups, u)
		}
	}
	slices.SortStableFunc(ups, func(a, b state.Upload) int { return b.UpdatedAt.Compare(a.UpdatedAt) })
	return ups, nil
}

// Filelist serves directory listings and stat of the tree.
func (t *tree) Filelist(r *sftp.Request) (sftp.ListerAt, error) {
	op := strings.ToLower(r.Method)
	id, err := t.authorize(r.Context(), op, r.Filepath)
	if err != nil {
		return nil, err
	}
	n, ok := resolve(r.Filepath)
	if !ok || (n.isShares() && t.c.cfg.Shares == nil) {
		return nil, t.refuse(op, r.Filepath, "outside the tree")
	}
	switch r.Method {
	case "List":
		return t.list(r.Context(), id, n, r.Filepath)
	case "Stat", "Lstat":
		fi, err := t.stat(r.Context(), id, n, r.Filepath)
		if err != nil {
			return nil, err
		}
		return listerAt{fi}, nil
	case "Readlink":
		return nil, failure("not a symbolic link")
	}
	return nil, sftp.ErrSSHFxOpUnsupported
}

func (t *tree) list(ctx context.Context, id authn.Identity, n node, p string) (sftp.ListerAt, error) {
	switch n.kind {
	case kindRoot:
		l := listerAt{t.dirInfo(dirUpload, 0o755), t.dirInfo(dirArrivals, 0o555)}
		if t.c.cfg.Shares != nil {
			l = append(l, t.dirInfo(dirShares, 0o555))
		}
		return l, nil
	case kindSharesDir, kindShare, kindShareItem:
		return t.listShares(ctx, id, n, p)
	case kindUploadDir:
		if err := t.decide(id, policy.ActionUploadRead, 0); err != nil {
			return nil, t.refuse("list", p, err.Error())
		}
		all, err := t.c.ing.Partials(ctx, t.c.user)
		if err != nil {
			return nil, t.internal("list", p, err)
		}
		// Newest first, so that of two partials with one name (two
		// clients that created it at once) the newest is the one shown.
		slices.SortStableFunc(all, func(a, b state.Upload) int { return b.UpdatedAt.Compare(a.UpdatedAt) })
		seen := make(map[string]bool, len(all))
		var l listerAt
		for _, u := range all {
			if u.Owner != t.c.user || seen[u.Filename] {
				continue
			}
			seen[u.Filename] = true
			l = append(l, partialInfo(u))
		}
		return l, nil
	case kindArrivalsDir:
		if err := t.decide(id, policy.ActionArrivalsList, 0); err != nil {
			return nil, t.refuse("list", p, err.Error())
		}
		files, err := t.c.ing.Arrivals(ctx, t.c.user)
		if err != nil {
			return nil, t.internal("list", p, err)
		}
		l := make(listerAt, 0, len(files))
		for _, f := range files {
			l = append(l, arrivalInfo(f))
		}
		return l, nil
	}
	return nil, failure("not a directory")
}

func (t *tree) stat(ctx context.Context, id authn.Identity, n node, p string) (os.FileInfo, error) {
	switch n.kind {
	case kindRoot:
		return t.dirInfo("/", 0o555), nil
	case kindUploadDir:
		return t.dirInfo(dirUpload, 0o755), nil
	case kindArrivalsDir:
		return t.dirInfo(dirArrivals, 0o555), nil
	case kindSharesDir, kindShare, kindShareItem:
		return t.statShares(ctx, id, n, p)
	case kindPartial:
		if err := t.decide(id, policy.ActionUploadRead, 0); err != nil {
			return nil, t.refuse("stat", p, err.Error())
		}
		ups, err := t.partials(ctx, n.name)
		if err != nil {
			return nil, t.internal("stat", p, err)
		}
		if len(ups) == 0 {
			// A file this connection just completed is being checked:
			// clients that stat it after close (rclone, to set its time)
			// see it with the size they wrote.
			t.mu.Lock()
			size, done := t.done[n.name]
			t.mu.Unlock()
			if done {
				return &fileInfo{name: n.name, size: size, mode: 0o644, mtime: time.Now()}, nil
			}
			return nil, os.ErrNotExist
		}
		return partialInfo(ups[0]), nil
	case kindArrival:
		if err := t.decide(id, policy.ActionArrivalsList, 0); err != nil {
			return nil, t.refuse("stat", p, err.Error())
		}
		files, err := t.c.ing.Arrivals(ctx, t.c.user)
		if err != nil {
			return nil, t.internal("stat", p, err)
		}
		for _, f := range files {
			if f.Name == n.name {
				return arrivalInfo(f), nil
			}
		}
		return nil, os.ErrNotExist
	}
	return nil, os.ErrNotExist
}

// LookupUserName and LookupGroupName name the owner in `ls -l` listings.
func (t *tree) LookupUserName(string) string  { return t.c.user }
func (t *tree) LookupGroupName(string) string { return t.c.user }

// Filewrite opens /upload/NAME for writing. Without the truncate flag an
// existing partial of that name is resumed: writes continue at its durable
// offset (what stat reports). Otherwise any partial of that name is
// terminated and a new upload of unknown length is created. The upload's
// lock is held until the handle closes.
func (t *tree) Filewrite(r *sftp.Request) (io.WriterAt, error) {
	ctx := r.Context()
	p := r.Filepath
	id, err := t.authorize(ctx, "open", p)
	if err != nil {
		return nil, err
	}
	n, ok := resolve(p)
	if !ok || n.kind != kindPartial {
		return nil, t.refuse("open", p, "not writable")
	}
	if !t.reserve(n.name) {
		return nil, errBusy
	}
	w, err := t.openWriter(ctx, id, n.name, p, r.Pflags())
	t.mu.Lock()
	if err != nil {
		delete(t.open, n.name)
	} else {
		t.open[n.name] = w
		delete(t.done, n.name)
	}
	t.mu.Unlock()
	return w, err
}

// reserve marks name as being opened on this connection, or reports false
// if it already is open here.
func (t *tree) reserve(name string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, busy := t.open[name]; busy {
		return false
	}
	t.open[name] = nil
	return true
}

func (t *tree) openWriter(ctx context.Context, id authn.Identity, name, p string, flags sftp.FileOpenFlags) (*writer, error) {
	ups, err := t.partials(ctx, name)
	if err != nil {
		return nil, t.internal("open", p, err)
	}
	if len(ups) > 0 && flags.Excl {
		return nil, failure("the file exists")
	}
	if len(ups) > 0 && !flags.Trunc {
		u := ups[0]
		if err := t.decide(id, policy.ActionUploadWrite, 0); err != nil {
			return nil, t.refuse("open", p, err.Error())
		}
		unlock, ok := t.c.ing.TryLock(u.ID)
		if !ok {
			return nil, errBusy
		}
		t.log.Info("resuming upload", zap.String("op", "open"), logPath(p),
			zap.String("upload_id", u.ID), zap.Int64("offset", u.Offset))
		return t.startWriter(ctx, u, unlock), nil
	}
	if len(ups) == 0 && !flags.Creat {
		return nil, os.ErrNotExist
	}
	if err := t.decide(id, policy.ActionUploadCreate, -1); err != nil {
		return nil, t.refuse("open", p, err.Error())
	}
	if err := t.terminate(ctx, ups); err != nil {
		if errors.Is(err, errBusy) {
			return nil, errBusy
		}
		return nil, t.internal("open", p, err)
	}
	u, err := t.c.ing.Create(ctx, ingest.CreateRequest{
		Owner: t.c.user, Filename: name, Length: -1, RemoteAddr: t.c.remote, Proto: "sftp",
	})
	if err != nil {
		if errors.Is(err, ingest.ErrTooLarge) {
			return nil, failure("the file is larger than the maximum file size")
		}
		if answer, ok := quotaFailure(err); ok {
			return nil, answer // refused and audited by ingest
		}
		return nil, t.internal("open", p, err)
	}
	unlock, ok := t.c.ing.TryLock(u.ID)
	if !ok {
		return nil, errBusy
	}
	t.log.Info("upload started", zap.String("op", "open"), logPath(p), zap.String("upload_id", u.ID))
	return t.startWriter(ctx, u, unlock), nil
}

// closed forgets an open writer; completed names are remembered a while.
func (t *tree) closed(w *writer, completed bool, size int64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.open[w.name] == w {
		delete(t.open, w.name)
	}
	if completed {
		if len(t.done) >= maxDone {
			clear(t.done)
		}
		t.done[w.name] = size
	}
}

// fileInfo is an os.FileInfo of the virtual tree.
type fileInfo struct {
	name  string
	size  int64
	mode  os.FileMode
	mtime time.Time
}

func (f *fileInfo) Name() string       { return f.name }
func (f *fileInfo) Size() int64        { return f.size }
func (f *fileInfo) Mode() os.FileMode  { return f.mode }
func (f *fileInfo) ModTime() time.Time { return f.mtime }
func (f *fileInfo) IsDir() bool        { return f.mode.IsDir() }
func (f *fileInfo) Sys() any           { return nil }

func (t *tree) dirInfo(name string, perm os.FileMode) os.FileInfo {
	return &fileInfo{name: name, mode: os.ModeDir | perm, mtime: t.mounted}
}

// partialInfo shows a partial upload with its durable size.
func partialInfo(u state.Upload) os.FileInfo {
	return &fileInfo{name: u.Filename, size: u.Offset, mode: 0o644, mtime: u.UpdatedAt}
}

func arrivalInfo(f state.File) os.FileInfo {
	return &fileInfo{name: f.Name, size: f.Size, mode: 0o444, mtime: f.CreatedAt}
}

// listerAt serves a fixed list of entries.
type listerAt []os.FileInfo

func (l listerAt) ListAt(ls []os.FileInfo, off int64) (int, error) {
	if off >= int64(len(l)) {
		return 0, io.EOF
	}
	n := copy(ls, l[off:])
	if n < len(ls) {
		return n, io.EOF
	}
	return n, nil
}
