package state

import (
	"context"
	"crypto/rand"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/pressly/goose/v3"
	"go.uber.org/zap"

	_ "modernc.org/sqlite" // registers the "sqlite" driver
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// dsnParams are applied by the driver to every pooled connection as it is
// opened. busy_timeout makes a writer wait (up to 10 s) for another writer,
// in this process or another, instead of failing with SQLITE_BUSY;
// _txlock=immediate makes every read-write BEGIN take the write lock up
// front, so a transaction that reads and then writes never has to upgrade its
// lock (an upgrade cannot wait and would fail with SQLITE_BUSY).
const dsnParams = "_pragma=busy_timeout(10000)" +
	"&_pragma=journal_mode(WAL)" +
	"&_pragma=synchronous(FULL)" +
	"&_pragma=foreign_keys(1)" +
	"&_txlock=immediate"

// maxConns bounds the pool: each connection has its own page cache, and SQLite
// admits one writer at a time anyway.
const maxConns = 8

// DB is the state database. Safe for concurrent use by many goroutines and,
// through SQLite's WAL and busy_timeout, by several processes.
//
// The SQL is written for both SQLite and PostgreSQL: $n placeholders (which
// modernc.org/sqlite binds by position), BIGINT/TEXT columns, no
// engine-specific functions. See migrations/00001_init.sql for encodings.
type DB struct {
	sql *sql.DB
	log *zap.Logger
}

// Open opens (creating if needed) the SQLite database at path, with WAL,
// busy_timeout, foreign keys and synchronous=FULL (a committed row survives
// power loss), and applies the embedded migrations.
//
// A new database file is created with mode 0600 (its directory 0700 if
// missing). A nil log is replaced by a no-op logger.
func Open(ctx context.Context, path string, log *zap.Logger) (*DB, error) {
	if log == nil {
		log = zap.NewNop()
	}
	if path == "" {
		return nil, errors.New("state: open: empty database path")
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", path, err)
	}
	if err := createFile(abs, log); err != nil {
		return nil, fmt.Errorf("state: open %s: %w", abs, err)
	}

	// A "file:" URI, percent-encoded, so that a '?' or '%' in the path is
	// not taken for the start of the query or an escape.
	dsn := (&url.URL{Scheme: "file", Path: filepath.ToSlash(abs)}).String() + "?" + dsnParams
	sdb, err := sql.Open("sqlite", dsn)
	if err != nil {
		return nil, fmt.Errorf("state: open %s: %w", abs, err)
	}
	sdb.SetMaxOpenConns(maxConns)
	sdb.SetMaxIdleConns(maxConns)
	// The first connection switches a fresh file to WAL, which needs an
	// exclusive lock that SQLite refuses at once (no busy wait) while another
	// process does the same: retry briefly.
	for attempt := 0; ; attempt++ {
		err = sdb.PingContext(ctx)
		if err == nil || attempt == 50 || !strings.Contains(err.Error(), "SQLITE_BUSY") {
			break
		}
		select {
		case <-ctx.Done():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err != nil {
		sdb.Close()
		return nil, fmt.Errorf("state: open %s: %w", abs, err)
	}
	db := &DB{sql: sdb, log: log}
	if err := db.migrate(ctx, abs); err != nil {
		sdb.Close()
		return nil, fmt.Errorf("state: open %s: %w", abs, err)
	}
	return db, nil
}

// createFile creates the database file 0600 if it does not exist. An
// existing file is not opened: closing a descriptor of it would drop the
// POSIX locks another DB in this process holds on it.
func createFile(path string, log *zap.Logger) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return err
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err == nil {
		return f.Close()
	}
	if !errors.Is(err, fs.ErrExist) {
		return err
	}
	fi, err := os.Stat(path)
	if err != nil {
		return err
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s)", fi.Mode())
	}
	if fi.Mode().Perm()&0o077 != 0 {
		log.Warn("state database is accessible to other users",
			zap.String("path", path), zap.Stringer("mode", fi.Mode().Perm()))
	}
	return nil
}

// migrate applies the pending embedded migrations, serialised against other
// processes by a lock file, and logs each one applied.
func (db *DB) migrate(ctx context.Context, path string) error {
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	lock := newMigrateLocker(path)
	if err := lock.Lock(ctx); err != nil {
		return err
	}
	defer lock.Unlock()
	p, err := goose.NewProvider(goose.DialectSQLite3, db.sql, fsys, goose.WithDisableGlobalRegistry(true))
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	// Not p.Close: it would close db.sql.
	results, err := p.Up(ctx)
	for _, r := range results {
		if r.Error != nil {
			continue
		}
		db.log.Info("applied migration",
			zap.Int64("version", r.Source.Version),
			zap.String("file", filepath.Base(r.Source.Path)),
			zap.Duration("duration", r.Duration))
	}
	if err != nil {
		return fmt.Errorf("migrate: %w", err)
	}
	v, err := p.GetDBVersion(ctx)
	if err != nil {
		return fmt.Errorf("migrate: read schema version: %w", err)
	}
	db.log.Info("state database ready", zap.String("path", path), zap.Int64("schema_version", v))
	return nil
}

// Close closes the database.
func (db *DB) Close() error { return db.sql.Close() }

// inTx runs fn in a read-write transaction (BEGIN IMMEDIATE: it holds the
// write lock from the start) and commits it if fn returns nil.
func (db *DB) inTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.sql.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// execOne runs a conditional UPDATE and reports whether it changed a row.
func execOne(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, query string, args ...any) (bool, error) {
	res, err := q.ExecContext(ctx, query, args...)
	if err != nil {
		return false, err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, err
	}
	return n > 0, nil
}

// exists reports whether query (a SELECT COUNT(*)) counts any row.
func exists(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, query string, args ...any) (bool, error) {
	var n int64
	if err := q.QueryRowContext(ctx, query, args...).Scan(&n); err != nil {
		return false, err
	}
	return n > 0, nil
}

// --- accounts ---

const accountCols = `a.id, a.name, a.password_hash, a.totp_secret, a.totp_last_step, a.created_at,
	a.email, a.disabled`

// scanAccount scans accountCols, after any columns in dest that precede them.
func scanAccount(s rowScanner, dest ...any) (Account, error) {
	var a Account
	var created, disabled int64
	dest = append(dest, &a.ID, &a.Name, &a.PasswordHash, &a.TOTPSecret, &a.TOTPLastStep, &created,
		&a.Email, &disabled)
	if err := s.Scan(dest...); err != nil {
		return Account{}, err
	}
	a.CreatedAt = fromNanos(created)
	a.Disabled = disabled != 0
	return a, nil
}

// boolInt is how a bool is stored: BIGINT 0 or 1.
func boolInt(b bool) int64 {
	if b {
		return 1
	}
	return 0
}

// CreateAccount inserts a. ErrExist if the name is taken.
//
// The ID is assigned (a.ID is ignored) and CreatedAt set to now if zero; the
// stored account is returned.
func (db *DB) CreateAccount(ctx context.Context, a Account) (Account, error) {
	if a.Name == "" {
		return Account{}, errors.New("state: create account: empty name")
	}
	if a.CreatedAt.IsZero() {
		a.CreatedAt = time.Now()
	}
	a.CreatedAt = fromNanos(toNanos(a.CreatedAt))
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		taken, err := exists(ctx, tx, `SELECT COUNT(*) FROM accounts WHERE name = $1`, a.Name)
		if err != nil {
			return err
		}
		if taken {
			return ErrExist
		}
		// No AUTOINCREMENT/SERIAL: the next id is computed under the write lock.
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(id), 0) + 1 FROM accounts`).Scan(&a.ID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO accounts (id, name, password_hash, totp_secret, totp_last_step, created_at, email, disabled)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
			a.ID, a.Name, a.PasswordHash, a.TOTPSecret, a.TOTPLastStep, toNanos(a.CreatedAt),
			a.Email, boolInt(a.Disabled))
		return err
	})
	if err != nil {
		return Account{}, fmt.Errorf("state: create account %q: %w", a.Name, classify(err))
	}
	return a, nil
}

// AccountByName returns the account or ErrNotFound.
func (db *DB) AccountByName(ctx context.Context, name string) (Account, error) {
	a, err := scanAccount(db.sql.QueryRowContext(ctx,
		`SELECT `+accountCols+` FROM accounts a WHERE a.name = $1`, name))
	if err != nil {
		return Account{}, fmt.Errorf("state: get account %q: %w", name, classify(err))
	}
	return a, nil
}

// UseTOTPStep records step as the account's last used TOTP step, atomically
// and only if it is greater than the one recorded; otherwise ErrReplay.
// ErrNotFound if there is no such account.
func (db *DB) UseTOTPStep(ctx context.Context, accountID, step int64) error {
	ok, err := execOne(ctx, db.sql,
		`UPDATE accounts SET totp_last_step = $1 WHERE id = $2 AND totp_last_step < $1`,
		step, accountID)
	if err == nil && !ok {
		var found bool
		found, err = exists(ctx, db.sql, `SELECT COUNT(*) FROM accounts WHERE id = $1`, accountID)
		switch {
		case err != nil:
		case found:
			err = ErrReplay
		default:
			err = ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("state: use TOTP step of account %d: %w", accountID, classify(err))
	}
	return nil
}

// --- sessions (bearer tokens; only their SHA-256 is stored; see security.go) ---

// CreateSession stores a session for account, identified by tokenHash, with
// a random ID, created and last seen now, not emergency. ErrNotFound if there
// is no such account or it is disabled; ErrExist if tokenHash is taken.
func (db *DB) CreateSession(ctx context.Context, tokenHash []byte, accountID int64, expiresAt time.Time) error {
	now := time.Now()
	return db.OpenSession(ctx, Session{
		ID:        rand.Text(),
		TokenHash: tokenHash,
		AccountID: accountID,
		CreatedAt: now,
		LastSeen:  now,
		ExpiresAt: expiresAt,
	})
}

// SessionAccount returns the account of an unexpired session of an enabled
// account, or ErrNotFound. It applies no idle limit (SessionByToken does).
func (db *DB) SessionAccount(ctx context.Context, tokenHash []byte, now time.Time) (Account, error) {
	_, a, err := db.SessionByToken(ctx, tokenHash, now, 0)
	return a, err
}

// --- uploads ---

const uploadCols = `id, owner, filename, length, offset_bytes, handle, hash_state, metadata,
	expected_sha256, sha256, status, reason, object_key, created_at, updated_at, expires_at`

func scanUpload(s rowScanner) (Upload, error) {
	var u Upload
	var handle, hashState string
	var created, updated, expires int64
	err := s.Scan(&u.ID, &u.Owner, &u.Filename, &u.Length, &u.Offset, &handle, &hashState, &u.Metadata,
		&u.ExpectedSHA256, &u.SHA256, &u.Status, &u.Reason, &u.Key, &created, &updated, &expires)
	if err != nil {
		return Upload{}, err
	}
	if u.Handle, err = fromHex(handle); err != nil {
		return Upload{}, fmt.Errorf("corrupt handle: %w", err)
	}
	if u.HashState, err = fromHex(hashState); err != nil {
		return Upload{}, fmt.Errorf("corrupt hash state: %w", err)
	}
	u.CreatedAt, u.UpdatedAt, u.ExpiresAt = fromNanos(created), fromNanos(updated), fromNanos(expires)
	return u, nil
}

func knownStatus(s string) bool {
	switch s {
	case StatusUploading, StatusProcessing, StatusPublishing, StatusAvailable, StatusQuarantined, StatusRejected, StatusTerminated, StatusDeleted:
		return true
	}
	return false
}

// uploadGone tells why a conditional update of upload id changed nothing:
// ErrNotFound if there is no such upload, else ErrConflict.
func uploadGone(ctx context.Context, q interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}, id string) error {
	found, err := exists(ctx, q, `SELECT COUNT(*) FROM uploads WHERE id = $1`, id)
	switch {
	case err != nil:
		return err
	case found:
		return ErrConflict
	default:
		return ErrNotFound
	}
}

// CreateUpload inserts u. ErrExist if the id is taken.
//
// CreatedAt and UpdatedAt are set to now if zero; a zero ExpiresAt is stored
// as "never".
func (db *DB) CreateUpload(ctx context.Context, u Upload) error {
	if err := insertUpload(ctx, db.sql, u); err != nil {
		return fmt.Errorf("state: create upload %s: %w", u.ID, classify(err))
	}
	return nil
}

// insertUpload checks u, fills in its times as CreateUpload says and
// inserts it through q (the database or a transaction).
func insertUpload(ctx context.Context, q interface {
	ExecContext(context.Context, string, ...any) (sql.Result, error)
}, u Upload) error {
	if u.ID == "" {
		return errors.New("empty id")
	}
	if !knownStatus(u.Status) {
		return fmt.Errorf("unknown status %q", u.Status)
	}
	now := time.Now()
	if u.CreatedAt.IsZero() {
		u.CreatedAt = now
	}
	if u.UpdatedAt.IsZero() {
		u.UpdatedAt = u.CreatedAt
	}
	_, err := q.ExecContext(ctx,
		`INSERT INTO uploads (`+uploadCols+`)
		 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)`,
		u.ID, u.Owner, u.Filename, u.Length, u.Offset, toHex(u.Handle), toHex(u.HashState), u.Metadata,
		u.ExpectedSHA256, u.SHA256, u.Status, u.Reason, u.Key,
		toNanos(u.CreatedAt), toNanos(u.UpdatedAt), toNanos(u.ExpiresAt))
	return err
}

// GetUpload returns the upload or ErrNotFound.
func (db *DB) GetUpload(ctx context.Context, id string) (Upload, error) {
	u, err := scanUpload(db.sql.QueryRowContext(ctx, `SELECT `+uploadCols+` FROM uploads WHERE id = $1`, id))
	if err != nil {
		return Upload{}, fmt.Errorf("state: get upload %s: %w", id, classify(err))
	}
	return u, nil
}

// CommitProgress records that upload id, which was at offset from, is now
// durably at offset to with the given storage handle and hash state. It
// changes nothing and returns ErrConflict unless the row is uploading at
// offset from. to may be smaller than from (a rollback). ErrNotFound if
// there is no such upload.
func (db *DB) CommitProgress(ctx context.Context, id string, from, to int64, handle, hashState []byte) error {
	if to < 0 {
		return fmt.Errorf("state: commit progress of upload %s: negative offset %d", id, to)
	}
	ok, err := execOne(ctx, db.sql,
		`UPDATE uploads SET offset_bytes = $1, handle = $2, hash_state = $3, updated_at = $4
		 WHERE id = $5 AND status = $6 AND offset_bytes = $7`,
		to, toHex(handle), toHex(hashState), time.Now().UnixNano(), id, StatusUploading, from)
	if err == nil && !ok {
		err = uploadGone(ctx, db.sql, id)
	}
	if err != nil {
		return fmt.Errorf("state: commit progress of upload %s from offset %d to %d: %w", id, from, to, classify(err))
	}
	return nil
}

// Transition moves upload id from status from to status to, setting sha256
// (if not empty), reason and key (if not empty). ErrConflict if the upload is
// not in status from; ErrNotFound if there is no such upload.
func (db *DB) Transition(ctx context.Context, id, from, to, sha256, reason, key string) error {
	if !knownStatus(to) {
		return fmt.Errorf("state: move upload %s from %s: unknown status %q", id, from, to)
	}
	args := []any{to, reason, time.Now().UnixNano()}
	set := []string{"status = $1", "reason = $2", "updated_at = $3"}
	if sha256 != "" {
		args = append(args, sha256)
		set = append(set, fmt.Sprintf("sha256 = $%d", len(args)))
	}
	if key != "" {
		args = append(args, key)
		set = append(set, fmt.Sprintf("object_key = $%d", len(args)))
	}
	args = append(args, id, from)
	query := fmt.Sprintf(`UPDATE uploads SET %s WHERE id = $%d AND status = $%d`,
		strings.Join(set, ", "), len(args)-1, len(args))
	ok, err := execOne(ctx, db.sql, query, args...)
	if err == nil && !ok {
		err = uploadGone(ctx, db.sql, id)
	}
	if err != nil {
		return fmt.Errorf("state: move upload %s from %s to %s: %w", id, from, to, classify(err))
	}
	return nil
}

// UploadsWithStatus lists uploads in status, oldest first, at most limit.
func (db *DB) UploadsWithStatus(ctx context.Context, status string, limit int) ([]Upload, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("state: list %s uploads: limit %d is not positive", status, limit)
	}
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+uploadCols+` FROM uploads WHERE status = $1 ORDER BY created_at, id LIMIT $2`,
		status, limit)
	if err != nil {
		return nil, fmt.Errorf("state: list %s uploads: %w", status, err)
	}
	defer rows.Close()
	var out []Upload
	for rows.Next() {
		u, err := scanUpload(rows)
		if err != nil {
			return nil, fmt.Errorf("state: list %s uploads: %w", status, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list %s uploads: %w", status, err)
	}
	return out, nil
}

// PartialUploads lists owner's incomplete uploads of unknown length (SFTP
// writes), oldest first.
func (db *DB) PartialUploads(ctx context.Context, owner string) ([]Upload, error) {
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+uploadCols+` FROM uploads WHERE owner = $1 AND status = $2 AND length < 0 ORDER BY created_at, id`,
		owner, StatusUploading)
	if err != nil {
		return nil, fmt.Errorf("state: list partial uploads of %s: %w", owner, err)
	}
	defer rows.Close()
	var out []Upload
	for rows.Next() {
		u, err := scanUpload(rows)
		if err != nil {
			return nil, fmt.Errorf("state: list partial uploads of %s: %w", owner, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list partial uploads of %s: %w", owner, err)
	}
	return out, nil
}

// FixLength sets the length of an uploading upload of unknown length to its
// durable offset, which must be offset. ErrConflict if it is not uploading,
// its length is known, or its offset moved; ErrNotFound if there is none.
func (db *DB) FixLength(ctx context.Context, id string, offset int64) error {
	ok, err := execOne(ctx, db.sql,
		`UPDATE uploads SET length = $1, updated_at = $2 WHERE id = $3 AND status = $4 AND length < 0 AND offset_bytes = $5`,
		offset, time.Now().UnixNano(), id, StatusUploading, offset)
	if err == nil && !ok {
		err = uploadGone(ctx, db.sql, id)
	}
	if err != nil {
		return fmt.Errorf("state: fix length of upload %s at %d: %w", id, offset, classify(err))
	}
	return nil
}

// --- Arrivals ---

// PublishFile inserts f and moves upload uploadID from publishing to
// available with key f.Key, in one transaction. ErrExist if f.Key is taken
// (nothing changes); ErrConflict if the upload is not publishing.
//
// The upload must belong to f.Owner (else ErrConflict) and gets sha256
// f.SHA256; ErrNotFound if there is no such upload. CreatedAt is set to now
// if zero.
func (db *DB) PublishFile(ctx context.Context, f File) error {
	if f.Key == "" || f.UploadID == "" {
		return fmt.Errorf("state: publish upload %q as %q: empty key or upload id", f.UploadID, f.Key)
	}
	if f.CreatedAt.IsZero() {
		f.CreatedAt = time.Now()
	}
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		taken, err := exists(ctx, tx, `SELECT COUNT(*) FROM files WHERE object_key = $1`, f.Key)
		if err != nil {
			return err
		}
		if taken {
			return ErrExist
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO files (object_key, owner, name, size, sha256, created_at, upload_id)
			 VALUES ($1, $2, $3, $4, $5, $6, $7)`,
			f.Key, f.Owner, f.Name, f.Size, f.SHA256, toNanos(f.CreatedAt), f.UploadID); err != nil {
			return err
		}
		ok, err := execOne(ctx, tx,
			`UPDATE uploads SET status = $1, object_key = $2, sha256 = $3, updated_at = $4
			 WHERE id = $5 AND status = $6 AND owner = $7`,
			StatusAvailable, f.Key, f.SHA256, time.Now().UnixNano(), f.UploadID, StatusPublishing, f.Owner)
		if err == nil && !ok {
			err = uploadGone(ctx, tx, f.UploadID)
		}
		return err // non-nil rolls back the insert
	})
	if err != nil {
		return fmt.Errorf("state: publish upload %s: %w", f.UploadID, classify(err))
	}
	return nil
}

