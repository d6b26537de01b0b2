package api_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner/scannertest"
	"github.com/mftd/mftd/storage/local"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/api"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
)

const (
	retention     = 720 * time.Hour
	allowedOrigin = "https://portal.example"
)

// fixture is the API with its real dependencies (the tus endpoint is tested
// in transfer/tus, on the same stack).
type fixture struct {
	t     *testing.T
	srv   *httptest.Server
	db    *state.DB
	ing   *ingest.Service
	logs  *observer.ObservedLogs
	ready error
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	ctx := context.Background()
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)).Core(), core))
	db, err := state.Open(ctx, filepath.Join(t.TempDir(), "db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := local.New(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	ing, err := ingest.New(ingest.Config{
		CheckpointBytes: 64 << 10, BufferSize: 16 << 10, Buffers: 4, Workers: 1, RetryInterval: 50 * time.Millisecond,
		Settings: policy.NewLive(policy.Settings{Limits: policy.Limits{MaxFileSize: 10 << 20}, IncompleteUploads: time.Hour, ArrivalsRetention: retention}),
	}, log, db, store, scannertest.Builtin(t, 0))
	if err != nil {
		t.Fatal(err)
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- ing.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	f := &fixture{t: t, db: db, ing: ing, logs: logs}
	auth := authn.New(authn.Config{SessionTTL: time.Hour}, log, db, nil, nil)
	a := api.New(api.Config{
		CORSOrigins: []string{allowedOrigin},
		Checks:      map[string]func(context.Context) (string, error){"database": func(context.Context) (string, error) { return "ok", f.ready }},
	}, log, auth, ing, db)
	f.srv = httptest.NewServer(a.Handler())
	t.Cleanup(f.srv.Close)
	return f
}

type account struct {
	name, password, secret string
	token                  string // a session made without signing in
}

func (f *fixture) addAccount(name string) account {
	f.t.Helper()
	ctx := context.Background()
	password := "pw-" + name + "-Tr0ub4dor"
	hash, err := policy.HashPassword(password)
	if err != nil {
		f.t.Fatal(err)
	}
	secret, _, err := policy.NewTOTP("mftd", name)
	if err != nil {
		f.t.Fatal(err)
	}
	acct, err := f.db.CreateAccount(ctx, state.Account{Name: name, PasswordHash: hash, TOTPSecret: secret})
	if err != nil {
		f.t.Fatal(err)
	}
	token, th, err := policy.NewToken()
	if err != nil {
		f.t.Fatal(err)
	}
	if err := f.db.CreateSession(ctx, th, acct.ID, time.Now().Add(time.Hour)); err != nil {
		f.t.Fatal(err)
	}
	return account{name: name, password: password, secret: secret, token: token}
}

func (f *fixture) do(method, path string, hdr map[string]string, body io.Reader) (*http.Response, []byte) {
	f.t.Helper()
	r, err := http.NewRequest(method, f.srv.URL+path, body)
	if err != nil {
		f.t.Fatal(err)
	}
	for k, v := range hdr {
		r.Header.Set(k, v)
	}
	resp, err := f.srv.Client().Do(r)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		f.t.Fatal(err)
	}
	return resp, b
}

func bearer(a account) map[string]string {
	return map[string]string{"Authorization": "Bearer " + a.token}
}

