// Package mftdtest runs the real mftd binary for end-to-end tests and benchmarks: it builds the
// binary, writes a temp config, starts, stops, kills and restarts the daemon, creates accounts and
// signs them in, and talks to it over HTTPS with a minimal tus client. The integration tests
// (package integration) and the benchmark (integration/bench) share it.
//
// Functions that take a testing.TB fail the test themselves; the wire-level client methods return
// errors and status codes so that tests can assert on them.
package mftdtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// RepoRoot is the directory holding the module's go.mod, found from the working directory up.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if data, err := os.ReadFile(filepath.Join(dir, "go.mod")); err == nil && bytes.Contains(data, []byte("module github.com/mftd/mftd\n")) {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("mftdtest: no go.mod of github.com/mftd/mftd above the working directory")
		}
		dir = parent
	}
}

// Build compiles ./cmd/mftd of the repository at root into dir and returns the binary's path.
func Build(root, dir string) (string, error) {
	bin := filepath.Join(dir, "mftd")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/mftd")
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build ./cmd/mftd: %w\n%s", err, out)
	}
	return bin, nil
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Options shape a daemon's config. The zero value is the minimal valid config of the contract.
type Options struct {
	// StorageYAML replaces the default storage section ("storage: {backend: local}"); it must
	// be a complete top-level YAML "storage:" block.
	StorageYAML string
	// CheckpointBytes sets limits.checkpoint_bytes (e.g. "8MiB"); empty keeps the daemon's default.
	CheckpointBytes string
	// ArrivalsRetention sets retention.arrivals; empty means "720h".
	ArrivalsRetention string
	// IncompleteUploads and SweepInterval set retention.incomplete_uploads and
	// retention.sweep_interval; empty means "24h" and "1m".
	IncompleteUploads string
	SweepInterval     string
	// ReadHeaderTimeout, IdleTimeout and MaxHeaderBytes set the https keys of the same names
	// (e.g. "1s", "2s", "8KiB"); empty keeps the daemon's defaults.
	ReadHeaderTimeout string
	IdleTimeout       string
	MaxHeaderBytes    string
	// NotifyDir sets notify.dir: every message to a user is written there as a file. Empty: no
	// notifier (password reset and emergency access answer 503).
	NotifyDir string
	// AdminListen sets admin.listen, the host:port of the metrics listener. Empty: none.
	AdminListen string
	// SessionIdle sets auth.session_idle (e.g. "30m"); empty keeps the daemon's default.
	SessionIdle string
	// Lockout sets auth.lockout; zero fields keep the daemon's defaults.
	Lockout Lockout
	// SFTP turns the SFTP door on, on a free port of 127.0.0.1 (Daemon.SFTPAddr).
	SFTP bool
	// ScannerYAML is a complete top-level "scanner:" block (e.g. with clamd's address); empty
	// leaves the section out (built-in checks only).
	ScannerYAML string
	// QuotasYAML is a complete top-level "quotas:" block (e.g. "quotas: {user_arrivals_bytes:
	// 10MiB}"); empty leaves the section out (no quotas).
	QuotasYAML string
	// EgressYAML is a complete top-level "egress:" block (staging_dir, portals, shares); empty
	// leaves the section out (no egress).
	EgressYAML string
	// sftpListen is set by Start when SFTP is on.
	sftpListen string
}

// Lockout is auth.lockout. Zero fields keep the daemon's defaults (5, 50, 15m, 15m).
type Lockout struct {
	Threshold        int
	AddressThreshold int
	Window           string // e.g. "15m"
	Duration         string
}

// Daemon is one mftd server with its own temp data_dir and port. It can be stopped, killed and
// started again on the same data_dir and port.
type Daemon struct {
	tb         testing.TB
	Bin        string
	Root       string // temp folder holding the config, the log and data/
	DataDir    string
	ConfigPath string
	LogPath    string
	SFTPAddr   string // host:port of the SFTP door, if Options.SFTP
	Addr       string // 127.0.0.1:PORT

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has been reaped
	state  *os.ProcessState
	client *http.Client
}

