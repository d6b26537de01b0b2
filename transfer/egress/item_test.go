package egress

import (
	"slices"
	"testing"
)

func TestItemTransitions(t *testing.T) {
	all := []Status{StatusStaged, StatusChecking, StatusBlocked, StatusAwaitingApproval, StatusRejected,
		StatusQueued, StatusPushing, StatusSent, StatusFailed, StatusWithdrawn, StatusGone}
	allowed := map[[2]Status]bool{}
	for _, e := range [][2]Status{
		{StatusStaged, StatusStaged}, {StatusStaged, StatusChecking}, {StatusStaged, StatusGone},
		{StatusChecking, StatusBlocked}, {StatusChecking, StatusAwaitingApproval}, {StatusChecking, StatusQueued},
		{StatusChecking, StatusFailed}, {StatusChecking, StatusWithdrawn},
		{StatusAwaitingApproval, StatusQueued}, {StatusAwaitingApproval, StatusRejected}, {StatusAwaitingApproval, StatusWithdrawn},
		{StatusQueued, StatusPushing}, {StatusQueued, StatusFailed}, {StatusQueued, StatusWithdrawn},
		{StatusPushing, StatusSent}, {StatusPushing, StatusFailed}, {StatusPushing, StatusQueued}, {StatusPushing, StatusWithdrawn},
	} {
		allowed[e] = true
	}
	for _, a := range all {
		for _, b := range all {
			if got := a.CanMove(b); got != allowed[[2]Status{a, b}] {
				t.Errorf("%s → %s allowed = %v, want %v", a, b, got, !got)
			}
			if err := checkMove(a, b); (err == nil) != allowed[[2]Status{a, b}] {
				t.Errorf("checkMove(%s, %s) = %v", a, b, err)
			}
		}
	}
	// Nothing skips the checks or the approval: only checking leads to
	// queued or awaiting_approval, and only awaiting_approval (approved)
	// or checking (no approval needed) lead to queued; only queued (and
	// a push cut short) leads to pushing, and only pushing to sent.
	if got := from(StatusQueued); !slices.Equal(got, []string{"awaiting_approval", "checking", "pushing"}) {
		t.Errorf("from(queued) = %v", got)
	}
	if got := from(StatusPushing); !slices.Equal(got, []string{"queued"}) {
		t.Errorf("from(pushing) = %v", got)
	}
	if got := from(StatusSent); !slices.Equal(got, []string{"pushing"}) {
		t.Errorf("from(sent) = %v", got)
	}
	if got := from(StatusAwaitingApproval); !slices.Equal(got, []string{"checking"}) {
		t.Errorf("from(awaiting_approval) = %v", got)
	}
	final := []Status{StatusBlocked, StatusRejected, StatusSent, StatusFailed, StatusWithdrawn, StatusGone}
	for _, s := range all {
		if s.Final() != slices.Contains(final, s) {
			t.Errorf("%s final = %v", s, s.Final())
		}
		wantActive := !slices.Contains(final, s) && s != StatusStaged
		if s.Active() != wantActive {
			t.Errorf("%s active = %v", s, s.Active())
		}
		wantRetry := s == StatusFailed || s == StatusBlocked || s == StatusRejected || s == StatusSent
		if s.Retryable() != wantRetry {
			t.Errorf("%s retryable = %v", s, s.Retryable())
		}
	}
}
