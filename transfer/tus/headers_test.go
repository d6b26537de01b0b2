package tus

import (
	"bytes"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestParseUint(t *testing.T) {
	tests := []struct {
		in   string
		want int64
		ok   bool
	}{
		{"0", 0, true},
		{"5", 5, true},
		{"007", 7, true},
		{"10485760", 10485760, true},
		{"9223372036854775807", 9223372036854775807, true},
		{"0000000000000000001", 1, true}, // 19 digits
		{"", 0, false},
		{"-1", 0, false},
		{"-0", 0, false},
		{"+5", 0, false},
		{" 5", 0, false},
		{"5 ", 0, false},
		{"\t5", 0, false},
		{"5\n", 0, false},
		{"1e3", 0, false},
		{"0x10", 0, false},
		{"0b1", 0, false},
		{"1_000", 0, false},
		{"1,000", 0, false},
		{"10.0", 0, false},
		{"١٢", 0, false},                   // Arabic-Indic digits
		{"１２", 0, false},                   // full-width digits
		{"00000000000000000001", 0, false}, // 20 digits, even if small
		{"12345678901234567890", 0, false},
		{"9223372036854775808", 0, false}, // MaxInt64 + 1
		{"9999999999999999999", 0, false},
	}
	for _, tt := range tests {
		got, err := parseUint(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("parseUint(%q) = %d, %v; want %d, ok=%v", tt.in, got, err, tt.want, tt.ok)
		}
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseMetadata(t *testing.T) {
	tests := []struct {
		in   string
		want map[string]string // nil: an error
	}{
		{"", map[string]string{}},
		{"   ", map[string]string{}},
		{"filename " + b64("a.txt"), map[string]string{"filename": "a.txt"}},
		{"filename " + b64("a.txt") + ",sha256 " + b64("abc"), map[string]string{"filename": "a.txt", "sha256": "abc"}},
		{"filename " + b64("a.txt") + ", is_confidential", map[string]string{"filename": "a.txt", "is_confidential": ""}},
		{"empty ", map[string]string{"empty": ""}},
		{"k  " + b64("x"), map[string]string{"k": "x"}},
		{"Key.With-Punct!~ " + b64("v"), map[string]string{"Key.With-Punct!~": "v"}},
		{"bin " + base64.StdEncoding.EncodeToString([]byte{0, 0xff, '\n'}), map[string]string{"bin": "\x00\xff\n"}},
		{",", nil},
		{"a " + b64("x") + ",", nil},
		{",a " + b64("x"), nil},
		{"a " + b64("x") + ",,b " + b64("y"), nil},
		{"a " + b64("x") + ",a " + b64("y"), nil},
		{"a,a", nil},
		{"k a.txt", nil},
		{"k YS50eHQ", nil},  // unpadded
		{"k P_8-", nil},     // URL alphabet
		{"k YQ==YQ==", nil}, // data after padding
		{"k YR==", nil},     // non-canonical padding bits
		{"k YQ== x", nil},
		{"n\u00e9 " + b64("x"), nil},
		{"k\x7f " + b64("x"), nil},
		{"k\x00 " + b64("x"), nil},
		{"k\tv " + b64("x"), nil},
	}
	for _, tt := range tests {
		got, err := parseMetadata(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("parseMetadata(%q) = %q, want an error", tt.in, got)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseMetadata(%q): %v", tt.in, err)
			continue
		}
		if len(got) != len(tt.want) {
			t.Errorf("parseMetadata(%q) = %q, want %q", tt.in, got, tt.want)
			continue
		}
		for k, v := range tt.want {
			if g, ok := got[k]; !ok || string(g) != v {
				t.Errorf("parseMetadata(%q)[%q] = %q (present %v), want %q", tt.in, k, g, ok, v)
			}
		}
	}
}

func TestParseChecksum(t *testing.T) {
	data := []byte("the chunk")
	s1, s256, m5 := sha1.Sum(data), sha256.Sum256(data), md5.Sum(data)
	enc := base64.StdEncoding.EncodeToString
	tests := []struct {
		in      string
		want    []byte // nil: an error
		size    int
		unknown bool // the error is errUnsupportedChecksum
	}{
		{in: "sha1 " + enc(s1[:]), want: s1[:], size: sha1.Size},
		{in: "sha256 " + enc(s256[:]), want: s256[:], size: sha256.Size},
		{in: "md5 " + enc(m5[:]), want: m5[:], size: md5.Size},
		{in: "sha256  " + enc(s256[:]) + " ", want: s256[:], size: sha256.Size},
		{in: "crc32 AAAAAA==", unknown: true},
		{in: "SHA1 " + enc(s1[:]), unknown: true},
		{in: "sha512 " + enc(make([]byte, 64)), unknown: true},
		{in: "sha1"},
		{in: ""},
		{in: "sha1 "},
		{in: "sha1 " + enc(s256[:])},
		{in: "sha256 " + enc(s1[:])},
		{in: "md5 " + enc(m5[:15])},
		{in: "sha1 " + strings.TrimRight(enc(s1[:]), "=")},
		{in: "sha1 " + base64.URLEncoding.EncodeToString([]byte{0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff, 0xfe, 0xfb, 0xff})},
		{in: "sha1 " + enc(s1[:]) + " extra"},
	}
	for _, tt := range tests {
		h, sum, err := parseChecksum(tt.in)
		if tt.want == nil {
			if err == nil {
				t.Errorf("parseChecksum(%q) = %x, want an error", tt.in, sum)
			} else if got := errors.Is(err, errUnsupportedChecksum); got != tt.unknown {
				t.Errorf("parseChecksum(%q): %v; unsupported = %v, want %v", tt.in, err, got, tt.unknown)
			}
			continue
		}
		if err != nil {
			t.Errorf("parseChecksum(%q): %v", tt.in, err)
			continue
		}
		if !bytes.Equal(sum, tt.want) || h.Size() != tt.size {
			t.Errorf("parseChecksum(%q) = size %d, %x; want size %d, %x", tt.in, h.Size(), sum, tt.size, tt.want)
		}
		if h.Write(data); !bytes.Equal(h.Sum(nil), tt.want) {
			t.Errorf("parseChecksum(%q): the hash returned is not the named algorithm", tt.in)
		}
	}
	// Every advertised algorithm parses.
	for _, alg := range checksumAlgorithms {
		h := newChecksum(alg)
		if h == nil {
			t.Fatalf("advertised algorithm %q has no hash", alg)
		}
		if _, _, err := parseChecksum(alg + " " + enc(make([]byte, h.Size()))); err != nil {
			t.Errorf("advertised algorithm %q: %v", alg, err)
		}
	}
}

func TestIsHexSHA256(t *testing.T) {
	valid := strings.Repeat("0123456789abcdef", 4)
	tests := []struct {
		in   string
		want bool
	}{
		{valid, true},
		{strings.ToUpper(valid), true},
		{"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", true},
		{"", false},
		{valid[:63], false},
		{valid + "0", false},
		{valid[:63] + "g", false},
		{valid[:63] + " ", false},
		{" " + valid[:63], false},
		{valid[:62] + "é", false}, // 64 bytes, not 64 hex digits
		{"0x" + valid[:62], false},
	}
	for _, tt := range tests {
		if got := isHexSHA256(tt.in); got != tt.want {
			t.Errorf("isHexSHA256(%q) = %v, want %v", tt.in, got, tt.want)
		}
	}
}

// encodeMetadata is the canonical Upload-Metadata encoding of md.
func encodeMetadata(md map[string][]byte) string {
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	var parts []string
	for _, k := range keys {
		if len(md[k]) == 0 {
			parts = append(parts, k)
		} else {
			parts = append(parts, k+" "+base64.StdEncoding.EncodeToString(md[k]))
		}
	}
	return strings.Join(parts, ",")
}

// sameMetadata compares two parsed headers; an absent value and an empty one
// are the same (the tus specification allows either for an empty value).
func sameMetadata(a, b map[string][]byte) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		w, ok := b[k]
		if !ok || !bytes.Equal(v, w) {
			return false
		}
	}
	return true
}

func FuzzParseMetadata(f *testing.F) {
	for _, s := range []string{
		"", "filename " + b64("a.txt"), "filename " + b64("a.txt") + ",sha256 " + b64(strings.Repeat("a", 64)),
		"k", "k ", "a,b", ",", "k YQ==,k YQ==", "k\tYQ==", "n\u00e9 YQ==", "k YR==",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		md, err := parseMetadata(s)
		if err != nil {
			if md != nil {
				t.Fatalf("parseMetadata(%q) returned both %q and %v", s, md, err)
			}
			return
		}
		for k := range md {
			if k == "" || strings.ContainsAny(k, " ,") {
				t.Fatalf("parseMetadata(%q) accepted key %q", s, k)
			}
			for i := 0; i < len(k); i++ {
				if k[i] <= ' ' || k[i] >= 0x7f {
					t.Fatalf("parseMetadata(%q) accepted key %q", s, k)
				}
			}
		}
		enc := encodeMetadata(md)
		again, err := parseMetadata(enc)
		if err != nil {
			t.Fatalf("parseMetadata(%q) = %q, whose encoding %q does not parse: %v", s, md, enc, err)
		}
		if !sameMetadata(md, again) {
			t.Fatalf("parseMetadata(%q) = %q, but its encoding %q parses as %q", s, md, enc, again)
		}
	})
}

