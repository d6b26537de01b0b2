// Package notify delivers messages to users: the one-time codes of password
// reset and emergency access, and security notices. Two notifiers: Dir writes
// each message as a file (development and tests), SMTP sends mail through a
// relay.
//
// A message's subject and body may carry a code, so neither is ever logged;
// log lines name only the user and the outcome.
package notify

import (
	"context"
	"errors"
	"fmt"
	"net/mail"
	"strings"
)

// Message is one message to one user.
type Message struct {
	User    string // the account's canonical name; names the file for Dir
	Email   string // the account's address; required by SMTP
	Subject string // one line
	Body    string // plain text
}

// Notifier delivers a message. When Notify returns nil the message has been
// handed on (written durably, or accepted by the relay).
type Notifier interface {
	Notify(ctx context.Context, m Message) error
}

var (
	// ErrNoAddress: the account has no email address to send to.
	ErrNoAddress = errors.New("notify: account has no email address")
	// ErrInvalidMessage is wrapped when a message could not be delivered as
	// given (an unsafe user name, a subject with a line break, a malformed
	// address).
	ErrInvalidMessage = errors.New("notify: invalid message")
)

// check validates the fields every notifier relies on. It names the field,
// never its value (the subject may carry a code).
func (m Message) check() error {
	if m.User == "" {
		return fmt.Errorf("%w: empty user", ErrInvalidMessage)
	}
	if strings.ContainsAny(m.User, `/\`) || hasControl(m.User) {
		return fmt.Errorf("%w: user name unusable in a file name", ErrInvalidMessage)
	}
	if hasControl(m.Subject) {
		return fmt.Errorf("%w: subject contains a line break or control character", ErrInvalidMessage)
	}
	if m.Email != "" {
		if _, err := parseAddress(m.Email); err != nil {
			return err
		}
	}
	return nil
}

// parseAddress accepts a bare address (no display name, no line breaks).
func parseAddress(s string) (string, error) {
	if hasControl(s) {
		return "", fmt.Errorf("%w: malformed email address", ErrInvalidMessage)
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s {
		return "", fmt.Errorf("%w: malformed email address", ErrInvalidMessage)
	}
	return a.Address, nil
}

func hasControl(s string) bool {
	return strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r == 0x7f })
}
