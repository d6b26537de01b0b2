package scanner

import (
	"context"
	"fmt"
	"io"
	"math"
	"os"
	"strings"

	"github.com/gabriel-vasile/mimetype"
)

// EICARName is the Reason given for a file that contains the EICAR test
// string (followed by where, for a file inside an archive).
const EICARName = "EICAR-Test-File"

// builtinEngine is the Verdict.Engine of every Builtin verdict.
const builtinEngine = "builtin"

// Defaults filled in by NewBuiltin for zero ArchiveLimits fields.
const (
	DefaultMaxDepth    = 5
	DefaultMaxRatio    = 100
	DefaultMaxExpanded = 64 << 30
	DefaultMaxEntries  = 100000
)

// Encrypted-entry policies (ArchiveLimits.Encrypted).
const (
	EncryptedHold   = "hold"
	EncryptedRefuse = "refuse"
)

// ratioFloor is how many bytes an archive must have expanded before its
// expansion ratio is judged, so that a small, highly compressible file (a
// few KiB of zeros) is not taken for a bomb.
const ratioFloor = 1 << 20

// ArchiveLimits bound the inspection of archives, so that a zip bomb is
// refused, never unpacked without bound. A limit crossed is a finding with
// Action Quarantine; the scan stops reading at once.
//
// "Expanded" bytes are those produced by reading a zip entry, a gzip stream
// or a bzip2 stream, at every nesting level: a 1 GiB file inside a zip inside
// a zip counts its 1 GiB once for the inner zip's entry, plus the inner zip's
// own size for the outer zip's entry. The members of a tar are slices of
// bytes already counted (or of the file itself) and do not count again.
type ArchiveLimits struct {
	// MaxDepth is how many nesting levels are inspected: an archive is
	// depth 1, an archive in an archive depth 2. An archive deeper than
	// this is a finding. A tar directly inside gzip or bzip2 (.tar.gz) is
	// one level. Default 5.
	MaxDepth int
	// MaxRatio bounds the bytes expanded from one archive divided by its
	// compressed size (a zip's size; the compressed bytes read so far of a
	// gzip or bzip2 stream; the bytes read so far of a tar, which catches
	// sparse-file bombs). Judged only once 1 MiB has been expanded from that
	// archive. At least 1. Default 100.
	MaxRatio float64
	// MaxExpanded bounds the total bytes expanded from one file, all
	// levels. A zip entry whose header alone declares more is refused
	// before it is read. Default 64 GiB.
	MaxExpanded int64
	// MaxEntries bounds the entries (zip entries and tar members) in one
	// file, all levels. A zip whose central directory holds more is
	// refused before any entry is read. Default 100000.
	MaxEntries int
	// Encrypted says what becomes of a file holding an encrypted zip entry,
	// which cannot be inspected: "hold" (the default) quarantines it for
	// an administrator, "refuse" rejects it.
	Encrypted string
}

// BuiltinConfig configures Builtin. The zero value checks EICAR and archive
// limits (with their defaults) and refuses nothing by type or size.
type BuiltinConfig struct {
	// MaxSize refuses (Action Reject) files larger than this many bytes;
	// 0 is no limit.
	MaxSize int64
	// DenyTypes are MIME types refused (Action Reject) by their magic
	// bytes, in the file itself and in every entry of an archive. Names are
	// github.com/gabriel-vasile/mimetype's, or their aliases; a type is
	// refused with its descendants ("application/zip" refuses jar and docx
	// too). nil refuses nothing; DefaultDenyTypes is the recommended list.
	DenyTypes []string
	// Archives bounds archive inspection; zero fields take the defaults.
	Archives ArchiveLimits
	// TempDir is where a nested zip too large to hold in memory (over
	// 16 MiB) is spilled while it is inspected. The file is unlinked as
	// soon as it is created, so nothing is left behind even by a crash.
	// "" is os.TempDir().
	TempDir string
}

// Builtin is the in-process first line of checks: the EICAR test string, a
// size limit, refused content types by magic bytes, and the inspection of
// zip, gzip, bzip2 and tar archives, nested, within limits. It is safe for
// concurrent use.
//
// A caller that already reads the file once (to hash it, to feed clamd)
// uses NewStream on that read and then ScanArchive when Stream.Archive says
// so; Scan does both on its own.
type Builtin struct {
	maxSize int64
	deny    []string
	lim     ArchiveLimits
	tempDir string
}

