package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/mftd/mftd/integration/internal/mftdtest"
	"github.com/mftd/mftd/storage"
)

// MinIO goes away in the middle of a tus-js-client upload and comes back on the same folder and
// port. While it is down the daemon still answers HEAD with the durable offset and answers the
// client's writes with a 5xx, which the client retries; once MinIO is back the client finishes on
// its own, without help, and the object published to arrivals/<user>/<name> has the source's
// SHA-256. The offset never goes backwards, and at no moment before the upload is complete does
// the bucket hold a published (or committed) object for it.
func TestS3OutageMidUpload(t *testing.T) {
	const (
		bucket = "mftd"
		name   = "outage.bin"
		size   = 256 << 20
		stopAt = 64 << 20 // stop MinIO once the server's offset has passed this
		// minio-go retries a failed request 10 times with capped backoff (at most ~8.4 s in all)
		// inside the daemon: an outage shorter than that may never reach the client.
		minOutage = 15 * time.Second
	)
	started := time.Now()
	src, sum := genFile(t, name, size, 23)
	s3 := startMinIO(t, bucket)
	d := startDaemon(t, mftdtest.Options{
		CheckpointBytes: "1MiB",
		StorageYAML: fmt.Sprintf("storage:\n  backend: s3\n  s3: {endpoint: %q, bucket: %s, access_key: mftdtest, secret_key: mftdtest-secret, part_size: 5MiB}\n",
			s3.Endpoint, bucket),
	})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 8*time.Minute)

	// Retry waits that outlast the outage many times over; the count resets whenever the
	// offset advances, so this is what a patient client allows for one stretch without progress.
	node := startNodeUpload(t, ctx, d.URL("/files/"), alice.Token, d.CertFile(), src, name, sum,
		"0,1000,2000,3000,5000,5000,5000,5000,5000,5000,5000,5000")
	url := node.waitURL(t, time.Minute)
	key, err := storage.UploadKey(mftdtest.UploadID(url))
	if err != nil {
		t.Fatal(err)
	}
	offs := &offsetWatch{c: alice, url: url}
	w := watchBucket(t, s3.Client, bucket, offs, key, size)

	// Let the upload get well under way: parts, a tail and checkpoints are in MinIO.
	for offs.poll(t, ctx) < stopAt {
		node.mustBeRunning(t)
		time.Sleep(100 * time.Millisecond)
	}

	failedBefore := node.failures()
	stopping := time.Now()
	s3.Stop()
	down := time.Now()
	atStop := offs.poll(t, ctx)
	t.Logf("MinIO stopped %v into the test (stopping took %v); Upload-Offset %d (%d MiB)",
		down.Sub(started).Round(time.Millisecond), down.Sub(stopping).Round(time.Millisecond), atStop, atStop>>20)

	duringOutage := sitOutOutage(t, ctx, node, offs, down, failedBefore, minOutage)
	restarting := time.Now()
	s3.Start()
	up := time.Now()
	t.Logf("MinIO ready again %v after it stopped (%v to start); Upload-Offset was %d, then %d; tus-js-client reported %d failed requests meanwhile",
		up.Sub(down).Round(time.Millisecond), up.Sub(restarting).Round(time.Millisecond), atStop, duringOutage, node.failures()-failedBefore)

	// Nothing can have been committed or published while MinIO was down; look before the
	// client's next retry can finish the upload.
	w.checkNow(t, ctx)

	// The client finishes on its own.
	for node.running() {
		offs.poll(t, ctx)
		time.Sleep(250 * time.Millisecond)
	}
	out := node.wait(t)
	t.Logf("upload.mjs: url %s, %d retries, %d bytes sent for %d, %d requests, done %v after MinIO came back",
		out.URL, out.Retries, out.BytesSent, out.Size, out.Requests, time.Since(up).Round(time.Millisecond))
	if out.URL != url {
		t.Errorf("tus-js-client finished upload %s, but created %s", out.URL, url)
	}

	// What the client was told during the outage: a 5xx (500, or 503 for "try again later"),
	// which tus clients retry. (Had it been told anything that makes it give up, such as a 400,
	// upload.mjs would have failed above.)
	if serverErrorsSince(t, out.Failures, stopping) == 0 {
		t.Errorf("no request failed with 500 or 503 during the outage (failures: %+v); the daemon should tell a tus client to retry",
			out.Failures)
	}
	if out.Retries < 1 {
		t.Errorf("tus-js-client reported %d retries, want >= 1", out.Retries)
	}

	info := waitTerminal(t, ctx, alice, url, 2*time.Minute)
	wantAvailable(t, info, size, sum)
	if final := offs.poll(t, ctx); final != size {
		t.Errorf("HEAD after completion: Upload-Offset %d, want %d", final, size)
	}
	w.stop(t)

	obj, err := s3.Client.GetObject(ctx, bucket, "arrivals/alice/"+name, minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, obj)
	obj.Close()
	if err != nil {
		t.Fatalf("read the published object: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum || n != size {
		t.Fatalf("published object: %d bytes, sha256 %s; want %d bytes, %s", n, got, int64(size), sum)
	}

	var keys []string
	for o := range s3.Client.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	if len(keys) != 1 || keys[0] != "arrivals/alice/"+name {
		t.Errorf("bucket holds %q; want exactly arrivals/alice/%s (no tail objects, no upload left under uploads/)", keys, name)
	}
	for u := range s3.Client.ListIncompleteUploads(ctx, bucket, key, true) {
		t.Errorf("incomplete multipart upload left behind at %s: %+v", key, u)
	}
	logDaemonFailures(t, d)
	t.Logf("offsets seen by HEAD: %d polls, never backwards; bucket listed %d times while the upload ran (%d failed while MinIO was down)",
		offs.polls, w.lists, w.failedLists)
}

