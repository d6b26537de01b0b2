// Package sftpd is mftd's SFTP door: an SSH server (golang.org/x/crypto/ssh)
// that offers only the sftp subsystem (github.com/pkg/sftp's RequestServer)
// over a virtual tree per user, feeding the same ingest pipeline as tus.
//
//	/upload/    write here; partial files show their durable size, so
//	            `reput` / `put -a` resume them; a clean close completes the
//	            upload into the pipeline (hash → checks → Arrivals)
//	/arrivals/  list only: names and sizes of the user's Arrivals
//	/shares/    list only: the shares the user is a member of, as folders,
//	            and their files (nested paths as folders), with sizes and
//	            creation times; present when Config.Shares is set
//
// Nothing else exists. Every operation is checked against the user's
// session, so a session ended elsewhere (password change, disabled account)
// ends the SFTP connection's rights at its next request.
package sftpd

import (
	"context"
	"math"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
)

// Auth is the account side of an SFTP login; transfer/authn implements it.
// Every login failure is authn.ErrBadCredentials, whichever factor failed.
type Auth interface {
	// LoginPassword checks a password and a code (TOTP, or an emergency
	// code) together, under the same guessing limits as HTTPS, and opens a
	// session.
	LoginPassword(ctx context.Context, user, password, code, remote string) (authn.Session, error)
	// KeyRegistered reports whether key (SSH wire format) is registered for
	// user. It counts no failure: a client may offer several keys.
	KeyRegistered(ctx context.Context, user string, key []byte) (bool, error)
	// LoginKey checks the code of a user who proved they hold key, a key
	// registered for them, and opens a session. Failures count.
	LoginKey(ctx context.Context, user string, key []byte, code, remote string) (authn.Session, error)
	// Authenticate returns the identity of an open session, or an error once
	// the session has ended.
	Authenticate(ctx context.Context, token string) (authn.Identity, error)
}

// Ingest is the pipeline SFTP writes into; transfer/ingest implements it.
type Ingest interface {
	// Create starts an upload; SFTP uploads have Length -1 (unknown until
	// Finish).
	Create(ctx context.Context, req ingest.CreateRequest) (state.Upload, error)
	// Write appends in-order bytes at the upload's durable offset.
	Write(ctx context.Context, req ingest.WriteRequest) (int64, error)
	// Finish fixes an unknown-length upload's length at its durable offset
	// and completes it into the check stage.
	Finish(ctx context.Context, id, actor, remote string) error
	// Terminate discards an incomplete upload.
	Terminate(ctx context.Context, id, actor, remote string) error
	// Partials lists owner's incomplete unknown-length uploads.
	Partials(ctx context.Context, owner string) ([]state.Upload, error)
	// Arrivals lists owner's Arrivals.
	Arrivals(ctx context.Context, owner string) ([]state.File, error)
	// TryLock takes an upload's lock; writes, finishes and terminations
	// hold it.
	TryLock(id string) (unlock func(), ok bool)
	// Audit appends a record to the audit chain.
	Audit(ctx context.Context, actor, action, object, result, remote string) error
}

// Config configures the SFTP door.
type Config struct {
	Listen string // host:port
	// HostKeyFile holds the ed25519 host key (OpenSSH PEM); generated on
	// first start if missing, kept across restarts.
	HostKeyFile string
	// LoginGrace bounds the time from connect to a completed login.
	LoginGrace time.Duration
	// Settings hold the live limits (limits.max_file_size bounds one file);
	// read at every decision, so a reloaded configuration applies to open
	// connections too. nil: no size limit.
	Settings *policy.Live
	// Window bounds the bytes one open file buffers ahead of its next
	// in-order offset (out-of-order writes from pipelining clients).
	Window int64
	// Shares is the user's view of the shares they are in, asked afresh at
	// every operation under /shares/, so a member removed by the IAO sees
	// the share vanish at their next request, in an open session too.
	// nil: there is no /shares/.
	Shares Shares
}

// Shares is what the SFTP door sees of shares; cmd/mftd adapts
// transfer/shares to it. It decides (policy.DecideShare) who sees which
// share, and audits its own refusals, for every call afresh. Errors: one
// wrapping state.ErrNotFound for a share that does not exist or that who
// is not (or no longer) in; one wrapping policy.ErrDenied for a refusal
// that may be told (an emergency-code session); anything else is a failure.
type Shares interface {
	// SharesOf lists the shares who has a role in (member, IAA or IAO).
	SharesOf(ctx context.Context, who Requester) ([]ShareEntry, error)
	// Files lists the files of share.
	Files(ctx context.Context, who Requester, share string) ([]FileEntry, error)
}

// Requester is who asks Shares: an SFTP login whose session was just
// checked.
type Requester struct {
	User       string
	Emergency  bool   // the session was opened with an emergency code
	RemoteAddr string // for the audit trail
}

// ShareEntry is one share a user is in.
type ShareEntry struct {
	Name string
}

// FileEntry is one file of a share.
type FileEntry struct {
	Path      string // inside the share, "/"-separated: "cohort/2024/visits.csv"
	Size      int64
	CreatedAt time.Time // when the file first arrived; it travels with moves
}

// conn is one authenticated SFTP connection: who it acts for.
type conn struct {
	token       string // the authn session token opened at login
	user        string
	remote      string // client address
	client      string // SSH client version string
	fingerprint string // SHA256 fingerprint of the key used, "" for password
	auth        Auth
	ing         Ingest
	cfg         Config
	log         *zap.Logger
}

// limits are the current limits; without Settings, no size limit.
func (c *conn) limits() policy.Limits {
	if c.cfg.Settings == nil {
		return policy.Limits{MaxFileSize: math.MaxInt64}
	}
	return c.cfg.Settings.Load().Limits
}
