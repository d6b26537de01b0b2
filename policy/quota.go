package policy

import (
	"errors"
	"fmt"
	"strconv"
)

// ErrQuotaExceeded refuses what would take a user's Arrivals or a share
// past its quota. Refusals carry a *QuotaError that says which quota.
var ErrQuotaExceeded = errors.New("policy: quota exceeded")

// Quota names one quota, as the configuration and GET /api/v1/me name it.
type Quota string

// The quotas.
const (
	QuotaArrivalsBytes Quota = "arrivals_bytes" // bytes in one user's Arrivals
	QuotaArrivalsFiles Quota = "arrivals_files" // files in one user's Arrivals
	QuotaShareBytes    Quota = "share_bytes"    // bytes in one share
)

// QuotaError is a refusal by a quota. Its message is written for the user
// it belongs to: it names the quota, its subject (that user, or a share),
// the limit and the usage of that subject only, never anyone else's.
type QuotaError struct {
	Quota   Quota
	Subject string // the user (Arrivals quotas) or the share (share_bytes)
	Limit   int64  // bytes or files
	Used    int64  // used or reserved before the refused request
	Want    int64  // what the refused request adds; 0 if not known (a stream)
}

func (e *QuotaError) Error() string {
	switch e.Quota {
	case QuotaArrivalsFiles:
		return fmt.Sprintf("Arrivals file quota of %s exceeded: limit %d files, %d stored or being uploaded",
			e.Subject, e.Limit, e.Used)
	case QuotaShareBytes:
		return fmt.Sprintf("quota of share %s exceeded: limit %s, %s used%s",
			e.Subject, sizeExact(e.Limit), size(e.Used), e.wanted())
	}
	return fmt.Sprintf("Arrivals quota of %s exceeded: limit %s, %s used or reserved%s",
		e.Subject, sizeExact(e.Limit), size(e.Used), e.wanted())
}

func (e *QuotaError) wanted() string {
	if e.Want <= 0 {
		return ""
	}
	return "; this file needs " + size(e.Want)
}

// Is makes errors.Is(err, ErrQuotaExceeded) hold.
func (e *QuotaError) Is(target error) bool { return target == ErrQuotaExceeded }

// ArrivalsUsage is what counts against a user's Arrivals quota: the files
// in their Arrivals, plus the uploads still being received or checked, at
// their declared length (reserved when created) or, while their length is
// unknown (SFTP), at the bytes received so far. Quarantined, rejected,
// terminated and expired uploads do not count, nor do files moved into a
// share or deleted.
type ArrivalsUsage struct {
	Bytes         int64 // in Arrivals plus reserved
	Files         int64 // in Arrivals plus uploads in progress
	ReservedBytes int64 // the part of Bytes not yet in Arrivals
	ReservedFiles int64 // the part of Files not yet in Arrivals
}

// CheckArrivals decides whether user, whose Arrivals hold u, may add
// addBytes bytes in addFiles new files under quota q: nil, or a
// *QuotaError (ErrQuotaExceeded). The bytes quota is checked first. A zero
// limit is no limit; a usage already over a lowered limit refuses anything
// more but takes nothing away.
func CheckArrivals(user string, q UserQuota, u ArrivalsUsage, addBytes, addFiles int64) error {
	if q.ArrivalsBytes > 0 && addBytes > 0 && (u.Bytes > q.ArrivalsBytes || addBytes > q.ArrivalsBytes-u.Bytes) {
		return &QuotaError{Quota: QuotaArrivalsBytes, Subject: user, Limit: q.ArrivalsBytes, Used: u.Bytes, Want: addBytes}
	}
	if q.ArrivalsFiles > 0 && addFiles > 0 && (u.Files > q.ArrivalsFiles || addFiles > q.ArrivalsFiles-u.Files) {
		return &QuotaError{Quota: QuotaArrivalsFiles, Subject: user, Limit: q.ArrivalsFiles, Used: u.Files, Want: addFiles}
	}
	return nil
}

// size formats n bytes for people: "512 bytes", "1.5 KiB", ... "2.0 TiB".
func size(n int64) string {
	const units = "KMGTPE"
	if n < 1024 {
		return strconv.FormatInt(n, 10) + " bytes"
	}
	v, i := float64(n)/1024, 0
	for v >= 1024 && i < len(units)-1 {
		v /= 1024
		i++
	}
	return fmt.Sprintf("%.1f %ciB", v, units[i])
}

// sizeExact is size with the exact count: "1.0 GiB (1073741824 bytes)".
func sizeExact(n int64) string {
	if n < 1024 {
		return size(n)
	}
	return size(n) + " (" + strconv.FormatInt(n, 10) + " bytes)"
}
