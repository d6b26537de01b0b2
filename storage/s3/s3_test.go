package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/storagetest"
)

const (
	testUser   = "mftdtest"
	testSecret = "mftdtest-secret"
)

// endpoint is the address of the MinIO server TestMain started.
var endpoint string

// TestMain starts a throwaway MinIO through integration/scripts/minio.sh.
// If it cannot start, every test fails: a missing server is never a skip.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	script, err := filepath.Abs("../../integration/scripts/minio.sh")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "mftd-s3-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	port, err := freePort()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	cmd := exec.Command("bash", script, "start", dir, fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		fmt.Fprintf(os.Stderr, "FAIL: cannot start MinIO (%v).\n"+
			"The S3 backend tests need a real MinIO server; they do not skip. Build it once with\n"+
			"  bash integration/scripts/install-minio.sh   (6-12 minutes; cached in ~/.cache/mftd-test/bin)\n"+
			"and check that `bash %s start DIR PORT` works.\n", err, script)
		return 1
	}
	defer exec.Command("bash", script, "stop", dir).Run()
	endpoint = fmt.Sprintf("127.0.0.1:%d", port)
	return m.Run()
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

var buckets atomic.Int64

// newBackend returns a backend on a new, empty bucket.
func newBackend(t *testing.T) *Backend {
	t.Helper()
	name := fmt.Sprintf("mftd-test-%d", buckets.Add(1))
	ctx := context.Background()
	if _, err := New(ctx, Config{Endpoint: endpoint, Bucket: name, AccessKey: testUser, SecretKey: testSecret}, nil); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("New on a missing bucket: err = %v, want one that says the bucket does not exist", err)
	}
	cl := rawClient(t)
	if err := cl.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	b, err := New(ctx, Config{Endpoint: endpoint, Bucket: name, AccessKey: testUser, SecretKey: testSecret, PartSize: MinPartSize}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func rawClient(t *testing.T) *minio.Client {
	t.Helper()
	cl, err := newClient(Config{Endpoint: endpoint, AccessKey: testUser, SecretKey: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T) storage.Backend { return newBackend(t) })
}

func TestNewBadCredentials(t *testing.T) {
	_, err := New(t.Context(), Config{Endpoint: endpoint, Bucket: "any", AccessKey: testUser, SecretKey: "wrong"}, nil)
	if err == nil || !strings.Contains(err.Error(), "credentials") {
		t.Fatalf("New with a wrong secret: err = %v, want one about the credentials", err)
	}
	_, err = New(t.Context(), Config{Endpoint: endpoint, Bucket: "any", PartSize: 1 << 20}, nil)
	if err == nil || !strings.Contains(err.Error(), "part size") {
		t.Fatalf("New with 1 MiB parts: err = %v, want one about the part size", err)
	}
}

// TestResumeAcrossParts writes 12 MiB in 3 MiB chunks (two 5 MiB parts and a
// 2 MiB tail), resumes from the handle in a fresh Upload after every chunk,
// and checks the committed bytes and that no tail object is left.
func TestResumeAcrossParts(t *testing.T) {
	b := newBackend(t)
	ctx := t.Context()
	k, err := storage.Key(storage.PrefixUploads, "resume-parts")
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, 12<<20)
	rand.NewChaCha8([32]byte{1}).Read(want)
	u, err := b.Create(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	const chunk = 3 << 20
	for off := 0; off < len(want); off += chunk {
		n, err := u.WriteChunk(ctx, int64(off), bytes.NewReader(want[off:off+chunk]))
		if err != nil || n != chunk {
			t.Fatalf("WriteChunk(%d) = %d, %v", off, n, err)
		}
		h := u.Handle()
		if err := u.Close(); err != nil {
			t.Fatal(err)
		}
		u, err = b.Resume(ctx, k, h)
		if err != nil {
			t.Fatalf("Resume after %d bytes: %v", off+chunk, err)
		}
		if got := u.Offset(); got != int64(off+chunk) {
			t.Fatalf("Resume after %d bytes: Offset() = %d", off+chunk, got)
		}
	}
	if parts := len(u.(*upload).h.Parts); parts != 2 {
		t.Errorf("after 12 MiB with 5 MiB parts: %d parts uploaded, want 2", parts)
	}
	info, err := u.Commit(ctx)
	if err != nil {
		t.Fatalf("Commit: %v", err)
	}
	if info.Size != int64(len(want)) {
		t.Errorf("Commit: size %d, want %d", info.Size, len(want))
	}
	rc, err := b.Open(ctx, k, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("committed object: %d bytes that differ from the %d written", len(got), len(want))
	}
	for oi := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Err != nil {
			t.Fatal(oi.Err)
		}
		if oi.Key != k {
			t.Errorf("object %q left in the bucket after Commit", oi.Key)
		}
	}
}

