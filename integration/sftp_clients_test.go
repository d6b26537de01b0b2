package integration

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// Login with a registered key and the code: OpenSSH's sftp proves the key, and the askpass
// program is asked for the code only, never a password. The daemon logs the login with the
// key's fingerprint and the file reaches Arrivals. A key that is not registered is no first
// factor: with no password to give, that login fails and uploads nothing.
func TestSFTPKeyLogin(t *testing.T) {
	t.Parallel()
	e := newSFTPEnv(t, mftdtest.Options{})
	ctx := testCtx(t, 3*time.Minute)
	key, fp := addKey(t, e)
	e.ssh.UseKey(key)

	src, sum := genFile(t, "keyed.bin", 8<<20, 61)
	r := e.ssh.Batch(ctx, time.Minute, []string{"put " + src + " /upload/keyed.bin"})
	if r.Code != 0 {
		t.Fatalf("sftp -i KEY put: %s\nprompts: %q", transcript(r), e.ssh.Prompts())
	}
	if p := e.ssh.Prompts(); len(p) != 1 || !strings.Contains(p[0], "Verification code:") {
		t.Errorf("prompts answered in a key login: %q; want only the verification code", p)
	}
	if l := logLines(t, e.d, `"msg":"login"`, `"method":"publickey+code"`, `"key_fingerprint":"`+fp+`"`); len(l) != 1 {
		t.Errorf("daemon log lines of a publickey+code login with %s: %d, want 1", fp, len(l))
	}
	wantAvailable(t, waitUpload(t, ctx, e, oneUpload(t, e.d, e.user.Name, "keyed.bin").ID, time.Minute), 8<<20, sum)
	findArrival(t, arrivals(t, ctx, e.api), "keyed.bin")

	other := e.d.NewSSHClient(e.user, e.codes)
	otherKey := filepath.Join(other.Dir, "id_other")
	sshKeygen(t, otherKey)
	other.UseKey(otherKey)
	r = other.Batch(ctx, time.Minute, []string{"put " + src + " /upload/stranger.bin"})
	if r.Code == 0 {
		t.Fatalf("a login with an unregistered key and no password succeeded: %s", transcript(r))
	}
	if ups := uploadsNamed(t, e.d, e.user.Name, "stranger.bin"); len(ups) != 0 {
		t.Errorf("the refused login left uploads: %+v", ups)
	}
}

