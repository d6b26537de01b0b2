package integration

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// The configuration file is edited while mftd runs, as an administrator's editor does (a new file
// renamed over the old one): a retention of 2s deletes an Arrival within a sweep, object and all,
// with an arrival.expire and a config.reload audit record; an invalid edit is refused, named by
// key in the log, and the previous configuration keeps running (a later upload still expires
// after 2s); log.level: debug applies without a restart.
func TestReloadRetention(t *testing.T) {
	t.Parallel()
	d := startDaemon(t, mftdtest.Options{SweepInterval: "1s"})
	ctx := testCtx(t, 3*time.Minute)
	user, c := d.NewUser("rhea")
	original, err := os.ReadFile(d.ConfigPath)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(original), "arrivals: 720h,") || !strings.Contains(string(original), "log: {level: info,") {
		t.Fatalf("the harness's config changed shape; this test edits it by text:\n%s", original)
	}
	edit := func(content string) string {
		t.Helper()
		tmp := d.ConfigPath + ".tmp"
		if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, d.ConfigPath); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(content))
		return hex.EncodeToString(sum[:])
	}
	upload := func(name string, seed uint64) mftdtest.Arrival {
		t.Helper()
		data := readAllData(t, 64<<10, seed)
		sum := sha256.Sum256(data)
		url := tusUpload(t, ctx, c, name, data)
		wantAvailable(t, waitTerminal(t, ctx, c, url, time.Minute), int64(len(data)), hex.EncodeToString(sum[:]))
		// Under a short retention it may be gone again already.
		for _, f := range arrivals(t, ctx, c) {
			if f.Name == name {
				return f
			}
		}
		return mftdtest.Arrival{}
	}
	objectPath := func(name string) string {
		return filepath.Join(d.DataDir, "objects", "arrivals", user.Name, name)
	}
	waitGone := func(name string, within time.Duration) {
		t.Helper()
		deadline := time.Now().Add(within)
		for {
			found := false
			for _, f := range arrivals(t, ctx, c) {
				found = found || f.Name == name
			}
			if !found {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s still listed in Arrivals %v after the retention change", name, within)
			}
			time.Sleep(100 * time.Millisecond)
		}
		if _, err := os.Stat(objectPath(name)); !os.IsNotExist(err) {
			t.Errorf("%s: the object is still stored (%v)", name, err)
		}
	}
	audits := func(action, object, resultLike string) int {
		return dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = ? AND object = ? AND result LIKE ?`,
			action, object, resultLike)
	}

	// 1. Under the 720h retention the file stays and says so.
	first := upload("first.csv", 1)
	if got := first.ExpiresAt.Sub(first.CreatedAt); got != 720*time.Hour {
		t.Errorf("expires_at - created_at = %v, want 720h", got)
	}
	if debugLines(t, d) != 0 {
		t.Fatal("debug lines in the log at log.level info")
	}

	// 2. retention.arrivals: 2s, every other key as it was.
	twoSeconds := strings.Replace(string(original), "arrivals: 720h,", "arrivals: 2s,", 1)
	applied := edit(twoSeconds)
	waitGone("first.csv", 2*time.Second+time.Second+10*time.Second) // retention + a sweep + slack
	if n := audits("arrival.expire", "arrivals/"+user.Name+"/first.csv", "deleted%"); n != 1 {
		t.Errorf("arrival.expire audit records for first.csv: %d, want 1", n)
	}
	if n := audits("config.reload", applied, "applied%retention.arrivals%"); n != 1 {
		t.Errorf("config.reload audit records (applied, naming retention.arrivals) with the file's SHA-256: %d, want 1", n)
	}

	// 3. An invalid edit: refused, the bad key named, the daemon keeps its configuration.
	bad := edit(strings.Replace(string(original), "arrivals: 720h,", "arrivals: banana,", 1))
	waitLog(t, d, 10*time.Second, "configuration file rejected", "config: retention.arrivals:")
	if n := audits("config.reload", bad, "rejected: 1 problem"); n != 1 {
		t.Errorf("config.reload audit records of the rejected file: %d, want 1", n)
	}
	if !d.Running() {
		t.Fatal("mftd stopped after an invalid configuration file")
	}
	upload("second.csv", 2)
	waitGone("second.csv", 2*time.Second+time.Second+10*time.Second) // still 2s, not 720h

	// 4. log.level: debug applies live.
	if debugLines(t, d) != 0 {
		t.Fatal("debug lines in the log before log.level was changed")
	}
	debug := edit(strings.Replace(twoSeconds, "log: {level: info,", "log: {level: debug,", 1))
	waitAudit := time.Now().Add(10 * time.Second)
	for audits("config.reload", debug, "applied%log.level%") != 1 {
		if time.Now().After(waitAudit) {
			t.Fatal("no config.reload record for the log.level change")
		}
		time.Sleep(100 * time.Millisecond)
	}
	upload("third.csv", 3)
	if debugLines(t, d) == 0 {
		t.Error("no debug line in the log after log.level: debug was applied")
	}
}

// debugLines counts the JSON log lines at level debug.
func debugLines(t *testing.T, d *mftdtest.Daemon) int {
	t.Helper()
	return len(logLines(t, d, `"level":"debug"`))
}
