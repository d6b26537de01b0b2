package sftpd

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// memShares is an in-memory Shares: shares, their members and files. A
// test changes membership between two requests as an IAO would. Like
// transfer/shares, it keeps emergency-code sessions out (policy.ErrDenied),
// answers a share that does not exist or that the user is not in as not
// found, and records its refusals.
type memShares struct {
	mu      sync.Mutex
	members map[string]map[string]bool // share → user → member
	files   map[string][]FileEntry     // share → files
	err     error                      // non-nil: every call fails with it
	refused []string                   // "user action share remote"
}

var _ Shares = (*memShares)(nil)

func newMemShares() *memShares {
	return &memShares{members: make(map[string]map[string]bool), files: make(map[string][]FileEntry)}
}

func (m *memShares) add(share, user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.members[share] == nil {
		m.members[share] = make(map[string]bool)
	}
	m.members[share][user] = true
}

func (m *memShares) remove(share, user string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.members[share], user)
}

func (m *memShares) addFile(share, p string, size int64, created time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.files[share] = append(m.files[share], FileEntry{Path: p, Size: size, CreatedAt: created})
}

func (m *memShares) fail(err error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.err = err
}

func (m *memShares) refusals() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return slices.Clone(m.refused)
}

func (m *memShares) refuse(who Requester, action, share string, err error) error {
	m.refused = append(m.refused, strings.Join([]string{who.User, action, share, who.RemoteAddr}, " "))
	return fmt.Errorf("share %q: %w", share, err)
}

func (m *memShares) SharesOf(_ context.Context, who Requester) ([]ShareEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.err != nil:
		return nil, m.err
	case who.Emergency:
		return nil, m.refuse(who, "shares.list", "", policy.ErrDenied)
	}
	var out []ShareEntry
	for s, users := range m.members {
		if users[who.User] {
			out = append(out, ShareEntry{Name: s})
		}
	}
	return out, nil
}

func (m *memShares) Files(_ context.Context, who Requester, share string) ([]FileEntry, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	switch {
	case m.err != nil:
		return nil, m.err
	case who.Emergency:
		return nil, m.refuse(who, "share.files", share, policy.ErrDenied)
	case !m.members[share][who.User]:
		return nil, m.refuse(who, "share.files", share, state.ErrNotFound)
	}
	return slices.Clone(m.files[share]), nil
}

var (
	shareT1 = time.Date(2026, 2, 1, 9, 0, 0, 0, time.UTC)
	shareT2 = shareT1.Add(24 * time.Hour)
	shareT3 = shareT2.Add(24 * time.Hour)
)

// sharesFixture: alice is in "cohort" (nested files) and "empty"; bob alone
// is in "secret".
func sharesFixture() *memShares {
	sh := newMemShares()
	sh.add("cohort", treeUser)
	sh.add("empty", treeUser)
	sh.add("secret", "bob")
	sh.addFile("cohort", "readme.txt", 12, shareT1)
	sh.addFile("cohort", "2024/visits.csv", 300, shareT2)
	sh.addFile("cohort", "2024/q1/labs.csv", 40, shareT3)
	sh.addFile("cohort", "2023/visits.csv", 200, shareT1)
	sh.addFile("secret", "patients.csv", 99, shareT1)
	return sh
}

func sharesConfig(sh Shares) Config {
	cfg := testConfig()
	cfg.Shares = sh
	return cfg
}

