// Package s3 is the object backend on S3-compatible storage (MinIO is the
// reference), through github.com/minio/minio-go/v7.
//
// A committed object lives at its key. An upload in progress is one S3
// multipart upload at its key (created when the first full part is ready)
// plus a tail object at key+TailSuffix that holds the bytes after the last
// uploaded part, below the part size: every byte a WriteChunk reports is
// durable in S3 when it returns. The tail object also reserves the key from
// Create to Commit, so an upload in progress holds its key. Tail objects are
// not objects of the backend: List skips them, Stat and Open never see them.
package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"go.uber.org/zap"

	"github.com/mftd/mftd/storage"
)

const (
	// MinPartSize is the smallest part S3 accepts (except the last).
	MinPartSize = 5 << 20
	// MaxParts is the most parts a multipart upload may have.
	MaxParts = 10000
	// DefaultPartSize is used when Config.PartSize is zero.
	DefaultPartSize = 16 << 20
	// DefaultConcurrency is used when Config.Concurrency is zero.
	DefaultConcurrency = 2
	// DefaultMemory is used when Config.Memory is zero.
	DefaultMemory = 256 << 20

	// TailSuffix is appended to a key to name its upload's tail object.
	// ':' cannot occur in a name that passed storage.CleanName, so a tail
	// object never collides with, or hides, a committed object.
	TailSuffix = ":tail"

	// metaParts is the user metadata of a tail object that records how many
	// parts preceded it: a tail is only valid for a handle with that many.
	metaParts = "Mftd-Parts"
	// probePrefix is where New writes its probe object.
	probePrefix = ".mftd-probe/"
)

// Config configures the S3 backend.
type Config struct {
	Endpoint  string // host:port, without a scheme
	Bucket    string
	Region    string
	AccessKey string
	SecretKey string // never logged
	UseTLS    bool
	// RootCAs, if set, verifies the endpoint's certificate (with UseTLS)
	// instead of the system roots.
	RootCAs *x509.CertPool
	// PartSize is the size of every multipart part but the last and of
	// each in-memory part buffer; ≥ MinPartSize (0: DefaultPartSize).
	PartSize int64
	// Concurrency is how many parts of one upload are sent at once while
	// the next one fills (0: DefaultConcurrency).
	Concurrency int
	// Memory bounds the part buffers of all open uploads together
	// (0: DefaultMemory); at least PartSize. An upload that cannot get its
	// first buffer waits for one (backpressure: its client is not read);
	// one that cannot get another sends with fewer parts in flight.
	Memory int64
}

// Backend is a storage.Backend on one S3 bucket. It is safe for concurrent
// use. Each open upload holds one part buffer (PartSize bytes) until it is
// committed, aborted or closed, and up to Concurrency more while a write
// sends parts; all of them come out of the Memory budget.
type Backend struct {
	client      *minio.Client
	core        minio.Core
	bucket      string
	partSize    int64
	concurrency int
	bufs        *buffers
	log         *zap.Logger
}

var (
	_ storage.Backend   = (*Backend)(nil)
	_ storage.Leftovers = (*Backend)(nil)
)

// New connects to the bucket, checks that it exists and is writable (it puts
// and deletes a probe object), and returns the backend. A nil log discards
// logging. The error says what is wrong: the configuration, the endpoint,
// the credentials or the bucket.
func New(ctx context.Context, cfg Config, log *zap.Logger) (*Backend, error) {
	if log == nil {
		log = zap.NewNop()
	}
	switch {
	case cfg.Endpoint == "":
		return nil, errors.New("s3: no endpoint configured")
	case strings.Contains(cfg.Endpoint, "://"):
		return nil, fmt.Errorf("s3: endpoint %q must be host:port without a scheme (use use_tls for https)", cfg.Endpoint)
	case cfg.Bucket == "":
		return nil, errors.New("s3: no bucket configured")
	case cfg.PartSize != 0 && cfg.PartSize < MinPartSize:
		return nil, fmt.Errorf("s3: part size %d is below the S3 minimum of %d bytes (5 MiB)", cfg.PartSize, MinPartSize)
	case cfg.Concurrency < 0:
		return nil, fmt.Errorf("s3: concurrency %d is negative", cfg.Concurrency)
	}
	if cfg.PartSize == 0 {
		cfg.PartSize = DefaultPartSize
	}
	if cfg.Concurrency == 0 {
		cfg.Concurrency = DefaultConcurrency
	}
	if cfg.Memory == 0 {
		cfg.Memory = max(DefaultMemory, cfg.PartSize)
	}
	if cfg.Memory < cfg.PartSize {
		return nil, fmt.Errorf("s3: memory %d is less than one part (%d bytes)", cfg.Memory, cfg.PartSize)
	}
	client, err := newClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("s3: client for %s: %w", cfg.Endpoint, err)
	}
	b := &Backend{
		client:      client,
		core:        minio.Core{Client: client},
		bucket:      cfg.Bucket,
		partSize:    cfg.PartSize,
		concurrency: cfg.Concurrency,
		bufs:        newBuffers(int(cfg.PartSize), cfg.Memory/cfg.PartSize, cfg.Concurrency+1),
		log:         log.With(zap.String("bucket", cfg.Bucket)),
	}
	if err := b.check(ctx, cfg.Endpoint); err != nil {
		return nil, err
	}
	return b, nil
}

