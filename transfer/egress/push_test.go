package egress

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"mime"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mftd/mftd/policy"
)

// Secrets that must never show in an error, a PortalError's message or a
// log line.
const (
	testToken   = "tok-S3cret-9f8e"
	querySecret = "q-s3cret" // in the portal's URL and in tus upload URLs
)

// pushEnv is a TLS portal on localhost and a Pusher for it whose sleeps
// are recorded and whose logs are checked for secrets when the test ends.
type pushEnv struct {
	pki    testPKI
	srv    *server
	base   string // https://localhost:port
	pusher *Pusher
	sleeps []time.Duration
}

func newPushEnv(t *testing.T, method string, h http.Handler) *pushEnv {
	t.Helper()
	e := &pushEnv{pki: newPKI(t)}
	e.srv = newServer(t, e.pki, h)
	e.base = "https://localhost:" + e.srv.port
	p := policy.Portal{Name: "ukds", URL: e.base + "/upload?key=" + querySecret, Method: method, AllowPrivate: true}
	c := NewClient(p, e.pki.pool)
	t.Cleanup(c.CloseIdleConnections)
	core, logs := observer.New(zapcore.DebugLevel)
	e.pusher = &Pusher{
		Portal: p,
		Client: c,
		Token:  testToken,
		Retry:  Backoff{Attempts: 3, Initial: 10 * time.Millisecond, Max: time.Second},
		Sleep: func(_ context.Context, d time.Duration) error {
			e.sleeps = append(e.sleeps, d)
			return nil
		},
		Log: zap.New(core),
	}
	t.Cleanup(func() {
		for _, en := range logs.All() {
			line := en.Message + " " + fmt.Sprint(en.ContextMap())
			if strings.Contains(line, testToken) || strings.Contains(line, querySecret) {
				t.Errorf("a log line holds a secret: %s", line)
			}
		}
	})
	return e
}

// noSecrets fails the test if err's text holds the token or a query.
func noSecrets(t *testing.T, err error) {
	t.Helper()
	if err == nil {
		return
	}
	if msg := err.Error(); strings.Contains(msg, testToken) || strings.Contains(msg, querySecret) {
		t.Errorf("the error holds a secret: %s", msg)
	}
	var pe *PortalError
	if errors.As(err, &pe) && (strings.Contains(pe.Message, testToken) || strings.Contains(pe.Message, querySecret)) {
		t.Errorf("the portal error's message holds a secret: %q", pe.Message)
	}
}

// stage writes size random bytes to a staged file and returns its Source
// and path.
func stage(t *testing.T, size int, name string) (Source, string) {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	path := filepath.Join(t.TempDir(), "staged")
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return Source{
		Name:   name,
		Size:   int64(size),
		SHA256: hex.EncodeToString(sum[:]),
		Open:   func() (io.ReadSeekCloser, error) { return os.Open(path) },
	}, path
}

// appendingFile appends to its file once it has read past at: a writer
// that goes on writing while the file is pushed.
type appendingFile struct {
	*os.File
	at, pos int64
	done    bool
}

func (f *appendingFile) Read(p []byte) (int, error) {
	n, err := f.File.Read(p)
	f.pos += int64(n)
	if !f.done && f.pos >= f.at {
		f.done = true
		w, werr := os.OpenFile(f.Name(), os.O_WRONLY|os.O_APPEND, 0)
		if werr != nil {
			return n, werr
		}
		_, werr = w.WriteString("appended")
		if cerr := w.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return n, werr
		}
	}
	return n, err
}

func hexSum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

// arrival is what a put or post portal saw of one request.
type arrival struct {
	method, path, query string
	header              http.Header
	contentLength       int64
	chunked             bool
	n                   int64  // file bytes received
	sum                 string // their SHA-256
	complete            bool   // the whole body (the whole form) arrived
	field, filename     string // post: the sha256 field, the file part's file name
}

// arrivals records what a portal saw; every request is recorded, broken
// ones too.
type arrivals struct {
	mu  sync.Mutex
	got []arrival
}

func (a *arrivals) add(v arrival) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.got = append(a.got, v)
}

func (a *arrivals) all() []arrival {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.got)
}

func newArrival(r *http.Request) arrival {
	return arrival{method: r.Method, path: r.URL.Path, query: r.URL.RawQuery, header: r.Header.Clone(),
		contentLength: r.ContentLength, chunked: slices.Contains(r.TransferEncoding, "chunked")}
}

// readPut reads a put's body.
func readPut(r *http.Request) arrival {
	v := newArrival(r)
	h := sha256.New()
	n, err := io.Copy(h, r.Body)
	v.n, v.sum, v.complete = n, hex.EncodeToString(h.Sum(nil)), err == nil
	return v
}

// readPost reads a post's form: the sha256 field, then the file part,
// then its end.
func readPost(r *http.Request) arrival {
	v := newArrival(r)
	mr, err := r.MultipartReader()
	if err != nil {
		return v
	}
	part, err := mr.NextPart()
	if err != nil || part.FormName() != "sha256" {
		return v
	}
	field, err := io.ReadAll(io.LimitReader(part, 100))
	if err != nil {
		return v
	}
	v.field = string(field)
	if part, err = mr.NextPart(); err != nil || part.FormName() != "file" {
		return v
	}
	v.filename = part.FileName()
	h := sha256.New()
	v.n, err = io.Copy(h, part)
	v.sum = hex.EncodeToString(h.Sum(nil))
	if err != nil {
		return v
	}
	_, err = mr.NextPart()
	v.complete = err == io.EOF
	return v
}

