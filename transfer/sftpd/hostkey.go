package sftpd

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"

	"golang.org/x/crypto/ssh"
)

// minRSAHostKeyBits is the smallest RSA host key LoadOrCreateHostKey accepts.
const minRSAHostKeyBits = 2048

// LoadOrCreateHostKey returns the SSH host key kept in path, generating an
// ed25519 key there on first use: the directory is created 0700 if missing,
// the file is written 0600 through a temporary file that is fsynced and then
// linked into place, so a crash leaves either no key or a whole one, and two
// processes starting at once end up with the same key.
//
// An existing file must be an unencrypted OpenSSH or PKCS#8 PEM key of type
// ed25519 or RSA (at least 2048 bits), readable by its owner only; anything
// else is an error and the file is never replaced, since clients pin the host
// key. The returned signer signs only with ssh-ed25519, or rsa-sha2-256 and
// rsa-sha2-512 (never SHA-1 ssh-rsa).
func LoadOrCreateHostKey(path string) (ssh.Signer, error) {
	if path == "" {
		return nil, errors.New("sftpd: host key: no file configured")
	}
	signer, err := loadHostKey(path)
	if !errors.Is(err, fs.ErrNotExist) {
		return signer, err
	}
	if err := createHostKey(path); err != nil {
		return nil, err
	}
	return loadHostKey(path)
}

// loadHostKey reads and checks the host key in path. A missing file is an
// error matching fs.ErrNotExist.
func loadHostKey(path string) (ssh.Signer, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, err
		}
		return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("sftpd: host key %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("sftpd: host key %s: permissions %#o give group or others access; chmod 600 it", path, perm)
	}
	const maxKeyFile = 64 << 10
	b, err := io.ReadAll(io.LimitReader(f, maxKeyFile+1))
	if err != nil {
		return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
	}
	if len(b) > maxKeyFile {
		return nil, fmt.Errorf("sftpd: host key %s: larger than %d bytes, not a key", path, maxKeyFile)
	}
	raw, err := ssh.ParseRawPrivateKey(b)
	if err != nil {
		var pm *ssh.PassphraseMissingError
		if errors.As(err, &pm) {
			return nil, fmt.Errorf("sftpd: host key %s: encrypted with a passphrase; mftd needs an unencrypted key", path)
		}
		return nil, fmt.Errorf("sftpd: host key %s: not a PEM private key: %w", path, err)
	}
	return hostSigner(path, raw)
}

// hostSigner turns a parsed private key into a signer restricted to the
// host key algorithms mftd offers.
func hostSigner(path string, raw any) (ssh.Signer, error) {
	var algos []string
	switch k := raw.(type) {
	case ed25519.PrivateKey, *ed25519.PrivateKey:
		algos = []string{ssh.KeyAlgoED25519}
	case *rsa.PrivateKey:
		if bits := k.N.BitLen(); bits < minRSAHostKeyBits {
			return nil, fmt.Errorf("sftpd: host key %s: RSA key of %d bits, want at least %d", path, bits, minRSAHostKeyBits)
		}
		algos = []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512}
	default:
		return nil, fmt.Errorf("sftpd: host key %s: key type %T is not supported; use ed25519 (or RSA)", path, raw)
	}
	s, err := ssh.NewSignerFromKey(raw)
	if err != nil {
		return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
	}
	as, ok := s.(ssh.AlgorithmSigner)
	if !ok {
		return nil, fmt.Errorf("sftpd: host key %s: signer cannot choose algorithms", path)
	}
	ms, err := ssh.NewSignerWithAlgorithms(as, algos)
	if err != nil {
		return nil, fmt.Errorf("sftpd: host key %s: %w", path, err)
	}
	return ms, nil
}

// createHostKey writes a new ed25519 key to path unless a file is already
// there (then it keeps that one).
func createHostKey(path string) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("sftpd: host key: create %s: %w", dir, err)
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return fmt.Errorf("sftpd: host key: generate: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(priv, "mftd host key")
	if err != nil {
		return fmt.Errorf("sftpd: host key: encode: %w", err)
	}
	tmp, err := os.CreateTemp(dir, ".hostkey-*")
	if err != nil {
		return fmt.Errorf("sftpd: host key: %w", err)
	}
	defer os.Remove(tmp.Name())
	werr := tmp.Chmod(0o600)
	if werr == nil {
		werr = pem.Encode(tmp, block)
	}
	if werr == nil {
		werr = tmp.Sync()
	}
	if cerr := tmp.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("sftpd: host key: write %s: %w", tmp.Name(), werr)
	}
	if err := install(tmp.Name(), path); err != nil {
		return fmt.Errorf("sftpd: host key: install %s: %w", path, err)
	}
	return syncDir(dir)
}

// install puts the complete file tmp in place at path. A link, unlike a
// rename, never replaces a key another process put there meanwhile: that one
// wins and is read back. Where the file system has no hard links, a rename
// (atomic, but last writer wins) is the fallback.
func install(tmp, path string) error {
	err := os.Link(tmp, path)
	if err == nil || errors.Is(err, fs.ErrExist) {
		return nil
	}
	if _, serr := os.Lstat(path); serr == nil {
		return nil
	}
	return os.Rename(tmp, path)
}

// syncDir makes a new directory entry in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sftpd: host key: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sftpd: host key: sync %s: %w", dir, err)
	}
	return nil
}
