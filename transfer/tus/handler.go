// Package tus serves the tus 1.0.0 resumable upload protocol (core,
// creation, creation-with-upload, expiration, checksum, termination) over
// the ingest core. Every request but OPTIONS is authenticated by the
// caller-supplied middleware; an upload is visible to its owner only.
package tus

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/ingest"
)

const (
	version       = "1.0.0"
	extensions    = "creation,creation-with-upload,expiration,checksum,termination"
	offsetOctet   = "application/offset+octet-stream"
	statusBadSum  = 460 // Checksum Mismatch
	maxIDLen      = 64
	headerExpires = "Upload-Expires"
)

// Config configures the handler.
type Config struct {
	BasePath         string // e.g. "/files/"; must end in "/"
	MaxMetadataBytes int    // longest Upload-Metadata header accepted
	// IdleTimeout cuts a request body that delivers no byte for this long.
	IdleTimeout time.Duration
}

// Handler is the tus endpoint.
type Handler struct {
	cfg Config
	log *zap.Logger
	ing *ingest.Service
}

// New returns a Handler.
// limits are the current limits (live: the configuration may be reloaded).
func (h *Handler) limits() policy.Limits { return h.ing.Settings().Load().Limits }

func New(cfg Config, log *zap.Logger, ing *ingest.Service) *Handler {
	if !strings.HasSuffix(cfg.BasePath, "/") {
		cfg.BasePath += "/"
	}
	return &Handler{cfg: cfg, log: log, ing: ing}
}

// Register adds the tus routes to mux; auth wraps every route but OPTIONS.
func (h *Handler) Register(mux *http.ServeMux, auth func(http.Handler) http.Handler) {
	base := h.cfg.BasePath
	mux.HandleFunc("OPTIONS "+base, h.options)
	mux.HandleFunc("OPTIONS "+base+"{id}", h.options)
	mux.Handle("POST "+base, auth(h.tusOnly(h.create)))
	mux.Handle("HEAD "+base+"{id}", auth(h.tusOnly(h.head)))
	mux.Handle("PATCH "+base+"{id}", auth(h.tusOnly(h.patch)))
	mux.Handle("DELETE "+base+"{id}", auth(h.tusOnly(h.terminate)))
}

func (h *Handler) options(w http.ResponseWriter, r *http.Request) {
	hd := w.Header()
	hd.Set("Tus-Resumable", version)
	hd.Set("Tus-Version", version)
	hd.Set("Tus-Extension", extensions)
	hd.Set("Tus-Max-Size", strconv.FormatInt(h.limits().MaxFileSize, 10))
	hd.Set("Tus-Checksum-Algorithm", strings.Join(checksumAlgorithms, ","))
	w.WriteHeader(http.StatusNoContent)
}

// tusOnly refuses requests without a supported Tus-Resumable header.
func (h *Handler) tusOnly(next http.HandlerFunc) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Tus-Resumable", version)
		if r.Header.Get("Tus-Resumable") != version {
			w.Header().Set("Tus-Version", version)
			fail(w, http.StatusPreconditionFailed, "Tus-Resumable must be "+version)
			return
		}
		next(w, r)
	})
}