// ConfigYAML is the config file the daemon runs with.
func ConfigYAML(dataDir, listen string, o Options) string {
	ret := o.ArrivalsRetention
	if ret == "" {
		ret = "720h"
	}
	var b strings.Builder
	fmt.Fprintf(&b, "data_dir: %q\n", dataDir)
	fmt.Fprintf(&b, "https:\n  listen: %q\n  tls: {cert_file: \"\", key_file: \"\"}\n", listen)
	for _, kv := range [][2]string{
		{"read_header_timeout", o.ReadHeaderTimeout}, {"idle_timeout", o.IdleTimeout}, {"max_header_bytes", o.MaxHeaderBytes},
	} {
		if kv[1] != "" {
			fmt.Fprintf(&b, "  %s: %s\n", kv[0], kv[1])
		}
	}
	if o.StorageYAML != "" {
		b.WriteString(strings.TrimRight(o.StorageYAML, "\n") + "\n")
	} else {
		b.WriteString("storage: {backend: local}\n")
	}
	fmt.Fprintf(&b, "retention: {arrivals: %s, incomplete_uploads: %s, sweep_interval: %s}\n",
		ret, or(o.IncompleteUploads, "24h"), or(o.SweepInterval, "1m"))
	b.WriteString("limits:\n  max_file_size: 1TiB\n")
	if o.CheckpointBytes != "" {
		fmt.Fprintf(&b, "  checkpoint_bytes: %s\n", o.CheckpointBytes)
	}
	var auth []string
	if o.SessionIdle != "" {
		auth = append(auth, "  session_idle: "+o.SessionIdle)
	}
	var lockout []string
	for _, kv := range [][2]string{
		{"threshold", itoa(o.Lockout.Threshold)}, {"address_threshold", itoa(o.Lockout.AddressThreshold)},
		{"window", o.Lockout.Window}, {"duration", o.Lockout.Duration},
	} {
		if kv[1] != "" {
			lockout = append(lockout, kv[0]+": "+kv[1])
		}
	}
	if len(lockout) > 0 {
		auth = append(auth, "  lockout: {"+strings.Join(lockout, ", ")+"}")
	}
	if len(auth) > 0 {
		b.WriteString("auth:\n" + strings.Join(auth, "\n") + "\n")
	}
	if o.NotifyDir != "" {
		fmt.Fprintf(&b, "notify: {dir: %q}\n", o.NotifyDir)
	}
	if o.AdminListen != "" {
		fmt.Fprintf(&b, "admin: {listen: %q}\n", o.AdminListen)
	}
	if o.sftpListen != "" {
		fmt.Fprintf(&b, "sftp: {listen: %q}\n", o.sftpListen)
	}
	if o.ScannerYAML != "" {
		b.WriteString(strings.TrimRight(o.ScannerYAML, "\n") + "\n")
	}
	if o.QuotasYAML != "" {
		b.WriteString(strings.TrimRight(o.QuotasYAML, "\n") + "\n")
	}
	if o.EgressYAML != "" {
		b.WriteString(strings.TrimRight(o.EgressYAML, "\n") + "\n")
	}
	b.WriteString("log: {level: info, format: json}\n")
	return b.String()
}

