package integration

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// `mftd config check` accepts the minimal config and rejects a broken one, naming every bad key.
func TestConfigCheck(t *testing.T) {
	dir := t.TempDir()
	good := mftdtest.ConfigYAML(filepath.Join(dir, "data"), "127.0.0.1:8443", mftdtest.Options{CheckpointBytes: "8MiB"})
	goodPath := filepath.Join(dir, "good.yaml")
	if err := os.WriteFile(goodPath, []byte(good), 0o600); err != nil {
		t.Fatal(err)
	}
	r := mftdtest.RunBin(t, mftdBin, "", "config", "check", "--config", goodPath)
	if r.Code != 0 {
		t.Fatalf("config check of a valid config: exit %d\nstdout: %s\nstderr: %s\nconfig:\n%s", r.Code, r.Stdout, r.Stderr, good)
	}
	// Without clamd the config is valid, and the check says loudly that only the built-in checks run.
	const noClamd = "no malware scanner (scanner.clamd.address)"
	if !strings.Contains(r.Stdout+r.Stderr, noClamd) {
		t.Errorf("config check without clamd does not warn %q:\n%s%s", noClamd, r.Stdout, r.Stderr)
	}
	withClamd := good + "scanner: {clamd: {address: \"unix:///run/clamav/clamd.ctl\"}}\n"
	withPath := filepath.Join(dir, "clamd.yaml")
	if err := os.WriteFile(withPath, []byte(withClamd), 0o600); err != nil {
		t.Fatal(err)
	}
	if r := mftdtest.RunBin(t, mftdBin, "", "config", "check", "--config", withPath); r.Code != 0 || strings.Contains(r.Stdout+r.Stderr, noClamd) {
		t.Errorf("config check with clamd: exit %d, output %s%s; want 0 and no warning about clamd", r.Code, r.Stdout, r.Stderr)
	}

	bad := strings.Replace(good, "max_file_size: 1TiB", "max_file_size: 12 parsecs", 1) + "colour_scheme: dark\n"
	if bad == good+"colour_scheme: dark\n" {
		t.Fatal("test bug: the config has no max_file_size line to break")
	}
	badPath := filepath.Join(dir, "bad.yaml")
	if err := os.WriteFile(badPath, []byte(bad), 0o600); err != nil {
		t.Fatal(err)
	}
	r = mftdtest.RunBin(t, mftdBin, "", "config", "check", "--config", badPath)
	if r.Code == 0 {
		t.Fatalf("config check with an unknown key and a bad size: exit 0, want non-zero\nconfig:\n%s", bad)
	}
	out := r.Stdout + r.Stderr
	for _, key := range []string{"colour_scheme", "max_file_size"} {
		if !strings.Contains(out, key) {
			t.Errorf("config check output does not name the bad key %q:\n%s", key, out)
		}
	}
}
