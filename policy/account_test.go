package policy

import (
	"bytes"
	"crypto/sha256"
	"encoding/base32"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/alexedwards/argon2id"
	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

func TestCanonicalUsername(t *testing.T) {
	long64 := strings.Repeat("a", 64)
	tests := []struct {
		name string
		in   string
		want string // "" means refused
	}{
		// Accepted, with their canonical forms.
		{"lower ascii", "alice", "alice"},
		{"upper ascii", "ALICE", "alice"},
		{"mixed case", "Alice", "alice"},
		{"fullwidth", "ＡＬＩＣＥ", "alice"},
		{"fullwidth digits", "ａｌｉｃｅ２", "alice2"},
		{"punctuation allowed", "a.b_c-d", "a.b_c-d"},
		{"leading underscore", "_svc", "_svc"},
		{"trailing dot", "a.", "a."},
		{"digits only", "1234", "1234"},
		{"NFC from decomposed", "E\u0301ric", "\u00e9ric"},
		{"NFC precomposed upper", "\u00c9RIC", "\u00e9ric"},
		{"cyrillic", "Дмитрий", "дмитрий"},
		{"han", "李小龙", "李小龙"},
		{"capital sharp s", "\u1e9e", "\u00df"},
		{"kelvin sign", "\u212a", "k"},
		{"64 bytes", long64, long64},
		{"64 bytes upper", strings.ToUpper(long64), long64},
		{"32 two-byte letters", strings.Repeat("é", 32), strings.Repeat("é", 32)},

		// Refused.
		{"empty", "", ""},
		{"slash", "a/b", ""},
		{"fullwidth slash", "ａ／ｂ", ""},
		{"backslash", `a\b`, ""},
		{"dot", ".", ""},
		{"dotdot", "..", ""},
		{"inner dotdot", "a..b", ""},
		{"fullwidth dotdot", "．．", ""},
		{"leading dot", ".x", ""},
		{"fullwidth leading dot", "．x", ""},
		{"leading hyphen", "-x", ""},
		{"65 bytes", long64 + "a", ""},
		{"33 two-byte letters", strings.Repeat("é", 33), ""},
		{"huge input", strings.Repeat("a", 1<<20), ""},
		{"space", "a b", ""},
		{"ideographic space", "a\u3000b", ""},
		{"nbsp", "a\u00a0b", ""},
		{"NUL", "\x00", ""},
		{"inner NUL", "a\x00b", ""},
		{"tab", "a\tb", ""},
		{"newline", "alice\n", ""},
		{"DEL", "a\x7fb", ""},
		{"zero width space", "a\u200bb", ""},
		{"zero width joiner", "a\u200db", ""},
		{"at", "alice@example.org", ""},
		{"colon", "a:b", ""},
		{"plus", "a+b", ""},
		{"percent", "a%2fb", ""},
		{"emoji", "a\U0001f600", ""},
		{"leading combining mark", "\u0301a", ""},
		// Marks are not letters: a mark NFC cannot compose away is refused,
		// and so are scripts that need them (Devanagari vowel signs).
		{"uncomposable combining mark", "x\u0301", ""},
		{"devanagari", "\u0926\u0947\u0935", ""},
		{"circled digit", "\u2460", ""},
		{"ligature", "\ufb03", ""},
		{"mixed direction", "a\u05d0", ""},
		{"invalid utf8", "a\xffb", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := CanonicalUsername(tt.in)
			if tt.want == "" {
				if err == nil {
					t.Fatalf("CanonicalUsername(%q) = %q, want error", tt.in, got)
				}
				if !errors.Is(err, ErrInvalidUsername) {
					t.Errorf("error %v does not wrap ErrInvalidUsername", err)
				}
				if len(tt.in) >= 3 && strings.Contains(err.Error(), tt.in) {
					t.Errorf("error %q echoes the input", err)
				}
				if got != "" {
					t.Errorf("refused name returned %q, want empty", got)
				}
				return
			}
			if err != nil {
				t.Fatalf("CanonicalUsername(%q): %v", tt.in, err)
			}
			if got != tt.want {
				t.Fatalf("CanonicalUsername(%q) = %q, want %q", tt.in, got, tt.want)
			}
			again, err := CanonicalUsername(got)
			if err != nil || again != got {
				t.Errorf("not idempotent: CanonicalUsername(%q) = %q, %v", got, again, err)
			}
		})
	}
}

