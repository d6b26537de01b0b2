// Package policy decides who may do what, and holds the account secrets'
// algorithms: user names, password hashes, TOTP codes and bearer tokens.
// It is a leaf: pure functions over values, no I/O, no imports of ours.
package policy

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/hotp"
	"github.com/pquerna/otp/totp"
	"golang.org/x/text/secure/precis"
)

// ErrInvalidUsername is wrapped by CanonicalUsername's errors.
var ErrInvalidUsername = errors.New("invalid user name")

const (
	// maxUsernameBytes bounds the canonical form.
	maxUsernameBytes = 64
	// maxUsernameInput bounds the raw input before PRECIS runs, so a huge
	// input costs nothing. No mapping (width, case, NFC) shrinks a string by
	// anything close to 16x, so nothing valid is refused by this bound.
	maxUsernameInput = 16 * maxUsernameBytes
)

// CanonicalUsername validates a user name and returns its canonical form:
// PRECIS UsernameCaseMapped (width-mapped, lower-cased, NFC), 1 to 64 bytes,
// letters, digits and . _ - only after mapping, not starting with . or -,
// never containing ".." (so never "." or ".."). Two names that differ only in
// case or width canonicalise to the same string, which is how uniqueness is
// enforced. Combining marks are not letters, so a mark NFC cannot compose
// away is refused (and with it scripts that need marks, such as Devanagari).
// Errors wrap ErrInvalidUsername and never quote the input.
func CanonicalUsername(name string) (string, error) {
	if name == "" {
		return "", usernameError("empty")
	}
	if len(name) > maxUsernameInput {
		return "", usernameError("longer than %d bytes", maxUsernameBytes)
	}
	if !utf8.ValidString(name) {
		return "", usernameError("not valid UTF-8")
	}
	s, err := precis.UsernameCaseMapped.String(name)
	if err != nil {
		// precis errors do not quote the input, but keep the message ours.
		return "", usernameError("disallowed character or mixed text direction")
	}
	switch {
	case s == "":
		return "", usernameError("empty")
	case len(s) > maxUsernameBytes:
		return "", usernameError("longer than %d bytes", maxUsernameBytes)
	case s[0] == '.' || s[0] == '-':
		return "", usernameError("starts with '.' or '-'")
	case strings.Contains(s, ".."):
		return "", usernameError("contains consecutive dots")
	}
	for _, r := range s {
		if !usernameRune(r) {
			return "", usernameError("only letters, digits, '.', '_' and '-' are allowed")
		}
	}
	return s, nil
}

// usernameRune reports whether r may appear in a canonical user name. Letters
// and decimal digits exclude controls, separators, spaces, symbols and marks.
func usernameRune(r rune) bool {
	return r == '.' || r == '_' || r == '-' || unicode.IsLetter(r) || unicode.IsDigit(r)
}

func usernameError(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidUsername, fmt.Sprintf(format, args...))
}

// hashParams are the argon2id parameters of every new password hash: OWASP's
// minimum (19 MiB, 2 iterations, 1 lane). The daemon's peak RSS budget is
// 64 MiB, so do not raise Memory without revisiting that budget.
var hashParams = argon2id.Params{
	Memory:      19 * 1024, // KiB
	Iterations:  2,
	Parallelism: 1,
	SaltLength:  16,
	KeyLength:   32,
}

// Bounds on the parameters a stored hash may ask VerifyPassword to use. A
// corrupt or hostile hash must not make one login allocate gigabytes, or
// reach argon2's panics (zero iterations or lanes).
const (
	maxVerifyMemory      = 32 * 1024 // KiB
	maxVerifyIterations  = 16
	maxVerifyParallelism = 4
	minVerifySalt        = 8
	minVerifyKey         = 16
	maxVerifyKey         = 64
)

// dummyHash is a hash of a throwaway password made with hashParams (test
// TestDummyHashMatchesParams keeps them in step). DummyVerify checks against it.
// It is a constant: no state, and the first call costs no more than the rest.
const dummyHash = "$argon2id$v=19$m=19456,t=2,p=1$/ez307ywmJcvL56u3coJ/w$s6NBhfJRLZQsocZwL12AGO1gNK939aucvs72PlYM+ZE"

// HashPassword returns an argon2id PHC string for password.
func HashPassword(password string) (string, error) {
	p := hashParams
	h, err := argon2id.CreateHash(password, &p)
	if err != nil {
		return "", fmt.Errorf("policy: hash password: %w", err)
	}
	return h, nil
}

// VerifyPassword reports whether password matches hash, in constant time. A
// malformed hash, or one whose parameters are out of bounds (memory above
// 32 MiB, for instance), is an error.
func VerifyPassword(hash, password string) (bool, error) {
	p, salt, key, err := argon2id.DecodeHash(hash)
	if err != nil {
		return false, fmt.Errorf("policy: verify password: malformed hash: %w", err)
	}
	switch {
	case p.Memory > maxVerifyMemory,
		p.Iterations < 1 || p.Iterations > maxVerifyIterations,
		p.Parallelism < 1 || p.Parallelism > maxVerifyParallelism,
		len(salt) < minVerifySalt,
		len(key) < minVerifyKey || len(key) > maxVerifyKey:
		return false, errors.New("policy: verify password: hash parameters out of bounds")
	}
	ok, err := argon2id.ComparePasswordAndHash(password, hash)
	if err != nil {
		return false, fmt.Errorf("policy: verify password: %w", err)
	}
	return ok, nil
}

