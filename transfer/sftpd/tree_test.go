package sftpd

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pkg/sftp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
)

const (
	treeUser   = "alice"
	treeToken  = "session-token"
	treeRemote = "192.0.2.7:40000"
)

// memIngest is an in-memory Ingest. It records every call that changes
// state, so a test can assert that a refusal changed nothing.
type memIngest struct {
	mu       sync.Mutex
	ups      map[string]*memUpload
	ids      []string // creation order
	arrivals []state.File
	locks    map[string]bool
	calls    []string // "create NAME", "write ID", "finish ID", "terminate ID"
	audits   []string // Audit records: "actor action object result"
	seq      int

	failAt    int64 // > 0: Write fails with storage.ErrUnavailable once the file would pass this offset
	finishErr error
	readSize  int           // bytes per Body.Read; default 8 KiB
	readDelay time.Duration // pause before each Body.Read
	discard   bool          // count bytes without keeping them (benchmarks)
}

type memUpload struct {
	u    state.Upload
	data []byte
}

func newMemIngest() *memIngest {
	return &memIngest{ups: make(map[string]*memUpload), locks: make(map[string]bool)}
}

var _ Ingest = (*memIngest)(nil)

// addPartial records an incomplete upload whose first len(data) bytes are durable.
func (m *memIngest) addPartial(name string, data []byte, updated time.Time) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.seq++
	id := fmt.Sprintf("up%d", m.seq)
	m.ups[id] = &memUpload{
		u: state.Upload{
			ID: id, Owner: treeUser, Filename: name, Length: -1, Offset: int64(len(data)),
			Status: state.StatusUploading, CreatedAt: updated, UpdatedAt: updated,
		},
		data: slices.Clone(data),
	}
	m.ids = append(m.ids, id)
	return id
}

func (m *memIngest) addArrival(name string, size int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.arrivals = append(m.arrivals, state.File{
		Key: "arrivals/" + treeUser + "/" + name, Owner: treeUser, Name: name, Size: size,
		CreatedAt: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC),
	})
}

func (m *memIngest) Create(_ context.Context, req ingest.CreateRequest) (state.Upload, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "create "+req.Filename)
	if req.Length != -1 || req.Proto != "sftp" || req.Owner != treeUser || req.RemoteAddr != treeRemote {
		return state.Upload{}, fmt.Errorf("memIngest: unexpected create request %+v", req)
	}
	m.seq++
	id := fmt.Sprintf("up%d", m.seq)
	now := time.Now()
	u := state.Upload{
		ID: id, Owner: req.Owner, Filename: req.Filename, Length: -1,
		Status: state.StatusUploading, CreatedAt: now, UpdatedAt: now,
	}
	m.ups[id] = &memUpload{u: u}
	m.ids = append(m.ids, id)
	return u, nil
}

func (m *memIngest) Write(_ context.Context, req ingest.WriteRequest) (int64, error) {
	m.mu.Lock()
	m.calls = append(m.calls, "write "+req.ID)
	up := m.ups[req.ID]
	switch {
	case up == nil:
		m.mu.Unlock()
		return 0, state.ErrNotFound
	case !m.locks[req.ID]:
		m.mu.Unlock()
		return up.u.Offset, errors.New("memIngest: write without the lock")
	case up.u.Status != state.StatusUploading:
		m.mu.Unlock()
		return up.u.Offset, ingest.ErrNotWritable
	case req.Offset != up.u.Offset:
		m.mu.Unlock()
		return up.u.Offset, ingest.ErrOffsetMismatch
	case req.Length != -1 || req.Proto != "sftp" || req.Actor != treeUser:
		m.mu.Unlock()
		return up.u.Offset, fmt.Errorf("memIngest: unexpected write request %+v", req)
	}
	size, delay, failAt := m.readSize, m.readDelay, m.failAt
	m.mu.Unlock()
	if size <= 0 {
		size = 8 << 10
	}
	buf := make([]byte, size)
	for {
		if delay > 0 {
			time.Sleep(delay)
		}
		n, err := req.Body.Read(buf)
		m.mu.Lock()
		if failAt > 0 && up.u.Offset+int64(n) > failAt {
			keep := failAt - up.u.Offset
			up.data = append(up.data, buf[:keep]...)
			up.u.Offset = failAt
			m.mu.Unlock()
			return failAt, fmt.Errorf("memIngest: disk: %w", storage.ErrUnavailable)
		}
		if !m.discard {
			up.data = append(up.data, buf[:n]...)
		}
		up.u.Offset += int64(n)
		up.u.UpdatedAt = time.Now()
		off := up.u.Offset
		m.mu.Unlock()
		switch {
		case errors.Is(err, io.EOF):
			return off, nil
		case err != nil:
			return off, &ingest.ClientError{Err: err}
		}
	}
}

func (m *memIngest) Finish(_ context.Context, id, actor, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "finish "+id)
	up := m.ups[id]
	switch {
	case up == nil:
		return state.ErrNotFound
	case !m.locks[id]:
		return errors.New("memIngest: finish without the lock")
	case actor != treeUser:
		return errors.New("memIngest: finish by another actor")
	case up.u.Status != state.StatusUploading:
		return ingest.ErrNotWritable
	case m.finishErr != nil:
		return m.finishErr
	}
	up.u.Length = up.u.Offset
	up.u.Status = state.StatusProcessing
	m.arrivals = append(m.arrivals, state.File{
		Key: "arrivals/" + up.u.Owner + "/" + up.u.Filename, Owner: up.u.Owner, Name: up.u.Filename,
		Size: up.u.Offset, CreatedAt: time.Now(), UploadID: id,
	})
	return nil
}

