package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// TestSFTPSharesRemovalCutsOpenSession is issue 6's "removal takes effect on the very next
// request, including an open SFTP session", with OpenSSH's sftp: a member lists a share in an
// interactive session; the IAO removes them over the API; the same session's next `ls` of the
// share fails, /shares no longer shows it, and the session itself goes on (its Arrivals list).
func TestSFTPSharesRemovalCutsOpenSession(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	alice := newSFTPEnv(t, mftdtest.Options{})
	bob := addSFTPUser(t, alice.d, "bob")
	d := alice.d

	// bob runs project p1 (the CLI, as a system administrator) and its share cohort, where he
	// adds alice; alice moves an upload of hers into it.
	if r := d.Admin("", "project", "create", "p1", "--owner", "bob"); r.Code != 0 {
		t.Fatalf("mftd project create: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	sharesAPI(t, ctx, bob.api, http.MethodPost, "/api/v1/projects/p1/shares", `{"name":"cohort"}`, http.StatusCreated)
	sharesAPI(t, ctx, bob.api, http.MethodPut, "/api/v1/shares/cohort/members/alice", `{"outbound":false}`, http.StatusNoContent)
	data := readAllData(t, 4321, 7)
	r, err := alice.api.CreateWithUpload(ctx, int64(len(data)), map[string]string{"filename": "visits.csv"}, bytes.NewReader(data), int64(len(data)))
	if err != nil || r.Status != http.StatusCreated {
		t.Fatalf("tus create with upload: %v %v", r, err)
	}
	if info := waitTerminal(t, ctx, alice.api, alice.api.Resolve(r.Header.Get("Location")), time.Minute); info.Status != "available" {
		t.Fatalf("upload: %+v; want available", info)
	}
	sharesAPI(t, ctx, alice.api, http.MethodPost, "/api/v1/arrivals/visits.csv/move", `{"share":"cohort","path":"2024/visits.csv"}`, http.StatusCreated)

	// One interactive session: commands go in on stdin one at a time, each answered before
	// the next is sent ("-" before a command: sftp goes on after it fails).
	logins := len(logLines(t, d, `"msg":"login"`, `"proto":"sftp"`, `"user":"alice"`))
	s := startSFTPSession(t, ctx, alice.ssh)
	before := s.run(t, "ls -l /shares/cohort/2024")
	if got := lsSizes(t, before)["visits.csv"]; got != int64(len(data)) {
		t.Fatalf("ls -l /shares/cohort/2024 before removal: %q; want visits.csv of %d bytes", before, len(data))
	}
	if out := s.run(t, "ls /shares"); !strings.Contains(strings.Join(out, "\n"), "cohort") {
		t.Fatalf("ls /shares before removal: %q; want cohort", out)
	}

	sharesAPI(t, ctx, bob.api, http.MethodDelete, "/api/v1/shares/cohort/members/alice", "", http.StatusNoContent)

	after := s.run(t, "-ls -l /shares/cohort/2024")
	if joined := strings.Join(after, "\n"); strings.Contains(joined, "visits.csv") || !strings.Contains(joined, "not found") {
		t.Errorf("ls -l /shares/cohort/2024 after removal: %q; want it not found", after)
	}
	if out := s.run(t, "-ls /shares/cohort"); !strings.Contains(strings.Join(out, "\n"), "not found") {
		t.Errorf("ls /shares/cohort after removal: %q; want it not found", out)
	}
	if out := s.run(t, "ls /shares"); strings.Contains(strings.Join(out, "\n"), "cohort") {
		t.Errorf("ls /shares after removal: %q; want no cohort", out)
	}
	if out := s.run(t, "ls /upload"); len(out) != 0 {
		t.Errorf("ls /upload after removal: %q; want the session working and nothing there", out)
	}
	res := s.close(t)
	if res.Code != 0 {
		t.Errorf("sftp session: %s", transcript(res))
	}
	if n := len(logLines(t, d, `"msg":"login"`, `"proto":"sftp"`, `"user":"alice"`)) - logins; n != 1 {
		t.Errorf("%d logins of alice during the session; want 1 (one open session throughout)", n)
	}

	// The refused listings are in the audit trail, with alice's address.
	db := openStateDB(t, d)
	rows := queryRows(t, db, `SELECT actor || ' ' || action_name || ' ' || object || ' ' || result || ' ' || remote_addr
		FROM audit WHERE actor = 'alice' AND action_name = 'share.files' AND result LIKE 'denied%' ORDER BY seq`)
	if len(rows) == 0 {
		t.Errorf("no audit record of alice's refused listing of cohort")
	}
	for _, row := range rows {
		if !strings.Contains(row, "share:cohort") || !strings.Contains(row, "127.0.0.1:") {
			t.Errorf("audit record %q; want the share and alice's address", row)
		}
	}
	// bob lists what is left: the file is still in the share.
	var files struct {
		Files []struct{ Path string } `json:"files"`
	}
	body := sharesAPI(t, ctx, bob.api, http.MethodGet, "/api/v1/shares/cohort/files", "", http.StatusOK)
	if err := json.Unmarshal(body, &files); err != nil || len(files.Files) != 1 || files.Files[0].Path != "2024/visits.csv" {
		t.Errorf("GET /api/v1/shares/cohort/files as the IAO: %s (%v); want 2024/visits.csv", body, err)
	}
}

// sharesAPI sends one JSON API request as c and fails the test unless the answer has status
// want; it returns the body.
func sharesAPI(t *testing.T, ctx context.Context, c *mftdtest.Client, method, p, body string, want int) []byte {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	u, err := url.JoinPath(c.Base, p)
	if err != nil {
		t.Fatal(err)
	}
	req, err := http.NewRequestWithContext(ctx, method, u, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, p, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, p, err)
	}
	if resp.StatusCode != want {
		t.Fatalf("%s %s: %d %s; want %d", method, p, resp.StatusCode, b, want)
	}
	return b
}

// sftpSession is OpenSSH's sftp reading its commands from a pipe (`-b -`), kept open between
// commands: one login, one SSH connection, one SFTP session for everything sent.
type sftpSession struct {
	proc  *mftdtest.Proc
	stdin *os.File
	seen  int // transcript sections already answered
}

func startSFTPSession(t *testing.T, ctx context.Context, c *mftdtest.SSHClient) *sftpSession {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	args := append([]string{"-oL", "-eL", "sftp", "-P", c.Port}, c.SSHOptions()...)
	cmd := c.Command(ctx, "stdbuf", append(args, "-b", "-", c.Target())...)
	cmd.Stdin = r
	s := &sftpSession{proc: c.Start(cmd), stdin: w}
	r.Close() // the child holds its own copy
	return s
}

// run sends one command and returns its output, once the transcript shows the next command's
// echo (a marker sent right after it) or the session ends.
func (s *sftpSession) run(t *testing.T, command string) []string {
	t.Helper()
	if _, err := io.WriteString(s.stdin, command+"\npwd\n"); err != nil {
		t.Fatalf("sftp: send %q: %v\n%s", command, err, s.proc.Output())
	}
	deadline := time.Now().Add(time.Minute)
	for {
		secs := sections(s.proc.Output())
		// The command's section is complete once the marker's output ("Remote working
		// directory: ...") has arrived after it.
		if len(secs) >= s.seen+2 && len(secs[s.seen+1].out) > 0 {
			out := secs[s.seen].out
			if strings.TrimPrefix(secs[s.seen].cmd, "-") != strings.TrimPrefix(command, "-") {
				t.Fatalf("sftp transcript out of step: %q where %q was sent\n%s", secs[s.seen].cmd, command, s.proc.Output())
			}
			s.seen += 2
			return out
		}
		select {
		case <-s.proc.Done():
			t.Fatalf("sftp ended while running %q:\n%s", command, s.proc.Output())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sftp: no answer to %q within a minute:\n%s", command, s.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// close ends the session with bye and waits for sftp to exit.
func (s *sftpSession) close(t *testing.T) mftdtest.Result {
	t.Helper()
	if _, err := io.WriteString(s.stdin, "bye\n"); err != nil {
		t.Fatalf("sftp: send bye: %v", err)
	}
	s.stdin.Close()
	return s.proc.Wait(time.Minute)
}
