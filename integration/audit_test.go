package integration

import (
	"bytes"
	"database/sql"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	_ "modernc.org/sqlite" // driver "sqlite", to tamper with the audit table

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// The audit trail of real activity verifies; an edited or a deleted record makes
// `mftd audit verify` fail.
func TestAuditVerify(t *testing.T) {
	d := startDaemon(t, mftdtest.Options{})
	_, alice := d.NewUser("alice")
	bob := d.AddUser("bob")
	if r, err := d.PostLogin(bob.Name, bob.Password+"x", mftdtest.Code(t, bob.Secret, time.Now())); err != nil || r.Status != 401 {
		t.Fatalf("login with a wrong password: %+v %v; want 401", r, err)
	}
	ctx := testCtx(t, 2*time.Minute)
	data := readAllData(t, 1<<20, 5)
	url := create(t, ctx, alice, int64(len(data)), map[string]string{"filename": "notes.txt"})
	patch(t, ctx, alice, url, 0, bytes.NewReader(data), int64(len(data)), "")
	wantAvailable(t, waitTerminal(t, ctx, alice, url, time.Minute), int64(len(data)), mftdtest.SHA256Hex(data))

	if r := d.Admin("", "audit", "verify"); r.Code != 0 {
		t.Fatalf("audit verify while the daemon runs: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	d.Stop()
	if r := d.Admin("", "audit", "verify"); r.Code != 0 {
		t.Fatalf("audit verify after a clean stop: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}

	// A second installation with a copy of the state, to delete a record from.
	copyDir := filepath.Join(t.TempDir(), "data")
	copyTree(t, d.DataDir, copyDir)
	copyCfg := filepath.Join(t.TempDir(), "mftd.yaml")
	if err := os.WriteFile(copyCfg, []byte(mftdtest.ConfigYAML(copyDir, d.Addr, mftdtest.Options{})), 0o600); err != nil {
		t.Fatal(err)
	}

	// Successful and failed login, upload created, completed, published: at least five records.
	if n := auditCount(t, d.DBPath()); n < 5 {
		t.Fatalf("audit table holds %d records after two logins and an upload, want at least 5", n)
	}

	tamper(t, d.DBPath(), `UPDATE audit SET actor = actor || '-edited' WHERE seq = (SELECT seq FROM audit ORDER BY seq LIMIT 1 OFFSET 1)`)
	r := d.Admin("", "audit", "verify")
	if r.Code == 0 {
		t.Errorf("audit verify exit 0 after a record's actor was edited; want non-zero\nstdout: %s", r.Stdout)
	} else if r.Stderr == "" {
		t.Errorf("audit verify failed (exit %d) on an edited record without a message on stderr", r.Code)
	}

	tamper(t, filepath.Join(copyDir, "mftd.db"), `DELETE FROM audit WHERE seq = (SELECT seq FROM audit ORDER BY seq LIMIT 1 OFFSET 1)`)
	r = mftdtest.RunBin(t, mftdBin, "", "audit", "verify", "--config", copyCfg)
	if r.Code == 0 {
		t.Errorf("audit verify exit 0 after a record was deleted; want non-zero\nstdout: %s", r.Stdout)
	} else if r.Stderr == "" {
		t.Errorf("audit verify failed (exit %d) on a deleted record without a message on stderr", r.Code)
	}
}

func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func auditCount(t *testing.T, path string) int {
	t.Helper()
	db := openDB(t, path)
	var n int
	if err := db.QueryRow(`SELECT COUNT(*) FROM audit`).Scan(&n); err != nil {
		t.Fatalf("count audit records in %s: %v", path, err)
	}
	db.Close()
	return n
}

// tamper runs one statement that must change exactly one audit record, as someone with write
// access to the database file would: triggers guarding the table are dropped first.
func tamper(t *testing.T, path, stmt string) {
	t.Helper()
	db := openDB(t, path)
	rows, err := db.Query(`SELECT name FROM sqlite_master WHERE type = 'trigger' AND tbl_name = 'audit'`)
	if err != nil {
		t.Fatal(err)
	}
	var triggers []string
	for rows.Next() {
		var name string
		if err := rows.Scan(&name); err != nil {
			t.Fatal(err)
		}
		triggers = append(triggers, name)
	}
	rows.Close()
	for _, name := range triggers {
		t.Logf("dropping trigger %q on audit", name)
		if _, err := db.Exec(`DROP TRIGGER "` + name + `"`); err != nil {
			t.Fatal(err)
		}
	}
	res, err := db.Exec(stmt)
	if err != nil {
		t.Fatalf("%s: %v", stmt, err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		t.Fatalf("%s: changed %d records, want 1", stmt, n)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the regular files under src to dst.
func copyTree(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if e.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		if !e.Type().IsRegular() {
			return nil
		}
		in, err := os.Open(p)
		if err != nil {
			return err
		}
		defer in.Close()
		out, err := os.OpenFile(target, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
		if err != nil {
			return err
		}
		if _, err := io.Copy(out, in); err != nil {
			out.Close()
			return err
		}
		return out.Close()
	})
	if err != nil {
		t.Fatalf("copy %s to %s: %v", src, dst, err)
	}
}
