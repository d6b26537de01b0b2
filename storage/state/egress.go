package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// Egress items. An item is one version of a file a user staged for egress,
// and what happened to it; a change to the staged file makes a new item.
// Statuses are the caller's: this package compares them only as the guard
// of UpdateEgressItem, which is how concurrent deciders (two reviewers, a
// reviewer and a worker) are told apart: one wins, the others get
// ErrConflict.

// EgressItem is one version of a file staged for egress at
// <staging_dir>/<Share>/<Owner>/<Path>.
type EgressItem struct {
	ID      string // chosen by the caller
	Share   string
	Owner   string
	Path    string // inside the owner's staging folder of the share, '/'-separated
	Size    int64
	ModTime time.Time
	SHA256  string // hex
	// BLAKE3 is the hex BLAKE3-256 of the same bytes as SHA256, computed
	// in the same read; "" if not known. The push verifies the bytes it
	// sends against it (the cheaper of the two).
	BLAKE3      string
	Status      string
	Portal      string    // "" until requested
	RequestedBy string    // "" until requested
	RequestedAt time.Time // zero until requested
	DecidedBy   string    // who approved or rejected
	DecidedAt   time.Time
	Findings    string // JSON, opaque to state; "" for none
	Reason      string // why blocked, failed, rejected or withdrawn
	TusURL      string // a tus push's upload URL, for resuming
	Receipt     string // JSON, opaque to state
	Attempts    int
	CreatedAt   time.Time
	UpdatedAt   time.Time
}

const egressCols = `id, share_name, owner, file_path, size, mod_time, sha256, blake3, status, portal,
	requested_by, requested_at, decided_by, decided_at, findings, reason, tus_url, receipt, attempts,
	created_at, updated_at`

func scanEgressItem(s rowScanner) (EgressItem, error) {
	var it EgressItem
	var modTime, requested, decided, created, updated int64
	err := s.Scan(&it.ID, &it.Share, &it.Owner, &it.Path, &it.Size, &modTime, &it.SHA256, &it.BLAKE3, &it.Status, &it.Portal,
		&it.RequestedBy, &requested, &it.DecidedBy, &decided, &it.Findings, &it.Reason, &it.TusURL, &it.Receipt, &it.Attempts,
		&created, &updated)
	if err != nil {
		return EgressItem{}, err
	}
	it.ModTime, it.RequestedAt, it.DecidedAt = fromNanos(modTime), fromNanos(requested), fromNanos(decided)
	it.CreatedAt, it.UpdatedAt = fromNanos(created), fromNanos(updated)
	return it, nil
}

// asStored returns it with its times as they read back: UTC, at the stored
// nanosecond resolution.
func (it EgressItem) asStored() EgressItem {
	for _, t := range []*time.Time{&it.ModTime, &it.RequestedAt, &it.DecidedAt, &it.CreatedAt, &it.UpdatedAt} {
		*t = fromNanos(toNanos(*t))
	}
	return it
}

// egressItems reads every row of rows (egressCols) and closes it.
func egressItems(rows *sql.Rows) ([]EgressItem, error) {
	defer rows.Close()
	var out []EgressItem
	for rows.Next() {
		it, err := scanEgressItem(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, it)
	}
	return out, rows.Err()
}

