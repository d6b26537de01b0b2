//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package state

import "context"

// noLocker is used where flock(2) is unavailable: migrations are then not
// serialised between processes, so start one process on a fresh database
// before the others.
type noLocker struct{}

func newMigrateLocker(string) noLocker { return noLocker{} }

func (noLocker) Lock(context.Context) error { return nil }
func (noLocker) Unlock() error              { return nil }
