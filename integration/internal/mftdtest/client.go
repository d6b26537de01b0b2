package mftdtest

import (
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"hash"
	"io"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Client is a minimal tus 1.0.0 client plus the JSON API, for one bearer token. It also works
// against tusd, which ignores the token.
type Client struct {
	HTTP  *http.Client
	Base  string // https://host:port
	Token string // sent as Authorization: Bearer; empty sends none
}

// Response is one HTTP answer with its body read (bodies of tus answers are small).
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Offset is the Upload-Offset header, or -1 if it is missing or not a number.
func (r *Response) Offset() int64 {
	v, err := strconv.ParseInt(r.Header.Get("Upload-Offset"), 10, 64)
	if err != nil {
		return -1
	}
	return v
}

func (r *Response) String() string {
	return fmt.Sprintf("%d %s (Upload-Offset %q) %q", r.Status, http.StatusText(r.Status), r.Header.Get("Upload-Offset"), truncate(r.Body, 300))
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}

// EncodeMetadata builds an Upload-Metadata value: key base64(value) pairs, keys sorted.
func EncodeMetadata(meta map[string]string) string {
	keys := make([]string, 0, len(meta))
	for k := range meta {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, k+" "+base64.StdEncoding.EncodeToString([]byte(meta[k])))
	}
	return strings.Join(parts, ",")
}