func (h *Handler) create(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	if r.Header.Get("Upload-Defer-Length") != "" {
		fail(w, http.StatusBadRequest, "Upload-Defer-Length is not supported; send Upload-Length")
		return
	}
	if r.Header.Get("Upload-Concat") != "" {
		fail(w, http.StatusBadRequest, "Upload-Concat is not supported")
		return
	}
	length, err := parseUint(r.Header.Get("Upload-Length"))
	if err != nil {
		fail(w, http.StatusBadRequest, "Upload-Length: "+err.Error())
		return
	}
	rawMD := r.Header.Get("Upload-Metadata")
	maxMD := h.cfg.MaxMetadataBytes
	if m := h.ing.Settings().Load().MaxMetadataBytes; m > 0 {
		maxMD = m // live: the configuration file may have been reloaded
	}
	if len(rawMD) > maxMD {
		fail(w, http.StatusBadRequest, "Upload-Metadata is longer than "+strconv.Itoa(maxMD)+" bytes")
		return
	}
	md, err := parseMetadata(rawMD)
	if err != nil {
		fail(w, http.StatusBadRequest, "Upload-Metadata: "+err.Error())
		return
	}
	fn, ok := md["filename"]
	if !ok {
		fail(w, http.StatusBadRequest, "Upload-Metadata must include filename")
		return
	}
	name, err := storage.CleanName(string(fn))
	if err != nil {
		var ne *storage.NameError
		msg := "filename is not acceptable"
		if errors.As(err, &ne) {
			msg = "filename " + ne.Reason
		}
		fail(w, http.StatusBadRequest, msg)
		return
	}
	var want string
	if v, ok := md["sha256"]; ok {
		if !isHexSHA256(string(v)) {
			fail(w, http.StatusBadRequest, "metadata sha256 must be 64 hexadecimal digits")
			return
		}
		want = strings.ToLower(string(v))
	}
	withBody := r.ContentLength > 0 || (r.ContentLength < 0 && r.Body != http.NoBody)
	if withBody && r.Header.Get("Content-Type") != offsetOctet {
		fail(w, http.StatusUnsupportedMediaType, "a creation request with data needs Content-Type: "+offsetOctet)
		return
	}
	if r.ContentLength > length {
		fail(w, http.StatusRequestEntityTooLarge, "the body is longer than Upload-Length")
		return
	}
	limits := h.limits()
	d := policy.Decide(limits, policy.Request{
		Actor: id.User, Action: policy.ActionUploadCreate, Owner: id.User, Size: length, Emergency: id.Emergency,
	})
	if !d.Allow {
		if errors.Is(d.Err, policy.ErrTooLarge) {
			fail(w, http.StatusRequestEntityTooLarge, "Upload-Length exceeds the maximum file size of "+strconv.FormatInt(limits.MaxFileSize, 10)+" bytes")
			return
		}
		fail(w, http.StatusForbidden, "not allowed")
		return
	}
	u, err := h.ing.Create(r.Context(), ingest.CreateRequest{
		Owner: id.User, Filename: name, Length: length, Metadata: rawMD,
		ExpectedSHA256: want, RemoteAddr: r.RemoteAddr, Proto: "tus",
	})
	if err != nil {
		h.failErr(w, r, err)
		return
	}
	w.Header().Set("Location", h.cfg.BasePath+u.ID)
	setExpires(w, u)
	if !withBody {
		w.WriteHeader(http.StatusCreated)
		return
	}
	unlock, ok := h.ing.TryLock(u.ID)
	if !ok {
		fail(w, http.StatusLocked, "the upload is busy")
		return
	}
	defer unlock()
	off, err := h.write(w, r, u.ID, 0, ingest.WriteRequest{})
	w.Header().Set("Upload-Offset", strconv.FormatInt(off, 10))
	if err != nil && !isClientGone(err) {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusCreated)
}

// lookup returns the caller's upload, or answers 404 (also for another
// user's upload, so ids reveal nothing).
func (h *Handler) lookup(w http.ResponseWriter, r *http.Request, action policy.Action) (state.Upload, bool) {
	id, _ := authn.FromContext(r.Context())
	uid := r.PathValue("id")
	if uid == "" || len(uid) > maxIDLen {
		fail(w, http.StatusNotFound, "no such upload")
		return state.Upload{}, false
	}
	u, err := h.ing.Get(r.Context(), uid)
	if errors.Is(err, state.ErrNotFound) {
		fail(w, http.StatusNotFound, "no such upload")
		return state.Upload{}, false
	}
	if err != nil {
		h.failErr(w, r, err)
		return state.Upload{}, false
	}
	d := policy.Decide(h.limits(), policy.Request{Actor: id.User, Action: action, Owner: u.Owner, Size: -1, Emergency: id.Emergency})
	if !d.Allow {
		fail(w, http.StatusNotFound, "no such upload")
		return state.Upload{}, false
	}
	if u.Status == state.StatusTerminated {
		fail(w, http.StatusGone, "the upload was terminated")
		return state.Upload{}, false
	}
	return u, true
}

