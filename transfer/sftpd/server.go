package sftpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/pkg/sftp"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/mftd/mftd/transfer/authn"
)

const (
	// serverVersion is the identification string mftd announces.
	serverVersion = "SSH-2.0-mftd"
	// defaultLoginGrace bounds connect-to-login when Config.LoginGrace is 0.
	defaultLoginGrace = 30 * time.Second
	// maxAuthTries is the number of failed authentication attempts after
	// which a connection is closed (OpenSSH's MaxAuthTries default).
	maxAuthTries = 6
	// maxSessions bounds the session channels open at once on one
	// connection (OpenSSH's MaxSessions default), and so its SFTP servers.
	maxSessions = 10
	// defaultRecheck is how often an open connection's session is checked.
	defaultRecheck = 5 * time.Second
	// recheckTimeout bounds one session check.
	recheckTimeout = 10 * time.Second
	// recheckErrors is how many session checks in a row may fail with an
	// error other than an ended session before the connection is closed.
	recheckErrors = 3

	promptPassword = "Password: "
	promptCode     = "Verification code: "

	// extKeyFingerprint names the Permissions extension that carries the
	// SHA256 fingerprint of the key a client proved it holds.
	extKeyFingerprint = "mftd-key-fingerprint"
	// extMethod names the Permissions extension that says how a login was
	// made: methodPassword or methodKey.
	extMethod      = "mftd-login-method"
	methodPassword = "password+code"
	methodKey      = "publickey+code"
)

// sessionKey is the Permissions.ExtraData key of the authn.Session a login
// opened.
type sessionKey struct{}

// ErrServerClosed is what Serve returns after Shutdown or Close.
var ErrServerClosed = errors.New("sftpd: server closed")

// errLoginFailed is every failed authentication step. x/crypto answers it with a
// bare SSH_MSG_USERAUTH_FAILURE: the client never learns which factor failed.
var errLoginFailed = errors.New("sftpd: authentication failed")

// Algorithms offered. Nothing with SHA-1, no CBC, no finite-field groups.
//
// The ciphers are AES-GCM only. chacha20-poly1305 is as safe, but
// x/crypto/ssh's implementation has no assembly on amd64: measured here it
// cost the daemon 2.2× OpenSSH's CPU per byte, against AES-GCM's hardware
// support. Since the client's preference decides and OpenSSH's client
// proposes chacha20 first, offering it would make every default client slow.
// Every current client (OpenSSH ≥ 6.2, PuTTY/WinSCP ≥ 0.76/5.19, FileZilla,
// lftp, rclone) speaks AES-GCM.
var (
	cipherAlgos = []string{ssh.CipherAES128GCM, ssh.CipherAES256GCM}
	// macAlgos apply only to non-AEAD ciphers, of which none is offered.
	macAlgos        = []string{ssh.HMACSHA256ETM, ssh.HMACSHA512ETM}
	pubKeyAuthAlgos = []string{
		ssh.KeyAlgoED25519, ssh.KeyAlgoSKED25519,
		ssh.KeyAlgoECDSA256, ssh.KeyAlgoECDSA384, ssh.KeyAlgoECDSA521, ssh.KeyAlgoSKECDSA256,
		ssh.KeyAlgoRSASHA256, ssh.KeyAlgoRSASHA512,
	}
)

// kexAlgos returns the key exchanges offered: the post-quantum hybrid where
// x/crypto has it, then curve25519 under both of its names.
func kexAlgos() []string {
	var k []string
	if slices.Contains(ssh.SupportedAlgorithms().KeyExchanges, ssh.KeyExchangeMLKEM768X25519) {
		k = append(k, ssh.KeyExchangeMLKEM768X25519)
	}
	return append(k, ssh.KeyExchangeCurve25519, "curve25519-sha256@libssh.org")
}

