package s3

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
)

// handle is the JSON form of storage.Handle: the durable state of an upload.
// Offset = sum of the parts' sizes + Tail.
type handle struct {
	V        int    `json:"v"`
	UploadID string `json:"upload_id,omitempty"` // "" until the first part
	Parts    []part `json:"parts,omitempty"`
	Tail     int64  `json:"tail"`   // bytes in the tail object that count
	Offset   int64  `json:"offset"` // total durable bytes
}

type part struct {
	N    int    `json:"n"`
	ETag string `json:"etag"`
	Size int64  `json:"size"`
}

// errClosed is returned by an upload that was committed, aborted or closed.
var errClosed = errors.New("s3: upload is closed")

// upload is one upload in progress. Invariant between calls: buf holds
// exactly the durable tail (len(buf) == h.Tail).
type upload struct {
	b   *Backend
	key string
	h   handle
	buf []byte // the part buffer; nil once closed
	log *zap.Logger
}

var _ storage.Upload = (*upload)(nil)

func (b *Backend) newUpload(key string, h handle, size int64) *upload {
	return &upload{
		b:   b,
		key: key,
		h:   h,
		buf: make([]byte, 0, max(b.partSize, size)),
		log: b.log.With(zap.String("key", storage.RedactKey(key))),
	}
}

// Create starts an upload at key. It fails with ErrExist if an object or an
// upload in progress is at key; the tail object is created with
// If-None-Match: *, so of racing Creates exactly one wins.
func (b *Backend) Create(ctx context.Context, key string) (storage.Upload, error) {
	if _, err := b.Stat(ctx, key); err == nil {
		return nil, fmt.Errorf("s3: create %q: %w", storage.RedactKey(key), storage.ErrExist)
	} else if !errors.Is(err, storage.ErrNotFound) {
		return nil, err
	}
	u := b.newUpload(key, handle{V: 1}, 0)
	opts := tailOpts(0)
	opts.SetMatchETagExcept("*")
	if _, err := b.core.PutObject(ctx, b.bucket, tailKey(key), bytes.NewReader(nil), 0, "", "", opts); err != nil {
		return nil, wrap("create", key, err)
	}
	return u, nil
}

func tailOpts(parts int) minio.PutObjectOptions {
	return minio.PutObjectOptions{UserMetadata: map[string]string{metaParts: strconv.Itoa(parts)}}
}

// Resume reopens the upload at key in the state h describes. The multipart
// upload is reconciled with ListObjectParts (parts after the handle's are
// ignored and overwritten by number later); the tail object is read back
// into the part buffer and cut to the handle's tail length.
func (b *Backend) Resume(ctx context.Context, key string, hb storage.Handle) (storage.Upload, error) {
	var h handle
	dec := json.NewDecoder(bytes.NewReader(hb))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&h); err != nil {
		return nil, fmt.Errorf("s3: resume %q: bad handle: %w", storage.RedactKey(key), err)
	}
	if err := h.valid(); err != nil {
		return nil, fmt.Errorf("s3: resume %q: bad handle: %w", storage.RedactKey(key), err)
	}
	rc, oi, err := b.openTail(ctx, key, h)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	u := b.newUpload(key, h, h.Tail)
	u.buf = u.buf[:h.Tail]
	if _, err := io.ReadFull(rc, u.buf); err != nil {
		return nil, wrap("resume: read tail of", key, err)
	}
	if h.UploadID != "" {
		if err := b.checkParts(ctx, key, h); err != nil {
			return nil, err
		}
	}
	if oi.Size != h.Tail {
		u.log.Info("resume: tail object cut to the handle", zap.Int64("bytes", oi.Size), zap.Int64("offset", h.Offset))
	}
	return u, nil
}

// openTail opens the tail object that holds h's tail: the current one, or
// the previous one if a later write absorbed h's tail into a part.
func (b *Backend) openTail(ctx context.Context, key string, h handle) (io.ReadCloser, minio.ObjectInfo, error) {
	want := strconv.Itoa(len(h.Parts))
	for _, tk := range []string{tailKey(key), prevTailKey(key)} {
		rc, oi, _, err := b.core.GetObject(ctx, b.bucket, tk, minio.GetObjectOptions{})
		switch {
		case err != nil && tk == tailKey(key):
			return nil, oi, wrap("resume: read tail of", key, err)
		case err != nil && notFound(err):
			continue // no previous tail: nothing older to fall back to
		case err != nil:
			return nil, oi, wrap("resume: read previous tail of", key, err)
		case h.Tail == 0 || oi.UserMetadata[metaParts] == want:
			if oi.Size < h.Tail {
				rc.Close()
				return nil, oi, fmt.Errorf("s3: resume %q: tail object has %d bytes, handle needs %d", storage.RedactKey(key), oi.Size, h.Tail)
			}
			return rc, oi, nil
		default:
			rc.Close()
		}
	}
	return nil, minio.ObjectInfo{}, fmt.Errorf("s3: resume %q: no tail object follows %s parts: the handle is older than the last two part boundaries",
		storage.RedactKey(key), want)
}