func FuzzCanonicalUsername(f *testing.F) {
	for _, s := range []string{
		"alice", "Alice", "ＡＬＩＣＥ", "a.b_c-d", "..", ".", "a..b", "a/b", `a\b`, "\x00",
		"-x", ".x", "a b", "E\u0301ric", "\u1e9e", "Дмитрий", "李", "a\u05d0", "．．",
		strings.Repeat("a", 65), "a\xffb", "\u0130", "\u03a3\u0391\u03a3",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		got, err := CanonicalUsername(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidUsername) {
				t.Fatalf("error %v does not wrap ErrInvalidUsername", err)
			}
			if got != "" {
				t.Fatalf("refused name returned %q", got)
			}
			return
		}
		switch {
		case got == "" || len(got) > maxUsernameBytes:
			t.Fatalf("accepted %q of %d bytes", got, len(got))
		case !utf8.ValidString(got):
			t.Fatalf("accepted invalid UTF-8 %q", got)
		case strings.ContainsAny(got, "/\\\x00"), strings.Contains(got, ".."):
			t.Fatalf("accepted %q with a path separator, NUL or ..", got)
		case got[0] == '.' || got[0] == '-':
			t.Fatalf("accepted %q with a leading . or -", got)
		}
		for _, r := range got {
			if !usernameRune(r) {
				t.Fatalf("accepted %q with rune %U", got, r)
			}
		}
		again, err := CanonicalUsername(got)
		if err != nil || again != got {
			t.Fatalf("not idempotent: %q -> %q -> %q, %v", in, got, again, err)
		}
	})
}

func TestPasswordRoundTrip(t *testing.T) {
	const pw = "correct horse battery staple"
	h1, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	h2, err := HashPassword(pw)
	if err != nil {
		t.Fatal(err)
	}
	if h1 == h2 {
		t.Error("two hashes of the same password are equal: salt not random")
	}
	if want := "$argon2id$v=19$m=19456,t=2,p=1$"; !strings.HasPrefix(h1, want) {
		t.Errorf("hash %q does not start with %q", h1, want)
	}
	p, salt, key, err := argon2id.DecodeHash(h1)
	if err != nil {
		t.Fatal(err)
	}
	if len(salt) != 16 || len(key) != 32 || *p != hashParams {
		t.Errorf("hash params %+v, salt %d bytes, key %d bytes", *p, len(salt), len(key))
	}
	for _, tt := range []struct {
		hash, pw string
		want     bool
	}{
		{h1, pw, true},
		{h2, pw, true},
		{h1, "correct horse battery stapler", false},
		{h1, "", false},
	} {
		got, err := VerifyPassword(tt.hash, tt.pw)
		if err != nil {
			t.Fatalf("VerifyPassword: %v", err)
		}
		if got != tt.want {
			t.Errorf("VerifyPassword(%q) = %v, want %v", tt.pw, got, tt.want)
		}
	}
}

