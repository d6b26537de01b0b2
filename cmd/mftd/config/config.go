// Package config is mftd's one YAML configuration file: strict decoding
// (unknown keys are errors), defaults for every key that may be left out,
// and validation that reports every problem by its key.
//
// Load or Parse a file; configs/mftd.example.yaml documents every key.
// Relative paths in the file (data_dir, database.path, the TLS files) are
// relative to the working directory of the process, not to the file:
// `make run` runs from the repository root with data_dir ./var.
package config

import "time"

// Config is the root of the configuration file.
type Config struct {
	// DataDir holds local objects, the state database and generated keys.
	// Default /var/lib/mftd; a relative path is relative to the working
	// directory.
	DataDir   string    `yaml:"data_dir"`
	HTTPS     HTTPS     `yaml:"https"`
	Storage   Storage   `yaml:"storage"`
	Database  Database  `yaml:"database"`
	Retention Retention `yaml:"retention"`
	Limits    Limits    `yaml:"limits"`
	Quotas    Quotas    `yaml:"quotas"`
	Auth      Auth      `yaml:"auth"`
	Notify    Notify    `yaml:"notify"`
	Scanner   Scanner   `yaml:"scanner"`
	SFTP      SFTP      `yaml:"sftp"`
	Egress    Egress    `yaml:"egress"`
	Admin     Admin     `yaml:"admin"`
	Log       Log       `yaml:"log"`
}

// SFTP is the SFTP door (SSH, sftp subsystem only).
type SFTP struct {
	Listen      string   `yaml:"listen"`        // host:port; empty: SFTP off
	HostKeyFile string   `yaml:"host_key_file"` // default <data_dir>/keys/ssh_host_ed25519_key
	LoginGrace  Duration `yaml:"login_grace"`   // default 30s
	Window      Size     `yaml:"window"`        // out-of-order bytes buffered per open file; default 4MiB
}

// Egress is the outbound door: files staged by members with the outbound
// right, checked, and pushed only to the portals allowlisted for their share.
// Everything but staging_dir applies live on reload.
type Egress struct {
	// StagingDir holds <share>/<user>/<path>; empty: egress off.
	StagingDir string   `yaml:"staging_dir"`
	Settle     Duration `yaml:"settle"`  // a file is ready once unchanged this long; default 5s
	Workers    int      `yaml:"workers"` // items checked or pushed at once; default 2
	Retries    int      `yaml:"retries"` // attempts of one push (network errors, 5xx); default 5
	// RemoveSent deletes the staged file once it is sent; default true.
	RemoveSent bool           `yaml:"remove_sent"`
	Portals    []EgressPortal `yaml:"portals"`
	// Shares: egress per share name; a share not listed has no egress.
	Shares map[string]EgressShare `yaml:"shares"`
}

// EgressPortal is one allowlisted destination.
type EgressPortal struct {
	Name      string `yaml:"name"`
	URL       string `yaml:"url"`        // https://host[:port]/path; a host name, never an IP literal
	Method    string `yaml:"method"`     // put (raw body) | post (multipart form) | tus
	CAFile    string `yaml:"ca_file"`    // extra CA (PEM) for this portal; system roots otherwise
	TokenFile string `yaml:"token_file"` // bearer credential, read at each push; never logged
	// AllowPrivate lets the push connect to loopback and private
	// addresses: on-premises portals and tests only.
	AllowPrivate bool `yaml:"allow_private"`
}

// EgressShare is the egress of one share.
type EgressShare struct {
	Portals         []string `yaml:"portals"`          // portal names
	RequireApproval bool     `yaml:"require_approval"` // an IAO or IAA other than the requester approves each push
	// Checks run on every request: malware, identifiers. Default both;
	// "checks: []" runs none (config check warns).
	Checks []string `yaml:"checks"`
}

