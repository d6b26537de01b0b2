package mftdtest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"io"
	"mime/multipart"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

const portalToken = "s3cret-portal-token"

func newTestCA(t *testing.T) *TestCA {
	t.Helper()
	ca, err := NewTestCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

// portalClient trusts caFile and does not follow redirects.
func portalClient(t *testing.T, caFile string) *http.Client {
	t.Helper()
	c, err := NewHTTPSClient(caFile)
	if err != nil {
		t.Fatal(err)
	}
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	c.Timeout = time.Minute
	return c
}

// send does one request with body (nil for none; a reader without a known length is sent
// chunked) and header name/value pairs, and reads the answer.
func send(c *http.Client, method, u string, body io.Reader, hdr ...string) (*Response, error) {
	req, err := http.NewRequest(method, u, body)
	if err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := c.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return nil, err
	}
	return &Response{Status: resp.StatusCode, Header: resp.Header, Body: b}, nil
}

func mustSend(t *testing.T, c *http.Client, want int, method, u string, body io.Reader, hdr ...string) *Response {
	t.Helper()
	r, err := send(c, method, u, body, hdr...)
	if err != nil {
		t.Fatalf("%s %s: %v", method, u, err)
	}
	if r.Status != want {
		t.Fatalf("%s %s: %s, want %d", method, u, r, want)
	}
	return r
}

func testData(t *testing.T, seed uint64, size int64) []byte {
	t.Helper()
	b, err := io.ReadAll(NewData(seed, size))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func reprDigest(data []byte) string {
	s := sha256.Sum256(data)
	return "sha-256=:" + base64.StdEncoding.EncodeToString(s[:]) + ":"
}

// putHeaders are the headers of an egress PUT of data named name.
func putHeaders(token, name string, data []byte) []string {
	return []string{
		"Authorization", "Bearer " + token,
		"Content-Disposition", "attachment; filename*=UTF-8''" + url.PathEscape(name),
		"Repr-Digest", reprDigest(data),
	}
}

// checkReceived compares one completed upload with the data sent.
func checkReceived(t *testing.T, p *Portal, got Received, method, name string, data []byte) {
	t.Helper()
	sum := SHA256Hex(data)
	if got.Method != method || got.Name != name || got.Size != int64(len(data)) || got.SHA256 != sum ||
		got.ClaimedSHA256 != sum || got.Auth != "Bearer "+portalToken || got.ID == "" {
		t.Errorf("received %+v, want method %s, name %q, size %d, sha256 and claimed %s, the token", got, method, name, len(data), sum)
	}
	if p.o.Discard {
		if got.Path != "" {
			t.Errorf("Discard, but the upload was stored at %s", got.Path)
		}
		return
	}
	if got.Path != filepath.Join(p.o.Dir, got.ID) {
		t.Errorf("stored at %q, want Dir/%s", got.Path, got.ID)
	}
	if stored, err := os.ReadFile(got.Path); err != nil || !bytes.Equal(stored, data) {
		t.Errorf("stored file %s: %d bytes (err %v), want the %d bytes sent", got.Path, len(stored), err, len(data))
	}
}

// checkDirHolds fails unless dir holds exactly the files named.
func checkDirHolds(t *testing.T, dir string, names ...string) {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range entries {
		got = append(got, e.Name())
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("%s holds %q, want %q", dir, got, names)
	}
}

func TestPortalCA(t *testing.T) {
	ca := newTestCA(t)
	pemBytes, err := os.ReadFile(ca.CertFile)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(pemBytes)
	if block == nil {
		t.Fatalf("%s holds no PEM", ca.CertFile)
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	for _, host := range []string{"localhost", "127.0.0.1", "::1"} {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: host, Roots: ca.CertPool()}); err != nil {
			t.Errorf("leaf for %s: %v", host, err)
		}
	}
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "example.com", Roots: ca.CertPool()}); err == nil {
		t.Error("the leaf verifies for example.com")
	}
	if k, ok := leaf.PublicKey.(*ecdsa.PublicKey); !ok || k.Curve != elliptic.P256() {
		t.Errorf("leaf key %T, want ECDSA P-256", leaf.PublicKey)
	}
	if life := time.Until(leaf.NotAfter); life < 23*time.Hour || life > 25*time.Hour {
		t.Errorf("leaf valid for %v more, want about 24h", life)
	}
	if _, err := os.Stat(ca.KeyFile); err != nil {
		t.Error(err)
	}
}

