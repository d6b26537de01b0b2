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

// writeTimeout bounds the S3 calls of one WriteChunk once it has read bytes
// from its caller: those calls outlive the caller's context, because bytes
// received from a client that then went away are still kept.
const writeTimeout = 10 * time.Minute

// upload is one upload in progress. Invariant between calls: buf holds
// exactly the durable tail (len(buf) == h.Tail), and no part is in flight.
type upload struct {
	b      *Backend
	key    string
	h      handle
	buf    []byte // the part buffer being filled; nil once closed
	broken error  // a part failed: the upload must be resumed from Handle()
	log    *zap.Logger

	// During a WriteChunk: parts being sent, in part order, and buffers
	// of parts already sent, for the next parts to fill.
	sending []*sendingPart
	spare   [][]byte
}

// sendingPart is a part being uploaded by its own goroutine.
type sendingPart struct {
	n    int
	buf  []byte
	done chan struct{} // closed when etag or err is set
	etag string
	err  error
}

var _ storage.Upload = (*upload)(nil)

// newUpload takes the upload's first part buffer from the memory budget,
// waiting for one if there is none.
func (b *Backend) newUpload(ctx context.Context, key string, h handle) (*upload, error) {
	buf, err := b.bufs.get(ctx)
	if err != nil {
		return nil, fmt.Errorf("s3: waiting for a part buffer for %q: %w", storage.RedactKey(key), err)
	}
	if h.Tail > int64(cap(buf)) {
		// Written with a larger part size than now configured: the first
		// part this upload sends is its whole tail. The buffer keeps the
		// budget slot get took (put does not pool a buffer of another size).
		buf = make([]byte, 0, h.Tail)
	}
	return &upload{
		b:   b,
		key: key,
		h:   h,
		buf: buf,
		log: b.log.With(zap.String("key", storage.RedactKey(key))),
	}, nil
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
	u, err := b.newUpload(ctx, key, handle{V: 1})
	if err != nil {
		return nil, err
	}
	opts := tailOpts(0)
	opts.SetMatchETagExcept("*")
	if _, err := b.core.PutObject(ctx, b.bucket, tailKey(key), bytes.NewReader(nil), 0, "", "", opts); err != nil {
		u.release()
		return nil, wrap("create", key, err)
	}
	return u, nil
}

func tailOpts(parts int) minio.PutObjectOptions {
	return minio.PutObjectOptions{
		UserMetadata: map[string]string{metaParts: strconv.Itoa(parts)},
		// See partOpts.
		DisableContentSha256: true,
	}
}

