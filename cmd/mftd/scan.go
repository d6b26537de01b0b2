package main

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/cmd/mftd/config"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/transfer/ingest"
	"github.com/mftd/mftd/transfer/metrics"
)

// newChecker builds the scan stage from cfg: the built-in checks, and clamd
// when an address is set (nil otherwise).
func newChecker(cfg *config.Config) (*scanner.Checker, *scanner.Clamd, error) {
	sc := cfg.Scanner
	builtin, err := scanner.NewBuiltin(scanner.BuiltinConfig{
		MaxSize:   cfg.MaxFileSize(),
		DenyTypes: sc.DenyTypes,
		Archives: scanner.ArchiveLimits{
			MaxDepth:    sc.Archives.MaxDepth,
			MaxRatio:    sc.Archives.MaxRatio,
			MaxExpanded: sc.Archives.MaxExpanded.Int64(),
			MaxEntries:  sc.Archives.MaxEntries,
			Encrypted:   sc.Archives.Encrypted,
		},
		TempDir: scanTempDir(cfg),
	})
	if err != nil {
		return nil, nil, err
	}
	if sc.Clamd.Address == "" {
		return scanner.NewChecker(builtin, nil), nil, nil
	}
	clamd, err := scanner.NewClamd(scanner.ClamdConfig{
		Address:       sc.Clamd.Address,
		Timeout:       sc.Clamd.Timeout.D(),
		MaxStreamSize: sc.Clamd.MaxStreamSize.Int64(),
		Conns:         sc.Workers,
	})
	if err != nil {
		return nil, nil, err
	}
	return scanner.NewChecker(builtin, clamd), clamd, nil
}

// scanTempDir is where the built-in checks spill nested archives too large
// to inspect in memory: private to the daemon, emptied as it goes.
func scanTempDir(cfg *config.Config) string {
	return cfg.DataDir + "/tmp"
}

// Intervals of the clamd health check.
const (
	clamdCheckUp   = 5 * time.Second // while clamd answers
	clamdCheckDown = 2 * time.Second // while it does not
)

// watchClamd pings clamd until ctx ends, keeps the scanner_up metric, says
// loudly when clamd stops answering (files then wait, unreleased) and, when
// it answers again, makes the waiting files be tried at once.
func watchClamd(ctx context.Context, c *scanner.Clamd, ing *ingest.Service, mets *metrics.Metrics, log *zap.Logger) {
	up := true
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.Ping(pctx)
		cancel()
		if ctx.Err() != nil {
			return
		}
		switch {
		case err != nil && up:
			log.Error("clamd does not answer: completed uploads wait, unreleased, until it does",
				zap.String("clamd", c.Address()), zap.Error(err))
		case err == nil && !up:
			log.Info("clamd answers again: waiting uploads are checked now", zap.String("clamd", c.Address()))
			ing.Retry()
		}
		up = err == nil
		mets.ScannerUp(up)
		wait := clamdCheckUp
		if !up {
			wait = clamdCheckDown
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// scannerReady is /readyz's scanner check.
func scannerReady(c *scanner.Clamd) func(context.Context) (string, error) {
	if c == nil {
		return func(context.Context) (string, error) {
			return "built-in checks only: no clamd configured (scanner.clamd.address), files are not checked for malware beyond the EICAR test string", nil
		}
	}
	return func(ctx context.Context) (string, error) {
		v, err := c.Version(ctx)
		if err != nil {
			return "", fmt.Errorf("clamd at %s: %w", c.Address(), err)
		}
		return "clamd answers: " + v, nil
	}
}
