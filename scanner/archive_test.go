package scanner

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/bzip2"
	"compress/flate"
	"compress/gzip"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"hash/crc32"
	"io"
	"math/rand/v2"
	"os"
	"strings"
	"testing"
)

// zipEntry is one entry of a generated zip. With raw set, raw is written
// as the entry's stored bytes, with method, flags, crc and size as given.
type zipEntry struct {
	name  string
	data  []byte
	store bool // Store rather than Deflate

	raw    []byte
	method uint16
	flags  uint16
	crc    uint32
	size   uint64
}

func zipBytes(t testing.TB, entries ...zipEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := zip.NewWriter(&buf)
	for _, e := range entries {
		if e.raw != nil {
			fw, err := w.CreateRaw(&zip.FileHeader{
				Name: e.name, Method: e.method, Flags: e.flags, CRC32: e.crc,
				CompressedSize64: uint64(len(e.raw)), UncompressedSize64: e.size,
			})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := fw.Write(e.raw); err != nil {
				t.Fatal(err)
			}
			continue
		}
		method := zip.Deflate
		if e.store {
			method = zip.Store
		}
		fw, err := w.CreateHeader(&zip.FileHeader{Name: e.name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type tarEntry struct {
	name string
	data []byte
}

func tarBytes(t testing.TB, entries ...tarEntry) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, e := range entries {
		if err := w.WriteHeader(&tar.Header{Name: e.name, Mode: 0o644, Size: int64(len(e.data)), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(e.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gzBytes(t testing.TB, data []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// There is no bzip2 writer in the standard library: these were made with
// Python's bz2 module (level 9).
const (
	// bzip2Hello is "hello, bzip2\n" ten times.
	bzip2Hello = "425a68393141592653594292ce7d000022d9800010400410001264c010200020a550069ea10340d0e1384d27c9d27a9da62693098989f8bb9229c28482149673e8"
	// bzip2TarEICAR is a ustar archive holding run1/eicar.txt, the EICAR string.
	bzip2TarEICAR = "425a6839314159265359491572eb0000925f82cc80667be7806f65df5d6a211e420002080820009486a69353f5431347a40640d3d41ea1ea6d20687a8251501e90064d00d0c9a1e89906d4681d93f2a82061b42020fbb3305bccb8808282ed93e63959db7c846de8d5cf9d610b2080694050abdd078494c4bd558bf50db899cb2e42e8dc6e7718e36c5b9d59c9d868659138b311be499809739d9068d652bfd5be6dfbf0413087eef09784c8881fc5dc914e142412455cbac0"
)

func hexBytes(t testing.TB, s string) []byte {
	t.Helper()
	p, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// zeroDeflate is a raw deflate stream of mib MiB of zeros, made in bounded
// time and memory: one MiB compressed and flushed to a byte boundary, that
// block repeated, then an empty final block.
func zeroDeflate(t testing.TB, mib int) []byte {
	t.Helper()
	var c bytes.Buffer
	w, err := flate.NewWriter(&c, flate.BestCompression)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(make([]byte, 1<<20))
	w.Flush()
	out := bytes.Repeat(c.Bytes(), mib)
	return append(out, 0x01, 0x00, 0x00, 0xff, 0xff) // final stored block, empty
}

// bombZip is a zip holding one entry of mib MiB of zeros. Its CRC is left
// zero: the scanner must stop long before it could check it.
func bombZip(t testing.TB, mib int) []byte {
	return zipBytes(t, zipEntry{name: "zeros.bin", raw: zeroDeflate(t, mib), method: zip.Deflate, size: uint64(mib) << 20})
}

// readCounter counts the bytes and calls of an io.ReaderAt.
type readCounter struct {
	r     io.ReaderAt
	bytes int64
	calls int
}

func (c *readCounter) ReadAt(p []byte, off int64) (int, error) {
	n, err := c.r.ReadAt(p, off)
	c.bytes += int64(n)
	c.calls++
	return n, err
}

// scanBoth runs Scan, and ScanArchive on its own, and wants the same verdict.
func scanBoth(t *testing.T, b *Builtin, data []byte) Verdict {
	t.Helper()
	v, err := b.Scan(context.Background(), memFile("f", data))
	if err != nil {
		t.Fatalf("Scan: %v", err)
	}
	if v.Engine != "builtin" {
		t.Fatalf("Engine = %q", v.Engine)
	}
	av, err := b.ScanArchive(context.Background(), memFile("f", data))
	if err != nil {
		t.Fatalf("ScanArchive: %v", err)
	}
	if av != v {
		t.Fatalf("Scan = %+v but ScanArchive = %+v", v, av)
	}
	return v
}

func TestZeroDeflateFixture(t *testing.T) {
	r := flate.NewReader(bytes.NewReader(zeroDeflate(t, 3)))
	got, err := io.ReadAll(r)
	if err != nil || len(got) != 3<<20 || !bytes.Equal(got, make([]byte, 3<<20)) {
		t.Fatalf("zeroDeflate(3) inflates to %d bytes, %v; want 3 MiB of zeros", len(got), err)
	}
}

func TestArchiveEICAR(t *testing.T) {
	padding := bytes.Repeat([]byte("all work and no play makes jack a dull boy\n"), 50)
	withEICAR := append(append(append([]byte{}, padding...), eicar...), padding...)
	bz := hexBytes(t, bzip2TarEICAR)
	bzTar, err := io.ReadAll(bzip2.NewReader(bytes.NewReader(bz)))
	if err != nil {
		t.Fatal(err)
	}
	tarGz := gzBytes(t, tarBytes(t,
		tarEntry{name: "run1/log.txt", data: padding},
		tarEntry{name: "run1/eicar.txt", data: withEICAR},
	))
	docx := zipBytes(t,
		zipEntry{name: "[Content_Types].xml", data: []byte(`<?xml version="1.0"?><Types/>`)},
		zipEntry{name: "_rels/.rels", data: []byte(`<?xml version="1.0"?><Relationships/>`)},
		zipEntry{name: "word/document.xml", data: withEICAR},
	)
	big := append(bytes.Repeat([]byte("a"), copyBuf-30), eicar...) // across two reads
	tests := []struct {
		name   string
		data   []byte
		reason string // "" for clean
	}{
		{"in a zip", zipBytes(t, zipEntry{name: "docs/readme.txt", data: withEICAR}), `EICAR-Test-File in "docs/readme.txt"`},
		{"across reads of an entry", zipBytes(t, zipEntry{name: "big.txt", data: big}), `EICAR-Test-File in "big.txt"`},
		{"in a tar.gz in a zip", zipBytes(t, zipEntry{name: "data.tar.gz", data: tarGz, store: true}), `EICAR-Test-File in "data.tar.gz/run1/eicar.txt"`},
		{"in a tar.gz", tarGz, `EICAR-Test-File in "run1/eicar.txt"`},
		{"in a tar.bz2", bz, `EICAR-Test-File in "run1/eicar.txt"`},
		{"in a gz", gzBytes(t, withEICAR), EICARName},
		{"in a bzip2 zip entry", zipBytes(t, zipEntry{
			name: "x.tar", raw: bz, method: 12, crc: crc32.ChecksumIEEE(bzTar), size: uint64(len(bzTar)),
		}), `EICAR-Test-File in "x.tar/run1/eicar.txt"`},
		{"in a gz in a zip in a tar", tarBytes(t, tarEntry{name: "a.zip", data: zipBytes(t, zipEntry{name: "b.txt.gz", data: gzBytes(t, withEICAR)})}), `EICAR-Test-File in "a.zip/b.txt.gz"`},
		{"in a docx", docx, `EICAR-Test-File in "word/document.xml"`},
		{"split across two entries", zipBytes(t,
			zipEntry{name: "part1", data: eicar[:34], store: true},
			zipEntry{name: "part2", data: eicar[34:], store: true},
		), ""},
		{"clean tar.gz", gzBytes(t, tarBytes(t, tarEntry{name: "a.csv", data: padding})), ""},
		{"clean tar.bz2", hexBytes(t, bzip2Hello), ""},
	}
	b := builtinFor(t, BuiltinConfig{DenyTypes: DefaultDenyTypes()})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.reason != "" && bytes.Contains(tt.data, eicar) {
				t.Fatal("the fixture holds EICAR in the clear: the archive pass would not be tested")
			}
			v := scanBoth(t, b, tt.data)
			if tt.reason == "" {
				if !v.Clean {
					t.Fatalf("verdict = %+v, want clean", v)
				}
				return
			}
			if v.Clean || v.Action != Quarantine || v.Reason != tt.reason {
				t.Fatalf("verdict = %+v, want Quarantine %q", v, tt.reason)
			}
		})
	}
}

func TestArchiveEICARInCorruptNestedZip(t *testing.T) {
	// The inner "zip" cannot be opened, but the string was seen in its bytes.
	bad := append([]byte("PK\x03\x04"), eicar...)
	z := zipBytes(t, zipEntry{name: "bad.zip", data: bad})
	v, err := builtinFor(t, BuiltinConfig{}).ScanArchive(context.Background(), memFile("z", z))
	if err != nil || v.Reason != `EICAR-Test-File in "bad.zip"` || v.Action != Quarantine {
		t.Fatalf("ScanArchive = %+v, %v; want EICAR in bad.zip", v, err)
	}
}

func TestArchiveDenyTypes(t *testing.T) {
	manifest := []byte("Manifest-Version: 1.0\r\n\r\n")
	jar := zipBytes(t,
		zipEntry{name: "META-INF/MANIFEST.MF", data: manifest},
		zipEntry{name: "com/example/Main.class", data: classBytes()},
	)
	elfZip := zipBytes(t, zipEntry{name: "readme.txt", data: []byte("hi")}, zipEntry{name: "bin/tool", data: elfBytes()})
	peDeep := zipBytes(t, zipEntry{name: "src.tar.gz", data: gzBytes(t, tarBytes(t, tarEntry{name: "setup.exe", data: peBytes()}))})
	denyJava := append(DefaultDenyTypes(), "application/x-java-applet")
	tests := []struct {
		name   string
		deny   []string
		data   []byte
		reason string // "" for clean
	}{
		{"elf in a zip", DefaultDenyTypes(), elfZip, `refused content type application/x-executable in "bin/tool"`},
		{"pe in a tar.gz in a zip", DefaultDenyTypes(), peDeep, `refused content type application/vnd.microsoft.portable-executable in "src.tar.gz/setup.exe"`},
		{"elf in a zip, nothing denied", nil, elfZip, ""},
		{"jar with a class", DefaultDenyTypes(), jar, ""},
		{"jar with a class, classes denied", denyJava, jar, `refused content type application/x-java-applet in "com/example/Main.class"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := builtinFor(t, BuiltinConfig{DenyTypes: tt.deny})
			v := scanBoth(t, b, tt.data)
			if tt.reason == "" {
				if !v.Clean {
					t.Fatalf("verdict = %+v, want clean", v)
				}
				return
			}
			if v.Clean || v.Action != Reject || v.Reason != tt.reason {
				t.Fatalf("verdict = %+v, want Reject %q", v, tt.reason)
			}
		})
	}
}

func TestArchiveStreamSeesJarAsArchive(t *testing.T) {
	jar := zipBytes(t,
		zipEntry{name: "META-INF/", store: true},
		zipEntry{name: "META-INF/MANIFEST.MF", data: []byte("Manifest-Version: 1.0\r\n\r\n")},
	)
	s := builtinFor(t, BuiltinConfig{}).NewStream()
	s.Write(jar)
	if typeNameOf(s.Type()) != "application/java-archive" || !s.Archive() {
		t.Fatalf("jar: Type %q, Archive %v; want application/java-archive, true", s.Type(), s.Archive())
	}
}

// nestZips wraps a file in n zips: level n is the outermost.
func nestZips(t *testing.T, n int, inner []byte) []byte {
	data := inner
	name := "data.txt"
	for i := n; i >= 1; i-- {
		data = zipBytes(t, zipEntry{name: name, data: data})
		name = "l" + string(rune('0'+i)) + ".zip"
	}
	return data
}

func TestArchiveNesting(t *testing.T) {
	three := nestZips(t, 3, []byte("results\n"))
	tarGzInZip := zipBytes(t, zipEntry{name: "a.tar.gz", data: gzBytes(t, tarBytes(t,
		tarEntry{name: "b.zip", data: zipBytes(t, zipEntry{name: "c.txt", data: []byte("c")})},
	))})
	tests := []struct {
		name     string
		maxDepth int
		data     []byte
		reason   string
	}{
		{"three zips, three allowed", 3, three, ""},
		{"three zips, two allowed", 2, three, `archives nested more than 2 levels deep in "l2.zip/l3.zip"`},
		{"three zips, default", 0, three, ""},
		{"six zips, default", 0, nestZips(t, 6, []byte("x")), `archives nested more than 5 levels deep in "l2.zip/l3.zip/l4.zip/l5.zip/l6.zip"`},
		{"tar.gz is one level", 3, tarGzInZip, ""},
		{"tar.gz is one level, two allowed", 2, tarGzInZip, `archives nested more than 2 levels deep in "a.tar.gz/b.zip"`},
		{"tar.gz is one level, one allowed", 1, tarGzInZip, `archives nested more than 1 levels deep in "a.tar.gz"`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b := builtinFor(t, BuiltinConfig{Archives: ArchiveLimits{MaxDepth: tt.maxDepth}})
			v := scanBoth(t, b, tt.data)
			if tt.reason == "" {
				if !v.Clean {
					t.Fatalf("verdict = %+v, want clean", v)
				}
				return
			}
			if v.Clean || v.Action != Quarantine || v.Reason != tt.reason {
				t.Fatalf("verdict = %+v, want Quarantine %q", v, tt.reason)
			}
		})
	}
}

func TestArchiveZipBomb(t *testing.T) {
	bomb := bombZip(t, 1024) // 1 GiB of zeros in about 1 MiB
	b := builtinFor(t, BuiltinConfig{})
	v, st, err := b.scan(context.Background(), memFile("bomb.zip", bomb))
	if err != nil {
		t.Fatal(err)
	}
	if v.Clean || v.Action != Quarantine || v.Reason != "archive expands more than 100 times its size" {
		t.Fatalf("verdict = %+v, want Quarantine for the ratio", v)
	}
	// Stopped once 100 times the zip's size was out, within one read.
	if limit := 100 * int64(len(bomb)); st.expanded <= limit || st.expanded > limit+copyBuf {
		t.Fatalf("expanded %d bytes; want just over %d, far below 1 GiB", st.expanded, limit)
	}
}

func TestArchiveZipBombStopsReading(t *testing.T) {
	bomb := bombZip(t, 8<<10) // 8 GiB of zeros in about 8 MiB
	b := builtinFor(t, BuiltinConfig{Archives: ArchiveLimits{MaxRatio: 10}})
	rc := &readCounter{r: bytes.NewReader(bomb)}
	v, err := b.Scan(context.Background(), File{Name: "bomb.zip", Size: int64(len(bomb)), R: rc})
	if err != nil {
		t.Fatal(err)
	}
	if v.Clean || v.Action != Quarantine || v.Reason != "archive expands more than 10 times its size" {
		t.Fatalf("verdict = %+v, want Quarantine for the ratio", v)
	}
	// The stream pass reads the file once; the archive pass, a window or
	// two of it, not the whole bomb.
	if archiveRead := rc.bytes - int64(len(bomb)); archiveRead > 3*readAheadLen {
		t.Fatalf("the archive pass read %d bytes of a %d-byte bomb", archiveRead, len(bomb))
	}
}

func TestArchiveGzipBomb(t *testing.T) {
	const mib = 512
	var gz bytes.Buffer
	gz.Write([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff})
	gz.Write(zeroDeflate(t, mib))
	binary.Write(&gz, binary.LittleEndian, uint32(0))       // CRC, never reached
	binary.Write(&gz, binary.LittleEndian, uint32(mib<<20)) // size mod 2^32
	b := builtinFor(t, BuiltinConfig{})
	v, st, err := b.scan(context.Background(), memFile("zeros.gz", gz.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if v.Clean || v.Action != Quarantine || v.Reason != "archive expands more than 100 times its size" {
		t.Fatalf("verdict = %+v, want Quarantine for the ratio", v)
	}
	if st.expanded > 2*100*int64(gz.Len()) {
		t.Fatalf("expanded %d bytes of %d MiB", st.expanded, mib)
	}
}

func TestArchiveNestedBomb(t *testing.T) {
	// 42.zip in small: no level expands more than 100 times (the inner
	// zips stay under the 1 MiB ratio floor), but together they expand
	// beyond the total limit.
	inner := zipBytes(t, zipEntry{name: "zeros.bin", data: make([]byte, 1<<20-1)})
	var copies []zipEntry
	for i := range 16 {
		copies = append(copies, zipEntry{name: "copy" + string(rune('a'+i)) + ".zip", data: inner, store: true})
	}
	outer := zipBytes(t, copies...)
	b := builtinFor(t, BuiltinConfig{Archives: ArchiveLimits{MaxExpanded: 8 << 20}})
	v, st, err := b.scan(context.Background(), memFile("42.zip", outer))
	if err != nil {
		t.Fatal(err)
	}
	if v.Clean || v.Action != Quarantine || v.Reason != "archive expands beyond the 8 MiB limit" {
		t.Fatalf("verdict = %+v, want Quarantine for the total", v)
	}
	if st.expanded > 8<<20+copyBuf {
		t.Fatalf("expanded %d bytes, beyond the 8 MiB limit", st.expanded)
	}
}

func TestArchiveDeclaredTooLarge(t *testing.T) {
	// The header claims 1 TiB: refused without reading the entry.
	z := zipBytes(t, zipEntry{name: "huge.bin", raw: zeroDeflate(t, 1), method: zip.Deflate, size: 1 << 40})
	b := builtinFor(t, BuiltinConfig{})
	v, st, err := b.scan(context.Background(), memFile("huge.zip", z))
	if err != nil {
		t.Fatal(err)
	}
	if v.Clean || v.Reason != "archive expands beyond the 64 GiB limit" || st.expanded != 0 {
		t.Fatalf("verdict = %+v after %d bytes expanded; want the 64 GiB limit, nothing read", v, st.expanded)
	}
}

func TestArchiveSmallCompressibleFilePasses(t *testing.T) {
	// 1000 times smaller compressed, but under the 1 MiB ratio floor.
	z := zipBytes(t, zipEntry{name: "zeros.bin", data: make([]byte, 1<<20-1)})
	if v := scanBoth(t, builtinFor(t, BuiltinConfig{}), z); !v.Clean {
		t.Fatalf("verdict = %+v, want clean", v)
	}
}

func TestArchiveEncrypted(t *testing.T) {
	secret := []byte("id,diagnosis\n1,x\n")
	z := zipBytes(t,
		zipEntry{name: "readme.txt", data: []byte("hi")},
		zipEntry{name: "secret.csv", raw: secret, method: zip.Store, flags: 0x1, crc: crc32.ChecksumIEEE(secret), size: uint64(len(secret))},
	)
	for _, tt := range []struct {
		policy string
		action Action
	}{{"", Quarantine}, {"hold", Quarantine}, {"refuse", Reject}} {
		t.Run("policy "+tt.policy, func(t *testing.T) {
			b := builtinFor(t, BuiltinConfig{Archives: ArchiveLimits{Encrypted: tt.policy}})
			v := scanBoth(t, b, z)
			if v.Clean || v.Action != tt.action || v.Reason != `encrypted archive entry "secret.csv"` {
				t.Fatalf("verdict = %+v, want %v for the encrypted entry", v, tt.action)
			}
		})
	}
}

func TestArchiveCorrupt(t *testing.T) {
	text := bytes.Repeat([]byte("the quick brown fox jumps over the lazy dog\n"), 200)
	z := zipBytes(t, zipEntry{name: "a.txt", data: text})
	corrupt := zipBytes(t, zipEntry{name: "a.txt", raw: []byte{0xff, 0xff, 0xff, 0xff}, method: zip.Deflate, size: 100})
	tgz := gzBytes(t, tarBytes(t, tarEntry{name: "a.txt", data: text}))
	tests := []struct {
		name   string
		data   []byte
		reason string
	}{
		{"truncated zip", z[:len(z)-10], "archive could not be inspected: not a valid zip file"},
		{"truncated nested zip", zipBytes(t, zipEntry{name: "inner.zip", data: z[:len(z)/2]}), `archive could not be inspected: not a valid zip file in "inner.zip"`},
		{"corrupt deflate", corrupt, `archive could not be inspected: corrupt compressed data in "a.txt"`},
		{"unsupported method", zipBytes(t, zipEntry{name: "a.lzma", raw: []byte("xxxx"), method: 14, size: 4}), `archive could not be inspected: unsupported compression method in "a.lzma"`},
		{"bad checksum", zipBytes(t, zipEntry{name: "a.txt", raw: text, method: zip.Store, crc: 1, size: uint64(len(text))}), `archive could not be inspected: checksum mismatch in "a.txt"`},
		{"truncated tar.gz", tgz[:len(tgz)/2], "archive could not be inspected: truncated"},
	}
	b := builtinFor(t, BuiltinConfig{})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v := scanBoth(t, b, tt.data)
			if v.Clean || v.Action != Quarantine || v.Reason != tt.reason {
				t.Fatalf("verdict = %+v, want Quarantine %q", v, tt.reason)
			}
		})
	}
}

func TestArchiveEntries(t *testing.T) {
	entries := func(n int) []zipEntry {
		var es []zipEntry
		for i := range n {
			es = append(es, zipEntry{name: strings.Repeat("d/", i%3) + "f" + string(rune('a'+i%26)) + string(rune('a'+i/26)), data: []byte("x")})
		}
		return es
	}
	var tars []tarEntry
	for _, e := range entries(11) {
		tars = append(tars, tarEntry{name: e.name, data: e.data})
	}
	nested := zipBytes(t, append(entries(5), zipEntry{name: "more.zip", data: zipBytes(t, entries(5)...)})...)
	tests := []struct {
		name    string
		data    []byte
		finding bool
		unread  bool // refused from the central directory, before any entry
	}{
		{"zip at the limit", zipBytes(t, entries(10)...), false, false},
		{"zip over the limit", zipBytes(t, entries(11)...), true, true},
		{"tar over the limit", tarBytes(t, tars...), true, false},
		{"nested over the limit", nested, true, false},
	}
	b := builtinFor(t, BuiltinConfig{Archives: ArchiveLimits{MaxEntries: 10}})
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			v, st, err := b.scan(context.Background(), memFile("f", tt.data))
			if err != nil {
				t.Fatal(err)
			}
			if !tt.finding {
				if !v.Clean {
					t.Fatalf("verdict = %+v, want clean", v)
				}
				return
			}
			if v.Clean || v.Action != Quarantine || v.Reason != "archive has more than 10 entries" {
				t.Fatalf("verdict = %+v, want Quarantine for the entries", v)
			}
			if tt.unread && st.entries != 0 {
				t.Fatalf("%d entries read before the refusal, want none", st.entries)
			}
		})
	}
}

func TestArchiveZipDirectoryEntries(t *testing.T) {
	z := zipBytes(t, zipEntry{name: "a", data: []byte("a")}, zipEntry{name: "b", data: []byte("b")}, zipEntry{name: "c", data: []byte("c")})
	prefixed := append([]byte("#!/bin/sh\nexit 0\n"), z...) // a self-extractor's layout
	for _, tt := range []struct {
		name  string
		data  []byte
		limit int
		want  int
	}{
		{"all", z, 10, 3},
		{"stops after the limit", z, 1, 2},
		{"prepended data", prefixed, 10, 3},
		{"not a zip", []byte("hello"), 10, 0},
		{"truncated", z[:len(z)-5], 10, 0},
	} {
		if got := zipDirectoryEntries(bytes.NewReader(tt.data), int64(len(tt.data)), tt.limit); got != tt.want {
			t.Errorf("%s: zipDirectoryEntries = %d, want %d", tt.name, got, tt.want)
		}
	}
}

func TestArchiveSpill(t *testing.T) {
	// A nested zip over 16 MiB goes to TempDir while inspected, and the
	// entry after its big member is still judged.
	inner := zipBytes(t,
		zipEntry{name: "big.bin", data: make([]byte, nestedInMemory+1<<20), store: true},
		zipEntry{name: "eicar.txt", data: append(bytes.Repeat([]byte("pad "), 100), eicar...)},
	)
	outer := zipBytes(t, zipEntry{name: "inner.zip", data: inner, store: true}, zipEntry{name: "after.txt", data: []byte("x")})

	t.Run("found", func(t *testing.T) {
		dir := t.TempDir()
		b := builtinFor(t, BuiltinConfig{TempDir: dir})
		v, err := b.ScanArchive(context.Background(), memFile("outer.zip", outer))
		if err != nil {
			t.Fatal(err)
		}
		if v.Reason != `EICAR-Test-File in "inner.zip/eicar.txt"` {
			t.Fatalf("verdict = %+v, want EICAR in inner.zip/eicar.txt", v)
		}
		if left, _ := os.ReadDir(dir); len(left) != 0 {
			t.Fatalf("TempDir holds %d files after the scan", len(left))
		}
	})
	t.Run("temp dir gone", func(t *testing.T) {
		dir := t.TempDir()
		b := builtinFor(t, BuiltinConfig{TempDir: dir})
		if err := os.Remove(dir); err != nil {
			t.Fatal(err)
		}
		v, err := b.ScanArchive(context.Background(), memFile("outer.zip", outer))
		if err == nil || v.Clean {
			t.Fatalf("ScanArchive with no TempDir = %+v, %v; want an error (not judged)", v, err)
		}
	})
}

func TestArchiveReadAhead(t *testing.T) {
	var es []zipEntry
	for i := range 200 {
		es = append(es, zipEntry{name: "f" + string(rune('a'+i%26)) + string(rune('a'+i/26)), data: bytes.Repeat([]byte{byte(i)}, 1000)})
	}
	z := zipBytes(t, es...)
	rc := &readCounter{r: bytes.NewReader(z)}
	v, err := builtinFor(t, BuiltinConfig{}).ScanArchive(context.Background(), File{Name: "z", Size: int64(len(z)), R: rc})
	if err != nil || !v.Clean {
		t.Fatalf("ScanArchive = %+v, %v; want clean", v, err)
	}
	// The whole zip is smaller than a window: a few round trips, not
	// one or more per entry.
	if rc.calls > 5 {
		t.Fatalf("%d reads of the file for %d entries", rc.calls, len(es))
	}

	// Served from the window or not, every read answers as the file does.
	data := make([]byte, 3*readAheadLen+123)
	for i := range data {
		data[i] = byte(i * 7)
	}
	ra := &readAhead{r: bytes.NewReader(data), buf: make([]byte, readAheadLen)}
	var walked []byte
	p := make([]byte, 4093)
	for off := int64(0); ; off += int64(len(p)) {
		n, err := ra.ReadAt(p, off)
		walked = append(walked, p[:n]...)
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("ReadAt at %d: %v", off, err)
		}
	}
	if !bytes.Equal(walked, data) {
		t.Fatal("a sequential walk through the window differs from the file")
	}
	rng := rand.New(rand.NewPCG(3, 4))
	for i := range 1000 {
		off := rng.Int64N(int64(len(data)) + 10)
		n := rng.IntN(5000)
		switch {
		case i%50 == 0:
			n = rng.IntN(3 * readAheadLen / 2) // larger than the window, at times
		case i%2 == 0:
			off = min(off, int64(len(data))-int64(rng.IntN(100))) // near the end
		}
		got, want := make([]byte, n), make([]byte, n)
		gn, gerr := ra.ReadAt(got, off)
		wn, werr := bytes.NewReader(data).ReadAt(want, off)
		if gn != wn || !bytes.Equal(got[:gn], want[:wn]) || (gerr == nil) != (werr == nil) {
			t.Fatalf("ReadAt(%d bytes at %d) = %d, %v; want %d, %v", n, off, gn, gerr, wn, werr)
		}
	}
}

func TestArchiveReadErrorIsNotAVerdict(t *testing.T) {
	// Larger than a window: the entry is read after the directory at the
	// end, in a second window, which fails.
	z := zipBytes(t, zipEntry{name: "a.bin", data: make([]byte, 3*readAheadLen), store: true})
	boom := errors.New("object storage down")
	f := File{Name: "z", Size: int64(len(z)), R: &failAfter{r: bytes.NewReader(z), ok: 2, err: boom}}
	v, err := builtinFor(t, BuiltinConfig{}).ScanArchive(context.Background(), f)
	if !errors.Is(err, boom) || v.Clean {
		t.Fatalf("ScanArchive = %+v, %v; want %v", v, err, boom)
	}
}

// failAfter fails every read after the first ok ones.
type failAfter struct {
	r   io.ReaderAt
	ok  int
	err error
}

func (f *failAfter) ReadAt(p []byte, off int64) (int, error) {
	if f.ok == 0 {
		return 0, f.err
	}
	f.ok--
	return f.r.ReadAt(p, off)
}

func TestArchiveCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	z := zipBytes(t, zipEntry{name: "a.txt", data: []byte("hello")})
	v, err := builtinFor(t, BuiltinConfig{}).ScanArchive(ctx, memFile("z", z))
	if !errors.Is(err, context.Canceled) || v.Clean {
		t.Fatalf("cancelled ScanArchive = %+v, %v; want context.Canceled", v, err)
	}
}

func TestArchiveNotAnArchive(t *testing.T) {
	v, err := builtinFor(t, BuiltinConfig{}).ScanArchive(context.Background(), memFile("t", []byte("plain text")))
	if err != nil || !v.Clean {
		t.Fatalf("ScanArchive of text = %+v, %v; want clean", v, err)
	}
}

func TestArchiveReasonPathBounded(t *testing.T) {
	name := strings.Repeat("very-long-directory-name/", 20) + "evil\n\"name\".txt"
	z := zipBytes(t, zipEntry{name: name, data: append(bytes.Repeat([]byte("pad "), 100), eicar...)})
	v := scanBoth(t, builtinFor(t, BuiltinConfig{}), z)
	if !strings.HasPrefix(v.Reason, EICARName+` in "…`) || !strings.HasSuffix(v.Reason, `evil\n\"name\".txt"`) {
		t.Fatalf("Reason = %q, want the path's tail, quoted", v.Reason)
	}
	if len(v.Reason) > len(EICARName)+len(" in ")+maxReasonPath+20 {
		t.Fatalf("Reason is %d bytes long", len(v.Reason))
	}
}

// negativeOffsetZip, found by FuzzScanArchive, has a central directory
// whose offsets lead archive/zip to read before the start of the file.
const negativeOffsetZip = "PK\x03\x04PK\x01\x020000000000000000000000\x00\x00\x05\x00\x00\x00\x00\x00000000000\x00\x00\x0000000PK\x01\x02000000000000000000000000\x02\x00\x00\x00\x00\x0000000000000000PK\x05\x06000000\x02\x00c\x00\x00\x007000\x00\x00"

func TestArchiveOffsetsOutsideTheFile(t *testing.T) {
	// Bad offsets are the archive's fault, never a storage error (which
	// would leave the file waiting for a retry forever).
	v, err := builtinFor(t, BuiltinConfig{}).ScanArchive(context.Background(), memFile("z", []byte(negativeOffsetZip)))
	if err != nil || v.Clean || v.Action != Quarantine || !strings.HasPrefix(v.Reason, "archive could not be inspected: ") {
		t.Fatalf("ScanArchive = %+v, %v; want Quarantine, could not be inspected", v, err)
	}
	// A directory pointing past the end of the file.
	z := zipBytes(t, zipEntry{name: "a.txt", data: []byte("hello")})
	binary.LittleEndian.PutUint32(z[len(z)-6:], uint32(len(z)+1000)) // directory offset
	v, err = builtinFor(t, BuiltinConfig{}).ScanArchive(context.Background(), File{Name: "z", Size: int64(len(z)), R: strictAt{bytes.NewReader(z)}})
	if err != nil || v.Clean || v.Action != Quarantine {
		t.Fatalf("ScanArchive = %+v, %v; want Quarantine", v, err)
	}
}

// strictAt fails, as object storage does, any read that starts past the
// end of the file.
type strictAt struct{ r *bytes.Reader }

func (s strictAt) ReadAt(p []byte, off int64) (int, error) {
	if off >= s.r.Size() {
		return 0, errors.New("416 requested range not satisfiable")
	}
	return s.r.ReadAt(p, off)
}

func FuzzScanArchive(f *testing.F) {
	text := []byte("hello, world\n")
	f.Add([]byte{})
	f.Add([]byte("PK\x03\x04"))
	f.Add(zipBytes(f, zipEntry{name: "a.txt", data: text}))
	f.Add(zipBytes(f, zipEntry{name: "a.txt", data: text, store: true}, zipEntry{name: "d/", store: true}))
	f.Add(zipBytes(f, zipEntry{name: "in.zip", data: zipBytes(f, zipEntry{name: "b.txt", data: text})}))
	f.Add(zipBytes(f, zipEntry{name: "s", raw: text, method: zip.Store, flags: 1, size: uint64(len(text))}))
	f.Add(gzBytes(f, tarBytes(f, tarEntry{name: "a", data: text}, tarEntry{name: "b.gz", data: gzBytes(f, text)})))
	f.Add(tarBytes(f, tarEntry{name: "a.zip", data: zipBytes(f, zipEntry{name: "x", data: text})}))
	f.Add(hexBytes(f, bzip2Hello))
	f.Add(hexBytes(f, bzip2TarEICAR))
	f.Add(bombZip(f, 4))
	f.Add([]byte(negativeOffsetZip))
	const maxExpanded = 1 << 20
	b := builtinFor(f, BuiltinConfig{
		MaxSize:   1 << 20,
		DenyTypes: DefaultDenyTypes(),
		Archives:  ArchiveLimits{MaxDepth: 3, MaxExpanded: maxExpanded, MaxEntries: 100},
	})
	f.Fuzz(func(t *testing.T, data []byte) {
		v, st, err := b.scan(context.Background(), memFile("fuzz", data))
		if err != nil {
			t.Fatalf("Scan of in-memory bytes failed: %v", err) // only reads or ctx may fail
		}
		if v.Engine != "builtin" || v.Clean != (v.Reason == "") {
			t.Fatalf("malformed verdict %+v", v)
		}
		if st.expanded > maxExpanded+copyBuf || st.entries > 101 {
			t.Fatalf("went past the limits: %d bytes expanded, %d entries", st.expanded, st.entries)
		}
		if len(v.Reason) > 400 {
			t.Fatalf("Reason is %d bytes long", len(v.Reason))
		}
	})
}