// TestPushPut: the file arrives whole with its headers and the bearer
// token, and the receipt describes it; also for an empty file.
func TestPushPut(t *testing.T) {
	for _, size := range []int{1<<20 + 123, 0} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			var got arrivals
			e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				v := readPut(r)
				got.add(v)
				if v.complete {
					w.Header().Set("Content-Type", "application/json")
					w.WriteHeader(http.StatusCreated)
					io.WriteString(w, `{"id": 42, "name": "x"}`)
				}
			}))
			const name = "résumé 2024.csv"
			src, _ := stage(t, size, name)
			rc, err := e.pusher.Push(context.Background(), src, "")
			if err != nil {
				t.Fatal(err)
			}
			all := got.all()
			if len(all) != 1 {
				t.Fatalf("the portal saw %d requests", len(all))
			}
			v := all[0]
			if !v.complete || v.n != src.Size || v.sum != src.SHA256 {
				t.Errorf("the portal got %d bytes (complete %v) hashing to %s, want %d hashing to %s", v.n, v.complete, v.sum, src.Size, src.SHA256)
			}
			if v.method != http.MethodPut || v.path != "/upload" || v.query != "key="+querySecret {
				t.Errorf("request %s %s?%s", v.method, v.path, v.query)
			}
			if v.contentLength != src.Size || v.chunked {
				t.Errorf("Content-Length %d (chunked %v), want %d", v.contentLength, v.chunked, src.Size)
			}
			digest, _ := hex.DecodeString(src.SHA256)
			wantHeaders := map[string]string{
				"Content-Type":  "application/octet-stream",
				"Repr-Digest":   "sha-256=:" + base64.StdEncoding.EncodeToString(digest) + ":",
				"Authorization": "Bearer " + testToken,
			}
			for k, want := range wantHeaders {
				if g := v.header.Get(k); g != want {
					t.Errorf("%s: %q, want %q", k, g, want)
				}
			}
			cd := v.header.Get("Content-Disposition")
			disp, params, err := mime.ParseMediaType(cd)
			if err != nil || disp != "attachment" || params["filename"] != name ||
				!strings.Contains(strings.ToLower(cd), "filename*=utf-8''r%c3%a9sum%c3%a9%202024.csv") {
				t.Errorf("Content-Disposition %q", cd)
			}
			want := Receipt{Portal: "ukds", Method: "put", URL: e.base + "/upload", Status: http.StatusCreated,
				PortalID: "42", SHA256: src.SHA256, Size: src.Size, Attempts: 1}
			checkReceipt(t, rc, want)
		})
	}
}

// checkReceipt compares rc with want but for the times, which must be
// set and in order.
func checkReceipt(t *testing.T, rc, want Receipt) {
	t.Helper()
	if rc.Started.IsZero() || rc.Finished.Before(rc.Started) {
		t.Errorf("receipt times %v, %v", rc.Started, rc.Finished)
	}
	want.Started, want.Finished = rc.Started, rc.Finished
	if rc != want {
		t.Errorf("receipt\n%+v\nwant\n%+v", rc, want)
	}
}

// TestPushPost: a streamed multipart form with the sha256 field and the
// file part, of an exact Content-Length.
func TestPushPost(t *testing.T) {
	for _, size := range []int{1<<20 + 77, 0} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			var got arrivals
			e := newPushEnv(t, policy.PortalPost, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				v := readPost(r)
				got.add(v)
				if v.complete {
					io.WriteString(w, `{"id":"abc-7"}`)
				}
			}))
			const name = `data "final" v2.csv`
			src, _ := stage(t, size, name)
			rc, err := e.pusher.Push(context.Background(), src, "")
			if err != nil {
				t.Fatal(err)
			}
			all := got.all()
			if len(all) != 1 {
				t.Fatalf("the portal saw %d requests", len(all))
			}
			v := all[0]
			if !v.complete || v.n != src.Size || v.sum != src.SHA256 || v.field != src.SHA256 || v.filename != name {
				t.Errorf("the portal got %+v", v)
			}
			mt, _, _ := mime.ParseMediaType(v.header.Get("Content-Type"))
			if v.method != http.MethodPost || mt != "multipart/form-data" || v.contentLength <= src.Size || v.chunked {
				t.Errorf("%s %s, Content-Length %d, chunked %v", v.method, mt, v.contentLength, v.chunked)
			}
			if a := v.header.Get("Authorization"); a != "Bearer "+testToken {
				t.Errorf("Authorization %q", a)
			}
			want := Receipt{Portal: "ukds", Method: "post", URL: e.base + "/upload", Status: http.StatusOK,
				PortalID: "abc-7", SHA256: src.SHA256, Size: src.Size, Attempts: 1}
			checkReceipt(t, rc, want)
		})
	}
}

// TestPushPortalID: the receipt's PortalID is the "id" of a JSON object
// answer, else the Location without its query, else empty.
func TestPushPortalID(t *testing.T) {
	tests := []struct {
		name, body, location, want string
	}{
		{"json string", `{"id":"f-1"}`, "/elsewhere", "f-1"},
		{"json number", ` {"id": 12345678901234567890} `, "", "12345678901234567890"},
		{"location", "", "/files/9?sig=" + querySecret, "/files/9"},
		{"json without id", `{"ok":true}`, "https://localhost/files/10", "https://localhost/files/10"},
		{"json id neither string nor number", `{"id":{"a":1}}`, "", ""},
		{"array", `[{"id":1}]`, "", ""},
		{"text", "stored", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				if tt.location != "" {
					w.Header().Set("Location", tt.location)
				}
				w.WriteHeader(http.StatusCreated)
				io.WriteString(w, tt.body)
			}))
			src, _ := stage(t, 1000, "a.bin")
			rc, err := e.pusher.Push(context.Background(), src, "")
			if err != nil {
				t.Fatal(err)
			}
			if rc.PortalID != tt.want {
				t.Errorf("PortalID %q, want %q", rc.PortalID, tt.want)
			}
		})
	}
}

