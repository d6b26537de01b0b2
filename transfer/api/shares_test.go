package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage"
	"github.com/mftd/mftd/storage/local"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/api"
	"github.com/mftd/mftd/transfer/authn"
	"github.com/mftd/mftd/transfer/shares"
)

// sharesFixture is the API with the shares endpoints mounted, on a real
// state database and local storage.
type sharesFixture struct {
	t        *testing.T
	srv      *httptest.Server
	db       *state.DB
	store    storage.Backend
	svc      *shares.Service
	settings *policy.Live
}

func newSharesFixture(t *testing.T) *sharesFixture {
	t.Helper()
	ctx := context.Background()
	log := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	db, err := state.Open(ctx, filepath.Join(t.TempDir(), "db"), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	store, err := local.New(t.TempDir(), log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { store.Close() })
	settings := policy.NewLive(policy.Settings{Quotas: policy.Quotas{ShareBytes: 1 << 20}})
	svc, err := shares.New(shares.Config{}, log, db, store, settings)
	if err != nil {
		t.Fatal(err)
	}
	auth := authn.New(authn.Config{SessionTTL: time.Hour}, log, db, nil, nil)
	a := api.New(api.Config{}, log, auth, nil, db)
	srv := httptest.NewServer(a.Handler(api.NewShares(svc, log)))
	t.Cleanup(srv.Close)
	return &sharesFixture{t: t, srv: srv, db: db, store: store, svc: svc, settings: settings}
}

// user creates an account and returns a bearer token of a new session
// (an emergency-code session if emergency).
func (f *sharesFixture) user(name string, emergency bool) string {
	f.t.Helper()
	ctx := context.Background()
	acct, err := f.db.AccountByName(ctx, name)
	if err != nil {
		if acct, err = f.db.CreateAccount(ctx, state.Account{Name: name}); err != nil {
			f.t.Fatal(err)
		}
	}
	token, th, err := policy.NewToken()
	if err != nil {
		f.t.Fatal(err)
	}
	now := time.Now()
	if err := f.db.OpenSession(ctx, state.Session{ID: rand.Text(), TokenHash: th, AccountID: acct.ID, CreatedAt: now, LastSeen: now,
		ExpiresAt: now.Add(time.Hour), Emergency: emergency}); err != nil {
		f.t.Fatal(err)
	}
	return token
}

// arrival stores data as a checked file in owner's Arrivals.
func (f *sharesFixture) arrival(owner, name string, data []byte) (sha string) {
	f.t.Helper()
	ctx := context.Background()
	key, err := storage.ArrivalKey(owner, name)
	if err != nil {
		f.t.Fatal(err)
	}
	up, err := f.store.Create(ctx, key)
	if err != nil {
		f.t.Fatal(err)
	}
	if _, err := up.WriteChunk(ctx, 0, bytes.NewReader(data)); err != nil {
		f.t.Fatal(err)
	}
	if _, err := up.Commit(ctx); err != nil {
		f.t.Fatal(err)
	}
	sum := sha256.Sum256(data)
	id := "up-" + owner + "-" + hex.EncodeToString(sum[:4])
	if err := f.db.CreateUpload(ctx, state.Upload{ID: id, Owner: owner, Filename: name, Length: int64(len(data)), Status: state.StatusPublishing, Key: key}); err != nil {
		f.t.Fatal(err)
	}
	sha = hex.EncodeToString(sum[:])
	if err := f.db.PublishFile(ctx, state.File{Key: key, Owner: owner, Name: name, Size: int64(len(data)), SHA256: sha,
		CreatedAt: time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC), UploadID: id}); err != nil {
		f.t.Fatal(err)
	}
	return sha
}

