package notify

import (
	"bytes"
	"context"
	"fmt"
	"mime"
	"net/mail"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// dirFrom is the From header of the messages Dir writes.
const dirFrom = "mftd <mftd@localhost>"

// Dir writes each message as one RFC 5322 file, <unix-nanos>-<user>.eml,
// mode 0600, into a directory: for development and tests, where a person or
// a test reads the code from the file. A file appears complete or not at all
// (written to a hidden temporary file, fsynced, renamed, directory fsynced).
// A message without an email address is written with the group address
// "undisclosed-recipients:;"; the X-Mftd-User header names the user.
// Dir is safe for concurrent use; within one Dir, file names are unique and
// sort in delivery order.
type Dir struct {
	dir string
	log *zap.Logger
	now func() time.Time

	mu   sync.Mutex
	last int64 // last unix-nanos used in a file name
}

var _ Notifier = (*Dir)(nil)

// NewDir returns a Dir writing into dir, which it creates (mode 0700) if
// missing.
func NewDir(dir string, log *zap.Logger) (*Dir, error) {
	if dir == "" {
		return nil, fmt.Errorf("notify: dir: no directory given")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("notify: dir: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("notify: dir: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("notify: dir: %s is not a directory", dir)
	}
	return &Dir{dir: dir, log: log, now: time.Now}, nil
}

// Notify writes m as a new file. The file is durable when Notify returns nil.
func (d *Dir) Notify(ctx context.Context, m Message) error {
	err := d.write(ctx, m)
	if err != nil {
		d.log.Warn("message not written", zap.String("user", m.User), zap.Error(err))
		return err
	}
	d.log.Info("message written", zap.String("user", m.User))
	return nil
}

func (d *Dir) write(ctx context.Context, m Message) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("notify: dir: %w", err)
	}
	if err := m.check(); err != nil {
		return err
	}
	now, nanos := d.stamp()
	data := formatMessage(m, now, nanos)
	name := filepath.Join(d.dir, strconv.FormatInt(nanos, 10)+"-"+m.User+".eml")

	tmp, err := os.CreateTemp(d.dir, ".notify-*.tmp") // mode 0600
	if err != nil {
		return fmt.Errorf("notify: dir: create: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("notify: dir: write: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("notify: dir: sync: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("notify: dir: close: %w", err)
	}
	if err := os.Rename(tmp.Name(), name); err != nil {
		return fmt.Errorf("notify: dir: rename: %w", err)
	}
	if err := syncDir(d.dir); err != nil {
		return fmt.Errorf("notify: dir: sync directory: %w", err)
	}
	return nil
}

// stamp returns the message time and a unix-nanos value greater than any
// this Dir used before, so two messages never share a file name.
func (d *Dir) stamp() (time.Time, int64) {
	now := d.now()
	d.mu.Lock()
	defer d.mu.Unlock()
	n := now.UnixNano()
	if n <= d.last {
		n = d.last + 1
	}
	d.last = n
	return now, n
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return f.Sync()
}

// formatMessage renders m as an RFC 5322 message: CRLF line ends, a
// Q-encoded subject when it is not ASCII, an 8-bit UTF-8 text body.
func formatMessage(m Message, now time.Time, nanos int64) []byte {
	to := "undisclosed-recipients:;"
	if m.Email != "" {
		to = (&mail.Address{Address: m.Email}).String()
	}
	var b bytes.Buffer
	header := func(k, v string) { b.WriteString(k + ": " + v + "\r\n") }
	header("From", dirFrom)
	header("To", to)
	header("Subject", mime.QEncoding.Encode("utf-8", m.Subject))
	header("Date", now.Format(time.RFC1123Z))
	header("Message-ID", "<"+strconv.FormatInt(nanos, 10)+"@mftd.localhost>")
	header("X-Mftd-User", m.User)
	header("MIME-Version", "1.0")
	header("Content-Type", "text/plain; charset=utf-8")
	header("Content-Transfer-Encoding", "8bit")
	b.WriteString("\r\n")
	body := strings.ReplaceAll(m.Body, "\r\n", "\n")
	b.WriteString(strings.ReplaceAll(body, "\n", "\r\n"))
	if !strings.HasSuffix(body, "\n") {
		b.WriteString("\r\n")
	}
	return b.Bytes()
}