// tusServer is a tus 1.0 portal (core and creation) at /upload that keeps
// uploads in memory and counts every file byte PATCHes bring.
type tusServer struct {
	t         *testing.T
	mu        sync.Mutex
	uploads   map[string]*tusUpload
	next      int
	dropAfter int64  // > 0: the next PATCH's connection is closed after this many bytes
	location  string // "": "/upload/<id>?sig=<querySecret>"; else the Location of every creation
	creates   int
	heads     int
	patches   []int64 // the Upload-Offset of each PATCH
	patched   int64   // file bytes all PATCHes received
}

type tusUpload struct {
	length     int64
	hideLength bool // HEAD answers without Upload-Length
	filename   string
	sha256     string
	data       []byte
}

func newTusServer(t *testing.T) *tusServer {
	return &tusServer{t: t, uploads: map[string]*tusUpload{}}
}

func (s *tusServer) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /upload", s.create)
	mux.HandleFunc("HEAD /upload/{id}", s.head)
	mux.HandleFunc("PATCH /upload/{id}", s.patch)
	return mux
}

// check reports a request without the tus version or the token.
func (s *tusServer) check(r *http.Request) {
	if v := r.Header.Get("Tus-Resumable"); v != "1.0.0" {
		s.t.Errorf("%s without Tus-Resumable: %q", r.Method, v)
	}
	if a := r.Header.Get("Authorization"); a != "Bearer "+testToken {
		s.t.Errorf("%s with Authorization %q", r.Method, a)
	}
}

func (s *tusServer) create(w http.ResponseWriter, r *http.Request) {
	s.check(r)
	n, err := strconv.ParseInt(r.Header.Get("Upload-Length"), 10, 64)
	if err != nil {
		http.Error(w, "no Upload-Length", http.StatusBadRequest)
		return
	}
	u := &tusUpload{length: n}
	for _, kv := range strings.Split(r.Header.Get("Upload-Metadata"), ",") {
		k, v, _ := strings.Cut(kv, " ")
		b, err := base64.StdEncoding.DecodeString(v)
		if err != nil {
			http.Error(w, "bad Upload-Metadata", http.StatusBadRequest)
			return
		}
		switch k {
		case "filename":
			u.filename = string(b)
		case "sha256":
			u.sha256 = string(b)
		}
	}
	s.mu.Lock()
	s.creates++
	s.next++
	id := strconv.Itoa(s.next)
	s.uploads[id] = u
	loc := s.location
	s.mu.Unlock()
	if loc == "" {
		loc = "/upload/" + id + "?sig=" + querySecret
	}
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Location", loc)
	w.WriteHeader(http.StatusCreated)
}

func (s *tusServer) head(w http.ResponseWriter, r *http.Request) {
	s.check(r)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.heads++
	u := s.uploads[r.PathValue("id")]
	if u == nil {
		w.WriteHeader(http.StatusNotFound)
		return
	}
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("Upload-Offset", strconv.Itoa(len(u.data)))
	if !u.hideLength {
		w.Header().Set("Upload-Length", strconv.FormatInt(u.length, 10))
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

func (s *tusServer) patch(w http.ResponseWriter, r *http.Request) {
	s.check(r)
	if ct := r.Header.Get("Content-Type"); ct != "application/offset+octet-stream" {
		s.t.Errorf("PATCH with Content-Type %q", ct)
	}
	off, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	s.mu.Lock()
	u := s.uploads[r.PathValue("id")]
	s.patches = append(s.patches, off)
	drop := s.dropAfter
	s.dropAfter = 0
	status := 0
	switch {
	case u == nil:
		status = http.StatusNotFound
	case err != nil || off != int64(len(u.data)):
		status = http.StatusConflict
	}
	s.mu.Unlock()
	if status != 0 {
		w.WriteHeader(status)
		return
	}
	var body io.Reader = r.Body
	if drop > 0 {
		body = io.LimitReader(r.Body, drop)
	}
	_, err = io.Copy(writerFunc(func(p []byte) (int, error) {
		s.mu.Lock()
		defer s.mu.Unlock()
		u.data = append(u.data, p...) // a real server would sync before it reports the offset
		s.patched += int64(len(p))
		return len(p), nil
	}), body)
	if drop > 0 {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			s.t.Errorf("hijack: %v", err)
			return
		}
		conn.Close()
		return
	}
	if err != nil {
		return // cut short: what came is kept, as tus servers do
	}
	s.mu.Lock()
	n := len(u.data)
	s.mu.Unlock()
	if int64(n) > u.length {
		s.t.Errorf("the upload has %d bytes of %d", n, u.length)
	}
	w.Header().Set("Tus-Resumable", "1.0.0")
	w.Header().Set("Upload-Offset", strconv.Itoa(n))
	w.WriteHeader(http.StatusNoContent)
}

// upload returns a copy of upload id's state.
func (s *tusServer) upload(id string) tusUpload {
	s.mu.Lock()
	defer s.mu.Unlock()
	u := s.uploads[id]
	if u == nil {
		return tusUpload{}
	}
	c := *u
	c.data = slices.Clone(u.data)
	return c
}

// counts returns creations, HEADs, PATCH offsets and PATCHed bytes.
func (s *tusServer) counts() (creates, heads int, patches []int64, patched int64) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.creates, s.heads, slices.Clone(s.patches), s.patched
}

// tusURLs records OnTusURL's calls and checks that no PATCH came first.
type tusURLs struct {
	srv  *tusServer
	urls []string
}

func (u *tusURLs) record(_ context.Context, url string) error {
	if _, _, patches, patched := u.srv.counts(); len(patches) != 0 || patched != 0 {
		u.srv.t.Errorf("OnTusURL called after %d PATCHes", len(patches))
	}
	u.urls = append(u.urls, url)
	return nil
}

func newTusEnv(t *testing.T) (*pushEnv, *tusServer, *tusURLs) {
	ts := newTusServer(t)
	e := newPushEnv(t, policy.PortalTus, ts.handler())
	urls := &tusURLs{srv: ts}
	e.pusher.OnTusURL = urls.record
	return e, ts, urls
}

