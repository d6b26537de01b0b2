package integration

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// quotaCounter is one quota in GET /api/v1/me.
type quotaCounter struct {
	Used     int64 `json:"used"`
	Reserved int64 `json:"reserved"`
	Limit    int64 `json:"limit"`
}

// meQuota returns the caller's quotas from GET /api/v1/me, by name.
func meQuota(t *testing.T, ctx context.Context, c *mftdtest.Client) map[string]quotaCounter {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.Base+"/api/v1/me", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("GET /api/v1/me: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var me struct {
		Quota map[string]quotaCounter `json:"quota"`
	}
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &me) != nil {
		t.Fatalf("GET /api/v1/me: %d %q", resp.StatusCode, body)
	}
	return me.Quota
}

const quotaMsg10MiB = "Arrivals quota of alice exceeded: limit 10.0 MiB (10485760 bytes)"

// The quota race over the wire: with quotas.user_arrivals_bytes 10MiB, two 6 MiB tus uploads
// created at the same moment each fit alone but not together; exactly one is created (201) and
// the other refused with 413 and a message naming the quota. The created one completes and
// GET /api/v1/me shows it; a third upload that fits the remainder succeeds, and one byte more is
// refused. Another user's quota is their own.
func TestQuotaRaceTus(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, mftdtest.Options{QuotasYAML: "quotas: {user_arrivals_bytes: 10MiB}"})
	ctx := testCtx(t, 3*time.Minute)
	_, alice := d.NewUser("alice")
	_, bob := d.NewUser("bob")
	const size = 6 << 20

	resps := make([]*mftdtest.Response, 2)
	errs := make([]error, 2)
	start := make(chan struct{})
	var wg sync.WaitGroup
	for i, name := range []string{"first.bin", "second.bin"} {
		wg.Go(func() {
			<-start
			resps[i], errs[i] = alice.Create(ctx, size, map[string]string{"filename": name})
		})
	}
	close(start)
	wg.Wait()
	var created *mftdtest.Response
	refused := 0
	for i, r := range resps {
		if errs[i] != nil {
			t.Fatalf("create %d: %v", i, errs[i])
		}
		switch r.Status {
		case http.StatusCreated:
			if created != nil {
				t.Fatalf("both uploads were created: %s and %s", created, r)
			}
			created = r
		case http.StatusRequestEntityTooLarge:
			refused++
			if !strings.HasPrefix(string(r.Body), quotaMsg10MiB) || !strings.Contains(string(r.Body), "6.0 MiB used or reserved") {
				t.Errorf("the refusal does not name the quota and usage: %s", r)
			}
		default:
			t.Fatalf("create %d: %s, want 201 or 413", i, r)
		}
	}
	if created == nil || refused != 1 {
		t.Fatalf("want exactly one 201 and one 413: %s, %s", resps[0], resps[1])
	}
	if n := dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'upload.create' AND actor = 'alice' AND result LIKE 'refused: Arrivals quota of alice exceeded%'`); n != 1 {
		t.Errorf("%d audit records of the refused creation, want 1", n)
	}
	if q := meQuota(t, ctx, alice)["arrivals_bytes"]; q != (quotaCounter{Used: 0, Reserved: size, Limit: 10 << 20}) {
		t.Errorf("/api/v1/me during the upload: arrivals_bytes %+v, want 6 MiB reserved of 10 MiB", q)
	}

	// The first completes: it moves from reserved to used, counted once.
	url := alice.Resolve(created.Header.Get("Location"))
	data := readAllData(t, size, 71)
	patch(t, ctx, alice, url, 0, strings.NewReader(string(data)), size, "")
	wantAvailable(t, waitTerminal(t, ctx, alice, url, time.Minute), size, mftdtest.SHA256Hex(data))
	q := meQuota(t, ctx, alice)
	if q["arrivals_bytes"] != (quotaCounter{Used: size, Reserved: 0, Limit: 10 << 20}) || q["arrivals_files"] != (quotaCounter{Used: 1}) {
		t.Errorf("/api/v1/me after completion: %+v, want 6 MiB and 1 file used, nothing reserved", q)
	}

	// The remainder fits exactly; then nothing more does.
	const rest = 4 << 20
	third := create(t, ctx, alice, rest, map[string]string{"filename": "third.bin"})
	restData := readAllData(t, rest, 72)
	patch(t, ctx, alice, third, 0, strings.NewReader(string(restData)), rest, "")
	wantAvailable(t, waitTerminal(t, ctx, alice, third, time.Minute), rest, mftdtest.SHA256Hex(restData))
	r, err := alice.Create(ctx, 1, map[string]string{"filename": "one-byte.bin"})
	if err != nil || r.Status != http.StatusRequestEntityTooLarge || !strings.HasPrefix(string(r.Body), quotaMsg10MiB) {
		t.Errorf("one byte past a full quota: %v, %v; want 413 naming the quota", r, err)
	}
	// bob has his own 10 MiB.
	create(t, ctx, bob, 10<<20, map[string]string{"filename": "bob.bin"})
}

// An SFTP put that would cross the Arrivals quota fails cleanly: the client gets a failure, the
// daemon says which quota, the bytes received up to the last checkpoint stay a partial upload
// (counted as reserved) and nothing is completed, while another user's put running at the same
// time and the user's earlier file are intact. Removing the partial frees its bytes, and a put
// that fits the remainder exactly succeeds.
func TestQuotaSFTPCrossing(t *testing.T) {
	t.Parallel()
	e := newSFTPEnv(t, mftdtest.Options{QuotasYAML: "quotas: {user_arrivals_bytes: 10MiB}", CheckpointBytes: "1MiB"})
	bob := addSFTPUser(t, e.d, "bob")
	ctx := testCtx(t, 4*time.Minute)

	first, firstSum := genFile(t, "first.bin", 4<<20, 81)
	if r := e.ssh.Batch(ctx, time.Minute, []string{"put " + first + " /upload/first.bin"}); r.Code != 0 {
		t.Fatalf("sftp put within the quota: %s", transcript(r))
	}
	firstUp := oneUpload(t, e.d, "alice", "first.bin")
	wantAvailable(t, waitUpload(t, ctx, e, firstUp.ID, time.Minute), 4<<20, firstSum)

	big, _ := genFile(t, "big.bin", 8<<20, 82)
	bobs, bobSum := genFile(t, "bob.bin", 8<<20, 83)
	bobProc := bob.ssh.StartBatch(ctx, []string{"put " + bobs + " /upload/bob.bin"})
	r := e.ssh.Batch(ctx, time.Minute, []string{"put " + big + " /upload/big.bin"})
	if r.Code == 0 {
		t.Fatalf("sftp put past the quota succeeded: %s", transcript(r))
	}
	if !strings.Contains(r.Stdout, "Failure") {
		t.Errorf("sftp put past the quota: no failure reported: %s", transcript(r))
	}
	waitLog(t, e.d, 10*time.Second, "write refused: quota", quotaMsg10MiB)
	part := oneUpload(t, e.d, "alice", "big.bin")
	if part.Status != "uploading" || part.Length != -1 || part.Offset > 6<<20 {
		t.Fatalf("the refused upload: %+v; want a partial of at most the 6 MiB left", part)
	}
	if fi, err := os.Stat(filepath.Join(e.d.DataDir, "objects", "uploads", part.ID)); err != nil || fi.Size() < part.Offset {
		t.Errorf("the partial's object: %v, %v; want at least its %d durable bytes", fi, err, part.Offset)
	}
	q := meQuota(t, ctx, e.api)["arrivals_bytes"]
	if q != (quotaCounter{Used: 4 << 20, Reserved: part.Offset, Limit: 10 << 20}) {
		t.Errorf("/api/v1/me with the partial: %+v, want 4 MiB used, %d reserved", q, part.Offset)
	}

	// Bob's put, at the same time under his own quota, and alice's first file are intact.
	if br := bobProc.Wait(time.Minute); br.Code != 0 {
		t.Fatalf("bob's sftp put: %s", transcript(br))
	}
	wantAvailable(t, waitUpload(t, ctx, bob, oneUpload(t, e.d, "bob", "bob.bin").ID, time.Minute), 8<<20, bobSum)
	if a := findArrival(t, arrivals(t, ctx, e.api), "first.bin"); a.SHA256 != firstSum {
		t.Errorf("first.bin changed: %+v", a)
	}

	// Removing the partial frees its bytes: exactly the 6 MiB left fit.
	fits, fitsSum := genFile(t, "fits.bin", 6<<20, 84)
	r = e.ssh.Batch(ctx, time.Minute, []string{"rm /upload/big.bin", "put " + fits + " /upload/fits.bin"})
	if r.Code != 0 {
		t.Fatalf("sftp rm, then a put of the remainder: %s", transcript(r))
	}
	wantAvailable(t, waitUpload(t, ctx, e, oneUpload(t, e.d, "alice", "fits.bin").ID, time.Minute), 6<<20, fitsSum)
	q = meQuota(t, ctx, e.api)["arrivals_bytes"]
	if q != (quotaCounter{Used: 10 << 20, Reserved: 0, Limit: 10 << 20}) {
		t.Errorf("/api/v1/me when full: %+v", q)
	}
}
