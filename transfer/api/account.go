package api

import (
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
)

// accountRoutes are the self-service account endpoints.
func (a *API) accountRoutes(mux *http.ServeMux, authed func(http.Handler) http.Handler) {
	mux.Handle("GET /api/v1/me", authed(http.HandlerFunc(a.me)))
	mux.Handle("POST /api/v1/me/password", authed(http.HandlerFunc(a.changePassword)))
	mux.Handle("GET /api/v1/me/sessions", authed(http.HandlerFunc(a.sessions)))
	mux.Handle("DELETE /api/v1/me/sessions", authed(http.HandlerFunc(a.endOtherSessions)))
	mux.Handle("DELETE /api/v1/me/sessions/{id}", authed(http.HandlerFunc(a.endSession)))
	mux.Handle("POST /api/v1/logout", authed(http.HandlerFunc(a.logout)))
	mux.HandleFunc("POST /api/v1/password/reset", a.resetRequest)
	mux.HandleFunc("POST /api/v1/password/reset/confirm", a.resetConfirm)
	mux.HandleFunc("POST /api/v1/emergency/request", a.emergencyRequest)
	mux.HandleFunc("POST /api/v1/emergency/verify", a.emergencyVerify)
}

func (a *API) me(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	usage, err := a.ing.ArrivalsUsage(r.Context(), id.User)
	if err != nil {
		a.log.Error("Arrivals usage", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	q := a.ing.Settings().Load().Quotas.ForUser(id.User)
	writeJSON(w, http.StatusOK, map[string]any{"user": id.User, "emergency_session": id.Emergency,
		"quota": map[string]quotaView{
			string(policy.QuotaArrivalsBytes): {Used: usage.Bytes - usage.ReservedBytes, Reserved: usage.ReservedBytes, Limit: q.ArrivalsBytes},
			string(policy.QuotaArrivalsFiles): {Used: usage.Files - usage.ReservedFiles, Reserved: usage.ReservedFiles, Limit: q.ArrivalsFiles},
		}})
}

// quotaView is one quota in GET /api/v1/me: used (in Arrivals) plus
// reserved (uploads being received or checked) counts against limit; a
// limit of 0 is none.
type quotaView struct {
	Used     int64 `json:"used"`
	Reserved int64 `json:"reserved"`
	Limit    int64 `json:"limit"`
}

// authError answers a self-service failure without saying more than the
// user may know.
func (a *API) authError(w http.ResponseWriter, op string, err error) {
	switch {
	case errors.Is(err, authn.ErrBadCredentials):
		writeError(w, http.StatusUnauthorized, "invalid user name, password or code")
	case errors.Is(err, authn.ErrEmergencySession):
		writeError(w, http.StatusForbidden, "not allowed in a session opened with an emergency code")
	case errors.Is(err, policy.ErrWeakPassword):
		writeError(w, http.StatusBadRequest, "the new password does not meet the policy: at least 12 characters, not a commonly used password, not containing your user name")
	case errors.Is(err, authn.ErrUnavailable):
		writeError(w, http.StatusServiceUnavailable, "codes cannot be sent: no notifier is configured; ask your administrator")
	default:
		a.log.Error(op, zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

func (a *API) changePassword(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	var req struct {
		Current string `json:"current"`
		New     string `json:"new"`
		TOTP    string `json:"totp"`
	}
	if !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	if err := a.auth.ChangePassword(r.Context(), id, req.Current, req.New, req.TOTP, r.RemoteAddr); err != nil {
		a.authError(w, "change password", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) resetRequest(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
	}
	if !decodeJSON(w, r, &req, 1<<10) {
		return
	}
	if err := a.auth.RequestReset(r.Context(), req.Username, r.RemoteAddr); err != nil {
		a.authError(w, "password reset request", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{
		"status": "if the account exists and has an address, a reset code was sent to it",
	})
}

func (a *API) resetConfirm(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
		Code     string `json:"code"`
		New      string `json:"new"`
		TOTP     string `json:"totp"`
	}
	if !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	if err := a.auth.ConfirmReset(r.Context(), req.Username, req.Code, req.New, req.TOTP, r.RemoteAddr); err != nil {
		a.authError(w, "password reset", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) emergencyRequest(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
	}
	if !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	if err := a.auth.RequestEmergency(r.Context(), req.Username, req.Password, r.RemoteAddr); err != nil {
		a.authError(w, "emergency request", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{
		"status": "if the user name and password are right, an authorisation code was sent to the account's address",
	})
}

func (a *API) emergencyVerify(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Username string `json:"username"`
		Password string `json:"password"`
		Code     string `json:"code"`
	}
	if !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	code, exp, err := a.auth.VerifyEmergency(r.Context(), req.Username, req.Password, req.Code, r.RemoteAddr)
	if err != nil {
		a.authError(w, "emergency verify", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"emergency_code": code, "expires_at": exp})
}

type sessionView struct {
	ID         string    `json:"id"`
	CreatedAt  time.Time `json:"created_at"`
	LastSeen   time.Time `json:"last_seen"`
	ExpiresAt  time.Time `json:"expires_at"`
	Emergency  bool      `json:"emergency"`
	RemoteAddr string    `json:"remote_addr"`
	Current    bool      `json:"current"`
}

func (a *API) sessions(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	ss, err := a.auth.Sessions(r.Context(), id)
	if err != nil {
		a.authError(w, "list sessions", err)
		return
	}
	out := make([]sessionView, 0, len(ss))
	for _, s := range ss {
		out = append(out, sessionView{ID: s.ID, CreatedAt: s.CreatedAt.UTC(), LastSeen: s.LastSeen.UTC(), ExpiresAt: s.ExpiresAt.UTC(),
			Emergency: s.Emergency, RemoteAddr: s.RemoteAddr, Current: s.ID == id.SessionID})
	}
	writeJSON(w, http.StatusOK, map[string]any{"sessions": out})
}

func (a *API) endSession(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	err := a.auth.EndSession(r.Context(), id, r.PathValue("id"), r.RemoteAddr)
	if errors.Is(err, state.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no such session")
		return
	}
	if err != nil {
		a.authError(w, "end session", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (a *API) endOtherSessions(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	n, err := a.auth.EndOtherSessions(r.Context(), id, r.RemoteAddr)
	if err != nil {
		a.authError(w, "end sessions", err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]int{"ended": n})
}

func (a *API) logout(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	if err := a.auth.EndSession(r.Context(), id, id.SessionID, r.RemoteAddr); err != nil && !errors.Is(err, state.ErrNotFound) {
		a.authError(w, "logout", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}
