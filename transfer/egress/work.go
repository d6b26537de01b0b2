package egress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"strings"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/metrics"
)

// sniffLen is how much of a file the identifiers check looks at to tell
// packed content.
const sniffLen = 4096

// work takes one item a step on: checks for "checking", the push for
// "queued".
func (s *Service) work(ctx context.Context, it state.EgressItem) {
	switch Status(it.Status) {
	case StatusChecking:
		s.check(ctx, it)
	case StatusQueued:
		s.push(ctx, it)
	}
}

// checkResult is what the checks of one item found.
type checkResult struct {
	next     Status // StatusBlocked, or the status after the checks
	reason   string
	findings []scanner.Finding
}

// check runs the share's checks over the staged file and moves the item on:
// blocked with the findings, awaiting approval, or queued. A check that
// fails (scanner unreachable, read error) leaves it checking, retried with
// a backoff: nothing leaves unchecked.
func (s *Service) check(ctx context.Context, it state.EgressItem) {
	log := s.log.With(zap.String("item", it.ID), zap.String("share", it.Share))
	sh, ok := s.settings().Shares[it.Share]
	if !ok {
		s.fail(ctx, it, StatusChecking, metrics.EgressRefused, "the share no longer has egress")
		return
	}
	f, fi, err := OpenStaged(s.cfg.StagingDir, it.Share, it.Owner, it.Path)
	if err != nil {
		s.withdraw(ctx, it, "the staged file is gone or no longer a regular file")
		return
	}
	defer f.Close()
	if fi.Size() != it.Size || !fi.ModTime().Equal(it.ModTime) {
		s.withdraw(ctx, it, "the staged file changed after the request")
		return
	}
	res, err := s.runChecks(ctx, sh, it, f)
	if errors.Is(err, ErrChanged) {
		s.withdraw(ctx, it, "the staged file changed after the request")
		return
	}
	if err != nil {
		if ctx.Err() != nil {
			return
		}
		d := s.retryLater(it.ID)
		log.Warn("egress check failed; the item waits and is checked again", zap.Duration("retry_in", d), zap.Error(err))
		return
	}
	s.forget(it.ID)
	var findings string
	if len(res.findings) > 0 {
		b, _ := json.Marshal(findingsJSON(res.findings))
		findings = string(b)
	}
	result := "ok: " + res.reason
	if res.next == StatusBlocked {
		result = "blocked: " + res.reason
	}
	_, err = s.db.UpdateEgressItem(ctx, it.ID, []string{string(StatusChecking)}, func(i *state.EgressItem) error {
		i.Status, i.Findings = string(res.next), findings
		if res.next == StatusBlocked {
			i.Reason = res.reason
		}
		return nil
	}, s.record("system", "", "egress.check", it.ID, result))
	if err != nil {
		if !errors.Is(err, state.ErrConflict) {
			log.Error("record the checks", zap.Error(err))
		}
		return
	}
	if res.next == StatusBlocked {
		s.mets.Egress(metrics.EgressBlocked)
	}
	log.Info("egress checked", zap.String("status", string(res.next)), zap.Int("findings", len(res.findings)))
	if res.next == StatusQueued {
		s.Wake()
	}
}

// runChecks runs sh's checks over f, which must hash to it.SHA256
// (ErrChanged otherwise).
func (s *Service) runChecks(ctx context.Context, sh policy.EgressShare, it state.EgressItem, f *os.File) (checkResult, error) {
	after := StatusQueued
	if sh.RequireApproval {
		after = StatusAwaitingApproval
	}
	var ran []string
	if sh.Has(policy.EgressCheckMalware) {
		v, err := s.checker.Scan(ctx, scanner.File{Name: path.Base(it.Path), Size: it.Size, R: f})
		if err != nil {
			return checkResult{}, fmt.Errorf("malware check: %w", err)
		}
		if v.SHA256 != it.SHA256 {
			return checkResult{}, ErrChanged
		}
		if !v.Clean {
			return checkResult{next: StatusBlocked, reason: "malware check: " + v.Reason}, nil
		}
		ran = append(ran, policy.EgressCheckMalware)
	}
	if sh.Has(policy.EgressCheckIdentifiers) {
		head := make([]byte, min(int64(sniffLen), it.Size))
		if _, err := f.ReadAt(head, 0); err != nil && !errors.Is(err, io.EOF) {
			return checkResult{}, fmt.Errorf("identifiers check: %w", err)
		}
		if ct, packed := scanner.Packed(head); packed {
			return checkResult{next: StatusBlocked, reason: fmt.Sprintf(
				"identifiers check: %s is packed content that cannot be checked for identifiers; stage the files unpacked (text, CSV, JSON)", ct)}, nil
		}
		h := sha256.New()
		findings, err := s.ids.Scan(ctx, io.TeeReader(io.NewSectionReader(f, 0, it.Size), h))
		if err != nil {
			return checkResult{}, fmt.Errorf("identifiers check: %w", err)
		}
		if len(findings) > 0 {
			return checkResult{next: StatusBlocked, findings: findings,
				reason: fmt.Sprintf("identifiers check: %d possible identifier(s) found (%s)", len(findings), summarise(findings))}, nil
		}
		if hex.EncodeToString(h.Sum(nil)) != it.SHA256 { // read to the end: no findings
			return checkResult{}, ErrChanged
		}
		ran = append(ran, policy.EgressCheckIdentifiers)
	}
	reason := "no checks configured"
	if len(ran) > 0 {
		reason = "passed " + strings.Join(ran, ", ")
	}
	return checkResult{next: after, reason: reason + "; next: " + string(after)}, nil
}

// summarise counts findings by kind: "2 nhs_number, 1 date_of_birth".
func summarise(fs []scanner.Finding) string {
	var kinds []string
	count := map[string]int{}
	for _, f := range fs {
		if count[f.Kind] == 0 {
			kinds = append(kinds, f.Kind)
		}
		count[f.Kind]++
	}
	parts := make([]string, len(kinds))
	for i, k := range kinds {
		parts[i] = fmt.Sprintf("%d %s", count[k], k)
	}
	return strings.Join(parts, ", ")
}

// FindingJSON is a finding as items carry it: the kind and the place, never
// the value.
type FindingJSON struct {
	Kind   string `json:"kind"`
	Line   int    `json:"line"`
	Column int    `json:"column"`
}

func findingsJSON(fs []scanner.Finding) []FindingJSON {
	out := make([]FindingJSON, len(fs))
	for i, f := range fs {
		out[i] = FindingJSON{Kind: f.Kind, Line: f.Line, Column: f.Column}
	}
	return out
}

// fail ends an item that is in status from as failed, audited and counted
// as outcome.
func (s *Service) fail(ctx context.Context, it state.EgressItem, from Status, outcome, reason string) {
	_, err := s.db.UpdateEgressItem(context.WithoutCancel(ctx), it.ID, []string{string(from)}, func(i *state.EgressItem) error {
		i.Status, i.Reason = string(StatusFailed), reason
		return nil
	}, s.record("system", "", "egress.fail", it.ID, "failed: "+reason))
	if err != nil {
		if !errors.Is(err, state.ErrConflict) {
			s.log.Error("record a failed item", zap.String("item", it.ID), zap.Error(err))
		}
		return
	}
	s.mets.Egress(outcome)
	s.log.Warn("egress failed", zap.String("item", it.ID), zap.String("portal", it.Portal), zap.String("reason", reason))
}
