package authn

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// Errors of the self-service flows, mapped to answers by the API.
var (
	// ErrUnavailable: no notifier is configured, so codes cannot be sent.
	ErrUnavailable = errors.New("authn: no notifier is configured")
	// ErrEmergencySession: the action needs a session opened with the
	// authenticator, not with an emergency code.
	ErrEmergencySession = errors.New("authn: not allowed with an emergency-code session")
)

// Lifetimes of one-time codes.
const (
	resetCodeTTL         = 30 * time.Minute
	emergencyAuthCodeTTL = 15 * time.Minute
	emergencyCodeTTL     = 24 * time.Hour
)

// ChangePassword sets a new password for the signed-in caller, who proves
// the current password and an authenticator code again. Every other session
// of the user ends. Wrong factors count toward the lockout like a failed
// sign-in; a weak new password is a *policy error wrapping policy.ErrWeakPassword.
func (s *Service) ChangePassword(ctx context.Context, id Identity, current, next, code, remote string) error {
	if id.Emergency {
		return ErrEmergencySession
	}
	if err := policy.CheckPassword(next, id.User); err != nil {
		return err // before the factors, so the TOTP step is not used up
	}
	acct, emergency, err := s.checkFactors(ctx, "https", id.User, current, code, remote)
	if err != nil {
		return err
	}
	if emergency {
		return ErrEmergencySession // a password change needs the authenticator itself
	}
	return s.setPassword(ctx, acct, next, id.SessionID, "password.change", remote)
}

func (s *Service) setPassword(ctx context.Context, acct state.Account, next, keepSession, action, remote string) error {
	if err := policy.CheckPassword(next, acct.Name); err != nil {
		return err
	}
	hash, err := policy.HashPassword(next)
	if err != nil {
		return err
	}
	if err := s.db.SetPassword(ctx, acct.ID, hash); err != nil {
		return fmt.Errorf("authn: set password: %w", err)
	}
	ended, err := s.db.EndSessions(ctx, acct.ID, keepSession)
	if err != nil {
		return fmt.Errorf("authn: end sessions: %w", err)
	}
	if err := s.audit(ctx, acct.Name, action, acct.Name, fmt.Sprintf("ok; %d other sessions ended", ended), remote); err != nil {
		return err
	}
	s.log.Info("password changed", zap.String("user", acct.Name), zap.Int("sessions_ended", ended))
	s.send(acct, "mftd: your password was changed",
		"The password of your mftd account was changed and your other sessions were ended.\n"+
			"If this was not you, contact your administrator at once.\n")
	return nil
}

// RequestReset sends a single-use reset code to the user, if the account
// exists, is enabled and has an address. The caller cannot tell which.
func (s *Service) RequestReset(ctx context.Context, username, remote string) error {
	if s.notify == nil {
		return ErrUnavailable
	}
	acct, ok := s.lookupQuietly(ctx, username)
	if err := s.audit(ctx, actorOf(username, acct, ok), "password.reset.request", actorOf(username, acct, ok), resultOf(ok), remote); err != nil {
		return err
	}
	if !ok {
		return nil
	}
	code, err := s.issueCode(ctx, acct, state.CodeReset, 8, resetCodeTTL)
	if err != nil {
		return err
	}
	s.send(acct, "mftd: password reset code",
		"Your password reset code is "+code+". It works once, for 30 minutes.\n"+
			"You will also need your authenticator code. If you did not ask for this, ignore this message.\n")
	return nil
}

// ConfirmReset sets a new password with a reset code and an authenticator
// code; every session of the user ends. Failures count toward the lockout.
func (s *Service) ConfirmReset(ctx context.Context, username, code, next, totp, remote string) error {
	// The policy is public: check it before the code and TOTP step are used
	// up, so a weak choice costs the user nothing.
	if name, err := policy.CanonicalUsername(username); err == nil {
		if err := policy.CheckPassword(next, name); err != nil {
			return err
		}
	}
	acct, err := s.checkCodeAndTOTP(ctx, username, code, state.CodeReset, totp, remote)
	if err != nil {
		return err
	}
	return s.setPassword(ctx, acct, next, "", "password.reset", remote)
}

// RequestEmergency starts emergency access for a user who lost their
// authenticator: with the right password, an authorisation code is sent to
// them. The answer is the same whatever happened; a wrong password counts
// toward the lockout.
func (s *Service) RequestEmergency(ctx context.Context, username, password, remote string) error {
	if s.notify == nil {
		return ErrUnavailable
	}
	acct, ok, err := s.checkPasswordOnly(ctx, username, password, remote)
	if err != nil || !ok {
		return err
	}
	code, err := s.issueCode(ctx, acct, state.CodeEmergencyAuth, 8, emergencyAuthCodeTTL)
	if err != nil {
		return err
	}
	if err := s.audit(ctx, acct.Name, "emergency.request", acct.Name, "ok", remote); err != nil {
		return err
	}
	s.send(acct, "mftd: emergency access authorisation code",
		"Your emergency access authorisation code is "+code+". It works once, for 15 minutes.\n"+
			"If you did not ask for this, someone knows your password: change it and tell your administrator.\n")
	return nil
}