// Server is the SFTP door: it accepts SSH connections, logs users in with two
// factors and serves the sftp subsystem, and nothing else, to them.
//
// Strict key exchange (kex-strict-s-v00@openssh.com, the Terrapin
// countermeasure) is always on in x/crypto's server: it is used with every
// client that asks for it, as OpenSSH ≥ 9.6 and x/crypto clients do.
type Server struct {
	cfg     Config
	log     *zap.Logger
	auth    Auth
	ing     Ingest
	base    *ssh.ServerConfig // algorithms, host key, limits; callbacks are added per connection
	hostKey ssh.PublicKey

	recheck   time.Duration // how often an open connection's session is checked
	connected func(*conn)   // tests: called with each logged-in connection

	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
	conns     map[*tracked]struct{}
	wg        sync.WaitGroup // one per tracked connection
}

// tracked is one accepted connection.
type tracked struct {
	nc       net.Conn
	loggedIn bool // guarded by Server.mu
}

// New returns a Server for cfg. The host key is read from cfg.HostKeyFile,
// or generated there on first use (LoadOrCreateHostKey). log, auth and ing
// must not be nil. A zero cfg.LoginGrace means 30 seconds.
func New(cfg Config, log *zap.Logger, auth Auth, ing Ingest) (*Server, error) {
	if log == nil || auth == nil || ing == nil {
		return nil, errors.New("sftpd: New needs a logger, an Auth and an Ingest")
	}
	if cfg.LoginGrace < 0 {
		return nil, fmt.Errorf("sftpd: login grace %v is negative", cfg.LoginGrace)
	}
	if cfg.LoginGrace == 0 {
		cfg.LoginGrace = defaultLoginGrace
	}
	key, err := LoadOrCreateHostKey(cfg.HostKeyFile)
	if err != nil {
		return nil, err
	}
	base := &ssh.ServerConfig{
		Config: ssh.Config{
			KeyExchanges: kexAlgos(),
			Ciphers:      slices.Clone(cipherAlgos),
			MACs:         slices.Clone(macAlgos),
		},
		PublicKeyAuthAlgorithms: slices.Clone(pubKeyAuthAlgos),
		MaxAuthTries:            maxAuthTries,
		ServerVersion:           serverVersion,
	}
	base.AddHostKey(key)
	log.Info("SFTP host key", zap.String("key_type", key.PublicKey().Type()),
		zap.String("fingerprint", ssh.FingerprintSHA256(key.PublicKey())))
	return &Server{
		cfg: cfg, log: log, auth: auth, ing: ing, base: base, hostKey: key.PublicKey(),
		recheck:   defaultRecheck,
		listeners: make(map[net.Listener]struct{}),
		conns:     make(map[*tracked]struct{}),
	}, nil
}

// HostKey returns the server's public host key (for known_hosts, or to print
// its fingerprint).
func (s *Server) HostKey() ssh.PublicKey { return s.hostKey }

// Serve accepts connections on l until Shutdown or Close, serving each in its
// own goroutine. It closes l and returns ErrServerClosed after Shutdown or
// Close, or the listener's error.
func (s *Server) Serve(l net.Listener) error {
	defer l.Close()
	if !s.addListener(l) {
		return ErrServerClosed
	}
	defer s.removeListener(l)
	var delay time.Duration
	for {
		nc, err := l.Accept()
		if err != nil {
			if s.isClosed() {
				return ErrServerClosed
			}
			if !temporary(err) {
				return fmt.Errorf("sftpd: accept: %w", err)
			}
			delay = min(max(2*delay, 5*time.Millisecond), time.Second)
			s.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("delay", delay))
			time.Sleep(delay)
			continue
		}
		delay = 0
		t, ok := s.track(nc)
		if !ok {
			nc.Close()
			return ErrServerClosed
		}
		go s.handle(t)
	}
}

// temporary reports whether an Accept error will likely pass (out of file
// descriptors, a timeout).
func temporary(err error) bool {
	var ne net.Error
	return errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) ||
		(errors.As(err, &ne) && ne.Timeout())
}