// TestPushTus: creation with the metadata, OnTusURL before any byte, one
// PATCH with the whole file; the receipt names the upload URL without its
// query. Also for an empty file, which needs no PATCH.
func TestPushTus(t *testing.T) {
	for _, size := range []int{1<<20 + 5, 0} {
		t.Run(strconv.Itoa(size), func(t *testing.T) {
			e, ts, urls := newTusEnv(t)
			src, _ := stage(t, size, "tus file.bin")
			rc, err := e.pusher.Push(context.Background(), src, "")
			if err != nil {
				t.Fatal(err)
			}
			u := ts.upload("1")
			if int64(len(u.data)) != src.Size || hexSum(u.data) != src.SHA256 || u.length != src.Size ||
				u.filename != src.Name || u.sha256 != src.SHA256 {
				t.Errorf("the portal has %d bytes of %d hashing to %s, metadata %q %q", len(u.data), u.length, hexSum(u.data), u.filename, u.sha256)
			}
			creates, heads, patches, patched := ts.counts()
			wantPatches, wantStatus := []int64{0}, http.StatusNoContent
			if size == 0 {
				wantPatches, wantStatus = nil, http.StatusCreated
			}
			if creates != 1 || heads != 0 || !slices.Equal(patches, wantPatches) || patched != src.Size {
				t.Errorf("creates %d, heads %d, PATCH offsets %v, bytes %d", creates, heads, patches, patched)
			}
			if want := []string{e.base + "/upload/1?sig=" + querySecret}; !slices.Equal(urls.urls, want) {
				t.Errorf("OnTusURL got %q, want %q", urls.urls, want)
			}
			want := Receipt{Portal: "ukds", Method: "tus", URL: e.base + "/upload/1", Status: wantStatus,
				PortalID: "1", SHA256: src.SHA256, Size: src.Size, Attempts: 1}
			checkReceipt(t, rc, want)
		})
	}
}

// TestPushTusResumesAfterDrop: the portal drops the connection in the
// middle of the PATCH; the next attempt asks with HEAD and sends only the
// rest, so every byte arrives exactly once.
func TestPushTusResumesAfterDrop(t *testing.T) {
	e, ts, urls := newTusEnv(t)
	const dropAt = 300<<10 + 3
	ts.dropAfter = dropAt
	src, _ := stage(t, 1<<20+7, "a.bin")
	rc, err := e.pusher.Push(context.Background(), src, "")
	if err != nil {
		t.Fatal(err)
	}
	u := ts.upload("1")
	if int64(len(u.data)) != src.Size || hexSum(u.data) != src.SHA256 {
		t.Errorf("the portal has %d bytes hashing to %s", len(u.data), hexSum(u.data))
	}
	creates, heads, patches, patched := ts.counts()
	if creates != 1 || heads != 1 || !slices.Equal(patches, []int64{0, dropAt}) || patched != src.Size {
		t.Errorf("creates %d, heads %d, PATCH offsets %v, bytes received %d of %d", creates, heads, patches, patched, src.Size)
	}
	if rc.Attempts != 2 || rc.Status != http.StatusNoContent || len(urls.urls) != 1 {
		t.Errorf("receipt %+v, OnTusURL %d times", rc, len(urls.urls))
	}
	if !slices.Equal(e.sleeps, []time.Duration{10 * time.Millisecond}) {
		t.Errorf("sleeps %v", e.sleeps)
	}
}

// TestPushTusResumeURL: a push that failed part-way is continued by the
// next with the URL OnTusURL got: from the portal's offset, no new upload,
// no second OnTusURL.
func TestPushTusResumeURL(t *testing.T) {
	e, ts, urls := newTusEnv(t)
	const dropAt = 200<<10 + 1
	ts.dropAfter = dropAt
	src, _ := stage(t, 1<<20+7, "a.bin")
	e.pusher.Retry.Attempts = 1
	_, err := e.pusher.Push(context.Background(), src, "")
	if err == nil || len(urls.urls) != 1 {
		t.Fatalf("first push: %v, OnTusURL %d times; want a failure after the upload was created", err, len(urls.urls))
	}
	noSecrets(t, err)

	e.pusher.OnTusURL = func(context.Context, string) error {
		t.Error("OnTusURL called on a resumed upload")
		return nil
	}
	rc, err := e.pusher.Push(context.Background(), src, urls.urls[0])
	if err != nil {
		t.Fatal(err)
	}
	u := ts.upload("1")
	if int64(len(u.data)) != src.Size || hexSum(u.data) != src.SHA256 {
		t.Errorf("the portal has %d bytes hashing to %s", len(u.data), hexSum(u.data))
	}
	creates, heads, patches, patched := ts.counts()
	if creates != 1 || heads != 1 || !slices.Equal(patches, []int64{0, dropAt}) || patched != src.Size {
		t.Errorf("creates %d, heads %d, PATCH offsets %v, bytes received %d of %d", creates, heads, patches, patched, src.Size)
	}
	if rc.Attempts != 1 || rc.URL != e.base+"/upload/1" || rc.PortalID != "1" {
		t.Errorf("receipt %+v", rc)
	}
}

// TestPushTusUploadGone: the upload to resume is unknown to the portal
// (404): a new one is created, and OnTusURL hears of it.
func TestPushTusUploadGone(t *testing.T) {
	e, ts, urls := newTusEnv(t)
	src, _ := stage(t, 100<<10, "a.bin")
	rc, err := e.pusher.Push(context.Background(), src, e.base+"/upload/404")
	if err != nil {
		t.Fatal(err)
	}
	creates, heads, patches, _ := ts.counts()
	if creates != 1 || heads != 1 || !slices.Equal(patches, []int64{0}) {
		t.Errorf("creates %d, heads %d, PATCH offsets %v", creates, heads, patches)
	}
	if len(urls.urls) != 1 || rc.URL != e.base+"/upload/1" || hexSum(ts.upload("1").data) != src.SHA256 {
		t.Errorf("OnTusURL %q, receipt %+v", urls.urls, rc)
	}
}

