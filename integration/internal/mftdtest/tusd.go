package mftdtest

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Tusd is a tusd server (the benchmark peer) serving https://127.0.0.1:PORT/files/ with a
// self-signed certificate.
type Tusd struct {
	Addr      string
	UploadDir string // the file store's folder; "" with another store
	CertFile  string
	LogPath   string
	cmd       *exec.Cmd
	exited    chan struct{}
	client    *http.Client
}

// TusdPath runs integration/scripts/install-tusd.sh (which builds tusd once into the tool cache)
// and returns the path it prints.
func TusdPath(root string) (string, error) {
	cmd := exec.Command("bash", filepath.Join(root, "integration", "scripts", "install-tusd.sh"))
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return "", fmt.Errorf("install-tusd.sh: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	return strings.TrimSpace(lines[len(lines)-1]), nil
}

// StartTusd starts bin with a file store in a temp folder, TLS and downloads disabled, and waits
// until it answers. It is killed at cleanup.
func StartTusd(tb testing.TB, bin string) *Tusd {
	tb.Helper()
	dir := filepath.Join(tb.TempDir(), "uploads")
	s := StartTusdWith(tb, bin, []string{"-upload-dir", dir}, nil)
	s.UploadDir = dir
	return s
}

// StartTusdWith is StartTusd with the store given by storeArgs (e.g. -s3-bucket B -s3-endpoint
// URL) and, if env is not nil, that environment instead of this process's.
func StartTusdWith(tb testing.TB, bin string, storeArgs, env []string) *Tusd {
	tb.Helper()
	root := tb.TempDir()
	port, err := FreePort()
	if err != nil {
		tb.Fatal(err)
	}
	cert, key, err := SelfSignedCert(root)
	if err != nil {
		tb.Fatal(err)
	}
	s := &Tusd{
		Addr:     net.JoinHostPort("127.0.0.1", strconv.Itoa(port)),
		CertFile: cert,
		LogPath:  filepath.Join(root, "tusd.log"),
		exited:   make(chan struct{}),
	}
	logf, err := os.Create(s.LogPath)
	if err != nil {
		tb.Fatal(err)
	}
	args := append([]string{"-host", "127.0.0.1", "-port", strconv.Itoa(port), "-base-path", "/files/",
		"-disable-download", "-tls-certificate", cert, "-tls-key", key}, storeArgs...)
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.SysProcAttr = DieWithParent()
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		tb.Fatalf("start tusd: %v", err)
	}
	go func() {
		s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	tb.Cleanup(func() {
		s.cmd.Process.Kill()
		<-s.exited
		if tb.Failed() {
			tb.Logf("tusd log:\n%s", tail(s.LogPath, 16<<10))
		}
	})
	if s.client, err = NewHTTPSClient(cert); err != nil {
		tb.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			tb.Fatalf("tusd exited during start-up:\n%s", tail(s.LogPath, 16<<10))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodOptions, "https://"+s.Addr+"/files/", nil)
		resp, err := s.client.Do(req)
		cancel()
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode < 300 {
				return s
			}
		}
		if time.Now().After(deadline) {
			tb.Fatalf("tusd not answering after 30s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// PID of the tusd process.
func (s *Tusd) PID() int { return s.cmd.Process.Pid }

// Client is a tus client for this server.
func (s *Tusd) Client() *Client { return &Client{HTTP: s.client, Base: "https://" + s.Addr} }

// Stop sends SIGTERM and waits up to a minute for tusd to exit.
func (s *Tusd) Stop(tb testing.TB) {
	tb.Helper()
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		tb.Fatalf("tusd (pid %d) still running a minute after SIGTERM", s.PID())
	}
}