// FileExists reports whether a file row with key exists.
func (db *DB) FileExists(ctx context.Context, key string) (bool, error) {
	ok, err := exists(ctx, db.sql, `SELECT COUNT(*) FROM files WHERE object_key = $1`, key)
	if err != nil {
		return false, fmt.Errorf("state: look up file %s: %w", key, err)
	}
	return ok, nil
}

// FilesByOwner lists owner's Arrivals, by name.
func (db *DB) FilesByOwner(ctx context.Context, owner string) ([]File, error) {
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+fileCols+` FROM files WHERE owner = $1 ORDER BY name, object_key`, owner)
	if err != nil {
		return nil, fmt.Errorf("state: list files of %q: %w", owner, err)
	}
	out, err := scanFiles(rows)
	if err != nil {
		return nil, fmt.Errorf("state: list files of %q: %w", owner, err)
	}
	return out, nil
}

// fileCols are the columns scanFiles reads, in its order.
const fileCols = `object_key, owner, name, size, sha256, created_at, upload_id`

// scanFiles reads every row of rows (fileCols) and closes it.
func scanFiles(rows *sql.Rows) ([]File, error) {
	defer rows.Close()
	var out []File
	for rows.Next() {
		var f File
		var created int64
		if err := rows.Scan(&f.Key, &f.Owner, &f.Name, &f.Size, &f.SHA256, &created, &f.UploadID); err != nil {
			return nil, err
		}
		f.CreatedAt = fromNanos(created)
		out = append(out, f)
	}
	return out, rows.Err()
}

