package state

import (
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"time"
)

// auditDomain separates this encoding from any other SHA-256 input and
// versions it.
const auditDomain = "mftd.audit.v1"

// auditHash returns the hex SHA-256 of r's canonical encoding: the domain
// string, then seq and time (unix nanoseconds, exactly as stored) as 8-byte
// big-endian integers, then actor, action, object, result, remote address
// and previous hash, each as an 8-byte big-endian length followed by its
// bytes. Every field has a fixed width or a length prefix, so no two
// different records encode alike and no field can bleed into its neighbour.
func auditHash(r AuditRecord) string {
	h := sha256.New()
	writeString(h, auditDomain)
	writeInt(h, r.Seq)
	writeInt(h, r.Time.UnixNano())
	for _, s := range []string{r.Actor, r.Action, r.Object, r.Result, r.RemoteAddr, r.PrevHash} {
		writeString(h, s)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func writeInt(h hash.Hash, v int64) {
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(v))
	h.Write(b[:])
}

func writeString(h hash.Hash, s string) {
	writeInt(h, int64(len(s)))
	h.Write([]byte(s))
}

// auditTx appends r to the chain inside tx, which must hold the write lock
// (inTx's BEGIN IMMEDIATE), so that the record commits or rolls back with
// whatever else tx changes. It fills in Seq, PrevHash and Hash, truncates
// Time (which must be set) to the stored nanoseconds in UTC and cleans the
// text fields as Audit says, and returns the record as stored.
func auditTx(ctx context.Context, tx *sql.Tx, r AuditRecord) (AuditRecord, error) {
	r.Time = time.Unix(0, r.Time.UnixNano()).UTC()
	r.Actor, r.Action, r.Object = cleanText(r.Actor), cleanText(r.Action), cleanText(r.Object)
	r.Result, r.RemoteAddr = cleanText(r.Result), cleanText(r.RemoteAddr)
	var last int64
	var lastHash string
	err := tx.QueryRowContext(ctx, `SELECT seq, hash FROM audit ORDER BY seq DESC LIMIT 1`).Scan(&last, &lastHash)
	if err != nil && !errors.Is(err, sql.ErrNoRows) {
		return AuditRecord{}, err
	}
	r.Seq, r.PrevHash = last+1, lastHash
	r.Hash = auditHash(r)
	_, err = tx.ExecContext(ctx,
		`INSERT INTO audit (`+auditCols+`) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)`,
		r.Seq, r.Time.UnixNano(), r.Actor, r.Action, r.Object, r.Result, r.RemoteAddr, r.PrevHash, r.Hash)
	if err != nil {
		return AuditRecord{}, err
	}
	return r, nil
}

// AuditSince returns the records after sequence number seq, in order, at
// most limit.
func (db *DB) AuditSince(ctx context.Context, seq int64, limit int) ([]AuditRecord, error) {
	if limit <= 0 {
		return nil, fmt.Errorf("state: audit records after %d: limit %d is not positive", seq, limit)
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT `+auditCols+` FROM audit WHERE seq > $1 ORDER BY seq LIMIT $2`, seq, limit)
	if err != nil {
		return nil, fmt.Errorf("state: audit records after %d: %w", seq, err)
	}
	defer rows.Close()
	var out []AuditRecord
	for rows.Next() {
		r, err := scanAudit(rows)
		if err != nil {
			return nil, fmt.Errorf("state: audit records after %d: %w", seq, err)
		}
		out = append(out, r)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("state: audit records after %d: %w", seq, err)
	}
	return out, nil
}