func newClient(cfg Config) (*minio.Client, error) {
	opts := &minio.Options{
		Creds:  credentials.NewStaticV4(cfg.AccessKey, cfg.SecretKey, ""),
		Secure: cfg.UseTLS,
		Region: cfg.Region,
	}
	if cfg.RootCAs != nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		t.Proxy = nil // the object store is addressed directly
		t.TLSClientConfig = &tls.Config{RootCAs: cfg.RootCAs, MinVersion: tls.VersionTLS12}
		opts.Transport = t
	}
	return minio.New(cfg.Endpoint, opts)
}

// check verifies that the bucket exists and that objects can be written to
// and deleted from it.
func (b *Backend) check(ctx context.Context, endpoint string) error {
	ok, err := b.client.BucketExists(ctx, b.bucket)
	if err != nil {
		return fmt.Errorf("s3: check bucket %q at %s: %s: %w", b.bucket, endpoint, hint(err), err)
	}
	if !ok {
		return fmt.Errorf("s3: bucket %q does not exist at %s: create it first", b.bucket, endpoint)
	}
	var rnd [8]byte
	rand.Read(rnd[:])
	probe := probePrefix + hex.EncodeToString(rnd[:])
	if _, err := b.core.PutObject(ctx, b.bucket, probe, bytes.NewReader(nil), 0, "", "", minio.PutObjectOptions{}); err != nil {
		return fmt.Errorf("s3: bucket %q at %s is not writable (put %q): %s: %w", b.bucket, endpoint, probe, hint(err), err)
	}
	if err := b.client.RemoveObject(ctx, b.bucket, probe, minio.RemoveObjectOptions{}); err != nil {
		return fmt.Errorf("s3: bucket %q at %s: cannot delete probe object %q: %s: %w", b.bucket, endpoint, probe, hint(err), err)
	}
	return nil
}

// hint says in words what a failed check most likely means.
func hint(err error) string {
	switch minio.ToErrorResponse(err).Code {
	case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken":
		return "the credentials are wrong or lack permission"
	case "NoSuchBucket":
		return "the bucket does not exist"
	case "AuthorizationHeaderMalformed", "InvalidRegion":
		return "the region is wrong"
	case "":
		return "the endpoint cannot be reached (check endpoint and use_tls)"
	}
	return "the server refused"
}

// copyPartSize is the size of each part a server-side copy is cut into:
// the most one UploadPartCopy copies (a variable so tests can cut small
// objects into several parts).
var copyPartSize int64 = 5 << 30

// tailKey names the tail object of the upload at key.
func tailKey(key string) string { return key + TailSuffix }

// prevTailKey names the copy of the tail object kept while a write absorbs
// it into a part, so the handle from before that write can still resume.
func prevTailKey(key string) string { return key + TailSuffix + prevSuffix }

const prevSuffix = ".prev"

// wrap names the operation and the (redacted) key, and adds the storage
// sentinel that the S3 error code means, so errors.Is matches it. It is the
// one place minio-go errors are translated.
func wrap(op, key string, err error) error {
	if err == nil {
		return nil
	}
	k := storage.RedactKey(key)
	if errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrExist) ||
		errors.Is(err, storage.ErrOffsetMismatch) {
		return fmt.Errorf("s3: %s %q: %w", op, k, err)
	}
	switch minio.ToErrorResponse(err).Code {
	case "NoSuchKey", "NoSuchUpload", "NoSuchVersion":
		return fmt.Errorf("s3: %s %q: %w: %w", op, k, storage.ErrNotFound, err)
	case "PreconditionFailed":
		return fmt.Errorf("s3: %s %q: %w: %w", op, k, storage.ErrExist, err)
	}
	if unavailable(err) {
		return fmt.Errorf("s3: %s %q: %w: %w", op, k, storage.ErrUnavailable, err)
	}
	return fmt.Errorf("s3: %s %q: %w", op, k, err)
}

// unavailable reports whether err means the store could not be reached or
// answered with a server-side failure (after minio-go's own retries): the
// request may succeed later. A cancelled context is the caller's doing.
func unavailable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false
	}
	var ne net.Error
	if errors.As(err, &ne) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	r := minio.ToErrorResponse(err)
	switch r.Code {
	case "SlowDown", "ServiceUnavailable", "InternalError", "XMinioServerNotInitialized", "XMinioStorageFull":
		return true
	}
	return r.StatusCode >= 500
}

// code is the S3 error code of err, "" if it is not an S3 error.
func code(err error) string { return minio.ToErrorResponse(err).Code }

// notFound reports whether err means the key (or upload) does not exist.
func notFound(err error) bool {
	switch code(err) {
	case "NoSuchKey", "NoSuchUpload", "NoSuchVersion":
		return true
	}
	return false
}
