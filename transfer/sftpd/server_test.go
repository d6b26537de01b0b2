package sftpd

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/pkg/sftp"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/crypto/ssh"
	"golang.org/x/crypto/ssh/agent"

	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
)

const (
	testUser     = "alice"
	testPassword = "correct horse battery staple"
	testCode     = "123456"
)

// fakeAuth is an Auth with one account (testUser), its registered keys, and
// a record of every call.
type fakeAuth struct {
	mu         sync.Mutex
	keys       [][]byte // registered for testUser
	tokens     map[string]bool
	ended      bool  // every session has ended
	checkErr   error // Authenticate fails with this (after login)
	pwCalls    []string
	keyCalls   [][]byte // keys LoginKey was called with
	codeCalls  []string // codes LoginKey was called with
	registered [][]byte // keys KeyRegistered was asked about
}

func newFakeAuth(keys ...ssh.PublicKey) *fakeAuth {
	f := &fakeAuth{tokens: make(map[string]bool)}
	for _, k := range keys {
		f.keys = append(f.keys, k.Marshal())
	}
	return f
}

func (f *fakeAuth) open() authn.Session {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	tok := "tok-" + hex.EncodeToString(b)
	f.tokens[tok] = true
	return authn.Session{Token: tok, ID: "s-" + tok[4:12]}
}

func (f *fakeAuth) LoginPassword(_ context.Context, user, password, code, _ string) (authn.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.pwCalls = append(f.pwCalls, user+"|"+password+"|"+code)
	if user != testUser || password != testPassword || code != testCode {
		return authn.Session{}, authn.ErrBadCredentials
	}
	return f.open(), nil
}

func (f *fakeAuth) KeyRegistered(_ context.Context, user string, key []byte) (bool, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.registered = append(f.registered, key)
	return user == testUser && f.isRegistered(key), nil
}

func (f *fakeAuth) isRegistered(key []byte) bool {
	return slices.ContainsFunc(f.keys, func(k []byte) bool { return bytes.Equal(k, key) })
}

func (f *fakeAuth) LoginKey(_ context.Context, user string, key []byte, code, _ string) (authn.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keyCalls = append(f.keyCalls, key)
	f.codeCalls = append(f.codeCalls, code)
	if user != testUser || !f.isRegistered(key) || code != testCode {
		return authn.Session{}, authn.ErrBadCredentials
	}
	return f.open(), nil
}

func (f *fakeAuth) Authenticate(_ context.Context, token string) (authn.Identity, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.checkErr != nil {
		return authn.Identity{}, f.checkErr
	}
	if f.ended || !f.tokens[token] {
		return authn.Identity{}, authn.ErrBadCredentials
	}
	return authn.Identity{User: testUser, SessionID: "s-" + token[4:12]}, nil
}

func (f *fakeAuth) calls() (pw []string, keys [][]byte, codes []string, registered [][]byte) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return slices.Clone(f.pwCalls), slices.Clone(f.keyCalls), slices.Clone(f.codeCalls), slices.Clone(f.registered)
}

// fakeIngest is an Ingest that holds nothing; the SSH layer never calls it.
type fakeIngest struct{}

func (fakeIngest) Create(context.Context, ingest.CreateRequest) (state.Upload, error) {
	return state.Upload{}, errors.New("fake")
}
func (fakeIngest) Write(context.Context, ingest.WriteRequest) (int64, error) {
	return 0, errors.New("fake")
}
func (fakeIngest) Finish(context.Context, string, string, string) error    { return errors.New("fake") }
func (fakeIngest) Terminate(context.Context, string, string, string) error { return errors.New("fake") }
func (fakeIngest) Partials(context.Context, string) ([]state.Upload, error) {
	return nil, nil
}
func (fakeIngest) Arrivals(context.Context, string) ([]state.File, error) { return nil, nil }
func (fakeIngest) TryLock(string) (func(), bool)                          { return func() {}, true }
func (fakeIngest) Audit(context.Context, string, string, string, string, string) error {
	return nil
}

// harness is a running Server on 127.0.0.1 with a fake Auth.
type harness struct {
	srv   *Server
	addr  string
	auth  *fakeAuth
	logs  *observer.ObservedLogs
	conns chan *conn // every logged-in connection
	serve chan error
}

// option adjusts a test server's Config before New, or the Server after.
type option struct {
	cfg func(*Config)
	srv func(*Server)
}

func withGrace(d time.Duration) option {
	return option{cfg: func(c *Config) { c.LoginGrace = d }}
}

func withRecheck(d time.Duration) option {
	return option{srv: func(s *Server) { s.recheck = d }}
}

func start(t *testing.T, auth *fakeAuth, opts ...option) *harness {
	t.Helper()
	cfg := Config{HostKeyFile: filepath.Join(t.TempDir(), "ssh", "host_ed25519_key")}
	for _, o := range opts {
		if o.cfg != nil {
			o.cfg(&cfg)
		}
	}
	core, logs := observer.New(zap.DebugLevel)
	srv, err := New(cfg, zap.New(core), auth, fakeIngest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range opts {
		if o.srv != nil {
			o.srv(srv)
		}
	}
	h := &harness{srv: srv, auth: auth, logs: logs, conns: make(chan *conn, 64), serve: make(chan error, 1)}
	srv.connected = func(c *conn) { h.conns <- c }
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h.addr = l.Addr().String()
	go func() { h.serve <- srv.Serve(l) }()
	t.Cleanup(func() {
		srv.Close()
		if err := <-h.serve; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v, want ErrServerClosed", err)
		}
		h.assertNoSecretsLogged(t)
	})
	return h
}

