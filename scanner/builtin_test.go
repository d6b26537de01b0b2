package scanner

import (
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
	"testing/iotest"
)

// builtinFor builds a Builtin for a test, its spill directory a t.TempDir.
func builtinFor(t testing.TB, cfg BuiltinConfig) *Builtin {
	t.Helper()
	if cfg.TempDir == "" {
		cfg.TempDir = t.TempDir()
	}
	b, err := NewBuiltin(cfg)
	if err != nil {
		t.Fatalf("NewBuiltin: %v", err)
	}
	return b
}

// memFile is data as a File.
func memFile(name string, data []byte) File {
	return File{Name: name, Size: int64(len(data)), R: bytes.NewReader(data)}
}

// elfBytes is the start of a little-endian x86-64 ELF executable: all
// mimetype needs to know it.
func elfBytes() []byte {
	p := make([]byte, 64)
	copy(p, "\x7fELF\x02\x01\x01")
	p[16] = 2 // e_type: ET_EXEC
	p[18] = 0x3e
	return p
}

// peBytes is the start of a Windows program: "MZ" and a DOS header.
func peBytes() []byte {
	p := make([]byte, 128)
	copy(p, "MZ")
	copy(p[64:], "PE\x00\x00")
	p[60] = 64 // e_lfanew
	return p
}

// classBytes is the start of a Java 8 class file.
func classBytes() []byte {
	return []byte{0xca, 0xfe, 0xba, 0xbe, 0x00, 0x00, 0x00, 0x34, 0x00, 0x10, 0x0a, 0x00}
}

func TestNewBuiltinDefaults(t *testing.T) {
	b := builtinFor(t, BuiltinConfig{})
	want := ArchiveLimits{MaxDepth: 5, MaxRatio: 100, MaxExpanded: 64 << 30, MaxEntries: 100000, Encrypted: "hold"}
	if b.lim != want {
		t.Fatalf("limits = %+v, want %+v", b.lim, want)
	}
	if len(b.deny) != 0 {
		t.Fatalf("nil DenyTypes refuses %v, want nothing", b.deny)
	}
	if _, err := NewBuiltin(BuiltinConfig{DenyTypes: DefaultDenyTypes()}); err != nil {
		t.Fatalf("DefaultDenyTypes are not all known to mimetype: %v", err)
	}
}

func TestNewBuiltinRejects(t *testing.T) {
	notDir := t.TempDir() + "/file"
	if err := os.WriteFile(notDir, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		cfg  BuiltinConfig
		want string
	}{
		{"unknown deny type", BuiltinConfig{DenyTypes: []string{"application/x-not-a-type"}}, "application/x-elf"},
		{"deny everything", BuiltinConfig{DenyTypes: []string{"application/octet-stream"}}, "every file"},
		{"negative size", BuiltinConfig{MaxSize: -1}, "negative"},
		{"negative depth", BuiltinConfig{Archives: ArchiveLimits{MaxDepth: -1}}, "depth"},
		{"ratio below 1", BuiltinConfig{Archives: ArchiveLimits{MaxRatio: 0.5}}, "ratio"},
		{"negative expanded", BuiltinConfig{Archives: ArchiveLimits{MaxExpanded: -1}}, "expanded"},
		{"negative entries", BuiltinConfig{Archives: ArchiveLimits{MaxEntries: -1}}, "entries"},
		{"unknown encrypted policy", BuiltinConfig{Archives: ArchiveLimits{Encrypted: "ignore"}}, "hold"},
		{"missing temp dir", BuiltinConfig{TempDir: t.TempDir() + "/missing"}, "temp dir"},
		{"temp dir is a file", BuiltinConfig{TempDir: notDir}, "not a directory"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := NewBuiltin(tt.cfg)
			if err == nil {
				t.Fatalf("NewBuiltin = %v, want an error", b)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %q does not mention %q", err, tt.want)
			}
		})
	}
}

func TestNewBuiltinAcceptsAliases(t *testing.T) {
	b := builtinFor(t, BuiltinConfig{DenyTypes: []string{"application/x-zip-compressed"}})
	s := b.NewStream()
	s.Write(zipBytes(t, zipEntry{name: "a.txt", data: []byte("a")}))
	if v := s.Verdict(); v.Clean || v.Action != Reject {
		t.Fatalf("zip with its alias denied: %+v, want Reject", v)
	}
}

// writeIn writes data to w in pieces of n bytes.
func writeIn(w io.Writer, data []byte, n int) {
	for len(data) > 0 {
		k := min(n, len(data))
		w.Write(data[:k])
		data = data[k:]
	}
}

