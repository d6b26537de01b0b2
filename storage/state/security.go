package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Failure-counter kinds.
const (
	FailAccount = "account" // subject: canonical account name
	FailAddress = "address" // subject: source IP address (no port)
)

// FailureLimits say when a failure counter locks its subject.
type FailureLimits struct {
	Threshold int           // failures within Window that lock the subject
	Window    time.Duration // failures older than this are forgotten
	LockFor   time.Duration // how long a lock lasts
}

// Session is a signed-in session. Only the token's hash is stored.
type Session struct {
	ID         string // public identifier (random, URL-safe), shown to the user
	TokenHash  []byte
	AccountID  int64
	CreatedAt  time.Time
	LastSeen   time.Time
	ExpiresAt  time.Time // absolute end
	Emergency  bool      // opened with an emergency code: restricted
	RemoteAddr string
}

// One-time code purposes.
const (
	CodeReset         = "reset"          // password reset code, sent by the notifier
	CodeEmergencyAuth = "emergency_auth" // authorisation code of the emergency flow, sent by the notifier
	CodeEmergency     = "emergency"      // the emergency code that replaces a TOTP code once
)

// --- failure counters and lockout ---

// check refuses limits that would never lock or never forget: a zero
// threshold in a configuration must fail loudly, not disable the lockout.
func (l FailureLimits) check() error {
	if l.Threshold < 1 || l.Window <= 0 || l.LockFor <= 0 {
		return fmt.Errorf("invalid failure limits (threshold %d, window %s, lock for %s)", l.Threshold, l.Window, l.LockFor)
	}
	return nil
}

// RecordFailure counts one failed attempt against (kind, subject) at now,
// atomically across processes: failures older than l.Window restart the
// count; reaching l.Threshold sets a lock until now + l.LockFor. It returns
// the count within the window and the lock's end (zero if not locked) and
// whether this failure is the one that locked it (for auditing each lockout once).
//
// The window is fixed: it starts at the first failure after the previous
// window ended, and a failure exactly l.Window after its start still falls
// within it. A failure while locked is counted but does not extend the lock;
// once a lock has ended, a further failure within the same window (the count
// still at or above l.Threshold) locks again. kind and subject must not be
// empty and l must have a positive Threshold, Window and LockFor.
func (db *DB) RecordFailure(ctx context.Context, kind, subject string, now time.Time, l FailureLimits) (count int, lockedUntil time.Time, locked bool, err error) {
	subject = cleanText(subject)
	if err := l.check(); err != nil {
		return 0, time.Time{}, false, fmt.Errorf("state: record failure of %s %q: %w", kind, subject, err)
	}
	if kind == "" || subject == "" {
		return 0, time.Time{}, false, fmt.Errorf("state: record failure of %s %q: empty kind or subject", kind, subject)
	}
	t := now.UnixNano()
	var n, start, until int64
	// BEGIN IMMEDIATE: the row is read and written under the write lock, so
	// concurrent failures, in this process or another, are each counted once.
	// (PostgreSQL would need SELECT ... FOR UPDATE.)
	err = db.inTx(ctx, func(tx *sql.Tx) error {
		locked = false
		err := tx.QueryRowContext(ctx,
			`SELECT fail_count, window_start, locked_until FROM auth_failures WHERE kind = $1 AND subject = $2`,
			kind, subject).Scan(&n, &start, &until)
		found := err == nil
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		if !found || t-start > int64(l.Window) {
			n, start = 0, t
		}
		n++
		if n >= int64(l.Threshold) && until <= t {
			until, locked = t+int64(l.LockFor), true
		}
		if found {
			_, err = tx.ExecContext(ctx,
				`UPDATE auth_failures SET fail_count = $1, window_start = $2, locked_until = $3
				 WHERE kind = $4 AND subject = $5`,
				n, start, until, kind, subject)
		} else {
			_, err = tx.ExecContext(ctx,
				`INSERT INTO auth_failures (kind, subject, fail_count, window_start, locked_until)
				 VALUES ($1, $2, $3, $4, $5)`,
				kind, subject, n, start, until)
		}
		return err
	})
	if err != nil {
		return 0, time.Time{}, false, fmt.Errorf("state: record failure of %s %q: %w", kind, subject, err)
	}
	if until > t {
		lockedUntil = fromNanos(until)
	}
	return int(n), lockedUntil, locked, nil
}

// LockedUntil returns the end of (kind, subject)'s lock if it is locked at
// now, else the zero time.
func (db *DB) LockedUntil(ctx context.Context, kind, subject string, now time.Time) (time.Time, error) {
	subject = cleanText(subject)
	var until int64
	err := db.sql.QueryRowContext(ctx,
		`SELECT locked_until FROM auth_failures WHERE kind = $1 AND subject = $2`, kind, subject).Scan(&until)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return time.Time{}, nil
	case err != nil:
		return time.Time{}, fmt.Errorf("state: lock of %s %q: %w", kind, subject, err)
	case until > now.UnixNano():
		return fromNanos(until), nil
	default:
		return time.Time{}, nil
	}
}

