package storage

import (
	"errors"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

func TestCleanName(t *testing.T) {
	accept := []struct{ in, want string }{
		{"report.pdf", "report.pdf"},
		{"data (1).csv", "data (1).csv"},
		{"my file with spaces.txt", "my file with spaces.txt"},
		{" leading space", " leading space"},
		{".hidden", ".hidden"},
		{"...x", "...x"},
		{"Ünïcödé.txt", "Ünïcödé.txt"},
		{"数据.csv", "数据.csv"},
		{"данные.tsv", "данные.tsv"},
		{"بيانات.txt", "بيانات.txt"},
		{"ज्ञान", "ज्ञान"},
		{"क्\u200dष", "क्\u200dष"}, // ZERO WIDTH JOINER, which scripts need
		{"\U0001F469\u200d\U0001F52C.png", "\U0001F469\u200d\U0001F52C.png"},
		{"e\u0301te\u0301", "\u00e9t\u00e9"}, // NFD in, NFC out
		{"\u212b", "\u00c5"},                 // ANGSTROM SIGN is A WITH RING ABOVE in NFC
		{"CONSOLE", "CONSOLE"},               // not a device name
		{"COMA.txt", "COMA.txt"},             // nor this
		{"LPT10", "LPT10"},
		{"nul-results.csv", "nul-results.csv"},
		{"x.CON", "x.CON"},
		{strings.Repeat("a", 255), strings.Repeat("a", 255)},
		{strings.Repeat("a", 253) + "\u00e9", strings.Repeat("a", 253) + "\u00e9"},  // 255 bytes
		{strings.Repeat("a", 253) + "e\u0301", strings.Repeat("a", 253) + "\u00e9"}, // 256 bytes in, 255 in NFC
		{strings.Repeat("日", 85), strings.Repeat("日", 85)},                          // 255 bytes
	}
	for _, tc := range accept {
		got, err := CleanName(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("CleanName(%+q) = %+q, %v; want %+q", tc.in, got, err, tc.want)
		}
	}

	refuse := []struct{ name, in string }{
		{"empty", ""},
		{"dot", "."},
		{"dotdot", ".."},
		{"slash", "a/b"},
		{"leading slash", "/etc"},
		{"backslash", `a\b`},
		{"dotdot backslash", `..\x`},
		{"NUL", "a\x00b"},
		{"tab", "a\tb"},
		{"newline", "a\nb"},
		{"escape", "\x1b[31mred"},
		{"DEL", "a\x7fb"},
		{"C1 NEL", "a\u0085b"},
		{"C1 CSI", "a\u009bb"},
		{"line separator", "a\u2028b"},
		{"paragraph separator", "a\u2029b"},
		{"RLO", "invoice\u202efdp.exe"},
		{"LRE", "a\u202ab"},
		{"LRI", "a\u2066b"},
		{"PDI", "a\u2069b"},
		{"LRM", "a\u200eb"},
		{"ALM", "a\u061cb"},
		{"zero width space", "a\u200bb"},
		{"BOM", "\ufeffname"},
		{"soft hyphen", "a\u00adb"},
		{"word joiner", "a\u2060b"},
		{"tag character", "a\U000E0041b"},
		{"replacement char", "a\ufffdb"},
		{"too long", strings.Repeat("a", 256)},
		{"too long multibyte at the boundary", strings.Repeat("a", 254) + "\u00e9"},
		{"too long CJK", strings.Repeat("日", 86)},
		{"invalid UTF-8", "a\xffb"},
		{"truncated UTF-8", "a\xc3"},
		{"overlong UTF-8", "\xc0\xaf"},
		{"surrogate", "\xed\xa0\x80"},
		{"CON", "CON"},
		{"con.txt", "con.txt"},
		{"Con.tar.gz", "Con.tar.gz"},
		{"COM1", "COM1"},
		{"com9.log", "com9.log"},
		{"COM superscript", "COM¹"},
		{"lpt9.tar.gz", "lpt9.tar.gz"},
		{"PRN", "prn"},
		{"AUX", "aux.c"},
		{"NUL", "NUL"},
		{"CONIN$", "CONIN$"},
		{"device with spaces", "con .txt"},
		{"trailing dot", "name."},
		{"trailing dots", "name..."},
		{"trailing space", "name "},
		{"only spaces", "   "},
		{"colon", "a:b"},
		{"star", "a*b"},
		{"question", "a?b"},
		{"pipe", "a|b"},
		{"quote", `a"b`},
		{"angle", "a<b>"},
	}
	for _, tc := range refuse {
		got, err := CleanName(tc.in)
		if err == nil {
			t.Errorf("%s: CleanName(%+q) = %+q, want an error", tc.name, tc.in, got)
			continue
		}
		if !errors.Is(err, ErrInvalidName) {
			t.Errorf("%s: CleanName(%+q) error %v does not wrap ErrInvalidName", tc.name, tc.in, err)
		}
		var ne *NameError
		if !errors.As(err, &ne) || ne.Reason == "" {
			t.Errorf("%s: CleanName(%+q) error %v is not a *NameError with a reason", tc.name, tc.in, err)
		}
		if len(tc.in) > 2 && strings.Contains(err.Error(), tc.in) {
			t.Errorf("%s: CleanName(%+q) error %q echoes the name", tc.name, tc.in, err)
		}
	}
}

func TestKey(t *testing.T) {
	for _, tc := range []struct {
		prefix string
		parts  []string
		want   string
	}{
		{PrefixUploads, []string{"0123abcd"}, "uploads/0123abcd"},
		{PrefixQuarantine, []string{"id"}, "quarantine/id"},
		{PrefixArrivals, []string{"alice", "data (1).csv"}, "arrivals/alice/data (1).csv"},
		{PrefixArrivals, []string{"zoë", "données.csv"}, "arrivals/zoë/données.csv"},
		{PrefixShares, []string{"study-7", "raw", "x.bin"}, "shares/study-7/raw/x.bin"},
	} {
		got, err := Key(tc.prefix, tc.parts...)
		if err != nil || got != tc.want {
			t.Errorf("Key(%q, %+q) = %q, %v; want %q", tc.prefix, tc.parts, got, err, tc.want)
		}
	}

	for _, tc := range []struct {
		name   string
		prefix string
		parts  []string
	}{
		{"unknown prefix", "tmp", []string{"x"}},
		{"empty prefix", "", []string{"x"}},
		{"prefix with slash", "uploads/", []string{"x"}},
		{"upper-case prefix", "Uploads", []string{"x"}},
		{"prefix dotdot", "..", []string{"x"}},
		{"no parts", PrefixUploads, nil},
		{"empty part", PrefixArrivals, []string{"alice", ""}},
		{"dotdot part", PrefixArrivals, []string{"..", "x"}},
		{"slash in part", PrefixArrivals, []string{"alice", "../../etc/passwd"}},
		{"separator in user", PrefixArrivals, []string{"alice/bob", "x"}},
		{"NFD part", PrefixArrivals, []string{"alice", "e\u0301.txt"}},
		{"NFD user", PrefixArrivals, []string{"zoe\u0308", "x"}},
		{"control char", PrefixShares, []string{"s", "a\nb"}},
		{"device name", PrefixShares, []string{"s", "con.txt"}},
		{"trailing dot", PrefixQuarantine, []string{"id."}},
	} {
		if got, err := Key(tc.prefix, tc.parts...); err == nil {
			t.Errorf("%s: Key(%q, %+q) = %q, want an error", tc.name, tc.prefix, tc.parts, got)
		}
	}

	// The helpers go through Key.
	if k, err := ArrivalKey("alice", "x.csv"); err != nil || k != "arrivals/alice/x.csv" {
		t.Errorf("ArrivalKey = %q, %v", k, err)
	}
	if k, err := UploadKey("abc"); err != nil || k != "uploads/abc" {
		t.Errorf("UploadKey = %q, %v", k, err)
	}
	if k, err := QuarantineKey("abc"); err != nil || k != "quarantine/abc" {
		t.Errorf("QuarantineKey = %q, %v", k, err)
	}
	if _, err := ArrivalKey("alice", "a/b"); err == nil {
		t.Error(`ArrivalKey("alice", "a/b") succeeded`)
	}
}

func FuzzCleanName(f *testing.F) {
	for _, s := range []string{
		"report.pdf", "data (1).csv", "e\u0301", "..", "a/b", `a\b`, "con.txt", "name.", "a\u202eb",
		"a\x00b", "\xff", "数据.csv", strings.Repeat("\u00e9", 128), "\U0001F469\u200d\U0001F52C", "\u0958",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, in string) {
		out, err := CleanName(in)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("CleanName(%+q) error %v does not wrap ErrInvalidName", in, err)
			}
			if out != "" {
				t.Fatalf("CleanName(%+q) = %+q with error %v", in, out, err)
			}
			return
		}
		switch {
		case !utf8.ValidString(out):
			t.Fatalf("CleanName(%+q) = %+q: not valid UTF-8", in, out)
		case !norm.NFC.IsNormalString(out):
			t.Fatalf("CleanName(%+q) = %+q: not NFC", in, out)
		case out == "" || out == "." || out == "..":
			t.Fatalf("CleanName(%+q) = %+q", in, out)
		case len(out) > MaxNameBytes:
			t.Fatalf("CleanName(%+q) = %d bytes", in, len(out))
		case strings.ContainsAny(out, "/\\\x00"):
			t.Fatalf("CleanName(%+q) = %+q: contains a separator or NUL", in, out)
		case strings.IndexFunc(out, unicode.IsControl) >= 0:
			t.Fatalf("CleanName(%+q) = %+q: contains a control character", in, out)
		case strings.IndexFunc(out, func(r rune) bool { return unicode.Is(unicode.Bidi_Control, r) }) >= 0:
			t.Fatalf("CleanName(%+q) = %+q: contains a bidi control", in, out)
		case out != norm.NFC.String(in):
			t.Fatalf("CleanName(%+q) = %+q, not the NFC of its input", in, out)
		}
		again, err := CleanName(out)
		if err != nil || again != out {
			t.Fatalf("CleanName(CleanName(%+q)) = %+q, %v; want %+q", in, again, err, out)
		}
		k, err := Key(PrefixArrivals, "u", out)
		if err != nil {
			t.Fatalf("Key(arrivals, u, %+q): %v", out, err)
		}
		if strings.Count(k, "/") != 2 || k != "arrivals/u/"+out {
			t.Fatalf("Key(arrivals, u, %+q) = %+q", out, k)
		}
	})
}

