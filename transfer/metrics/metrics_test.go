package metrics

import (
	"net/http"
	"net/http/httptest"
	"testing"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches GET /metrics through AdminHandler and parses the text format.
func scrape(t *testing.T, m *Metrics) map[string]*dto.MetricFamily {
	t.Helper()
	srv := httptest.NewServer(AdminHandler(m))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != http.StatusOK {
		t.Fatalf("GET /metrics = %d", res.StatusCode)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(res.Body)
	if err != nil {
		t.Fatalf("parse /metrics: %v", err)
	}
	return fams
}

// sample returns the value of family name's series whose only label has
// value lv ("" for an unlabelled metric), and whether it exists.
func sample(fams map[string]*dto.MetricFamily, name, lv string) (float64, bool) {
	for _, m := range fams[name].GetMetric() {
		labels := m.GetLabel()
		if (lv == "" && len(labels) == 0) || (len(labels) == 1 && labels[0].GetValue() == lv) {
			switch {
			case m.GetCounter() != nil:
				return m.GetCounter().GetValue(), true
			case m.GetGauge() != nil:
				return m.GetGauge().GetValue(), true
			}
		}
	}
	return 0, false
}

func TestScrape(t *testing.T) {
	m := New()
	m.ReceivedBytes("tus", 123)
	m.ReceivedBytes(ProtoSFTP, 10)
	m.ReceivedBytes(ProtoSFTP, 5)
	m.ReceivedBytes("tus", 0)  // nothing
	m.ReceivedBytes("tus", -4) // nothing (a counter never goes down)
	m.UploadStarted()
	m.UploadStarted()
	m.UploadEnded()
	m.UploadCompleted()
	m.UploadFailed(FailQuarantined)
	m.UploadFailed(FailExpired)
	m.UploadFailed(FailExpired)
	m.Verdict(VerdictInfected)
	m.Egress(EgressRefused)
	m.EgressSentBytes(42)
	m.EgressSentBytes(-1) // nothing
	m.AuthFailure("https")
	m.AuthFailure(DoorSFTP)
	m.AuthFailure(DoorSFTP)
	m.Lockout("account")
	m.RetentionDeletion(RetentionArrivals)

	fams := scrape(t, m)
	for _, tc := range []struct {
		name, label string
		want        float64
	}{
		{"mftd_received_bytes_total", "tus", 123},
		{"mftd_received_bytes_total", "sftp", 15},
		{"mftd_uploads_active", "", 1},
		{"mftd_uploads_completed_total", "", 1},
		{"mftd_uploads_failed_total", "quarantined", 1},
		{"mftd_uploads_failed_total", "expired", 2},
		{"mftd_uploads_failed_total", "rejected", 0}, // known values start at zero
		{"mftd_scan_verdicts_total", "infected", 1},
		{"mftd_scan_verdicts_total", "clean", 0},
		{"mftd_egress_total", "refused", 1},
		{"mftd_egress_total", "blocked", 0},
		{"mftd_egress_sent_bytes_total", "", 42},
		{"mftd_auth_failures_total", "https", 1},
		{"mftd_auth_failures_total", "sftp", 2},
		{"mftd_auth_lockouts_total", "account", 1},
		{"mftd_auth_lockouts_total", "address", 0},
		{"mftd_retention_deletions_total", "arrivals", 1},
	} {
		got, ok := sample(fams, tc.name, tc.label)
		if !ok {
			t.Errorf("%s{%q}: no sample", tc.name, tc.label)
			continue
		}
		if got != tc.want {
			t.Errorf("%s{%q} = %v, want %v", tc.name, tc.label, got, tc.want)
		}
	}
	// The Go runtime and process collectors are on the same registry.
	for _, name := range []string{"go_goroutines", "process_cpu_seconds_total"} {
		if fams[name] == nil {
			t.Errorf("%s missing", name)
		}
	}
}

// A value outside a method's fixed set is counted as "other": callers cannot
// grow a metric's cardinality.
func TestUnknownLabelValuesAreOther(t *testing.T) {
	m := New()
	m.ReceivedBytes("ftp", 7)
	m.ReceivedBytes("gopher", 1)
	m.AuthFailure("telnet")
	m.Lockout("planet")
	fams := scrape(t, m)
	if got, _ := sample(fams, "mftd_received_bytes_total", Other); got != 8 {
		t.Errorf(`mftd_received_bytes_total{proto="other"} = %v, want 8`, got)
	}
	for _, lv := range []string{"ftp", "gopher"} {
		if _, ok := sample(fams, "mftd_received_bytes_total", lv); ok {
			t.Errorf("a series with proto=%q exists", lv)
		}
	}
	if got, _ := sample(fams, "mftd_auth_failures_total", Other); got != 1 {
		t.Errorf(`mftd_auth_failures_total{door="other"} = %v, want 1`, got)
	}
	if got, _ := sample(fams, "mftd_auth_lockouts_total", Other); got != 1 {
		t.Errorf(`mftd_auth_lockouts_total{kind="other"} = %v, want 1`, got)
	}
}

// Two Metrics do not share state: no global registry.
func TestInstancesAreIndependent(t *testing.T) {
	a, b := New(), New()
	a.ReceivedBytes(ProtoTUS, 100)
	if got, _ := sample(scrape(t, b), "mftd_received_bytes_total", "tus"); got != 0 {
		t.Errorf("second instance sees %v bytes, want 0", got)
	}
}

func TestAdminHandlerServesOnlyMetrics(t *testing.T) {
	h := AdminHandler(New())
	for _, path := range []string{"/", "/api/v1/login", "/files/", "/healthz", "/metrics/", "/debug/pprof/"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != http.StatusNotFound {
			t.Errorf("GET %s = %d, want 404", path, rec.Code)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/metrics", nil))
	if rec.Code != http.StatusMethodNotAllowed {
		t.Errorf("POST /metrics = %d, want 405", rec.Code)
	}
	rec = httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("GET /metrics = %d, want 200", rec.Code)
	}
}

func TestNilMetricsIsANoOp(t *testing.T) {
	var m *Metrics
	m.ReceivedBytes("tus", 1)
	m.UploadStarted()
	m.UploadEnded()
	m.UploadCompleted()
	m.UploadFailed(FailRejected)
	m.Verdict(VerdictClean)
	m.Egress(EgressSent)
	m.AuthFailure("https")
	m.Lockout("address")
	m.RetentionDeletion("arrivals")

	rec := httptest.NewRecorder()
	AdminHandler(m).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusNotFound {
		t.Errorf("GET /metrics on nil Metrics = %d, want 404", rec.Code)
	}
}