// FailureCount returns the failures of (kind, subject) within window before now.
//
// The count is that of the current fixed window (see RecordFailure), or 0 if
// it started more than window before now.
func (db *DB) FailureCount(ctx context.Context, kind, subject string, now time.Time, window time.Duration) (int, error) {
	subject = cleanText(subject)
	var n, start int64
	err := db.sql.QueryRowContext(ctx,
		`SELECT fail_count, window_start FROM auth_failures WHERE kind = $1 AND subject = $2`,
		kind, subject).Scan(&n, &start)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("state: failure count of %s %q: %w", kind, subject, err)
	case now.UnixNano()-start > int64(window):
		return 0, nil
	default:
		return int(n), nil
	}
}

// ClearFailures forgets (kind, subject)'s failures and lock (a successful
// sign-in of the account, or an admin's unlock).
func (db *DB) ClearFailures(ctx context.Context, kind, subject string) error {
	subject = cleanText(subject)
	if _, err := db.sql.ExecContext(ctx,
		`DELETE FROM auth_failures WHERE kind = $1 AND subject = $2`, kind, subject); err != nil {
		return fmt.Errorf("state: clear failures of %s %q: %w", kind, subject, err)
	}
	return nil
}

// PruneFailures deletes the counters whose window started more than window
// before now and that are not locked at now (source addresses are many),
// and returns how many it deleted.
func (db *DB) PruneFailures(ctx context.Context, now time.Time, window time.Duration) (int, error) {
	t := now.UnixNano()
	res, err := db.sql.ExecContext(ctx,
		`DELETE FROM auth_failures WHERE window_start < $1 AND locked_until <= $2`, t-int64(window), t)
	if err != nil {
		return 0, fmt.Errorf("state: prune failure counters: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, fmt.Errorf("state: prune failure counters: %w", err)
	}
	return int(n), nil
}

// --- account settings ---

// updateAccount runs an UPDATE of one account (its id the last argument);
// ErrNotFound if there is no such account.
func updateAccount(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, query string, args ...any) error {
	ok, err := execOne(ctx, q, query, args...)
	if err == nil && !ok {
		err = ErrNotFound
	}
	return err
}

// SetPassword replaces an account's password hash. ErrNotFound if no such account.
//
// Sessions are left alone: ending them is the caller's choice (EndSessions).
func (db *DB) SetPassword(ctx context.Context, accountID int64, hash string) error {
	if hash == "" {
		return fmt.Errorf("state: set password of account %d: empty hash", accountID)
	}
	if err := updateAccount(ctx, db.sql,
		`UPDATE accounts SET password_hash = $1 WHERE id = $2`, hash, accountID); err != nil {
		return fmt.Errorf("state: set password of account %d: %w", accountID, err)
	}
	return nil
}

// SetTOTPSecret replaces an account's TOTP secret and resets its last used step to 0.
// ErrNotFound if no such account.
func (db *DB) SetTOTPSecret(ctx context.Context, accountID int64, secret string) error {
	if secret == "" {
		return fmt.Errorf("state: set TOTP secret of account %d: empty secret", accountID)
	}
	if err := updateAccount(ctx, db.sql,
		`UPDATE accounts SET totp_secret = $1, totp_last_step = 0 WHERE id = $2`, secret, accountID); err != nil {
		return fmt.Errorf("state: set TOTP secret of account %d: %w", accountID, err)
	}
	return nil
}

// SetDisabled disables (or re-enables) an account. Disabling also deletes
// every session of the account, in the same transaction.
//
// Disabling also voids the account's one-time codes, so none survives to a
// later re-enabling. ErrNotFound if no such account.
func (db *DB) SetDisabled(ctx context.Context, accountID int64, disabled bool) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if err := updateAccount(ctx, tx,
			`UPDATE accounts SET disabled = $1 WHERE id = $2`, boolInt(disabled), accountID); err != nil {
			return err
		}
		if !disabled {
			return nil
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM sessions WHERE account_id = $1`, accountID); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx, `DELETE FROM one_time_codes WHERE account_id = $1`, accountID)
		return err
	})
	if err != nil {
		return fmt.Errorf("state: set account %d disabled=%t: %w", accountID, disabled, err)
	}
	return nil
}

// SetEmail sets the address the notifier writes to ("" for none).
// ErrNotFound if no such account.
func (db *DB) SetEmail(ctx context.Context, accountID int64, email string) error {
	if err := updateAccount(ctx, db.sql,
		`UPDATE accounts SET email = $1 WHERE id = $2`, cleanText(email), accountID); err != nil {
		return fmt.Errorf("state: set e-mail of account %d: %w", accountID, err)
	}
	return nil
}

// --- sessions ---

const sessionCols = `s.id, s.token_hash, s.account_id, s.created_at, s.last_seen, s.expires_at,
	s.emergency, s.remote_addr`

// sessionRow receives sessionCols.
type sessionRow struct {
	s                                 Session
	token                             string
	created, seen, expires, emergency int64
}

func (r *sessionRow) dest() []any {
	return []any{&r.s.ID, &r.token, &r.s.AccountID, &r.created, &r.seen, &r.expires, &r.emergency, &r.s.RemoteAddr}
}

func (r *sessionRow) session() (Session, error) {
	s := r.s
	var err error
	if s.TokenHash, err = fromHex(r.token); err != nil {
		return Session{}, fmt.Errorf("corrupt token hash of session %s: %w", s.ID, err)
	}
	s.CreatedAt, s.LastSeen, s.ExpiresAt = fromNanos(r.created), fromNanos(r.seen), fromNanos(r.expires)
	s.Emergency = r.emergency != 0
	return s, nil
}

// OpenSession stores s (ID and TokenHash must be set and unique).
//
// ExpiresAt must be set; a zero CreatedAt is set to now and a zero LastSeen
// to CreatedAt. ErrNotFound if the account does not exist or is disabled
// (checked in the same statement, so a session cannot slip in beside a
// concurrent SetDisabled); ErrExist if the ID or token hash is taken.
func (db *DB) OpenSession(ctx context.Context, s Session) error {
	if s.ID == "" || len(s.TokenHash) == 0 || s.ExpiresAt.IsZero() {
		return fmt.Errorf("state: open session for account %d: empty id, token hash or expiry", s.AccountID)
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = time.Now()
	}
	if s.LastSeen.IsZero() {
		s.LastSeen = s.CreatedAt
	}
	ok, err := execOne(ctx, db.sql,
		`INSERT INTO sessions (id, token_hash, account_id, created_at, last_seen, expires_at, emergency, remote_addr)
		 SELECT $1, $2, a.id, $3, $4, $5, $6, $7 FROM accounts a WHERE a.id = $8 AND a.disabled = 0`,
		s.ID, toHex(s.TokenHash), toNanos(s.CreatedAt), toNanos(s.LastSeen), toNanos(s.ExpiresAt),
		boolInt(s.Emergency), cleanText(s.RemoteAddr), s.AccountID)
	if err == nil && !ok {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("state: open session for account %d: %w", s.AccountID, classify(err))
	}
	return nil
}

// SessionByToken returns the session with tokenHash and its account if the
// session is live at now: before ExpiresAt, last seen within idle (idle ≤ 0:
// no idle limit), and its account not disabled. Otherwise ErrNotFound.
//
// "Within idle" means now < LastSeen + idle, as "before ExpiresAt" means
// now < ExpiresAt.
func (db *DB) SessionByToken(ctx context.Context, tokenHash []byte, now time.Time, idle time.Duration) (Session, Account, error) {
	query := `SELECT ` + sessionCols + `, ` + accountCols + `
		 FROM sessions s JOIN accounts a ON a.id = s.account_id
		 WHERE s.token_hash = $1 AND s.expires_at > $2 AND a.disabled = 0`
	args := []any{toHex(tokenHash), now.UnixNano()}
	if idle > 0 {
		query += ` AND s.last_seen > $3`
		args = append(args, now.UnixNano()-int64(idle))
	}
	var r sessionRow
	a, err := scanAccount(db.sql.QueryRowContext(ctx, query, args...), r.dest()...)
	var s Session
	if err == nil {
		s, err = r.session()
	}
	if err != nil {
		// The token hash stays out of the message.
		return Session{}, Account{}, fmt.Errorf("state: session by token: %w", classify(err))
	}
	return s, a, nil
}

// TouchSession sets a session's LastSeen to now.
//
// LastSeen never moves back (of two concurrent requests the later time
// stays). ErrNotFound if there is no such session.
func (db *DB) TouchSession(ctx context.Context, id string, now time.Time) error {
	ok, err := execOne(ctx, db.sql,
		`UPDATE sessions SET last_seen = CASE WHEN last_seen < $1 THEN $1 ELSE last_seen END WHERE id = $2`,
		now.UnixNano(), id)
	if err == nil && !ok {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("state: touch session %s: %w", id, err)
	}
	return nil
}

// SessionsOf lists an account's sessions, newest first (expired ones too,
// until PruneSessions removes them).
//
// Sessions created at the same time are ordered by ID, descending. An
// unknown account has no sessions (nil, not ErrNotFound).
func (db *DB) SessionsOf(ctx context.Context, accountID int64) ([]Session, error) {
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+sessionCols+` FROM sessions s WHERE s.account_id = $1 ORDER BY s.created_at DESC, s.id DESC`,
		accountID)
	if err != nil {
		return nil, fmt.Errorf("state: list sessions of account %d: %w", accountID, err)
	}
	defer rows.Close()
	var out []Session
	for rows.Next() {
		var r sessionRow
		if err := rows.Scan(r.dest()...); err != nil {
			return nil, fmt.Errorf("state: list sessions of account %d: %w", accountID, err)
		}
		s, err := r.session()
		if err != nil {
			return nil, fmt.Errorf("state: list sessions of account %d: %w", accountID, err)
		}
		out = append(out, s)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list sessions of account %d: %w", accountID, err)
	}
	return out, nil
}

// EndSession deletes session id of accountID; ErrNotFound if it has no such session.
func (db *DB) EndSession(ctx context.Context, accountID int64, id string) error {
	ok, err := execOne(ctx, db.sql, `DELETE FROM sessions WHERE id = $1 AND account_id = $2`, id, accountID)
	if err == nil && !ok {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("state: end session %s of account %d: %w", id, accountID, err)
	}
	return nil
}

// EndSessions deletes every session of accountID except keepID ("" keeps
// none) and returns how many it deleted.
func (db *DB) EndSessions(ctx context.Context, accountID int64, keepID string) (int, error) {
	res, err := db.sql.ExecContext(ctx, `DELETE FROM sessions WHERE account_id = $1 AND id <> $2`, accountID, keepID)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return 0, fmt.Errorf("state: end sessions of account %d: %w", accountID, err)
	}
	return int(n), nil
}

// PruneSessions deletes the sessions that are dead at now: expired, or (if
// idle > 0) not seen within idle. It returns how many it deleted.
func (db *DB) PruneSessions(ctx context.Context, now time.Time, idle time.Duration) (int, error) {
	query := `DELETE FROM sessions WHERE expires_at <= $1`
	args := []any{now.UnixNano()}
	if idle > 0 {
		query += ` OR last_seen <= $2`
		args = append(args, now.UnixNano()-int64(idle))
	}
	res, err := db.sql.ExecContext(ctx, query, args...)
	var n int64
	if err == nil {
		n, err = res.RowsAffected()
	}
	if err != nil {
		return 0, fmt.Errorf("state: prune sessions: %w", err)
	}
	return int(n), nil
}

// --- one-time codes (only their hashes are stored) ---

// PutCode stores a one-time code's hash for (accountID, purpose), replacing
// (so voiding) any earlier one of the same purpose.
//
// ErrNotFound if there is no such account.
func (db *DB) PutCode(ctx context.Context, accountID int64, purpose string, codeHash []byte, expiresAt time.Time) error {
	if purpose == "" || len(codeHash) == 0 || expiresAt.IsZero() {
		return fmt.Errorf("state: put %q code of account %d: empty purpose, code hash or expiry", purpose, accountID)
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx,
			`DELETE FROM one_time_codes WHERE account_id = $1 AND purpose = $2`, accountID, purpose); err != nil {
			return err
		}
		_, err := tx.ExecContext(ctx,
			`INSERT INTO one_time_codes (account_id, purpose, code_hash, created_at, expires_at, used_at)
			 VALUES ($1, $2, $3, $4, $5, 0)`,
			accountID, purpose, toHex(codeHash), time.Now().UnixNano(), toNanos(expiresAt))
		return err
	})
	if err != nil {
		// The code hash stays out of the message.
		return fmt.Errorf("state: put %q code of account %d: %w", purpose, accountID, classify(err))
	}
	return nil
}

// UseCode consumes the (accountID, purpose) code if its hash is codeHash, it
// is unused and unexpired at now: atomically, so of two concurrent uses one
// wins. ErrNotFound otherwise.
//
// "Unexpired" means now is before the code's expiry. now must be after the
// Unix epoch (its time is recorded as the use, and 0 means unused).
func (db *DB) UseCode(ctx context.Context, accountID int64, purpose string, codeHash []byte, now time.Time) error {
	t := now.UnixNano()
	if t <= 0 {
		return fmt.Errorf("state: use %q code of account %d: time %v before the Unix epoch", purpose, accountID, now)
	}
	ok, err := execOne(ctx, db.sql,
		`UPDATE one_time_codes SET used_at = $1
		 WHERE account_id = $2 AND purpose = $3 AND code_hash = $4 AND used_at = 0 AND expires_at > $1`,
		t, accountID, purpose, toHex(codeHash))
	if err == nil && !ok {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("state: use %q code of account %d: %w", purpose, accountID, err)
	}
	return nil
}
