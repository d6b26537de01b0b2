package egress

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"mime"
	"mime/multipart"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/zeebo/blake3"
	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
)

// ErrChanged: the staged file's bytes are not the ones recorded (size or
// SHA-256), or it grew. The push stops and is not retried.
var ErrChanged = errors.New("egress: the staged file changed")

// Sizes of a push.
const (
	chunkSize    = 256 << 10 // the one read buffer of a push
	maxReplyBody = 64 << 10  // of a portal's answer
	maxMessage   = 200       // PortalError.Message
	maxPortalID  = 256
	tusVersion   = "1.0.0"
)

// Source is the staged file a push sends.
type Source struct {
	Name   string // base name given to the portal
	Size   int64
	SHA256 string // lower-case hex; the bytes sent must hash to exactly this
	// BLAKE3, if set, is the lower-case hex BLAKE3-256 of the same bytes
	// (taken in the same read as SHA256). The push then verifies the bytes
	// it sends against it instead: the same guarantee (both are
	// collision-resistant digests of one sequence of bytes) at about half
	// the CPU of SHA-256.
	BLAKE3 string
	// Open opens the file afresh for one attempt; the pusher closes it.
	Open func() (io.ReadSeekCloser, error)
}

// Backoff is how a push retries: Attempts in total (default 5), waiting
// Initial (default 1s) after the first failure, doubling up to Max
// (default 1m).
type Backoff struct {
	Attempts     int
	Initial, Max time.Duration
}

func (b Backoff) withDefaults() Backoff {
	if b.Attempts <= 0 {
		b.Attempts = 5
	}
	if b.Initial <= 0 {
		b.Initial = time.Second
	}
	if b.Max <= 0 {
		b.Max = time.Minute
	}
	b.Max = max(b.Max, b.Initial)
	return b
}

// delay is the wait after failed attempt n (1-based): Initial doubled n-1
// times, at most Max, and at least what the portal asked for in
// Retry-After (also at most Max).
func (b Backoff) delay(n int, retryAfter time.Duration) time.Duration {
	d := b.Initial
	for i := 1; i < n && d < b.Max; i++ {
		d *= 2
	}
	return min(max(d, retryAfter), b.Max)
}

// Pusher streams staged files to one portal. It may be used by several
// goroutines at once.
type Pusher struct {
	Portal policy.Portal
	Client *http.Client // from NewClient(Portal, pool); required
	Token  string       // bearer credential; "" = none. Never in logs or errors.
	Retry  Backoff
	// OnTusURL (tus only) is called with the upload URL as soon as the portal created it and
	// before any file byte is sent, so that the caller can persist it and resume after a restart.
	// An error from it stops the push.
	OnTusURL func(ctx context.Context, uploadURL string) error
	Sleep    func(ctx context.Context, d time.Duration) error // nil: real sleep honouring ctx (tests inject)
	Log      *zap.Logger                                      // nil: nop. Fields: portal, bytes, offset, attempt; never the token or a query string
}

// Receipt is the record of a delivered file.
type Receipt struct {
	Portal   string
	Method   string // put, post, tus
	URL      string // where the file went (tus: the upload URL); query strings stripped
	Status   int    // HTTP status of the final response
	PortalID string // "id" of a JSON object response body if any (string or number), else the Location header; "" if neither
	SHA256   string
	Size     int64

	Started, Finished time.Time
	Attempts          int
}

// PortalError is a portal's refusal of a push with a 4xx status other
// than 408 and 429. It is not retried.
type PortalError struct {
	Portal string
	Status int
	// Message is the start (at most 200 bytes) of the portal's answer,
	// printable ASCII only, with the bearer token cut out.
	Message string
}

func (e *PortalError) Error() string {
	s := fmt.Sprintf("egress: portal %s refused the push: status %d %s", e.Portal, e.Status, http.StatusText(e.Status))
	if e.Message != "" {
		s += ": " + strconv.Quote(e.Message)
	}
	return s
}

