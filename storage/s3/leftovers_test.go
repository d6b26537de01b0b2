package s3

import (
	"bytes"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/mftd/mftd/storage"
)

// Pending reports an upload in progress (parts and a tail, closed but not
// committed) and nothing for committed objects; after Delete it reports
// nothing and the server holds no multipart upload at the key.
func TestPending(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
		ctx := t.Context()
		open, _ := storage.Key(storage.PrefixUploads, "open")
		done, _ := storage.Key(storage.PrefixUploads, "done")
		elsewhere, _ := storage.Key(storage.PrefixQuarantine, "open")

		for _, k := range []string{open, elsewhere} {
			u, err := b.Create(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(randomBytes(MinPartSize+1<<20, 4))); err != nil {
				t.Fatal(err)
			}
			u.Close()
		}
		u, err := b.Create(ctx, done)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(randomBytes(MinPartSize+1, 5))); err != nil {
			t.Fatal(err)
		}
		if _, err := u.Commit(ctx); err != nil {
			t.Fatal(err)
		}

		pending := func() map[string]time.Time {
			t.Helper()
			got := map[string]time.Time{}
			err := b.Pending(ctx, storage.PrefixUploads+"/", func(k string, last time.Time) error {
				got[k] = last
				return nil
			})
			if err != nil {
				t.Fatalf("Pending: %v", err)
			}
			return got
		}
		got := pending()
		if len(got) != 1 || got[open].IsZero() {
			t.Fatalf("Pending(uploads/) = %v, want exactly %s", got, open)
		}
		if age := time.Since(got[open]); age < -time.Minute || age > time.Minute {
			t.Errorf("Pending: %s last written %v ago, want about now", open, age)
		}

		if err := b.Delete(ctx, open); err != nil {
			t.Fatal(err)
		}
		if got := pending(); len(got) != 0 {
			t.Fatalf("Pending after Delete = %v, want nothing", got)
		}
		for up := range b.client.ListIncompleteUploads(ctx, b.bucket, open, true) {
			t.Errorf("multipart upload left at %s after Delete: %+v", open, up)
		}
		if _, err := b.Stat(ctx, done); err != nil {
			t.Errorf("the committed object next to it: %v", err)
		}
		var n int
		for range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: elsewhere, Recursive: true}) {
			n++
		}
		if n == 0 {
			t.Errorf("the upload in progress under quarantine/ was touched")
		}
	})
}

// Resume checks the handle against the server: a last part whose ETag
// differs, or a multipart upload that was aborted, is refused.
func TestResumeChecksLastPart(t *testing.T) {
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
		ctx := t.Context()
		k, _ := storage.Key(storage.PrefixUploads, "check-last")
		u, err := b.Create(ctx, k)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(randomBytes(2*MinPartSize, 6))); err != nil {
			t.Fatal(err)
		}
		good := u.(*upload).h
		u.Close()

		bad := good
		bad.Parts = append([]part(nil), good.Parts...)
		bad.Parts[1].ETag = "0123456789abcdef0123456789abcdef"
		hb, _ := json.Marshal(bad)
		if _, err := b.Resume(ctx, k, hb); err == nil || !strings.Contains(err.Error(), "part 2") {
			t.Fatalf("Resume with a wrong ETag for part 2: %v, want an error naming part 2", err)
		}
		hb, _ = json.Marshal(good)
		r, err := b.Resume(ctx, k, hb)
		if err != nil {
			t.Fatalf("Resume with the right handle: %v", err)
		}
		if err := r.Abort(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := b.Resume(ctx, k, hb); !errors.Is(err, storage.ErrNotFound) {
			t.Fatalf("Resume after Abort: %v, want ErrNotFound", err)
		}
	})
}