// publish puts data in owner's Arrivals as name, through the ingest core.
func (f *fixture) publish(owner, name string, data []byte) string {
	f.t.Helper()
	ctx := context.Background()
	u, err := f.ing.Create(ctx, ingest.CreateRequest{Owner: owner, Filename: name, Length: int64(len(data)), Proto: "test"})
	if err != nil {
		f.t.Fatal(err)
	}
	if len(data) > 0 {
		unlock, _ := f.ing.TryLock(u.ID)
		_, err = f.ing.Write(ctx, ingest.WriteRequest{ID: u.ID, Body: bytes.NewReader(data), Length: int64(len(data))})
		unlock()
		if err != nil {
			f.t.Fatal(err)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		u, err := f.db.GetUpload(ctx, u.ID)
		if err != nil {
			f.t.Fatal(err)
		}
		if u.Status == state.StatusAvailable {
			return u.ID
		}
		if time.Now().After(deadline) {
			f.t.Fatalf("upload %s is %s after 5s", u.ID, u.Status)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// noneLogged fails if a log line contains any of secrets.
func (f *fixture) noneLogged(secrets ...string) {
	f.t.Helper()
	for _, e := range f.logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				f.t.Errorf("log line %q contains a secret (%.6q...)", line, s)
			}
		}
	}
}

func totpCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func loginBody(user, password, code string) io.Reader {
	b, _ := json.Marshal(map[string]string{"username": user, "password": password, "totp": code})
	return bytes.NewReader(b)
}

var jsonType = map[string]string{"Content-Type": "application/json"}

func TestLogin(t *testing.T) {
	f := newFixture(t)
	alice := f.addAccount("alice")
	now := time.Now()

	// Failures first: they use no TOTP step.
	var generic []byte
	wrongCode := "000000"
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		if totpCode(t, alice.secret, now.Add(d)) == wrongCode {
			wrongCode = "999999"
		}
	}
	failures := []struct {
		name                 string
		user, password, code string
	}{
		{"wrong password", "alice", "nope", totpCode(t, alice.secret, now)},
		{"wrong code", "alice", alice.password, wrongCode},
		{"unknown user", "mallory", alice.password, totpCode(t, alice.secret, now)},
		{"invalid user name", "a/b", alice.password, totpCode(t, alice.secret, now)},
	}
	for _, tt := range failures {
		t.Run(tt.name, func(t *testing.T) {
			resp, body := f.do(http.MethodPost, "/api/v1/login", jsonType, loginBody(tt.user, tt.password, tt.code))
			if resp.StatusCode != http.StatusUnauthorized {
				t.Fatalf("status %d %s, want 401", resp.StatusCode, body)
			}
			// One message for every failure: it never says which factor failed.
			if generic == nil {
				generic = body
			} else if !bytes.Equal(body, generic) {
				t.Errorf("body %s differs from another failure's %s", body, generic)
			}
			f.noneLogged(tt.password, tt.code)
		})
	}

	malformed := []struct {
		name   string
		hdr    map[string]string
		body   string
		status int
	}{
		{"not JSON", jsonType, "username=alice", http.StatusBadRequest},
		{"unknown field", jsonType, `{"username":"alice","password":"x","totp":"1","admin":true}`, http.StatusBadRequest},
		{"two objects", jsonType, `{"username":"alice"}{"username":"bob"}`, http.StatusBadRequest},
		{"form content type", map[string]string{"Content-Type": "application/x-www-form-urlencoded"}, `{"username":"alice"}`, http.StatusUnsupportedMediaType},
		{"no content type", nil, `{"username":"alice"}`, http.StatusUnsupportedMediaType},
		{"oversized", jsonType, `{"username":"` + strings.Repeat("a", 8<<10) + `"}`, http.StatusRequestEntityTooLarge},
	}
	for _, tt := range malformed {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := f.db.VerifyAudit(context.Background())
			resp, body := f.do(http.MethodPost, "/api/v1/login", tt.hdr, strings.NewReader(tt.body))
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %s, want %d", resp.StatusCode, body, tt.status)
			}
			if after, _ := f.db.VerifyAudit(context.Background()); after != before {
				t.Errorf("a malformed request wrote %d audit records", after-before)
			}
		})
	}

	t.Run("ok", func(t *testing.T) {
		code := totpCode(t, alice.secret, now)
		resp, body := f.do(http.MethodPost, "/api/v1/login", map[string]string{"Content-Type": "application/json; charset=utf-8"}, loginBody("Alice", alice.password, code))
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("status %d %s, want 200", resp.StatusCode, body)
		}
		var out struct {
			Token     string    `json:"token"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
			t.Fatalf("body %s: %v", body, err)
		}
		if d := time.Until(out.ExpiresAt); d < 50*time.Minute || d > time.Hour+time.Minute {
			t.Errorf("expires_at %v, want about an hour ahead", out.ExpiresAt)
		}
		resp, body = f.do(http.MethodGet, "/api/v1/arrivals", map[string]string{"Authorization": "Bearer " + out.Token}, nil)
		if resp.StatusCode != http.StatusOK {
			t.Errorf("the new token: %d %s", resp.StatusCode, body)
		}
		// The same code again: replay.
		resp, _ = f.do(http.MethodPost, "/api/v1/login", jsonType, loginBody("alice", alice.password, code))
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("replayed code: %d, want 401", resp.StatusCode)
		}
		f.noneLogged(alice.password, code, out.Token)
	})
}

type arrival struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (f *fixture) arrivals(a account) []arrival {
	f.t.Helper()
	resp, body := f.do(http.MethodGet, "/api/v1/arrivals", bearer(a), nil)
	if resp.StatusCode != http.StatusOK {
		f.t.Fatalf("arrivals: %d %s", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		f.t.Errorf("Content-Type %q", ct)
	}
	var out struct {
		Files []arrival `json:"files"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		f.t.Fatalf("arrivals: %v in %s", err, body)
	}
	if out.Files == nil {
		f.t.Errorf("arrivals: files is null, want a list: %s", body)
	}
	return out.Files
}

