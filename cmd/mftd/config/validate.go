package config

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
)

// Validate checks every key of a decoded configuration, defaults filled in,
// and returns an *Error naming each bad key, or nil. It reads nothing but
// the TLS files, which must be readable.
func (c *Config) Validate() error {
	var v validator
	if c.DataDir == "" {
		v.add("data_dir", "must not be empty")
	}
	c.HTTPS.validate(&v)
	switch c.Storage.Backend {
	case "local":
	case "s3":
		c.Storage.S3.validate(&v)
	default:
		v.add("storage.backend", "must be %q or %q, got %s", "local", "s3", short(c.Storage.Backend))
	}
	if c.Database.Driver != "sqlite" {
		v.add("database.driver", "must be %q, got %s", "sqlite", short(c.Database.Driver))
	}
	if c.Database.Path == "" {
		v.add("database.path", "must not be empty")
	}
	v.durationAtLeast("retention.arrivals", c.Retention.Arrivals, time.Second)
	v.durationAtLeast("retention.incomplete_uploads", c.Retention.IncompleteUploads, time.Minute)
	v.durationBetween("retention.sweep_interval", c.Retention.SweepInterval, time.Second, 24*time.Hour)
	v.durationAtLeast("retention.quarantine", c.Retention.Quarantine, time.Second)
	c.Quotas.validate(&v)
	c.Limits.validate(&v)
	v.durationBetween("auth.session_ttl", c.Auth.SessionTTL, time.Minute, 720*time.Hour)
	switch {
	case c.Auth.TOTPIssuer == "":
		v.add("auth.totp_issuer", "must not be empty")
	case strings.Contains(c.Auth.TOTPIssuer, ":"):
		v.add("auth.totp_issuer", "must not contain a colon (it separates issuer and account in authenticator apps)")
	}
	v.durationBetween("auth.session_idle", c.Auth.SessionIdle, time.Minute, 720*time.Hour)
	if c.Auth.SessionTTL.D() >= time.Minute && c.Auth.SessionIdle > c.Auth.SessionTTL {
		v.add("auth.session_idle", "must not be longer than auth.session_ttl (%v)", c.Auth.SessionTTL)
	}
	v.intBetween("auth.lockout.threshold", c.Auth.Lockout.Threshold, 1, 1000)
	v.intBetween("auth.lockout.address_threshold", c.Auth.Lockout.AddressThreshold, 1, 1000000)
	v.durationBetween("auth.lockout.window", c.Auth.Lockout.Window, time.Second, 720*time.Hour)
	v.durationBetween("auth.lockout.duration", c.Auth.Lockout.Duration, time.Second, 720*time.Hour)
	c.Notify.validate(&v)
	if c.Admin.Listen != "" {
		if msg := checkListen(c.Admin.Listen); msg != "" {
			v.add("admin.listen", "%s", msg)
		} else if c.Admin.Listen == c.HTTPS.Listen {
			v.add("admin.listen", "must differ from https.listen: admin routes never share the public listener")
		}
	}
	if c.SFTP.Listen != "" {
		if msg := checkListen(c.SFTP.Listen); msg != "" {
			v.add("sftp.listen", "%s", msg)
		} else if c.SFTP.Listen == c.HTTPS.Listen || c.SFTP.Listen == c.Admin.Listen {
			v.add("sftp.listen", "must differ from https.listen and admin.listen")
		}
	}
	v.durationBetween("sftp.login_grace", c.SFTP.LoginGrace, time.Second, 10*time.Minute)
	v.sizeBetween("sftp.window", c.SFTP.Window, MiB, 32*MiB)
	c.Scanner.validate(&v)
	c.Egress.validate(&v)
	v.oneOf("log.level", c.Log.Level, "debug", "info", "warn", "error")
	v.oneOf("log.format", c.Log.Format, "json", "console")
	return v.err()
}

