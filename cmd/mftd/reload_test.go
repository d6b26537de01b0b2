package main

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/mftd/mftd/cmd/mftd/config"
	"github.com/mftd/mftd/policy"
)

// auditLog collects config.reload records; fail makes the next writes fail.
type auditLog struct {
	mu   sync.Mutex
	recs [][2]string // object, result
	fail error
}

func (a *auditLog) write(_ context.Context, object, result string) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fail != nil {
		return a.fail
	}
	a.recs = append(a.recs, [2]string{object, result})
	return nil
}

func (a *auditLog) records() [][2]string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return slices.Clone(a.recs)
}

func (a *auditLog) setFail(err error) {
	a.mu.Lock()
	a.fail = err
	a.mu.Unlock()
}

// reloadEnv is a configuration file, what a daemon started from it runs
// with, and a reloader of it.
type reloadEnv struct {
	t     *testing.T
	dir   string
	path  string
	base  string // the file's first content
	live  *policy.Live
	level zap.AtomicLevel
	audit *auditLog
	logs  *observer.ObservedLogs
	log   *zap.Logger
	start *config.Config
}

func newReloadEnv(t *testing.T) *reloadEnv {
	t.Helper()
	dir := t.TempDir()
	e := &reloadEnv{t: t, dir: dir, path: filepath.Join(dir, "mftd.yaml"), audit: &auditLog{}}
	e.base = "data_dir: " + filepath.Join(dir, "data") + "\n" +
		"https: {listen: 127.0.0.1:8443}\n" +
		"retention: {arrivals: 720h, quarantine: 720h}\n" +
		"limits: {max_file_size: 1TiB}\n" +
		"log: {level: info}\n"
	e.write(e.base)
	cfg, err := config.Load(e.path)
	if err != nil {
		t.Fatal(err)
	}
	e.start = cfg
	e.live = policy.NewLive(settingsFrom(cfg))
	e.level = zap.NewAtomicLevelAt(zap.InfoLevel)
	core, logs := observer.New(zap.DebugLevel)
	e.log, e.logs = zap.New(core), logs
	return e
}

// write replaces the file as an editor does: a new file renamed over it.
func (e *reloadEnv) write(content string) {
	e.t.Helper()
	tmp := filepath.Join(e.dir, ".mftd.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		e.t.Fatal(err)
	}
	if err := os.Rename(tmp, e.path); err != nil {
		e.t.Fatal(err)
	}
}

func (e *reloadEnv) reloader() *reloader {
	e.t.Helper()
	r, err := newReloader(e.path, e.start, e.live, e.level, e.audit.write, e.log)
	if err != nil {
		e.t.Fatal(err)
	}
	if !r.prime() {
		e.t.Fatal("prime: the file is not what runs")
	}
	return r
}

func sumOf(s string) string {
	b := sha256.Sum256([]byte(s))
	return hex.EncodeToString(b[:])
}

