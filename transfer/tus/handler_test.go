package tus_test

import (
	"bytes"
	"context"
	"crypto/md5"
	"crypto/sha1"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"hash"
	"io"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

// randBytes returns n reproducible pseudo-random bytes.
func randBytes(n int, seed uint64) []byte {
	b := make([]byte, n)
	r := rand.NewChaCha8([32]byte{byte(seed), byte(seed >> 8), byte(seed >> 16)})
	_, _ = r.Read(b)
	return b
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func digest(h hash.Hash, b []byte) string {
	h.Write(b)
	return base64.StdEncoding.EncodeToString(h.Sum(nil))
}

// commaSet splits a comma-separated header into a sorted set.
func commaSet(v string) []string {
	var out []string
	for _, p := range strings.Split(v, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	slices.Sort(out)
	return out
}

func TestOptions(t *testing.T) {
	f := newFixture(t)
	id := f.create(f.alice, 100, metadata("filename", "a.txt"))
	f.mustPatch(f.alice, id, 0, []byte("0123456789"))
	tests := []struct {
		name string
		path string
		u    user
	}{
		{"base without auth", "/files/", user{}},
		{"upload without auth", "/files/" + id, user{}},
		{"unknown upload without auth", "/files/0123456789abcdef0123456789abcdef", user{}},
		{"base with auth", "/files/", f.alice},
		{"another user's upload", "/files/" + id, f.bob},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.snapshot()
			// OPTIONS needs no Tus-Resumable.
			resp, body := f.req(http.MethodOptions, tt.path, tt.u, map[string]string{"Tus-Resumable": ""}, nil)
			if resp.StatusCode != http.StatusNoContent {
				t.Fatalf("status %d %s, want 204", resp.StatusCode, body)
			}
			h := resp.Header
			if got := commaSet(h.Get("Tus-Version")); !slices.Contains(got, tusVersion) {
				t.Errorf("Tus-Version = %q, want it to list %s", h.Get("Tus-Version"), tusVersion)
			}
			wantExt := commaSet("creation,creation-with-upload,expiration,checksum,termination")
			if got := commaSet(h.Get("Tus-Extension")); !slices.Equal(got, wantExt) {
				t.Errorf("Tus-Extension = %v, want %v", got, wantExt)
			}
			if got := h.Get("Tus-Max-Size"); got != strconv.Itoa(maxSize) {
				t.Errorf("Tus-Max-Size = %q, want %d", got, maxSize)
			}
			if got := commaSet(h.Get("Tus-Checksum-Algorithm")); !slices.Equal(got, []string{"md5", "sha1", "sha256"}) {
				t.Errorf("Tus-Checksum-Algorithm = %v, want md5, sha1, sha256", got)
			}
			f.unchanged(before)
		})
	}
	if got := f.offset(f.alice, id); got != 10 {
		t.Errorf("offset after OPTIONS = %d, want 10", got)
	}
}

// TestGuards: requests without the protocol version or without valid
// credentials are refused before anything else happens.
func TestGuards(t *testing.T) {
	f := newFixture(t)
	id := f.create(f.alice, 100, metadata("filename", "a.txt"))
	f.mustPatch(f.alice, id, 0, []byte("0123456789"))
	other := f.create(f.bob, 100, metadata("filename", "b.txt"))
	f.mustPatch(f.bob, other, 0, []byte("01234"))
	expired := f.newSession(f.alice.id, time.Now().Add(-time.Minute))

	// Each request would change something if it got through.
	type request struct {
		method, path string
		hdr          map[string]string
		body         string
	}
	requests := []request{
		{http.MethodPost, "/files/", map[string]string{"Upload-Length": "10", "Upload-Metadata": metadata("filename", "x.txt"), "Content-Type": offsetOctet}, "0123456789"},
		{http.MethodHead, "/files/" + id, nil, ""},
		{http.MethodPatch, "/files/" + id, map[string]string{"Upload-Offset": "10", "Content-Type": offsetOctet}, "abcdefghij"},
		{http.MethodDelete, "/files/" + id, nil, ""},
	}
	guards := []struct {
		name       string
		hdr        map[string]string
		status     int
		wantHeader map[string]string
	}{
		{"no Tus-Resumable", map[string]string{"Tus-Resumable": ""}, http.StatusPreconditionFailed, map[string]string{"Tus-Version": tusVersion}},
		{"old Tus-Resumable", map[string]string{"Tus-Resumable": "0.2.2"}, http.StatusPreconditionFailed, map[string]string{"Tus-Version": tusVersion}},
		{"garbage Tus-Resumable", map[string]string{"Tus-Resumable": "1.0.0, 1.0.0"}, http.StatusPreconditionFailed, map[string]string{"Tus-Version": tusVersion}},
		{"no Authorization", map[string]string{"Authorization": ""}, http.StatusUnauthorized, nil},
		{"unknown token", map[string]string{"Authorization": "Bearer AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"}, http.StatusUnauthorized, nil},
		{"empty bearer", map[string]string{"Authorization": "Bearer "}, http.StatusUnauthorized, nil},
		{"token without scheme", map[string]string{"Authorization": f.alice.token}, http.StatusUnauthorized, nil},
		{"Basic scheme", map[string]string{"Authorization": "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:secret"))}, http.StatusUnauthorized, nil},
		{"overlong token", map[string]string{"Authorization": "Bearer " + strings.Repeat("A", 300)}, http.StatusUnauthorized, nil},
		{"expired session", map[string]string{"Authorization": "Bearer " + expired}, http.StatusUnauthorized, nil},
	}
	for _, g := range guards {
		for _, r := range requests {
			t.Run(g.name+"/"+r.method, func(t *testing.T) {
				hdr := map[string]string{}
				for k, v := range r.hdr {
					hdr[k] = v
				}
				for k, v := range g.hdr {
					hdr[k] = v
				}
				before := f.snapshot()
				var body io.Reader
				if r.body != "" {
					body = strings.NewReader(r.body)
				}
				resp, _ := f.req(r.method, r.path, f.alice, hdr, body)
				if resp.StatusCode != g.status {
					t.Fatalf("status %d, want %d", resp.StatusCode, g.status)
				}
				for k, v := range g.wantHeader {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
				if g.status == http.StatusUnauthorized && !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
					t.Errorf("WWW-Authenticate = %q, want a Bearer challenge", resp.Header.Get("WWW-Authenticate"))
				}
				f.unchanged(before)
			})
		}
	}
	if got := f.offset(f.alice, id); got != 10 {
		t.Errorf("offset = %d, want 10", got)
	}
	if got := f.offset(f.bob, other); got != 5 {
		t.Errorf("other upload's offset = %d, want 5", got)
	}
}