func (h *handle) valid() error {
	if h.V != 1 {
		return fmt.Errorf("version %d", h.V)
	}
	sum := h.Tail
	for i, p := range h.Parts {
		if p.N != i+1 || p.Size <= 0 || p.ETag == "" {
			return fmt.Errorf("part %d is not valid", i+1)
		}
		sum += p.Size
	}
	if h.Tail < 0 || sum != h.Offset || (len(h.Parts) > 0 && h.UploadID == "") {
		return errors.New("sizes do not add up")
	}
	return nil
}

// checkParts verifies that the multipart upload holds the handle's parts.
func (b *Backend) checkParts(ctx context.Context, key string, h handle) error {
	have := map[int]minio.ObjectPart{}
	marker := 0
	for len(have) < len(h.Parts) {
		res, err := b.core.ListObjectParts(ctx, b.bucket, key, h.UploadID, marker, 1000)
		if err != nil {
			return wrap("resume: list parts of", key, err)
		}
		for _, p := range res.ObjectParts {
			have[p.PartNumber] = p
		}
		if !res.IsTruncated {
			break
		}
		marker = res.NextPartNumberMarker
	}
	for _, p := range h.Parts {
		got, ok := have[p.N]
		if !ok || got.Size != p.Size || trimETag(got.ETag) != trimETag(p.ETag) {
			return fmt.Errorf("s3: resume %q: part %d of the multipart upload is missing or differs from the handle", storage.RedactKey(key), p.N)
		}
	}
	return nil
}

func trimETag(s string) string { return strings.Trim(s, `"`) }

// Handle describes the durable state after the last successful WriteChunk.
func (u *upload) Handle() storage.Handle {
	h := u.h
	h.Parts = append([]part(nil), u.h.Parts...)
	p, err := json.Marshal(h)
	if err != nil {
		panic(err) // plain struct: cannot fail
	}
	return p
}

// Offset is the number of durable bytes.
func (u *upload) Offset() int64 { return u.h.Offset }

// WriteChunk appends r at off. Each full part buffer is uploaded as a part
// before it returns; what is left below the part size is written as the
// tail object. Both are durable in S3 when WriteChunk returns.
func (u *upload) WriteChunk(ctx context.Context, off int64, r io.Reader) (int64, error) {
	if u.buf == nil {
		return 0, errClosed
	}
	if off != u.h.Offset {
		return 0, fmt.Errorf("s3: write %q at %d, durable offset is %d: %w", storage.RedactKey(u.key), off, u.h.Offset, storage.ErrOffsetMismatch)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	start := u.h.Offset
	var readErr error
	for readErr == nil {
		m, err := io.ReadFull(r, u.buf[len(u.buf):cap(u.buf)])
		u.buf = u.buf[:len(u.buf)+m]
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			readErr = io.EOF
		case err != nil:
			readErr = err
		}
		if len(u.buf) == cap(u.buf) {
			if err := u.putPart(ctx); err != nil {
				u.buf = u.buf[:u.h.Tail] // undo what is not durable
				return u.h.Offset - start, err
			}
		}
	}
	if int64(len(u.buf)) != u.h.Tail {
		if err := u.putTail(ctx); err != nil {
			u.buf = u.buf[:u.h.Tail]
			return u.h.Offset - start, err
		}
	}
	if readErr == io.EOF {
		readErr = nil
	}
	return u.h.Offset - start, readErr
}

// putPart uploads the full buffer as the next part, creating the multipart
// upload first if there is none.
func (u *upload) putPart(ctx context.Context) error {
	b := u.b
	if u.h.UploadID == "" {
		opts := minio.PutObjectOptions{}
		opts.SetMatchETagExcept("*")
		id, err := b.core.NewMultipartUpload(ctx, b.bucket, u.key, opts)
		if err != nil {
			return wrap("write: start multipart upload", u.key, err)
		}
		u.h.UploadID = id
	}
	if u.h.Tail > 0 {
		// This part absorbs the durable tail, and the tail object is about
		// to be overwritten: keep its bytes for a Resume from the current
		// handle (the caller may crash before it persists the next one).
		_, err := b.core.CopyObject(ctx, b.bucket, tailKey(u.key), b.bucket, prevTailKey(u.key), nil,
			minio.CopySrcOptions{Bucket: b.bucket, Object: tailKey(u.key)}, minio.PutObjectOptions{})
		if err != nil {
			return wrap("write: keep previous tail", u.key, err)
		}
	}
	n := len(u.h.Parts) + 1
	op, err := b.core.PutObjectPart(ctx, b.bucket, u.key, u.h.UploadID, n, bytes.NewReader(u.buf), int64(len(u.buf)), minio.PutObjectPartOptions{})
	if err != nil {
		return wrap(fmt.Sprintf("write: put part %d", n), u.key, err)
	}
	size := int64(len(u.buf))
	u.h.Parts = append(u.h.Parts, part{N: n, ETag: trimETag(op.ETag), Size: size})
	u.h.Offset += size - u.h.Tail
	u.h.Tail = 0
	u.buf = u.buf[:0]
	return nil
}

