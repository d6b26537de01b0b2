package egress

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/zeebo/blake3"
	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
	"github.com/mftd/mftd/scanner/scannertest"
	"github.com/mftd/mftd/storage/state"
)

// shareSnaps is the share snapshots the service decides on, changed by the
// tests as an IAO would.
type shareSnaps struct {
	mu    sync.Mutex
	snaps map[string]policy.Snapshot
}

func (s *shareSnaps) Snapshot(_ context.Context, share string) (policy.Snapshot, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.snaps[share], nil
}

func (s *shareSnaps) setOutbound(share, user string, outbound bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	snap := s.snaps[share]
	members := map[string]bool{}
	for k, v := range snap.Members {
		members[k] = v
	}
	members[user] = outbound
	snap.Members = members
	s.snaps[share] = snap
}

// receiver is a put portal that keeps what it received.
type receiver struct {
	mu       sync.Mutex
	bodies   map[string][]byte // by SHA-256 of the complete bodies
	requests atomic.Int64
	broken   atomic.Int64 // bodies that ended early
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.requests.Add(1)
	b, err := io.ReadAll(req.Body)
	if err != nil || int64(len(b)) != req.ContentLength {
		r.broken.Add(1)
		http.Error(w, "short body", http.StatusBadRequest)
		return
	}
	sum := sha256.Sum256(b)
	r.mu.Lock()
	r.bodies[hex.EncodeToString(sum[:])] = b
	r.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusCreated)
	io.WriteString(w, `{"id":"rcpt-1"}`)
}

func (r *receiver) got(sum string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.bodies[sum]
	return ok
}

type harness struct {
	t       *testing.T
	svc     *Service
	db      *state.DB
	live    *policy.Live
	snaps   *shareSnaps
	staging string
	portal  *receiver
	other   *receiver // a second portal, not on the share's list
	scan    *flakyScanner
}

// flakyScanner is the real built-in checks, failing while down is set.
type flakyScanner struct {
	scanner.Scanner
	down atomic.Bool
}

func (f *flakyScanner) Scan(ctx context.Context, file scanner.File) (scanner.Verdict, error) {
	if f.down.Load() {
		return scanner.Verdict{}, errors.New("scanner down")
	}
	return f.Scanner.Scan(ctx, file)
}

// newHarness starts a service with share "cohort" in project "study"
// (IAO olga, IAA adam; members otto with the outbound right and mark
// without), portal "ukds" (put, on the list) and "other" (not on it).
func newHarness(t *testing.T, approval bool) *harness {
	return newHarnessSettle(t, approval, 100*time.Millisecond)
}

// newHarnessSettle is newHarness with the watcher's settle time.
func newHarnessSettle(t *testing.T, approval bool, settle time.Duration) *harness {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	dir := t.TempDir()
	db, err := state.Open(ctx, filepath.Join(dir, "state.db"), zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	pki := newPKI(t)
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, pki.caPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	h := &harness{t: t, db: db, staging: filepath.Join(dir, "staging"),
		portal: &receiver{bodies: map[string][]byte{}}, other: &receiver{bodies: map[string][]byte{}}}
	ps, os2 := newServer(t, pki, h.portal), newServer(t, pki, h.other)
	portal := func(name, port string) policy.EgressPortal {
		return policy.EgressPortal{Portal: policy.Portal{Name: name, URL: "https://localhost:" + port + "/files", Method: policy.PortalPut, AllowPrivate: true}, CAFile: caFile}
	}
	h.live = policy.NewLive(policy.Settings{Egress: policy.EgressSettings{
		Portals:  map[string]policy.EgressPortal{"ukds": portal("ukds", ps.port), "other": portal("other", os2.port)},
		Shares:   map[string]policy.EgressShare{"cohort": {Portals: []string{"ukds"}, RequireApproval: approval, Checks: []string{policy.EgressCheckMalware, policy.EgressCheckIdentifiers}}},
		Attempts: 2, RemoveSent: true,
	}})
	h.snaps = &shareSnaps{snaps: map[string]policy.Snapshot{"cohort": {
		Project: policy.Project{Name: "study", Owner: "olga", Admins: []string{"adam"}},
		Share:   "cohort", Members: map[string]bool{"otto": true, "mark": false},
	}}}
	if err := os.MkdirAll(filepath.Join(h.staging, "cohort", "otto"), 0o700); err != nil {
		t.Fatal(err)
	}
	h.scan = &flakyScanner{Scanner: scannertest.Builtin(t, 1<<30)}
	h.svc, err = New(Config{StagingDir: h.staging, Settle: settle, Poll: 50 * time.Millisecond}, zap.NewNop(), db, h.live, h.snaps, h.scan, nil)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- h.svc.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		db.Close()
	})
	return h
}

