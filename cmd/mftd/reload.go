package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/fsnotify/fsnotify"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.yaml.in/yaml/v3"

	"github.com/mftd/mftd/cmd/mftd/config"
	"github.com/mftd/mftd/policy"
)

// Live reload of the configuration file.
//
// The file's directory is watched, not the file: editors save by writing a
// new file and renaming it over the old one, and Kubernetes swaps a ..data
// symlink in the directory. A burst of events naming the file (or a ..
// entry) is debounced, then the file is read by its path; SIGHUP reads it
// too. Content whose SHA-256 was already read is ignored. A changed file is
// decoded and validated as at start; only a valid one is applied, and of it
// only the keys that apply live (see withLive): the others keep their
// running values and are named in a "restart required" warning. Every
// reload, applied or rejected, writes one config.reload audit record with
// the file's SHA-256, before it takes effect.

const (
	// reloadDebounce is how long the file's directory must stay quiet
	// after an event before the file is read.
	reloadDebounce = 200 * time.Millisecond
	// reloadRetry: a reload whose audit record could not be written is
	// not applied, and tried again after this.
	reloadRetry = 5 * time.Second
)

// reloadSource is what serve needs, beyond the loaded config, to reload it:
// the file --config named and the logger's level.
type reloadSource struct {
	path  string
	level zap.AtomicLevel
}

// reloader applies changes of the configuration file to a running daemon.
// Not safe for concurrent use: run calls reload from one goroutine.
type reloader struct {
	path  string // absolute
	log   *zap.Logger
	live  *policy.Live
	level zap.AtomicLevel
	// audit writes one config.reload record; the reload takes effect only
	// if it succeeds.
	audit func(ctx context.Context, object, result string) error

	running *config.Config    // the values in effect
	seen    [sha256.Size]byte // the content last read, applied or rejected
}

// newReloader returns a reloader of the file at path, whose contents are
// running (as loaded at start) and whose live part is in live.
func newReloader(path string, running *config.Config, live *policy.Live, level zap.AtomicLevel,
	audit func(ctx context.Context, object, result string) error, log *zap.Logger) (*reloader, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("config reload: %w", err)
	}
	return &reloader{path: abs, log: log, live: live, level: level, audit: audit, running: running}, nil
}

// startReload starts watching the configuration file (and SIGHUP) until ctx
// ends. A watcher that cannot be set up is logged; SIGHUP still works.
func startReload(ctx context.Context, rs reloadSource, cfg *config.Config, live *policy.Live,
	audit func(ctx context.Context, object, result string) error, log *zap.Logger) {
	r, err := newReloader(rs.path, cfg, live, rs.level, audit, log)
	if err != nil {
		log.Error("configuration reload is off", zap.Error(err))
		return
	}
	// Registered before serve goes on: SIGHUP's default action would end
	// the daemon.
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	w, err := fsnotify.NewWatcher()
	if err == nil {
		if err = w.Add(filepath.Dir(r.path)); err != nil {
			w.Close()
		}
	}
	if err != nil {
		log.Warn("the configuration file is not watched; send SIGHUP to reload it",
			zap.String("path", r.path), zap.Error(err))
		w = nil
	}
	go func() {
		defer signal.Stop(hup)
		if w != nil {
			defer w.Close()
		}
		r.run(ctx, w, hup)
	}()
}

