package scanner

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
)

// Kinds of identifier reported in Finding.Kind.
const (
	KindNHSNumber   = "nhs_number"
	KindUKPostcode  = "uk_postcode"
	KindDateOfBirth = "date_of_birth"
)

// DefaultMaxFindings is IdentifierConfig.MaxFindings when it is not positive.
const DefaultMaxFindings = 100

// identifiersEngine is the Verdict.Engine of IdentifierDetector verdicts.
const identifiersEngine = "identifiers"

const (
	// idBufSize is the detector's read buffer: its memory is this plus
	// idHeaderMax, whatever the size of the file or of its lines.
	idBufSize = 64 << 10
	// idLookahead is how many bytes from a token's first byte any matcher
	// may read (the longest token, "dd September yyyy", plus the byte after
	// it, is 18). Every position is matched against exactly this many bytes
	// (fewer only at the end of the stream), so the result does not depend
	// on how the reader splits the stream.
	idLookahead = 32
	// idHeaderMax bounds the first line kept to read it as a CSV header. A
	// longer first line is not taken as a header.
	idHeaderMax = 8 << 10
	// dobWindow is how many bytes after a date-of-birth label a date may
	// start, on the same line, to be taken for a date of birth.
	dobWindow = 32
	// dobHeaderField is the longest CSV header field taken for a column
	// name.
	dobHeaderField = 64
)

// Finding is one identifier found: its kind and where, never its value.
type Finding struct {
	// Kind is KindNHSNumber, KindUKPostcode or KindDateOfBirth.
	Kind string
	// Line is the 1-based line of the identifier's first byte; lines end
	// at '\n'.
	Line int
	// Column is the 1-based byte offset of the identifier's first byte in
	// its line (bytes, not runes: a multi-byte character before it counts
	// for each of its bytes).
	Column int
}

// String names the kind and place, never the value.
func (f Finding) String() string {
	return fmt.Sprintf("%s at line %d column %d", f.Kind, f.Line, f.Column)
}

// IdentifierConfig configures an IdentifierDetector.
type IdentifierConfig struct {
	// MaxFindings stops a scan once this many findings are made (it reads
	// no further). Default (0 or less) DefaultMaxFindings.
	MaxFindings int
}

// IdentifierDetector finds personal identifiers in text, CSV and JSON: NHS
// numbers with a valid check digit, UK postcodes and dates of birth. It reads
// a stream once with a fixed buffer, so memory is bounded whatever the size
// of the file or of its lines. It is safe for concurrent use.
//
// The rules, byte-oriented (ASCII letters and digits; other bytes are
// separators):
//
//   - NHS number: 10 digits, either in one run or written 3-3-4 with the same
//     separator twice (one space or one hyphen: "943 476 5919",
//     "943-476-5919"), whose tenth digit is the modulus-11 check digit of the
//     first nine (weights 10 to 2; 11 - sum mod 11, where 11 is 0 and 10 is
//     never valid). The bytes before and after are not letters or digits.
//   - UK postcode: an outward code (A9, A99, AA9, AA99, A9A or AA9A, with the
//     official letters for each position) and an inward code (9AA, without
//     C, I, K, M, O or V), with one space between or none; or GIR 0AA. Case
//     is ignored. The bytes before and after are not letters or digits.
//   - Date of birth: a calendar date (years 1800 to 2199) written yyyy-mm-dd,
//     yyyy/mm/dd, d/m/yyyy, d-m-yyyy or d.m.yyyy (day and month in either
//     order), or d Month yyyy / d-Mon-yyyy (full or three-letter month names,
//     "Sept", an optional st/nd/rd/th), not preceded by a letter or digit and
//     not followed by a digit, that is either
//     (a) starting within 32 bytes after a date-of-birth label on the same
//     line: "dob", "d.o.b", "date of birth", "birth date", "birthdate", in
//     any case, with an optional ' ', '_', '-' or '.' between the words, as
//     a word or a camelCase part ("date_of_birth", "dateOfBirth",
//     "patientDOB"); this covers text, "key: value" lines and JSON
//     ("dob": "1980-02-29", minified or not); or
//     (b) in a CSV column whose header names a date-of-birth label, when the
//     first line is a header (at least two columns, at most 8 KiB) with such
//     a column (a field of at most 64 bytes). The delimiter is the most
//     frequent of ',', '\t' and ';' outside double quotes in that line.
//     Columns are counted per line: a quoted field holding a newline ends
//     the record early for this purpose.
type IdentifierDetector struct {
	max int
}