// TestPushTusBadResume: an upload to resume that cannot be this file's
// fails the push without a PATCH and without a retry.
func TestPushTusBadResume(t *testing.T) {
	const size = 100 << 10
	tests := []struct {
		name   string
		upload tusUpload
	}{
		{"another length", tusUpload{length: size + 1, data: make([]byte, 10)}},
		{"offset past the end", tusUpload{length: size + 10, hideLength: true, data: make([]byte, size+10)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e, ts, urls := newTusEnv(t)
			ts.uploads["7"] = &tt.upload
			src, _ := stage(t, size, "a.bin")
			_, err := e.pusher.Push(context.Background(), src, e.base+"/upload/7")
			if err == nil || !strings.Contains(err.Error(), "after 1 attempt:") {
				t.Fatalf("push: %v, want a failure after 1 attempt", err)
			}
			creates, heads, patches, _ := ts.counts()
			if creates != 0 || heads != 1 || len(patches) != 0 || len(urls.urls) != 0 || len(e.sleeps) != 0 {
				t.Errorf("creates %d, heads %d, PATCH offsets %v, OnTusURL %q, sleeps %v", creates, heads, patches, urls.urls, e.sleeps)
			}
		})
	}
}

// TestPushTusForeignLocation: an upload URL off the portal's https host is
// refused before OnTusURL and before anything is sent there.
func TestPushTusForeignLocation(t *testing.T) {
	e, ts, urls := newTusEnv(t)
	other := newServer(t, e.pki, http.HandlerFunc(hello))
	e.pusher.Client = newClient(e.pusher.Portal, e.pki.pool, fakeDNS(map[string][]netip.Addr{"localhost": loopback, "other.test": loopback}))
	t.Cleanup(e.pusher.Client.CloseIdleConnections)
	src, _ := stage(t, 10<<10, "a.bin")
	for _, loc := range []string{
		"https://other.test:" + other.port + "/upload/1",
		"//other.test:" + other.port + "/upload/1",
		"https://localhost:" + other.port + "/upload/1",
		"http://localhost:" + e.srv.port + "/upload/1",
		"https://127.0.0.1:" + e.srv.port + "/upload/1",
		"https://" + testToken + "@localhost:" + e.srv.port + "/upload/1",
	} {
		ts.mu.Lock()
		ts.location = loc
		ts.mu.Unlock()
		_, err := e.pusher.Push(context.Background(), src, "")
		if err == nil || !strings.Contains(err.Error(), "not https on the portal's host") {
			t.Errorf("Location %s: %v, want a refusal", loc, err)
		}
		noSecrets(t, err)
	}
	_, heads, patches, _ := ts.counts()
	if heads != 0 || len(patches) != 0 || len(urls.urls) != 0 || len(e.sleeps) != 0 {
		t.Errorf("heads %d, PATCH offsets %v, OnTusURL %q, sleeps %v", heads, patches, urls.urls, e.sleeps)
	}
	if n := other.conns.Load(); n != 0 {
		t.Errorf("the other server saw %d connections", n)
	}
}

// TestPushTusOnTusURLError: an error from OnTusURL stops the push before
// any byte is sent.
func TestPushTusOnTusURLError(t *testing.T) {
	e, ts, _ := newTusEnv(t)
	errFull := errors.New("state database full")
	e.pusher.OnTusURL = func(context.Context, string) error { return errFull }
	src, _ := stage(t, 10<<10, "a.bin")
	_, err := e.pusher.Push(context.Background(), src, "")
	if !errors.Is(err, errFull) {
		t.Fatalf("push: %v, want the OnTusURL error", err)
	}
	if _, _, patches, _ := ts.counts(); len(patches) != 0 || len(e.sleeps) != 0 {
		t.Errorf("PATCH offsets %v, sleeps %v", patches, e.sleeps)
	}
}

// TestPushChanged: a file whose bytes differ from the recorded hash (same
// size), or that grows while it is sent, fails with ErrChanged, is not
// retried, and no portal ever gets the whole body: at most one broken
// request with fewer bytes than the file.
func TestPushChanged(t *testing.T) {
	const size = 1<<20 + 11
	for _, method := range []string{policy.PortalPut, policy.PortalPost, policy.PortalTus} {
		for _, change := range []string{"changed before", "appended during"} {
			t.Run(method+" "+change, func(t *testing.T) {
				var (
					got arrivals
					ts  *tusServer
					h   http.Handler
				)
				switch method {
				case policy.PortalPut:
					h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.add(readPut(r)) })
				case policy.PortalPost:
					h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got.add(readPost(r)) })
				default:
					ts = newTusServer(t)
					h = ts.handler()
				}
				e := newPushEnv(t, method, h)
				src, path := stage(t, size, "a.bin")
				if change == "changed before" {
					data, err := os.ReadFile(path)
					if err != nil {
						t.Fatal(err)
					}
					data[size/2] ^= 0xff
					if err := os.WriteFile(path, data, 0o600); err != nil {
						t.Fatal(err)
					}
				} else {
					src.Open = func() (io.ReadSeekCloser, error) {
						f, err := os.Open(path)
						return &appendingFile{File: f, at: size / 2}, err
					}
				}
				_, err := e.pusher.Push(context.Background(), src, "")
				if !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "after 1 attempt:") || len(e.sleeps) != 0 {
					t.Fatalf("push: %v (sleeps %v), want ErrChanged after 1 attempt", err, e.sleeps)
				}
				e.srv.Close() // waits for the handlers
				if ts != nil {
					_, _, patches, patched := ts.counts()
					u := ts.upload("1")
					// The PATCH may be cut before the portal reads any of
					// it (the client's close can reset the connection while
					// the portal's TLS session ticket is unread): zero or
					// one PATCH, never the whole file.
					if len(patches) > 1 || patched >= size || int64(len(u.data)) >= size {
						t.Errorf("PATCH offsets %v, bytes received %d, upload has %d of %d", patches, patched, len(u.data), size)
					}
					return
				}
				// As above: the request may die before the portal's
				// handler runs; if it ran, it got a broken, short body.
				all := got.all()
				if len(all) > 1 {
					t.Fatalf("the portal saw %d requests", len(all))
				}
				for _, v := range all {
					if v.complete || v.n >= size {
						t.Errorf("the portal got %d bytes of %d, complete %v", v.n, size, v.complete)
					}
				}
			})
		}
	}
}