func TestPortalPut(t *testing.T) {
	for _, discard := range []bool{false, true} {
		t.Run("discard="+strconv.FormatBool(discard), func(t *testing.T) {
			ca := newTestCA(t)
			o := PortalOptions{Method: PortalPut, Token: portalToken, Discard: discard}
			if !discard {
				o.Dir = t.TempDir()
			}
			p := StartPortal(t, ca, o)
			if !strings.HasPrefix(p.URL, "https://localhost:") || !strings.HasSuffix(p.URL, "/upload") {
				t.Fatalf("URL %s", p.URL)
			}
			c := portalClient(t, ca.CAFile)
			data := testData(t, 1, 5<<20)
			name := "résumé final, v2.pdf"
			r := mustSend(t, c, http.StatusCreated, http.MethodPut, p.URL, bytes.NewReader(data), putHeaders(portalToken, name, data)...)
			var answer struct{ ID string }
			if err := json.Unmarshal(r.Body, &answer); err != nil || answer.ID == "" {
				t.Fatalf("answer %q: want {\"id\":ID} (%v)", r.Body, err)
			}
			if loc := r.Header.Get("Location"); loc != "/files/"+answer.ID {
				t.Errorf("Location %q, want /files/%s", loc, answer.ID)
			}
			got := p.Received()
			if len(got) != 1 {
				t.Fatalf("received %+v, want one upload", got)
			}
			checkReceived(t, p, got[0], PortalPut, name, data)
			if got[0].ID != answer.ID {
				t.Errorf("received id %s, answered %s", got[0].ID, answer.ID)
			}
			if !discard {
				checkDirHolds(t, o.Dir, answer.ID)
			}
			if n := p.BytesReceived(); n != int64(len(data)) {
				t.Errorf("BytesReceived %d, want %d", n, len(data))
			}
			if n := p.Connections(); n != 1 {
				t.Errorf("Connections %d, want 1", n)
			}
			if reqs := p.Requests(); len(reqs) != 1 || reqs[0].Status != http.StatusCreated || reqs[0].Bytes != int64(len(data)) {
				t.Errorf("requests %+v", reqs)
			}
		})
	}
}

func TestPortalPutRefusals(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	p := StartPortal(t, ca, PortalOptions{Method: PortalPut, Token: portalToken, Dir: dir})
	c := portalClient(t, ca.CAFile)
	data := testData(t, 2, 1<<20)
	other := testData(t, 3, 1<<20)
	const wrongToken = "wrong-token-must-not-echo"
	for _, tc := range []struct {
		name   string
		method string
		body   io.Reader
		hdr    []string
		want   int
	}{
		{"no token", http.MethodPut, bytes.NewReader(data), putHeaders("", "a", data)[2:], http.StatusUnauthorized},
		{"wrong token", http.MethodPut, bytes.NewReader(data), putHeaders(wrongToken, "a", data), http.StatusUnauthorized},
		{"basic scheme", http.MethodPut, bytes.NewReader(data), append(putHeaders("", "a", data), "Authorization", "Basic "+portalToken), http.StatusUnauthorized},
		{"digest mismatch", http.MethodPut, bytes.NewReader(data), putHeaders(portalToken, "a", other), http.StatusBadRequest},
		{"digest not base64", http.MethodPut, bytes.NewReader(data), append(putHeaders(portalToken, "a", data), "Repr-Digest", "sha-256=:not base64:"), http.StatusBadRequest},
		{"digest of 20 bytes", http.MethodPut, bytes.NewReader(data), append(putHeaders(portalToken, "a", data), "Repr-Digest", "sha-256=:"+base64.StdEncoding.EncodeToString(make([]byte, 20))+":"), http.StatusBadRequest},
		{"chunked", http.MethodPut, io.MultiReader(bytes.NewReader(data)), putHeaders(portalToken, "a", data), http.StatusLengthRequired},
		{"POST", http.MethodPost, bytes.NewReader(data), putHeaders(portalToken, "a", data), http.StatusMethodNotAllowed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := mustSend(t, c, tc.want, tc.method, p.URL, tc.body, tc.hdr...)
			if tc.want == http.StatusUnauthorized {
				if bytes.Contains(r.Body, []byte("token")) || bytes.Contains(r.Body, []byte("Basic")) {
					t.Errorf("401 body %q echoes the request", r.Body)
				}
				if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate %q", r.Header.Get("WWW-Authenticate"))
				}
			}
		})
	}
	if got := p.Received(); len(got) != 0 {
		t.Errorf("refused requests were received: %+v", got)
	}
	checkDirHolds(t, dir)
	// Other algorithms are ignored; a PUT without any digest claims none.
	mustSend(t, c, http.StatusCreated, http.MethodPut, p.URL, bytes.NewReader(data), append(putHeaders(portalToken, "a", data), "Repr-Digest", "sha-512=:AAAA:, "+reprDigest(data))...)
	mustSend(t, c, http.StatusCreated, http.MethodPut, p.URL, bytes.NewReader(data), "Authorization", "Bearer "+portalToken)
	got := p.Received()
	if len(got) != 2 || got[0].ClaimedSHA256 != SHA256Hex(data) || got[1].ClaimedSHA256 != "" || got[1].Name != "upload" {
		t.Errorf("received %+v, want a claimed digest, then none with name upload", got)
	}
}

