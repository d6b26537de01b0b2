package state

import (
	"context"
	"database/sql"
	"fmt"
)

// ArrivalsUsage is what counts against an owner's Arrivals quota: the rows
// of the files table (their Arrivals: a file moved into a share or deleted
// has left it), and, reserved, the uploads still being received or checked
// (uploading, processing, publishing) at their length, or at their durable
// offset while the length is unknown. Quarantined, rejected, terminated
// (expired included) and deleted uploads count for nothing; an available
// upload counts through its file row only.
type ArrivalsUsage struct {
	FileBytes     int64 // in Arrivals
	Files         int64
	ReservedBytes int64 // uploads in progress or being checked
	ReservedFiles int64
}

// quotaQuerier is the database or a transaction.
type quotaQuerier interface {
	QueryRowContext(context.Context, string, ...any) *sql.Row
}

// ArrivalsUsage returns owner's usage. Two reads outside a transaction:
// for display, not for a decision that must hold (CreateUploadChecked).
func (db *DB) ArrivalsUsage(ctx context.Context, owner string) (ArrivalsUsage, error) {
	u, err := arrivalsUsage(ctx, db.sql, owner)
	if err != nil {
		return ArrivalsUsage{}, fmt.Errorf("state: Arrivals usage of %q: %w", owner, err)
	}
	return u, nil
}

func arrivalsUsage(ctx context.Context, q quotaQuerier, owner string) (ArrivalsUsage, error) {
	var u ArrivalsUsage
	// CAST: PostgreSQL's SUM of BIGINT is NUMERIC.
	err := q.QueryRowContext(ctx,
		`SELECT COUNT(*), CAST(COALESCE(SUM(size), 0) AS BIGINT) FROM files WHERE owner = $1`,
		owner).Scan(&u.Files, &u.FileBytes)
	if err != nil {
		return ArrivalsUsage{}, err
	}
	err = q.QueryRowContext(ctx,
		`SELECT COUNT(*), CAST(COALESCE(SUM(CASE WHEN length < 0 THEN offset_bytes ELSE length END), 0) AS BIGINT)
		 FROM uploads WHERE owner = $1 AND status IN ($2, $3, $4)`,
		owner, StatusUploading, StatusProcessing, StatusPublishing).Scan(&u.ReservedFiles, &u.ReservedBytes)
	if err != nil {
		return ArrivalsUsage{}, err
	}
	return u, nil
}

// CreateUploadChecked inserts u as CreateUpload does, if check, given
// u.Owner's usage before u, returns nil; otherwise it inserts nothing and
// returns check's error (wrapped). Reading the usage, the check and the
// insert are one transaction that holds the write lock from its start
// (BEGIN IMMEDIATE, see inTx), so creations that each fit but together
// would not are decided one after the other, in this process or another:
// the later one sees the earlier one's reservation. (PostgreSQL, when it
// comes, needs a per-owner lock here: its transactions do not serialise
// writers.)
//
// check must be a pure decision: it runs under the write lock.
func (db *DB) CreateUploadChecked(ctx context.Context, u Upload, check func(ArrivalsUsage) error) error {
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		usage, err := arrivalsUsage(ctx, tx, u.Owner)
		if err != nil {
			return err
		}
		if err := check(usage); err != nil {
			return err
		}
		return insertUpload(ctx, tx, u)
	})
	if err != nil {
		return fmt.Errorf("state: create upload %s: %w", u.ID, classify(err))
	}
	return nil
}
