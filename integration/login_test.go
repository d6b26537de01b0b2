package integration

import (
	"bytes"
	"net/http"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// A failed sign-in never says which factor was wrong, and an authenticator code works once.
func TestLoginFailuresAreGeneric(t *testing.T) {
	d := startDaemon(t, mftdtest.Options{})
	carol := d.AddUser("carol") // wrong password
	dave := d.AddUser("dave")   // wrong code
	erin := d.AddUser("erin")   // replayed code
	now := time.Now()

	cases := []struct {
		name, user, pass, code string
	}{
		{"wrong password", carol.Name, carol.Password + "x", mftdtest.Code(t, carol.Secret, now)},
		// A code from an hour ago is far outside the ±1 step window.
		{"wrong TOTP", dave.Name, dave.Password, mftdtest.Code(t, dave.Secret, now.Add(-time.Hour))},
		{"unknown user", "nobody", carol.Password, mftdtest.Code(t, carol.Secret, now)},
	}
	var names []string
	var bodies [][]byte
	for _, c := range cases {
		r, err := d.PostLogin(c.user, c.pass, c.code)
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if r.Status != http.StatusUnauthorized {
			t.Errorf("%s: status %d body %q, want 401", c.name, r.Status, r.Body)
		}
		names, bodies = append(names, c.name), append(bodies, r.Body)
	}

	code := mftdtest.Code(t, erin.Secret, now)
	first, err := d.PostLogin(erin.Name, erin.Password, code)
	if err != nil || first.Status != http.StatusOK {
		t.Fatalf("erin's first login: %+v %v; want 200", first, err)
	}
	replay, err := d.PostLogin(erin.Name, erin.Password, code)
	if err != nil {
		t.Fatal(err)
	}
	if replay.Status != http.StatusUnauthorized {
		t.Errorf("login replaying a code already used: status %d body %q, want 401", replay.Status, replay.Body)
	}
	names, bodies = append(names, "replayed TOTP"), append(bodies, replay.Body)

	if len(bodies[0]) == 0 {
		t.Errorf("401 with an empty body; want one generic message")
	}
	for i := 1; i < len(bodies); i++ {
		if !bytes.Equal(bodies[i], bodies[0]) {
			t.Errorf("401 bodies differ: %s %q vs %s %q", names[0], bodies[0], names[i], bodies[i])
		}
	}
}