func (s *StorageS3) validate(v *validator) {
	if _, _, err := net.SplitHostPort(s.Endpoint); err != nil {
		v.add("storage.s3.endpoint", "must be host:port")
	}
	if s.Bucket == "" {
		v.add("storage.s3.bucket", "must be set with storage.backend s3")
	}
	if s.AccessKey == "" {
		v.add("storage.s3.access_key", "must be set with storage.backend s3")
	}
	switch {
	case s.SecretKey != "" && s.SecretKeyFile != "":
		v.add("storage.s3.secret_key", "set secret_key or secret_key_file, not both")
	case s.SecretKey == "" && s.SecretKeyFile == "":
		v.add("storage.s3.secret_key_file", "set secret_key_file (or secret_key) with storage.backend s3")
	case s.SecretKeyFile != "":
		if msg := checkReadable(s.SecretKeyFile); msg != "" {
			v.add("storage.s3.secret_key_file", "%s", msg)
		}
	}
	if s.CAFile != "" {
		if msg := checkReadable(s.CAFile); msg != "" {
			v.add("storage.s3.ca_file", "%s", msg)
		}
	}
	v.sizeBetween("storage.s3.part_size", s.PartSize, 5*MiB, 5*GiB)
	v.intBetween("storage.s3.concurrency", s.Concurrency, 1, 16)
	if s.Memory < s.PartSize {
		v.add("storage.s3.memory", "must hold at least one part (storage.s3.part_size, %s), got %s", s.PartSize, s.Memory)
	}
}

func (q *Quotas) validate(v *validator) {
	if q.UserArrivalsBytes < 0 {
		v.add("quotas.user_arrivals_bytes", "must not be negative")
	}
	if q.UserArrivalsFiles < 0 {
		v.add("quotas.user_arrivals_files", "must not be negative (0: no limit)")
	}
	if q.ShareBytes < 0 {
		v.add("quotas.share_bytes", "must not be negative")
	}
	for name, u := range q.Users {
		if canon, err := policy.CanonicalUsername(name); err != nil || canon != name {
			v.add("quotas.users."+name, "must be a user name as mftd writes it (lower case, canonical)")
		}
		if u.ArrivalsBytes < 0 || u.ArrivalsFiles < 0 {
			v.add("quotas.users."+name, "must not be negative (0: no limit)")
		}
	}
	for name, s := range q.Shares {
		if err := policy.CheckShareName(name); err != nil {
			v.add("quotas.shares."+name, "%v", err)
		}
		if s.Bytes < 0 {
			v.add("quotas.shares."+name, "must not be negative (0: no limit)")
		}
	}
}

func (s *Scanner) validate(v *validator) {
	v.intBetween("scanner.workers", s.Workers, 1, 64)
	if a := s.Clamd.Address; a != "" {
		if _, err := scanner.NewClamd(scanner.ClamdConfig{Address: a}); err != nil {
			v.add("scanner.clamd.address", "must be tcp://host:port or unix:///path, got %s", short(a))
		}
	}
	v.durationBetween("scanner.clamd.timeout", s.Clamd.Timeout, time.Second, 24*time.Hour)
	v.sizeBetween("scanner.clamd.max_stream_size", s.Clamd.MaxStreamSize, MiB, 4*GiB)
	if _, err := scanner.NewBuiltin(scanner.BuiltinConfig{DenyTypes: s.DenyTypes}); err != nil {
		v.add("scanner.deny_types", "%v", err)
	}
	v.intBetween("scanner.archives.max_depth", s.Archives.MaxDepth, 1, 100)
	if !(s.Archives.MaxRatio >= 2 && s.Archives.MaxRatio <= 1e6) {
		v.add("scanner.archives.max_ratio", "must be between 2 and 1000000, got %v", s.Archives.MaxRatio)
	}
	v.sizeBetween("scanner.archives.max_expanded", s.Archives.MaxExpanded, MiB, 1<<60)
	v.intBetween("scanner.archives.max_entries", s.Archives.MaxEntries, 1, 100000000)
	v.oneOf("scanner.archives.encrypted", s.Archives.Encrypted, "hold", "refuse")
}