func sumHex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func TestArrivals(t *testing.T) {
	f := newFixture(t)
	alice, bob := f.addAccount("alice"), f.addAccount("bob")
	if got := f.arrivals(alice); len(got) != 0 {
		t.Fatalf("new user's Arrivals: %+v", got)
	}
	f.publish("alice", "b.txt", []byte("alice's b"))
	f.publish("alice", "a.txt", []byte("alice's a"))
	f.publish("bob", "secret.txt", []byte("bob's"))

	got := f.arrivals(alice)
	names := []string{}
	for _, a := range got {
		names = append(names, a.Name)
		if d := a.ExpiresAt.Sub(a.CreatedAt); d != retention {
			t.Errorf("%s: expires_at - created_at = %v, want %v", a.Name, d, retention)
		}
		if time.Since(a.CreatedAt) > time.Minute || a.CreatedAt.Location() != time.UTC {
			t.Errorf("%s: created_at %v", a.Name, a.CreatedAt)
		}
	}
	if !slices.Equal(names, []string{"a.txt", "b.txt"}) {
		t.Fatalf("alice's Arrivals: %v, want [a.txt b.txt]", names)
	}
	if got[0].Size != int64(len("alice's a")) || got[0].SHA256 != sumHex([]byte("alice's a")) {
		t.Errorf("a.txt listed as %+v", got[0])
	}
	if b := f.arrivals(bob); len(b) != 1 || b[0].Name != "secret.txt" {
		t.Errorf("bob's Arrivals: %+v", b)
	}
	for _, hdr := range []map[string]string{nil, {"Authorization": "Bearer nope"}} {
		if resp, _ := f.do(http.MethodGet, "/api/v1/arrivals", hdr, nil); resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("arrivals with %v: %d, want 401", hdr, resp.StatusCode)
		}
	}
}

func TestUploadStatus(t *testing.T) {
	f := newFixture(t)
	alice, bob := f.addAccount("alice"), f.addAccount("bob")
	data := []byte("contents")
	id := f.publish("alice", "r.txt", data)
	clash := f.publish("alice", "r.txt", []byte("again"))
	u, err := f.ing.Create(context.Background(), ingest.CreateRequest{Owner: "alice", Filename: "r.txt", Length: 10, Proto: "test"})
	if err != nil {
		t.Fatal(err)
	}
	second := u.ID

	resp, body := f.do(http.MethodGet, "/api/v1/uploads/"+id, bearer(alice), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d %s", resp.StatusCode, body)
	}
	var st map[string]any
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{"id": id, "name": "r.txt", "size": float64(len(data)), "offset": float64(len(data)),
		"status": "available", "sha256": sumHex(data), "reason": ""}
	if fmt.Sprint(st) != fmt.Sprint(want) {
		t.Errorf("status = %v\nwant     %v", st, want)
	}

	// The name after a clash is the one the file has in Arrivals.
	resp, body = f.do(http.MethodGet, "/api/v1/uploads/"+clash, bearer(alice), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"name":"r (1).txt"`) {
		t.Errorf("second upload of r.txt: %d %s", resp.StatusCode, body)
	}
	resp, body = f.do(http.MethodGet, "/api/v1/uploads/"+second, bearer(alice), nil)
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"status":"uploading"`) {
		t.Errorf("incomplete upload: %d %s", resp.StatusCode, body)
	}

	for _, tt := range []struct {
		name string
		a    account
		id   string
	}{
		{"another user's", bob, id},
		{"another user's incomplete", bob, second},
		{"unknown", alice, "0123456789abcdef0123456789abcdef"},
		{"garbage id", alice, strings.Repeat("x", 300)},
	} {
		resp, body := f.do(http.MethodGet, "/api/v1/uploads/"+tt.id, bearer(tt.a), nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("%s: %d %s, want 404", tt.name, resp.StatusCode, body)
		}
		if strings.Contains(string(body), "r.txt") || strings.Contains(string(body), sumHex(data)) {
			t.Errorf("%s: 404 reveals the upload: %s", tt.name, body)
		}
	}
	if resp, _ := f.do(http.MethodGet, "/api/v1/uploads/"+id, nil, nil); resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("without a token: %d, want 401", resp.StatusCode)
	}
}

