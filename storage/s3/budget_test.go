package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/storage"
)

// newBackendWith returns a backend on a new, empty bucket of srv, reached at
// endpoint (srv's own, or a proxy's in front of it), configured by mod.
func newBackendWith(t *testing.T, srv *server, endpoint string, mod func(*Config)) *Backend {
	t.Helper()
	name := fmt.Sprintf("mftd-test-%d", buckets.Add(1))
	if err := rawClient(t, srv).MakeBucket(t.Context(), name, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket %s: %v", name, err)
	}
	cfg := Config{Endpoint: endpoint, Bucket: name, AccessKey: testUser, SecretKey: testSecret, PartSize: MinPartSize}
	mod(&cfg)
	b, err := New(t.Context(), cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return b
}

// partProxy is a reverse proxy in front of an S3 server that holds every
// part upload for delay, counts how many are in flight at once, and
// refuses part numbers in refuse with 403 AccessDenied.
type partProxy struct {
	srv   *httptest.Server
	delay time.Duration

	mu       sync.Mutex
	inFlight int
	maxSeen  int
	refuse   map[string]bool
}

func newPartProxy(t *testing.T, target string, delay time.Duration) *partProxy {
	p := &partProxy{delay: delay, refuse: map[string]bool{}}
	rp := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: target})
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := r.URL.Query().Get("partNumber")
		if r.Method != http.MethodPut || n == "" {
			rp.ServeHTTP(w, r)
			return
		}
		p.mu.Lock()
		refused := p.refuse[n]
		p.inFlight++
		p.maxSeen = max(p.maxSeen, p.inFlight)
		p.mu.Unlock()
		defer func() {
			p.mu.Lock()
			p.inFlight--
			p.mu.Unlock()
		}()
		time.Sleep(p.delay)
		if refused {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusForbidden)
			fmt.Fprint(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>AccessDenied</Code><Message>refused by the test proxy</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *partProxy) endpoint() string { return strings.TrimPrefix(p.srv.URL, "http://") }

func (p *partProxy) setRefused(part int, on bool) {
	p.mu.Lock()
	p.refuse[fmt.Sprint(part)] = on
	p.mu.Unlock()
}

func (p *partProxy) peak() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.maxSeen
}

func randomBytes(n int, seed byte) []byte {
	p := make([]byte, n)
	rand.NewChaCha8([32]byte{seed}).Read(p)
	return p
}

// readBack reads the committed object at k and compares it with want.
func readBack(t *testing.T, b *Backend, k string, want []byte) {
	t.Helper()
	rc, err := b.Open(t.Context(), k, 0, -1)
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
}

// Parts of one write are sent concurrently, never more at once than the
// configured concurrency, and the object is the bytes written, in order.
func TestPartsInFlight(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		for _, conc := range []int{1, 3} {
			t.Run(fmt.Sprint("concurrency=", conc), func(t *testing.T) {
				p := newPartProxy(t, srv.endpoint, 150*time.Millisecond)
				b := newBackendWith(t, srv, p.endpoint(), func(c *Config) { c.Concurrency = conc })
				k, _ := storage.Key(storage.PrefixUploads, "in-flight")
				want := randomBytes(8*MinPartSize+1234, 7)
				u, err := b.Create(t.Context(), k)
				if err != nil {
					t.Fatal(err)
				}
				if n, err := u.WriteChunk(t.Context(), 0, bytes.NewReader(want)); err != nil || n != int64(len(want)) {
					t.Fatalf("WriteChunk = %d, %v", n, err)
				}
				if _, err := u.Commit(t.Context()); err != nil {
					t.Fatal(err)
				}
				readBack(t, b, k, want)
				switch peak := p.peak(); {
				case conc == 1 && peak != 1:
					t.Errorf("concurrency 1: %d parts were in flight at once", peak)
				case conc > 1 && (peak < 2 || peak > conc):
					t.Errorf("concurrency %d: at most %d parts were in flight at once, want 2..%d", conc, peak, conc)
				}
			})
		}
	})
}

