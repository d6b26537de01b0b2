package scanner

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"
	"unicode"
	"unicode/utf8"
)

const (
	clamdDefaultTimeout       = 5 * time.Minute
	clamdDefaultMaxStreamSize = 100 << 20 // clamd's own StreamMaxLength default
	clamdDefaultConns         = 2
	clamdDefaultChunkSize     = 256 << 10
	// clamdMaxChunkSize bounds ClamdConfig.ChunkSize: each scan in flight
	// holds one chunk buffer.
	clamdMaxChunkSize = 16 << 20
	// clamdMaxReply bounds a reply read from clamd (a verdict, PONG, a
	// version string): a longer one is a protocol error.
	clamdMaxReply = 4 << 10
	// clamdMaxQuote bounds how much of an unexpected reply goes into an error.
	clamdMaxQuote = 200
	// clamdMaxName bounds a signature name taken from a FOUND reply.
	clamdMaxName = 512
)

// The replies of clamd this client recognises (their terminator stripped).
const (
	clamdReplyClean     = "stream: OK"
	clamdReplyTooLarge  = "INSTREAM size limit exceeded. ERROR"
	clamdReplyTimedOut  = "COMMAND READ TIMED OUT"
	clamdReplyPong      = "PONG"
	clamdFoundPrefix    = "stream: "
	clamdFoundSuffix    = " FOUND"
	clamdVersionPrefix  = "ClamAV "
	clamdEngine         = "clamd"
	clamdTooLargeReason = "larger than the malware scanner's stream limit; held for review"
)

// ClamdConfig configures a Clamd. Zero values take the defaults.
type ClamdConfig struct {
	// Address of clamd: "tcp://host:port" or "unix:///absolute/path".
	Address string
	// Timeout is the longest wait for clamd to accept data or to answer,
	// applied to each write and each read (an idle timeout, not a bound on
	// a whole scan). Default 5 minutes.
	Timeout time.Duration
	// MaxStreamSize is the most bytes sent to clamd for one stream; a longer
	// stream is not sent but held for review. It must not exceed clamd's
	// StreamMaxLength. Default 100 MiB (clamd's default StreamMaxLength).
	MaxStreamSize int64
	// Conns is the most scans in flight, each on its own connection (mftd
	// passes scanner.workers). Default 2.
	Conns int
	// ChunkSize is the size of an INSTREAM chunk, and of the buffer each
	// scan in flight holds. Default 256 KiB, at most 16 MiB.
	ChunkSize int
}

// Clamd is a client of ClamAV's clamd over its INSTREAM protocol: a
// StreamScanner that sends the bytes to clamd and turns its answer into a
// Verdict. Safe for concurrent use.
//
// Connections: clamd closes a connection after answering any command sent
// outside an IDSESSION, and a session serialises its commands, so there is no
// connection to keep and reuse: each command (PING, VERSION, INSTREAM) dials
// its own connection and closes it after the reply. The pool is therefore a
// bound, not a set of connections: a scan first takes one of Conns slots
// (waiting for one, or for ctx to end) and gives it back once its connection
// is closed, so at most Conns scans are in flight. PING and VERSION take no
// slot: clamd answers them without a scanning thread, and a health check must
// not wait behind long scans and report clamd down while it is only busy.
// Keep Conns at or below clamd's MaxThreads, or scans queue inside clamd
// while its read timeout runs.
//
// Errors: a finding is a Verdict, never an error. An error wrapping
// ErrUnavailable means clamd could not be reached or did not answer in time
// (the file is to be tried again later); the context's error when ctx ended;
// any other error is a reply clamd should not have sent, or a failure to read
// the stream given. Errors never hold file contents.
type Clamd struct {
	address   string // as configured, for messages
	network   string // "tcp" or "unix"
	dialAddr  string
	timeout   time.Duration
	maxStream int64
	chunk     int
	slots     chan struct{}
	bufs      sync.Pool // *[]byte of 4+chunk bytes: a length prefix and a chunk
}

var _ StreamScanner = (*Clamd)(nil)

