// Package metrics holds mftd's Prometheus metrics on a private registry,
// served only by AdminHandler on the operator's admin listener, never on the
// public one.
//
// Callers record events through small methods that take label values from
// fixed sets (the constants below); a value outside its set is counted as
// "other", so no caller can grow a metric's cardinality. Every method is a
// no-op on a nil *Metrics, so components run without metrics in unit tests.
package metrics

import (
	"net/http"
	"slices"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Label values. Each method documents which set it takes.
const (
	// Protocols that receive bytes.
	ProtoTUS  = "tus"
	ProtoSFTP = "sftp"

	// Why an upload failed.
	FailRejected    = "rejected"    // refused by policy, quota, limits or a hash mismatch
	FailQuarantined = "quarantined" // infected or unscannable
	FailTerminated  = "terminated"  // ended by the client (tus termination, SFTP abort)
	FailExpired     = "expired"     // left unfinished past its expiry

	// Scan verdicts.
	VerdictClean    = "clean"
	VerdictInfected = "infected" // quarantined: malware, a zip bomb, an archive held
	VerdictRefused  = "refused"  // rejected by policy: a denied content type, too large
	VerdictError    = "error"    // the scanner failed: not clean, retried

	// Egress outcomes.
	EgressSent     = "sent"     // delivered to a portal, receipt kept
	EgressRefused  = "refused"  // a request policy refused, or a push it no longer allowed
	EgressBlocked  = "blocked"  // a check found malware or identifiers
	EgressRejected = "rejected" // the reviewer said no
	EgressFailed   = "failed"   // the push failed

	// Doors users sign in through.
	DoorHTTPS = "https"
	DoorSFTP  = "sftp"

	// What a lockout locked.
	LockoutAccount = "account"
	LockoutAddress = "address"

	// What retention deleted.
	RetentionArrivals   = "arrivals"
	RetentionUploads    = "uploads" // abandoned partial uploads
	RetentionQuarantine = "quarantine"
	RetentionEgress     = "egress"

	// Other replaces any value outside a method's set.
	Other = "other"
)

var (
	protos     = []string{ProtoTUS, ProtoSFTP}
	failures   = []string{FailRejected, FailQuarantined, FailTerminated, FailExpired}
	verdicts   = []string{VerdictClean, VerdictInfected, VerdictRefused, VerdictError}
	outcomes   = []string{EgressSent, EgressRefused, EgressBlocked, EgressRejected, EgressFailed}
	doors      = []string{DoorHTTPS, DoorSFTP}
	lockouts   = []string{LockoutAccount, LockoutAddress}
	retentions = []string{RetentionArrivals, RetentionUploads, RetentionQuarantine, RetentionEgress}
)

// Metrics is mftd's set of metrics, registered on its own registry (never
// Prometheus's global default). A nil *Metrics records nothing.
type Metrics struct {
	reg *prometheus.Registry

	receivedBytes    *prometheus.CounterVec
	uploadsActive    prometheus.Gauge
	uploadsCompleted prometheus.Counter
	uploadsFailed    *prometheus.CounterVec
	scanVerdicts     *prometheus.CounterVec
	egress           *prometheus.CounterVec
	egressBytes      prometheus.Counter
	authFailures     *prometheus.CounterVec
	lockouts         *prometheus.CounterVec
	retention        *prometheus.CounterVec
	scannerUp        prometheus.Gauge
	scanWaiting      prometheus.Gauge
}

// New returns a Metrics with every metric, and the Go runtime and process
// collectors, registered on a new private registry. Every known label value
// starts at zero, so rates and alerts see a series from the first scrape.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	f := func(name, help string, label string, values []string) *prometheus.CounterVec {
		v := prometheus.NewCounterVec(prometheus.CounterOpts{Namespace: "mftd", Name: name, Help: help}, []string{label})
		for _, val := range values {
			v.WithLabelValues(val)
		}
		reg.MustRegister(v)
		return v
	}
	m := &Metrics{
		reg:           reg,
		receivedBytes: f("received_bytes_total", "Bytes of uploads received, by protocol.", "proto", protos),
		uploadsActive: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "mftd", Name: "uploads_active", Help: "Uploads receiving bytes now.",
		}),
		uploadsCompleted: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mftd", Name: "uploads_completed_total", Help: "Uploads scanned clean and published to Arrivals.",
		}),
		uploadsFailed: f("uploads_failed_total", "Uploads that did not reach Arrivals, by reason.", "reason", failures),
		scanVerdicts:  f("scan_verdicts_total", "Scanner verdicts, by verdict.", "verdict", verdicts),
		egress:        f("egress_total", "Egress items finished, by outcome.", "outcome", outcomes),
		egressBytes: prometheus.NewCounter(prometheus.CounterOpts{
			Namespace: "mftd", Name: "egress_sent_bytes_total", Help: "Bytes of files sent to portals (counted when a push succeeds).",
		}),
		authFailures: f("auth_failures_total", "Failed sign-in attempts, by door.", "door", doors),
		lockouts:     f("auth_lockouts_total", "Lockouts after repeated sign-in failures, by what was locked.", "kind", lockouts),
		retention:    f("retention_deletions_total", "Objects deleted by retention, by what they were.", "what", retentions),
		scannerUp: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "mftd", Name: "scanner_up",
			Help: "1 when the malware scanner (clamd) answered its last check, 0 when it did not; 1 without clamd.",
		}),
		scanWaiting: prometheus.NewGauge(prometheus.GaugeOpts{
			Namespace: "mftd", Name: "scan_waiting",
			Help: "Completed uploads whose check failed (scanner unreachable or erring) and waits to be retried.",
		}),
	}
	m.scannerUp.Set(1)
	reg.MustRegister(m.uploadsActive, m.uploadsCompleted, m.egressBytes, m.scannerUp, m.scanWaiting,
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the registry in the Prometheus exposition formats. A nil
// *Metrics serves 404.
func (m *Metrics) Handler() http.Handler {
	if m == nil {
		return http.NotFoundHandler()
	}
	return promhttp.InstrumentMetricHandler(m.reg, promhttp.HandlerFor(m.reg, promhttp.HandlerOpts{}))
}

// AdminHandler is the admin listener's handler: GET (and HEAD) /metrics, and
// nothing else (404; 405 for another method on /metrics).
func AdminHandler(m *Metrics) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", m.Handler())
	return mux
}