// dial logs in with the given methods.
func (h *harness) dial(t *testing.T, user string, methods ...ssh.AuthMethod) (*ssh.Client, error) {
	t.Helper()
	return ssh.Dial("tcp", h.addr, &ssh.ClientConfig{
		User:            user,
		Auth:            methods,
		HostKeyCallback: ssh.FixedHostKey(h.srv.HostKey()),
		Timeout:         10 * time.Second,
	})
}

// login logs in with password and code and returns the client and the
// server's view of the connection.
func (h *harness) login(t *testing.T) (*ssh.Client, *conn) {
	t.Helper()
	client, err := h.dial(t, testUser, ssh.KeyboardInteractive(answers(testPassword, testCode, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { client.Close() })
	return client, h.conn(t)
}

func (h *harness) conn(t *testing.T) *conn {
	t.Helper()
	select {
	case c := <-h.conns:
		return c
	case <-time.After(5 * time.Second):
		t.Fatal("no logged-in connection")
		return nil
	}
}

// assertNoSecretsLogged fails if any log line carries a password, a code or
// a session token.
func (h *harness) assertNoSecretsLogged(t *testing.T) {
	t.Helper()
	h.auth.mu.Lock()
	secrets := []string{testPassword, testCode, "wrong-password", "654321"}
	for tok := range h.auth.tokens {
		secrets = append(secrets, tok)
	}
	h.auth.mu.Unlock()
	for _, e := range h.logs.All() {
		line := fmt.Sprintf("%s %v", e.Message, e.ContextMap())
		for _, s := range secrets {
			if strings.Contains(line, s) {
				t.Errorf("log line %q contains a secret", line)
			}
		}
	}
}

// prompt is one keyboard-interactive round as the client saw it.
type prompt struct {
	Questions []string
	Echos     []bool
}

// answers answers the password+code round and the code-only round, and
// records what it was asked.
func answers(password, code string, seen *[]prompt) ssh.KeyboardInteractiveChallenge {
	return func(_, _ string, questions []string, echos []bool) ([]string, error) {
		if seen != nil {
			*seen = append(*seen, prompt{questions, echos})
		}
		switch len(questions) {
		case 0:
			return nil, nil
		case 1:
			return []string{code}, nil
		default:
			return []string{password, code}, nil
		}
	}
}

func newKey(t *testing.T) ssh.Signer {
	t.Helper()
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	s, err := ssh.NewSignerFromKey(k)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestAlgorithms(t *testing.T) {
	h := start(t, newFakeAuth())
	c := h.srv.base
	want := ssh.Algorithms{
		KeyExchanges:   []string{ssh.KeyExchangeMLKEM768X25519, ssh.KeyExchangeCurve25519, "curve25519-sha256@libssh.org"},
		Ciphers:        []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM},
		MACs:           []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM},
		PublicKeyAuths: pubKeyAuthAlgos,
	}
	got := ssh.Algorithms{KeyExchanges: c.KeyExchanges, Ciphers: c.Ciphers, MACs: c.MACs, PublicKeyAuths: c.PublicKeyAuthAlgorithms}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("algorithms (-want +got):\n%s", diff)
	}
	all := slices.Concat(got.KeyExchanges, got.Ciphers, got.MACs, got.PublicKeyAuths)
	insecure := ssh.InsecureAlgorithms()
	for _, a := range all {
		for _, bad := range []string{"sha1", "cbc", "group1-", "group14-", "arcfour", "3des"} {
			if strings.Contains(a, bad) {
				t.Errorf("offered algorithm %q matches %q", a, bad)
			}
		}
		if a == ssh.KeyAlgoRSA {
			t.Errorf("ssh-rsa (SHA-1 signatures) accepted")
		}
		if slices.Contains(slices.Concat(insecure.KeyExchanges, insecure.Ciphers, insecure.MACs, insecure.PublicKeyAuths), a) {
			t.Errorf("offered algorithm %q is in x/crypto's insecure list", a)
		}
	}
	for _, m := range got.MACs {
		if !strings.HasSuffix(m, "-etm@openssh.com") {
			t.Errorf("MAC %q is not encrypt-then-MAC", m)
		}
	}
	if c.ServerVersion != "SSH-2.0-mftd" || c.MaxAuthTries != 6 {
		t.Errorf("ServerVersion %q MaxAuthTries %d", c.ServerVersion, c.MaxAuthTries)
	}
	if c.NoClientAuth || c.PasswordCallback != nil || c.GSSAPIWithMICConfig != nil {
		t.Error("an authentication method beyond publickey and keyboard-interactive is configured")
	}
}

