package authn

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/mftd/mftd/storage/state"
)

func authorizedKey(t *testing.T) (ssh.PublicKey, []byte) {
	t.Helper()
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, err := ssh.NewPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return sp, append(ssh.MarshalAuthorizedKey(sp)[:len(ssh.MarshalAuthorizedKey(sp))-1], []byte(" alice@laptop\n")...)
}

// Keys: registered once, for one account; KeyRegistered knows only them;
// LoginKey needs the code and counts failures like a wrong password.
func TestSSHKeys(t *testing.T) {
	f := newFixture(t)
	f.svc.cfg.Lockout = state.FailureLimits{Threshold: 5, Window: time.Hour, LockFor: time.Hour}
	ctx := context.Background()
	alice := f.addAccount("alice", "correct horse battery staple")
	f.addAccount("bob", "another long passphrase here")
	key, line := authorizedKey(t)
	other, _ := authorizedKey(t)

	pub, comment, err := ParseSSHKey(line)
	if err != nil || comment != "alice@laptop" || ssh.FingerprintSHA256(pub) != ssh.FingerprintSHA256(key) {
		t.Fatalf("ParseSSHKey = %v, %q, %v", pub, comment, err)
	}
	fp := ssh.FingerprintSHA256(pub)
	if err := f.db.AddSSHKey(ctx, state.SSHKey{Fingerprint: fp, AccountID: alice.ID, Wire: pub.Marshal()}); err != nil {
		t.Fatal(err)
	}
	if err := f.db.AddSSHKey(ctx, state.SSHKey{Fingerprint: fp, AccountID: alice.ID + 1, Wire: pub.Marshal()}); !errors.Is(err, state.ErrExist) {
		t.Errorf("the same key registered for a second account: %v", err)
	}
	for _, bad := range []string{"", "ssh-ed25519 AAAA", string(line) + string(line), `command="ls" ` + string(line)} {
		if _, _, err := ParseSSHKey([]byte(bad)); err == nil {
			t.Errorf("ParseSSHKey(%.30q) succeeded", bad)
		}
	}
	small, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(&small.PublicKey)
	if _, _, err := ParseSSHKey(ssh.MarshalAuthorizedKey(sp)); err == nil || !strings.Contains(err.Error(), "3072") {
		t.Errorf("a 2048-bit RSA key: %v, want refused", err)
	}

	for _, c := range []struct {
		user string
		key  ssh.PublicKey
		want bool
	}{{"alice", key, true}, {"Alice", key, true}, {"bob", key, false}, {"alice", other, false}, {"nobody", key, false}} {
		if got, err := f.svc.KeyRegistered(ctx, c.user, c.key.Marshal()); err != nil || got != c.want {
			t.Errorf("KeyRegistered(%s, %s) = %v, %v; want %v", c.user, ssh.FingerprintSHA256(c.key), got, err, c.want)
		}
	}

	before := f.auditCount()
	if _, err := f.svc.LoginKey(ctx, "alice", key.Marshal(), wrongCode(t, alice.secret, f.now), "192.0.2.1:5000"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("LoginKey with a wrong code: %v", err)
	}
	if n, err := f.db.FailureCount(ctx, state.FailAccount, "alice", f.now, time.Hour); err != nil || n != 1 {
		t.Errorf("failures after a wrong code: %d, %v; want 1", n, err)
	}
	if _, err := f.svc.LoginKey(ctx, "alice", other.Marshal(), code(t, alice.secret, f.now), "192.0.2.1:5000"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("LoginKey with an unregistered key and the right code: %v", err)
	}
	f.now = f.now.Add(30 * time.Second) // the right code above was not consumed, but use a fresh step
	sess, err := f.svc.LoginKey(ctx, "alice", key.Marshal(), code(t, alice.secret, f.now), "192.0.2.1:5000")
	if err != nil {
		t.Fatalf("LoginKey: %v", err)
	}
	if a := f.lastAudit(); a.action != "login" || !strings.Contains(a.result, "sftp key "+fp) {
		t.Errorf("audit of the key login: %+v", a)
	}
	if id, err := f.svc.Authenticate(ctx, sess.Token); err != nil || id.User != "alice" {
		t.Errorf("the key login's session: %+v, %v", id, err)
	}
	if f.auditCount() != before+3 {
		t.Errorf("audit records: %d new, want 3 (two failures, one login)", f.auditCount()-before)
	}

	// Disabled accounts' keys count for nothing.
	if err := f.db.SetDisabled(ctx, alice.ID, true); err != nil {
		t.Fatal(err)
	}
	if ok, _ := f.svc.KeyRegistered(ctx, "alice", key.Marshal()); ok {
		t.Error("a disabled account's key is registered")
	}
}

// LoginPassword is the HTTPS login's check at the SFTP door.
func TestLoginPassword(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()
	alice := f.addAccount("alice", "correct horse battery staple")
	if _, err := f.svc.LoginPassword(ctx, "alice", "wrong password here", code(t, alice.secret, f.now), "192.0.2.1:5000"); !errors.Is(err, ErrBadCredentials) {
		t.Fatalf("wrong password: %v", err)
	}
	sess, err := f.svc.LoginPassword(ctx, "alice", alice.password, code(t, alice.secret, f.now), "192.0.2.1:5000")
	if err != nil {
		t.Fatalf("LoginPassword: %v", err)
	}
	if a := f.lastAudit(); a.action != "login" || a.result != "ok sftp password" {
		t.Errorf("audit: %+v", a)
	}
	if _, err := f.svc.Authenticate(ctx, sess.Token); err != nil {
		t.Error(err)
	}
}
