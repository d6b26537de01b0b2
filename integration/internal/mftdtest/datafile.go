package mftdtest

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
)

// block is the unit the generator writes in.
const block = 1 << 20

// NewData returns a deterministic pseudo-random stream of size bytes: the same seed always gives
// the same bytes (ChaCha8 keyed by the seed), fast enough to generate GiBs in seconds.
func NewData(seed uint64, size int64) io.Reader {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	copy(key[8:], "mftd integration test data")
	return io.LimitReader(rand.NewChaCha8(key), size)
}

// WriteFile writes NewData(seed, size) to path in 1 MiB blocks and returns its SHA-256 (hex).
func WriteFile(path string, size int64, seed uint64) (string, error) {
	f, err := os.Create(path)
	if err != nil {
		return "", err
	}
	h := sha256.New()
	src := NewData(seed, size)
	buf := make([]byte, block)
	for left := size; left > 0; {
		n := int(min(left, block))
		if _, err := io.ReadFull(src, buf[:n]); err != nil {
			f.Close()
			return "", fmt.Errorf("generate %s: %w", path, err)
		}
		h.Write(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return "", fmt.Errorf("write %s: %w", path, err)
		}
		left -= int64(n)
	}
	if err := f.Close(); err != nil {
		return "", fmt.Errorf("write %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// SHA256Hex of data.
func SHA256Hex(data []byte) string {
	s := sha256.Sum256(data)
	return hex.EncodeToString(s[:])
}
