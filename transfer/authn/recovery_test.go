package authn

import (
	"context"
	"crypto/rand"
	"database/sql"
	"errors"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/notify"
)

// Guessing limits of the recovery fixture: an account locks after 5 failures, an address after 10.
var (
	accountLimits = state.FailureLimits{Threshold: 5, Window: 15 * time.Minute, LockFor: 15 * time.Minute}
	addressLimits = state.FailureLimits{Threshold: 10, Window: 15 * time.Minute, LockFor: 15 * time.Minute}
)

const (
	clientAddr  = "192.0.2.1:40000"
	newPassword = "lantern walrus copper 7310" // passes the password policy
)

// inbox is a notify.Notifier that keeps every message in memory.
type inbox struct {
	mu    sync.Mutex
	msgs  []notify.Message
	taken map[int]bool
}

var _ notify.Notifier = (*inbox)(nil)

func (b *inbox) Notify(_ context.Context, m notify.Message) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.msgs = append(b.msgs, m)
	return nil
}

// next waits for a message to user, not returned before, whose subject contains subject: the
// Service sends from a goroutine.
func (b *inbox) next(t *testing.T, user, subject string) notify.Message {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		b.mu.Lock()
		for i, m := range b.msgs {
			if !b.taken[i] && m.User == user && strings.Contains(m.Subject, subject) {
				b.taken[i] = true
				b.mu.Unlock()
				return m
			}
		}
		b.mu.Unlock()
		if time.Now().After(deadline) {
			t.Fatalf("no message to %s with %q in the subject within 5s", user, subject)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// recovery is a Service with a fake notifier, a real state database and an injected clock and
// sleep.
type recovery struct {
	t     *testing.T
	db    *state.DB
	path  string
	svc   *Service
	inbox *inbox

	mu    sync.Mutex
	clock time.Time
	slept []time.Duration
}

func newRecovery(t *testing.T, idle time.Duration) *recovery {
	t.Helper()
	log := zaptest.NewLogger(t)
	path := filepath.Join(t.TempDir(), "db")
	db, err := state.Open(context.Background(), path, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	key := make([]byte, policy.MinCodeKeyBytes)
	rand.Read(key)
	r := &recovery{
		t: t, db: db, path: path, inbox: &inbox{taken: map[int]bool{}},
		clock: time.Date(2031, 3, 4, 5, 6, 1, 0, time.UTC), // 1 s into a TOTP step
	}
	r.svc = New(Config{
		SessionTTL: 12 * time.Hour, SessionIdle: idle,
		Lockout: accountLimits, AddressLockout: addressLimits, CodeKey: key,
	}, log, db, r.inbox, nil)
	r.svc.now = r.now
	r.svc.sleep = func(_ context.Context, d time.Duration) {
		r.mu.Lock()
		defer r.mu.Unlock()
		r.slept = append(r.slept, d)
	}
	return r
}

func (r *recovery) now() time.Time {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.clock
}

func (r *recovery) advance(d time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.clock = r.clock.Add(d)
}

// sleeps is every backoff the Service asked for so far.
func (r *recovery) sleeps() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.slept...)
}

// user is an account with what its owner knows.
type user struct {
	state.Account
	password string
	secret   string
	lastStep int64 // the last TOTP step a code was made for
}

func (r *recovery) add(name string) *user {
	r.t.Helper()
	password := "violet quartz ferry 4821"
	hash, err := policy.HashPassword(password)
	if err != nil {
		r.t.Fatal(err)
	}
	secret, _, err := policy.NewTOTP("mftd", name)
	if err != nil {
		r.t.Fatal(err)
	}
	a, err := r.db.CreateAccount(context.Background(), state.Account{
		Name: name, PasswordHash: hash, TOTPSecret: secret, Email: name + "@example.org", CreatedAt: r.now(),
	})
	if err != nil {
		r.t.Fatal(err)
	}
	return &user{Account: a, password: password, secret: secret}
}

// code is a TOTP code of u the Service accepts now, for a step after every one handed out before.
func (r *recovery) code(u *user) string {
	r.t.Helper()
	cur := r.now().Unix() / 30
	s := max(u.lastStep+1, cur-1)
	if s > cur+1 {
		r.t.Fatalf("every TOTP step around %v is used; advance the clock", r.now())
	}
	u.lastStep = s
	return code(r.t, u.secret, time.Unix(s*30, 0))
}

// passwordIs reports whether u's stored password is password.
func (r *recovery) passwordIs(u *user, password string) bool {
	r.t.Helper()
	a, err := r.db.AccountByName(context.Background(), u.Name)
	if err != nil {
		r.t.Fatal(err)
	}
	ok, err := policy.VerifyPassword(a.PasswordHash, password)
	if err != nil {
		r.t.Fatal(err)
	}
	return ok
}

func (r *recovery) login(u *user, password, code, from string) (Session, error) {
	return r.svc.Login(context.Background(), u.Name, password, code, from)
}

// auditCount counts the audit records of action on object.
func (r *recovery) auditCount(action, object string) int {
	r.t.Helper()
	db, err := sql.Open("sqlite", "file:"+r.path+"?mode=ro")
	if err != nil {
		r.t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM audit WHERE action_name = ? AND object = ?`, action, object).Scan(&n); err != nil {
		r.t.Fatal(err)
	}
	return n
}

var eightDigitRE = regexp.MustCompile(`\b[0-9]{8}\b`)

// codeIn is the one 8-digit code in m's body.
func codeIn(t *testing.T, m notify.Message) string {
	t.Helper()
	codes := eightDigitRE.FindAllString(m.Body, -1)
	if len(codes) != 1 {
		t.Fatalf("message %q has %d 8-digit codes, want 1", m.Subject, len(codes))
	}
	return codes[0]
}

// codeKind is one kind of one-time code: how it is issued and how it is used.
type codeKind struct {
	name  string
	ttl   time.Duration
	issue func(r *recovery, u *user) string
	use   func(r *recovery, u *user, code string) error
}

var codeKinds = []codeKind{
	{
		name: "reset code", ttl: 30 * time.Minute,
		issue: func(r *recovery, u *user) string {
			r.t.Helper()
			if err := r.svc.RequestReset(context.Background(), u.Name, clientAddr); err != nil {
				r.t.Fatalf("RequestReset: %v", err)
			}
			return codeIn(r.t, r.inbox.next(r.t, u.Name, "reset"))
		},
		use: func(r *recovery, u *user, code string) error {
			err := r.svc.ConfirmReset(context.Background(), u.Name, code, newPassword, r.code(u), clientAddr)
			if err == nil && !r.passwordIs(u, newPassword) {
				r.t.Errorf("ConfirmReset succeeded but the password is not the new one")
			}
			return err
		},
	},
	{
		name: "emergency authorisation code", ttl: 15 * time.Minute,
		issue: issueEmergencyAuth,
		use: func(r *recovery, u *user, code string) error {
			ec, _, err := r.svc.VerifyEmergency(context.Background(), u.Name, u.password, code, clientAddr)
			if err == nil && !regexp.MustCompile(`^[0-9]{8}$`).MatchString(ec) {
				r.t.Errorf("VerifyEmergency gave emergency code %q, want 8 digits", ec)
			}
			return err
		},
	},
	{
		name: "emergency code", ttl: 24 * time.Hour,
		issue: issueEmergency,
		use: func(r *recovery, u *user, code string) error {
			s, err := r.login(u, u.password, code, clientAddr)
			if err == nil && !s.Emergency {
				r.t.Errorf("a sign-in with an emergency code opened a session not marked emergency")
			}
			return err
		},
	},
}

func issueEmergencyAuth(r *recovery, u *user) string {
	r.t.Helper()
	if err := r.svc.RequestEmergency(context.Background(), u.Name, u.password, clientAddr); err != nil {
		r.t.Fatalf("RequestEmergency: %v", err)
	}
	return codeIn(r.t, r.inbox.next(r.t, u.Name, "authorisation"))
}

func issueEmergency(r *recovery, u *user) string {
	r.t.Helper()
	auth := issueEmergencyAuth(r, u)
	ec, exp, err := r.svc.VerifyEmergency(context.Background(), u.Name, u.password, auth, clientAddr)
	if err != nil {
		r.t.Fatalf("VerifyEmergency: %v", err)
	}
	if want := r.now().Add(24 * time.Hour); exp.Before(want.Add(-time.Second)) || exp.After(want) {
		r.t.Errorf("emergency code expires at %v, want %v", exp, want)
	}
	return ec
}

// A code works until its lifetime ends, and not after.
func TestCodeLifetimes(t *testing.T) {
	for _, k := range codeKinds {
		for _, c := range []struct {
			name string
			age  time.Duration
			ok   bool
		}{
			{"a minute before expiry", k.ttl - time.Minute, true},
			{"just after expiry", k.ttl + time.Second, false},
		} {
			t.Run(k.name+"/"+c.name, func(t *testing.T) {
				r := newRecovery(t, 0)
				u := r.add("ann")
				code := k.issue(r, u)
				r.advance(c.age)
				err := k.use(r, u, code)
				switch {
				case c.ok && err != nil:
					t.Errorf("%s used %v after issue: %v, want success", k.name, c.age, err)
				case !c.ok && !errors.Is(err, ErrBadCredentials):
					t.Errorf("%s used %v after issue: %v, want ErrBadCredentials", k.name, c.age, err)
				}
			})
		}
	}
}

// A code works once.
func TestCodesWorkOnce(t *testing.T) {
	for _, k := range codeKinds {
		t.Run(k.name, func(t *testing.T) {
			r := newRecovery(t, 0)
			u := r.add("bob")
			code := k.issue(r, u)
			if err := k.use(r, u, code); err != nil {
				t.Fatalf("first use: %v", err)
			}
			if err := k.use(r, u, code); !errors.Is(err, ErrBadCredentials) {
				t.Errorf("second use: %v, want ErrBadCredentials", err)
			}
		})
	}
}

// Issuing a code voids the unused one issued before it.
func TestNewCodeVoidsOld(t *testing.T) {
	for _, k := range codeKinds {
		t.Run(k.name, func(t *testing.T) {
			r := newRecovery(t, 0)
			u := r.add("cat")
			old := k.issue(r, u)
			latest := k.issue(r, u)
			if old == latest {
				t.Skip("two random codes happen to be equal")
			}
			if err := k.use(r, u, old); !errors.Is(err, ErrBadCredentials) {
				t.Errorf("the older code after a new one was issued: %v, want ErrBadCredentials", err)
			}
			if err := k.use(r, u, latest); err != nil {
				t.Errorf("the latest code: %v, want success", err)
			}
		})
	}
}

// Five failures lock the account: the right password and code are refused like a wrong password
// until the lock ends; the lockout is audited once.
func TestAccountLockout(t *testing.T) {
	r := newRecovery(t, 0)
	u := r.add("lou")
	for i := 1; i <= accountLimits.Threshold; i++ {
		if _, err := r.login(u, u.password, wrongCode(t, u.secret, r.now()), clientAddr); err != ErrBadCredentials {
			t.Fatalf("failure %d: %v, want ErrBadCredentials", i, err)
		}
	}
	if _, err := r.login(u, u.password, r.code(u), clientAddr); err != ErrBadCredentials {
		t.Fatalf("right password and code while locked: %v, want exactly ErrBadCredentials", err)
	}
	r.advance(accountLimits.LockFor - time.Minute)
	if _, err := r.login(u, u.password, r.code(u), clientAddr); err != ErrBadCredentials {
		t.Fatalf("right password and code a minute before the lock ends: %v, want ErrBadCredentials", err)
	}
	r.advance(time.Minute + time.Second)
	if _, err := r.login(u, u.password, r.code(u), clientAddr); err != nil {
		t.Fatalf("right password and code after the lock ended: %v", err)
	}
	if n := r.auditCount("auth.lockout", "account:"+u.Name); n != 1 {
		t.Errorf("%d auth.lockout audit records, want 1", n)
	}
}

// Failures over several accounts from one address lock the address (whatever the port), not the
// accounts: a right sign-in from there is refused, from elsewhere accepted, until the lock ends.
func TestAddressLockout(t *testing.T) {
	r := newRecovery(t, 0)
	const per = 2 // failures per account, well below the account threshold
	var users []*user
	for i := range addressLimits.Threshold / per {
		u := r.add(fmt.Sprintf("user%d", i))
		users = append(users, u)
		for j := range per {
			if _, err := r.login(u, u.password+"x", code(t, u.secret, r.now()), fmt.Sprintf("198.51.100.7:%d", 1000+i*per+j)); err != ErrBadCredentials {
				t.Fatalf("wrong password: %v, want ErrBadCredentials", err)
			}
		}
	}
	fresh := r.add("zoe")
	if _, err := r.login(fresh, fresh.password, r.code(fresh), "198.51.100.7:2000"); err != ErrBadCredentials {
		t.Fatalf("right credentials from the locked address: %v, want ErrBadCredentials", err)
	}
	if _, err := r.login(fresh, fresh.password, r.code(fresh), "203.0.113.9:2000"); err != nil {
		t.Fatalf("right credentials from another address: %v", err)
	}
	r.advance(addressLimits.LockFor + time.Second)
	if _, err := r.login(users[0], users[0].password, r.code(users[0]), "198.51.100.7:2001"); err != nil {
		t.Fatalf("right credentials from the address after its lock ended: %v", err)
	}
	if n := r.auditCount("auth.lockout", "address:198.51.100.7"); n != 1 {
		t.Errorf("%d auth.lockout audit records for the address, want 1", n)
	}
}

// From the second failure on, each failed answer waits longer than the one before.
func TestBackoffGrows(t *testing.T) {
	r := newRecovery(t, 0)
	u := r.add("bea")
	var prev time.Duration
	for i := 1; i <= accountLimits.Threshold; i++ {
		before := len(r.sleeps())
		if _, err := r.login(u, u.password+"x", code(t, u.secret, r.now()), clientAddr); err != ErrBadCredentials {
			t.Fatalf("failure %d: %v, want ErrBadCredentials", i, err)
		}
		got := r.sleeps()[before:]
		if i == 1 {
			if len(got) != 0 {
				t.Errorf("first failure waited %v, want no wait", got)
			}
			continue
		}
		if len(got) != 1 {
			t.Fatalf("failure %d waited %v, want one wait", i, got)
		}
		if got[0] <= prev {
			t.Errorf("failure %d waited %v, want longer than the %v before", i, got[0], prev)
		}
		prev = got[0]
	}
}

// The backoff says nothing about whether an account exists: failed sign-ins on an existing
// account and on an unknown name, each from a fresh address, wait alike (issue 8: "same timing
// for unknown users").
func TestBackoffSameForUnknownUser(t *testing.T) {
	r := newRecovery(t, 0)
	u := r.add("kim")
	waits := func(name string, base int) []time.Duration {
		before := len(r.sleeps())
		for i := range accountLimits.Threshold + 1 {
			from := fmt.Sprintf("203.0.113.%d:4000", base+i)
			if _, err := r.svc.Login(context.Background(), name, u.password+"x", code(t, u.secret, r.now()), from); err != ErrBadCredentials {
				t.Fatalf("%s: %v, want ErrBadCredentials", name, err)
			}
		}
		return r.sleeps()[before:]
	}
	known, unknown := waits(u.Name, 1), waits("nobody", 101)
	if fmt.Sprint(known) != fmt.Sprint(unknown) {
		t.Errorf("backoff of failures on an existing account %v, on an unknown name %v; want the same", known, unknown)
	}
}

// A disabled account cannot sign in and its sessions end; enabled again, it can.
func TestDisabledAccount(t *testing.T) {
	r := newRecovery(t, 0)
	ctx := context.Background()
	u := r.add("dan")
	s, err := r.login(u, u.password, r.code(u), clientAddr)
	if err != nil {
		t.Fatal(err)
	}
	if err := r.db.SetDisabled(ctx, u.ID, true); err != nil {
		t.Fatal(err)
	}
	if _, err := r.svc.Authenticate(ctx, s.Token); err != ErrBadCredentials {
		t.Errorf("a session of a disabled account: %v, want ErrBadCredentials", err)
	}
	c := r.code(u)
	if _, err := r.login(u, u.password, c, clientAddr); err != ErrBadCredentials {
		t.Errorf("sign-in of a disabled account: %v, want ErrBadCredentials", err)
	}
	if err := r.db.SetDisabled(ctx, u.ID, false); err != nil {
		t.Fatal(err)
	}
	if _, err := r.login(u, u.password, c, clientAddr); err != nil {
		t.Errorf("sign-in with the same code once enabled again: %v", err)
	}
}

// A session ends after SessionIdle without use, counted from its last use.
func TestIdleSession(t *testing.T) {
	for _, idle := range []time.Duration{30 * time.Minute, time.Minute} {
		t.Run(idle.String(), func(t *testing.T) {
			r := newRecovery(t, idle)
			ctx := context.Background()
			u := r.add("ida")
			s, err := r.login(u, u.password, r.code(u), clientAddr)
			if err != nil {
				t.Fatal(err)
			}
			// Used every two thirds of the idle limit, it stays, well past the limit.
			gap := idle * 2 / 3
			for i := 1; i <= 3; i++ {
				r.advance(gap)
				if _, err := r.svc.Authenticate(ctx, s.Token); err != nil {
					t.Fatalf("use %d, %v after the one before: %v, want the session alive", i, gap, err)
				}
			}
			// Last-seen is written at most every touchEvery (for limits of
			// at least twice that), so a session may outlive its limit by
			// that much, never die before it.
			slack := time.Duration(0)
			if idle >= 2*touchEvery {
				slack = touchEvery
			}
			r.advance(idle + slack + time.Second)
			if _, err := r.svc.Authenticate(ctx, s.Token); err != ErrBadCredentials {
				t.Errorf("use %v after the last one: %v, want ErrBadCredentials", idle+slack+time.Second, err)
			}
		})
	}
}

// A session opened with an emergency code is marked, and cannot change the password.
func TestEmergencySession(t *testing.T) {
	r := newRecovery(t, 0)
	ctx := context.Background()
	u := r.add("eve")
	normal, err := r.login(u, u.password, r.code(u), clientAddr)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := r.svc.Authenticate(ctx, normal.Token); err != nil || id.Emergency {
		t.Errorf("a session opened with the authenticator: %+v, %v; want Emergency false", id, err)
	}

	s, err := r.login(u, u.password, issueEmergency(r, u), clientAddr)
	if err != nil {
		t.Fatalf("sign-in with an emergency code: %v", err)
	}
	id, err := r.svc.Authenticate(ctx, s.Token)
	if err != nil || !id.Emergency || id.User != u.Name {
		t.Fatalf("the emergency session: %+v, %v; want %s with Emergency true", id, err, u.Name)
	}
	r.inbox.next(t, u.Name, "signed in with an emergency code")
	// The right password and a valid authenticator code: only the session's kind refuses it.
	if err := r.svc.ChangePassword(ctx, id, u.password, newPassword, r.code(u), clientAddr); !errors.Is(err, ErrEmergencySession) {
		t.Errorf("ChangePassword in the emergency session: %v, want ErrEmergencySession", err)
	}
	if !r.passwordIs(u, u.password) {
		t.Errorf("the password changed in an emergency session")
	}
}

// A weak new password at reset is refused without spending the reset code: the user picks a
// better one and confirms again with the same code.
func TestResetWeakPasswordKeepsCode(t *testing.T) {
	r := newRecovery(t, 0)
	ctx := context.Background()
	u := r.add("wes")
	code := codeKinds[0].issue(r, u)
	if err := r.svc.ConfirmReset(ctx, u.Name, code, "password1234", r.code(u), clientAddr); !errors.Is(err, policy.ErrWeakPassword) {
		t.Fatalf("ConfirmReset with password1234: %v, want ErrWeakPassword", err)
	}
	if err := r.svc.ConfirmReset(ctx, u.Name, code, newPassword, r.code(u), clientAddr); err != nil {
		t.Errorf("ConfirmReset with the same code and a strong password: %v, want success", err)
	}
}

// An emergency sign-in is told to the owner (IAO) of each project the user
// has a role in, once per owner, without the code; a user with no project
// notifies nobody else.
func TestEmergencyNotifiesProjectOwners(t *testing.T) {
	r := newRecovery(t, 0)
	ctx := context.Background()
	u := r.add("ema")
	r.add("olga")
	r.add("otto")
	rec := func(what string) state.AuditRecord {
		return state.AuditRecord{Actor: "cli:test", Action: what, Object: what, Result: "ok"}
	}
	now := time.Now()
	for _, p := range []struct{ project, owner, share string }{
		{"genomics", "olga", "cohort"}, {"genomics", "olga", "raw"}, {"imaging", "otto", "scans"},
	} {
		if _, err := r.db.GetProject(ctx, p.project); err != nil {
			if err := r.db.CreateProject(ctx, state.Project{Name: p.project, Owner: p.owner, CreatedAt: now, CreatedBy: "cli:test"}, rec("project.create")); err != nil {
				t.Fatal(err)
			}
		}
		if err := r.db.CreateShare(ctx, state.Share{Name: p.share, Project: p.project, CreatedAt: now, CreatedBy: p.owner}, rec("share.create")); err != nil {
			t.Fatal(err)
		}
		if err := r.db.PutShareMember(ctx, state.ShareMember{Share: p.share, User: u.Name, AddedBy: p.owner, AddedAt: now}, rec("share.member.put")); err != nil {
			t.Fatal(err)
		}
	}
	code := issueEmergency(r, u)
	if _, err := r.login(u, u.password, code, clientAddr); err != nil {
		t.Fatalf("sign-in with an emergency code: %v", err)
	}
	r.inbox.next(t, u.Name, "signed in with an emergency code")
	for owner, project := range map[string]string{"olga": "genomics", "otto": "imaging"} {
		m := r.inbox.next(t, owner, "ema signed in with an emergency code")
		if !strings.Contains(m.Body, project) || !strings.Contains(m.Body, clientAddr) {
			t.Errorf("message to %s: %q; want it to name project %s and the address", owner, m.Body, project)
		}
		if strings.Contains(m.Subject+m.Body, code) {
			t.Errorf("message to %s carries the emergency code", owner)
		}
	}
	time.Sleep(200 * time.Millisecond) // room for a duplicate that must not come
	r.inbox.mu.Lock()
	n := 0
	for _, m := range r.inbox.msgs {
		if m.User == "olga" {
			n++
		}
	}
	r.inbox.mu.Unlock()
	if n != 1 {
		t.Errorf("olga got %d messages for one sign-in (two shares of one project), want 1", n)
	}
}