func TestCreateRefused(t *testing.T) {
	f := newFixture(t)
	bystander := f.create(f.bob, 100, metadata("filename", "b.txt"))
	f.mustPatch(f.bob, bystander, 0, []byte("01234"))
	okMD := metadata("filename", "a.txt")
	tests := []struct {
		name   string
		hdr    map[string]string
		body   string
		status int
	}{
		{"no Upload-Length", map[string]string{"Upload-Length": ""}, "", http.StatusBadRequest},
		{"negative length", map[string]string{"Upload-Length": "-1"}, "", http.StatusBadRequest},
		{"plus sign", map[string]string{"Upload-Length": "+5"}, "", http.StatusBadRequest},
		// " 5" never reaches the handler as such: HTTP strips the optional
		// whitespace around a field value (RFC 9110 §5.5). headers_test.go
		// covers it in parseUint.
		{"inner space", map[string]string{"Upload-Length": "5 0"}, "", http.StatusBadRequest},
		{"exponent", map[string]string{"Upload-Length": "1e3"}, "", http.StatusBadRequest},
		{"hex", map[string]string{"Upload-Length": "0x10"}, "", http.StatusBadRequest},
		{"decimal point", map[string]string{"Upload-Length": "10.0"}, "", http.StatusBadRequest},
		{"two values", map[string]string{"Upload-Length": "10, 10"}, "", http.StatusBadRequest},
		{"20 digits", map[string]string{"Upload-Length": "12345678901234567890"}, "", http.StatusBadRequest},
		{"overflow", map[string]string{"Upload-Length": "9223372036854775808"}, "", http.StatusBadRequest},
		{"one over the maximum", map[string]string{"Upload-Length": strconv.Itoa(maxSize + 1)}, "", http.StatusRequestEntityTooLarge},
		{"max int64", map[string]string{"Upload-Length": "9223372036854775807"}, "", http.StatusRequestEntityTooLarge},
		{"deferred length", map[string]string{"Upload-Length": "", "Upload-Defer-Length": "1"}, "", http.StatusBadRequest},
		{"deferred and given length", map[string]string{"Upload-Defer-Length": "1"}, "", http.StatusBadRequest},
		{"concatenation", map[string]string{"Upload-Concat": "partial"}, "", http.StatusBadRequest},
		{"no metadata", map[string]string{"Upload-Metadata": ""}, "", http.StatusBadRequest},
		{"no filename", map[string]string{"Upload-Metadata": metadata("name", "a.txt")}, "", http.StatusBadRequest},
		{"filename without value", map[string]string{"Upload-Metadata": "filename"}, "", http.StatusBadRequest},
		{"bad base64", map[string]string{"Upload-Metadata": "filename a.txt!"}, "", http.StatusBadRequest},
		{"unpadded base64", map[string]string{"Upload-Metadata": "filename YS50eHQ"}, "", http.StatusBadRequest},
		{"url-safe base64", map[string]string{"Upload-Metadata": "filename P_8-"}, "", http.StatusBadRequest},
		{"duplicate key", map[string]string{"Upload-Metadata": okMD + "," + metadata("filename", "b.txt")}, "", http.StatusBadRequest},
		{"empty pair", map[string]string{"Upload-Metadata": okMD + ",,k eA=="}, "", http.StatusBadRequest},
		{"trailing comma", map[string]string{"Upload-Metadata": okMD + ","}, "", http.StatusBadRequest},
		{"non-ASCII key", map[string]string{"Upload-Metadata": okMD + ",n\u00e9 eA=="}, "", http.StatusBadRequest},
		{"metadata over the limit", map[string]string{"Upload-Metadata": metadata("filename", "a.txt", "pad", strings.Repeat("x", maxMetadata))}, "", http.StatusBadRequest},
		{"filename ..", map[string]string{"Upload-Metadata": metadata("filename", "..")}, "", http.StatusBadRequest},
		{"filename ../x", map[string]string{"Upload-Metadata": metadata("filename", "../x")}, "", http.StatusBadRequest},
		{"filename a/b", map[string]string{"Upload-Metadata": metadata("filename", "a/b")}, "", http.StatusBadRequest},
		{"filename a\\b", map[string]string{"Upload-Metadata": metadata("filename", `a\b`)}, "", http.StatusBadRequest},
		{"filename /etc/passwd", map[string]string{"Upload-Metadata": metadata("filename", "/etc/passwd")}, "", http.StatusBadRequest},
		{"filename CON", map[string]string{"Upload-Metadata": metadata("filename", "CON")}, "", http.StatusBadRequest},
		{"filename com1.txt", map[string]string{"Upload-Metadata": metadata("filename", "com1.txt")}, "", http.StatusBadRequest},
		{"filename with NUL", map[string]string{"Upload-Metadata": metadata("filename", "a\x00.txt")}, "", http.StatusBadRequest},
		{"filename with newline", map[string]string{"Upload-Metadata": metadata("filename", "a\n.txt")}, "", http.StatusBadRequest},
		{"filename with bidi override", map[string]string{"Upload-Metadata": metadata("filename", "report\u202etxt.exe")}, "", http.StatusBadRequest},
		{"filename not UTF-8", map[string]string{"Upload-Metadata": metadata("filename", "a\xff.txt")}, "", http.StatusBadRequest},
		{"filename 256 bytes", map[string]string{"Upload-Metadata": metadata("filename", strings.Repeat("a", 252)+".txt")}, "", http.StatusBadRequest},
		{"filename trailing dot", map[string]string{"Upload-Metadata": metadata("filename", "a.")}, "", http.StatusBadRequest},
		{"sha256 too short", map[string]string{"Upload-Metadata": metadata("filename", "a.txt", "sha256", "abc")}, "", http.StatusBadRequest},
		{"sha256 not hex", map[string]string{"Upload-Metadata": metadata("filename", "a.txt", "sha256", strings.Repeat("g", 64))}, "", http.StatusBadRequest},
		{"sha256 65 digits", map[string]string{"Upload-Metadata": metadata("filename", "a.txt", "sha256", strings.Repeat("a", 65))}, "", http.StatusBadRequest},
		{"sha256 empty", map[string]string{"Upload-Metadata": okMD + ",sha256"}, "", http.StatusBadRequest},
		{"data with the wrong Content-Type", map[string]string{"Content-Type": "application/octet-stream"}, "hello", http.StatusUnsupportedMediaType},
		{"data without Content-Type", nil, "hello", http.StatusUnsupportedMediaType},
		{"data longer than Upload-Length", map[string]string{"Upload-Length": "3", "Content-Type": offsetOctet}, "hello", http.StatusRequestEntityTooLarge},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			hdr := map[string]string{"Upload-Length": "100", "Upload-Metadata": okMD}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			var body io.Reader
			if tt.body != "" {
				body = strings.NewReader(tt.body)
			}
			before := f.snapshot()
			resp, rbody := f.req(http.MethodPost, "/files/", f.alice, hdr, body)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, rbody, tt.status)
			}
			if loc := resp.Header.Get("Location"); loc != "" {
				t.Errorf("refused creation answered Location %q", loc)
			}
			if got := resp.Header.Get("Tus-Resumable"); got != tusVersion {
				t.Errorf("Tus-Resumable = %q, want %s", got, tusVersion)
			}
			f.unchanged(before)
		})
	}
	if got := f.offset(f.bob, bystander); got != 5 {
		t.Errorf("bystander's offset = %d, want 5", got)
	}
}