// putTail writes the buffer as the tail object.
func (u *upload) putTail(ctx context.Context) error {
	b := u.b
	_, err := b.core.PutObject(ctx, b.bucket, tailKey(u.key), bytes.NewReader(u.buf), int64(len(u.buf)), "", "", tailOpts(len(u.h.Parts)))
	if err != nil {
		return wrap("write: put tail", u.key, err)
	}
	u.h.Offset += int64(len(u.buf)) - u.h.Tail
	u.h.Tail = int64(len(u.buf))
	return nil
}

// Commit completes the upload at its key: the buffered tail becomes the last
// part (or, with no multipart upload, the whole object) and the tail object
// is deleted. The object is written conditionally (If-None-Match: *).
func (u *upload) Commit(ctx context.Context) (storage.ObjectInfo, error) {
	if u.buf == nil {
		return storage.ObjectInfo{}, errClosed
	}
	b := u.b
	if u.h.UploadID == "" {
		opts := minio.PutObjectOptions{}
		opts.SetMatchETagExcept("*")
		if _, err := b.core.PutObject(ctx, b.bucket, u.key, bytes.NewReader(u.buf), int64(len(u.buf)), "", "", opts); err != nil {
			return storage.ObjectInfo{}, wrap("commit", u.key, err)
		}
	} else {
		parts := u.h.Parts
		if len(u.buf) > 0 {
			n := len(parts) + 1
			op, err := b.core.PutObjectPart(ctx, b.bucket, u.key, u.h.UploadID, n, bytes.NewReader(u.buf), int64(len(u.buf)), minio.PutObjectPartOptions{})
			if err != nil {
				return storage.ObjectInfo{}, wrap(fmt.Sprintf("commit: put last part %d", n), u.key, err)
			}
			parts = append(parts[:len(parts):len(parts)], part{N: n, ETag: trimETag(op.ETag), Size: int64(len(u.buf))})
		}
		cps := make([]minio.CompletePart, len(parts))
		for i, p := range parts {
			cps[i] = minio.CompletePart{PartNumber: p.N, ETag: p.ETag}
		}
		opts := minio.PutObjectOptions{}
		opts.SetMatchETagExcept("*")
		if _, err := b.core.CompleteMultipartUpload(ctx, b.bucket, u.key, u.h.UploadID, cps, opts); err != nil {
			return storage.ObjectInfo{}, wrap("commit: complete multipart upload", u.key, err)
		}
	}
	u.release()
	info, err := b.Stat(ctx, u.key)
	if err != nil {
		return storage.ObjectInfo{}, err
	}
	if err := b.removeTails(ctx, u.key); err != nil {
		// The object is committed; a leftover tail only holds the key.
		u.log.Warn("commit: tail object not removed", zap.Error(err))
	}
	u.log.Debug("committed", zap.Int64("bytes", info.Size), zap.Int("parts", len(u.h.Parts)))
	if info.ModTime.IsZero() {
		info.ModTime = time.Now()
	}
	return info, nil
}

// Abort aborts the multipart upload and deletes the tail object.
func (u *upload) Abort(ctx context.Context) error {
	if u.buf == nil {
		return errClosed
	}
	b := u.b
	if u.h.UploadID != "" {
		if err := b.core.AbortMultipartUpload(ctx, b.bucket, u.key, u.h.UploadID); err != nil && !notFound(err) {
			return wrap("abort", u.key, err)
		}
	}
	if err := b.removeTails(ctx, u.key); err != nil {
		return err
	}
	u.release()
	return nil
}

// Close releases the part buffer; what is durable stays, to be resumed
// from Handle().
func (u *upload) Close() error {
	u.release()
	return nil
}

func (u *upload) release() { u.buf = nil }

// removeTails deletes the tail objects of the upload at key; missing ones
// are not an error.
func (b *Backend) removeTails(ctx context.Context, key string) error {
	for _, tk := range []string{prevTailKey(key), tailKey(key)} {
		if err := b.client.RemoveObject(ctx, b.bucket, tk, minio.RemoveObjectOptions{}); err != nil && !notFound(err) {
			return wrap("remove tail of", key, err)
		}
	}
	return nil
}