func (m *memIngest) Terminate(_ context.Context, id, actor, _ string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.calls = append(m.calls, "terminate "+id)
	up := m.ups[id]
	switch {
	case up == nil:
		return state.ErrNotFound
	case !m.locks[id]:
		return errors.New("memIngest: terminate without the lock")
	case actor != treeUser:
		return errors.New("memIngest: terminate by another actor")
	case up.u.Status != state.StatusUploading:
		return ingest.ErrNotWritable
	}
	up.u.Status = state.StatusTerminated
	up.data = nil
	return nil
}

// Audit records the audit record apart from the calls that change state.
func (m *memIngest) Audit(_ context.Context, actor, action, object, result, remote string) error {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.audits = append(m.audits, actor+" "+action+" "+object+" "+result)
	return nil
}

func (m *memIngest) auditLog() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.audits)
}

func (m *memIngest) Partials(_ context.Context, owner string) ([]state.Upload, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []state.Upload
	for _, id := range m.ids {
		if u := m.ups[id].u; u.Owner == owner && u.Status == state.StatusUploading {
			out = append(out, u)
		}
	}
	return out, nil
}

func (m *memIngest) Arrivals(_ context.Context, owner string) ([]state.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []state.File
	for _, f := range m.arrivals {
		if f.Owner == owner {
			out = append(out, f)
		}
	}
	return out, nil
}

func (m *memIngest) TryLock(id string) (func(), bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.locks[id] {
		return nil, false
	}
	m.locks[id] = true
	var once sync.Once
	return func() {
		once.Do(func() {
			m.mu.Lock()
			delete(m.locks, id)
			m.mu.Unlock()
		})
	}, true
}

// memState is everything a refusal must leave as it was.
type memState struct {
	Calls    []string
	Uploads  []string
	Arrivals []string
}

func (m *memIngest) snapshot() memState {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := memState{Calls: slices.Clone(m.calls)}
	for _, id := range m.ids {
		up := m.ups[id]
		s.Uploads = append(s.Uploads, fmt.Sprintf("%s %s %s off=%d len=%d data=%x", id, up.u.Filename, up.u.Status, up.u.Offset, up.u.Length, up.data))
	}
	for _, f := range m.arrivals {
		s.Arrivals = append(s.Arrivals, fmt.Sprintf("%s %d", f.Name, f.Size))
	}
	return s
}

func (m *memIngest) callsOf(verb string) []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []string
	for _, c := range m.calls {
		if v, id, _ := strings.Cut(c, " "); v == verb {
			out = append(out, id)
		}
	}
	return out
}

func (m *memIngest) upload(id string) (state.Upload, []byte) {
	m.mu.Lock()
	defer m.mu.Unlock()
	up := m.ups[id]
	return up.u, slices.Clone(up.data)
}

func (m *memIngest) locked(id string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.locks[id]
}

// partialNamed returns the id of the uploading partial called name, or "".
func (m *memIngest) partialNamed(name string) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, id := range m.ids {
		if u := m.ups[id].u; u.Filename == name && u.Status == state.StatusUploading {
			return id
		}
	}
	return ""
}

// sessionAuth is an Auth whose one session can be ended.
type sessionAuth struct {
	ended     atomic.Bool
	emergency atomic.Bool // the session was opened with an emergency code
	checks    atomic.Int64
}

func (a *sessionAuth) LoginPassword(context.Context, string, string, string, string) (authn.Session, error) {
	return authn.Session{}, errors.New("unused")
}

func (a *sessionAuth) KeyRegistered(context.Context, string, []byte) (bool, error) {
	return false, errors.New("unused")
}

func (a *sessionAuth) LoginKey(context.Context, string, []byte, string, string) (authn.Session, error) {
	return authn.Session{}, errors.New("unused")
}

func (a *sessionAuth) Authenticate(_ context.Context, token string) (authn.Identity, error) {
	a.checks.Add(1)
	if a.ended.Load() || token != treeToken {
		return authn.Identity{}, authn.ErrBadCredentials
	}
	return authn.Identity{User: treeUser, SessionID: "s1", Emergency: a.emergency.Load()}, nil
}

// sftpPipe is pkg/sftp's real RequestServer serving a tree over an
// in-memory connection, and a pkg/sftp client on the other end.
type sftpPipe struct {
	ing    *memIngest
	auth   *sessionAuth
	tree   *tree
	client *sftp.Client
	raw    net.Conn // the client's end of the connection
	served chan error
}

func newPipe(t *testing.T, ing *memIngest, cfg Config, tweak func(*tree), opts ...sftp.ClientOption) *sftpPipe {
	t.Helper()
	auth := &sessionAuth{}
	c := &conn{
		token: treeToken, user: treeUser, remote: treeRemote,
		auth: auth, ing: ing, cfg: cfg, log: zaptest.NewLogger(t),
	}
	tr := newTree(c)
	if tweak != nil {
		tweak(tr)
	}
	cli, srv := net.Pipe()
	rs := sftp.NewRequestServer(srv, tr.handlers(), requestServerOptions()...)
	p := &sftpPipe{ing: ing, auth: auth, tree: tr, raw: cli, served: make(chan error, 1)}
	go func() { p.served <- rs.Serve() }()
	client, err := sftp.NewClientPipe(cli, cli, opts...)
	if err != nil {
		t.Fatal(err)
	}
	p.client = client
	t.Cleanup(func() {
		_ = client.Close()
		_ = cli.Close()
		p.wait(t)
	})
	return p
}

// wait waits for the server to end (once the connection is gone).
func (p *sftpPipe) wait(t *testing.T) {
	t.Helper()
	select {
	case <-p.served:
		p.served <- nil // later waits return at once
	case <-time.After(10 * time.Second):
		t.Fatal("the request server did not end")
	}
}

