package tus_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner/scannertest"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/local"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/api"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
	"github.com/mftd/mftd/transfer/tus"
)

// The fixture's limits. checkpointBytes is small so that a few hundred KiB
// exercise several checkpoints.
const (
	checkpointBytes = 64 << 10
	maxSize         = 10 << 20
	maxMetadata     = 1024
	retention       = 720 * time.Hour
	incompleteTTL   = time.Hour
	tusVersion      = "1.0.0"
	offsetOctet     = "application/offset+octet-stream"
	allowedOrigin   = "https://portal.example"
)

// fixture is the whole HTTPS stack in-process: state database, local object
// store, ingest (with its check-and-publish worker running), authn, tus and
// the API, served over plain HTTP by httptest.
type fixture struct {
	t      *testing.T
	srv    *httptest.Server
	db     *state.DB
	ing    *ingest.Service
	root   string // the local backend's directory
	alice  user
	bob    user
	logs   *observer.ObservedLogs
	secret []string // strings no log line may contain
}

type user struct {
	id    int64
	name  string
	token string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	return newFixtureTTL(t, incompleteTTL)
}

// newFixtureTTL is newFixture with incomplete uploads expiring after ttl.
func newFixtureTTL(t *testing.T, ttl time.Duration) *fixture {
	t.Helper()
	return newFixtureStore(t, ttl, nil)
}

// newFixtureStore is newFixtureTTL with the local store wrapped by wrap
// (nil: used as it is).
func newFixtureStore(t *testing.T, ttl time.Duration, wrap func(storage.Backend) storage.Backend) *fixture {
	t.Helper()
	ctx := context.Background()
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core))
	f := &fixture{t: t, logs: logs, root: filepath.Join(t.TempDir(), "objects")}
	// Registered first, so it runs last: after the server and the worker stopped.
	t.Cleanup(f.checkLogs)

	db, err := state.Open(ctx, filepath.Join(t.TempDir(), "db"), log)
	if err != nil {
		t.Fatalf("state.Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := local.New(f.root, log)
	if err != nil {
		t.Fatalf("local.New: %v", err)
	}
	t.Cleanup(func() { store.Close() })
	var backend storage.Backend = store
	if wrap != nil {
		backend = wrap(store)
	}
	ing, err := ingest.New(ingest.Config{
		CheckpointBytes: checkpointBytes,
		BufferSize:      16 << 10,
		Buffers:         4,
		Settings:        policy.NewLive(policy.Settings{Limits: policy.Limits{MaxFileSize: maxSize}, IncompleteUploads: ttl, ArrivalsRetention: retention}),
		Workers:         1,
		RetryInterval:   50 * time.Millisecond,
	}, log, db, backend, scannertest.Builtin(t, maxSize))
	if err != nil {
		t.Fatalf("ingest.New: %v", err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ing.Run(runCtx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("ingest.Run: %v", err)
		}
	})

	auth := authn.New(authn.Config{SessionTTL: time.Hour}, log, db, nil, nil)
	th := tus.New(tus.Config{BasePath: "/files/", MaxMetadataBytes: maxMetadata, IdleTimeout: 5 * time.Second}, log, ing)
	h := api.New(api.Config{CORSOrigins: []string{allowedOrigin}}, log, auth, ing, db).Handler(th)
	f.srv = httptest.NewServer(h)
	t.Cleanup(f.srv.Close)
	f.db, f.ing = db, ing
	f.alice = f.newUser("alice")
	f.bob = f.newUser("bob")
	return f
}

// newUser creates an account and a session for it, without signing in (each
// TOTP step can be used once).
func (f *fixture) newUser(name string) user {
	f.t.Helper()
	ctx := context.Background()
	acct, err := f.db.CreateAccount(ctx, state.Account{Name: name, PasswordHash: "unused", TOTPSecret: "unused"})
	if err != nil {
		f.t.Fatalf("create account %s: %v", name, err)
	}
	return user{id: acct.ID, name: name, token: f.newSession(acct.ID, time.Now().Add(time.Hour))}
}

func (f *fixture) newSession(accountID int64, exp time.Time) string {
	f.t.Helper()
	token, hash, err := policy.NewToken()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.db.CreateSession(context.Background(), hash, accountID, exp); err != nil {
		f.t.Fatalf("create session: %v", err)
	}
	f.secret = append(f.secret, token)
	return token
}

// checkLogs fails the test if any log line carries a token or a raw
// Upload-Metadata header.
func (f *fixture) checkLogs() {
	for _, e := range f.logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		for _, s := range f.secret {
			if len(s) >= 8 && strings.Contains(line, s) {
				f.t.Errorf("log line %q contains a secret (%.12q...)", line, s)
			}
		}
	}
}

