package integration

import (
	"bufio"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// The SFTP door's tests drive real clients (OpenSSH sftp and ssh, rclone, lftp) against the
// built binary. Logins answer the prompts with SSH_ASKPASS (mftdtest.SSHClient); every code of
// one account comes from its mftdtest.CodeSource, since the daemon accepts each TOTP step once.
// Uploads are followed through the state database (the JSON API has no list of uploads) and
// their outcome through the JSON API.

// sftpEnv is a daemon with the SFTP door on and one account: its code source, an API client
// (logged in with the first code) and an OpenSSH client.
type sftpEnv struct {
	d     *mftdtest.Daemon
	user  mftdtest.User
	codes *mftdtest.CodeSource
	api   *mftdtest.Client
	ssh   *mftdtest.SSHClient
}

// newSFTPEnv starts a daemon with o (SFTP forced on) and adds the account alice. Every client it
// needs must be installed (integration/scripts/setup.sh); a missing one fails the test.
func newSFTPEnv(t *testing.T, o mftdtest.Options) *sftpEnv {
	t.Helper()
	needTools(t, "sftp", "ssh", "ssh-keygen", "stdbuf")
	o.SFTP = true
	d := startDaemon(t, o)
	return addSFTPUser(t, d, "alice")
}

// addSFTPUser adds an account to d and logs its API client in.
func addSFTPUser(t *testing.T, d *mftdtest.Daemon, name string) *sftpEnv {
	t.Helper()
	u := d.AddUser(name)
	codes := mftdtest.NewCodeSource(t, u)
	api := d.Client(d.Login(u, codes.At()))
	return &sftpEnv{d: d, user: u, codes: codes, api: api, ssh: d.NewSSHClient(u, codes)}
}

// needTools fails the test for each program missing from PATH: setup.sh installs them.
func needTools(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		if _, err := exec.LookPath(n); err != nil {
			t.Errorf("%s is not installed: run `bash integration/scripts/setup.sh` (it installs the SFTP clients)", n)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// uploadRow is the part of a state row of the uploads table the tests look at.
type uploadRow struct {
	ID     string
	Status string
	Length int64
	Offset int64
	Reason string
}

// uploadsNamed returns owner's uploads of filename, oldest first.
func uploadsNamed(t *testing.T, d *mftdtest.Daemon, owner, name string) []uploadRow {
	t.Helper()
	db := openStateDB(t, d)
	defer db.Close()
	rows, err := db.Query(`SELECT id, status, length, offset_bytes, reason FROM uploads WHERE owner = ? AND filename = ? ORDER BY created_at, id`, owner, name)
	if err != nil {
		t.Fatalf("query uploads: %v", err)
	}
	defer rows.Close()
	var out []uploadRow
	for rows.Next() {
		var u uploadRow
		if err := rows.Scan(&u.ID, &u.Status, &u.Length, &u.Offset, &u.Reason); err != nil {
			t.Fatal(err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// oneUpload returns owner's only upload of name, failing if there is not exactly one.
func oneUpload(t *testing.T, d *mftdtest.Daemon, owner, name string) uploadRow {
	t.Helper()
	ups := uploadsNamed(t, d, owner, name)
	if len(ups) != 1 {
		t.Fatalf("%d uploads named %q in the state database, want exactly 1: %+v", len(ups), name, ups)
	}
	return ups[0]
}

func openStateDB(t *testing.T, d *mftdtest.Daemon) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+d.DBPath()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// waitDurable polls until owner's upload of name, written by the client p, has a durable
// offset of at least min bytes, and returns it. It fails if p exits first.
func waitDurable(t *testing.T, ctx context.Context, d *mftdtest.Daemon, p *mftdtest.Proc, owner, name string, min int64) uploadRow {
	t.Helper()
	var last []uploadRow
	for {
		if last = uploadsNamed(t, d, owner, name); len(last) == 1 && last[0].Offset >= min {
			return last[0]
		}
		select {
		case <-p.Done():
			t.Fatalf("the client ended before %d bytes of %s were durable (uploads: %+v); its output:\n%s", min, name, last, p.Output())
		case <-ctx.Done():
			t.Fatalf("%d bytes of %s not durable in time (uploads: %+v); client output:\n%s", min, name, last, p.Output())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// logLines returns the daemon log lines holding every one of subs.
func logLines(t *testing.T, d *mftdtest.Daemon, subs ...string) []string {
	t.Helper()
	f, err := os.Open(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
next:
	for sc.Scan() {
		for _, s := range subs {
			if !strings.Contains(sc.Text(), s) {
				continue next
			}
		}
		out = append(out, sc.Text())
	}
	return out
}

// waitLog waits until a daemon log line holds every one of subs and returns it.
func waitLog(t *testing.T, d *mftdtest.Daemon, limit time.Duration, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if l := logLines(t, d, subs...); len(l) > 0 {
			return l[0]
		}
		if time.Now().After(deadline) {
			t.Fatalf("no daemon log line with %q within %v", subs, limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// uploadLog is every daemon log line about upload id, for failure messages.
func uploadLog(t *testing.T, d *mftdtest.Daemon, id string) string {
	t.Helper()
	return strings.Join(logLines(t, d, `"upload_id":"`+id+`"`), "\n")
}

// waitUpload waits until upload id is available, quarantined or rejected.
func waitUpload(t *testing.T, ctx context.Context, e *sftpEnv, id string, limit time.Duration) mftdtest.UploadInfo {
	t.Helper()
	info, err := e.api.WaitTerminal(ctx, id, limit, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("upload %s: %v\ndaemon log about it:\n%s", id, err, uploadLog(t, e.d, id))
	}
	return info
}

// publishedSHA256 hashes the object the files table records for owner's arrival name.
func publishedSHA256(t *testing.T, d *mftdtest.Daemon, owner, name string) (string, int64) {
	t.Helper()
	db := openStateDB(t, d)
	defer db.Close()
	var key string
	if err := db.QueryRow(`SELECT object_key FROM files WHERE owner = ? AND name = ?`, owner, name).Scan(&key); err != nil {
		t.Fatalf("files row of %s/%s: %v", owner, name, err)
	}
	return fileSHA256(t, filepath.Join(d.DataDir, "objects", filepath.FromSlash(key)))
}

func fileSHA256(t *testing.T, p string) (string, int64) {
	t.Helper()
	f, err := os.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(h.Sum(nil)), n
}

// wantPartialGone checks that upload id left nothing in /upload/: no incomplete row of that
// name and no object under uploads/.
func wantPartialGone(t *testing.T, d *mftdtest.Daemon, owner, name, id string) {
	t.Helper()
	for _, u := range uploadsNamed(t, d, owner, name) {
		if u.Status == "uploading" {
			t.Errorf("upload %s of %s is still incomplete after completion: %+v", u.ID, name, u)
		}
	}
	if _, err := os.Stat(filepath.Join(d.DataDir, "objects", "uploads", id)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("the partial object uploads/%s is still in storage (stat: %v)", id, err)
	}
}

// section is one command of an `sftp -b` transcript and the lines printed for it.
type section struct {
	cmd string
	out []string
}

// sections splits an `sftp -b` transcript at the echoed commands ("sftp> CMD").
func sections(transcript string) []section {
	var out []section
	for _, line := range strings.Split(strings.ReplaceAll(transcript, "\r", ""), "\n") {
		if c, ok := strings.CutPrefix(line, "sftp> "); ok {
			out = append(out, section{cmd: c})
			continue
		}
		if len(out) > 0 && line != "" {
			out[len(out)-1].out = append(out[len(out)-1].out, line)
		}
	}
	return out
}

// sectionOf returns the output of the first command that starts with prefix.
func sectionOf(t *testing.T, transcript, prefix string) []string {
	t.Helper()
	for _, s := range sections(transcript) {
		if strings.HasPrefix(s.cmd, prefix) {
			return s.out
		}
	}
	t.Fatalf("no command %q in the sftp transcript:\n%s", prefix, transcript)
	return nil
}

// lsSizes parses `ls -l` lines into base name → size.
func lsSizes(t *testing.T, lines []string) map[string]int64 {
	t.Helper()
	m := make(map[string]int64)
	for _, l := range lines {
		f := strings.Fields(l)
		if len(f) < 9 || !strings.ContainsRune("-dl", rune(l[0])) {
			continue
		}
		n, err := strconv.ParseInt(f[4], 10, 64)
		if err != nil {
			t.Fatalf("ls -l line %q: size %q", l, f[4])
		}
		m[path.Base(strings.Join(f[8:], " "))] = n
	}
	return m
}

// transcript formats a client's result for a failure message.
func transcript(r mftdtest.Result) string {
	return fmt.Sprintf("exit %d, output:\n%s", r.Code, r.Stdout)
}