func TestCreate(t *testing.T) {
	f := newFixture(t)
	t.Run("plain", func(t *testing.T) {
		md := metadata("note", "", "filename", "results 2024.csv")
		start := time.Now()
		resp, body := f.req(http.MethodPost, "/files/", f.alice, map[string]string{"Upload-Length": "100", "Upload-Metadata": md}, nil)
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("status %d %s, want 201", resp.StatusCode, body)
		}
		id := idOf(t, resp)
		exp, err := http.ParseTime(resp.Header.Get("Upload-Expires"))
		if err != nil {
			t.Fatalf("Upload-Expires %q: %v", resp.Header.Get("Upload-Expires"), err)
		}
		if lo, hi := start.Add(incompleteTTL-time.Minute), time.Now().Add(incompleteTTL+time.Minute); exp.Before(lo) || exp.After(hi) {
			t.Errorf("Upload-Expires = %v, want about %v", exp, start.Add(incompleteTTL))
		}
		if got := resp.Header.Get("Tus-Resumable"); got != tusVersion {
			t.Errorf("Tus-Resumable = %q", got)
		}

		resp, _ = f.req(http.MethodHead, "/files/"+id, f.alice, nil, nil)
		want := map[string]string{
			"Upload-Offset": "0", "Upload-Length": "100", "Upload-Metadata": md,
			"Cache-Control": "no-store", "Tus-Resumable": tusVersion,
		}
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("HEAD: %d", resp.StatusCode)
		}
		for k, v := range want {
			if got := resp.Header.Get(k); got != v {
				t.Errorf("HEAD %s = %q, want %q", k, got, v)
			}
		}
		if got, err := http.ParseTime(resp.Header.Get("Upload-Expires")); err != nil || !got.Equal(exp) {
			t.Errorf("HEAD Upload-Expires = %q, want %v", resp.Header.Get("Upload-Expires"), exp)
		}
		if code, st := f.status(f.alice, id); code != http.StatusOK || st.Status != "uploading" || st.Name != "results 2024.csv" || st.Size != 100 {
			t.Errorf("status = %d %+v", code, st)
		}
	})
	t.Run("largest allowed, upper-case sha256", func(t *testing.T) {
		sum := strings.ToUpper(sha256Hex([]byte("x")))
		id := f.create(f.alice, maxSize, metadata("filename", "big.bin", "sha256", sum))
		if got := f.offset(f.alice, id); got != 0 {
			t.Errorf("offset = %d", got)
		}
	})
	t.Run("with data", func(t *testing.T) {
		data := randBytes(100_000, 1)
		first := data[:70_000] // more than one checkpoint
		before := f.snapshot()
		resp, body := f.req(http.MethodPost, "/files/", f.alice, map[string]string{
			"Upload-Length": strconv.Itoa(len(data)), "Upload-Metadata": metadata("filename", "with-data.bin"),
			"Content-Type": offsetOctet,
		}, bytes.NewReader(first))
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("status %d %s, want 201", resp.StatusCode, body)
		}
		if got := resp.Header.Get("Upload-Offset"); got != strconv.Itoa(len(first)) {
			t.Errorf("Upload-Offset = %q, want %d", got, len(first))
		}
		id := idOf(t, resp)
		if got := len(f.snapshot().uploads); got != len(before.uploads)+1 {
			t.Errorf("%d uploads after one creation, had %d", got, len(before.uploads))
		}
		if got := f.offset(f.alice, id); got != int64(len(first)) {
			t.Errorf("HEAD offset = %d, want %d", got, len(first))
		}
		f.mustPatch(f.alice, id, int64(len(first)), data[len(first):])
		st := f.settle(f.alice, id)
		if st.Status != "available" || st.SHA256 != sha256Hex(data) || st.Name != "with-data.bin" {
			t.Errorf("settled as %+v, want available with sha256 %s", st, sha256Hex(data))
		}
	})
	t.Run("whole file with data", func(t *testing.T) {
		data := []byte("all of it at once")
		resp, body := f.req(http.MethodPost, "/files/", f.alice, map[string]string{
			"Upload-Length": strconv.Itoa(len(data)), "Upload-Metadata": metadata("filename", "once.txt"),
			"Content-Type": offsetOctet,
		}, bytes.NewReader(data))
		if resp.StatusCode != http.StatusCreated || resp.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
			t.Fatalf("status %d Upload-Offset %q %s", resp.StatusCode, resp.Header.Get("Upload-Offset"), body)
		}
		st := f.settle(f.alice, idOf(t, resp))
		if st.Status != "available" || st.SHA256 != sha256Hex(data) {
			t.Errorf("settled as %+v", st)
		}
	})
}

