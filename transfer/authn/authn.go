// Package authn signs users in (password + authenticator code) and turns
// bearer tokens back into identities. Both doors (HTTPS, and SFTP later)
// verify credentials here, so there is one way in and one set of guessing
// limits: failure counters per account and per source address, kept in the
// state database so they survive restarts and hold across nodes.
package authn

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
	"github.com/mftd/mftd/transfer/notify"
)

// ErrBadCredentials is the one answer to every failed sign-in: it never says
// which factor failed, whether the account exists or whether it is locked.
var ErrBadCredentials = errors.New("invalid credentials")

// dummyTOTPSecret stands in for an unknown account's authenticator secret.
const dummyTOTPSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

// emergencyDigits is the length of an emergency code; TOTP codes have 6.
const emergencyDigits = 8

// Config configures sign-in.
type Config struct {
	SessionTTL  time.Duration // absolute session lifetime
	SessionIdle time.Duration // a session unused this long ends (0: no idle limit)
	// MaxConcurrentHashes bounds simultaneous argon2id verifications, each
	// of which holds ~19 MiB, so a burst of sign-ins cannot exhaust memory.
	MaxConcurrentHashes int
	Lockout             state.FailureLimits // per account
	AddressLockout      state.FailureLimits // per source address
	// CodeKey is the secret one-time codes are hashed with (policy.HashCode).
	CodeKey []byte
}

// Service verifies credentials and sessions.
type Service struct {
	cfg     Config
	log     *zap.Logger
	db      *state.DB
	notify  notify.Notifier // nil: reset and emergency access are unavailable
	metrics *metrics.Metrics
	now     func() time.Time
	sleep   func(context.Context, time.Duration)
	hash    chan struct{}
}

// New returns a Service. n may be nil (no notifier configured); m may be nil.
func New(cfg Config, log *zap.Logger, db *state.DB, n notify.Notifier, m *metrics.Metrics) *Service {
	if cfg.MaxConcurrentHashes <= 0 {
		cfg.MaxConcurrentHashes = 2
	}
	return &Service{
		cfg: cfg, log: log, db: db, notify: n, metrics: m, now: time.Now, sleep: sleepCtx,
		hash: make(chan struct{}, cfg.MaxConcurrentHashes),
	}
}

// Identity is an authenticated caller.
type Identity struct {
	User      string
	AccountID int64
	SessionID string
	// Emergency: the session was opened with an emergency code. It may
	// upload and list, nothing that changes who may do what.
	Emergency bool
}

// Session is a bearer token issued at sign-in.
type Session struct {
	Token     string
	ID        string
	ExpiresAt time.Time
	Emergency bool
}

// Login checks a user name, password and code and opens a session. The code
// is the authenticator's 6-digit TOTP code or an 8-digit emergency code
// (which opens a restricted session). Every failure is ErrBadCredentials,
// after the same work whether or not the account exists or is locked; a
// failure counts against the account and the source address, and enough of
// them lock either. The outcome is audited before it is returned.
func (s *Service) Login(ctx context.Context, username, password, code, remote string) (Session, error) {
	acct, emergency, err := s.checkFactors(ctx, "https", username, password, code, remote)
	if err != nil {
		return Session{}, err
	}
	return s.loggedIn(ctx, acct, emergency, remote, "")
}

// loggedIn opens the session of a login that passed, audits it (how, if
// not by password) and tells the user of an emergency-code login.
func (s *Service) loggedIn(ctx context.Context, acct state.Account, emergency bool, remote, how string) (Session, error) {
	sess, err := s.openSession(ctx, acct, emergency, remote)
	if err != nil {
		return Session{}, err
	}
	result := "ok"
	if emergency {
		result = "ok emergency-code"
	}
	if how != "" {
		result += " " + how
	}
	if err := s.audit(ctx, acct.Name, "login", acct.Name, result, remote); err != nil {
		return Session{}, err
	}
	s.log.Info("login", zap.String("user", acct.Name), zap.String("remote_addr", remote), zap.Bool("emergency", emergency), zap.String("how", how))
	if emergency {
		s.send(acct, "mftd: signed in with an emergency code",
			"Your account was signed in with an emergency access code from "+remote+".\n"+
				"If this was not you, contact your administrator at once.\n")
		s.notifyOwners(ctx, acct, remote)
	}
	return sess, nil
}

