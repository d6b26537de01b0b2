package authn

import (
	"context"
	"database/sql"
	"fmt"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

const sessionTTL = 2 * time.Hour

type fixture struct {
	t      *testing.T
	db     *state.DB
	dbPath string
	svc    *Service
	now    time.Time
	logs   *observer.ObservedLogs
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	path := filepath.Join(t.TempDir(), "db")
	db, err := state.Open(context.Background(), path, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	f := &fixture{t: t, db: db, dbPath: path, logs: logs, now: time.Now()}
	f.svc = New(Config{SessionTTL: sessionTTL}, log, db, nil, nil)
	f.svc.now = func() time.Time { return f.now } // one fixed TOTP step per test
	return f
}

type account struct {
	state.Account
	password string
	secret   string
}

func (f *fixture) addAccount(name, password string) account {
	f.t.Helper()
	hash, err := policy.HashPassword(password)
	if err != nil {
		f.t.Fatal(err)
	}
	secret, _, err := policy.NewTOTP("mftd", name)
	if err != nil {
		f.t.Fatal(err)
	}
	a, err := f.db.CreateAccount(context.Background(), state.Account{Name: name, PasswordHash: hash, TOTPSecret: secret})
	if err != nil {
		f.t.Fatal(err)
	}
	return account{Account: a, password: password, secret: secret}
}

// code is the account's TOTP code at t (RFC 6238: SHA-1, 6 digits, 30 s).
func code(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	c, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// wrongCode is a well-formed code that matches none of the steps around at.
func wrongCode(t *testing.T, secret string, at time.Time) string {
	t.Helper()
	valid := map[string]bool{}
	for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
		valid[code(t, secret, at.Add(d))] = true
	}
	for i := 0; ; i++ {
		c := fmt.Sprintf("%06d", i)
		if !valid[c] {
			return c
		}
	}
}

type auditRow struct{ actor, action, result, remote string }

// lastAudit is the newest audit record, read straight from the database.
func (f *fixture) lastAudit() auditRow {
	f.t.Helper()
	db, err := sql.Open("sqlite", "file:"+f.dbPath+"?mode=ro")
	if err != nil {
		f.t.Fatal(err)
	}
	defer db.Close()
	var r auditRow
	err = db.QueryRow(`SELECT actor, action_name, result, remote_addr FROM audit ORDER BY seq DESC LIMIT 1`).
		Scan(&r.actor, &r.action, &r.result, &r.remote)
	if err != nil {
		f.t.Fatal(err)
	}
	return r
}

func (f *fixture) auditCount() int64 {
	f.t.Helper()
	n, err := f.db.VerifyAudit(context.Background())
	if err != nil {
		f.t.Fatal(err)
	}
	return n
}

// noSecretsLogged fails if a log line contains any of secrets.
func (f *fixture) noSecretsLogged(secrets ...string) {
	f.t.Helper()
	for _, e := range f.logs.All() {
		line := e.Message + " " + fmt.Sprint(e.ContextMap())
		for _, s := range secrets {
			if s != "" && strings.Contains(line, s) {
				f.t.Errorf("log line %q contains a secret", line)
			}
		}
	}
}

func TestLogin(t *testing.T) {
	tests := []struct {
		name string
		// login builds the attempt for the account a at time now.
		login func(t *testing.T, a account, now time.Time) (user, password, code string)
		ok    bool
		actor string // audited actor; "" means the account's name
	}{
		{name: "ok", ok: true, login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return a.Name, a.password, code(t, a.secret, now)
		}},
		{name: "user name in another case", ok: true, login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return strings.ToUpper(a.Name), a.password, code(t, a.secret, now)
		}},
		{name: "code of the previous step", ok: true, login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return a.Name, a.password, code(t, a.secret, now.Add(-30*time.Second))
		}},
		{name: "wrong password", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return a.Name, a.password + "x", code(t, a.secret, now)
		}},
		{name: "empty password", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return a.Name, "", code(t, a.secret, now)
		}},
		{name: "wrong code", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return a.Name, a.password, wrongCode(t, a.secret, now)
		}},
		{name: "code from two steps ago", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			c := code(t, a.secret, now.Add(-60*time.Second))
			for _, d := range []time.Duration{-30 * time.Second, 0, 30 * time.Second} {
				if c == code(t, a.secret, now.Add(d)) {
					t.Skip("the old code happens to equal a current one")
				}
			}
			return a.Name, a.password, c
		}},
		{name: "code with seven digits", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return a.Name, a.password, code(t, a.secret, now) + "0"
		}},
		{name: "code with a space", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			c := code(t, a.secret, now)
			return a.Name, a.password, c[:3] + " " + c[3:]
		}},
		{name: "empty code", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return a.Name, a.password, ""
		}},
		{name: "unknown user", actor: "mallory", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return "mallory", a.password, code(t, a.secret, now)
		}},
		{name: "invalid user name", actor: "(invalid user name)", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return "../" + a.Name, a.password, code(t, a.secret, now)
		}},
		{name: "empty user name", actor: "(invalid user name)", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return "", a.password, code(t, a.secret, now)
		}},
		{name: "huge user name", actor: "(invalid user name)", login: func(t *testing.T, a account, now time.Time) (string, string, string) {
			return strings.Repeat("a", 100_000), a.password, code(t, a.secret, now)
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			a := f.addAccount("alice", "correct horse battery staple")
			user, password, c := tt.login(t, a, f.now)
			before := f.auditCount()
			s, err := f.svc.Login(context.Background(), user, password, c, "192.0.2.1:5555")
			if got := f.auditCount(); got != before+1 {
				t.Errorf("%d audit records for one attempt, want 1", got-before)
			}
			rec := f.lastAudit()
			wantActor := tt.actor
			if wantActor == "" {
				wantActor = a.Name
			}
			wantResult := "failed"
			if tt.ok {
				wantResult = "ok"
			}
			if rec.action != "login" || rec.result != wantResult || rec.actor != wantActor || rec.remote != "192.0.2.1:5555" {
				t.Errorf("audit record %+v, want login by %q from 192.0.2.1:5555 with result %q", rec, wantActor, wantResult)
			}
			f.noSecretsLogged(password, c, s.Token)
			if !tt.ok {
				if err != ErrBadCredentials {
					t.Fatalf("Login = %+v, %v; want exactly ErrBadCredentials", s, err)
				}
				if s.Token != "" {
					t.Errorf("a failed login returned a token")
				}
				return
			}
			if err != nil {
				t.Fatalf("Login: %v", err)
			}
			if len(s.Token) < 22 { // 128 bits in base64
				t.Errorf("token %d characters long", len(s.Token))
			}
			if want := f.now.Add(sessionTTL); s.ExpiresAt.Before(want.Add(-time.Second)) || s.ExpiresAt.After(want) {
				t.Errorf("ExpiresAt = %v, want about %v", s.ExpiresAt, want)
			}
			id, err := f.svc.Authenticate(context.Background(), s.Token)
			if err != nil || id.User != a.Name {
				t.Errorf("Authenticate(new token) = %+v, %v", id, err)
			}
		})
	}
}

