package main

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/mftd/mftd/storage/state"
)

// adminCLI writes a minimal config into a temp folder, opens its state database (closed at
// cleanup) and returns it with a function that runs an mftd command against that config, with
// stdin as its standard input, and returns what it printed.
func adminCLI(t *testing.T) (*state.DB, func(stdin []byte, args ...string) (string, error)) {
	t.Helper()
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mftd.yaml")
	cfg := "data_dir: " + filepath.Join(dir, "data") + "\nhttps: {listen: 127.0.0.1:18999}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	db, err := state.Open(context.Background(), filepath.Join(dir, "data", "mftd.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, func(stdin []byte, args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetIn(bytes.NewReader(stdin))
		root.SetArgs(append(args, "--config", cfgPath))
		err := root.Execute()
		return out.String(), err
	}
}

func TestAddressUnlock(t *testing.T) {
	db, run := adminCLI(t)
	ctx := context.Background()
	now := time.Now()
	limits := state.FailureLimits{Threshold: 2, Window: time.Hour, LockFor: time.Hour}
	for i := 0; i < 2; i++ {
		if _, _, _, err := db.RecordFailure(ctx, state.FailAddress, "192.0.2.7", now, limits); err != nil {
			t.Fatal(err)
		}
	}
	if until, _ := db.LockedUntil(ctx, state.FailAddress, "192.0.2.7", now); until.IsZero() {
		t.Fatal("setup: the address is not locked")
	}
	before, _ := db.VerifyAudit(ctx)

	if _, err := run(nil, "address", "unlock", "not-an-ip"); err == nil {
		t.Error("address unlock accepted a non-address")
	}
	out, err := run(nil, "address", "unlock", "192.0.2.7")
	if err != nil || !strings.Contains(out, "unlocked 192.0.2.7") {
		t.Fatalf("address unlock = %q, %v", out, err)
	}
	if until, err := db.LockedUntil(ctx, state.FailAddress, "192.0.2.7", now); err != nil || !until.IsZero() {
		t.Errorf("after unlock: locked until %v, %v; want unlocked", until, err)
	}
	if after, err := db.VerifyAudit(ctx); err != nil || after != before+1 {
		t.Errorf("audit records %d -> %d (%v); want one more", before, after, err)
	}
}

// mftd user add-key registers one key line read from stdin (audited),
// refuses a second registration and bad lines, and remove-key unregisters it.
func TestUserAddKey(t *testing.T) {
	db, run := adminCLI(t)
	ctx := context.Background()
	acct, err := db.CreateAccount(ctx, state.Account{Name: "alice", PasswordHash: "x", TOTPSecret: "x"})
	if err != nil {
		t.Fatal(err)
	}
	pub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sp, _ := ssh.NewPublicKey(pub)
	line := ssh.MarshalAuthorizedKey(sp)
	fp := ssh.FingerprintSHA256(sp)

	before, _ := db.VerifyAudit(ctx)
	out, err := run(line, "user", "add-key", "alice")
	if err != nil || strings.TrimSpace(out) != fp {
		t.Fatalf("user add-key = %q, %v; want the fingerprint %s", out, err, fp)
	}
	if k, err := db.SSHKeyOf(ctx, acct.ID, fp); err != nil || !bytes.Equal(k.Wire, sp.Marshal()) {
		t.Fatalf("registered key: %+v, %v", k, err)
	}
	if after, _ := db.VerifyAudit(ctx); after != before+1 {
		t.Errorf("audit records: %d new, want 1", after-before)
	}
	if _, err := run(line, "user", "add-key", "alice"); err == nil || !strings.Contains(err.Error(), "registered already") {
		t.Errorf("second add-key: %v", err)
	}
	if _, err := run([]byte("not a key"), "user", "add-key", "alice"); err == nil {
		t.Error("add-key accepted a line that is not a key")
	}
	if _, err := run(line, "user", "add-key", "nobody"); err == nil {
		t.Error("add-key for a missing user succeeded")
	}
	if _, err := run(nil, "user", "remove-key", "alice", fp); err != nil {
		t.Fatalf("remove-key: %v", err)
	}
	if _, err := db.SSHKeyOf(ctx, acct.ID, fp); err == nil {
		t.Error("the key is still registered after remove-key")
	}
}