// partOpts are the options of every part upload. The payload is not
// signed (minio-go would hash every byte with SHA-256 over plain HTTP, as
// much CPU as the upload's own hash; over TLS it never does): the bytes'
// integrity is proved end to end instead, when the check stage re-reads the
// committed object and compares its SHA-256 with the one computed as the
// bytes arrived.
var partOpts = minio.PutObjectPartOptions{DisableContentSha256: true}

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
	if h.UploadID != "" {
		if err := b.checkParts(ctx, key, h); err != nil {
			return nil, err
		}
		if h.Tail == 0 {
			// Nothing to read back: the parts hold every durable byte.
			return b.newUpload(ctx, key, h)
		}
	}
	rc, oi, err := b.openTail(ctx, key, h)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	u, err := b.newUpload(ctx, key, h)
	if err != nil {
		return nil, err
	}
	u.buf = u.buf[:h.Tail]
	if _, err := io.ReadFull(rc, u.buf); err != nil {
		u.release()
		return nil, wrap("resume: read tail of", key, err)
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

// checkParts verifies that the multipart upload exists and holds the
// handle's last part. Parts before it were checked when they were recorded
// and are never sent again (a resumed upload only sends parts after its
// handle's), so one part listed answers for all, whatever the upload's size.
func (b *Backend) checkParts(ctx context.Context, key string, h handle) error {
	if len(h.Parts) == 0 {
		// Created before its first part was in: it must still exist.
		if _, err := b.core.ListObjectParts(ctx, b.bucket, key, h.UploadID, 0, 1); err != nil {
			return wrap("resume: list parts of", key, err)
		}
		return nil
	}
	last := h.Parts[len(h.Parts)-1]
	res, err := b.core.ListObjectParts(ctx, b.bucket, key, h.UploadID, last.N-1, 1)
	if err != nil {
		return wrap("resume: list parts of", key, err)
	}
	for _, p := range res.ObjectParts {
		if p.PartNumber == last.N && p.Size == last.Size && trimETag(p.ETag) == trimETag(last.ETag) {
			return nil
		}
	}
	return fmt.Errorf("s3: resume %q: part %d of the multipart upload is missing or differs from the handle", storage.RedactKey(key), last.N)
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

// WriteChunk appends r at off. Each full part buffer is sent as a part by
// its own goroutine while the next one fills, up to the backend's
// concurrency and as its memory budget allows; what is left below the part
// size is written as the tail object once every part is in. All of it is
// durable in S3 when WriteChunk returns. If a part fails, the parts before
// it still count (Handle describes them) and the upload must be resumed.
func (u *upload) WriteChunk(ctx context.Context, off int64, r io.Reader) (int64, error) {
	switch {
	case u.buf == nil:
		return 0, errClosed
	case u.broken != nil:
		return 0, fmt.Errorf("s3: write %q: an earlier write failed, resume the upload: %w", storage.RedactKey(u.key), u.broken)
	case off != u.h.Offset:
		return 0, fmt.Errorf("s3: write %q at %d, durable offset is %d: %w", storage.RedactKey(u.key), off, u.h.Offset, storage.ErrOffsetMismatch)
	}
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	// Once read, the client's bytes are stored even if ctx ends (the
	// client went away): they are the bytes it will not send again.
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), writeTimeout)
	defer cancel()
	defer u.releaseSpare()
	start := u.h.Offset
	var readErr, sendErr error
	for readErr == nil && sendErr == nil {
		m, err := io.ReadFull(r, u.buf[len(u.buf):cap(u.buf)])
		u.buf = u.buf[:len(u.buf)+m]
		switch {
		case err == io.EOF || err == io.ErrUnexpectedEOF:
			readErr = io.EOF
		case err != nil:
			readErr = err
		}
		if len(u.buf) == cap(u.buf) {
			sendErr = u.send(sctx)
		}
	}
	sendErr = u.wait(sendErr)
	if sendErr != nil {
		u.broken = sendErr
		return u.h.Offset - start, sendErr
	}
	if int64(len(u.buf)) != u.h.Tail {
		if err := u.putTail(sctx); err != nil {
			u.buf = u.buf[:u.h.Tail] // undo what is not durable
			return u.h.Offset - start, err
		}
	}
	if readErr == io.EOF {
		readErr = nil
	}
	return u.h.Offset - start, readErr
}