// TestSharesListAndStat: /shares lists the user's shares as folders, each
// share its files with sizes and creation times, nested paths as folders.
func TestSharesListAndStat(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, sharesConfig(sharesFixture()), nil)
	c := p.client
	before := ing.snapshot()
	mounted := p.tree.mounted.Unix()

	ls := func(dir string) []entry {
		t.Helper()
		fis, err := c.ReadDir(dir)
		if err != nil {
			t.Fatalf("ls %s: %v", dir, err)
		}
		return entries(fis)
	}
	tests := []struct {
		dir  string
		want []entry
	}{
		{"/", []entry{{"upload", 0, true, mounted}, {"arrivals", 0, true, mounted}, {"shares", 0, true, mounted}}},
		{"/shares", []entry{{"cohort", 0, true, mounted}, {"empty", 0, true, mounted}}},
		{"/shares/cohort", []entry{
			{"2023", 0, true, shareT1.Unix()},
			{"2024", 0, true, shareT3.Unix()}, // the newest file below
			{"readme.txt", 12, false, shareT1.Unix()},
		}},
		{"/shares/cohort/2024", []entry{{"q1", 0, true, shareT3.Unix()}, {"visits.csv", 300, false, shareT2.Unix()}}},
		{"/shares/cohort/2024/q1", []entry{{"labs.csv", 40, false, shareT3.Unix()}}},
		{"/shares/empty", nil},
	}
	for _, tt := range tests {
		if diff := cmp.Diff(tt.want, ls(tt.dir)); diff != "" {
			t.Errorf("ls %s (-want +got):\n%s", tt.dir, diff)
		}
	}

	for _, tt := range []struct {
		path string
		want entry
	}{
		{"/shares", entry{"shares", 0, true, mounted}},
		{"/shares/cohort", entry{"cohort", 0, true, mounted}},
		{"/shares/empty", entry{"empty", 0, true, mounted}},
		{"/shares/cohort/readme.txt", entry{"readme.txt", 12, false, shareT1.Unix()}},
		{"/shares/cohort/2024", entry{"2024", 0, true, shareT3.Unix()}},
		{"/shares/cohort/2024/q1/labs.csv", entry{"labs.csv", 40, false, shareT3.Unix()}},
	} {
		for name, stat := range map[string]func(string) (os.FileInfo, error){"stat": c.Stat, "lstat": c.Lstat} {
			fi, err := stat(tt.path)
			if err != nil {
				t.Errorf("%s %s: %v", name, tt.path, err)
				continue
			}
			if diff := cmp.Diff([]entry{tt.want}, entries([]os.FileInfo{fi})); diff != "" {
				t.Errorf("%s %s (-want +got):\n%s", name, tt.path, diff)
			}
			if fi.Mode().Perm()&0o222 != 0 {
				t.Errorf("%s %s: mode %v is writable", name, tt.path, fi.Mode())
			}
		}
	}

	for _, missing := range []string{
		"/shares/cohort/none.csv", "/shares/cohort/2024/none", "/shares/cohort/2025/visits.csv",
		"/shares/cohort/readme.txt/x", "/shares/empty/x",
	} {
		if _, err := c.Stat(missing); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("stat %s: %v; want not exist", missing, err)
		}
	}
	if _, err := c.ReadDir("/shares/cohort/readme.txt"); err == nil {
		t.Error("ls of a file succeeded")
	}
	if _, err := c.ReadDir("/shares/cohort/2025"); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("ls of a missing folder: %v; want not exist", err)
	}
	if diff := cmp.Diff(before, ing.snapshot()); diff != "" {
		t.Errorf("listing changed state (-before +after):\n%s", diff)
	}
}

// TestSharesOfOthers: a share the user is not in, and one that does not
// exist, look the same: no such file. Shares audits the refusal (with the
// client's address); the tree adds no second record.
func TestSharesOfOthers(t *testing.T) {
	ing := newMemIngest()
	sh := sharesFixture()
	p := newPipe(t, ing, sharesConfig(sh), nil)
	c := p.client
	ops := []struct {
		name, share string
		op          func() error
	}{
		{"stat a share of others", "secret", func() error { _, err := c.Stat("/shares/secret"); return err }},
		{"ls a share of others", "secret", func() error { _, err := c.ReadDir("/shares/secret"); return err }},
		{"stat a file in others' share", "secret", func() error { _, err := c.Stat("/shares/secret/patients.csv"); return err }},
		{"stat a missing share", "nope", func() error { _, err := c.Stat("/shares/nope"); return err }},
		{"ls a missing share", "nope", func() error { _, err := c.ReadDir("/shares/nope"); return err }},
		{"stat a file in a missing share", "nope", func() error { _, err := c.Stat("/shares/nope/patients.csv"); return err }},
	}
	for _, tt := range ops {
		refused, audits := len(sh.refusals()), len(ing.auditLog())
		if err := tt.op(); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: %v; want not exist", tt.name, err)
		}
		want := []string{treeUser + " share.files " + tt.share + " " + treeRemote}
		if diff := cmp.Diff(want, sh.refusals()[refused:]); diff != "" {
			t.Errorf("%s: refusals recorded by Shares (-want +got):\n%s", tt.name, diff)
		}
		if got := ing.auditLog()[audits:]; len(got) != 0 {
			t.Errorf("%s: the tree audited %q too", tt.name, got)
		}
	}
}