// VerifyEmergency exchanges the password and the authorisation code for an
// emergency code: 8 digits, usable once in place of an authenticator code
// within 24 hours. Issuing one voids any earlier one.
func (s *Service) VerifyEmergency(ctx context.Context, username, password, authCode, remote string) (code string, expires time.Time, err error) {
	acct, ok, err := s.checkPasswordOnly(ctx, username, password, remote)
	if err != nil {
		return "", time.Time{}, err
	}
	if !ok {
		return "", time.Time{}, ErrBadCredentials
	}
	if err := s.useCode(ctx, acct, state.CodeEmergencyAuth, authCode, remote); err != nil {
		return "", time.Time{}, err
	}
	code, err = s.issueCode(ctx, acct, state.CodeEmergency, emergencyDigits, emergencyCodeTTL)
	if err != nil {
		return "", time.Time{}, err
	}
	expires = s.now().Add(emergencyCodeTTL).UTC().Truncate(time.Second)
	if err := s.audit(ctx, acct.Name, "emergency.issue", acct.Name, "ok expires "+expires.Format(time.RFC3339), remote); err != nil {
		return "", time.Time{}, err
	}
	s.send(acct, "mftd: an emergency access code was issued",
		"An emergency access code was issued for your account. It replaces your authenticator code once.\n"+
			"If this was not you, contact your administrator at once.\n")
	return code, expires, nil
}

// checkPasswordOnly verifies a password under the guessing limits.
func (s *Service) checkPasswordOnly(ctx context.Context, username, password, remote string) (state.Account, bool, error) {
	name, actor, addr, locked, err := s.attempt(ctx, username, remote)
	if err != nil {
		return state.Account{}, false, err
	}
	acct, found, pwOK, err := s.checkPassword(ctx, name, password)
	if err != nil {
		return state.Account{}, false, err
	}
	if found && pwOK && !locked && !acct.Disabled {
		return acct, true, nil
	}
	return state.Account{}, false, s.fail(ctx, "https", actor, name, addr, remote)
}

// checkCodeAndTOTP verifies a one-time code of purpose and a TOTP code.
func (s *Service) checkCodeAndTOTP(ctx context.Context, username, code, purpose, totp, remote string) (state.Account, error) {
	name, actor, addr, locked, err := s.attempt(ctx, username, remote)
	if err != nil {
		return state.Account{}, err
	}
	acct, found := state.Account{}, false
	if name != "" {
		a, err := s.db.AccountByName(ctx, name)
		if err != nil && !errors.Is(err, state.ErrNotFound) {
			return state.Account{}, err
		}
		acct, found = a, err == nil
	}
	ok := found && !locked && !acct.Disabled && len(totp) != emergencyDigits
	totpOK, err := s.checkCode(ctx, acct, ok, totp)
	if err != nil {
		return state.Account{}, err
	}
	if ok && totpOK {
		if err := s.useCode(ctx, acct, purpose, code, remote); err != nil {
			return state.Account{}, err
		}
		return acct, nil
	}
	if err := s.fail(ctx, "https", actor, name, addr, remote); err != nil {
		return state.Account{}, err
	}
	return state.Account{}, ErrBadCredentials
}

// useCode consumes a one-time code; a wrong one counts as a failure.
func (s *Service) useCode(ctx context.Context, acct state.Account, purpose, code, remote string) error {
	if isDigits(code) && len(code) <= 12 {
		err := s.db.UseCode(ctx, acct.ID, purpose, policy.HashCode(s.cfg.CodeKey, acct.ID, purpose, code), s.now())
		if err == nil {
			return nil
		}
		if !errors.Is(err, state.ErrNotFound) {
			return fmt.Errorf("authn: use %s code: %w", purpose, err)
		}
	}
	if err := s.fail(ctx, "https", acct.Name, acct.Name, hostOf(remote), remote); err != nil {
		return err
	}
	return ErrBadCredentials
}

// issueCode creates and stores a fresh code, voiding the previous one of
// the same purpose.
func (s *Service) issueCode(ctx context.Context, acct state.Account, purpose string, digits int, ttl time.Duration) (string, error) {
	code, err := policy.NewCode(digits)
	if err != nil {
		return "", err
	}
	if err := s.db.PutCode(ctx, acct.ID, purpose, policy.HashCode(s.cfg.CodeKey, acct.ID, purpose, code), s.now().Add(ttl)); err != nil {
		return "", fmt.Errorf("authn: store %s code: %w", purpose, err)
	}
	return code, nil
}

// lookupQuietly finds an enabled account with an address by user name.
func (s *Service) lookupQuietly(ctx context.Context, username string) (state.Account, bool) {
	name, err := policy.CanonicalUsername(username)
	if err != nil {
		return state.Account{}, false
	}
	acct, err := s.db.AccountByName(ctx, name)
	if err != nil || acct.Disabled || acct.Email == "" {
		return state.Account{}, false
	}
	return acct, true
}

func actorOf(username string, acct state.Account, ok bool) string {
	if ok {
		return acct.Name
	}
	if n, err := policy.CanonicalUsername(username); err == nil {
		return n
	}
	return "(invalid user name)"
}

func resultOf(ok bool) string {
	if ok {
		return "code sent"
	}
	return "no code sent (unknown, disabled or no address)"
}
