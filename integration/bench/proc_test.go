package bench

import (
	"os"
	"os/exec"
	"testing"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// startLogged starts cmd (a peer server) with its output in logPath and returns a channel
// closed once it has exited and been reaped. The process dies with the benchmark, is killed by
// PID at cleanup, and its log's tail is shown if the benchmark failed.
func startLogged(b *testing.B, name string, cmd *exec.Cmd, logPath string) <-chan struct{} {
	b.Helper()
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = mftdtest.DieWithParent()
	if err := cmd.Start(); err != nil {
		logf.Close()
		b.Fatalf("start %s: %v", name, err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		logf.Close()
		close(exited)
	}()
	b.Cleanup(func() {
		cmd.Process.Kill() // by PID; a no-op once it has been reaped
		<-exited
		if b.Failed() {
			b.Logf("%s log:\n%s", name, tailFile(logPath, 16<<10))
		}
	})
	return exited
}
