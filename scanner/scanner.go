// Package scanner decides whether a file's bytes may enter (or leave) the
// walled garden. A finding is a Verdict, not an error; an error means the
// file could not be judged, and callers fail closed (the file waits and is
// tried again, never released unjudged).
//
// Three parts: Builtin, the cheap in-process checks (EICAR, size, content
// type by magic bytes, archive nesting and expansion); Clamd, a client of
// ClamAV's clamd; and Checker, which runs both over one read of the file and
// binds the verdict to the SHA-256 of the bytes it judged.
package scanner

import (
	"context"
	"errors"
	"io"
)

// ErrUnavailable is wrapped by errors that mean a scanning engine could not
// be reached or did not answer (clamd down, a timeout): the file is not
// judged and should be tried again later.
var ErrUnavailable = errors.New("scanner: engine unavailable")

// Action says what becomes of a file that is not clean.
type Action int

const (
	// Quarantine keeps the file apart, for an administrator to review,
	// release or delete (malware, a zip bomb, an encrypted archive held).
	Quarantine Action = iota
	// Reject deletes the file (a refused content type, an encrypted
	// archive refused by policy, over the size limit).
	Reject
)

// Verdict is a scanner's judgement of one file.
type Verdict struct {
	Clean bool
	// Reason names the signature or the rule that refused the file; empty
	// when Clean. Safe to show to the file's owner: it never contains the
	// file's content.
	Reason string
	// Action applies when !Clean.
	Action Action
	// Engine names what decided: "builtin" or "clamd".
	Engine string
	// SHA256 is the lower-case hex SHA-256 of the bytes judged, set by
	// Checker (the verdict holds for that content only).
	SHA256 string
}

// File is one file to judge: a name for messages (never trusted for its
// type), its size, and random access to its bytes.
type File struct {
	Name string
	Size int64
	R    io.ReaderAt
}

// Scanner judges a whole file.
type Scanner interface {
	Scan(ctx context.Context, f File) (Verdict, error)
}

// StreamScanner judges a stream read once, from its start to its end.
// Implementations read r to io.EOF when the verdict is clean; they may stop
// early on a finding.
type StreamScanner interface {
	ScanStream(ctx context.Context, r io.Reader) (Verdict, error)
}
