package scanner

import (
	"archive/tar"
	"archive/zip"
	"bufio"
	"bytes"
	"compress/bzip2"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"unicode/utf8"

	"github.com/gabriel-vasile/mimetype"
)

// Sizes of the archive pass.
const (
	// nestedInMemory is the largest nested zip held in memory while it is
	// inspected; a larger one is spilled to TempDir. At most MaxDepth of
	// them are held at once.
	nestedInMemory = 16 << 20
	// readAheadLen is the window fetched from the file at a time, so that
	// archive/zip's small reads cost one read of the file (a round trip to
	// object storage) per MiB, not per 4 KiB.
	readAheadLen = 1 << 20
	// copyBuf is the buffer entries are read through.
	copyBuf = 64 << 10
	// maxReasonPath bounds the entry path quoted in a Reason.
	maxReasonPath = 200
	// zipBzip2 is the zip compression method number of bzip2.
	zipBzip2 = 12
)

// ScanArchive is the archive pass over f, with random access: it opens a
// zip (and zip-based formats: jar, docx, xlsx, odt...), gzip, bzip2 or tar
// file and streams every entry's expanded bytes through the EICAR search,
// the refused-types sniff, the ArchiveLimits counters and, when the entry
// is itself an archive, the same pass one level down. Anything else is
// clean: there is nothing to inspect. The file's own bytes are judged by
// the stream pass (NewStream), not here.
//
// Reads of f.R are sequential where the format allows: a zip's central
// directory at its end, then its entries in central-directory order, in
// windows of 1 MiB. A zip is never read whole into memory; a gzip, bzip2 or
// tar is read as a stream.
//
// Findings end the pass. Their Reasons (Action Quarantine unless said):
//
//	EICAR-Test-File in "<path>"                            (no path: a .gz's content)
//	refused content type <type> in "<path>"                (Reject; no path: a .gz's content)
//	encrypted archive entry "<path>"                       (Quarantine; Reject if Encrypted is "refuse")
//	archives nested more than <N> levels deep in "<path>"
//	archive "<path>" expands more than <N> times its size  (no path: the file itself)
//	archive expands beyond the <size> limit
//	archive has more than <N> entries
//	archive could not be inspected: <what> in "<path>"     (no path: the file itself)
//
// An archive that cannot be read (truncated, corrupt, an unsupported
// compression method, offsets outside the file) fails closed: it is held
// for review, not passed, and not returned as an error either, which would
// only have it retried forever. A zip that cannot be opened at all is
// common enough (a truncated export) that an administrator should see it.
//
// Paths name the entry through every level ("inner.zip/run1.tar.gz/log.txt"),
// quoted, cut to their last 200 bytes; a Reason never holds file content.
// An error means f was not judged: a read of f.R failed, the spill to
// TempDir failed, or ctx ended.
func (b *Builtin) ScanArchive(ctx context.Context, f File) (Verdict, error) {
	v, _, err := b.scanArchive(ctx, f)
	return v, err
}

// archiveStats reports the work of one archive pass, for tests.
type archiveStats struct {
	expanded int64 // bytes expanded, all levels
	entries  int   // entries seen, all levels
	read     int64 // bytes read from the file itself
}

func (b *Builtin) scanArchive(ctx context.Context, f File) (Verdict, archiveStats, error) {
	in := &inspection{b: b, ctx: ctx, buf: make([]byte, copyBuf)}
	src := &readAhead{r: &sourceAt{r: f.R, size: f.Size, in: in, count: &in.read}, buf: make([]byte, readAheadLen)}
	head := make([]byte, min(sniffLen, max(f.Size, 0)))
	n, err := src.ReadAt(head, 0)
	if err != nil && (err != io.EOF || n < len(head)) {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return in.verdict(f.Name, fmt.Errorf("read the first %d bytes: %w", len(head), err))
	}
	switch kind := archiveKindOf(mimetype.Detect(head)); kind {
	case notArchive:
		return in.verdict(f.Name, nil)
	case kindZip:
		return in.verdict(f.Name, in.zip(src, f.Size, "", 1))
	case kindTar:
		return in.verdict(f.Name, in.tar(io.NewSectionReader(src, 0, f.Size), "", 1))
	default:
		return in.verdict(f.Name, in.decompress(kind, io.NewSectionReader(src, 0, f.Size), "", 1))
	}
}