// TestLoginReplay: a code is accepted once, and no older code after it.
func TestLoginReplay(t *testing.T) {
	f := newFixture(t)
	a := f.addAccount("alice", "pw-alice-1")
	ctx := context.Background()
	c := code(t, a.secret, f.now)
	if _, err := f.svc.Login(ctx, a.Name, a.password, c, ""); err != nil {
		t.Fatalf("first login: %v", err)
	}
	before := f.auditCount()
	if _, err := f.svc.Login(ctx, a.Name, a.password, c, ""); err != ErrBadCredentials {
		t.Fatalf("replayed code: %v, want ErrBadCredentials", err)
	}
	if got := f.auditCount(); got != before+1 || f.lastAudit().result != "failed" {
		t.Errorf("replay: %d audit records, last %+v; want one failed", got-before, f.lastAudit())
	}
	if prev := code(t, a.secret, f.now.Add(-30*time.Second)); prev != c {
		if _, err := f.svc.Login(ctx, a.Name, a.password, prev, ""); err != ErrBadCredentials {
			t.Errorf("the previous step's code after the current one: %v, want ErrBadCredentials", err)
		}
	}
	// The next step's code (clock skew) is still fresh, once.
	next := code(t, a.secret, f.now.Add(30*time.Second))
	if next == c {
		t.Skip("consecutive codes coincide")
	}
	if _, err := f.svc.Login(ctx, a.Name, a.password, next, ""); err != nil {
		t.Errorf("next step's code: %v", err)
	}
	if _, err := f.svc.Login(ctx, a.Name, a.password, next, ""); err != ErrBadCredentials {
		t.Errorf("next step's code again: %v, want ErrBadCredentials", err)
	}
}