func (e *Egress) validate(v *validator) {
	v.durationBetween("egress.settle", e.Settle, 100*time.Millisecond, time.Hour)
	v.intBetween("egress.workers", e.Workers, 1, 64)
	v.intBetween("egress.retries", e.Retries, 1, 100)
	if e.StagingDir == "" && (len(e.Portals) > 0 || len(e.Shares) > 0) {
		v.add("egress.staging_dir", "must be set when egress.portals or egress.shares are")
	}
	portals := make(map[string]bool, len(e.Portals))
	for i, p := range e.Portals {
		key := fmt.Sprintf("egress.portals[%d]", i)
		if p.Name != "" {
			key = "egress.portals." + p.Name
		}
		// CheckPortal refuses http, userinfo, IP literals in any spelling,
		// wildcards and unknown methods; its messages never echo the URL.
		if err := policy.CheckPortal(policy.Portal{Name: p.Name, URL: p.URL, Method: p.Method, AllowPrivate: p.AllowPrivate}); err != nil {
			v.add(key, "%v", err)
		}
		if portals[p.Name] {
			v.add(key, "is defined twice")
		}
		portals[p.Name] = true
		if p.CAFile != "" {
			if msg := checkReadable(p.CAFile); msg != "" {
				v.add(key+".ca_file", "%s", msg)
			}
		}
		if p.TokenFile != "" {
			if msg := checkReadable(p.TokenFile); msg != "" {
				v.add(key+".token_file", "%s", msg)
			}
		}
	}
	for name, sh := range e.Shares {
		key := "egress.shares." + name
		if err := policy.CheckShareName(name); err != nil {
			v.add(key, "%v", err)
		}
		if len(sh.Portals) == 0 {
			v.add(key+".portals", "must name at least one portal (leave the share out for no egress)")
		}
		for _, p := range sh.Portals {
			if !portals[p] {
				v.add(key+".portals", "names %s, which is not in egress.portals", short(p))
			}
		}
		for _, c := range sh.Checks {
			if c != policy.EgressCheckMalware && c != policy.EgressCheckIdentifiers {
				v.add(key+".checks", "must list %q and/or %q, got %s", policy.EgressCheckMalware, policy.EgressCheckIdentifiers, short(c))
			}
		}
	}
}

func (n *Notify) validate(v *validator) {
	s := n.SMTP
	smtpSet := s.Addr != "" || s.From != "" || s.Username != "" || s.PasswordFile != "" || s.StartTLS
	switch {
	case n.Dir != "" && smtpSet:
		v.add("notify", "set either notify.dir or notify.smtp, not both")
	case smtpSet:
		if _, _, err := net.SplitHostPort(s.Addr); err != nil {
			v.add("notify.smtp.addr", "must be host:port")
		}
		if !strings.Contains(s.From, "@") {
			v.add("notify.smtp.from", "must be an email address")
		}
		if s.Username != "" && !s.StartTLS {
			v.add("notify.smtp.starttls", "must be true when notify.smtp.username is set: credentials are never sent in clear")
		}
		if (s.Username == "") != (s.PasswordFile == "") {
			v.add("notify.smtp.password_file", "notify.smtp.username and password_file go together")
		} else if s.PasswordFile != "" {
			if msg := checkReadable(s.PasswordFile); msg != "" {
				v.add("notify.smtp.password_file", "%s", msg)
			}
		}
	}
}

func (h *HTTPS) validate(v *validator) {
	if msg := checkListen(h.Listen); msg != "" {
		v.add("https.listen", "%s", msg)
	}
	switch {
	case h.TLS.CertFile == "" && h.TLS.KeyFile == "":
		// self-signed
	case h.TLS.CertFile == "":
		v.add("https.tls.cert_file", "must be set when https.tls.key_file is (or leave both empty for a self-signed certificate)")
	case h.TLS.KeyFile == "":
		v.add("https.tls.key_file", "must be set when https.tls.cert_file is (or leave both empty for a self-signed certificate)")
	default:
		if msg := checkReadable(h.TLS.CertFile); msg != "" {
			v.add("https.tls.cert_file", "%s", msg)
		}
		if msg := checkReadable(h.TLS.KeyFile); msg != "" {
			v.add("https.tls.key_file", "%s", msg)
		}
	}
	for i, o := range h.CORSOrigins {
		if msg := checkOrigin(o); msg != "" {
			v.add(fmt.Sprintf("https.cors_origins[%d]", i), "%s", msg)
		}
	}
	v.durationAtLeast("https.read_header_timeout", h.ReadHeaderTimeout, 1)
	v.durationAtLeast("https.idle_timeout", h.IdleTimeout, 1)
	v.sizeBetween("https.max_header_bytes", h.MaxHeaderBytes, 4*KiB, 1*MiB)
	v.durationAtLeast("https.shutdown_timeout", h.ShutdownTimeout, 1)
}

func (l *Limits) validate(v *validator) {
	if l.MaxFileSize <= 0 {
		v.add("limits.max_file_size", "must be greater than 0, got %v", l.MaxFileSize)
	}
	if l.CheckpointBytes < 1*MiB {
		v.add("limits.checkpoint_bytes", "must be at least 1MiB, got %v", l.CheckpointBytes)
	}
	v.sizeBetween("limits.buffer_size", l.BufferSize, 64*KiB, 16*MiB)
	v.intBetween("limits.buffers", l.Buffers, 2, 64)
	v.sizeBetween("limits.max_metadata_bytes", l.MaxMetadataBytes, 256*B, 64*KiB)
}