// req sends one request as u (no Authorization if u.token is empty) with
// Tus-Resumable set, plus hdr (a value of "" deletes the header), and
// returns the response with its body read.
func (f *fixture) req(method, path string, u user, hdr map[string]string, body io.Reader) (*http.Response, []byte) {
	f.t.Helper()
	r, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	r.Header.Set("Tus-Resumable", tusVersion)
	if u.token != "" {
		r.Header.Set("Authorization", "Bearer "+u.token)
	}
	for k, v := range hdr {
		if v == "" {
			r.Header.Del(k)
		} else {
			r.Header.Set(k, v)
		}
	}
	return f.do(r)
}

func (f *fixture) do(r *http.Request) (*http.Response, []byte) {
	f.t.Helper()
	resp, err := f.srv.Client().Do(r)
	if err != nil {
		f.t.Fatalf("%s %s: %v", r.Method, r.URL.Path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatalf("%s %s: read body: %v", r.Method, r.URL.Path, err)
	}
	return resp, b
}

// metadata encodes an Upload-Metadata header from key, value pairs.
func metadata(kv ...string) string {
	var parts []string
	for i := 0; i+1 < len(kv); i += 2 {
		parts = append(parts, kv[i]+" "+base64.StdEncoding.EncodeToString([]byte(kv[i+1])))
	}
	return strings.Join(parts, ",")
}

// create starts an upload as u and returns its id.
func (f *fixture) create(u user, length int64, md string) string {
	f.t.Helper()
	f.secret = append(f.secret, md)
	resp, body := f.req(http.MethodPost, "/files/", u, map[string]string{
		"Upload-Length": strconv.FormatInt(length, 10), "Upload-Metadata": md,
	}, nil)
	if resp.StatusCode != http.StatusCreated {
		f.t.Fatalf("POST /files/: %d %s", resp.StatusCode, body)
	}
	return idOf(f.t, resp)
}

func idOf(t *testing.T, resp *http.Response) string {
	t.Helper()
	loc := resp.Header.Get("Location")
	id, ok := strings.CutPrefix(loc, "/files/")
	if !ok || id == "" || strings.Contains(id, "/") {
		t.Fatalf("Location = %q, want /files/<id>", loc)
	}
	return id
}

// patch sends data at off to upload id as u.
func (f *fixture) patch(u user, id string, off int64, data []byte, hdr map[string]string) (*http.Response, []byte) {
	f.t.Helper()
	h := map[string]string{"Content-Type": offsetOctet, "Upload-Offset": strconv.FormatInt(off, 10)}
	for k, v := range hdr {
		h[k] = v
	}
	return f.req(http.MethodPatch, "/files/"+id, u, h, bytes.NewReader(data))
}

// mustPatch sends data at off and requires 204 with the new offset.
func (f *fixture) mustPatch(u user, id string, off int64, data []byte) {
	f.t.Helper()
	resp, body := f.patch(u, id, off, data, nil)
	want := strconv.FormatInt(off+int64(len(data)), 10)
	if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != want {
		f.t.Fatalf("PATCH %s at %d: %d Upload-Offset=%q %s; want 204 Upload-Offset=%s",
			id, off, resp.StatusCode, resp.Header.Get("Upload-Offset"), body, want)
	}
}

// offset is the upload's Upload-Offset from HEAD as its owner.
func (f *fixture) offset(u user, id string) int64 {
	f.t.Helper()
	resp, _ := f.req(http.MethodHead, "/files/"+id, u, nil, nil)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("HEAD %s: %d", id, resp.StatusCode)
	}
	n, err := strconv.ParseInt(resp.Header.Get("Upload-Offset"), 10, 64)
	if err != nil {
		f.t.Fatalf("HEAD %s: Upload-Offset %q", id, resp.Header.Get("Upload-Offset"))
	}
	return n
}