// drop cuts the connection without closing any file, as a dropped TCP
// connection or a killed client does, and waits for the server to end.
func (p *sftpPipe) drop(t *testing.T) {
	t.Helper()
	_ = p.raw.Close()
	p.wait(t)
}

func randomBytes(t testing.TB, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func testConfig() Config {
	return Config{Settings: liveMax(1 << 30), Window: 1 << 20}
}

func TestResolve(t *testing.T) {
	tests := []struct {
		path string
		want node
		ok   bool
	}{
		{"/", node{kind: kindRoot}, true},
		{"/upload", node{kind: kindUploadDir}, true},
		{"/arrivals", node{kind: kindArrivalsDir}, true},
		{"/upload/data.csv", node{kind: kindPartial, name: "data.csv"}, true},
		{"/arrivals/results.tar", node{kind: kindArrival, name: "results.tar"}, true},
		{"/upload/Résumé.pdf", node{kind: kindPartial, name: "Résumé.pdf"}, true},
		{"/upload/", node{}, false},    // not clean
		{"/upload/./a", node{}, false}, // not clean
		{"/upload/../etc/passwd", node{}, false},
		{"/upload/..", node{}, false},
		{"upload/a", node{}, false}, // relative
		{"", node{}, false},
		{"/etc/passwd", node{}, false},
		{"/etc", node{}, false},
		{"/Upload/a", node{}, false},
		{"/upload/a/b", node{}, false},
		{"/arrivals/a/b", node{}, false},
		{"/upload/a\\b", node{}, false},
		{"/upload/CON", node{}, false},
		{"/upload/aux.txt", node{}, false},
		{"/upload/a:b", node{}, false},
		{"/upload/trailing.", node{}, false},
		{"/upload/trailing ", node{}, false},
		{"/upload/nul\x00byte", node{}, false},
		{"/upload/line\nbreak", node{}, false},
		{"/upload/bidi\u202egpj.exe", node{}, false},
		{"/upload/Re\u0301sume\u0301.pdf", node{}, false}, // NFD: the gate would change it
		{"/upload/" + strings.Repeat("a", storage.MaxNameBytes+1), node{}, false},
		{"/upload/\xff", node{}, false},
		{"/shares", node{kind: kindSharesDir}, true},
		{"/shares/cohort", node{kind: kindShare, share: "cohort"}, true},
		{"/shares/cohort/a.csv", node{kind: kindShareItem, share: "cohort", name: "a.csv"}, true},
		{"/shares/cohort/2024/q1/a.csv", node{kind: kindShareItem, share: "cohort", name: "2024/q1/a.csv"}, true},
		{"/shares/", node{}, false},
		{"/shares/cohort/", node{}, false},
		{"/shares/cohort//a", node{}, false},
		{"/shares/cohort/../a", node{}, false},
		{"/shares/CON", node{}, false},
		{"/shares/cohort/dir/CON", node{}, false},
		{"/shares/cohort/a\\b", node{}, false},
		{"/shares/cohort/Re\u0301sume\u0301", node{}, false},
		{"/shares/co\x00hort/a", node{}, false},
		{"/Shares/cohort", node{}, false},
		{"/shares/Cohort", node{}, false},
		{"/shares/-cohort", node{}, false},
		{"/shares/cohort/" + strings.Repeat("d/", storage.MaxShareDepth-1) + "f", node{kind: kindShareItem, share: "cohort", name: strings.Repeat("d/", storage.MaxShareDepth-1) + "f"}, true},
		{"/shares/cohort/" + strings.Repeat("d/", storage.MaxShareDepth) + "f", node{}, false},
	}
	for _, tt := range tests {
		got, ok := resolve(tt.path)
		if ok != tt.ok || got != tt.want {
			t.Errorf("resolve(%q) = %+v, %v; want %+v, %v", tt.path, got, ok, tt.want, tt.ok)
		}
	}
}

// FuzzResolve: whatever a client sends as a path, resolve either refuses it
// or names a node whose path is exactly the input and whose file name the
// path gate accepts unchanged.
func FuzzResolve(f *testing.F) {
	for _, s := range []string{
		"/", "/upload", "/arrivals/x", "/upload/a.csv", "/upload/../x", "/upload/CON", "/upload/a/b", "/upload/e\u0301",
		"/shares", "/shares/cohort", "/shares/cohort/a.csv", "/shares/cohort/2024/q1/a.csv", "/shares/cohort//a",
		"/shares/cohort/../a", "/shares/CON/a", "/shares/cohort/dir/e\u0301", "/shares/cohort/",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		n, ok := resolve(p)
		if !ok {
			return
		}
		var back string
		switch n.kind {
		case kindRoot:
			back = "/"
		case kindUploadDir:
			back = "/upload"
		case kindArrivalsDir:
			back = "/arrivals"
		case kindPartial, kindArrival:
			if c, err := storage.CleanName(n.name); err != nil || c != n.name {
				t.Fatalf("resolve(%q) accepted name %q the gate refuses or changes (%v)", p, n.name, err)
			}
			if _, err := storage.Key(storage.PrefixArrivals, treeUser, n.name); err != nil {
				t.Fatalf("resolve(%q): name %q makes no key: %v", p, n.name, err)
			}
			back = path.Join("/", map[kind]string{kindPartial: dirUpload, kindArrival: dirArrivals}[n.kind], n.name)
		case kindSharesDir:
			back = "/shares"
		case kindShare, kindShareItem:
			if err := policy.CheckShareName(n.share); err != nil {
				t.Fatalf("resolve(%q) accepted share %q the name rule refuses: %v", p, n.share, err)
			}
			back = "/shares/" + n.share
			if n.kind == kindShareItem {
				if _, err := storage.ShareKey(n.share, n.name); err != nil {
					t.Fatalf("resolve(%q): share %q, path %q makes no key: %v", p, n.share, n.name, err)
				}
				back += "/" + n.name
			}
		default:
			t.Fatalf("resolve(%q) = unknown kind %d", p, n.kind)
		}
		if back != p {
			t.Fatalf("resolve(%q) = %+v, which is the path %q", p, n, back)
		}
	})
}