// TestLoginConcurrentReplay: of several simultaneous logins with one code,
// exactly one succeeds.
func TestLoginConcurrentReplay(t *testing.T) {
	f := newFixture(t)
	a := f.addAccount("alice", "pw-alice-2")
	c := code(t, a.secret, f.now)
	const n = 4
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, errs[i] = f.svc.Login(context.Background(), a.Name, a.password, c, "")
		}()
	}
	wg.Wait()
	ok := 0
	for _, err := range errs {
		switch {
		case err == nil:
			ok++
		case err != ErrBadCredentials:
			t.Errorf("Login: %v", err)
		}
	}
	if ok != 1 {
		t.Errorf("%d of %d logins with the same code succeeded, want 1", ok, n)
	}
	if got := f.auditCount(); got != n {
		t.Errorf("%d audit records for %d attempts", got, n)
	}
}

func TestAuthenticate(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.addAccount("alice", "pw")
	valid, hash, err := policy.NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if err := f.db.CreateSession(ctx, hash, a.ID, f.now.Add(time.Minute)); err != nil {
		t.Fatal(err)
	}
	expired, hash, _ := policy.NewToken()
	if err := f.db.CreateSession(ctx, hash, a.ID, f.now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	endsNow, hash, _ := policy.NewToken()
	if err := f.db.CreateSession(ctx, hash, a.ID, f.now); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		token string
		ok    bool
	}{
		{"valid", valid, true},
		{"garbage", "not-a-token", false},
		{"empty", "", false},
		{"valid with a suffix", valid + "A", false},
		{"valid prefix", valid[:len(valid)-1], false},
		{"the token's stored hash", fmt.Sprintf("%x", policy.HashToken(valid)), false},
		{"overlong", strings.Repeat("A", 257), false},
		{"expired", expired, false},
		{"expiring this instant", endsNow, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id, err := f.svc.Authenticate(ctx, tt.token)
			if tt.ok {
				if err != nil || id.User != "alice" {
					t.Fatalf("Authenticate = %+v, %v; want alice", id, err)
				}
				return
			}
			if err != ErrBadCredentials || id.User != "" {
				t.Fatalf("Authenticate = %+v, %v; want ErrBadCredentials", id, err)
			}
		})
	}
	// The same session, later: expired.
	f.now = f.now.Add(2 * time.Minute)
	if _, err := f.svc.Authenticate(ctx, valid); err != ErrBadCredentials {
		t.Errorf("Authenticate after expiry: %v, want ErrBadCredentials", err)
	}
}

func TestMiddleware(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	a := f.addAccount("alice", "pw")
	token, hash, _ := policy.NewToken()
	if err := f.db.CreateSession(ctx, hash, a.ID, f.now.Add(time.Hour)); err != nil {
		t.Fatal(err)
	}
	h := f.svc.Middleware(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		id, ok := FromContext(r.Context())
		if !ok || id.User == "" {
			t.Error("next called without an identity")
		}
		_, _ = w.Write([]byte(id.User))
	}))
	tests := []struct {
		header string
		status int
	}{
		{"Bearer " + token, http.StatusOK},
		{"bearer " + token, http.StatusOK},
		{"Bearer  " + token + " ", http.StatusOK},
		{"", http.StatusUnauthorized},
		{"Bearer", http.StatusUnauthorized},
		{"Bearer ", http.StatusUnauthorized},
		{token, http.StatusUnauthorized},
		{"Basic " + token, http.StatusUnauthorized},
		{"Bearer x" + token, http.StatusUnauthorized},
	}
	for _, tt := range tests {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		if tt.header != "" {
			r.Header.Set("Authorization", tt.header)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != tt.status {
			t.Errorf("Authorization %q: %d, want %d", tt.header, w.Code, tt.status)
		}
		if tt.status == http.StatusOK && w.Body.String() != "alice" {
			t.Errorf("Authorization %q: identity %q, want alice", tt.header, w.Body.String())
		}
		if tt.status == http.StatusUnauthorized && !strings.HasPrefix(w.Header().Get("WWW-Authenticate"), "Bearer") {
			t.Errorf("Authorization %q: WWW-Authenticate %q", tt.header, w.Header().Get("WWW-Authenticate"))
		}
	}
	f.noSecretsLogged(token)
}

func TestFromContext(t *testing.T) {
	if _, ok := FromContext(context.Background()); ok {
		t.Error("an empty context carries an identity")
	}
	id, ok := FromContext(WithIdentity(context.Background(), Identity{User: "bob"}))
	if !ok || id.User != "bob" {
		t.Errorf("FromContext = %+v, %v", id, ok)
	}
}