func TestCORS(t *testing.T) {
	f := newFixture(t)
	alice := f.addAccount("alice")
	t.Run("preflight from an allowed origin", func(t *testing.T) {
		for _, path := range []string{"/files/", "/files/abc", "/api/v1/login", "/api/v1/arrivals"} {
			resp, _ := f.do(http.MethodOptions, path, map[string]string{
				"Origin": allowedOrigin, "Access-Control-Request-Method": "PATCH",
				"Access-Control-Request-Headers": "authorization, tus-resumable, upload-offset, upload-checksum, content-type",
			}, nil)
			if resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusOK {
				t.Errorf("%s: status %d", path, resp.StatusCode)
			}
			h := resp.Header
			if h.Get("Access-Control-Allow-Origin") != allowedOrigin {
				t.Errorf("%s: Allow-Origin %q", path, h.Get("Access-Control-Allow-Origin"))
			}
			methods := strings.ToUpper(h.Get("Access-Control-Allow-Methods"))
			for _, m := range []string{"POST", "GET", "HEAD", "PATCH", "DELETE", "OPTIONS"} {
				if !strings.Contains(methods, m) {
					t.Errorf("%s: Allow-Methods %q lacks %s", path, methods, m)
				}
			}
			allowed := strings.ToLower(h.Get("Access-Control-Allow-Headers"))
			for _, hd := range []string{"authorization", "tus-resumable", "upload-length", "upload-metadata", "upload-offset", "upload-checksum", "content-type"} {
				if !strings.Contains(allowed, hd) {
					t.Errorf("%s: Allow-Headers %q lacks %s", path, allowed, hd)
				}
			}
			if h.Get("Access-Control-Allow-Credentials") != "" {
				t.Errorf("%s: credentials allowed; tokens are bearer headers", path)
			}
		}
	})
	t.Run("request from an allowed origin", func(t *testing.T) {
		hdr := bearer(alice)
		hdr["Origin"] = allowedOrigin
		resp, _ := f.do(http.MethodGet, "/api/v1/arrivals", hdr, nil)
		if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != allowedOrigin {
			t.Fatalf("%d, Allow-Origin %q", resp.StatusCode, resp.Header.Get("Access-Control-Allow-Origin"))
		}
		exposed := strings.ToLower(resp.Header.Get("Access-Control-Expose-Headers"))
		for _, hd := range []string{"location", "upload-offset", "upload-length", "upload-expires", "tus-resumable"} {
			if !strings.Contains(exposed, hd) {
				t.Errorf("Expose-Headers %q lacks %s", exposed, hd)
			}
		}
		if !slices.Contains(resp.Header.Values("Vary"), "Origin") {
			t.Errorf("Vary %q lacks Origin", resp.Header.Values("Vary"))
		}
	})
	t.Run("other origin", func(t *testing.T) {
		resp, _ := f.do(http.MethodOptions, "/api/v1/arrivals", map[string]string{
			"Origin": "https://evil.example", "Access-Control-Request-Method": "GET",
		}, nil)
		for k := range resp.Header {
			if strings.HasPrefix(k, "Access-Control-") {
				t.Errorf("answered %s to another origin", k)
			}
		}
		hdr := bearer(alice)
		hdr["Origin"] = "https://evil.example"
		resp, _ = f.do(http.MethodGet, "/api/v1/arrivals", hdr, nil)
		if resp.Header.Get("Access-Control-Allow-Origin") != "" {
			t.Errorf("Allow-Origin %q for another origin", resp.Header.Get("Access-Control-Allow-Origin"))
		}
	})
}

func TestHealth(t *testing.T) {
	f := newFixture(t)
	for _, tt := range []struct {
		path   string
		ready  error
		status int
	}{
		{"/healthz", nil, http.StatusOK},
		{"/healthz", errors.New("db down"), http.StatusOK},
		{"/readyz", nil, http.StatusOK},
		{"/readyz", errors.New("db down"), http.StatusServiceUnavailable},
	} {
		f.ready = tt.ready
		resp, body := f.do(http.MethodGet, tt.path, nil, nil)
		if resp.StatusCode != tt.status {
			t.Errorf("%s with ready=%v: %d, want %d", tt.path, tt.ready, resp.StatusCode, tt.status)
		}
		if strings.Contains(string(body), "db down") {
			t.Errorf("%s reveals the error: %s", tt.path, body)
		}
	}
	f.ready = nil
}

// TestRequestLog: one access log line per request, and none of it carries
// credentials, query strings or bodies.
func TestRequestLog(t *testing.T) {
	f := newFixture(t)
	alice := f.addAccount("alice")
	resp, _ := f.do(http.MethodGet, "/api/v1/arrivals?access_token=QUERYSECRET", bearer(alice), nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("status %d", resp.StatusCode)
	}
	f.do(http.MethodPost, "/api/v1/login", jsonType, loginBody("alice", "BODYSECRET", "123456"))
	f.do(http.MethodGet, "/nowhere", map[string]string{"Cookie": "session=COOKIESECRET"}, nil)

	var lines []string
	for _, e := range f.logs.FilterMessage("request").All() {
		m := e.ContextMap()
		lines = append(lines, fmt.Sprintf("%v %v %v", m["method"], m["path"], m["status"]))
	}
	want := []string{"GET /api/v1/arrivals 200", "POST /api/v1/login 401", "GET /nowhere 404"}
	if !slices.Equal(lines, want) {
		t.Errorf("access log %q, want %q", lines, want)
	}
	f.noneLogged(alice.token, "QUERYSECRET", "BODYSECRET", "COOKIESECRET", alice.password)
}
