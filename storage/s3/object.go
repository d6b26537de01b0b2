package s3

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
)

// Stat describes the committed object at key.
func (b *Backend) Stat(ctx context.Context, key string) (storage.ObjectInfo, error) {
	oi, err := b.client.StatObject(ctx, b.bucket, key, minio.StatObjectOptions{})
	if err != nil {
		return storage.ObjectInfo{}, wrap("stat", key, err)
	}
	return storage.ObjectInfo{Key: key, Size: oi.Size, ModTime: oi.LastModified}, nil
}

// Open reads n bytes of the object at key from off (n < 0: to the end) with
// one ranged GET.
func (b *Backend) Open(ctx context.Context, key string, off, n int64) (io.ReadCloser, error) {
	if off < 0 {
		return nil, fmt.Errorf("s3: open %q: negative offset %d", storage.RedactKey(key), off)
	}
	info, err := b.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	if off > info.Size {
		return nil, fmt.Errorf("s3: open %q: offset %d is beyond the end (%d bytes)", storage.RedactKey(key), off, info.Size)
	}
	end := info.Size // exclusive
	if n >= 0 {
		end = min(end, off+n)
	}
	if end == off {
		return io.NopCloser(strings.NewReader("")), nil
	}
	opts := minio.GetObjectOptions{}
	if err := opts.SetRange(off, end-1); err != nil {
		return nil, wrap("open", key, err)
	}
	rc, _, _, err := b.core.GetObject(ctx, b.bucket, key, opts)
	if err != nil {
		return nil, wrap("open", key, err)
	}
	return rc, nil
}

// List calls fn for every committed object whose key starts with prefix, in
// lexical key order (the order S3 lists in). Tail objects of uploads in
// progress are skipped.
func (b *Backend) List(ctx context.Context, prefix string, fn func(storage.ObjectInfo) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel() // stops the lister if fn fails
	for oi := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return wrap("list", prefix, oi.Err)
		}
		if strings.Contains(oi.Key, TailSuffix) || strings.HasPrefix(oi.Key, probePrefix) {
			continue
		}
		if err := fn(storage.ObjectInfo{Key: oi.Key, Size: oi.Size, ModTime: oi.LastModified}); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// Move copies src to dst server-side and then deletes src. It never
// overwrites: dst is checked first, and the copy itself is conditional (see
// copyNew).
func (b *Backend) Move(ctx context.Context, src, dst string) error {
	if src == dst {
		return fmt.Errorf("s3: move %q onto itself: %w", storage.RedactKey(src), storage.ErrExist)
	}
	if _, err := b.Stat(ctx, dst); err == nil {
		return fmt.Errorf("s3: move to %q: %w", storage.RedactKey(dst), storage.ErrExist)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return err
	}
	si, err := b.client.StatObject(ctx, b.bucket, src, minio.StatObjectOptions{})
	if err != nil {
		return wrap("move", src, err)
	}
	if err := b.copyNew(ctx, src, dst, si); err != nil {
		return err
	}
	if err := b.client.RemoveObject(ctx, b.bucket, src, minio.RemoveObjectOptions{}); err != nil {
		return wrap("move: remove source", src, err)
	}
	b.log.Debug("moved", zap.String("key", storage.RedactKey(src)), zap.String("to", storage.RedactKey(dst)), zap.Int64("bytes", si.Size))
	return nil
}

// Delete removes the committed object at key, or the upload in progress
// there (its tail object and any multipart upload at the key). A missing key
// is not an error.
func (b *Backend) Delete(ctx context.Context, key string) error {
	if err := b.client.RemoveObject(ctx, b.bucket, key, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
		return wrap("delete", key, err)
	}
	// The tail objects go last: they are how Pending finds a multipart
	// upload on servers that list those only by exact key (MinIO).
	if err := b.abortAll(ctx, key); err != nil {
		return err
	}
	return b.removeTails(ctx, key)
}