func TestHead(t *testing.T) {
	f := newFixture(t)
	md := metadata("filename", "a.txt")
	id := f.create(f.alice, 100, md)
	f.mustPatch(f.alice, id, 0, []byte("0123456789"))
	gone := f.create(f.alice, 100, metadata("filename", "gone.txt"))
	if resp, _ := f.req(http.MethodDelete, "/files/"+gone, f.alice, nil, nil); resp.StatusCode != http.StatusNoContent {
		t.Fatalf("DELETE: %d", resp.StatusCode)
	}
	tests := []struct {
		name   string
		u      user
		path   string
		status []int
	}{
		{"own", f.alice, "/files/" + id, []int{http.StatusOK}},
		{"another user's", f.bob, "/files/" + id, []int{http.StatusNotFound}},
		{"unknown", f.alice, "/files/0123456789abcdef0123456789abcdef", []int{http.StatusNotFound}},
		{"overlong id", f.alice, "/files/" + strings.Repeat("a", 65), []int{http.StatusNotFound}},
		{"id with dots", f.alice, "/files/..%2f..%2fdb", []int{http.StatusNotFound}},
		{"terminated", f.alice, "/files/" + gone, []int{http.StatusGone, http.StatusNotFound}},
		{"another user's terminated", f.bob, "/files/" + gone, []int{http.StatusNotFound}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.snapshot()
			resp, _ := f.req(http.MethodHead, tt.path, tt.u, nil, nil)
			if !slices.Contains(tt.status, resp.StatusCode) {
				t.Fatalf("status %d, want one of %v", resp.StatusCode, tt.status)
			}
			if resp.StatusCode == http.StatusOK {
				want := map[string]string{"Upload-Offset": "10", "Upload-Length": "100", "Upload-Metadata": md, "Cache-Control": "no-store"}
				for k, v := range want {
					if got := resp.Header.Get(k); got != v {
						t.Errorf("%s = %q, want %q", k, got, v)
					}
				}
			} else {
				for _, k := range []string{"Upload-Offset", "Upload-Length", "Upload-Metadata"} {
					if v := resp.Header.Get(k); v != "" {
						t.Errorf("refused HEAD reveals %s: %q", k, v)
					}
				}
			}
			f.unchanged(before)
		})
	}
}