// --- audit ---

const auditCols = `seq, at, actor, action_name, object, result, remote_addr, prev_hash, hash`

func scanAudit(s rowScanner) (AuditRecord, error) {
	var r AuditRecord
	var at int64
	if err := s.Scan(&r.Seq, &at, &r.Actor, &r.Action, &r.Object, &r.Result, &r.RemoteAddr, &r.PrevHash, &r.Hash); err != nil {
		return AuditRecord{}, err
	}
	// Not fromNanos: at is hashed as stored, 0 included.
	r.Time = time.Unix(0, at).UTC()
	return r, nil
}

// Audit appends r to the chain (Seq, PrevHash and Hash are filled in) in a
// transaction that serialises writers across processes, and returns it.
// r.Time is set to now if zero.
//
// The transaction is BEGIN IMMEDIATE (the DSN's _txlock), so it holds
// SQLite's single write lock from before it reads the head of the chain
// until it commits: two writers, in one process or two, can never both
// extend the same head; the second waits under busy_timeout. The returned
// Time is in UTC, at the nanosecond resolution that is stored and hashed.
// Text fields are stored with invalid UTF-8 and NUL replaced by U+FFFD.
func (db *DB) Audit(ctx context.Context, r AuditRecord) (AuditRecord, error) {
	if r.Action == "" {
		return AuditRecord{}, errors.New("state: audit: empty action")
	}
	if r.Time.IsZero() {
		r.Time = time.Now()
	}
	var stored AuditRecord
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		var err error
		stored, err = auditTx(ctx, tx, r)
		return err
	})
	if err != nil {
		return AuditRecord{}, fmt.Errorf("state: audit %s by %q: %w", r.Action, r.Actor, err)
	}
	return stored, nil
}

