package integration

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// The harness proper (daemon start/stop/kill/restart, accounts, the tus and API client, the data
// generator) lives in internal/mftdtest, which the benchmark shares. These are the test-side
// shortcuts that fail the test on anything unexpected.

// startDaemon runs the binary built by TestMain with a fresh data_dir and port.
func startDaemon(t *testing.T, o mftdtest.Options) *mftdtest.Daemon {
	t.Helper()
	return mftdtest.Start(t, mftdBin, o)
}

// testCtx is cancelled when the test ends or after limit.
func testCtx(t *testing.T, limit time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	t.Cleanup(cancel)
	return ctx
}

// create makes an upload of size bytes named name and returns its absolute URL.
func create(t *testing.T, ctx context.Context, c *mftdtest.Client, size int64, meta map[string]string) string {
	t.Helper()
	r, err := c.Create(ctx, size, meta)
	if err != nil {
		t.Fatalf("tus create: %v", err)
	}
	if r.Status != http.StatusCreated {
		t.Fatalf("tus create: %s; want 201", r)
	}
	loc := r.Header.Get("Location")
	if loc == "" {
		t.Fatalf("tus create: 201 without Location")
	}
	if got := r.Header.Get("Tus-Resumable"); got != "1.0.0" {
		t.Errorf("tus create: Tus-Resumable %q, want 1.0.0", got)
	}
	return c.Resolve(loc)
}

// head returns the upload's Upload-Offset, failing unless the answer is 200 with an offset.
func head(t *testing.T, ctx context.Context, c *mftdtest.Client, url string) int64 {
	t.Helper()
	r, err := c.Head(ctx, url)
	if err != nil {
		t.Fatalf("tus HEAD: %v", err)
	}
	if r.Status != http.StatusOK || r.Offset() < 0 {
		t.Fatalf("tus HEAD %s: %s; want 200 with Upload-Offset", url, r)
	}
	return r.Offset()
}

// patch sends n bytes at offset and fails unless the answer is 204 with offset+n.
func patch(t *testing.T, ctx context.Context, c *mftdtest.Client, url string, offset int64, body io.Reader, n int64, checksum string) {
	t.Helper()
	r, err := c.Patch(ctx, url, offset, body, n, checksum)
	if err != nil {
		t.Fatalf("tus PATCH at %d: %v", offset, err)
	}
	if r.Status != http.StatusNoContent || r.Offset() != offset+n {
		t.Fatalf("tus PATCH %d bytes at %d: %s; want 204 with Upload-Offset %d", n, offset, r, offset+n)
	}
}

// waitTerminal polls the upload's status until it is available, quarantined or rejected.
func waitTerminal(t *testing.T, ctx context.Context, c *mftdtest.Client, url string, limit time.Duration) mftdtest.UploadInfo {
	t.Helper()
	info, err := c.WaitTerminal(ctx, mftdtest.UploadID(url), limit, 100*time.Millisecond)
	if err != nil {
		t.Fatalf("waiting for upload %s to finish processing: %v", mftdtest.UploadID(url), err)
	}
	return info
}

// wantAvailable checks a finished upload: available, with the source's size and SHA-256.
func wantAvailable(t *testing.T, info mftdtest.UploadInfo, size int64, sha string) {
	t.Helper()
	if info.Status != "available" {
		t.Fatalf("upload %s: status %q (reason %q), want available", info.ID, info.Status, info.Reason)
	}
	if info.SHA256 != sha {
		t.Errorf("upload %s: sha256 %s, want the source's %s", info.ID, info.SHA256, sha)
	}
	if info.Size != size || info.Offset != size {
		t.Errorf("upload %s: size %d offset %d, want both %d", info.ID, info.Size, info.Offset, size)
	}
}

// arrivals lists the caller's Arrivals.
func arrivals(t *testing.T, ctx context.Context, c *mftdtest.Client) []mftdtest.Arrival {
	t.Helper()
	files, err := c.Arrivals(ctx)
	if err != nil {
		t.Fatalf("arrivals: %v", err)
	}
	return files
}

// findArrival returns the entry named name, failing if there is none.
func findArrival(t *testing.T, files []mftdtest.Arrival, name string) mftdtest.Arrival {
	t.Helper()
	for _, f := range files {
		if f.Name == name {
			return f
		}
	}
	t.Fatalf("arrivals: no entry named %q in %+v", name, files)
	return mftdtest.Arrival{}
}

// genFile writes size deterministic bytes into the test's temp dir and returns path and SHA-256.
func genFile(t *testing.T, name string, size int64, seed uint64) (string, string) {
	t.Helper()
	path := t.TempDir() + "/" + name
	sum, err := mftdtest.WriteFile(path, size, seed)
	if err != nil {
		t.Fatal(err)
	}
	return path, sum
}

// readAllData returns size deterministic bytes (for small uploads).
func readAllData(t *testing.T, size int64, seed uint64) []byte {
	t.Helper()
	b, err := io.ReadAll(mftdtest.NewData(seed, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