// inspection is the state of one archive pass. It lives for one call of
// scanArchive and carries that call's ctx into the io.Readers it builds,
// which cannot take one as an argument.
type inspection struct {
	b        *Builtin
	ctx      context.Context
	expanded int64
	entries  int
	read     int64
	finding  *Verdict // the first finding; the pass stops at it
	ioErr    error    // the first failed read of the file, or of the spill
	buf      []byte   // the innermost read loop's buffer
}

// errFinding unwinds the pass once a finding is recorded.
var errFinding = errors.New("scanner: finding")

// entryError is an archive that could not be read, and where.
type entryError struct {
	path string
	err  error
}

func (e *entryError) Error() string { return fmt.Sprintf("%s: %v", e.path, e.err) }
func (e *entryError) Unwrap() error { return e.err }

// find records the first finding and returns errFinding.
func (in *inspection) find(action Action, reason string) error {
	if in.finding == nil {
		in.finding = &Verdict{Reason: reason, Action: action, Engine: builtinEngine}
	}
	return errFinding
}

// stopped returns why the pass must stop now, if it must.
func (in *inspection) stopped() error {
	switch {
	case in.finding != nil:
		return errFinding
	case in.ioErr != nil:
		return in.ioErr
	}
	return in.ctx.Err()
}

// ioFailed records an error of the file's storage or of the spill file: the
// file cannot be judged, which is not a finding.
func (in *inspection) ioFailed(err error) error {
	if in.ioErr == nil {
		in.ioErr = err
	}
	return in.ioErr
}

// broken marks err as the archive at path being unreadable, unless it is
// already marked (deeper, so more precisely) or is a finding.
func (in *inspection) broken(path string, err error) error {
	var e *entryError
	if errors.Is(err, errFinding) || errors.As(err, &e) {
		return err
	}
	return &entryError{path: path, err: err}
}

// verdict turns the outcome of the pass into its result.
func (in *inspection) verdict(name string, err error) (Verdict, archiveStats, error) {
	st := archiveStats{expanded: in.expanded, entries: in.entries, read: in.read}
	switch {
	case in.finding != nil:
		return *in.finding, st, nil
	case in.ioErr != nil:
		return Verdict{}, st, fmt.Errorf("scanner: inspect %q: %w", name, in.ioErr)
	case err == nil:
		return Verdict{Clean: true, Engine: builtinEngine}, st, nil
	case in.ctx.Err() != nil:
		return Verdict{}, st, fmt.Errorf("scanner: inspect %q: %w", name, in.ctx.Err())
	}
	var e *entryError
	path := ""
	if errors.As(err, &e) {
		path = e.path
	}
	return Verdict{
		Reason: "archive could not be inspected: " + brokenReason(err) + at(path),
		Action: Quarantine,
		Engine: builtinEngine,
	}, st, nil
}

// entry counts one more entry against MaxEntries.
func (in *inspection) entry() error {
	in.entries++
	if in.entries > in.b.lim.MaxEntries {
		return in.tooManyEntries()
	}
	return nil
}

func (in *inspection) tooManyEntries() error {
	return in.find(Quarantine, fmt.Sprintf("archive has more than %d entries", in.b.lim.MaxEntries))
}

func (in *inspection) tooMuchExpanded() error {
	return in.find(Quarantine, "archive expands beyond the "+sizeText(in.b.lim.MaxExpanded)+" limit")
}

