package storage

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// MaxNameBytes is the longest name, in bytes after NFC normalisation, that
// CleanName accepts (the common file-system limit for one path component).
const MaxNameBytes = 255

// ErrInvalidName is wrapped by every error CleanName returns.
var ErrInvalidName = errors.New("invalid name")

// NameError says why a name was refused. The Reason is safe to show to the
// client that sent the name; it never echoes the name back.
type NameError struct{ Reason string }

func (e *NameError) Error() string        { return "invalid name: " + e.Reason }
func (e *NameError) Is(target error) bool { return target == ErrInvalidName }

func nameErr(format string, args ...any) error {
	return &NameError{Reason: fmt.Sprintf(format, args...)}
}

// CleanName is the one path gate: every client-supplied name (a file name, a
// user name as a key part, a share name) passes through it before it becomes
// part of an object key. It returns the name in Unicode NFC, or an error
// wrapping ErrInvalidName. A name is one path component: it may not be empty,
// "." or "..", contain a separator, a control character, NUL, a bidirectional
// formatting character, a character Windows forbids in file names, or end
// with a dot or a space; it may not be a Windows device name (CON, NUL,
// COM1, ... with or without an extension), and it is at most MaxNameBytes.
func CleanName(name string) (string, error) {
	if !utf8.ValidString(name) {
		return "", nameErr("not valid UTF-8")
	}
	n := norm.NFC.String(name)
	switch {
	case n == "":
		return "", nameErr("empty")
	case n == "." || n == "..":
		return "", nameErr("%q is not a file name", n)
	case len(n) > MaxNameBytes:
		return "", nameErr("longer than %d bytes", MaxNameBytes)
	}
	for _, r := range n {
		switch {
		case r == '/' || r == '\\':
			return "", nameErr("contains a path separator")
		case r == 0:
			return "", nameErr("contains NUL")
		case unicode.IsControl(r), unicode.In(r, unicode.Zl, unicode.Zp):
			// U+2028 and U+2029 break lines like the C0 and C1 controls.
			return "", nameErr("contains a control character")
		case unicode.Is(unicode.Bidi_Control, r):
			return "", nameErr("contains a bidirectional formatting character")
		case r == unicode.ReplacementChar:
			return "", nameErr("contains U+FFFD")
		case strings.ContainsRune(`<>:"|?*`, r):
			return "", nameErr("contains %q, which Windows forbids in file names", r)
		case unicode.Is(unicode.Cf, r) && r != '\u200d' && r != '\u200c':
			// Invisible format characters (other than the joiners scripts
			// need) make two different names look the same.
			return "", nameErr("contains an invisible format character")
		}
	}
	if strings.HasSuffix(n, ".") || strings.HasSuffix(n, " ") {
		return "", nameErr("ends with a dot or a space")
	}
	if isWindowsReserved(n) {
		return "", nameErr("is a reserved device name on Windows")
	}
	return n, nil
}

// isWindowsReserved reports whether the part of name before its first dot is
// a DOS device name, which Windows treats as the device whatever the extension.
func isWindowsReserved(name string) bool {
	base, _, _ := strings.Cut(name, ".")
	base = strings.ToUpper(strings.TrimRight(base, " "))
	switch base {
	case "CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$":
		return true
	}
	r := []rune(base)
	if len(r) == 4 && (strings.HasPrefix(base, "COM") || strings.HasPrefix(base, "LPT")) {
		return strings.ContainsRune("0123456789¹²³", r[3])
	}
	return false
}

// Key prefixes. Every object key is built by Key from validated parts.
const (
	PrefixUploads    = "uploads"
	PrefixQuarantine = "quarantine"
	PrefixArrivals   = "arrivals"
	PrefixShares     = "shares"
)

// Key joins a prefix and parts into an object key, passing every part
// through CleanName. It is the only way keys are built.
func Key(prefix string, parts ...string) (string, error) {
	switch prefix {
	case PrefixUploads, PrefixQuarantine, PrefixArrivals, PrefixShares:
	default:
		return "", fmt.Errorf("storage: unknown key prefix %q", prefix)
	}
	if len(parts) == 0 {
		return "", fmt.Errorf("storage: key %q needs at least one part", prefix)
	}
	var b strings.Builder
	b.WriteString(prefix)
	for _, p := range parts {
		c, err := CleanName(p)
		if err != nil {
			return "", err
		}
		if c != p {
			return "", nameErr("not in Unicode NFC")
		}
		b.WriteByte('/')
		b.WriteString(c)
	}
	return b.String(), nil
}

// UploadKey is the key of upload id while it is in progress.
func UploadKey(id string) (string, error) { return Key(PrefixUploads, id) }

// QuarantineKey is where a refused upload's bytes are kept.
func QuarantineKey(id string) (string, error) { return Key(PrefixQuarantine, id) }

// ArrivalKey is where user's checked file name appears.
func ArrivalKey(user, name string) (string, error) { return Key(PrefixArrivals, user, name) }

// Limits of a path inside a share (ShareKey).
const (
	// MaxShareDepth is the most '/'-separated components a share path has.
	MaxShareDepth = 16
	// MaxSharePathBytes bounds a share path after NFC normalisation, so
	// that "shares/<share>/<path>" stays within S3's 1024-byte key limit.
	MaxSharePathBytes = 900
)

// CleanSharePath is the path gate for a path inside a share: 1 to
// MaxShareDepth components separated by '/', each passing CleanName (so no
// empty component, no leading or trailing '/', no "." or ".."), at most
// MaxSharePathBytes in all. It returns the path with every component in
// NFC, or an error wrapping ErrInvalidName.
func CleanSharePath(p string) (string, error) {
	if p == "" {
		return "", nameErr("empty path")
	}
	if strings.Count(p, "/") >= MaxShareDepth {
		return "", nameErr("more than %d folders deep", MaxShareDepth)
	}
	parts := strings.Split(p, "/")
	for i, part := range parts {
		c, err := CleanName(part)
		if err != nil {
			return "", err
		}
		parts[i] = c
	}
	out := strings.Join(parts, "/")
	if len(out) > MaxSharePathBytes {
		return "", nameErr("path longer than %d bytes", MaxSharePathBytes)
	}
	return out, nil
}

// ShareKey is where the file at path p (see CleanSharePath) in share is
// kept: "shares/<share>/<p>". share must be a name CleanName returns
// unchanged (callers check it with policy.CheckShareName first).
func ShareKey(share, p string) (string, error) {
	clean, err := CleanSharePath(p)
	if err != nil {
		return "", err
	}
	return Key(PrefixShares, append([]string{share}, strings.Split(clean, "/")...)...)
}

// RedactKey is how a key appears in logs and error messages: the parts a
// client chose (file names under arrivals/<user>/ and shares/<share>/) are
// replaced by a short digest, so logs never carry file names, which can be
// identifying in a safe haven. Other keys are returned as they are.
func RedactKey(key string) string {
	parts := strings.Split(key, "/")
	if len(parts) < 3 || (parts[0] != PrefixArrivals && parts[0] != PrefixShares) {
		return key
	}
	for i := 2; i < len(parts); i++ {
		sum := sha256.Sum256([]byte(parts[i]))
		parts[i] = "~" + hex.EncodeToString(sum[:4])
	}
	return strings.Join(parts, "/")
}