// Shutdown stops accepting, closes connections that have not logged in, and
// waits for logged-in connections to end. When ctx ends first, it closes
// them, waits for their goroutines, and returns ctx's error. Uploads in
// progress keep their durable bytes: closing a channel ends its SFTP server,
// which hands every open file to the ingest side as dropped.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.closeLocked(false)
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
	}
	s.mu.Lock()
	s.closeLocked(true)
	s.mu.Unlock()
	<-done
	return ctx.Err()
}

// Close stops accepting, closes every connection, and waits for their
// goroutines to end.
func (s *Server) Close() error {
	s.mu.Lock()
	s.closeLocked(true)
	s.mu.Unlock()
	s.wg.Wait()
	return nil
}

// closeLocked marks the server closed, closes its listeners, and closes the
// connections that have not logged in, or all of them.
func (s *Server) closeLocked(all bool) {
	s.closed = true
	for l := range s.listeners {
		l.Close()
	}
	for t := range s.conns {
		if all || !t.loggedIn {
			t.nc.Close()
		}
	}
}

func (s *Server) addListener(l net.Listener) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.listeners[l] = struct{}{}
	return true
}

func (s *Server) removeListener(l net.Listener) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.listeners, l)
}

func (s *Server) isClosed() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closed
}

// track registers an accepted connection; false once the server is closed.
func (s *Server) track(nc net.Conn) (*tracked, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, false
	}
	t := &tracked{nc: nc}
	s.conns[t] = struct{}{}
	s.wg.Add(1)
	return t, true
}

func (s *Server) untrack(t *tracked) {
	s.mu.Lock()
	delete(s.conns, t)
	s.mu.Unlock()
	s.wg.Done()
}

// markLoggedIn records that t logged in, so Shutdown drains it rather than
// closing it; false if the server is shutting down.
func (s *Server) markLoggedIn(t *tracked) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	t.loggedIn = true
	return true
}

