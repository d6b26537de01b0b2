// Package api is mftd's HTTPS surface: the JSON API under /api/v1/, the tus
// endpoint it mounts, health checks, CORS and request logging. It holds no
// admin functions: those are CLI commands on the host.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"mime"
	"net/http"
	"path"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
)

// Config configures the API.
type Config struct {
	// CORSOrigins may call the API from a browser; "*" allows any.
	CORSOrigins []string
	// Checks say whether the daemon can serve, by component (database,
	// storage, scanner): each returns a short detail, or an error.
	Checks map[string]func(context.Context) (string, error)
}

// API serves /api/v1/.
type API struct {
	cfg  Config
	log  *zap.Logger
	auth *authn.Service
	ing  *ingest.Service
	db   *state.DB
}

// Mounter adds routes to a mux, wrapping authenticated ones with auth.
type Mounter interface {
	Register(mux *http.ServeMux, auth func(http.Handler) http.Handler)
}

// New returns the API.
func New(cfg Config, log *zap.Logger, auth *authn.Service, ing *ingest.Service, db *state.DB) *API {
	return &API{cfg: cfg, log: log, auth: auth, ing: ing, db: db}
}

// Handler returns the whole HTTPS handler: the API, the mounted protocol
// endpoints, health checks, CORS and request logging.
func (a *API) Handler(mounts ...Mounter) http.Handler {
	mux := http.NewServeMux()
	authed := a.auth.Middleware
	mux.HandleFunc("POST /api/v1/login", a.login)
	mux.Handle("GET /api/v1/arrivals", authed(http.HandlerFunc(a.arrivals)))
	mux.Handle("GET /api/v1/uploads/{id}", authed(http.HandlerFunc(a.upload)))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", a.ready)
	a.accountRoutes(mux, authed)
	for _, m := range mounts {
		m.Register(mux, authed)
	}
	return a.logRequests(cors(a.cfg.CORSOrigins, securityHeaders(mux)))
}

// ready answers /readyz: 200 when every check passes, else 503, with each
// component's state. Details name components, never secrets or paths.
func (a *API) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	status, code := "ok", http.StatusOK
	checks := map[string]string{}
	for name, check := range a.cfg.Checks {
		detail, err := check(ctx)
		if err != nil {
			a.log.Warn("readiness check failed", zap.String("check", name), zap.Error(err))
			status, code = "unavailable", http.StatusServiceUnavailable
			detail = "failing"
		}
		checks[name] = detail
	}
	writeJSON(w, code, map[string]any{"status": status, "checks": checks})
}

type loginRequest struct {
	Username string `json:"username"`
	Password string `json:"password"`
	TOTP     string `json:"totp"`
}

type loginResponse struct {
	Token     string    `json:"token"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	var req loginRequest
	if !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	s, err := a.auth.Login(r.Context(), req.Username, req.Password, req.TOTP, r.RemoteAddr)
	if errors.Is(err, authn.ErrBadCredentials) {
		writeError(w, http.StatusUnauthorized, "invalid user name, password or verification code")
		return
	}
	if err != nil {
		a.log.Error("login", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	writeJSON(w, http.StatusOK, loginResponse{Token: s.Token, ExpiresAt: s.ExpiresAt})
}

type arrival struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

func (a *API) arrivals(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	if d := policy.Decide(policy.Limits{}, policy.Request{Actor: id.User, Action: policy.ActionArrivalsList, Owner: id.User, Size: -1, Emergency: id.Emergency}); !d.Allow {
		writeError(w, http.StatusForbidden, "not allowed")
		return
	}
	files, err := a.db.FilesByOwner(r.Context(), id.User)
	if err != nil {
		a.log.Error("list arrivals", zap.String("user", id.User), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	out := struct {
		Files []arrival `json:"files"`
	}{Files: make([]arrival, 0, len(files))}
	keep := a.ing.Settings().Load().ArrivalsRetention // live: the sweeper reads the same
	for _, f := range files {
		out.Files = append(out.Files, arrival{
			Name: f.Name, Size: f.Size, SHA256: f.SHA256,
			CreatedAt: f.CreatedAt.UTC(), ExpiresAt: f.CreatedAt.Add(keep).UTC(),
		})
	}
	writeJSON(w, http.StatusOK, out)
}

type uploadStatus struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"`
	Status string `json:"status"`
	SHA256 string `json:"sha256"`
	Reason string `json:"reason"`
}

func (a *API) upload(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	u, err := a.ing.Get(r.Context(), r.PathValue("id"))
	if err == nil {
		if d := policy.Decide(policy.Limits{}, policy.Request{Actor: id.User, Action: policy.ActionUploadRead, Owner: u.Owner, Size: -1, Emergency: id.Emergency}); !d.Allow {
			err = state.ErrNotFound
		}
	}
	if errors.Is(err, state.ErrNotFound) {
		writeError(w, http.StatusNotFound, "no such upload")
		return
	}
	if err != nil {
		a.log.Error("get upload", zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
		return
	}
	out := uploadStatus{ID: u.ID, Name: u.Filename, Size: u.Length, Offset: u.Offset, Status: u.Status, SHA256: u.SHA256, Reason: u.Reason}
	switch u.Status {
	case state.StatusPublishing:
		out.Status = state.StatusProcessing
	case state.StatusAvailable:
		out.Name = path.Base(u.Key) // the name it has in Arrivals, after any clash suffix
	case state.StatusTerminated:
		out.Status = state.StatusRejected
	}
	writeJSON(w, http.StatusOK, out)
}

// decodeJSON reads a small JSON body strictly, or answers the error itself.
func decodeJSON(w http.ResponseWriter, r *http.Request, v any, limit int64) bool {
	mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || mt != "application/json" {
		writeError(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeError(w, http.StatusRequestEntityTooLarge, "request body too large")
			return false
		}
		writeError(w, http.StatusBadRequest, "request body is not the expected JSON object")
		return false
	}
	if dec.More() {
		writeError(w, http.StatusBadRequest, "request body has data after the JSON object")
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
