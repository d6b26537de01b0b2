package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"runtime/debug"
	"strings"
	"syscall"
	"time"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"golang.org/x/crypto/ssh"

	"github.com/mftd/mftd/cmd/mftd/config"
	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/local"
	"github.com/mftd/mftd/storage/s3"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/api"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/egress"
	"github.com/mftd/mftd/transfer/ingest"
	"github.com/mftd/mftd/transfer/metrics"
	"github.com/mftd/mftd/transfer/notify"
	"github.com/mftd/mftd/transfer/sftpd"
	"github.com/mftd/mftd/transfer/shares"
	"github.com/mftd/mftd/transfer/tus"
)

func newServeCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "serve",
		Short: "run the daemon",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := loadConfig(cmd)
			if err != nil {
				return err
			}
			log, level, err := newLogger(cfg.Log)
			if err != nil {
				return err
			}
			defer func() { _ = log.Sync() }()
			path, err := cmd.Flags().GetString("config")
			if err != nil {
				return err
			}
			ctx, stop := signal.NotifyContext(cmd.Context(), syscall.SIGTERM, os.Interrupt)
			defer stop()
			return serve(ctx, cfg, log, reloadSource{path: path, level: level})
		},
	}
}

// gcPercent is the daemon's GOGC unless the environment sets one. Its live
// heap is mostly large, pointer-free transfer buffers (S3 part buffers in
// particular), which cost the collector almost nothing to mark; at Go's
// default of 100 the heap would grow to twice them between collections.
const gcPercent = 25

// newIngest builds the ingest core from cfg.
func newIngest(cfg *config.Config, log *zap.Logger, db *state.DB, store storage.Backend, sc scanner.Scanner, mets *metrics.Metrics) (*ingest.Service, error) {
	return ingest.New(ingest.Config{
		CheckpointBytes: cfg.Limits.CheckpointBytes.Int64(),
		BufferSize:      int(cfg.Limits.BufferSize.Int64()),
		Buffers:         cfg.Limits.Buffers,
		SweepInterval:   cfg.Retention.SweepInterval.D(),
		Settings:        policy.NewLive(settingsFrom(cfg)),
		Workers:         cfg.Scanner.Workers,
		Metrics:         mets,
	}, log.Named("transfer.ingest"), db, store, sc)
}

