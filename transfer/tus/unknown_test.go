package tus_test

import (
	"context"
	"net/http"
	"testing"

	"github.com/mftd/mftd/transfer/ingest"
)

// An upload of unknown length (written over SFTP) shows Upload-Defer-Length
// to HEAD and refuses a tus PATCH: it is resumed where it was started.
func TestUnknownLengthUpload(t *testing.T) {
	f := newFixture(t)
	u, err := f.ing.Create(context.Background(), ingest.CreateRequest{Owner: "alice", Filename: "s.bin", Length: ingest.LengthUnknown, Proto: "sftp"})
	if err != nil {
		t.Fatal(err)
	}
	resp, _ := f.req(http.MethodHead, "/files/"+u.ID, f.alice, nil, nil)
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Upload-Defer-Length") != "1" || resp.Header.Get("Upload-Length") != "" {
		t.Fatalf("HEAD: %d, Upload-Defer-Length %q, Upload-Length %q; want 200, 1, none",
			resp.StatusCode, resp.Header.Get("Upload-Defer-Length"), resp.Header.Get("Upload-Length"))
	}
	before := f.snapshot()
	resp, body := f.patch(f.alice, u.ID, 0, []byte("data"), nil)
	if resp.StatusCode != http.StatusConflict {
		t.Fatalf("PATCH: %d %q, want 409", resp.StatusCode, body)
	}
	f.unchanged(before)
}