func TestVerifyPasswordMalformed(t *testing.T) {
	salt := base64.RawStdEncoding.EncodeToString(make([]byte, 16))
	key := base64.RawStdEncoding.EncodeToString(make([]byte, 32))
	phc := func(head, s, k string) string { return "$argon2id$" + head + "$" + s + "$" + k }
	tests := []struct {
		name string
		hash string
	}{
		{"empty", ""},
		{"garbage", "not a hash"},
		{"bcrypt", "$2a$10$N9qo8uLOickgx2ZMRZoMyeIjZAgcfl7p92ldGxad68LJZdL17lhWy"},
		{"argon2i", "$argon2i$v=19$m=19456,t=2,p=1$" + salt + "$" + key},
		{"missing field", "$argon2id$v=19$m=19456,t=2,p=1$" + salt},
		{"wrong version", phc("v=16$m=19456,t=2,p=1", salt, key)},
		{"bad params", phc("v=19$m=x,t=2,p=1", salt, key)},
		{"bad salt base64", phc("v=19$m=19456,t=2,p=1", "!!!", key)},
		{"bad key base64", phc("v=19$m=19456,t=2,p=1", salt, "***")},
		{"padded key", phc("v=19$m=19456,t=2,p=1", salt, key+"=")},
		// Out of bounds: must fail before argon2 runs (no 4 GiB allocation, no panic).
		{"huge memory", phc("v=19$m=4194304,t=2,p=1", salt, key)},
		{"max memory", phc("v=19$m=4294967295,t=2,p=1", salt, key)},
		{"zero iterations", phc("v=19$m=19456,t=0,p=1", salt, key)},
		{"many iterations", phc("v=19$m=19456,t=1000000,p=1", salt, key)},
		{"zero lanes", phc("v=19$m=19456,t=2,p=0", salt, key)},
		{"many lanes", phc("v=19$m=19456,t=2,p=255", salt, key)},
		{"empty salt", phc("v=19$m=19456,t=2,p=1", "", key)},
		{"short key", phc("v=19$m=19456,t=2,p=1", salt, base64.RawStdEncoding.EncodeToString(make([]byte, 8)))},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ok, err := VerifyPassword(tt.hash, "password")
			if err == nil {
				t.Fatalf("VerifyPassword(%q) = %v, nil; want error", tt.hash, ok)
			}
			if ok {
				t.Error("malformed hash verified")
			}
		})
	}
}

// TestDummyHash keeps the constant dummy hash in step with hashParams, so
// DummyVerify costs what a real verification costs.
func TestDummyHash(t *testing.T) {
	p, salt, key, err := argon2id.DecodeHash(dummyHash)
	if err != nil {
		t.Fatal(err)
	}
	if *p != hashParams || uint32(len(salt)) != hashParams.SaltLength || uint32(len(key)) != hashParams.KeyLength {
		fresh, _ := HashPassword("mftd dummy password: never a real credential")
		t.Fatalf("dummyHash params %+v differ from hashParams %+v; replace dummyHash with %s", *p, hashParams, fresh)
	}
	if _, err := VerifyPassword(dummyHash, "x"); err != nil {
		t.Fatalf("dummyHash does not verify: %v", err)
	}
	DummyVerify("any password") // must not panic
}

// rfcSecret is the RFC 6238 appendix B SHA-1 seed "12345678901234567890".
var rfcSecret = base32.StdEncoding.EncodeToString([]byte("12345678901234567890"))

func TestTOTPStepRFCVectors(t *testing.T) {
	// RFC 6238 appendix B, SHA-1, truncated to the last six of the eight digits.
	for _, tt := range []struct {
		unix int64
		code string
	}{
		{59, "287082"},
		{1111111109, "081804"},
		{1111111111, "050471"},
		{1234567890, "005924"},
		{2000000000, "279037"},
		{20000000000, "353130"},
	} {
		step, ok := TOTPStep(rfcSecret, tt.code, time.Unix(tt.unix, 0), 0)
		if !ok || step != tt.unix/30 {
			t.Errorf("T=%d code %s: step %d ok %v, want step %d ok", tt.unix, tt.code, step, ok, tt.unix/30)
		}
	}
}

