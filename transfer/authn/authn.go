// Package authn signs users in (password + authenticator code) and turns
// bearer tokens back into identities. Both doors (HTTPS, and SFTP later)
// verify credentials here, so there is one way in.
package authn

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// ErrBadCredentials is the one answer to every failed sign-in: it never says
// which factor failed or whether the account exists.
var ErrBadCredentials = errors.New("invalid credentials")

// dummyTOTPSecret stands in for an unknown account's authenticator secret.
const dummyTOTPSecret = "JBSWY3DPEHPK3PXPJBSWY3DPEHPK3PXP"

// Config configures sign-in.
type Config struct {
	SessionTTL time.Duration
	// MaxConcurrentHashes bounds simultaneous argon2id verifications, each
	// of which holds ~19 MiB, so a burst of sign-ins cannot exhaust memory.
	MaxConcurrentHashes int
}

// Service verifies credentials and sessions.
type Service struct {
	cfg  Config
	log  *zap.Logger
	db   *state.DB
	now  func() time.Time
	hash chan struct{}
}

// New returns a Service.
func New(cfg Config, log *zap.Logger, db *state.DB) *Service {
	if cfg.MaxConcurrentHashes <= 0 {
		cfg.MaxConcurrentHashes = 2
	}
	return &Service{cfg: cfg, log: log, db: db, now: time.Now, hash: make(chan struct{}, cfg.MaxConcurrentHashes)}
}

// Identity is an authenticated caller.
type Identity struct {
	User string
}

// Session is a bearer token issued at sign-in.
type Session struct {
	Token     string
	ExpiresAt time.Time
}

// Login checks a user name, password and authenticator code and opens a
// session. Every failure is ErrBadCredentials, after the same work (one
// argon2id verification) whether or not the account exists. The outcome is
// audited before it is returned.
func (s *Service) Login(ctx context.Context, username, password, code, remote string) (Session, error) {
	name, nameErr := policy.CanonicalUsername(username)
	actor := name
	if nameErr != nil {
		actor = "(invalid user name)"
	}
	acct, err := s.verify(ctx, name, nameErr == nil, password, code)
	if err != nil {
		if aerr := s.audit(ctx, actor, "login", "failed", remote); aerr != nil {
			return Session{}, aerr
		}
		if !errors.Is(err, ErrBadCredentials) {
			return Session{}, err
		}
		s.log.Info("login failed", zap.String("user", actor), zap.String("remote_addr", remote))
		return Session{}, ErrBadCredentials
	}
	token, hash, err := policy.NewToken()
	if err != nil {
		return Session{}, fmt.Errorf("authn: new token: %w", err)
	}
	exp := s.now().Add(s.cfg.SessionTTL).UTC().Truncate(time.Second)
	if err := s.db.CreateSession(ctx, hash, acct.ID, exp); err != nil {
		return Session{}, fmt.Errorf("authn: store session: %w", err)
	}
	if err := s.audit(ctx, acct.Name, "login", "ok", remote); err != nil {
		return Session{}, err
	}
	s.log.Info("login", zap.String("user", acct.Name), zap.String("remote_addr", remote))
	return Session{Token: token, ExpiresAt: exp}, nil
}

// verify checks both factors. The argon2id verification always runs once.
func (s *Service) verify(ctx context.Context, name string, nameOK bool, password, code string) (state.Account, error) {
	var acct state.Account
	found := false
	if nameOK {
		a, err := s.db.AccountByName(ctx, name)
		switch {
		case err == nil:
			acct, found = a, true
		case !errors.Is(err, state.ErrNotFound):
			return state.Account{}, fmt.Errorf("authn: look up account: %w", err)
		}
	}
	select {
	case s.hash <- struct{}{}:
	case <-ctx.Done():
		return state.Account{}, ctx.Err()
	}
	var pwOK bool
	if found {
		ok, err := policy.VerifyPassword(acct.PasswordHash, password)
		if err != nil {
			s.log.Error("stored password hash is malformed", zap.String("user", acct.Name), zap.Error(err))
		}
		pwOK = ok && err == nil
	} else {
		policy.DummyVerify(password)
	}
	<-s.hash
	// The code is checked whatever the password's outcome (against a fixed
	// secret for unknown users), so timing cannot tell which factor failed.
	secret, last := dummyTOTPSecret, int64(0)
	if found {
		secret, last = acct.TOTPSecret, acct.TOTPLastStep
	}
	step, codeOK := policy.TOTPStep(secret, code, s.now(), last)
	if !found || !pwOK || !codeOK {
		return state.Account{}, ErrBadCredentials
	}
	// Record the step atomically: of two requests with the same code, one wins.
	if err := s.db.UseTOTPStep(ctx, acct.ID, step); err != nil {
		if errors.Is(err, state.ErrReplay) {
			return state.Account{}, ErrBadCredentials
		}
		return state.Account{}, fmt.Errorf("authn: record code use: %w", err)
	}
	return acct, nil
}

// Authenticate maps a bearer token to its identity.
func (s *Service) Authenticate(ctx context.Context, token string) (Identity, error) {
	if token == "" || len(token) > 256 {
		return Identity{}, ErrBadCredentials
	}
	acct, err := s.db.SessionAccount(ctx, policy.HashToken(token), s.now())
	if errors.Is(err, state.ErrNotFound) {
		return Identity{}, ErrBadCredentials
	}
	if err != nil {
		return Identity{}, fmt.Errorf("authn: look up session: %w", err)
	}
	return Identity{User: acct.Name}, nil
}

func (s *Service) audit(ctx context.Context, actor, action, result, remote string) error {
	if _, err := s.db.Audit(context.WithoutCancel(ctx), state.AuditRecord{
		Actor: actor, Action: action, Object: actor, Result: result, RemoteAddr: remote,
	}); err != nil {
		return fmt.Errorf("authn: audit %s: %w", action, err)
	}
	return nil
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