// DummyVerify spends the same time as VerifyPassword on a real hash, so an
// unknown user name cannot be told from a wrong password by timing. It runs
// VerifyPassword itself against a constant hash made with the same parameters.
func DummyVerify(password string) {
	_, _ = VerifyPassword(dummyHash, password)
}

// totp parameters (RFC 6238 defaults, which every authenticator app supports).
const (
	totpPeriod     = 30 // seconds
	totpDigits     = otp.DigitsSix
	totpAlgorithm  = otp.AlgorithmSHA1
	totpSecretSize = 20 // bytes: the HMAC-SHA1 block-size recommendation of RFC 4226
	// totpMinSecret refuses a stored secret too short to be one of ours
	// (an empty secret would make every code predictable).
	totpMinSecret = 16
)

// NewTOTP generates a fresh TOTP secret for account and returns it (base32)
// with its otpauth:// enrolment URI (RFC 6238: SHA-1, 6 digits, 30 s). Issuer
// and account must be non-empty and contain no ':' (the URI's label separator).
func NewTOTP(issuer, account string) (secret, uri string, err error) {
	if issuer == "" || account == "" {
		return "", "", errors.New("policy: new totp: issuer and account must be set")
	}
	if strings.Contains(issuer, ":") || strings.Contains(account, ":") {
		return "", "", errors.New("policy: new totp: issuer and account must not contain ':'")
	}
	key, err := totp.Generate(totp.GenerateOpts{
		Issuer:      issuer,
		AccountName: account,
		Period:      totpPeriod,
		SecretSize:  totpSecretSize,
		Digits:      totpDigits,
		Algorithm:   totpAlgorithm,
		Rand:        rand.Reader,
	})
	if err != nil {
		return "", "", fmt.Errorf("policy: new totp: %w", err)
	}
	return key.Secret(), key.URL(), nil
}

// TOTPStep checks code against secret at time now, allowing one step of
// clock skew either way, and returns the matching time step. A code whose
// step is not greater than lastStep is refused (ok false): each code is
// accepted once. Comparison is constant-time, and all three candidate steps
// are always compared. Code must be exactly six ASCII digits; a secret that
// is not base32 or decodes to fewer than 16 bytes matches nothing.
func TOTPStep(secret, code string, now time.Time, lastStep int64) (step int64, ok bool) {
	if !sixDigits(code) || totpSecretLen(secret) < totpMinSecret {
		return 0, false
	}
	if now.Unix() < 0 {
		return 0, false // before the epoch: no step, and a broken clock
	}
	cur := now.Unix() / totpPeriod
	opts := hotp.ValidateOpts{Digits: totpDigits, Algorithm: totpAlgorithm}
	for s := cur - 1; s <= cur+1; s++ {
		if s < 0 {
			continue
		}
		// hotp with counter s is totp at time s*30, without float rounding.
		want, err := hotp.GenerateCodeCustom(secret, uint64(s), opts)
		if err != nil {
			return 0, false
		}
		// No early exit: every candidate step is computed and compared. A
		// collision on two steps keeps the later fresh one.
		if subtle.ConstantTimeCompare([]byte(want), []byte(code)) == 1 && s > lastStep {
			step, ok = s, true
		}
	}
	return step, ok
}

// sixDigits reports whether code is exactly six ASCII digits.
func sixDigits(code string) bool {
	if len(code) != totpDigits.Length() {
		return false
	}
	for i := 0; i < len(code); i++ {
		if code[i] < '0' || code[i] > '9' {
			return false
		}
	}
	return true
}

// totpSecretLen is the decoded length of a base32 TOTP secret, read the way
// the otp library reads it (case-insensitive, padding optional), or -1.
func totpSecretLen(secret string) int {
	s := strings.ToUpper(strings.TrimRight(strings.TrimSpace(secret), "="))
	b, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(s)
	if err != nil {
		return -1
	}
	return len(b)
}

// tokenBytes is the entropy of a bearer token: 256 bits.
const tokenBytes = 32

// NewToken returns a bearer token (at least 128 bits from crypto/rand, URL-
// safe) and the hash under which it is stored. The token is 32 random bytes in
// unpadded base64url (43 characters); the hash is HashToken(token).
func NewToken() (token string, hash []byte, err error) {
	b := make([]byte, tokenBytes)
	if _, err := rand.Read(b); err != nil {
		return "", nil, fmt.Errorf("policy: new token: %w", err)
	}
	token = base64.RawURLEncoding.EncodeToString(b)
	return token, HashToken(token), nil
}

// HashToken is the stored form of a token: its SHA-256. A token carries 256
// bits of entropy, so a fast unsalted hash is enough.
func HashToken(token string) []byte {
	sum := sha256.Sum256([]byte(token))
	return sum[:]
}