// send starts sending the full buffer as the next part, once fewer than the
// backend's concurrency are in flight, and puts an empty buffer in its
// place: a spare one, a new one if the budget has room, or else the buffer
// of the oldest part in flight once it is in. The multipart upload is
// created first if there is none.
func (u *upload) send(ctx context.Context) error {
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
	if len(u.sending) == 0 && u.h.Tail > 0 {
		// This part absorbs the durable tail, and the tail object is
		// overwritten at the end of this write: keep its bytes for a Resume
		// from the current handle (the caller may crash before it persists
		// the next one).
		_, err := b.core.CopyObject(ctx, b.bucket, tailKey(u.key), b.bucket, prevTailKey(u.key), nil,
			minio.CopySrcOptions{Bucket: b.bucket, Object: tailKey(u.key)}, minio.PutObjectOptions{})
		if err != nil {
			return wrap("write: keep previous tail", u.key, err)
		}
	}
	if len(u.sending) >= b.concurrency {
		buf, err := u.collect()
		u.spare = append(u.spare, buf[:0])
		if err != nil {
			return err
		}
	}
	p := &sendingPart{n: len(u.h.Parts) + len(u.sending) + 1, buf: u.buf, done: make(chan struct{})}
	if p.n > MaxParts {
		return u.tooManyParts()
	}
	id := u.h.UploadID
	go func() {
		defer close(p.done)
		op, err := b.core.PutObjectPart(ctx, b.bucket, u.key, id, p.n, bytes.NewReader(p.buf), int64(len(p.buf)), partOpts)
		if err != nil {
			p.err = wrap(fmt.Sprintf("write: put part %d", p.n), u.key, err)
			return
		}
		p.etag = trimETag(op.ETag)
	}()
	u.sending = append(u.sending, p)
	if n := len(u.spare); n > 0 {
		u.buf, u.spare = u.spare[n-1], u.spare[:n-1]
		return nil
	}
	if u.buf = b.bufs.tryGet(); u.buf != nil {
		return nil
	}
	buf, err := u.collect()
	u.buf = buf[:0]
	return err
}

func (u *upload) tooManyParts() error {
	return fmt.Errorf("s3: write %q: the object would need more than %d parts of %d bytes (raise storage.s3.part_size)",
		storage.RedactKey(u.key), MaxParts, u.b.partSize)
}

// collect waits for the oldest part in flight and records it in the
// handle. It returns the part's buffer, free to fill again.
func (u *upload) collect() ([]byte, error) {
	p := u.sending[0]
	<-p.done
	u.sending = u.sending[1:]
	if p.err != nil {
		return p.buf, p.err
	}
	size := int64(len(p.buf))
	u.h.Parts = append(u.h.Parts, part{N: p.n, ETag: p.etag, Size: size})
	u.h.Offset += size - u.h.Tail // the first part absorbed the tail
	u.h.Tail = 0
	return p.buf, nil
}

// wait waits for every part in flight. Parts are recorded in order up to
// the first that failed (none if first, an earlier failure, is set); the
// first error is returned.
func (u *upload) wait(first error) error {
	for len(u.sending) > 0 {
		if first != nil {
			p := u.sending[0]
			<-p.done
			u.sending = u.sending[1:]
			u.spare = append(u.spare, p.buf)
			continue
		}
		buf, err := u.collect()
		u.spare = append(u.spare, buf)
		first = err
	}
	return first
}

// releaseSpare returns the buffers of sent parts to the budget.
func (u *upload) releaseSpare() {
	for _, buf := range u.spare {
		u.b.bufs.put(buf)
	}
	u.spare = nil
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
	switch {
	case u.buf == nil:
		return storage.ObjectInfo{}, errClosed
	case u.broken != nil:
		return storage.ObjectInfo{}, fmt.Errorf("s3: commit %q: an earlier write failed, resume the upload: %w", storage.RedactKey(u.key), u.broken)
	}
	b := u.b
	if u.h.UploadID == "" {
		opts := minio.PutObjectOptions{DisableContentSha256: true}
		opts.SetMatchETagExcept("*")
		if _, err := b.core.PutObject(ctx, b.bucket, u.key, bytes.NewReader(u.buf), int64(len(u.buf)), "", "", opts); err != nil {
			return storage.ObjectInfo{}, wrap("commit", u.key, err)
		}
	} else {
		parts := u.h.Parts
		if len(u.buf) > 0 {
			n := len(parts) + 1
			if n > MaxParts {
				return storage.ObjectInfo{}, u.tooManyParts()
			}
			op, err := b.core.PutObjectPart(ctx, b.bucket, u.key, u.h.UploadID, n, bytes.NewReader(u.buf), int64(len(u.buf)), partOpts)
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

// release returns the part buffer to the budget.
func (u *upload) release() {
	if u.buf != nil {
		u.b.bufs.put(u.buf)
		u.buf = nil
	}
}

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
