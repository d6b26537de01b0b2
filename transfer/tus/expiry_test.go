package tus_test

import (
	"context"
	"crypto/sha256"
	"net/http"
	"strconv"
	"testing"
	"time"
)

// An upload past its Upload-Expires is gone: HEAD and PATCH answer 410 and nothing is written
// (offset, stored bytes, hash state, Arrivals and audit trail stay as they were); its owner's
// next upload, within its own TTL, goes through. Another user still gets 404, never 410.
func TestExpired(t *testing.T) {
	const ttl = time.Second
	f := newFixtureTTL(t, ttl)
	data := randBytes(100, 11)
	const sent = 40

	start := time.Now()
	id := f.create(f.alice, int64(len(data)), metadata("filename", "late.bin"))
	f.mustPatch(f.alice, id, 0, data[:sent])
	resp, _ := f.req(http.MethodHead, "/files/"+id, f.alice, nil, nil)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("HEAD within the TTL: %d, want 200", resp.StatusCode)
	}
	// Upload-Expires has whole seconds.
	exp, err := http.ParseTime(resp.Header.Get("Upload-Expires"))
	if err != nil {
		t.Fatalf("HEAD within the TTL: Upload-Expires %q: %v", resp.Header.Get("Upload-Expires"), err)
	}
	if lo, hi := start.Add(ttl-time.Second), time.Now().Add(ttl); exp.Before(lo) || exp.After(hi) {
		t.Errorf("Upload-Expires %v, want between %v and %v", exp, lo, hi)
	}

	u, err := f.db.GetUpload(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Until(u.ExpiresAt) + 20*time.Millisecond)

	before := f.snapshot()
	tests := []struct {
		name   string
		method string
		who    user
		off    int64
		body   []byte
		hdr    map[string]string
		want   int
	}{
		{"HEAD", http.MethodHead, f.alice, 0, nil, nil, http.StatusGone},
		{"PATCH of more bytes", http.MethodPatch, f.alice, sent, data[sent:70], nil, http.StatusGone},
		{"PATCH of the last bytes", http.MethodPatch, f.alice, sent, data[sent:], nil, http.StatusGone},
		{"PATCH with a checksum", http.MethodPatch, f.alice, sent, data[sent:], map[string]string{"Upload-Checksum": "sha256 " + digest(sha256.New(), data[sent:])}, http.StatusGone},
		{"HEAD by another user", http.MethodHead, f.bob, 0, nil, nil, http.StatusNotFound},
		{"PATCH by another user", http.MethodPatch, f.bob, sent, data[sent:], nil, http.StatusNotFound},
	}
	for _, tt := range tests {
		var resp *http.Response
		var body []byte
		if tt.method == http.MethodHead {
			resp, body = f.req(http.MethodHead, "/files/"+id, tt.who, nil, nil)
		} else {
			resp, body = f.patch(tt.who, id, tt.off, tt.body, tt.hdr)
		}
		if resp.StatusCode != tt.want {
			t.Errorf("%s after Upload-Expires: %d %s, want %d", tt.name, resp.StatusCode, body, tt.want)
		}
		if o := resp.Header.Get("Upload-Offset"); o != "" && o != strconv.Itoa(sent) {
			t.Errorf("%s after Upload-Expires: Upload-Offset %q, want none or %d", tt.name, o, sent)
		}
	}
	f.unchanged(before)

	// A new upload is within its own TTL and unaffected.
	fresh := randBytes(200, 12)
	id2 := f.create(f.alice, int64(len(fresh)), metadata("filename", "on-time.bin"))
	f.mustPatch(f.alice, id2, 0, fresh[:sent])
	if got := f.offset(f.alice, id2); got != sent {
		t.Errorf("HEAD of a new upload: offset %d, want %d", got, sent)
	}
	f.mustPatch(f.alice, id2, sent, fresh[sent:])
	if st := f.settle(f.alice, id2); st.Status != "available" || st.SHA256 != sha256Hex(fresh) {
		t.Errorf("new upload settled as %+v, want available with sha256 %s", st, sha256Hex(fresh))
	}
	files := f.arrivals(f.alice)
	if len(files) != 1 || files[0].Name != "on-time.bin" {
		t.Errorf("arrivals: %+v, want only on-time.bin", files)
	}
}
