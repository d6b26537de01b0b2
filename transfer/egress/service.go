package egress

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
)

// Errors of the service that the API answers; policy.ErrDenied is the
// fourth (403).
var (
	// ErrNotFound: no such item, or one the actor may not see.
	ErrNotFound = errors.New("egress: no such item")
	// ErrNotStaged: no ready staged file at that path (absent, still being
	// written, or refused by the staging rules).
	ErrNotStaged = errors.New("egress: no staged file at that path")
	// ErrBusy: the file already has a request under way.
	ErrBusy = errors.New("egress: a request for this file is under way")
	// ErrState: the item is not in a status that allows the operation.
	ErrState = errors.New("egress: not possible in the item's status")
)

// Snapshots loads the share snapshots decisions read, fresh for each
// decision (the shares service).
type Snapshots interface {
	Snapshot(ctx context.Context, share string) (policy.Snapshot, error)
}

// Actor is who asks, as the API authenticated them.
type Actor struct {
	User       string // canonical user name; never empty
	Emergency  bool   // the session was opened with an emergency code
	RemoteAddr string
}

// Config configures the service. The portals, the shares' egress and the
// push attempts are read live from the policy.Live settings.
type Config struct {
	StagingDir string        // <share>/<user>/<path>; must exist
	Settle     time.Duration // default 5s
	Rescan     time.Duration // full rescan of the staging folder; default 5m
	Workers    int           // items checked or pushed at once; default 2
	// Poll: how often the queue is read when nothing wakes it; default 10s.
	Poll time.Duration
	Now  func() time.Time // nil: time.Now
}

// Service is the egress door: it records staged files as items, decides
// and checks requests, holds them for approval, pushes them and keeps the
// receipts. Nothing else in mftd opens a connection out.
type Service struct {
	cfg     Config
	log     *zap.Logger
	db      *state.DB
	live    *policy.Live
	snaps   Snapshots
	checker scanner.Scanner
	ids     *scanner.IdentifierDetector
	mets    *metrics.Metrics

	wake chan struct{}

	mu    sync.Mutex
	busy  map[string]bool      // items a worker holds
	later map[string]time.Time // items whose check failed: not before
	tries map[string]int       // failed checks in a row, for the backoff
}

// New returns a Service. db, live, snaps and checker (the malware check:
// built-in checks and clamd) are required; mets may be nil.
func New(cfg Config, log *zap.Logger, db *state.DB, live *policy.Live, snaps Snapshots, checker scanner.Scanner, mets *metrics.Metrics) (*Service, error) {
	if db == nil || live == nil || snaps == nil || checker == nil {
		return nil, errors.New("egress: a database, settings, share snapshots and a scanner are required")
	}
	if cfg.StagingDir == "" {
		return nil, errors.New("egress: no staging folder")
	}
	if cfg.Settle <= 0 {
		cfg.Settle = 5 * time.Second
	}
	if cfg.Rescan <= 0 {
		cfg.Rescan = 5 * time.Minute
	}
	if cfg.Workers <= 0 {
		cfg.Workers = 2
	}
	if cfg.Poll <= 0 {
		cfg.Poll = 10 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if log == nil {
		log = zap.NewNop()
	}
	return &Service{
		cfg: cfg, log: log, db: db, live: live, snaps: snaps, checker: checker, mets: mets,
		ids:   scanner.NewIdentifierDetector(scanner.IdentifierConfig{}),
		wake:  make(chan struct{}, 1),
		busy:  map[string]bool{},
		later: map[string]time.Time{},
		tries: map[string]int{},
	}, nil
}

// Run watches the staging folder and works the queue until ctx ends. Pushes
// cut short by the end of ctx stay "pushing" and are queued again (a tus
// push resumes) at the next start.
func (s *Service) Run(ctx context.Context) error {
	if err := s.recover(ctx); err != nil {
		return err
	}
	w, err := NewWatcher(WatchConfig{
		Dir: s.cfg.StagingDir, Settle: s.cfg.Settle, Rescan: s.cfg.Rescan,
		Check: checkStagedName, Known: s.known,
	}, s.log.Named("watch"))
	if err != nil {
		return err
	}
	jobs := make(chan state.EgressItem)
	var wg sync.WaitGroup
	for range s.cfg.Workers {
		wg.Go(func() {
			for it := range jobs {
				s.work(ctx, it)
				s.release(it.ID)
			}
		})
	}
	watchErr := make(chan error, 1)
	wg.Go(func() { watchErr <- w.Run(ctx, s.staged, s.removed) })
	s.dispatch(ctx, jobs)
	close(jobs)
	wg.Wait()
	if err := <-watchErr; err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// recover queues again the pushes a stop cut short.
func (s *Service) recover(ctx context.Context) error {
	items, err := s.db.EgressItemsWithStatus(ctx, []string{string(StatusPushing)}, 10000)
	if err != nil {
		return fmt.Errorf("egress: list interrupted pushes: %w", err)
	}
	for _, it := range items {
		if _, err := s.db.UpdateEgressItem(ctx, it.ID, []string{string(StatusPushing)}, func(i *state.EgressItem) error {
			i.Status = string(StatusQueued)
			return nil
		}, state.AuditRecord{}); err != nil && !errors.Is(err, state.ErrConflict) {
			return fmt.Errorf("egress: queue interrupted push %s again: %w", it.ID, err)
		}
		s.log.Info("interrupted push queued again", zap.String("item", it.ID), zap.String("portal", it.Portal))
	}
	return nil
}

// Wake makes the queue be read now.
func (s *Service) Wake() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// dispatch hands the items that wait for a check or a push to the workers,
// each to one worker at a time, until ctx ends.
func (s *Service) dispatch(ctx context.Context, jobs chan<- state.EgressItem) {
	t := time.NewTicker(s.cfg.Poll)
	defer t.Stop()
	for {
		items, err := s.db.EgressItemsWithStatus(ctx, []string{string(StatusChecking), string(StatusQueued)}, 1000)
		if err != nil && ctx.Err() == nil {
			s.log.Error("read the egress queue", zap.Error(err))
		}
		for _, it := range items {
			if !s.claim(it.ID) {
				continue
			}
			select {
			case jobs <- it:
			case <-ctx.Done():
				s.release(it.ID)
				return
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-s.wake:
		}
	}
}

// claim marks id as held by a worker, unless one holds it or its check
// waits for a retry.
func (s *Service) claim(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.busy[id] || s.cfg.Now().Before(s.later[id]) {
		return false
	}
	s.busy[id] = true
	return true
}

func (s *Service) release(id string) {
	s.mu.Lock()
	delete(s.busy, id)
	s.mu.Unlock()
}

// retryLater holds id back after a failed check: 10 s, doubling to 5 min.
func (s *Service) retryLater(id string) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := s.tries[id]
	s.tries[id] = n + 1
	d := min(10*time.Second<<min(n, 5), 5*time.Minute)
	s.later[id] = s.cfg.Now().Add(d)
	return d
}

// forget drops id's retry state once it moved on.
func (s *Service) forget(id string) {
	s.mu.Lock()
	delete(s.tries, id)
	delete(s.later, id)
	s.mu.Unlock()
}

// newID is a fresh item id: 26 random base32 characters.
func newID() string { return rand.Text() }

// record is an audit record of actor about item id.
func (s *Service) record(actor, remote, action, id, result string) state.AuditRecord {
	return state.AuditRecord{Time: s.cfg.Now(), Actor: actor, Action: action, Object: "egress:" + id, Result: result, RemoteAddr: remote}
}

// settings are the live egress settings.
func (s *Service) settings() policy.EgressSettings { return s.live.Load().Egress }
