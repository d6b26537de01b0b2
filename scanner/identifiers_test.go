package scanner

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"
)

// nhsWithCheck completes a 9-digit prefix with its modulus-11 check digit;
// ok is false for a prefix whose check digit would be 10 (no valid number).
func nhsWithCheck(prefix string) (string, bool) {
	sum := 0
	for i := range 9 {
		sum += int(prefix[i]-'0') * (10 - i)
	}
	check := (11 - sum%11) % 11
	if check == 10 {
		return "", false
	}
	return prefix + string(rune('0'+check)), true
}

func scanIdentifiers(t testing.TB, cfg IdentifierConfig, r io.Reader) []Finding {
	t.Helper()
	got, err := NewIdentifierDetector(cfg).Scan(context.Background(), r)
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	return got
}

func scanString(t testing.TB, s string) []Finding {
	t.Helper()
	return scanIdentifiers(t, IdentifierConfig{}, strings.NewReader(s))
}

func nhs(line, col int) Finding  { return Finding{Kind: KindNHSNumber, Line: line, Column: col} }
func pc(line, col int) Finding   { return Finding{Kind: KindUKPostcode, Line: line, Column: col} }
func dobF(line, col int) Finding { return Finding{Kind: KindDateOfBirth, Line: line, Column: col} }

type identifierCase struct {
	name string
	in   string
	want []Finding
}

func runIdentifierCases(t *testing.T, cases []identifierCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got := scanString(t, tc.in)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("Scan(%q) (-want +got):\n%s", tc.in, diff)
			}
			// Every case holds whatever the reader's split.
			one := scanIdentifiers(t, IdentifierConfig{}, iotest.OneByteReader(strings.NewReader(tc.in)))
			if diff := cmp.Diff(got, one); diff != "" {
				t.Errorf("one byte at a time differs (-whole +split):\n%s", diff)
			}
		})
	}
}

func TestIdentifiersNHSCheckDigit(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	valid, invalid := 0, 0
	for valid < 200 || invalid < 20 {
		prefix := fmt.Sprintf("%09d", rng.IntN(1_000_000_000))
		num, ok := nhsWithCheck(prefix)
		if !ok {
			// No check digit makes this prefix valid.
			invalid++
			for d := '0'; d <= '9'; d++ {
				if got := scanString(t, prefix+string(d)); len(got) != 0 {
					t.Fatalf("%s%c (check digit would be 10): got %v, want none", prefix, d, got)
				}
			}
			continue
		}
		valid++
		spaced := num[:3] + " " + num[3:6] + " " + num[6:]
		for _, in := range []string{num, spaced, strings.ReplaceAll(spaced, " ", "-")} {
			if got := scanString(t, in); !cmp.Equal(got, []Finding{nhs(1, 1)}) {
				t.Fatalf("%q: got %v, want one nhs_number at 1:1", in, got)
			}
		}
		for d := byte('0'); d <= '9'; d++ {
			if d == num[9] {
				continue
			}
			wrong := num[:9] + string(d)
			if got := scanString(t, wrong); len(got) != 0 {
				t.Fatalf("%s (wrong check digit): got %v, want none", wrong, got)
			}
		}
	}
}

func TestIdentifiersNHSFormats(t *testing.T) {
	if _, ok := nhsWithCheck("943476591"); !ok {
		t.Fatal("fixture: 943 476 5919 should be valid")
	}
	runIdentifierCases(t, []identifierCase{
		{"plain", "9434765919", []Finding{nhs(1, 1)}},
		{"spaces", "943 476 5919", []Finding{nhs(1, 1)}},
		{"hyphens", "943-476-5919", []Finding{nhs(1, 1)}},
		{"in text", "NHS no. 943 476 5919.", []Finding{nhs(1, 9)}},
		{"csv", "id,nhs\n1,9434765919\n", []Finding{nhs(2, 3)}},
		{"json", `{"nhs":"943-476-5919"}`, []Finding{nhs(1, 9)}},
		{"wrong check digit", "9434765918", nil},
		{"mixed separators", "943 476-5919", nil},
		{"double space", "943  476 5919", nil},
		{"digit before", "19434765919", nil},
		{"digit after", "94347659190", nil},
		{"spaced digit after", "943 476 59190", nil},
		{"letter before", "x9434765919", nil},
		{"letter after", "9434765919x", nil},
		{"nine digits", "943476591", nil},
		{"in a longer run", "12345943476591912345", nil},
		{"two", "9434765919 9434765919", []Finding{nhs(1, 1), nhs(1, 12)}},
	})
}