type entry struct {
	Name  string
	Size  int64
	Dir   bool
	Mtime int64
}

func entries(fis []os.FileInfo) []entry {
	var out []entry
	for _, fi := range fis {
		out = append(out, entry{fi.Name(), fi.Size(), fi.IsDir(), fi.ModTime().Unix()})
	}
	return out
}

func TestListAndStat(t *testing.T) {
	ing := newMemIngest()
	t1 := time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)
	t2 := t1.Add(time.Hour)
	ing.addPartial("b.bin", make([]byte, 1234), t1)
	ing.addPartial("a.csv", make([]byte, 10), t1)
	ing.addPartial("a.csv", make([]byte, 20), t2) // two clients created it at once: the newest is shown
	ing.addArrival("done.txt", 99)
	p := newPipe(t, ing, testConfig(), nil)
	before := ing.snapshot()

	root, err := p.client.ReadDir("/")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]entry{{"upload", 0, true, p.tree.mounted.Unix()}, {"arrivals", 0, true, p.tree.mounted.Unix()}}, entries(root)); diff != "" {
		t.Errorf("ls / (-want +got):\n%s", diff)
	}
	up, err := p.client.ReadDir("/upload")
	if err != nil {
		t.Fatal(err)
	}
	want := []entry{{"a.csv", 20, false, t2.Unix()}, {"b.bin", 1234, false, t1.Unix()}}
	if diff := cmp.Diff(want, entries(up)); diff != "" {
		t.Errorf("ls /upload (-want +got):\n%s", diff)
	}
	arr, err := p.client.ReadDir("/arrivals")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]entry{{"done.txt", 99, false, time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC).Unix()}}, entries(arr)); diff != "" {
		t.Errorf("ls /arrivals (-want +got):\n%s", diff)
	}

	for _, tt := range []struct {
		path string
		size int64
		dir  bool
	}{
		{"/", 0, true}, {"/upload", 0, true}, {"/arrivals", 0, true},
		{"/upload/b.bin", 1234, false}, {"/upload/a.csv", 20, false}, {"/arrivals/done.txt", 99, false},
	} {
		for name, stat := range map[string]func(string) (os.FileInfo, error){"stat": p.client.Stat, "lstat": p.client.Lstat} {
			fi, err := stat(tt.path)
			if err != nil {
				t.Errorf("%s %s: %v", name, tt.path, err)
				continue
			}
			if fi.Size() != tt.size || fi.IsDir() != tt.dir {
				t.Errorf("%s %s = size %d dir %v; want %d %v", name, tt.path, fi.Size(), fi.IsDir(), tt.size, tt.dir)
			}
		}
	}
	for _, missing := range []string{"/upload/none", "/arrivals/none"} {
		if _, err := p.client.Stat(missing); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s: %v; want not exist", missing, err)
		}
	}
	if rp, err := p.client.RealPath("/upload/../upload/./a.csv"); err != nil || rp != "/upload/a.csv" {
		t.Errorf("realpath = %q, %v", rp, err)
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("listing changed state (-before +after):\n%s", diff)
	}
}