// TestKexInitOnWire reads the server's KEXINIT as a client would and checks
// what it offers, including the strict key exchange marker.
func TestKexInitOnWire(t *testing.T) {
	h := start(t, newFakeAuth())
	_, r, version, kex := rawConnect(t, h.addr)
	_ = r
	if version != "SSH-2.0-mftd" {
		t.Errorf("server version %q", version)
	}
	want := kexInitMsg{
		Cookie:                  kex.Cookie,
		KexAlgos:                append(kexAlgos(), "kex-strict-s-v00@openssh.com"),
		ServerHostKeyAlgos:      []string{ssh.KeyAlgoED25519},
		CiphersClientServer:     cipherAlgos,
		CiphersServerClient:     cipherAlgos,
		MACsClientServer:        macAlgos,
		MACsServerClient:        macAlgos,
		CompressionClientServer: []string{"none"},
		CompressionServerClient: []string{"none"},
		LanguagesClientServer:   kex.LanguagesClientServer,
		LanguagesServerClient:   kex.LanguagesServerClient,
	}
	if diff := cmp.Diff(want, kex); diff != "" {
		t.Errorf("KEXINIT (-want +got):\n%s", diff)
	}
}

// TestStrictKexTerrapin: a client that asks for strict key exchange and
// whose first packet is not its KEXINIT (here an SSH_MSG_IGNORE, as a
// Terrapin prefix-truncation attacker would inject) is disconnected; the
// same KEXINIT without the extra packet is accepted, so the packets are
// well-formed and the strict mode is what refused.
func TestStrictKexTerrapin(t *testing.T) {
	h := start(t, newFakeAuth())
	clientInit := kexInitMsg{
		KexAlgos:                []string{ssh.KeyExchangeCurve25519},
		ServerHostKeyAlgos:      []string{ssh.KeyAlgoED25519},
		CiphersClientServer:     []string{ssh.CipherAES128GCM},
		CiphersServerClient:     []string{ssh.CipherAES128GCM},
		MACsClientServer:        []string{ssh.HMACSHA256ETM},
		MACsServerClient:        []string{ssh.HMACSHA256ETM},
		CompressionClientServer: []string{"none"},
		CompressionServerClient: []string{"none"},
	}
	strictInit := clientInit
	strictInit.KexAlgos = append(strictInit.KexAlgos, "kex-strict-c-v00@openssh.com")
	ignore := append([]byte{2}, ssh.Marshal(struct{ S string }{"x"})...) // SSH_MSG_IGNORE
	for _, tt := range []struct {
		name      string
		packets   [][]byte
		wantClose bool
	}{
		{"strict, kexinit first", [][]byte{ssh.Marshal(&strictInit)}, false},
		{"not strict, ignore before kexinit", [][]byte{ignore, ssh.Marshal(&clientInit)}, false},
		{"strict, ignore before kexinit", [][]byte{ignore, ssh.Marshal(&strictInit)}, true},
	} {
		t.Run(tt.name, func(t *testing.T) {
			nc, r, _, _ := rawConnect(t, h.addr)
			for _, p := range tt.packets {
				writeRawPacket(t, nc, p)
			}
			_ = nc.SetReadDeadline(time.Now().Add(time.Second))
			_, err := r.ReadByte()
			var ne net.Error
			timedOut := errors.As(err, &ne) && ne.Timeout()
			if tt.wantClose && (err == nil || timedOut) {
				t.Fatalf("server answered %v after a packet before KEXINIT in strict mode, want the connection closed", err)
			}
			if !tt.wantClose && !timedOut {
				t.Fatalf("server answered a well-formed KEXINIT with %v, want it to wait for the key exchange", err)
			}
		})
	}
}

// TestNegotiation: an x/crypto client with its defaults gets the hybrid
// post-quantum key exchange and AES-GCM; clients that offer only weak
// algorithms get nothing.
func TestNegotiation(t *testing.T) {
	h := start(t, newFakeAuth())
	client, _ := h.login(t)
	alg := client.Conn.(ssh.AlgorithmsConnMetadata).Algorithms()
	if alg.KeyExchange != ssh.KeyExchangeMLKEM768X25519 || alg.Read.Cipher != ssh.CipherAES128GCM || alg.HostKey != ssh.KeyAlgoED25519 {
		t.Errorf("negotiated %+v", alg)
	}

	for _, tt := range []struct {
		name string
		cfg  ssh.Config
	}{
		{"cbc", ssh.Config{Ciphers: []string{ssh.InsecureCipherAES128CBC}}},
		{"3des", ssh.Config{Ciphers: []string{ssh.InsecureCipherTripleDESCBC}}},
		{"ctr with sha1 mac", ssh.Config{Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.HMACSHA1}}},
		{"ctr with non-etm mac", ssh.Config{Ciphers: []string{ssh.CipherAES128CTR}, MACs: []string{ssh.HMACSHA256}}},
		{"group1-sha1", ssh.Config{KeyExchanges: []string{ssh.InsecureKeyExchangeDH1SHA1}}},
		{"group14-sha1", ssh.Config{KeyExchanges: []string{ssh.InsecureKeyExchangeDH14SHA1}}},
		{"group14-sha256", ssh.Config{KeyExchanges: []string{ssh.KeyExchangeDH14SHA256}}},
		{"nistp256", ssh.Config{KeyExchanges: []string{ssh.KeyExchangeECDHP256}}},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c, err := ssh.Dial("tcp", h.addr, &ssh.ClientConfig{
				Config: tt.cfg, User: testUser, HostKeyCallback: ssh.FixedHostKey(h.srv.HostKey()),
				Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(answers(testPassword, testCode, nil))},
			})
			if err == nil {
				c.Close()
				t.Fatal("handshake succeeded")
			}
			if !strings.Contains(err.Error(), "no common algorithm") {
				t.Errorf("error %v, want no common algorithm", err)
			}
		})
	}
}