// The memory budget holds: an upload that cannot get a part buffer waits
// (and gives up with its context, creating nothing), uploads that hold the
// whole budget between them still complete, sending one part at a time, and
// a closed upload's buffer goes to the next.
func TestMemoryBudget(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackendWith(t, srv, srv.endpoint, func(c *Config) { c.Memory, c.Concurrency = 2*MinPartSize, 4 })
		ctx := t.Context()
		ka, _ := storage.Key(storage.PrefixUploads, "budget-a")
		kb, _ := storage.Key(storage.PrefixUploads, "budget-b")
		kc, _ := storage.Key(storage.PrefixUploads, "budget-c")
		a, err := b.Create(ctx, ka)
		if err != nil {
			t.Fatal(err)
		}
		bu, err := b.Create(ctx, kb)
		if err != nil {
			t.Fatal(err)
		}
		short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		if _, err := b.Create(short, kc); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Create with the budget used up: err = %v, want it to wait until its context ends", err)
		}
		if _, err := rawClient(t, srv).StatObject(ctx, b.bucket, tailKey(kc), minio.StatObjectOptions{}); !notFound(err) {
			t.Fatalf("a Create that got no buffer left its tail object (stat: %v)", err)
		}

		// a writes while bu holds the rest of the budget: one part at a time.
		want := randomBytes(3*MinPartSize+5, 8)
		if n, err := a.WriteChunk(ctx, 0, bytes.NewReader(want)); err != nil || n != int64(len(want)) {
			t.Fatalf("WriteChunk within a full budget = %d, %v", n, err)
		}
		if _, err := a.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		readBack(t, b, ka, want)

		// a's buffer went back: the next Create gets it.
		c, err := b.Create(ctx, kc)
		if err != nil {
			t.Fatalf("Create after an upload committed: %v", err)
		}
		if err := c.Abort(ctx); err != nil {
			t.Fatal(err)
		}
		if err := bu.Abort(ctx); err != nil {
			t.Fatal(err)
		}
		if !b.bufs.sem.TryAcquire(2) {
			t.Fatal("after every upload ended, the budget is not whole again")
		}
		b.bufs.sem.Release(2)
	})
}

// A part that fails ends the write: the parts before it count, the upload
// refuses further writes until it is resumed, and resuming from its handle
// completes the object with the right bytes.
func TestPartFailure(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		p := newPartProxy(t, srv.endpoint, 0)
		b := newBackendWith(t, srv, p.endpoint(), func(c *Config) { c.Concurrency = 2 })
		ctx := t.Context()
		k, _ := storage.Key(storage.PrefixUploads, "part-failure")
		want := randomBytes(4*MinPartSize+777, 9)
		u, err := b.Create(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		p.setRefused(3, true)
		n, err := u.WriteChunk(ctx, 0, bytes.NewReader(want))
		if err == nil || !strings.Contains(err.Error(), "part 3") {
			t.Fatalf("WriteChunk with part 3 refused: %d, %v; want an error naming part 3", n, err)
		}
		if n != 2*MinPartSize || u.Offset() != 2*MinPartSize {
			t.Fatalf("after part 3 failed: n = %d, Offset() = %d; want both %d (parts 1 and 2)", n, u.Offset(), 2*MinPartSize)
		}
		if _, err := u.WriteChunk(ctx, u.Offset(), bytes.NewReader(want[u.Offset():])); err == nil {
			t.Fatal("WriteChunk on an upload whose part failed succeeded; it must be resumed first")
		}
		if _, err := u.Commit(ctx); err == nil {
			t.Fatal("Commit of an upload whose part failed succeeded")
		}
		h := u.Handle()
		u.Close()

		p.setRefused(3, false)
		u, err = b.Resume(ctx, k, h)
		if err != nil {
			t.Fatalf("Resume after the failure: %v", err)
		}
		off := u.Offset()
		if n, err := u.WriteChunk(ctx, off, bytes.NewReader(want[off:])); err != nil || n != int64(len(want))-off {
			t.Fatalf("WriteChunk after Resume = %d, %v", n, err)
		}
		if _, err := u.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		readBack(t, b, k, want)
	})
}

func TestUnavailable(t *testing.T) {
	for _, c := range []struct {
		err  error
		want bool
	}{
		{&url.Error{Op: "Put", URL: "http://127.0.0.1:1/b/k", Err: syscall.ECONNREFUSED}, true},
		{io.ErrUnexpectedEOF, true},
		{minio.ErrorResponse{StatusCode: http.StatusServiceUnavailable, Code: "SlowDown"}, true},
		{minio.ErrorResponse{StatusCode: http.StatusInternalServerError, Code: "InternalError"}, true},
		{minio.ErrorResponse{StatusCode: http.StatusForbidden, Code: "AccessDenied"}, false},
		{minio.ErrorResponse{StatusCode: http.StatusNotFound, Code: "NoSuchKey"}, false},
		{context.Canceled, false},
		{errors.New("s3: something else"), false},
	} {
		err := wrap("write", "uploads/x", c.err)
		if got := errors.Is(err, storage.ErrUnavailable); got != c.want {
			t.Errorf("wrap(%v): unavailable = %v, want %v", c.err, got, c.want)
		}
	}
}
