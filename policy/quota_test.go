package policy

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckArrivals(t *testing.T) {
	const gib = 1 << 30
	tests := []struct {
		name        string
		q           UserQuota
		u           ArrivalsUsage
		bytes, adds int64
		want        Quota // "" = allowed
	}{
		{"no limits", UserQuota{}, ArrivalsUsage{Bytes: 1 << 50, Files: 1 << 40}, gib, 1, ""},
		{"fits", UserQuota{ArrivalsBytes: gib}, ArrivalsUsage{Bytes: gib / 2}, gib / 2, 1, ""},
		{"one byte over", UserQuota{ArrivalsBytes: gib}, ArrivalsUsage{Bytes: gib / 2}, gib/2 + 1, 1, QuotaArrivalsBytes},
		{"alone over", UserQuota{ArrivalsBytes: gib}, ArrivalsUsage{}, gib + 1, 1, QuotaArrivalsBytes},
		{"no overflow", UserQuota{ArrivalsBytes: gib}, ArrivalsUsage{Bytes: 1}, 1<<63 - 1, 1, QuotaArrivalsBytes},
		{"already over, empty file", UserQuota{ArrivalsBytes: gib}, ArrivalsUsage{Bytes: 2 * gib}, 0, 1, ""},
		{"already over, one byte", UserQuota{ArrivalsBytes: gib}, ArrivalsUsage{Bytes: 2 * gib}, 1, 0, QuotaArrivalsBytes},
		{"files fit", UserQuota{ArrivalsFiles: 3}, ArrivalsUsage{Files: 2}, gib, 1, ""},
		{"files full", UserQuota{ArrivalsFiles: 3}, ArrivalsUsage{Files: 3}, 0, 1, QuotaArrivalsFiles},
		{"files full, bytes only", UserQuota{ArrivalsFiles: 3}, ArrivalsUsage{Files: 3}, 10, 0, ""},
		{"bytes checked first", UserQuota{ArrivalsBytes: 10, ArrivalsFiles: 1}, ArrivalsUsage{Bytes: 10, Files: 1}, 1, 1, QuotaArrivalsBytes},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := CheckArrivals("alice", tt.q, tt.u, tt.bytes, tt.adds)
			if tt.want == "" {
				if err != nil {
					t.Fatalf("CheckArrivals = %v, want nil", err)
				}
				return
			}
			var qe *QuotaError
			if !errors.As(err, &qe) || !errors.Is(err, ErrQuotaExceeded) {
				t.Fatalf("CheckArrivals = %v, want a QuotaError matching ErrQuotaExceeded", err)
			}
			if qe.Quota != tt.want || qe.Subject != "alice" {
				t.Errorf("refused by %s of %q, want %s of alice", qe.Quota, qe.Subject, tt.want)
			}
		})
	}
}

func TestQuotaErrorMessage(t *testing.T) {
	tests := []struct {
		err  *QuotaError
		want string
	}{
		{&QuotaError{Quota: QuotaArrivalsBytes, Subject: "alice", Limit: 1 << 30, Used: 966367641, Want: 200 << 20},
			"Arrivals quota of alice exceeded: limit 1.0 GiB (1073741824 bytes), 921.6 MiB used or reserved; this file needs 200.0 MiB"},
		{&QuotaError{Quota: QuotaArrivalsBytes, Subject: "bob", Limit: 1000, Used: 1000},
			"Arrivals quota of bob exceeded: limit 1000 bytes, 1000 bytes used or reserved"},
		{&QuotaError{Quota: QuotaArrivalsFiles, Subject: "alice", Limit: 100, Used: 100, Want: 1},
			"Arrivals file quota of alice exceeded: limit 100 files, 100 stored or being uploaded"},
		{&QuotaError{Quota: QuotaShareBytes, Subject: "genomics", Limit: 50 << 40, Used: 50 << 40, Want: 1 << 20},
			"quota of share genomics exceeded: limit 50.0 TiB (54975581388800 bytes), 50.0 TiB used; this file needs 1.0 MiB"},
	}
	for _, tt := range tests {
		if got := tt.err.Error(); got != tt.want {
			t.Errorf("Error() =\n  %s\nwant\n  %s", got, tt.want)
		}
		if !strings.Contains(tt.err.Error(), tt.err.Subject) {
			t.Errorf("%q does not name its subject", tt.err.Error())
		}
	}
}
