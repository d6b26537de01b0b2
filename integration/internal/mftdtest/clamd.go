package mftdtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// What the test clamd detects (integration/scripts/clamd.sh writes its signature database), and
// the names it reports: clamd appends ".UNOFFICIAL" to the name of a signature that is not from
// ClamAV's own signed databases.
const (
	// ClamdTestSignature, anywhere in a file, makes the test clamd report ClamdTestSignatureName.
	ClamdTestSignature     = "MFTD-TEST-SIGNATURE-3f9c1e0a"
	ClamdTestSignatureName = "Mftd-Test-Signature.UNOFFICIAL"
	// ClamdEICARName is reported for a file holding the EICAR test string.
	ClamdEICARName = "Eicar-Test-Signature.UNOFFICIAL"
	// ClamdTestFileName is reported for every sample of ClamavTestFiles.
	ClamdTestFileName = "ClamAV-Test-File.UNOFFICIAL"
	// ClamavTestFiles is the folder of the clamav-testfiles package: real samples (packed
	// executables, archives, documents, mail) that all hold one small test program.
	ClamavTestFiles = "/usr/share/clamav-testfiles"
)

// ClamdOptions shape a test clamd. The zero value is what StartClamd starts.
type ClamdOptions struct {
	// StreamMaxLength is clamd's StreamMaxLength, e.g. "1M"; "" means 1000M.
	StreamMaxLength string
	// MaxFileSize and MaxScanSize are clamd's limits of those names, e.g. "2000M"; "" means
	// 1000M. clamd reports a stream over either as Heuristics.Limits.Exceeded (FOUND), so a
	// clean file of 1 GiB or more needs both raised, like StreamMaxLength.
	MaxFileSize string
	MaxScanSize string
	// DisableCache turns clamd's cache of clean contents off (DisableCache yes). With it on, as
	// by default, clamd answers for a content it found clean before once it has hashed it (MD5)
	// instead of scanning it again: a benchmark that scans one file repeatedly turns it off.
	DisableCache bool
	// Nice is clamd's CPU niceness (nice -n), 0 to 19.
	Nice int
}

// streamMaxLength is the StreamMaxLength clamd.sh writes for o.
func (o ClamdOptions) streamMaxLength() string { return or(o.StreamMaxLength, "1000M") }

// Clamd is a throwaway clamd serving on 127.0.0.1 and on a unix socket, started by
// integration/scripts/clamd.sh (which installs ClamAV with apt-get if it is missing).
type Clamd struct {
	tb     testing.TB
	script string
	dir    string
	port   int
	o      ClamdOptions
}

// StartClamd starts a clamd with the test signature database and waits until it answers PING.
// It is stopped at cleanup; if the test failed, the tail of its log is printed. A clamd that
// cannot start fails the test.
func StartClamd(tb testing.TB) *Clamd { return StartClamdWith(tb, ClamdOptions{}) }

// StartClamdWith is StartClamd with options.
func StartClamdWith(tb testing.TB, o ClamdOptions) *Clamd {
	tb.Helper()
	root, err := RepoRoot()
	if err != nil {
		tb.Fatal(err)
	}
	port, err := FreePort()
	if err != nil {
		tb.Fatalf("free port: %v", err)
	}
	// Not tb.TempDir(): the unix socket's path must stay under 108 bytes whatever the test's name.
	dir, err := os.MkdirTemp("", "mftd-clamd-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	c := &Clamd{
		tb:     tb,
		script: filepath.Join(root, "integration", "scripts", "clamd.sh"),
		dir:    dir,
		port:   port,
		o:      o,
	}
	tb.Cleanup(func() {
		if out, err := exec.Command("bash", c.script, "stop", c.dir).CombinedOutput(); err != nil {
			tb.Errorf("stop clamd: %v\n%s", err, out)
		}
		if tb.Failed() {
			tb.Logf("clamd log (%s), last 16 KiB:\n%s", filepath.Join(dir, "clamd.log"), c.Log())
		}
	})
	c.Start()
	return c
}

// Addr is clamd's TCP address as scanner.ClamdConfig takes it: "tcp://127.0.0.1:PORT".
func (c *Clamd) Addr() string { return "tcp://127.0.0.1:" + strconv.Itoa(c.port) }

// SocketAddr is clamd's unix socket address: "unix:///…/clamd.sock".
func (c *Clamd) SocketAddr() string { return "unix://" + filepath.Join(c.dir, "clamd.sock") }

// Start (re)starts clamd on the same folder, port and socket and returns once it answers PING;
// it does nothing if clamd is running.
func (c *Clamd) Start() {
	c.tb.Helper()
	args := []string{c.script, "start", c.dir, strconv.Itoa(c.port)}
	if c.o != (ClamdOptions{}) {
		// clamd.sh takes an empty argument as its default.
		nocache := "no"
		if c.o.DisableCache {
			nocache = "yes"
		}
		args = append(args, c.o.StreamMaxLength, c.o.MaxFileSize, c.o.MaxScanSize, nocache, strconv.Itoa(c.o.Nice))
	}
	if out, err := exec.Command("bash", args...).CombinedOutput(); err != nil {
		c.tb.Fatalf("start clamd on %s (integration/scripts/clamd.sh): %v\n%s", c.Addr(), err, out)
	}
}

// Stop stops clamd and waits until it has exited (SIGTERM; SIGKILL after 10 s).
func (c *Clamd) Stop() {
	c.tb.Helper()
	if out, err := exec.Command("bash", c.script, "stop", c.dir).CombinedOutput(); err != nil {
		c.tb.Fatalf("stop clamd: %v\n%s", err, out)
	}
}

// PID is the process ID of the running clamd (from clamd.sh's DIR/clamd.pid), e.g. to read its
// CPU time with CPUSeconds. It fails the test if clamd is not running.
func (c *Clamd) PID() int {
	c.tb.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "clamd.pid"))
	if err != nil {
		c.tb.Fatalf("clamd not running: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		c.tb.Fatalf("clamd.pid: %v", err)
	}
	return pid
}

// ClientConfig writes a config file for clamd's own client, `clamdscan -c FILE`, and returns its
// path. It names only the TCP address (clamdscan prefers LocalSocket when a config names both),
// so clamdscan reaches clamd the way Addr does, and clamd's StreamMaxLength: clamdscan --stream
// stops sending a file at the StreamMaxLength of the config it reads (100M if unset) and gets
// a verdict on that prefix only.
func (c *Clamd) ClientConfig() string {
	c.tb.Helper()
	path := filepath.Join(c.dir, "clamdscan.conf")
	conf := fmt.Sprintf("TCPSocket %d\nTCPAddr 127.0.0.1\nStreamMaxLength %s\n", c.port, c.o.streamMaxLength())
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		c.tb.Fatal(err)
	}
	return path
}

// Log is the last 16 KiB of clamd's log file.
func (c *Clamd) Log() string {
	return tail(filepath.Join(c.dir, "clamd.log"), 16<<10)
}
