package integration

import (
	"bytes"
	"database/sql"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"mime"
	"net"
	"net/http"
	"net/mail"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// Account security over the wire: lockout and unlock, password change and reset, emergency
// access through the dir notifier, sessions, disable and enable, metrics on the admin listener,
// readiness. One daemon serves every subtest. Subtests run in parallel, each with fresh accounts
// and its own source address (127.0.0.N), so that one subtest's failures neither slow down
// (backoff) nor lock (address lockout) another.
func TestAccountSecurity(t *testing.T) {
	adminPort, err := mftdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e := &accountEnv{
		notifyDir: t.TempDir(),
		adminAddr: net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort)),
	}
	e.d = startDaemon(t, mftdtest.Options{
		NotifyDir:   e.notifyDir,
		AdminListen: e.adminAddr,
		Lockout:     mftdtest.Lockout{Threshold: 5, Window: "15m", Duration: "15m"},
	})
	for i, c := range []struct {
		name string
		test func(*testing.T, *accountEnv, *door)
	}{
		{"lockout", testLockout},
		{"change", testPasswordChange},
		{"reset", testPasswordReset},
		{"emergency", testEmergencyAccess},
		{"sessions", testSessions},
		{"disable", testDisable},
		{"metrics", testMetrics},
		{"readyz", testReadyz},
	} {
		ip := fmt.Sprintf("127.0.0.%d", 10+i)
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.test(t, e, e.door(t, ip))
		})
	}
}