// uploadStatus is GET /api/v1/uploads/{id}.
type uploadStatus struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"`
	Status string `json:"status"`
	SHA256 string `json:"sha256"`
	Reason string `json:"reason"`
}

func (f *fixture) status(u user, id string) (int, uploadStatus) {
	f.t.Helper()
	resp, body := f.req(http.MethodGet, "/api/v1/uploads/"+id, u, nil, nil)
	var st uploadStatus
	if resp.StatusCode == http.StatusOK {
		if err := json.Unmarshal(body, &st); err != nil {
			f.t.Fatalf("GET /api/v1/uploads/%s: %v in %s", id, err, body)
		}
	}
	return resp.StatusCode, st
}

// settle polls an upload's status until it leaves uploading and processing,
// and fails the test if that takes longer than a few seconds.
func (f *fixture) settle(u user, id string) uploadStatus {
	f.t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		code, st := f.status(u, id)
		if code != http.StatusOK {
			f.t.Fatalf("GET /api/v1/uploads/%s: %d", id, code)
		}
		if st.Status != "uploading" && st.Status != "processing" {
			return st
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("upload %s still %q after 5s: %+v", id, st.Status, st)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

type arrival struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (f *fixture) arrivals(u user) []arrival {
	f.t.Helper()
	resp, body := f.req(http.MethodGet, "/api/v1/arrivals", u, nil, nil)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("GET /api/v1/arrivals: %d %s", resp.StatusCode, body)
	}
	var out struct {
		Files []arrival `json:"files"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		f.t.Fatalf("GET /api/v1/arrivals: %v in %s", err, body)
	}
	return out.Files
}

// object is the stored object at key, or nil if there is none.
func (f *fixture) object(key string) []byte {
	f.t.Helper()
	b, err := os.ReadFile(filepath.Join(f.root, filepath.FromSlash(key)))
	if err != nil {
		return nil
	}
	return b
}

// snapshot is everything a refused request must leave as it was.
type snapshot struct {
	uploads map[string]string // id -> status, offset, handle, hash state
	objects map[string]int64  // stored file -> size
	files   int               // Arrivals rows of both users
	audit   int64             // audit records
}

var allStatuses = []string{
	state.StatusUploading, state.StatusProcessing, state.StatusPublishing, state.StatusAvailable,
	state.StatusQuarantined, state.StatusRejected, state.StatusTerminated,
}

func (f *fixture) snapshot() snapshot {
	f.t.Helper()
	ctx := context.Background()
	s := snapshot{uploads: map[string]string{}, objects: map[string]int64{}}
	for _, st := range allStatuses {
		us, err := f.db.UploadsWithStatus(ctx, st, 10000)
		if err != nil {
			f.t.Fatal(err)
		}
		for _, u := range us {
			s.uploads[u.ID] = fmt.Sprintf("%s off=%d len=%d handle=%x hash=%x", u.Status, u.Offset, u.Length, u.Handle, u.HashState)
		}
	}
	err := filepath.WalkDir(f.root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		s.objects[p] = fi.Size()
		return nil
	})
	if err != nil {
		f.t.Fatal(err)
	}
	for _, u := range []string{f.alice.name, f.bob.name} {
		files, err := f.db.FilesByOwner(ctx, u)
		if err != nil {
			f.t.Fatal(err)
		}
		s.files += len(files)
	}
	if s.audit, err = f.db.VerifyAudit(ctx); err != nil {
		f.t.Fatal(err)
	}
	return s
}

// unchanged fails the test if anything in before has changed.
func (f *fixture) unchanged(before snapshot) {
	f.t.Helper()
	after := f.snapshot()
	if fmt.Sprint(before.uploads) != fmt.Sprint(after.uploads) {
		f.t.Errorf("uploads changed:\nbefore %v\nafter  %v", before.uploads, after.uploads)
	}
	if fmt.Sprint(before.objects) != fmt.Sprint(after.objects) {
		f.t.Errorf("stored objects changed:\nbefore %v\nafter  %v", before.objects, after.objects)
	}
	if before.files != after.files {
		f.t.Errorf("Arrivals changed: %d files before, %d after", before.files, after.files)
	}
	if before.audit != after.audit {
		f.t.Errorf("audit records: %d before, %d after", before.audit, after.audit)
	}
}