func (h *Handler) head(w http.ResponseWriter, r *http.Request) {
	u, ok := h.lookup(w, r, policy.ActionUploadRead)
	if !ok {
		return
	}
	if u.Status == state.StatusUploading && !time.Now().Before(u.ExpiresAt) {
		fail(w, http.StatusGone, "the upload expired")
		return
	}
	hd := w.Header()
	hd.Set("Cache-Control", "no-store")
	hd.Set("Upload-Offset", strconv.FormatInt(u.Offset, 10))
	if u.Length < 0 {
		hd.Set("Upload-Defer-Length", "1") // an SFTP upload still being written
	} else {
		hd.Set("Upload-Length", strconv.FormatInt(u.Length, 10))
	}
	if u.Metadata != "" {
		hd.Set("Upload-Metadata", u.Metadata)
	}
	setExpires(w, u)
	w.WriteHeader(http.StatusOK)
}

func (h *Handler) patch(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Content-Type") != offsetOctet {
		fail(w, http.StatusUnsupportedMediaType, "Content-Type must be "+offsetOctet)
		return
	}
	off, err := parseUint(r.Header.Get("Upload-Offset"))
	if err != nil {
		fail(w, http.StatusBadRequest, "Upload-Offset: "+err.Error())
		return
	}
	var sum ingest.WriteRequest
	if v := r.Header.Get("Upload-Checksum"); v != "" {
		hsh, want, err := parseChecksum(v)
		if err != nil {
			fail(w, http.StatusBadRequest, "Upload-Checksum: "+err.Error())
			return
		}
		sum.Checksum, sum.Want = hsh, want
	}
	u, ok := h.lookup(w, r, policy.ActionUploadWrite)
	if !ok {
		return
	}
	if u.Status != state.StatusUploading {
		// Complete: a client that lost the last response may ask again.
		if off == u.Length && r.ContentLength <= 0 {
			w.Header().Set("Upload-Offset", strconv.FormatInt(u.Length, 10))
			w.WriteHeader(http.StatusNoContent)
			return
		}
		fail(w, http.StatusConflict, "the upload is complete")
		return
	}
	if u.Length < 0 {
		fail(w, http.StatusConflict, "this upload is being written over SFTP; resume it there")
		return
	}
	if off != u.Offset {
		w.Header().Set("Upload-Offset", strconv.FormatInt(u.Offset, 10))
		fail(w, http.StatusConflict, "Upload-Offset does not match the upload's offset "+strconv.FormatInt(u.Offset, 10))
		return
	}
	if r.ContentLength > u.Length-u.Offset {
		fail(w, http.StatusRequestEntityTooLarge, "the body runs past Upload-Length")
		return
	}
	unlock, ok := h.ing.TryLock(u.ID)
	if !ok {
		fail(w, http.StatusLocked, "another request is writing to this upload")
		return
	}
	defer unlock()
	newOff, err := h.write(w, r, u.ID, off, sum)
	if err != nil {
		if isClientGone(err) {
			// The body broke off or stalled past the idle timeout. The
			// bytes received were kept; say so, in case anyone listens.
			w.Header().Set("Upload-Offset", strconv.FormatInt(newOff, 10))
			fail(w, http.StatusBadRequest, "the request body ended early or stalled; the bytes received were kept")
			return
		}
		h.failErr(w, r, err)
		return
	}
	u.Offset = newOff
	w.Header().Set("Upload-Offset", strconv.FormatInt(newOff, 10))
	setExpires(w, u)
	w.WriteHeader(http.StatusNoContent)
}

