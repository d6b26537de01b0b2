package tus_test

import (
	"bytes"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/mftd/mftd/policy"
)

// setQuota gives every user the default Arrivals quota q (live, as a
// reload would).
func (f *fixture) setQuota(q policy.UserQuota) {
	s := *f.ing.Settings().Load()
	s.Quotas = policy.Quotas{UserArrivalsBytes: q.ArrivalsBytes, UserArrivalsFiles: q.ArrivalsFiles}
	f.ing.Settings().Store(s)
}

// A creation over the Arrivals quota is refused with 413 and a message that
// names the quota and the caller's own usage, changes nothing but one
// audit record, and leaves other users' quotas alone.
func TestCreateOverQuota(t *testing.T) {
	f := newFixture(t)
	f.setQuota(policy.UserQuota{ArrivalsBytes: 100_000, ArrivalsFiles: 2})
	f.create(f.alice, 60_000, metadata("filename", "a.bin"))
	f.create(f.bob, 90_000, metadata("filename", "b.bin"))

	for _, tt := range []struct {
		name string
		hdr  map[string]string
		body []byte
		want string
	}{
		{"bytes", map[string]string{"Upload-Length": "40001"}, nil,
			"Arrivals quota of alice exceeded: limit 97.7 KiB (100000 bytes), 58.6 KiB used or reserved; this file needs 39.1 KiB\n"},
		{"with data", map[string]string{"Upload-Length": "40001", "Content-Type": offsetOctet}, bytes.Repeat([]byte("x"), 1000),
			"Arrivals quota of alice exceeded"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before := f.snapshot()
			hdr := map[string]string{"Upload-Metadata": metadata("filename", "b.bin")}
			for k, v := range tt.hdr {
				hdr[k] = v
			}
			resp, body := f.req(http.MethodPost, "/files/", f.alice, hdr, bytes.NewReader(tt.body))
			if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.HasPrefix(string(body), tt.want) {
				t.Fatalf("POST over the quota: %d %q, want 413 %q", resp.StatusCode, body, tt.want)
			}
			if strings.Contains(string(body), "bob") || strings.Contains(string(body), "90000") {
				t.Errorf("the answer tells of another user: %q", body)
			}
			if resp.Header.Get("Location") != "" {
				t.Errorf("a refused creation has a Location: %q", resp.Header.Get("Location"))
			}
			before.audit++ // the refusal
			f.unchanged(before)
		})
	}

	// The files quota: a second file fits, a third does not.
	f.create(f.alice, 10, metadata("filename", "c.bin"))
	resp, body := f.req(http.MethodPost, "/files/", f.alice, map[string]string{
		"Upload-Length": "0", "Upload-Metadata": metadata("filename", "d.bin"),
	}, nil)
	if resp.StatusCode != http.StatusRequestEntityTooLarge || !strings.Contains(string(body), "Arrivals file quota of alice exceeded: limit 2 files") {
		t.Fatalf("POST past the files quota: %d %q", resp.StatusCode, body)
	}
}

// Two creations that each fit but together do not, sent at once: exactly
// one is created, the other refused with 413.
func TestCreateQuotaRace(t *testing.T) {
	f := newFixture(t)
	f.setQuota(policy.UserQuota{ArrivalsBytes: 10 << 20})
	for round := range 5 {
		codes := make([]int, 2)
		ids := make([]string, 2)
		var wg sync.WaitGroup
		for i := range codes {
			wg.Go(func() {
				resp, _ := f.req(http.MethodPost, "/files/", f.alice, map[string]string{
					"Upload-Length": strconv.Itoa(6 << 20), "Upload-Metadata": metadata("filename", "r.bin"),
				}, nil)
				codes[i] = resp.StatusCode
				ids[i], _ = strings.CutPrefix(resp.Header.Get("Location"), "/files/")
			})
		}
		wg.Wait()
		created := 0
		for i, c := range codes {
			switch c {
			case http.StatusCreated:
				created++
				resp, _ := f.req(http.MethodDelete, "/files/"+ids[i], f.alice, nil, nil)
				if resp.StatusCode != http.StatusNoContent {
					t.Fatalf("DELETE: %d", resp.StatusCode)
				}
			case http.StatusRequestEntityTooLarge:
			default:
				t.Fatalf("round %d: status %d", round, c)
			}
		}
		if created != 1 {
			t.Fatalf("round %d: %v; want exactly one 201 and one 413", round, codes)
		}
	}
}

// GET /api/v1/me shows the caller's Arrivals usage, reserved bytes and
// limits.
func TestMeShowsQuota(t *testing.T) {
	f := newFixture(t)
	f.setQuota(policy.UserQuota{ArrivalsBytes: 1 << 20})
	data := bytes.Repeat([]byte("q"), 3000)
	done := f.create(f.alice, int64(len(data)), metadata("filename", "done.bin"))
	f.mustPatch(f.alice, done, 0, data)
	if st := f.settle(f.alice, done); st.Status != "available" {
		t.Fatalf("upload ended %s", st.Status)
	}
	f.create(f.alice, 500, metadata("filename", "pending.bin"))
	f.create(f.bob, 7000, metadata("filename", "bob.bin"))

	type counter struct{ Used, Reserved, Limit int64 }
	var me struct {
		User  string
		Quota map[string]counter
	}
	resp, body := f.req(http.MethodGet, "/api/v1/me", f.alice, nil, nil)
	if resp.StatusCode != http.StatusOK || json.Unmarshal(body, &me) != nil {
		t.Fatalf("GET /api/v1/me: %d %s", resp.StatusCode, body)
	}
	want := map[string]counter{
		"arrivals_bytes": {Used: 3000, Reserved: 500, Limit: 1 << 20},
		"arrivals_files": {Used: 1, Reserved: 1, Limit: 0},
	}
	if me.User != "alice" || len(me.Quota) != 2 || me.Quota["arrivals_bytes"] != want["arrivals_bytes"] || me.Quota["arrivals_files"] != want["arrivals_files"] {
		t.Fatalf("GET /api/v1/me = %s, want alice's quota %+v", body, want)
	}
}
