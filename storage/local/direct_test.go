package local

import (
	"bytes"
	"io"
	"math/rand/v2"
	"testing"

	"go.uber.org/zap/zaptest"
)

// TestDirectIOMixedAlignment writes chunks whose starts and lengths fall on
// and off the direct-I/O alignment, in buffers aligned and not, and reads
// ranges back through both read paths: every byte must round-trip.
func TestDirectIOMixedAlignment(t *testing.T) {
	b, err := New(t.TempDir(), zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	su, err := b.Create(ctx, "uploads/mixed")
	if err != nil {
		t.Fatal(err)
	}
	if a := su.(*upload).WriteAlignment(); a != directAlign {
		t.Logf("this file system has no direct I/O (alignment %d): only the buffered path is exercised", a)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	var want []byte
	aligned := newAlignedBuf().(*[]byte)
	// Lengths: unaligned head, then aligned blocks from an aligned buffer,
	// then aligned blocks from a misaligned buffer, then odd tails.
	for i, n := range []int{100, directAlign - 100, 3 * directAlign, 2*directAlign + 17, 5000, 1 << 20, 1} {
		chunk := (*aligned)[:n]
		if i == 3 || i == 4 {
			chunk = (*aligned)[1 : n+1] // memory not aligned: must fall back
		}
		for j := range chunk {
			chunk[j] = byte(rng.Uint32())
		}
		off := int64(len(want))
		m, err := su.WriteChunk(ctx, off, bytes.NewReader(chunk))
		if err != nil || m != int64(n) {
			t.Fatalf("chunk %d: WriteChunk = %d, %v; want %d", i, m, err, n)
		}
		want = append(want, chunk...)
	}
	if _, err := su.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	for _, r := range []struct{ off, n int64 }{
		{0, -1}, {1, -1}, {100, 1 << 20}, {directAlign, 2 << 20}, {12345, 1<<20 + 3}, {int64(len(want)) - 1<<20, -1},
		{0, 10}, {int64(len(want)) - 5, -1},
	} {
		rc, err := b.Open(ctx, "uploads/mixed", r.off, r.n)
		if err != nil {
			t.Fatalf("Open(%d, %d): %v", r.off, r.n, err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read (%d, %d): %v", r.off, r.n, err)
		}
		end := int64(len(want))
		if r.n >= 0 {
			end = min(end, r.off+r.n)
		}
		if !bytes.Equal(got, want[r.off:end]) {
			t.Fatalf("range (%d, %d): got %d bytes that differ from the %d written", r.off, r.n, len(got), end-r.off)
		}
	}
}
