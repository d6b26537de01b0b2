package integration

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// Account security at the SFTP door, end to end with OpenSSH's client: wrong codes typed at the
// SFTP prompt lock the account for both doors until an admin unlocks it; an emergency code is
// accepted once at the SFTP code prompt; a password change cuts an SFTP session that is already
// open at its next operation.
func TestSFTPAccountSecurity(t *testing.T) {
	needTools(t, "sftp", "ssh", "stdbuf")
	e := &accountEnv{notifyDir: t.TempDir()}
	e.d = startDaemon(t, mftdtest.Options{
		SFTP:      true,
		NotifyDir: e.notifyDir,
		Lockout:   mftdtest.Lockout{Threshold: 3, Window: "15m", Duration: "15m"},
	})
	for i, c := range []struct {
		name string
		test func(*testing.T, *accountEnv, *door)
	}{
		{"lockout", testSFTPLockout},
		{"emergency", testSFTPEmergencyCode},
		{"revocation", testSFTPRevocation},
	} {
		w := e.door(t, fmt.Sprintf("127.0.0.%d", 30+i))
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.test(t, e, w)
		})
	}
}

// sftpUser adds an account with an address and its SSH client.
func sftpUser(t *testing.T, e *accountEnv, name string) (mftdtest.User, *mftdtest.CodeSource, *mftdtest.SSHClient) {
	t.Helper()
	u := e.d.AddUserWith(name, passphrase(), name+"@example.org")
	codes := mftdtest.NewCodeSource(t, u)
	return u, codes, e.d.NewSSHClient(u, codes)
}

func testSFTPLockout(t *testing.T, e *accountEnv, w *door) {
	u, codes, c := sftpUser(t, e, "sven")
	ctx := testCtx(t, 3*time.Minute)
	for i := 1; i <= 3; i++ {
		r := c.WithCode("000000").Batch(ctx, time.Minute, []string{"ls /upload"})
		if r.Code == 0 {
			t.Fatalf("sftp login %d with a wrong code succeeded", i)
		}
	}
	// Locked for both doors: the right password and a valid code are refused.
	if r := c.Batch(ctx, time.Minute, []string{"ls /upload"}); r.Code == 0 {
		t.Fatalf("sftp login with the right code after 3 wrong ones succeeded (not locked):\n%s", transcript(r))
	}
	if st, body := w.login(t, u.Name, u.Password, mftdtest.Code(t, u.Secret, codes.At())); st != http.StatusUnauthorized {
		t.Fatalf("HTTPS login of an account locked at the SFTP door: %d %q, want 401", st, body)
	}
	if n := dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'auth.lockout' AND object = ?`, "account:"+u.Name); n != 1 {
		t.Errorf("%d auth.lockout audit records, want 1", n)
	}
	if n := len(logLines(t, e.d, `"login failed"`, `"door":"sftp"`)); n < 3 {
		t.Errorf("%d failed-login log lines name the sftp door, want at least 3", n)
	}
	if r := e.d.Admin("", "user", "unlock", u.Name); r.Code != 0 {
		t.Fatalf("mftd user unlock: exit %d: %s", r.Code, r.Stderr)
	}
	if r := c.Batch(ctx, time.Minute, []string{"ls /upload"}); r.Code != 0 {
		t.Fatalf("sftp login after unlock: %s", transcript(r))
	}
}

func testSFTPEmergencyCode(t *testing.T, e *accountEnv, w *door) {
	u, _, c := sftpUser(t, e, "erin")
	in := e.inbox(u.Name)
	ctx := testCtx(t, 3*time.Minute)
	st, body := w.call(t, http.MethodPost, "/api/v1/emergency/request", "", map[string]string{"username": u.Name, "password": u.Password})
	if st != http.StatusAccepted {
		t.Fatalf("emergency request: %d %q", st, body)
	}
	auth := eightDigits(t, in.next(t, "authorisation"))
	st, body = w.call(t, http.MethodPost, "/api/v1/emergency/verify", "", map[string]string{"username": u.Name, "password": u.Password, "code": auth})
	if st != http.StatusOK {
		t.Fatalf("emergency verify: %d %q", st, body)
	}
	var out struct {
		Code string `json:"emergency_code"`
	}
	if err := json.Unmarshal(body, &out); err != nil || len(out.Code) != 8 {
		t.Fatalf("emergency verify: body %q: %v", body, err)
	}
	src := filepath.Join(t.TempDir(), "note.txt")
	if err := os.WriteFile(src, []byte("uploaded in an emergency session\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ec := c.WithCode(out.Code)
	if r := ec.Batch(ctx, time.Minute, []string{"put " + src + " /upload/note.txt", "ls /arrivals"}); r.Code != 0 {
		t.Fatalf("sftp login with the emergency code at the code prompt: %s", transcript(r))
	}
	if n := dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'login' AND actor = ? AND result LIKE 'ok emergency-code%'`, u.Name); n != 1 {
		t.Errorf("%d emergency-code login audit records, want 1", n)
	}
	in.next(t, "signed in with an emergency code")
	if r := ec.Batch(ctx, time.Minute, []string{"ls /upload"}); r.Code == 0 {
		t.Errorf("the same emergency code worked twice at the SFTP door")
	}
}

func testSFTPRevocation(t *testing.T, e *accountEnv, w *door) {
	u, codes, c := sftpUser(t, e, "rolf")
	ctx := testCtx(t, 3*time.Minute)
	s := c.OpenSession(ctx)
	if _, err := s.Run("ls /upload", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	tok := e.d.Login(u, codes.At())
	next := passphrase()
	st, body := w.changePassword(t, tok, u.Password, next, mftdtest.Code(t, u.Secret, codes.At()))
	if st != http.StatusNoContent && st != http.StatusOK {
		t.Fatalf("password change: %d %q", st, body)
	}
	// The open session's next operation is refused (the daemon re-checks the session at every
	// operation), whatever the client then does.
	out, err := s.Run("ls /upload", 30*time.Second)
	if err == nil && !strings.Contains(strings.ToLower(out), "denied") && !strings.Contains(strings.ToLower(out), "failure") {
		t.Errorf("ls in an SFTP session opened before a password change: %q, want it refused", out)
	}
	s.Close(30 * time.Second)
}
