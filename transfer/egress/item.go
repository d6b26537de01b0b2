package egress

import (
	"fmt"
	"slices"
)

// Status is where an egress item is in its life. An item is one version of
// a staged file: a change to the file makes a new item.
//
//	staged ──request──► checking ──► blocked                 (a check found something)
//	  │                    │
//	  │                    ├──► awaiting_approval ──► rejected
//	  │                    │            │
//	  │                    └────────────┴──approve──► queued ──► pushing ──► sent
//	  │                                                 ▲           │
//	  └─► gone (file removed)                           └─restart───┴──► failed
//
// Any status before sent goes to withdrawn when the staged file changes or
// disappears (from staged: gone). blocked, rejected, sent, failed, withdrawn
// and gone are final.
type Status string

// The statuses of an item.
const (
	StatusStaged           Status = "staged"            // ready, not requested
	StatusChecking         Status = "checking"          // requested; the checks run (or wait for the scanner)
	StatusBlocked          Status = "blocked"           // a check found malware or identifiers
	StatusAwaitingApproval Status = "awaiting_approval" // checked; an IAO or IAA other than the requester decides
	StatusRejected         Status = "rejected"          // the reviewer said no
	StatusQueued           Status = "queued"            // checked (and approved): waits for a push worker
	StatusPushing          Status = "pushing"           // being sent
	StatusSent             Status = "sent"              // delivered; the item carries the receipt
	StatusFailed           Status = "failed"            // could not be sent, or no longer allowed
	StatusWithdrawn        Status = "withdrawn"         // the staged file changed or went away after the request
	StatusGone             Status = "gone"              // the staged file went away before any request
)

// transitions lists the statuses each status may move to.
var transitions = map[Status][]Status{
	StatusStaged:           {StatusStaged, StatusChecking, StatusGone},
	StatusChecking:         {StatusBlocked, StatusAwaitingApproval, StatusQueued, StatusFailed, StatusWithdrawn},
	StatusAwaitingApproval: {StatusQueued, StatusRejected, StatusWithdrawn},
	StatusQueued:           {StatusPushing, StatusFailed, StatusWithdrawn},
	StatusPushing:          {StatusSent, StatusFailed, StatusQueued, StatusWithdrawn},
}

// Final reports whether s is an end: nothing moves the item on.
func (s Status) Final() bool { return len(transitions[s]) == 0 }

// Active reports whether a request for the item is under way: it has been
// requested and is neither final nor staged.
func (s Status) Active() bool { return s != StatusStaged && !s.Final() }

// CanMove reports whether an item may go from s to next.
func (s Status) CanMove(next Status) bool { return slices.Contains(transitions[s], next) }

// from lists, as strings for the state database's guard, the statuses
// that may move to next.
func from(next Status) []string {
	var out []string
	for s, to := range transitions {
		if slices.Contains(to, next) {
			out = append(out, string(s))
		}
	}
	slices.Sort(out)
	return out
}

// checkMove returns an error unless an item may go from s to next.
func checkMove(s, next Status) error {
	if !s.CanMove(next) {
		return fmt.Errorf("egress: an item that is %s cannot become %s", s, next)
	}
	return nil
}

// Retryable reports whether a new request may be made for the same staged
// bytes after an item ended in s: after a failure, a block, a rejection or
// a send (to send again, perhaps elsewhere). Not after withdrawn or gone:
// the bytes are no longer there.
func (s Status) Retryable() bool {
	switch s {
	case StatusFailed, StatusBlocked, StatusRejected, StatusSent:
		return true
	}
	return false
}