// NewClamd checks cfg and returns a client. It does not connect: call Ping to
// check that clamd answers.
func NewClamd(cfg ClamdConfig) (*Clamd, error) {
	network, addr, err := parseClamdAddress(cfg.Address)
	if err != nil {
		return nil, err
	}
	c := &Clamd{
		address:   cfg.Address,
		network:   network,
		dialAddr:  addr,
		timeout:   cfg.Timeout,
		maxStream: cfg.MaxStreamSize,
		chunk:     cfg.ChunkSize,
	}
	conns := cfg.Conns
	switch {
	case c.timeout < 0:
		return nil, fmt.Errorf("scanner: clamd: negative timeout %v", c.timeout)
	case c.maxStream < 0:
		return nil, fmt.Errorf("scanner: clamd: negative max stream size %d", c.maxStream)
	case conns < 0:
		return nil, fmt.Errorf("scanner: clamd: negative connection count %d", conns)
	case c.chunk < 0:
		return nil, fmt.Errorf("scanner: clamd: negative chunk size %d", c.chunk)
	case c.chunk > clamdMaxChunkSize:
		return nil, fmt.Errorf("scanner: clamd: chunk size %d over %d", c.chunk, clamdMaxChunkSize)
	}
	if c.timeout == 0 {
		c.timeout = clamdDefaultTimeout
	}
	if c.maxStream == 0 {
		c.maxStream = clamdDefaultMaxStreamSize
	}
	if conns == 0 {
		conns = clamdDefaultConns
	}
	if c.chunk == 0 {
		c.chunk = clamdDefaultChunkSize
	}
	c.slots = make(chan struct{}, conns)
	size := 4 + c.chunk
	c.bufs.New = func() any {
		b := make([]byte, size)
		return &b
	}
	return c, nil
}