// stage writes a file into otto's staging folder and waits until it is a
// staged item with its SHA-256.
func (h *harness) stage(name, content string) state.EgressItem {
	h.t.Helper()
	p := filepath.Join(h.staging, "cohort", "otto", filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
		h.t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		h.t.Fatal(err)
	}
	sum := sha256.Sum256([]byte(content))
	want := hex.EncodeToString(sum[:])
	return h.wait(func() (state.EgressItem, bool) {
		it, err := h.db.CurrentEgressItem(context.Background(), "cohort", "otto", name)
		return it, err == nil && it.SHA256 == want && it.Status == string(StatusStaged)
	}, "staged "+name)
}

// request stages content at name in otto's cohort folder and asks for it
// to go to ukds.
func (h *harness) request(name, content string) state.EgressItem {
	h.t.Helper()
	h.stage(name, content)
	it, err := h.svc.Request(context.Background(), otto, "cohort", name, "ukds")
	if err != nil {
		h.t.Fatal(err)
	}
	return it
}

func (h *harness) wait(cond func() (state.EgressItem, bool), what string) state.EgressItem {
	h.t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		it, ok := cond()
		if ok {
			return it
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("timed out waiting for %s; last: %+v", what, it)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// waitStatus waits until item id is in status st.
func (h *harness) waitStatus(id string, st Status) state.EgressItem {
	h.t.Helper()
	return h.wait(func() (state.EgressItem, bool) {
		it, err := h.db.GetEgressItem(context.Background(), id)
		return it, err == nil && it.Status == string(st)
	}, id+" "+string(st))
}

var otto = Actor{User: "otto"}

func TestServiceSendsWithReceipt(t *testing.T) {
	h := newHarness(t, false)
	staged := h.stage("tables/counts.csv", "group,count\na,12\nb,40\n")
	// The item carries the BLAKE3 of the staged bytes, which the push
	// verifies.
	if b3 := blake3.Sum256([]byte("group,count\na,12\nb,40\n")); staged.BLAKE3 != hex.EncodeToString(b3[:]) {
		t.Fatalf("staged item's blake3 %q, want %x", staged.BLAKE3, b3)
	}
	it, err := h.svc.Request(context.Background(), otto, "cohort", "tables/counts.csv", "ukds")
	if err != nil {
		t.Fatal(err)
	}
	if it.ID != staged.ID || it.Status != string(StatusChecking) {
		t.Fatalf("request gave %+v, want the staged item checking", it)
	}
	sent := h.waitStatus(it.ID, StatusSent)
	if !h.portal.got(staged.SHA256) {
		t.Fatal("the portal did not receive the bytes")
	}
	var rc ReceiptJSON
	if err := json.Unmarshal([]byte(sent.Receipt), &rc); err != nil {
		t.Fatal(err)
	}
	if rc.SHA256 != staged.SHA256 || rc.Size != staged.Size || rc.Portal != "ukds" || rc.Status != http.StatusCreated || rc.PortalID != "rcpt-1" {
		t.Fatalf("receipt %+v", rc)
	}
	// Sent: the staged file is removed, and its item is not withdrawn for it.
	h.wait(func() (state.EgressItem, bool) {
		_, err := os.Stat(filepath.Join(h.staging, "cohort", "otto", "tables", "counts.csv"))
		return state.EgressItem{}, errors.Is(err, os.ErrNotExist)
	}, "the staged file removed")
	time.Sleep(300 * time.Millisecond) // the watcher sees the removal
	if got, _ := h.db.GetEgressItem(context.Background(), it.ID); got.Status != string(StatusSent) {
		t.Fatalf("after removal the item is %s", got.Status)
	}
	if h.other.requests.Load() != 0 {
		t.Fatal("the other portal was contacted")
	}
	// Every step is in the verified audit chain.
	recs, err := h.db.AuditSince(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		if r.Object == "egress:"+it.ID {
			seen[r.Action] = true
		}
	}
	for _, a := range []string{"egress.stage", "egress.request", "egress.check", "egress.push", "egress.sent"} {
		if !seen[a] {
			t.Errorf("no %s audit record for the item (have %v)", a, seen)
		}
	}
	if _, err := h.db.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

func TestServiceRefusals(t *testing.T) {
	h := newHarness(t, false)
	h.stage("a.csv", "x,y\n1,2\n")
	ctx := context.Background()
	for _, tt := range []struct {
		name   string
		a      Actor
		share  string
		portal string
		want   error
	}{
		{"member without the outbound right", Actor{User: "mark"}, "cohort", "ukds", policy.ErrDenied},
		{"IAO who is not a member", Actor{User: "olga"}, "cohort", "ukds", policy.ErrDenied},
		{"outsider", Actor{User: "eve"}, "cohort", "ukds", policy.ErrDenied},
		{"portal not on the share's list", otto, "cohort", "other", policy.ErrDenied},
		{"unknown portal", otto, "cohort", "nope", policy.ErrDenied},
		{"emergency session", Actor{User: "otto", Emergency: true}, "cohort", "ukds", policy.ErrDenied},
		{"share without egress", otto, "other-share", "ukds", policy.ErrDenied},
	} {
		t.Run(tt.name, func(t *testing.T) {
			before, _ := h.db.VerifyAudit(ctx)
			_, err := h.svc.Request(ctx, tt.a, tt.share, "a.csv", tt.portal)
			if !errors.Is(err, tt.want) {
				t.Fatalf("Request = %v, want %v", err, tt.want)
			}
			if after, _ := h.db.VerifyAudit(ctx); after != before+1 {
				t.Fatalf("audit records %d → %d, want one for the refusal", before, after)
			}
		})
	}
	if _, err := h.svc.Request(ctx, otto, "cohort", "missing.csv", "ukds"); !errors.Is(err, ErrNotStaged) {
		t.Fatalf("a path with nothing staged: %v", err)
	}
	if _, err := h.svc.Request(ctx, otto, "cohort", "../mark/a.csv", "ukds"); err == nil {
		t.Fatal("a path with .. was accepted")
	}
	h.scan.down.Store(true) // keep the first request checking
	if _, err := h.svc.Request(ctx, otto, "cohort", "a.csv", "ukds"); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Request(ctx, otto, "cohort", "a.csv", "ukds"); !errors.Is(err, ErrBusy) {
		t.Fatalf("a second request while the first is under way: %v", err)
	}
	if n := h.portal.requests.Load() + h.other.requests.Load(); n != 0 {
		t.Fatalf("%d requests reached a portal", n)
	}
}

func TestServiceBlocksIdentifiersAndPacked(t *testing.T) {
	h := newHarness(t, false)
	it := h.request("patients.csv", "id,nhs_number\n1,943 476 5919\n")
	blocked := h.waitStatus(it.ID, StatusBlocked)
	var fs []FindingJSON
	if err := json.Unmarshal([]byte(blocked.Findings), &fs); err != nil || len(fs) != 1 || fs[0].Line != 2 || fs[0].Kind != scanner.KindNHSNumber {
		t.Fatalf("findings %q (%v)", blocked.Findings, err)
	}
	if strings.Contains(blocked.Findings+blocked.Reason, "9434765919") || strings.Contains(blocked.Findings+blocked.Reason, "943 476 5919") {
		t.Fatal("the identifier's value is in the item")
	}

	it = h.request("eicar.txt", `X5O!P%@AP[4\PZX54(P^)7CC)7}$EICAR-STANDARD-ANTIVIRUS-TEST-FILE!$H+H*`)
	if b := h.waitStatus(it.ID, StatusBlocked); !strings.Contains(b.Reason, "malware") {
		t.Fatalf("EICAR blocked with reason %q", b.Reason)
	}

	it = h.request("tables.gz", "\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\x03\x03\x00\x00\x00\x00\x00\x00\x00\x00\x00")
	if b := h.waitStatus(it.ID, StatusBlocked); !strings.Contains(b.Reason, "packed") {
		t.Fatalf("gzip blocked with reason %q", b.Reason)
	}
	if n := h.portal.requests.Load(); n != 0 {
		t.Fatalf("%d requests reached the portal", n)
	}
}

func TestServiceApproval(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	it := h.request("counts.csv", "a,b\n1,2\n")
	h.waitStatus(it.ID, StatusAwaitingApproval)
	if _, err := h.svc.Approve(ctx, otto, it.ID); !errors.Is(err, policy.ErrDenied) {
		t.Fatalf("the requester approved their own item: %v", err)
	}
	if _, err := h.svc.Approve(ctx, Actor{User: "mark"}, it.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another member approved: %v", err)
	}
	if _, err := h.svc.Approve(ctx, Actor{User: "adam", Emergency: true}, it.ID); !errors.Is(err, policy.ErrDenied) {
		t.Fatalf("an emergency session approved: %v", err)
	}
	time.Sleep(200 * time.Millisecond)
	if n := h.portal.requests.Load(); n != 0 {
		t.Fatalf("sent before approval: %d requests", n)
	}
	got, err := h.svc.Approve(ctx, Actor{User: "adam"}, it.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.DecidedBy != "adam" {
		t.Fatalf("decided by %q", got.DecidedBy)
	}
	h.waitStatus(it.ID, StatusSent)
	if _, err := h.svc.Approve(ctx, Actor{User: "olga"}, it.ID); !errors.Is(err, ErrState) {
		t.Fatalf("approving a sent item: %v", err)
	}

	// Reject.
	it = h.request("second.csv", "a,b\n3,4\n")
	h.waitStatus(it.ID, StatusAwaitingApproval)
	rej, err := h.svc.Reject(ctx, Actor{User: "olga"}, it.ID, "small counts")
	if err != nil || rej.Status != string(StatusRejected) || !strings.Contains(rej.Reason, "small counts") {
		t.Fatalf("reject: %+v, %v", rej, err)
	}
	if n := h.portal.requests.Load(); n != 1 {
		t.Fatalf("%d portal requests, want 1 (the approved item only)", n)
	}
}

// TestServiceChangedAfterApproval: the bytes approved are the bytes sent.
// Content changed in place (same size, mtime put back) after approval is
// caught by the push's hash and never delivered complete.
func TestServiceChangedAfterApproval(t *testing.T) {
	// The watcher would withdraw the item once the change settles; a long
	// settle lets the push meet the change first.
	h := newHarnessSettle(t, true, 5*time.Second)
	ctx := context.Background()
	staged := h.stage("counts.csv", "a,b\n1,2\n")
	it, err := h.svc.Request(ctx, otto, "cohort", "counts.csv", "ukds")
	if err != nil {
		t.Fatal(err)
	}
	h.waitStatus(it.ID, StatusAwaitingApproval)
	p := filepath.Join(h.staging, "cohort", "otto", "counts.csv")
	if err := os.WriteFile(p, []byte("a,b\n9,9\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(p, staged.ModTime, staged.ModTime); err != nil {
		t.Fatal(err)
	}
	if _, err := h.svc.Approve(ctx, Actor{User: "olga"}, it.ID); err != nil {
		t.Fatal(err)
	}
	failed := h.waitStatus(it.ID, StatusFailed)
	if !strings.Contains(failed.Reason, "changed") {
		t.Fatalf("failed with %q", failed.Reason)
	}
	if len(h.portal.bodies) != 0 {
		t.Fatal("the portal received a complete body")
	}
}

func TestServiceRevokedBeforePush(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	it := h.request("counts.csv", "a,b\n1,2\n")
	h.waitStatus(it.ID, StatusAwaitingApproval)
	h.snaps.setOutbound("cohort", "otto", false)
	if _, err := h.svc.Approve(ctx, Actor{User: "olga"}, it.ID); err != nil {
		t.Fatal(err)
	}
	failed := h.waitStatus(it.ID, StatusFailed)
	if !strings.Contains(failed.Reason, "no longer allowed") {
		t.Fatalf("failed with %q", failed.Reason)
	}
	if n := h.portal.requests.Load(); n != 0 {
		t.Fatalf("%d portal requests after the right was revoked", n)
	}
}

func TestServiceScannerDownWaits(t *testing.T) {
	h := newHarness(t, false)
	ctx := context.Background()
	h.stage("counts.csv", "a,b\n1,2\n")
	h.scan.down.Store(true)
	it, err := h.svc.Request(ctx, otto, "cohort", "counts.csv", "ukds")
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(500 * time.Millisecond)
	if got, _ := h.db.GetEgressItem(ctx, it.ID); got.Status != string(StatusChecking) {
		t.Fatalf("with the scanner down the item is %s", got.Status)
	}
	if n := h.portal.requests.Load(); n != 0 {
		t.Fatal("sent unchecked")
	}
	h.scan.down.Store(false)
	h.svc.mu.Lock()
	delete(h.svc.later, it.ID) // the 10 s backoff, skipped
	h.svc.mu.Unlock()
	h.svc.Wake()
	h.waitStatus(it.ID, StatusSent)
}

func TestServiceWithdrawsOnChange(t *testing.T) {
	h := newHarness(t, true)
	ctx := context.Background()
	it := h.request("counts.csv", "a,b\n1,2\n")
	h.waitStatus(it.ID, StatusAwaitingApproval)
	next := h.stage("counts.csv", "a,b\n1,2\n3,4\n") // a new version
	if next.ID == it.ID {
		t.Fatal("the new version reused the item")
	}
	w := h.waitStatus(it.ID, StatusWithdrawn)
	if !strings.Contains(w.Reason, "changed") {
		t.Fatalf("withdrawn with %q", w.Reason)
	}
	if _, err := h.svc.Approve(ctx, Actor{User: "olga"}, it.ID); !errors.Is(err, ErrState) {
		t.Fatalf("approving a withdrawn item: %v", err)
	}
	if err := os.Remove(filepath.Join(h.staging, "cohort", "otto", "counts.csv")); err != nil {
		t.Fatal(err)
	}
	h.waitStatus(next.ID, StatusGone)
}
