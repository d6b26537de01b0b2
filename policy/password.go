package policy

import (
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/big"
	"sort"
	"strings"
	"unicode/utf8"

	"github.com/trustelem/zxcvbn"
	"github.com/trustelem/zxcvbn/frequency"
)

// ErrWeakPassword is wrapped by every CheckPassword refusal.
var ErrWeakPassword = errors.New("password does not meet the policy")

// The password policy, after NIST SP 800-63B §5.1.1.2: a length floor, a
// generous ceiling, no composition rules, and a refusal of passwords that are
// common, derived from the user name, or made of predictable patterns.
const (
	// MinPasswordRunes is the shortest password accepted, in characters
	// (Unicode code points).
	MinPasswordRunes = 12
	// MaxPasswordBytes bounds a password (and the work of hashing it).
	MaxPasswordBytes = 1024
	// minUsernameInPassword: a user name at least this long may not appear
	// anywhere in the password; a shorter one may only not be the password.
	minUsernameInPassword = 3
	// minPasswordScore is the lowest zxcvbn score accepted: 3 means the
	// estimator needs at least 10^8 guesses, its "safely unguessable"
	// threshold for an online attack and a moderate one offline.
	minPasswordScore = 3
	// zxcvbnMaxRunes bounds the prefix given to the estimator, whose matchers
	// (backtracking regular expressions) grow faster than quadratically with
	// length: 64 runes cost a few milliseconds, 1024 would cost seconds, so a
	// long password would otherwise be a cheap denial of service. A password
	// is at least as hard to guess as its prefix, so this never lets a weak
	// password through that a full estimate would refuse for its first 64
	// runes; a long password with a weak start is refused, which is fine.
	zxcvbnMaxRunes = 64
	// minDistinctRunes: a password of fewer different characters is a
	// repeat ("éééééééééééé"). zxcvbn finds repeats of ASCII text but misses
	// those of other scripts, so this is checked separately.
	minDistinctRunes = 4
)

// CheckPassword reports whether password may be set for username. It refuses,
// with an error wrapping ErrWeakPassword and a reason a user can act on (the
// error never contains the password):
//   - invalid UTF-8, fewer than MinPasswordRunes characters or more than
//     MaxPasswordBytes bytes;
//   - the user name itself, or any password containing a user name of three
//     or more characters (case-insensitively);
//   - one of the 30,000 most common passwords that ship with zxcvbn
//     (github.com/trustelem/zxcvbn, frequency list "passwords"),
//     case-insensitively;
//   - a password of fewer than four different characters;
//   - any password whose zxcvbn strength score is below 3, i.e. that the
//     estimator guesses in fewer than 10^8 tries because it is built from
//     common passwords, words, names, dates, keyboard walks, repeats or
//     sequences ("qwertyuiopas", "123456789012", "Password2024!").
//
// There are no composition rules (no "one digit, one symbol"): a long
// passphrase of unrelated words passes. zxcvbn's word lists and patterns are
// English and ASCII-centred, so a password in another script is judged
// mostly by its length and the checks above.
func CheckPassword(password, username string) error {
	if !utf8.ValidString(password) {
		return weak("it is not valid UTF-8 text")
	}
	if len(password) > MaxPasswordBytes {
		return weak(fmt.Sprintf("it is longer than %d bytes; choose a shorter one", MaxPasswordBytes))
	}
	if n := utf8.RuneCountInString(password); n < MinPasswordRunes {
		return weak(fmt.Sprintf("it has %d characters; use at least %d (a few unrelated words make a good passphrase)", n, MinPasswordRunes))
	}
	lower := strings.ToLower(password)
	if user := strings.ToLower(username); user != "" {
		if lower == user {
			return weak("it is your user name")
		}
		if utf8.RuneCountInString(user) >= minUsernameInPassword && strings.Contains(lower, user) {
			return weak("it contains your user name")
		}
	}
	if n := distinctRunes(lower); n < minDistinctRunes {
		return weak(fmt.Sprintf("it uses only %d different characters", n))
	}
	if isCommonPassword(lower) {
		return weak("it is one of the most commonly used passwords")
	}
	prefix := password
	if utf8.RuneCountInString(prefix) > zxcvbnMaxRunes {
		prefix = string([]rune(prefix)[:zxcvbnMaxRunes])
	}
	var inputs []string
	if username != "" {
		inputs = []string{username}
	}
	estimating <- struct{}{}
	res := zxcvbn.PasswordStrength(prefix, inputs)
	<-estimating
	if res.Score < minPasswordScore {
		return weak(guessableReason(res))
	}
	return nil
}

// estimating bounds simultaneous strength estimates. Each builds zxcvbn's
// dictionaries afresh (about 15 MB allocated and 25 ms on one core: mftd
// patches zxcvbn so that they are not kept for the life of the process, see
// third_party/zxcvbn/PATCHED.md); a burst of password checks, some of which
// an unauthenticated caller can start (a reset confirmation is checked
// against the policy before its codes), then waits rather than multiplying
// that memory, like the argon2id hashes that follow it.
var estimating = make(chan struct{}, 2)