func TestStreamEICAR(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 3*scanBuf+17)
	// EICAR placed so it straddles two of Scan's reads.
	straddle := append(append(bytes.Repeat([]byte("b"), scanBuf-30), eicar...), 'z')
	tests := []struct {
		name   string
		data   []byte
		max    int64
		clean  bool
		reason string
		action Action
	}{
		{name: "empty", data: nil, clean: true},
		{name: "plain", data: []byte("hello, world\n"), clean: true},
		{name: "large clean", data: big, clean: true},
		{name: "eicar file", data: eicar, reason: EICARName},
		{name: "eicar inside", data: append(append([]byte("header "), eicar...), " trailer"...), reason: EICARName},
		{name: "eicar across reads", data: straddle, reason: EICARName},
		{name: "eicar prefix only", data: eicar[:len(eicar)-1], clean: true},
		{name: "eicar broken in the middle", data: append(append(append([]byte{}, eicar[:30]...), 'x'), eicar[30:]...), clean: true},
		{name: "at size limit", data: []byte("12345"), max: 5, clean: true},
		{name: "over size limit", data: []byte("123456"), max: 5, reason: "larger than the 5-byte limit", action: Reject},
	}
	for _, tt := range tests {
		b := builtinFor(t, BuiltinConfig{MaxSize: tt.max})
		check := func(t *testing.T, v Verdict) {
			t.Helper()
			if v.Clean != tt.clean || v.Reason != tt.reason || v.Engine != "builtin" {
				t.Fatalf("verdict = %+v, want clean=%v reason=%q engine builtin", v, tt.clean, tt.reason)
			}
			if !v.Clean && v.Action != tt.action {
				t.Fatalf("action = %v, want %v", v.Action, tt.action)
			}
		}
		t.Run(tt.name+"/scan", func(t *testing.T) {
			v, err := b.Scan(context.Background(), memFile("f", tt.data))
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			check(t, v)
		})
		t.Run(tt.name+"/one byte per write", func(t *testing.T) {
			s := b.NewStream()
			if _, err := io.Copy(s, iotest.OneByteReader(bytes.NewReader(tt.data))); err != nil {
				t.Fatal(err)
			}
			check(t, s.Verdict())
		})
		t.Run(tt.name+"/every split", func(t *testing.T) {
			if len(tt.data) > 1<<10 {
				t.Skip("small cases only")
			}
			for n := 2; n <= len(eicar)+1; n++ {
				s := b.NewStream()
				writeIn(s, tt.data, n)
				check(t, s.Verdict())
			}
		})
	}
}

func TestStreamWriteNeverFails(t *testing.T) {
	b := builtinFor(t, BuiltinConfig{MaxSize: 10, DenyTypes: DefaultDenyTypes()})
	var other bytes.Buffer
	s := b.NewStream()
	data := append(append(elfBytes(), eicar...), bytes.Repeat([]byte("z"), 100)...)
	n, err := io.Copy(io.MultiWriter(s, &other), bytes.NewReader(data))
	if err != nil || n != int64(len(data)) || other.Len() != len(data) {
		t.Fatalf("copy through the stream = %d, %v (other got %d); want %d, nil", n, err, other.Len(), len(data))
	}
	// The type is refused first, then EICAR is found: malware outranks.
	if v := s.Verdict(); v.Reason != EICARName || v.Action != Quarantine {
		t.Fatalf("verdict = %+v, want EICAR, Quarantine", v)
	}
}

func TestStreamEICAROutranksSize(t *testing.T) {
	b := builtinFor(t, BuiltinConfig{MaxSize: 5})
	s := b.NewStream()
	writeIn(s, append([]byte("123456"), eicar...), 4)
	if v := s.Verdict(); v.Reason != EICARName || v.Action != Quarantine {
		t.Fatalf("verdict = %+v, want EICAR, Quarantine", v)
	}
	// Scan refuses by the size alone, unread.
	v, err := b.Scan(context.Background(), memFile("f", append([]byte("123456"), eicar...)))
	if err != nil || v.Reason != "larger than the 5-byte limit" || v.Action != Reject {
		t.Fatalf("Scan = %+v, %v; want Reject for the size", v, err)
	}
}

func TestStreamMagicTypes(t *testing.T) {
	docx := zipBytes(t,
		zipEntry{name: "[Content_Types].xml", data: []byte(`<?xml version="1.0"?><Types/>`)},
		zipEntry{name: "_rels/.rels", data: []byte(`<?xml version="1.0"?><Relationships/>`)},
		zipEntry{name: "word/document.xml", data: []byte(`<?xml version="1.0"?><w:document/>`)},
	)
	macho := append([]byte{0xcf, 0xfa, 0xed, 0xfe, 0x07, 0x00, 0x00, 0x01}, make([]byte, 24)...)
	tests := []struct {
		name    string
		data    []byte
		typ     string
		archive bool
		refused bool
	}{
		{"text", []byte("id,value\n1,2\n"), "text/csv", false, false},
		{"elf", elfBytes(), "application/x-executable", false, true},
		{"pe", peBytes(), "application/vnd.microsoft.portable-executable", false, true},
		// Text that happens to start with "MZ" is sniffed as PE, but has no PE header: kept.
		{"MZ text", []byte("MZ,country,value\nA,GB,1\nB,FR,2\n" + strings.Repeat("C,DE,3\n", 20)), "application/vnd.microsoft.portable-executable", false, false},
		{"mach-o", macho, "application/x-mach-binary", false, true},
		{"java class", classBytes(), "application/x-java-applet", false, false},
		{"zip", zipBytes(t, zipEntry{name: "a.txt", data: []byte("a")}), "application/zip", true, false},
		{"docx", docx, "application/vnd.openxmlformats-officedocument.wordprocessingml.document", true, false},
		{"gzip", gzBytes(t, []byte("hello")), "application/gzip", true, false},
		{"bzip2", hexBytes(t, bzip2Hello), "application/x-bzip2", true, false},
		{"tar", tarBytes(t, tarEntry{name: "a.txt", data: []byte("a")}), "application/x-tar", true, false},
	}
	b := builtinFor(t, BuiltinConfig{DenyTypes: DefaultDenyTypes()})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := b.NewStream()
			writeIn(s, tt.data, 7)
			v := s.Verdict()
			if got := typeNameOf(s.Type()); got != tt.typ {
				t.Errorf("Type = %q, want %q", got, tt.typ)
			}
			if s.Archive() != tt.archive {
				t.Errorf("Archive = %v, want %v", s.Archive(), tt.archive)
			}
			if tt.refused {
				want := "refused content type " + tt.typ
				if v.Clean || v.Action != Reject || v.Reason != want {
					t.Errorf("verdict = %+v, want Reject %q", v, want)
				}
			} else if !v.Clean {
				t.Errorf("verdict = %+v, want clean", v)
			}
		})
	}
}

