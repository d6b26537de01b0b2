// Package shares is the protocol-neutral core of projects, shares and their
// members: every operation loads a fresh snapshot from the state database,
// asks policy.DecideShare, makes the change and writes one audit record in
// the same transaction (a refusal is audited too). Nothing is cached, so a
// member removed by the IAO is refused at their very next request, through
// any door. The API, the SFTP door and the admin CLI all call in here.
package shares

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
)

// NotFoundError says that something does not exist, or exists but the
// actor may not know it (a share or project they are not in). It matches
// state.ErrNotFound. What is safe to show the client: "no such " + What.
type NotFoundError struct{ What string }

func (e *NotFoundError) Error() string        { return "shares: no such " + e.What }
func (e *NotFoundError) Is(target error) bool { return target == state.ErrNotFound }

// ExistError says that a name or path is taken. It matches state.ErrExist.
// What names what is taken and is safe to show the client.
type ExistError struct{ What string }

func (e *ExistError) Error() string        { return "shares: " + e.What + " already exists" }
func (e *ExistError) Is(target error) bool { return target == state.ErrExist }

// Things that are not found or taken, as NotFoundError and ExistError name them.
const (
	whatProject = "project"
	whatShare   = "share"
	whatUser    = "user"
	whatMember  = "member of the share"
	whatAdmin   = "administrator of the project"
	whatArrival = "file in your Arrivals"
	whatFile    = "file or folder at that path in the share"
)

// Config configures the service.
type Config struct {
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Service governs projects and shares and moves Arrivals into shares. It is
// safe for concurrent use. One Service per process moves files: Recover
// leaves alone the moves its own Service has under way.
type Service struct {
	cfg      Config
	log      *zap.Logger
	db       *state.DB
	store    storage.Backend
	settings *policy.Live

	mu     sync.Mutex
	moving map[string]bool // share keys of the moves under way (claim)
}

// New returns a Service. db and settings (the live quotas) are required;
// store may be nil for a service that only governs (the admin CLI), whose
// Move then fails.
func New(cfg Config, log *zap.Logger, db *state.DB, store storage.Backend, settings *policy.Live) (*Service, error) {
	if db == nil || settings == nil {
		return nil, errors.New("shares: a database and settings are required")
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Service{cfg: cfg, log: log, db: db, store: store, settings: settings, moving: map[string]bool{}}, nil
}

// Actor is who asks.
type Actor struct {
	// User is the authenticated, canonical user name; for a system
	// administrator, the CLI's actor ("cli:NAME").
	User string
	// Admin: a system administrator acting through the CLI on the host.
	// Never set for a request that came over the network.
	Admin bool
	// Emergency: the session was opened with an emergency code.
	Emergency  bool
	RemoteAddr string
}

// ShareInfo is one share a user has a role in.
type ShareInfo struct {
	Name     string
	Project  string
	Role     string // "iao", "iaa" or "member" (policy.Role)
	Outbound bool   // the user is a member with the outbound right
}

// request is the policy request of actor a for action.
func (a Actor) request(action policy.Action) policy.ShareRequest {
	return policy.ShareRequest{Actor: a.User, Admin: a.Admin, Emergency: a.Emergency, Action: action}
}

// decide asks policy and, if it refuses, audits the refusal (as action on
// object, naming target) and returns the error to give: a NotFoundError
// of what for an actor who may not know the object exists, else the
// policy error.
func (s *Service) decide(ctx context.Context, snap policy.Snapshot, req policy.ShareRequest, a Actor, object, target, what string) error {
	d := policy.DecideShare(snap, req)
	if d.Allow {
		return nil
	}
	result := "denied"
	if target != "" {
		result += " " + target
	}
	if err := s.audit(ctx, a, string(req.Action), object, result+": "+d.Reason); err != nil {
		return err
	}
	if errors.Is(d.Err, policy.ErrNotVisible) {
		return &NotFoundError{What: what}
	}
	return fmt.Errorf("shares: %s on %s: %w", req.Action, object, d.Err)
}

// audit appends a record that goes with no change (a refusal).
func (s *Service) audit(ctx context.Context, a Actor, action, object, result string) error {
	if _, err := s.db.Audit(context.WithoutCancel(ctx), s.record(a, action, object, result)); err != nil {
		return fmt.Errorf("shares: audit %s: %w", action, err)
	}
	return nil
}

func (s *Service) record(a Actor, action, object, result string) state.AuditRecord {
	return state.AuditRecord{Time: s.cfg.Now(), Actor: a.User, Action: action, Object: object, Result: result, RemoteAddr: a.RemoteAddr}
}

// projectSnapshot is what decisions about project read: the zero snapshot
// if there is no such project.
func (s *Service) projectSnapshot(ctx context.Context, project string) (policy.Snapshot, error) {
	p, err := s.db.GetProject(ctx, project)
	if errors.Is(err, state.ErrNotFound) {
		return policy.Snapshot{}, nil
	}
	if err != nil {
		return policy.Snapshot{}, err
	}
	return policy.Snapshot{Project: policy.Project{Name: p.Name, Owner: p.Owner, Admins: p.Admins}}, nil
}

// shareSnapshot is what decisions about share read: its project, members
// and their outbound rights; the zero snapshot if there is no such share.
func (s *Service) shareSnapshot(ctx context.Context, share string) (policy.Snapshot, error) {
	sh, err := s.db.GetShare(ctx, share)
	if errors.Is(err, state.ErrNotFound) {
		return policy.Snapshot{}, nil
	}
	if err != nil {
		return policy.Snapshot{}, err
	}
	snap, err := s.projectSnapshot(ctx, sh.Project)
	if err != nil {
		return policy.Snapshot{}, err
	}
	members, err := s.db.ShareMembers(ctx, share)
	if err != nil {
		return policy.Snapshot{}, err
	}
	snap.Share = sh.Name
	snap.Members = make(map[string]bool, len(members))
	for _, m := range members {
		snap.Members[m.User] = m.Outbound
	}
	return snap, nil
}

// account canonicalises a user name given by the actor and checks that the
// account exists. Call it only after the actor was allowed to act, so that
// outsiders cannot probe for accounts.
func (s *Service) account(ctx context.Context, raw string) (string, error) {
	name, err := policy.CanonicalUsername(raw)
	if err != nil {
		return "", &NotFoundError{What: whatUser}
	}
	if _, err := s.db.AccountByName(ctx, name); errors.Is(err, state.ErrNotFound) {
		return "", &NotFoundError{What: whatUser}
	} else if err != nil {
		return "", err
	}
	return name, nil
}

// targetName is how a user name given by the actor is decided on before it
// is checked: canonical if it can be, else as given (the decision refuses
// or allows by role, not by the target).
func targetName(raw string) string {
	if name, err := policy.CanonicalUsername(raw); err == nil {
		return name
	}
	return raw
}

// stateErr turns a state error into the service's errors.
func stateErr(err error, notFound, exist string) error {
	switch {
	case errors.Is(err, state.ErrNotFound) && notFound != "":
		return &NotFoundError{What: notFound}
	case errors.Is(err, state.ErrExist) && exist != "":
		return &ExistError{What: exist}
	}
	return err
}