// checkListen returns what is wrong with a listen address, or "".
func checkListen(s string) string {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return fmt.Sprintf("%s is not host:port (e.g. 127.0.0.1:8443, or :8443 for every address)", short(s))
	}
	if msg := checkPort(port); msg != "" {
		return msg
	}
	if host != "" && !validHost(host) {
		return fmt.Sprintf("host %s is neither an IP address nor a host name", short(host))
	}
	return ""
}

// checkPort returns what is wrong with a port number, or "".
func checkPort(port string) string {
	n := 0
	for i := 0; i < len(port) && n <= 65535; i++ {
		if !isDigit(port[i]) {
			n = -1
			break
		}
		n = n*10 + int(port[i]-'0')
	}
	if port == "" || n < 1 || n > 65535 {
		return fmt.Sprintf("port %s must be a number from 1 to 65535", short(port))
	}
	return ""
}

// validHost reports whether h is an IP address or a DNS host name.
func validHost(h string) bool {
	if _, err := netip.ParseAddr(h); err == nil {
		return true
	}
	if len(h) > 253 {
		return false
	}
	for _, label := range strings.Split(strings.TrimSuffix(h, "."), ".") {
		if label == "" || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !isDigit(c) && c != '-' && !('a' <= c && c <= 'z') && !('A' <= c && c <= 'Z') {
				return false
			}
		}
	}
	return true
}

// checkReadable returns what is wrong with a file mftd must read, or "".
func checkReadable(path string) string {
	fi, err := os.Stat(path) // before Open: opening a FIFO would block
	if err != nil {
		return fmt.Sprintf("cannot read %s: %v", path, unwrapPath(err))
	}
	if !fi.Mode().IsRegular() {
		return fmt.Sprintf("%s is not a regular file", path)
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("cannot read %s: %v", path, unwrapPath(err))
	}
	f.Close()
	return ""
}

// unwrapPath drops the operation and path an *os.PathError repeats.
func unwrapPath(err error) error {
	if pe, ok := err.(*os.PathError); ok {
		return pe.Err
	}
	return err
}

// checkOrigin returns what is wrong with a CORS origin, or "".
func checkOrigin(o string) string {
	const want = `must be "*" or an origin such as https://portal.example.org or http://localhost:3000 (no path, no trailing slash)`
	if o == "*" {
		return ""
	}
	u, err := url.Parse(o)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" || o != u.Scheme+"://"+u.Host {
		return fmt.Sprintf("%s %s", short(o), want)
	}
	if strings.HasSuffix(u.Host, ":") {
		return fmt.Sprintf("%s has an empty port", short(o))
	}
	if p := u.Port(); p != "" {
		if msg := checkPort(p); msg != "" {
			return fmt.Sprintf("%s: %s", short(o), msg)
		}
	}
	if !validHost(u.Hostname()) {
		return fmt.Sprintf("%s: host %s is neither an IP address nor a host name", short(o), short(u.Hostname()))
	}
	if u.Host != strings.ToLower(u.Host) {
		return fmt.Sprintf("%s must be lower case, as browsers send it in the Origin header", short(o))
	}
	return ""
}

// validator collects problems in the order they are found.
type validator struct {
	problems []Problem
}

func (v *validator) add(key, format string, args ...any) {
	v.problems = append(v.problems, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (v *validator) err() error {
	if len(v.problems) == 0 {
		return nil
	}
	return &Error{Problems: v.problems}
}

func (v *validator) durationAtLeast(key string, d Duration, low time.Duration) {
	if d.D() < low {
		if low == 1 {
			v.add(key, "must be greater than 0, got %v", d)
			return
		}
		v.add(key, "must be at least %v, got %v", Duration(low), d)
	}
}

func (v *validator) durationBetween(key string, d Duration, low, high time.Duration) {
	if d.D() < low || d.D() > high {
		v.add(key, "must be between %v and %v, got %v", Duration(low), Duration(high), d)
	}
}

func (v *validator) sizeBetween(key string, s, low, high Size) {
	if s < low || s > high {
		v.add(key, "must be between %v and %v, got %v", low, high, s)
	}
}

func (v *validator) intBetween(key string, n, low, high int) {
	if n < low || n > high {
		v.add(key, "must be between %d and %d, got %d", low, high, n)
	}
}

func (v *validator) oneOf(key, value string, allowed ...string) {
	for _, a := range allowed {
		if value == a {
			return
		}
	}
	v.add(key, "must be one of %s, got %s", strings.Join(allowed, ", "), short(value))
}
