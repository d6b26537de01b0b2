package notify

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	mail "github.com/wneessen/go-mail"
	"go.uber.org/zap"
)

// SMTPConfig configures a mail relay.
type SMTPConfig struct {
	Addr         string // host:port of the relay
	From         string // envelope sender and From header: a bare address
	Username     string // SMTP AUTH user; empty: no authentication
	PasswordFile string // file holding the SMTP AUTH password (one line); required with Username
	// StartTLS requires STARTTLS with a verified certificate before anything
	// else is sent (TLS mandatory: a relay that does not offer it is an
	// error). Without it the session is plain text, which is allowed only
	// without credentials (a relay on the same host or network segment).
	StartTLS bool
}

// smtpTimeout bounds dialling and each SMTP command; the context given to
// Notify bounds the whole exchange.
const smtpTimeout = 30 * time.Second

// SMTP sends each message as one mail through a relay, in its own SMTP
// session. It is safe for concurrent use.
type SMTP struct {
	host     string
	port     int
	from     string
	username string
	password string // read once from PasswordFile; never logged
	startTLS bool
	tls      *tls.Config // nil: the system roots, server name = host
	log      *zap.Logger
}

var _ Notifier = (*SMTP)(nil)

// NewSMTP checks cfg and reads the password file. It does not connect: an
// unreachable relay shows at the first Notify.
func NewSMTP(cfg SMTPConfig, log *zap.Logger) (*SMTP, error) {
	host, portStr, err := net.SplitHostPort(cfg.Addr)
	if err != nil || host == "" {
		return nil, fmt.Errorf("notify: smtp: addr %q is not host:port", cfg.Addr)
	}
	port, err := strconv.Atoi(portStr)
	if err != nil || port < 1 || port > 65535 {
		return nil, fmt.Errorf("notify: smtp: addr %q has no valid port", cfg.Addr)
	}
	from, err := parseAddress(cfg.From)
	if err != nil {
		return nil, fmt.Errorf("notify: smtp: from: %w", err)
	}
	s := &SMTP{host: host, port: port, from: from, startTLS: cfg.StartTLS, log: log}
	switch {
	case cfg.Username == "" && cfg.PasswordFile == "":
	case cfg.Username == "" || cfg.PasswordFile == "":
		return nil, errors.New("notify: smtp: username and password_file go together")
	case !cfg.StartTLS:
		return nil, errors.New("notify: smtp: credentials are sent only over TLS: set starttls")
	default:
		pw, err := os.ReadFile(cfg.PasswordFile)
		if err != nil {
			return nil, fmt.Errorf("notify: smtp: read password file: %w", err)
		}
		s.username = cfg.Username
		s.password = strings.TrimRight(string(pw), "\r\n")
		if s.password == "" {
			return nil, fmt.Errorf("notify: smtp: password file %s is empty", cfg.PasswordFile)
		}
	}
	return s, nil
}

// Notify sends m to m.Email. A message to an account without an address is
// ErrNoAddress. Notify returns nil once the relay has accepted the message.
func (s *SMTP) Notify(ctx context.Context, m Message) error {
	err := s.send(ctx, m)
	if err != nil {
		s.log.Warn("mail not sent", zap.String("user", m.User), zap.Error(err))
		return err
	}
	s.log.Info("mail sent", zap.String("user", m.User))
	return nil
}

func (s *SMTP) send(ctx context.Context, m Message) error {
	if m.Email == "" {
		return ErrNoAddress
	}
	if err := m.check(); err != nil {
		return err
	}
	msg := mail.NewMsg(mail.WithNoDefaultUserAgent())
	if err := msg.From(s.from); err != nil {
		return fmt.Errorf("notify: smtp: from: %w", err)
	}
	if err := msg.To(m.Email); err != nil {
		return fmt.Errorf("%w: malformed email address", ErrInvalidMessage)
	}
	msg.Subject(m.Subject)
	msg.SetDate()
	msg.SetMessageID()
	msg.SetBodyString(mail.TypeTextPlain, m.Body)

	c, err := mail.NewClient(s.host, s.options()...)
	if err != nil {
		return fmt.Errorf("notify: smtp: %w", err)
	}
	if err := c.DialAndSendWithContext(ctx, msg); err != nil {
		return fmt.Errorf("notify: smtp: send via %s: %w", net.JoinHostPort(s.host, strconv.Itoa(s.port)), err)
	}
	return nil
}

func (s *SMTP) options() []mail.Option {
	opts := []mail.Option{mail.WithPort(s.port), mail.WithTimeout(smtpTimeout)}
	if s.startTLS {
		opts = append(opts, mail.WithTLSPolicy(mail.TLSMandatory))
		if s.tls != nil {
			opts = append(opts, mail.WithTLSConfig(s.tls))
		}
	} else {
		opts = append(opts, mail.WithTLSPolicy(mail.NoTLS))
	}
	if s.username != "" {
		// The strongest mechanism the relay offers; PLAIN and LOGIN only
		// over TLS (go-mail refuses them in clear).
		opts = append(opts, mail.WithSMTPAuth(mail.SMTPAuthAutoDiscover),
			mail.WithUsername(s.username), mail.WithPassword(s.password))
	}
	return opts
}