// TestResumeOlderHandleAcrossPart: a handle whose tail a later write
// absorbed into a part (a crash before the caller persisted the newer
// handle) still resumes exactly; one older than two part boundaries says it
// cannot.
func TestResumeOlderHandleAcrossPart(t *testing.T) {
	b := newBackend(t)
	ctx := t.Context()
	k, _ := storage.Key(storage.PrefixUploads, "older-across-part")
	p := make([]byte, 12<<20)
	rand.NewChaCha8([32]byte{2}).Read(p)
	u, err := b.Create(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(p[:1000])); err != nil {
		t.Fatal(err)
	}
	h := u.Handle()
	if _, err := u.WriteChunk(ctx, 1000, bytes.NewReader(p[1000:6<<20])); err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteChunk(ctx, 6<<20, bytes.NewReader(p[6<<20:])); err != nil {
		t.Fatal(err)
	}
	// Two part boundaries later, the handle's tail is gone.
	if _, err := b.Resume(ctx, k, h); err == nil {
		t.Fatal("Resume from a handle two part boundaries old succeeded")
	}
	if err := u.Abort(ctx); err != nil {
		t.Fatal(err)
	}

	u, err = b.Create(ctx, k)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(p[:1000])); err != nil {
		t.Fatal(err)
	}
	h = u.Handle()
	if _, err := u.WriteChunk(ctx, 1000, bytes.NewReader(p[1000:6<<20])); err != nil {
		t.Fatal(err)
	}
	u, err = b.Resume(ctx, k, h)
	if err != nil {
		t.Fatalf("Resume from the handle before the part: %v", err)
	}
	other := make([]byte, 7<<20)
	rand.NewChaCha8([32]byte{3}).Read(other)
	if n, err := u.WriteChunk(ctx, 1000, bytes.NewReader(other)); err != nil || n != int64(len(other)) {
		t.Fatalf("WriteChunk after Resume = %d, %v", n, err)
	}
	if _, err := u.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	want := append(bytes.Clone(p[:1000]), other...)
	rc, err := b.Open(ctx, k, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if !bytes.Equal(got, want) {
		t.Fatalf("committed object: %d bytes that differ from the %d written", len(got), len(want))
	}
	for oi := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Recursive: true}) {
		if oi.Key != k {
			t.Errorf("object %q left in the bucket after Commit", oi.Key)
		}
	}
}

// TestConditionalWrites: the conditions Move and Commit rely on to never
// overwrite are honoured by the server, not only the Stat checks before them.
func TestConditionalWrites(t *testing.T) {
	b := newBackend(t)
	ctx := t.Context()
	src, _ := storage.Key(storage.PrefixUploads, "cond-src")
	dst, _ := storage.Key(storage.PrefixArrivals, "alice", "cond-dst")
	for _, k := range []string{src, dst} {
		u, err := b.Create(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.WriteChunk(ctx, 0, strings.NewReader(k)); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	si, err := b.client.StatObject(ctx, b.bucket, src, minio.StatObjectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.copyNew(ctx, src, dst, si); !errors.Is(err, storage.ErrExist) {
		t.Errorf("copyNew onto an existing object (the race Move's Stat cannot close): err = %v, want ErrExist", err)
	}
	opts := minio.PutObjectOptions{}
	opts.SetMatchETagExcept("*")
	_, err = b.core.PutObject(ctx, b.bucket, dst, strings.NewReader("x"), 1, "", "", opts)
	if !errors.Is(wrap("put", dst, err), storage.ErrExist) {
		t.Errorf("conditional PutObject onto an existing object: err = %v, want ErrExist", err)
	}
	rc, err := b.Open(ctx, dst, 0, -1)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != dst {
		t.Errorf("%q was overwritten: %q", dst, got)
	}
}