func FuzzParseUint(f *testing.F) {
	for _, s := range []string{"0", "5", "007", "", "-1", "+5", " 5", "1e3", "9223372036854775807", "9223372036854775808", "00000000000000000001", "١"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := parseUint(s)
		// The reference: 1 to 19 ASCII digits that strconv reads as an int64.
		digits := len(s) >= 1 && len(s) <= 19 && strings.Trim(s, "0123456789") == ""
		want, werr := strconv.ParseInt(s, 10, 64)
		wantOK := digits && werr == nil
		if (err == nil) != wantOK {
			t.Fatalf("parseUint(%q) = %d, %v; strconv says %d, %v (digits only: %v)", s, got, err, want, werr, digits)
		}
		if err == nil && (got != want || got < 0) {
			t.Fatalf("parseUint(%q) = %d, want %d", s, got, want)
		}
		if err != nil && got != 0 {
			t.Fatalf("parseUint(%q) = %d with error %v", s, got, err)
		}
	})
}

func FuzzParseChecksum(f *testing.F) {
	for _, s := range []string{
		"sha1 " + base64.StdEncoding.EncodeToString(make([]byte, 20)),
		"sha256 " + base64.StdEncoding.EncodeToString(make([]byte, 32)),
		"md5 " + base64.StdEncoding.EncodeToString(make([]byte, 16)),
		"sha1", "crc32 AAAAAA==", "", "md5  AAAAAAAAAAAAAAAAAAAAAA== ",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, sum, err := parseChecksum(s)
		if err != nil {
			if h != nil || sum != nil {
				t.Fatalf("parseChecksum(%q) returned a result with error %v", s, err)
			}
			return
		}
		alg, _, _ := strings.Cut(strings.TrimSpace(s), " ")
		if !slices.Contains(checksumAlgorithms, alg) {
			t.Fatalf("parseChecksum(%q) accepted algorithm %q", s, alg)
		}
		if len(sum) != h.Size() {
			t.Fatalf("parseChecksum(%q): %d-byte digest for a %d-byte hash", s, len(sum), h.Size())
		}
		// The digest round-trips through the header form.
		h2, sum2, err := parseChecksum(alg + " " + base64.StdEncoding.EncodeToString(sum))
		if err != nil || !bytes.Equal(sum, sum2) || h2.Size() != h.Size() {
			t.Fatalf("parseChecksum(%q) = %x, which does not round-trip: %x, %v", s, sum, sum2, err)
		}
	})
}
