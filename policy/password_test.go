package policy

import (
	"bytes"
	"crypto/hmac"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
)

func TestCheckPassword(t *testing.T) {
	strongPrefix := "violet-quartz-ferry-mumble-oxen-" // 32 bytes
	tests := []struct {
		name     string
		password string
		username string
		reason   string // substring of the error; "" means accepted
	}{
		// Accepted.
		{"random passphrase", "violet quartz ferry mumble", "alice", ""},
		{"random passphrase with punctuation", "Blue-Giraffe-Oven-Static", "alice", ""},
		{"random characters", "vG7#kq2!Lp9zR", "alice", ""},
		{"non-ASCII passphrase", "Sommer-Fähre-Quarz-Murmeln", "alice", ""},
		{"twelve runes, more bytes", "猫が窓辺で静かに眠っている", "alice", ""},
		{"exactly the byte limit", strongPrefix + strings.Repeat("x", MaxPasswordBytes-len(strongPrefix)), "alice", ""},
		{"short user name may appear", "al-violet-quartz-ferry", "al", ""},
		{"no user name given", "violet quartz ferry mumble", "", ""},

		// Length and encoding.
		{"empty", "", "alice", "use at least 12"},
		{"eleven characters", "vG7#kq2!Lp9", "alice", "it has 11 characters"},
		{"eleven runes of two bytes", strings.Repeat("é", 11), "alice", "it has 11 characters"},
		{"over the byte limit", strongPrefix + strings.Repeat("x", MaxPasswordBytes+1-len(strongPrefix)), "alice", "longer than 1024 bytes"},
		{"invalid UTF-8", "violet quartz\xff ferry", "alice", "not valid UTF-8"},

		// User name.
		{"is the user name", "averylongusername", "averylongusername", "it is your user name"},
		{"is the user name, other case", "AVERYLONGUSERNAME", "averylongusername", "it is your user name"},
		{"contains the user name", "violet-alice-quartz-ferry", "alice", "contains your user name"},
		{"contains the user name, other case", "violet-ALICE-quartz-ferry", "Alice", "contains your user name"},
		{"contains a three-letter user name", "violet-bob-quartz-ferry", "bob", "contains your user name"},

		// Common passwords (the shipped list, case-insensitively).
		{"common: password1234", "password1234", "alice", "most commonly used"},
		{"common: upper case", "PASSWORD1234", "alice", "most commonly used"},
		{"common: 1qaz2wsx3edc", "1qaz2wsx3edc", "alice", "most commonly used"},

		// Guessable patterns (zxcvbn score below 3).
		{"keyboard walk", "qwertyuiopas", "alice", "too easy to guess"},
		{"keyboard walk, not a listed word", "mnbvcxzlkjhgf", "alice", "keyboard patterns"},
		{"digit sequence", "123456789012", "alice", "too easy to guess"},
		{"repeat", "aaaaaaaaaaaa", "alice", "it uses only 1 different characters"},
		{"repeated word", "passwordpassword", "alice", "too easy to guess"},
		{"common word plus year", "sunshine2024", "alice", "too easy to guess"},
		{"common password plus digits", "iloveyou1234", "alice", "common passwords"},
		{"capital and symbol do not help", "Password2024!", "alice", "too easy to guess"},
		{"non-ASCII repeat", strings.Repeat("é", 12), "alice", "only 1 different characters"},
		{"non-ASCII repeated pair", strings.Repeat("日本", 6), "alice", "only 2 different characters"},
		{"weak start of a long password", strings.Repeat("ab", 40) + "violet quartz ferry mumble", "alice", "too easy to guess"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckPassword(tt.password, tt.username)
			if tt.reason == "" {
				if err != nil {
					t.Fatalf("CheckPassword refused a good password: %v", err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckPassword accepted a password it should refuse (want %q)", tt.reason)
			}
			if !errors.Is(err, ErrWeakPassword) {
				t.Errorf("error %v does not wrap ErrWeakPassword", err)
			}
			if !strings.Contains(err.Error(), tt.reason) {
				t.Errorf("error %q does not give the reason %q", err, tt.reason)
			}
			if tt.password != "" && strings.Contains(err.Error(), tt.password) {
				t.Errorf("error %q echoes the password", err)
			}
		})
	}
}

// The error names kinds of pattern, never the matched fragment of the password.
func TestCheckPasswordReasonHidesFragments(t *testing.T) {
	err := CheckPassword("iloveyou1234", "alice")
	if err == nil {
		t.Fatal("accepted")
	}
	for _, frag := range []string{"iloveyou", "1234"} {
		if strings.Contains(err.Error(), frag) {
			t.Errorf("error %q contains the fragment %q", err, frag)
		}
	}
}

func FuzzCheckPassword(f *testing.F) {
	f.Add("violet quartz ferry mumble", "alice")
	f.Add("password1234", "bob")
	f.Add("\xff\xfe", "")
	f.Add(strings.Repeat("é", 40), "é")
	f.Fuzz(func(t *testing.T, password, username string) {
		if len(password) > 2*MaxPasswordBytes {
			return
		}
		err := CheckPassword(password, username)
		if err != nil && !errors.Is(err, ErrWeakPassword) {
			t.Fatalf("error %v does not wrap ErrWeakPassword", err)
		}
		if err == nil && len(password) > MaxPasswordBytes {
			t.Fatal("accepted an over-long password")
		}
		if err != nil && len(password) >= 8 && strings.Contains(err.Error(), password) {
			t.Fatalf("error %q echoes the password", err)
		}
	})
}

func BenchmarkCheckPassword(b *testing.B) {
	for _, bc := range []struct{ name, pw string }{
		{"passphrase", "violet quartz ferry mumble"},
		{"longest", strings.Repeat("qwerty1", MaxPasswordBytes/7+1)[:MaxPasswordBytes]},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				_ = CheckPassword(bc.pw, "alice")
			}
		})
	}
}