// TestPushRetries: 5xx, 408 and 429 are retried with a doubling backoff
// that honours Retry-After up to Max; the last answer decides.
func TestPushRetries(t *testing.T) {
	ms := time.Millisecond
	tests := []struct {
		name       string
		statuses   []int // then 200
		retryAfter string
		attempts   int
		wantSleeps []time.Duration
		wantErr    bool
	}{
		{"503 twice", []int{503, 503}, "7", 5, []time.Duration{100 * ms, 5 * time.Second}, false},
		{"429 408 500", []int{429, 408, 500}, "", 5, []time.Duration{100 * ms, 200 * ms, 400 * ms}, false},
		{"gives up", []int{503, 502, 504}, "", 3, []time.Duration{100 * ms, 200 * ms}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var (
				mu   sync.Mutex
				n    int
				last arrival
			)
			e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				v := readPut(r)
				mu.Lock()
				i := n
				n++
				last = v
				mu.Unlock()
				if i < len(tt.statuses) {
					if i == 1 && tt.retryAfter != "" {
						w.Header().Set("Retry-After", tt.retryAfter)
					}
					http.Error(w, "busy", tt.statuses[i])
					return
				}
				io.WriteString(w, `{"id":"ok"}`)
			}))
			e.pusher.Retry = Backoff{Attempts: tt.attempts, Initial: 100 * ms, Max: 5 * time.Second}
			src, _ := stage(t, 512<<10, "a.bin")
			rc, err := e.pusher.Push(context.Background(), src, "")
			if !slices.Equal(e.sleeps, tt.wantSleeps) {
				t.Errorf("sleeps %v, want %v", e.sleeps, tt.wantSleeps)
			}
			mu.Lock()
			defer mu.Unlock()
			if tt.wantErr {
				want := fmt.Sprintf("after %d attempts: the portal answered %d", tt.attempts, tt.statuses[len(tt.statuses)-1])
				if err == nil || !strings.Contains(err.Error(), want) || n != tt.attempts {
					t.Fatalf("push: %v after %d requests, want %q", err, n, want)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Attempts != len(tt.statuses)+1 || n != rc.Attempts || rc.Status != http.StatusOK || rc.PortalID != "ok" {
				t.Errorf("receipt %+v after %d requests", rc, n)
			}
			if !last.complete || last.sum != src.SHA256 {
				t.Errorf("the last request brought %d bytes hashing to %s", last.n, last.sum)
			}
		})
	}
}

// TestPushRefused: a 400 is a PortalError, not retried, whose message is
// the start of the answer in printable ASCII.
func TestPushRefused(t *testing.T) {
	var n atomic.Int64
	e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusBadRequest)
		io.WriteString(w, "bad name\x00\x07\n é"+strings.Repeat("x", 500))
	}))
	src, _ := stage(t, 100<<10, "a.bin")
	_, err := e.pusher.Push(context.Background(), src, "")
	var pe *PortalError
	if !errors.As(err, &pe) || pe.Status != http.StatusBadRequest || pe.Portal != "ukds" {
		t.Fatalf("push: %v, want a 400 *PortalError", err)
	}
	want := "bad name  " + strings.Repeat("x", 190)
	if pe.Message != want {
		t.Errorf("message %q, want %q", pe.Message, want)
	}
	if c := n.Load(); c != 1 || len(e.sleeps) != 0 || !strings.Contains(err.Error(), "put push failed after 1 attempt:") {
		t.Errorf("%v requests, sleeps %v, error %v", c, e.sleeps, err)
	}
}

// TestPushNoTokenInErrors: the token is never in an error or a message,
// even when the portal echoes it, and a URL's query never either.
func TestPushNoTokenInErrors(t *testing.T) {
	tests := []struct {
		name   string
		status int
		body   string // %s: the Authorization header
		drop   bool
	}{
		{"401 echoing the header", http.StatusUnauthorized, "invalid credentials: %s", false},
		{"403 echoing the token split by a control character", http.StatusForbidden, "token tok-S3cret\x00-9f8e refused", false},
		{"503 echoing the header", http.StatusServiceUnavailable, "overloaded (%s)", false},
		{"dropped connection", 0, "", true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if tt.drop {
					conn, _, _ := http.NewResponseController(w).Hijack()
					conn.Close()
					return
				}
				w.WriteHeader(tt.status)
				body := tt.body
				if strings.Contains(body, "%s") {
					body = fmt.Sprintf(body, r.Header.Get("Authorization"))
				}
				io.WriteString(w, body)
			}))
			src, _ := stage(t, 10<<10, "a.bin")
			_, err := e.pusher.Push(context.Background(), src, "")
			if err == nil {
				t.Fatal("the push succeeded")
			}
			noSecrets(t, err)
			var pe *PortalError
			if errors.As(err, &pe) && !strings.Contains(pe.Message, "[token]") {
				t.Errorf("message %q: want the token cut out", pe.Message)
			}
		})
	}
}