// call sends a request with token and a JSON body (nil: none) and returns
// the status and body.
func (f *sharesFixture) call(token, method, path string, body any) (int, []byte) {
	f.t.Helper()
	var r io.Reader
	if body != nil {
		b, err := json.Marshal(body)
		if err != nil {
			f.t.Fatal(err)
		}
		r = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, f.srv.URL+path, r)
	if err != nil {
		f.t.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+token)
	resp, err := f.srv.Client().Do(req)
	if err != nil {
		f.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (f *sharesFixture) want(what string, wantStatus int, token, method, path string, body any) []byte {
	f.t.Helper()
	st, b := f.call(token, method, path, body)
	if st != wantStatus {
		f.t.Errorf("%s: %s %s: %d %s, want %d", what, method, path, st, b, wantStatus)
	}
	return b
}

func TestSharesAPI(t *testing.T) {
	f := newSharesFixture(t)
	ctx := context.Background()
	iao, iaa, member, outsider := f.user("olga", false), f.user("adam", false), f.user("mark", false), f.user("nina", false)
	emergency := f.user("olga", true)
	f.user("zoe", false)
	cli := shares.Actor{User: "cli:root", Admin: true}
	if err := f.svc.CreateProject(ctx, cli, "p", "olga"); err != nil {
		t.Fatal(err)
	}

	// The IAO creates a share and an IAA; a share name is unique.
	b := f.want("IAO creates a share", http.StatusCreated, iao, "POST", "/api/v1/projects/p/shares", map[string]string{"name": "s"})
	if !bytes.Contains(b, []byte(`"name":"s"`)) || !bytes.Contains(b, []byte(`"project":"p"`)) {
		t.Errorf("create share answered %s", b)
	}
	f.want("second share s", http.StatusConflict, iao, "POST", "/api/v1/projects/p/shares", map[string]string{"name": "s"})
	f.want("bad share name", http.StatusBadRequest, iao, "POST", "/api/v1/projects/p/shares", map[string]string{"name": "S/../x"})
	f.want("bad project name", http.StatusBadRequest, iao, "POST", "/api/v1/projects/P!/shares", map[string]string{"name": "t"})
	f.want("outsider creates a share", http.StatusNotFound, outsider, "POST", "/api/v1/projects/p/shares", map[string]string{"name": "t"})
	f.want("share in no project", http.StatusNotFound, iao, "POST", "/api/v1/projects/nope/shares", map[string]string{"name": "t"})
	f.want("no JSON", http.StatusUnsupportedMediaType, iao, "POST", "/api/v1/projects/p/shares", nil)
	f.want("no token", http.StatusUnauthorized, "", "GET", "/api/v1/shares", nil)
	f.want("IAO adds an IAA", http.StatusNoContent, iao, "PUT", "/api/v1/projects/p/admins/adam", nil)
	f.want("IAO adds no account", http.StatusNotFound, iao, "PUT", "/api/v1/projects/p/admins/ghost", nil)

	// The IAA adds members but not IAAs; a member adds nobody and grants nothing.
	f.want("IAA adds a member", http.StatusNoContent, iaa, "PUT", "/api/v1/shares/s/members/mark", map[string]bool{"outbound": false})
	f.want("IAA adds an IAA", http.StatusForbidden, iaa, "PUT", "/api/v1/projects/p/admins/zoe", nil)
	f.want("IAA removes the IAA", http.StatusForbidden, iaa, "DELETE", "/api/v1/projects/p/admins/adam", nil)
	f.want("member adds a member", http.StatusForbidden, member, "PUT", "/api/v1/shares/s/members/zoe", map[string]bool{"outbound": false})
	f.want("member grants outbound", http.StatusForbidden, member, "PUT", "/api/v1/shares/s/members/mark", map[string]bool{"outbound": true})
	f.want("member adds an IAA", http.StatusNotFound, member, "PUT", "/api/v1/projects/p/admins/zoe", nil)
	f.want("outsider adds a member", http.StatusNotFound, outsider, "PUT", "/api/v1/shares/s/members/nina", map[string]bool{"outbound": false})
	f.want("unknown field", http.StatusBadRequest, iaa, "PUT", "/api/v1/shares/s/members/zoe", map[string]bool{"outbnd": true})

	var list struct {
		Shares []struct {
			Name, Project, Role string
			Outbound            bool
		}
	}
	b = f.want("member lists shares", http.StatusOK, member, "GET", "/api/v1/shares", nil)
	if err := json.Unmarshal(b, &list); err != nil || len(list.Shares) != 1 || list.Shares[0].Name != "s" || list.Shares[0].Role != "member" || list.Shares[0].Outbound {
		t.Errorf("GET /api/v1/shares as member: %s (%v)", b, err)
	}
	f.want("IAO grants outbound", http.StatusNoContent, iao, "PUT", "/api/v1/shares/s/members/mark", map[string]bool{"outbound": true})
	b = f.want("member lists shares", http.StatusOK, member, "GET", "/api/v1/shares", nil)
	if err := json.Unmarshal(b, &list); err != nil || len(list.Shares) != 1 || !list.Shares[0].Outbound {
		t.Errorf("GET /api/v1/shares after the grant: %s (%v)", b, err)
	}
	b = f.want("outsider lists shares", http.StatusOK, outsider, "GET", "/api/v1/shares", nil)
	if string(bytes.TrimSpace(b)) != `{"shares":[]}` {
		t.Errorf("GET /api/v1/shares as outsider: %s", b)
	}

	// Moving an Arrival in: its hash and creation time travel with it.
	sha := f.arrival("mark", "visits.csv", []byte("id,visit\n1,2\n"))
	f.arrival("nina", "n.csv", []byte("n"))
	f.want("outsider moves in", http.StatusNotFound, outsider, "POST", "/api/v1/arrivals/n.csv/move", map[string]string{"share": "s", "path": "n.csv"})
	f.want("bad path", http.StatusBadRequest, member, "POST", "/api/v1/arrivals/visits.csv/move", map[string]string{"share": "s", "path": "../../arrivals/nina/x"})
	f.want("no such arrival", http.StatusNotFound, member, "POST", "/api/v1/arrivals/none.csv/move", map[string]string{"share": "s", "path": "x"})
	b = f.want("member moves in", http.StatusCreated, member, "POST", "/api/v1/arrivals/visits.csv/move", map[string]string{"share": "s", "path": "raw/visits.csv"})
	var moved struct {
		Share, Path, SHA256 string
		CreatedAt           time.Time `json:"created_at"`
	}
	if err := json.Unmarshal(b, &moved); err != nil || moved.Share != "s" || moved.Path != "raw/visits.csv" || moved.SHA256 != sha ||
		!moved.CreatedAt.Equal(time.Date(2025, 6, 7, 8, 9, 10, 0, time.UTC)) {
		t.Errorf("move answered %s (%v)", b, err)
	}
	b = f.want("member lists files", http.StatusOK, member, "GET", "/api/v1/shares/s/files", nil)
	if !bytes.Contains(b, []byte(`"path":"raw/visits.csv"`)) || !bytes.Contains(b, []byte(sha)) {
		t.Errorf("share files: %s", b)
	}
	f.want("IAA lists files", http.StatusOK, iaa, "GET", "/api/v1/shares/s/files", nil)
	f.want("outsider lists files", http.StatusNotFound, outsider, "GET", "/api/v1/shares/s/files", nil)
	f.want("files of no share", http.StatusNotFound, member, "GET", "/api/v1/shares/nope/files", nil)
	f.arrival("mark", "again.csv", []byte("again"))
	f.want("move onto a taken path", http.StatusConflict, member, "POST", "/api/v1/arrivals/again.csv/move", map[string]string{"share": "s", "path": "raw/visits.csv"})

	// Over the share quota: 413, naming the share's quota.
	f.settings.Store(policy.Settings{Quotas: policy.Quotas{ShareBytes: 16}})
	b = f.want("move over quota", http.StatusRequestEntityTooLarge, member, "POST", "/api/v1/arrivals/again.csv/move", map[string]string{"share": "s", "path": "again.csv"})
	if !strings.Contains(string(b), "quota of share s") {
		t.Errorf("quota refusal %s does not name the share's quota", b)
	}

	// Emergency sessions: 403, share or no share.
	for _, c := range []struct{ method, path string }{
		{"GET", "/api/v1/shares"}, {"GET", "/api/v1/shares/s/files"}, {"GET", "/api/v1/shares/nope/files"},
		{"PUT", "/api/v1/shares/s/members/zoe"}, {"DELETE", "/api/v1/shares/s/members/mark"},
		{"PUT", "/api/v1/projects/p/admins/zoe"}, {"POST", "/api/v1/projects/p/shares"}, {"POST", "/api/v1/arrivals/x/move"},
	} {
		var body any
		switch c.method {
		case "PUT":
			body = map[string]bool{"outbound": false}
			if strings.Contains(c.path, "admins") {
				body = nil
			}
		case "POST":
			body = map[string]string{"name": "e"}
			if strings.Contains(c.path, "move") {
				body = map[string]string{"share": "s", "path": "x"}
			}
		}
		b := f.want("emergency session", http.StatusForbidden, emergency, c.method, c.path, body)
		if !strings.Contains(string(b), "emergency") {
			t.Errorf("emergency %s %s: %s", c.method, c.path, b)
		}
	}

	// Removal counts at the next request.
	f.want("IAA removes the member", http.StatusNoContent, iaa, "DELETE", "/api/v1/shares/s/members/mark", nil)
	f.want("removed member lists files", http.StatusNotFound, member, "GET", "/api/v1/shares/s/files", nil)
	f.want("removed member moves in", http.StatusNotFound, member, "POST", "/api/v1/arrivals/again.csv/move", map[string]string{"share": "s", "path": "x"})
	f.want("remove again", http.StatusNotFound, iaa, "DELETE", "/api/v1/shares/s/members/mark", nil)
	f.want("IAO removes the IAA", http.StatusNoContent, iao, "DELETE", "/api/v1/projects/p/admins/adam", nil)
	f.want("removed IAA adds a member", http.StatusNotFound, iaa, "PUT", "/api/v1/shares/s/members/zoe", map[string]bool{"outbound": false})

	if _, err := f.db.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}