func TestIdentifiersPostcodes(t *testing.T) {
	runIdentifierCases(t, []identifierCase{
		{"A9 9AA", "M1 1AE", []Finding{pc(1, 1)}},
		{"A99 9AA", "B33 8TH", []Finding{pc(1, 1)}},
		{"AA9 9AA", "CR2 6XH", []Finding{pc(1, 1)}},
		{"AA99 9AA", "DN55 1PT", []Finding{pc(1, 1)}},
		{"A9A 9AA", "W1A 0AX", []Finding{pc(1, 1)}},
		{"AA9A 9AA", "EC1A 1BB", []Finding{pc(1, 1)}},
		{"no space", "SW1A1AA", []Finding{pc(1, 1)}},
		{"lower case", "sw1a 1aa", []Finding{pc(1, 1)}},
		{"GIR", "GIR 0AA", []Finding{pc(1, 1)}},
		{"GIR no space", "gir0aa", []Finding{pc(1, 1)}},
		{"in text", "lives at SW1A 1AA, London", []Finding{pc(1, 10)}},
		{"quoted csv", "a,\"EC1A 1BB\"\n", []Finding{pc(1, 4)}},
		{"inward C", "SW1A 1CA", nil},
		{"inward K", "M1 1AK", nil},
		{"first Q", "QA1 1AA", nil},
		{"first V", "V1 1AA", nil},
		{"second J", "AJ1 1AA", nil},
		{"A9A third letter", "W1I 1AA", nil},
		{"AA9A fourth letter", "EC1C 1BB", nil},
		{"letter before", "XSW1A 1AA", nil},
		{"letter after", "SW1A 1AAB", nil},
		{"digit after", "SW1A 1AA1", nil},
		{"two spaces", "SW1A  1AA", nil},
		{"too short", "M1 1A", nil},
		{"outward too long", "SW12A 1AA", nil},
		{"word", "ABCDEF", nil},
		{"GIR wrong inward", "GIR 0AB", nil},
	})
}

func TestIdentifiersDatesOfBirth(t *testing.T) {
	runIdentifierCases(t, []identifierCase{
		{"text label", "Date of birth: 29/02/1980", []Finding{dobF(1, 16)}},
		{"text label d/m", "DOB 1/3/1980", []Finding{dobF(1, 5)}},
		{"month-day order", "dob: 02/29/1980", []Finding{dobF(1, 6)}},
		{"d.m.yyyy", "D.O.B. 03.04.1975", []Finding{dobF(1, 8)}},
		{"named month", "born (date of birth) 1st March 1980", []Finding{dobF(1, 22)}},
		{"short month", "birth date: 29-Feb-1980", []Finding{dobF(1, 13)}},
		{"sept", "birthdate 9 Sept 1980", []Finding{dobF(1, 11)}},
		{"iso", "date_of_birth=1980-02-29", []Finding{dobF(1, 15)}},
		{"iso datetime", "dob: 1980-02-29T00:00:00Z", []Finding{dobF(1, 6)}},
		{"camelCase", "patientDOB=1980-02-29", []Finding{dobF(1, 12)}},
		{"json", `{"name": "A", "dob": "1980-02-29"}`, []Finding{dobF(1, 23)}},
		{"json camel", `{"dateOfBirth":"1980/02/29"}`, []Finding{dobF(1, 17)}},
		{"json minified, two records",
			`[{"dob":"1980-01-01","x":1},{"dob":"1990-12-31"}]`,
			[]Finding{dobF(1, 10), dobF(1, 37)}},
		{"two dates after a label", "dob 1980-01-01 or 1980-01-02", []Finding{dobF(1, 5), dobF(1, 19)}},
		{"no label", "admitted 1980-02-29", nil},
		{"label on the line before", "x\ndob:\n1980-02-29", nil},
		{"too far after the label", "dob" + strings.Repeat(" ", 33) + "1980-02-29", nil},
		{"just within the window", "dob" + strings.Repeat(" ", 32) + "1980-02-29", []Finding{dobF(1, 36)}},
		{"date before the label", "1980-02-29 dob", nil},
		{"not a leap year", "dob 1981-02-29", nil},
		{"1900 not leap", "dob 29/02/1900", nil},
		{"2000 leap", "dob 29/02/2000", []Finding{dobF(1, 5)}},
		{"month 13 both ways", "dob 13/13/1980", nil},
		{"day 32", "dob 32 March 1980", nil},
		{"year out of range", "dob 1700-01-01", nil},
		{"mixed separators", "dob 01/02-1980", nil},
		{"digit after year", "dob 01/02/19801", nil},
		{"digit before", "dob 101/02/1980", nil},
		{"label in a word", "adobe 1980-01-01", nil},
		{"label as a prefix", "DOBSON 1980-01-01", nil},
		{"not a month", "dob 1 Marchy 1980", nil},
	})
}