// TestPushTLSNotRetried: a certificate that does not verify fails the
// push at once.
func TestPushTLSNotRetried(t *testing.T) {
	e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(hello))
	e.pusher.Client = NewClient(e.pusher.Portal, newPKI(t).pool)
	t.Cleanup(e.pusher.Client.CloseIdleConnections)
	src, _ := stage(t, 1000, "a.bin")
	_, err := e.pusher.Push(context.Background(), src, "")
	var (
		verr    *tls.CertificateVerificationError
		unknown x509.UnknownAuthorityError
	)
	if !errors.As(err, &verr) && !errors.As(err, &unknown) {
		t.Fatalf("push: %v, want a verification failure", err)
	}
	if len(e.sleeps) != 0 || !strings.Contains(err.Error(), "after 1 attempt:") {
		t.Errorf("sleeps %v, error %v", e.sleeps, err)
	}
	noSecrets(t, err)
}

// TestPushCancelled: ctx ending while the push waits to retry ends it.
func TestPushCancelled(t *testing.T) {
	e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	e.pusher.Sleep = func(ctx context.Context, _ time.Duration) error {
		cancel()
		<-ctx.Done()
		return ctx.Err()
	}
	src, _ := stage(t, 1000, "a.bin")
	_, err := e.pusher.Push(ctx, src, "")
	if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), "after 1 attempt:") {
		t.Fatalf("push: %v, want cancelled after 1 attempt", err)
	}
}

// TestDefaultSleep: without an injected Sleep, the wait ends with ctx.
func TestDefaultSleep(t *testing.T) {
	var p Pusher
	if err := p.sleep(context.Background(), time.Millisecond); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	if err := p.sleep(ctx, time.Hour); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) > 10*time.Second {
		t.Fatalf("sleep: %v after %v", err, time.Since(start))
	}
}

// TestBackoffDelay: the defaults, doubling to Max, Retry-After up to Max.
func TestBackoffDelay(t *testing.T) {
	b := Backoff{}.withDefaults()
	if b.Attempts != 5 || b.Initial != time.Second || b.Max != time.Minute {
		t.Fatalf("defaults %+v", b)
	}
	s := time.Second
	var got []time.Duration
	for n := 1; n <= 8; n++ {
		got = append(got, b.delay(n, 0))
	}
	if want := []time.Duration{s, 2 * s, 4 * s, 8 * s, 16 * s, 32 * s, 60 * s, 60 * s}; !slices.Equal(got, want) {
		t.Errorf("delays %v, want %v", got, want)
	}
	if d := b.delay(1, 90*s); d != time.Minute {
		t.Errorf("Retry-After 90s: %v, want Max", d)
	}
	if d := b.delay(3, 2*s); d != 4*s {
		t.Errorf("Retry-After shorter than the backoff: %v, want the backoff", d)
	}
	for v, want := range map[string]time.Duration{"7": 7 * s, "": 0, "-1": 0, "soon": 0, "Wed, 21 Oct 2015 07:28:00 GMT": 0} {
		if d := parseRetryAfter(v); d != want {
			t.Errorf("Retry-After %q: %v, want %v", v, d, want)
		}
	}
}

// TestPushBadArguments: nothing is sent for a source or pusher that
// cannot be right.
func TestPushBadArguments(t *testing.T) {
	var requests sync.Map
	e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Store(r, true)
	}))
	good, _ := stage(t, 10, "a.bin")
	tests := []struct {
		name string
		edit func(*Pusher, *Source)
	}{
		{"upper-case hash", func(_ *Pusher, s *Source) { s.SHA256 = strings.ToUpper(s.SHA256) }},
		{"short hash", func(_ *Pusher, s *Source) { s.SHA256 = s.SHA256[:62] }},
		{"no Open", func(_ *Pusher, s *Source) { s.Open = nil }},
		{"negative size", func(_ *Pusher, s *Source) { s.Size = -1 }},
		{"path", func(_ *Pusher, s *Source) { s.Name = "dir/a.bin" }},
		{"newline", func(_ *Pusher, s *Source) { s.Name = "a\r\nX-Evil: 1" }},
		{"empty name", func(_ *Pusher, s *Source) { s.Name = "" }},
		{"no client", func(p *Pusher, _ *Source) { p.Client = nil }},
		{"token with a newline", func(p *Pusher, _ *Source) { p.Token = testToken + "\n" }},
		{"portal by IP", func(p *Pusher, _ *Source) { p.Portal.URL = "https://127.0.0.1:" + e.srv.port + "/upload" }},
	}
	for _, tt := range tests {
		p, src := *e.pusher, good
		tt.edit(&p, &src)
		if _, err := p.Push(context.Background(), src, ""); err == nil || !strings.Contains(err.Error(), "cannot push") {
			t.Errorf("%s: %v, want a refusal", tt.name, err)
		} else {
			noSecrets(t, err)
		}
	}
	requests.Range(func(k, _ any) bool {
		t.Errorf("the portal saw %s %s", k.(*http.Request).Method, k.(*http.Request).URL.Path)
		return true
	})
}