// EICAR over SFTP ends quarantined and never reaches Arrivals; a clean file put in the same
// login does.
func TestSFTPEICARQuarantined(t *testing.T) {
	t.Parallel()
	e := newSFTPEnv(t, mftdtest.Options{})
	ctx := testCtx(t, 3*time.Minute)
	dir := t.TempDir()
	bad := filepath.Join(dir, "eicar.com")
	if err := os.WriteFile(bad, []byte(eicar), 0o600); err != nil {
		t.Fatal(err)
	}
	clean, sum := genFile(t, "clean.bin", 1<<20, 62)

	r := e.ssh.Batch(ctx, time.Minute, []string{"put " + bad + " /upload/eicar.com", "put " + clean + " /upload/clean.bin"})
	if r.Code != 0 {
		t.Fatalf("sftp put: %s", transcript(r))
	}
	ev := oneUpload(t, e.d, e.user.Name, "eicar.com")
	if info := waitUpload(t, ctx, e, ev.ID, time.Minute); info.Status != "quarantined" {
		t.Errorf("EICAR upload %s: status %q (reason %q), want quarantined", ev.ID, info.Status, info.Reason)
	}
	wantAvailable(t, waitUpload(t, ctx, e, oneUpload(t, e.d, e.user.Name, "clean.bin").ID, time.Minute), 1<<20, sum)
	files := arrivals(t, ctx, e.api)
	findArrival(t, files, "clean.bin")
	for _, f := range files {
		if f.Name == "eicar.com" || f.SHA256 == mftdtest.SHA256Hex([]byte(eicar)) {
			t.Errorf("EICAR is in Arrivals: %+v", f)
		}
	}
	if n := dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM files WHERE name = 'eicar.com'`); n != 0 {
		t.Errorf("%d files rows for eicar.com", n)
	}
	// Nothing under arrivals/ in storage holds it.
	root := filepath.Join(e.d.DataDir, "objects", "arrivals")
	err := filepath.WalkDir(root, func(p string, de fs.DirEntry, err error) error {
		if err != nil || de.IsDir() {
			return err
		}
		if b, err := os.ReadFile(p); err == nil && bytes.Contains(b, []byte("EICAR-STANDARD-ANTIVIRUS-TEST-FILE")) {
			t.Errorf("%s in Arrivals storage holds EICAR", p)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// Only the sftp subsystem is served: a command, a shell, another subsystem and stdio
// forwarding are each refused after a successful login (both prompts answered, the login
// logged), ssh exits non-zero, and the command has no effect.
func TestSFTPExecRefused(t *testing.T) {
	t.Parallel()
	e := newSFTPEnv(t, mftdtest.Options{})
	ctx := testCtx(t, 3*time.Minute)
	dir := t.TempDir()
	_, httpsPort, _ := strings.Cut(e.d.Addr, ":")
	cases := []struct {
		name   string
		args   []string // after the options, around the target (TARGET)
		stdin  string
		want   string
		marker string
	}{
		{"exec", []string{"TARGET", "touch " + filepath.Join(dir, "exec")}, "", "exec request failed", "exec"},
		{"shell", []string{"-T", "TARGET"}, "touch " + filepath.Join(dir, "shell") + "\n", "shell request failed", "shell"},
		{"other subsystem", []string{"-s", "TARGET", "netconf"}, "", "subsystem request failed", ""},
		{"stdio forwarding", []string{"-W", "127.0.0.1:" + httpsPort, "TARGET"}, "", "stdio forwarding failed", ""},
	}
	// Two accounts share the logins, so that no test waits for a new TOTP step.
	users := []*sftpEnv{e, e, addSFTPUser(t, e.d, "bob"), nil}
	users[3] = users[2]
	for i, c := range cases {
		u := users[i]
		logins := len(logLines(t, e.d, `"msg":"login"`, `"method":"password+code"`))
		args := append([]string{"-p", u.ssh.Port}, u.ssh.SSHOptions()...)
		for _, a := range c.args {
			args = append(args, strings.ReplaceAll(a, "TARGET", u.ssh.Target()))
		}
		cmd := u.ssh.Command(ctx, "ssh", args...)
		cmd.Stdin = strings.NewReader(c.stdin)
		r := u.ssh.Start(cmd).Wait(time.Minute)
		if r.Code == 0 || !strings.Contains(r.Stdout, c.want) {
			t.Errorf("ssh %s: %s; want a non-zero exit and %q", c.name, transcript(r), c.want)
		}
		if p := u.ssh.Prompts(); len(p) != 2 {
			t.Errorf("ssh %s: prompts %q; want the password and the code", c.name, p)
		}
		if n := len(logLines(t, e.d, `"msg":"login"`, `"method":"password+code"`)); n != logins+1 {
			t.Errorf("ssh %s: %d new logins logged, want 1 (the login succeeds; what follows is refused)", c.name, n-logins)
		}
		if c.marker != "" {
			if _, err := os.Stat(filepath.Join(dir, c.marker)); err == nil {
				t.Errorf("ssh %s: the command ran (%s exists)", c.name, c.marker)
			}
		}
	}
}

// rclone (Debian's 1.60) uploads a file that lands in Arrivals. It logs in with a registered
// key and the code: rclone's keyboard-interactive answers every prompt with its `pass`, so it
// cannot give a password and a code in one round, but after the key it is asked only for the
// code. set_modtime=false: the file has left /upload/ for the pipeline when rclone would set
// its time (see TestSFTPRcloneDefaults); shell_type=none and disable_hashcheck keep it from
// trying commands, which are refused. The remote path is absolute: a login starts in /upload/.
func TestSFTPRclone(t *testing.T) {
	t.Parallel()
	needTools(t, "rclone")
	e := newSFTPEnv(t, mftdtest.Options{})
	ctx := testCtx(t, 3*time.Minute)
	const size = 48 << 20
	src, sum := genFile(t, "rclone.bin", size, 63)
	conf := rcloneConfig(t, ctx, e, "shell_type = none\ndisable_hashcheck = true\nset_modtime = false\n")

	r := runTool(t, ctx, []string{"RCLONE_CONFIG=" + conf}, "", "rclone", "copyto", src, "mftd:/upload/rclone.bin",
		"--retries", "1", "--low-level-retries", "1", "--transfers", "1", "--checkers", "1", "-v")
	if r.Code != 0 {
		t.Fatalf("rclone copyto: %s", transcript(r))
	}
	up := oneUpload(t, e.d, e.user.Name, "rclone.bin")
	wantAvailable(t, waitUpload(t, ctx, e, up.ID, time.Minute), size, sum)
	if a := findArrival(t, arrivals(t, ctx, e.api), "rclone.bin"); a.SHA256 != sum {
		t.Errorf("arrival rclone.bin: sha256 %s, want %s", a.SHA256, sum)
	}
	if got, _ := publishedSHA256(t, e.d, e.user.Name, "rclone.bin"); got != sum {
		t.Errorf("published rclone.bin: sha256 %s, want %s", got, sum)
	}
}

// rclone with nothing but the login configured: `rclone copyto` succeeds and the file lands in
// Arrivals once. rclone probes for a shell and hash commands (refused; it carries on without)
// and, after the upload, sets the file's time, first looking the file up in /upload/.
func TestSFTPRcloneDefaults(t *testing.T) {
	t.Parallel()
	needTools(t, "rclone")
	e := newSFTPEnv(t, mftdtest.Options{})
	ctx := testCtx(t, 3*time.Minute)
	src, sum := genFile(t, "defaults.bin", 8<<20, 65)
	conf := rcloneConfig(t, ctx, e, "")

	r := runTool(t, ctx, []string{"RCLONE_CONFIG=" + conf}, "", "rclone", "copyto", src, "mftd:/upload/defaults.bin", "-v")
	ups := uploadsNamed(t, e.d, e.user.Name, "defaults.bin")
	for _, u := range ups {
		waitUpload(t, ctx, e, u.ID, time.Minute)
	}
	var copies []string
	for _, a := range arrivals(t, ctx, e.api) {
		if strings.HasPrefix(a.Name, "defaults") {
			copies = append(copies, a.Name)
		}
	}
	if r.Code != 0 || len(copies) != 1 {
		t.Fatalf("rclone copyto with its default settings: %s\n%d uploads of defaults.bin; Arrivals holding it: %q. "+
			"Want exit 0 and one copy in Arrivals. (rclone's SetModTime looks the file up in /upload/ after the close, "+
			"but it has left for the pipeline: \"object not found\"; rclone then retries the whole copy, and each "+
			"attempt publishes another copy.)", transcript(r), len(ups), copies)
	}
	wantAvailable(t, waitUpload(t, ctx, e, ups[0].ID, time.Minute), 8<<20, sum)
}

// rcloneConfig registers a new key for e's user and writes a 0600 rclone config with a remote
// "mftd" logging in with that key and a code, plus the extra lines. The code goes to
// `rclone obscure` on stdin and into the file, never on a command line.
func rcloneConfig(t *testing.T, ctx context.Context, e *sftpEnv, extra string) string {
	t.Helper()
	key, _ := addKey(t, e)
	obscured := runTool(t, ctx, []string{"RCLONE_CONFIG=/dev/null"}, e.codes.Next(), "rclone", "obscure", "-")
	words := strings.Fields(obscured.Stdout)
	if obscured.Code != 0 || len(words) == 0 {
		t.Fatalf("rclone obscure: %s", transcript(obscured))
	}
	conf := filepath.Join(e.ssh.Dir, "rclone.conf")
	err := os.WriteFile(conf, []byte(fmt.Sprintf(`[mftd]
type = sftp
host = %s
port = %s
user = %s
key_file = %s
pass = %s
known_hosts_file = %s
%s`, e.ssh.Host, e.ssh.Port, e.user.Name, key, words[len(words)-1], e.ssh.KnownHosts, extra)), 0o600)
	if err != nil {
		t.Fatal(err)
	}
	return conf
}

// lftp (Debian's 4.9.2) puts a file over SFTP with password and code (its ssh answers the
// prompts through SSH_ASKPASS) and the file lands in Arrivals. lftp ends every put with an
// FSETSTAT of the file's size (the bytes it wrote) and time before the CLOSE: that is the end of
// a complete file, not a client giving up.
func TestSFTPLftp(t *testing.T) {
	t.Parallel()
	needTools(t, "lftp")
	e := newSFTPEnv(t, mftdtest.Options{})
	ctx := testCtx(t, 3*time.Minute)
	const size = 16 << 20
	src, sum := genFile(t, "lftp.bin", size, 64)

	connect := "ssh -a -x " + strings.Join(e.ssh.SSHOptions(), " ")
	script := fmt.Sprintf(`set sftp:connect-program %q; set net:max-retries 1; set net:timeout 30; open -u %s, sftp://%s:%s; put %s -o /upload/lftp.bin`,
		connect, e.user.Name, e.ssh.Host, e.ssh.Port, src)
	r := e.ssh.Start(e.ssh.Command(ctx, "lftp", "-c", script)).Wait(time.Minute)
	if r.Code != 0 {
		t.Fatalf("lftp put: %s\nprompts: %q", transcript(r), e.ssh.Prompts())
	}
	up := oneUpload(t, e.d, e.user.Name, "lftp.bin")
	if up = waitNotUploading(t, e.d, up.ID, 10*time.Second); up.Status == "uploading" {
		t.Fatalf("lftp reported a successful put, but upload %s stayed a partial in /upload/ (%d of %d bytes, status %q) "+
			"and never reached the pipeline. lftp ends each put with FSETSTAT(size = the bytes it wrote, mtime) "+
			"and then CLOSE; the daemon takes a size on an open file as the client giving up and keeps the partial. "+
			"Daemon log about the upload:\n%s", up.ID, up.Offset, size, up.Status, uploadLog(t, e.d, up.ID))
	}
	wantAvailable(t, waitUpload(t, ctx, e, up.ID, time.Minute), size, sum)
	findArrival(t, arrivals(t, ctx, e.api), "lftp.bin")
}

