package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/mftd/mftd/cmd/mftd/config"
	"github.com/mftd/mftd/storage/state"
)

// loadConfig reads the file named by --config.
func loadConfig(cmd *cobra.Command) (*config.Config, error) {
	path, err := cmd.Flags().GetString("config")
	if err != nil {
		return nil, err
	}
	return config.Load(path)
}

// newLogger builds the daemon's logger from the log section. Its level
// follows the returned AtomicLevel, which a reloaded log.level sets.
func newLogger(c config.Log) (*zap.Logger, zap.AtomicLevel, error) {
	lvl, err := zapcore.ParseLevel(c.Level)
	if err != nil {
		return nil, zap.AtomicLevel{}, err
	}
	zc := zap.NewProductionConfig()
	if c.Format == "console" {
		zc = zap.NewDevelopmentConfig()
		zc.Development = false
		zc.EncoderConfig.EncodeLevel = zapcore.CapitalColorLevelEncoder
	}
	zc.Level = zap.NewAtomicLevelAt(lvl)
	zc.DisableStacktrace = true
	log, err := zc.Build()
	return log, zc.Level, err
}

// openDB opens the state database the config names, creating data_dir.
func openDB(ctx context.Context, cfg *config.Config, log *zap.Logger) (*state.DB, error) {
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("create data_dir: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(cfg.Database.Path), 0o700); err != nil {
		return nil, fmt.Errorf("create database directory: %w", err)
	}
	return state.Open(ctx, cfg.Database.Path, log.Named("state"))
}

// cliActor names the operator of an admin command in the audit log.
func cliActor() string {
	name := os.Getenv("SUDO_USER")
	if name == "" {
		name = os.Getenv("USER")
	}
	if name == "" {
		name = fmt.Sprintf("uid%d", os.Getuid())
	}
	return "cli:" + name
}
