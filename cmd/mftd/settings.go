package main

import (
	"slices"

	"github.com/mftd/mftd/cmd/mftd/config"
	"github.com/mftd/mftd/policy"
)

// settingsFrom is the part of cfg that applies live: what decisions read
// through a policy.Live, replaced when the configuration file is reloaded.
// A key read here must also be copied by withLive (reload.go), or a reload
// would report it as needing a restart and not apply it.
func settingsFrom(cfg *config.Config) policy.Settings {
	q := cfg.Quotas
	s := policy.Settings{
		Limits:              policy.Limits{MaxFileSize: cfg.MaxFileSize()},
		CheckpointBytes:     cfg.Limits.CheckpointBytes.Int64(),
		MaxMetadataBytes:    int(cfg.Limits.MaxMetadataBytes.Int64()),
		IncompleteUploads:   cfg.Retention.IncompleteUploads.D(),
		ArrivalsRetention:   cfg.Retention.Arrivals.D(),
		QuarantineRetention: cfg.Retention.Quarantine.D(),
		Quotas: policy.Quotas{
			UserArrivalsBytes: q.UserArrivalsBytes.Int64(),
			UserArrivalsFiles: q.UserArrivalsFiles,
			ShareBytes:        q.ShareBytes.Int64(),
			Users:             make(map[string]policy.UserQuota, len(q.Users)),
			Shares:            make(map[string]int64, len(q.Shares)),
		},
	}
	for name, u := range q.Users {
		s.Quotas.Users[name] = policy.UserQuota{ArrivalsBytes: u.ArrivalsBytes.Int64(), ArrivalsFiles: u.ArrivalsFiles}
	}
	for name, sh := range q.Shares {
		s.Quotas.Shares[name] = sh.Bytes.Int64()
	}
	s.Egress = egressSettingsFrom(cfg.Egress)
	return s
}

// egressSettingsFrom is the live part of the egress section: every key but
// staging_dir, settle and workers.
func egressSettingsFrom(e config.Egress) policy.EgressSettings {
	out := policy.EgressSettings{
		Portals:    make(map[string]policy.EgressPortal, len(e.Portals)),
		Shares:     make(map[string]policy.EgressShare, len(e.Shares)),
		Attempts:   e.Retries,
		RemoveSent: e.RemoveSent,
	}
	for _, p := range e.Portals {
		out.Portals[p.Name] = policy.EgressPortal{
			Portal:    policy.Portal{Name: p.Name, URL: p.URL, Method: p.Method, AllowPrivate: p.AllowPrivate},
			CAFile:    p.CAFile,
			TokenFile: p.TokenFile,
		}
	}
	for name, sh := range e.Shares {
		out.Shares[name] = policy.EgressShare{
			Portals:         slices.Clone(sh.Portals),
			RequireApproval: sh.RequireApproval,
			Checks:          slices.Clone(sh.Checks),
		}
	}
	return out
}