// handle runs one connection: the handshake and login within the login
// grace time, then its channels until it ends.
func (s *Server) handle(t *tracked) {
	defer s.untrack(t)
	nc := t.nc
	defer nc.Close()
	remote := nc.RemoteAddr().String()
	begin := time.Now()

	// x/crypto has no login grace time: a deadline on the socket bounds the
	// handshake and authentication, and the context bounds the account
	// checks the callbacks make.
	deadline := time.Now().Add(s.cfg.LoginGrace)
	if err := nc.SetDeadline(deadline); err != nil {
		return
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	sconn, chans, reqs, err := ssh.NewServerConn(nc, s.loginConfig(ctx, remote))
	cancel()
	if err != nil {
		s.handshakeFailed(remote, err)
		return
	}
	defer sconn.Close()
	if err := nc.SetDeadline(time.Time{}); err != nil {
		return
	}
	c, err := s.newConn(sconn, remote)
	if err != nil {
		s.log.Warn("login: session not usable; closing", zap.String("remote_addr", remote), zap.Error(err))
		return
	}
	if !s.markLoggedIn(t) {
		return
	}
	if s.connected != nil {
		s.connected(c)
	}
	s.serveConn(sconn, chans, reqs, c)
	c.log.Info("connection closed", zap.Duration("duration", time.Since(begin)))
}

// handshakeFailed logs why a connection ended before login.
func (s *Server) handshakeFailed(remote string, err error) {
	var authErr *ssh.ServerAuthError
	switch {
	case errors.Is(err, os.ErrDeadlineExceeded):
		s.log.Info("login grace time exceeded; connection closed", zap.String("remote_addr", remote),
			zap.Duration("login_grace", s.cfg.LoginGrace))
	case errors.As(err, &authErr):
		s.log.Debug("connection closed before login", zap.String("remote_addr", remote),
			zap.Int("attempts", len(authErr.Errors)))
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		s.log.Debug("connection closed before login", zap.String("remote_addr", remote))
	default:
		// Includes a public key signature that does not verify.
		s.log.Info("SSH handshake failed", zap.String("remote_addr", remote), zap.Error(err))
	}
}

// newConn builds the connection's identity from what its login recorded.
// The user name is the account's canonical one, as the session has it.
func (s *Server) newConn(sconn *ssh.ServerConn, remote string) (*conn, error) {
	p := sconn.Permissions
	if p == nil {
		return nil, errors.New("login left no permissions")
	}
	sess, ok := p.ExtraData[sessionKey{}].(authn.Session)
	if !ok || sess.Token == "" {
		return nil, errors.New("login left no session")
	}
	ctx, cancel := context.WithTimeout(context.Background(), recheckTimeout)
	defer cancel()
	id, err := s.auth.Authenticate(ctx, sess.Token)
	if err != nil {
		return nil, fmt.Errorf("check new session: %w", err)
	}
	c := &conn{
		token:       sess.Token,
		user:        id.User,
		remote:      remote,
		client:      string(sconn.ClientVersion()),
		fingerprint: p.Extensions[extKeyFingerprint],
		auth:        s.auth,
		ing:         s.ing,
		cfg:         s.cfg,
	}
	c.log = s.log.With(zap.String("proto", "sftp"), zap.String("user", c.user), zap.String("remote_addr", remote))
	fields := []zap.Field{
		zap.String("method", p.Extensions[extMethod]),
		zap.String("client_version", clip(c.client)),
		zap.String("key_fingerprint", c.fingerprint),
		zap.Bool("emergency", id.Emergency),
	}
	if a, ok := sconn.Conn.(ssh.AlgorithmsConnMetadata); ok {
		alg := a.Algorithms()
		fields = append(fields, zap.String("kex", alg.KeyExchange), zap.String("cipher", alg.Read.Cipher))
	}
	c.log.Info("login", fields...)
	return c, nil
}

// loginConfig returns the SSH configuration for one connection: the shared
// algorithms and host key, with authentication callbacks bound to ctx and
// the client's address.
//
// Methods: keyboard-interactive asking for the password and the code; or
// publickey, where a key registered for the user and proved by a signature
// leads to a second keyboard-interactive step asking only for the code.
func (s *Server) loginConfig(ctx context.Context, remote string) *ssh.ServerConfig {
	cfg := *s.base
	cfg.KeyboardInteractiveCallback = func(m ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
		return s.passwordLogin(ctx, m, remote, ask)
	}
	cfg.PublicKeyCallback = func(m ssh.ConnMetadata, key ssh.PublicKey) (*ssh.Permissions, error) {
		return s.keyOffered(ctx, m, remote, key)
	}
	cfg.VerifiedPublicKeyCallback = func(m ssh.ConnMetadata, key ssh.PublicKey, approved *ssh.Permissions, _ string) (*ssh.Permissions, error) {
		return s.keyProved(ctx, m, remote, key, approved)
	}
	return &cfg
}

// passwordLogin asks for the password (not echoed) and the code (echoed) in
// one round and opens a session if both are right.
func (s *Server) passwordLogin(ctx context.Context, m ssh.ConnMetadata, remote string, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
	answers, err := ask("", "", []string{promptPassword, promptCode}, []bool{false, true})
	if err != nil {
		return nil, err // the transport failed; the connection ends
	}
	if len(answers) != 2 {
		return nil, errLoginFailed
	}
	sess, err := s.auth.LoginPassword(ctx, m.User(), answers[0], answers[1], remote)
	if err != nil {
		s.loginFailed(m, remote, methodPassword, "", err)
		return nil, errLoginFailed
	}
	return loginPermissions(sess, methodPassword, ""), nil
}

// keyOffered answers whether key may be used by the user: it is called for
// a client's query (no signature yet) and for its signed request alike, so
// its answer grants nothing. It only marks the key as worth a signature;
// keyProved, called once x/crypto has verified that signature over this
// very key, is what leads on.
func (s *Server) keyOffered(ctx context.Context, m ssh.ConnMetadata, remote string, key ssh.PublicKey) (*ssh.Permissions, error) {
	if _, ok := key.(*ssh.Certificate); ok {
		return nil, errLoginFailed // no certificate authority is configured
	}
	fp := ssh.FingerprintSHA256(key)
	ok, err := s.auth.KeyRegistered(ctx, m.User(), key.Marshal())
	if err != nil {
		s.log.Error("check public key", zap.String("user", clip(m.User())), zap.String("remote_addr", remote),
			zap.String("key_fingerprint", fp), zap.Error(err))
		return nil, errLoginFailed
	}
	if !ok {
		return nil, errLoginFailed
	}
	return &ssh.Permissions{Extensions: map[string]string{extKeyFingerprint: fp}}, nil
}

// keyProved runs after the client signed with key, a key keyOffered
// accepted. The key it passes on to LoginKey is the one whose signature
// x/crypto verified; approved, keyOffered's answer for it, must name the
// same key. The next step asks for the code only.
func (s *Server) keyProved(ctx context.Context, m ssh.ConnMetadata, remote string, key ssh.PublicKey, approved *ssh.Permissions) (*ssh.Permissions, error) {
	fp := ssh.FingerprintSHA256(key)
	if approved == nil || approved.Extensions[extKeyFingerprint] != fp {
		s.log.Error("public key proved but not the one approved; refusing",
			zap.String("remote_addr", remote), zap.String("key_fingerprint", fp))
		return nil, errLoginFailed
	}
	user, wire := m.User(), key.Marshal()
	codeStep := func(m ssh.ConnMetadata, ask ssh.KeyboardInteractiveChallenge) (*ssh.Permissions, error) {
		if m.User() != user { // x/crypto refuses this too
			return nil, errLoginFailed
		}
		answers, err := ask("", "", []string{promptCode}, []bool{true})
		if err != nil {
			return nil, err
		}
		if len(answers) != 1 {
			return nil, errLoginFailed
		}
		sess, err := s.auth.LoginKey(ctx, user, wire, answers[0], remote)
		if err != nil {
			s.loginFailed(m, remote, methodKey, fp, err)
			return nil, errLoginFailed
		}
		return loginPermissions(sess, methodKey, fp), nil
	}
	return nil, &ssh.PartialSuccessError{Next: ssh.ServerAuthCallbacks{KeyboardInteractiveCallback: codeStep}}
}

// loginPermissions records a successful login for newConn.
func loginPermissions(sess authn.Session, method, fp string) *ssh.Permissions {
	return &ssh.Permissions{
		Extensions: map[string]string{extMethod: method, extKeyFingerprint: fp},
		ExtraData:  map[any]any{sessionKey{}: sess},
	}
}

// loginFailed logs a failed login step, never its secrets.
func (s *Server) loginFailed(m ssh.ConnMetadata, remote, method, fp string, err error) {
	fields := []zap.Field{
		zap.String("user", clip(m.User())), zap.String("remote_addr", remote), zap.String("method", method),
		zap.String("client_version", clip(string(m.ClientVersion()))), zap.String("key_fingerprint", fp),
	}
	if !errors.Is(err, authn.ErrBadCredentials) {
		s.log.Error("login failed", append(fields, zap.Error(err))...)
		return
	}
	s.log.Info("login failed", fields...)
}

// clip bounds a client-chosen string for a log line.
func clip(v string) string {
	const n = 64
	if len(v) > n {
		return v[:n] + "…"
	}
	return v
}

// serveConn serves a logged-in connection until it ends: session channels
// with the sftp subsystem, every other channel and global request refused,
// and the login's session re-checked every s.recheck.
func (s *Server) serveConn(sconn *ssh.ServerConn, chans <-chan ssh.NewChannel, reqs <-chan *ssh.Request, c *conn) {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { refuseRequests(reqs, c.log, "global request") })
	wg.Go(func() { s.watch(ctx, sconn, c) })
	var open atomic.Int32
	for nch := range chans {
		if t := nch.ChannelType(); t != "session" {
			c.log.Info("channel refused", zap.String("channel_type", clip(t)))
			_ = nch.Reject(ssh.Prohibited, "only the sftp subsystem is available")
			continue
		}
		if open.Load() >= maxSessions {
			_ = nch.Reject(ssh.ResourceShortage, "too many sessions")
			continue
		}
		ch, chReqs, err := nch.Accept()
		if err != nil {
			continue
		}
		open.Add(1)
		wg.Go(func() {
			defer open.Add(-1)
			serveSession(c, ch, chReqs)
		})
	}
	cancel()
	wg.Wait()
}