func TestNewCode(t *testing.T) {
	for _, digits := range []int{MinCodeDigits, 8, MaxCodeDigits} {
		code, err := NewCode(digits)
		if err != nil {
			t.Fatalf("NewCode(%d): %v", digits, err)
		}
		if len(code) != digits || strings.Trim(code, "0123456789") != "" {
			t.Errorf("NewCode(%d) = %q, want %d decimal digits", digits, code, digits)
		}
	}
	for _, digits := range []int{-1, 0, MinCodeDigits - 1, MaxCodeDigits + 1, 19} {
		if code, err := NewCode(digits); err == nil {
			t.Errorf("NewCode(%d) = %q, want an error", digits, code)
		}
	}
}

// Every digit is equally likely in every position: a chi-squared test per
// position (9 degrees of freedom). The bound, 45, is exceeded by chance with
// probability below 10^-6, so the test does not flake; a modulo bias or a
// dropped leading zero shows up far above it.
func TestNewCodeUniform(t *testing.T) {
	const digits, n = 6, 20000
	var counts [digits][10]int
	for range n {
		code, err := NewCode(digits)
		if err != nil {
			t.Fatal(err)
		}
		for i, c := range code {
			counts[i][c-'0']++
		}
	}
	const expected = float64(n) / 10
	for pos, cs := range counts {
		chi2 := 0.0
		for _, c := range cs {
			d := float64(c) - expected
			chi2 += d * d / expected
		}
		if chi2 > 45 {
			t.Errorf("position %d: digit counts %v, chi-squared %.1f > 45", pos, cs, chi2)
		}
	}
}

func TestHashCode(t *testing.T) {
	key := make([]byte, 32)
	for i := range key {
		key[i] = byte(i)
	}
	otherKey := bytes.Repeat([]byte{0xaa}, 32)

	// Known answers pin the encoding: stored hashes depend on it. Computed
	// independently (Python hmac) from the encoding in HashCode's doc comment.
	golden := []struct {
		id            int64
		purpose, code string
		hex           string
	}{
		{42, "reset", "01234567", "0355c8c665f5578dd5dbba96b40c970b773da82348fc9e008ae1354243b217b9"},
		{-1, "emergency", "123456", "e4a7960828462c7fcb4edb4f4897ddb2a3d91fab887c47c56f92f0feaac0c397"},
	}
	for _, g := range golden {
		if got := hex.EncodeToString(HashCode(key, g.id, g.purpose, g.code)); got != g.hex {
			t.Errorf("HashCode(%d, %q, %q) = %s, want %s", g.id, g.purpose, g.code, got, g.hex)
		}
	}

	base := HashCode(key, 42, "reset", "123456")
	if len(base) != 32 {
		t.Fatalf("hash is %d bytes, want 32", len(base))
	}
	if !hmac.Equal(base, HashCode(key, 42, "reset", "123456")) {
		t.Error("HashCode is not deterministic")
	}
	differ := []struct {
		name string
		got  []byte
	}{
		{"other key", HashCode(otherKey, 42, "reset", "123456")},
		{"other account", HashCode(key, 43, "reset", "123456")},
		{"other purpose", HashCode(key, 42, "emergency", "123456")},
		{"other code", HashCode(key, 42, "reset", "123457")},
		{"purpose/code boundary moved", HashCode(key, 42, "reset1", "23456")},
		{"code/purpose boundary moved", HashCode(key, 42, "rese", "t123456")},
		{"empty purpose", HashCode(key, 42, "", "reset123456")},
	}
	for _, d := range differ {
		if hmac.Equal(base, d.got) {
			t.Errorf("%s: same hash as the base case", d.name)
		}
	}
	// The hash is not the unkeyed digest of the code.
	if bytes.Contains(base, []byte("123456")) {
		t.Error("hash contains the code")
	}
}

func TestHashCodeShortKeyPanics(t *testing.T) {
	for _, key := range [][]byte{nil, {}, make([]byte, MinCodeKeyBytes-1)} {
		func() {
			defer func() {
				if recover() == nil {
					t.Errorf("HashCode with a %d-byte key did not panic", len(key))
				}
			}()
			HashCode(key, 1, "reset", "123456")
		}()
	}
}