// Push sends src to the portal and returns the receipt once the portal
// has acknowledged the whole file. resumeURL is a tus upload URL that an
// earlier push reported through OnTusURL; the push continues that upload
// (or starts a new one if the portal no longer has it). It is ignored by
// put and post.
//
// The bytes sent are hashed as they go, and the bytes that end the file
// are held back until the whole file has matched src.Size and src.BLAKE3
// (src.SHA256 when no BLAKE3 is given): a file that changed fails with
// ErrChanged, and the portal never gets a complete body. Network errors, 5xx, 408 and 429 answers are retried
// (p.Retry); put and post start again, tus continues where the portal's
// offset says. ErrChanged, a *PortalError, address, host, redirect and TLS
// verification refusals, and ctx ending are not retried.
//
// An error names the portal, the method and the attempts made, and never
// holds the token or a query string of the portal's URLs.
func (p *Pusher) Push(ctx context.Context, src Source, resumeURL string) (Receipt, error) {
	started := time.Now()
	j, err := p.newJob(src, resumeURL)
	if err != nil {
		return Receipt{}, p.redact(fmt.Errorf("egress: portal %s (%s): cannot push: %w", p.Portal.Name, p.Portal.Method, err))
	}
	bo := p.Retry.withDefaults()
	for attempt := 1; ; attempt++ {
		log := j.log.With(zap.Int("attempt", attempt))
		r, err := j.attempt(ctx, log)
		if err == nil {
			log.Info("egress push sent", zap.Int64("bytes", src.Size))
			return Receipt{
				Portal:   p.Portal.Name,
				Method:   p.Portal.Method,
				URL:      r.where,
				Status:   r.status,
				PortalID: r.portalID,
				SHA256:   src.SHA256,
				Size:     src.Size,
				Started:  started,
				Finished: time.Now(),
				Attempts: attempt,
			}, nil
		}
		if attempt < bo.Attempts && retryable(ctx, err) {
			d := bo.delay(attempt, retryAfter(err))
			log.Warn("egress push attempt failed; retrying", zap.Error(p.redact(err)), zap.Duration("duration", d))
			serr := p.sleep(ctx, d)
			if serr == nil {
				continue
			}
			err = fmt.Errorf("%w; waiting to retry: %w", err, serr)
		}
		return Receipt{}, p.redact(fmt.Errorf("egress: portal %s: %s push failed after %s: %w",
			p.Portal.Name, p.Portal.Method, plural(attempt, "attempt"), err))
	}
}

func plural(n int, s string) string {
	if n == 1 {
		return "1 " + s
	}
	return strconv.Itoa(n) + " " + s + "s"
}

