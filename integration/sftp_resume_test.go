package integration

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// OpenSSH's sftp uploads 1 GiB into /upload/; the client (sftp and its ssh) is killed once a
// quarter of it is durable. The daemon keeps the partial, `ls -l /upload/` shows it with its
// durable size, `reput` resumes that same upload from there, and the file reaches Arrivals
// with the source's SHA-256; the partial is gone from /upload/ and from storage.
func TestSFTPResumeAfterClientKill(t *testing.T) {
	t.Parallel()
	const size = 1 << 30
	src, sum := genFile(t, "cohort.bin", size, 41)
	e := newSFTPEnv(t, mftdtest.Options{CheckpointBytes: "8MiB"})
	ctx := testCtx(t, 8*time.Minute)

	first := e.ssh.StartBatch(ctx, []string{"put " + src + " /upload/cohort.bin"})
	seen := waitDurable(t, ctx, e.d, first, e.user.Name, "cohort.bin", 256<<20)
	first.KillGroup()
	if r := first.Wait(30 * time.Second); r.Code == 0 {
		t.Fatalf("sftp put finished before it was killed (%d of %d bytes were durable then): %s", seen.Offset, size, transcript(r))
	}
	t.Logf("killed the sftp client with %d MiB durable", seen.Offset>>20)
	// The daemon sees the connection drop and keeps what it received as a partial.
	waitLog(t, e.d, 30*time.Second, `"msg":"upload left partial"`, seen.ID)

	resumeAndCheck(t, ctx, e, src, sum, size, seen)
}

// kill -9 of mftd in the middle of an OpenSSH sftp upload: after the restart the host key is
// the same (known_hosts pins it), the partial shows at least the bytes that were durable
// before the kill, `reput` completes it and the file reaches Arrivals with the right hash.
func TestSFTPResumeAfterDaemonKill(t *testing.T) {
	t.Parallel()
	const size = 512 << 20
	src, sum := genFile(t, "scan.bin", size, 42)
	e := newSFTPEnv(t, mftdtest.Options{CheckpointBytes: "8MiB"})
	ctx := testCtx(t, 8*time.Minute)

	first := e.ssh.StartBatch(ctx, []string{"put " + src + " /upload/scan.bin"})
	seen := waitDurable(t, ctx, e.d, first, e.user.Name, "scan.bin", 128<<20)
	e.d.Kill()
	t.Logf("killed mftd with %d MiB durable", seen.Offset>>20)
	if r := first.Wait(time.Minute); r.Code == 0 {
		t.Fatalf("sftp put reported success although mftd was killed mid-transfer: %s", transcript(r))
	}
	e.d.Launch()
	e.api = e.d.Client(e.api.Token) // the new process's certificate; the same session

	resumeAndCheck(t, ctx, e, src, sum, size, seen)
}

// resumeAndCheck runs `reput` in a new sftp login for the partial upload seen (of the source
// src, size bytes with SHA-256 sum) and checks the outcome.
func resumeAndCheck(t *testing.T, ctx context.Context, e *sftpEnv, src, sum string, size int64, seen uploadRow) {
	t.Helper()
	name := src[strings.LastIndexByte(src, '/')+1:]
	part := oneUpload(t, e.d, e.user.Name, name)
	if part.ID != seen.ID || part.Status != "uploading" || part.Offset < seen.Offset || part.Offset >= size {
		t.Fatalf("after the interruption the upload is %+v; want %s still uploading with %d <= offset < %d",
			part, seen.ID, seen.Offset, size)
	}

	remote := "/upload/" + name
	r := e.ssh.Batch(ctx, 5*time.Minute, []string{
		"ls -l /upload/",
		"reput " + src + " " + remote,
		"ls -l /upload/",
	})
	if r.Code != 0 {
		t.Fatalf("sftp reput: %s\ndaemon log about the upload:\n%s", transcript(r), uploadLog(t, e.d, part.ID))
	}
	t.Logf("sftp transcript of the resuming login:\n%s", r.Stdout)
	before := lsSizes(t, sectionOf(t, r.Stdout, "ls -l /upload/"))
	if got, ok := before[name]; !ok || got != part.Offset {
		t.Errorf("ls -l /upload/ before reput: %v; want %s with its durable size %d", before, name, part.Offset)
	}
	// The same upload was resumed from its durable offset, not started again.
	if l := logLines(t, e.d, `"msg":"resuming upload"`, part.ID, fmt.Sprintf(`"offset":%d`, part.Offset)); len(l) == 0 {
		t.Errorf("no daemon log line says upload %s resumed at offset %d; log about it:\n%s", part.ID, part.Offset, uploadLog(t, e.d, part.ID))
	}
	ss := sections(r.Stdout)
	if after := lsSizes(t, ss[len(ss)-1].out); len(after) != 0 {
		t.Errorf("ls -l /upload/ after reput lists %v; want it empty", after)
	}

	info := waitUpload(t, ctx, e, part.ID, 3*time.Minute)
	wantAvailable(t, info, size, sum)
	if a := findArrival(t, arrivals(t, ctx, e.api), name); a.SHA256 != sum || a.Size != size {
		t.Errorf("arrival %s: %d bytes, sha256 %s; want %d bytes, %s", name, a.Size, a.SHA256, size, sum)
	}
	if got, n := publishedSHA256(t, e.d, e.user.Name, name); got != sum || n != size {
		t.Errorf("published object of %s: %d bytes with SHA-256 %s, want %d bytes with %s", name, n, got, size, sum)
	}
	if ups := uploadsNamed(t, e.d, e.user.Name, name); len(ups) != 1 {
		t.Errorf("uploads named %s: %+v; want only the resumed one", name, ups)
	}
	wantPartialGone(t, e.d, e.user.Name, name, part.ID)
}
