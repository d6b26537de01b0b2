package scanner

import (
	"bytes"
	"context"
	"fmt"
	"io"
)

// eicar is the EICAR anti-malware test string. Any file containing it is
// treated as infected, as a real engine would treat the test file.
var eicar = []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)

// EICARName is the Reason given for a file that contains the EICAR string.
const EICARName = "EICAR-Test-File"

// Builtin is the in-process first line of checks: the EICAR test string
// anywhere in the file, and a size limit. It reads the stream once, with a
// fixed buffer.
type Builtin struct {
	// MaxSize refuses files larger than this many bytes (0: no limit).
	MaxSize int64
}

var _ Scanner = Builtin{}

const builtinBuf = 256 << 10

// Scan implements Scanner.
func (b Builtin) Scan(ctx context.Context, name string, r io.Reader) (Verdict, error) {
	buf := make([]byte, len(eicar)-1+builtinBuf)
	carry := 0 // bytes kept from the previous read, so a match may span reads
	var size int64
	for {
		if err := ctx.Err(); err != nil {
			return Verdict{}, err
		}
		n, err := r.Read(buf[carry:])
		size += int64(n)
		if b.MaxSize > 0 && size > b.MaxSize {
			return Verdict{Reason: fmt.Sprintf("larger than the %d-byte limit", b.MaxSize)}, nil
		}
		window := buf[:carry+n]
		if bytes.Contains(window, eicar) {
			return Verdict{Reason: EICARName}, nil
		}
		carry = min(len(window), len(eicar)-1)
		copy(buf, window[len(window)-carry:])
		if err == io.EOF {
			return Verdict{Clean: true}, nil
		}
		if err != nil {
			return Verdict{}, fmt.Errorf("scanner: read %s: %w", name, err)
		}
	}
}
