package state

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"strings"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"
)

// Times are stored as BIGINT nanoseconds since the Unix epoch (UTC), which
// both SQLite and PostgreSQL round-trip exactly; 0 stands for the zero
// time.Time. Times outside 1678..2262 do not fit and must not be stored.
func toNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// Binary values are stored as lower-case hex TEXT, portable to PostgreSQL
// without BLOB/BYTEA differences. Empty decodes to nil.
func toHex(b []byte) string { return hex.EncodeToString(b) }

func fromHex(s string) ([]byte, error) {
	if s == "" {
		return nil, nil
	}
	return hex.DecodeString(s)
}

// cleanText makes s storable as TEXT on PostgreSQL too (valid UTF-8, no NUL),
// replacing offending bytes with U+FFFD, so that a record of hostile input
// is kept rather than refused.
func cleanText(s string) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	return strings.ReplaceAll(s, "\x00", "\uFFFD")
}

// classify translates driver errors into this package's sentinels: no rows
// and foreign-key violations (a referenced row is missing) become
// ErrNotFound, unique and primary-key violations ErrExist. Anything else is
// returned unchanged.
func classify(err error) error {
	if errors.Is(err, sql.ErrNoRows) {
		return ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch se.Code() {
		case sqlite3.SQLITE_CONSTRAINT_UNIQUE, sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
			return ErrExist
		case sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			return ErrNotFound
		}
	}
	return err
}

// rowScanner is *sql.Row or *sql.Rows.
type rowScanner interface {
	Scan(dest ...any) error
}
