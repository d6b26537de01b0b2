package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mftd/mftd/policy"
	"github.com/mftd/mftd/scanner"
)

// DefaultDataDir is data_dir when the file does not set it.
const DefaultDataDir = "/var/lib/mftd"

// Default returns the configuration of an empty file: every key at the
// default its doc comment names.
func Default() *Config {
	c := defaults()
	c.fillDerived()
	return c
}

// defaults is the configuration a file is decoded over: a key the file
// leaves out, or leaves empty (null), keeps its default; a key the file sets,
// even to 0 or "", is kept and validated as written.
func defaults() *Config {
	return &Config{
		DataDir: DefaultDataDir,
		HTTPS: HTTPS{
			Listen:            "127.0.0.1:8443",
			ReadHeaderTimeout: Duration(10 * time.Second),
			IdleTimeout:       Duration(60 * time.Second),
			MaxHeaderBytes:    64 * KiB,
			ShutdownTimeout:   Duration(30 * time.Second),
		},
		Storage:  Storage{Backend: "local", S3: StorageS3{Region: "us-east-1", PartSize: 16 * MiB, Concurrency: 2, Memory: 256 * MiB}},
		Database: Database{Driver: "sqlite"},
		Retention: Retention{
			Arrivals:          Duration(720 * time.Hour),
			IncompleteUploads: Duration(24 * time.Hour),
			SweepInterval:     Duration(time.Minute),
			Quarantine:        Duration(720 * time.Hour),
		},
		Limits: Limits{
			MaxFileSize:      1 * TiB,
			CheckpointBytes:  64 * MiB,
			BufferSize:       1 * MiB,
			Buffers:          4,
			MaxMetadataBytes: 4 * KiB,
		},
		Auth: Auth{
			SessionTTL: Duration(12 * time.Hour), SessionIdle: Duration(30 * time.Minute), TOTPIssuer: "mftd",
			Lockout: Lockout{Threshold: 5, AddressThreshold: 50, Window: Duration(15 * time.Minute), Duration: Duration(15 * time.Minute)},
		},
		Scanner: Scanner{
			Workers:  2,
			Clamd:    Clamd{Timeout: Duration(5 * time.Minute), MaxStreamSize: 100 * MiB},
			Archives: Archives{MaxDepth: 5, MaxRatio: 100, MaxExpanded: 64 * GiB, MaxEntries: 100000, Encrypted: "hold"},
		},
		SFTP:   SFTP{LoginGrace: Duration(30 * time.Second), Window: 4 * MiB},
		Egress: Egress{Settle: Duration(5 * time.Second), Workers: 2, Retries: 5, RemoveSent: true},
		Log:    Log{Level: "info", Format: "json"},
	}
}

// fillDerived sets the defaults that depend on other keys, and those of keys
// whose empty value decodes to nil.
func (c *Config) fillDerived() {
	if c.Database.Path == "" {
		c.Database.Path = filepath.Join(c.DataDir, "mftd.db")
	}
	if c.Auth.CodeKeyFile == "" {
		c.Auth.CodeKeyFile = filepath.Join(c.DataDir, "keys", "code.key")
	}
	if c.SFTP.HostKeyFile == "" {
		c.SFTP.HostKeyFile = filepath.Join(c.DataDir, "keys", "ssh_host_ed25519_key")
	}
	if c.Quotas.Users == nil {
		c.Quotas.Users = map[string]UserQuota{}
	}
	if c.Quotas.Shares == nil {
		c.Quotas.Shares = map[string]ShareQuota{}
	}
	if c.Scanner.DenyTypes == nil { // "deny_types: []" is kept: no type refused
		c.Scanner.DenyTypes = scanner.DefaultDenyTypes()
	}
	if c.Egress.Portals == nil {
		c.Egress.Portals = []EgressPortal{}
	}
	if c.Egress.Shares == nil {
		c.Egress.Shares = map[string]EgressShare{}
	}
	for name, sh := range c.Egress.Shares {
		if sh.Checks == nil { // "checks: []" is kept: no checks
			sh.Checks = []string{policy.EgressCheckMalware, policy.EgressCheckIdentifiers}
			c.Egress.Shares[name] = sh
		}
	}
	if c.HTTPS.CORSOrigins == nil { // "cors_origins: []" is kept: no other origin
		c.HTTPS.CORSOrigins = []string{"*"}
	}
}