// TestPatchRefused: every malformed or misdirected PATCH gets its 4xx and
// changes nothing, neither in its target nor in another upload.
func TestPatchRefused(t *testing.T) {
	f := newFixture(t)
	const length = 200_000
	data := randBytes(length, 2)
	id := f.create(f.alice, length, metadata("filename", "a.bin"))
	f.mustPatch(f.alice, id, 0, data[:1000])
	other := f.create(f.bob, 100, metadata("filename", "b.bin"))
	f.mustPatch(f.bob, other, 0, []byte("01234"))
	rest := data[1000:]
	sha1Sum := digest(sha1.New(), rest[:100])
	tests := []struct {
		name       string
		u          user
		target     string
		hdr        map[string]string
		body       []byte
		chunked    bool // send without Content-Length
		status     int
		wantOffset string // Upload-Offset in the answer, if any
	}{
		{name: "wrong Content-Type", hdr: map[string]string{"Content-Type": "application/octet-stream"}, status: http.StatusUnsupportedMediaType},
		{name: "Content-Type with parameters", hdr: map[string]string{"Content-Type": offsetOctet + "; charset=utf-8"}, status: http.StatusUnsupportedMediaType},
		{name: "no Content-Type", hdr: map[string]string{"Content-Type": ""}, status: http.StatusUnsupportedMediaType},
		{name: "no Upload-Offset", hdr: map[string]string{"Upload-Offset": ""}, status: http.StatusBadRequest},
		{name: "garbage Upload-Offset", hdr: map[string]string{"Upload-Offset": "ten"}, status: http.StatusBadRequest},
		{name: "negative Upload-Offset", hdr: map[string]string{"Upload-Offset": "-1000"}, status: http.StatusBadRequest},
		{name: "Upload-Offset with sign", hdr: map[string]string{"Upload-Offset": "+1000"}, status: http.StatusBadRequest},
		{name: "Upload-Offset 1e3", hdr: map[string]string{"Upload-Offset": "1e3"}, status: http.StatusBadRequest},
		{name: "overflowing Upload-Offset", hdr: map[string]string{"Upload-Offset": "9223372036854775808"}, status: http.StatusBadRequest},
		{name: "offset behind", hdr: map[string]string{"Upload-Offset": "0"}, status: http.StatusConflict, wantOffset: "1000"},
		{name: "offset ahead", hdr: map[string]string{"Upload-Offset": "1100"}, status: http.StatusConflict, wantOffset: "1000"},
		{name: "Content-Length past Upload-Length", body: append(bytes.Clone(rest), 'x'), status: http.StatusRequestEntityTooLarge},
		{name: "chunked body one byte too long", body: append(bytes.Clone(rest), 'x'), chunked: true, status: http.StatusRequestEntityTooLarge},
		{name: "chunked body far too long", body: append(bytes.Clone(rest), randBytes(100_000, 3)...), chunked: true, status: http.StatusRequestEntityTooLarge},
		{name: "unknown checksum algorithm", hdr: map[string]string{"Upload-Checksum": "crc32 AAAAAA=="}, status: http.StatusBadRequest},
		{name: "checksum algorithm in upper case", hdr: map[string]string{"Upload-Checksum": "SHA1 " + sha1Sum}, status: http.StatusBadRequest},
		{name: "checksum without digest", hdr: map[string]string{"Upload-Checksum": "sha1"}, status: http.StatusBadRequest},
		{name: "checksum digest not base64", hdr: map[string]string{"Upload-Checksum": "sha1 !!!!"}, status: http.StatusBadRequest},
		{name: "checksum digest of the wrong size", hdr: map[string]string{"Upload-Checksum": "sha256 " + sha1Sum}, status: http.StatusBadRequest},
		{name: "wrong sha1", hdr: map[string]string{"Upload-Checksum": "sha1 " + digest(sha1.New(), []byte("other"))}, status: 460},
		{name: "wrong sha256 over several checkpoints", body: rest[:150_000], hdr: map[string]string{"Upload-Checksum": "sha256 " + digest(sha256.New(), rest[:149_999])}, status: 460},
		{name: "wrong md5, chunked", chunked: true, hdr: map[string]string{"Upload-Checksum": "md5 " + digest(md5.New(), nil)}, status: 460},
		{name: "another user's upload", u: f.bob, status: http.StatusNotFound},
		{name: "another user's upload, wrong offset", u: f.bob, hdr: map[string]string{"Upload-Offset": "0"}, status: http.StatusNotFound},
		{name: "own upload of another user", target: other, hdr: map[string]string{"Upload-Offset": "5"}, status: http.StatusNotFound},
		{name: "unknown upload", target: "0123456789abcdef0123456789abcdef", status: http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			u := f.alice
			if tt.u.token != "" {
				u = tt.u
			}
			target := id
			if tt.target != "" {
				target = tt.target
			}
			body := tt.body
			if body == nil {
				body = rest[:100]
			}
			hdr := map[string]string{"Content-Type": offsetOctet, "Upload-Offset": "1000"}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			var r io.Reader = bytes.NewReader(body)
			if tt.chunked {
				r = struct{ io.Reader }{r} // hides the length: chunked encoding
			}
			before := f.snapshot()
			resp, rbody := f.req(http.MethodPatch, "/files/"+target, u, hdr, r)
			if resp.StatusCode != tt.status {
				t.Fatalf("status %d %q, want %d", resp.StatusCode, rbody, tt.status)
			}
			if got := resp.Header.Get("Upload-Offset"); got != tt.wantOffset {
				t.Errorf("Upload-Offset = %q, want %q", got, tt.wantOffset)
			}
			f.unchanged(before)
		})
	}
	if got := f.offset(f.alice, id); got != 1000 {
		t.Fatalf("offset = %d, want 1000", got)
	}
	if got := f.offset(f.bob, other); got != 5 {
		t.Errorf("other upload's offset = %d, want 5", got)
	}
	// The upload still completes with exactly the right bytes.
	f.mustPatch(f.alice, id, 1000, rest)
	if st := f.settle(f.alice, id); st.Status != "available" || st.SHA256 != sha256Hex(data) {
		t.Errorf("settled as %+v, want available with sha256 %s", st, sha256Hex(data))
	}
}

func TestPatchChecksum(t *testing.T) {
	f := newFixture(t)
	data := randBytes(300_000, 4)
	id := f.create(f.alice, int64(len(data)), metadata("filename", "summed.bin"))
	tests := []struct {
		alg  string
		new  func() hash.Hash
		from int
		to   int
	}{
		{"sha1", sha1.New, 0, 1000},
		{"sha256", sha256.New, 1000, 150_000}, // spans checkpoints
		{"md5", md5.New, 150_000, len(data)},  // the last chunk completes the upload
	}
	for _, tt := range tests {
		t.Run(tt.alg, func(t *testing.T) {
			chunk := data[tt.from:tt.to]
			bad := bytes.Clone(chunk)
			bad[len(bad)/2] ^= 1
			before := f.snapshot()
			// The digest of other bytes: 460, and none of the chunk is kept.
			resp, body := f.patch(f.alice, id, int64(tt.from), bad, map[string]string{"Upload-Checksum": tt.alg + " " + digest(tt.new(), chunk)})
			if resp.StatusCode != 460 {
				t.Fatalf("wrong digest: status %d %s, want 460", resp.StatusCode, body)
			}
			f.unchanged(before)
			if got := f.offset(f.alice, id); got != int64(tt.from) {
				t.Fatalf("offset after 460 = %d, want %d", got, tt.from)
			}
			// The right chunk with its digest succeeds.
			resp, body = f.patch(f.alice, id, int64(tt.from), chunk, map[string]string{"Upload-Checksum": tt.alg + " " + digest(tt.new(), chunk)})
			if resp.StatusCode != http.StatusNoContent || resp.Header.Get("Upload-Offset") != strconv.Itoa(tt.to) {
				t.Fatalf("right digest: status %d Upload-Offset %q %s", resp.StatusCode, resp.Header.Get("Upload-Offset"), body)
			}
		})
	}
	if st := f.settle(f.alice, id); st.Status != "available" || st.SHA256 != sha256Hex(data) {
		t.Errorf("settled as %+v, want available with sha256 %s", st, sha256Hex(data))
	}
}