// zip inspects the zip archive ra of size bytes at path, at depth.
func (in *inspection) zip(ra io.ReaderAt, size int64, path string, depth int) error {
	// archive/zip holds every directory record in memory: count them
	// first, in constant memory, so a hostile directory is refused cheaply.
	if left := in.b.lim.MaxEntries - in.entries; zipDirectoryEntries(ra, size, left) > left {
		return in.tooManyEntries()
	}
	if err := in.stopped(); err != nil {
		return err
	}
	zr, err := zip.NewReader(ra, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) { // names are not extracted here
		return in.broken(path, err)
	}
	zr.RegisterDecompressor(zipBzip2, func(r io.Reader) io.ReadCloser {
		return io.NopCloser(bzip2.NewReader(r))
	})
	lvl := &level{path: path, input: &size, total: true}
	for _, f := range zr.File {
		if err := in.stopped(); err != nil {
			return err
		}
		if err := in.entry(); err != nil {
			return err
		}
		name := joinPath(path, f.Name)
		if f.Flags&0x1 != 0 {
			action := Quarantine
			if in.b.lim.Encrypted == EncryptedRefuse {
				action = Reject
			}
			return in.find(action, "encrypted archive entry "+quote(name))
		}
		if f.UncompressedSize64 > uint64(in.b.lim.MaxExpanded-in.expanded) {
			return in.tooMuchExpanded() // declared; no need to read it
		}
		rc, err := f.Open()
		if err != nil {
			return in.broken(name, err)
		}
		err = in.member(&expanding{r: rc, in: in, lvl: lvl}, name, depth, false)
		rc.Close()
		if err != nil {
			return in.broken(name, err)
		}
	}
	return nil
}

// tar inspects the tar stream r at path, at depth. Members other than
// files (directories, links, devices) have no content to inspect.
func (in *inspection) tar(r io.Reader, path string, depth int) error {
	var read int64
	tr := tar.NewReader(&counting{r: r, n: &read})
	lvl := &level{path: path, input: &read} // a sparse member can expand
	for {
		if err := in.stopped(); err != nil {
			return err
		}
		hdr, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return in.broken(path, err)
		}
		if err := in.entry(); err != nil {
			return err
		}
		switch hdr.Typeflag {
		case tar.TypeDir, tar.TypeSymlink, tar.TypeLink, tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
			continue
		}
		name := joinPath(path, hdr.Name)
		if err := in.member(&expanding{r: tr, in: in, lvl: lvl}, name, depth, false); err != nil {
			return in.broken(name, err)
		}
	}
}

// decompress inspects the gzip or bzip2 stream r at path, at depth: its
// content is judged like an entry, and a tar directly inside it is the same
// level (a .tar.gz is one archive).
func (in *inspection) decompress(kind archiveKind, r io.Reader, path string, depth int) error {
	var read int64
	cr := &counting{r: r, n: &read}
	var dr io.Reader
	switch kind {
	case kindGzip:
		zr, err := gzip.NewReader(cr)
		if err != nil {
			return in.broken(path, err)
		}
		defer zr.Close()
		dr = zr
	case kindBzip2:
		dr = bzip2.NewReader(cr)
	default:
		return fmt.Errorf("scanner: decompress kind %d", kind)
	}
	lvl := &level{path: path, input: &read, total: true}
	if err := in.member(&expanding{r: dr, in: in, lvl: lvl}, path, depth, true); err != nil {
		return in.broken(path, err)
	}
	return nil
}