// Five wrong codes lock the account: the right password and code are then refused exactly like a
// wrong password, until an admin unlocks it. The lockout is audited once and counted.
func testLockout(t *testing.T, e *accountEnv, w *door) {
	u := e.newAccount(t, "lena")
	for i := 1; i <= 5; i++ {
		if st, body := w.login(t, u.Name, u.Password, u.wrongCode(t)); st != http.StatusUnauthorized {
			t.Fatalf("login %d with a wrong code: %d %q, want 401", i, st, body)
		}
	}
	st, locked := w.login(t, u.Name, u.Password, u.code(t, 10*time.Second))
	if st != http.StatusUnauthorized {
		t.Fatalf("login with the right password and code after 5 wrong codes: %d %q, want 401 (locked)", st, locked)
	}
	// A wrong password on an account that is not locked, from an address with no failures.
	other := e.newAccount(t, "lars")
	st, wrong := e.door(t, "127.0.0.99").login(t, other.Name, other.Password+"x", other.code(t, 2*time.Second))
	if st != http.StatusUnauthorized {
		t.Fatalf("login with a wrong password: %d %q, want 401", st, wrong)
	}
	if !bytes.Equal(locked, wrong) {
		t.Errorf("a locked account's 401 differs from a wrong password's:\nlocked: %q\nwrong:  %q", locked, wrong)
	}

	if r := e.d.Admin("", "user", "unlock", u.Name); r.Code != 0 {
		t.Fatalf("mftd user unlock: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	w.mustLogin(t, u)

	if n := e.auditCount(t, "auth.lockout", "account:"+u.Name); n != 1 {
		t.Errorf("%d auth.lockout audit records for %s, want 1", n, u.Name)
	}
	mfs := e.scrape(t)
	if v := metricValue(t, mfs, "mftd_auth_lockouts_total", map[string]string{"kind": "account"}); v < 1 {
		t.Errorf(`mftd_auth_lockouts_total{kind="account"} = %v, want >= 1`, v)
	}
	if v := metricValue(t, mfs, "mftd_auth_failures_total", nil); v < 5 {
		t.Errorf("mftd_auth_failures_total = %v, want >= 5", v)
	}
}

// A password change ends the user's other sessions and keeps the current one; the old password
// stops working and the new one works; a weak new password is refused and changes nothing.
func testPasswordChange(t *testing.T, e *accountEnv, w *door) {
	t.Run("other sessions end", func(t *testing.T) {
		u := e.newAccount(t, "carl")
		current, other := w.mustLogin(t, u), w.mustLogin(t, u)
		if st, body := w.changePassword(t, current, u.Password, passphrase(), u.code(t, 2*time.Second)); st != http.StatusNoContent {
			t.Fatalf("POST /api/v1/me/password: %d %q, want 204", st, body)
		}
		w.wantMe(t, other, http.StatusUnauthorized, "the other session after a password change")
		w.wantMe(t, current, http.StatusOK, "the session that changed the password")
	})
	t.Run("old password refused, new accepted", func(t *testing.T) {
		u := e.newAccount(t, "cleo")
		tok, next := w.mustLogin(t, u), passphrase()
		if st, body := w.changePassword(t, tok, u.Password, next, u.code(t, 2*time.Second)); st != http.StatusNoContent {
			t.Fatalf("POST /api/v1/me/password: %d %q, want 204", st, body)
		}
		code := u.code(t, 10*time.Second)
		if st, body := w.login(t, u.Name, u.Password, code); st != http.StatusUnauthorized {
			t.Errorf("login with the old password: %d %q, want 401", st, body)
		}
		// The same code: it was valid, so the 401 was the old password's doing.
		if st, body := w.login(t, u.Name, next, code); st != http.StatusOK {
			t.Errorf("login with the new password: %d %q, want 200", st, body)
		}
	})
	t.Run("weak password keeps sessions", func(t *testing.T) {
		u := e.newAccount(t, "cora")
		current, other := w.mustLogin(t, u), w.mustLogin(t, u)
		if st, body := w.changePassword(t, current, u.Password, "password1234", u.code(t, 2*time.Second)); st != http.StatusBadRequest {
			t.Fatalf("POST /api/v1/me/password with new password1234: %d %q, want 400", st, body)
		}
		w.wantMe(t, other, http.StatusOK, "the other session after a refused password change")
		w.wantMe(t, current, http.StatusOK, "the session after a refused password change")
	})
	t.Run("weak password keeps the password", func(t *testing.T) {
		u := e.newAccount(t, "cyan")
		tok := w.mustLogin(t, u)
		if st, body := w.changePassword(t, tok, u.Password, "password1234", u.code(t, 2*time.Second)); st != http.StatusBadRequest {
			t.Fatalf("POST /api/v1/me/password with new password1234: %d %q, want 400", st, body)
		}
		code := u.code(t, 10*time.Second)
		if st, body := w.login(t, u.Name, "password1234", code); st != http.StatusUnauthorized {
			t.Errorf("login with the refused weak password: %d %q, want 401", st, body)
		}
		if st, body := w.login(t, u.Name, u.Password, code); st != http.StatusOK {
			t.Errorf("login with the unchanged password: %d %q, want 200", st, body)
		}
	})
}

// A reset answers the same for any user name, mails exactly one code to an existing user, sets
// the new password with that code and an authenticator code, ends every session, and works once.
func testPasswordReset(t *testing.T, e *accountEnv, w *door) {
	t.Run("every session ends", func(t *testing.T) {
		u := e.newAccount(t, "rita")
		in := e.inbox(u.Name)
		tokA, tokB := w.mustLogin(t, u), w.mustLogin(t, u)
		st, known := w.call(t, http.MethodPost, "/api/v1/password/reset", "", map[string]string{"username": u.Name})
		if st != http.StatusAccepted {
			t.Fatalf("POST /api/v1/password/reset for %s: %d %q, want 202", u.Name, st, known)
		}
		st, unknown := w.call(t, http.MethodPost, "/api/v1/password/reset", "", map[string]string{"username": "nosuchuser"})
		if st != http.StatusAccepted {
			t.Fatalf("POST /api/v1/password/reset for an unknown user: %d %q, want 202", st, unknown)
		}
		if !bytes.Equal(known, unknown) {
			t.Errorf("reset answers differ:\nexisting user: %q\nunknown user:  %q", known, unknown)
		}
		code := eightDigits(t, in.next(t, "reset"))
		time.Sleep(500 * time.Millisecond) // room for a second message that must not come
		if n := len(in.all(t)); n != 1 {
			t.Errorf("%d messages for %s after one reset request, want 1", n, u.Name)
		}
		if n := len(e.inbox("nosuchuser").all(t)); n != 0 {
			t.Errorf("%d messages for an unknown user, want 0", n)
		}
		if st, body := w.resetConfirm(t, u.Name, code, passphrase(), u.code(t, 2*time.Second)); st != http.StatusNoContent {
			t.Fatalf("POST /api/v1/password/reset/confirm: %d %q, want 204", st, body)
		}
		w.wantMe(t, tokA, http.StatusUnauthorized, "a session opened before the reset")
		w.wantMe(t, tokB, http.StatusUnauthorized, "another session opened before the reset")
	})
	t.Run("code works once", func(t *testing.T) {
		u := e.newAccount(t, "rolf")
		in := e.inbox(u.Name)
		if st, body := w.call(t, http.MethodPost, "/api/v1/password/reset", "", map[string]string{"username": u.Name}); st != http.StatusAccepted {
			t.Fatalf("POST /api/v1/password/reset: %d %q, want 202", st, body)
		}
		code, next := eightDigits(t, in.next(t, "reset")), passphrase()
		if st, body := w.resetConfirm(t, u.Name, code, next, u.code(t, 2*time.Second)); st != http.StatusNoContent {
			t.Fatalf("POST /api/v1/password/reset/confirm: %d %q, want 204", st, body)
		}
		// A fresh authenticator code: the reset code is what must be refused.
		if st, body := w.resetConfirm(t, u.Name, code, passphrase(), u.code(t, 2*time.Second)); st != http.StatusUnauthorized {
			t.Errorf("the same reset code again: %d %q, want 401", st, body)
		}
		if st, body := w.login(t, u.Name, next, u.code(t, 2*time.Second)); st != http.StatusOK {
			t.Errorf("login with the password set by the reset: %d %q, want 200", st, body)
		}
	})
}

// Emergency access through the dir notifier: password → authorisation code by mail → emergency
// code, which signs in once, in a restricted session that may upload but not change the
// password. Issuing a new emergency code voids the unused old one; the sign-in is notified.
func testEmergencyAccess(t *testing.T, e *accountEnv, w *door) {
	u := e.newAccount(t, "emil")
	in := e.inbox(u.Name)
	request := func(password string) []byte {
		t.Helper()
		st, body := w.call(t, http.MethodPost, "/api/v1/emergency/request", "", map[string]string{"username": u.Name, "password": password})
		if st != http.StatusAccepted {
			t.Fatalf("POST /api/v1/emergency/request: %d %q, want 202", st, body)
		}
		return body
	}
	issue := func() (string, time.Time) {
		t.Helper()
		request(u.Password)
		auth := eightDigits(t, in.next(t, "authorisation"))
		st, body := w.call(t, http.MethodPost, "/api/v1/emergency/verify", "", map[string]string{"username": u.Name, "password": u.Password, "code": auth})
		if st != http.StatusOK {
			t.Fatalf("POST /api/v1/emergency/verify: %d %q, want 200", st, body)
		}
		var out struct {
			Code      string    `json:"emergency_code"`
			ExpiresAt time.Time `json:"expires_at"`
		}
		if err := json.Unmarshal(body, &out); err != nil {
			t.Fatalf("POST /api/v1/emergency/verify: body %q: %v", body, err)
		}
		if !regexp.MustCompile(`^[0-9]{8}$`).MatchString(out.Code) {
			t.Fatalf("emergency_code %q, want 8 digits", out.Code)
		}
		if d := time.Until(out.ExpiresAt); d < 23*time.Hour+55*time.Minute || d > 24*time.Hour+time.Minute {
			t.Errorf("expires_at %v is %v from now, want about 24h", out.ExpiresAt, d)
		}
		return out.Code, out.ExpiresAt
	}

	// A wrong password gets the same answer, and no code.
	wrong, right := request(u.Password+"x"), request(u.Password)
	if !bytes.Equal(wrong, right) {
		t.Errorf("emergency request answers differ:\nwrong password: %q\nright password: %q", wrong, right)
	}
	in.next(t, "authorisation")
	time.Sleep(500 * time.Millisecond) // room for a second message that must not come
	if n := len(in.all(t)); n != 1 {
		t.Errorf("%d messages after an emergency request with a wrong and one with the right password, want 1", n)
	}

	first, _ := issue()
	second, _ := issue()
	if st, body := w.login(t, u.Name, u.Password, first); st != http.StatusUnauthorized {
		t.Errorf("login with an emergency code issued before the latest one: %d %q, want 401", st, body)
	}
	st, body := w.login(t, u.Name, u.Password, second)
	if st != http.StatusOK {
		t.Fatalf("login with the emergency code: %d %q, want 200", st, body)
	}
	tok := token(t, body)
	var me struct {
		User      string `json:"user"`
		Emergency *bool  `json:"emergency_session"`
	}
	if st, body := w.call(t, http.MethodGet, "/api/v1/me", tok, nil); st != http.StatusOK || json.Unmarshal(body, &me) != nil || me.Emergency == nil || !*me.Emergency {
		t.Errorf("GET /api/v1/me in the emergency session: %d %q, want 200 with \"emergency_session\": true", st, body)
	}

	ctx := testCtx(t, time.Minute)
	c := w.tus(tok)
	data := readAllData(t, 64<<10, 81)
	url := create(t, ctx, c, int64(len(data)), map[string]string{"filename": "emergency.txt"})
	patch(t, ctx, c, url, 0, bytes.NewReader(data), int64(len(data)), "")
	wantAvailable(t, waitTerminal(t, ctx, c, url, 30*time.Second), int64(len(data)), mftdtest.SHA256Hex(data))

	// The right password and a valid authenticator code: only the session's kind refuses it.
	if st, body := w.changePassword(t, tok, u.Password, passphrase(), u.code(t, 2*time.Second)); st != http.StatusForbidden {
		t.Errorf("POST /api/v1/me/password in the emergency session: %d %q, want 403", st, body)
	}
	if st, body := w.login(t, u.Name, u.Password, second); st != http.StatusUnauthorized {
		t.Errorf("the same emergency code a second time: %d %q, want 401", st, body)
	}
	in.next(t, "signed in with an emergency code")
	for _, m := range in.all(t) {
		for what, secret := range map[string]string{"password": u.Password, "first emergency code": first, "second emergency code": second} {
			if strings.Contains(m.subject+m.body, secret) {
				t.Errorf("message %q carries the %s", m.subject, what)
			}
		}
	}
}

// A user lists and ends their own sessions, cannot end another user's, and logs out.
func testSessions(t *testing.T, e *accountEnv, w *door) {
	u := e.newAccount(t, "sam")
	tok, other := w.mustLogin(t, u), w.mustLogin(t, u)
	ss := w.sessions(t, tok)
	if len(ss) < 2 {
		t.Fatalf("GET /api/v1/me/sessions lists %d sessions after two logins, want >= 2", len(ss))
	}
	var currents int
	for _, s := range ss {
		if s.Current {
			currents++
		}
	}
	if currents != 1 {
		t.Fatalf("GET /api/v1/me/sessions: %d sessions marked current, want exactly 1: %+v", currents, ss)
	}
	otherID := currentSession(t, w.sessions(t, other))
	if st, body := w.call(t, http.MethodDelete, "/api/v1/me/sessions/"+otherID, tok, nil); st != http.StatusNoContent {
		t.Fatalf("DELETE /api/v1/me/sessions/{other}: %d %q, want 204", st, body)
	}
	w.wantMe(t, other, http.StatusUnauthorized, "a session ended from another one")
	w.wantMe(t, tok, http.StatusOK, "the session that ended another")

	stranger := e.newAccount(t, "sara")
	strangerTok := w.mustLogin(t, stranger)
	strangerID := currentSession(t, w.sessions(t, strangerTok))
	if st, body := w.call(t, http.MethodDelete, "/api/v1/me/sessions/"+strangerID, tok, nil); st != http.StatusNotFound {
		t.Errorf("DELETE another user's session: %d %q, want 404", st, body)
	}
	w.wantMe(t, strangerTok, http.StatusOK, "a session another user tried to end")

	if st, body := w.call(t, http.MethodPost, "/api/v1/logout", tok, nil); st != http.StatusNoContent {
		t.Fatalf("POST /api/v1/logout: %d %q, want 204", st, body)
	}
	w.wantMe(t, tok, http.StatusUnauthorized, "a session after logout")
}

// `mftd user disable` ends the user's sessions at once and refuses sign-in; enable undoes it.
func testDisable(t *testing.T, e *accountEnv, w *door) {
	u := e.newAccount(t, "dora")
	tok := w.mustLogin(t, u)
	if r := e.d.Admin("", "user", "disable", u.Name); r.Code != 0 {
		t.Fatalf("mftd user disable: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	w.wantMe(t, tok, http.StatusUnauthorized, "a session of a user just disabled")
	code := u.code(t, 10*time.Second)
	if st, body := w.login(t, u.Name, u.Password, code); st != http.StatusUnauthorized {
		t.Errorf("login of a disabled user: %d %q, want 401", st, body)
	}
	if r := e.d.Admin("", "user", "enable", u.Name); r.Code != 0 {
		t.Fatalf("mftd user enable: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	// The same code: it was valid, so the 401 was the disabling's doing.
	if st, body := w.login(t, u.Name, u.Password, code); st != http.StatusOK {
		t.Errorf("login after mftd user enable: %d %q, want 200", st, body)
	}
}

// The admin listener serves /metrics and nothing else, and counts the bytes of an upload; the
// public listener serves no metrics.
func testMetrics(t *testing.T, e *accountEnv, w *door) {
	u := e.newAccount(t, "mona")
	c := w.tus(w.mustLogin(t, u))
	received := map[string]string{"proto": "tus"}
	before := metricValue(t, e.scrape(t), "mftd_received_bytes_total", received)

	ctx := testCtx(t, time.Minute)
	data := readAllData(t, 3<<20, 82)
	url := create(t, ctx, c, int64(len(data)), map[string]string{"filename": "metrics.bin"})
	patch(t, ctx, c, url, 0, bytes.NewReader(data), int64(len(data)), "")
	wantAvailable(t, waitTerminal(t, ctx, c, url, 30*time.Second), int64(len(data)), mftdtest.SHA256Hex(data))

	after := metricValue(t, e.scrape(t), "mftd_received_bytes_total", received)
	if after-before < float64(len(data)) {
		t.Errorf(`mftd_received_bytes_total{proto="tus"} went from %v to %v over a %d-byte upload, want an increase of at least %d`,
			before, after, len(data), len(data))
	}

	if st, body := w.call(t, http.MethodGet, "/metrics", "", nil); st != http.StatusNotFound {
		t.Errorf("GET /metrics on the public listener: %d %q, want 404", st, truncateBody(body))
	}
	for _, p := range []string{"/", "/healthz", "/readyz", "/api/v1/me"} {
		resp, err := http.Get("http://" + e.adminAddr + p)
		if err != nil {
			t.Fatalf("GET %s on the admin listener: %v", p, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s on the admin listener: %s, want 404", p, resp.Status)
		}
	}
}

// /readyz names the state database, storage and the scanner.
func testReadyz(t *testing.T, e *accountEnv, w *door) {
	st, body := w.call(t, http.MethodGet, "/readyz", "", nil)
	if st != http.StatusOK {
		t.Fatalf("GET /readyz: %d %q, want 200", st, body)
	}
	var out struct {
		Checks map[string]string `json:"checks"`
	}
	if err := json.Unmarshal(body, &out); err != nil {
		t.Fatalf("GET /readyz: body %q: %v", body, err)
	}
	for _, name := range []string{"database", "storage", "scanner"} {
		if v, ok := out.Checks[name]; !ok || v == "" {
			t.Errorf("GET /readyz: checks has no %q entry: %q", name, body)
		}
	}
}

// --- helpers ---

type accountEnv struct {
	d         *mftdtest.Daemon
	notifyDir string
	adminAddr string
}

// account is a user with the client-side bookkeeping of the authenticator codes handed out.
type account struct {
	mftdtest.User
	lastStep int64 // the last TOTP step a code was made for
}

// newAccount adds name with a passphrase and the address name@example.org.
func (e *accountEnv) newAccount(t *testing.T, name string) *account {
	t.Helper()
	return &account{User: e.d.AddUserWith(name, passphrase(), name+"@example.org")}
}

// passphrase is three words and four digits, as the password policy likes them.
func passphrase() string {
	words := []string{"violet", "quartz", "ferry", "lantern", "walrus", "copper", "meadow", "thistle",
		"harbour", "saffron", "glacier", "pebble", "orchid", "tundra", "falcon", "juniper"}
	p := rand.Perm(len(words))
	return fmt.Sprintf("%s %s %s %04d", words[p[0]], words[p[1]], words[p[2]], rand.IntN(10000))
}

const totpPeriod = 30 // seconds

func totpStep(at time.Time) int64 { return at.Unix() / totpPeriod }

// code returns an authenticator code the daemon accepts (once) if it arrives within valid from
// now: the daemon takes a step once per account, within ±1 step of its clock. It is for the
// earliest step after the last one handed out that stays in that window for valid; if there is
// none yet, code waits for the clock.
func (a *account) code(t *testing.T, valid time.Duration) string {
	t.Helper()
	for {
		now := time.Now()
		s := max(a.lastStep+1, totpStep(now.Add(valid))-1)
		if s <= totpStep(now)+1 {
			a.lastStep = s
			return mftdtest.Code(t, a.Secret, time.Unix(s*totpPeriod, 0))
		}
		wait := time.Until(time.Unix((s-1)*totpPeriod, 0)) + 50*time.Millisecond
		t.Logf("%s: every authenticator code in the window is used; waiting %v for the next", a.Name, wait.Round(time.Second))
		time.Sleep(wait)
	}
}

// wrongCode is a well-formed code that matches none of the steps the daemon could accept now.
func (a *account) wrongCode(t *testing.T) string {
	t.Helper()
	now, valid := time.Now(), map[string]bool{}
	for d := -2; d <= 2; d++ {
		valid[mftdtest.Code(t, a.Secret, now.Add(time.Duration(d)*totpPeriod*time.Second))] = true
	}
	for i := 0; ; i++ {
		if c := fmt.Sprintf("%06d", i); !valid[c] {
			return c
		}
	}
}

// door is a client of the public listener whose connections come from one source address.
type door struct {
	d    *mftdtest.Daemon
	http *http.Client
}

func (e *accountEnv) door(t *testing.T, ip string) *door {
	t.Helper()
	hc, err := mftdtest.NewHTTPSClient(e.d.CertFile())
	if err != nil {
		t.Fatal(err)
	}
	tr := hc.Transport.(*http.Transport)
	tr.DialContext = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(ip)}, Timeout: 10 * time.Second}).DialContext
	hc.Timeout = 30 * time.Second
	t.Cleanup(tr.CloseIdleConnections)
	return &door{d: e.d, http: hc}
}

// call sends body (nil: none) as JSON with token (empty: none) and returns status and body.
func (w *door) call(t *testing.T, method, path, token string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, w.d.URL(path), rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := w.http.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// tus is a tus client for token whose connections come from the door's address.
func (w *door) tus(token string) *mftdtest.Client {
	return &mftdtest.Client{HTTP: w.http, Base: "https://" + w.d.Addr, Token: token}
}

func (w *door) login(t *testing.T, name, password, code string) (int, []byte) {
	t.Helper()
	return w.call(t, http.MethodPost, "/api/v1/login", "", map[string]string{"username": name, "password": password, "totp": code})
}

// mustLogin signs u in with a fresh authenticator code and returns the session token.
func (w *door) mustLogin(t *testing.T, u *account) string {
	t.Helper()
	st, body := w.login(t, u.Name, u.Password, u.code(t, 2*time.Second))
	if st != http.StatusOK {
		t.Fatalf("login %s: %d %q, want 200", u.Name, st, body)
	}
	return token(t, body)
}

func token(t *testing.T, body []byte) string {
	t.Helper()
	var out struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Token == "" {
		t.Fatalf("login answer %q has no token (%v)", body, err)
	}
	return out.Token
}

// wantMe fails unless GET /api/v1/me with token answers want.
func (w *door) wantMe(t *testing.T, token string, want int, what string) {
	t.Helper()
	if st, body := w.call(t, http.MethodGet, "/api/v1/me", token, nil); st != want {
		t.Errorf("GET /api/v1/me with %s: %d %q, want %d", what, st, body, want)
	}
}

func (w *door) changePassword(t *testing.T, token, current, next, code string) (int, []byte) {
	t.Helper()
	return w.call(t, http.MethodPost, "/api/v1/me/password", token, map[string]string{"current": current, "new": next, "totp": code})
}

func (w *door) resetConfirm(t *testing.T, name, code, next, totp string) (int, []byte) {
	t.Helper()
	return w.call(t, http.MethodPost, "/api/v1/password/reset/confirm", "",
		map[string]string{"username": name, "code": code, "new": next, "totp": totp})
}

type sessionInfo struct {
	ID      string `json:"id"`
	Current bool   `json:"current"`
}

func (w *door) sessions(t *testing.T, token string) []sessionInfo {
	t.Helper()
	st, body := w.call(t, http.MethodGet, "/api/v1/me/sessions", token, nil)
	var out struct {
		Sessions []sessionInfo `json:"sessions"`
	}
	if st != http.StatusOK || json.Unmarshal(body, &out) != nil {
		t.Fatalf("GET /api/v1/me/sessions: %d %q, want 200 with a sessions array", st, body)
	}
	return out.Sessions
}

// currentSession is the id of the one session marked current.
func currentSession(t *testing.T, ss []sessionInfo) string {
	t.Helper()
	for _, s := range ss {
		if s.Current && s.ID != "" {
			return s.ID
		}
	}
	t.Fatalf("no current session with an id in %+v", ss)
	return ""
}

// message is one file the dir notifier wrote.
type message struct {
	file, user, subject, body string
}

// inbox reads the messages the dir notifier wrote for one user.
type inbox struct {
	dir, user string
	seen      map[string]bool
}

func (e *accountEnv) inbox(user string) *inbox {
	return &inbox{dir: e.notifyDir, user: user, seen: map[string]bool{}}
}

// all returns every message written for the user so far, oldest first.
func (b *inbox) all(t *testing.T) []message {
	t.Helper()
	entries, err := os.ReadDir(b.dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []message
	for _, ent := range entries { // sorted by name: <unix-nanos>-<user>.eml
		if !strings.HasSuffix(ent.Name(), ".eml") || strings.HasPrefix(ent.Name(), ".") {
			continue
		}
		path := filepath.Join(b.dir, ent.Name())
		f, err := os.Open(path)
		if err != nil {
			t.Fatal(err)
		}
		m, err := mail.ReadMessage(f)
		if err != nil {
			f.Close()
			t.Fatalf("%s: %v", path, err)
		}
		body, err := io.ReadAll(m.Body)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if m.Header.Get("X-Mftd-User") != b.user {
			continue
		}
		subject, err := new(mime.WordDecoder).DecodeHeader(m.Header.Get("Subject"))
		if err != nil {
			t.Fatalf("%s: subject: %v", path, err)
		}
		if to, err := mail.ParseAddress(m.Header.Get("To")); err != nil || to.Address != b.user+"@example.org" {
			t.Errorf("%s: To %q, want %s@example.org", path, m.Header.Get("To"), b.user)
		}
		out = append(out, message{file: ent.Name(), user: b.user, subject: subject, body: string(body)})
	}
	return out
}

// next waits for a message not returned by next before whose subject contains subject.
func (b *inbox) next(t *testing.T, subject string) message {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		for _, m := range b.all(t) {
			if !b.seen[m.file] && strings.Contains(strings.ToLower(m.subject), subject) {
				b.seen[m.file] = true
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message for %s with %q in the subject after 10s; messages: %+v", b.user, subject, b.all(t))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// eightDigits is the one 8-digit code in the message's body.
func eightDigits(t *testing.T, m message) string {
	t.Helper()
	codes := regexp.MustCompile(`\b[0-9]{8}\b`).FindAllString(m.body, -1)
	if len(codes) != 1 {
		t.Fatalf("message %q: %d 8-digit codes in the body, want 1:\n%s", m.subject, len(codes), m.body)
	}
	return codes[0]
}

// auditCount counts the audit records of action on object.
func (e *accountEnv) auditCount(t *testing.T, action, object string) int {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+e.d.DBPath()+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM audit WHERE action_name = ? AND object = ?`, action, object).Scan(&n); err != nil {
		t.Fatalf("count %s audit records: %v", action, err)
	}
	return n
}

// scrape reads /metrics on the admin listener.
func (e *accountEnv) scrape(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	return scrapeAdmin(t, e.adminAddr)
}

// scrapeAdmin reads and parses /metrics on the admin listener at addr.
func scrapeAdmin(t *testing.T, addr string) map[string]*dto.MetricFamily {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("GET /metrics on the admin listener: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics on the admin listener: %s, want 200", resp.Status)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	mfs, err := p.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return mfs
}

// metricValue sums the counter series of name whose labels include want.
func metricValue(t *testing.T, mfs map[string]*dto.MetricFamily, name string, want map[string]string) float64 {
	t.Helper()
	mf, ok := mfs[name]
	if !ok {
		t.Fatalf("/metrics has no %s", name)
	}
	var sum float64
	var matched bool
series:
	for _, m := range mf.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if labels[k] != v {
				continue series
			}
		}
		matched = true
		sum += m.GetCounter().GetValue()
	}
	if !matched {
		t.Fatalf("/metrics has no %s series with labels %v", name, want)
	}
	return sum
}

func truncateBody(b []byte) string {
	if len(b) > 200 {
		return string(b[:200]) + "..."
	}
	return string(b)
}