// A valid change applies its live keys at once, names the others as needing
// a restart and keeps their running values; the same content again does
// nothing; an invalid file is logged, problem by problem, audited as
// rejected and changes nothing; the next valid edit applies.
func TestReload(t *testing.T) {
	e := newReloadEnv(t)
	r := e.reloader()
	ctx := context.Background()

	edited := strings.NewReplacer("arrivals: 720h", "arrivals: 2s", "level: info", "level: debug",
		"127.0.0.1:8443", "127.0.0.1:9443", "max_file_size: 1TiB", "max_file_size: 1GiB").Replace(e.base) +
		"quotas: {users: {alice: {arrivals_bytes: 1MiB}}}\n"
	e.write(edited)
	if err := r.reload(ctx); err != nil {
		t.Fatal(err)
	}
	set := e.live.Load()
	if set.ArrivalsRetention != 2*time.Second || set.Limits.MaxFileSize != 1<<30 || set.Quotas.ForUser("alice").ArrivalsBytes != 1<<20 {
		t.Errorf("settings after the reload: %+v", set)
	}
	if e.level.Level() != zapcore.DebugLevel {
		t.Errorf("log level %s, want debug", e.level.Level())
	}
	if r.running.HTTPS.Listen != "127.0.0.1:8443" {
		t.Errorf("https.listen taken live: %s", r.running.HTTPS.Listen)
	}
	want := [][2]string{{sumOf(edited),
		"applied; changed: limits.max_file_size, log.level, quotas.users.alice.arrivals_bytes, quotas.users.alice.arrivals_files, retention.arrivals; restart required for: https.listen"}}
	if diff := cmp.Diff(want, e.audit.records()); diff != "" {
		t.Errorf("audit records (-want +got):\n%s", diff)
	}
	warn := e.logs.FilterMessageSnippet("restart required").All()
	if len(warn) != 1 || warn[0].Level != zap.WarnLevel || !slices.Equal(warn[0].ContextMap()["keys"].([]any), []any{"https.listen"}) {
		t.Errorf("restart warning: %+v", warn)
	}

	// Unchanged content: nothing.
	if err := r.reload(ctx); err != nil {
		t.Fatal(err)
	}
	if n := len(e.audit.records()); n != 1 {
		t.Errorf("an unchanged file wrote audit records: %d in all", n)
	}

	// Invalid: two problems, both named; nothing changes.
	bad := strings.Replace(edited, "arrivals: 2s", "arrivals: banana", 1) + "scanner: {workers: 0}\n"
	e.write(bad)
	if err := r.reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.audit.records(); len(got) != 2 || got[1] != [2]string{sumOf(bad), "rejected: 2 problems"} {
		t.Errorf("audit records after an invalid file: %q", got)
	}
	if set := e.live.Load(); set.ArrivalsRetention != 2*time.Second {
		t.Errorf("retention after an invalid file: %s, want the previous 2s", set.ArrivalsRetention)
	}
	rejected := e.logs.FilterMessageSnippet("rejected").All()
	if len(rejected) != 1 {
		t.Fatalf("rejection log lines: %+v", rejected)
	}
	problems := strings.Join(toStrings(rejected[0].ContextMap()["problems"]), "\n")
	for _, key := range []string{"retention.arrivals", "scanner.workers"} {
		if !strings.Contains(problems, key) {
			t.Errorf("the rejection does not name %s: %s", key, problems)
		}
	}

	// The next valid edit applies, and still names https.listen.
	fixed := strings.Replace(edited, "arrivals: 2s", "arrivals: 3s", 1)
	e.write(fixed)
	if err := r.reload(ctx); err != nil {
		t.Fatal(err)
	}
	if set := e.live.Load(); set.ArrivalsRetention != 3*time.Second {
		t.Errorf("retention after a valid edit: %s, want 3s", set.ArrivalsRetention)
	}
	if got := e.audit.records(); len(got) != 3 || got[2][1] != "applied; changed: retention.arrivals; restart required for: https.listen" {
		t.Errorf("audit records: %q", got)
	}
}

func toStrings(v any) []string {
	var out []string
	if l, ok := v.([]any); ok {
		for _, s := range l {
			out = append(out, s.(string))
		}
	}
	return out
}

// A reload whose audit record cannot be written is not applied, and is
// tried again.
func TestReloadAuditOrRefuse(t *testing.T) {
	e := newReloadEnv(t)
	r := e.reloader()
	ctx := context.Background()
	e.audit.setFail(errors.New("database is down"))
	e.write(strings.Replace(e.base, "arrivals: 720h", "arrivals: 2s", 1))
	if err := r.reload(ctx); err == nil {
		t.Error("reload without an audit record reported success")
	}
	if got := e.live.Load().ArrivalsRetention; got != 720*time.Hour {
		t.Errorf("applied without an audit record: retention %s", got)
	}
	e.audit.setFail(nil)
	if err := r.reload(ctx); err != nil {
		t.Fatal(err)
	}
	if got := e.live.Load().ArrivalsRetention; got != 2*time.Second || len(e.audit.records()) != 1 {
		t.Errorf("retry: retention %s, %d audit records", got, len(e.audit.records()))
	}
}