// multipartBody is the egress post form: field sha256 (if not ""), then part file.
func multipartBody(sum, name string, data []byte) (body *bytes.Buffer, contentType string) {
	body = &bytes.Buffer{}
	mw := multipart.NewWriter(body)
	if sum != "" {
		mw.WriteField("sha256", sum)
	}
	if name != "" {
		fw, _ := mw.CreateFormFile("file", name)
		fw.Write(data)
	}
	mw.Close()
	return body, mw.FormDataContentType()
}

func TestPortalPost(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	p := StartPortal(t, ca, PortalOptions{Method: PortalPost, Token: portalToken, Dir: dir})
	c := portalClient(t, ca.CAFile)
	data := testData(t, 4, 3<<20)
	auth := []string{"Authorization", "Bearer " + portalToken}

	body, ct := multipartBody(SHA256Hex(data), "report 2024.csv", data)
	r := mustSend(t, c, http.StatusCreated, http.MethodPost, p.URL, body, append(auth, "Content-Type", ct)...)
	var answer struct{ ID string }
	if err := json.Unmarshal(r.Body, &answer); err != nil || r.Header.Get("Location") != "/files/"+answer.ID {
		t.Fatalf("answer %q, Location %q (%v)", r.Body, r.Header.Get("Location"), err)
	}
	// Streamed, chunked, the digest in upper case.
	body, ct = multipartBody(strings.ToUpper(SHA256Hex(data)), "streamed.bin", data)
	mustSend(t, c, http.StatusCreated, http.MethodPost, p.URL, io.MultiReader(body), append(auth, "Content-Type", ct)...)
	got := p.Received()
	if len(got) != 2 {
		t.Fatalf("received %+v, want 2", got)
	}
	checkReceived(t, p, got[0], PortalPost, "report 2024.csv", data)
	checkReceived(t, p, got[1], PortalPost, "streamed.bin", data)
	if got[0].ID != answer.ID {
		t.Errorf("received id %s, answered %s", got[0].ID, answer.ID)
	}

	for _, tc := range []struct {
		name      string
		sum, file string
		ct        string // "" for the form's
		want      int
	}{
		{"digest mismatch", SHA256Hex(data[1:]), "a", "", http.StatusBadRequest},
		{"digest not hex", strings.Repeat("z", 64), "a", "", http.StatusBadRequest},
		{"no file part", SHA256Hex(data), "", "", http.StatusBadRequest},
		{"not multipart", SHA256Hex(data), "a", "application/octet-stream", http.StatusBadRequest},
	} {
		t.Run(tc.name, func(t *testing.T) {
			body, ct := multipartBody(tc.sum, tc.file, data)
			mustSend(t, c, tc.want, http.MethodPost, p.URL, body, append(auth, "Content-Type", or(tc.ct, ct))...)
		})
	}
	t.Run("no filename", func(t *testing.T) {
		body := &bytes.Buffer{}
		mw := multipart.NewWriter(body)
		fw, _ := mw.CreateFormField("file")
		fw.Write(data)
		mw.Close()
		mustSend(t, c, http.StatusBadRequest, http.MethodPost, p.URL, body, append(auth, "Content-Type", mw.FormDataContentType())...)
	})
	if n := len(p.Received()); n != 2 {
		t.Errorf("%d uploads received, want only the 2 good ones", n)
	}
	checkDirHolds(t, dir, sortedIDs(got)...)
}

