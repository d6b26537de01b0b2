package integration

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pkg/sftp"
	"golang.org/x/crypto/ssh"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// Everything the virtual tree refuses, one command at a time, from the pkg/sftp client (what
// OpenSSH never sends) and from one OpenSSH sftp login: each answers the client with an error
// and leaves storage as it was (the objects under data_dir, the uploads and files rows, the
// Arrivals the JSON API lists), checked before and after every command. The tree holds an
// arrival (kept.bin) and a partial upload (partial.bin) to aim at.
func TestSFTPRefusals(t *testing.T) {
	t.Parallel()
	e := newSFTPEnv(t, mftdtest.Options{})
	ctx := testCtx(t, 5*time.Minute)
	kept := readAllData(t, 64<<10, 51)
	partialID, conn := seedTree(t, ctx, e, kept, 1<<20)

	local := t.TempDir()
	small := filepath.Join(local, "small.txt")
	if err := os.WriteFile(small, []byte("small\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got := func(name string) string { return filepath.Join(local, name) }
	denied := `Permission denied`
	gate := `^dest open "/upload/[^"]*": Permission denied$`
	refusals := []struct {
		cmd  string
		want string // regexp the command's output must match
		// noLocal names a local file the command must not create
		noLocal string
		// logged: the daemon must log a refusal (the client's own message does not always show
		// that the server refused)
		logged bool
	}{
		{cmd: "-cd /etc", want: `stat remote: ` + denied, logged: true},
		{cmd: "-ls /etc", want: `Can't ls: "/etc" not found`, logged: true},
		{cmd: "-ls /..", want: `arrivals`}, // "/.." is "/", the root of the tree: nothing above it
		// sftp globs the remote name first; the refused stat makes it say "not found".
		{cmd: "-get /etc/passwd " + got("passwd1"), want: `File "/etc/passwd" not found`, noLocal: "passwd1", logged: true},
		{cmd: "-get ../etc/passwd " + got("passwd2"), want: `File "/../etc/passwd" not found`, noLocal: "passwd2", logged: true},
		{cmd: "-get /upload/../../etc/hostname " + got("hostname"), want: `not found`, noLocal: "hostname", logged: true},
		{cmd: "-put " + small + " /etc/x", want: `dest open "/etc/x": ` + denied},
		{cmd: "-put " + small + " /x", want: `dest open "/x": ` + denied},
		{cmd: "-put " + small + " /upload/../../tmp/x", want: `dest open "/upload/../../tmp/x": ` + denied, logged: true},
		{cmd: "-symlink /upload/partial.bin /upload/link", want: `remote symlink .*: ` + denied},
		{cmd: "-symlink /etc/passwd /upload/passwd", want: `remote symlink .*: ` + denied},
		{cmd: "-ln -s /arrivals/kept.bin /upload/soft", want: `remote symlink .*: ` + denied},
		{cmd: "-ln /arrivals/kept.bin /upload/hard", want: `remote link .*: ` + denied},
		{cmd: "-ln /upload/partial.bin /upload/hard2", want: `remote link .*: ` + denied},
		{cmd: "-chmod 666 /arrivals/kept.bin", want: `remote setstat "/arrivals/kept.bin": ` + denied},
		{cmd: "-chmod 777 /upload", want: `remote setstat "/upload": ` + denied},
		{cmd: "-rename /upload/partial.bin /arrivals/partial.bin", want: `remote rename .*: ` + denied},
		{cmd: "-rename /upload/partial.bin /partial.bin", want: `remote rename .*: ` + denied},
		{cmd: "-rename /arrivals/kept.bin /upload/kept.bin", want: `remote rename .*: ` + denied},
		{cmd: "-put " + small + " /arrivals/new.bin", want: `dest open "/arrivals/new.bin": ` + denied},
		{cmd: "-put " + small + " /arrivals/kept.bin", want: `dest open "/arrivals/kept.bin": ` + denied},
		{cmd: "-get /arrivals/kept.bin " + got("kept1"), want: `remote open "/arrivals/kept.bin": ` + denied, noLocal: "kept1"},
		{cmd: "-reget /arrivals/kept.bin " + got("kept2"), want: `remote open "/arrivals/kept.bin": ` + denied, noLocal: "kept2"},
		{cmd: "-rm /arrivals/kept.bin", want: `remote delete /arrivals/kept.bin: ` + denied},
		{cmd: "-rmdir /upload", want: `remote rmdir "/upload": ` + denied},
		{cmd: "-mkdir /upload/sub", want: `remote mkdir "/upload/sub": ` + denied},
		{cmd: "-mkdir /sub", want: `remote mkdir "/sub": ` + denied},
		{cmd: "-put " + small + " /upload/sub/x.bin", want: `dest open "/upload/sub/x.bin": ` + denied},
		// Names the path gate refuses.
		{cmd: "-put " + small + " \"/upload/bad\x01name\"", want: gate},
		{cmd: "-put " + small + " \"/upload/tab\tname\"", want: gate},
		{cmd: "-put " + small + " \"/upload/trailing.\"", want: gate},
		{cmd: "-put " + small + " \"/upload/CON.txt\"", want: gate},
		{cmd: "-put " + small + " \"/upload/a:b\"", want: gate},
		{cmd: "-put " + small + " \"/upload/e\u0301.txt\"", want: gate}, // not NFC
		{cmd: "-put " + small + " \"/upload/\u202egnp.exe\"", want: gate},
		{cmd: "-put " + small + " /upload/..", want: `dest open "/upload/../small.txt": ` + denied, logged: true},
	}

	// First what OpenSSH's sftp never sends (it refuses chown itself, and cleans paths), with
	// the pkg/sftp client in a new SFTP session of the seeding login.
	c, err := sftp.NewClient(conn)
	if err != nil {
		t.Fatalf("sftp client: %v", err)
	}
	long := "/upload/" + strings.Repeat("n", 300)
	raw := []struct {
		what string
		op   func() error
		gone bool // fs.ErrNotExist is an acceptable answer too
	}{
		{"chown of the partial", func() error { return c.Chown("/upload/partial.bin", 0, 0) }, false},
		{"truncate of the partial", func() error { return c.Truncate("/upload/partial.bin", 10) }, false},
		{"chtimes of the arrival", func() error { return c.Chtimes("/arrivals/kept.bin", time.Unix(0, 0), time.Unix(0, 0)) }, false},
		{"chmod of /", func() error { return c.Chmod("/", 0o777) }, false},
		{"open /upload/../../etc/passwd", func() error { return openClose(c, "/upload/../../etc/passwd", os.O_RDONLY) }, true},
		{"open ../../etc/passwd", func() error { return openClose(c, "../../etc/passwd", os.O_RDONLY) }, true},
		{"read the arrival", func() error { return openClose(c, "/arrivals/kept.bin", os.O_RDONLY) }, false},
		{"write the arrival", func() error { return openClose(c, "/arrivals/kept.bin", os.O_WRONLY) }, false},
		{"create in /arrivals/", func() error { return openClose(c, "/arrivals/x.bin", os.O_WRONLY|os.O_CREATE) }, false},
		{"posix-rename to /arrivals/", func() error { return c.PosixRename("/upload/partial.bin", "/arrivals/partial.bin") }, false},
		{"hard link", func() error { return c.Link("/arrivals/kept.bin", "/upload/hard.bin") }, false},
		{"symlink", func() error { return c.Symlink("/etc/passwd", "/upload/link.bin") }, false},
		{"mkdir", func() error { return c.Mkdir("/upload/dir") }, false},
		{"a name with NUL", func() error { return openClose(c, "/upload/nul\x00name", os.O_WRONLY|os.O_CREATE) }, false},
		{"a 300-byte name", func() error { return openClose(c, long, os.O_WRONLY|os.O_CREATE) }, false},
	}
	for _, r := range raw {
		before := storageSnapshot(t, ctx, e)
		err := r.op()
		if !errors.Is(err, fs.ErrPermission) && !(r.gone && errors.Is(err, fs.ErrNotExist)) {
			t.Errorf("pkg/sftp %s: %v; want permission denied", r.what, err)
		}
		if diff := cmp.Diff(before, storageSnapshot(t, ctx, e)); diff != "" {
			t.Errorf("pkg/sftp %s changed storage (-before +after):\n%s", r.what, diff)
		}
	}
	c.Close()

	// Then OpenSSH's sftp, one command at a time in one login.
	s := e.ssh.OpenSession(ctx)
	if out, err := s.Run("-cd ../../..", 30*time.Second); err != nil || out != "" {
		t.Errorf("cd ../../..: %q %v; want no output (it ends at the root)", out, err)
	}
	if out, err := s.Run("pwd", 30*time.Second); err != nil || out != "Remote working directory: /" {
		t.Errorf("pwd after cd ../../..: %q %v; want the root of the tree, which has no parent", out, err)
	}
	for _, r := range refusals {
		before := storageSnapshot(t, ctx, e)
		refusedBefore := len(logLines(t, e.d, `"msg":"refused"`))
		out, err := s.Run(r.cmd, 30*time.Second)
		if err != nil {
			t.Fatalf("%s: %v", r.cmd, err)
		}
		t.Logf("%q: %q", r.cmd, out)
		if !regexp.MustCompile(r.want).MatchString(out) {
			t.Errorf("%q: sftp printed %q; want a match for %q", r.cmd, out, r.want)
		}
		if diff := cmp.Diff(before, storageSnapshot(t, ctx, e)); diff != "" {
			t.Errorf("%q changed storage (-before +after):\n%s", r.cmd, diff)
		}
		if r.logged && len(logLines(t, e.d, `"msg":"refused"`)) <= refusedBefore {
			t.Errorf("%q: the daemon logged no refusal", r.cmd)
		}
		if r.noLocal != "" {
			if _, err := os.Stat(got(r.noLocal)); err == nil {
				b, _ := os.ReadFile(got(r.noLocal))
				t.Errorf("%q wrote the local file %s (%d bytes)", r.cmd, r.noLocal, len(b))
			}
		}
	}

	// The tree is as seeded: the partial with its size, the arrival whole.
	lsUp, err := s.Run("ls -l /upload/", 30*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if m := lsSizes(t, strings.Split(lsUp, "\n")); len(m) != 1 || m["partial.bin"] != 1<<20 {
		t.Errorf("ls -l /upload/ after the refusals: %v; want only partial.bin with %d bytes", m, 1<<20)
	}
	if u := oneUpload(t, e.d, e.user.Name, "partial.bin"); u.ID != partialID || u.Status != "uploading" || u.Offset != 1<<20 {
		t.Errorf("partial.bin after the refusals: %+v; want %s uploading at %d", u, partialID, 1<<20)
	}
	if sum, n := publishedSHA256(t, e.d, e.user.Name, "kept.bin"); sum != mftdtest.SHA256Hex(kept) || n != int64(len(kept)) {
		t.Errorf("kept.bin after the refusals: %d bytes, %s; want %d bytes, %s", n, sum, len(kept), mftdtest.SHA256Hex(kept))
	}

	// The control: an allowed command changes the snapshot, so the comparisons above can fail.
	before := storageSnapshot(t, ctx, e)
	if out, err := s.Run("put "+small+" /upload/control.txt", 30*time.Second); err != nil || strings.Contains(out, "denied") {
		t.Fatalf("put into /upload/: %q %v", out, err)
	}
	if cmp.Equal(before, storageSnapshot(t, ctx, e)) {
		t.Errorf("an allowed put left the storage snapshot unchanged: the snapshot sees nothing")
	}
	if r := s.Close(30 * time.Second); r.Code != 0 {
		t.Errorf("sftp session: %s", transcript(r))
	}
}

// openClose opens p with flags and closes it again.
func openClose(c *sftp.Client, p string, flags int) error {
	f, err := c.OpenFile(p, flags)
	if err != nil {
		return err
	}
	return f.Close()
}

// seedTree gives e's user an arrival kept.bin holding kept and a partial upload partial.bin of
// partialSize bytes, with one login of the pkg/sftp client: kept.bin is written and closed,
// partial.bin written and then its SFTP session ended with the file open. It returns the
// partial's upload id and the login, still open for more SFTP sessions.
func seedTree(t *testing.T, ctx context.Context, e *sftpEnv, kept []byte, partialSize int) (string, *ssh.Client) {
	t.Helper()
	conn := dialSFTP(t, e)
	c, err := sftp.NewClient(conn)
	if err != nil {
		t.Fatalf("sftp client: %v", err)
	}
	f, err := c.Create("/upload/kept.bin")
	if err != nil {
		t.Fatalf("create /upload/kept.bin: %v", err)
	}
	if _, err := f.Write(kept); err != nil {
		t.Fatalf("write kept.bin: %v", err)
	}
	if err := f.Close(); err != nil {
		t.Fatalf("close kept.bin: %v", err)
	}
	p, err := c.Create("/upload/partial.bin")
	if err != nil {
		t.Fatalf("create /upload/partial.bin: %v", err)
	}
	if _, err := p.Write(readAllData(t, int64(partialSize), 52)); err != nil {
		t.Fatalf("write partial.bin: %v", err)
	}
	c.Close() // partial.bin is still open: the session ends under it

	k := oneUpload(t, e.d, e.user.Name, "kept.bin")
	if info := waitUpload(t, ctx, e, k.ID, time.Minute); info.Status != "available" || info.SHA256 != mftdtest.SHA256Hex(kept) {
		t.Fatalf("kept.bin: %+v; want available with the SHA-256 of what was written", info)
	}
	part := oneUpload(t, e.d, e.user.Name, "partial.bin")
	waitLog(t, e.d, 30*time.Second, `"msg":"upload left partial"`, part.ID)
	if part = oneUpload(t, e.d, e.user.Name, "partial.bin"); part.Status != "uploading" || part.Offset != int64(partialSize) {
		t.Fatalf("partial.bin after its session ended: %+v; want uploading with %d bytes", part, partialSize)
	}
	return part.ID, conn
}

// dialSFTP logs e's user in with x/crypto's SSH client: password and code.
func dialSFTP(t *testing.T, e *sftpEnv) *ssh.Client {
	t.Helper()
	code := e.codes.Next()
	cfg := &ssh.ClientConfig{
		User: e.user.Name,
		Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(func(_, _ string, questions []string, _ []bool) ([]string, error) {
			answers := make([]string, len(questions))
			for i, q := range questions {
				switch {
				case strings.Contains(q, "Password:"):
					answers[i] = e.user.Password
				case strings.Contains(q, "Verification code:"):
					answers[i] = code
				default:
					return nil, fmt.Errorf("unexpected prompt %q", q)
				}
			}
			return answers, nil
		})},
		HostKeyCallback: ssh.FixedHostKey(e.d.HostPublicKey()),
		Timeout:         10 * time.Second,
	}
	conn, err := ssh.Dial("tcp", e.d.SFTPAddr, cfg)
	if err != nil {
		t.Fatalf("ssh login of %s: %v", e.user.Name, err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// storageSnapshot is everything a refused command must leave as it was: every file and
// directory under data_dir/objects (path, mode, size, modification time), every row of the
// uploads and files tables, and the Arrivals the JSON API lists.
func storageSnapshot(t *testing.T, ctx context.Context, e *sftpEnv) []string {
	t.Helper()
	var snap []string
	root := filepath.Join(e.d.DataDir, "objects")
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := de.Info()
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		snap = append(snap, fmt.Sprintf("objects/%s %v %d %d", rel, fi.Mode(), fi.Size(), fi.ModTime().UnixNano()))
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	db := openStateDB(t, e.d)
	defer db.Close()
	for _, q := range []string{`SELECT * FROM uploads ORDER BY id`, `SELECT * FROM files ORDER BY object_key`} {
		snap = append(snap, queryRows(t, db, q)...)
	}
	for _, a := range arrivals(t, ctx, e.api) {
		snap = append(snap, fmt.Sprintf("api arrival %+v", a))
	}
	return snap
}

// queryRows renders every row of q as "column=value ..." lines.
func queryRows(t *testing.T, db *sql.DB, q string) []string {
	t.Helper()
	rows, err := db.Query(q)
	if err != nil {
		t.Fatalf("%s: %v", q, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		b.WriteString(q[len("SELECT * FROM "):strings.Index(q, " ORDER")])
		for i, c := range cols {
			fmt.Fprintf(&b, " %s=%v", c, vals[i])
		}
		out = append(out, b.String())
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}