// TestBody: the body reader hands out the file's bytes from an offset,
// and holds back the bytes that end the file unless the whole file has
// the recorded size and hash.
func TestBody(t *testing.T) {
	data := make([]byte, 3*chunkSize+1000)
	rand.Read(data)
	sum := sha256.Sum256(data)
	changed := bytes.Clone(data)
	changed[10] ^= 1
	tests := []struct {
		name    string
		file    []byte
		size    int64
		off     int64
		want    int64 // bytes handed out
		changed bool
	}{
		{"intact", data, int64(len(data)), 0, int64(len(data)), false},
		{"intact from an offset", data, int64(len(data)), chunkSize + 5, int64(len(data)) - chunkSize - 5, false},
		{"changed", changed, int64(len(data)), 0, 3 * chunkSize, true},
		{"changed before the offset", changed, int64(len(data)), chunkSize + 5, 2 * chunkSize, true},
		{"appended", append(bytes.Clone(data), 'x'), int64(len(data)), 0, 3 * chunkSize, true},
		{"truncated", data[:len(data)-1], int64(len(data)), 0, 3 * chunkSize, true},
		// Bytes before the end of the file go out as they are read (p is
		// smaller than a chunk here); the request then ends short.
		{"truncated in the first chunk", data[:100], int64(len(data)), 0, 100, true},
		{"empty", nil, int64(len(data)), 0, 0, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := newBody(io.NopCloser(bytes.NewReader(tt.file)), make([]byte, chunkSize), tt.size, sha256Check(sum[:]), tt.off)
			if err != nil {
				t.Fatal(err)
			}
			var out []byte
			p := make([]byte, 32<<10)
			for {
				n, err := b.Read(p)
				out = append(out, p[:n]...)
				if err == io.EOF {
					break
				}
				if err != nil {
					if !errors.Is(err, ErrChanged) {
						t.Fatalf("read: %v", err)
					}
					break
				}
			}
			if int64(len(out)) != tt.want || !bytes.Equal(out, tt.file[tt.off:tt.off+int64(len(out))]) {
				t.Errorf("handed out %d bytes, want the file's %d from %d", len(out), tt.want, tt.off)
			}
			if gotChanged := errors.Is(b.failure(), ErrChanged); gotChanged != tt.changed || b.complete() == tt.changed {
				t.Errorf("failure %v, complete %v", b.failure(), b.complete())
			}
			b.detach()
			if _, err := b.Read(p); err == nil {
				t.Error("a detached body read on")
			}
		})
	}
	// Nothing left to send: the file is checked before any request.
	if _, err := newBody(io.NopCloser(bytes.NewReader(changed)), make([]byte, chunkSize), int64(len(data)), sha256Check(sum[:]), int64(len(data))); !errors.Is(err, ErrChanged) {
		t.Errorf("resume at the end of a changed file: %v", err)
	}
	empty := sha256.Sum256(nil)
	if _, err := newBody(io.NopCloser(strings.NewReader("x")), make([]byte, chunkSize), 0, sha256Check(empty[:]), 0); !errors.Is(err, ErrChanged) {
		t.Errorf("an empty file that grew: %v", err)
	}
}

// TestPushRedirectNotFollowed: an upload answered with a redirect fails;
// it is neither re-sent elsewhere nor turned into a GET whose 200 would
// pass for a delivery.
func TestPushRedirectNotFollowed(t *testing.T) {
	for _, code := range []int{301, 302, 303, 307, 308} {
		t.Run(strconv.Itoa(code), func(t *testing.T) {
			var followed atomic.Int64
			mux := http.NewServeMux()
			mux.HandleFunc("/upload", func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body)
				http.Redirect(w, r, "/done", code)
			})
			mux.HandleFunc("/done", func(w http.ResponseWriter, r *http.Request) {
				followed.Add(1)
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, `{"id":"x"}`)
			})
			e := newPushEnv(t, policy.PortalPost, mux)
			src, _ := stage(t, 10<<10, "a.bin")
			_, err := e.pusher.Push(context.Background(), src, "")
			if err == nil || !strings.Contains(err.Error(), "a redirect a push does not follow") || len(e.sleeps) != 0 {
				t.Fatalf("push: %v (sleeps %v), want a refused redirect after 1 attempt", err, e.sleeps)
			}
			if n := followed.Load(); n != 0 {
				t.Errorf("the redirect was followed %d times", n)
			}
		})
	}
}

func sha256Check(want []byte) digestCheck {
	return digestCheck{name: "SHA-256", want: want, new: sha256.New}
}

// TestPushBLAKE3: with the source's BLAKE3 set, the push verifies the bytes
// it sends against it: the intact file arrives (the receipt still names the
// SHA-256); a file whose BLAKE3 is not the recorded one is refused with
// ErrChanged and never arrives whole, even though its SHA-256 matches, so
// it is BLAKE3 that is checked; a malformed BLAKE3 is refused before any
// request.
func TestPushBLAKE3(t *testing.T) {
	var got arrivals
	e := newPushEnv(t, policy.PortalPut, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		v := readPut(r)
		got.add(v)
		if v.complete {
			w.WriteHeader(http.StatusCreated)
		}
	}))
	src, path := stage(t, 3*chunkSize+77, "b3.bin")
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	sum := blake3.Sum256(data)
	src.BLAKE3 = hex.EncodeToString(sum[:])
	rc, err := e.pusher.Push(context.Background(), src, "")
	if err != nil {
		t.Fatal(err)
	}
	if all := got.all(); len(all) != 1 || !all[0].complete || all[0].sum != src.SHA256 || rc.SHA256 != src.SHA256 {
		t.Fatalf("intact push: portal got %+v, receipt sha256 %s", all, rc.SHA256)
	}

	wrong := src
	other := blake3.Sum256(append(data, 'x'))
	wrong.BLAKE3 = hex.EncodeToString(other[:])
	if _, err := e.pusher.Push(context.Background(), wrong, ""); !errors.Is(err, ErrChanged) || !strings.Contains(err.Error(), "BLAKE3") {
		t.Fatalf("push with another BLAKE3: %v, want ErrChanged naming BLAKE3", err)
	}
	for _, v := range got.all()[1:] {
		if v.complete || v.n >= src.Size {
			t.Errorf("a push that failed its BLAKE3 check delivered %d of %d bytes, complete %v", v.n, src.Size, v.complete)
		}
	}

	for _, bad := range []string{"xyz", strings.ToUpper(src.BLAKE3), src.BLAKE3[:62]} {
		b := src
		b.BLAKE3 = bad
		n := len(got.all())
		if _, err := e.pusher.Push(context.Background(), b, ""); err == nil || !strings.Contains(err.Error(), "BLAKE3") {
			t.Errorf("BLAKE3 %q: %v, want a refusal", bad, err)
		}
		if len(got.all()) != n {
			t.Errorf("BLAKE3 %q: the portal saw a request", bad)
		}
	}
}