// serve runs the daemon until ctx ends, then drains in-flight requests. It
// applies changes of the configuration file in rs while it runs.
func serve(ctx context.Context, cfg *config.Config, log *zap.Logger, rs reloadSource) error {
	if _, set := os.LookupEnv("GOGC"); !set {
		debug.SetGCPercent(gcPercent)
	}
	for _, w := range warnings(cfg) {
		log.Warn(w)
	}
	db, err := openDB(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer db.Close()
	store, err := newStore(ctx, cfg.Storage, cfg.DataDir, log)
	if err != nil {
		return err
	}
	mets := metrics.New()
	if err := os.RemoveAll(scanTempDir(cfg)); err != nil { // spills of a previous run
		return fmt.Errorf("clear the scanner's temp folder: %w", err)
	}
	if err := os.MkdirAll(scanTempDir(cfg), 0o700); err != nil {
		return fmt.Errorf("scanner temp folder: %w", err)
	}
	checker, clamd, err := newChecker(cfg)
	if err != nil {
		return fmt.Errorf("scanner: %w", err)
	}
	if clamd != nil {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		if v, err := clamd.Version(pctx); err != nil {
			log.Error("clamd does not answer at start: completed uploads wait, unreleased, until it does",
				zap.String("clamd", clamd.Address()), zap.Error(err))
		} else {
			log.Info("malware scanner", zap.String("clamd", clamd.Address()), zap.String("version", v))
		}
		cancel()
	}
	ing, err := newIngest(cfg, log, db, store, checker, mets)
	if err != nil {
		return err
	}
	// Projects, shares and moves into shares, for the API and the SFTP door.
	sharesSvc, err := shares.New(shares.Config{}, log.Named("transfer.shares"), db, store, ing.Settings())
	if err != nil {
		return err
	}
	codeKey, err := loadOrCreateKey(cfg.Auth.CodeKeyFile)
	if err != nil {
		return err
	}
	notifier, err := newNotifier(cfg.Notify, log.Named("transfer.notify"))
	if err != nil {
		return err
	}
	lk := cfg.Auth.Lockout
	auth := authn.New(authn.Config{
		SessionTTL:     cfg.Auth.SessionTTL.D(),
		SessionIdle:    cfg.Auth.SessionIdle.D(),
		Lockout:        state.FailureLimits{Threshold: lk.Threshold, Window: lk.Window.D(), LockFor: lk.Duration.D()},
		AddressLockout: state.FailureLimits{Threshold: lk.AddressThreshold, Window: lk.Window.D(), LockFor: lk.Duration.D()},
		CodeKey:        codeKey,
	}, log.Named("transfer.authn"), db, notifier, mets)
	tusH := tus.New(tus.Config{
		BasePath:         "/files/",
		MaxMetadataBytes: int(cfg.Limits.MaxMetadataBytes.Int64()),
		IdleTimeout:      cfg.HTTPS.IdleTimeout.D(),
	}, log.Named("transfer.tus"), ing)
	a := api.New(api.Config{
		CORSOrigins: cfg.HTTPS.CORSOrigins,
		Checks: map[string]func(context.Context) (string, error){
			"database": func(ctx context.Context) (string, error) {
				_, _, err := db.AuditHead(ctx)
				return "ok", err
			},
			"storage": func(ctx context.Context) (string, error) {
				err := store.List(ctx, storage.PrefixQuarantine+"/", func(storage.ObjectInfo) error { return errStopList })
				if errors.Is(err, errStopList) {
					err = nil
				}
				return "ok (" + cfg.Storage.Backend + ")", err
			},
			"scanner": scannerReady(clamd),
		},
	}, log.Named("transfer.api"), auth, ing, db)

	certFile, keyFile := cfg.HTTPS.TLS.CertFile, cfg.HTTPS.TLS.KeyFile
	if certFile == "" {
		certFile, keyFile, err = ensureSelfSigned(filepath.Join(cfg.DataDir, "tls"), log)
		if err != nil {
			return err
		}
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return fmt.Errorf("load TLS certificate: %w", err)
	}
	mounts := []api.Mounter{tusH, api.NewShares(sharesSvc, log.Named("transfer.api"))}
	egressSvc, err := newEgress(cfg, log.Named("transfer.egress"), db, ing.Settings(), sharesSvc, checker, mets)
	if err != nil {
		return err
	}
	if egressSvc != nil {
		mounts = append(mounts, api.NewEgress(egressSvc, log.Named("transfer.api")))
	}
	srv := &http.Server{
		Handler:           a.Handler(mounts...),
		ReadHeaderTimeout: cfg.HTTPS.ReadHeaderTimeout.D(),
		IdleTimeout:       cfg.HTTPS.IdleTimeout.D(),
		MaxHeaderBytes:    int(cfg.HTTPS.MaxHeaderBytes.Int64()),
		TLSConfig:         &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}},
		ErrorLog:          zap.NewStdLog(log.Named("http")),
	}
	ln, err := net.Listen("tcp", cfg.HTTPS.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.HTTPS.Listen, err)
	}

	var aln net.Listener
	if cfg.Admin.Listen != "" {
		if aln, err = net.Listen("tcp", cfg.Admin.Listen); err != nil {
			ln.Close()
			return fmt.Errorf("listen on admin.listen %s: %w", cfg.Admin.Listen, err)
		}
	}

	var sftpSrv *sftpd.Server
	var sln net.Listener
	if cfg.SFTP.Listen != "" {
		sftpSrv, err = sftpd.New(sftpd.Config{
			Listen:      cfg.SFTP.Listen,
			HostKeyFile: cfg.SFTP.HostKeyFile,
			LoginGrace:  cfg.SFTP.LoginGrace.D(),
			Settings:    ing.Settings(),
			Window:      cfg.SFTP.Window.Int64(),
			Shares:      sftpShares{svc: sharesSvc},
		}, log.Named("transfer.sftpd"), auth, ing)
		if err == nil {
			sln, err = net.Listen("tcp", cfg.SFTP.Listen)
		}
		if err != nil {
			ln.Close()
			if aln != nil {
				aln.Close()
			}
			return fmt.Errorf("sftp: %w", err)
		}
	}

	// The check stage stops only after the server has drained, so uploads
	// completed by the last requests are queued durably (and resumed at the
	// next start if not yet checked).
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	workDone := make(chan struct{})
	go func() {
		defer close(workDone)
		_ = ing.Run(workCtx)
	}()
	egressDone := make(chan struct{})
	go func() {
		defer close(egressDone)
		if egressSvc == nil {
			return
		}
		if err := egressSvc.Run(workCtx); err != nil {
			log.Error("egress stopped", zap.Error(err))
		}
	}()
	go pruneAuthState(workCtx, db, cfg, log)
	go recoverMoves(workCtx, sharesSvc, cfg.Retention.SweepInterval.D(), log.Named("transfer.shares"))
	startReload(workCtx, rs, cfg, ing.Settings(), func(ctx context.Context, object, result string) error {
		return ing.Audit(ctx, "system", "config.reload", object, result, "")
	}, log.Named("config"))
	if clamd != nil {
		go watchClamd(workCtx, clamd, ing, mets, log.Named("scanner"))
	}

	serveErr := make(chan error, 3) // https, admin, sftp
	go func() { serveErr <- srv.ServeTLS(api.BufferedListener(ln), "", "") }()
	var adminSrv *http.Server
	if aln != nil {
		adminSrv = &http.Server{Handler: metrics.AdminHandler(mets), ReadHeaderTimeout: 10 * time.Second, ErrorLog: zap.NewStdLog(log.Named("admin"))}
		go func() { serveErr <- adminSrv.Serve(aln) }()
		log.Info("admin listener (metrics)", zap.String("http", "http://"+aln.Addr().String()+"/metrics"))
	}
	if sftpSrv != nil {
		go func() { serveErr <- sftpSrv.Serve(sln) }()
		log.Info("sftp listening", zap.String("sftp", "sftp://"+sln.Addr().String()),
			zap.String("host_key", ssh.FingerprintSHA256(sftpSrv.HostKey())))
	}
	log.Info("mftd listening", zap.String("https", "https://"+ln.Addr().String()),
		zap.String("data_dir", cfg.DataDir), zap.String("storage", cfg.Storage.Backend))

	select {
	case err = <-serveErr: // a listener failed: stop the others too
		_ = srv.Close()
		if adminSrv != nil {
			_ = adminSrv.Close()
		}
		if sftpSrv != nil {
			_ = sftpSrv.Close()
		}
	case <-ctx.Done():
		log.Info("shutting down: draining in-flight requests", zap.Duration("timeout", cfg.HTTPS.ShutdownTimeout.D()))
		sctx, cancel := context.WithTimeout(context.Background(), cfg.HTTPS.ShutdownTimeout.D())
		var sftpDone chan error
		if sftpSrv != nil {
			sftpDone = make(chan error, 1)
			go func() { sftpDone <- sftpSrv.Shutdown(sctx) }()
		}
		err = srv.Shutdown(sctx)
		if adminSrv != nil {
			_ = adminSrv.Shutdown(sctx)
		}
		if sftpDone != nil {
			if serr := <-sftpDone; serr != nil {
				log.Warn("sftp connections still open at the drain timeout were closed; their partial files resume", zap.Error(serr))
			}
		}
		cancel()
		if err != nil {
			log.Warn("drain timed out; closing connections", zap.Error(err))
			_ = srv.Close()
		}
		err = nil
	}
	stopWork()
	<-workDone
	<-egressDone
	if err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, sftpd.ErrServerClosed) {
		return err
	}
	log.Info("stopped")
	return nil
}