func sortedIDs(rs []Received) []string {
	var ids []string
	for _, r := range rs {
		ids = append(ids, r.ID)
	}
	if len(ids) == 2 && ids[0] > ids[1] {
		ids[0], ids[1] = ids[1], ids[0]
	}
	return ids
}

func TestPortalTus(t *testing.T) {
	for _, discard := range []bool{false, true} {
		t.Run("discard="+strconv.FormatBool(discard), func(t *testing.T) {
			ca := newTestCA(t)
			const failAfter = 1 << 20
			o := PortalOptions{Method: PortalTus, Token: portalToken, Discard: discard, FailAfter: failAfter}
			if !discard {
				o.Dir = t.TempDir()
			}
			p := StartPortal(t, ca, o)
			c := portalClient(t, ca.CAFile)
			data := testData(t, 5, 3<<20)
			size := int64(len(data))
			tus := []string{"Authorization", "Bearer " + portalToken, "Tus-Resumable", "1.0.0"}

			r := mustSend(t, c, http.StatusNoContent, http.MethodOptions, p.URL, nil, tus[:2]...)
			if r.Header.Get("Tus-Version") != "1.0.0" || !strings.Contains(r.Header.Get("Tus-Extension"), "creation") {
				t.Errorf("OPTIONS: %v", r.Header)
			}
			meta := EncodeMetadata(map[string]string{"filename": "Ünïcode name.tar", "sha256": SHA256Hex(data)})
			mustSend(t, c, http.StatusPreconditionFailed, http.MethodPost, p.URL, nil, "Authorization", "Bearer "+portalToken,
				"Upload-Length", strconv.FormatInt(size, 10), "Upload-Metadata", meta)
			r = mustSend(t, c, http.StatusCreated, http.MethodPost, p.URL, nil, append(tus,
				"Upload-Length", strconv.FormatInt(size, 10), "Upload-Metadata", meta)...)
			loc := r.Header.Get("Location")
			if !strings.HasPrefix(loc, p.URL+"/") || r.Header.Get("Tus-Resumable") != "1.0.0" {
				t.Fatalf("created: Location %q, Tus-Resumable %q", loc, r.Header.Get("Tus-Resumable"))
			}
			head := func(wantOffset int64) {
				t.Helper()
				r := mustSend(t, c, http.StatusOK, http.MethodHead, loc, nil, tus...)
				if r.Offset() != wantOffset || r.Header.Get("Upload-Length") != strconv.FormatInt(size, 10) {
					t.Fatalf("HEAD: Upload-Offset %q, Upload-Length %q, want %d, %d", r.Header.Get("Upload-Offset"), r.Header.Get("Upload-Length"), wantOffset, size)
				}
			}
			patchHdr := func(offset int64) []string {
				return append(tus, "Content-Type", "application/offset+octet-stream", "Upload-Offset", strconv.FormatInt(offset, 10))
			}
			head(0)

			// The whole body in one PATCH: the portal breaks it after FailAfter bytes and keeps them.
			if r, err := send(c, http.MethodPatch, loc, bytes.NewReader(data), patchHdr(0)...); err == nil {
				t.Fatalf("the PATCH FailAfter breaks was answered: %s", r)
			}
			head(failAfter)
			if got := p.Received(); len(got) != 0 {
				t.Fatalf("received %+v after the broken PATCH", got)
			}
			mustSend(t, c, http.StatusConflict, http.MethodPatch, loc, bytes.NewReader(data), patchHdr(0)...)
			mustSend(t, c, http.StatusUnsupportedMediaType, http.MethodPatch, loc, bytes.NewReader(data[failAfter:]),
				append(patchHdr(failAfter), "Content-Type", "application/octet-stream")...)
			mustSend(t, c, http.StatusRequestEntityTooLarge, http.MethodPatch, loc, bytes.NewReader(append(data[failAfter:], 0)), patchHdr(failAfter)...)
			// Resume: one more MiB, then the rest, chunked.
			r = mustSend(t, c, http.StatusNoContent, http.MethodPatch, loc, bytes.NewReader(data[failAfter:2<<20]), patchHdr(failAfter)...)
			if r.Offset() != 2<<20 {
				t.Errorf("PATCH answered Upload-Offset %d, want %d", r.Offset(), 2<<20)
			}
			head(2 << 20)
			if got := p.Received(); len(got) != 0 {
				t.Fatalf("received %+v before the upload completed", got)
			}
			r = mustSend(t, c, http.StatusNoContent, http.MethodPatch, loc, io.MultiReader(bytes.NewReader(data[2<<20:])), patchHdr(2<<20)...)
			if r.Offset() != size {
				t.Errorf("last PATCH answered Upload-Offset %d, want %d", r.Offset(), size)
			}
			got, err := p.WaitReceived(1, time.Second)
			if err != nil {
				t.Fatal(err)
			}
			checkReceived(t, p, got[0], PortalTus, "Ünïcode name.tar", data)
			if got[0].ID != path.Base(loc) {
				t.Errorf("received id %s, upload URL %s", got[0].ID, loc)
			}
			if !discard {
				checkDirHolds(t, o.Dir, got[0].ID)
			}
			if n := p.BytesReceived(); n != size {
				t.Errorf("BytesReceived %d, want %d: FailAfter, then the rest in two PATCHes", n, size)
			}
			// A completed upload takes no more bytes.
			mustSend(t, c, http.StatusRequestEntityTooLarge, http.MethodPatch, loc, bytes.NewReader([]byte{0}), patchHdr(size)...)
			if n := len(p.Received()); n != 1 {
				t.Errorf("%d uploads received, want 1", n)
			}
		})
	}
}