// CreateEgressItem inserts it and appends rec in one transaction. ErrExist
// if the id is taken (nothing is written). ID, Share, Owner, Path and
// Status must be set; CreatedAt is set to now if zero, and UpdatedAt to
// CreatedAt if zero.
func (db *DB) CreateEgressItem(ctx context.Context, it EgressItem, rec AuditRecord) error {
	if it.ID == "" || it.Share == "" || it.Owner == "" || it.Path == "" || it.Status == "" {
		return fmt.Errorf("state: create egress item %q: empty id, share, owner, path or status", it.ID)
	}
	if it.CreatedAt.IsZero() {
		it.CreatedAt = time.Now()
	}
	if it.UpdatedAt.IsZero() {
		it.UpdatedAt = it.CreatedAt
	}
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		taken, err := exists(ctx, tx, `SELECT COUNT(*) FROM egress_items WHERE id = $1`, it.ID)
		if err != nil {
			return err
		}
		if taken {
			return ErrExist
		}
		// seq orders items created at the same instant; no AUTOINCREMENT or
		// SERIAL: it is computed under the write lock.
		var seq int64
		if err := tx.QueryRowContext(ctx, `SELECT COALESCE(MAX(seq), 0) + 1 FROM egress_items`).Scan(&seq); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO egress_items (seq, `+egressCols+`)
			 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)`,
			seq, it.ID, it.Share, it.Owner, it.Path, it.Size, toNanos(it.ModTime), it.SHA256, it.BLAKE3, it.Status, it.Portal,
			it.RequestedBy, toNanos(it.RequestedAt), it.DecidedBy, toNanos(it.DecidedAt), it.Findings, it.Reason,
			it.TusURL, it.Receipt, it.Attempts, toNanos(it.CreatedAt), toNanos(it.UpdatedAt))
		return err
	})
	if err != nil {
		return fmt.Errorf("state: create egress item %s: %w", it.ID, classify(err))
	}
	return nil
}

// GetEgressItem returns the item or ErrNotFound.
func (db *DB) GetEgressItem(ctx context.Context, id string) (EgressItem, error) {
	it, err := scanEgressItem(db.sql.QueryRowContext(ctx, `SELECT `+egressCols+` FROM egress_items WHERE id = $1`, id))
	if err != nil {
		return EgressItem{}, fmt.Errorf("state: get egress item %s: %w", id, classify(err))
	}
	return it, nil
}

// CurrentEgressItem returns the newest item (by CreatedAt, then by order of
// creation) of the file staged at path by owner in share, or ErrNotFound.
func (db *DB) CurrentEgressItem(ctx context.Context, share, owner, path string) (EgressItem, error) {
	it, err := scanEgressItem(db.sql.QueryRowContext(ctx,
		`SELECT `+egressCols+` FROM egress_items WHERE share_name = $1 AND owner = $2 AND file_path = $3
		 ORDER BY created_at DESC, seq DESC LIMIT 1`, share, owner, path))
	if err != nil {
		return EgressItem{}, fmt.Errorf("state: get current egress item of %s by %q in share %q: %w", path, owner, share, classify(err))
	}
	return it, nil
}

// EgressItems lists share's items, newest first (by CreatedAt, then by
// order of creation), at most limit; owner's only, or every owner's if
// owner is "".
func (db *DB) EgressItems(ctx context.Context, share, owner string, limit int) ([]EgressItem, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("state: list egress items of share %q: limit %d is not positive", share, limit)
	}
	query := `SELECT ` + egressCols + ` FROM egress_items WHERE share_name = $1 ORDER BY created_at DESC, seq DESC LIMIT $2`
	args := []any{share, limit}
	if owner != "" {
		query = `SELECT ` + egressCols + ` FROM egress_items WHERE share_name = $1 AND owner = $2
			ORDER BY created_at DESC, seq DESC LIMIT $3`
		args = []any{share, owner, limit}
	}
	rows, err := db.sql.QueryContext(ctx, query, args...)
	if err == nil {
		var out []EgressItem
		if out, err = egressItems(rows); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("state: list egress items of share %q (owner %q): %w", share, owner, err)
}

// EgressItemsWithStatus lists the items in any of statuses, least recently
// updated first (then by order of creation), at most limit. No statuses
// match nothing.
func (db *DB) EgressItemsWithStatus(ctx context.Context, statuses []string, limit int) ([]EgressItem, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("state: list egress items %s: limit %d is not positive", strings.Join(statuses, ", "), limit)
	}
	if len(statuses) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(statuses)+1)
	in := make([]string, 0, len(statuses))
	for _, s := range statuses {
		args = append(args, s)
		in = append(in, fmt.Sprintf("$%d", len(args)))
	}
	args = append(args, limit)
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+egressCols+` FROM egress_items WHERE status IN (`+strings.Join(in, ", ")+`)
		 ORDER BY updated_at, seq LIMIT $`+fmt.Sprint(len(args)), args...)
	if err == nil {
		var out []EgressItem
		if out, err = egressItems(rows); err == nil {
			return out, nil
		}
	}
	return nil, fmt.Errorf("state: list egress items %s: %w", strings.Join(statuses, ", "), err)
}

// UpdateEgressItem changes item id if, and only if, its status is one of
// from, in one transaction (which holds the write lock throughout): it
// reads the item, calls change on a copy, sets the copy's UpdatedAt to now,
// writes it and appends rec; it returns the item as stored.
//
// change may alter any field but ID, Share, Owner, Path and CreatedAt (it
// is an error to alter those) and must leave Status set; it must be a pure
// decision, as it runs under the write lock. An error from it aborts the
// update and is returned wrapped.
//
// Nothing is written, and nothing audited, if: there is no such item
// (ErrNotFound); its status is not one of from (ErrConflict, wrapped, also
// when another writer changed it between this read and write); change
// returns an error; or from is empty.
//
// rec.Action "" means no audit record is appended. That is only for
// bookkeeping no one decided, such as saving TusURL or counting Attempts;
// every change of status or decision must be audited.
func (db *DB) UpdateEgressItem(ctx context.Context, id string, from []string, change func(*EgressItem) error, rec AuditRecord) (EgressItem, error) {
	if len(from) == 0 {
		return EgressItem{}, fmt.Errorf("state: update egress item %s: no status to update from", id)
	}
	var stored EgressItem
	fn := func(tx *sql.Tx) error {
		cur, err := scanEgressItem(tx.QueryRowContext(ctx, `SELECT `+egressCols+` FROM egress_items WHERE id = $1`, id))
		if err != nil {
			return classify(err)
		}
		if !slices.Contains(from, cur.Status) {
			return fmt.Errorf("%w: it is %s, not %s", ErrConflict, cur.Status, strings.Join(from, " or "))
		}
		next := cur
		if err := change(&next); err != nil {
			return err
		}
		if next.ID != cur.ID || next.Share != cur.Share || next.Owner != cur.Owner || next.Path != cur.Path ||
			!next.CreatedAt.Equal(cur.CreatedAt) {
			return errors.New("the change altered the id, share, owner, path or creation time")
		}
		if next.Status == "" {
			return errors.New("the change left the status empty")
		}
		next.UpdatedAt = time.Now()
		next = next.asStored()
		// The status and updated_at guard matter where a transaction does
		// not take the write lock before it reads (PostgreSQL).
		ok, err := execOne(ctx, tx,
			`UPDATE egress_items SET size = $1, mod_time = $2, sha256 = $3, blake3 = $4, status = $5, portal = $6,
			 requested_by = $7, requested_at = $8, decided_by = $9, decided_at = $10, findings = $11, reason = $12,
			 tus_url = $13, receipt = $14, attempts = $15, updated_at = $16
			 WHERE id = $17 AND status = $18 AND updated_at = $19`,
			next.Size, toNanos(next.ModTime), next.SHA256, next.BLAKE3, next.Status, next.Portal,
			next.RequestedBy, toNanos(next.RequestedAt), next.DecidedBy, toNanos(next.DecidedAt), next.Findings, next.Reason,
			next.TusURL, next.Receipt, next.Attempts, toNanos(next.UpdatedAt),
			id, cur.Status, toNanos(cur.UpdatedAt))
		if err != nil {
			return err
		}
		if !ok {
			return fmt.Errorf("%w: changed by another writer", ErrConflict)
		}
		stored = next
		return nil
	}
	var err error
	if rec.Action == "" {
		err = db.inTx(ctx, fn)
	} else {
		err = db.changeAudited(ctx, rec, fn)
	}
	if err != nil {
		// Not classify: fn classified the database's errors, and an error
		// of change is returned as it is.
		return EgressItem{}, fmt.Errorf("state: update egress item %s: %w", id, err)
	}
	return stored, nil
}
