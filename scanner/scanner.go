// Package scanner decides whether a file's bytes may enter the walled
// garden. An infected file is a Verdict, not an error; an error means the
// file could not be judged, and callers fail closed (the file waits).
package scanner

import (
	"context"
	"io"
)

// Verdict is a scanner's judgement of one file.
type Verdict struct {
	Clean bool
	// Reason names the signature or the rule that refused the file; empty
	// when Clean. Safe to show to the file's owner.
	Reason string
}

// Scanner judges a stream of bytes. Implementations read r to the end when
// the verdict is clean; they may stop early on a finding.
type Scanner interface {
	Scan(ctx context.Context, name string, r io.Reader) (Verdict, error)
}