func TestPortalTusRefusals(t *testing.T) {
	ca := newTestCA(t)
	dir := t.TempDir()
	p := StartPortal(t, ca, PortalOptions{Method: PortalTus, Token: portalToken, Dir: dir})
	c := portalClient(t, ca.CAFile)
	data := testData(t, 6, 1<<20)
	tus := []string{"Authorization", "Bearer " + portalToken, "Tus-Resumable", "1.0.0"}
	create := func(want int, length int64, meta map[string]string) string {
		t.Helper()
		r := mustSend(t, c, want, http.MethodPost, p.URL, nil, append(tus, "Upload-Length", strconv.FormatInt(length, 10), "Upload-Metadata", EncodeMetadata(meta))...)
		return r.Header.Get("Location")
	}
	create(http.StatusBadRequest, 1, map[string]string{"sha256": SHA256Hex(data)})                            // no filename
	create(http.StatusBadRequest, 1, map[string]string{"filename": "a", "sha256": "abc"})                     // not 64 hex digits
	mustSend(t, c, http.StatusBadRequest, http.MethodPost, p.URL, nil, append(tus, "Upload-Length", "-1")...) // not a length
	mustSend(t, c, http.StatusUnauthorized, http.MethodPost, p.URL, nil, tus[2:]...)
	mustSend(t, c, http.StatusNotFound, http.MethodHead, p.URL+"/nosuchupload", nil, tus...)

	// The bytes do not match the claimed sha256: the last PATCH is refused, nothing is kept.
	loc := create(http.StatusCreated, int64(len(data)), map[string]string{"filename": "a", "sha256": SHA256Hex(data[1:])})
	hdr := append(tus, "Content-Type", "application/offset+octet-stream", "Upload-Offset", "0")
	mustSend(t, c, http.StatusBadRequest, http.MethodPatch, loc, bytes.NewReader(data), hdr...)
	mustSend(t, c, http.StatusGone, http.MethodPatch, loc, bytes.NewReader(data), hdr...)

	// An empty file completes when it is created.
	loc = create(http.StatusCreated, 0, map[string]string{"filename": "empty"})
	got := p.Received()
	if len(got) != 1 || got[0].Name != "empty" || got[0].Size != 0 || got[0].SHA256 != SHA256Hex(nil) || got[0].ID != path.Base(loc) {
		t.Fatalf("received %+v, want only the empty file", got)
	}
	checkDirHolds(t, dir, got[0].ID)
}

