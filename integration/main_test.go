// Package integration runs the built mftd binary against real clients over the wire: tus-js-client
// under Node, a Go tus client, a fault-injecting TCP proxy, kill -9 and SIGTERM.
//
// Run from the repository root after integration/scripts/setup.sh:
//
//	go test ./integration/
//
// A missing component (node, the npm modules) fails the run; nothing is skipped. MFTD_BIN, if set,
// names an mftd binary to test instead of building ./cmd/mftd.
package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// Set once by TestMain.
var (
	mftdBin  string // the binary built from ./cmd/mftd
	repoRoot string
	nodeDir  string // integration/node, holding upload.mjs and node_modules
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	var err error
	repoRoot, err = mftdtest.RepoRoot()
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	nodeDir = filepath.Join(repoRoot, "integration", "node")
	var missing []string
	if _, err := exec.LookPath("node"); err != nil {
		missing = append(missing, "node is not on PATH (install Node.js 18 or newer)")
	}
	if _, err := os.Stat(filepath.Join(nodeDir, "node_modules", "tus-js-client", "package.json")); err != nil {
		missing = append(missing, "integration/node/node_modules/tus-js-client is not installed")
	}
	if len(missing) > 0 {
		for _, m := range missing {
			fmt.Fprintln(os.Stderr, "integration: FAIL:", m)
		}
		fmt.Fprintln(os.Stderr, "integration: run `bash integration/scripts/setup.sh` from the repository root, then rerun the tests")
		return 1
	}

	if mftdBin = os.Getenv("MFTD_BIN"); mftdBin != "" {
		fmt.Fprintln(os.Stderr, "integration: testing MFTD_BIN =", mftdBin)
		return m.Run()
	}
	dir, err := os.MkdirTemp("", "mftd-integration-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration:", err)
		return 1
	}
	defer os.RemoveAll(dir)
	mftdBin, err = mftdtest.Build(repoRoot, dir)
	if err != nil {
		fmt.Fprintln(os.Stderr, "integration: FAIL:", err)
		return 1
	}
	return m.Run()
}
