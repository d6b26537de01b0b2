//go:build !linux

package local

import "os"

const directAlign = 4096

// openDirect: direct I/O is used on Linux only.
func (b *Backend) openDirect(string, *os.File) *os.File { return nil }

// openDirectRead: direct I/O is used on Linux only.
func (b *Backend) openDirectRead(string, *os.File) *os.File { return nil }