func TestShareKey(t *testing.T) {
	for _, tc := range []struct{ share, path, want string }{
		{"study-7", "x.csv", "shares/study-7/x.csv"},
		{"study-7", "raw/2024/visits.csv", "shares/study-7/raw/2024/visits.csv"},
		{"s", "données/e\u0301.txt", "shares/s/données/\u00e9.txt"}, // NFC per component
		{"s", ".hidden/..x", "shares/s/.hidden/..x"},
		{"s", strings.Repeat("d/", MaxShareDepth-1) + "f", "shares/s/" + strings.Repeat("d/", MaxShareDepth-1) + "f"},
		{"s", strings.Repeat("a", 255) + "/" + strings.Repeat("b", 255), "shares/s/" + strings.Repeat("a", 255) + "/" + strings.Repeat("b", 255)},
	} {
		got, err := ShareKey(tc.share, tc.path)
		if err != nil || got != tc.want {
			t.Errorf("ShareKey(%q, %+q) = %+q, %v; want %+q", tc.share, tc.path, got, err, tc.want)
		}
		if p, err := CleanSharePath(tc.path); err != nil || "shares/"+tc.share+"/"+p != tc.want {
			t.Errorf("CleanSharePath(%+q) = %+q, %v", tc.path, p, err)
		}
	}

	for _, tc := range []struct{ name, share, path string }{
		{"empty path", "s", ""},
		{"slash only", "s", "/"},
		{"leading slash", "s", "/x"},
		{"trailing slash", "s", "x/"},
		{"empty component", "s", "a//b"},
		{"dot", "s", "."},
		{"dot component", "s", "a/./b"},
		{"dotdot", "s", ".."},
		{"dotdot component", "s", "a/../../arrivals/bob/x"},
		{"dotdot at the end", "s", "a/.."},
		{"backslash", "s", `a\..\b`},
		{"NUL", "s", "a/b\x00"},
		{"control char", "s", "a/b\nc"},
		{"device name", "s", "a/con.txt"},
		{"too deep", "s", strings.Repeat("d/", MaxShareDepth) + "f"},
		{"too long", "s", strings.Repeat(strings.Repeat("a", 200)+"/", 4) + strings.Repeat("b", 200)},
		{"component too long", "s", strings.Repeat("a", 256)},
		{"invalid UTF-8", "s", "a/\xff"},
		{"empty share", "", "x"},
		{"share with slash", "a/b", "x"},
		{"share dotdot", "..", "x"},
		{"share NFD", "e\u0301", "x"},
	} {
		if got, err := ShareKey(tc.share, tc.path); err == nil {
			t.Errorf("%s: ShareKey(%q, %+q) = %+q, want an error", tc.name, tc.share, tc.path, got)
		} else if !errors.Is(err, ErrInvalidName) {
			t.Errorf("%s: ShareKey error %v does not wrap ErrInvalidName", tc.name, err)
		}
	}
}

