package authn

import (
	"context"
	"fmt"

	"github.com/mftd/mftd/storage/state"
)

// Sessions lists the caller's sessions.
func (s *Service) Sessions(ctx context.Context, id Identity) ([]state.Session, error) {
	return s.db.SessionsOf(ctx, id.AccountID)
}

// EndSession ends one of the caller's sessions (state.ErrNotFound if the
// caller has no session with that id).
func (s *Service) EndSession(ctx context.Context, id Identity, sessionID, remote string) error {
	if err := s.db.EndSession(ctx, id.AccountID, sessionID); err != nil {
		return err
	}
	action := "session.end"
	if sessionID == id.SessionID {
		action = "logout"
	}
	return s.audit(ctx, id.User, action, id.User, "ok", remote)
}

// EndOtherSessions ends every session of the caller but the current one.
func (s *Service) EndOtherSessions(ctx context.Context, id Identity, remote string) (int, error) {
	n, err := s.db.EndSessions(ctx, id.AccountID, id.SessionID)
	if err != nil {
		return 0, fmt.Errorf("authn: end sessions: %w", err)
	}
	return n, s.audit(ctx, id.User, "session.end-others", id.User, fmt.Sprintf("ok; %d ended", n), remote)
}
