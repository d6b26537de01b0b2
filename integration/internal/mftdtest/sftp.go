package mftdtest

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/knownhosts"
)

// totpPeriod is the TOTP time step in seconds.
const totpPeriod = 30

// CodeSource hands out one account's TOTP codes for strictly increasing time steps. The daemon
// accepts the codes of the previous, current and next step, each step once per account and only
// after the last one used; so a test that logs one account in several times (over HTTPS or SFTP)
// takes every code from the account's one CodeSource, which waits for the next step window when
// the three usable steps are spent.
type CodeSource struct {
	tb     testing.TB
	secret string

	mu   sync.Mutex
	last int64 // the last step handed out
}

// NewCodeSource returns the code source of u. Use one per account and daemon.
func NewCodeSource(tb testing.TB, u User) *CodeSource {
	return &CodeSource{tb: tb, secret: u.Secret}
}

// At returns a time inside the next step the daemon accepts now, waiting up to one step if
// need be; pass it to Daemon.Login or Code.
func (s *CodeSource) At() time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		now := time.Now()
		cur := now.Unix() / totpPeriod
		lo := cur - 1
		if now.Unix()%totpPeriod >= totpPeriod-10 {
			lo = cur // the previous step's code could go stale before the daemon checks it
		}
		step := max(s.last+1, lo)
		if step <= cur+1 {
			s.last = step
			return time.Unix(step*totpPeriod+totpPeriod/2, 0)
		}
		// step is cur+2 or later: wait until it is the next step.
		time.Sleep(time.Until(time.Unix((step-1)*totpPeriod, 0)) + 100*time.Millisecond)
	}
}

// Next returns the code of At().
func (s *CodeSource) Next() string {
	s.tb.Helper()
	return Code(s.tb, s.secret, s.At())
}

// HostPublicKey reads the public half of the daemon's SFTP host key from its data_dir.
func (d *Daemon) HostPublicKey() ssh.PublicKey {
	d.tb.Helper()
	pem, err := os.ReadFile(filepath.Join(d.DataDir, "keys", "ssh_host_ed25519_key"))
	if err != nil {
		d.tb.Fatalf("SFTP host key: %v", err)
	}
	signer, err := ssh.ParsePrivateKey(pem)
	if err != nil {
		d.tb.Fatalf("SFTP host key: %v", err)
	}
	return signer.PublicKey()
}

// askpassScript answers OpenSSH's prompts from files next to it and records each prompt: the
// password from "password" (if that file exists), the code from "code". Secrets stay in 0600
// files of the test's temp dir, out of every process's argv and environment.
const askpassScript = `#!/bin/sh
dir=$(dirname "$0")
printf '%s\n' "$1" >>"$dir/prompts"
case "$1" in
*'Verification code:'*) exec cat "$dir/code" ;;
*'Password:'*) [ -f "$dir/password" ] && exec cat "$dir/password" ;;
esac
exit 1
`

// SSHClient runs OpenSSH's sftp and ssh (and clients that drive ssh, like lftp) against the
// daemon's SFTP door as one user, answering the login prompts with SSH_ASKPASS: password and
// code, or (after UseKey) a key and the code. The daemon's host key is pinned in a known_hosts
// file (StrictHostKeyChecking=yes). Every command runs in its own session and process group,
// with a fresh code from the user's CodeSource.
type SSHClient struct {
	tb         testing.TB
	Dir        string // 0700: askpass, known_hosts, password, code, prompts
	Host, Port string
	User       string
	Codes      *CodeSource
	KeyFile    string // private key of publickey+code logins; "" for password+code
	KnownHosts string
	Askpass    string
	// code, if set, is answered at the code prompt instead of a fresh TOTP code (see WithCode).
	code string
}

// WithCode returns a copy of the client that answers the verification-code prompt with code (a
// wrong code, or an emergency code) instead of a fresh TOTP code. It shares the client's folder:
// use one at a time.
func (c *SSHClient) WithCode(code string) *SSHClient {
	cp := *c
	cp.code = code
	return &cp
}

// NewSSHClient prepares a client directory for u (whose codes come from codes) against d's
// SFTP door.
func (d *Daemon) NewSSHClient(u User, codes *CodeSource) *SSHClient {
	d.tb.Helper()
	if d.SFTPAddr == "" {
		d.tb.Fatal("mftdtest: NewSSHClient on a daemon without Options.SFTP")
	}
	host, port, err := net.SplitHostPort(d.SFTPAddr)
	if err != nil {
		d.tb.Fatal(err)
	}
	dir := d.tb.TempDir()
	c := &SSHClient{
		tb: d.tb, Dir: dir, Host: host, Port: port, User: u.Name, Codes: codes,
		KnownHosts: filepath.Join(dir, "known_hosts"),
		Askpass:    filepath.Join(dir, "askpass"),
	}
	line := knownhosts.Line([]string{knownhosts.Normalize(d.SFTPAddr)}, d.HostPublicKey())
	for name, content := range map[string]struct {
		data string
		mode os.FileMode
	}{
		"known_hosts": {line + "\n", 0o600},
		"askpass":     {askpassScript, 0o700},
		"password":    {u.Password, 0o600},
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content.data), content.mode); err != nil {
			d.tb.Fatal(err)
		}
	}
	return c
}