func TestPortalFailAfter(t *testing.T) {
	for _, method := range []string{PortalPut, PortalPost} {
		t.Run(method, func(t *testing.T) {
			ca := newTestCA(t)
			dir := t.TempDir()
			const failAfter = 1 << 20
			p := StartPortal(t, ca, PortalOptions{Method: method, Token: portalToken, Dir: dir, FailAfter: failAfter})
			c := portalClient(t, ca.CAFile)
			data := testData(t, 7, 4<<20)
			// request sends data and returns the answer and the request body's length.
			request := func() (*Response, int64, error) {
				if method == PortalPut {
					r, err := send(c, http.MethodPut, p.URL, bytes.NewReader(data), putHeaders(portalToken, "f", data)...)
					return r, int64(len(data)), err
				}
				body, ct := multipartBody(SHA256Hex(data), "f", data)
				n := int64(body.Len())
				r, err := send(c, http.MethodPost, p.URL, body, "Authorization", "Bearer "+portalToken, "Content-Type", ct)
				return r, n, err
			}
			if r, _, err := request(); err == nil {
				t.Fatalf("the request FailAfter breaks was answered: %s", r)
			}
			if n := p.BytesReceived(); n != failAfter {
				t.Errorf("BytesReceived %d after the broken request, want FailAfter %d", n, failAfter)
			}
			if got := p.Received(); len(got) != 0 {
				t.Errorf("received %+v from the broken request", got)
			}
			checkDirHolds(t, dir)
			r, bodyLen, err := request()
			if err != nil || r.Status != http.StatusCreated {
				t.Fatalf("second request: %v %v, want 201", r, err)
			}
			got := p.Received()
			if len(got) != 1 {
				t.Fatalf("received %+v, want 1", got)
			}
			checkReceived(t, p, got[0], method, "f", data)
			if n := p.BytesReceived(); n != failAfter+bodyLen {
				t.Errorf("BytesReceived %d, want %d", n, failAfter+bodyLen)
			}
			if n := p.Connections(); n != 2 {
				t.Errorf("Connections %d, want 2 (the broken one, then a new one)", n)
			}
			if reqs := p.Requests(); len(reqs) != 2 || reqs[0].Status != 0 || reqs[1].Status != http.StatusCreated {
				t.Errorf("requests %+v, want a broken one (status 0), then 201", reqs)
			}
		})
	}
}

