package notify

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/mail"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/emersion/go-sasl"
	"github.com/emersion/go-smtp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
)

// relay is an in-process SMTP server that records what it receives.
type relay struct {
	addr string
	user string // required AUTH user; "" means none offered
	pass string

	mu   sync.Mutex
	mail []received
}

type received struct {
	from   string
	to     []string
	data   []byte
	authed string
}

func (r *relay) NewSession(*smtp.Conn) (smtp.Session, error) { return &relaySession{r: r}, nil }

type relaySession struct {
	r      *relay
	authed string
	cur    received
}

func (s *relaySession) AuthMechanisms() []string {
	if s.r.user == "" {
		return nil
	}
	return []string{sasl.Plain}
}

func (s *relaySession) Auth(mech string) (sasl.Server, error) {
	return sasl.NewPlainServer(func(identity, user, pass string) error {
		if user != s.r.user || pass != s.r.pass {
			return errors.New("invalid credentials")
		}
		s.authed = user
		return nil
	}), nil
}

func (s *relaySession) Mail(from string, _ *smtp.MailOptions) error {
	if s.r.user != "" && s.authed == "" {
		return smtp.ErrAuthRequired
	}
	s.cur = received{from: from, authed: s.authed}
	return nil
}

func (s *relaySession) Rcpt(to string, _ *smtp.RcptOptions) error {
	s.cur.to = append(s.cur.to, to)
	return nil
}

func (s *relaySession) Data(r io.Reader) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	s.cur.data = b
	s.r.mu.Lock()
	s.r.mail = append(s.r.mail, s.cur)
	s.r.mu.Unlock()
	return nil
}

func (s *relaySession) Reset()        { s.cur = received{} }
func (s *relaySession) Logout() error { return nil }

func (r *relay) received() []received {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]received(nil), r.mail...)
}

// startRelay serves SMTP on 127.0.0.1:0; with tlsConf it offers STARTTLS.
func startRelay(t *testing.T, tlsConf *tls.Config, user, pass string) *relay {
	t.Helper()
	r := &relay{user: user, pass: pass}
	srv := smtp.NewServer(r)
	srv.Domain = "localhost"
	srv.TLSConfig = tlsConf
	srv.ReadTimeout = 10 * time.Second
	srv.WriteTimeout = 10 * time.Second
	srv.ErrorLog = log{t}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r.addr = ln.Addr().String()
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	t.Cleanup(func() {
		srv.Close()
		ln.Close() // Close misses a listener that Serve has not registered yet
		<-done
	})
	return r
}

type log struct{ t *testing.T }

func (l log) Printf(format string, v ...any) { l.t.Logf("smtp server: "+format, v...) }
func (l log) Println(v ...any)               { l.t.Log(append([]any{"smtp server:"}, v...)...) }

// selfSigned returns a server certificate for 127.0.0.1 and a client config
// that trusts it.
func selfSigned(t *testing.T) (server, client *tls.Config) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1),
		Subject:      pkix.Name{CommonName: "127.0.0.1"},
		IPAddresses:  []net.IP{net.IPv4(127, 0, 0, 1)},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	server = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key}}}
	client = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	return server, client
}