var _ StreamScanner = (*IdentifierDetector)(nil)

// NewIdentifierDetector returns a detector; it never returns nil.
func NewIdentifierDetector(cfg IdentifierConfig) *IdentifierDetector {
	m := cfg.MaxFindings
	if m <= 0 {
		m = DefaultMaxFindings
	}
	return &IdentifierDetector{max: m}
}

// Scan reads r (which it does not close) to its end, or until MaxFindings
// findings, and returns the findings in the order of their first byte. An
// error means the stream could not be read to its end: the findings made so
// far come with it, but the last bytes read before the error (fewer than 32)
// are not judged. An error never contains the stream's content.
func (d *IdentifierDetector) Scan(ctx context.Context, r io.Reader) ([]Finding, error) {
	s := &idScan{max: d.max, line: 1, col: 1, labelUntil: -1}
	buf := make([]byte, idBufSize)
	start, end, eof, empty := 0, 0, false, 0
	for {
		for !eof && end-start < idLookahead {
			if err := ctx.Err(); err != nil {
				return s.findings, fmt.Errorf("identifiers: %w", err)
			}
			if start > 0 {
				end = copy(buf, buf[start:end])
				start = 0
			}
			n, err := r.Read(buf[end:])
			end += n
			switch {
			case err == io.EOF:
				eof = true
			case err != nil:
				return s.findings, fmt.Errorf("identifiers: read: %w", err)
			case n == 0:
				if empty++; empty >= 100 {
					return s.findings, fmt.Errorf("identifiers: read: %w", io.ErrNoProgress)
				}
			default:
				empty = 0
			}
		}
		limit := end
		if !eof {
			limit = end - idLookahead + 1
		}
		for ; start < limit; start++ {
			w := buf[start:min(end, start+idLookahead)]
			if s.step(w) {
				return s.findings, nil
			}
		}
		if eof {
			return s.findings, nil
		}
	}
}

// ScanStream implements StreamScanner: any finding makes the verdict not
// clean (Action Quarantine, to be reviewed), with a Reason naming the kind
// and place of the first finding and how many more there are.
func (d *IdentifierDetector) ScanStream(ctx context.Context, r io.Reader) (Verdict, error) {
	fs, err := d.Scan(ctx, r)
	if err != nil {
		return Verdict{}, err
	}
	if len(fs) == 0 {
		return Verdict{Clean: true, Engine: identifiersEngine}, nil
	}
	reason := fs[0].String()
	if len(fs) > 1 {
		reason += fmt.Sprintf(" (and %d more)", len(fs)-1)
	}
	return Verdict{Reason: reason, Action: Quarantine, Engine: identifiersEngine}, nil
}

// idScan is the state of one Scan, advanced one byte at a time by step.
type idScan struct {
	max      int
	findings []Finding

	line, col int   // of the current byte
	off       int64 // offset of the current byte in the stream
	prev      byte  // the byte before the current one; 0 at the start

	// labelUntil is the last offset at which a date starts to count as a
	// date of birth after a label on this line; -1 when there is none.
	labelUntil int64

	header     []byte // the first line, while it is read
	headerOver bool   // the first line was longer than idHeaderMax

	dobCols []bool // CSV columns headed by a DOB label; nil: not CSV
	delim   byte
	field   int  // the current byte's column in a CSV data line
	quoted  bool // inside a double-quoted CSV field
}

// step judges the byte w[0], with w holding the idLookahead bytes from it
// (fewer only at the end of the stream). It reports whether the scan is done.
func (s *idScan) step(w []byte) bool {
	b := w[0]
	if b == '\n' {
		s.endLine()
		return false
	}
	done := s.match(w)
	s.track(b)
	s.prev = b
	s.off++
	s.col++
	return done
}

// match looks for identifiers starting at w[0].
func (s *idScan) match(w []byte) bool {
	b := w[0]
	if isAlnum(s.prev) {
		if isLower(s.prev) && isUpper(b) {
			s.matchLabel(w)
		}
		return false
	}
	if isDigit(b) {
		if nhsAt(w) > 0 && s.add(KindNHSNumber) {
			return true
		}
		if s.dobContext() && dateAt(w) > 0 && s.add(KindDateOfBirth) {
			return true
		}
		return false
	}
	if isLetter(b) {
		s.matchLabel(w)
		if postcodeAt(w) > 0 && s.add(KindUKPostcode) {
			return true
		}
	}
	return false
}

func (s *idScan) matchLabel(w []byte) {
	if n := labelAt(w); n > 0 {
		s.labelUntil = max(s.labelUntil, s.off+int64(n)+dobWindow)
	}
}

