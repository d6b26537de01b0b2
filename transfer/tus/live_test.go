package tus_test

import (
	"net/http"
	"strings"
	"testing"
)

// limits.max_metadata_bytes and max_file_size apply to the next request once
// the settings are replaced (as a configuration reload does).
func TestLiveLimits(t *testing.T) {
	f := newFixture(t)
	md := metadata("filename", "a.txt", "pad", strings.Repeat("x", 200))
	hdr := map[string]string{"Upload-Length": "100", "Upload-Metadata": md}
	if resp, body := f.req(http.MethodPost, "/files/", f.alice, hdr, nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("creation with %d bytes of metadata: %d %q, want 201", len(md), resp.StatusCode, body)
	}
	live := f.ing.Settings()
	next := *live.Load()
	next.MaxMetadataBytes = 100
	next.Limits.MaxFileSize = 50
	live.Store(next)
	if resp, body := f.req(http.MethodPost, "/files/", f.alice, hdr, nil); resp.StatusCode != http.StatusBadRequest {
		t.Errorf("the same metadata after max_metadata_bytes became 100: %d %q, want 400", resp.StatusCode, body)
	}
	small := map[string]string{"Upload-Length": "100", "Upload-Metadata": metadata("filename", "b.txt")}
	if resp, body := f.req(http.MethodPost, "/files/", f.alice, small, nil); resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Errorf("100 bytes after max_file_size became 50: %d %q, want 413", resp.StatusCode, body)
	}
}