// HTTPS is the public listener (tus at /files/, the JSON API at /api/v1/).
type HTTPS struct {
	Listen string `yaml:"listen"` // default 127.0.0.1:8443
	TLS    TLS    `yaml:"tls"`
	// CORSOrigins may call the API from a browser on another origin.
	// Default ["*"]: the API authenticates with a bearer header, never a
	// cookie, so a foreign page gains nothing a script could not do anyway.
	// An empty list ([]) allows no other origin.
	CORSOrigins       []string `yaml:"cors_origins"`
	ReadHeaderTimeout Duration `yaml:"read_header_timeout"` // default 10s
	// IdleTimeout bounds a stalled client: a request body that yields no
	// byte for this long is cut, and keep-alive connections close.
	IdleTimeout    Duration `yaml:"idle_timeout"`     // default 60s
	MaxHeaderBytes Size     `yaml:"max_header_bytes"` // default 64KiB
	// ShutdownTimeout: how long SIGTERM waits for in-flight requests.
	ShutdownTimeout Duration `yaml:"shutdown_timeout"` // default 30s
}

// TLS: both empty means a self-signed certificate generated once into DataDir.
type TLS struct {
	CertFile string `yaml:"cert_file"`
	KeyFile  string `yaml:"key_file"`
}

// Storage selects the object backend.
type Storage struct {
	Backend string    `yaml:"backend"` // "local" (default): objects under <data_dir>/objects; or "s3"
	S3      StorageS3 `yaml:"s3"`
}

// StorageS3 is an S3-compatible object store (MinIO, Ceph RGW, AWS S3).
type StorageS3 struct {
	Endpoint      string `yaml:"endpoint"` // host:port
	Bucket        string `yaml:"bucket"`
	Region        string `yaml:"region"` // default us-east-1
	AccessKey     string `yaml:"access_key"`
	SecretKey     string `yaml:"secret_key"`      // or secret_key_file; never logged
	SecretKeyFile string `yaml:"secret_key_file"` // read at start
	UseTLS        bool   `yaml:"use_tls"`
	CAFile        string `yaml:"ca_file"`     // extra CA for the endpoint; system roots otherwise
	PartSize      Size   `yaml:"part_size"`   // default 16MiB; at least 5MiB (S3's minimum part)
	Concurrency   int    `yaml:"concurrency"` // parts of one upload sent at once; default 2
	Memory        Size   `yaml:"memory"`      // part buffers of all uploads together; default 256MiB
}

// S3MaxParts is the most parts an S3 multipart upload may have.
const S3MaxParts = 10000

// MaxFileSize is the largest file the daemon accepts: limits.max_file_size,
// or less if the S3 part size cannot hold that many bytes in S3MaxParts
// parts (Warnings says so).
func (c *Config) MaxFileSize() int64 {
	m := c.Limits.MaxFileSize.Int64()
	if c.Storage.Backend == "s3" {
		m = min(m, c.Storage.S3.PartSize.Int64()*S3MaxParts)
	}
	return m
}

// Database is the state database.
type Database struct {
	Driver string `yaml:"driver"` // "sqlite" (default)
	Path   string `yaml:"path"`   // default <data_dir>/mftd.db
}

// Retention says how long things are kept.
type Retention struct {
	Arrivals          Duration `yaml:"arrivals"`           // default 720h
	IncompleteUploads Duration `yaml:"incomplete_uploads"` // default 24h (tus Upload-Expires)
	SweepInterval     Duration `yaml:"sweep_interval"`     // default 1m
	Quarantine        Duration `yaml:"quarantine"`         // quarantined files are deleted this long after; default 720h
}

// Limits bound what clients may send and what each transfer may hold.
type Limits struct {
	MaxFileSize Size `yaml:"max_file_size"` // default 1TiB
	// CheckpointBytes: during a long PATCH the received bytes are made
	// durable, and the offset recorded, at least this often.
	CheckpointBytes Size `yaml:"checkpoint_bytes"` // default 64MiB
	// BufferSize and Buffers bound the memory of one transfer: Buffers
	// buffers of BufferSize bytes each.
	BufferSize Size `yaml:"buffer_size"` // default 1MiB
	Buffers    int  `yaml:"buffers"`     // default 4
	// MaxMetadataBytes bounds the tus Upload-Metadata header.
	MaxMetadataBytes Size `yaml:"max_metadata_bytes"` // default 4KiB
}

// Auth configures sign-in.
type Auth struct {
	SessionTTL  Duration `yaml:"session_ttl"`  // absolute session lifetime, default 12h
	SessionIdle Duration `yaml:"session_idle"` // a session unused this long ends, default 30m
	TOTPIssuer  string   `yaml:"totp_issuer"`  // default "mftd"
	// CodeKeyFile holds the secret that one-time codes (reset, emergency)
	// are hashed with. Empty: <data_dir>/keys/code.key, generated once.
	// Several nodes must share one file.
	CodeKeyFile string  `yaml:"code_key_file"`
	Lockout     Lockout `yaml:"lockout"`
}

