package integration

import (
	"bytes"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// nodeUpload is the JSON line integration/node/upload.mjs prints on success.
type nodeUpload struct {
	URL       string `json:"url"`
	Retries   int    `json:"retries"`
	BytesSent int64  `json:"bytesSent"`
	Size      int64  `json:"size"`
	Requests  int    `json:"requests"`
}

// runNodeUpload uploads file with tus-js-client (integration/node/upload.mjs), trusting certFile.
func runNodeUpload(t *testing.T, endpoint, token, certFile, file, name, sha string, limit time.Duration) nodeUpload {
	t.Helper()
	ctx := testCtx(t, limit)
	args := []string{filepath.Join(nodeDir, "upload.mjs"), "--endpoint", endpoint, "--token=" + token, "--file", file, "--name", name}
	if sha != "" {
		args = append(args, "--sha256", sha)
	}
	cmd := exec.CommandContext(ctx, "node", args...)
	cmd.Dir = nodeDir
	cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+certFile)
	cmd.WaitDelay = 5 * time.Second
	cmd.SysProcAttr = mftdtest.DieWithParent()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("upload.mjs stderr:\n%s", stderr.String())
	if err != nil {
		t.Fatalf("node upload.mjs: %v (ctx: %v)\nstdout: %s", err, ctx.Err(), stdout.String())
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	var out nodeUpload
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		t.Fatalf("upload.mjs output %q: %v", stdout.String(), err)
	}
	return out
}

// A researcher's tus-js-client upload of 1 GiB loses its connection after ~300 MiB; the client
// resumes on its own, and the file arrives whole, hashed, in Arrivals with the right expiry.
func TestTusJSClientResumesAfterCut(t *testing.T) {
	const size = 1 << 30
	const cutAt = 300 << 20
	src, sum := genFile(t, "survey.bin", size, 1)

	d := startDaemon(t, mftdtest.Options{})
	_, alice := d.NewUser("alice")
	proxy := startProxy(t, d.Addr)
	// The first connection to carry 300 MiB towards the server is the one carrying the PATCH,
	// whether or not the creation POST shared it.
	proxy.CutAfter(0, cutAt)

	out := runNodeUpload(t, "https://"+proxy.Addr()+"/files/", alice.Token, d.CertFile(), src, "survey.bin", sum, 4*time.Minute)
	t.Logf("upload.mjs: %+v", out)

	if proxy.Cuts() != 1 {
		t.Fatalf("the proxy cut %d connections, want 1 (did the upload go through the proxy? url %s)", proxy.Cuts(), out.URL)
	}
	if out.Retries < 1 {
		t.Errorf("tus-js-client reported %d retries, want >= 1 after its connection was cut", out.Retries)
	}
	// Resuming means asking the server for its offset, not starting again: with offsets made
	// durable at least every 64 MiB (the default checkpoint), at most ~64 MiB plus what was in
	// flight is sent twice.
	if resent := out.BytesSent - size; resent > 128<<20 {
		t.Errorf("tus-js-client sent %d bytes for a %d-byte file: %d MiB again after the cut at %d MiB; the server's offset after the cut lost too much",
			out.BytesSent, size, resent>>20, cutAt>>20)
	}

	ctx := testCtx(t, 4*time.Minute)
	info := waitTerminal(t, ctx, alice, out.URL, 3*time.Minute)
	wantAvailable(t, info, size, sum)

	a := findArrival(t, arrivals(t, ctx, alice), "survey.bin")
	if a.SHA256 != sum {
		t.Errorf("arrival sha256 %s, want the source's %s", a.SHA256, sum)
	}
	if a.Size != size {
		t.Errorf("arrival size %d, want %d", a.Size, size)
	}
	if got := a.ExpiresAt.Sub(a.CreatedAt); got < 720*time.Hour-time.Second || got > 720*time.Hour+time.Second {
		t.Errorf("arrival created_at %v expires_at %v: %v apart, want retention.arrivals = 720h", a.CreatedAt, a.ExpiresAt, got)
	}
	if a.CreatedAt.IsZero() || time.Since(a.CreatedAt) > time.Hour || time.Until(a.CreatedAt) > time.Minute {
		t.Errorf("arrival created_at %v is not about now", a.CreatedAt)
	}
}