// VerifyAudit walks the whole chain in order and returns the number of
// records checked, or an error wrapping ErrAuditBroken that names the first
// record (seq) that was edited, removed, inserted or reordered.
//
// Sequence numbers must run 1, 2, 3, ... without gaps; each record's hash
// must match its contents and its prev_hash the previous record's hash.
// Removing records from the end of the chain leaves a valid, shorter chain:
// that is only detectable by comparing AuditHead with a head (seq, hash)
// kept outside this database.
func (db *DB) VerifyAudit(ctx context.Context) (int64, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT `+auditCols+` FROM audit ORDER BY seq`)
	if err != nil {
		return 0, fmt.Errorf("state: verify audit: %w", err)
	}
	defer rows.Close()
	var want int64 = 1
	prevHash := ""
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return 0, fmt.Errorf("state: verify audit: %w", err)
		}
		switch {
		case r.Seq > want:
			return 0, fmt.Errorf("%w: audit record %d: missing (sequence gap after %d, next is %d)",
				ErrAuditBroken, want, want-1, r.Seq)
		case r.Seq < want:
			return 0, fmt.Errorf("%w: audit record %d: unexpected sequence number (want %d)",
				ErrAuditBroken, r.Seq, want)
		case auditHash(r) != r.Hash:
			return 0, fmt.Errorf("%w: audit record %d: hash does not match its contents", ErrAuditBroken, r.Seq)
		case r.PrevHash != prevHash:
			return 0, fmt.Errorf("%w: audit record %d: previous-hash link broken (record removed or reordered)",
				ErrAuditBroken, r.Seq)
		}
		prevHash = r.Hash
		want++
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("state: verify audit: %w", err)
	}
	return want - 1, nil
}

// AuditHead returns the sequence number and hash of the last audit record,
// or 0 and "" for an empty chain. Kept elsewhere (printed, sent to a log
// host), it lets a later VerifyAudit notice records removed from the end.
func (db *DB) AuditHead(ctx context.Context) (seq int64, hash string, err error) {
	err = db.sql.QueryRowContext(ctx, `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&seq, &hash)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, "", nil
	}
	if err != nil {
		return 0, "", fmt.Errorf("state: audit head: %w", err)
	}
	return seq, hash, nil
}