// Pending calls fn for each key under prefix with an upload in progress or
// its remains: a tail object (written from Create to Commit), or a
// multipart upload that the server lists by prefix. MinIO lists multipart
// uploads only for an exact key; Delete removes a tail object last, so one
// is left as long as its multipart upload is.
func (b *Backend) Pending(ctx context.Context, prefix string, fn func(key string, last time.Time) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	seen := map[string]time.Time{}
	note := func(k string, t time.Time) {
		if t.After(seen[k]) || seen[k].IsZero() {
			seen[k] = t
		}
	}
	for oi := range b.client.ListObjects(ctx, b.bucket, minio.ListObjectsOptions{Prefix: prefix, Recursive: true}) {
		if oi.Err != nil {
			return wrap("list uploads under", prefix, oi.Err)
		}
		if k, ok := strings.CutSuffix(oi.Key, TailSuffix); ok {
			note(k, oi.LastModified)
		} else if k, ok := strings.CutSuffix(oi.Key, TailSuffix+prevSuffix); ok {
			note(k, oi.LastModified)
		}
	}
	keyMarker, idMarker := "", ""
	for {
		res, err := b.core.ListMultipartUploads(ctx, b.bucket, prefix, keyMarker, idMarker, "", 1000)
		if err != nil {
			return wrap("list multipart uploads under", prefix, err)
		}
		for _, up := range res.Uploads {
			note(up.Key, up.Initiated)
		}
		if !res.IsTruncated {
			break
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
	keys := slices.Sorted(maps.Keys(seen))
	for _, k := range keys {
		if err := fn(k, seen[k]); err != nil {
			return err
		}
	}
	return nil
}

// abortAll aborts every incomplete multipart upload at exactly key (MinIO
// lists incomplete uploads for an exact key only, which is all we need).
func (b *Backend) abortAll(ctx context.Context, key string) error {
	keyMarker, idMarker := "", ""
	for {
		res, err := b.core.ListMultipartUploads(ctx, b.bucket, key, keyMarker, idMarker, "", 1000)
		if err != nil {
			if notFound(err) {
				return nil
			}
			return wrap("delete: list multipart uploads of", key, err)
		}
		for _, up := range res.Uploads {
			if up.Key != key {
				continue
			}
			if err := b.core.AbortMultipartUpload(ctx, b.bucket, key, up.UploadID); err != nil && !notFound(err) {
				return wrap("delete: abort multipart upload of", key, err)
			}
		}
		if !res.IsTruncated {
			return nil
		}
		keyMarker, idMarker = res.NextKeyMarker, res.NextUploadIDMarker
	}
}

// copyNew copies src (described by si) to dst server-side, failing with
// ErrExist rather than replacing an object that appeared at dst. MinIO
// ignores If-None-Match on CopyObject, so the copy is a multipart upload
// whose parts are copied from src (UploadPartCopy, ≤ 5 GiB each: this also
// covers objects over the 5 GiB CopyObject limit) and which carries the
// condition at create time (MinIO checks it there) and at complete time
// (versitygw checks it there). The copy is pinned to src's ETag.
func (b *Backend) copyNew(ctx context.Context, src, dst string, si minio.ObjectInfo) error {
	cond := minio.PutObjectOptions{}
	cond.SetMatchETagExcept("*")
	if si.Size == 0 {
		_, err := b.core.PutObject(ctx, b.bucket, dst, strings.NewReader(""), 0, "", "", cond)
		return wrap("move: create", dst, err)
	}
	id, err := b.core.NewMultipartUpload(ctx, b.bucket, dst, cond)
	if err != nil {
		return wrap("move: start copy to", dst, err)
	}
	var parts []minio.CompletePart
	for off := int64(0); off < si.Size; off += copyPartSize {
		n := min(copyPartSize, si.Size-off)
		p, err := b.core.CopyObjectPart(ctx, b.bucket, src, b.bucket, dst, id, len(parts)+1, off, n,
			map[string]string{"x-amz-copy-source-if-match": si.ETag})
		if err != nil {
			b.core.AbortMultipartUpload(context.WithoutCancel(ctx), b.bucket, dst, id)
			return wrap(fmt.Sprintf("move: copy part %d from", len(parts)+1), src, err)
		}
		parts = append(parts, p)
	}
	if _, err := b.core.CompleteMultipartUpload(ctx, b.bucket, dst, id, parts, cond); err != nil {
		b.core.AbortMultipartUpload(context.WithoutCancel(ctx), b.bucket, dst, id)
		return wrap("move: complete copy to", dst, err)
	}
	return nil
}