// sitOutOutage keeps MinIO down (it went down at down) until the client has seen a failed request
// after the failedBefore it had seen before, and at least minOutage has passed; it returns the
// offset at the end. Meanwhile it polls HEAD, which must answer from the state database with an
// offset. Nothing can become durable while MinIO is down, so from a second after it went (a
// write it acknowledged just before it exited may still be recorded) the offset must stand still.
func sitOutOutage(t *testing.T, ctx context.Context, node *nodeRun, offs *offsetWatch, down time.Time, failedBefore int, minOutage time.Duration) int64 {
	t.Helper()
	deadline := down.Add(2 * time.Minute)
	settled := int64(-1)
	for {
		node.mustBeRunning(t)
		off := offs.poll(t, ctx)
		switch {
		case settled < 0 && time.Since(down) > time.Second:
			settled = off
		case settled >= 0 && off != settled:
			t.Fatalf("Upload-Offset moved from %d to %d while MinIO was down: bytes claimed durable that cannot be", settled, off)
		}
		if node.failures() > failedBefore && time.Since(down) >= minOutage {
			return off
		}
		if time.Now().After(deadline) {
			t.Fatalf("MinIO has been down for %v and tus-js-client has seen no failed request: the daemon neither answered nor failed its writes (offset %d)",
				time.Since(down).Round(time.Second), off)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// serverErrorsSince logs the failed requests upload.mjs reported and counts those answered with
// 500 or 503 at or after since.
func serverErrorsSince(t *testing.T, failures []nodeFailure, since time.Time) int {
	t.Helper()
	n := 0
	for _, f := range failures {
		at := time.UnixMilli(f.At)
		t.Logf("failed request at %+.1fs from the stop: %s status %d (%s), retried %v",
			at.Sub(since).Seconds(), f.Method, f.Status, f.Message, f.Retried)
		if (f.Status == http.StatusInternalServerError || f.Status == http.StatusServiceUnavailable) && !at.Before(since) {
			n++
		}
	}
	return n
}

// offsetWatch polls an upload's Upload-Offset with HEAD and fails the test if an answer is not
// 200 with an offset, or if the offset ever goes backwards. Safe for concurrent use: requests
// are made one at a time, so answers are compared in the order the server gave them.
type offsetWatch struct {
	c   *mftdtest.Client
	url string

	mu    sync.Mutex // held for the whole request
	max   int64
	polls int
}

// head asks once; it returns the offset or says what was wrong.
func (o *offsetWatch) head(ctx context.Context) (int64, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	r, err := o.c.Head(ctx, o.url)
	if err != nil {
		return -1, fmt.Errorf("HEAD: %w", err)
	}
	if r.Status != http.StatusOK || r.Offset() < 0 {
		return -1, fmt.Errorf("HEAD: %s; want 200 with Upload-Offset", r)
	}
	off := r.Offset()
	o.polls++
	if off < o.max {
		return off, fmt.Errorf("HEAD: Upload-Offset %d after %d: the offset went backwards", off, o.max)
	}
	o.max = off
	return off, nil
}

func (o *offsetWatch) poll(t *testing.T, ctx context.Context) int64 {
	t.Helper()
	off, err := o.head(ctx)
	if err != nil {
		t.Fatal(err)
	}
	return off
}

// bucketWatch lists the bucket every 200 ms while an upload runs and records every moment it
// held a published or committed object of the upload (anything under arrivals/ or quarantine/,
// or an object at the upload's own key; its tail objects are expected) before HEAD reported the
// upload complete, or such an object of the wrong size. Listings fail while MinIO is down.
type bucketWatch struct {
	mc     *minio.Client
	bucket string
	offs   *offsetWatch
	key    string // the upload's key, uploads/<id>
	size   int64

	quit chan struct{}
	done chan struct{}

	mu          sync.Mutex
	lists       int
	failedLists int
	problems    []string
}

func watchBucket(t *testing.T, mc *minio.Client, bucket string, offs *offsetWatch, key string, size int64) *bucketWatch {
	w := &bucketWatch{mc: mc, bucket: bucket, offs: offs, key: key, size: size, quit: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.quit:
				return
			case <-time.After(200 * time.Millisecond):
			}
			w.check(context.Background())
		}
	}()
	t.Cleanup(w.halt)
	return w
}

func (w *bucketWatch) halt() {
	select {
	case <-w.quit:
	default:
		close(w.quit)
	}
	<-w.done
}

// check lists the bucket once and records what should not be there. It reports whether the
// listing succeeded.
func (w *bucketWatch) check(ctx context.Context) bool {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var found []minio.ObjectInfo
	for o := range w.mc.ListObjects(ctx, w.bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			w.mu.Lock()
			w.failedLists++
			w.mu.Unlock()
			return false
		}
		if strings.HasPrefix(o.Key, "arrivals/") || strings.HasPrefix(o.Key, "quarantine/") || o.Key == w.key {
			found = append(found, o)
		}
	}
	var problems []string
	if len(found) > 0 {
		// The offset only grows: if HEAD says incomplete now, it was incomplete at the listing.
		off, err := w.offs.head(context.Background())
		for _, o := range found {
			switch {
			case err != nil:
				problems = append(problems, fmt.Sprintf("%s (%d bytes) in the bucket; then %v", o.Key, o.Size, err))
			case off < w.size:
				problems = append(problems, fmt.Sprintf("%s (%d bytes) in the bucket while Upload-Offset was %d of %d", o.Key, o.Size, off, w.size))
			case o.Size != w.size:
				problems = append(problems, fmt.Sprintf("%s in the bucket with %d bytes; the upload has %d", o.Key, o.Size, w.size))
			}
		}
	}
	w.mu.Lock()
	w.lists++
	w.problems = append(w.problems, problems...)
	w.mu.Unlock()
	return true
}

