package config

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/mftd/mftd/scanner"
)

const configsDir = "../../../configs"

// minimal is the contract: the smallest file a deployment may write.
const minimal = `data_dir: /var/lib/mftd
https:
  listen: 127.0.0.1:8443
  tls: {cert_file: "", key_file: ""}
storage:
  backend: local
retention:
  arrivals: 720h
  incomplete_uploads: 24h
limits:
  max_file_size: 1TiB
`

func TestParseSize(t *testing.T) {
	tests := []struct {
		in      string
		want    Size
		wantErr string // substring; "" means success
	}{
		{"0", 0, ""},
		{"1048576", 1 << 20, ""},
		{"500MiB", 500 << 20, ""},
		{"1 TiB", 1 << 40, ""},
		{"64KiB", 64 << 10, ""},
		{"  2GiB ", 2 << 30, ""},
		{"1PiB", 1 << 50, ""},
		{"7B", 7, ""},
		{"1KB", 1000, ""},
		{"1MB", 1e6, ""},
		{"1GB", 1e9, ""},
		{"3TB", 3e12, ""},
		{"1.5KiB", 1536, ""},
		{"0.5 MB", 500000, ""},
		{"8191PiB", 8191 << 50, ""},
		{"9223372036854775807", 1<<63 - 1, ""},
		{"", 0, "empty"},
		{"   ", 0, "empty"},
		{"-1", 0, "negative"},
		{"-5MiB", 0, "negative"},
		{"1.5B", 0, "whole number of bytes"},
		{"0.1KiB", 0, "whole number of bytes"},
		{"1.5", 0, "whole number of bytes"},
		{"9223372036854775808", 0, "too large"},
		{"8192PiB", 0, "too large"},
		{"99999999999TB", 0, "too large"},
		{"1mb", 0, "unknown unit"},
		{"1M", 0, "unknown unit"},
		{"1 kib", 0, "unknown unit"},
		{"1EiB", 0, "unknown unit"},
		{"10 MiB extra", 0, "unknown unit"},
		{"MiB", 0, "not a number"},
		{"+1MiB", 0, "not a number"},
		{"1..5MiB", 0, "not a number"},
		{".5MiB", 0, "not a number"},
		{"1.MiB", 0, "not a number"},
		{"0x10", 0, "unknown unit"},
		{strings.Repeat("9", 100), 0, "too long"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseSize(tt.in)
			checkErr(t, err, tt.wantErr)
			if err == nil && got != tt.want {
				t.Errorf("ParseSize(%q) = %d, want %d", tt.in, got, tt.want)
			}
		})
	}
}

func TestSizeString(t *testing.T) {
	tests := []struct {
		in   Size
		want string
	}{
		{0, "0B"},
		{1, "1B"},
		{1500, "1500B"},
		{1536, "1536B"},
		{64 * KiB, "64KiB"},
		{1 * TiB, "1TiB"},
		{3 * PiB, "3PiB"},
		{1024 * TiB, "1PiB"},
		{5 * MB, "5MB"},
		{1<<63 - 1, "9223372036854775807B"},
	}
	for _, tt := range tests {
		if got := tt.in.String(); got != tt.want {
			t.Errorf("Size(%d).String() = %q, want %q", int64(tt.in), got, tt.want)
		}
		back, err := ParseSize(tt.in.String())
		if err != nil || back != tt.in {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tt.in.String(), back, err, tt.in)
		}
		if tt.in.Int64() != int64(tt.in) {
			t.Errorf("Int64() = %d", tt.in.Int64())
		}
	}
}

func TestParseDuration(t *testing.T) {
	tests := []struct {
		in      string
		want    time.Duration
		wantErr string
	}{
		{"720h", 720 * time.Hour, ""},
		{"90s", 90 * time.Second, ""},
		{"1h30m", 90 * time.Minute, ""},
		{"250ms", 250 * time.Millisecond, ""},
		{"1.5h", 90 * time.Minute, ""},
		{"0", 0, ""},
		{"0s", 0, ""},
		{" 10s ", 10 * time.Second, ""},
		{"", 0, "empty"},
		{"30", 0, "no unit"},
		{"1.5", 0, "no unit"},
		{"-1h", 0, "negative"},
		{"-0s", 0, "negative"},
		{"-30", 0, "negative"},
		{"30d", 0, "no day unit"},
		{"1 h", 0, "not a Go duration"},
		{"forever", 0, "not a Go duration"},
		{"9999999999h", 0, "not a Go duration"},
		{"1e3s", 0, "not a Go duration"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := ParseDuration(tt.in)
			checkErr(t, err, tt.wantErr)
			if err == nil && got.D() != tt.want {
				t.Errorf("ParseDuration(%q) = %v, want %v", tt.in, got.D(), tt.want)
			}
		})
	}
}

func TestDurationString(t *testing.T) {
	tests := []struct {
		in   time.Duration
		want string
	}{
		{0, "0s"},
		{720 * time.Hour, "720h"},
		{90 * time.Minute, "1h30m"},
		{90 * time.Second, "1m30s"},
		{10 * time.Minute, "10m"},
		{time.Hour + time.Second, "1h0m1s"},
		{1500 * time.Millisecond, "1.5s"},
	}
	for _, tt := range tests {
		d := Duration(tt.in)
		if got := d.String(); got != tt.want {
			t.Errorf("Duration(%v).String() = %q, want %q", tt.in, got, tt.want)
		}
		back, err := ParseDuration(d.String())
		if err != nil || back != d {
			t.Errorf("ParseDuration(%q) = %v, %v; want %v", d.String(), back, err, tt.in)
		}
	}
}