// TestRefusals: every operation the tree does not allow is answered with
// permission denied and calls nothing on Ingest that changes state.
func TestRefusals(t *testing.T) {
	ing := newMemIngest()
	ing.addPartial("part.bin", []byte("0123456789"), time.Now())
	ing.addArrival("done.txt", 5)
	p := newPipe(t, ing, testConfig(), nil)
	c := p.client
	before := ing.snapshot()

	create := func(name string) error {
		f, err := c.Create(name)
		if err == nil {
			f.Close()
		}
		return err
	}
	openRead := func(name string) error {
		f, err := c.Open(name)
		if err == nil {
			f.Close()
		}
		return err
	}
	tests := []struct {
		name string
		op   func() error
	}{
		{"read an arrival", func() error { return openRead("/arrivals/done.txt") }},
		{"read a partial", func() error { return openRead("/upload/part.bin") }},
		{"read outside the tree", func() error { return openRead("/etc/passwd") }},
		{"write into arrivals", func() error { return create("/arrivals/new.txt") }},
		{"overwrite an arrival", func() error { return create("/arrivals/done.txt") }},
		{"write at the root", func() error { return create("/new.txt") }},
		{"write a directory", func() error { return create("/upload") }},
		{"write outside the tree", func() error { return create("/etc/passwd") }},
		{"write through ..", func() error { return create("/upload/../../etc/passwd") }},
		{"write relative through ..", func() error { return create("../x") }},
		{"write into a subdirectory", func() error { return create("/upload/sub/file") }},
		{"write a backslash name", func() error { return create(`/upload/a\b`) }},
		{"write a device name", func() error { return create("/upload/CON.txt") }},
		{"write a control character", func() error { return create("/upload/a\x01b") }},
		{"write a trailing dot", func() error { return create("/upload/file.") }},
		{"write an NFD name", func() error { return create("/upload/Re\u0301sume\u0301") }},
		{"mkdir in upload", func() error { return c.Mkdir("/upload/dir") }},
		{"mkdir at the root", func() error { return c.Mkdir("/dir") }},
		{"rmdir upload", func() error { return c.RemoveDirectory("/upload") }},
		{"rmdir arrivals", func() error { return c.RemoveDirectory("/arrivals") }},
		{"symlink", func() error { return c.Symlink("/upload/part.bin", "/upload/link") }},
		{"symlink out", func() error { return c.Symlink("/etc/passwd", "/upload/link") }},
		{"hardlink", func() error { return c.Link("/upload/part.bin", "/upload/link") }},
		{"rename in upload", func() error { return c.Rename("/upload/part.bin", "/upload/other.bin") }},
		{"rename into arrivals", func() error { return c.Rename("/upload/part.bin", "/arrivals/part.bin") }},
		{"rename an arrival", func() error { return c.Rename("/arrivals/done.txt", "/upload/done.txt") }},
		{"posix-rename", func() error { return c.PosixRename("/upload/part.bin", "/upload/other.bin") }},
		{"remove an arrival", func() error { return c.Remove("/arrivals/done.txt") }},
		{"remove upload", func() error { return c.Remove("/upload") }},
		{"remove outside the tree", func() error { return c.Remove("/etc/passwd") }},
		{"chmod an arrival", func() error { return c.Chmod("/arrivals/done.txt", 0o600) }},
		{"chtimes an arrival", func() error { return c.Chtimes("/arrivals/done.txt", time.Now(), time.Now()) }},
		{"chmod upload", func() error { return c.Chmod("/upload", 0o777) }},
		{"chmod the root", func() error { return c.Chmod("/", 0o777) }},
		{"chmod outside the tree", func() error { return c.Chmod("/etc/passwd", 0o777) }},
		{"chown a partial", func() error { return c.Chown("/upload/part.bin", 0, 0) }},
		{"truncate a partial", func() error { return c.Truncate("/upload/part.bin", 3) }},
		{"setstat a missing partial", func() error { return c.Chmod("/upload/none.bin", 0o600) }},
		{"stat outside the tree", func() error { _, err := c.Stat("/etc/passwd"); return err }},
		{"lstat outside the tree", func() error { _, err := c.Lstat("/home"); return err }},
		{"list outside the tree", func() error { _, err := c.ReadDir("/etc"); return err }},
		{"stat a bad name", func() error { _, err := c.Stat("/upload/CON"); return err }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// (pkg/sftp's Remove tries rmdir after remove: two requests.)
			wantRefused(t, ing, before, tt.op, "part.bin", "passwd")
		})
	}
	if _, err := c.ReadLink("/upload/part.bin"); err == nil {
		t.Error("readlink of a file succeeded")
	}
	if _, err := c.StatVFS("/"); err == nil {
		t.Error("statvfs succeeded")
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("state changed (-before +after):\n%s", diff)
	}
}

// TestSessionEnded: once the login's session ends (password change,
// disabled account), every operation is refused and changes nothing.
func TestSessionEnded(t *testing.T) {
	ing := newMemIngest()
	ing.addPartial("part.bin", []byte("0123456789"), time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	if _, err := p.client.Stat("/upload/part.bin"); err != nil {
		t.Fatal(err)
	}
	p.auth.ended.Store(true)
	before := ing.snapshot()
	c := p.client
	ops := map[string]func() error{
		"stat":   func() error { _, err := c.Stat("/upload/part.bin"); return err },
		"stat /": func() error { _, err := c.Stat("/"); return err },
		"list":   func() error { _, err := c.ReadDir("/upload"); return err },
		"create": func() error { _, err := c.Create("/upload/new.bin"); return err },
		"resume": func() error { _, err := c.OpenFile("/upload/part.bin", os.O_WRONLY|os.O_APPEND); return err },
		"remove": func() error { return c.Remove("/upload/part.bin") },
		"chmod":  func() error { return c.Chmod("/upload/part.bin", 0o600) },
		"read":   func() error { _, err := c.Open("/upload/part.bin"); return err },
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s after the session ended: %v; want permission denied", name, err)
		}
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("state changed (-before +after):\n%s", diff)
	}
}