var _ Scanner = (*Builtin)(nil)

// NewBuiltin validates cfg and fills the defaults of its zero fields. An
// unknown DenyTypes name is an error.
func NewBuiltin(cfg BuiltinConfig) (*Builtin, error) {
	if cfg.MaxSize < 0 {
		return nil, fmt.Errorf("scanner: max size %d is negative", cfg.MaxSize)
	}
	deny := make([]string, 0, len(cfg.DenyTypes))
	for _, name := range cfg.DenyTypes {
		name = strings.TrimSpace(name)
		m := mimetype.Lookup(name)
		if m == nil {
			return nil, fmt.Errorf("scanner: unknown deny type %q (names are mimetype's, e.g. %s)",
				name, strings.Join(DefaultDenyTypes()[:3], ", "))
		}
		if m.Parent() == nil {
			return nil, fmt.Errorf("scanner: deny type %q would refuse every file", name)
		}
		deny = append(deny, name)
	}
	lim := cfg.Archives
	if lim.MaxDepth == 0 {
		lim.MaxDepth = DefaultMaxDepth
	}
	if lim.MaxRatio == 0 {
		lim.MaxRatio = DefaultMaxRatio
	}
	if lim.MaxExpanded == 0 {
		lim.MaxExpanded = DefaultMaxExpanded
	}
	if lim.MaxEntries == 0 {
		lim.MaxEntries = DefaultMaxEntries
	}
	if lim.Encrypted == "" {
		lim.Encrypted = EncryptedHold
	}
	switch {
	case lim.MaxDepth < 0:
		return nil, fmt.Errorf("scanner: archive max depth %d is negative", lim.MaxDepth)
	case math.IsNaN(lim.MaxRatio) || lim.MaxRatio < 1:
		return nil, fmt.Errorf("scanner: archive max ratio %v is less than 1", lim.MaxRatio)
	case lim.MaxExpanded < 0:
		return nil, fmt.Errorf("scanner: archive max expanded %d is negative", lim.MaxExpanded)
	case lim.MaxEntries < 0:
		return nil, fmt.Errorf("scanner: archive max entries %d is negative", lim.MaxEntries)
	case lim.Encrypted != EncryptedHold && lim.Encrypted != EncryptedRefuse:
		return nil, fmt.Errorf("scanner: archive encrypted policy %q is neither %q nor %q",
			lim.Encrypted, EncryptedHold, EncryptedRefuse)
	}
	if cfg.TempDir != "" {
		fi, err := os.Stat(cfg.TempDir)
		if err != nil {
			return nil, fmt.Errorf("scanner: temp dir: %w", err)
		}
		if !fi.IsDir() {
			return nil, fmt.Errorf("scanner: temp dir %q is not a directory", cfg.TempDir)
		}
	}
	return &Builtin{maxSize: cfg.MaxSize, deny: deny, lim: lim, tempDir: cfg.TempDir}, nil
}

// Scan implements Scanner: one sequential pass over f (EICAR, size, type),
// then, if f is an archive and nothing was found, ScanArchive. It stops at
// the first finding: a file larger than MaxSize by f.Size is refused
// without being read. An error (a read of f.R failed, ctx ended, f shorter
// than f.Size) means f was not judged.
func (b *Builtin) Scan(ctx context.Context, f File) (Verdict, error) {
	v, _, err := b.scan(ctx, f)
	return v, err
}

// scanBuf is the size of Scan's sequential reads of a file.
const scanBuf = 1 << 20

func (b *Builtin) scan(ctx context.Context, f File) (Verdict, archiveStats, error) {
	if b.maxSize > 0 && f.Size > b.maxSize {
		return b.tooLarge(), archiveStats{}, nil
	}
	s := b.NewStream()
	buf := make([]byte, min(scanBuf, max(f.Size, 1)))
	for off := int64(0); off < f.Size && s.finding == nil; {
		if err := ctx.Err(); err != nil {
			return Verdict{}, archiveStats{}, fmt.Errorf("scanner: scan %q: %w", f.Name, err)
		}
		n, err := f.R.ReadAt(buf[:min(int64(len(buf)), f.Size-off)], off)
		s.Write(buf[:n])
		off += int64(n)
		switch {
		case err == io.EOF && off < f.Size:
			return Verdict{}, archiveStats{}, fmt.Errorf("scanner: read %q: %d bytes of %d: %w", f.Name, off, f.Size, io.ErrUnexpectedEOF)
		case err != nil && err != io.EOF:
			return Verdict{}, archiveStats{}, fmt.Errorf("scanner: read %q at %d: %w", f.Name, off, err)
		case n == 0 && err == nil:
			return Verdict{}, archiveStats{}, fmt.Errorf("scanner: read %q at %d: %w", f.Name, off, io.ErrNoProgress)
		}
	}
	v := s.Verdict()
	if !v.Clean || !s.Archive() {
		return v, archiveStats{}, nil
	}
	return b.scanArchive(ctx, f)
}