// TestShareRemovalInOpenSession is issue 6's "removal takes effect on the
// very next request, including an open SFTP session": the IAO removes the
// member between two requests of one session, and the second is refused.
func TestShareRemovalInOpenSession(t *testing.T) {
	sh := sharesFixture()
	ing := newMemIngest()
	p := newPipe(t, ing, sharesConfig(sh), nil)
	c := p.client

	if _, err := c.ReadDir("/shares/cohort/2024"); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Stat("/shares/cohort/readme.txt"); err != nil {
		t.Fatal(err)
	}
	sh.remove("cohort", treeUser)

	for name, op := range map[string]func() error{
		"ls the share":       func() error { _, err := c.ReadDir("/shares/cohort"); return err },
		"ls a folder":        func() error { _, err := c.ReadDir("/shares/cohort/2024"); return err },
		"stat the share":     func() error { _, err := c.Stat("/shares/cohort"); return err },
		"stat a file":        func() error { _, err := c.Stat("/shares/cohort/readme.txt"); return err },
		"lstat a nested one": func() error { _, err := c.Lstat("/shares/cohort/2024/q1/labs.csv"); return err },
	} {
		if err := op(); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after removal: %v; want not exist", name, err)
		}
	}
	fis, err := c.ReadDir("/shares")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]entry{{"empty", 0, true, p.tree.mounted.Unix()}}, entries(fis)); diff != "" {
		t.Errorf("ls /shares after removal (-want +got):\n%s", diff)
	}

	// Added back, the share is there again at the next request.
	sh.add("cohort", treeUser)
	if _, err := c.Stat("/shares/cohort/readme.txt"); err != nil {
		t.Errorf("stat after being added back: %v", err)
	}
}

