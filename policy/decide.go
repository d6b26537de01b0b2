package policy

import "errors"

// Action is what a caller wants to do.
type Action string

// The actions Decide knows. Any other action is denied.
const (
	ActionUploadCreate Action = "upload.create"
	ActionUploadWrite  Action = "upload.write"
	ActionUploadRead   Action = "upload.read" // HEAD, status
	ActionUploadDelete Action = "upload.delete"
	ActionArrivalsList Action = "arrivals.list"
)

// ErrDenied is a refusal. For an existing upload callers answer as if it did
// not exist (404), so upload ids do not leak between users.
var ErrDenied = errors.New("policy: denied")

// ErrTooLarge refuses an upload whose declared length exceeds the limit.
var ErrTooLarge = errors.New("policy: file too large")

// Limits are the configured limits Decide enforces.
type Limits struct {
	// MaxFileSize is the largest declared upload length in bytes. There is no
	// "unlimited" value: the zero value admits only empty files.
	MaxFileSize int64
}

// Request is one operation to decide.
type Request struct {
	// Actor is the authenticated, canonical user name; never empty.
	Actor string
	// Action is the operation.
	Action Action
	// Owner is the owner of the upload acted on, or for arrivals.list the
	// user whose Arrivals are listed. For upload.create it is empty or Actor.
	Owner string
	// Size is the declared length for upload.create, -1 if not yet known
	// (tus Upload-Defer-Length); the writer must then enforce the limit as
	// bytes arrive. Ignored for other actions.
	Size int64
	// Emergency: the actor signed in with an emergency code instead of an
	// authenticator code. Such a session may upload and list its own files,
	// and nothing else (no egress, no change to shares, members, rights or
	// credentials).
	Emergency bool
}

// Decision is Decide's answer. Allow is true exactly when Err is nil. Reason
// is for the audit record and logs, never for the client.
type Decision struct {
	Allow  bool
	Reason string
	Err    error // ErrDenied or ErrTooLarge when !Allow
}

// Decide is a pure decision over one request, made for every operation (not
// once per session). Rules: Actor must be non-empty; for every upload action
// except create the actor must equal the upload's Owner (else ErrDenied:
// callers answer 404 so ids don't leak); create for another owner is denied,
// and create with Size > l.MaxFileSize is ErrTooLarge; arrivals.list is
// allowed only for the actor's own Arrivals (Owner == Actor). Unknown actions
// are denied.
func Decide(l Limits, r Request) Decision {
	if r.Actor == "" {
		return deny(ErrDenied, "no actor")
	}
	if r.Emergency && !emergencyAllowed(r.Action) {
		return deny(ErrDenied, "not allowed in an emergency-code session")
	}
	switch r.Action {
	case ActionUploadCreate:
		if r.Owner != "" && r.Owner != r.Actor {
			return deny(ErrDenied, "create for another user")
		}
		if r.Size < -1 {
			return deny(ErrDenied, "negative declared size")
		}
		if r.Size > l.MaxFileSize {
			return deny(ErrTooLarge, "declared size exceeds max file size")
		}
		return allow("own upload")
	case ActionUploadWrite, ActionUploadRead, ActionUploadDelete:
		if r.Owner != r.Actor {
			return deny(ErrDenied, "not the upload's owner")
		}
		return allow("own upload")
	case ActionArrivalsList:
		if r.Owner != r.Actor {
			return deny(ErrDenied, "not the actor's arrivals")
		}
		return allow("own arrivals")
	default:
		return deny(ErrDenied, "unknown action")
	}
}

func allow(reason string) Decision {
	return Decision{Allow: true, Reason: reason}
}

func deny(err error, reason string) Decision {
	return Decision{Reason: reason, Err: err}
}

// emergencyAllowed says what a session opened with an emergency code may
// do: every other action, including any added later, is refused.
func emergencyAllowed(a Action) bool {
	switch a {
	case ActionUploadCreate, ActionUploadWrite, ActionUploadRead, ActionUploadDelete, ActionArrivalsList:
		return true
	}
	return false
}
