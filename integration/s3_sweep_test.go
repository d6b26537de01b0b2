package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"os"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

func s3YAML(endpoint, bucket, partSize string) string {
	return fmt.Sprintf("storage:\n  backend: s3\n  s3: {endpoint: %q, bucket: %s, access_key: mftdtest, secret_key: mftdtest-secret, part_size: %s}\n",
		endpoint, bucket, partSize)
}

// bucketKeys lists every object key in bucket.
func bucketKeys(t *testing.T, ctx context.Context, mc *minio.Client, bucket string) []string {
	t.Helper()
	var keys []string
	for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	return keys
}

// incomplete lists the multipart uploads in progress at exactly key (MinIO lists them by exact key).
func incomplete(t *testing.T, ctx context.Context, mc *minio.Client, bucket, key string) int {
	t.Helper()
	n := 0
	for u := range mc.ListIncompleteUploads(ctx, bucket, key, false) {
		if u.Err != nil {
			t.Fatal(u.Err)
		}
		if u.Key == key {
			n++
		}
	}
	return n
}

// A 1 GiB upload on S3 (16 MiB parts, the default), killed with kill -9 after 600 MiB, resumes
// after a restart from an offset the client really sent and lands in arrivals/<user>/ in the
// bucket with the source's SHA-256, read back with minio-go; no multipart upload or tail is left.
func TestS3KillDashNineOneGiB(t *testing.T) {
	const bucket = "mftd"
	const size = 1 << 30
	s3 := startMinIO(t, bucket)
	src, sum := genFile(t, "cohort.bin", size, 21)
	f, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()

	d := startDaemon(t, mftdtest.Options{StorageYAML: s3YAML(s3.Endpoint, bucket, "16MiB")})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 6*time.Minute)
	url := create(t, ctx, alice, size, map[string]string{"filename": "cohort.bin", "sha256": sum})
	sent := patchAndKill(t, ctx, d, alice, url, f, size, 600<<20)

	d.Launch()
	alice = d.Client(alice.Token)
	off := head(t, ctx, alice, url)
	t.Logf("after restart: Upload-Offset %d (%.1f MiB of %.1f MiB sent)", off, float64(off)/(1<<20), float64(sent)/(1<<20))
	if off <= 0 || off > sent {
		t.Fatalf("after kill -9 and restart Upload-Offset is %d, want > 0 and <= %d sent", off, sent)
	}
	patch(t, ctx, alice, url, off, io.NewSectionReader(f, off, size-off), size-off, "")
	wantAvailable(t, waitTerminal(t, ctx, alice, url, 3*time.Minute), size, sum)

	obj, err := s3.Client.GetObject(ctx, bucket, "arrivals/alice/cohort.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	n, err := io.Copy(h, obj)
	obj.Close()
	if err != nil {
		t.Fatalf("read the published object back: %v", err)
	}
	if got := hex.EncodeToString(h.Sum(nil)); n != size || got != sum {
		t.Fatalf("published object: %d bytes with SHA-256 %s, want %d bytes with %s", n, got, size, sum)
	}
	if keys := bucketKeys(t, ctx, s3.Client, bucket); len(keys) != 1 || keys[0] != "arrivals/alice/cohort.bin" {
		t.Errorf("bucket holds %q; want exactly arrivals/alice/cohort.bin", keys)
	}
	if n := incomplete(t, ctx, s3.Client, bucket, "uploads/"+path.Base(url)); n != 0 {
		t.Errorf("%d multipart uploads left at the upload's key", n)
	}
}

// The sweeper on S3: an upload left unfinished past retention.incomplete_uploads is terminated
// (its URL answers 410 Gone), its multipart upload aborted and its tail deleted; remains under
// uploads/ that no session references (a multipart upload and tail written behind the daemon's
// back) are removed once untouched that long; an upload still within its time is left whole.
func TestS3Sweeper(t *testing.T) {
	t.Parallel()
	const bucket = "mftd"
	s3 := startMinIO(t, bucket)
	mc := s3.Client
	core := minio.Core{Client: mc}
	d := startDaemon(t, mftdtest.Options{
		CheckpointBytes:   "1MiB",
		StorageYAML:       s3YAML(s3.Endpoint, bucket, "5MiB"),
		IncompleteUploads: "1m",
		SweepInterval:     "1s",
	})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 4*time.Minute)

	const size = 20 << 20
	data := readAllData(t, size, 31)
	const sent = 12 << 20 // two parts and a tail
	expiring := create(t, ctx, alice, size, map[string]string{"filename": "abandoned.bin"})
	patch(t, ctx, alice, expiring, 0, bytes.NewReader(data[:sent]), sent, "")
	expKey := "uploads/" + path.Base(expiring)

	const orphan = "uploads/00000000000000000000000000000000"
	id, err := core.NewMultipartUpload(ctx, bucket, orphan, minio.PutObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := core.PutObjectPart(ctx, bucket, orphan, id, 1, bytes.NewReader(data[:5<<20]), 5<<20, minio.PutObjectPartOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := mc.PutObject(ctx, bucket, orphan+":tail", strings.NewReader("tail"), 4, minio.PutObjectOptions{}); err != nil {
		t.Fatal(err)
	}
	if n := incomplete(t, ctx, mc, bucket, expKey); n != 1 {
		t.Fatalf("after 12 MiB with 5 MiB parts: %d multipart uploads at %s, want 1", n, expKey)
	}

	time.Sleep(40 * time.Second) // the next upload expires 40 s after the first
	live := create(t, ctx, alice, size, map[string]string{"filename": "live.bin"})
	patch(t, ctx, alice, live, 0, bytes.NewReader(data[:sent]), sent, "")
	liveKey := "uploads/" + path.Base(live)

	deadline := time.Now().Add(35 * time.Second) // the first expires in ~20 s, the second in ~60 s
	for {
		r, err := alice.Head(ctx, expiring)
		keys := bucketKeys(t, ctx, mc, bucket)
		gone := err == nil && r.Status == http.StatusGone &&
			incomplete(t, ctx, mc, bucket, expKey) == 0 && incomplete(t, ctx, mc, bucket, orphan) == 0 &&
			!hasPrefix(keys, expKey) && !hasPrefix(keys, orphan)
		if gone {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("15 s after expiry: HEAD %v %v, bucket %q, multipart at %s: %d, at the orphan: %d",
				r, err, keys, expKey, incomplete(t, ctx, mc, bucket, expKey), incomplete(t, ctx, mc, bucket, orphan))
		}
		time.Sleep(500 * time.Millisecond)
	}
	if off := head(t, ctx, alice, live); off != sent {
		t.Errorf("the upload within its time: offset %d, want %d", off, sent)
	}
	if n := incomplete(t, ctx, mc, bucket, liveKey); n != 1 {
		t.Errorf("the upload within its time: %d multipart uploads, want 1", n)
	}
	if !hasPrefix(bucketKeys(t, ctx, mc, bucket), liveKey+":tail") {
		t.Errorf("the upload within its time lost its tail object")
	}
	// It still completes.
	patch(t, ctx, alice, live, sent, bytes.NewReader(data[sent:]), size-sent, "")
	wantAvailable(t, waitTerminal(t, ctx, alice, live, time.Minute), size, mftdtest.SHA256Hex(data))
}

func hasPrefix(keys []string, prefix string) bool {
	for _, k := range keys {
		if strings.HasPrefix(k, prefix) {
			return true
		}
	}
	return false
}