func TestPortalStatus5xx(t *testing.T) {
	ca := newTestCA(t)
	t.Run("put", func(t *testing.T) {
		p := StartPortal(t, ca, PortalOptions{Method: PortalPut, Token: portalToken, Dir: t.TempDir(), Status5xx: 2})
		c := portalClient(t, ca.CAFile)
		data := testData(t, 8, 1<<20)
		for _, want := range []int{http.StatusServiceUnavailable, http.StatusServiceUnavailable, http.StatusCreated} {
			mustSend(t, c, want, http.MethodPut, p.URL, bytes.NewReader(data), putHeaders(portalToken, "f", data)...)
		}
		if got := p.Received(); len(got) != 1 {
			t.Errorf("received %+v, want 1", got)
		}
		if n := p.BytesReceived(); n != 3*int64(len(data)) {
			t.Errorf("BytesReceived %d, want 3 bodies, %d", n, 3*len(data))
		}
		if n := p.Connections(); n != 1 {
			t.Errorf("Connections %d, want 1: a 503 after the body was read keeps the connection", n)
		}
	})
	t.Run("tus", func(t *testing.T) {
		p := StartPortal(t, ca, PortalOptions{Method: PortalTus, Token: portalToken, Discard: true, Status5xx: 1})
		c := portalClient(t, ca.CAFile)
		data := testData(t, 9, 1<<20)
		tus := []string{"Authorization", "Bearer " + portalToken, "Tus-Resumable", "1.0.0"}
		r := mustSend(t, c, http.StatusCreated, http.MethodPost, p.URL, nil, append(tus, "Upload-Length", strconv.Itoa(len(data)),
			"Upload-Metadata", EncodeMetadata(map[string]string{"filename": "f"}))...)
		hdr := append(tus, "Content-Type", "application/offset+octet-stream", "Upload-Offset", "0")
		mustSend(t, c, http.StatusServiceUnavailable, http.MethodPatch, r.Header.Get("Location"), bytes.NewReader(data), hdr...)
		if r := mustSend(t, c, http.StatusOK, http.MethodHead, r.Header.Get("Location"), nil, tus...); r.Offset() != 0 {
			t.Errorf("offset %d after the 503, want 0", r.Offset())
		}
		mustSend(t, c, http.StatusNoContent, http.MethodPatch, r.Header.Get("Location"), bytes.NewReader(data), hdr...)
		if got := p.Received(); len(got) != 1 || got[0].SHA256 != SHA256Hex(data) {
			t.Errorf("received %+v", got)
		}
	})
}

func TestPortalRedirect(t *testing.T) {
	ca := newTestCA(t)
	target := StartPortal(t, ca, PortalOptions{Method: PortalPut, Dir: t.TempDir()})
	p := StartPortal(t, ca, PortalOptions{Method: PortalPut, Token: portalToken, Dir: t.TempDir(), RedirectTo: target.URL})
	c := portalClient(t, ca.CAFile)
	data := testData(t, 10, 64<<10)
	for _, hdr := range [][]string{putHeaders(portalToken, "f", data), nil} { // with and without the token
		r := mustSend(t, c, http.StatusTemporaryRedirect, http.MethodPut, p.URL, bytes.NewReader(data), hdr...)
		if loc := r.Header.Get("Location"); loc != target.URL {
			t.Errorf("Location %q, want %q", loc, target.URL)
		}
	}
	if got := p.Received(); len(got) != 0 {
		t.Errorf("the redirecting portal received %+v", got)
	}
	if n := target.Connections(); n != 0 {
		t.Errorf("the target has %d connections, want 0 (the client did not follow)", n)
	}
	if n := p.Connections(); n != 1 {
		t.Errorf("Connections %d, want 1", n)
	}
}

func TestPortalConnections(t *testing.T) {
	ca := newTestCA(t)
	p := StartPortal(t, ca, PortalOptions{Method: PortalPut, Discard: true})
	if n := p.Connections(); n != 0 {
		t.Fatalf("Connections %d before any client, want 0", n)
	}
	// A client that does not trust the CA connects, and fails the handshake.
	stranger := portalClient(t, newTestCA(t).CAFile)
	if r, err := send(stranger, http.MethodPut, p.URL, strings.NewReader("x")); err == nil {
		t.Fatalf("a client trusting another CA got %s", r)
	}
	if n := p.Connections(); n != 1 {
		t.Errorf("Connections %d after a failed handshake, want 1", n)
	}
	// Two requests on one kept-alive connection, then a second client.
	c := portalClient(t, ca.CAFile)
	for range 2 {
		mustSend(t, c, http.StatusCreated, http.MethodPut, p.URL, strings.NewReader("hello"))
	}
	if n := p.Connections(); n != 2 {
		t.Errorf("Connections %d, want 2", n)
	}
	mustSend(t, portalClient(t, ca.CAFile), http.StatusCreated, http.MethodPut, p.URL, strings.NewReader("hello"))
	if n := p.Connections(); n != 3 {
		t.Errorf("Connections %d, want 3", n)
	}
	// A plain TCP connection that sends nothing counts too.
	conn, err := net.Dial("tcp", p.Addr)
	if err != nil {
		t.Fatal(err)
	}
	conn.Close()
	deadline := time.Now().Add(5 * time.Second)
	for p.Connections() != 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := p.Connections(); n != 4 {
		t.Errorf("Connections %d after a bare TCP connect, want 4", n)
	}
}

