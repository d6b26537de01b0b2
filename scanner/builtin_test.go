package scanner

import (
	"bytes"
	"context"
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"
)

func TestBuiltin(t *testing.T) {
	big := bytes.Repeat([]byte("a"), 3*builtinBuf+17)
	// EICAR placed so it straddles two reads of the scanner's buffer.
	straddle := append(append(bytes.Repeat([]byte("b"), builtinBuf-30), eicar...), 'z')
	tests := []struct {
		name    string
		data    []byte
		max     int64
		clean   bool
		reason  string
		oneByte bool
	}{
		{name: "empty", data: nil, clean: true},
		{name: "plain", data: []byte("hello, world\n"), clean: true},
		{name: "large clean", data: big, clean: true},
		{name: "eicar file", data: eicar, reason: EICARName},
		{name: "eicar inside", data: append(append([]byte("header "), eicar...), " trailer"...), reason: EICARName},
		{name: "eicar across reads", data: straddle, reason: EICARName},
		{name: "eicar one byte per read", data: append([]byte("xx"), eicar...), reason: EICARName, oneByte: true},
		{name: "eicar prefix only", data: eicar[:len(eicar)-1], clean: true},
		{name: "at size limit", data: []byte("12345"), max: 5, clean: true},
		{name: "over size limit", data: []byte("123456"), max: 5, reason: "larger than the 5-byte limit"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var r io.Reader = bytes.NewReader(tt.data)
			if tt.oneByte {
				r = iotest.OneByteReader(r)
			}
			v, err := Builtin{MaxSize: tt.max}.Scan(context.Background(), "f", r)
			if err != nil {
				t.Fatalf("Scan: %v", err)
			}
			if v.Clean != tt.clean || v.Reason != tt.reason {
				t.Fatalf("verdict = %+v, want clean=%v reason=%q", v, tt.clean, tt.reason)
			}
		})
	}
}

func TestBuiltinReadErrorIsNotClean(t *testing.T) {
	boom := errors.New("disk on fire")
	r := io.MultiReader(strings.NewReader("some bytes"), iotest.ErrReader(boom))
	v, err := Builtin{}.Scan(context.Background(), "f", r)
	if !errors.Is(err, boom) {
		t.Fatalf("err = %v, want %v", err, boom)
	}
	if v.Clean {
		t.Fatal("a read error produced a clean verdict")
	}
}

func TestBuiltinCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	v, err := Builtin{}.Scan(ctx, "f", strings.NewReader("x"))
	if err == nil || v.Clean {
		t.Fatalf("cancelled scan = %+v, %v; want an error", v, err)
	}
}