// newEgress builds the egress service, or nil when egress.staging_dir is
// empty (egress off: its API routes are not mounted).
func newEgress(cfg *config.Config, log *zap.Logger, db *state.DB, live *policy.Live, snaps egress.Snapshots, checker scanner.Scanner, mets *metrics.Metrics) (*egress.Service, error) {
	e := cfg.Egress
	if e.StagingDir == "" {
		return nil, nil
	}
	if err := os.MkdirAll(e.StagingDir, 0o750); err != nil {
		return nil, fmt.Errorf("egress staging folder: %w", err)
	}
	log.Info("egress on", zap.String("staging_dir", e.StagingDir), zap.Int("portals", len(e.Portals)), zap.Int("shares", len(e.Shares)))
	return egress.New(egress.Config{StagingDir: e.StagingDir, Settle: e.Settle.D(), Workers: e.Workers}, log, db, live, snaps, checker, mets)
}

// errStopList ends a readiness listing after its first object.
var errStopList = errors.New("stop")

// newNotifier builds the configured notifier, or nil when none is set
// (password reset and emergency access then answer that they are unavailable).
func newNotifier(c config.Notify, log *zap.Logger) (notify.Notifier, error) {
	switch {
	case c.Dir != "":
		return notify.NewDir(c.Dir, log)
	case c.SMTP.Addr != "":
		return notify.NewSMTP(notify.SMTPConfig{
			Addr: c.SMTP.Addr, From: c.SMTP.From, Username: c.SMTP.Username,
			PasswordFile: c.SMTP.PasswordFile, StartTLS: c.SMTP.StartTLS,
		}, log)
	}
	return nil, nil
}