// parseClamdAddress splits "tcp://host:port" or "unix:///path" into a network
// and an address for net.Dial.
func parseClamdAddress(address string) (network, addr string, err error) {
	if rest, ok := strings.CutPrefix(address, "tcp://"); ok {
		host, port, err := net.SplitHostPort(rest)
		if err != nil {
			return "", "", fmt.Errorf("scanner: clamd address %q: %w", address, err)
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || host == "" {
			return "", "", fmt.Errorf("scanner: clamd address %q: want tcp://host:port with a port in 1..65535", address)
		}
		return "tcp", rest, nil
	}
	if path, ok := strings.CutPrefix(address, "unix://"); ok {
		if !filepath.IsAbs(path) || strings.ContainsRune(path, 0) {
			return "", "", fmt.Errorf("scanner: clamd address %q: want unix:///absolute/path", address)
		}
		return "unix", path, nil
	}
	return "", "", fmt.Errorf("scanner: clamd address %q: want tcp://host:port or unix:///path", address)
}

// Address is the configured address of clamd, for logs.
func (c *Clamd) Address() string { return c.address }

// Ping checks that clamd answers PING with PONG.
func (c *Clamd) Ping(ctx context.Context) error {
	reply, err := c.command(ctx, "PING")
	if err != nil {
		return err
	}
	if reply != clamdReplyPong {
		return unexpectedClamdReply(reply)
	}
	return nil
}

// Version is clamd's answer to VERSION, e.g. "ClamAV 1.4.6/27480/Tue Nov 25
// 09:32:01 2025" (the engine, then the signature database's version and date
// when it has an official one).
func (c *Clamd) Version(ctx context.Context) (string, error) {
	reply, err := c.command(ctx, "VERSION")
	if err != nil {
		return "", err
	}
	if !strings.HasPrefix(reply, clamdVersionPrefix) {
		return "", unexpectedClamdReply(reply)
	}
	return reply, nil
}

// command sends a command that carries no data and returns the reply, its
// terminator stripped.
func (c *Clamd) command(ctx context.Context, name string) (string, error) {
	s, err := c.open(ctx, name, false)
	if err != nil {
		return "", err
	}
	defer s.close()
	if err := s.write([]byte("z" + name + "\x00")); err != nil {
		return "", s.fail(ctx, err)
	}
	reply, err := s.readReply()
	if err != nil {
		return "", s.fail(ctx, err)
	}
	reply = strings.TrimRight(reply, "\x00\n")
	if reply == clamdReplyTimedOut {
		return "", fmt.Errorf("%w: clamd %s: %s: %s", ErrUnavailable, c.address, name, reply)
	}
	return reply, nil
}

// ScanStream sends r to clamd with INSTREAM and returns its verdict. It reads
// r with one chunk buffer, to io.EOF unless r holds more than MaxStreamSize
// bytes: then it stops, sends clamd nothing more, and returns a Quarantine
// verdict. A read of r blocked when ctx ends is not interrupted; I/O with
// clamd is.
func (c *Clamd) ScanStream(ctx context.Context, r io.Reader) (Verdict, error) {
	s, err := c.open(ctx, "INSTREAM", true)
	if err != nil {
		return Verdict{}, err
	}
	defer s.close()
	bp := c.bufs.Get().(*[]byte)
	defer c.bufs.Put(bp)
	buf := *bp

	if err := s.write([]byte("zINSTREAM\x00")); err != nil {
		return s.failStream(ctx, err)
	}
	var sent int64
	for {
		if err := ctx.Err(); err != nil {
			return Verdict{}, s.fail(ctx, err)
		}
		// Read one byte past the limit, if the stream gets that far, to
		// tell a stream of exactly MaxStreamSize bytes from a longer one.
		want := c.chunk
		if left := c.maxStream - sent; int64(want) > left {
			want = int(left) + 1
		}
		n, rerr := io.ReadFull(r, buf[4:4+want])
		if sent+int64(n) > c.maxStream {
			return Verdict{
				Action: Quarantine,
				Engine: clamdEngine,
				Reason: fmt.Sprintf("larger than the malware scanner's stream limit (%d bytes); held for review", c.maxStream),
			}, nil
		}
		if n > 0 {
			binary.BigEndian.PutUint32(buf[:4], uint32(n))
			if err := s.write(buf[:4+n]); err != nil {
				return s.failStream(ctx, err)
			}
			sent += int64(n)
		}
		if rerr == io.EOF || rerr == io.ErrUnexpectedEOF {
			break
		}
		if rerr != nil {
			if err := ctx.Err(); err != nil {
				return Verdict{}, s.fail(ctx, err)
			}
			return Verdict{}, fmt.Errorf("scanner: clamd %s: INSTREAM: read the stream after %d bytes: %w", c.address, sent, rerr)
		}
	}
	if err := s.write([]byte{0, 0, 0, 0}); err != nil {
		return s.failStream(ctx, err)
	}
	reply, err := s.readReply()
	if err != nil {
		return Verdict{}, s.fail(ctx, err)
	}
	return parseReply(reply)
}

// clamdConn is one command's connection, holding one of the Clamd's slots
// until closed if it is a scan's.
type clamdConn struct {
	c      *Clamd
	op     string // the command, for messages
	conn   net.Conn
	pooled bool        // holds a slot
	stop   func() bool // stops closing conn when the command's ctx ends
}

// open dials clamd for the command op, first taking a slot if pooled. The
// connection is closed as soon as ctx ends, which interrupts any I/O on it.
func (c *Clamd) open(ctx context.Context, op string, pooled bool) (*clamdConn, error) {
	if pooled {
		select {
		case c.slots <- struct{}{}:
		case <-ctx.Done():
			return nil, fmt.Errorf("scanner: clamd %s: %s: wait for a connection: %w", c.address, op, ctx.Err())
		}
	}
	d := net.Dialer{Timeout: c.timeout}
	conn, err := d.DialContext(ctx, c.network, c.dialAddr)
	if err != nil {
		if pooled {
			<-c.slots
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("scanner: clamd %s: %s: %w", c.address, op, ctx.Err())
		}
		return nil, fmt.Errorf("%w: clamd %s: %s: %w", ErrUnavailable, c.address, op, err)
	}
	return &clamdConn{
		c:      c,
		op:     op,
		conn:   conn,
		pooled: pooled,
		stop:   context.AfterFunc(ctx, func() { conn.Close() }),
	}, nil
}

// close closes the connection and gives its slot back.
func (s *clamdConn) close() {
	s.stop()
	s.conn.Close()
	if s.pooled {
		<-s.c.slots
	}
}

func (s *clamdConn) write(b []byte) error {
	if err := s.conn.SetWriteDeadline(time.Now().Add(s.c.timeout)); err != nil {
		return err
	}
	_, err := s.conn.Write(b)
	return err
}

// errClamdEmptyReply is the transport error of a connection closed by clamd
// before it said anything.
var errClamdEmptyReply = errors.New("connection closed without a reply")

// readReply reads a reply up to its '\x00' terminator, or to the end of the
// connection (clamd ends a few replies, such as COMMAND READ TIMED OUT, with
// '\n' whatever the command's style). The terminator is not returned. Errors
// are transport errors except a reply over clamdMaxReply bytes.
func (s *clamdConn) readReply() (string, error) {
	var reply []byte
	var b [512]byte
	for {
		if err := s.conn.SetReadDeadline(time.Now().Add(s.c.timeout)); err != nil {
			return "", err
		}
		n, err := s.conn.Read(b[:])
		reply = append(reply, b[:n]...)
		if i := bytes.IndexByte(reply, 0); i >= 0 {
			return string(reply[:i]), nil
		}
		if len(reply) > clamdMaxReply {
			return "", &clamdReplyError{fmt.Sprintf("scanner: clamd: reply longer than %d bytes, starting %q", clamdMaxReply, quoteClamd(string(reply)))}
		}
		if err == io.EOF {
			if len(reply) == 0 {
				return "", errClamdEmptyReply
			}
			return string(reply), nil
		}
		if err != nil {
			return "", err
		}
	}
}

// clamdReplyError is a reply clamd should not have sent: not a transport
// problem, so not ErrUnavailable.
type clamdReplyError struct{ msg string }

func (e *clamdReplyError) Error() string { return e.msg }

// fail turns an error of the command into the error to return: the context's
// error if ctx ended, a reply error as it is, anything else (a transport
// error) wrapped in ErrUnavailable.
func (s *clamdConn) fail(ctx context.Context, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("scanner: clamd %s: %s: %w", s.c.address, s.op, ctxErr)
	}
	var re *clamdReplyError
	if errors.As(err, &re) {
		return err
	}
	return fmt.Errorf("%w: clamd %s: %s: %w", ErrUnavailable, s.c.address, s.op, err)
}