func (h *Handler) terminate(w http.ResponseWriter, r *http.Request) {
	id, _ := authn.FromContext(r.Context())
	u, ok := h.lookup(w, r, policy.ActionUploadDelete)
	if !ok {
		return
	}
	unlock, ok := h.ing.TryLock(u.ID)
	if !ok {
		fail(w, http.StatusLocked, "another request is writing to this upload")
		return
	}
	defer unlock()
	if err := h.ing.Terminate(r.Context(), u.ID, id.User, r.RemoteAddr); err != nil {
		h.failErr(w, r, err)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

// write streams the request body into upload id at off.
func (h *Handler) write(w http.ResponseWriter, r *http.Request, id string, off int64, req ingest.WriteRequest) (int64, error) {
	who, _ := authn.FromContext(r.Context())
	req.ID, req.Offset, req.Length = id, off, r.ContentLength
	req.Actor, req.RemoteAddr, req.Proto = who.User, r.RemoteAddr, "tus"
	req.Body = &idleReader{r: r.Body, rc: http.NewResponseController(w), timeout: h.cfg.IdleTimeout}
	return h.ing.Write(r.Context(), req)
}

// idleReader cuts a body that stalls: before reading it pushes the
// connection's read deadline out to timeout from now (at most every quarter
// timeout, to keep the cost of resetting timers negligible).
type idleReader struct {
	r       io.Reader
	rc      *http.ResponseController
	timeout time.Duration
	set     time.Time
}

func (i *idleReader) Read(p []byte) (int, error) {
	if i.timeout > 0 {
		if now := time.Now(); now.Sub(i.set) > i.timeout/4 {
			_ = i.rc.SetReadDeadline(now.Add(i.timeout)) // unsupported: the server's own timeouts apply
			i.set = now
		}
	}
	return i.r.Read(p)
}

// failErr maps an ingest or state error to a tus answer; the error text
// itself is logged, never sent, except a quota refusal's, which is written
// for the caller (policy.QuotaError).
func (h *Handler) failErr(w http.ResponseWriter, r *http.Request, err error) {
	var qe *policy.QuotaError
	switch {
	case errors.As(err, &qe):
		// Written for its subject, the caller: names the quota, the
		// caller's own usage and limit.
		fail(w, http.StatusRequestEntityTooLarge, qe.Error())
	case errors.Is(err, ingest.ErrOffsetMismatch), errors.Is(err, state.ErrConflict):
		fail(w, http.StatusConflict, "Upload-Offset does not match the upload's offset")
	case errors.Is(err, ingest.ErrTooLarge):
		fail(w, http.StatusRequestEntityTooLarge, "the data runs past Upload-Length; none of it was kept")
	case errors.Is(err, ingest.ErrChecksumMismatch):
		fail(w, statusBadSum, "Upload-Checksum does not match the data; none of it was kept")
	case errors.Is(err, ingest.ErrExpired):
		fail(w, http.StatusGone, "the upload expired")
	case errors.Is(err, ingest.ErrNotWritable):
		fail(w, http.StatusConflict, "the upload no longer accepts data")
	case isClientGone(err):
		fail(w, http.StatusBadRequest, "the request body could not be read")
	case errors.Is(err, context.Canceled):
		fail(w, http.StatusServiceUnavailable, "the server is shutting down")
	case errors.Is(err, storage.ErrUnavailable):
		// The received bytes up to the durable offset are kept; a tus
		// client retries a 5xx from HEAD.
		h.log.Warn("storage unavailable", zap.String("method", r.Method), zap.String("upload_id", r.PathValue("id")), zap.Error(err))
		w.Header().Set("Retry-After", "10")
		fail(w, http.StatusServiceUnavailable, "storage is temporarily unavailable; retry later")
	default:
		h.log.Error("tus request failed", zap.String("method", r.Method), zap.String("upload_id", r.PathValue("id")), zap.Error(err))
		fail(w, http.StatusInternalServerError, "internal error")
	}
}

func isClientGone(err error) bool {
	var ce *ingest.ClientError
	return errors.As(err, &ce)
}

func setExpires(w http.ResponseWriter, u state.Upload) {
	if u.Status == state.StatusUploading && !u.ExpiresAt.IsZero() {
		w.Header().Set(headerExpires, u.ExpiresAt.UTC().Format(http.TimeFormat))
	}
}

func fail(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = io.WriteString(w, msg+"\n")
}
