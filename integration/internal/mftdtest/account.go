package mftdtest

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pquerna/otp"
	"github.com/pquerna/otp/totp"
)

// User is an account created with `mftd user add`, with what its owner knows.
type User struct {
	Name     string
	Password string
	Secret   string // TOTP secret (base32), from the enrolment URI
}

// AddUser runs `mftd user add NAME --password-stdin` with a random password and reads the TOTP
// enrolment URI from the last line of stdout.
func (d *Daemon) AddUser(name string) User {
	d.tb.Helper()
	return d.AddUserWith(name, RandomPassword(), "")
}

// AddUserWith runs `mftd user add NAME --password-stdin [--email EMAIL]` with password (which
// must pass the password policy) and reads the TOTP enrolment URI from the last line of stdout.
// An empty email gives the account no address.
func (d *Daemon) AddUserWith(name, password, email string) User {
	d.tb.Helper()
	args := []string{"user", "add", name, "--password-stdin"}
	if email != "" {
		args = append(args, "--email", email)
	}
	r := d.Admin(password, args...)
	if r.Code != 0 {
		d.tb.Fatalf("mftd user add %s: exit %d\nstdout:\n%s\nstderr:\n%s", name, r.Code, r.Stdout, r.Stderr)
	}
	lines := strings.Split(strings.TrimRight(r.Stdout, "\r\n"), "\n")
	uri := strings.TrimSpace(lines[len(lines)-1])
	if !strings.HasPrefix(uri, "otpauth://totp/") {
		d.tb.Fatalf("mftd user add %s: last line of stdout is %q, want an otpauth://totp/ URI", name, uri)
	}
	key, err := otp.NewKeyFromURL(uri)
	if err != nil {
		d.tb.Fatalf("mftd user add %s: enrolment URI: %v", name, err)
	}
	return User{Name: name, Password: password, Secret: key.Secret()}
}

// RandomPassword is 32 URL-safe characters from crypto/rand.
func RandomPassword() string {
	b := make([]byte, 24)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}

// Code is the RFC 6238 code (SHA-1, 6 digits, 30 s) of secret at time at.
func Code(tb testing.TB, secret string, at time.Time) string {
	tb.Helper()
	c, err := totp.GenerateCodeCustom(secret, at, totp.ValidateOpts{Period: 30, Digits: otp.DigitsSix, Algorithm: otp.AlgorithmSHA1})
	if err != nil {
		tb.Fatalf("totp code: %v", err)
	}
	return c
}

// LoginResponse is what POST /api/v1/login answered.
type LoginResponse struct {
	Status int
	Body   []byte
}

// PostLogin posts the three factors and returns status and body, whatever they are.
func (d *Daemon) PostLogin(username, password, code string) (LoginResponse, error) {
	body, _ := json.Marshal(map[string]string{"username": username, "password": password, "totp": code})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, d.URL("/api/v1/login"), bytes.NewReader(body))
	if err != nil {
		return LoginResponse{}, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := d.HTTP().Do(req)
	if err != nil {
		return LoginResponse{}, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return LoginResponse{Status: resp.StatusCode, Body: b}, err
}

// Login signs u in with the code of time at (a TOTP step is accepted once per account, ±1 step:
// log one account in at most twice per 30 s, with now and now+30s) and returns the token.
func (d *Daemon) Login(u User, at time.Time) string {
	d.tb.Helper()
	r, err := d.PostLogin(u.Name, u.Password, Code(d.tb, u.Secret, at))
	if err != nil {
		d.tb.Fatalf("login %s: %v", u.Name, err)
	}
	if r.Status != http.StatusOK {
		d.tb.Fatalf("login %s: status %d, body %q; want 200", u.Name, r.Status, r.Body)
	}
	var out struct {
		Token     string    `json:"token"`
		ExpiresAt time.Time `json:"expires_at"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		d.tb.Fatalf("login %s: body %q: %v", u.Name, r.Body, err)
	}
	if out.Token == "" {
		d.tb.Fatalf("login %s: empty token in %q", u.Name, r.Body)
	}
	if !out.ExpiresAt.After(time.Now()) {
		d.tb.Fatalf("login %s: expires_at %v is not in the future", u.Name, out.ExpiresAt)
	}
	return out.Token
}

// NewUser adds an account and logs it in once; it returns the user and an API client for it.
func (d *Daemon) NewUser(name string) (User, *Client) {
	d.tb.Helper()
	u := d.AddUser(name)
	return u, d.Client(d.Login(u, time.Now()))
}

// String keeps secrets out of test logs.
func (u User) String() string { return fmt.Sprintf("user %s", u.Name) }
