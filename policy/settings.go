package policy

import (
	"sync/atomic"
	"time"
)

// Settings are the administrator's tunables that decisions read: limits,
// retention and quotas. They change when the configuration file is reloaded;
// a decision reads one snapshot (Live.Load) and uses it throughout.
type Settings struct {
	Limits Limits
	// CheckpointBytes: received bytes are made durable and recorded at
	// least this often (0: the ingest service's configured value).
	CheckpointBytes int64
	// MaxMetadataBytes bounds a tus Upload-Metadata header (0: the tus
	// handler's configured value).
	MaxMetadataBytes int
	// IncompleteUploads: an upload not finished this long after it was
	// created expires (tus Upload-Expires) and the sweeper discards it.
	IncompleteUploads time.Duration
	// ArrivalsRetention: a file is deleted from Arrivals this long after it
	// was created (its recorded creation time). Zero: never.
	ArrivalsRetention time.Duration
	// QuarantineRetention: a quarantined file is deleted this long after it
	// was quarantined. Zero: never.
	QuarantineRetention time.Duration
	Quotas              Quotas
	Egress              EgressSettings
}

// Quotas bound what users and shares may hold. Zero means no limit.
type Quotas struct {
	UserArrivalsBytes int64
	UserArrivalsFiles int64
	ShareBytes        int64
	Users             map[string]UserQuota // per-user overrides, by canonical name
	Shares            map[string]int64     // per-share overrides of ShareBytes, by share name
}

// UserQuota is one user's Arrivals quota. Zero means no limit.
type UserQuota struct {
	ArrivalsBytes int64
	ArrivalsFiles int64
}

// ForUser is user's Arrivals quota: their override if any, else the
// defaults.
func (q Quotas) ForUser(user string) UserQuota {
	if u, ok := q.Users[user]; ok {
		return u
	}
	return UserQuota{ArrivalsBytes: q.UserArrivalsBytes, ArrivalsFiles: q.UserArrivalsFiles}
}

// ForShare is share's byte quota: its override if any, else the default.
func (q Quotas) ForShare(share string) int64 {
	if b, ok := q.Shares[share]; ok {
		return b
	}
	return q.ShareBytes
}

// Live holds the current Settings; a reload replaces them atomically. The
// zero value is not usable: make one with NewLive.
type Live struct {
	p atomic.Pointer[Settings]
}

// NewLive returns a Live holding s.
func NewLive(s Settings) *Live {
	l := &Live{}
	l.Store(s)
	return l
}

// Load returns the current settings. The caller must not modify them.
func (l *Live) Load() *Settings { return l.p.Load() }

// Store replaces the settings.
func (l *Live) Store(s Settings) { l.p.Store(&s) }