func TestPutCompletes(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, testConfig(), nil)
	data := randomBytes(t, 300<<10+17)
	f, err := p.client.Create("/upload/data.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	id := ing.partialNamed("data.bin")
	if !ing.locked(id) {
		t.Error("the upload is not locked while its file is open")
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	u, got := ing.upload(id)
	if !bytes.Equal(got, data) {
		t.Fatalf("ingest received %d bytes, not the file's %d", len(got), len(data))
	}
	if u.Status != state.StatusProcessing || u.Length != int64(len(data)) {
		t.Errorf("upload after close = %s, length %d", u.Status, u.Length)
	}
	if diff := cmp.Diff([]string{id}, ing.callsOf("finish")); diff != "" {
		t.Errorf("finish calls (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]string{id}, ing.callsOf("write")); diff != "" {
		t.Errorf("one Ingest.Write per handle (-want +got):\n%s", diff)
	}
	if ing.locked(id) {
		t.Error("the lock outlived the handle")
	}
	// Gone from the listing; a stat on this connection still answers with
	// the size written (rclone stats the file after close to set its time).
	if fis, err := p.client.ReadDir("/upload"); err != nil || len(fis) != 0 {
		t.Errorf("the completed file is still listed as a partial: %v, %v", fis, err)
	}
	if fi, err := p.client.Stat("/upload/data.bin"); err != nil || fi.Size() != int64(len(data)) {
		t.Errorf("stat of the just-completed name on its connection: %v, %v; want its size", fi, err)
	}
	if fi, err := p.client.Stat("/arrivals/data.bin"); err != nil || fi.Size() != int64(len(data)) {
		t.Errorf("stat arrival: %v", err)
	}
	// put -p, and clients that set times after close (WinSCP, lftp,
	// rclone): accepted, changes nothing. A size change is not.
	before := ing.snapshot()
	if err := p.client.Chtimes("/upload/data.bin", time.Now(), time.Now()); err != nil {
		t.Errorf("chtimes after completion: %v", err)
	}
	if err := p.client.Truncate("/upload/data.bin", 1); !errors.Is(err, os.ErrPermission) {
		t.Errorf("truncate after completion: %v; want permission denied", err)
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("setstat changed state (-before +after):\n%s", diff)
	}
}

func TestEmptyFile(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, testConfig(), nil)
	f, err := p.client.Create("/upload/empty")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ing.callsOf("finish"); len(got) != 1 {
		t.Errorf("finish calls = %v", got)
	}
}

// TestConcurrentPut drives the real request server with pkg/sftp's
// concurrent writer: up to 64 writes in flight, served by several workers
// and handed to the writer in whatever order they finish.
func TestConcurrentPut(t *testing.T) {
	for _, size := range []int{0, 1, 32 << 10, 5<<20 + 4097} {
		t.Run(fmt.Sprint(size), func(t *testing.T) {
			ing := newMemIngest()
			ing.readDelay = 50 * time.Microsecond // a slow store makes the reorder window work
			p := newPipe(t, ing, Config{Settings: liveMax(1 << 30), Window: 512 << 10}, nil,
				sftp.UseConcurrentWrites(true), sftp.MaxConcurrentRequestsPerFile(64))
			data := randomBytes(t, size)
			f, err := p.client.Create("/upload/big.bin")
			if err != nil {
				t.Fatal(err)
			}
			if n, err := f.ReadFrom(bytes.NewReader(data)); err != nil || n != int64(size) {
				t.Fatalf("ReadFrom = %d, %v", n, err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
			id := ing.callsOf("finish")
			if len(id) != 1 {
				t.Fatalf("finish calls = %v", id)
			}
			if _, got := ing.upload(id[0]); !bytes.Equal(got, data) {
				t.Fatalf("ingest received %d bytes that are not the file", len(got))
			}
		})
	}
}

// TestConcurrentWriteAt sends the writes of a file from many goroutines in
// a shuffled order, so they reach the server out of order.
func TestConcurrentWriteAt(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, Config{Settings: liveMax(1 << 30), Window: 4 << 20}, nil)
	const block = 32 << 10
	data := randomBytes(t, 96*block)
	f, err := p.client.Create("/upload/shuffled.bin")
	if err != nil {
		t.Fatal(err)
	}
	offs := make(chan int)
	go func() {
		defer close(offs)
		// Shuffle within runs of 16 blocks (512 KiB), well inside the window.
		for base := 0; base < 96; base += 16 {
			perm := permutation(16, uint64(base)+1)
			for _, i := range perm {
				offs <- (base + i) * block
			}
		}
	}()
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for range 16 {
		wg.Go(func() {
			for off := range offs {
				if _, err := f.WriteAt(data[off:off+block], int64(off)); err != nil {
					errs <- err
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	ids := ing.callsOf("finish")
	if len(ids) != 1 {
		t.Fatalf("finish calls = %v", ids)
	}
	if _, got := ing.upload(ids[0]); !bytes.Equal(got, data) {
		t.Fatal("ingest did not receive the file")
	}
}

// TestResume: OpenSSH's reput stats the partial, opens it without truncate
// and writes from its durable size.
func TestResume(t *testing.T) {
	ing := newMemIngest()
	data := randomBytes(t, 200<<10)
	id := ing.addPartial("big.bin", data[:70000], time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	fi, err := p.client.Stat("/upload/big.bin")
	if err != nil || fi.Size() != 70000 {
		t.Fatalf("stat = %v, %v", fi, err)
	}
	f, err := p.client.OpenFile("/upload/big.bin", os.O_WRONLY|os.O_CREATE|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if !ing.locked(id) {
		t.Error("the resumed upload is not locked")
	}
	// A second open of the same partial, on this connection or another,
	// is refused while the first is open.
	if g, err := p.client.OpenFile("/upload/big.bin", os.O_WRONLY|os.O_APPEND); err == nil {
		g.Close()
		t.Error("second open on the same connection succeeded")
	}
	other := newPipe(t, ing, testConfig(), nil)
	if g, err := other.client.OpenFile("/upload/big.bin", os.O_WRONLY|os.O_APPEND); err == nil {
		g.Close()
		t.Error("second open on another connection succeeded")
	}
	if g, err := other.client.Create("/upload/big.bin"); err == nil {
		g.Close()
		t.Error("truncating open of a busy partial succeeded")
	}
	if err := other.client.Remove("/upload/big.bin"); err == nil {
		t.Error("removing a busy partial succeeded")
	}
	if got := ing.callsOf("terminate"); len(got) != 0 {
		t.Errorf("terminate calls = %v", got)
	}
	if _, err := f.WriteAt(data[70000:], 70000); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	u, got := ing.upload(id)
	if !bytes.Equal(got, data) || u.Status != state.StatusProcessing {
		t.Fatalf("after resume: %d bytes, status %s", len(got), u.Status)
	}
	if c := ing.callsOf("create"); len(c) != 0 {
		t.Errorf("resume created an upload: %v", c)
	}
}

func TestResumeBeforeOffsetRefused(t *testing.T) {
	ing := newMemIngest()
	data := randomBytes(t, 100<<10)
	id := ing.addPartial("big.bin", data[:50000], time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	f, err := p.client.OpenFile("/upload/big.bin", os.O_WRONLY|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[40000:60000], 40000); err == nil {
		t.Fatal("a write before the durable offset succeeded")
	}
	if _, err := f.WriteAt(data[50000:], 50000); err == nil {
		t.Fatal("a write after a refusal succeeded")
	}
	if err := f.Close(); err == nil {
		t.Error("close after a refused write succeeded")
	}
	if got := ing.callsOf("finish"); len(got) != 0 {
		t.Errorf("finish calls = %v", got)
	}
	if u, got := ing.upload(id); u.Status != state.StatusUploading || !bytes.Equal(got, data[:50000]) {
		t.Errorf("partial after refusal: %s, %d bytes", u.Status, len(got))
	}
	if ing.locked(id) {
		t.Error("lock held after close")
	}
}

// TestTruncateReplaces: put (open with truncate) over a partial starts over.
func TestTruncateReplaces(t *testing.T) {
	ing := newMemIngest()
	old := ing.addPartial("big.bin", []byte("old bytes"), time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	f, err := p.client.Create("/upload/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("new")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{old}, ing.callsOf("terminate")); diff != "" {
		t.Errorf("terminate calls (-want +got):\n%s", diff)
	}
	fin := ing.callsOf("finish")
	if len(fin) != 1 || fin[0] == old {
		t.Fatalf("finish calls = %v", fin)
	}
	if _, got := ing.upload(fin[0]); string(got) != "new" {
		t.Errorf("new upload has %q", got)
	}
}

func TestOpenFlags(t *testing.T) {
	ing := newMemIngest()
	ing.addPartial("part.bin", []byte("x"), time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	before := ing.snapshot()
	if _, err := p.client.OpenFile("/upload/none.bin", os.O_WRONLY); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("open without create of a missing file: %v", err)
	}
	if _, err := p.client.OpenFile("/upload/part.bin", os.O_WRONLY|os.O_CREATE|os.O_EXCL); err == nil {
		t.Error("exclusive create of an existing partial succeeded")
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("state changed (-before +after):\n%s", diff)
	}
}

func TestRemovePartial(t *testing.T) {
	ing := newMemIngest()
	id := ing.addPartial("part.bin", []byte("0123"), time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	if err := p.client.Remove("/upload/none.bin"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("remove of a missing partial: %v", err)
	}
	if err := p.client.Remove("/upload/part.bin"); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{id}, ing.callsOf("terminate")); diff != "" {
		t.Errorf("terminate calls (-want +got):\n%s", diff)
	}
	if _, err := p.client.Stat("/upload/part.bin"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("stat after remove: %v", err)
	}
	if ing.locked(id) {
		t.Error("lock held after remove")
	}
}

// TestSetstatPartial: put -p sends mode and times for the open file; they
// are accepted and change nothing, and the close completes the upload.
func TestSetstatPartial(t *testing.T) {
	ing := newMemIngest()
	ing.addPartial("idle.bin", []byte("0123"), time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	before := ing.snapshot()
	if err := p.client.Chmod("/upload/idle.bin", 0o600); err != nil {
		t.Errorf("chmod own partial: %v", err)
	}
	if err := p.client.Chtimes("/upload/idle.bin", time.Now(), time.Now()); err != nil {
		t.Errorf("chtimes own partial: %v", err)
	}
	if err := p.client.Truncate("/upload/idle.bin", 4); err != nil {
		t.Errorf("truncate own partial to its size: %v", err)
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("setstat changed state (-before +after):\n%s", diff)
	}

	f, err := p.client.Create("/upload/new.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("payload")); err != nil {
		t.Fatal(err)
	}
	if err := f.Chmod(0o640); err != nil {
		t.Errorf("fsetstat mode: %v", err)
	}
	if err := p.client.Chtimes("/upload/new.bin", time.Now(), time.Now()); err != nil {
		t.Errorf("setstat times of the open file: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if got := ing.callsOf("finish"); len(got) != 1 {
		t.Errorf("finish calls = %v", got)
	}
}

// TestTruncateOpenFileKeepsPartial: OpenSSH's reput, interrupted or
// failing, truncates the open file at the bytes it saw acknowledged before
// it closes: the close then keeps the partial instead of completing it.
func TestTruncateOpenFileKeepsPartial(t *testing.T) {
	ing := newMemIngest()
	data := randomBytes(t, 100<<10)
	id := ing.addPartial("big.bin", data[:10000], time.Now())
	p := newPipe(t, ing, testConfig(), nil)
	f, err := p.client.OpenFile("/upload/big.bin", os.O_WRONLY|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(data[10000:40000], 10000); err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(40000); err != nil {
		t.Errorf("fsetstat size: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close: %v", err)
	}
	if got := ing.callsOf("finish"); len(got) != 0 {
		t.Errorf("finish calls = %v", got)
	}
	u, got := ing.upload(id)
	if u.Status != state.StatusUploading || !bytes.Equal(got, data[:40000]) {
		t.Errorf("partial = %s with %d bytes; want uploading with 40000", u.Status, len(got))
	}
	if fi, err := p.client.Stat("/upload/big.bin"); err != nil || fi.Size() != 40000 {
		t.Errorf("stat = %v, %v", fi, err)
	}
}

// TestDroppedConnectionKeepsPartial: a connection that ends with the file
// open leaves a resumable partial with every byte received; nothing is
// completed, and the lock is released.
func TestDroppedConnectionKeepsPartial(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, testConfig(), nil)
	data := randomBytes(t, 1<<20)
	f, err := p.client.Create("/upload/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(data[:300000]); err != nil {
		t.Fatal(err)
	}
	id := ing.partialNamed("big.bin")
	p.drop(t)
	if got := ing.callsOf("finish"); len(got) != 0 {
		t.Fatalf("finish calls after a dropped connection = %v", got)
	}
	u, got := ing.upload(id)
	if u.Status != state.StatusUploading || !bytes.Equal(got, data[:300000]) {
		t.Fatalf("partial = %s with %d bytes; want uploading with 300000", u.Status, len(got))
	}
	if ing.locked(id) {
		t.Fatal("lock held after the connection dropped")
	}

	// reput on a new connection finishes it.
	q := newPipe(t, ing, testConfig(), nil)
	fi, err := q.client.Stat("/upload/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	g, err := q.client.OpenFile("/upload/big.bin", os.O_WRONLY|os.O_APPEND)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g.WriteAt(data[fi.Size():], fi.Size()); err != nil {
		t.Fatal(err)
	}
	if err := g.Close(); err != nil {
		t.Fatal(err)
	}
	if u, got := ing.upload(id); u.Status != state.StatusProcessing || !bytes.Equal(got, data) {
		t.Fatalf("after reput: %s with %d bytes", u.Status, len(got))
	}
}

func TestMaxFileSize(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, Config{Settings: liveMax(100 << 10), Window: 1 << 20}, nil)
	f, err := p.client.Create("/upload/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	_, err = f.Write(randomBytes(t, 100<<10+1))
	var se *sftp.StatusError
	if !errors.As(err, &se) || !strings.Contains(se.Error(), "maximum file size") {
		t.Fatalf("write past the limit: %v", err)
	}
	if err := f.Close(); err == nil {
		t.Error("close after an oversize write succeeded")
	}
	if got := ing.callsOf("finish"); len(got) != 0 {
		t.Errorf("finish calls = %v", got)
	}
}

// TestIngestFailure: a storage failure in the middle fails the writes that
// follow and the close; the bytes stored stay a resumable partial.
func TestIngestFailure(t *testing.T) {
	ing := newMemIngest()
	ing.failAt = 100000
	p := newPipe(t, ing, testConfig(), nil)
	f, err := p.client.Create("/upload/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	data := randomBytes(t, 1<<20)
	var werr error
	for off := 0; off < len(data) && werr == nil; off += 32 << 10 {
		_, werr = f.Write(data[off : off+32<<10])
	}
	if werr == nil {
		t.Fatal("every write succeeded")
	}
	if strings.Contains(werr.Error(), "memIngest") {
		t.Errorf("the client saw an internal error: %v", werr)
	}
	if err := f.Close(); err == nil {
		t.Error("close succeeded")
	}
	id := ing.partialNamed("big.bin")
	if u, got := ing.upload(id); u.Status != state.StatusUploading || !bytes.Equal(got, data[:100000]) {
		t.Errorf("partial = %s with %d bytes", u.Status, len(got))
	}
	if got := ing.callsOf("finish"); len(got) != 0 {
		t.Errorf("finish calls = %v", got)
	}
}

// TestSessionEndsMidUpload: a session that ends while a file is open fails
// its writes (at the next re-check) and its close, keeping the partial.
func TestSessionEndsMidUpload(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, testConfig(), func(t *tree) { t.authEvery = time.Nanosecond })
	f, err := p.client.Create("/upload/big.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("first")); err != nil {
		t.Fatal(err)
	}
	p.auth.ended.Store(true)
	time.Sleep(time.Millisecond)
	if _, err := f.Write([]byte("second")); !errors.Is(err, os.ErrPermission) {
		t.Errorf("write after the session ended: %v", err)
	}
	if err := f.Close(); !errors.Is(err, os.ErrPermission) {
		t.Errorf("close after the session ended: %v", err)
	}
	if got := ing.callsOf("finish"); len(got) != 0 {
		t.Errorf("finish calls = %v", got)
	}
	if _, got := ing.upload(ing.partialNamed("big.bin")); string(got) != "first" {
		t.Errorf("partial has %q", got)
	}
}

func TestFinishFailure(t *testing.T) {
	ing := newMemIngest()
	ing.finishErr = errors.New("memIngest: secret internal detail")
	p := newPipe(t, ing, testConfig(), nil)
	f, err := p.client.Create("/upload/a.bin")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	err = f.Close()
	if err == nil || strings.Contains(err.Error(), "secret") {
		t.Errorf("close = %v; want a failure that hides the internal error", err)
	}
}

// TestLogsCarryNoFileNames: file names can identify people; logs carry a
// digest of each name, never the name.
func TestLogsCarryNoFileNames(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	ing := newMemIngest()
	ing.addArrival("patient-smith.csv", 3)
	p := newPipe(t, ing, testConfig(), func(t *tree) { t.log = zap.New(core) })
	f, err := p.client.Create("/upload/patient-jones.csv")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write([]byte("abc")); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	_, _ = p.client.Open("/arrivals/patient-smith.csv")
	_ = p.client.Rename("/upload/patient-brown.csv", "/upload/patient-white.csv")
	_, _ = p.client.Create("/patient-green.csv")
	if logs.Len() == 0 {
		t.Fatal("nothing was logged")
	}
	for _, e := range logs.All() {
		line := fmt.Sprint(e.Message, e.ContextMap())
		if strings.Contains(line, "patient") {
			t.Errorf("a log line carries a file name: %s", line)
		}
	}
}

// wantRefused runs op and checks that it was refused with a permission
// error, changed nothing, and left at least one audit record naming the
// user, the operation and the refusal, but none of the names in secret.
func wantRefused(t *testing.T, ing *memIngest, before any, op func() error, secret ...string) {
	t.Helper()
	audits := len(ing.auditLog())
	if err := op(); !errors.Is(err, os.ErrPermission) {
		t.Errorf("got %v; want permission denied", err)
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("the refusal changed state (-before +after):\n%s", diff)
	}
	got := ing.auditLog()[audits:]
	if len(got) == 0 {
		t.Error("the refusal was not audited")
	}
	for _, a := range got {
		if !strings.HasPrefix(a, treeUser+" sftp.") || !strings.Contains(a, " refused: ") {
			t.Errorf("audit record %q; want the user, the operation and the refusal", a)
		}
		for _, name := range secret {
			if strings.Contains(a, name) {
				t.Errorf("audit record names a file: %q", a)
			}
		}
	}
}
