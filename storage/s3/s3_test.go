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

// server is one S3 implementation the tests run against: every test that
// talks to S3 runs once per server, as a subtest named after it, so that a
// dialect difference between them fails a test.
type server struct {
	name     string // the subtest name
	script   string // integration/scripts/<script>.sh start DIR PORT | stop DIR
	install  string // the script that builds its binary
	build    string // how long that build takes, for the error message
	endpoint string // host:port, set by TestMain
}

var servers = []*server{
	{name: "minio", script: "minio", install: "install-minio.sh", build: "6-12 minutes"},
	{name: "versitygw", script: "versitygw", install: "install-versitygw.sh", build: "about 3 minutes"},
}

// TestMain starts a throwaway MinIO and a throwaway versitygw through
// integration/scripts. If either cannot start, every test fails: a missing
// server is never a skip.
func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mftd-s3-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	ports, err := freePorts(len(servers))
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	for i, srv := range servers {
		stop, err := srv.start(filepath.Join(dir, srv.name), ports[i])
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
		defer stop()
	}
	return m.Run()
}

// start runs the server's script on a data folder in dir; stop stops it.
func (srv *server) start(dir string, port int) (stop func(), err error) {
	script, err := filepath.Abs("../../integration/scripts/" + srv.script + ".sh")
	if err != nil {
		return nil, err
	}
	cmd := exec.Command("bash", script, "start", dir, fmt.Sprint(port))
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("FAIL: cannot start %s (%v).\n"+
			"The S3 backend tests need real MinIO and versitygw servers; they do not skip. Build %s once with\n"+
			"  bash integration/scripts/%s   (%s; cached in ~/.cache/mftd-test/bin)\n"+
			"and check that `bash %s start DIR PORT` works.", srv.name, err, srv.name, srv.install, srv.build, script)
	}
	srv.endpoint = fmt.Sprintf("127.0.0.1:%d", port)
	return func() {
		cmd := exec.Command("bash", script, "stop", dir)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			fmt.Fprintf(os.Stderr, "stop %s: %v\n", srv.name, err)
		}
	}, nil
}

// freePorts returns n distinct free loopback ports. The listeners are held
// until all are chosen, so the ports differ (versitygw listens with
// SO_REUSEPORT: two servers on one port would both start, and share it).
func freePorts(n int) ([]int, error) {
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		defer l.Close()
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

// eachServer runs fn as one subtest per server.
func eachServer(t *testing.T, fn func(t *testing.T, srv *server)) {
	for _, srv := range servers {
		t.Run(srv.name, func(t *testing.T) { fn(t, srv) })
	}
}

var buckets atomic.Int64

// newBackend returns a backend on a new, empty bucket of srv.
func newBackend(t *testing.T, srv *server) *Backend {
	t.Helper()
	name := fmt.Sprintf("mftd-test-%d", buckets.Add(1))
	ctx := context.Background()
	cfg := Config{Endpoint: srv.endpoint, Bucket: name, AccessKey: testUser, SecretKey: testSecret}
	if _, err := New(ctx, cfg, nil); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Fatalf("New on a missing bucket: err = %v, want one that says the bucket does not exist", err)
	}
	cl := rawClient(t, srv)
	if err := cl.MakeBucket(ctx, name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	cfg.PartSize = MinPartSize
	b, err := New(ctx, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

func rawClient(t *testing.T, srv *server) *minio.Client {
	t.Helper()
	cl, err := newClient(Config{Endpoint: srv.endpoint, AccessKey: testUser, SecretKey: testSecret})
	if err != nil {
		t.Fatal(err)
	}
	return cl
}

func TestConformance(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		storagetest.Run(t, func(t *testing.T) storage.Backend { return newBackend(t, srv) })
	})
}

func TestNewBadCredentials(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		_, err := New(t.Context(), Config{Endpoint: srv.endpoint, Bucket: "any", AccessKey: testUser, SecretKey: "wrong"}, nil)
		if err == nil || !strings.Contains(err.Error(), "credentials") {
			t.Fatalf("New with a wrong secret: err = %v, want one about the credentials", err)
		}
		_, err = New(t.Context(), Config{Endpoint: srv.endpoint, Bucket: "any", PartSize: 1 << 20}, nil)
		if err == nil || !strings.Contains(err.Error(), "part size") {
			t.Fatalf("New with 1 MiB parts: err = %v, want one about the part size", err)
		}
	})
}

// TestResumeAcrossParts writes 12 MiB in 3 MiB chunks (two 5 MiB parts and a
// 2 MiB tail), resumes from the handle in a fresh Upload after every chunk,
// and checks the committed bytes and that no tail object is left.
func TestResumeAcrossParts(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
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
	})
}

// TestResumeOlderHandleAcrossPart: a handle whose tail a later write
// absorbed into a part (a crash before the caller persisted the newer
// handle) still resumes exactly; one older than two part boundaries says it
// cannot.
func TestResumeOlderHandleAcrossPart(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
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
	})
}