// UseKey switches the client to publickey+code logins with the private key in keyFile; the
// password file is removed, so a password prompt would fail.
func (c *SSHClient) UseKey(keyFile string) {
	c.KeyFile = keyFile
	if err := os.Remove(filepath.Join(c.Dir, "password")); err != nil && !errors.Is(err, os.ErrNotExist) {
		c.tb.Fatal(err)
	}
}

// SSHOptions are the ssh options of every login: BatchMode=no comes first, since `sftp -b`
// turns BatchMode on and the first value of an option wins.
func (c *SSHClient) SSHOptions() []string {
	opts := []string{
		"-F", "/dev/null",
		"-o", "BatchMode=no",
		"-o", "UserKnownHostsFile=" + c.KnownHosts,
		"-o", "GlobalKnownHostsFile=/dev/null",
		"-o", "StrictHostKeyChecking=yes",
		"-o", "ConnectTimeout=10",
		"-o", "IdentityAgent=none",
		"-o", "LogLevel=ERROR",
	}
	if c.KeyFile != "" {
		return append(opts, "-o", "PreferredAuthentications=publickey,keyboard-interactive",
			"-o", "IdentitiesOnly=yes", "-o", "IdentityFile="+c.KeyFile)
	}
	return append(opts, "-o", "PreferredAuthentications=keyboard-interactive,password", "-o", "PubkeyAuthentication=no")
}

// Target is USER@HOST.
func (c *SSHClient) Target() string { return c.User + "@" + c.Host }

// Command returns name with args set up for one login: a fresh code in the code file, the
// prompt record emptied, SSH_ASKPASS forced, a new session and process group (no controlling
// terminal; KillGroup ends ssh too) and SIGKILL if the test binary dies.
func (c *SSHClient) Command(ctx context.Context, name string, args ...string) *exec.Cmd {
	c.tb.Helper()
	code := c.code
	if code == "" {
		code = c.Codes.Next()
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "code"), []byte(code), 0o600); err != nil {
		c.tb.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.Dir, "prompts"), nil, 0o600); err != nil {
		c.tb.Fatal(err)
	}
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.Dir
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "SSH_AUTH_SOCK", "DISPLAY", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE":
			continue
		}
		env = append(env, kv)
	}
	cmd.Env = append(env, "SSH_ASKPASS="+c.Askpass, "SSH_ASKPASS_REQUIRE=force")
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	return cmd
}

// Prompts are the prompts the askpass program answered (or refused) since the last Command.
func (c *SSHClient) Prompts() []string {
	b, err := os.ReadFile(filepath.Join(c.Dir, "prompts"))
	if err != nil {
		return []string{err.Error()}
	}
	return strings.FieldsFunc(string(b), func(r rune) bool { return r == '\n' })
}

// sftpArgs are the arguments of `sftp -b batch`, output line-buffered so that the echoed
// commands and their errors interleave in order.
func (c *SSHClient) sftpArgs(batch string, extra ...string) []string {
	args := []string{"-oL", "-eL", "sftp", "-P", c.Port}
	args = append(args, c.SSHOptions()...)
	args = append(args, extra...)
	return append(args, "-b", batch, c.Target())
}

// Proc is a client process running in the background, in its own process group.
type Proc struct {
	tb   testing.TB
	cmd  *exec.Cmd
	out  *lockedBuffer
	done chan struct{}
	err  error
}