// Lockout bounds password and code guessing, per account and per source
// address, across both doors and every node (counters live in the database).
type Lockout struct {
	Threshold        int      `yaml:"threshold"`         // failures that lock an account, default 5
	AddressThreshold int      `yaml:"address_threshold"` // failures from one address (any accounts), default 50
	Window           Duration `yaml:"window"`            // failures are counted over this span, default 15m
	Duration         Duration `yaml:"duration"`          // how long a lock lasts, default 15m
}

// Notify configures how users are sent codes (password reset, emergency
// access) and security notices. Exactly one of dir and smtp.addr, or neither
// (then those flows are unavailable and say so).
type Notify struct {
	Dir  string     `yaml:"dir"` // write each message as a file here (development, tests)
	SMTP NotifySMTP `yaml:"smtp"`
}

// NotifySMTP is a mail relay.
type NotifySMTP struct {
	Addr         string `yaml:"addr"` // host:port
	From         string `yaml:"from"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file"`
	StartTLS     bool   `yaml:"starttls"`
}

// Admin is the operator-only listener: Prometheus metrics. It must not be
// reachable from users' networks; nothing on it answers on the public one.
type Admin struct {
	Listen string `yaml:"listen"` // e.g. 127.0.0.1:9090; empty: no admin listener
}

// Quotas bound what users keep in Arrivals and what shares hold. Zero means
// no limit.
type Quotas struct {
	UserArrivalsBytes Size                  `yaml:"user_arrivals_bytes"`
	UserArrivalsFiles int64                 `yaml:"user_arrivals_files"`
	ShareBytes        Size                  `yaml:"share_bytes"`
	Users             map[string]UserQuota  `yaml:"users"`  // overrides by user name
	Shares            map[string]ShareQuota `yaml:"shares"` // overrides by share name
}

// UserQuota overrides the Arrivals quota of one user.
type UserQuota struct {
	ArrivalsBytes Size  `yaml:"arrivals_bytes"`
	ArrivalsFiles int64 `yaml:"arrivals_files"`
}

// ShareQuota overrides the quota of one share.
type ShareQuota struct {
	Bytes Size `yaml:"bytes"`
}

// Scanner configures the checks every completed upload passes before it
// reaches Arrivals: the built-in checks, then clamd when an address is set.
type Scanner struct {
	Workers   int      `yaml:"workers"`    // files checked at once, and clamd connections; 1-64, default 2
	Clamd     Clamd    `yaml:"clamd"`      // empty address: built-in checks only (a warning says so)
	DenyTypes []string `yaml:"deny_types"` // content types refused by magic bytes; default scanner.DefaultDenyTypes()
	Archives  Archives `yaml:"archives"`
}

// Clamd is the address and limits of ClamAV's clamd.
type Clamd struct {
	Address       string   `yaml:"address"`         // tcp://host:port or unix:///path
	Timeout       Duration `yaml:"timeout"`         // longest wait for clamd to take data or answer; default 5m
	MaxStreamSize Size     `yaml:"max_stream_size"` // clamd's StreamMaxLength; larger files are held; default 100MiB
}

// Archives bounds what the built-in checks unpack.
type Archives struct {
	MaxDepth    int     `yaml:"max_depth"`    // nesting levels; default 5
	MaxRatio    float64 `yaml:"max_ratio"`    // expanded / compressed bytes; default 100
	MaxExpanded Size    `yaml:"max_expanded"` // bytes expanded from one file; default 64GiB
	MaxEntries  int     `yaml:"max_entries"`  // entries in one file; default 100000
	Encrypted   string  `yaml:"encrypted"`    // hold (default) | refuse
}

// Log configures the zap logger.
type Log struct {
	Level  string `yaml:"level"`  // debug|info|warn|error, default info
	Format string `yaml:"format"` // json (default) | console
}

// Size is a byte count written as an integer or with a unit
// (B, KiB, MiB, GiB, TiB, PiB, and the decimal KB, MB, GB, TB); see ParseSize.
type Size int64

// Duration is a time.Duration written as Go writes it ("720h", "90s");
// see ParseDuration.
type Duration time.Duration
