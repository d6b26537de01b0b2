package main

import (
	"context"
	"strings"
	"testing"

	"github.com/mftd/mftd/storage/state"
)

// The project commands create a project, manage its IAAs and owner, list
// them, refuse what is wrong with a clear message, and audit each change as
// the operator.
func TestProjectCommands(t *testing.T) {
	db, run := adminCLI(t)
	ctx := context.Background()
	for _, u := range []string{"alice", "bob", "carol"} {
		if _, err := db.CreateAccount(ctx, state.Account{Name: u}); err != nil {
			t.Fatal(err)
		}
	}
	before, _ := db.VerifyAudit(ctx)

	for _, c := range []struct {
		args    []string
		wantErr string
	}{
		{[]string{"project", "create", "study"}, "--owner"},
		{[]string{"project", "create", "study", "--owner", "ghost"}, "no such user"},
		{[]string{"project", "create", "Study!", "--owner", "alice"}, "project name"},
	} {
		if out, err := run(nil, c.args...); err == nil || !strings.Contains(err.Error(), c.wantErr) {
			t.Errorf("mftd %s = %q, %v; want an error about %q", strings.Join(c.args, " "), out, err, c.wantErr)
		}
	}
	if n, _ := db.VerifyAudit(ctx); n != before { // bad input: nothing was decided, nothing changed
		t.Errorf("audit records after bad input: %d -> %d, want none added", before, n)
	}

	steps := []struct {
		args []string
		want string
	}{
		{[]string{"project", "create", "study", "--owner", "Alice"}, "created project study, owner alice"},
		{[]string{"project", "add-admin", "study", "bob"}, "bob is an administrator of study"},
		{[]string{"project", "set-owner", "study", "carol"}, "carol is the owner of study"},
	}
	for _, s := range steps {
		out, err := run(nil, s.args...)
		if err != nil || !strings.Contains(out, s.want) {
			t.Fatalf("mftd %s = %q, %v; want %q", strings.Join(s.args, " "), out, err, s.want)
		}
	}
	out, err := run(nil, "project", "list")
	if err != nil || !strings.Contains(out, "study") || !strings.Contains(out, "carol") || !strings.Contains(out, "bob") {
		t.Errorf("mftd project list = %q, %v", out, err)
	}
	if out, err := run(nil, "project", "remove-admin", "study", "bob"); err != nil || !strings.Contains(out, "bob is no longer") {
		t.Errorf("remove-admin = %q, %v", out, err)
	}
	if _, err := run(nil, "project", "remove-admin", "study", "bob"); err == nil || !strings.Contains(err.Error(), "no such administrator") {
		t.Errorf("remove-admin again: %v", err)
	}
	if _, err := run(nil, "project", "create", "study", "--owner", "bob"); err == nil || !strings.Contains(err.Error(), "already exists") {
		t.Errorf("second create: %v", err)
	}
	if _, err := run(nil, "project", "set-owner", "nope", "bob"); err == nil || !strings.Contains(err.Error(), "no such project") {
		t.Errorf("set-owner of no project: %v", err)
	}

	p, err := db.GetProject(ctx, "study")
	if err != nil || p.Owner != "carol" || len(p.Admins) != 0 || !strings.HasPrefix(p.CreatedBy, "cli:") {
		t.Errorf("project = %+v, %v", p, err)
	}
	if after, err := db.VerifyAudit(ctx); err != nil || after != before+4 {
		t.Errorf("audit records %d -> %d (%v); want 4 more (create, add-admin, set-owner, remove-admin)", before, after, err)
	}
}