// FuzzShareKey: whatever the path, a key ShareKey returns lies under
// shares/<share>/, at most MaxShareDepth components below it, each one a
// name the path gate returns unchanged.
func FuzzShareKey(f *testing.F) {
	for _, s := range []string{
		"x.csv", "raw/2024/x.csv", "../x", "a/../../b", "/etc/passwd", "a//b", "a/", `a\b`, "a/./b",
		"con.txt", "e\u0301/f", "a/\u202eb", strings.Repeat("d/", 20) + "f", "数据/x",
	} {
		f.Add("study-7", s)
	}
	f.Add("..", "x")
	f.Add("a/b", "x")
	f.Fuzz(func(t *testing.T, share, p string) {
		key, err := ShareKey(share, p)
		if err != nil {
			if !errors.Is(err, ErrInvalidName) {
				t.Fatalf("ShareKey(%+q, %+q) error %v does not wrap ErrInvalidName", share, p, err)
			}
			return
		}
		prefix := PrefixShares + "/" + share + "/"
		rest, ok := strings.CutPrefix(key, prefix)
		if !ok {
			t.Fatalf("ShareKey(%+q, %+q) = %+q: not under %q", share, p, key, prefix)
		}
		if c, err := CleanName(share); err != nil || c != share {
			t.Fatalf("ShareKey accepted share %+q, which the path gate changes or refuses", share)
		}
		parts := strings.Split(rest, "/")
		if len(parts) > MaxShareDepth || len(rest) > MaxSharePathBytes {
			t.Fatalf("ShareKey(%+q, %+q) = %+q: %d components, %d bytes", share, p, key, len(parts), len(rest))
		}
		for _, part := range parts {
			if c, err := CleanName(part); err != nil || c != part {
				t.Fatalf("ShareKey(%+q, %+q) = %+q: component %+q does not pass the path gate unchanged", share, p, key, part)
			}
		}
		if clean, err := CleanSharePath(p); err != nil || clean != rest {
			t.Fatalf("CleanSharePath(%+q) = %+q, %v; ShareKey put %+q", p, clean, err, rest)
		}
		if again, err := ShareKey(share, rest); err != nil || again != key {
			t.Fatalf("ShareKey(%+q, %+q) = %+q, %v; want it stable at %+q", share, rest, again, err, key)
		}
	})
}
