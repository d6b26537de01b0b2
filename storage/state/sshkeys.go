package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// SSHKey is a public key registered for an account's SFTP logins.
type SSHKey struct {
	Fingerprint string // OpenSSH SHA256:... fingerprint
	AccountID   int64
	Wire        []byte // the key in SSH wire format
	Comment     string
	CreatedAt   time.Time
}

// AddSSHKey registers k. ErrExist if the key is registered already (for
// any account).
func (db *DB) AddSSHKey(ctx context.Context, k SSHKey) error {
	if k.CreatedAt.IsZero() {
		k.CreatedAt = time.Now()
	}
	_, err := db.sql.ExecContext(ctx,
		`INSERT INTO ssh_keys (fingerprint, account_id, key_wire, comment, created_at) VALUES ($1, $2, $3, $4, $5)`,
		k.Fingerprint, k.AccountID, toHex(k.Wire), cleanText(k.Comment), k.CreatedAt.UnixNano())
	if err != nil {
		return fmt.Errorf("state: add ssh key %s: %w", k.Fingerprint, classify(err))
	}
	return nil
}

// SSHKeyOf returns the key with fingerprint registered for accountID, or
// ErrNotFound.
func (db *DB) SSHKeyOf(ctx context.Context, accountID int64, fingerprint string) (SSHKey, error) {
	var (
		k     SSHKey
		wire  string
		nanos int64
	)
	err := db.sql.QueryRowContext(ctx,
		`SELECT fingerprint, account_id, key_wire, comment, created_at FROM ssh_keys WHERE account_id = $1 AND fingerprint = $2`,
		accountID, fingerprint).Scan(&k.Fingerprint, &k.AccountID, &wire, &k.Comment, &nanos)
	if errors.Is(err, sql.ErrNoRows) {
		return SSHKey{}, ErrNotFound
	}
	if err != nil {
		return SSHKey{}, fmt.Errorf("state: ssh key %s: %w", fingerprint, err)
	}
	if k.Wire, err = fromHex(wire); err != nil {
		return SSHKey{}, fmt.Errorf("state: ssh key %s: %w", fingerprint, err)
	}
	k.CreatedAt = time.Unix(0, nanos)
	return k, nil
}

// RemoveSSHKey unregisters the key with fingerprint from accountID;
// ErrNotFound if it is not registered there.
func (db *DB) RemoveSSHKey(ctx context.Context, accountID int64, fingerprint string) error {
	ok, err := execOne(ctx, db.sql, `DELETE FROM ssh_keys WHERE account_id = $1 AND fingerprint = $2`, accountID, fingerprint)
	if err == nil && !ok {
		err = ErrNotFound
	}
	if err != nil {
		return fmt.Errorf("state: remove ssh key %s: %w", fingerprint, err)
	}
	return nil
}
