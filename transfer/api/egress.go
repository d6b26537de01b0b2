package api

import (
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"time"
	"unicode"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/egress"
)

// Egress serves egress requests, their review and their receipts. Mount it
// with API.Handler. Every request is decided afresh by the egress service.
type Egress struct {
	svc *egress.Service
	log *zap.Logger
}

var _ Mounter = (*Egress)(nil)

// NewEgress returns the egress endpoints over svc.
func NewEgress(svc *egress.Service, log *zap.Logger) *Egress {
	return &Egress{svc: svc, log: log}
}

// Register mounts the endpoints, all behind auth.
func (h *Egress) Register(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
	for pattern, fn := range map[string]http.HandlerFunc{
		"POST /api/v1/egress":              h.request,
		"GET /api/v1/egress":               h.list,
		"GET /api/v1/egress/{id}":          h.item,
		"POST /api/v1/egress/{id}/approve": h.approve,
		"POST /api/v1/egress/{id}/reject":  h.reject,
	} {
		mux.Handle(pattern, auth(fn))
	}
}

func egressActor(r *http.Request) egress.Actor {
	id, _ := authn.FromContext(r.Context())
	return egress.Actor{User: id.User, Emergency: id.Emergency, RemoteAddr: r.RemoteAddr}
}

// fail answers an error of the egress service without saying more than the
// caller may know.
func (h *Egress) fail(w http.ResponseWriter, r *http.Request, op string, err error) {
	var ne *storage.NameError
	switch {
	case errors.As(err, &ne):
		writeError(w, http.StatusBadRequest, "invalid path: "+ne.Reason)
	case errors.Is(err, egress.ErrNotFound):
		writeError(w, http.StatusNotFound, "no such egress item or share")
	case errors.Is(err, egress.ErrNotStaged):
		writeError(w, http.StatusNotFound, "no staged file at that path in your staging folder for the share (or it is still being written)")
	case errors.Is(err, egress.ErrBusy):
		writeError(w, http.StatusConflict, "a request for this file is already under way")
	case errors.Is(err, egress.ErrState):
		writeError(w, http.StatusConflict, "not possible now: "+stateOf(err))
	case errors.Is(err, policy.ErrDenied):
		if egressActor(r).Emergency {
			writeError(w, http.StatusForbidden, "not allowed in a session opened with an emergency code")
			return
		}
		writeError(w, http.StatusForbidden, "not allowed: egress of this share to that portal needs membership with the outbound right, and a portal on the share's list; a reviewer cannot be the requester")
	default:
		h.log.Error(op, zap.String("user", egressActor(r).User), zap.Error(err))
		writeError(w, http.StatusInternalServerError, "internal error")
	}
}

// stateOf is the part of an ErrState error after the sentinel: "the item
// is sent".
func stateOf(err error) string {
	msg := err.Error()
	prefix := egress.ErrState.Error() + ": "
	if len(msg) > len(prefix) && msg[:len(prefix)] == prefix {
		return msg[len(prefix):]
	}
	return "the item's status does not allow it"
}

// itemJSON is an item as the API shows it. Findings say kind, line and
// column, never the value found.
type itemJSON struct {
	ID          string               `json:"id"`
	Share       string               `json:"share"`
	Owner       string               `json:"owner"`
	Path        string               `json:"path"`
	Size        int64                `json:"size"`
	SHA256      string               `json:"sha256"`
	Status      string               `json:"status"`
	Portal      string               `json:"portal,omitempty"`
	RequestedBy string               `json:"requested_by,omitempty"`
	RequestedAt *time.Time           `json:"requested_at,omitempty"`
	DecidedBy   string               `json:"decided_by,omitempty"`
	DecidedAt   *time.Time           `json:"decided_at,omitempty"`
	Reason      string               `json:"reason,omitempty"`
	Findings    []egress.FindingJSON `json:"findings,omitempty"`
	Receipt     *egress.ReceiptJSON  `json:"receipt,omitempty"`
	CreatedAt   time.Time            `json:"created_at"`
	UpdatedAt   time.Time            `json:"updated_at"`
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	u := t.UTC()
	return &u
}

