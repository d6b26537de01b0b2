// Package scannertest gives the tests of packages that need a Scanner the
// real built-in checks, with the daemon's defaults, and no clamd.
package scannertest

import (
	"testing"

	"github.com/mftd/mftd/scanner"
)

// Builtin returns a Checker running the built-in checks only, refusing files
// over maxSize bytes (0: no limit) and the default denied types.
func Builtin(tb testing.TB, maxSize int64) scanner.Scanner {
	tb.Helper()
	b, err := scanner.NewBuiltin(scanner.BuiltinConfig{MaxSize: maxSize, DenyTypes: scanner.DefaultDenyTypes(), TempDir: tb.TempDir()})
	if err != nil {
		tb.Fatalf("scanner.NewBuiltin: %v", err)
	}
	return scanner.NewChecker(b, nil)
}