// serveSession accepts one "subsystem sftp" request on a session channel and
// serves SFTP on it; every other request (exec, shell, pty-req, env,
// x11-req, agent forwarding, a second subsystem) is refused.
func serveSession(c *conn, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	var done chan struct{}
	for req := range reqs {
		ok := done == nil && req.Type == "subsystem" && subsystemName(req.Payload) == "sftp"
		_ = req.Reply(ok, nil)
		if !ok {
			c.log.Debug("session request refused", zap.String("request", clip(req.Type)))
			continue
		}
		done = make(chan struct{})
		go func() {
			defer close(done)
			serveSFTP(c, ch)
		}()
	}
	if done != nil {
		<-done
	}
}

// subsystemName decodes a subsystem request's payload ("" if malformed).
func subsystemName(payload []byte) string {
	var p struct{ Name string }
	if err := ssh.Unmarshal(payload, &p); err != nil {
		return ""
	}
	return p.Name
}

// serveSFTP runs the SFTP server on ch until the client ends it or the
// connection drops, then closes the channel with an exit status.
// requestServerOptions are the options of every sftp request server (the
// tests use them too).
func requestServerOptions() []sftp.RequestServerOption {
	return []sftp.RequestServerOption{
		sftp.WithStartDirectory("/upload"),
		// Packet buffers are reused once their request is answered, instead
		// of one allocation per packet (measured: ~22% of the daemon's CPU
		// went to collecting them). Safe with the writer: it hands an
		// in-order packet to ingest and returns only after ingest has read
		// it, and copies packets it holds for reordering.
		sftp.WithRSAllocator(),
	}
}