func TestIdentifiersCSV(t *testing.T) {
	csv := "id,name,dob,admitted,postcode\r\n" +
		"1,Ann,1980-02-29,2020-01-01,SW1A 1AA\r\n" +
		"2,\"Smith, J\",29/02/1980,2020-01-02,\r\n" +
		"3,Bob,,1999-09-09,\r\n" +
		"4,\"a \"\"quoted\"\", name\",1 March 1980,x\r\n"
	tsv := "id\tDate of Birth\tnotes\n" +
		"1\t01/02/1970\tseen 2020-01-01, well; ok\n" +
		"2\t\"02/03/1971\"\t\n"
	runIdentifierCases(t, []identifierCase{
		{"csv", csv, []Finding{
			dobF(2, 7), pc(2, 29),
			dobF(3, 14),
			dobF(5, 24),
		}},
		{"tsv", tsv, []Finding{dobF(2, 3), dobF(3, 4)}},
		{"semicolons", "nr;geboortedatum;dob\n1;1980-01-01;1980-01-02\n", []Finding{dobF(2, 14)}},
		{"header label as part", "id,patient_dob\n1,1980-01-01\n", []Finding{dobF(2, 3)}},
		{"no dob header", "id,admitted\n1,1980-01-01\n", nil},
		{"header not first line", "id,x\nid,dob\n1,1980-01-01\n", nil},
		{"header line only", "id,dob\n", nil},
		{"extra columns", "dob,\n1980-01-01,1980-01-02\n", []Finding{dobF(2, 1)}},
		{"one column is not a header", "Date of birth records\n1980-01-01\n", nil},
		{"long field is not a header", "x," + strings.Repeat("a", 61) + " dob\n1,1980-01-01\n", nil},
		{"64-byte field is a header", "x," + strings.Repeat("a", 60) + " dob\n1,1980-01-01\n", []Finding{dobF(2, 3)}},
	})
}

func TestIdentifiersLineColumn(t *testing.T) {
	// Columns count bytes: "é" is two.
	in := "first line\n" +
		"\n" +
		"é 9434765919\n" +
		"\tpostcode: M1 1AE\n" +
		"no newline at the end: 943-476-5919"
	want := []Finding{nhs(3, 4), pc(4, 12), nhs(5, 24)}
	if diff := cmp.Diff(want, scanString(t, in)); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

// splitReader returns its data in reads of random sizes from 1 to max.
type splitReader struct {
	data []byte
	rng  *rand.Rand
	max  int
}

func (r *splitReader) Read(p []byte) (int, error) {
	if len(r.data) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), len(r.data), 1+r.rng.IntN(r.max))
	copy(p, r.data[:n])
	r.data = r.data[n:]
	return n, nil
}

// identifierCorpus is a document with identifiers of every kind, some across
// any 64 KiB buffer boundary, on a line longer than the buffer.
func identifierCorpus(t testing.TB) ([]byte, []Finding) {
	t.Helper()
	var b bytes.Buffer
	var want []Finding
	b.WriteString("id,dob,postcode,nhs\n")
	for i := range 50 {
		fmt.Fprintf(&b, "%d,%02d/03/1980,", i, i%28+1)
		want = append(want, dobF(i+2, b.Len()-bytes.LastIndexByte(b.Bytes(), '\n')-11))
		want = append(want, pc(i+2, b.Len()-bytes.LastIndexByte(b.Bytes(), '\n')))
		b.WriteString("EC1A 1BB,")
		want = append(want, nhs(i+2, b.Len()-bytes.LastIndexByte(b.Bytes(), '\n')))
		b.WriteString("943 476 5919\n")
	}
	// One line of about 200 KiB (minified JSON), with identifiers at
	// offsets that straddle the 64 KiB buffer boundaries.
	line := 52
	lineStart := b.Len()
	b.WriteString("[")
	for b.Len()-lineStart < 200<<10 {
		col := b.Len() - lineStart + 1
		b.WriteString(`{"dob":"1980-02-29","nhs":"9434765919","pc":"sw1a1aa","pad":"`)
		want = append(want, dobF(line, col+8), nhs(line, col+27), pc(line, col+45))
		b.WriteString(strings.Repeat("x", 997) + `"},`)
	}
	b.WriteString("]\nlast 9434765919")
	want = append(want, nhs(line+1, 6))
	return b.Bytes(), want
}