// checkNow lists the bucket once, now, failing the test if that is impossible or if the bucket
// holds what it should not.
func (w *bucketWatch) checkNow(t *testing.T, ctx context.Context) {
	t.Helper()
	if !w.check(ctx) {
		t.Fatalf("cannot list bucket %s", w.bucket)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.problems) > 0 {
		t.Fatalf("something was published or committed before the upload was complete:\n%s", strings.Join(w.problems, "\n"))
	}
}

// stop ends the watch and fails the test for what it saw.
func (w *bucketWatch) stop(t *testing.T) {
	t.Helper()
	w.halt()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.problems) > 0 {
		t.Errorf("something was published or committed before the upload was complete (%d of %d listings):\n%s",
			len(w.problems), w.lists, strings.Join(w.problems, "\n"))
	}
	if w.lists == 0 {
		t.Errorf("the bucket was never listed while the upload ran")
	}
}

// nodeFailure is one failed request in upload.mjs's summary.
type nodeFailure struct {
	Method  string `json:"method"`
	Status  int    `json:"status"` // 0: no HTTP answer
	Message string `json:"message"`
	At      int64  `json:"at"` // Unix milliseconds
	Retried bool   `json:"retried"`
}

// nodeOutcome is upload.mjs's summary line, with the failed requests.
type nodeOutcome struct {
	nodeUpload
	Failures []nodeFailure `json:"failures"`
}

// nodeRun is integration/node/upload.mjs running in the background.
type nodeRun struct {
	cmd    *exec.Cmd
	stdout bytes.Buffer
	stderr lineLog
	done   chan struct{}
	err    error // valid once done is closed
}