// TestSharesRefusals: under /shares nothing is read, written, renamed,
// removed or changed; each attempt is permission denied, changes nothing
// and is audited without the path's names.
func TestSharesRefusals(t *testing.T) {
	ing := newMemIngest()
	ing.addPartial("part.bin", []byte("0123456789"), time.Now())
	sh := sharesFixture()
	p := newPipe(t, ing, sharesConfig(sh), nil)
	c := p.client
	before := ing.snapshot()
	filesBefore := slices.Clone(sh.files["cohort"])

	create := func(name string) error {
		f, err := c.Create(name)
		if err == nil {
			f.Close()
		}
		return err
	}
	tests := []struct {
		name string
		op   func() error
	}{
		{"read a file", func() error {
			f, err := c.Open("/shares/cohort/2024/visits.csv")
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"read-write open", func() error {
			f, err := c.OpenFile("/shares/cohort/readme.txt", os.O_RDWR)
			if err == nil {
				f.Close()
			}
			return err
		}},
		{"create a file", func() error { return create("/shares/cohort/new.csv") }},
		{"overwrite a file", func() error { return create("/shares/cohort/readme.txt") }},
		{"create in a folder", func() error { return create("/shares/cohort/2024/new.csv") }},
		{"create a share", func() error { return create("/shares/newshare") }},
		{"create in /shares", func() error { return create("/shares/x.csv") }},
		{"append", func() error {
			_, err := c.OpenFile("/shares/cohort/readme.txt", os.O_WRONLY|os.O_APPEND)
			return err
		}},
		{"mkdir in a share", func() error { return c.Mkdir("/shares/cohort/dir") }},
		{"mkdir a share", func() error { return c.Mkdir("/shares/newshare") }},
		{"rmdir a folder", func() error { return c.RemoveDirectory("/shares/cohort/2023") }},
		{"rmdir a share", func() error { return c.RemoveDirectory("/shares/cohort") }},
		{"rmdir /shares", func() error { return c.RemoveDirectory("/shares") }},
		{"remove a file", func() error { return c.Remove("/shares/cohort/readme.txt") }},
		{"rename in a share", func() error { return c.Rename("/shares/cohort/readme.txt", "/shares/cohort/x.txt") }},
		{"rename out of a share", func() error { return c.Rename("/shares/cohort/readme.txt", "/upload/x.txt") }},
		{"rename into a share", func() error { return c.Rename("/upload/part.bin", "/shares/cohort/part.bin") }},
		{"posix-rename into a share", func() error { return c.PosixRename("/upload/part.bin", "/shares/cohort/part.bin") }},
		{"rename a share", func() error { return c.Rename("/shares/cohort", "/shares/other") }},
		{"symlink into a share", func() error { return c.Symlink("/shares/cohort/readme.txt", "/upload/link") }},
		{"symlink in a share", func() error { return c.Symlink("/upload/part.bin", "/shares/cohort/link") }},
		{"hardlink", func() error { return c.Link("/shares/cohort/readme.txt", "/upload/link") }},
		{"chmod a file", func() error { return c.Chmod("/shares/cohort/readme.txt", 0o600) }},
		{"chtimes a file", func() error { return c.Chtimes("/shares/cohort/readme.txt", time.Now(), time.Now()) }},
		{"truncate a file", func() error { return c.Truncate("/shares/cohort/readme.txt", 1) }},
		{"chmod a share", func() error { return c.Chmod("/shares/cohort", 0o777) }},
		{"chmod /shares", func() error { return c.Chmod("/shares", 0o777) }},
		{"read in others' share", func() error { _, err := c.Open("/shares/secret/patients.csv"); return err }},
		{"write in others' share", func() error { return create("/shares/secret/new.csv") }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantRefused(t, ing, before, tt.op, "readme", "visits", "patients")
		})
	}
	if diff := cmp.Diff(filesBefore, sh.files["cohort"]); diff != "" {
		t.Errorf("the share changed (-before +after):\n%s", diff)
	}
}

// TestSharesAbsent: without Config.Shares there is no /shares.
func TestSharesAbsent(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, testConfig(), nil)
	c := p.client
	fis, err := c.ReadDir("/")
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries(fis) {
		if e.Name == dirShares {
			t.Error("ls / shows shares without Config.Shares")
		}
	}
	for name, op := range map[string]func() error{
		"ls /shares":   func() error { _, err := c.ReadDir("/shares"); return err },
		"stat /shares": func() error { _, err := c.Stat("/shares"); return err },
		"stat a share": func() error { _, err := c.Stat("/shares/cohort"); return err },
		"ls a share":   func() error { _, err := c.ReadDir("/shares/cohort"); return err },
	} {
		if err := op(); !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s: %v; want permission denied (outside the tree)", name, err)
		}
	}
}

// TestSharesEmergency: Shares (policy) keeps a session opened with an
// emergency code out of shares, over SFTP as over HTTPS: listing is
// permission denied, and the tree tells Shares the session is one.
func TestSharesEmergency(t *testing.T) {
	ing := newMemIngest()
	ing.addArrival("done.txt", 5)
	sh := sharesFixture()
	p := newPipe(t, ing, sharesConfig(sh), nil)
	p.auth.emergency.Store(true)
	c := p.client
	if _, err := c.ReadDir("/arrivals"); err != nil {
		t.Errorf("ls /arrivals in an emergency session: %v", err)
	}
	for name, op := range map[string]func() error{
		"ls /shares":  func() error { _, err := c.ReadDir("/shares"); return err },
		"ls a share":  func() error { _, err := c.ReadDir("/shares/cohort/2024"); return err },
		"stat a file": func() error { _, err := c.Stat("/shares/cohort/readme.txt"); return err },
		"read a file": func() error { _, err := c.Open("/shares/cohort/readme.txt"); return err },
	} {
		refused, audits := len(sh.refusals()), len(ing.auditLog())
		if err := op(); !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s in an emergency session: %v; want permission denied", name, err)
		}
		if len(sh.refusals()) == refused && len(ing.auditLog()) == audits {
			t.Errorf("%s in an emergency session: the refusal was not audited", name)
		}
	}
}

