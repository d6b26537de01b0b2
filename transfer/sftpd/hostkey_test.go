package sftpd

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/crypto/ssh"
)

func TestHostKeyCreatedOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data", "ssh")
	path := filepath.Join(dir, "host_ed25519_key")

	first, err := LoadOrCreateHostKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := first.PublicKey().Type(); got != ssh.KeyAlgoED25519 {
		t.Fatalf("key type %q, want %q", got, ssh.KeyAlgoED25519)
	}
	assertAlgorithms(t, first, []string{ssh.KeyAlgoED25519})
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %#o, want 0600", perm)
	}
	di, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if perm := di.Mode().Perm(); perm != 0o700 {
		t.Errorf("key dir mode %#o, want 0700", perm)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".hostkey-*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
	// The file is an OpenSSH key that ssh-keygen and sshd could read too.
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := pem.Decode(before); b == nil || b.Type != "OPENSSH PRIVATE KEY" {
		t.Fatalf("key file is not an OpenSSH PEM key")
	}

	second, err := LoadOrCreateHostKey(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(first.PublicKey().Marshal(), second.PublicKey().Marshal()) {
		t.Fatal("second start got a different host key")
	}
	after, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("key file rewritten on second start")
	}
}

func TestHostKeyConcurrentFirstStartsAgree(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host_key")
	const n = 8
	keys := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			s, err := LoadOrCreateHostKey(path)
			errs[i] = err
			if err == nil {
				keys[i] = s.PublicKey().Marshal()
			}
		})
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("start %d: %v", i, errs[i])
		}
		if !bytes.Equal(keys[i], keys[0]) {
			t.Fatalf("start %d got a different key than start 0", i)
		}
	}
}

func TestHostKeyRSA(t *testing.T) {
	path := filepath.Join(t.TempDir(), "host_rsa_key")
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	writeKey(t, path, k, 0o600)
	s, err := LoadOrCreateHostKey(path)
	if err != nil {
		t.Fatal(err)
	}
	// Never SHA-1 "ssh-rsa".
	assertAlgorithms(t, s, []string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512})
}

func TestHostKeyRefused(t *testing.T) {
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	smallRSA, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	_, edKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := ssh.MarshalPrivateKeyWithPassphrase(edKey, "", []byte("secret"))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name  string
		write func(t *testing.T, path string)
		want  string
	}{
		{"group-readable", func(t *testing.T, path string) { writeKey(t, path, edKey, 0o640) }, "group or others"},
		{"world-readable", func(t *testing.T, path string) { writeKey(t, path, edKey, 0o604) }, "group or others"},
		{"ecdsa", func(t *testing.T, path string) { writeKey(t, path, ecKey, 0o600) }, "not supported"},
		{"rsa-1024", func(t *testing.T, path string) { writeKey(t, path, smallRSA, 0o600) }, "1024 bits"},
		{"encrypted", func(t *testing.T, path string) { writeFile(t, path, pem.EncodeToMemory(encrypted), 0o600) }, "passphrase"},
		{"garbage", func(t *testing.T, path string) { writeFile(t, path, []byte("not a key\n"), 0o600) }, "not a PEM private key"},
		{"empty", func(t *testing.T, path string) { writeFile(t, path, nil, 0o600) }, "not a PEM private key"},
		{"directory", func(t *testing.T, path string) {
			if err := os.Mkdir(path, 0o700); err != nil {
				t.Fatal(err)
			}
		}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "host_key")
			tt.write(t, path)
			before, _ := os.ReadFile(path)
			_, err := LoadOrCreateHostKey(path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one containing %q", err, tt.want)
			}
			if !strings.Contains(err.Error(), path) {
				t.Errorf("error %q does not name the file", err)
			}
			after, _ := os.ReadFile(path)
			if !bytes.Equal(before, after) {
				t.Error("refused key file was changed")
			}
		})
	}
}

func TestHostKeyNoPath(t *testing.T) {
	if _, err := LoadOrCreateHostKey(""); err == nil {
		t.Fatal("empty path accepted")
	}
}

func assertAlgorithms(t *testing.T, s ssh.Signer, want []string) {
	t.Helper()
	ms, ok := s.(ssh.MultiAlgorithmSigner)
	if !ok {
		t.Fatalf("signer %T does not restrict its algorithms", s)
	}
	if diff := cmp.Diff(want, ms.Algorithms()); diff != "" {
		t.Errorf("host key algorithms (-want +got):\n%s", diff)
	}
}

func writeKey(t *testing.T, path string, key any, mode os.FileMode) {
	t.Helper()
	b, err := ssh.MarshalPrivateKey(key, "")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, path, pem.EncodeToMemory(b), mode)
}

func writeFile(t *testing.T, path string, b []byte, mode os.FileMode) {
	t.Helper()
	if err := os.WriteFile(path, b, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(path, mode); err != nil { // past the umask
		t.Fatal(err)
	}
}