// Start starts cmd (from Command) with stdout and stderr merged, stdin empty; at cleanup a
// process still running is killed with its group.
func (c *SSHClient) Start(cmd *exec.Cmd) *Proc {
	c.tb.Helper()
	p := &Proc{tb: c.tb, cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = p.out, p.out
	if err := cmd.Start(); err != nil {
		c.tb.Fatalf("start %s: %v", cmd.Path, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	c.tb.Cleanup(func() {
		select {
		case <-p.done:
		default:
			p.KillGroup()
			<-p.done
		}
	})
	return p
}

// KillGroup sends SIGKILL to the process's group: the client and the ssh it started.
func (p *Proc) KillGroup() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
}

// Done is closed once the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Output is what the process wrote so far.
func (p *Proc) Output() string { return p.out.String() }

// Wait waits up to timeout for the process to exit and returns its output and exit code (-1
// if a signal ended it). On timeout it kills the group and fails the test.
func (p *Proc) Wait(timeout time.Duration) Result {
	p.tb.Helper()
	select {
	case <-p.done:
	case <-time.After(timeout):
		p.KillGroup()
		<-p.done
		p.tb.Fatalf("%s still running after %v; killed. Output:\n%s", strings.Join(p.cmd.Args, " "), timeout, p.Output())
	}
	var exitErr *exec.ExitError
	if p.err != nil && !errors.As(p.err, &exitErr) {
		p.tb.Fatalf("%s: %v\n%s", strings.Join(p.cmd.Args, " "), p.err, p.Output())
	}
	return Result{Stdout: p.Output(), Code: p.cmd.ProcessState.ExitCode()}
}

// lockedBuffer is a bytes.Buffer safe for a writer and a concurrent reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// writeBatch writes the lines of a batch file into the client's directory.
func (c *SSHClient) writeBatch(lines []string) string {
	c.tb.Helper()
	f, err := os.CreateTemp(c.Dir, "batch-*")
	if err != nil {
		c.tb.Fatal(err)
	}
	_, err = f.WriteString(strings.Join(lines, "\n") + "\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		c.tb.Fatal(err)
	}
	return f.Name()
}

// StartBatch starts `sftp -b` with lines as its batch file (one login) in the background.
// extra are sftp options placed before -b.
func (c *SSHClient) StartBatch(ctx context.Context, lines []string, extra ...string) *Proc {
	c.tb.Helper()
	return c.Start(c.Command(ctx, "stdbuf", c.sftpArgs(c.writeBatch(lines), extra...)...))
}

// Batch runs `sftp -b` with lines as its batch file and returns its merged output (Stdout)
// and exit code; it fails the test if sftp runs longer than timeout.
func (c *SSHClient) Batch(ctx context.Context, timeout time.Duration, lines []string, extra ...string) Result {
	c.tb.Helper()
	return c.StartBatch(ctx, lines, extra...).Wait(timeout)
}

// SFTPSession is one `sftp -b -` login fed one command at a time, so that a test can look at
// the daemon between commands.
type SFTPSession struct {
	c     *SSHClient
	p     *Proc
	stdin io.WriteCloser
	lines chan string // the lines sftp prints; all of them are also in p's output
}

// OpenSession logs in with `sftp -b -` and waits until the session answers a pwd.
func (c *SSHClient) OpenSession(ctx context.Context) *SFTPSession {
	c.tb.Helper()
	cmd := c.Command(ctx, "stdbuf", c.sftpArgs("-")...)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		c.tb.Fatal(err)
	}
	pr, pw, err := os.Pipe()
	if err != nil {
		c.tb.Fatal(err)
	}
	s := &SFTPSession{c: c, stdin: stdin, lines: make(chan string, 1024)}
	cmd.Stdout, cmd.Stderr = pw, pw
	if err := cmd.Start(); err != nil {
		pr.Close()
		pw.Close()
		c.tb.Fatalf("start sftp: %v", err)
	}
	pw.Close()
	p := &Proc{tb: c.tb, cmd: cmd, out: &lockedBuffer{}, done: make(chan struct{})}
	s.p = p
	go func() {
		sc := bufio.NewScanner(pr)
		for sc.Scan() {
			line := strings.TrimRight(sc.Text(), "\r")
			p.out.Write([]byte(line + "\n"))
			s.lines <- line
		}
		pr.Close()
		close(s.lines)
	}()
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	c.tb.Cleanup(func() {
		stdin.Close()
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			p.KillGroup()
			<-p.done
		}
	})
	if _, err := s.Run("pwd", 30*time.Second); err != nil {
		c.tb.Fatalf("sftp session did not start: %v", err)
	}
	return s
}

// Run sends one batch command and returns the lines sftp printed for it (its echo excluded).
// A pwd sent after it marks its end.
func (s *SFTPSession) Run(command string, timeout time.Duration) (string, error) {
	if strings.ContainsAny(command, "\n\r") {
		return "", fmt.Errorf("command %q holds a line break", command)
	}
	if _, err := io.WriteString(s.stdin, command+"\npwd\n"); err != nil {
		return "", fmt.Errorf("send %q: %w (output so far:\n%s)", command, err, s.p.Output())
	}
	deadline := time.After(timeout)
	var out []string
	state := 0 // 0: before the command's echo, 1: its output, 2: after the pwd echo
	for {
		select {
		case line, ok := <-s.lines:
			if !ok {
				return strings.Join(out, "\n"), fmt.Errorf("sftp ended during %q (output:\n%s)", command, s.p.Output())
			}
			switch {
			case state == 0 && strings.HasPrefix(line, "sftp> "):
				state = 1 // the command's echo (sftp escapes control characters in it)
			case state == 1 && line == "sftp> pwd":
				state = 2
			case state == 1:
				out = append(out, line)
			case state == 2 && strings.HasPrefix(line, "Remote working directory: "):
				return strings.Join(out, "\n"), nil
			}
		case <-deadline:
			return strings.Join(out, "\n"), fmt.Errorf("no answer to %q within %v (output:\n%s)", command, timeout, s.p.Output())
		}
	}
}

// Close ends the session (EOF on its batch input) and returns its exit code and whole output.
func (s *SFTPSession) Close(timeout time.Duration) Result {
	s.c.tb.Helper()
	s.stdin.Close()
	go func() {
		for range s.lines { // keep sftp from blocking on output nobody reads any more
		}
	}()
	return s.p.Wait(timeout)
}