// notifyOwners tells the owner (IAO) of every project in which acct has a
// role that acct signed in with an emergency code. The message names the
// user, the projects and the address, and carries no code.
func (s *Service) notifyOwners(ctx context.Context, acct state.Account, remote string) {
	shares, err := s.db.UserShares(ctx, acct.Name)
	if err != nil {
		s.log.Warn("emergency sign-in: list the user's projects to notify their owners", zap.String("user", acct.Name), zap.Error(err))
		return
	}
	projects := map[string][]string{} // owner -> projects
	for _, sh := range shares {
		if sh.ProjectOwner == acct.Name || slices.Contains(projects[sh.ProjectOwner], sh.Project) {
			continue
		}
		projects[sh.ProjectOwner] = append(projects[sh.ProjectOwner], sh.Project)
	}
	for owner, ps := range projects {
		o, err := s.db.AccountByName(ctx, owner)
		if err != nil {
			s.log.Warn("emergency sign-in: notify a project owner", zap.String("user", acct.Name), zap.String("owner", owner), zap.Error(err))
			continue
		}
		s.send(o, "mftd: "+acct.Name+" signed in with an emergency code",
			"User "+acct.Name+", who has a role in your project(s) "+strings.Join(ps, ", ")+", signed in to mftd with an\n"+
				"emergency access code (in place of their authenticator) from "+remote+".\n"+
				"Such a session may upload and list files only. If you did not expect this, contact them or your administrator.\n")
	}
}

// checkFactors verifies a password and a TOTP or emergency code under the
// guessing limits, and records the outcome in the failure counters.
func (s *Service) checkFactors(ctx context.Context, door, username, password, code, remote string) (state.Account, bool, error) {
	name, actor, addr, locked, err := s.attempt(ctx, username, remote)
	if err != nil {
		return state.Account{}, false, err
	}
	acct, found, pwOK, err := s.checkPassword(ctx, name, password)
	if err != nil {
		return state.Account{}, false, err
	}
	emergency := len(code) == emergencyDigits
	codeOK, err := s.checkCode(ctx, acct, found && pwOK && !locked && !acct.Disabled, code)
	if err != nil {
		return state.Account{}, false, err
	}
	if found && pwOK && codeOK && !locked && !acct.Disabled {
		if err := s.db.ClearFailures(ctx, state.FailAccount, acct.Name); err != nil {
			return state.Account{}, false, fmt.Errorf("authn: clear failures: %w", err)
		}
		return acct, emergency, nil
	}
	if err := s.fail(ctx, door, actor, name, addr, remote); err != nil {
		return state.Account{}, false, err
	}
	return state.Account{}, false, ErrBadCredentials
}

// attempt starts a sign-in attempt: the canonical user name ("" if the
// name is invalid), the name to audit, the source address, and whether the
// account or the address is locked now.
func (s *Service) attempt(ctx context.Context, username, remote string) (name, actor, addr string, locked bool, err error) {
	name, nameErr := policy.CanonicalUsername(username)
	actor = name
	if nameErr != nil {
		actor, name = "(invalid user name)", ""
	}
	addr = hostOf(remote)
	locked, err = s.locked(ctx, name, addr)
	return name, actor, addr, locked, err
}

// locked reports whether the account or the address is locked now.
func (s *Service) locked(ctx context.Context, name, addr string) (bool, error) {
	for _, k := range [][2]string{{state.FailAccount, name}, {state.FailAddress, addr}} {
		if k[1] == "" {
			continue
		}
		until, err := s.db.LockedUntil(ctx, k[0], k[1], s.now())
		if err != nil {
			return false, fmt.Errorf("authn: read lock: %w", err)
		}
		if !until.IsZero() {
			return true, nil
		}
	}
	return false, nil
}

// checkPassword runs exactly one argon2id verification, against the
// account's hash or a dummy one.
func (s *Service) checkPassword(ctx context.Context, name, password string) (acct state.Account, found, ok bool, err error) {
	if name != "" {
		a, err := s.db.AccountByName(ctx, name)
		switch {
		case err == nil:
			acct, found = a, true
		case !errors.Is(err, state.ErrNotFound):
			return state.Account{}, false, false, fmt.Errorf("authn: look up account: %w", err)
		}
	}
	select {
	case s.hash <- struct{}{}:
	case <-ctx.Done():
		return state.Account{}, false, false, ctx.Err()
	}
	defer func() { <-s.hash }()
	if !found {
		policy.DummyVerify(password)
		return acct, false, false, nil
	}
	ok, verr := policy.VerifyPassword(acct.PasswordHash, password)
	if verr != nil {
		s.log.Error("stored password hash is malformed", zap.String("user", acct.Name), zap.Error(verr))
	}
	return acct, true, ok && verr == nil, nil
}