func writePassword(t *testing.T, pw string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "smtp-password")
	if err := os.WriteFile(p, []byte(pw), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func codeMessage() Message {
	return Message{
		User:    "alice",
		Email:   "alice@example.org",
		Subject: "Your mftd code " + secretCode,
		Body:    "Your code is " + secretCode + ".\r\nIt expires in 30 minutes.\r\n",
	}
}

func checkDelivered(t *testing.T, r *relay, m Message, wantAuth string) {
	t.Helper()
	got := r.received()
	if len(got) != 1 {
		t.Fatalf("relay received %d messages, want 1", len(got))
	}
	rc := got[0]
	if rc.from != "mftd@example.org" {
		t.Errorf("envelope from %q", rc.from)
	}
	if len(rc.to) != 1 || rc.to[0] != m.Email {
		t.Errorf("envelope to %v, want [%s]", rc.to, m.Email)
	}
	if rc.authed != wantAuth {
		t.Errorf("authenticated as %q, want %q", rc.authed, wantAuth)
	}
	msg, err := mail.ReadMessage(bytes.NewReader(rc.data))
	if err != nil {
		t.Fatalf("unparseable message: %v\n%s", err, rc.data)
	}
	if got := msg.Header.Get("Subject"); got != m.Subject {
		t.Errorf("Subject %q, want %q", got, m.Subject)
	}
	if to, err := msg.Header.AddressList("To"); err != nil || len(to) != 1 || to[0].Address != m.Email {
		t.Errorf("To header %v (%v)", to, err)
	}
	if _, err := msg.Header.Date(); err != nil {
		t.Errorf("Date header: %v", err)
	}
	body, _ := io.ReadAll(msg.Body)
	if !strings.Contains(string(body), "Your code is "+secretCode+".") {
		t.Errorf("body %q does not carry the code", body)
	}
}

func TestSMTPPlainRelay(t *testing.T) {
	r := startRelay(t, nil, "", "")
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := NewSMTP(SMTPConfig{Addr: r.addr, From: "mftd@example.org"}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	m := codeMessage()
	if err := s.Notify(context.Background(), m); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	checkDelivered(t, r, m, "")
	for _, e := range logs.All() {
		line := e.Message + fmt.Sprint(e.ContextMap())
		if strings.Contains(line, secretCode) || strings.Contains(line, m.Email) {
			t.Errorf("log line carries the code or the address: %s", line)
		}
	}
	if logs.FilterField(zap.String("user", "alice")).Len() != 1 {
		t.Errorf("want one log line naming the user, got %v", logs.All())
	}
}

func TestSMTPStartTLSAuth(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	r := startRelay(t, serverTLS, "mftd-relay", "s3cret relay pass")
	core, logs := observer.New(zapcore.DebugLevel)
	s, err := NewSMTP(SMTPConfig{
		Addr: r.addr, From: "mftd@example.org", StartTLS: true,
		Username: "mftd-relay", PasswordFile: writePassword(t, "s3cret relay pass\n"),
	}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	s.tls = clientTLS
	m := codeMessage()
	if err := s.Notify(context.Background(), m); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	checkDelivered(t, r, m, "mftd-relay")
	for _, e := range logs.All() {
		if strings.Contains(e.Message+fmt.Sprint(e.ContextMap()), "s3cret") {
			t.Errorf("log line carries the relay password: %v", e)
		}
	}
}

func TestSMTPWrongPassword(t *testing.T) {
	serverTLS, clientTLS := selfSigned(t)
	r := startRelay(t, serverTLS, "mftd-relay", "right")
	s, err := NewSMTP(SMTPConfig{
		Addr: r.addr, From: "mftd@example.org", StartTLS: true,
		Username: "mftd-relay", PasswordFile: writePassword(t, "wrong"),
	}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s.tls = clientTLS
	if err := s.Notify(context.Background(), codeMessage()); err == nil {
		t.Fatal("Notify with a wrong relay password succeeded")
	}
	if n := len(r.received()); n != 0 {
		t.Errorf("relay received %d messages", n)
	}
}

// StartTLS is mandatory: a relay that does not offer it gets nothing.
func TestSMTPStartTLSRequired(t *testing.T) {
	r := startRelay(t, nil, "", "")
	s, err := NewSMTP(SMTPConfig{Addr: r.addr, From: "mftd@example.org", StartTLS: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Notify(context.Background(), codeMessage()); err == nil {
		t.Fatal("Notify succeeded without STARTTLS")
	}
	if n := len(r.received()); n != 0 {
		t.Errorf("relay received %d messages in clear", n)
	}
}

// The relay's certificate is verified: an untrusted one is refused.
func TestSMTPUntrustedCertificate(t *testing.T) {
	serverTLS, _ := selfSigned(t)
	_, otherClient := selfSigned(t)
	r := startRelay(t, serverTLS, "", "")
	s, err := NewSMTP(SMTPConfig{Addr: r.addr, From: "mftd@example.org", StartTLS: true}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	s.tls = otherClient
	if err := s.Notify(context.Background(), codeMessage()); err == nil {
		t.Fatal("Notify succeeded against an untrusted certificate")
	}
	if n := len(r.received()); n != 0 {
		t.Errorf("relay received %d messages", n)
	}
}

func TestSMTPNoAddress(t *testing.T) {
	r := startRelay(t, nil, "", "")
	s, err := NewSMTP(SMTPConfig{Addr: r.addr, From: "mftd@example.org"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	m := codeMessage()
	m.Email = ""
	if err := s.Notify(context.Background(), m); !errors.Is(err, ErrNoAddress) {
		t.Errorf("Notify = %v, want ErrNoAddress", err)
	}
	m.Email = "alice@example.org\r\nRCPT TO:<mallory@example.org>"
	if err := s.Notify(context.Background(), m); !errors.Is(err, ErrInvalidMessage) {
		t.Errorf("Notify = %v, want ErrInvalidMessage", err)
	}
	if n := len(r.received()); n != 0 {
		t.Errorf("relay received %d messages", n)
	}
}

func TestSMTPUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close() // nothing listens there now
	s, err := NewSMTP(SMTPConfig{Addr: addr, From: "mftd@example.org"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := s.Notify(ctx, codeMessage()); err == nil {
		t.Fatal("Notify to an unreachable relay succeeded")
	}
}

func TestNewSMTPConfigErrors(t *testing.T) {
	pw := writePassword(t, "pw")
	empty := writePassword(t, "\n")
	for _, tc := range []struct {
		name string
		cfg  SMTPConfig
	}{
		{"no port", SMTPConfig{Addr: "mail.example.org", From: "mftd@example.org"}},
		{"bad port", SMTPConfig{Addr: "mail.example.org:smtp", From: "mftd@example.org"}},
		{"no host", SMTPConfig{Addr: ":25", From: "mftd@example.org"}},
		{"bad from", SMTPConfig{Addr: "mail.example.org:25", From: "mftd"}},
		{"user without password", SMTPConfig{Addr: "mail.example.org:25", From: "mftd@example.org", Username: "u", StartTLS: true}},
		{"password without user", SMTPConfig{Addr: "mail.example.org:25", From: "mftd@example.org", PasswordFile: pw, StartTLS: true}},
		{"credentials in clear", SMTPConfig{Addr: "mail.example.org:25", From: "mftd@example.org", Username: "u", PasswordFile: pw}},
		{"missing password file", SMTPConfig{Addr: "mail.example.org:25", From: "mftd@example.org", Username: "u", PasswordFile: filepath.Join(t.TempDir(), "none"), StartTLS: true}},
		{"empty password file", SMTPConfig{Addr: "mail.example.org:25", From: "mftd@example.org", Username: "u", PasswordFile: empty, StartTLS: true}},
	} {
		if _, err := NewSMTP(tc.cfg, zap.NewNop()); err == nil {
			t.Errorf("%s: NewSMTP succeeded", tc.name)
		}
	}
}
