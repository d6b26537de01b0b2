package ingest

import (
	"bytes"
	"context"
	"io"
	"testing"
	"time"
)

// The check stage's reads wait in proportion to what they read while an
// upload is receiving bytes, and not at all otherwise; the bytes are the same.
func TestPacedReaderAt(t *testing.T) {
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	for _, busy := range []bool{false, true} {
		var waited time.Duration
		p := &pacedReaderAt{
			ctx: context.Background(), r: bytes.NewReader(data), rate: 1 << 20,
			busy: func() bool { return busy },
			wait: func(_ context.Context, d time.Duration) { waited += d },
		}
		got, err := io.ReadAll(io.NewSectionReader(p, 0, int64(len(data))))
		if err != nil || !bytes.Equal(got, data) {
			t.Fatalf("busy=%v: read %d bytes, %v", busy, len(got), err)
		}
		want := time.Duration(0)
		if busy {
			want = time.Second // 1 MiB at 1 MiB/s
		}
		if d := waited - want; d < -time.Millisecond || d > time.Millisecond { // integer rounding per read
			t.Errorf("busy=%v: waited %v in all, want %v", busy, waited, want)
		}
	}
}
