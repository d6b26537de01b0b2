package integration

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// The egress door end to end: the built binary, its staging folder written by the test as the
// egress desktop would, and real HTTPS portals (mftdtest.StartPortal) on localhost with a test
// CA. One daemon serves every subtest; the subtests run one after another, so that the counts
// of each portal are deltas of one subtest at a time.
//
// Config: project "study" (IAO olga, IAA adam); share "cohort" may push to ukds (put, bearer
// token), ons (post), detour (put) and bounce (tus), which answer every request with a
// redirect to trap (put), trap itself, and resumable (tus, breaks the first PATCH mid-way),
// with the default checks (malware and
// identifiers); share "gated" may push to vault (put) with require_approval. The portal
// "outside" is allowlisted in the config for no share at all.
func TestEgress(t *testing.T) {
	e := newEgressEnv(t)
	t.Run("push arrives", e.testPushArrives)
	t.Run("refusals", e.testRefusals)
	t.Run("redirect to another host", e.testRedirect)
	t.Run("identifiers block", e.testIdentifiersBlock)
	t.Run("approval", e.testApproval)
	t.Run("tus resume", e.testTusResume)
	t.Run("emergency session refused", e.testEmergencySession)
	t.Run("bad input", e.testBadInput)

	// After every push of every subtest: the portal on no share's list and the redirect
	// target were never even connected to.
	if n := e.outside.Connections(); n != 0 {
		t.Errorf("portal outside (on no share's list) accepted %d connections over the whole run, want 0", n)
	}
	if n := e.trap.Connections(); n != 0 {
		t.Errorf("portal trap (only a redirect target) accepted %d connections over the whole run, want 0", n)
	}
	// The outcomes are counted on the admin listener: at least what the subtests produced
	// (ukds twice, ons, vault, resumable and emil's normal session sent; the refusals of
	// outside, an unknown portal, the IAO, mark and the emergency session; two identifier
	// blocks; one rejection; the two redirects failed), and at least the tus file's bytes.
	mfs := scrapeAdmin(t, e.adminAddr)
	for outcome, least := range map[string]float64{"sent": 6, "refused": 5, "blocked": 2, "rejected": 1, "failed": 2} {
		if n := metricValue(t, mfs, "mftd_egress_total", map[string]string{"outcome": outcome}); n < least {
			t.Errorf(`mftd_egress_total{outcome=%q} = %v after the run, want at least %v`, outcome, n, least)
		}
	}
	if n := metricValue(t, mfs, "mftd_egress_sent_bytes_total", nil); n < 4<<20 {
		t.Errorf("mftd_egress_sent_bytes_total = %v after the run, want at least the %d bytes of the tus push", n, 4<<20)
	}
	if r := e.d.Admin("", "audit", "verify"); r.Code != 0 {
		t.Errorf("mftd audit verify after the egress run: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	// The bearer token is read from its file at each push and never logged.
	if b, err := os.ReadFile(e.d.LogPath); err != nil {
		t.Errorf("read the daemon's log: %v", err)
	} else {
		if bytes.Contains(b, []byte(e.token)) {
			t.Errorf("the daemon's log %s contains the portal's bearer token", e.d.LogPath)
		}
		if bytes.Contains(b, []byte(egressRedirectSecret)) {
			t.Errorf("the daemon's log %s contains the query string of a redirect", e.d.LogPath)
		}
	}
}

// egressWait bounds every wait for the daemon: generous, so that a loaded machine never
// decides a pass or a failure.
const egressWait = 60 * time.Second

// egressEnv is the daemon, its staging folder, the portals and the signed-in users.
type egressEnv struct {
	d         *mftdtest.Daemon
	staging   string
	notifyDir string
	adminAddr string // the metrics listener
	token     string // ukds's bearer token, in its token_file

	ukds, ons, outside, detour, bounce, trap, resumable, vault *mftdtest.Portal

	olga, adam, otto, mark *mftdtest.Client // IAO; IAA; cohort member with outbound; member without
	emil                   mftdtest.User    // cohort member with outbound, for the emergency case
	emilClient             *mftdtest.Client // emil's normal session
}

// egressRedirectSecret is the query of the redirects detour and bounce answer.
const egressRedirectSecret = "redirectsecret0123456789"

// The tus portal breaks its first PATCH once it has read this many bytes: an odd number in
// the middle of a 4 MiB file, so that the resumed PATCH must start at a non-trivial offset.
const egressFailAfter = 1<<20 + 12345

func newEgressEnv(t *testing.T) *egressEnv {
	t.Helper()
	ca, err := mftdtest.NewTestCA(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	portals := t.TempDir()
	start := func(name string, o mftdtest.PortalOptions) *mftdtest.Portal {
		o.Dir = filepath.Join(portals, name)
		return mftdtest.StartPortal(t, ca, o)
	}
	e := &egressEnv{
		staging:   filepath.Join(t.TempDir(), "staging"),
		notifyDir: t.TempDir(),
		token:     "egress-token-" + mftdtest.RandomPassword(),
	}
	e.ukds = start("ukds", mftdtest.PortalOptions{Method: mftdtest.PortalPut, Token: e.token})
	e.ons = start("ons", mftdtest.PortalOptions{Method: mftdtest.PortalPost})
	e.outside = start("outside", mftdtest.PortalOptions{Method: mftdtest.PortalPut})
	e.trap = start("trap", mftdtest.PortalOptions{Method: mftdtest.PortalPut})
	// The redirects carry a presigned-looking query, which must never be echoed.
	e.detour = start("detour", mftdtest.PortalOptions{Method: mftdtest.PortalPut, RedirectTo: e.trap.URL + "?X-Amz-Signature=" + egressRedirectSecret})
	e.bounce = start("bounce", mftdtest.PortalOptions{Method: mftdtest.PortalTus, RedirectTo: e.trap.URL + "?X-Amz-Signature=" + egressRedirectSecret})
	e.resumable = start("resumable", mftdtest.PortalOptions{Method: mftdtest.PortalTus, FailAfter: egressFailAfter})
	e.vault = start("vault", mftdtest.PortalOptions{Method: mftdtest.PortalPut})

	tokenFile := filepath.Join(t.TempDir(), "ukds.token")
	if err := os.WriteFile(tokenFile, []byte(e.token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	var y strings.Builder
	fmt.Fprintf(&y, "egress:\n  staging_dir: %q\n  settle: 300ms\n  workers: 2\n  retries: 3\n  portals:\n", e.staging)
	for _, p := range []struct {
		name, method, tokenFile string
		portal                  *mftdtest.Portal
	}{
		{"ukds", "put", tokenFile, e.ukds},
		{"ons", "post", "", e.ons},
		{"outside", "put", "", e.outside},
		{"detour", "put", "", e.detour},
		{"bounce", "tus", "", e.bounce},
		{"trap", "put", "", e.trap},
		{"resumable", "tus", "", e.resumable},
		{"vault", "put", "", e.vault},
	} {
		fmt.Fprintf(&y, "    - {name: %s, url: %q, method: %s, ca_file: %q, token_file: %q, allow_private: true}\n",
			p.name, p.portal.URL, p.method, ca.CAFile, p.tokenFile)
	}
	y.WriteString("  shares:\n")
	y.WriteString("    cohort: {portals: [ukds, ons, detour, bounce, trap, resumable]}\n")
	y.WriteString("    gated: {portals: [vault], require_approval: true, checks: [malware, identifiers]}\n")

	adminPort, err := mftdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e.adminAddr = net.JoinHostPort("127.0.0.1", strconv.Itoa(adminPort))
	e.d = startDaemon(t, mftdtest.Options{EgressYAML: y.String(), NotifyDir: e.notifyDir, AdminListen: e.adminAddr})
	_, e.olga = e.d.NewUser("olga")
	_, e.adam = e.d.NewUser("adam")
	_, e.otto = e.d.NewUser("otto")
	_, e.mark = e.d.NewUser("mark")
	e.emil = e.d.AddUserWith("emil", mftdtest.RandomPassword(), "emil@example.org")
	e.emilClient = e.d.Client(e.d.Login(e.emil, time.Now()))

	if r := e.d.Admin("", "project", "create", "study", "--owner", "olga"); r.Code != 0 {
		t.Fatalf("mftd project create: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	ctx := testCtx(t, time.Minute)
	for _, s := range []string{"cohort", "gated"} {
		shareWant(t, ctx, "IAO", e.olga, "POST", "/api/v1/projects/study/shares", map[string]string{"name": s}, http.StatusCreated)
	}
	shareWant(t, ctx, "IAO", e.olga, "PUT", "/api/v1/projects/study/admins/adam", nil, http.StatusNoContent)
	for _, m := range []struct {
		share, user string
		outbound    bool
	}{
		{"cohort", "otto", true}, {"cohort", "mark", false}, {"cohort", "emil", true},
		{"gated", "adam", true}, {"gated", "mark", false},
	} {
		shareWant(t, ctx, "IAO", e.olga, "PUT", "/api/v1/shares/"+m.share+"/members/"+m.user,
			map[string]bool{"outbound": m.outbound}, http.StatusNoContent)
	}
	return e
}

// egressItem is an item as GET /api/v1/egress and /api/v1/egress/{id} show it.
type egressItem struct {
	ID          string `json:"id"`
	Share       string `json:"share"`
	Owner       string `json:"owner"`
	Path        string `json:"path"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
	Status      string `json:"status"`
	Portal      string `json:"portal"`
	RequestedBy string `json:"requested_by"`
	DecidedBy   string `json:"decided_by"`
	Reason      string `json:"reason"`
	Findings    []struct {
		Kind   string `json:"kind"`
		Line   int    `json:"line"`
		Column int    `json:"column"`
	} `json:"findings"`
	Receipt *struct {
		Portal   string    `json:"portal"`
		Method   string    `json:"method"`
		URL      string    `json:"url"`
		Status   int       `json:"status"`
		PortalID string    `json:"portal_id"`
		SHA256   string    `json:"sha256"`
		Size     int64     `json:"size"`
		Started  time.Time `json:"started"`
		Finished time.Time `json:"finished"`
		Attempts int       `json:"attempts"`
	} `json:"receipt"`
}

// stage writes data as <staging>/<share>/<user>/<p> the way a careful desktop does (a hidden
// temporary name, which is never an item, then a rename) and returns its SHA-256.
func (e *egressEnv) stage(t *testing.T, share, user, p string, data []byte) string {
	t.Helper()
	dst := filepath.Join(e.staging, share, user, filepath.FromSlash(p))
	if err := os.MkdirAll(filepath.Dir(dst), 0o750); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(filepath.Dir(dst), "."+filepath.Base(dst)+".tmp")
	if err := os.WriteFile(tmp, data, 0o640); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, dst); err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:])
}

// items lists the share's items as c sees them (200 required).
func (e *egressEnv) items(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, share string) ([]egressItem, []byte) {
	t.Helper()
	b := shareWant(t, ctx, who, c, "GET", "/api/v1/egress?share="+share, nil, http.StatusOK)
	var out struct {
		Items []egressItem `json:"items"`
	}
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s: GET /api/v1/egress?share=%s: %s: %v", who, share, b, err)
	}
	return out.Items, b
}

// current is the newest item of the listing for path (the listing is newest first).
func current(items []egressItem, path string) (egressItem, bool) {
	for _, it := range items {
		if it.Path == path {
			return it, true
		}
	}
	return egressItem{}, false
}

// waitStaged polls the share's listing until the newest item for path is staged with the
// SHA-256 sha, and returns it.
func (e *egressEnv) waitStaged(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, share, path, sha string) egressItem {
	t.Helper()
	deadline := time.Now().Add(egressWait)
	for {
		items, body := e.items(t, ctx, who, c, share)
		if it, ok := current(items, path); ok && it.Status == "staged" && it.SHA256 == sha {
			return it
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no staged item for %s/%s with sha256 %s after %v; last listing: %s", who, share, path, sha, egressWait, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// request asks for a push and fails unless the answer is want; it returns the body.
func (e *egressEnv) request(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, share, path, portal string, want int) []byte {
	t.Helper()
	return shareWant(t, ctx, who, c, "POST", "/api/v1/egress", map[string]string{"share": share, "path": path, "portal": portal}, want)
}

// requestOK asks for a push, which must be accepted as checking, and returns the item's id.
func (e *egressEnv) requestOK(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, share, path, portal string) string {
	t.Helper()
	b := e.request(t, ctx, who, c, share, path, portal, http.StatusAccepted)
	var out struct {
		ID     string `json:"id"`
		Status string `json:"status"`
	}
	if err := json.Unmarshal(b, &out); err != nil || out.ID == "" || out.Status != "checking" {
		t.Fatalf("%s: POST /api/v1/egress %s/%s to %s: 202 %s (%v); want an id and status checking", who, share, path, portal, b, err)
	}
	return out.ID
}

// item reads one item as c (200 required) and returns it with the raw body.
func (e *egressEnv) item(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, id string) (egressItem, []byte) {
	t.Helper()
	b := shareWant(t, ctx, who, c, "GET", "/api/v1/egress/"+id, nil, http.StatusOK)
	var it egressItem
	if err := json.Unmarshal(b, &it); err != nil {
		t.Fatalf("%s: GET /api/v1/egress/%s: %s: %v", who, id, b, err)
	}
	return it, b
}

// settledStatuses end a wait: the final ones, and awaiting_approval (only a person moves it on).
var settledStatuses = map[string]bool{
	"sent": true, "failed": true, "blocked": true, "rejected": true, "withdrawn": true, "gone": true,
	"awaiting_approval": true,
}

// waitSettled polls the item until its status is final or awaiting_approval and fails the
// test unless that status is want.
func (e *egressEnv) waitSettled(t *testing.T, ctx context.Context, who string, c *mftdtest.Client, id, want string) (egressItem, []byte) {
	t.Helper()
	deadline := time.Now().Add(egressWait)
	for {
		it, body := e.item(t, ctx, who, c, id)
		if settledStatuses[it.Status] {
			if it.Status != want {
				t.Fatalf("%s: egress item %s ended %s, want %s: %s", who, id, it.Status, want, body)
			}
			return it, body
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: egress item %s still not %s after %v; last: %s", who, id, want, egressWait, body)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// waitRemoved polls until the staged file is gone.
func (e *egressEnv) waitRemoved(t *testing.T, share, user, p string) {
	t.Helper()
	path := filepath.Join(e.staging, share, user, filepath.FromSlash(p))
	deadline := time.Now().Add(egressWait)
	for {
		_, err := os.Lstat(path)
		if errors.Is(err, fs.ErrNotExist) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("staged file %s still there %v after it was sent (lstat: %v); remove_sent defaults to true", path, egressWait, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// auditCount counts the audit records of action by actor whose result is LIKE result.
func (e *egressEnv) auditCount(t *testing.T, action, actor, result string) int {
	t.Helper()
	return dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = ? AND actor = ? AND result LIKE ?`, action, actor, result)
}

// egressTable is a CSV of at least size bytes with nothing the identifiers check could take
// for an NHS number (no 10-digit runs), a postcode (no letter-digit-digit-letter-letter
// shapes) or a date (no date separators, no date-of-birth column).
func egressTable(size int, seed int) []byte {
	var b bytes.Buffer
	b.WriteString("region,year,count\n")
	for i := 0; b.Len() < size; i++ {
		fmt.Fprintf(&b, "r%03d,%d,%d\n", (i+seed)%1000, 2000+(i*seed)%25, (i*7+seed)%997)
	}
	return b.Bytes()
}

// 1. An allowlisted push arrives: put with the bearer token from token_file, and post; the
// portals get exactly the staged bytes, the receipts match, and the staged files are removed.
func (e *egressEnv) testPushArrives(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)

	t.Run("put", func(t *testing.T) {
		data := egressTable(200<<10, 1)
		sha := e.stage(t, "cohort", "otto", "tables/counts.csv", data)
		staged := e.waitStaged(t, ctx, "otto", e.otto, "cohort", "tables/counts.csv", sha)
		if staged.Size != int64(len(data)) || staged.Owner != "otto" || staged.Share != "cohort" {
			t.Errorf("staged item %+v; want owner otto, share cohort, %d bytes", staged, len(data))
		}
		id := e.requestOK(t, ctx, "otto", e.otto, "cohort", "tables/counts.csv", "ukds")
		if id != staged.ID {
			t.Errorf("the request made item %s, want the staged item %s", id, staged.ID)
		}
		it, body := e.waitSettled(t, ctx, "otto", e.otto, id, "sent")
		if strings.Contains(string(body), e.token) {
			t.Errorf("the item's JSON carries the portal's bearer token: %s", body)
		}
		got, err := e.ukds.WaitReceived(1, egressWait)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 {
			t.Fatalf("portal ukds received %d uploads, want exactly 1: %+v", len(got), got)
		}
		rc := got[0]
		if rc.SHA256 != sha || rc.Size != int64(len(data)) {
			t.Errorf("ukds received %d bytes with sha256 %s; want the staged %d bytes, %s", rc.Size, rc.SHA256, len(data), sha)
		}
		if rc.Auth != "Bearer "+e.token {
			t.Errorf("ukds got Authorization %q, want the bearer token of token_file", redactToken(rc.Auth, e.token))
		}
		if rc.Name != "counts.csv" || rc.ClaimedSHA256 != sha {
			t.Errorf("ukds got name %q and claimed sha256 %q; want counts.csv and %s", rc.Name, rc.ClaimedSHA256, sha)
		}
		r := it.Receipt
		switch {
		case r == nil:
			t.Fatalf("sent item without a receipt: %s", body)
		case r.Portal != "ukds" || r.Method != "put" || r.SHA256 != sha || r.Size != int64(len(data)):
			t.Errorf("receipt %+v; want portal ukds, method put, sha256 %s, size %d", *r, sha, len(data))
		case r.Status != http.StatusCreated:
			t.Errorf("receipt status %d, want the portal's 201", r.Status)
		case r.PortalID != rc.ID || r.URL != e.ukds.URL:
			t.Errorf("receipt portal_id %q url %q; want the portal's id %q and %s", r.PortalID, r.URL, rc.ID, e.ukds.URL)
		case r.Attempts != 1 || r.Finished.Before(r.Started):
			t.Errorf("receipt attempts %d, started %v, finished %v; want 1 attempt to a portal that never failed", r.Attempts, r.Started, r.Finished)
		}
		if it.Portal != "ukds" || it.RequestedBy != "otto" {
			t.Errorf("item portal %q requested_by %q; want ukds and otto", it.Portal, it.RequestedBy)
		}
		e.waitRemoved(t, "cohort", "otto", "tables/counts.csv")
	})

	t.Run("post", func(t *testing.T) {
		data := egressTable(150<<10, 2)
		sha := e.stage(t, "cohort", "otto", "tables/rates.csv", data)
		e.waitStaged(t, ctx, "otto", e.otto, "cohort", "tables/rates.csv", sha)
		id := e.requestOK(t, ctx, "otto", e.otto, "cohort", "tables/rates.csv", "ons")
		it, body := e.waitSettled(t, ctx, "otto", e.otto, id, "sent")
		got, err := e.ons.WaitReceived(1, egressWait)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 1 || got[0].SHA256 != sha || got[0].Size != int64(len(data)) || got[0].Name != "rates.csv" {
			t.Fatalf("portal ons received %+v; want exactly one upload rates.csv, %d bytes, sha256 %s", got, len(data), sha)
		}
		if got[0].Method != "post" || got[0].ClaimedSHA256 != sha {
			t.Errorf("ons upload method %q claimed %q; want post claiming %s", got[0].Method, got[0].ClaimedSHA256, sha)
		}
		if r := it.Receipt; r == nil || r.Method != "post" || r.Portal != "ons" || r.SHA256 != sha || r.Status != http.StatusCreated || r.PortalID != got[0].ID {
			t.Errorf("receipt of the post push: %s; want portal ons, method post, status 201, portal_id %s, sha256 %s", body, got[0].ID, sha)
		}
		e.waitRemoved(t, "cohort", "otto", "tables/rates.csv")
	})
}

// redactToken keeps a token out of a failure message.
func redactToken(s, token string) string { return strings.ReplaceAll(s, token, "<token>") }

// 2 and 4. Refusals: a portal configured but not on the share's list, an unknown portal, the
// IAO (a project role gives no outbound right) and a member without the outbound right get
// 403, audited; the items stay staged and the refused portal is never connected to.
func (e *egressEnv) testRefusals(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	const p = "tables/other.csv"
	sha := e.stage(t, "cohort", "otto", p, egressTable(20<<10, 3))
	staged := e.waitStaged(t, ctx, "otto", e.otto, "cohort", p, sha)
	ottoDenied := e.auditCount(t, "egress.request", "otto", "denied%")

	for _, portal := range []string{"outside", "nosuchportal"} {
		b := e.request(t, ctx, "otto", e.otto, "cohort", p, portal, http.StatusForbidden)
		if bytes.Contains(b, []byte(`"id"`)) {
			t.Errorf("refused request to %s answered with an item id: %s", portal, b)
		}
	}
	if n := e.auditCount(t, "egress.request", "otto", "denied%"); n != ottoDenied+2 {
		t.Errorf("%d egress.request denials audited for otto after two refused requests, want %d", n, ottoDenied+2)
	}
	// The IAO has no outbound right by being the IAO.
	e.request(t, ctx, "olga (IAO, not a member)", e.olga, "cohort", p, "ukds", http.StatusForbidden)
	if n := e.auditCount(t, "egress.request", "olga", "denied%"); n != 1 {
		t.Errorf("%d egress.request denials audited for olga, want 1", n)
	}

	// A member without the outbound right, with a file of their own staged.
	markSHA := e.stage(t, "cohort", "mark", "mine.csv", egressTable(10<<10, 4))
	markItem := e.waitStaged(t, ctx, "mark", e.mark, "cohort", "mine.csv", markSHA)
	b := e.request(t, ctx, "mark (no outbound right)", e.mark, "cohort", "mine.csv", "ukds", http.StatusForbidden)
	if !strings.Contains(string(b), "outbound right") {
		t.Errorf("the refusal of a member without the outbound right does not say why: %s", b)
	}
	if n := e.auditCount(t, "egress.request", "mark", "denied%"); n != 1 {
		t.Errorf("%d egress.request denials audited for mark, want 1", n)
	}
	if n := e.auditCount(t, "egress.request", "mark", "ok%"); n != 0 {
		t.Errorf("%d egress.request records for mark say ok, want 0", n)
	}
	if it, body := e.item(t, ctx, "mark", e.mark, markItem.ID); it.Status != "staged" {
		t.Errorf("mark's item after the refused request: %s; want still staged", body)
	}

	// The refused item is still staged and can go to a portal on the list; after that push,
	// the refused portal has still seen no connection.
	if it, body := e.item(t, ctx, "otto", e.otto, staged.ID); it.Status != "staged" {
		t.Errorf("otto's item after two refused requests: %s; want still staged", body)
	}
	before := len(e.ukds.Received())
	id := e.requestOK(t, ctx, "otto", e.otto, "cohort", p, "ukds")
	e.waitSettled(t, ctx, "otto", e.otto, id, "sent")
	got, err := e.ukds.WaitReceived(before+1, egressWait)
	if err != nil {
		t.Fatal(err)
	}
	if last := got[len(got)-1]; last.SHA256 != sha {
		t.Errorf("ukds's latest upload has sha256 %s, want %s", last.SHA256, sha)
	}
	if n := e.outside.Connections(); n != 0 {
		t.Errorf("portal outside accepted %d connections after the refused requests and a later push, want 0", n)
	}
	if n := len(e.outside.Requests()); n != 0 {
		t.Errorf("portal outside answered %d requests, want 0", n)
	}
}

// 3. Portals that redirect to another host:port (another test portal, itself on the share's
// list): the push fails, and the redirect target is never connected to. detour (put) answers
// the upload itself with a 307; bounce (tus) answers the bodiless creation request with one,
// which an HTTP client would follow unless the egress client's redirect guard refuses it.
func (e *egressEnv) testRedirect(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	for i, c := range []struct {
		portal string
		p      *mftdtest.Portal
	}{{"detour", e.detour}, {"bounce", e.bounce}} {
		t.Run(c.portal, func(t *testing.T) {
			p := "tables/" + c.portal + ".csv"
			sha := e.stage(t, "cohort", "otto", p, egressTable(30<<10, 50+i))
			e.waitStaged(t, ctx, "otto", e.otto, "cohort", p, sha)
			id := e.requestOK(t, ctx, "otto", e.otto, "cohort", p, c.portal)
			it, body := e.waitSettled(t, ctx, "otto", e.otto, id, "failed")
			if !strings.Contains(it.Reason, "redirect") || it.Receipt != nil {
				t.Errorf("failed item %s; want a reason naming the refused redirect and no receipt", body)
			}
			if strings.Contains(string(body), egressRedirectSecret) {
				t.Errorf("failed item %s echoes the query string of the redirect's Location", body)
			}
			var redirected int
			for _, r := range c.p.Requests() {
				if r.Status == http.StatusTemporaryRedirect {
					redirected++
				}
			}
			if redirected == 0 {
				t.Errorf("portal %s answered no 307 (requests %+v): the failure was not the redirect's", c.portal, c.p.Requests())
			}
			if n := len(c.p.Received()) + len(e.trap.Received()); n != 0 {
				t.Errorf("%d uploads completed at %s and trap, want 0", n, c.portal)
			}
			if n := e.trap.Connections(); n != 0 {
				t.Errorf("the redirect target accepted %d connections, want 0", n)
			}
			// Not removed: it was not sent.
			if _, err := os.Lstat(filepath.Join(e.staging, "cohort", "otto", filepath.FromSlash(p))); err != nil {
				t.Errorf("the staged file of a failed push: %v; want it kept", err)
			}
		})
	}
}

// 5. A CSV with a valid NHS number in a share with the identifiers check: blocked, with the
// finding's kind, line and column and never the number; nothing reaches the portal.
//
// 943 476 5919 is the NHS's own example number. Its check digit: the first nine digits
// weighted 10 down to 2 give 9·10 + 4·9 + 3·8 + 4·7 + 7·6 + 6·5 + 5·4 + 9·3 + 1·2 =
// 90+36+24+28+42+30+20+27+2 = 299; 299 mod 11 = 2; 11 − 2 = 9, the tenth digit.
func (e *egressEnv) testIdentifiersBlock(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	const p = "tables/patients.csv"
	csv := "id,nhs_number,visits\n1,943 476 5919,3\n"
	sha := e.stage(t, "cohort", "otto", p, []byte(csv))
	e.waitStaged(t, ctx, "otto", e.otto, "cohort", p, sha)
	received, requests := len(e.ukds.Received()), len(e.ukds.Requests())

	id := e.requestOK(t, ctx, "otto", e.otto, "cohort", p, "ukds")
	it, body := e.waitSettled(t, ctx, "otto", e.otto, id, "blocked")
	if len(it.Findings) != 1 {
		t.Fatalf("blocked item with %d findings, want 1: %s", len(it.Findings), body)
	}
	if f := it.Findings[0]; f.Kind != "nhs_number" || f.Line != 2 || f.Column != 3 {
		t.Errorf("finding %+v, want nhs_number at line 2 column 3", f)
	}
	if !strings.Contains(it.Reason, "nhs_number") {
		t.Errorf("blocked item's reason %q does not name the kind found", it.Reason)
	}
	_, list := e.items(t, ctx, "otto", e.otto, "cohort")
	values := []string{"943 476 5919", "9434765919", "943-476-5919"}
	for _, v := range values {
		for what, b := range map[string][]byte{"item": body, "listing": list} {
			if bytes.Contains(b, []byte(v)) {
				t.Errorf("the %s JSON carries the NHS number %q: %s", what, v, b)
			}
		}
		if n := dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM audit WHERE result LIKE ?`, "%"+v+"%"); n != 0 {
			t.Errorf("%d audit records carry the NHS number %q, want 0", n, v)
		}
	}
	if n := e.auditCount(t, "egress.check", "system", "blocked:%nhs_number%"); n != 1 {
		t.Errorf("%d egress.check records say blocked for nhs_number, want 1", n)
	}
	if n := len(e.ukds.Received()); n != received {
		t.Errorf("ukds received %d uploads after a blocked request, want still %d", n, received)
	}
	if n := len(e.ukds.Requests()); n != requests {
		t.Errorf("ukds answered %d requests after a blocked request, want still %d", n, requests)
	}
	// Blocked is final: asking again runs the checks again and blocks again, as a new item.
	id2 := e.requestOK(t, ctx, "otto", e.otto, "cohort", p, "ukds")
	if id2 == id {
		t.Errorf("asking again after a block reused item %s, want a new item", id)
	}
	e.waitSettled(t, ctx, "otto", e.otto, id2, "blocked")
	if n := len(e.ukds.Requests()); n != requests {
		t.Errorf("ukds answered %d requests after two blocked requests, want still %d", n, requests)
	}
}

// 6. Approval: the requester (an IAA) cannot approve their own item (403), a plain member of
// the share cannot see it to approve it (404); the IAO approves and it arrives. A second item
// is rejected with a reason and never arrives, and cannot be approved afterwards (409).
func (e *egressEnv) testApproval(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	data := egressTable(64<<10, 6)
	sha := e.stage(t, "gated", "adam", "summary.csv", data)
	e.waitStaged(t, ctx, "adam", e.adam, "gated", "summary.csv", sha)
	id := e.requestOK(t, ctx, "adam", e.adam, "gated", "summary.csv", "vault")
	e.waitSettled(t, ctx, "adam", e.adam, id, "awaiting_approval")

	b := shareWant(t, ctx, "adam (IAA and requester)", e.adam, "POST", "/api/v1/egress/"+id+"/approve", nil, http.StatusForbidden)
	if !strings.Contains(string(b), "requester") {
		t.Errorf("the refusal of a self-approval does not say why: %s", b)
	}
	// mark is a member of gated but neither the requester nor a reviewer: the item is not his
	// to see, so it does not exist for him.
	shareWant(t, ctx, "mark (plain member)", e.mark, "POST", "/api/v1/egress/"+id+"/approve", nil, http.StatusNotFound)
	shareWant(t, ctx, "mark (plain member)", e.mark, "POST", "/api/v1/egress/"+id+"/reject", map[string]string{"reason": "no"}, http.StatusNotFound)
	shareWant(t, ctx, "mark (plain member)", e.mark, "GET", "/api/v1/egress/"+id, nil, http.StatusNotFound)
	if it, body := e.item(t, ctx, "olga", e.olga, id); it.Status != "awaiting_approval" || it.DecidedBy != "" {
		t.Fatalf("item after refused approvals: %s; want still awaiting_approval, undecided", body)
	}
	if n := e.auditCount(t, "egress.approve", "adam", "denied%"); n != 1 {
		t.Errorf("%d egress.approve denials audited for adam, want 1", n)
	}
	if n := e.auditCount(t, "egress.approve", "mark", "denied%"); n != 1 {
		t.Errorf("%d egress.approve denials audited for mark, want 1", n)
	}
	if n := len(e.vault.Requests()); n != 0 {
		t.Fatalf("portal vault answered %d requests before any approval, want 0", n)
	}

	b = shareWant(t, ctx, "olga (IAO)", e.olga, "POST", "/api/v1/egress/"+id+"/approve", nil, http.StatusOK)
	var approved egressItem
	if err := json.Unmarshal(b, &approved); err != nil || approved.DecidedBy != "olga" || approved.Status == "awaiting_approval" {
		t.Errorf("approve answered %s (%v); want the item decided by olga, no longer awaiting approval", b, err)
	}
	it, body := e.waitSettled(t, ctx, "adam", e.adam, id, "sent")
	if it.DecidedBy != "olga" || it.Receipt == nil || it.Receipt.SHA256 != sha || it.Receipt.Portal != "vault" {
		t.Errorf("sent item %s; want decided_by olga and a receipt from vault with sha256 %s", body, sha)
	}
	got, err := e.vault.WaitReceived(1, egressWait)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].SHA256 != sha || got[0].Size != int64(len(data)) {
		t.Fatalf("portal vault received %+v; want exactly one upload with sha256 %s", got, sha)
	}
	if n := e.auditCount(t, "egress.approve", "olga", "ok%"); n != 1 {
		t.Errorf("%d egress.approve ok records for olga, want 1", n)
	}

	// Rejected with a reason: final, nothing arrives, and no approval brings it back.
	sha2 := e.stage(t, "gated", "adam", "rows.csv", egressTable(32<<10, 7))
	e.waitStaged(t, ctx, "adam", e.adam, "gated", "rows.csv", sha2)
	id2 := e.requestOK(t, ctx, "adam", e.adam, "gated", "rows.csv", "vault")
	e.waitSettled(t, ctx, "adam", e.adam, id2, "awaiting_approval")
	requests := len(e.vault.Requests())
	const reason = "row-level data: aggregate it first"
	b = shareWant(t, ctx, "olga (IAO)", e.olga, "POST", "/api/v1/egress/"+id2+"/reject", map[string]string{"reason": reason}, http.StatusOK)
	var rejected egressItem
	if err := json.Unmarshal(b, &rejected); err != nil || rejected.Status != "rejected" {
		t.Errorf("reject answered %s (%v); want the item rejected", b, err)
	}
	it, body = e.waitSettled(t, ctx, "adam", e.adam, id2, "rejected")
	if !strings.Contains(it.Reason, reason) || it.DecidedBy != "olga" || it.Receipt != nil {
		t.Errorf("rejected item %s; want the reviewer's reason %q, decided_by olga, no receipt", body, reason)
	}
	shareWant(t, ctx, "olga (IAO)", e.olga, "POST", "/api/v1/egress/"+id2+"/approve", nil, http.StatusConflict)
	if it, body := e.item(t, ctx, "adam", e.adam, id2); it.Status != "rejected" {
		t.Errorf("item after an approval of a rejected item: %s; want still rejected", body)
	}
	if n := len(e.vault.Received()); n != 1 {
		t.Errorf("portal vault received %d uploads after one approval and one rejection, want 1", n)
	}
	if n := len(e.vault.Requests()); n != requests {
		t.Errorf("portal vault answered %d requests after the rejection, want still %d", n, requests)
	}
	if _, err := os.Lstat(filepath.Join(e.staging, "gated", "adam", "rows.csv")); err != nil {
		t.Errorf("the staged file of a rejected item: %v; want it kept", err)
	}
}

// 7. tus: the portal breaks the first PATCH after egressFailAfter bytes; the push resumes at
// the portal's offset (HEAD, then a PATCH of the rest only) and arrives whole.
func (e *egressEnv) testTusResume(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	const p = "big/extract.csv"
	data := egressTable(4<<20, 8)
	size := int64(len(data))
	sha := e.stage(t, "cohort", "otto", p, data)
	e.waitStaged(t, ctx, "otto", e.otto, "cohort", p, sha)
	id := e.requestOK(t, ctx, "otto", e.otto, "cohort", p, "resumable")
	it, body := e.waitSettled(t, ctx, "otto", e.otto, id, "sent")

	got, err := e.resumable.WaitReceived(1, egressWait)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || got[0].SHA256 != sha || got[0].Size != size || got[0].Name != "extract.csv" || got[0].ClaimedSHA256 != sha {
		t.Fatalf("portal resumable received %+v; want exactly one upload extract.csv, %d bytes, sha256 %s", got, size, sha)
	}
	r := it.Receipt
	if r == nil {
		t.Fatalf("sent item without a receipt: %s", body)
	}
	if r.Attempts < 2 || r.Method != "tus" || r.Portal != "resumable" || r.SHA256 != sha || r.Size != size {
		t.Errorf("receipt %s; want method tus, portal resumable, sha256 %s, size %d, at least 2 attempts", body, sha, size)
	}
	if !strings.HasPrefix(r.URL, e.resumable.URL+"/") || r.PortalID != got[0].ID {
		t.Errorf("receipt url %q portal_id %q; want the upload URL under %s with id %s", r.URL, r.PortalID, e.resumable.URL, got[0].ID)
	}

	// The portal's log: one creation; the first PATCH broken at exactly FailAfter bytes; a
	// HEAD; then the PATCH that completed it carried only the rest (it started at the offset
	// the portal had, not at 0); the PATCHes together carried the file once.
	var creates, heads, broken int
	var patched []mftdtest.PortalRequest
	for _, q := range e.resumable.Requests() {
		switch {
		case q.Method == http.MethodPost:
			creates++
		case q.Method == http.MethodHead:
			heads++
		case q.Method == http.MethodPatch:
			patched = append(patched, q)
			if q.Status == 0 {
				broken++
			}
		}
	}
	if creates != 1 || heads < 1 || broken != 1 {
		t.Errorf("portal requests: %d creations, %d HEADs, %d broken PATCHes; want 1, at least 1, 1: %+v",
			creates, heads, broken, e.resumable.Requests())
	}
	var total int64
	for _, q := range patched {
		if q.Status == http.StatusNoContent || q.Status == 0 {
			total += q.Bytes
		}
	}
	if n := len(patched); n < 2 {
		t.Fatalf("%d PATCH requests, want at least 2 (broken, then resumed): %+v", n, patched)
	}
	first, last := patched[0], patched[len(patched)-1]
	if first.Status != 0 || first.Bytes != egressFailAfter {
		t.Errorf("first PATCH: status %d, %d bytes; want broken (0) after exactly %d bytes", first.Status, first.Bytes, egressFailAfter)
	}
	if last.Status != http.StatusNoContent || last.Bytes <= 0 || last.Bytes >= size {
		t.Errorf("last PATCH: status %d, %d bytes; want 204 with the rest of the file, fewer than its %d bytes (a resume, not a restart)",
			last.Status, last.Bytes, size)
	}
	if total != size {
		t.Errorf("the PATCHes carried %d bytes in total, want the file's %d once (resumed at offset %d)", total, size, size-last.Bytes)
	}
	e.waitRemoved(t, "cohort", "otto", p)
}

// 8. A session opened with an emergency code cannot push, even for a member with the outbound
// right and a staged file; the item stays staged, and a normal session of the same user then
// pushes it.
func (e *egressEnv) testEmergencySession(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	const p = "emergency.csv"
	sha := e.stage(t, "cohort", "emil", p, egressTable(16<<10, 9))
	staged := e.waitStaged(t, ctx, "emil", e.emilClient, "cohort", p, sha)

	env := &accountEnv{d: e.d, notifyDir: e.notifyDir}
	w := env.door(t, "127.0.0.1")
	in := env.inbox(e.emil.Name)
	if st, body := w.call(t, http.MethodPost, "/api/v1/emergency/request", "", map[string]string{"username": e.emil.Name, "password": e.emil.Password}); st != http.StatusAccepted {
		t.Fatalf("POST /api/v1/emergency/request: %d %q, want 202", st, body)
	}
	auth := eightDigits(t, in.next(t, "authorisation"))
	st, body := w.call(t, http.MethodPost, "/api/v1/emergency/verify", "", map[string]string{"username": e.emil.Name, "password": e.emil.Password, "code": auth})
	if st != http.StatusOK {
		t.Fatalf("POST /api/v1/emergency/verify: %d %q, want 200", st, body)
	}
	var out struct {
		Code string `json:"emergency_code"`
	}
	if err := json.Unmarshal(body, &out); err != nil || out.Code == "" {
		t.Fatalf("POST /api/v1/emergency/verify: body %q: %v", body, err)
	}
	st, body = w.login(t, e.emil.Name, e.emil.Password, out.Code)
	if st != http.StatusOK {
		t.Fatalf("login with the emergency code: %d %q, want 200", st, body)
	}
	emergency := e.d.Client(token(t, body))
	var me struct {
		Emergency bool `json:"emergency_session"`
	}
	if b := shareWant(t, ctx, "emil (emergency)", emergency, "GET", "/api/v1/me", nil, http.StatusOK); json.Unmarshal(b, &me) != nil || !me.Emergency {
		t.Fatalf("GET /api/v1/me in the emergency session: %s; want emergency_session true", b)
	}

	denied := e.auditCount(t, "egress.request", "emil", "denied%")
	b := e.request(t, ctx, "emil (emergency)", emergency, "cohort", p, "ukds", http.StatusForbidden)
	if !strings.Contains(string(b), "emergency code") {
		t.Errorf("the refusal in an emergency session does not mention the emergency code: %s", b)
	}
	if n := e.auditCount(t, "egress.request", "emil", "denied%emergency%"); n != denied+1 {
		t.Errorf("%d egress.request denials naming the emergency session for emil, want %d", n, denied+1)
	}
	items, list := e.items(t, ctx, "emil", e.emilClient, "cohort")
	if it, ok := current(items, p); !ok || it.ID != staged.ID || it.Status != "staged" || it.RequestedBy != "" {
		t.Fatalf("emil's items after the emergency session's request: %s; want item %s still staged, never requested", list, staged.ID)
	}

	// The same user, file and portal from a normal session: allowed, so the 403 was the
	// session's kind.
	before := len(e.ukds.Received())
	id := e.requestOK(t, ctx, "emil", e.emilClient, "cohort", p, "ukds")
	e.waitSettled(t, ctx, "emil", e.emilClient, id, "sent")
	got, err := e.ukds.WaitReceived(before+1, egressWait)
	if err != nil {
		t.Fatal(err)
	}
	if last := got[len(got)-1]; last.SHA256 != sha {
		t.Errorf("ukds's latest upload has sha256 %s, want emil's %s", last.SHA256, sha)
	}
}

// Bad input: malformed requests, paths that leave the caller's staging folder, nothing staged,
// unknown items and a reviewer's reason with control characters each get a clear 4xx, and
// nothing is written: no item is created or moved, no request is recorded as accepted.
func (e *egressEnv) testBadInput(t *testing.T) {
	ctx := testCtx(t, 3*time.Minute)
	const p = "tables/bad.csv"
	sha := e.stage(t, "cohort", "otto", p, egressTable(8<<10, 11))
	staged := e.waitStaged(t, ctx, "otto", e.otto, "cohort", p, sha)
	// One item awaiting approval, for the reviewer's reason.
	shaG := e.stage(t, "gated", "adam", "reason.csv", egressTable(8<<10, 12))
	e.waitStaged(t, ctx, "adam", e.adam, "gated", "reason.csv", shaG)
	gated := e.requestOK(t, ctx, "adam", e.adam, "gated", "reason.csv", "vault")
	e.waitSettled(t, ctx, "adam", e.adam, gated, "awaiting_approval")

	items := func() int { return dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM egress_items`) }
	accepted := func() int {
		return dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name IN ('egress.request', 'egress.reject', 'egress.approve') AND (result LIKE 'ok%' OR result LIKE 'rejected%')`)
	}
	itemsBefore, acceptedBefore := items(), accepted()

	for _, c := range []struct {
		name, method, path string
		body               any
		want               int
		says               string
	}{
		{"no portal", "POST", "/api/v1/egress", map[string]string{"share": "cohort", "path": p}, http.StatusBadRequest, "required"},
		{"unknown field", "POST", "/api/v1/egress", map[string]any{"share": "cohort", "path": p, "portal": "ukds", "priority": 1}, http.StatusBadRequest, "JSON"},
		{"not JSON", "POST", "/api/v1/egress", []string{"cohort", p, "ukds"}, http.StatusBadRequest, "JSON"},
		{"path leaving the folder", "POST", "/api/v1/egress", map[string]string{"share": "cohort", "path": "../mark/a.csv", "portal": "ukds"}, http.StatusBadRequest, "invalid path"},
		{"nothing staged there", "POST", "/api/v1/egress", map[string]string{"share": "cohort", "path": "tables/none.csv", "portal": "ukds"}, http.StatusNotFound, "no staged file"},
		{"listing without a share", "GET", "/api/v1/egress", nil, http.StatusBadRequest, "share"},
		{"unknown item", "GET", "/api/v1/egress/NOSUCHITEM", nil, http.StatusNotFound, "no such"},
		{"approving an unknown item", "POST", "/api/v1/egress/NOSUCHITEM/approve", nil, http.StatusNotFound, "no such"},
		{"reason with an escape", "POST", "/api/v1/egress/" + gated + "/reject", map[string]string{"reason": "ok\x1b[2J\nforged line"}, http.StatusBadRequest, "printable"},
		{"reason too long", "POST", "/api/v1/egress/" + gated + "/reject", map[string]string{"reason": strings.Repeat("r", 1001)}, http.StatusBadRequest, "1000"},
	} {
		who, c0 := "otto", e.otto
		if strings.Contains(c.path, gated) {
			who, c0 = "olga (IAO)", e.olga
		}
		st, b := shareCall(t, ctx, c0, c.method, c.path, c.body)
		if st != c.want || !strings.Contains(string(b), c.says) {
			t.Errorf("%s: %s %s as %s: %d %s; want %d saying %q", c.name, c.method, c.path, who, st, b, c.want, c.says)
		}
	}
	if st, b := rawCall(t, ctx, e.otto, "POST", "/api/v1/egress", "text/plain", `share=cohort`); st != http.StatusUnsupportedMediaType {
		t.Errorf("POST /api/v1/egress as text/plain: %d %s; want 415", st, b)
	}

	if n := items(); n != itemsBefore {
		t.Errorf("%d egress items after the bad requests, %d before: bad input wrote items", n, itemsBefore)
	}
	if n := accepted(); n != acceptedBefore {
		t.Errorf("%d accepted egress audit records after the bad requests, %d before", n, acceptedBefore)
	}
	list, body := e.items(t, ctx, "otto", e.otto, "cohort")
	if it, ok := current(list, p); !ok || it.ID != staged.ID || it.Status != "staged" {
		t.Errorf("otto's staged item after the bad requests: %s; want %s still staged", body, staged.ID)
	}
	if it, body := e.item(t, ctx, "adam", e.adam, gated); it.Status != "awaiting_approval" || it.Reason != "" {
		t.Errorf("the item after rejections with bad reasons: %s; want it still awaiting approval, no reason", body)
	}
}

// rawCall sends body as it is, with the given Content-Type, as c.
func rawCall(t *testing.T, ctx context.Context, c *mftdtest.Client, method, path, contentType, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", contentType)
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	return resp.StatusCode, b
}