func TestRSAHostKeyNeverSHA1(t *testing.T) {
	dir := t.TempDir()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "host_rsa_key")
	writeKey(t, path, k, 0o600)
	srv, err := New(Config{HostKeyFile: path}, zap.NewNop(), newFakeAuth(), fakeIngest{})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { srv.Close() })
	_, _, _, kex := rawConnect(t, l.Addr().String())
	if diff := cmp.Diff([]string{ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512}, kex.ServerHostKeyAlgos); diff != "" {
		t.Errorf("host key algorithms (-want +got):\n%s", diff)
	}
	for _, tt := range []struct {
		algo string
		ok   bool
	}{{ssh.KeyAlgoRSA, false}, {ssh.KeyAlgoRSASHA256, true}, {ssh.KeyAlgoRSASHA512, true}} {
		c, err := ssh.Dial("tcp", l.Addr().String(), &ssh.ClientConfig{
			User: testUser, HostKeyCallback: ssh.FixedHostKey(srv.HostKey()), HostKeyAlgorithms: []string{tt.algo},
			Auth: []ssh.AuthMethod{ssh.KeyboardInteractive(answers(testPassword, testCode, nil))},
		})
		if c != nil {
			c.Close()
		}
		if (err == nil) != tt.ok {
			t.Errorf("host key algorithm %s: error %v, want success %v", tt.algo, err, tt.ok)
		}
	}
}

func TestPasswordLogin(t *testing.T) {
	h := start(t, newFakeAuth())
	var seen []prompt
	client, err := h.dial(t, testUser, ssh.KeyboardInteractive(answers(testPassword, testCode, &seen)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := h.conn(t)
	if c.user != testUser || c.fingerprint != "" || c.token == "" || !strings.HasPrefix(c.client, "SSH-2.0-Go") {
		t.Errorf("conn user %q fingerprint %q client %q", c.user, c.fingerprint, c.client)
	}
	wantPrompts := []prompt{{[]string{"Password: ", "Verification code: "}, []bool{false, true}}}
	if diff := cmp.Diff(wantPrompts, seen); diff != "" {
		t.Errorf("prompts (-want +got):\n%s", diff)
	}
	if pw, keys, _, _ := h.auth.calls(); len(pw) != 1 || len(keys) != 0 {
		t.Errorf("LoginPassword calls %d, LoginKey calls %d", len(pw), len(keys))
	}
	entry := h.logs.FilterMessage("login").All()
	if len(entry) != 1 {
		t.Fatalf("%d login log lines", len(entry))
	}
	m := entry[0].ContextMap()
	for k, want := range map[string]any{"user": testUser, "method": methodPassword, "key_fingerprint": "", "proto": "sftp"} {
		if m[k] != want {
			t.Errorf("login log %s = %v, want %v", k, m[k], want)
		}
	}
	if !strings.HasPrefix(fmt.Sprint(m["client_version"]), "SSH-2.0-Go") || m["remote_addr"] == "" {
		t.Errorf("login log %v", m)
	}
}

// TestPasswordLoginFailures: a wrong password, a wrong code or an unknown
// user fail the same way, and Auth saw the attempt.
func TestPasswordLoginFailures(t *testing.T) {
	h := start(t, newFakeAuth())
	var first string
	for _, tt := range []struct{ name, user, password, code string }{
		{"wrong password", testUser, "wrong-password", testCode},
		{"wrong code", testUser, testPassword, "654321"},
		{"both wrong", testUser, "wrong-password", "654321"},
		{"unknown user", "mallory", testPassword, testCode},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, _, _, _ := h.auth.calls()
			c, err := h.dial(t, tt.user, ssh.KeyboardInteractive(answers(tt.password, tt.code, nil)))
			if err == nil {
				c.Close()
				t.Fatal("logged in")
			}
			if first == "" {
				first = err.Error()
			} else if err.Error() != first {
				t.Errorf("error %q differs from %q", err, first)
			}
			after, _, _, _ := h.auth.calls()
			want := tt.user + "|" + tt.password + "|" + tt.code
			if len(after) != len(before)+1 || after[len(after)-1] != want {
				t.Errorf("LoginPassword calls %q, want one more: %q", after, want)
			}
		})
	}
	if n := len(h.logs.FilterMessage("login failed").All()); n != 4 {
		t.Errorf("%d login failed log lines, want 4", n)
	}
	select {
	case <-h.conns:
		t.Error("a failed login produced a connection")
	default:
	}
}

func TestMaxAuthTries(t *testing.T) {
	h := start(t, newFakeAuth())
	c, err := h.dial(t, testUser, ssh.RetryableAuthMethod(ssh.KeyboardInteractive(answers("wrong-password", testCode, nil)), 100))
	if err == nil {
		c.Close()
		t.Fatal("logged in")
	}
	if pw, _, _, _ := h.auth.calls(); len(pw) != maxAuthTries {
		t.Errorf("%d password attempts on one connection, want %d", len(pw), maxAuthTries)
	}
}