func weak(reason string) error {
	return fmt.Errorf("%w: %s", ErrWeakPassword, reason)
}

func distinctRunes(s string) int {
	seen := map[rune]bool{}
	for _, r := range s {
		seen[r] = true
		if len(seen) >= minDistinctRunes {
			break
		}
	}
	return len(seen)
}

// isCommonPassword reports whether lower (already lower-cased) is in the
// ranked password list that ships with zxcvbn. The list is lower-case. A
// linear scan over 30,000 short strings costs well under a millisecond and
// keeps no state; passwords are checked only when they are set.
func isCommonPassword(lower string) bool {
	for _, p := range frequency.FrequencyLists["passwords"] {
		if len(p) == len(lower) && p == lower {
			return true
		}
	}
	return false
}

// guessableReason names the kinds of pattern zxcvbn found, never the matched
// text (which is part of the password).
func guessableReason(res zxcvbn.Result) string {
	kinds := map[string]bool{}
	for _, m := range res.Sequence {
		switch m.Pattern {
		case "dictionary":
			switch m.DictionaryName {
			case "passwords":
				kinds["common passwords"] = true
			case "male_names", "female_names", "surnames":
				kinds["names"] = true
			case "user_inputs":
				kinds["your user name"] = true
			default:
				kinds["common words"] = true
			}
		case "spatial":
			kinds["keyboard patterns"] = true
		case "repeat":
			kinds["repeated characters"] = true
		case "sequence":
			kinds["sequences like abc or 123"] = true
		case "regex", "date":
			kinds["dates or years"] = true
		}
	}
	if len(kinds) == 0 {
		return "it is too easy to guess; use a longer passphrase of unrelated words"
	}
	names := make([]string, 0, len(kinds))
	for k := range kinds {
		names = append(names, k)
	}
	sort.Strings(names)
	return fmt.Sprintf("it is too easy to guess (built from %s); use a longer passphrase of unrelated words", strings.Join(names, ", "))
}

// One-time codes (password reset, emergency access) are short decimal strings
// a user types from an email. Their small space is safe online because
// attempts are counted and codes expire; offline, HashCode's server key keeps
// a stolen database from revealing them by trying every code.
const (
	MinCodeDigits = 6
	MaxCodeDigits = 12
	// MinCodeKeyBytes is the shortest key HashCode accepts.
	MinCodeKeyBytes = 32
)

// NewCode returns a uniformly random decimal code of digits digits (leading
// zeros kept), from crypto/rand without modulo bias. digits must be within
// MinCodeDigits..MaxCodeDigits.
func NewCode(digits int) (string, error) {
	if digits < MinCodeDigits || digits > MaxCodeDigits {
		return "", fmt.Errorf("policy: new code: %d digits, want %d to %d", digits, MinCodeDigits, MaxCodeDigits)
	}
	limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(digits)), nil)
	n, err := rand.Int(rand.Reader, limit) // rejection sampling: uniform in [0, limit)
	if err != nil {
		return "", fmt.Errorf("policy: new code: %w", err)
	}
	return fmt.Sprintf("%0*d", digits, n.Int64()), nil
}

// codeHashDomain separates HashCode's MACs from any other use of the key.
const codeHashDomain = "mftd/one-time-code/v1"

// HashCode returns HMAC-SHA256, keyed with the server secret key, over an
// unambiguous encoding of (accountID, purpose, code):
//
//	"mftd/one-time-code/v1" 0x00 | accountID (8 bytes, big-endian two's complement) |
//	len(purpose) (4 bytes, big-endian) | purpose | len(code) (4 bytes, big-endian) | code
//
// so a code issued for one account or purpose never matches another, and
// without the key a stolen hash cannot be matched by trying every code. The
// encoding is stable: stored hashes depend on it. Compare results with
// hmac.Equal. It panics if key is shorter than MinCodeKeyBytes (the key is
// loaded once at start-up; a short one is a configuration bug that would make
// hashes guessable, and must not be tolerated silently).
func HashCode(key []byte, accountID int64, purpose, code string) []byte {
	if len(key) < MinCodeKeyBytes {
		panic(fmt.Sprintf("policy: HashCode: key of %d bytes, need at least %d", len(key), MinCodeKeyBytes))
	}
	mac := hmac.New(sha256.New, key)
	buf := make([]byte, 0, len(codeHashDomain)+1+8+4+len(purpose)+4+len(code))
	buf = append(buf, codeHashDomain...)
	buf = append(buf, 0)
	buf = binary.BigEndian.AppendUint64(buf, uint64(accountID))
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(purpose)))
	buf = append(buf, purpose...)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(code)))
	buf = append(buf, code...)
	mac.Write(buf)
	return mac.Sum(nil)
}
