package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/storage/state"
)

func TestAddressUnlock(t *testing.T) {
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "mftd.yaml")
	cfg := "data_dir: " + filepath.Join(dir, "data") + "\nhttps: {listen: 127.0.0.1:18999}\n"
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := state.Open(ctx, filepath.Join(dir, "data", "mftd.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
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

	run := func(args ...string) (string, error) {
		root := newRoot()
		var out bytes.Buffer
		root.SetOut(&out)
		root.SetErr(&out)
		root.SetArgs(append(args, "--config", cfgPath))
		err := root.Execute()
		return out.String(), err
	}
	if _, err := run("address", "unlock", "not-an-ip"); err == nil {
		t.Error("address unlock accepted a non-address")
	}
	out, err := run("address", "unlock", "192.0.2.7")
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