// Only the live keys are taken: what settingsFrom makes of the result does
// not depend on any other key, not even storage.s3.part_size (which caps
// the largest file on S3).
func TestWithLive(t *testing.T) {
	running := config.Default()
	file := config.Default()
	file.Storage.Backend = "s3"
	file.Storage.S3.PartSize = 5 * config.MiB
	file.HTTPS.Listen = "127.0.0.1:1"
	file.Retention.SweepInterval = config.Duration(time.Second)
	file.Limits.BufferSize = 2 * config.MiB
	file.Log.Format = "console"
	next := withLive(running, file)
	if diff := cmp.Diff(settingsFrom(running), settingsFrom(next)); diff != "" {
		t.Errorf("restart-only keys changed the live settings (-running +next):\n%s", diff)
	}
	want := []string{"https.listen", "limits.buffer_size", "log.format", "retention.sweep_interval", "storage.backend", "storage.s3.part_size"}
	// checkpoint_bytes and max_metadata_bytes apply live.
	live := config.Default()
	live.Limits.CheckpointBytes = 8 * config.MiB
	live.Limits.MaxMetadataBytes = 8 * config.KiB
	if got := settingsFrom(withLive(running, live)); got.CheckpointBytes != 8<<20 || got.MaxMetadataBytes != 8<<10 {
		t.Errorf("live limits: checkpoint %d, metadata %d; want 8 MiB and 8 KiB", got.CheckpointBytes, got.MaxMetadataBytes)
	}
	// The egress allowlist, the shares' egress, retries and remove_sent
	// apply live; the staging folder, settle time and workers at restart.
	eg := config.Default()
	eg.Egress.StagingDir = "/srv/egress"
	eg.Egress.Settle = config.Duration(time.Minute)
	eg.Egress.Workers = 7
	eg.Egress.Retries = 9
	eg.Egress.RemoveSent = !running.Egress.RemoveSent
	eg.Egress.Portals = []config.EgressPortal{{Name: "ukds", URL: "https://upload.portal.example/api", Method: "put"}}
	eg.Egress.Shares = map[string]config.EgressShare{"cohort": {Portals: []string{"ukds"}, RequireApproval: true}}
	egNext := withLive(running, eg)
	if got := settingsFrom(egNext).Egress; got.Attempts != 9 || got.RemoveSent == settingsFrom(running).Egress.RemoveSent ||
		got.Portals["ukds"].URL != "https://upload.portal.example/api" || !got.Shares["cohort"].RequireApproval || !slices.Contains(got.Shares["cohort"].Portals, "ukds") {
		t.Errorf("live egress settings after reload: %+v", got)
	}
	if diff := cmp.Diff([]string{"egress.settle", "egress.staging_dir", "egress.workers"}, changedKeys(egNext, eg)); diff != "" {
		t.Errorf("egress keys needing a restart (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(want, changedKeys(next, file)); diff != "" {
		t.Errorf("keys needing a restart (-want +got):\n%s", diff)
	}
	if got := changedKeys(running, next); len(got) != 0 {
		t.Errorf("keys applied: %q, want none", got)
	}
}

// The watcher reloads after an editor's rename and after Kubernetes swaps
// its ..data symlink; a start-up file that already changed is applied at
// once; SIGHUP reloads too.
func TestReloadWatch(t *testing.T) {
	t.Run("rename", func(t *testing.T) {
		e := newReloadEnv(t)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		startReload(ctx, reloadSource{path: e.path, level: e.level}, e.start, e.live, e.audit.write, e.log)
		// Unrelated files in the directory change nothing.
		if err := os.WriteFile(filepath.Join(e.dir, "mftd.log"), []byte("log line\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		e.write(strings.Replace(e.base, "arrivals: 720h", "arrivals: 2s", 1))
		waitRetention(t, e.live, 2*time.Second)
		e.write(strings.Replace(e.base, "arrivals: 720h", "arrivals: 5s", 1))
		waitRetention(t, e.live, 5*time.Second)
		if n := len(e.audit.records()); n != 2 {
			t.Errorf("%d audit records for two edits", n)
		}
	})
	t.Run("kubernetes", func(t *testing.T) {
		e := newReloadEnv(t)
		// mftd.yaml -> ..data/mftd.yaml, ..data -> ..v1
		v1 := filepath.Join(e.dir, "..v1")
		if err := os.Mkdir(v1, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(e.path, filepath.Join(v1, "mftd.yaml")); err != nil {
			t.Fatal(err)
		}
		for _, l := range [][2]string{{"..v1", "..data"}, {"..data/mftd.yaml", "mftd.yaml"}} {
			if err := os.Symlink(l[0], filepath.Join(e.dir, l[1])); err != nil {
				t.Fatal(err)
			}
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		startReload(ctx, reloadSource{path: e.path, level: e.level}, e.start, e.live, e.audit.write, e.log)
		v2 := filepath.Join(e.dir, "..v2")
		if err := os.Mkdir(v2, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(v2, "mftd.yaml"), []byte(strings.Replace(e.base, "arrivals: 720h", "arrivals: 2s", 1)), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("..v2", filepath.Join(e.dir, "..data_tmp")); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(filepath.Join(e.dir, "..data_tmp"), filepath.Join(e.dir, "..data")); err != nil {
			t.Fatal(err)
		}
		waitRetention(t, e.live, 2*time.Second)
	})
	t.Run("changed before start", func(t *testing.T) {
		e := newReloadEnv(t)
		e.write(strings.Replace(e.base, "arrivals: 720h", "arrivals: 2s", 1))
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		startReload(ctx, reloadSource{path: e.path, level: e.level}, e.start, e.live, e.audit.write, e.log)
		waitRetention(t, e.live, 2*time.Second)
	})
	t.Run("SIGHUP", func(t *testing.T) {
		e := newReloadEnv(t)
		r := e.reloader()
		ctx, cancel := context.WithCancel(context.Background())
		hup := make(chan os.Signal, 1)
		done := make(chan struct{})
		go func() { defer close(done); r.run(ctx, nil, hup) }()
		defer func() { cancel(); <-done }()
		e.write(strings.Replace(e.base, "arrivals: 720h", "arrivals: 2s", 1))
		hup <- syscall.SIGHUP
		waitRetention(t, e.live, 2*time.Second)
	})
}

func waitRetention(t *testing.T, live *policy.Live, want time.Duration) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for live.Load().ArrivalsRetention != want {
		if time.Now().After(deadline) {
			t.Fatalf("retention.arrivals is %s after 5s, want %s", live.Load().ArrivalsRetention, want)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