// dobContext reports whether a date starting at the current byte is a date
// of birth: just after a label, or in a DOB column of a CSV data line.
func (s *idScan) dobContext() bool {
	if s.off <= s.labelUntil {
		return true
	}
	return s.line > 1 && s.field < len(s.dobCols) && s.dobCols[s.field]
}

// add records a finding at the current byte and reports whether the scan
// has reached its limit.
func (s *idScan) add(kind string) bool {
	s.findings = append(s.findings, Finding{Kind: kind, Line: s.line, Column: s.col})
	return len(s.findings) >= s.max
}

// track keeps the first line (for the CSV header) and the CSV column of a
// data line up to date with byte b.
func (s *idScan) track(b byte) {
	if s.line == 1 {
		if !s.headerOver && len(s.header) < idHeaderMax {
			s.header = append(s.header, b)
		} else {
			s.headerOver, s.header = true, nil
		}
		return
	}
	if s.dobCols == nil {
		return
	}
	switch {
	case b == '"':
		s.quoted = !s.quoted
	case b == s.delim && !s.quoted:
		s.field++
	}
}

func (s *idScan) endLine() {
	if s.line == 1 && !s.headerOver {
		s.delim, s.dobCols = parseDOBHeader(s.header)
	}
	s.header = nil
	s.line++
	s.col = 1
	s.off++
	s.prev = '\n'
	s.labelUntil = -1
	s.field, s.quoted = 0, false
}

// parseDOBHeader reads a first line as a CSV header: its delimiter, and which
// columns are named with a date-of-birth label (nil if none is, or if the
// line has a single column). A field longer than dobHeaderField bytes,
// without its quotes and spaces, is not taken for a header.
func parseDOBHeader(line []byte) (byte, []bool) {
	line = bytes.TrimSuffix(line, []byte("\r"))
	delim := csvDelimiter(line)
	var cols []bool
	hasDOB := false
	quoted, from := false, 0
	for i := 0; i <= len(line); i++ {
		if i < len(line) {
			if line[i] == '"' {
				quoted = !quoted
			}
			if line[i] != delim || quoted {
				continue
			}
		}
		field := bytes.Trim(line[from:i], "\" \t")
		dob := len(field) <= dobHeaderField && containsLabel(field)
		cols = append(cols, dob)
		hasDOB = hasDOB || dob
		from = i + 1
	}
	if !hasDOB || len(cols) < 2 {
		return 0, nil
	}
	return delim, cols
}

// csvDelimiter is the most frequent of ',', '\t' and ';' outside double
// quotes in line (',' when none occurs or on a tie).
func csvDelimiter(line []byte) byte {
	cands := []byte{',', '\t', ';'}
	counts := make([]int, len(cands))
	quoted := false
	for _, c := range line {
		if c == '"' {
			quoted = !quoted
			continue
		}
		if quoted {
			continue
		}
		for i, d := range cands {
			if c == d {
				counts[i]++
			}
		}
	}
	best := 0
	for i := range cands {
		if counts[i] > counts[best] {
			best = i
		}
	}
	return cands[best]
}

// containsLabel reports whether field holds a date-of-birth label as a word
// or camelCase part.
func containsLabel(field []byte) bool {
	for i := range field {
		var prev byte
		if i > 0 {
			prev = field[i-1]
		}
		if isAlnum(prev) && !(isLower(prev) && isUpper(field[i])) {
			continue
		}
		if labelAt(field[i:]) > 0 {
			return true
		}
	}
	return false
}

// dobLabels are the date-of-birth labels, as words; a label may have one
// separator (' ', '_', '-', '.') between its words.
var dobLabels = [][]string{
	{"date", "of", "birth"},
	{"birth", "date"},
	{"dob"},
	{"d.o.b"},
}

// labelAt returns the length of the date-of-birth label at the start of w,
// or 0. The caller checks the byte before; the byte after must end a word or
// start a camelCase part.
func labelAt(w []byte) int {
	for _, words := range dobLabels {
		if n := wordsAt(w, words); n > 0 {
			return n
		}
	}
	return 0
}

func wordsAt(w []byte, words []string) int {
	n := 0
	for i, word := range words {
		if i > 0 && n < len(w) && isLabelSep(w[n]) {
			n++
		}
		if len(w)-n < len(word) || !strings.EqualFold(string(w[n:n+len(word)]), word) {
			return 0
		}
		n += len(word)
	}
	if n < len(w) && isAlnum(w[n]) && !(isLower(w[n-1]) && isUpper(w[n])) {
		return 0
	}
	return n
}

