package state

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Retention: what the sweeper deletes once it has been kept long enough,
// and the record of each deletion, which commits together with it.

// FileCursor is where a listing of files by creation time resumes: after
// the file created at CreatedAt with key Key. The zero cursor starts at the
// beginning.
type FileCursor struct {
	CreatedAt time.Time
	Key       string
}

// After is the cursor just past f.
func (f File) After() FileCursor { return FileCursor{CreatedAt: f.CreatedAt, Key: f.Key} }

// FilesCreatedBefore lists Arrivals files whose recorded creation time is
// before cutoff, oldest first (then by key), starting after cursor, at most
// limit. Page through with the After of the last file returned.
func (db *DB) FilesCreatedBefore(ctx context.Context, cutoff time.Time, after FileCursor, limit int) ([]File, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("state: list files created before %s: limit %d is not positive", cutoff, limit)
	}
	from := toNanos(after.CreatedAt)
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+fileCols+` FROM files
		 WHERE created_at < $1 AND (created_at > $2 OR (created_at = $2 AND object_key > $3))
		 ORDER BY created_at, object_key LIMIT $4`,
		toNanos(cutoff), from, after.Key, limit)
	if err != nil {
		return nil, fmt.Errorf("state: list files created before %s: %w", cutoff, err)
	}
	out, err := scanFiles(rows)
	if err != nil {
		return nil, fmt.Errorf("state: list files created before %s: %w", cutoff, err)
	}
	return out, nil
}

// QuarantinedBefore lists uploads that have been in quarantine since before
// cutoff (by UpdatedAt, the time they were quarantined), longest first, at
// most limit.
func (db *DB) QuarantinedBefore(ctx context.Context, cutoff time.Time, limit int) ([]Upload, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("state: list uploads quarantined before %s: limit %d is not positive", cutoff, limit)
	}
	rows, err := db.sql.QueryContext(ctx,
		`SELECT `+uploadCols+` FROM uploads WHERE status = $1 AND updated_at < $2 ORDER BY updated_at, id LIMIT $3`,
		StatusQuarantined, toNanos(cutoff), limit)
	if err != nil {
		return nil, fmt.Errorf("state: list uploads quarantined before %s: %w", cutoff, err)
	}
	defer rows.Close()
	var out []Upload
	for rows.Next() {
		u, err := scanUpload(rows)
		if err != nil {
			return nil, fmt.Errorf("state: list uploads quarantined before %s: %w", cutoff, err)
		}
		out = append(out, u)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list uploads quarantined before %s: %w", cutoff, err)
	}
	return out, nil
}

// HoldsFile reports whether the Arrivals row of f (its key and upload id)
// is still there.
func (db *DB) HoldsFile(ctx context.Context, f File) (bool, error) {
	ok, err := exists(ctx, db.sql, `SELECT COUNT(*) FROM files WHERE object_key = $1 AND upload_id = $2`, f.Key, f.UploadID)
	if err != nil {
		return false, fmt.Errorf("state: look up file %s: %w", f.Key, err)
	}
	return ok, nil
}

// DeleteFile removes the Arrivals row of f (matched by key and upload id,
// so a later file published under the same key is never taken for it),
// marks the upload that brought it deleted, and appends rec to the audit
// chain, in one transaction: the row goes if and
// only if the record is written. ErrNotFound, with nothing written, if the
// row is already gone (deleted by another sweeper, moved into a share).
// rec.Time is set to now if zero; the stored record is returned.
func (db *DB) DeleteFile(ctx context.Context, f File, rec AuditRecord) (AuditRecord, error) {
	if rec.Action == "" {
		return AuditRecord{}, errors.New("state: delete file: empty audit action")
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	var stored AuditRecord
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		ok, err := execOne(ctx, tx, `DELETE FROM files WHERE object_key = $1 AND upload_id = $2`, f.Key, f.UploadID)
		if err != nil {
			return err
		}
		if !ok {
			return ErrNotFound
		}
		// The upload that brought the file no longer says it is available.
		if _, err := tx.ExecContext(ctx, `UPDATE uploads SET status = $1, reason = $2, updated_at = $3
			WHERE id = $4 AND status = $5`,
			StatusDeleted, "deleted from Arrivals by retention", toNanos(rec.Time), f.UploadID, StatusAvailable); err != nil {
			return err
		}
		stored, err = auditTx(ctx, tx, rec)
		return err
	})
	if err != nil {
		return AuditRecord{}, fmt.Errorf("state: delete file %s: %w", f.Key, classify(err))
	}
	return stored, nil
}

// DeleteQuarantined moves upload id from quarantined to deleted with reason
// and appends rec to the audit chain, in one transaction. ErrConflict if the
// upload is no longer quarantined (released, or deleted by someone else),
// ErrNotFound if there is no such upload; nothing is written then.
// rec.Time is set to now if zero; the stored record is returned.
func (db *DB) DeleteQuarantined(ctx context.Context, id, reason string, rec AuditRecord) (AuditRecord, error) {
	if rec.Action == "" {
		return AuditRecord{}, errors.New("state: delete quarantined upload: empty audit action")
	}
	if rec.Time.IsZero() {
		rec.Time = time.Now()
	}
	var stored AuditRecord
	err := db.inTx(ctx, func(tx *sql.Tx) error {
		ok, err := execOne(ctx, tx,
			`UPDATE uploads SET status = $1, reason = $2, updated_at = $3 WHERE id = $4 AND status = $5`,
			StatusDeleted, reason, time.Now().UnixNano(), id, StatusQuarantined)
		if err == nil && !ok {
			err = uploadGone(ctx, tx, id)
		}
		if err != nil {
			return err
		}
		stored, err = auditTx(ctx, tx, rec)
		return err
	})
	if err != nil {
		return AuditRecord{}, fmt.Errorf("state: delete quarantined upload %s: %w", id, classify(err))
	}
	return stored, nil
}
