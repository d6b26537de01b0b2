//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package state

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"
	"time"
)

// fileLocker serialises migrations between processes with flock(2) on a lock
// file next to the database. It is held around the whole of goose's Up (its
// pending check included), so when the daemon and an admin command open a
// fresh database at the same moment, one migrates and the other then finds
// nothing pending. (goose's own WithLocker hook is taken only after that
// check, and racing creators of its version table back off a whole second.)
// The kernel drops the lock if the process dies.
//
// It locks a separate file, never the database itself: closing any descriptor
// of the database file would release SQLite's POSIX locks on it.
type fileLocker struct {
	path string

	mu sync.Mutex
	f  *os.File
}

func newMigrateLocker(dbPath string) *fileLocker {
	return &fileLocker{path: dbPath + "-migrate.lock"}
}

// Lock blocks until the lock is held or ctx is done.
func (l *fileLocker) Lock(ctx context.Context) error {
	f, err := os.OpenFile(l.path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return fmt.Errorf("open migration lock %s: %w", l.path, err)
	}
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		if err == nil {
			break
		}
		if !errors.Is(err, syscall.EWOULDBLOCK) && !errors.Is(err, syscall.EINTR) {
			f.Close()
			return fmt.Errorf("take migration lock %s: %w", l.path, err)
		}
		select {
		case <-ctx.Done():
			f.Close()
			return fmt.Errorf("wait for migration lock %s: %w", l.path, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
	l.mu.Lock()
	l.f = f
	l.mu.Unlock()
	return nil
}

// Unlock releases the lock taken by Lock.
func (l *fileLocker) Unlock() error {
	l.mu.Lock()
	f := l.f
	l.f = nil
	l.mu.Unlock()
	if f == nil {
		return nil
	}
	// Closing the only descriptor releases the flock.
	return f.Close()
}