func TestIdentifiersSplitReads(t *testing.T) {
	data, want := identifierCorpus(t)
	cfg := IdentifierConfig{MaxFindings: 1 << 20}
	whole := scanIdentifiers(t, cfg, bytes.NewReader(data))
	if diff := cmp.Diff(want, whole); diff != "" {
		t.Fatalf("whole buffer (-want +got):\n%s", diff)
	}
	readers := map[string]io.Reader{
		"one byte":       iotest.OneByteReader(bytes.NewReader(data)),
		"half":           iotest.HalfReader(bytes.NewReader(data)),
		"data with EOF":  iotest.DataErrReader(bytes.NewReader(data)),
		"random up to 7": &splitReader{data: data, rng: rand.New(rand.NewPCG(1, 2)), max: 7},
		"random up to 100 KiB": &splitReader{data: data,
			rng: rand.New(rand.NewPCG(3, 4)), max: 100 << 10},
	}
	for seed := range uint64(5) {
		readers[fmt.Sprintf("random up to 4 KiB, seed %d", seed)] = &splitReader{data: data,
			rng: rand.New(rand.NewPCG(seed, 9)), max: 4 << 10}
	}
	for name, r := range readers {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(whole, scanIdentifiers(t, cfg, r)); diff != "" {
				t.Errorf("(-whole +split):\n%s", diff)
			}
		})
	}
}

func TestIdentifiersSplitAtEveryOffset(t *testing.T) {
	in := []byte("x 943 476 5919 dob: 1 March 1980 SW1A 1AA\n")
	want := scanString(t, string(in))
	if len(want) != 3 {
		t.Fatalf("fixture: got %v, want 3 findings", want)
	}
	for i := 1; i < len(in); i++ {
		r := io.MultiReader(bytes.NewReader(in[:i]), bytes.NewReader(in[i:]))
		if diff := cmp.Diff(want, scanIdentifiers(t, IdentifierConfig{}, r)); diff != "" {
			t.Errorf("split at %d (-want +got):\n%s", i, diff)
		}
	}
}

// idCountingReader counts the bytes read through it.
type idCountingReader struct {
	r io.Reader
	n int
}