func isLabelSep(c byte) bool { return c == ' ' || c == '_' || c == '-' || c == '.' }

// nhsAt returns the length of an NHS number with a valid check digit at the
// start of w, or 0. The caller checks the byte before.
func nhsAt(w []byte) int {
	var d [10]byte
	n := 0
	if len(w) >= 12 && (w[3] == ' ' || w[3] == '-') && w[7] == w[3] {
		if digitsInto(d[0:3], w[0:3]) && digitsInto(d[3:6], w[4:7]) && digitsInto(d[6:10], w[8:12]) {
			n = 12
		}
	}
	if n == 0 {
		if len(w) < 10 || !digitsInto(d[:], w[:10]) {
			return 0
		}
		n = 10
	}
	if n < len(w) && isAlnum(w[n]) {
		return 0
	}
	if !nhsCheckDigitOK(d) {
		return 0
	}
	return n
}

// digitsInto copies the digit values of src into dst (of the same length)
// and reports whether every byte was a digit.
func digitsInto(dst, src []byte) bool {
	for i, c := range src {
		if !isDigit(c) {
			return false
		}
		dst[i] = c - '0'
	}
	return true
}

// nhsCheckDigitOK applies the NHS number's modulus-11 check to 10 digits.
func nhsCheckDigitOK(d [10]byte) bool {
	sum := 0
	for i := range 9 {
		sum += int(d[i]) * (10 - i)
	}
	check := 11 - sum%11
	if check == 11 {
		check = 0
	}
	return check != 10 && check == int(d[9])
}

// postcodeAt returns the length of a UK postcode at the start of w, or 0.
// The caller checks the byte before.
func postcodeAt(w []byte) int {
	i := 0
	for i < len(w) && i < 8 && isAlnum(w[i]) {
		i++
	}
	// "OUT IN": an outward code of 2 to 4, one space, an inward code of 3.
	if i >= 2 && i <= 4 && i+4 <= len(w) && w[i] == ' ' && postcodeEnd(w, i+4) &&
		postcodeOK(w[:i], w[i+1:i+4]) {
		return i + 4
	}
	// "OUTIN": 5 to 7 letters and digits, the last 3 the inward code.
	if i >= 5 && i <= 7 && postcodeEnd(w, i) && postcodeOK(w[:i-3], w[i-3:i]) {
		return i
	}
	return 0
}

func postcodeOK(out, in []byte) bool {
	if strings.EqualFold(string(out), "GIR") && strings.EqualFold(string(in), "0AA") {
		return true
	}
	return outwardOK(out) && inwardOK(in)
}

// postcodeEnd reports whether a postcode can end before w[n].
func postcodeEnd(w []byte, n int) bool { return n >= len(w) || !isAlnum(w[n]) }

// Letters allowed at each position of a postcode, by the official rules.
const (
	pcFirst  = "ABCDEFGHIJKLMNOPRSTUWYZ" // not Q, V, X
	pcSecond = "ABCDEFGHKLMNOPQRSTUVWXY" // not I, J, Z
	pcThird  = "ABCDEFGHJKPSTUW"         // A9A
	pcFourth = "ABEHMNPRVWXY"            // AA9A
	pcInward = "ABDEFGHJLNPQRSTUWXYZ"    // not C, I, K, M, O, V
)

// outwardOK reports whether out is an outward code: A9, A99, AA9, AA99, A9A
// or AA9A.
func outwardOK(out []byte) bool {
	shape := make([]byte, len(out))
	for i, c := range out {
		switch {
		case isDigit(c):
			shape[i] = '9'
		case isLetter(c):
			shape[i] = 'A'
		default:
			return false
		}
	}
	up := func(i int) string { return string(out[i] &^ 0x20) }
	switch string(shape) {
	case "A9", "A99":
		return strings.Contains(pcFirst, up(0))
	case "AA9", "AA99":
		return strings.Contains(pcFirst, up(0)) && strings.Contains(pcSecond, up(1))
	case "A9A":
		return strings.Contains(pcFirst, up(0)) && strings.Contains(pcThird, up(2))
	case "AA9A":
		return strings.Contains(pcFirst, up(0)) && strings.Contains(pcSecond, up(1)) &&
			strings.Contains(pcFourth, up(3))
	}
	return false
}

// inwardOK reports whether in is an inward code: 9AA.
func inwardOK(in []byte) bool {
	return len(in) == 3 && isDigit(in[0]) && isLetter(in[1]) && isLetter(in[2]) &&
		strings.IndexByte(pcInward, in[1]&^0x20) >= 0 && strings.IndexByte(pcInward, in[2]&^0x20) >= 0
}