func TestKeyLogin(t *testing.T) {
	key := newKey(t)
	h := start(t, newFakeAuth(key.PublicKey()))
	var seen []prompt
	client, err := h.dial(t, testUser, ssh.PublicKeys(key), ssh.KeyboardInteractive(answers("", testCode, &seen)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	c := h.conn(t)
	fp := ssh.FingerprintSHA256(key.PublicKey())
	if c.fingerprint != fp || c.user != testUser {
		t.Errorf("conn fingerprint %q user %q, want %q", c.fingerprint, c.user, fp)
	}
	wantPrompts := []prompt{{[]string{"Verification code: "}, []bool{true}}}
	if diff := cmp.Diff(wantPrompts, seen); diff != "" {
		t.Errorf("prompts (-want +got):\n%s", diff)
	}
	pw, keys, codes, _ := h.auth.calls()
	if len(pw) != 0 || len(keys) != 1 || !bytes.Equal(keys[0], key.PublicKey().Marshal()) || codes[0] != testCode {
		t.Errorf("LoginPassword calls %d, LoginKey calls %d", len(pw), len(keys))
	}
	m := h.logs.FilterMessage("login").All()[0].ContextMap()
	if m["key_fingerprint"] != fp || m["method"] != methodKey {
		t.Errorf("login log %v", m)
	}
}

// TestKeyLoginWrongCode: a proved key still needs the right code, and the
// failure looks like any other.
func TestKeyLoginWrongCode(t *testing.T) {
	key := newKey(t)
	h := start(t, newFakeAuth(key.PublicKey()))
	c, err := h.dial(t, testUser, ssh.PublicKeys(key), ssh.KeyboardInteractive(answers("", "654321", nil)))
	if err == nil {
		c.Close()
		t.Fatal("logged in with a wrong code")
	}
	_, keys, codes, _ := h.auth.calls()
	if len(keys) != 1 || codes[0] != "654321" {
		t.Errorf("LoginKey calls: %d", len(keys))
	}
}

// TestUnregisteredKeyFallsBackToPassword: a key not registered gets no code
// prompt of its own; the client goes on to password and code.
func TestUnregisteredKeyFallsBackToPassword(t *testing.T) {
	registered, other := newKey(t), newKey(t)
	h := start(t, newFakeAuth(registered.PublicKey()))
	var seen []prompt
	client, err := h.dial(t, testUser, ssh.PublicKeys(other), ssh.KeyboardInteractive(answers(testPassword, testCode, &seen)))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	if c := h.conn(t); c.fingerprint != "" {
		t.Errorf("password login carries key fingerprint %q", c.fingerprint)
	}
	if len(seen) != 1 || len(seen[0].Questions) != 2 {
		t.Errorf("prompts %v, want password and code", seen)
	}
	if _, keys, _, _ := h.auth.calls(); len(keys) != 0 {
		t.Errorf("LoginKey called %d times", len(keys))
	}
}

// lyingSigner offers the public key of one key and signs with another.
type lyingSigner struct {
	offer ssh.PublicKey
	sign  ssh.Signer
}

func (s lyingSigner) PublicKey() ssh.PublicKey { return s.offer }
func (s lyingSigner) Sign(r io.Reader, data []byte) (*ssh.Signature, error) {
	return s.sign.Sign(r, data)
}

// queryOnlySigner offers a public key but cannot sign: the client asks
// whether the key would do, then gives up on it.
type queryOnlySigner struct{ offer ssh.PublicKey }

func (s queryOnlySigner) PublicKey() ssh.PublicKey { return s.offer }
func (queryOnlySigner) Sign(io.Reader, []byte) (*ssh.Signature, error) {
	return nil, errors.New("no private key")
}

// TestOfferedKeyIsNotProof: only a key whose signature verified can lead to
// LoginKey. A client that offers registered key A and signs with its own
// key B is refused; a client that only asks about A and then logs in with a
// password has a password login that names no key.
func TestOfferedKeyIsNotProof(t *testing.T) {
	a, b := newKey(t), newKey(t)
	aWire := a.PublicKey().Marshal()

	t.Run("offer A sign with B", func(t *testing.T) {
		h := start(t, newFakeAuth(a.PublicKey()))
		var seen []prompt
		c, err := h.dial(t, testUser,
			ssh.PublicKeys(lyingSigner{offer: a.PublicKey(), sign: b}),
			ssh.KeyboardInteractive(answers("", testCode, &seen)))
		if err == nil {
			c.Close()
			t.Fatal("logged in with a signature by another key")
		}
		_, keys, _, registered := h.auth.calls()
		if !slices.ContainsFunc(registered, func(k []byte) bool { return bytes.Equal(k, aWire) }) {
			t.Fatal("the server was never asked about key A; the test proves nothing")
		}
		if len(keys) != 0 {
			t.Errorf("LoginKey called with %d keys", len(keys))
		}
		if len(seen) != 0 {
			t.Errorf("client was asked %v", seen)
		}
		// The client sees the connection fail before the server has
		// logged why: wait for the line.
		var failed []observer.LoggedEntry
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
			if failed = h.logs.FilterMessage("SSH handshake failed").All(); len(failed) > 0 {
				break
			}
		}
		if len(failed) != 1 || !strings.Contains(fmt.Sprint(failed[0].ContextMap()["error"]), "signature") {
			t.Errorf("the bad signature was not logged: %v", failed)
		}
	})

	t.Run("query A then password", func(t *testing.T) {
		h := start(t, newFakeAuth(a.PublicKey()))
		var seen []prompt
		client, err := h.dial(t, testUser,
			ssh.PublicKeys(queryOnlySigner{offer: a.PublicKey()}),
			ssh.KeyboardInteractive(answers(testPassword, testCode, &seen)))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		c := h.conn(t)
		_, keys, _, registered := h.auth.calls()
		if !slices.ContainsFunc(registered, func(k []byte) bool { return bytes.Equal(k, aWire) }) {
			t.Fatal("the server was never asked about key A; the test proves nothing")
		}
		if len(keys) != 0 {
			t.Errorf("LoginKey called with %d keys", len(keys))
		}
		if c.fingerprint != "" {
			t.Errorf("session names key %q it never proved", c.fingerprint)
		}
		if len(seen) != 1 || len(seen[0].Questions) != 2 {
			t.Errorf("prompts %v: the query skipped the password", seen)
		}
		m := h.logs.FilterMessage("login").All()[0].ContextMap()
		if m["key_fingerprint"] != "" || m["method"] != methodPassword {
			t.Errorf("login log %v", m)
		}
	})

	t.Run("query A then prove B", func(t *testing.T) {
		// B is registered, A is not: the key LoginKey gets is B, the one
		// that signed, whatever was asked about before.
		h := start(t, newFakeAuth(b.PublicKey()))
		client, err := h.dial(t, testUser,
			ssh.PublicKeys(queryOnlySigner{offer: a.PublicKey()}, b),
			ssh.KeyboardInteractive(answers("", testCode, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer client.Close()
		c := h.conn(t)
		_, keys, _, _ := h.auth.calls()
		if len(keys) != 1 || !bytes.Equal(keys[0], b.PublicKey().Marshal()) {
			t.Errorf("LoginKey keys %d, want exactly B", len(keys))
		}
		if c.fingerprint != ssh.FingerprintSHA256(b.PublicKey()) {
			t.Errorf("fingerprint %q, want B's", c.fingerprint)
		}
	})
}

// TestKeyProvedCallbackChecksApproval: the verified-key step refuses a key
// other than the one the offer step approved (defence in depth: x/crypto
// passes the same key to both today).
func TestKeyProvedCallbackChecksApproval(t *testing.T) {
	a, b := newKey(t), newKey(t)
	h := start(t, newFakeAuth(a.PublicKey()))
	ctx := context.Background()
	approved, err := h.srv.keyOffered(ctx, metaFor(testUser), "test", a.PublicKey())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.srv.keyProved(ctx, metaFor(testUser), "test", b.PublicKey(), approved); !errors.Is(err, errLoginFailed) {
		t.Errorf("proof with B under A's approval: %v, want denied", err)
	}
	if _, err := h.srv.keyProved(ctx, metaFor(testUser), "test", a.PublicKey(), nil); !errors.Is(err, errLoginFailed) {
		t.Errorf("proof without approval: %v, want denied", err)
	}
	_, err = h.srv.keyProved(ctx, metaFor(testUser), "test", a.PublicKey(), approved)
	var partial *ssh.PartialSuccessError
	if !errors.As(err, &partial) || partial.Next.KeyboardInteractiveCallback == nil || partial.Next.PublicKeyCallback != nil {
		t.Errorf("proof with A: %v, want a partial success asking for the code only", err)
	}
	if _, err := h.srv.keyOffered(ctx, metaFor(testUser), "test", b.PublicKey()); !errors.Is(err, errLoginFailed) {
		t.Errorf("unregistered key offered: %v", err)
	}
}

type metaFor string

func (m metaFor) User() string        { return string(m) }
func (metaFor) SessionID() []byte     { return nil }
func (metaFor) ClientVersion() []byte { return []byte("SSH-2.0-test") }
func (metaFor) ServerVersion() []byte { return []byte(serverVersion) }
func (metaFor) RemoteAddr() net.Addr  { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (metaFor) LocalAddr() net.Addr   { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

func TestOnlySFTPSubsystem(t *testing.T) {
	h := start(t, newFakeAuth())
	client, _ := h.login(t)

	session := func(t *testing.T) *ssh.Session {
		t.Helper()
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	refused := []struct {
		name string
		try  func(s *ssh.Session) error
	}{
		{"exec", func(s *ssh.Session) error { return s.Start("cat /etc/passwd") }},
		{"shell", func(s *ssh.Session) error { return s.Shell() }},
		{"pty", func(s *ssh.Session) error { return s.RequestPty("xterm", 24, 80, ssh.TerminalModes{}) }},
		{"env", func(s *ssh.Session) error { return s.Setenv("LANG", "C") }},
		{"agent forwarding", func(s *ssh.Session) error { return agent.RequestAgentForwarding(s) }},
		{"x11", func(s *ssh.Session) error { return wantReply(s.SendRequest("x11-req", true, nil)) }},
		{"signal", func(s *ssh.Session) error { return wantReply(s.SendRequest("window-change", true, nil)) }},
		{"other subsystem", func(s *ssh.Session) error { return s.RequestSubsystem("sftp-server") }},
		{"second sftp", func(s *ssh.Session) error {
			if err := s.RequestSubsystem("sftp"); err != nil {
				return fmt.Errorf("first sftp refused: %w", err)
			}
			return s.RequestSubsystem("sftp")
		}},
		{"exec after sftp", func(s *ssh.Session) error {
			if err := s.RequestSubsystem("sftp"); err != nil {
				return fmt.Errorf("first sftp refused: %w", err)
			}
			return wantReply(s.SendRequest("exec", true, ssh.Marshal(struct{ C string }{"id"})))
		}},
	}
	for _, tt := range refused {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.try(session(t))
			if err == nil || strings.Contains(err.Error(), "first sftp refused") {
				t.Fatalf("%s: %v, want refused", tt.name, err)
			}
		})
	}

	t.Run("channels", func(t *testing.T) {
		for _, typ := range []string{"direct-tcpip", "forwarded-tcpip", "x11", "auth-agent@openssh.com", "direct-streamlocal@openssh.com", "bogus"} {
			_, _, err := client.OpenChannel(typ, nil)
			var oce *ssh.OpenChannelError
			if !errors.As(err, &oce) || oce.Reason != ssh.Prohibited {
				t.Errorf("channel %s: %v, want prohibited", typ, err)
			}
		}
		if _, err := client.Dial("tcp", h.addr); err == nil {
			t.Error("direct-tcpip port forwarding allowed")
		}
	})

	t.Run("global requests", func(t *testing.T) {
		if l, err := client.Listen("tcp", "127.0.0.1:0"); err == nil {
			l.Close()
			t.Error("remote port forwarding allowed")
		}
		ok, _, err := client.SendRequest("keepalive@openssh.com", true, nil)
		if err != nil || ok {
			t.Errorf("keepalive: ok %v err %v, want a refusal", ok, err)
		}
	})

	t.Run("sftp", func(t *testing.T) {
		// After all of that the connection still serves SFTP.
		c, err := sftp.NewClient(client)
		if err != nil {
			t.Fatalf("sftp: %v", err)
		}
		c.Close()
	})
}

func wantReply(ok bool, err error) error {
	if err != nil {
		return err
	}
	if !ok {
		return errors.New("refused")
	}
	return nil
}

func TestMaxSessions(t *testing.T) {
	h := start(t, newFakeAuth())
	client, _ := h.login(t)
	var open []*ssh.Session
	for range maxSessions {
		s, err := client.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		open = append(open, s)
	}
	_, err := client.NewSession()
	var oce *ssh.OpenChannelError
	if !errors.As(err, &oce) || oce.Reason != ssh.ResourceShortage {
		t.Fatalf("session %d: %v, want resource shortage", maxSessions+1, err)
	}
	open[0].Close()
	deadline := time.Now().Add(5 * time.Second)
	for {
		s, err := client.NewSession()
		if err == nil {
			s.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("closing a session freed no slot: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	for _, s := range open[1:] {
		s.Close()
	}
}

// TestLoginGrace: a connection that does not log in within the grace time
// is closed; one that did is not.
func TestLoginGrace(t *testing.T) {
	const grace = 300 * time.Millisecond
	h := start(t, newFakeAuth(), withGrace(grace))

	t.Run("idle before login", func(t *testing.T) {
		nc, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		defer nc.Close()
		begin := time.Now()
		_ = nc.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = io.Copy(io.Discard, nc) // the version line, then EOF
		if elapsed := time.Since(begin); err != nil || elapsed < grace-50*time.Millisecond {
			t.Fatalf("connection ended after %v with %v, want a close after %v", elapsed, err, grace)
		}
		waitFor(t, func() bool {
			return len(h.logs.FilterMessage("login grace time exceeded; connection closed").All()) == 1
		})
	})

	t.Run("stalled during login", func(t *testing.T) {
		// Key exchange done, then the password prompt is never answered:
		// the server gives up while the client is still thinking.
		closedWhileAsking := false
		before := len(h.logs.FilterMessage("login grace time exceeded; connection closed").All())
		_, err := h.dial(t, testUser, ssh.KeyboardInteractive(func(string, string, []string, []bool) ([]string, error) {
			deadline := time.Now().Add(5 * time.Second)
			for time.Now().Before(deadline) && !closedWhileAsking {
				closedWhileAsking = len(h.logs.FilterMessage("login grace time exceeded; connection closed").All()) > before
				time.Sleep(5 * time.Millisecond)
			}
			return []string{testPassword, testCode}, nil
		}))
		if err == nil {
			t.Fatal("logged in after the login grace time")
		}
		if !closedWhileAsking {
			t.Fatal("the server did not close a connection stalled at the password prompt")
		}
	})

	t.Run("logged in outlives grace", func(t *testing.T) {
		client, _ := h.login(t)
		time.Sleep(2 * grace)
		c, err := sftp.NewClient(client)
		if err != nil {
			t.Fatalf("logged-in connection closed by the login grace: %v", err)
		}
		c.Close()
	})
}

// TestRevocation: once the session ends (password change, disabled
// account), the open connection is closed.
func TestRevocation(t *testing.T) {
	h := start(t, newFakeAuth(), withRecheck(20*time.Millisecond))
	client, _ := h.login(t)
	time.Sleep(100 * time.Millisecond) // several checks pass
	if _, err := sftp.NewClient(client); err != nil {
		t.Fatalf("connection closed while its session was open: %v", err)
	}
	h.auth.mu.Lock()
	h.auth.ended = true
	h.auth.mu.Unlock()
	waitClosed(t, client)
	waitFor(t, func() bool { return len(h.logs.FilterMessage("session ended; closing the connection").All()) == 1 })
}

// TestRevocationCheckErrors: a session that cannot be checked several times
// in a row is treated as ended.
func TestRevocationCheckErrors(t *testing.T) {
	h := start(t, newFakeAuth(), withRecheck(20*time.Millisecond))
	client, _ := h.login(t)
	h.auth.mu.Lock()
	h.auth.checkErr = errors.New("database is down")
	h.auth.mu.Unlock()
	waitClosed(t, client)
	if n := len(h.logs.FilterMessage("cannot check session").All()); n != recheckErrors-1 {
		t.Errorf("%d warnings before closing, want %d", n, recheckErrors-1)
	}
}

func waitClosed(t *testing.T, client *ssh.Client) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- client.Wait() }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("connection still open")
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 5s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestShutdown: Shutdown stops accepting and drops connections still
// logging in at once, lets logged-in ones run until its context ends, then
// closes them.
func TestShutdown(t *testing.T) {
	h := start(t, newFakeAuth())
	client, _ := h.login(t)
	pending, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer pending.Close()
	waitFor(t, func() bool { h.srv.mu.Lock(); defer h.srv.mu.Unlock(); return len(h.srv.conns) == 2 })

	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(ctx) }()

	_ = pending.SetReadDeadline(time.Now().Add(250 * time.Millisecond))
	if _, err := io.Copy(io.Discard, pending); err != nil {
		t.Errorf("connection still logging in was not closed at once: %v", err)
	}
	select {
	case err := <-h.serve:
		h.serve <- err // for the cleanup's check
	case <-time.After(time.Second):
		t.Fatal("Serve did not return")
	}
	if _, err := net.Dial("tcp", h.addr); err == nil {
		t.Error("still accepting")
	}
	if c, err := sftp.NewClient(client); err != nil {
		t.Errorf("logged-in connection closed before the drain ended: %v", err)
	} else {
		c.Close()
	}
	select {
	case err := <-shut:
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Errorf("Shutdown: %v, want deadline exceeded", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return")
	}
	waitClosed(t, client)
}

func TestShutdownDrained(t *testing.T) {
	h := start(t, newFakeAuth())
	client, _ := h.login(t)
	shut := make(chan error, 1)
	go func() { shut <- h.srv.Shutdown(context.Background()) }()
	time.Sleep(50 * time.Millisecond)
	client.Close()
	select {
	case err := <-shut:
		if err != nil {
			t.Errorf("Shutdown: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown did not return after the last client left")
	}
}

func TestNewRefusesBadConfig(t *testing.T) {
	key := filepath.Join(t.TempDir(), "k")
	for _, tt := range []struct {
		name string
		cfg  Config
		auth Auth
	}{
		{"no host key file", Config{}, newFakeAuth()},
		{"negative grace", Config{HostKeyFile: key, LoginGrace: -time.Second}, newFakeAuth()},
		{"no auth", Config{HostKeyFile: key}, nil},
	} {
		if _, err := New(tt.cfg, zap.NewNop(), tt.auth, fakeIngest{}); err == nil {
			t.Errorf("%s: accepted", tt.name)
		}
	}
}

// kexInitMsg is SSH_MSG_KEXINIT (RFC 4253 section 7.1).
type kexInitMsg struct {
	Cookie                  [16]byte `sshtype:"20"`
	KexAlgos                []string
	ServerHostKeyAlgos      []string
	CiphersClientServer     []string
	CiphersServerClient     []string
	MACsClientServer        []string
	MACsServerClient        []string
	CompressionClientServer []string
	CompressionServerClient []string
	LanguagesClientServer   []string
	LanguagesServerClient   []string
	FirstKexFollows         bool
	Reserved                uint32
}

// rawConnect speaks SSH by hand up to the server's KEXINIT.
func rawConnect(t *testing.T, addr string) (net.Conn, *bufio.Reader, string, kexInitMsg) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(nc, "SSH-2.0-rawtest\r\n"); err != nil {
		t.Fatal(err)
	}
	r := bufio.NewReader(nc)
	line, err := r.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	version := strings.TrimRight(line, "\r\n")
	payload := readRawPacket(t, r)
	var kex kexInitMsg
	if err := ssh.Unmarshal(payload, &kex); err != nil {
		t.Fatalf("server KEXINIT: %v", err)
	}
	_ = nc.SetDeadline(time.Time{})
	return nc, r, version, kex
}

// readRawPacket reads one unencrypted binary packet (RFC 4253 section 6).
func readRawPacket(t *testing.T, r *bufio.Reader) []byte {
	t.Helper()
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		t.Fatal(err)
	}
	n, pad := binary.BigEndian.Uint32(hdr[:4]), uint32(hdr[4])
	if n > 35000 || pad+1 > n {
		t.Fatalf("packet length %d padding %d", n, pad)
	}
	body := make([]byte, n-1)
	if _, err := io.ReadFull(r, body); err != nil {
		t.Fatal(err)
	}
	return body[:n-1-pad]
}

// writeRawPacket writes one unencrypted binary packet.
func writeRawPacket(t *testing.T, w io.Writer, payload []byte) {
	t.Helper()
	pad := 8 - (5+len(payload))%8
	if pad < 4 {
		pad += 8
	}
	b := make([]byte, 5+len(payload)+pad)
	binary.BigEndian.PutUint32(b, uint32(1+len(payload)+pad))
	b[4] = byte(pad)
	copy(b[5:], payload)
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
}
