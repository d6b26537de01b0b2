package authn

import (
	"bytes"
	"context"
	"crypto/rsa"
	"errors"
	"fmt"

	"golang.org/x/crypto/ssh"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
)

// The SFTP door's logins (transfer/sftpd.Auth). They share the accounts,
// codes, failure counters and lockouts of the HTTPS door.

// LoginPassword is Login at the SFTP door: password and code together.
func (s *Service) LoginPassword(ctx context.Context, username, password, code, remote string) (Session, error) {
	acct, emergency, err := s.checkFactors(ctx, "sftp", username, password, code, remote)
	if err != nil {
		return Session{}, err
	}
	return s.loggedIn(ctx, acct, emergency, remote, "sftp password")
}

// KeyRegistered reports whether key (SSH wire format) is registered for the
// enabled account username. It counts no failure: a client may offer
// several keys before one fits.
func (s *Service) KeyRegistered(ctx context.Context, username string, key []byte) (bool, error) {
	_, ok, err := s.registeredKey(ctx, username, key)
	return ok, err
}

func (s *Service) registeredKey(ctx context.Context, username string, key []byte) (state.Account, bool, error) {
	name, err := policy.CanonicalUsername(username)
	if err != nil {
		return state.Account{}, false, nil
	}
	acct, err := s.db.AccountByName(ctx, name)
	if errors.Is(err, state.ErrNotFound) {
		return state.Account{}, false, nil
	}
	if err != nil {
		return state.Account{}, false, fmt.Errorf("authn: look up account: %w", err)
	}
	pub, err := ssh.ParsePublicKey(key)
	if err != nil || acct.Disabled {
		return state.Account{}, false, nil
	}
	k, err := s.db.SSHKeyOf(ctx, acct.ID, ssh.FingerprintSHA256(pub))
	if errors.Is(err, state.ErrNotFound) {
		return state.Account{}, false, nil
	}
	if err != nil {
		return state.Account{}, false, fmt.Errorf("authn: look up ssh key: %w", err)
	}
	return acct, bytes.Equal(k.Wire, key), nil
}

// LoginKey checks the code of a user who proved, by signature, that they
// hold key, and opens a session if key is registered for them. Failures
// count against the account and the address like a wrong password.
func (s *Service) LoginKey(ctx context.Context, username string, key []byte, code, remote string) (Session, error) {
	name, actor, addr, locked, err := s.attempt(ctx, username, remote)
	if err != nil {
		return Session{}, err
	}
	acct, keyOK, err := s.registeredKey(ctx, name, key)
	if err != nil {
		return Session{}, err
	}
	emergency := len(code) == emergencyDigits
	codeOK, err := s.checkCode(ctx, acct, keyOK && !locked, code)
	if err != nil {
		return Session{}, err
	}
	if keyOK && codeOK && !locked {
		if err := s.db.ClearFailures(ctx, state.FailAccount, acct.Name); err != nil {
			return Session{}, fmt.Errorf("authn: clear failures: %w", err)
		}
		pub, _ := ssh.ParsePublicKey(key) // parsed by registeredKey
		return s.loggedIn(ctx, acct, emergency, remote, "sftp key "+ssh.FingerprintSHA256(pub))
	}
	if err := s.fail(ctx, "sftp", actor, name, addr, remote); err != nil {
		return Session{}, err
	}
	return Session{}, ErrBadCredentials
}

// ParseSSHKey reads one OpenSSH authorized_keys line (options are not
// allowed) of a key type mftd accepts: ed25519, ECDSA, security keys, or RSA
// of at least 3072 bits. It returns the key and its comment.
func ParseSSHKey(line []byte) (ssh.PublicKey, string, error) {
	pub, comment, opts, rest, err := ssh.ParseAuthorizedKey(line)
	if err != nil {
		return nil, "", fmt.Errorf("not an OpenSSH public key line: %w", err)
	}
	if len(opts) > 0 {
		return nil, "", errors.New("authorized_keys options are not supported; give the bare key line")
	}
	if len(bytes.TrimSpace(rest)) != 0 {
		return nil, "", errors.New("give one public key at a time")
	}
	switch pub.Type() {
	case ssh.KeyAlgoED25519, ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521,
		ssh.KeyAlgoSKED25519, ssh.KeyAlgoSKECDSA256:
	case ssh.KeyAlgoRSA:
		var rk *rsa.PublicKey
		if ck, ok := pub.(ssh.CryptoPublicKey); ok {
			rk, _ = ck.CryptoPublicKey().(*rsa.PublicKey)
		}
		if rk == nil || rk.N.BitLen() < 3072 {
			return nil, "", fmt.Errorf("RSA keys must have at least 3072 bits")
		}
	default:
		return nil, "", fmt.Errorf("%s keys are not accepted", pub.Type())
	}
	return pub, comment, nil
}
