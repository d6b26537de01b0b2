package sftpd

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/pkg/sftp"
	"go.uber.org/zap"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/storage/state"
	"github.com/mftd/mftd/transfer/ingest"
)

// quotaIngest is memIngest whose writes stop with an Arrivals quota
// refusal once the file would pass limit bytes, keeping what came before,
// as ingest does at a checkpoint.
type quotaIngest struct {
	*memIngest
	limit int64
}

var errPastLimit = errors.New("past the limit")

// limitReader returns errPastLimit instead of reading past n bytes.
type limitReader struct {
	r io.Reader
	n int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errPastLimit
	}
	p = p[:min(int64(len(p)), l.n)]
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

func (q *quotaIngest) Write(ctx context.Context, req ingest.WriteRequest) (int64, error) {
	req.Body = &limitReader{r: req.Body, n: q.limit - req.Offset}
	off, err := q.memIngest.Write(ctx, req)
	if errors.Is(err, errPastLimit) {
		return off, fmt.Errorf("ingest: %w", &policy.QuotaError{Quota: policy.QuotaArrivalsBytes, Subject: treeUser, Limit: q.limit, Used: q.limit})
	}
	return off, err
}

// A write that crosses the Arrivals quota fails with an SSH_FX_FAILURE
// that names the quota; so do the later writes and the close; the bytes
// before it stay a resumable partial, and the upload is not completed.
func TestWriterQuotaExceeded(t *testing.T) {
	const limit = 3*block + 100
	mem := newMemIngest()
	ing := &quotaIngest{memIngest: mem, limit: limit}
	file := randomBytes(t, 8*block)
	id := mem.addPartial("f.bin", nil, time.Now())
	c := &conn{
		token: treeToken, user: treeUser, remote: treeRemote, auth: &sessionAuth{}, ing: ing,
		cfg: Config{Settings: liveMax(1 << 40), Window: 1 << 20}, log: zap.NewNop(),
	}
	tr := newTree(c)
	tr.reorderWait, tr.earlyWait = 0, 0
	unlock, ok := mem.TryLock(id)
	if !ok {
		t.Fatal("lock")
	}
	w := tr.startWriter(context.Background(), state.Upload{ID: id, Filename: "f.bin"}, unlock)
	r := &rig{ing: mem, tree: tr, w: w, id: id, file: file}

	var err error
	for off := 0; off < len(file) && err == nil; off += block {
		err = r.write(off, block)
	}
	wantQuota := func(what string, err error) {
		t.Helper()
		var se *statusError
		if !errors.As(err, &se) || !errors.Is(err, sftp.ErrSSHFxFailure) ||
			!strings.HasPrefix(se.msg, "Arrivals quota of alice exceeded: limit 96.1 KiB (98404 bytes)") {
			t.Fatalf("%s: %v, want SSH_FX_FAILURE naming the quota", what, err)
		}
	}
	wantQuota("the write past the quota", err)
	wantQuota("a later write", r.write(7*block, block))
	wantQuota("close", w.Close())
	r.keptPartial(t, limit)
}

func TestQuotaFailure(t *testing.T) {
	qe := &policy.QuotaError{Quota: policy.QuotaArrivalsFiles, Subject: "alice", Limit: 5, Used: 5}
	answer, ok := quotaFailure(fmt.Errorf("ingest: create: %w", qe))
	var se *statusError
	if !ok || !errors.As(answer, &se) || se.code != sftp.ErrSSHFxFailure || se.msg != qe.Error() {
		t.Fatalf("quotaFailure = %v, %v; want SSH_FX_FAILURE %q", answer, ok, qe.Error())
	}
	if _, ok := quotaFailure(errors.New("disk full")); ok {
		t.Fatal("quotaFailure took another error for a quota refusal")
	}
}

// fullIngest refuses every new upload: the user is at their Arrivals file
// limit.
type fullIngest struct{ *memIngest }

func (f fullIngest) Create(ctx context.Context, req ingest.CreateRequest) (state.Upload, error) {
	return state.Upload{}, fmt.Errorf("ingest: %w", &policy.QuotaError{Quota: policy.QuotaArrivalsFiles, Subject: treeUser, Limit: 2, Used: 2})
}

// Opening a new file at the file limit fails with the quota named, not an
// internal error, and creates nothing.
func TestOpenAtFileQuota(t *testing.T) {
	mem := newMemIngest()
	p := newPipe(t, mem, Config{Settings: liveMax(1 << 30)}, func(tr *tree) { tr.c.ing = fullIngest{mem} })
	_, err := p.client.Create("/upload/third.csv")
	var se *sftp.StatusError
	if !errors.As(err, &se) || se.FxCode() != sftp.ErrSSHFxFailure || !strings.Contains(se.Error(), "quota") {
		t.Fatalf("create at the file quota: %v; want SSH_FX_FAILURE naming the quota", err)
	}
	if len(mem.ids) != 0 {
		t.Errorf("uploads created: %v", mem.ids)
	}
}