func (c *idCountingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestIdentifiersMaxFindings(t *testing.T) {
	many := strings.Repeat("9434765919\n", 1000)
	tests := []struct {
		max  int
		want int
	}{
		{0, DefaultMaxFindings},
		{-1, DefaultMaxFindings},
		{1, 1},
		{3, 3},
		{5000, 1000},
	}
	for _, tc := range tests {
		t.Run(fmt.Sprint(tc.max), func(t *testing.T) {
			got := scanIdentifiers(t, IdentifierConfig{MaxFindings: tc.max}, strings.NewReader(many))
			if len(got) != tc.want {
				t.Fatalf("got %d findings, want %d", len(got), tc.want)
			}
			if got[len(got)-1] != nhs(tc.want, 1) {
				t.Errorf("last finding %v, want %v", got[len(got)-1], nhs(tc.want, 1))
			}
		})
	}
	// Once the cap is reached the scan reads no further.
	big := strings.Repeat("9434765919\n", 1<<16) // 704 KiB
	cr := &idCountingReader{r: strings.NewReader(big)}
	scanIdentifiers(t, IdentifierConfig{MaxFindings: 2}, cr)
	if cr.n > 2*idBufSize {
		t.Errorf("read %d bytes after reaching the cap, want at most %d", cr.n, 2*idBufSize)
	}
}

func TestIdentifiersNeverReportTheValue(t *testing.T) {
	values := []string{"9434765919", "943 476 5919", "SW1A 1AA", "1980-02-29", "29/02/1980"}
	in := "nhs 9434765919, 943 476 5919\npostcode SW1A 1AA\ndob 1980-02-29 or 29/02/1980\n"
	boom := errors.New("disk on fire")
	d := NewIdentifierDetector(IdentifierConfig{})
	// Bytes within the look-ahead of a read error are not judged: pad.
	padded := in + strings.Repeat(" ", idLookahead)
	fs, err := d.Scan(context.Background(), io.MultiReader(strings.NewReader(padded), iotest.ErrReader(boom)))
	if !errors.Is(err, boom) {
		t.Fatalf("Scan error %v, want %v", err, boom)
	}
	if len(fs) != 5 {
		t.Fatalf("findings %v, want 5 before the error", fs)
	}
	v, err := d.ScanStream(context.Background(), strings.NewReader(in))
	if err != nil || v.Clean || v.Action != Quarantine || v.Engine != "identifiers" {
		t.Fatalf("ScanStream: %+v, %v; want a finding", v, err)
	}
	texts := []string{
		fmt.Sprintf("%v", fs), fmt.Sprintf("%+v", fs), fmt.Sprintf("%#v", fs),
		fmt.Sprint(err), v.Reason,
	}
	for _, text := range texts {
		for _, val := range values {
			for _, form := range []string{val, strings.ReplaceAll(val, " ", ""), strings.ReplaceAll(val, "-", "")} {
				if strings.Contains(text, form) {
					t.Errorf("%q contains the value %q", text, form)
				}
			}
		}
	}
	if want := "nhs_number at line 1 column 5 (and 4 more)"; v.Reason != want {
		t.Errorf("Reason %q, want %q", v.Reason, want)
	}
}

func TestIdentifiersScanStreamClean(t *testing.T) {
	v, err := NewIdentifierDetector(IdentifierConfig{}).ScanStream(context.Background(),
		strings.NewReader("nothing to see, 1234567890, admitted 1980-02-29\n"))
	if err != nil || !v.Clean {
		t.Fatalf("ScanStream: %+v, %v; want clean", v, err)
	}
}

func TestIdentifiersCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := NewIdentifierDetector(IdentifierConfig{}).Scan(ctx, strings.NewReader("9434765919"))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("Scan error %v, want context.Canceled", err)
	}
}

// noProgress returns no bytes and no error, for ever.
type noProgress struct{}

func (noProgress) Read([]byte) (int, error) { return 0, nil }

func TestIdentifiersReaderWithoutProgress(t *testing.T) {
	_, err := NewIdentifierDetector(IdentifierConfig{}).Scan(context.Background(), noProgress{})
	if !errors.Is(err, io.ErrNoProgress) {
		t.Fatalf("Scan error %v, want io.ErrNoProgress", err)
	}
}

func FuzzIdentifiers(f *testing.F) {
	for _, s := range []string{
		"", "9434765919", "943 476 5919", "943-476-5919\n", "SW1A 1AA", "gir0aa",
		"Date of birth: 29/02/1980", `{"dob":"1980-02-29"}`, "dob 1st Sept 1980",
		"id,dob\n1,1980-01-01\n2,\"x,y\",01/02/1980\n", "id\tdob\n1\t1980-01-01\n",
		"patientDOB=03.04.1975 EC1A1BB 9434765919",
	} {
		f.Add([]byte(s), uint64(1))
	}
	d := NewIdentifierDetector(IdentifierConfig{MaxFindings: 1 << 20})
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		ctx := context.Background()
		whole, err := d.Scan(ctx, bytes.NewReader(data))
		if err != nil {
			t.Fatalf("whole: %v", err)
		}
		one, err := d.Scan(ctx, iotest.OneByteReader(bytes.NewReader(data)))
		if err != nil {
			t.Fatalf("one byte: %v", err)
		}
		if !cmp.Equal(whole, one) {
			t.Fatalf("one byte at a time differs:\n%s", cmp.Diff(whole, one))
		}
		split, err := d.Scan(ctx, &splitReader{data: data, rng: rand.New(rand.NewPCG(seed, seed)), max: 64})
		if err != nil {
			t.Fatalf("split: %v", err)
		}
		if !cmp.Equal(whole, split) {
			t.Fatalf("random split differs:\n%s", cmp.Diff(whole, split))
		}
		lines := bytes.Count(data, []byte("\n")) + 1
		for _, fd := range whole {
			if fd.Line < 1 || fd.Line > lines || fd.Column < 1 || fd.Column > len(data) {
				t.Fatalf("finding %v outside the input (%d lines, %d bytes)", fd, lines, len(data))
			}
		}
	})
}