// TestSharesSessionEnded: an ended login session ends /shares too.
func TestSharesSessionEnded(t *testing.T) {
	ing := newMemIngest()
	p := newPipe(t, ing, sharesConfig(sharesFixture()), nil)
	c := p.client
	if _, err := c.ReadDir("/shares/cohort"); err != nil {
		t.Fatal(err)
	}
	p.auth.ended.Store(true)
	for name, op := range map[string]func() error{
		"ls /shares":   func() error { _, err := c.ReadDir("/shares"); return err },
		"ls a share":   func() error { _, err := c.ReadDir("/shares/cohort"); return err },
		"stat a file":  func() error { _, err := c.Stat("/shares/cohort/readme.txt"); return err },
		"stat /shares": func() error { _, err := c.Stat("/shares"); return err },
	} {
		if err := op(); !errors.Is(err, os.ErrPermission) {
			t.Errorf("%s after the session ended: %v; want permission denied", name, err)
		}
	}
}

// TestSharesFailure: the shares service failing shows no share's content,
// and does not look like a removal: an internal error.
func TestSharesFailure(t *testing.T) {
	sh := sharesFixture()
	ing := newMemIngest()
	p := newPipe(t, ing, sharesConfig(sh), nil)
	c := p.client
	sh.fail(errors.New("state: database is locked"))
	for name, op := range map[string]func() error{
		"ls /shares":  func() error { _, err := c.ReadDir("/shares"); return err },
		"ls a share":  func() error { _, err := c.ReadDir("/shares/cohort"); return err },
		"stat a file": func() error { _, err := c.Stat("/shares/cohort/readme.txt"); return err },
	} {
		err := op()
		if err == nil || errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) || strings.Contains(err.Error(), "locked") {
			t.Errorf("%s with the service down: %v; want a failure that does not say why", name, err)
		}
	}
}

// TestSharesLogsCarryNoFileNames: paths under /shares are digested in logs.
func TestSharesLogsCarryNoFileNames(t *testing.T) {
	core, logs := observer.New(zap.DebugLevel)
	sh := newMemShares()
	sh.add("cohort", treeUser)
	sh.addFile("cohort", "patient-smith/labs.csv", 3, shareT1)
	ing := newMemIngest()
	p := newPipe(t, ing, sharesConfig(sh), func(t *tree) { t.log = zap.New(core) })
	_, _ = p.client.ReadDir("/shares/cohort/patient-smith")
	_, _ = p.client.Open("/shares/cohort/patient-smith/labs.csv")
	_, _ = p.client.Stat("/shares/patient-jones")
	_ = p.client.Remove("/shares/cohort/patient-smith/labs.csv")
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

func TestFolder(t *testing.T) {
	files := []FileEntry{
		{Path: "a", Size: 1, CreatedAt: shareT1},
		{Path: "a/b", Size: 2, CreatedAt: shareT2},   // "a" is also a folder: the folder shows
		{Path: "d/CON", Size: 3, CreatedAt: shareT3}, // the gate refuses it: left out
		{Path: "e//f", Size: 4, CreatedAt: shareT3},
		{Path: "/g", Size: 5, CreatedAt: shareT3},
		{Path: "h", Size: 6, CreatedAt: shareT1},
	}
	l, isDir := folder(files, "")
	if !isDir {
		t.Error("the share is not a folder")
	}
	want := []entry{{"a", 0, true, shareT2.Unix()}, {"h", 6, false, shareT1.Unix()}}
	if diff := cmp.Diff(want, entries(l)); diff != "" {
		t.Errorf("folder(-want +got):\n%s", diff)
	}
	if _, isDir := folder(files, "d"); isDir {
		t.Error("d, holding only a refused name, is a folder")
	}
	if _, isDir := folder(files, "h"); isDir {
		t.Error("the file h is a folder")
	}
}