// checkCode checks a TOTP code (always, against a fixed secret for unknown
// users, so timing does not tell which factor failed) and, only when every
// other check passed (consume), records its use: a TOTP step once, an
// emergency code once.
func (s *Service) checkCode(ctx context.Context, acct state.Account, consume bool, code string) (bool, error) {
	if len(code) == emergencyDigits {
		if !consume || !isDigits(code) {
			return false, nil
		}
		err := s.db.UseCode(ctx, acct.ID, state.CodeEmergency, policy.HashCode(s.cfg.CodeKey, acct.ID, state.CodeEmergency, code), s.now())
		if errors.Is(err, state.ErrNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("authn: use emergency code: %w", err)
		}
		return true, nil
	}
	secret, last := dummyTOTPSecret, int64(0)
	if acct.ID != 0 {
		secret, last = acct.TOTPSecret, acct.TOTPLastStep
	}
	step, ok := policy.TOTPStep(secret, code, s.now(), last)
	if !ok || !consume {
		return false, nil
	}
	// Record the step atomically: of two requests with the same code, one wins.
	if err := s.db.UseTOTPStep(ctx, acct.ID, step); err != nil {
		if errors.Is(err, state.ErrReplay) {
			return false, nil
		}
		return false, fmt.Errorf("authn: record code use: %w", err)
	}
	return true, nil
}

// fail counts a failed attempt against the user name (valid names only, whether
// or not the account exists) and the address, audits it and any lockout it
// causes, and slows the answer down as failures mount.
func (s *Service) fail(ctx context.Context, door, actor, name, addr, remote string) error {
	s.metrics.AuthFailure(door)
	if err := s.audit(ctx, actor, "login", actor, "failed", remote); err != nil {
		return err
	}
	// The typed user name stays out of the log (people type passwords into
	// it); the audit record has it.
	s.log.Info("login failed", zap.String("remote_addr", remote), zap.String("door", door))
	worst := 0
	for _, k := range []struct {
		kind, subject string
		limits        state.FailureLimits
	}{{state.FailAccount, name, s.cfg.Lockout}, {state.FailAddress, addr, s.cfg.AddressLockout}} {
		// Account counters are kept for any valid name, existing or not, so
		// the backoff does not tell which accounts exist.
		if k.subject == "" || k.limits.Threshold <= 0 {
			continue
		}
		n, until, lockedNow, err := s.db.RecordFailure(ctx, k.kind, k.subject, s.now(), k.limits)
		if err != nil {
			return fmt.Errorf("authn: count failure: %w", err)
		}
		worst = max(worst, n)
		if lockedNow {
			s.metrics.Lockout(k.kind)
			s.log.Warn("locked after repeated sign-in failures", zap.String("kind", k.kind),
				zap.String("subject", k.subject), zap.Time("until", until))
			if err := s.audit(ctx, "mftd", "auth.lockout", k.kind+":"+k.subject, "locked until "+until.UTC().Format(time.RFC3339), remote); err != nil {
				return err
			}
		}
	}
	// Backoff: from the second failure on, each answer waits longer (capped).
	if worst >= 2 {
		s.sleep(ctx, min(time.Duration(1<<min(worst-2, 4))*250*time.Millisecond, 4*time.Second))
	}
	return nil
}

// openSession stores a new session for acct.
func (s *Service) openSession(ctx context.Context, acct state.Account, emergency bool, remote string) (Session, error) {
	token, hash, err := policy.NewToken()
	if err != nil {
		return Session{}, fmt.Errorf("authn: new token: %w", err)
	}
	id, err := randomID()
	if err != nil {
		return Session{}, err
	}
	now := s.now().UTC()
	exp := now.Add(s.cfg.SessionTTL).Truncate(time.Second)
	if err := s.db.OpenSession(ctx, state.Session{
		ID: id, TokenHash: hash, AccountID: acct.ID, CreatedAt: now, LastSeen: now,
		ExpiresAt: exp, Emergency: emergency, RemoteAddr: remote,
	}); err != nil {
		return Session{}, fmt.Errorf("authn: store session: %w", err)
	}
	return Session{Token: token, ID: id, ExpiresAt: exp, Emergency: emergency}, nil
}