// TestScalarYAML decodes Size and Duration from the YAML forms a file uses.
func TestScalarYAML(t *testing.T) {
	var v struct {
		S Size     `yaml:"s"`
		D Duration `yaml:"d"`
	}
	if err := yaml.Unmarshal([]byte("s: 1048576\nd: 0\n"), &v); err != nil || v.S != MiB || v.D != 0 {
		t.Errorf("integers: got %v %v, %v", v.S, v.D, err)
	}
	if err := yaml.Unmarshal([]byte("s: '2 GiB'\nd: \"1h\"\n"), &v); err != nil || v.S != 2*GiB || v.D.D() != time.Hour {
		t.Errorf("quoted: got %v %v, %v", v.S, v.D, err)
	}
	err := yaml.Unmarshal([]byte("s: [1]\nd: {a: 1}\n"), &v)
	var te *yaml.TypeError
	if !errors.As(err, &te) || len(te.Errors) != 2 {
		t.Fatalf("collections: want a TypeError with 2 messages, got %v", err)
	}
	out, err := yaml.Marshal(struct {
		S Size     `yaml:"s"`
		D Duration `yaml:"d"`
	}{64 * KiB, Duration(720 * time.Hour)})
	if err != nil || string(out) != "s: 64KiB\nd: 720h\n" {
		t.Errorf("Marshal = %q, %v", out, err)
	}
}

func TestParseMinimal(t *testing.T) {
	c, err := Parse([]byte(minimal))
	if err != nil {
		t.Fatalf("Parse(minimal): %v", err)
	}
	want := &Config{
		DataDir: "/var/lib/mftd",
		HTTPS: HTTPS{
			Listen:            "127.0.0.1:8443",
			CORSOrigins:       []string{"*"},
			ReadHeaderTimeout: Duration(10 * time.Second),
			IdleTimeout:       Duration(60 * time.Second),
			MaxHeaderBytes:    64 * KiB,
			ShutdownTimeout:   Duration(30 * time.Second),
		},
		Storage:  Storage{Backend: "local", S3: StorageS3{Region: "us-east-1", PartSize: 16 << 20, Concurrency: 2, Memory: 256 << 20}},
		Database: Database{Driver: "sqlite", Path: "/var/lib/mftd/mftd.db"},
		Retention: Retention{
			Arrivals:          Duration(720 * time.Hour),
			IncompleteUploads: Duration(24 * time.Hour),
			SweepInterval:     Duration(time.Minute),
			Quarantine:        Duration(720 * time.Hour),
		},
		Limits: Limits{
			MaxFileSize:      1 << 40,
			CheckpointBytes:  64 << 20,
			BufferSize:       1 << 20,
			Buffers:          4,
			MaxMetadataBytes: 4 << 10,
		},
		Auth: Auth{
			SessionTTL: Duration(12 * time.Hour), SessionIdle: Duration(30 * time.Minute), TOTPIssuer: "mftd",
			CodeKeyFile: "/var/lib/mftd/keys/code.key",
			Lockout:     Lockout{Threshold: 5, AddressThreshold: 50, Window: Duration(15 * time.Minute), Duration: Duration(15 * time.Minute)},
		},
		Quotas: Quotas{Users: map[string]UserQuota{}, Shares: map[string]ShareQuota{}},
		Scanner: Scanner{
			Workers:   2,
			Clamd:     Clamd{Timeout: Duration(5 * time.Minute), MaxStreamSize: 100 * MiB},
			DenyTypes: scanner.DefaultDenyTypes(),
			Archives:  Archives{MaxDepth: 5, MaxRatio: 100, MaxExpanded: 64 * GiB, MaxEntries: 100000, Encrypted: "hold"},
		},
		SFTP:   SFTP{HostKeyFile: "/var/lib/mftd/keys/ssh_host_ed25519_key", LoginGrace: Duration(30 * time.Second), Window: 4 * MiB},
		Egress: Egress{Settle: Duration(5 * time.Second), Workers: 2, Retries: 5, RemoveSent: true, Portals: []EgressPortal{}, Shares: map[string]EgressShare{}},
		Log:    Log{Level: "info", Format: "json"},
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("Parse(minimal) =\n%+v\nwant\n%+v", c, want)
	}
	if !reflect.DeepEqual(Default(), want) {
		t.Errorf("Default() =\n%+v\nwant\n%+v", Default(), want)
	}
}

func TestDefaultsFollowDataDir(t *testing.T) {
	c := mustParse(t, "data_dir: ./var\n")
	if c.Database.Path != filepath.Join("var", "mftd.db") {
		t.Errorf("database.path = %q, want var/mftd.db (relative to the working directory)", c.Database.Path)
	}
	c = mustParse(t, "data_dir: /srv/mftd\ndatabase: {path: /db/state.db}\n")
	if c.Database.Path != "/db/state.db" {
		t.Errorf("database.path = %q, want the one written", c.Database.Path)
	}
}

// TestEmptyValues: a key left empty keeps its default; a key written as 0
// or "" is kept and validated.
func TestEmptyValues(t *testing.T) {
	c := mustParse(t, "limits:\n  buffers:\n  max_file_size: ~\nlog:\n")
	if c.Limits.Buffers != 4 || c.Limits.MaxFileSize != TiB || c.Log.Format != "json" {
		t.Errorf("empty values did not keep defaults: %+v %+v", c.Limits, c.Log)
	}
	if c := mustParse(t, "https:\n  cors_origins:\n"); !reflect.DeepEqual(c.HTTPS.CORSOrigins, []string{"*"}) {
		t.Errorf("empty cors_origins = %q, want the default", c.HTTPS.CORSOrigins)
	}
	if c := mustParse(t, "https:\n  cors_origins: []\n"); len(c.HTTPS.CORSOrigins) != 0 {
		t.Errorf("cors_origins: [] = %q, want none", c.HTTPS.CORSOrigins)
	}
	wantProblems(t, "limits: {buffers: 0, max_file_size: 0}\ndata_dir: ''\nhttps: {idle_timeout: 0}\n",
		"limits.buffers", "limits.max_file_size", "data_dir", "https.idle_timeout")
}