func (p *Pusher) sleep(ctx context.Context, d time.Duration) error {
	if p.Sleep != nil {
		return p.Sleep(ctx, d)
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// job is one push: its checked arguments and what it has learnt so far.
type job struct {
	p      *Pusher
	client *http.Client
	src    Source
	digest []byte // src.SHA256, raw
	verify digestCheck
	log    *zap.Logger
	buf    []byte // the push's one read buffer, reused by every attempt
	upload string // tus: the upload URL, "" until there is one
}

func (p *Pusher) newJob(src Source, resumeURL string) (*job, error) {
	if p.Client == nil {
		return nil, errors.New("no HTTP client")
	}
	if err := policy.CheckPortal(p.Portal); err != nil {
		return nil, err
	}
	if err := checkToken(p.Token); err != nil {
		return nil, err
	}
	if err := checkName(src.Name); err != nil {
		return nil, err
	}
	digest, err := hex.DecodeString(src.SHA256)
	if err != nil || len(digest) != sha256.Size || src.SHA256 != strings.ToLower(src.SHA256) {
		return nil, errors.New("the source's SHA-256 is not 64 lower-case hex digits")
	}
	if src.Size < 0 || src.Open == nil {
		return nil, errors.New("the source has a negative size or no Open")
	}
	verify := digestCheck{name: "SHA-256", want: digest, new: sha256.New}
	if src.BLAKE3 != "" {
		b3, err := hex.DecodeString(src.BLAKE3)
		if err != nil || len(b3) != 32 || src.BLAKE3 != strings.ToLower(src.BLAKE3) {
			return nil, errors.New("the source's BLAKE3 is not 64 lower-case hex digits")
		}
		verify = digestCheck{name: "BLAKE3", want: b3, new: func() hash.Hash { return blake3.New() }}
	}
	j := &job{p: p, src: src, digest: digest, verify: verify, buf: make([]byte, chunkSize)}
	j.log = p.Log
	if j.log == nil {
		j.log = zap.NewNop()
	}
	j.log = j.log.With(zap.String("portal", p.Portal.Name))
	j.client = noMethodChange(p.Client)
	if p.Portal.Method == policy.PortalTus && resumeURL != "" {
		u, err := url.Parse(resumeURL)
		if err != nil || !policy.PortalHostMatches(p.Portal, u) {
			return nil, errors.New("the tus upload URL to resume is not https on the portal's host")
		}
		j.upload = resumeURL
	}
	return j, nil
}

// checkName admits a base name that fits a header: valid UTF-8, no
// control characters, no path separators.
func checkName(name string) error {
	if name == "" || len(name) > 1024 || !utf8.ValidString(name) ||
		strings.ContainsAny(name, `/\`) || strings.ContainsFunc(name, unicode.IsControl) {
		return errors.New("the source's name is empty or not a base name fit for the portal")
	}
	return nil
}

// checkToken admits visible ASCII only: anything else could not go in a
// header. The token is not echoed.
func checkToken(tok string) error {
	for i := 0; i < len(tok); i++ {
		if tok[i] <= ' ' || tok[i] > '~' {
			return errors.New("the bearer token has a character other than visible ASCII")
		}
	}
	return nil
}

// noMethodChange is c refusing, on top of c's own redirect policy, a
// redirect that changes the method: a 301, 302 or 303 answer to an upload
// would turn it into a GET whose 200 looks like a delivery. Such an answer
// is returned as it is and fails the push.
func noMethodChange(c *http.Client) *http.Client {
	cc := *c
	next := c.CheckRedirect
	cc.CheckRedirect = func(req *http.Request, via []*http.Request) error {
		if next != nil {
			if err := next(req, via); err != nil {
				return err
			}
		} else if len(via) >= 10 {
			return errors.New("stopped after 10 redirects")
		}
		if req.Method != via[0].Method {
			return http.ErrUseLastResponse
		}
		return nil
	}
	return &cc
}

// done is a successful attempt.
type done struct {
	status   int
	where    string // the URL, without query
	portalID string
}

func (j *job) attempt(ctx context.Context, log *zap.Logger) (done, error) {
	switch j.p.Portal.Method {
	case policy.PortalPut:
		return j.put(ctx)
	case policy.PortalPost:
		return j.post(ctx)
	default: // CheckPortal admits nothing else
		return j.tus(ctx, log)
	}
}

func (j *job) put(ctx context.Context) (done, error) {
	b, err := j.open(0)
	if err != nil {
		return done{}, err
	}
	defer b.detach()
	req, err := http.NewRequestWithContext(ctx, http.MethodPut, j.p.Portal.URL, b.request())
	if err != nil {
		return done{}, fmt.Errorf("build the request: %w", err)
	}
	req.ContentLength = j.src.Size
	disp := mime.FormatMediaType("attachment", map[string]string{"filename": j.src.Name})
	if disp == "" {
		return done{}, errors.New("the source's name cannot be put in a Content-Disposition")
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	req.Header.Set("Content-Disposition", disp)
	req.Header.Set("Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(j.digest)+":")
	return j.sendWhole(req, b)
}

func (j *job) post(ctx context.Context) (done, error) {
	// The multipart framing before and after the file, built once into
	// small buffers so that the file streams and the length is exact.
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	if err := mw.WriteField("sha256", j.src.SHA256); err != nil {
		return done{}, err
	}
	if _, err := mw.CreateFormFile("file", j.src.Name); err != nil {
		return done{}, err
	}
	prefix := bytes.Clone(buf.Bytes())
	buf.Reset()
	if err := mw.Close(); err != nil {
		return done{}, err
	}
	suffix := buf.Bytes()

	b, err := j.open(0)
	if err != nil {
		return done{}, err
	}
	defer b.detach()
	body := io.MultiReader(bytes.NewReader(prefix), b, bytes.NewReader(suffix))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.p.Portal.URL, body)
	if err != nil {
		return done{}, fmt.Errorf("build the request: %w", err)
	}
	req.ContentLength = int64(len(prefix)) + j.src.Size + int64(len(suffix))
	req.Header.Set("Content-Type", mw.FormDataContentType())
	return j.sendWhole(req, b)
}

// sendWhole sends a put or post request carrying the whole file.
func (j *job) sendWhole(req *http.Request, b *body) (done, error) {
	r, err := j.send(req, b)
	if err != nil {
		return done{}, err
	}
	if !success(r.status) {
		return done{}, j.refusal(r)
	}
	if !b.complete() {
		return done{}, fmt.Errorf("the portal answered %d before the whole file was sent", r.status)
	}
	id := portalID(r.body)
	if id == "" {
		if u, err := url.Parse(r.header.Get("Location")); err == nil {
			id = cleanID(stripQuery(u))
		}
	}
	return done{status: r.status, where: stripQuery(r.url), portalID: id}, nil
}

// tus creates the upload (or finds how much of it the portal has) and
// sends the rest of the file in one PATCH.
func (j *job) tus(ctx context.Context, log *zap.Logger) (done, error) {
	var (
		off  int64
		last *reply
		err  error
	)
	if j.upload != "" {
		var lost bool
		last, off, lost, err = j.tusHead(ctx)
		if err != nil {
			return done{}, err
		}
		if lost {
			log.Info("egress push: the portal no longer has the tus upload; creating a new one")
			j.upload = ""
		} else {
			log.Info("egress push: resuming the tus upload", zap.Int64("offset", off))
		}
	}
	if j.upload == "" {
		if last, err = j.tusCreate(ctx); err != nil {
			return done{}, err
		}
		off = 0
	}

	b, err := j.open(off)
	if err != nil {
		return done{}, err
	}
	defer b.detach()
	if off < j.src.Size {
		req, err := http.NewRequestWithContext(ctx, http.MethodPatch, j.upload, b.request())
		if err != nil {
			return done{}, fmt.Errorf("build the request: %w", err)
		}
		req.ContentLength = j.src.Size - off
		req.Header.Set("Tus-Resumable", tusVersion)
		req.Header.Set("Upload-Offset", strconv.FormatInt(off, 10))
		req.Header.Set("Content-Type", "application/offset+octet-stream")
		if last, err = j.send(req, b); err != nil {
			return done{}, err
		}
		if err := j.tusPatched(last, off, b); err != nil {
			return done{}, err
		}
	} // else the portal has every byte, and the file was just checked whole
	u, _ := url.Parse(j.upload) // checked when it was taken
	id := portalID(last.body)
	if base := path.Base(u.Path); id == "" && base != "/" && base != "." {
		id = cleanID(base)
	}
	return done{status: last.status, where: stripQuery(u), portalID: id}, nil
}

// tusHead asks the portal for the upload's offset. lost: it no longer has
// the upload (404, 410, or 403 which tus allows for it).
func (j *job) tusHead(ctx context.Context) (r *reply, off int64, lost bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodHead, j.upload, nil)
	if err != nil {
		return nil, 0, false, fmt.Errorf("build the request: %w", err)
	}
	req.Header.Set("Tus-Resumable", tusVersion)
	if r, err = j.send(req, nil); err != nil {
		return nil, 0, false, err
	}
	switch {
	case r.status == http.StatusNotFound || r.status == http.StatusGone || r.status == http.StatusForbidden:
		return r, 0, true, nil
	case !success(r.status):
		return nil, 0, false, j.refusal(r)
	}
	off, err = headerInt(r.header, "Upload-Offset")
	if err != nil {
		return nil, 0, false, fmt.Errorf("tus HEAD: %w", err)
	}
	if off > j.src.Size {
		return nil, 0, false, fmt.Errorf("tus HEAD: the portal has %d bytes of a %d-byte file", off, j.src.Size)
	}
	if r.header.Get("Upload-Length") != "" {
		n, err := headerInt(r.header, "Upload-Length")
		if err != nil {
			return nil, 0, false, fmt.Errorf("tus HEAD: %w", err)
		}
		if n != j.src.Size {
			return nil, 0, false, fmt.Errorf("tus HEAD: the upload is %d bytes long, the file %d", n, j.src.Size)
		}
	}
	return r, off, false, nil
}

// tusCreate creates the upload, takes its URL and hands it to OnTusURL.
func (j *job) tusCreate(ctx context.Context) (*reply, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, j.p.Portal.URL, http.NoBody)
	if err != nil {
		return nil, fmt.Errorf("build the request: %w", err)
	}
	b64 := base64.StdEncoding.EncodeToString
	req.Header.Set("Tus-Resumable", tusVersion)
	req.Header.Set("Upload-Length", strconv.FormatInt(j.src.Size, 10))
	req.Header.Set("Upload-Metadata", "filename "+b64([]byte(j.src.Name))+",sha256 "+b64([]byte(j.src.SHA256)))
	r, err := j.send(req, nil)
	if err != nil {
		return nil, err
	}
	if r.status != http.StatusCreated {
		if success(r.status) {
			return nil, fmt.Errorf("tus create: the portal answered %d, not 201", r.status)
		}
		return nil, j.refusal(r)
	}
	loc := r.header.Get("Location")
	if loc == "" {
		return nil, errors.New("tus create: the portal gave no upload URL")
	}
	u, err := r.url.Parse(loc)
	if err != nil || !policy.PortalHostMatches(j.p.Portal, u) {
		return nil, errors.New("tus create: refused the upload URL the portal gave: it is not https on the portal's host")
	}
	u.Fragment, u.RawFragment = "", ""
	if j.p.OnTusURL != nil {
		if err := j.p.OnTusURL(ctx, u.String()); err != nil {
			return nil, fmt.Errorf("record the tus upload URL: %w", err)
		}
	}
	j.upload = u.String() // only an upload the caller knows of is resumed
	return r, nil
}

// tusPatched checks the PATCH answer: success with the whole file at the
// portal.
func (j *job) tusPatched(r *reply, off int64, b *body) error {
	if r.status == http.StatusConflict { // the offset moved: HEAD and go on
		return &statusError{status: r.status, msg: j.message(r.body)}
	}
	if !success(r.status) {
		return j.refusal(r)
	}
	got, err := headerInt(r.header, "Upload-Offset")
	if err != nil {
		return fmt.Errorf("tus PATCH: %w", err)
	}
	switch {
	case got == j.src.Size && b.complete():
		return nil
	case got > off && got < j.src.Size:
		return transient{fmt.Errorf("tus PATCH: the portal took the bytes up to %d of %d", got, j.src.Size)}
	}
	return fmt.Errorf("tus PATCH: the portal answered offset %d for %d bytes sent from %d of %d", got, b.handedOut(), off, j.src.Size)
}

// headerInt is a header's non-negative decimal value.
func headerInt(h http.Header, key string) (int64, error) {
	v := h.Get(key)
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil || n < 0 || v == "" || v[0] == '+' {
		return 0, fmt.Errorf("no valid %s in the portal's answer", key)
	}
	return n, nil
}

func success(status int) bool { return status >= 200 && status <= 299 }

// reply is a portal's answer, its body read (at most maxReplyBody).
type reply struct {
	status int
	header http.Header
	body   []byte
	url    *url.URL // of the request answered
}

// send does req with the bearer token. b, when not nil, is req's file
// body: if it failed (the file changed or could not be read), that is the
// error, whatever the portal answered.
func (j *job) send(req *http.Request, b *body) (*reply, error) {
	if j.p.Token != "" {
		req.Header.Set("Authorization", "Bearer "+j.p.Token)
	}
	resp, err := j.client.Do(req)
	if resp != nil && err != nil {
		resp.Body.Close() // a refused redirect: already closed
		resp = nil
	}
	if b != nil {
		if ferr := b.failure(); ferr != nil {
			if resp != nil {
				resp.Body.Close()
			}
			return nil, ferr
		}
	}
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			if u, perr := url.Parse(ue.URL); perr == nil {
				ue.URL = stripQuery(u)
			} else {
				ue.URL = "(unparsable URL)"
			}
		}
		return nil, transient{err}
	}
	defer resp.Body.Close()
	data, _ := io.ReadAll(io.LimitReader(resp.Body, maxReplyBody)) // a short read only shortens the message or id
	return &reply{status: resp.StatusCode, header: resp.Header, body: data, url: resp.Request.URL}, nil
}

// refusal is the error for an answer that is not a success.
func (j *job) refusal(r *reply) error {
	switch {
	case r.status >= 500 || r.status == http.StatusRequestTimeout || r.status == http.StatusTooManyRequests:
		return &statusError{status: r.status, msg: j.message(r.body), retryAfter: parseRetryAfter(r.header.Get("Retry-After"))}
	case r.status >= 400:
		return &PortalError{Portal: j.p.Portal.Name, Status: r.status, Message: j.message(r.body)}
	case r.status >= 300:
		return fmt.Errorf("the portal answered %d, a redirect a push does not follow", r.status)
	}
	return fmt.Errorf("the portal answered an unexpected %d", r.status)
}

// message is the start of a portal's answer for an error: the token cut
// out (before and after dropping what is not printable ASCII, so that
// neither can splice it together), then at most maxMessage bytes.
func (j *job) message(b []byte) string {
	tok := []byte(j.p.Token)
	const cut = "[token]"
	if len(tok) > 0 {
		b = bytes.ReplaceAll(b, tok, []byte(cut))
	}
	out := make([]byte, 0, min(len(b), maxReplyBody))
	for _, c := range b {
		switch {
		case c == '\t' || c == '\n' || c == '\r':
			c = ' '
		case c < ' ' || c > '~':
			continue
		}
		out = append(out, c)
	}
	if len(tok) > 0 {
		out = bytes.ReplaceAll(out, tok, []byte(cut))
	}
	out = bytes.TrimSpace(out)
	if len(out) > maxMessage {
		out = out[:maxMessage]
	}
	return string(out)
}

// redact replaces the token in err's text, should anything have put it
// there; the error is still unwrappable to its cause.
func (p *Pusher) redact(err error) error {
	if p.Token == "" || err == nil || !strings.Contains(err.Error(), p.Token) {
		return err
	}
	return &redacted{err: err, token: p.Token}
}

type redacted struct {
	err   error
	token string
}

func (r *redacted) Error() string { return strings.ReplaceAll(r.err.Error(), r.token, "[token]") }
func (r *redacted) Unwrap() error { return r.err }

// transient marks an error of the network or the exchange that a new
// attempt may not meet.
type transient struct{ err error }

func (t transient) Error() string { return t.err.Error() }
func (t transient) Unwrap() error { return t.err }

// statusError is an answer that is retried: 5xx, 408, 429 (and a tus 409).
type statusError struct {
	status     int
	msg        string
	retryAfter time.Duration
}

func (e *statusError) Error() string {
	s := fmt.Sprintf("the portal answered %d %s", e.status, http.StatusText(e.status))
	if e.msg != "" {
		s += ": " + strconv.Quote(e.msg)
	}
	return s
}

// retryable reports whether a new attempt may succeed where err failed.
func retryable(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	var se *statusError
	if errors.As(err, &se) {
		return true
	}
	var t transient
	if !errors.As(err, &t) {
		return false // the file, the portal's protocol, a refusal: the same again
	}
	var (
		tlsErr      *tls.CertificateVerificationError
		unknownAuth x509.UnknownAuthorityError
		hostErr     x509.HostnameError
		invalidErr  x509.CertificateInvalidError
	)
	switch {
	case errors.Is(err, ErrChanged), errors.Is(err, ErrForbiddenAddress), errors.Is(err, ErrWrongHost),
		errors.Is(err, ErrRedirect), errors.Is(err, policy.ErrBadPortal),
		errors.Is(err, context.Canceled), errors.Is(err, context.DeadlineExceeded),
		errors.As(err, &tlsErr), errors.As(err, &unknownAuth), errors.As(err, &hostErr), errors.As(err, &invalidErr):
		return false
	}
	return true
}

// retryAfter is the Retry-After of a retried answer in err, or 0.
func retryAfter(err error) time.Duration {
	var se *statusError
	if errors.As(err, &se) {
		return se.retryAfter
	}
	return 0
}

// parseRetryAfter reads delay-seconds, or an HTTP date; 0 if neither.
func parseRetryAfter(v string) time.Duration {
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseUint(v, 10, 32); err == nil {
		return time.Duration(n) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		return max(time.Until(t), 0)
	}
	return 0
}

// stripQuery is u without userinfo, query and fragment.
func stripQuery(u *url.URL) string {
	c := *u
	c.User = nil
	c.RawQuery, c.ForceQuery = "", false
	c.Fragment, c.RawFragment = "", ""
	return c.String()
}

// portalID is the "id" member of a JSON object, a string or a number, or
// "".
func portalID(body []byte) string {
	body = bytes.TrimSpace(body)
	if len(body) == 0 || body[0] != '{' {
		return ""
	}
	var obj map[string]json.RawMessage
	if json.Unmarshal(body, &obj) != nil {
		return ""
	}
	raw, ok := obj["id"]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return cleanID(s)
	}
	var n json.Number
	if raw = bytes.TrimSpace(raw); len(raw) > 0 && raw[0] != '"' && json.Unmarshal(raw, &n) == nil {
		return n.String()
	}
	return ""
}

// cleanID is s without unprintable characters, at most maxPortalID bytes.
func cleanID(s string) string {
	s = strings.Map(func(r rune) rune {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			return -1
		}
		return r
	}, s)
	for len(s) > maxPortalID {
		_, n := utf8.DecodeLastRuneInString(s)
		s = s[:len(s)-n]
	}
	return s
}

// open opens the file for an attempt that sends it from off.
func (j *job) open(off int64) (*body, error) {
	f, err := j.src.Open()
	if err != nil {
		return nil, fmt.Errorf("open the staged file: %w", err)
	}
	return newBody(f, j.buf, j.src.Size, j.verify, off)
}

// digestCheck is the digest a push verifies the bytes it sends against.
type digestCheck struct {
	name string // "SHA-256", "BLAKE3"
	want []byte
	new  func() hash.Hash
}

// body is an attempt's request body: the file from an offset to its end.
// It hashes every byte of the file, those before the offset included, and
// holds back the bytes that end the file (up to one chunk) until the file
// has ended at exactly size bytes with the expected digest; otherwise it
// fails with ErrChanged (wrapped) in place of them, so the request ends
// short of its Content-Length. Bytes before the end are read and hashed
// straight into the caller's buffer.
//
// The HTTP transport may read and close a body after Do has returned;
// detach ends that, so that buf can serve the next attempt.
type body struct {
	mu       sync.Mutex
	f        io.ReadCloser
	h        hash.Hash
	hashName string // of h, for the error
	want     []byte
	buf      []byte
	lo, hi   int   // buf[lo:hi] is read, checked, not yet handed out
	read     int64 // bytes of the file read and hashed
	size     int64
	start    int64 // the offset the body starts at
	sent     int64 // bytes handed out
	err      error // why it stopped: nil while it goes on
	verified bool  // the whole file matched
	closed   bool
}

var errDetached = errors.New("egress: the attempt is over")

// newBody hashes f's bytes up to off without handing them out. When
// nothing is left to send it checks the whole file at once. f is closed
// on error.
func newBody(f io.ReadCloser, buf []byte, size int64, verify digestCheck, off int64) (*body, error) {
	b := &body{f: f, h: verify.new(), hashName: verify.name, want: verify.want, buf: buf, size: size, start: off}
	for b.read < off {
		n := int(min(int64(len(buf)), off-b.read))
		m, err := io.ReadFull(f, buf[:n])
		b.h.Write(buf[:m])
		b.read += int64(m)
		if err != nil {
			f.Close()
			return nil, b.readError(err)
		}
	}
	if b.read == size {
		if err := b.finish(); err != nil {
			f.Close()
			return nil, err
		}
	}
	return b, nil
}

// request is b as a request body: none when there is nothing to send.
func (b *body) request() io.ReadCloser {
	if b.size == b.start {
		return http.NoBody
	}
	return b
}

func (b *body) Read(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	switch {
	case b.closed:
		return 0, errDetached
	case b.lo == b.hi && b.err != nil:
		return 0, b.err
	case b.lo == b.hi && b.verified:
		return 0, io.EOF
	case b.lo == b.hi && b.read+int64(len(p)) < b.size:
		// Not the end of the file: read and hash straight into p, with
		// no copy. The bytes that end the file always go through fill,
		// which holds them back until the whole file matched.
		m, err := io.ReadFull(b.f, p)
		b.h.Write(p[:m])
		b.read += int64(m)
		b.sent += int64(m)
		if err != nil {
			// The bytes read go out; the failure follows them, and the
			// request ends short of its length.
			b.err = b.readError(err)
			if m == 0 {
				return 0, b.err
			}
		}
		return m, nil
	case b.lo == b.hi:
		if b.fill(); b.lo == b.hi {
			return 0, b.err
		}
	}
	n := copy(p, b.buf[b.lo:b.hi])
	b.lo += n
	b.sent += int64(n)
	return n, nil
}

// fill reads the next chunk. Before it can be handed out: if it is the
// last, the file is checked; if the file ended early, it is not.
func (b *body) fill() {
	n := int(min(int64(len(b.buf)), b.size-b.read))
	m, err := io.ReadFull(b.f, b.buf[:n])
	b.h.Write(b.buf[:m])
	b.read += int64(m)
	if err != nil {
		b.err = b.readError(err)
		return
	}
	if b.read == b.size {
		if err := b.finish(); err != nil {
			b.err = err
			return
		}
	}
	b.lo, b.hi = 0, m
}

// finish checks, at size bytes read, that the file ends there and that it
// hashed to the digest.
func (b *body) finish() error {
	var one [1]byte
	switch _, err := io.ReadFull(b.f, one[:]); {
	case err == nil:
		return fmt.Errorf("%w: it is longer than %d bytes", ErrChanged, b.size)
	case err != io.EOF:
		return fmt.Errorf("read the staged file: %w", err)
	}
	if !bytes.Equal(b.h.Sum(nil), b.want) {
		return fmt.Errorf("%w: its %s is not the one recorded", ErrChanged, b.hashName)
	}
	b.verified = true
	return nil
}

func (b *body) readError(err error) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: it is shorter than %d bytes", ErrChanged, b.size)
	}
	return fmt.Errorf("read the staged file: %w", err)
}

// Close is the transport's: it ends the attempt's use of the file.
func (b *body) Close() error {
	b.detach()
	return nil
}

// detach closes the file; the body hands out nothing more.
func (b *body) detach() {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.closed {
		b.closed = true
		b.f.Close()
	}
}

// failure is why the body stopped short, or nil.
func (b *body) failure() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.err
}

// complete reports whether the whole file matched and every byte from the
// start offset was handed out.
func (b *body) complete() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.verified && b.err == nil && b.start+b.sent == b.size
}

func (b *body) handedOut() int64 {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.sent
}
