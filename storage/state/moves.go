package state

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Moves of Arrivals into shares. A move is recorded before its bytes move,
// so that a crash at any point leaves a record of where they are going:
//
//  1. BeginMove: in one transaction, the files row goes, the share_files
//     row comes in with a share_moves row beside it (a move in progress),
//     and the audit record is appended;
//  2. the caller moves the object from the Arrivals key to the share key;
//  3. FinishMove: the share_moves row goes, and the file is listed.
//
// UndoMove takes back step 1 when the bytes cannot be moved (they are gone,
// or an object no record knows holds the share key). PendingMoves lists the
// moves a crash or a storage failure left between the steps.

// ShareMove is a move into a share recorded by BeginMove whose bytes may
// not be at File.Key yet.
type ShareMove struct {
	// File is the share file: it holds its path and counts against the
	// share's quota, but is not listed until FinishMove.
	File ShareFile
	// From is the Arrivals file it was (what UndoMove restores); the bytes
	// are at From.Key until they move.
	From File
}

// pendingSelect selects shareFileCols of share_files f, then the move's own
// columns of share_moves m.
const pendingSelect = `SELECT f.share_name, f.file_path, f.object_key, f.size, f.sha256, f.created_at, f.moved_at,
	f.moved_by, f.upload_id, m.arrival_key, m.owner, m.name
	FROM share_moves m JOIN share_files f ON f.share_name = m.share_name AND f.file_path = m.file_path`

func scanMove(s rowScanner) (ShareMove, error) {
	var m ShareMove
	f, err := scanShareFile(s, &m.From.Key, &m.From.Owner, &m.From.Name)
	if err != nil {
		return ShareMove{}, err
	}
	m.File = f
	m.From.Size, m.From.SHA256, m.From.CreatedAt, m.From.UploadID = f.Size, f.SHA256, f.CreatedAt, f.UploadID
	return m, nil
}