func TestConfigFiles(t *testing.T) {
	for _, name := range []string{"dev.yaml", "mftd.example.yaml"} {
		t.Run(name, func(t *testing.T) {
			c, err := Load(filepath.Join(configsDir, name))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			if err := c.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}
	dev, err := Load(filepath.Join(configsDir, "dev.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if dev.DataDir != "./var" || dev.HTTPS.Listen != "127.0.0.1:8443" || dev.Log.Format != "console" ||
		dev.Log.Level != "info" || dev.Limits.MaxFileSize != TiB || dev.Retention.Arrivals.D() != 720*time.Hour ||
		dev.Retention.IncompleteUploads.D() != 24*time.Hour || dev.HTTPS.TLS != (TLS{}) || dev.SFTP.Listen != "127.0.0.1:2022" {
		t.Errorf("dev.yaml = %+v", dev)
	}
	// The example documents the defaults: loading it gives Default().
	example, err := Load(filepath.Join(configsDir, "mftd.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(example, Default()) {
		t.Errorf("mftd.example.yaml differs from Default():\n%+v\n%+v", example, Default())
	}
}

// TestExampleDocumentsEveryKey fails when a key is added to the struct tree
// without being documented in mftd.example.yaml.
func TestExampleDocumentsEveryKey(t *testing.T) {
	data, err := os.ReadFile(filepath.Join(configsDir, "mftd.example.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	inFile := map[string]bool{}
	collectNodeKeys(doc.Content[0], "", inFile)
	var inStruct []string
	collectStructKeys(reflect.TypeOf(Config{}), "", &inStruct)
	if len(inStruct) < 30 {
		t.Fatalf("struct walk found only %d keys: %q", len(inStruct), inStruct)
	}
	for _, k := range inStruct {
		if !inFile[k] {
			t.Errorf("configs/mftd.example.yaml does not document %s", k)
		}
	}
}

func collectStructKeys(t reflect.Type, prefix string, out *[]string) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		*out = append(*out, key)
		if f.Type.Kind() == reflect.Struct {
			collectStructKeys(f.Type, key+".", out)
		}
	}
}

func collectNodeKeys(n *yaml.Node, prefix string, out map[string]bool) {
	if n.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		key := prefix + n.Content[i].Value
		out[key] = true
		collectNodeKeys(n.Content[i+1], key+".", out)
	}
}

func TestUnknownKey(t *testing.T) {
	tests := []struct {
		name, in string
		key      string
		line     int
		msg      string
	}{
		{"top level", minimal + "colour: blue\n", "colour", 12, "unknown key"},
		{"nested", minimal + "  max_file_sise: 1GiB\n", "limits.max_file_sise", 12, `did you mean "max_file_size"?`},
		{"deep", "https:\n  tls:\n    cert: x\n", "https.tls.cert", 3, "unknown key"},
		{"flow", "https: {tls: {cert_file: '', key: ''}}\n", "https.tls.key", 1, `did you mean "key_file"?`},
		{"typo top", "data_dri: /x\n", "data_dri", 1, `did you mean "data_dir"?`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			p := onlyProblem(t, err)
			if p.Key != tt.key || p.Line != tt.line || !strings.Contains(p.Msg, tt.msg) {
				t.Errorf("got %+v, want key %s line %d msg ~%q", p, tt.key, tt.line, tt.msg)
			}
			if !strings.Contains(err.Error(), "config: "+tt.key+": unknown key") {
				t.Errorf("Error() = %q does not name the key", err)
			}
		})
	}
}

// TestSeveralProblems: one run names every bad key, decoding and validation
// problems alike, each with its line.
func TestSeveralProblems(t *testing.T) {
	in := `data_dir: /var/lib/mftd
https:
  listen: 127.0.0.1:99999
  cors_origins: ["*", "https://ok.example.org", "https://bad.example.org/", 7]
  max_header_bytes: 1KiB
storage:
  backend: ftp
retention:
  arrivals: 30
  incomplete_uploads: -1h
limits:
  max_file_size: 1.5B
  buffer_size: 1 mb
  buffers: many
  checkpoint_bytes: 10KiB
auth:
  session_ttl: 1000h
scanner:
  workers: 0
log:
  level: verbose
  format: {json: true}
`
	_, err := Parse([]byte(in))
	e := asError(t, err)
	want := map[string]int{
		"https.listen":                 3,
		"https.cors_origins[2]":        4,
		"https.max_header_bytes":       5,
		"storage.backend":              7,
		"retention.arrivals":           9,
		"retention.incomplete_uploads": 10,
		"limits.max_file_size":         12,
		"limits.buffer_size":           13,
		"limits.buffers":               14,
		"limits.checkpoint_bytes":      15,
		"auth.session_ttl":             17,
		"scanner.workers":              19,
		"log.level":                    21,
		"log.format":                   22,
	}
	got := map[string]int{}
	for _, p := range e.Problems {
		if _, dup := got[p.Key]; dup {
			t.Errorf("%s reported twice", p.Key)
		}
		got[p.Key] = p.Line
	}
	// cors_origins[3] is 7, which YAML decodes into a string "7": it is
	// reported by validation as not an origin.
	want["https.cors_origins[3]"] = 4
	if !reflect.DeepEqual(got, want) {
		t.Errorf("problems by key and line:\n got %v\nwant %v\nerror:\n%v", got, want, err)
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != len(want) {
		t.Errorf("Error() has %d lines, want %d:\n%v", len(lines), len(want), err)
	}
	for _, l := range lines {
		if !strings.HasPrefix(l, "config: ") {
			t.Errorf("line %q does not start with config:", l)
		}
	}
	for i := 1; i < len(e.Problems); i++ {
		if e.Problems[i].Line < e.Problems[i-1].Line {
			t.Errorf("problems not in file order: %v", err)
		}
	}
}

func TestTypeErrors(t *testing.T) {
	tests := []struct {
		name, in, key, msg string
	}{
		{"string for int", "scanner: {workers: two}\n", "scanner.workers", `expected an integer, got a string "two"`},
		{"long value", "scanner: {workers: twotwotwotwo}\n", "scanner.workers", "expected an integer"},
		{"list for string", "data_dir: [a]\n", "data_dir", "expected a string, got a list"},
		{"scalar for section", "limits: 5\n", "limits", "expected a mapping of keys"},
		{"map for list", "https: {cors_origins: {a: b}}\n", "https.cors_origins", "expected a list of strings"},
		{"map for size", "limits: {buffer_size: {a: 1}}\n", "limits.buffer_size", "expected a size"},
		{"twice", "log: {level: info, level: debug}\n", "log.level", "more than once"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			p := onlyProblem(t, err)
			if p.Key != tt.key || p.Line != 1 || !strings.Contains(p.Msg, tt.msg) {
				t.Errorf("got %+v, want key %s line 1 msg ~%q", p, tt.key, tt.msg)
			}
		})
	}
}

func TestTLSFiles(t *testing.T) {
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	for _, f := range []string{cert, key} {
		if err := os.WriteFile(f, []byte("pem"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	missing := filepath.Join(dir, "missing.pem")
	tests := []struct {
		name       string
		cert, key  string
		wantKeys   []string
		wantSubstr string
	}{
		{"both empty", "", "", nil, ""},
		{"both set", cert, key, nil, ""},
		{"only cert", cert, "", []string{"https.tls.key_file"}, "must be set"},
		{"only key", "", key, []string{"https.tls.cert_file"}, "must be set"},
		{"missing key", cert, missing, []string{"https.tls.key_file"}, "no such file"},
		{"both unreadable", dir, missing, []string{"https.tls.cert_file", "https.tls.key_file"}, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := "https:\n  tls:\n    cert_file: '" + tt.cert + "'\n    key_file: '" + tt.key + "'\n"
			c, err := Parse([]byte(in))
			if tt.wantKeys == nil {
				if err != nil {
					t.Fatalf("Parse: %v", err)
				}
				if c.HTTPS.TLS.CertFile != tt.cert || c.HTTPS.TLS.KeyFile != tt.key {
					t.Errorf("TLS = %+v", c.HTTPS.TLS)
				}
				return
			}
			if got := problemKeys(asError(t, err)); !reflect.DeepEqual(got, tt.wantKeys) {
				t.Errorf("problem keys = %q, want %q", got, tt.wantKeys)
			}
			if !strings.Contains(err.Error(), tt.wantSubstr) {
				t.Errorf("error %q does not contain %q", err, tt.wantSubstr)
			}
		})
	}
}

func TestWholeFileErrors(t *testing.T) {
	tests := []struct {
		name, in string
		line     int
		msg      string
	}{
		{"two documents", minimal + "---\ndata_dir: /x\n", 13, "second YAML document"},
		{"trailing separator", minimal + "---\n", 0, "second YAML document"},
		{"empty", "", 0, "empty"},
		{"only comments", "# nothing\n", 0, "empty"},
		{"scalar", "hello\n", 1, "must be a mapping"},
		{"list", "- a\n", 1, "must be a mapping"},
		{"null document", "---\n", 0, "must be a mapping"},
		{"syntax", "data_dir: /x\n  https: : :\n", 2, ""},
		{"tab", "https:\n\tlisten: x\n", 2, ""},
		{"syntax in second document", minimal + "---\n[\n", 0, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			p := onlyProblem(t, err)
			if p.Key != "" || (tt.line != 0 && p.Line != tt.line) || !strings.Contains(p.Msg, tt.msg) {
				t.Errorf("got %+v, want line %d msg ~%q", p, tt.line, tt.msg)
			}
		})
	}
}

// egressWith returns a change that sets a valid egress section (one portal,
// one share) and then applies f to it.
func egressWith(f func(*Egress)) func(*Config) {
	return func(c *Config) {
		c.Egress.StagingDir = "/srv/egress"
		c.Egress.Portals = []EgressPortal{{Name: "ukds", URL: "https://upload.portal.example/api/files", Method: "put"}}
		c.Egress.Shares = map[string]EgressShare{"genomics": {Portals: []string{"ukds"}, RequireApproval: true, Checks: []string{"malware", "identifiers"}}}
		f(&c.Egress)
	}
}

// TestValidate changes one key of a valid config at a time.
func TestValidate(t *testing.T) {
	tests := []struct {
		name   string
		change func(*Config)
		key    string // "" means valid
	}{
		{"default", func(*Config) {}, ""},
		{"egress", egressWith(func(*Egress) {}), ""},
		{"egress tus portal on a port, private", egressWith(func(e *Egress) {
			e.Portals[0].URL, e.Portals[0].Method, e.Portals[0].AllowPrivate = "https://localhost:8443/files/", "tus", true
		}), ""},
		{"egress http portal", egressWith(func(e *Egress) { e.Portals[0].URL = "http://upload.portal.example/" }), "egress.portals.ukds"},
		{"egress portal userinfo", egressWith(func(e *Egress) { e.Portals[0].URL = "https://user:pw@upload.portal.example/" }), "egress.portals.ukds"},
		{"egress portal ip literal", egressWith(func(e *Egress) { e.Portals[0].URL = "https://127.0.0.1/" }), "egress.portals.ukds"},
		{"egress portal decimal ip", egressWith(func(e *Egress) { e.Portals[0].URL = "https://2130706433/" }), "egress.portals.ukds"},
		{"egress portal ipv6 literal", egressWith(func(e *Egress) { e.Portals[0].URL = "https://[::1]/" }), "egress.portals.ukds"},
		{"egress portal wildcard", egressWith(func(e *Egress) { e.Portals[0].URL = "https://*.portal.example/" }), "egress.portals.ukds"},
		{"egress portal method", egressWith(func(e *Egress) { e.Portals[0].Method = "ftp" }), "egress.portals.ukds"},
		{"egress portal twice", egressWith(func(e *Egress) { e.Portals = append(e.Portals, e.Portals[0]) }), "egress.portals.ukds"},
		{"egress portal no name", egressWith(func(e *Egress) { e.Portals[0].Name = ""; e.Shares = map[string]EgressShare{} }), "egress.portals[0]"},
		{"egress portal ca file missing", egressWith(func(e *Egress) { e.Portals[0].CAFile = "/nonexistent/ca.pem" }), "egress.portals.ukds.ca_file"},
		{"egress portal token file missing", egressWith(func(e *Egress) { e.Portals[0].TokenFile = "/nonexistent/token" }), "egress.portals.ukds.token_file"},
		{"egress unknown portal", egressWith(func(e *Egress) {
			e.Shares["genomics"] = EgressShare{Portals: []string{"ukds", "nope"}, Checks: []string{"malware"}}
		}), "egress.shares.genomics.portals"},
		{"egress share without portals", egressWith(func(e *Egress) { e.Shares["genomics"] = EgressShare{Checks: []string{}} }), "egress.shares.genomics.portals"},
		{"egress bad share name", egressWith(func(e *Egress) { e.Shares["Gen omics"] = e.Shares["genomics"] }), "egress.shares.Gen omics"},
		{"egress unknown check", egressWith(func(e *Egress) {
			e.Shares["genomics"] = EgressShare{Portals: []string{"ukds"}, Checks: []string{"malware", "vibes"}}
		}), "egress.shares.genomics.checks"},
		{"egress no staging dir", egressWith(func(e *Egress) { e.StagingDir = "" }), "egress.staging_dir"},
		{"egress settle 0", egressWith(func(e *Egress) { e.Settle = 0 }), "egress.settle"},
		{"egress workers 0", egressWith(func(e *Egress) { e.Workers = 0 }), "egress.workers"},
		{"egress retries 0", egressWith(func(e *Egress) { e.Retries = 0 }), "egress.retries"},
		{"listen all addresses", func(c *Config) { c.HTTPS.Listen = ":443" }, ""},
		{"listen ipv6", func(c *Config) { c.HTTPS.Listen = "[::1]:8443" }, ""},
		{"listen host name", func(c *Config) { c.HTTPS.Listen = "mft.example.org:8443" }, ""},
		{"listen no port", func(c *Config) { c.HTTPS.Listen = "127.0.0.1" }, "https.listen"},
		{"listen port 0", func(c *Config) { c.HTTPS.Listen = "127.0.0.1:0" }, "https.listen"},
		{"listen port too big", func(c *Config) { c.HTTPS.Listen = "127.0.0.1:65536" }, "https.listen"},
		{"listen named port", func(c *Config) { c.HTTPS.Listen = "127.0.0.1:https" }, "https.listen"},
		{"listen signed port", func(c *Config) { c.HTTPS.Listen = "127.0.0.1:+80" }, "https.listen"},
		{"listen bad host", func(c *Config) { c.HTTPS.Listen = "a b:80" }, "https.listen"},
		{"listen empty", func(c *Config) { c.HTTPS.Listen = "" }, "https.listen"},
		{"cors origins", func(c *Config) {
			c.HTTPS.CORSOrigins = []string{"*", "https://a.example.org", "http://localhost:3000", "https://[::1]:8443", "http://10.0.0.1"}
		}, ""},
		{"cors none", func(c *Config) { c.HTTPS.CORSOrigins = []string{} }, ""},
		{"cors path", func(c *Config) { c.HTTPS.CORSOrigins = []string{"https://a.example.org/app"} }, "https.cors_origins[0]"},
		{"cors trailing slash", func(c *Config) { c.HTTPS.CORSOrigins = []string{"*", "https://a.example.org/"} }, "https.cors_origins[1]"},
		{"cors query", func(c *Config) { c.HTTPS.CORSOrigins = []string{"https://a.example.org?x"} }, "https.cors_origins[0]"},
		{"cors scheme", func(c *Config) { c.HTTPS.CORSOrigins = []string{"ftp://a.example.org"} }, "https.cors_origins[0]"},
		{"cors no scheme", func(c *Config) { c.HTTPS.CORSOrigins = []string{"a.example.org"} }, "https.cors_origins[0]"},
		{"cors userinfo", func(c *Config) { c.HTTPS.CORSOrigins = []string{"https://u@a.example.org"} }, "https.cors_origins[0]"},
		{"cors empty port", func(c *Config) { c.HTTPS.CORSOrigins = []string{"https://a.example.org:"} }, "https.cors_origins[0]"},
		{"cors bad port", func(c *Config) { c.HTTPS.CORSOrigins = []string{"https://a.example.org:70000"} }, "https.cors_origins[0]"},
		{"cors upper case", func(c *Config) { c.HTTPS.CORSOrigins = []string{"https://A.example.org"} }, "https.cors_origins[0]"},
		{"cors empty", func(c *Config) { c.HTTPS.CORSOrigins = []string{""} }, "https.cors_origins[0]"},
		{"cors bad host", func(c *Config) { c.HTTPS.CORSOrigins = []string{"https://a_b.example.org"} }, "https.cors_origins[0]"},
		{"read header timeout 0", func(c *Config) { c.HTTPS.ReadHeaderTimeout = 0 }, "https.read_header_timeout"},
		{"idle timeout 0", func(c *Config) { c.HTTPS.IdleTimeout = 0 }, "https.idle_timeout"},
		{"shutdown timeout 0", func(c *Config) { c.HTTPS.ShutdownTimeout = 0 }, "https.shutdown_timeout"},
		{"header bytes low", func(c *Config) { c.HTTPS.MaxHeaderBytes = 4*KiB - 1 }, "https.max_header_bytes"},
		{"header bytes high", func(c *Config) { c.HTTPS.MaxHeaderBytes = MiB + 1 }, "https.max_header_bytes"},
		{"header bytes edges", func(c *Config) { c.HTTPS.MaxHeaderBytes = 4 * KiB }, ""},
		{"storage s3 without settings", func(c *Config) {
			c.Storage.Backend = "s3"
			c.Storage.S3 = StorageS3{Endpoint: "h:1", Bucket: "b", AccessKey: "k", PartSize: 16 * MiB, Concurrency: 2, Memory: 256 * MiB}
		}, "storage.s3.secret_key_file"},
		{"driver postgres", func(c *Config) { c.Database.Driver = "postgres" }, "database.driver"},
		{"database path", func(c *Config) { c.Database.Path = "" }, "database.path"},
		{"data dir", func(c *Config) { c.DataDir = "" }, "data_dir"},
		{"arrivals 1h", func(c *Config) { c.Retention.Arrivals = Duration(time.Hour) }, ""},
		{"arrivals zero", func(c *Config) { c.Retention.Arrivals = 0 }, "retention.arrivals"},
		{"quarantine zero", func(c *Config) { c.Retention.Quarantine = 0 }, "retention.quarantine"},
		{"quota negative", func(c *Config) { c.Quotas.UserArrivalsFiles = -1 }, "quotas.user_arrivals_files"},
		{"quota user name", func(c *Config) { c.Quotas.Users = map[string]UserQuota{"Alice": {}} }, "quotas.users.Alice"},
		{"quota share name", func(c *Config) { c.Quotas.Shares = map[string]ShareQuota{"../x": {}} }, "quotas.shares.../x"},
		{"incomplete 1m", func(c *Config) { c.Retention.IncompleteUploads = Duration(time.Minute) }, ""},
		{"incomplete short", func(c *Config) { c.Retention.IncompleteUploads = Duration(59 * time.Second) }, "retention.incomplete_uploads"},
		{"sweep 0", func(c *Config) { c.Retention.SweepInterval = 0 }, "retention.sweep_interval"},
		{"sweep 1s", func(c *Config) { c.Retention.SweepInterval = Duration(time.Second) }, ""},
		{"max file size 0", func(c *Config) { c.Limits.MaxFileSize = 0 }, "limits.max_file_size"},
		{"max file size negative", func(c *Config) { c.Limits.MaxFileSize = -1 }, "limits.max_file_size"},
		{"checkpoint 1MiB", func(c *Config) { c.Limits.CheckpointBytes = MiB }, ""},
		{"checkpoint low", func(c *Config) { c.Limits.CheckpointBytes = MiB - 1 }, "limits.checkpoint_bytes"},
		{"buffer low", func(c *Config) { c.Limits.BufferSize = 64*KiB - 1 }, "limits.buffer_size"},
		{"buffer high", func(c *Config) { c.Limits.BufferSize = 16*MiB + 1 }, "limits.buffer_size"},
		{"buffer edges", func(c *Config) { c.Limits.BufferSize = 16 * MiB }, ""},
		{"buffers 1", func(c *Config) { c.Limits.Buffers = 1 }, "limits.buffers"},
		{"buffers 65", func(c *Config) { c.Limits.Buffers = 65 }, "limits.buffers"},
		{"buffers edges", func(c *Config) { c.Limits.Buffers = 64 }, ""},
		{"metadata low", func(c *Config) { c.Limits.MaxMetadataBytes = 255 }, "limits.max_metadata_bytes"},
		{"metadata high", func(c *Config) { c.Limits.MaxMetadataBytes = 64*KiB + 1 }, "limits.max_metadata_bytes"},
		{"session short", func(c *Config) { c.Auth.SessionTTL = Duration(time.Second) }, "auth.session_ttl"},
		{"session long", func(c *Config) { c.Auth.SessionTTL = Duration(721 * time.Hour) }, "auth.session_ttl"},
		{"session edges", func(c *Config) { c.Auth.SessionTTL = Duration(720 * time.Hour) }, ""},
		{"idle longer than ttl", func(c *Config) { c.Auth.SessionIdle = Duration(13 * time.Hour) }, "auth.session_idle"},
		{"lockout threshold zero", func(c *Config) { c.Auth.Lockout.Threshold = 0 }, "auth.lockout.threshold"},
		{"lockout window zero", func(c *Config) { c.Auth.Lockout.Window = 0 }, "auth.lockout.window"},
		{"notify both", func(c *Config) { c.Notify.Dir = "/tmp/x"; c.Notify.SMTP.Addr = "mail:25" }, "notify"},
		{"notify smtp without from", func(c *Config) { c.Notify.SMTP.Addr = "mail:25" }, "notify.smtp.from"},
		{"notify smtp ok", func(c *Config) { c.Notify.SMTP.Addr = "mail:25"; c.Notify.SMTP.From = "mftd@example.org" }, ""},
		{"admin on the public listener", func(c *Config) { c.Admin.Listen = c.HTTPS.Listen }, "admin.listen"},
		{"admin bad", func(c *Config) { c.Admin.Listen = "nope" }, "admin.listen"},
		{"admin ok", func(c *Config) { c.Admin.Listen = "127.0.0.1:9090" }, ""},
		{"sftp ok", func(c *Config) { c.SFTP.Listen = "127.0.0.1:2022" }, ""},
		{"sftp bad", func(c *Config) { c.SFTP.Listen = "2022" }, "sftp.listen"},
		{"sftp on the https listener", func(c *Config) { c.SFTP.Listen = c.HTTPS.Listen }, "sftp.listen"},
		{"sftp grace 0", func(c *Config) { c.SFTP.LoginGrace = 0 }, "sftp.login_grace"},
		{"sftp window small", func(c *Config) { c.SFTP.Window = 64 * KiB }, "sftp.window"},
		{"s3 without bucket", func(c *Config) {
			c.Storage.Backend, c.Storage.S3.Endpoint, c.Storage.S3.AccessKey, c.Storage.S3.SecretKey = "s3", "127.0.0.1:9000", "k", "s"
		}, "storage.s3.bucket"},
		{"s3 small parts", func(c *Config) {
			c.Storage.Backend, c.Storage.S3.Endpoint, c.Storage.S3.AccessKey, c.Storage.S3.SecretKey = "s3", "127.0.0.1:9000", "k", "s"
			c.Storage.S3.Bucket, c.Storage.S3.PartSize = "mftd", 1*MiB
		}, "storage.s3.part_size"},
		{"s3 ok", func(c *Config) {
			c.Storage.Backend, c.Storage.S3.Endpoint, c.Storage.S3.AccessKey, c.Storage.S3.SecretKey = "s3", "127.0.0.1:9000", "k", "s"
			c.Storage.S3.Bucket = "mftd"
		}, ""},
		{"s3 concurrency 0", func(c *Config) {
			c.Storage.Backend, c.Storage.S3.Endpoint, c.Storage.S3.AccessKey, c.Storage.S3.SecretKey = "s3", "127.0.0.1:9000", "k", "s"
			c.Storage.S3.Bucket, c.Storage.S3.Concurrency = "mftd", 0
		}, "storage.s3.concurrency"},
		{"s3 concurrency 17", func(c *Config) {
			c.Storage.Backend, c.Storage.S3.Endpoint, c.Storage.S3.AccessKey, c.Storage.S3.SecretKey = "s3", "127.0.0.1:9000", "k", "s"
			c.Storage.S3.Bucket, c.Storage.S3.Concurrency = "mftd", 17
		}, "storage.s3.concurrency"},
		{"s3 memory below a part", func(c *Config) {
			c.Storage.Backend, c.Storage.S3.Endpoint, c.Storage.S3.AccessKey, c.Storage.S3.SecretKey = "s3", "127.0.0.1:9000", "k", "s"
			c.Storage.S3.Bucket, c.Storage.S3.Memory = "mftd", 8*MiB
		}, "storage.s3.memory"},
		{"unknown backend", func(c *Config) { c.Storage.Backend = "ftp" }, "storage.backend"},
		{"issuer empty", func(c *Config) { c.Auth.TOTPIssuer = "" }, "auth.totp_issuer"},
		{"issuer colon", func(c *Config) { c.Auth.TOTPIssuer = "a:b" }, "auth.totp_issuer"},
		{"workers 0", func(c *Config) { c.Scanner.Workers = 0 }, "scanner.workers"},
		{"workers 65", func(c *Config) { c.Scanner.Workers = 65 }, "scanner.workers"},
		{"clamd address scheme", func(c *Config) { c.Scanner.Clamd.Address = "127.0.0.1:3310" }, "scanner.clamd.address"},
		{"clamd address http", func(c *Config) { c.Scanner.Clamd.Address = "http://127.0.0.1:3310" }, "scanner.clamd.address"},
		{"clamd timeout", func(c *Config) { c.Scanner.Clamd.Timeout = 0 }, "scanner.clamd.timeout"},
		{"clamd stream 5GiB", func(c *Config) { c.Scanner.Clamd.MaxStreamSize = 5 * GiB }, "scanner.clamd.max_stream_size"},
		{"deny unknown type", func(c *Config) { c.Scanner.DenyTypes = []string{"application/x-not-a-type"} }, "scanner.deny_types"},
		{"archive depth", func(c *Config) { c.Scanner.Archives.MaxDepth = 0 }, "scanner.archives.max_depth"},
		{"archive ratio", func(c *Config) { c.Scanner.Archives.MaxRatio = 1 }, "scanner.archives.max_ratio"},
		{"archive entries", func(c *Config) { c.Scanner.Archives.MaxEntries = 0 }, "scanner.archives.max_entries"},
		{"encrypted", func(c *Config) { c.Scanner.Archives.Encrypted = "allow" }, "scanner.archives.encrypted"},
		{"level", func(c *Config) { c.Log.Level = "trace" }, "log.level"},
		{"level case", func(c *Config) { c.Log.Level = "INFO" }, "log.level"},
		{"format", func(c *Config) { c.Log.Format = "text" }, "log.format"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.change(c)
			err := c.Validate()
			if tt.key == "" {
				if err != nil {
					t.Fatalf("Validate: %v", err)
				}
				return
			}
			p := onlyProblem(t, err)
			if p.Key != tt.key || p.Line != 0 {
				t.Errorf("got %+v, want key %s", p, tt.key)
			}
		})
	}
}

// TestMarshalRoundTrip: a config written back as YAML reads the same.
func TestMarshalRoundTrip(t *testing.T) {
	c := Default()
	c.HTTPS.CORSOrigins = []string{"https://a.example.org"}
	c.Limits.MaxFileSize = 3 * GB
	c.Retention.IncompleteUploads = Duration(90 * time.Minute)
	out, err := yaml.Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(out)
	if err != nil {
		t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
	}
	if !reflect.DeepEqual(back, c) {
		t.Errorf("round trip:\n%+v\nwant\n%+v", back, c)
	}
}

func TestLoadMissing(t *testing.T) {
	_, err := Load(filepath.Join(t.TempDir(), "nope.yaml"))
	if !errors.Is(err, os.ErrNotExist) || !strings.HasPrefix(err.Error(), "config: ") {
		t.Errorf("Load(missing) = %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, name := range []string{"dev.yaml", "mftd.example.yaml"} {
		data, err := os.ReadFile(filepath.Join(configsDir, name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
	}
	f.Add([]byte(minimal))
	f.Add([]byte("limits: {max_file_size: 1.5GiB, buffer_size: [x]}\nhttps: {cors_origins: ['https://a:1']}\n"))
	f.Add([]byte("a: &x {b: *x}\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || len(e.Problems) == 0 {
				t.Fatalf("Parse error %T %v is not an *Error with problems", err, err)
			}
			if n := strings.Count(err.Error(), "\n") + 1; n != len(e.Problems) {
				t.Fatalf("Error() has %d lines for %d problems:\n%v", n, len(e.Problems), err)
			}
			return
		}
		if err := c.Validate(); err != nil {
			t.Fatalf("Parse succeeded but Validate: %v", err)
		}
		out, err := yaml.Marshal(c)
		if err != nil {
			t.Fatalf("Marshal: %v", err)
		}
		back, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(c)): %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip:\n%+v\nwant\n%+v", back, c)
		}
	})
}

func mustParse(t *testing.T, in string) *Config {
	t.Helper()
	c, err := Parse([]byte(in))
	if err != nil {
		t.Fatalf("Parse(%q): %v", in, err)
	}
	return c
}

func asError(t *testing.T, err error) *Error {
	t.Helper()
	var e *Error
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an *Error", err, err)
	}
	return e
}

func onlyProblem(t *testing.T, err error) Problem {
	t.Helper()
	e := asError(t, err)
	if len(e.Problems) != 1 {
		t.Fatalf("want 1 problem, got %d:\n%v", len(e.Problems), err)
	}
	return e.Problems[0]
}

func problemKeys(e *Error) []string {
	var keys []string
	for _, p := range e.Problems {
		keys = append(keys, p.Key)
	}
	return keys
}

func wantProblems(t *testing.T, in string, keys ...string) {
	t.Helper()
	_, err := Parse([]byte(in))
	got := problemKeys(asError(t, err))
	for _, k := range keys {
		if !strings.Contains(strings.Join(got, " ")+" ", k+" ") {
			t.Errorf("Parse(%q): no problem for %s; got %v", in, k, err)
		}
	}
	if len(got) != len(keys) {
		t.Errorf("Parse(%q): %d problems, want %d:\n%v", in, len(got), len(keys), err)
	}
}

func checkErr(t *testing.T, err error, want string) {
	t.Helper()
	switch {
	case want == "" && err != nil:
		t.Fatalf("unexpected error: %v", err)
	case want != "" && err == nil:
		t.Fatalf("no error, want one containing %q", want)
	case want != "" && !strings.Contains(err.Error(), want):
		t.Fatalf("error %q does not contain %q", err, want)
	}
}

func TestStrangeKeyStaysOnOneLine(t *testing.T) {
	_, err := Parse([]byte("limits:\n  \"a\\nb.c\": 1\n"))
	p := onlyProblem(t, err)
	if p.Key != `limits."a\nb.c"` || strings.Contains(err.Error(), "\n") {
		t.Errorf("got key %q, error %q", p.Key, err)
	}
}

// With S3, the largest file is what part_size × 10,000 parts can hold, if
// that is less than limits.max_file_size.
func TestMaxFileSize(t *testing.T) {
	c := Default()
	if got := c.MaxFileSize(); got != int64(TiB) {
		t.Fatalf("local: MaxFileSize() = %d, want limits.max_file_size %d", got, TiB)
	}
	c.Storage.Backend = "s3"
	if got, want := c.MaxFileSize(), int64(16*MiB*S3MaxParts); got != want {
		t.Fatalf("s3 with 16MiB parts: MaxFileSize() = %d, want %d", got, want)
	}
	c.Storage.S3.PartSize = 200 * MiB
	if got := c.MaxFileSize(); got != int64(TiB) {
		t.Fatalf("s3 with 200MiB parts: MaxFileSize() = %d, want %d", got, TiB)
	}
}
