package config

import (
	"fmt"
	"strings"
)

// Error is every problem found in one configuration, so an administrator can
// fix them all at once. Parse, Load and Validate return it (as error); use
// errors.As to get at the problems.
type Error struct {
	Problems []Problem // at least one
}

// oneLine escapes line breaks, which a key or value quoted from the file
// may hold.
var oneLine = strings.NewReplacer("\n", `\n`, "\r", `\r`)

// Problem is one bad key or value.
type Problem struct {
	// Key is the dotted path of the key, e.g. "limits.max_file_size", with
	// [i] for list entries ("https.cors_origins[1]"); empty when the problem
	// is with the file as a whole (syntax, several documents).
	Key string
	Msg string
	// Line is the 1-based line in the file, 0 when not known (Validate on a
	// Config built in code).
	Line int
}

// Error prints one line per problem: "config: limits.max_file_size: ...".
func (e *Error) Error() string {
	var b strings.Builder
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// String prints the problem as one line.
func (p Problem) String() string {
	p.Key, p.Msg = oneLine.Replace(p.Key), oneLine.Replace(p.Msg)
	switch {
	case p.Key != "" && p.Line > 0:
		return fmt.Sprintf("config: %s: %s (line %d)", p.Key, p.Msg, p.Line)
	case p.Key != "":
		return fmt.Sprintf("config: %s: %s", p.Key, p.Msg)
	case p.Line > 0:
		return fmt.Sprintf("config: line %d: %s", p.Line, p.Msg)
	default:
		return "config: " + p.Msg
	}
}
