package integration

import (
	"errors"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// SIGTERM lets an upload in flight finish: the PATCH is acknowledged in full, the daemon exits 0,
// and after a restart the upload is where the acknowledgement said.
func TestSIGTERMDrains(t *testing.T) {
	const size = 64 << 20
	const step = 1 << 20
	const termAfter = 8 << 20
	data := readAllData(t, size, 6)
	sum := mftdtest.SHA256Hex(data)

	d := startDaemon(t, mftdtest.Options{})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 3*time.Minute)
	url := create(t, ctx, alice, size, map[string]string{"filename": "slow.bin", "sha256": sum})

	pr, pw := io.Pipe()
	type result struct {
		r   *mftdtest.Response
		err error
	}
	patched := make(chan result, 1)
	go func() {
		r, err := alice.Patch(ctx, url, 0, pr, size, "")
		pr.CloseWithError(errors.New("PATCH returned"))
		patched <- result{r, err}
	}()

	// Feed 1 MiB every 40 ms (~25 MiB/s, ~2.6 s in all); SIGTERM once 8 MiB are in.
	var fedErr error
	for off := 0; off < size; off += step {
		if off == termAfter {
			t.Logf("SIGTERM after %d bytes fed", off)
			d.Terminate()
		}
		if _, fedErr = pw.Write(data[off : off+step]); fedErr != nil {
			break
		}
		time.Sleep(40 * time.Millisecond)
	}
	pw.Close()
	res := <-patched
	if res.err != nil {
		t.Fatalf("PATCH in flight during SIGTERM: %v (feeding: %v)", res.err, fedErr)
	}
	if res.r.Status != http.StatusNoContent || res.r.Offset() != size {
		t.Fatalf("PATCH in flight during SIGTERM: %s; want 204 with Upload-Offset %d", res.r, size)
	}
	if code := d.WaitExit(time.Minute); code != 0 {
		t.Fatalf("mftd exited with status %d after SIGTERM, want 0", code)
	}

	d.Launch()
	alice = d.Client(alice.Token)
	if off := head(t, ctx, alice, url); off != size {
		t.Fatalf("after SIGTERM and restart Upload-Offset is %d, want %d as acknowledged", off, size)
	}
	wantAvailable(t, waitTerminal(t, ctx, alice, url, time.Minute), size, sum)
}