// Checksum is an Upload-Checksum value ("sha1", "sha256" or "md5", then base64 of the digest).
func Checksum(algo string, data []byte) string {
	var h hash.Hash
	switch algo {
	case "sha1":
		h = sha1.New()
	case "sha256":
		h = sha256.New()
	case "md5":
		h = md5.New()
	default:
		panic("mftdtest: unknown checksum algorithm " + algo)
	}
	h.Write(data)
	return algo + " " + base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// Resolve turns a Location (absolute or a path) into an absolute URL.
func (c *Client) Resolve(loc string) string {
	base, err := url.Parse(c.Base + "/files/")
	if err != nil {
		return loc
	}
	u, err := base.Parse(loc)
	if err != nil {
		return loc
	}
	return u.String()
}

// UploadID is the last path segment of an upload URL.
func UploadID(uploadURL string) string {
	u, err := url.Parse(uploadURL)
	if err != nil {
		return path.Base(uploadURL)
	}
	return path.Base(u.Path)
}

func (c *Client) do(ctx context.Context, method, target string, hdr http.Header, body io.Reader, n int64) (*Response, error) {
	if !strings.Contains(target, "://") {
		target = c.Base + target
	}
	req, err := http.NewRequestWithContext(ctx, method, target, body)
	if err != nil {
		return nil, err
	}
	if body != nil {
		req.ContentLength = n
		if n == 0 {
			req.Body = http.NoBody
		}
	}
	for k, v := range hdr {
		req.Header[k] = v
	}
	if c.Token != "" {
		req.Header.Set("Authorization", "Bearer "+c.Token)
	}
	resp, err := c.HTTP.Do(req)
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", method, target, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("%s %s: read body: %w", method, target, err)
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

func tusHeader() http.Header {
	h := http.Header{}
	h.Set("Tus-Resumable", "1.0.0")
	return h
}

// Create POSTs /files/ for an upload of length bytes. A 201 carries the upload URL in Location
// (see Resolve).
func (c *Client) Create(ctx context.Context, length int64, meta map[string]string) (*Response, error) {
	h := tusHeader()
	h.Set("Upload-Length", strconv.FormatInt(length, 10))
	if len(meta) > 0 {
		h.Set("Upload-Metadata", EncodeMetadata(meta))
	}
	return c.do(ctx, http.MethodPost, "/files/", h, nil, 0)
}

// CreateWithUpload POSTs /files/ with the first n bytes of the upload in the body
// (creation-with-upload).
func (c *Client) CreateWithUpload(ctx context.Context, length int64, meta map[string]string, body io.Reader, n int64) (*Response, error) {
	h := tusHeader()
	h.Set("Upload-Length", strconv.FormatInt(length, 10))
	h.Set("Content-Type", "application/offset+octet-stream")
	if len(meta) > 0 {
		h.Set("Upload-Metadata", EncodeMetadata(meta))
	}
	return c.do(ctx, http.MethodPost, "/files/", h, body, n)
}

// Head asks for an upload's offset.
func (c *Client) Head(ctx context.Context, uploadURL string) (*Response, error) {
	return c.do(ctx, http.MethodHead, uploadURL, tusHeader(), nil, 0)
}

// Patch sends n bytes from body at offset. checksum, if not empty, is sent as Upload-Checksum
// (see Checksum).
func (c *Client) Patch(ctx context.Context, uploadURL string, offset int64, body io.Reader, n int64, checksum string) (*Response, error) {
	h := tusHeader()
	h.Set("Upload-Offset", strconv.FormatInt(offset, 10))
	h.Set("Content-Type", "application/offset+octet-stream")
	if checksum != "" {
		h.Set("Upload-Checksum", checksum)
	}
	return c.do(ctx, http.MethodPatch, uploadURL, h, body, n)
}

// Delete terminates an upload.
func (c *Client) Delete(ctx context.Context, uploadURL string) (*Response, error) {
	return c.do(ctx, http.MethodDelete, uploadURL, tusHeader(), nil, 0)
}

// UploadInfo is GET /api/v1/uploads/{id}.
type UploadInfo struct {
	ID     string `json:"id"`
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	Offset int64  `json:"offset"`
	Status string `json:"status"`
	SHA256 string `json:"sha256"`
	Reason string `json:"reason"`
}

// Terminal reports whether status will not change any more.
func (u UploadInfo) Terminal() bool {
	switch u.Status {
	case "available", "quarantined", "rejected":
		return true
	}
	return false
}

// Upload fetches the status of upload id; the Response is returned for non-200 answers.
func (c *Client) Upload(ctx context.Context, id string) (UploadInfo, *Response, error) {
	r, err := c.do(ctx, http.MethodGet, "/api/v1/uploads/"+url.PathEscape(id), nil, nil, 0)
	if err != nil {
		return UploadInfo{}, nil, err
	}
	var info UploadInfo
	if r.Status == http.StatusOK {
		if err := json.Unmarshal(r.Body, &info); err != nil {
			return info, r, fmt.Errorf("GET /api/v1/uploads/%s: %w (body %q)", id, err, truncate(r.Body, 300))
		}
	}
	return info, r, nil
}

// WaitTerminal polls upload id until it is available, quarantined or rejected.
func (c *Client) WaitTerminal(ctx context.Context, id string, timeout time.Duration, poll time.Duration) (UploadInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last UploadInfo
	for {
		info, r, err := c.Upload(ctx, id)
		switch {
		case err != nil && ctx.Err() == nil:
			return info, err
		case err == nil && r.Status != http.StatusOK:
			return info, fmt.Errorf("GET /api/v1/uploads/%s: %s", id, r)
		case err == nil:
			last = info
			if info.Terminal() {
				return info, nil
			}
		}
		select {
		case <-ctx.Done():
			return last, fmt.Errorf("upload %s still %q after %v", id, last.Status, timeout)
		case <-time.After(poll):
		}
	}
}

// Arrival is one entry of GET /api/v1/arrivals.
type Arrival struct {
	Name      string    `json:"name"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
}

// Arrivals lists the caller's Arrivals folder.
func (c *Client) Arrivals(ctx context.Context) ([]Arrival, error) {
	r, err := c.do(ctx, http.MethodGet, "/api/v1/arrivals", nil, nil, 0)
	if err != nil {
		return nil, err
	}
	if r.Status != http.StatusOK {
		return nil, fmt.Errorf("GET /api/v1/arrivals: %s", r)
	}
	var out struct {
		Files *[]Arrival `json:"files"`
	}
	if err := json.Unmarshal(r.Body, &out); err != nil {
		return nil, fmt.Errorf("GET /api/v1/arrivals: %w (body %q)", err, truncate(r.Body, 300))
	}
	if out.Files == nil {
		return nil, fmt.Errorf("GET /api/v1/arrivals: no \"files\" array in %q", truncate(r.Body, 300))
	}
	return *out.Files, nil
}
