package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// shareFile is one entry of GET /api/v1/shares/{s}/files.
type shareFile struct {
	Path      string    `json:"path"`
	Size      int64     `json:"size"`
	SHA256    string    `json:"sha256"`
	CreatedAt time.Time `json:"created_at"`
	MovedAt   time.Time `json:"moved_at"`
	MovedBy   string    `json:"moved_by"`
}

// shareCall sends one API request as c with a JSON body (nil: none) and returns status and body.
func shareCall(t *testing.T, ctx context.Context, c *mftdtest.Client, method, path string, body any) (int, []byte) {
	t.Helper()
	var rd io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp.StatusCode, b
}

// shareWant is shareCall that fails the test unless the status is want; it returns the body.
func shareWant(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, method, path string, body any, want int) []byte {
	t.Helper()
	st, b := shareCall(t, ctx, c, method, path, body)
	if st != want {
		t.Fatalf("%s: %s %s: %d %s; want %d", who, method, path, st, b, want)
	}
	return b
}

// shareFiles lists a share's files as c, which must be allowed to.
func shareFiles(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, share string) []shareFile {
	t.Helper()
	b := shareWant(t, ctx, who, c, "GET", "/api/v1/shares/"+share+"/files", nil, http.StatusOK)
	var out struct {
		Files []shareFile `json:"files"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: share files %s: %v", who, b, err)
	}
	return out.Files
}

// uploadArrival sends data as name through tus and waits until it is in c's Arrivals.
func uploadArrival(t *testing.T, ctx context.Context, c *mftdtest.Client, name string, data []byte) mftdtest.Arrival {
	t.Helper()
	url := tusUpload(t, ctx, c, name, data)
	sum := sha256.Sum256(data)
	wantAvailable(t, waitTerminal(t, ctx, c, url, time.Minute), int64(len(data)), hex.EncodeToString(sum[:]))
	return findArrival(t, arrivals(t, ctx, c), name)
}

// The share workflow over the wire: the system administrator creates a project on the host; its
// IAO creates shares and names an IAA, who adds a member; the member moves an Arrival in, with
// its SHA-256 and creation time, and lists it. Outsiders get 404, an IAA cannot name IAAs, a
// member cannot grant the outbound right, a move over the share quota is 413, a removal counts
// at the very next request, and every step is in the verified audit chain.
func TestSharesWorkflow(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	d := startDaemon(t, mftdtest.Options{QuotasYAML: "quotas: {share_bytes: 1GiB, shares: {tiny: {bytes: 1KiB}}}"})
	_, iao := d.NewUser("olga")
	_, iaa := d.NewUser("adam")
	_, member := d.NewUser("mark")
	_, outsider := d.NewUser("nina")
	d.AddUser("zoe")

	if r := d.Admin("", "project", "create", "study", "--owner", "olga"); r.Code != 0 {
		t.Fatalf("mftd project create: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	if r := d.Admin("", "project", "list"); r.Code != 0 || !strings.Contains(r.Stdout, "study") || !strings.Contains(r.Stdout, "olga") {
		t.Fatalf("mftd project list: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}

	// The IAO creates the shares and an IAA; the IAA adds members but no IAA.
	shareWant(t, ctx, "IAO", iao, "POST", "/api/v1/projects/study/shares", map[string]string{"name": "cohort"}, http.StatusCreated)
	shareWant(t, ctx, "IAO", iao, "POST", "/api/v1/projects/study/shares", map[string]string{"name": "tiny"}, http.StatusCreated)
	shareWant(t, ctx, "outsider", outsider, "POST", "/api/v1/projects/study/shares", map[string]string{"name": "mine"}, http.StatusNotFound)
	shareWant(t, ctx, "IAO", iao, "PUT", "/api/v1/projects/study/admins/adam", nil, http.StatusNoContent)
	shareWant(t, ctx, "IAA", iaa, "PUT", "/api/v1/shares/cohort/members/mark", map[string]bool{"outbound": false}, http.StatusNoContent)
	shareWant(t, ctx, "IAA", iaa, "PUT", "/api/v1/shares/tiny/members/mark", map[string]bool{"outbound": false}, http.StatusNoContent)
	shareWant(t, ctx, "IAA adding an IAA", iaa, "PUT", "/api/v1/projects/study/admins/zoe", nil, http.StatusForbidden)
	shareWant(t, ctx, "member granting themself outbound", member, "PUT", "/api/v1/shares/cohort/members/mark", map[string]bool{"outbound": true}, http.StatusForbidden)
	shareWant(t, ctx, "member adding a member", member, "PUT", "/api/v1/shares/cohort/members/zoe", map[string]bool{"outbound": false}, http.StatusForbidden)

	var list struct {
		Shares []struct {
			Name     string `json:"name"`
			Role     string `json:"role"`
			Outbound bool   `json:"outbound"`
		} `json:"shares"`
	}
	b := shareWant(t, ctx, "member", member, "GET", "/api/v1/shares", nil, http.StatusOK)
	if err := json.Unmarshal(b, &list); err != nil || len(list.Shares) != 2 || list.Shares[0].Name != "cohort" ||
		list.Shares[0].Role != "member" || list.Shares[0].Outbound {
		t.Fatalf("member's GET /api/v1/shares: %s (%v); want cohort and tiny, member, no outbound right", b, err)
	}

	// The member moves an Arrival in: hash and creation time travel with it, Arrivals lose it.
	data := readAllData(t, 300<<10, 7)
	arr := uploadArrival(t, ctx, member, "visits.csv", data)
	b = shareWant(t, ctx, "member", member, "POST", "/api/v1/arrivals/visits.csv/move",
		map[string]string{"share": "cohort", "path": "raw/2025/visits.csv"}, http.StatusCreated)
	files := shareFiles(t, ctx, "member", member, "cohort")
	if len(files) != 1 {
		t.Fatalf("cohort files after the move: %+v (move answered %s)", files, b)
	}
	if f := files[0]; f.Path != "raw/2025/visits.csv" || f.SHA256 != arr.SHA256 || f.Size != int64(len(data)) ||
		!f.CreatedAt.Equal(arr.CreatedAt) || f.MovedBy != "mark" || f.MovedAt.Before(f.CreatedAt) {
		t.Errorf("moved file %+v; want the Arrival's sha256 %s and created_at %v", f, arr.SHA256, arr.CreatedAt)
	}
	for _, a := range arrivals(t, ctx, member) {
		if a.Name == "visits.csv" {
			t.Errorf("visits.csv is still in the member's Arrivals after the move: %+v", a)
		}
	}
	onDisk, err := os.ReadFile(filepath.Join(d.DataDir, "objects", "shares", "cohort", "raw", "2025", "visits.csv"))
	if sum := sha256.Sum256(onDisk); err != nil || hex.EncodeToString(sum[:]) != arr.SHA256 {
		t.Errorf("the share's object: %v, or its SHA-256 is not the Arrival's", err)
	}
	shareFiles(t, ctx, "IAA", iaa, "cohort")
	shareFiles(t, ctx, "IAO", iao, "cohort")

	// A non-member sees no share and cannot move into it; their Arrival stays.
	shareWant(t, ctx, "outsider", outsider, "GET", "/api/v1/shares/cohort/files", nil, http.StatusNotFound)
	uploadArrival(t, ctx, outsider, "mine.csv", []byte("nina's data\n"))
	shareWant(t, ctx, "outsider", outsider, "POST", "/api/v1/arrivals/mine.csv/move",
		map[string]string{"share": "cohort", "path": "mine.csv"}, http.StatusNotFound)
	findArrival(t, arrivals(t, ctx, outsider), "mine.csv")
	shareWant(t, ctx, "member", member, "POST", "/api/v1/arrivals/mine.csv/move", // nina's name, in mark's own Arrivals
		map[string]string{"share": "cohort", "path": "mine.csv"}, http.StatusNotFound)

	// Over the share's quota (tiny: 1 KiB): 413 naming it; the file stays in Arrivals.
	uploadArrival(t, ctx, member, "big.bin", readAllData(t, 4<<10, 8))
	b = shareWant(t, ctx, "member", member, "POST", "/api/v1/arrivals/big.bin/move",
		map[string]string{"share": "tiny", "path": "big.bin"}, http.StatusRequestEntityTooLarge)
	if !strings.Contains(string(b), "quota of share tiny") {
		t.Errorf("quota refusal %s does not name the share's quota", b)
	}
	findArrival(t, arrivals(t, ctx, member), "big.bin")

	// Removal counts at the member's very next request.
	shareWant(t, ctx, "IAA", iaa, "DELETE", "/api/v1/shares/cohort/members/mark", nil, http.StatusNoContent)
	shareWant(t, ctx, "removed member", member, "GET", "/api/v1/shares/cohort/files", nil, http.StatusNotFound)
	shareWant(t, ctx, "removed member", member, "POST", "/api/v1/arrivals/big.bin/move",
		map[string]string{"share": "cohort", "path": "big.bin"}, http.StatusNotFound)
	b = shareWant(t, ctx, "removed member", member, "GET", "/api/v1/shares", nil, http.StatusOK)
	if err := json.Unmarshal(b, &list); err != nil || len(list.Shares) != 1 || list.Shares[0].Name != "tiny" {
		t.Errorf("removed member's GET /api/v1/shares: %s (%v); want tiny only", b, err)
	}

	// Every change and refusal is in the audit chain, which verifies.
	if r := d.Admin("", "audit", "verify"); r.Code != 0 {
		t.Fatalf("mftd audit verify: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	for _, c := range []struct {
		action, result string
		want           int
	}{
		{"project.create", "ok owner=olga", 1},
		{"share.create", "ok project=study", 2},
		{"share.create", "denied%", 1},
		{"project.admin.put", "ok user=adam", 1},
		{"project.admin.put", "denied user=zoe%", 1},
		{"share.member.put", "ok user=mark outbound=false new_member=true", 2},
		{"share.member.put", "denied user=zoe%", 1},
		{"share.outbound.grant", "denied user=mark outbound=true%", 1},
		{"arrival.move", "ok arrivals/mark/visits.csv -> shares/cohort/raw/2025/visits.csv sha256=" + arr.SHA256, 1},
		{"arrival.move", "denied%", 3}, // nina's, over quota, after removal
		{"share.member.delete", "ok user=mark", 1},
		{"share.files", "denied%", 2}, // nina's, after removal
	} {
		n := dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = ? AND result LIKE ?`, c.action, c.result)
		if n != c.want {
			t.Errorf("%d audit records %s %q, want %d", n, c.action, c.result, c.want)
		}
	}
	if n := dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'project.create' AND actor LIKE 'cli:%'`); n != 1 {
		t.Errorf("project.create audited %d times with the operator as actor, want 1", n)
	}
}