// TestConditionalWrites: the conditions Move and Commit rely on to never
// overwrite are honoured by the server, not only the Stat checks before them.
func TestConditionalWrites(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
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
	})
}

// TestDeleteUploadInProgress: Delete of an upload in progress leaves no
// multipart upload and no tail object behind (they would hold storage
// forever), and leaves alone the upload at a key it is a prefix of (the
// servers differ in how ListMultipartUploads treats its prefix: MinIO
// lists the exact key only, versitygw every key with that prefix).
func TestDeleteUploadInProgress(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
		ctx := t.Context()
		k, _ := storage.Key(storage.PrefixUploads, "deleted")
		longer, _ := storage.Key(storage.PrefixUploads, "deleted-not")
		p := make([]byte, 6<<20) // one 5 MiB part and a 1 MiB tail
		rand.NewChaCha8([32]byte{4}).Read(p)
		var kept storage.Handle
		for _, key := range []string{k, longer} {
			u, err := b.Create(ctx, key)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(p)); err != nil {
				t.Fatal(err)
			}
			kept = u.Handle()
			if err := u.Close(); err != nil {
				t.Fatal(err)
			}
		}
		if got := multipartUploads(t, b, k); len(got) != 1 {
			t.Fatalf("before Delete: multipart uploads at %q: %q, want one", k, got)
		}
		if err := b.Delete(ctx, k); err != nil {
			t.Fatalf("Delete of an upload in progress: %v", err)
		}
		if got := multipartUploads(t, b, k); len(got) != 0 {
			t.Errorf("after Delete: multipart uploads at %q left: %q", k, got)
		}
		for oi := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Recursive: true}) {
			if oi.Err != nil {
				t.Fatal(oi.Err)
			}
			if strings.HasPrefix(oi.Key, k+TailSuffix) {
				t.Errorf("after Delete: %q left in the bucket", oi.Key)
			}
		}
		// The upload at the longer key is untouched and still completes.
		u, err := b.Resume(ctx, longer, kept)
		if err != nil {
			t.Fatalf("Resume of %q after Delete(%q): %v", longer, k, err)
		}
		if info, err := u.Commit(ctx); err != nil || info.Size != int64(len(p)) {
			t.Fatalf("Commit of %q after Delete(%q) = %+v, %v", longer, k, info, err)
		}
		// The deleted key is free again.
		u, err = b.Create(ctx, k)
		if err != nil {
			t.Fatalf("Create after Delete: %v", err)
		}
		if err := u.Abort(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// multipartUploads lists the IDs of the incomplete multipart uploads at
// exactly key.
func multipartUploads(t *testing.T, b *Backend, key string) []string {
	t.Helper()
	var ids []string
	keyMarker, idMarker := "", ""
	for {
		res, err := b.core.ListMultipartUploads(t.Context(), b.bucket, key, keyMarker, idMarker, "", 1000)
		if err != nil {
			t.Fatalf("ListMultipartUploads(%q): %v", key, err)
		}
		for _, up := range res.Uploads {
			if up.Key == key {
				ids = append(ids, up.UploadID)
			}
		}
		if !res.IsTruncated {
			return ids
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// TestCommitDoesNotOverwrite: an object written at the key by someone else
// while an upload is in progress (after its multipart upload started) is
// not replaced by Commit. MinIO checks If-None-Match when the multipart
// upload is created and again when it is completed; versitygw only when it
// is completed, so this is the check that protects the key there.
func TestCommitDoesNotOverwrite(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
		ctx := t.Context()
		for _, size := range []int{1000, 6 << 20} { // a tail only; a part and a tail
			k, _ := storage.Key(storage.PrefixUploads, fmt.Sprintf("overwrite-%d", size))
			p := make([]byte, size)
			rand.NewChaCha8([32]byte{5}).Read(p)
			u, err := b.Create(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(p)); err != nil {
				t.Fatal(err)
			}
			const other = "written by someone else"
			if _, err := b.core.PutObject(ctx, b.bucket, k, strings.NewReader(other), int64(len(other)), "", "", minio.PutObjectOptions{}); err != nil {
				t.Fatal(err)
			}
			if _, err := u.Commit(ctx); !errors.Is(err, storage.ErrExist) {
				t.Errorf("%d bytes: Commit onto an object written meanwhile: err = %v, want ErrExist", size, err)
			}
			rc, err := b.Open(ctx, k, 0, -1)
			if err != nil {
				t.Fatal(err)
			}
			got, _ := io.ReadAll(rc)
			rc.Close()
			if string(got) != other {
				t.Errorf("%d bytes: the object written meanwhile was replaced by %d bytes", size, len(got))
			}
			if err := u.Abort(ctx); err != nil {
				t.Errorf("%d bytes: Abort after the failed Commit: %v", size, err)
			}
			if ids := multipartUploads(t, b, k); len(ids) != 0 {
				t.Errorf("%d bytes: multipart uploads left after Abort: %q", size, ids)
			}
		}
	})
}
