package api

import (
	"errors"
	"net/http"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/shares"
)

// Shares serves projects, shares, members and moves into shares for the
// IAO, IAAs and members (system administrators use the CLI). Mount it with
// API.Handler. Every request is decided afresh by the shares service; a
// share or project the caller is not in answers 404, as if it did not exist.
type Shares struct {
	svc *shares.Service
	log *zap.Logger
}

var _ Mounter = (*Shares)(nil)

// NewShares returns the shares endpoints over svc.
func NewShares(svc *shares.Service, log *zap.Logger) *Shares {
	return &Shares{svc: svc, log: log}
}

// Register mounts the endpoints, all behind auth.
func (h *Shares) Register(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
	for pattern, fn := range map[string]http.HandlerFunc{
		"POST /api/v1/projects/{project}/shares":          h.createShare,
		"PUT /api/v1/projects/{project}/admins/{user}":    h.putAdmin,
		"DELETE /api/v1/projects/{project}/admins/{user}": h.deleteAdmin,
		"GET /api/v1/shares":                              h.list,
		"GET /api/v1/shares/{share}/files":                h.files,
		"PUT /api/v1/shares/{share}/members/{user}":       h.putMember,
		"DELETE /api/v1/shares/{share}/members/{user}":    h.deleteMember,
		"POST /api/v1/arrivals/{name}/move":               h.move,
	} {
		mux.Handle(pattern, auth(fn))
	}
}

// actor is the caller as the shares service sees them. Never Admin: system
// administrators act on the host.
func actor(r *http.Request) shares.Actor {
	id, _ := authn.FromContext(r.Context())
	return shares.Actor{User: id.User, Emergency: id.Emergency, RemoteAddr: r.RemoteAddr}
}

// fail answers an error of the shares service without saying more than the
// caller may know.
func (h *Shares) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	var (
		nf *shares.NotFoundError
		ex *shares.ExistError
		qe *policy.QuotaError
		ne *storage.NameError
	)
	switch {
	case errors.Is(err, policy.ErrBadName):
		writeError(w, http.StatusBadRequest, "invalid share or project name: 1 to 63 lower-case letters, digits, '-' and '_', starting with a letter or digit")
	case errors.As(err, &ne):
		writeError(w, http.StatusBadRequest, "invalid file name or path: "+ne.Reason)
	case errors.As(err, &nf):
		writeError(w, http.StatusNotFound, "no such "+nf.What)
	case errors.As(err, &ex):
		writeError(w, http.StatusConflict, ex.What+" already exists")
	case errors.As(err, &qe):
		// Written for the user it concerns: their share's limit and usage.
		writeError(w, http.StatusRequestEntityTooLarge, qe.Error())
	case errors.Is(err, policy.ErrDenied):
		if actor(r).Emergency {
			writeError(w, http.StatusForbidden, "not allowed in a session opened with an emergency code")
			return
		}
		writeError(w, http.StatusForbidden, "not allowed: your role in this project or share does not permit it")
	default:
		h.log.Error(op, zap.String("user", actor(r).User), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

type shareJSON struct {
	Name      string     `json:"name"`
	Project   string     `json:"project"`
	Role      string     `json:"role,omitempty"`
	Outbound  *bool      `json:"outbound,omitempty"`
	CreatedAt *time.Time `json:"created_at,omitempty"`
}

func (h *Shares) createShare(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Name string `json:"name"`
	}
	if !decodeJSON(w, r, &req, 1<<10) {
		return
	}
	sh, err := h.svc.CreateShare(r.Context(), actor(r), r.PathValue("project"), req.Name)
	if err != nil {
		h.fail(w, r, "create share", err)
		return
	}
	created := sh.CreatedAt.UTC()
	writeJSON(w, http.StatusCreated, shareJSON{Name: sh.Name, Project: sh.Project, CreatedAt: &created})
}

func (h *Shares) putAdmin(w http.ResponseWriter, r *http.Request) {
	if err := h.svc.PutProjectAdmin(r.Context(), actor(r), r.PathValue("project"), r.PathValue("user")); err != nil {
		h.fail(w, r, "add project administrator", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Shares) deleteAdmin(w http.ResponseWriter, r *http.Request) {
	if err := h.svc.DeleteProjectAdmin(r.Context(), actor(r), r.PathValue("project"), r.PathValue("user")); err != nil {
		h.fail(w, r, "remove project administrator", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Shares) list(w http.ResponseWriter, r *http.Request) {
	list, err := h.svc.Shares(r.Context(), actor(r))
	if err != nil {
		h.fail(w, r, "list shares", err)
		return
	}
	out := struct {
		Shares []shareJSON `json:"shares"`
	}{Shares: make([]shareJSON, 0, len(list))}
	for _, s := range list {
		outbound := s.Outbound
		out.Shares = append(out.Shares, shareJSON{Name: s.Name, Project: s.Project, Role: s.Role, Outbound: &outbound})
	}
	writeJSON(w, http.StatusOK, out)
}

type shareFileJSON struct {
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	MovedAt   time.Time `json:"moved_at"`
	MovedBy   string    `json:"moved_by"`
}

func (h *Shares) files(w http.ResponseWriter, r *http.Request) {
	share := r.PathValue("share")
	files, err := h.svc.ShareFiles(r.Context(), actor(r), share)
	if err != nil {
		h.fail(w, r, "list share files", err)
		return
	}
	out := struct {
		Share string          `json:"share"`
		Files []shareFileJSON `json:"files"`
	}{Share: share, Files: make([]shareFileJSON, 0, len(files))}
	for _, f := range files {
		out.Files = append(out.Files, shareFileJSON{
			Path: f.Path, Size: f.Size, SHA256: f.SHA256,
			CreatedAt: f.CreatedAt.UTC(), MovedAt: f.MovedAt.UTC(), MovedBy: f.MovedBy,
		})
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Shares) putMember(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Outbound bool `json:"outbound"`
	}
	if !decodeJSON(w, r, &req, 1<<10) {
		return
	}
	if err := h.svc.PutMember(r.Context(), actor(r), r.PathValue("share"), r.PathValue("user"), req.Outbound); err != nil {
		h.fail(w, r, "put share member", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Shares) deleteMember(w http.ResponseWriter, r *http.Request) {
	if err := h.svc.DeleteMember(r.Context(), actor(r), r.PathValue("share"), r.PathValue("user")); err != nil {
		h.fail(w, r, "remove share member", err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (h *Shares) move(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Share string `json:"share"`
		Path  string `json:"path"`
	}
	// A path of up to storage.MaxSharePathBytes, each byte possibly
	// escaped in the JSON.
	if !decodeJSON(w, r, &req, 8<<10) {
		return
	}
	f, err := h.svc.Move(r.Context(), actor(r), r.PathValue("name"), req.Share, req.Path)
	if err != nil {
		h.fail(w, r, "move into share", err)
		return
	}
	writeJSON(w, http.StatusCreated, struct {
		Share string `json:"share"`
		shareFileJSON
	}{f.Share, shareFileJSON{
		Path: f.Path, Size: f.Size, SHA256: f.SHA256,
		CreatedAt: f.CreatedAt.UTC(), MovedAt: f.MovedAt.UTC(), MovedBy: f.MovedBy,
	}})
}
