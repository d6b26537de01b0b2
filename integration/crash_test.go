package integration

import (
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// countingWriter feeds a pipe and counts what went in.
type countingWriter struct {
	w io.Writer
	n atomic.Int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n.Add(int64(n))
	return n, err
}

// patchAndKill PATCHes all of f to url through a pipe, as fast as the daemon takes it, and kills
// the daemon with SIGKILL once killAfter bytes have been fed; it returns how many were fed.
func patchAndKill(t *testing.T, ctx context.Context, d *mftdtest.Daemon, c *mftdtest.Client, url string, f io.Reader, size, killAfter int64) int64 {
	t.Helper()
	pr, pw := io.Pipe()
	fed := &countingWriter{w: pw}
	type result struct {
		r   *mftdtest.Response
		err error
	}
	patched := make(chan result, 1)
	go func() {
		r, err := c.Patch(ctx, url, 0, pr, size, "")
		pr.CloseWithError(errors.New("PATCH returned")) // unblock the feeder
		patched <- result{r, err}
	}()
	fedErr := make(chan error, 1)
	go func() {
		_, err := io.Copy(fed, f)
		pw.CloseWithError(err)
		fedErr <- err
	}()

	deadline := time.Now().Add(2 * time.Minute)
	for fed.n.Load() < killAfter {
		select {
		case res := <-patched:
			t.Fatalf("PATCH ended after only %d bytes were fed: %v %v", fed.n.Load(), res.r, res.err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("only %d bytes fed into the PATCH in 2 minutes", fed.n.Load())
		}
		time.Sleep(time.Millisecond)
	}
	d.Kill() // SIGKILL, and wait until the process is gone
	sent := fed.n.Load()
	res := <-patched
	<-fedErr
	if res.err == nil && res.r.Status == http.StatusNoContent {
		t.Fatalf("PATCH succeeded although the daemon was killed after %d of %d bytes: %s", sent, size, res.r)
	}
	t.Logf("killed mftd after %d bytes had been fed into the PATCH", sent)
	return sent
}

// kill -9 in the middle of a PATCH loses at most what was not yet acknowledged as durable: after
// a restart HEAD reports an offset the client really sent, the upload finishes from there, and
// the file is whole.
func TestKillDashNineMidUpload(t *testing.T) {
	const size = 256 << 20
	const killAfter = 100 << 20
	src, sum := genFile(t, "scan.bin", size, 2)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	d := startDaemon(t, mftdtest.Options{CheckpointBytes: "8MiB"})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 5*time.Minute)
	url := create(t, ctx, alice, size, map[string]string{"filename": "scan.bin", "sha256": sum})
	sent := patchAndKill(t, ctx, d, alice, url, f, size, killAfter)

	d.Launch()
	alice = d.Client(alice.Token) // the new process's certificate and connections; the same token
	off := head(t, ctx, alice, url)
	t.Logf("after restart: Upload-Offset %d (%.1f MiB of %.1f MiB sent)", off, float64(off)/(1<<20), float64(sent)/(1<<20))
	if off <= 0 || off > sent {
		t.Fatalf("after kill -9 and restart Upload-Offset is %d, want > 0 (8 MiB checkpoints, %d bytes sent) and <= %d", off, sent, sent)
	}

	patch(t, ctx, alice, url, off, io.NewSectionReader(f, off, size-off), size-off, "")
	info := waitTerminal(t, ctx, alice, url, 2*time.Minute)
	wantAvailable(t, info, size, sum)
	findArrival(t, arrivals(t, ctx, alice), "scan.bin")
}