func serveSFTP(c *conn, ch ssh.Channel) {
	srv := sftp.NewRequestServer(ch, c.handlers(), requestServerOptions()...)
	err := srv.Serve()
	status := uint32(0)
	if err != nil && !errors.Is(err, io.EOF) {
		status = 1
		c.log.Debug("sftp session ended", zap.Error(err))
	}
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{status}))
	_ = srv.Close()
}

// refuseRequests answers every request on in with failure.
func refuseRequests(in <-chan *ssh.Request, log *zap.Logger, what string) {
	for req := range in {
		log.Debug(what+" refused", zap.String("request", clip(req.Type)))
		_ = req.Reply(false, nil)
	}
}

// watch re-checks the login's session every s.recheck and closes the
// connection once it has ended (password changed, account disabled, session
// expired or revoked), or cannot be checked recheckErrors times in a row.
func (s *Server) watch(ctx context.Context, sconn ssh.Conn, c *conn) {
	t := time.NewTicker(s.recheck)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		cctx, cancel := context.WithTimeout(ctx, recheckTimeout)
		_, err := s.auth.Authenticate(cctx, c.token)
		cancel()
		switch {
		case err == nil:
			failures = 0
			continue
		case ctx.Err() != nil:
			return
		case errors.Is(err, authn.ErrBadCredentials):
			c.log.Info("session ended; closing the connection")
		default:
			if failures++; failures < recheckErrors {
				c.log.Warn("cannot check session", zap.Error(err))
				continue
			}
			c.log.Warn("cannot check session; closing the connection", zap.Error(err))
		}
		_ = sconn.Close()
		return
	}
}