// BeginMove records that the Arrivals file from (matched by key and upload
// id) is moving into a share as dst, before its bytes move: in one
// transaction it deletes the files row (so retention no longer sees the
// file, and nothing else can move it), inserts the share_files row as a
// move in progress and appends rec. The size, SHA-256, creation time and
// upload id come from the files row; dst gives Share, Path, Key, MovedBy
// and MovedAt (now if zero).
//
// Before changing anything, check is called with the bytes the share holds,
// moves in progress included (under the write lock, so moves into one share
// are decided one after the other); an error from it stops the move and is
// returned wrapped. It must be a pure decision. Also nothing changes, and
// the error is ErrNotFound if the files row or the share is gone, ErrExist
// if dst's path or key is taken (see SharePathTaken).
//
// The caller then moves the bytes from the returned From.Key to File.Key
// and calls FinishMove, or UndoMove if they cannot be moved.
func (db *DB) BeginMove(ctx context.Context, from File, dst ShareFile, check func(used int64) error, rec AuditRecord) (ShareMove, error) {
	if dst.Share == "" || dst.Path == "" || dst.Key == "" {
		return ShareMove{}, fmt.Errorf("state: move %s into a share: empty share, path or key", from.Key)
	}
	if dst.MovedAt.IsZero() {
		dst.MovedAt = time.Now()
	}
	dst.MovedAt = fromNanos(toNanos(dst.MovedAt)) // as stored
	var src File
	err := db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		var created int64
		err := tx.QueryRowContext(ctx,
			`SELECT object_key, owner, name, size, sha256, created_at, upload_id FROM files
			 WHERE object_key = $1 AND upload_id = $2`, from.Key, from.UploadID).
			Scan(&src.Key, &src.Owner, &src.Name, &src.Size, &src.SHA256, &created, &src.UploadID)
		if err != nil {
			return err // sql.ErrNoRows: ErrNotFound
		}
		src.CreatedAt = fromNanos(created)
		dst.Size, dst.SHA256, dst.CreatedAt, dst.UploadID = src.Size, src.SHA256, src.CreatedAt, src.UploadID
		found, err := exists(ctx, tx, `SELECT COUNT(*) FROM shares WHERE name = $1`, dst.Share)
		if err != nil {
			return err
		}
		if !found {
			return ErrNotFound
		}
		taken, err := pathTaken(ctx, tx, dst.Share, dst.Path)
		if err == nil && !taken {
			taken, err = exists(ctx, tx, `SELECT COUNT(*) FROM share_files WHERE object_key = $1`, dst.Key)
		}
		if err != nil {
			return err
		}
		if taken {
			return ErrExist
		}
		used, err := shareUsage(ctx, tx, dst.Share)
		if err != nil {
			return err
		}
		if err := check(used); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM files WHERE object_key = $1 AND upload_id = $2`, src.Key, src.UploadID); err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx,
			`INSERT INTO share_files (`+shareFileCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
			dst.Share, dst.Path, dst.Key, dst.Size, dst.SHA256, created, toNanos(dst.MovedAt), dst.MovedBy, dst.UploadID); err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx,
			`INSERT INTO share_moves (share_name, file_path, arrival_key, owner, name) VALUES ($1, $2, $3, $4, $5)`,
			dst.Share, dst.Path, src.Key, src.Owner, src.Name)
		return err
	})
	if err != nil {
		return ShareMove{}, fmt.Errorf("state: move %s to %s: %w", from.Key, dst.Key, classify(err))
	}
	return ShareMove{File: dst, From: src}, nil
}

// FinishMove marks the move of f (matched by share, path and upload id) as
// done, once its bytes are at f.Key: the file is listed from now on.
// Finishing a finished move does nothing; ErrNotFound if the move was
// undone.
func (db *DB) FinishMove(ctx context.Context, f ShareFile) error {
	ok, err := execOne(ctx, db.sql,
		`DELETE FROM share_moves WHERE share_name = $1 AND file_path = $2
		 AND EXISTS (SELECT 1 FROM share_files f WHERE f.share_name = $1 AND f.file_path = $2 AND f.upload_id = $3)`,
		f.Share, f.Path, f.UploadID)
	if err == nil && !ok {
		// No move in progress: finished before, or undone.
		ok, err = exists(ctx, db.sql,
			`SELECT COUNT(*) FROM share_files WHERE share_name = $1 AND file_path = $2 AND upload_id = $3`,
			f.Share, f.Path, f.UploadID)
		if err == nil && !ok {
			err = ErrNotFound
		}
	}
	if err != nil {
		return fmt.Errorf("state: finish move to %s: %w", f.Key, classify(err))
	}
	return nil
}

// UndoMove takes back the move m that BeginMove recorded, whose bytes could
// not be moved: in one transaction it deletes the share file, puts back the
// Arrivals file m.From and appends rec. If a later file holds m.From.Key in
// Arrivals (possible only once the bytes left that key), m.From is not put
// back, and restored is false. ErrNotFound, with nothing written, if the
// move is no longer in progress (finished, or undone before).
func (db *DB) UndoMove(ctx context.Context, m ShareMove, rec AuditRecord) (restored bool, err error) {
	f, from := m.File, m.From
	err = db.changeAudited(ctx, rec, func(tx *sql.Tx) error {
		ok, err := execOne(ctx, tx,
			`DELETE FROM share_moves WHERE share_name = $1 AND file_path = $2
			 AND EXISTS (SELECT 1 FROM share_files f WHERE f.share_name = $1 AND f.file_path = $2 AND f.upload_id = $3)`,
			f.Share, f.Path, f.UploadID)
		if err == nil && !ok {
			err = ErrNotFound
		}
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, `DELETE FROM share_files WHERE share_name = $1 AND file_path = $2`, f.Share, f.Path); err != nil {
			return err
		}
		restored, err = execOne(ctx, tx,
			`INSERT INTO files (object_key, owner, name, size, sha256, created_at, upload_id)
			 VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (object_key) DO NOTHING`,
			from.Key, from.Owner, from.Name, from.Size, from.SHA256, toNanos(from.CreatedAt), from.UploadID)
		return err
	})
	if err != nil {
		return false, fmt.Errorf("state: undo move of %s to %s: %w", from.Key, f.Key, classify(err))
	}
	return restored, nil
}

// PendingMoves lists the moves in progress, oldest first, at most limit.
func (db *DB) PendingMoves(ctx context.Context, limit int) ([]ShareMove, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("state: list moves in progress: limit %d is not positive", limit)
	}
	rows, err := db.sql.QueryContext(ctx,
		pendingSelect+` ORDER BY f.moved_at, f.share_name, f.file_path LIMIT $1`, limit)
	if err != nil {
		return nil, fmt.Errorf("state: list moves in progress: %w", err)
	}
	defer rows.Close()
	var out []ShareMove
	for rows.Next() {
		m, err := scanMove(rows)
		if err != nil {
			return nil, fmt.Errorf("state: list moves in progress: %w", err)
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: list moves in progress: %w", err)
	}
	return out, nil
}

// PendingMove returns the move in progress to path in share, or
// ErrNotFound.
func (db *DB) PendingMove(ctx context.Context, share, path string) (ShareMove, error) {
	m, err := scanMove(db.sql.QueryRowContext(ctx,
		pendingSelect+` WHERE m.share_name = $1 AND m.file_path = $2`, share, path))
	if err != nil {
		return ShareMove{}, fmt.Errorf("state: get move in progress to %s in share %q: %w", path, share, classify(err))
	}
	return m, nil
}