// pruneAuthState deletes dead sessions and stale failure counters every few
// minutes, so neither table grows without bound (source addresses are many).
func pruneAuthState(ctx context.Context, db *state.DB, cfg *config.Config, log *zap.Logger) {
	t := time.NewTicker(5 * time.Minute)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		now := time.Now()
		// + a minute: authn writes last-seen at most once a minute.
		if _, err := db.PruneSessions(ctx, now, cfg.Auth.SessionIdle.D()+time.Minute); err != nil && ctx.Err() == nil {
			log.Warn("prune sessions", zap.Error(err))
		}
		if _, err := db.PruneFailures(ctx, now, cfg.Auth.Lockout.Window.D()); err != nil && ctx.Err() == nil {
			log.Warn("prune failure counters", zap.Error(err))
		}
	}
}

// recoverMoves finishes the moves into shares that a crash or a storage
// failure interrupted: now, then with every sweep, until ctx ends.
func recoverMoves(ctx context.Context, svc *shares.Service, interval time.Duration, log *zap.Logger) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		if err := svc.Recover(ctx); err != nil && ctx.Err() == nil {
			log.Warn("moves into shares not yet recovered; retried next time", zap.Duration("interval", interval), zap.Error(err))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// newStore opens the configured object backend.
func newStore(ctx context.Context, c config.Storage, dataDir string, log *zap.Logger) (storage.Backend, error) {
	if c.Backend != "s3" {
		return local.New(filepath.Join(dataDir, "objects"), log.Named("storage.local"))
	}
	secret := c.S3.SecretKey
	if c.S3.SecretKeyFile != "" {
		b, err := os.ReadFile(c.S3.SecretKeyFile)
		if err != nil {
			return nil, fmt.Errorf("storage.s3.secret_key_file: %w", err)
		}
		secret = strings.TrimRight(string(b), "\r\n")
	}
	var roots *x509.CertPool
	if c.S3.CAFile != "" {
		pem, err := os.ReadFile(c.S3.CAFile)
		if err != nil {
			return nil, fmt.Errorf("storage.s3.ca_file: %w", err)
		}
		if roots, err = x509.SystemCertPool(); err != nil {
			roots = x509.NewCertPool()
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("storage.s3.ca_file: no PEM certificate in %s", c.S3.CAFile)
		}
	}
	return s3.New(ctx, s3.Config{
		Endpoint: c.S3.Endpoint, Bucket: c.S3.Bucket, Region: c.S3.Region,
		AccessKey: c.S3.AccessKey, SecretKey: secret, UseTLS: c.S3.UseTLS, RootCAs: roots,
		PartSize: c.S3.PartSize.Int64(), Concurrency: c.S3.Concurrency, Memory: c.S3.Memory.Int64(),
	}, log.Named("storage.s3"))
}