func toItemJSON(it state.EgressItem) itemJSON {
	out := itemJSON{
		ID: it.ID, Share: it.Share, Owner: it.Owner, Path: it.Path, Size: it.Size, SHA256: it.SHA256,
		Status: it.Status, Portal: it.Portal, RequestedBy: it.RequestedBy, RequestedAt: timePtr(it.RequestedAt),
		DecidedBy: it.DecidedBy, DecidedAt: timePtr(it.DecidedAt), Reason: it.Reason,
		CreatedAt: it.CreatedAt.UTC(), UpdatedAt: it.UpdatedAt.UTC(),
	}
	if it.Findings != "" {
		_ = json.Unmarshal([]byte(it.Findings), &out.Findings)
	}
	if it.Receipt != "" {
		var rc egress.ReceiptJSON
		if json.Unmarshal([]byte(it.Receipt), &rc) == nil {
			out.Receipt = &rc
		}
	}
	return out
}

func (h *Egress) request(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Share  string `json:"share"`
		Path   string `json:"path"`
		Portal string `json:"portal"`
	}
	if !decodeJSON(w, r, &req, 8<<10) {
		return
	}
	if req.Share == "" || req.Path == "" || req.Portal == "" {
		writeError(w, http.StatusBadRequest, `"share", "path" and "portal" are required`)
		return
	}
	it, err := h.svc.Request(r.Context(), egressActor(r), req.Share, req.Path, req.Portal)
	if err != nil {
		h.fail(w, r, "egress request", err)
		return
	}
	writeJSON(w, http.StatusAccepted, map[string]string{"id": it.ID, "status": it.Status})
}

func (h *Egress) list(w http.ResponseWriter, r *http.Request) {
	share := r.URL.Query().Get("share")
	if share == "" {
		writeError(w, http.StatusBadRequest, "the share query parameter is required: /api/v1/egress?share=NAME")
		return
	}
	items, err := h.svc.Items(r.Context(), egressActor(r), share)
	if err != nil {
		h.fail(w, r, "list egress items", err)
		return
	}
	out := struct {
		Items []itemJSON `json:"items"`
	}{Items: make([]itemJSON, 0, len(items))}
	for _, it := range items {
		out.Items = append(out.Items, toItemJSON(it))
	}
	writeJSON(w, http.StatusOK, out)
}

func (h *Egress) item(w http.ResponseWriter, r *http.Request) {
	it, err := h.svc.Item(r.Context(), egressActor(r), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, "egress item", err)
		return
	}
	writeJSON(w, http.StatusOK, toItemJSON(it))
}

func (h *Egress) approve(w http.ResponseWriter, r *http.Request) {
	it, err := h.svc.Approve(r.Context(), egressActor(r), r.PathValue("id"))
	if err != nil {
		h.fail(w, r, "approve egress", err)
		return
	}
	writeJSON(w, http.StatusOK, toItemJSON(it))
}

func (h *Egress) reject(w http.ResponseWriter, r *http.Request) {
	var req struct {
		Reason string `json:"reason"`
	}
	if r.ContentLength != 0 && !decodeJSON(w, r, &req, 4<<10) {
		return
	}
	if len(req.Reason) > 1000 {
		writeError(w, http.StatusBadRequest, "the reason is limited to 1000 bytes")
		return
	}
	// The reason goes into the item and the audit record: printable text
	// only, so that it cannot forge lines or terminal escapes in either
	// (encoding/json already replaced invalid UTF-8).
	if strings.IndexFunc(req.Reason, unicode.IsControl) >= 0 {
		writeError(w, http.StatusBadRequest, "the reason must be printable text (no control characters)")
		return
	}
	it, err := h.svc.Reject(r.Context(), egressActor(r), r.PathValue("id"), req.Reason)
	if err != nil {
		h.fail(w, r, "reject egress", err)
		return
	}
	writeJSON(w, http.StatusOK, toItemJSON(it))
}