// waitNotUploading polls upload id until it has left the uploading state, or limit passes,
// and returns its last row.
func waitNotUploading(t *testing.T, d *mftdtest.Daemon, id string, limit time.Duration) uploadRow {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		db := openStateDB(t, d)
		var u uploadRow
		err := db.QueryRow(`SELECT id, status, length, offset_bytes, reason FROM uploads WHERE id = ?`, id).
			Scan(&u.ID, &u.Status, &u.Length, &u.Offset, &u.Reason)
		db.Close()
		if err != nil {
			t.Fatalf("upload %s: %v", id, err)
		}
		if u.Status != "uploading" || time.Now().After(deadline) {
			return u
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// addKey generates an ed25519 key in e's client directory and registers it for e's user with
// `mftd user add-key`; it returns the private key's path and the fingerprint the command printed.
func addKey(t *testing.T, e *sftpEnv) (string, string) {
	t.Helper()
	key := filepath.Join(e.ssh.Dir, "id_ed25519")
	sshKeygen(t, key)
	pub, err := os.ReadFile(key + ".pub")
	if err != nil {
		t.Fatal(err)
	}
	r := e.d.Admin(string(pub), "user", "add-key", e.user.Name)
	fp := strings.TrimSpace(r.Stdout)
	if r.Code != 0 || !strings.HasPrefix(fp, "SHA256:") {
		t.Fatalf("mftd user add-key: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	return key, fp
}

// sshKeygen writes a new ed25519 key without a passphrase to path and path.pub.
func sshKeygen(t *testing.T, path string) {
	t.Helper()
	if out, err := exec.Command("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mftd-test", "-f", path).CombinedOutput(); err != nil {
		t.Fatalf("ssh-keygen: %v\n%s", err, out)
	}
}

// runTool runs a client program with extra environment and stdin, in its own process group,
// and returns its merged output and exit code; it fails the test after two minutes.
func runTool(t *testing.T, ctx context.Context, env []string, stdin, name string, args ...string) mftdtest.Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("%s %s: still running after two minutes; output:\n%s", name, strings.Join(args, " "), out.String())
	}
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		t.Fatalf("%s: %v", name, err)
	}
	return mftdtest.Result{Stdout: out.String(), Code: cmd.ProcessState.ExitCode()}
}