func (b *Builtin) tooLarge() Verdict {
	return Verdict{
		Reason: fmt.Sprintf("larger than the %d-byte limit", b.maxSize),
		Action: Reject,
		Engine: builtinEngine,
	}
}

// Stream is one sequential pass over a file, fed by Write (typically from
// an io.MultiWriter that also hashes the bytes or sends them to clamd).
// Every byte goes through the EICAR search (a match may straddle writes)
// and the size limit; the first 4 KiB (mimetype's default read limit) decide
// the type, refused if denied. A Stream is not safe for concurrent use.
type Stream struct {
	b       *Builtin
	size    int64
	eicar   eicarSearch
	head    []byte
	mt      *mimetype.MIME // nil until sniffed
	finding *Verdict
}

// NewStream starts one sequential pass over a file.
func (b *Builtin) NewStream() *Stream {
	return &Stream{b: b, head: make([]byte, 0, sniffLen)}
}

// Write judges p, the next bytes of the file. It always returns len(p), nil:
// findings are kept for Verdict, so that a writer beside it in an
// io.MultiWriter still sees every byte. After a finding that refuses the
// file (Reject) the EICAR search goes on; after one that keeps it
// (Quarantine) the bytes are only passed over.
func (s *Stream) Write(p []byte) (int, error) {
	if s.mt == nil {
		s.head = append(s.head, p[:min(len(p), sniffLen-len(s.head))]...)
		if len(s.head) == sniffLen {
			s.sniff()
		}
	}
	if s.finding != nil && s.finding.Action == Quarantine {
		return len(p), nil
	}
	s.size += int64(len(p))
	switch {
	case s.eicar.write(p):
		// Malware outranks a refusal: the file is kept as evidence.
		s.finding = &Verdict{Reason: EICARName, Action: Quarantine, Engine: builtinEngine}
	case s.b.maxSize > 0 && s.size > s.b.maxSize:
		s.find(s.b.tooLarge())
	}
	return len(p), nil
}

func (s *Stream) find(v Verdict) {
	if s.finding == nil {
		v.Engine = builtinEngine
		s.finding = &v
	}
}

func (s *Stream) sniff() {
	s.mt = mimetype.Detect(s.head)
	denied := s.b.denied(s.mt, s.head)
	s.head = nil
	if denied {
		s.find(Verdict{Reason: "refused content type " + typeName(s.mt), Action: Reject})
	}
}

// Verdict returns, after the last byte was written, the first finding or a
// clean verdict; as in Checker, a finding that keeps the file (Quarantine:
// EICAR) outranks an earlier one that deletes it (Reject: a refused type,
// the size limit). Engine is "builtin".
func (s *Stream) Verdict() Verdict {
	if s.mt == nil {
		s.sniff()
	}
	if s.finding != nil {
		return *s.finding
	}
	return Verdict{Clean: true, Engine: builtinEngine}
}

// Type returns the detected MIME type (with parameters such as charset),
// "application/octet-stream" when unknown. Before the last byte, it is the
// type of the bytes written so far, final once 4 KiB were written.
func (s *Stream) Type() string {
	if s.mt == nil {
		return mimetype.Detect(s.head).String()
	}
	return s.mt.String()
}

// Archive reports whether ScanArchive has something to inspect: the file is
// a zip (jar, docx, xlsx, odt and other zip-based formats included), gzip,
// bzip2 or tar. Valid after the last byte.
func (s *Stream) Archive() bool {
	if s.mt == nil {
		return archiveKindOf(mimetype.Detect(s.head)) != notArchive
	}
	return archiveKindOf(s.mt) != notArchive
}