func TestTOTPStep(t *testing.T) {
	now := time.Unix(1_750_000_010, 0)
	cur := now.Unix() / 30
	code := func(offset int64) string {
		t.Helper()
		c, err := totp.GenerateCode(rfcSecret, now.Add(time.Duration(offset)*30*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	// The ±2 step cases are only meaningful if those codes differ from the
	// three accepted ones; with this fixed secret and time they do.
	seen := map[string]int64{}
	for off := int64(-2); off <= 2; off++ {
		if prev, dup := seen[code(off)]; dup {
			t.Fatalf("codes for steps %d and %d collide; pick another time", prev, off)
		}
		seen[code(off)] = off
	}
	short := base32.StdEncoding.EncodeToString([]byte("short"))
	shortCode, _ := totp.GenerateCode(short, now)

	tests := []struct {
		name     string
		secret   string
		code     string
		now      time.Time
		lastStep int64
		wantStep int64
		wantOK   bool
	}{
		{"current", rfcSecret, code(0), now, 0, cur, true},
		{"current, secret lower case unpadded", strings.ToLower(strings.TrimRight(rfcSecret, "=")), code(0), now, 0, cur, true},
		{"current, last step just before", rfcSecret, code(0), now, cur - 1, cur, true},
		{"replay of current", rfcSecret, code(0), now, cur, 0, false},
		{"current after a later step was used", rfcSecret, code(0), now, cur + 1, 0, false},
		{"previous step", rfcSecret, code(-1), now, 0, cur - 1, true},
		{"previous step after current was used", rfcSecret, code(-1), now, cur, 0, false},
		{"next step", rfcSecret, code(1), now, 0, cur + 1, true},
		{"next step after current was used", rfcSecret, code(1), now, cur, cur + 1, true},
		{"two steps back", rfcSecret, code(-2), now, 0, 0, false},
		{"two steps ahead", rfcSecret, code(2), now, 0, 0, false},
		{"step boundary start", rfcSecret, code(0), time.Unix(cur*30, 0), 0, cur, true},
		{"step boundary end", rfcSecret, code(0), time.Unix(cur*30+29, 0), 0, cur, true},
		{"wrong code", rfcSecret, wrongCode(seen), now, 0, 0, false},
		{"five digits", rfcSecret, code(0)[:5], now, 0, 0, false},
		{"seven digits", rfcSecret, code(0) + "0", now, 0, 0, false},
		{"non-digit", rfcSecret, code(0)[:5] + "a", now, 0, 0, false},
		{"leading space", rfcSecret, " " + code(0)[:5], now, 0, 0, false},
		{"surrounding space", rfcSecret, " " + code(0) + " ", now, 0, 0, false},
		{"sign", rfcSecret, "+" + code(0)[1:], now, 0, 0, false},
		{"fullwidth digits", rfcSecret, "１２３４５６", now, 0, 0, false},
		{"empty code", rfcSecret, "", now, 0, 0, false},
		{"empty secret", "", code(0), now, 0, 0, false},
		{"secret not base32", "!!!!", code(0), now, 0, 0, false},
		{"secret too short", short, shortCode, now, 0, 0, false},
		{"before the epoch", rfcSecret, "000000", time.Unix(-1, 0), -10, 0, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			step, ok := TOTPStep(tt.secret, tt.code, tt.now, tt.lastStep)
			if ok != tt.wantOK || (ok && step != tt.wantStep) {
				t.Errorf("TOTPStep = %d, %v; want %d, %v", step, ok, tt.wantStep, tt.wantOK)
			}
		})
	}
}

// wrongCode returns a six-digit code that is none of the given ones.
func wrongCode(used map[string]int64) string {
	for _, c := range []string{"000000", "111111", "222222"} {
		if _, ok := used[c]; !ok {
			return c
		}
	}
	panic("unreachable")
}

func TestTOTPReplaySequence(t *testing.T) {
	secret, _, err := NewTOTP("mftd", "alice")
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	code, err := totp.GenerateCode(secret, now)
	if err != nil {
		t.Fatal(err)
	}
	var last int64
	step, ok := TOTPStep(secret, code, now, last)
	if !ok || step != now.Unix()/30 {
		t.Fatalf("fresh code: step %d ok %v, want step %d", step, ok, now.Unix()/30)
	}
	last = step
	if _, ok := TOTPStep(secret, code, now, last); ok {
		t.Fatal("the same code was accepted twice")
	}
	if _, ok := TOTPStep(secret, code, now.Add(10*time.Second), last); ok {
		t.Fatal("the same code was accepted twice, later in its step")
	}
}

func TestNewTOTP(t *testing.T) {
	const issuer, account = "Safe Haven", "alice"
	secret, uri, err := NewTOTP(issuer, account)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(uri, "otpauth://totp/") {
		t.Fatalf("uri %q is not otpauth://totp/", uri)
	}
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		t.Fatalf("NewKeyFromURL(%q): %v", uri, err)
	}
	if key.Type() != "totp" || key.Algorithm() != otp.AlgorithmSHA1 || key.Digits() != otp.DigitsSix ||
		key.Period() != 30 || key.Issuer() != issuer || key.AccountName() != account || key.Secret() != secret {
		t.Errorf("key type %q alg %v digits %v period %d issuer %q account %q secret match %v",
			key.Type(), key.Algorithm(), key.Digits(), key.Period(), key.Issuer(), key.AccountName(), key.Secret() == secret)
	}
	raw, err := base32.StdEncoding.WithPadding(base32.NoPadding).DecodeString(secret)
	if err != nil || len(raw) != 20 {
		t.Errorf("secret decodes to %d bytes, %v; want 20", len(raw), err)
	}
	secret2, _, err := NewTOTP(issuer, account)
	if err != nil {
		t.Fatal(err)
	}
	if secret2 == secret {
		t.Error("two enrolments got the same secret")
	}

	for _, tt := range []struct{ issuer, account string }{
		{"", "alice"},
		{"mftd", ""},
		{"mf:td", "alice"},
		{"mftd", "al:ice"},
	} {
		if _, _, err := NewTOTP(tt.issuer, tt.account); err == nil {
			t.Errorf("NewTOTP(%q, %q) succeeded, want error", tt.issuer, tt.account)
		}
	}
}

func TestNewToken(t *testing.T) {
	tok1, h1, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	tok2, h2, err := NewToken()
	if err != nil {
		t.Fatal(err)
	}
	if len(tok1) < 22 {
		t.Errorf("token has %d chars, want at least 22 (128 bits)", len(tok1))
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok1)
	if err != nil || len(raw) < 16 {
		t.Errorf("token is not unpadded base64url of >=16 bytes: %d bytes, %v", len(raw), err)
	}
	if tok1 == tok2 || bytes.Equal(h1, h2) {
		t.Error("two tokens (or their hashes) are equal")
	}
	if !bytes.Equal(h1, HashToken(tok1)) || !bytes.Equal(h2, HashToken(tok2)) {
		t.Error("NewToken's hash is not HashToken(token)")
	}
}

func TestHashToken(t *testing.T) {
	h := HashToken("abc")
	if len(h) != 32 {
		t.Fatalf("hash is %d bytes, want 32", len(h))
	}
	if !bytes.Equal(h, HashToken("abc")) {
		t.Error("HashToken is not deterministic")
	}
	// FIPS 180-2 test vector.
	if got, want := hex.EncodeToString(h), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"; got != want {
		t.Errorf("HashToken(abc) = %s, want %s", got, want)
	}
	if bytes.Equal(HashToken("abc"), HashToken("abd")) {
		t.Error("different tokens hash equal")
	}
	if sum := sha256.Sum256([]byte("")); !bytes.Equal(HashToken(""), sum[:]) {
		t.Error("HashToken(\"\") is not SHA-256 of the empty string")
	}
}