// dateAt returns the length of a calendar date at the start of w, or 0. The
// caller checks the byte before; the byte after must not be a digit.
func dateAt(w []byte) int {
	for _, f := range []func([]byte) int{isoDateAt, numericDateAt, namedDateAt} {
		if n := f(w); n > 0 && (n >= len(w) || !isDigit(w[n])) {
			return n
		}
	}
	return 0
}

// isoDateAt matches yyyy-mm-dd and yyyy/mm/dd.
func isoDateAt(w []byte) int {
	if len(w) < 10 || (w[4] != '-' && w[4] != '/') || w[7] != w[4] {
		return 0
	}
	y, ok1 := number(w[0:4])
	m, ok2 := number(w[5:7])
	d, ok3 := number(w[8:10])
	if !ok1 || !ok2 || !ok3 || !validDate(y, m, d) {
		return 0
	}
	return 10
}

// numericDateAt matches d/m/yyyy, d-m-yyyy and d.m.yyyy (one or two digits
// for day and month), valid as day-month or month-day.
func numericDateAt(w []byte) int {
	a, n := leadingNumber(w, 2)
	if n == 0 || n >= len(w) {
		return 0
	}
	sep := w[n]
	if sep != '/' && sep != '-' && sep != '.' {
		return 0
	}
	n++
	b, k := leadingNumber(w[n:], 2)
	if k == 0 || n+k >= len(w) || w[n+k] != sep {
		return 0
	}
	n += k + 1
	y, k := leadingNumber(w[n:], 4)
	if k != 4 || !(validDate(y, b, a) || validDate(y, a, b)) {
		return 0
	}
	return n + 4
}

var monthNames = []string{"january", "february", "march", "april", "may", "june",
	"july", "august", "september", "october", "november", "december"}

// namedDateAt matches "d Month yyyy" and "d-Mon-yyyy", with full or
// three-letter month names or "Sept", and an optional ordinal suffix.
func namedDateAt(w []byte) int {
	d, n := leadingNumber(w, 2)
	if n == 0 {
		return 0
	}
	if n+2 <= len(w) {
		switch strings.ToLower(string(w[n : n+2])) {
		case "st", "nd", "rd", "th":
			n += 2
		}
	}
	if n >= len(w) || (w[n] != ' ' && w[n] != '-') {
		return 0
	}
	sep := w[n]
	n++
	m, k := monthAt(w[n:])
	if k == 0 || n+k >= len(w) || w[n+k] != sep {
		return 0
	}
	n += k + 1
	y, k := leadingNumber(w[n:], 4)
	if k != 4 || !validDate(y, m, d) {
		return 0
	}
	return n + 4
}

// monthAt returns the month (1-12) named at the start of w and the length
// of its name, or 0, 0.
func monthAt(w []byte) (int, int) {
	k := 0
	for k < len(w) && k < 10 && isLetter(w[k]) {
		k++
	}
	if k == 10 {
		return 0, 0
	}
	name := strings.ToLower(string(w[:k]))
	for i, full := range monthNames {
		if name == full || name == full[:3] || (i == 8 && name == "sept") {
			return i + 1, k
		}
	}
	return 0, 0
}

// leadingNumber reads up to maxDigits digits at the start of w: their value
// and how many there were.
func leadingNumber(w []byte, maxDigits int) (int, int) {
	v, n := 0, 0
	for n < len(w) && n < maxDigits && isDigit(w[n]) {
		v = v*10 + int(w[n]-'0')
		n++
	}
	return v, n
}

// number is the value of w if it is all digits.
func number(w []byte) (int, bool) {
	v, n := leadingNumber(w, len(w))
	return v, n == len(w)
}

func validDate(y, m, d int) bool {
	if y < 1800 || y > 2199 || m < 1 || m > 12 || d < 1 {
		return false
	}
	days := [...]int{31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31}[m-1]
	if m == 2 && y%4 == 0 && (y%100 != 0 || y%400 == 0) {
		days = 29
	}
	return d <= days
}

func isDigit(c byte) bool  { return '0' <= c && c <= '9' }
func isLower(c byte) bool  { return 'a' <= c && c <= 'z' }
func isUpper(c byte) bool  { return 'A' <= c && c <= 'Z' }
func isLetter(c byte) bool { return isLower(c) || isUpper(c) }
func isAlnum(c byte) bool  { return isDigit(c) || isLetter(c) }