// itoa is n in decimal, or "" for 0 (the key is left out).
func itoa(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

// Start writes a config into a fresh temp folder, starts `mftd serve` and waits until /readyz
// answers 200 over TLS verified against the generated certificate. At cleanup a still running
// daemon is killed, and if the test failed the tail of its log is printed.
func Start(tb testing.TB, bin string, o Options) *Daemon {
	tb.Helper()
	root := tb.TempDir()
	port, err := FreePort()
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	d := &Daemon{
		tb:         tb,
		Bin:        bin,
		Root:       root,
		DataDir:    filepath.Join(root, "data"),
		ConfigPath: filepath.Join(root, "mftd.yaml"),
		LogPath:    filepath.Join(root, "mftd.log"),
		Addr:       net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
	}
	if o.SFTP {
		sp, err := FreePort()
		if err != nil {
			tb.Fatalf("free port: %v", err)
		}
		d.SFTPAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(sp))
		o.sftpListen = d.SFTPAddr
	}
	if err := os.WriteFile(d.ConfigPath, []byte(ConfigYAML(d.DataDir, d.Addr, o)), 0o600); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if d.Running() {
			d.signal(syscall.SIGKILL)
			d.wait(30 * time.Second)
		}
		if tb.Failed() {
			tb.Logf("mftd log (%s), last 64 KiB:\n%s", d.LogPath, tail(d.LogPath, 64<<10))
		}
	})
	d.Launch()
	return d
}

// Launch starts the daemon process (again) on the same config and data_dir and waits until it
// is ready. Output is appended to LogPath.
func (d *Daemon) Launch() {
	d.tb.Helper()
	if d.Running() {
		d.tb.Fatal("mftd: Launch while the previous process still runs")
	}
	logf, err := os.OpenFile(d.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		d.tb.Fatal(err)
	}
	fmt.Fprintf(logf, "=== %s: mftd serve --config %s\n", time.Now().Format(time.RFC3339Nano), d.ConfigPath)
	cmd := exec.Command(d.Bin, "serve", "--config", d.ConfigPath)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = DieWithParent()
	if err := cmd.Start(); err != nil {
		logf.Close()
		d.tb.Fatalf("start mftd: %v", err)
	}
	exited := make(chan struct{})
	d.mu.Lock()
	d.cmd, d.exited, d.state, d.client = cmd, exited, nil, nil
	d.mu.Unlock()
	go func() {
		cmd.Wait() // the exit status is in cmd.ProcessState
		logf.Close()
		d.mu.Lock()
		d.state = cmd.ProcessState
		d.mu.Unlock()
		close(exited)
	}()
	if err := d.waitReady(60 * time.Second); err != nil {
		d.tb.Fatalf("mftd did not become ready: %v", err)
	}
}

func (d *Daemon) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	certPath := d.CertFile()
	var last error
	for time.Now().Before(deadline) {
		select {
		case <-d.Exited():
			return fmt.Errorf("mftd exited during start-up (%v)", d.processState())
		default:
		}
		client, err := NewHTTPSClient(certPath)
		if err != nil {
			last = err
			time.Sleep(50 * time.Millisecond)
			continue
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, d.URL("/readyz"), nil)
		resp, err := client.Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				cancel()
				d.mu.Lock()
				d.client = client
				d.mu.Unlock()
				return nil
			}
			err = fmt.Errorf("GET /readyz: %s", resp.Status)
		}
		cancel()
		last = err
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("timed out after %v; last: %v", timeout, last)
}

// NewHTTPSClient trusts only the PEM certificate in certFile. HTTP/1.1, like most tus clients.
func NewHTTPSClient(certFile string) (*http.Client, error) {
	pem, err := os.ReadFile(certFile)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%s: no PEM certificate", certFile)
	}
	return &http.Client{Transport: &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
		MaxIdleConnsPerHost: 8,
		IdleConnTimeout:     30 * time.Second,
		TLSHandshakeTimeout: 10 * time.Second,
	}}, nil
}

// CertFile is the self-signed certificate the daemon generates into its data_dir.
func (d *Daemon) CertFile() string { return filepath.Join(d.DataDir, "tls", "cert.pem") }

// DBPath is the SQLite state database.
func (d *Daemon) DBPath() string { return filepath.Join(d.DataDir, "mftd.db") }

// URL is https://ADDR + path.
func (d *Daemon) URL(path string) string { return "https://" + d.Addr + path }

// HTTP is a client that trusts the daemon's certificate (valid while the daemon runs).
func (d *Daemon) HTTP() *http.Client {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.client == nil {
		d.tb.Fatal("mftd: HTTP client asked for while the daemon is not running")
	}
	return d.client
}