func typeNameOf(s string) string {
	s, _, _ = strings.Cut(s, ";")
	return s
}

func TestStreamTypeFromFirst4KiB(t *testing.T) {
	b := builtinFor(t, BuiltinConfig{DenyTypes: DefaultDenyTypes()})
	// An ELF header after the first 4 KiB is just bytes.
	late := append(bytes.Repeat([]byte("x"), sniffLen), elfBytes()...)
	s := b.NewStream()
	s.Write(late)
	if v := s.Verdict(); !v.Clean {
		t.Fatalf("verdict = %+v, want clean", v)
	}
	// An ELF file is refused as soon as 4 KiB are in, and stays refused.
	s = b.NewStream()
	s.Write(append(elfBytes(), make([]byte, sniffLen)...))
	if s.finding == nil {
		t.Fatal("no finding after the first 4 KiB of an ELF")
	}
}

func TestBuiltinScanReadError(t *testing.T) {
	boom := errors.New("disk on fire")
	b := builtinFor(t, BuiltinConfig{})
	v, err := b.Scan(context.Background(), File{Name: "f", Size: 10, R: failingAt{err: boom}})
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if v.Clean {
		t.Fatal("a read error produced a clean verdict")
	}
}

func TestBuiltinScanShortFile(t *testing.T) {
	b := builtinFor(t, BuiltinConfig{})
	v, err := b.Scan(context.Background(), File{Name: "f", Size: 100, R: strings.NewReader("only this")})
	if !errors.Is(err, io.ErrUnexpectedEOF) || v.Clean {
		t.Fatalf("Scan of a short file = %+v, %v; want io.ErrUnexpectedEOF", v, err)
	}
}

func TestBuiltinScanTooLargeUnread(t *testing.T) {
	b := builtinFor(t, BuiltinConfig{MaxSize: 5})
	v, err := b.Scan(context.Background(), File{Name: "f", Size: 6, R: failingAt{err: errors.New("read")}})
	if err != nil || v.Clean || v.Action != Reject {
		t.Fatalf("Scan = %+v, %v; want Reject without a read", v, err)
	}
}

func TestBuiltinScanCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	b := builtinFor(t, BuiltinConfig{})
	v, err := b.Scan(ctx, memFile("f", []byte("x")))
	if !errors.Is(err, context.Canceled) || v.Clean {
		t.Fatalf("cancelled scan = %+v, %v; want context.Canceled", v, err)
	}
}

// failingAt fails every read.
type failingAt struct{ err error }

func (f failingAt) ReadAt([]byte, int64) (int, error) { return 0, f.err }

func TestPacked(t *testing.T) {
	var zipped, gzipped bytes.Buffer
	zw := zip.NewWriter(&zipped)
	w, _ := zw.Create("patients.csv")
	w.Write([]byte("nhs_number\n9434765919\n"))
	zw.Close()
	gw := gzip.NewWriter(&gzipped)
	gw.Write([]byte("nhs_number\n9434765919\n"))
	gw.Close()
	tests := []struct {
		name   string
		head   []byte
		packed bool
	}{
		{"zip", zipped.Bytes(), true},
		{"gzip", gzipped.Bytes(), true},
		{"bzip2", []byte("BZh91AY&SY\x00\x00\x00\x00"), true},
		{"xz", []byte("\xfd7zXZ\x00\x00\x04"), true},
		{"zstd", []byte("\x28\xb5\x2f\xfd\x00\x00"), true},
		{"7z", []byte("7z\xbc\xaf\x27\x1c\x00\x04"), true},
		{"csv", []byte("id,postcode\n1,SW1A 1AA\n"), false},
		{"json", []byte(`{"nhs": "9434765919"}`), false},
		{"png", []byte("\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"), false},
		{"empty", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ct, packed := Packed(tt.head)
			if packed != tt.packed {
				t.Fatalf("Packed = %v (%s), want %v", packed, ct, tt.packed)
			}
		})
	}
}
