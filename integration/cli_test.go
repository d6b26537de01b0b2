package integration

import (
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// `mftd user add` run while the daemon serves, against the same data_dir: a good account can sign
// in at once with the enrolment it printed; every refused one exits non-zero with a reason on
// stderr and leaves accounts and the audit trail as they were.
func TestUserAdd(t *testing.T) {
	d := startDaemon(t, mftdtest.Options{})

	pw := mftdtest.RandomPassword()
	r := d.Admin(pw+"\n", "user", "add", "alice", "--password-stdin")
	if r.Code != 0 {
		t.Fatalf("mftd user add alice: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	key := enrolment(t, r.Stdout)
	if key.Type() != "totp" || key.Algorithm() != otp.AlgorithmSHA1 || key.Digits() != otp.DigitsSix || key.Period() != 30 {
		t.Errorf("enrolment %s: type %s, %v, %v digits, period %d; want totp, SHA1, 6 digits, 30 s",
			key.URL(), key.Type(), key.Algorithm(), key.Digits(), key.Period())
	}
	if key.Issuer() != "mftd" || !strings.Contains(key.AccountName(), "alice") {
		t.Errorf("enrolment %s: issuer %q, account %q; want issuer mftd and the user's name", key.URL(), key.Issuer(), key.AccountName())
	}
	alice := mftdtest.User{Name: "alice", Password: pw, Secret: key.Secret()}
	// The daemon was running all along: the account works at once.
	d.Login(alice, time.Now())

	accounts := func() []string {
		db := openDB(t, d.DBPath()+"?_pragma=busy_timeout(10000)")
		rows, err := db.Query(`SELECT name FROM accounts ORDER BY name`)
		if err != nil {
			t.Fatal(err)
		}
		defer rows.Close()
		var names []string
		for rows.Next() {
			var n string
			if err := rows.Scan(&n); err != nil {
				t.Fatal(err)
			}
			names = append(names, n)
		}
		if err := rows.Err(); err != nil {
			t.Fatal(err)
		}
		return names
	}
	accountsBefore, auditBefore := accounts(), auditRecords(t, d)
	if !slices.Equal(accountsBefore, []string{"alice"}) {
		t.Fatalf("accounts after adding alice: %q", accountsBefore)
	}

	good := mftdtest.RandomPassword() + "\n"
	cases := []struct {
		name    string
		args    []string
		stdin   string
		wantErr string // a word the message on stderr must contain (case-insensitive)
	}{
		{"name differing only in case", []string{"Alice", "--password-stdin"}, good, "exists"},
		{"name differing only in width", []string{"ａｌｉｃｅ", "--password-stdin"}, good, "exists"},
		{"name differing in case and width", []string{"ＡＬＩＣＥ", "--password-stdin"}, good, "exists"},
		{"name with a slash", []string{"bob/x", "--password-stdin"}, good, "user name"},
		{"name that is a path", []string{"../bob", "--password-stdin"}, good, "user name"},
		{"name ..", []string{"..", "--password-stdin"}, good, "user name"},
		{"name with ..", []string{"bob..x", "--password-stdin"}, good, "user name"},
		{"name with a control character", []string{"bo\x07b", "--password-stdin"}, good, "user name"},
		{"name with a newline", []string{"bob\nroot", "--password-stdin"}, good, "user name"},
		{"name with a bidi override", []string{"bob\u202excod", "--password-stdin"}, good, "user name"},
		{"empty name", []string{"", "--password-stdin"}, good, "user name"},
		{"password of 11 characters", []string{"carol", "--password-stdin"}, "abcdefghijk\n", "12"},
		{"empty password", []string{"dave", "--password-stdin"}, "\n", "12"},
		{"no password at all", []string{"erin", "--password-stdin"}, "", "12"},
		{"password equal to the name", []string{"bartholomew-x", "--password-stdin"}, "bartholomew-x\n", "password"},
		{"password equal to the name but for case", []string{"Bartholomew-X", "--password-stdin"}, "bartholomew-x\n", "password"},
		{"no --password-stdin", []string{"frank"}, good, "--password-stdin"},
	}
	for _, c := range cases {
		r := d.Admin(c.stdin, append([]string{"user", "add"}, c.args...)...)
		if r.Code == 0 {
			t.Errorf("%s: mftd user add %q exited 0, want non-zero\nstdout: %s", c.name, c.args, r.Stdout)
			continue
		}
		msg := strings.TrimSpace(r.Stderr)
		if msg == "" || !strings.Contains(strings.ToLower(msg), strings.ToLower(c.wantErr)) {
			t.Errorf("%s: mftd user add %q: stderr %q, want a message mentioning %q", c.name, c.args, msg, c.wantErr)
		}
		if strings.Contains(r.Stdout, "otpauth://") {
			t.Errorf("%s: mftd user add %q refused but printed an enrolment: %s", c.name, c.args, r.Stdout)
		}
	}

	if got := accounts(); !slices.Equal(got, accountsBefore) {
		t.Errorf("accounts after the refused adds: %q, want %q", got, accountsBefore)
	}
	if n := auditRecords(t, d); n != auditBefore {
		t.Errorf("audit records after the refused adds: %d, want %d as before", n, auditBefore)
	}
	// A second good account: the audit trail is one record longer for it, and still verifies.
	d.AddUser("bob")
	if got := accounts(); !slices.Equal(got, []string{"alice", "bob"}) {
		t.Errorf("accounts after adding bob: %q, want [alice bob]", got)
	}
	if n := auditRecords(t, d); n != auditBefore+1 {
		t.Errorf("audit records after adding bob: %d, want %d", n, auditBefore+1)
	}
	// Alice's password and authenticator are hers still, whatever the refused duplicates sent
	// (the next time step: each step is accepted once).
	d.Login(alice, time.Now().Add(30*time.Second))
}

// enrolment parses the otpauth:// URI on the last line of `mftd user add`'s stdout.
func enrolment(t *testing.T, stdout string) *otp.Key {
	t.Helper()
	lines := strings.Split(strings.TrimRight(stdout, "\r\n"), "\n")
	uri := lines[len(lines)-1]
	if !strings.HasPrefix(uri, "otpauth://totp/") {
		t.Fatalf("last line of stdout is %q, want an otpauth://totp/ URI\nstdout: %s", uri, stdout)
	}
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		t.Fatalf("enrolment URI %q: %v", uri, err)
	}
	return key
}

var verifiedRecords = regexp.MustCompile(`verified: (\d+) records`)

// auditRecords runs `mftd audit verify`, fails unless it passes, and returns the number of
// records it reports.
func auditRecords(t *testing.T, d *mftdtest.Daemon) int {
	t.Helper()
	r := d.Admin("", "audit", "verify")
	if r.Code != 0 {
		t.Fatalf("audit verify: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	m := verifiedRecords.FindStringSubmatch(r.Stdout)
	if m == nil {
		t.Fatalf("audit verify: no record count in %q", r.Stdout)
	}
	n, _ := strconv.Atoi(m[1])
	return n
}
