package scanner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// Checker is the whole check of one file: the built-in checks and, when
// configured, clamd, over one read of the file, then the archive pass of the
// built-in checks for archives. The verdict carries the SHA-256 of the bytes
// it judged, so that a caller can tell whether the verdict is about the file
// it has.
type Checker struct {
	builtin *Builtin
	engine  StreamScanner // nil: the built-in checks only
}

var _ Scanner = (*Checker)(nil)

// NewChecker returns a Checker. engine may be nil.
func NewChecker(builtin *Builtin, engine StreamScanner) *Checker {
	return &Checker{builtin: builtin, engine: engine}
}

// Scan implements Scanner. The bytes are read once, in order, and go at the
// same time to the SHA-256, the built-in stream checks and the engine. A
// finding that keeps the file for review (Quarantine) outranks one that
// deletes it (Reject), so that malware is kept as evidence even in a file of
// a refused type.
func (c *Checker) Scan(ctx context.Context, f File) (Verdict, error) {
	h := sha256.New()
	stream := c.builtin.NewStream()
	sr := io.NewSectionReader(f.R, 0, f.Size)
	tee := io.TeeReader(sr, io.MultiWriter(h, stream))
	read := func() (int64, error) { return io.Copy(io.Discard, tee) }

	ev := Verdict{Clean: true}
	if c.engine != nil {
		v, err := c.engine.ScanStream(ctx, tee)
		if err != nil {
			return Verdict{}, err
		}
		ev = v
	}
	// The engine reads to the end when it finds nothing; after a finding,
	// read the rest so the built-in checks and the hash see every byte.
	if _, err := read(); err != nil {
		return Verdict{}, fmt.Errorf("scanner: read %s: %w", f.Name, err)
	}
	sum := hex.EncodeToString(h.Sum(nil))
	v := worse(ev, stream.Verdict())
	if v.Clean && stream.Archive() {
		av, err := c.builtin.ScanArchive(ctx, f)
		if err != nil {
			return Verdict{}, err
		}
		v = worse(v, av)
	}
	v.SHA256 = sum
	return v, nil
}

// worse returns the verdict that keeps the file further from the garden:
// any finding over clean, Quarantine over Reject, the first on a tie.
func worse(a, b Verdict) Verdict {
	switch {
	case a.Clean:
		return b
	case b.Clean:
		return a
	case b.Action == Quarantine && a.Action != Quarantine:
		return b
	}
	return a
}