func TestPortalWaitReceived(t *testing.T) {
	ca := newTestCA(t)
	p := StartPortal(t, ca, PortalOptions{Method: PortalPut, Discard: true})
	if got, err := p.WaitReceived(1, 50*time.Millisecond); err == nil || len(got) != 0 {
		t.Fatalf("WaitReceived on an idle portal: %v, %v; want an error", got, err)
	}
	c := portalClient(t, ca.CAFile)
	done := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		_, err := send(c, http.MethodPut, p.URL, strings.NewReader("late"))
		done <- err
	}()
	got, err := p.WaitReceived(1, 30*time.Second)
	if err != nil || len(got) != 1 || got[0].Size != 4 {
		t.Fatalf("WaitReceived: %+v, %v", got, err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// TestPortalCurl: curl -T, as the benchmark uses it, against a put portal.
func TestPortalCurl(t *testing.T) {
	curl, err := exec.LookPath("curl")
	if err != nil {
		t.Fatalf("curl is needed: %v", err)
	}
	ca := newTestCA(t)
	p := StartPortal(t, ca, PortalOptions{Method: PortalPut, Token: portalToken, Dir: t.TempDir()})
	dir := t.TempDir()
	file := filepath.Join(dir, "payload.bin")
	const size = 3 << 20 // over 1 MiB: curl sends Expect: 100-continue
	sum, err := WriteFile(file, size, 11)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	run := func(token string) string {
		t.Helper()
		cmd := exec.CommandContext(ctx, curl, "-sS", "-T", file, "--cacert", ca.CAFile, "-H", "Authorization: Bearer "+token,
			"-o", filepath.Join(dir, "answer"), "-w", "%{http_code} HTTP/%{http_version}", p.URL)
		out, err := cmd.Output()
		if err != nil {
			t.Fatalf("%s: %v\n%s", cmd, err, out)
		}
		return string(out)
	}
	// curl offers h2 too: the portal speaks HTTP/1.1 only, so that FailAfter can hijack.
	if got := run("wrong"); got != "401 HTTP/1.1" {
		t.Errorf("curl with a wrong token: %s, want 401 HTTP/1.1", got)
	}
	if got := run(portalToken); got != "201 HTTP/1.1" {
		answer, _ := os.ReadFile(filepath.Join(dir, "answer"))
		t.Fatalf("curl -T: %s %s, want 201 HTTP/1.1", got, answer)
	}
	got := p.Received()
	if len(got) != 1 || got[0].Name != "upload" || got[0].Size != size || got[0].SHA256 != sum || got[0].ClaimedSHA256 != "" ||
		got[0].Auth != "Bearer "+portalToken {
		t.Errorf("received %+v, want %q, %d bytes, sha256 %s, no claim, the token", got, "upload", size, sum)
	}
}

// BenchmarkPortalPut measures a Discard put portal fed by a Go client over loopback TLS, to
// show what the portal can take (the client's TLS and the portal's hashing share the CPUs).
func BenchmarkPortalPut(b *testing.B) {
	ca, err := NewTestCA(b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	p := StartPortal(b, ca, PortalOptions{Method: PortalPut, Discard: true})
	c, err := NewHTTPSClient(ca.CAFile)
	if err != nil {
		b.Fatal(err)
	}
	const size = 256 << 20
	b.SetBytes(size)
	for b.Loop() {
		req, err := http.NewRequest(http.MethodPut, p.URL, io.LimitReader(zeros{}, size))
		if err != nil {
			b.Fatal(err)
		}
		req.ContentLength = size
		resp, err := c.Do(req)
		if err != nil {
			b.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			b.Fatalf("PUT: %s", resp.Status)
		}
	}
}

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}