// TestPatchConcurrent: while one PATCH is writing, another on the same upload
// is refused (423, or 409 once the offset moved) and changes nothing, and the
// first one completes correctly.
func TestPatchConcurrent(t *testing.T) {
	f := newFixture(t)
	data := randBytes(300_000, 5)
	id := f.create(f.alice, int64(len(data)), metadata("filename", "busy.bin"))

	pr, pw := io.Pipe()
	r, err := http.NewRequest(http.MethodPatch, f.srv.URL+"/files/"+id, pr)
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Tus-Resumable", tusVersion)
	r.Header.Set("Authorization", "Bearer "+f.alice.token)
	r.Header.Set("Content-Type", offsetOctet)
	r.Header.Set("Upload-Offset", "0")
	type result struct {
		resp *http.Response
		err  error
	}
	first := make(chan result, 1)
	go func() {
		resp, err := f.srv.Client().Do(r)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		first <- result{resp, err}
	}()
	// Exactly one checkpoint's worth: the first PATCH records it and then
	// waits for more, holding the upload.
	if _, err := pw.Write(data[:checkpointBytes]); err != nil {
		t.Fatal(err)
	}
	waitOffset(t, f, id, checkpointBytes)

	tests := []struct {
		name   string
		method string
		off    int64
		status []int
	}{
		{"PATCH at the current offset", http.MethodPatch, checkpointBytes, []int{http.StatusLocked, http.StatusConflict}},
		{"PATCH at the start", http.MethodPatch, 0, []int{http.StatusConflict, http.StatusLocked}},
		{"DELETE", http.MethodDelete, 0, []int{http.StatusLocked, http.StatusConflict}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			before := f.snapshot()
			var resp *http.Response
			if tt.method == http.MethodPatch {
				resp, _ = f.patch(f.alice, id, tt.off, []byte("intruder"), nil)
			} else {
				resp, _ = f.req(tt.method, "/files/"+id, f.alice, nil, nil)
			}
			if !slices.Contains(tt.status, resp.StatusCode) {
				t.Fatalf("status %d, want one of %v", resp.StatusCode, tt.status)
			}
			f.unchanged(before)
		})
	}

	if _, err := pw.Write(data[checkpointBytes:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	res := <-first
	if res.err != nil {
		t.Fatalf("first PATCH: %v", res.err)
	}
	if res.resp.StatusCode != http.StatusNoContent || res.resp.Header.Get("Upload-Offset") != strconv.Itoa(len(data)) {
		t.Fatalf("first PATCH: %d Upload-Offset %q", res.resp.StatusCode, res.resp.Header.Get("Upload-Offset"))
	}
	if st := f.settle(f.alice, id); st.Status != "available" || st.SHA256 != sha256Hex(data) {
		t.Errorf("settled as %+v, want available with sha256 %s", st, sha256Hex(data))
	}
}

// waitOffset polls HEAD until the upload's offset is want.
func waitOffset(t *testing.T, f *fixture, id string, want int64) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		got := f.offset(f.alice, id)
		if got == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("offset stayed %d, want %d", got, want)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestTerminate(t *testing.T) {
	f := newFixture(t)
	id := f.create(f.alice, 100_000, metadata("filename", "doomed.bin"))
	f.mustPatch(f.alice, id, 0, randBytes(70_000, 6))
	key := "uploads/" + id
	if got := len(f.object(key)); got != 70_000 {
		t.Fatalf("stored %d bytes, want 70000", got)
	}

	t.Run("another user", func(t *testing.T) {
		before := f.snapshot()
		resp, _ := f.req(http.MethodDelete, "/files/"+id, f.bob, nil, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
		f.unchanged(before)
	})
	t.Run("unknown", func(t *testing.T) {
		before := f.snapshot()
		resp, _ := f.req(http.MethodDelete, "/files/0123456789abcdef0123456789abcdef", f.alice, nil, nil)
		if resp.StatusCode != http.StatusNotFound {
			t.Fatalf("status %d, want 404", resp.StatusCode)
		}
		f.unchanged(before)
	})
	t.Run("owner", func(t *testing.T) {
		before := f.snapshot()
		resp, body := f.req(http.MethodDelete, "/files/"+id, f.alice, nil, nil)
		if resp.StatusCode != http.StatusNoContent {
			t.Fatalf("status %d %s, want 204", resp.StatusCode, body)
		}
		if f.object(key) != nil {
			t.Errorf("the stored bytes of a terminated upload are still at %s", key)
		}
		if after := f.snapshot(); after.audit != before.audit+1 {
			t.Errorf("termination wrote %d audit records, want 1", after.audit-before.audit)
		}
	})
	t.Run("afterwards", func(t *testing.T) {
		before := f.snapshot()
		for _, tt := range []struct {
			method string
			hdr    map[string]string
			body   io.Reader
		}{
			{http.MethodHead, nil, nil},
			{http.MethodPatch, map[string]string{"Content-Type": offsetOctet, "Upload-Offset": "70000"}, strings.NewReader("more")},
			{http.MethodDelete, nil, nil},
		} {
			resp, _ := f.req(tt.method, "/files/"+id, f.alice, tt.hdr, tt.body)
			if resp.StatusCode != http.StatusGone && resp.StatusCode != http.StatusNotFound {
				t.Errorf("%s: status %d, want 410 or 404", tt.method, resp.StatusCode)
			}
		}
		f.unchanged(before)
		if code, st := f.status(f.alice, id); code == http.StatusOK && (st.Status == "uploading" || st.Status == "available") {
			t.Errorf("status of a terminated upload: %+v", st)
		}
	})
}

func TestFullFlow(t *testing.T) {
	f := newFixture(t)
	ctx := context.Background()

	upload := func(t *testing.T, u user, name string, data []byte, extra ...string) string {
		t.Helper()
		id := f.create(u, int64(len(data)), metadata(append([]string{"filename", name}, extra...)...))
		// Three PATCHes of about a third each.
		cuts := []int{0, len(data) / 3, 2 * len(data) / 3, len(data)}
		for i := 0; i < 3 && len(data) > 0; i++ {
			f.mustPatch(u, id, int64(cuts[i]), data[cuts[i]:cuts[i+1]])
		}
		return id
	}
	listed := func(t *testing.T, u user, name string) (arrival, bool) {
		t.Helper()
		for _, a := range f.arrivals(u) {
			if a.Name == name {
				return a, true
			}
		}
		return arrival{}, false
	}

	first := randBytes(300_000, 7)
	t.Run("three patches", func(t *testing.T) {
		start := time.Now().Add(-time.Second)
		id := upload(t, f.alice, "report.csv", first)
		if got := f.offset(f.alice, id); got != int64(len(first)) {
			t.Errorf("HEAD offset after the last PATCH = %d", got)
		}
		st := f.settle(f.alice, id)
		want := uploadStatus{ID: id, Name: "report.csv", Size: int64(len(first)), Offset: int64(len(first)), Status: "available", SHA256: sha256Hex(first)}
		if st != want {
			t.Fatalf("status = %+v\nwant     %+v", st, want)
		}
		a, ok := listed(t, f.alice, "report.csv")
		if !ok {
			t.Fatalf("report.csv not in Arrivals: %+v", f.arrivals(f.alice))
		}
		if a.Size != int64(len(first)) || a.SHA256 != sha256Hex(first) {
			t.Errorf("arrival = %+v, want size %d sha256 %s", a, len(first), sha256Hex(first))
		}
		if a.CreatedAt.Before(start) || a.CreatedAt.After(time.Now().Add(time.Second)) {
			t.Errorf("created_at = %v, want about now", a.CreatedAt)
		}
		if got := a.ExpiresAt.Sub(a.CreatedAt); got != retention {
			t.Errorf("expires_at - created_at = %v, want %v", got, retention)
		}
		if got := f.object("arrivals/alice/report.csv"); !bytes.Equal(got, first) {
			t.Errorf("stored Arrivals object has %d bytes, not the upload's", len(got))
		}
		if f.object("uploads/"+id) != nil {
			t.Errorf("the upload's bytes are still under uploads/")
		}
		if n := len(f.arrivals(f.bob)); n != 0 {
			t.Errorf("bob sees %d of alice's files", n)
		}
		if code, _ := f.status(f.bob, id); code != http.StatusNotFound {
			t.Errorf("bob's GET of alice's upload status: %d, want 404", code)
		}
	})
	t.Run("same name again", func(t *testing.T) {
		second := randBytes(1000, 8)
		id := upload(t, f.alice, "report.csv", second)
		st := f.settle(f.alice, id)
		if st.Status != "available" || st.Name != "report (1).csv" || st.SHA256 != sha256Hex(second) {
			t.Fatalf("status = %+v, want available as %q", st, "report (1).csv")
		}
		if a, ok := listed(t, f.alice, "report (1).csv"); !ok || a.SHA256 != sha256Hex(second) || a.Size != 1000 {
			t.Errorf("report (1).csv listed %v as %+v", ok, a)
		}
		if a, ok := listed(t, f.alice, "report.csv"); !ok || a.SHA256 != sha256Hex(first) {
			t.Errorf("report.csv listed %v as %+v", ok, a)
		}
		if !bytes.Equal(f.object("arrivals/alice/report.csv"), first) {
			t.Error("report.csv was overwritten")
		}
		if !bytes.Equal(f.object("arrivals/alice/report (1).csv"), second) {
			t.Error("report (1).csv does not hold the second upload")
		}
	})
	t.Run("same long name again", func(t *testing.T) {
		// A 255-byte name whose extension leaves no room for a suffix
		// before it: the clash still gets a free name within the limit.
		name := "a." + strings.Repeat("x", 253)
		var names []string
		for i := range 2 {
			id := upload(t, f.alice, name, []byte{byte(i)})
			st := f.settle(f.alice, id)
			if st.Status != "available" || len(st.Name) > 255 {
				t.Fatalf("upload %d: %+v", i, st)
			}
			names = append(names, st.Name)
		}
		if names[0] != name || names[1] == name {
			t.Errorf("published as %.20q... and %.20q...", names[0], names[1])
		}
	})
	t.Run("same name, other user", func(t *testing.T) {
		data := []byte("bob's own report")
		id := upload(t, f.bob, "report.csv", data)
		if st := f.settle(f.bob, id); st.Status != "available" || st.Name != "report.csv" {
			t.Fatalf("status = %+v", st)
		}
		if !bytes.Equal(f.object("arrivals/bob/report.csv"), data) || !bytes.Equal(f.object("arrivals/alice/report.csv"), first) {
			t.Error("one user's file touched the other's")
		}
	})
	t.Run("expected sha256 matches", func(t *testing.T) {
		data := randBytes(5000, 9)
		id := upload(t, f.alice, "checked.bin", data, "sha256", strings.ToUpper(sha256Hex(data)))
		if st := f.settle(f.alice, id); st.Status != "available" || st.SHA256 != sha256Hex(data) {
			t.Fatalf("status = %+v", st)
		}
	})
	t.Run("expected sha256 differs", func(t *testing.T) {
		data := randBytes(5000, 10)
		id := upload(t, f.alice, "tampered.bin", data, "sha256", sha256Hex([]byte("something else")))
		st := f.settle(f.alice, id)
		if st.Status != "rejected" || st.Reason == "" {
			t.Fatalf("status = %+v, want rejected with a reason", st)
		}
		if _, ok := listed(t, f.alice, "tampered.bin"); ok {
			t.Error("a rejected file is listed in Arrivals")
		}
		if f.object("arrivals/alice/tampered.bin") != nil || f.object("uploads/"+id) != nil {
			t.Error("a rejected file's bytes are still stored")
		}
	})
	t.Run("EICAR", func(t *testing.T) {
		eicar := []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)
		id := upload(t, f.alice, "eicar.com", eicar)
		st := f.settle(f.alice, id)
		if st.Status != "quarantined" || st.Reason == "" {
			t.Fatalf("status = %+v, want quarantined with a reason", st)
		}
		if _, ok := listed(t, f.alice, "eicar.com"); ok {
			t.Error("a quarantined file is listed in Arrivals")
		}
		if f.object("arrivals/alice/eicar.com") != nil {
			t.Error("a quarantined file is in Arrivals")
		}
		if !bytes.Equal(f.object("quarantine/"+id), eicar) {
			t.Error("the quarantined bytes are not under quarantine/")
		}
	})
	t.Run("EICAR across PATCHes", func(t *testing.T) {
		eicar := []byte(`X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)
		data := append(append(randBytes(100_000, 11), eicar...), randBytes(100_000, 12)...)
		id := f.create(f.alice, int64(len(data)), metadata("filename", "hidden.bin"))
		cut := 100_000 + len(eicar)/2
		f.mustPatch(f.alice, id, 0, data[:cut])
		f.mustPatch(f.alice, id, int64(cut), data[cut:])
		if st := f.settle(f.alice, id); st.Status != "quarantined" || st.Reason == "" {
			t.Fatalf("status = %+v, want quarantined", st)
		}
		if _, ok := listed(t, f.alice, "hidden.bin"); ok {
			t.Error("a quarantined file is listed in Arrivals")
		}
	})
	t.Run("zero length", func(t *testing.T) {
		id := f.create(f.alice, 0, metadata("filename", "empty.txt"))
		if got := f.offset(f.alice, id); got != 0 {
			t.Errorf("HEAD offset = %d", got)
		}
		st := f.settle(f.alice, id)
		if st.Status != "available" || st.SHA256 != sha256Hex(nil) || st.Size != 0 {
			t.Fatalf("status = %+v, want available with the empty sha256", st)
		}
		a, ok := listed(t, f.alice, "empty.txt")
		if !ok || a.Size != 0 || a.SHA256 != sha256Hex(nil) {
			t.Errorf("empty.txt listed %v as %+v", ok, a)
		}
	})
	t.Run("audit chain", func(t *testing.T) {
		if _, err := f.db.VerifyAudit(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

// TestResumeAfterDisconnect: a client that goes away midway keeps what was
// made durable (no more than it sent), and resumes from there to the right
// file.
func TestResumeAfterDisconnect(t *testing.T) {
	tests := []struct {
		name     string
		length   bool // declare Content-Length
		checksum bool // Upload-Checksum: all or nothing
		cut      func(pw *io.PipeWriter, cancel context.CancelFunc)
	}{
		{name: "writer fails", cut: func(pw *io.PipeWriter, _ context.CancelFunc) { pw.CloseWithError(io.ErrClosedPipe) }},
		{name: "request cancelled", cut: func(_ *io.PipeWriter, cancel context.CancelFunc) { cancel() }},
		{name: "request with Content-Length cancelled", length: true, cut: func(_ *io.PipeWriter, cancel context.CancelFunc) { cancel() }},
		{name: "checksummed request cancelled", checksum: true, cut: func(_ *io.PipeWriter, cancel context.CancelFunc) { cancel() }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t)
			data := randBytes(400_000, 13)
			id := f.create(f.alice, int64(len(data)), metadata("filename", "flaky.bin"))
			const sent = 150_000 // more than two checkpoints

			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			pr, pw := io.Pipe()
			r, err := http.NewRequestWithContext(ctx, http.MethodPatch, f.srv.URL+"/files/"+id, pr)
			if err != nil {
				t.Fatal(err)
			}
			r.Header.Set("Tus-Resumable", tusVersion)
			r.Header.Set("Authorization", "Bearer "+f.alice.token)
			r.Header.Set("Content-Type", offsetOctet)
			r.Header.Set("Upload-Offset", "0")
			if tt.length {
				r.ContentLength = int64(len(data))
			}
			if tt.checksum {
				r.Header.Set("Upload-Checksum", "sha256 "+digest(sha256.New(), data))
			}
			done := make(chan error, 1)
			go func() {
				resp, err := f.srv.Client().Do(r)
				if err == nil {
					resp.Body.Close()
				}
				done <- err
			}()
			if _, err := pw.Write(data[:sent]); err != nil {
				t.Fatal(err)
			}
			// The server is writing: its first checkpoint's worth is stored
			// and, unless the PATCH is all or nothing, recorded.
			deadline := time.Now().Add(5 * time.Second)
			for len(f.object("uploads/"+id)) < checkpointBytes || (!tt.checksum && f.offset(f.alice, id) == 0) {
				if time.Now().After(deadline) {
					t.Fatal("nothing stored after sending more than CheckpointBytes")
				}
				time.Sleep(5 * time.Millisecond)
			}
			tt.cut(pw, cancel)

			// Wait until the server let go of the upload: an empty PATCH at
			// the current offset then succeeds.
			var off int64
			deadline = time.Now().Add(5 * time.Second)
			for {
				off = f.offset(f.alice, id)
				resp, _ := f.patch(f.alice, id, off, nil, nil)
				if resp.StatusCode == http.StatusNoContent {
					break
				}
				if resp.StatusCode != http.StatusLocked && resp.StatusCode != http.StatusConflict {
					t.Fatalf("empty PATCH at %d: %d", off, resp.StatusCode)
				}
				if time.Now().After(deadline) {
					t.Fatal("the interrupted PATCH still holds the upload")
				}
				time.Sleep(5 * time.Millisecond)
			}
			// The client's transport waits for its body to end even after
			// the request was cancelled.
			pw.CloseWithError(io.ErrClosedPipe)
			<-done
			if got := f.offset(f.alice, id); got != off {
				t.Fatalf("offset moved from %d to %d after the upload was released", off, got)
			}
			switch {
			case tt.checksum && off != 0:
				t.Errorf("offset after an interrupted checksummed PATCH = %d, want 0", off)
			case !tt.checksum && (off <= 0 || off > sent):
				t.Errorf("offset after the disconnect = %d, want in (0, %d]", off, sent)
			}
			if got := len(f.object("uploads/" + id)); int64(got) != off {
				t.Errorf("%d bytes stored, offset %d", got, off)
			}
			f.mustPatch(f.alice, id, off, data[off:])
			st := f.settle(f.alice, id)
			if st.Status != "available" || st.SHA256 != sha256Hex(data) {
				t.Errorf("settled as %+v, want available with sha256 %s", st, sha256Hex(data))
			}
			if !bytes.Equal(f.object("arrivals/alice/flaky.bin"), data) {
				t.Error("the published file differs from the source")
			}
		})
	}
}