// touchEvery bounds how often a session's last-seen time is written.
const touchEvery = time.Minute

// Authenticate maps a bearer token to its identity: the session must be
// unexpired, used within the idle limit, and its account enabled.
func (s *Service) Authenticate(ctx context.Context, token string) (Identity, error) {
	if token == "" || len(token) > 256 {
		return Identity{}, ErrBadCredentials
	}
	now := s.now()
	// Last-seen is written at most every touchEvery, so allow for that much
	// staleness; idle limits shorter than twice that are written every time.
	idle, touch := s.cfg.SessionIdle, touchEvery
	if idle > 0 && idle < 2*touchEvery {
		touch = 0
	}
	if idle > 0 {
		idle += touch
	}
	sess, acct, err := s.db.SessionByToken(ctx, policy.HashToken(token), now, idle)
	if errors.Is(err, state.ErrNotFound) {
		return Identity{}, ErrBadCredentials
	}
	if err != nil {
		return Identity{}, fmt.Errorf("authn: look up session: %w", err)
	}
	if now.Sub(sess.LastSeen) >= touch {
		if err := s.db.TouchSession(ctx, sess.ID, now); err != nil {
			s.log.Warn("record session use", zap.Error(err))
		}
	}
	return Identity{User: acct.Name, AccountID: acct.ID, SessionID: sess.ID, Emergency: sess.Emergency}, nil
}

func (s *Service) audit(ctx context.Context, actor, action, object, result, remote string) error {
	if _, err := s.db.Audit(context.WithoutCancel(ctx), state.AuditRecord{
		Actor: actor, Action: action, Object: object, Result: result, RemoteAddr: remote,
	}); err != nil {
		return fmt.Errorf("authn: audit %s: %w", action, err)
	}
	return nil
}

// send notifies acct in the background, so that answer times do not depend
// on the mail relay (nor reveal whether a message was sent at all).
func (s *Service) send(acct state.Account, subject, body string) {
	if s.notify == nil {
		return
	}
	m := notify.Message{User: acct.Name, Email: acct.Email, Subject: subject, Body: body}
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		if err := s.notify.Notify(ctx, m); err != nil {
			s.log.Warn("notify", zap.String("user", acct.Name), zap.Error(err))
		}
	}()
}

type ctxKey struct{}

// FromContext returns the identity Middleware stored, if any.
func FromContext(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(ctxKey{}).(Identity)
	return id, ok
}

// WithIdentity returns ctx carrying id (for tests and other doors).
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return context.WithValue(ctx, ctxKey{}, id)
}

// Middleware authenticates every request by its bearer token, or answers
// 401 itself; next always sees an identity.
func (s *Service) Middleware(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		token, ok := bearer(r.Header.Get("Authorization"))
		if !ok {
			unauthorized(w)
			return
		}
		id, err := s.Authenticate(r.Context(), token)
		if err != nil {
			if !errors.Is(err, ErrBadCredentials) {
				s.log.Error("authenticate", zap.Error(err))
				http.Error(w, "internal error", http.StatusInternalServerError)
				return
			}
			unauthorized(w)
			return
		}
		next.ServeHTTP(w, r.WithContext(WithIdentity(r.Context(), id)))
	})
}

func bearer(h string) (string, bool) {
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	token = strings.TrimSpace(token)
	return token, token != ""
}

func unauthorized(w http.ResponseWriter) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="mftd"`)
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.WriteHeader(http.StatusUnauthorized)
	_, _ = w.Write([]byte("authentication required\n"))
}

// hostOf is the address part of a remote "host:port".
func hostOf(remote string) string {
	if h, _, err := net.SplitHostPort(remote); err == nil {
		return h
	}
	return remote
}

func isDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return s != ""
}

func randomID() (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("authn: random id: %w", err)
	}
	return base64.RawURLEncoding.EncodeToString(b[:]), nil
}

func sleepCtx(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
	case <-ctx.Done():
	}
}