// startNodeUpload starts upload.mjs uploading file to endpoint with the given --retry-delays;
// it is killed if it still runs when the test ends.
func startNodeUpload(t *testing.T, ctx context.Context, endpoint, token, certFile, file, name, sha, retryDelays string) *nodeRun {
	t.Helper()
	args := []string{filepath.Join(nodeDir, "upload.mjs"), "--endpoint", endpoint, "--token=" + token, // "=": a token may start with "-"
		"--file", file, "--name", name, "--sha256", sha, "--retry-delays", retryDelays}
	n := &nodeRun{done: make(chan struct{})}
	n.cmd = exec.CommandContext(ctx, "node", args...)
	n.cmd.Dir = nodeDir
	n.cmd.Env = append(os.Environ(), "NODE_EXTRA_CA_CERTS="+certFile)
	n.cmd.WaitDelay = 5 * time.Second
	n.cmd.SysProcAttr = mftdtest.DieWithParent()
	n.cmd.Stdout, n.cmd.Stderr = &n.stdout, &n.stderr
	if err := n.cmd.Start(); err != nil {
		t.Fatalf("start node upload.mjs: %v", err)
	}
	go func() {
		n.err = n.cmd.Wait()
		close(n.done)
	}()
	t.Cleanup(func() {
		if n.running() {
			n.cmd.Process.Kill()
		}
		<-n.done
		t.Logf("upload.mjs stderr:\n%s", n.stderr.String())
	})
	return n
}

func (n *nodeRun) running() bool {
	select {
	case <-n.done:
		return false
	default:
		return true
	}
}

// mustBeRunning fails the test if upload.mjs has ended (it should still be uploading).
func (n *nodeRun) mustBeRunning(t *testing.T) {
	t.Helper()
	if !n.running() {
		t.Fatalf("upload.mjs ended early: %v\nstdout: %s", n.err, n.stdout.String())
	}
}

// waitURL returns the upload URL once upload.mjs has printed it.
func (n *nodeRun) waitURL(t *testing.T, limit time.Duration) string {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if u, ok := n.stderr.after("upload.mjs: upload URL "); ok {
			return u
		}
		n.mustBeRunning(t)
		if time.Now().After(deadline) {
			t.Fatalf("upload.mjs printed no upload URL in %v", limit)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// failures is how many failed requests upload.mjs has reported so far.
func (n *nodeRun) failures() int { return n.stderr.count("upload.mjs: request failed") }

// wait waits for upload.mjs to end and returns its summary, failing the test unless it succeeded.
func (n *nodeRun) wait(t *testing.T) nodeOutcome {
	t.Helper()
	<-n.done
	if n.err != nil {
		// tus-js-client gives up on a 4xx other than 409 and 423, or when its retries run out;
		// its stderr is logged at cleanup.
		t.Fatalf("node upload.mjs: %v\nstdout: %s", n.err, n.stdout.String())
	}
	lines := strings.Split(strings.TrimSpace(n.stdout.String()), "\n")
	var out nodeOutcome
	if err := json.Unmarshal([]byte(lines[len(lines)-1]), &out); err != nil {
		t.Fatalf("upload.mjs output %q: %v", n.stdout.String(), err)
	}
	return out
}

// lineLog collects a process's output and answers questions about its complete lines while
// the process runs.
type lineLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *lineLog) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *lineLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// lines are the complete lines so far.
func (l *lineLog) lines() []string {
	s := l.String()
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return strings.Split(s[:i], "\n")
	}
	return nil
}

// after returns the rest of the first complete line that starts with prefix.
func (l *lineLog) after(prefix string) (string, bool) {
	for _, line := range l.lines() {
		if rest, ok := strings.CutPrefix(line, prefix); ok {
			return rest, true
		}
	}
	return "", false
}

// count is the number of complete lines that start with prefix.
func (l *lineLog) count(prefix string) int {
	n := 0
	for _, line := range l.lines() {
		if strings.HasPrefix(line, prefix) {
			n++
		}
	}
	return n
}

// logDaemonFailures logs the daemon's error lines (a record of what it did during the outage).
func logDaemonFailures(t *testing.T, d *mftdtest.Daemon) {
	t.Helper()
	b, err := os.ReadFile(d.LogPath)
	if err != nil {
		t.Logf("mftd log: %v", err)
		return
	}
	var errs []string
	for _, line := range strings.Split(string(b), "\n") {
		if strings.Contains(line, `"level":"error"`) || strings.Contains(line, `"level":"warn"`) {
			errs = append(errs, line)
		}
	}
	t.Logf("mftd logged %d warnings and errors:\n%s", len(errs), strings.Join(errs, "\n"))
}