// ReceivedBytes counts n bytes received by proto (ProtoTUS, ProtoSFTP).
// n <= 0 counts nothing.
func (m *Metrics) ReceivedBytes(proto string, n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.receivedBytes.WithLabelValues(label(proto, protos)).Add(float64(n))
}

// UploadStarted counts an upload as active; pair every call with UploadEnded.
func (m *Metrics) UploadStarted() {
	if m == nil {
		return
	}
	m.uploadsActive.Inc()
}

// UploadEnded counts an upload as no longer active.
func (m *Metrics) UploadEnded() {
	if m == nil {
		return
	}
	m.uploadsActive.Dec()
}

// UploadCompleted counts an upload published to Arrivals.
func (m *Metrics) UploadCompleted() {
	if m == nil {
		return
	}
	m.uploadsCompleted.Inc()
}

// UploadFailed counts an upload that will not reach Arrivals, by reason
// (FailRejected, FailQuarantined, FailTerminated, FailExpired).
func (m *Metrics) UploadFailed(reason string) {
	if m == nil {
		return
	}
	m.uploadsFailed.WithLabelValues(label(reason, failures)).Inc()
}

// Verdict counts one scan result (VerdictClean, VerdictInfected,
// VerdictError).
func (m *Metrics) Verdict(verdict string) {
	if m == nil {
		return
	}
	m.scanVerdicts.WithLabelValues(label(verdict, verdicts)).Inc()
}

// ScannerUp records whether the malware scanner answers.
func (m *Metrics) ScannerUp(up bool) {
	if m == nil {
		return
	}
	if up {
		m.scannerUp.Set(1)
	} else {
		m.scannerUp.Set(0)
	}
}

// ScanWaiting records how many completed uploads wait for a retry of their
// check.
func (m *Metrics) ScanWaiting(n int) {
	if m == nil {
		return
	}
	m.scanWaiting.Set(float64(n))
}

// Egress counts one egress outcome (EgressSent, EgressRefused,
// EgressBlocked, EgressRejected, EgressFailed).
func (m *Metrics) Egress(outcome string) {
	if m == nil {
		return
	}
	m.egress.WithLabelValues(label(outcome, outcomes)).Inc()
}

// EgressSentBytes counts the n bytes of a file a push delivered.
func (m *Metrics) EgressSentBytes(n int64) {
	if m == nil || n <= 0 {
		return
	}
	m.egressBytes.Add(float64(n))
}

// AuthFailure counts one failed sign-in attempt at door (DoorHTTPS, DoorSFTP).
func (m *Metrics) AuthFailure(door string) {
	if m == nil {
		return
	}
	m.authFailures.WithLabelValues(label(door, doors)).Inc()
}

// Lockout counts one lockout of kind (LockoutAccount, LockoutAddress).
func (m *Metrics) Lockout(kind string) {
	if m == nil {
		return
	}
	m.lockouts.WithLabelValues(label(kind, lockouts)).Inc()
}

// RetentionDeletion counts one object deleted by retention (RetentionArrivals,
// RetentionUploads, RetentionQuarantine, RetentionEgress).
func (m *Metrics) RetentionDeletion(what string) {
	if m == nil {
		return
	}
	m.retention.WithLabelValues(label(what, retentions)).Inc()
}

// label returns v if it is one of allowed, else Other.
func label(v string, allowed []string) string {
	if slices.Contains(allowed, v) {
		return v
	}
	return Other
}
