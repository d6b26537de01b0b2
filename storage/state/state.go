// Package state is mftd's state database: accounts, sessions, upload
// sessions, Arrivals files and the audit chain. SQLite (modernc.org/sqlite,
// WAL, busy_timeout) is the default; the SQL is kept portable to PostgreSQL.
// Several processes (the daemon and the admin commands) share one database.
package state

import (
	"errors"
	"time"
)

var (
	// ErrNotFound: no such row.
	ErrNotFound = errors.New("state: not found")
	// ErrExist: a unique key (account name, file key) is taken.
	ErrExist = errors.New("state: already exists")
	// ErrConflict: a conditional update found the row in another state
	// (an offset or status that moved on).
	ErrConflict = errors.New("state: conflict")
	// ErrReplay: a TOTP time step at or before the last one used.
	ErrReplay = errors.New("state: code already used")
	// ErrAuditBroken: the audit chain does not verify.
	ErrAuditBroken = errors.New("state: audit chain broken")
)

// Account is a user who can sign in.
type Account struct {
	ID           int64
	Name         string // canonical (policy.CanonicalUsername)
	PasswordHash string // argon2id PHC string
	TOTPSecret   string // base32
	TOTPLastStep int64  // last accepted RFC 6238 time step; 0 = none yet
	CreatedAt    time.Time
	Email        string // where the notifier writes; "" for none
	Disabled     bool   // a disabled account cannot sign in and has no sessions
}

// Upload statuses.
const (
	StatusUploading   = "uploading"
	StatusProcessing  = "processing"
	StatusPublishing  = "publishing" // checked; bytes moving to Arrivals (shown as processing)
	StatusAvailable   = "available"
	StatusQuarantined = "quarantined"
	StatusRejected    = "rejected"
	StatusTerminated  = "terminated"
	StatusDeleted     = "deleted" // quarantined, then deleted by an administrator
)

// Upload is one upload session (tus or, later, SFTP).
type Upload struct {
	ID             string
	Owner          string // account name
	Filename       string // cleaned by storage.CleanName
	Length         int64
	Offset         int64  // durable offset
	Handle         []byte // storage.Handle for Offset
	HashState      []byte // marshalled sha256 state covering exactly Offset bytes
	Metadata       string // raw tus Upload-Metadata, echoed by HEAD; never logged
	ExpectedSHA256 string // hex, from metadata; "" if none
	SHA256         string // hex, set when complete
	Status         string
	Reason         string // why quarantined or rejected
	Key            string // storage key of the bytes now (uploads/, quarantine/ or arrivals/)
	CreatedAt      time.Time
	UpdatedAt      time.Time
	ExpiresAt      time.Time // incomplete uploads expire
}

// File is a checked file in a user's Arrivals.
type File struct {
	Key       string // arrivals/<owner>/<name>
	Owner     string
	Name      string
	Size      int64
	SHA256    string
	CreatedAt time.Time // when the bytes first arrived; retention counts from here
	UploadID  string
}

// AuditRecord is one entry of the hash-chained audit log.
type AuditRecord struct {
	Seq        int64
	Time       time.Time
	Actor      string
	Action     string // e.g. "login", "upload.create"
	Object     string
	Result     string // "ok", "denied", "failed", ...
	RemoteAddr string
	PrevHash   string // hex SHA-256 of the previous record ("" for the first)
	Hash       string // hex SHA-256 of this record's canonical encoding
}