// member judges one entry's expanded bytes, r, read to its end: the type of
// its first 4 KiB, the EICAR string anywhere, and, if it is an archive, its
// entries one level down (the same level for a tar directly in a
// compressed stream, inStream).
func (in *inspection) member(r io.Reader, path string, depth int, inStream bool) error {
	br := bufio.NewReaderSize(r, sniffLen)
	head, err := br.Peek(sniffLen)
	if err != nil && err != io.EOF {
		return err
	}
	mt := mimetype.Detect(head)
	if in.b.denied(mt, head) {
		return in.find(Reject, "refused content type "+typeName(mt)+at(path))
	}
	ew := &eicarWriter{in: in, path: path}
	src := io.TeeReader(br, ew)
	if kind := archiveKindOf(mt); kind != notArchive {
		// A match in the archive's own bytes (a stored member's content,
		// seen through) waits for the inspection below, which names the
		// member.
		ew.wait = true
		nested := depth + 1
		if kind == kindTar && inStream {
			nested = depth
		}
		if nested > in.b.lim.MaxDepth {
			return in.find(Quarantine, fmt.Sprintf("archives nested more than %d levels deep%s", in.b.lim.MaxDepth, at(path)))
		}
		switch kind {
		case kindZip:
			err = in.nestedZip(src, path, nested)
		case kindTar:
			err = in.tar(src, path, nested)
		default:
			err = in.decompress(kind, src, path, nested)
		}
		if err != nil {
			if ew.s.found { // a match is a finding, whatever stopped the inspection
				return in.find(Quarantine, EICARName+at(path))
			}
			return err
		}
	}
	// The rest (all of it, for a plain file) still goes through the EICAR
	// search and the counters.
	for {
		_, err := src.Read(in.buf)
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if ew.s.found {
		return in.find(Quarantine, EICARName+at(path))
	}
	return nil
}

// nestedZip reads the zip src (every byte through the EICAR search and the
// counters), in memory up to 16 MiB, else in an unlinked temporary file,
// and inspects it at path, at depth.
func (in *inspection) nestedZip(src io.Reader, path string, depth int) error {
	var mem []byte
	var spill *os.File
	var size int64
	for {
		n, err := src.Read(in.buf)
		if n > 0 {
			size += int64(n)
			if spill == nil && len(mem)+n > nestedInMemory {
				f, serr := in.spill(mem)
				if serr != nil {
					return serr
				}
				defer closeSpill(f)
				spill, mem = f, nil
			}
			if spill == nil {
				mem = append(mem, in.buf[:n]...)
			} else if _, werr := spill.Write(in.buf[:n]); werr != nil {
				return in.ioFailed(fmt.Errorf("spill nested zip: %w", werr))
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if spill == nil {
		return in.zip(bytes.NewReader(mem), size, path, depth)
	}
	return in.zip(&sourceAt{r: spill, size: size, in: in}, size, path, depth)
}

// spill creates the temporary file for a nested zip, unlinked at once, and
// writes head to it.
func (in *inspection) spill(head []byte) (*os.File, error) {
	f, err := os.CreateTemp(in.b.tempDir, "mftd-scan-*.zip")
	if err != nil {
		return nil, in.ioFailed(fmt.Errorf("spill nested zip: %w", err))
	}
	_ = os.Remove(f.Name()) // the open file lives on, unnamed (on Unix)
	if _, err := f.Write(head); err != nil {
		closeSpill(f)
		return nil, in.ioFailed(fmt.Errorf("spill nested zip: %w", err))
	}
	return f, nil
}

func closeSpill(f *os.File) {
	_ = f.Close()
	_ = os.Remove(f.Name()) // where unlinking an open file failed
}

// level counts the bytes expanded from one archive, for its ratio.
type level struct {
	path  string // the archive's path; "" for the file itself
	out   int64  // bytes its entries or its stream produced
	input *int64 // its compressed bytes so far (its size, for a zip)
	total bool   // whether out counts toward MaxExpanded (not a tar's)
}

// expand counts n more bytes out of l, and stops the pass at a limit.
func (in *inspection) expand(l *level, n int) error {
	l.out += int64(n)
	if l.total {
		in.expanded += int64(n)
		if in.expanded > in.b.lim.MaxExpanded {
			return in.tooMuchExpanded()
		}
	}
	if l.out >= ratioFloor && float64(l.out) > in.b.lim.MaxRatio*float64(max(*l.input, 1)) {
		name := ""
		if l.path != "" {
			name = " " + quote(l.path)
		}
		return in.find(Quarantine, fmt.Sprintf("archive%s expands more than %g times its size", name, in.b.lim.MaxRatio))
	}
	return nil
}

// expanding reads an entry's expanded bytes, counting them against the
// limits; it stops the moment one is crossed, or the pass must stop.
type expanding struct {
	r   io.Reader
	in  *inspection
	lvl *level
}

func (e *expanding) Read(p []byte) (int, error) {
	if err := e.in.stopped(); err != nil {
		return 0, err
	}
	n, err := e.r.Read(p)
	if n > 0 {
		if lerr := e.in.expand(e.lvl, n); lerr != nil {
			return 0, lerr
		}
	}
	return n, err
}

// counting counts the bytes read through it.
type counting struct {
	r io.Reader
	n *int64
}

func (c *counting) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	*c.n += int64(n)
	return n, err
}

// eicarWriter searches an entry's bytes for the EICAR string, and stops
// the pass at a match unless told to wait.
type eicarWriter struct {
	in   *inspection
	path string
	wait bool // report a match at the end of the entry, not at once
	s    eicarSearch
}

func (w *eicarWriter) Write(p []byte) (int, error) {
	if w.s.write(p) && !w.wait {
		return 0, w.in.find(Quarantine, EICARName+at(w.path))
	}
	return len(p), nil
}

// errOutside is a read before the start of the file, which only a
// malformed archive asks for.
var errOutside = errors.New("read before the start of the file")

// sourceAt reads the file (or a spilled nested zip) of size bytes: it stops
// once the pass must stop, answers reads outside the file itself (a
// malformed archive's offsets are not the storage's problem), and records a
// failed read as the file not being judged.
type sourceAt struct {
	r     io.ReaderAt
	size  int64
	in    *inspection
	count *int64 // bytes read, or nil
}

func (s *sourceAt) ReadAt(p []byte, off int64) (int, error) {
	if err := s.in.stopped(); err != nil {
		return 0, err
	}
	switch {
	case off < 0:
		return 0, errOutside
	case off >= s.size:
		return 0, io.EOF
	}
	short := int64(len(p)) > s.size-off
	if short {
		p = p[:s.size-off]
	}
	n, err := s.r.ReadAt(p, off)
	if s.count != nil {
		*s.count += int64(n)
	}
	if err != nil && err != io.EOF {
		return n, s.in.ioFailed(fmt.Errorf("read at %d: %w", off, err))
	}
	if err == nil && short {
		err = io.EOF
	}
	return n, err
}

// readAhead serves small, mostly sequential ReadAt calls from a window of
// the underlying ReaderAt, fetched at once. Not safe for concurrent use.
type readAhead struct {
	r   io.ReaderAt
	buf []byte
	off int64 // file offset of buf[0]
	n   int   // valid bytes in buf
	err error // why the window is short: io.EOF at the end of the file
}

func (ra *readAhead) ReadAt(p []byte, off int64) (int, error) {
	if len(p) >= len(ra.buf) || off < 0 {
		return ra.r.ReadAt(p, off)
	}
	if !ra.covers(off, len(p)) {
		ra.off = off
		ra.n, ra.err = ra.r.ReadAt(ra.buf, off)
		if ra.n == len(ra.buf) {
			ra.err = nil
		}
	}
	n := copy(p, ra.buf[off-ra.off:ra.n])
	if n < len(p) {
		if ra.err == nil {
			return n, io.ErrUnexpectedEOF // a ReaderAt that broke its contract
		}
		return n, ra.err
	}
	return n, nil
}

// covers reports whether the window answers a read of n bytes at off.
func (ra *readAhead) covers(off int64, n int) bool {
	if off < ra.off || off > ra.off+int64(ra.n) {
		return false
	}
	// Past the window's end, the answer is known only if that is the
	// file's end.
	return off+int64(n) <= ra.off+int64(ra.n) || ra.err == io.EOF
}

// zipDirectoryEntries counts the records of the central directory of the
// zip r, up to limit+1, reading them in constant memory. It returns 0 when
// it cannot find them: zip.NewReader then judges the archive. It counts
// records until one does not start with the record signature, as
// archive/zip does, since the count in the end record can be short by a
// multiple of 65536.
func zipDirectoryEntries(r io.ReaderAt, size int64, limit int) int {
	const (
		endLen    = 22
		end64Len  = 56
		locLen    = 20
		recordLen = 46
	)
	le := binary.LittleEndian
	tailLen := min(size, endLen+0xffff)
	if tailLen < endLen {
		return 0
	}
	tail := make([]byte, tailLen)
	if _, err := r.ReadAt(tail, size-tailLen); err != nil && err != io.EOF {
		return 0
	}
	i := bytes.LastIndex(tail[:tailLen-endLen+4], []byte("PK\x05\x06"))
	if i < 0 {
		return 0
	}
	end := size - tailLen + int64(i)
	records, dirSize, dirOff := uint64(le.Uint16(tail[i+10:])), uint64(le.Uint32(tail[i+12:])), uint64(le.Uint32(tail[i+16:]))
	if records == 0xffff || dirSize == 0xffffffff || dirOff == 0xffffffff {
		var loc [locLen]byte
		var end64 [end64Len]byte
		if end >= locLen {
			if _, err := r.ReadAt(loc[:], end-locLen); err == nil && string(loc[:4]) == "PK\x06\x07" {
				p := int64(le.Uint64(loc[8:]))
				if p >= 0 && p < end {
					if _, err := r.ReadAt(end64[:], p); err == nil && string(end64[:4]) == "PK\x06\x06" {
						end, dirSize, dirOff = p, le.Uint64(end64[40:]), le.Uint64(end64[48:])
					}
				}
			}
		}
	}
	isRecord := func(off int64) bool {
		var sig [4]byte
		_, err := r.ReadAt(sig[:], off)
		return err == nil && string(sig[:]) == "PK\x01\x02"
	}
	// Where the directory is (its declared offset may not count data
	// prepended to the archive), as archive/zip finds it.
	start := int64(-1)
	switch {
	case dirSize <= uint64(end) && isRecord(end-int64(dirSize)):
		start = end - int64(dirSize)
	case dirOff < uint64(end) && isRecord(int64(dirOff)):
		start = int64(dirOff)
	default:
		return 0
	}
	br := bufio.NewReaderSize(io.NewSectionReader(r, start, size-start), copyBuf)
	var rec [recordLen]byte
	n := 0
	for n <= limit {
		if _, err := io.ReadFull(br, rec[:]); err != nil || string(rec[:4]) != "PK\x01\x02" {
			break
		}
		skip := int(le.Uint16(rec[28:])) + int(le.Uint16(rec[30:])) + int(le.Uint16(rec[32:]))
		if _, err := br.Discard(skip); err != nil {
			break
		}
		n++
	}
	return n
}

// brokenReason says, shortly, why an archive could not be read; never with
// the archive's content (which third-party error texts may quote).
func brokenReason(err error) string {
	var flateErr flate.CorruptInputError
	var bzipErr bzip2.StructuralError
	switch {
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return "truncated"
	case errors.Is(err, zip.ErrAlgorithm):
		return "unsupported compression method"
	case errors.Is(err, zip.ErrChecksum), errors.Is(err, gzip.ErrChecksum):
		return "checksum mismatch"
	case errors.Is(err, zip.ErrFormat):
		return "not a valid zip file"
	case errors.Is(err, gzip.ErrHeader):
		return "not a valid gzip stream"
	case errors.Is(err, tar.ErrHeader):
		return "not a valid tar header"
	case errors.As(err, &flateErr):
		return "corrupt compressed data"
	case errors.As(err, &bzipErr):
		return "corrupt bzip2 data"
	}
	return "unreadable data"
}

// joinPath names an entry inside the archive at path.
func joinPath(path, name string) string {
	if path == "" {
		return name
	}
	return path + "/" + name
}

// at is ` in "path"`, or nothing for the file itself.
func at(path string) string {
	if path == "" {
		return ""
	}
	return " in " + quote(path)
}

// quote quotes an entry path for a Reason: its last 200 bytes, escaped.
func quote(path string) string {
	if len(path) <= maxReasonPath {
		return strconv.Quote(path)
	}
	i := len(path) - maxReasonPath
	for i < len(path) && !utf8.RuneStart(path[i]) {
		i++
	}
	return strconv.Quote("…" + path[i:])
}

// sizeText writes n bytes in the largest binary unit that divides it.
func sizeText(n int64) string {
	for _, u := range []struct {
		size int64
		name string
	}{{1 << 40, "TiB"}, {1 << 30, "GiB"}, {1 << 20, "MiB"}, {1 << 10, "KiB"}} {
		if n >= u.size && n%u.size == 0 {
			return fmt.Sprintf("%d %s", n/u.size, u.name)
		}
	}
	return fmt.Sprintf("%d bytes", n)
}
