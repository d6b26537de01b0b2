package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/cmd/mftd/config"
)

func TestEnsureSelfSignedOnceAndKept(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	cert, key, err := ensureSelfSigned(dir, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	first, err := os.ReadFile(cert)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(key); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key file mode = %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatalf("generated pair does not load: %v", err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	if err := leaf.VerifyHostname("127.0.0.1"); err != nil {
		t.Errorf("certificate does not cover 127.0.0.1: %v", err)
	}
	if err := leaf.VerifyHostname("localhost"); err != nil {
		t.Errorf("certificate does not cover localhost: %v", err)
	}
	if !leaf.IPAddresses[1].Equal(net.IPv6loopback) {
		t.Errorf("certificate IPs = %v, want ::1 too", leaf.IPAddresses)
	}
	// A second start reuses the same certificate (clients may have pinned it).
	if _, _, err := ensureSelfSigned(dir, zaptest.NewLogger(t)); err != nil {
		t.Fatal(err)
	}
	again, _ := os.ReadFile(cert)
	if !bytes.Equal(first, again) {
		t.Error("a second start generated a new certificate")
	}
}

func TestReadPassword(t *testing.T) {
	tests := []struct {
		in, want, err string
	}{
		{in: "correct horse battery\n", want: "correct horse battery"},
		{in: "correct horse battery\r\n", want: "correct horse battery"},
		{in: "no newline at all!", want: "no newline at all!"},
		{in: "short\n", err: "at least 12"},
		{in: "", err: "at least 12"},
		{in: strings.Repeat("x", 1025) + "\n", err: "at most 1024"},
		{in: "\xff\xfe invalid utf8 pw\n", err: "UTF-8"},
		{in: "first line is long enough\nsecond line ignored\n", want: "first line is long enough"},
	}
	for _, tt := range tests {
		got, err := readPassword(strings.NewReader(tt.in))
		if tt.err != "" {
			if err == nil || !strings.Contains(err.Error(), tt.err) {
				t.Errorf("readPassword(%q) = %q, %v; want error containing %q", tt.in, got, err, tt.err)
			}
			continue
		}
		if err != nil || got != tt.want {
			t.Errorf("readPassword(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
	}
}

// Start and `mftd config check` say when the S3 part size caps files below
// limits.max_file_size, and by how much.
func TestWarningsPartSizeCap(t *testing.T) {
	cfg := config.Default()
	for _, w := range warnings(cfg) {
		if strings.Contains(w, "part_size") {
			t.Fatalf("local storage warns about the S3 part size: %q", w)
		}
	}
	cfg.Storage.Backend = "s3"
	var found string
	for _, w := range warnings(cfg) {
		if strings.Contains(w, "storage.s3.part_size") {
			found = w
		}
	}
	if !strings.Contains(found, "files over 160000MiB are refused") {
		t.Fatalf("s3 with 16MiB parts and a 1TiB limit: warnings lack the cap; got %q", found)
	}
}