// Load reads, decodes and validates the configuration file at path.
// Relative paths in the file (data_dir, database.path, the TLS files) are
// relative to the working directory of the process, not to the file.
// A bad file gives an *Error listing every problem.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	return Parse(data)
}

// Parse decodes and validates one YAML document. Decoding is strict: an
// unknown key is an error, as is a second document. Keys left out take
// their defaults. Every problem found, in decoding and in Validate, is
// reported at once in an *Error, by key and line.
func Parse(data []byte) (*Config, error) {
	root, err := parseDocument(data)
	if err != nil {
		return nil, err
	}
	idx := newNodeIndex(root)

	c := defaults()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var problems []Problem
	if err := dec.Decode(c); err != nil {
		var te *yaml.TypeError
		if !errors.As(err, &te) {
			return nil, &Error{Problems: []Problem{syntaxProblem(err)}}
		}
		for _, msg := range te.Errors {
			problems = append(problems, idx.problem(msg))
		}
	}
	c.fillDerived()

	// Validate even after decoding errors, so that one run names every bad
	// key; a key that failed to decode is not reported a second time.
	var verr *Error
	if errors.As(c.Validate(), &verr) {
		decoded := map[string]bool{}
		for _, p := range problems {
			decoded[p.Key] = true
		}
		for _, p := range verr.Problems {
			if reported(decoded, p.Key) {
				continue
			}
			p.Line = idx.line(p.Key)
			problems = append(problems, p)
		}
	}
	if len(problems) > 0 {
		sort.SliceStable(problems, func(i, j int) bool {
			a, b := problems[i].Line, problems[j].Line
			return a != 0 && (b == 0 || a < b)
		})
		return nil, &Error{Problems: problems}
	}
	return c, nil
}

// parseDocument returns the root mapping of the file's only document.
func parseDocument(data []byte) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, &Error{Problems: []Problem{{Msg: "the file is empty"}}}
		}
		return nil, &Error{Problems: []Problem{syntaxProblem(err)}}
	}
	var next yaml.Node
	switch err := dec.Decode(&next); {
	case err == nil:
		line := next.Line
		if len(next.Content) > 0 {
			line = next.Content[0].Line
		}
		return nil, &Error{Problems: []Problem{{Line: line,
			Msg: "a second YAML document starts here; the file must hold exactly one (remove the ---)"}}}
	case !errors.Is(err, io.EOF):
		return nil, &Error{Problems: []Problem{syntaxProblem(err)}}
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) != 1 || doc.Content[0].Kind != yaml.MappingNode {
		line := doc.Line
		if len(doc.Content) > 0 {
			line = doc.Content[0].Line
		}
		return nil, &Error{Problems: []Problem{{Line: line, Msg: "the file must be a mapping of keys (data_dir: ..., https: ...)"}}}
	}
	return doc.Content[0], nil
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// syntaxProblem turns a yaml syntax error ("yaml: line 3: ...") into a Problem.
func syntaxProblem(err error) Problem {
	msg := err.Error()
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		return Problem{Line: line, Msg: m[2]}
	}
	return Problem{Msg: strings.TrimPrefix(msg, "yaml: ")}
}

// reported reports whether key, or a key it is inside of, is in decoded.
func reported(decoded map[string]bool, key string) bool {
	for key != "" {
		if decoded[key] {
			return true
		}
		i := strings.LastIndexAny(key, ".[")
		if i < 0 {
			return false
		}
		key = key[:i]
	}
	return false
}