// run reloads on the watcher's events (w may be nil) and on hup until ctx
// ends.
func (r *reloader) run(ctx context.Context, w *fsnotify.Watcher, hup <-chan os.Signal) {
	var (
		events <-chan fsnotify.Event
		errs   <-chan error
	)
	if w != nil {
		events, errs = w.Events, w.Errors
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	var due <-chan time.Time
	if !r.prime() {
		// The file changed between the start-up load and now.
		timer.Reset(0)
		due = timer.C
	}
	for {
		select {
		case <-ctx.Done():
			return
		case ev, ok := <-events:
			if !ok {
				events = nil
				continue
			}
			if r.concerns(ev) {
				timer.Reset(reloadDebounce)
				due = timer.C
			}
		case err, ok := <-errs:
			if !ok {
				errs = nil
				continue
			}
			r.log.Warn("watching the configuration file", zap.String("path", r.path), zap.Error(err))
		case <-hup:
			r.log.Info("SIGHUP: reading the configuration file", zap.String("path", r.path))
			if r.reload(ctx) != nil {
				timer.Reset(reloadRetry)
				due = timer.C
			}
		case <-due:
			due = nil
			if r.reload(ctx) != nil {
				timer.Reset(reloadRetry)
				due = timer.C
			}
		}
	}
}

// concerns reports whether ev may have changed what the file's path reads:
// a create, write, rename or remove of its name, or of a ".."-named entry
// (Kubernetes' ..data symlink and its timestamped directories).
func (r *reloader) concerns(ev fsnotify.Event) bool {
	if !ev.Has(fsnotify.Create) && !ev.Has(fsnotify.Write) && !ev.Has(fsnotify.Rename) && !ev.Has(fsnotify.Remove) {
		return false
	}
	base := filepath.Base(ev.Name)
	return base == filepath.Base(r.path) || strings.HasPrefix(base, "..")
}

// prime records the file's current content as seen if it is what is
// running, and reports whether it is.
func (r *reloader) prime() bool {
	data, err := os.ReadFile(r.path)
	if err != nil {
		return false
	}
	cfg, err := config.Parse(data)
	if err != nil || len(changedKeys(r.running, cfg)) > 0 {
		return false
	}
	r.seen = sha256.Sum256(data)
	return true
}

// reload reads the file and, if its content is new, applies or rejects it.
// It returns an error only when trying again later may succeed (the audit
// record could not be written, so nothing was applied).
func (r *reloader) reload(ctx context.Context) error {
	data, err := os.ReadFile(r.path)
	if err != nil {
		// Retried at the next event: a file being replaced reappears.
		r.log.Warn("configuration file unreadable; the running configuration stays",
			zap.String("path", r.path), zap.Error(err))
		return nil
	}
	sum := sha256.Sum256(data)
	if sum == r.seen {
		r.log.Debug("configuration file unchanged", zap.String("path", r.path))
		return nil
	}
	hexSum := hex.EncodeToString(sum[:])
	log := r.log.With(zap.String("path", r.path), zap.String("sha256", hexSum))
	file, err := config.Parse(data)
	if err != nil {
		problems := []string{err.Error()}
		var cerr *config.Error
		if errors.As(err, &cerr) {
			problems = problems[:0]
			for _, p := range cerr.Problems {
				problems = append(problems, p.String())
			}
		}
		if aerr := r.audit(ctx, hexSum, "rejected: "+plural(len(problems), "problem")); aerr != nil {
			log.Error("audit record of a rejected configuration not written", zap.Error(aerr))
		}
		r.seen = sum
		log.Error("configuration file rejected; the running configuration stays", zap.Strings("problems", problems))
		return nil
	}

	next := withLive(r.running, file)
	changed := changedKeys(r.running, next)
	restart := changedKeys(next, file)
	result := "applied"
	if len(changed) > 0 {
		result += "; changed: " + strings.Join(changed, ", ")
	}
	if len(restart) > 0 {
		result += "; restart required for: " + strings.Join(restart, ", ")
	}
	if err := r.audit(ctx, hexSum, result); err != nil {
		log.Error("configuration not applied: its audit record could not be written; retrying",
			zap.Duration("retry_in", reloadRetry), zap.Error(err))
		return err
	}
	r.live.Store(settingsFrom(next))
	if lvl, err := zapcore.ParseLevel(next.Log.Level); err == nil {
		r.level.SetLevel(lvl)
	}
	r.running, r.seen = next, sum
	log.Info("configuration reloaded", zap.Strings("changed", changed))
	if len(restart) > 0 {
		log.Warn("restart required: these changed keys keep their running values until mftd is restarted",
			zap.Strings("keys", restart))
	}
	return nil
}

// withLive is running with the keys that apply live taken from file: those
// settingsFrom reads (retention.arrivals, retention.incomplete_uploads,
// retention.quarantine, limits.max_file_size, quotas, egress portals,
// shares, retries and remove_sent) and log.level. Every
// other key needs a restart. settingsFrom must read nothing else (not even
// storage.s3.part_size through MaxFileSize, which comes from running here).
func withLive(running, file *config.Config) *config.Config {
	next := *running
	next.Retention.Arrivals = file.Retention.Arrivals
	next.Retention.IncompleteUploads = file.Retention.IncompleteUploads
	next.Retention.Quarantine = file.Retention.Quarantine
	next.Limits.MaxFileSize = file.Limits.MaxFileSize
	next.Limits.CheckpointBytes = file.Limits.CheckpointBytes
	next.Limits.MaxMetadataBytes = file.Limits.MaxMetadataBytes
	next.Quotas = file.Quotas
	next.Egress.Portals = file.Egress.Portals
	next.Egress.Shares = file.Egress.Shares
	next.Egress.Retries = file.Egress.Retries
	next.Egress.RemoveSent = file.Egress.RemoveSent
	next.Log.Level = file.Log.Level
	return &next
}

// changedKeys lists, sorted, the dotted keys whose values differ between a
// and b ("https.listen", "quotas.users.alice.arrivals_bytes"); a list
// counts as one value.
func changedKeys(a, b *config.Config) []string {
	fa, fb := flatten(a), flatten(b)
	var keys []string
	for k, va := range fa {
		if vb, ok := fb[k]; !ok || !reflect.DeepEqual(va, vb) {
			keys = append(keys, k)
		}
	}
	for k := range fb {
		if _, ok := fa[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	return keys
}

// flatten maps each leaf key of c, as the file spells it, to its value. An
// empty map (quotas.users with no override) has no leaves.
func flatten(c *config.Config) map[string]any {
	data, err := yaml.Marshal(c)
	if err != nil {
		panic(fmt.Sprintf("config reload: marshal the configuration: %v", err)) // plain data: cannot fail
	}
	var tree map[string]any
	if err := yaml.Unmarshal(data, &tree); err != nil {
		panic(fmt.Sprintf("config reload: read back the configuration: %v", err))
	}
	out := map[string]any{}
	var walk func(prefix string, v any)
	walk = func(prefix string, v any) {
		m, ok := v.(map[string]any)
		if !ok {
			out[prefix] = v
			return
		}
		for k, sub := range m {
			if prefix != "" {
				k = prefix + "." + k
			}
			walk(k, sub)
		}
	}
	walk("", tree)
	return out
}

// plural is "1 problem", "2 problems".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}