// Client is an API and tus client for the given bearer token.
func (d *Daemon) Client(token string) *Client {
	return &Client{HTTP: d.HTTP(), Base: "https://" + d.Addr, Token: token}
}

// PID of the current (or last) process.
func (d *Daemon) PID() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.cmd == nil || d.cmd.Process == nil {
		return 0
	}
	return d.cmd.Process.Pid
}

// Exited is closed once the current process has exited and been reaped.
func (d *Daemon) Exited() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.exited == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return d.exited
}

// Running reports whether the current process has not exited yet.
func (d *Daemon) Running() bool {
	select {
	case <-d.Exited():
		return false
	default:
		return true
	}
}

func (d *Daemon) processState() *os.ProcessState {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.state
}

func (d *Daemon) signal(sig os.Signal) error {
	d.mu.Lock()
	cmd := d.cmd
	d.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return errors.New("no process")
	}
	return cmd.Process.Signal(sig)
}

// wait waits for the process to exit; false on timeout.
func (d *Daemon) wait(timeout time.Duration) bool {
	select {
	case <-d.Exited():
		return true
	case <-time.After(timeout):
		return false
	}
}

// Terminate sends SIGTERM and returns without waiting.
func (d *Daemon) Terminate() {
	d.tb.Helper()
	if err := d.signal(syscall.SIGTERM); err != nil {
		d.tb.Fatalf("SIGTERM mftd: %v", err)
	}
}

// WaitExit waits up to timeout for the process to exit and returns its exit code
// (-1 if a signal ended it). It fails the test on timeout.
func (d *Daemon) WaitExit(timeout time.Duration) int {
	d.tb.Helper()
	if !d.wait(timeout) {
		d.tb.Fatalf("mftd (pid %d) still running %v after SIGTERM", d.PID(), timeout)
	}
	return d.processState().ExitCode()
}

// Stop sends SIGTERM, waits for the exit, and fails the test unless the exit code is 0.
func (d *Daemon) Stop() {
	d.tb.Helper()
	d.Terminate()
	if code := d.WaitExit(60 * time.Second); code != 0 {
		d.tb.Fatalf("mftd exited with %v after SIGTERM, want exit status 0", d.processState())
	}
}

// Kill sends SIGKILL and waits until the process is gone.
func (d *Daemon) Kill() {
	d.tb.Helper()
	if err := d.signal(syscall.SIGKILL); err != nil {
		d.tb.Fatalf("SIGKILL mftd: %v", err)
	}
	if !d.wait(30 * time.Second) {
		d.tb.Fatalf("mftd (pid %d) survived SIGKILL for 30s", d.PID())
	}
}

// Result is the outcome of one admin command.
type Result struct {
	Stdout, Stderr string
	Code           int
}

// Admin runs `mftd ARGS... --config CONFIG` with stdin and returns its output and exit code. It
// fails the test only if the command could not be run at all or ran over a minute.
func (d *Daemon) Admin(stdin string, args ...string) Result {
	d.tb.Helper()
	return RunBin(d.tb, d.Bin, stdin, append(args, "--config", d.ConfigPath)...)
}

// RunBin runs the binary with args and stdin, with a one-minute limit.
func RunBin(tb testing.TB, bin, stdin string, args ...string) Result {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var exitErr *exec.ExitError
	if err != nil && !errors.As(err, &exitErr) {
		tb.Fatalf("mftd %s: %v", strings.Join(args, " "), err)
	}
	if ctx.Err() != nil {
		tb.Fatalf("mftd %s: still running after a minute", strings.Join(args, " "))
	}
	return Result{Stdout: out.String(), Stderr: errb.String(), Code: cmd.ProcessState.ExitCode()}
}

// DieWithParent makes a child process get SIGKILL when the test binary dies, so that a test
// binary killed by `go test -timeout` leaves no server running (Linux only).
func DieWithParent() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

func tail(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err.Error()
	}
	if st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, _ := io.ReadAll(f)
	return string(b)
}

// or is v, or def if v is empty.
func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
