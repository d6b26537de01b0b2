package s3

import (
	"bytes"
	"errors"
	"testing"

	"github.com/minio/minio-go/v7"

	"github.com/mftd/mftd/storage"
)

// A move copies server-side in parts of copyPartSize (5 GiB: the most one
// UploadPartCopy copies), so objects over 5 GiB move too. Cut small here:
// 12 MiB moves as three copied parts with the bytes in order, and a move
// onto an existing key still copies nothing.
func TestMoveInParts(t *testing.T) {
	old := copyPartSize
	copyPartSize = MinPartSize
	t.Cleanup(func() { copyPartSize = old })
	eachServer(t, func(t *testing.T, srv *server) {
		b := newBackend(t, srv)
		ctx := t.Context()
		src, _ := storage.Key(storage.PrefixUploads, "big")
		dst, _ := storage.ArrivalKey("alice", "big.bin")
		taken, _ := storage.ArrivalKey("alice", "taken.bin")
		want := randomBytes(2*MinPartSize+2<<20, 12)
		for k, p := range map[string][]byte{src: want, taken: []byte("already here")} {
			u, err := b.Create(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := u.WriteChunk(ctx, 0, bytes.NewReader(p)); err != nil {
				t.Fatal(err)
			}
			if _, err := u.Commit(ctx); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Move(ctx, src, taken); !errors.Is(err, storage.ErrExist) {
			t.Fatalf("Move onto an existing key: %v, want ErrExist", err)
		}
		readBack(t, b, taken, []byte("already here"))
		if err := b.Move(ctx, src, dst); err != nil {
			t.Fatalf("Move: %v", err)
		}
		readBack(t, b, dst, want)
		if _, err := b.Stat(ctx, src); !errors.Is(err, storage.ErrNotFound) {
			t.Errorf("source after Move: %v, want ErrNotFound", err)
		}
		oi, err := b.client.StatObject(ctx, b.bucket, dst, minio.StatObjectOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.HasSuffix([]byte(oi.ETag), []byte("-3")) {
			t.Errorf("moved object's ETag %q: want a 3-part multipart ETag (…-3)", oi.ETag)
		}
	})
}
