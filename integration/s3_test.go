package integration

import (
	"bytes"
	"context"
	"fmt"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// minioServer is a throwaway MinIO (built by integration/scripts/install-minio.sh) serving one
// folder on one port of 127.0.0.1. It can be stopped and started again on the same folder and
// port; objects and multipart uploads survive.
type minioServer struct {
	t        *testing.T
	script   string // integration/scripts/minio.sh
	dir      string
	port     int
	Endpoint string // 127.0.0.1:PORT
	Client   *minio.Client
}

// startMinIO starts a minioServer with an empty bucket; it is stopped when the test ends. A
// MinIO that cannot start fails the test.
func startMinIO(t *testing.T, bucket string) *minioServer {
	t.Helper()
	root, err := mftdtest.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	port, err := mftdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	m := &minioServer{
		t:        t,
		script:   filepath.Join(root, "integration", "scripts", "minio.sh"),
		dir:      t.TempDir(),
		port:     port,
		Endpoint: fmt.Sprintf("127.0.0.1:%d", port),
	}
	m.Start()
	t.Cleanup(func() {
		if out, err := exec.Command("bash", m.script, "stop", m.dir).CombinedOutput(); err != nil {
			t.Errorf("stop MinIO: %v\n%s", err, out)
		}
	})
	m.Client, err = minio.New(m.Endpoint, &minio.Options{Creds: credentials.NewStaticV4("mftdtest", "mftdtest-secret", "")})
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Client.MakeBucket(context.Background(), bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	return m
}

// Start (re)starts MinIO on the same folder and port and returns once it is ready.
func (m *minioServer) Start() {
	m.t.Helper()
	if out, err := exec.Command("bash", m.script, "start", m.dir, fmt.Sprint(m.port)).CombinedOutput(); err != nil {
		m.t.Fatalf("start MinIO on %s (integration/scripts/minio.sh): %v\n%s", m.Endpoint, err, out)
	}
}

// Stop stops MinIO (SIGTERM, SIGKILL after 10 s) and returns once the process is gone.
func (m *minioServer) Stop() {
	m.t.Helper()
	if out, err := exec.Command("bash", m.script, "stop", m.dir).CombinedOutput(); err != nil {
		m.t.Fatalf("stop MinIO on %s: %v\n%s", m.Endpoint, err, out)
	}
}

// The daemon on S3 (MinIO): an upload killed with kill -9 mid-way resumes from a durable offset
// after a restart, is published to arrivals/<user>/<name> in the bucket with the right bytes, and
// leaves nothing behind under uploads/ (no parts, no tail objects); EICAR lands in quarantine/.
func TestS3Backend(t *testing.T) {
	const bucket = "mftd"
	s3 := startMinIO(t, bucket)
	mc := s3.Client
	d := startDaemon(t, mftdtest.Options{
		CheckpointBytes: "1MiB",
		StorageYAML: fmt.Sprintf("storage:\n  backend: s3\n  s3: {endpoint: %q, bucket: %s, access_key: mftdtest, secret_key: mftdtest-secret, part_size: 5MiB}\n",
			s3.Endpoint, bucket),
	})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 3*time.Minute)

	const size = 23 << 20 // four 5 MiB parts and a tail
	data := readAllData(t, size, 11)
	sum := mftdtest.SHA256Hex(data)
	url := create(t, ctx, alice, size, map[string]string{"filename": "cohort.bin", "sha256": sum})
	const first = 13 << 20
	patch(t, ctx, alice, url, 0, bytes.NewReader(data[:first]), first, "")

	d.Kill()
	d.Launch()
	r, err := alice.Head(ctx, url)
	if err != nil || r.Offset() != first {
		t.Fatalf("HEAD after kill -9 and restart: %v %v; want Upload-Offset %d", r, err, first)
	}
	patch(t, ctx, alice, url, first, bytes.NewReader(data[first:]), size-first, "")
	wantAvailable(t, waitTerminal(t, ctx, alice, url, time.Minute), size, sum)

	obj, err := mc.GetObject(ctx, bucket, "arrivals/alice/cohort.bin", minio.GetObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var got bytes.Buffer
	if _, err := got.ReadFrom(obj); err != nil {
		t.Fatalf("read the published object: %v", err)
	}
	if mftdtest.SHA256Hex(got.Bytes()) != sum {
		t.Fatalf("published object has %d bytes with another hash", got.Len())
	}

	bad := create(t, ctx, alice, int64(len(eicar)), map[string]string{"filename": "eicar.txt"})
	patch(t, ctx, alice, bad, 0, strings.NewReader(eicar), int64(len(eicar)), "")
	if info := waitTerminal(t, ctx, alice, bad, time.Minute); info.Status != "quarantined" {
		t.Fatalf("EICAR on S3: %+v, want quarantined", info)
	}

	var keys []string
	for o := range mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true}) {
		if o.Err != nil {
			t.Fatal(o.Err)
		}
		keys = append(keys, o.Key)
	}
	if len(keys) != 2 || keys[0] != "arrivals/alice/cohort.bin" || !strings.HasPrefix(keys[1], "quarantine/") {
		t.Errorf("bucket holds %q; want exactly arrivals/alice/cohort.bin and one quarantine/ object", keys)
	}
	for u := range mc.ListIncompleteUploads(ctx, bucket, "arrivals/alice/cohort.bin", true) {
		t.Errorf("incomplete multipart upload left behind: %+v", u)
	}
}