// failStream handles a failed write of the stream. When clamd refuses a
// stream (over its StreamMaxLength, or after its own read timeout) it answers
// and closes, and the next write fails; its answer is the verdict, so read it
// before giving up. A write that timed out is not followed by a read: clamd
// is not reading.
func (s *clamdConn) failStream(ctx context.Context, werr error) (Verdict, error) {
	if ctx.Err() != nil || errors.Is(werr, os.ErrDeadlineExceeded) {
		return Verdict{}, s.fail(ctx, werr)
	}
	reply, err := s.readReply()
	if err != nil {
		return Verdict{}, s.fail(ctx, werr)
	}
	return parseReply(reply)
}

// parseReply turns clamd's answer to INSTREAM into a Verdict. It knows every
// answer clamd 1.x gives to INSTREAM outside a session:
//
//	stream: OK                            clean
//	stream: NAME FOUND                    not clean: Quarantine, Reason NAME
//	                                      (a signature or a heuristic such as
//	                                      Heuristics.Limits.Exceeded.MaxFileSize)
//	INSTREAM size limit exceeded. ERROR   not clean: Quarantine (over clamd's
//	                                      StreamMaxLength)
//	COMMAND READ TIMED OUT                clamd gave up waiting for the stream:
//	                                      an error wrapping ErrUnavailable
//
// Anything else (stream: MESSAGE ERROR, UNKNOWN COMMAND, a session's "N: "
// prefix, an empty or garbled reply) is an error. A trailing '\x00' or '\n'
// is ignored.
func parseReply(reply string) (Verdict, error) {
	reply = strings.TrimRight(reply, "\x00\n")
	switch reply {
	case clamdReplyClean:
		return Verdict{Clean: true, Engine: clamdEngine}, nil
	case clamdReplyTooLarge:
		return Verdict{Action: Quarantine, Engine: clamdEngine, Reason: clamdTooLargeReason}, nil
	case clamdReplyTimedOut:
		return Verdict{}, fmt.Errorf("%w: clamd: %s", ErrUnavailable, clamdReplyTimedOut)
	}
	if rest, ok := strings.CutPrefix(reply, clamdFoundPrefix); ok {
		if name, ok := strings.CutSuffix(rest, clamdFoundSuffix); ok && validSignatureName(name) {
			return Verdict{Action: Quarantine, Engine: clamdEngine, Reason: name}, nil
		}
	}
	return Verdict{}, unexpectedClamdReply(reply)
}

// validSignatureName reports whether name can be a signature name from a
// FOUND reply, safe to show as a Reason: printable UTF-8, no leading or
// trailing space, not too long.
func validSignatureName(name string) bool {
	if name == "" || len(name) > clamdMaxName || !utf8.ValidString(name) || strings.TrimSpace(name) != name {
		return false
	}
	for _, r := range name {
		if !unicode.IsPrint(r) {
			return false
		}
	}
	return true
}

func unexpectedClamdReply(reply string) error {
	return &clamdReplyError{fmt.Sprintf("scanner: clamd: unexpected reply %q", quoteClamd(reply))}
}

// quoteClamd truncates a reply to clamdMaxQuote bytes for an error message.
func quoteClamd(s string) string {
	if len(s) > clamdMaxQuote {
		return s[:clamdMaxQuote] + "..."
	}
	return s
}
