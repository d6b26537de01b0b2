package scanner

import (
	"bytes"
	"encoding/binary"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// sniffLen is how many leading bytes decide a type: mimetype's default read
// limit (its readLimit, 4096 bytes in v1.4.16).
const sniffLen = 4096

// DefaultDenyTypes returns the recommended BuiltinConfig.DenyTypes: native
// programs and installers, which have no place in research data. Scripts
// and Java are left out on purpose: analysis code is research output. Note
// that mimetype recognises a PE by its first two bytes ("MZ") alone.
func DefaultDenyTypes() []string {
	return []string{
		// Windows and DOS programs and libraries: .exe, .dll, .sys, .scr, .cpl.
		"application/vnd.microsoft.portable-executable",
		// Linux and Unix programs, shared libraries, object files and core
		// dumps (ELF, with all its children).
		"application/x-elf",
		// macOS and iOS programs and libraries, universal binaries included.
		"application/x-mach-binary",
		// Windows Installer packages (.msi), which run custom actions.
		"application/x-ms-installer",
		// Windows shortcuts (.lnk), which can start any command line.
		"application/x-ms-shortcut",
		// Debian and RPM packages: programs plus scripts run as root.
		"application/vnd.debian.binary-package",
		"application/x-rpm",
		// Android apps (a zip with a manifest in its first entries).
		"application/vnd.android.package-archive",
	}
}

// denied reports whether m, detected from head, or a type it descends from,
// is refused.
func (b *Builtin) denied(m *mimetype.MIME, head []byte) bool {
	for a := m; a != nil; a = a.Parent() {
		for _, d := range b.deny {
			if a.Is(d) {
				return !a.Is(peType) || isPE(head)
			}
		}
	}
	return false
}

const peType = "application/vnd.microsoft.portable-executable"

// isPE reports whether head starts a Windows PE file: mimetype calls any
// file that starts with "MZ" one, which would refuse, say, a CSV whose
// first column is named MZ. A PE file's DOS header points, at 0x3C, to the
// "PE\0\0" signature, in practice within the first few hundred bytes; a
// file whose pointer leads past head or elsewhere is not refused (it still
// goes to clamd, which recognises executables itself).
func isPE(head []byte) bool {
	if len(head) < 0x40 {
		return false
	}
	off := binary.LittleEndian.Uint32(head[0x3C:])
	return off >= 0x40 && uint64(off)+4 <= uint64(len(head)) && string(head[off:off+4]) == "PE\x00\x00"
}

// typeName is m's MIME type without parameters (no charset).
func typeName(m *mimetype.MIME) string {
	s, _, _ := strings.Cut(m.String(), ";")
	return strings.TrimSpace(s)
}

// archiveKind is a format the archive pass can open.
type archiveKind int

const (
	notArchive archiveKind = iota
	kindZip
	kindGzip
	kindBzip2
	kindTar
)

// archiveKindOf says whether m (or a type it descends from: jar, docx, xlsx,
// odt, epub are zips) is a format the archive pass opens. 7z, rar, xz and
// zstd are not opened here; clamd unpacks those.
func archiveKindOf(m *mimetype.MIME) archiveKind {
	for a := m; a != nil; a = a.Parent() {
		switch {
		case a.Is("application/zip"):
			return kindZip
		case a.Is("application/gzip"):
			return kindGzip
		case a.Is("application/x-bzip2"):
			return kindBzip2
		case a.Is("application/x-tar"):
			return kindTar
		}
	}
	return notArchive
}

// eicarString is the EICAR anti-malware test string. Any file containing
// it is treated as infected, as a real engine would treat the test file.
const eicarString = `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`

var eicar = []byte(eicarString)

// eicarSearch finds the EICAR string in a stream written in pieces of any
// size: it keeps the last len(eicar)-1 bytes, so a match may straddle
// writes. The zero value is ready.
type eicarSearch struct {
	tail  [len(eicarString) - 1]byte
	n     int // valid bytes at the start of tail
	found bool
}

// write searches p, the next bytes of the stream, and reports whether the
// string has been found so far.
func (e *eicarSearch) write(p []byte) bool {
	if e.found || len(p) == 0 {
		return e.found
	}
	const keep = len(eicarString) - 1
	if e.n > 0 {
		var joint [2 * keep]byte
		j := append(joint[:0], e.tail[:e.n]...)
		j = append(j, p[:min(len(p), keep)]...)
		if bytes.Contains(j, eicar) {
			e.found = true
			return true
		}
	}
	if bytes.Contains(p, eicar) {
		e.found = true
		return true
	}
	if len(p) >= keep {
		e.n = copy(e.tail[:], p[len(p)-keep:])
		return false
	}
	// Keep the last keep bytes of tail+p.
	drop := max(0, e.n+len(p)-keep)
	copy(e.tail[:], e.tail[drop:e.n])
	e.n -= drop
	e.n += copy(e.tail[e.n:], p)
	return false
}

// Packed reports whether head, the start of a file, is compressed or
// packed content whose text a byte-oriented check such as the identifier
// detector cannot see: zip and the formats built on it (docx, xlsx, odt,
// jar), gzip, bzip2, xz, zstd, 7z, rar. It returns the content type found.
// A tar archive is not packed: its members' bytes are stored as they are.
func Packed(head []byte) (contentType string, packed bool) {
	m := mimetype.Detect(head)
	for a := m; a != nil; a = a.Parent() {
		for _, t := range []string{"application/zip", "application/gzip", "application/x-bzip2", "application/x-xz",
			"application/zstd", "application/x-7z-compressed", "application/x-rar-compressed"} {
			if a.Is(t) {
				return typeName(m), true
			}
		}
	}
	return typeName(m), false
}
