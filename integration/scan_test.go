package integration

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

// The daemon runs against a real clamd (integration/scripts/clamd.sh, started per test) whose
// signature database the setup writes: EICAR, and a test signature that only clamd knows, so a
// file carrying it proves that clamd, not the built-in checks, judged it.

// scannerYAML points the daemon at clamd, with clamd.sh's StreamMaxLength (1000M).
func scannerYAML(c *mftdtest.Clamd) string {
	return fmt.Sprintf("scanner:\n  workers: 2\n  clamd: {address: %q, timeout: 1m, max_stream_size: 1000MiB}\n", c.Addr())
}

// signed is a file that carries clamd's test signature in the middle of ordinary text.
func signed(n int) []byte {
	var b bytes.Buffer
	for i := 0; b.Len() < n/2; i++ {
		fmt.Fprintf(&b, "row %d, ordinary research data\n", i)
	}
	b.WriteString(mftdtest.ClamdTestSignature)
	for i := 0; b.Len() < n; i++ {
		fmt.Fprintf(&b, "row %d, more ordinary data\n", i)
	}
	return b.Bytes()
}

// tusUpload sends data as one new upload named name and returns its URL.
func tusUpload(t *testing.T, ctx context.Context, c *mftdtest.Client, name string, data []byte) string {
	t.Helper()
	url := create(t, ctx, c, int64(len(data)), map[string]string{"filename": name})
	patch(t, ctx, c, url, 0, bytes.NewReader(data), int64(len(data)), "")
	return url
}

// tusUploadFile sends the file at path as one new upload named name and returns its URL.
func tusUploadFile(t *testing.T, ctx context.Context, c *mftdtest.Client, path, name string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	url := create(t, ctx, c, st.Size(), map[string]string{"filename": name})
	patch(t, ctx, c, url, 0, f, st.Size(), "")
	return url
}

func wantQuarantined(t *testing.T, what string, info mftdtest.UploadInfo, reason string) {
	t.Helper()
	if info.Status != "quarantined" || !strings.Contains(info.Reason, reason) {
		t.Errorf("%s: status %q, reason %q; want quarantined by clamd with a reason naming %q", what, info.Status, info.Reason, reason)
	}
}

// EICAR and a file matching the test signature are quarantined by clamd through both doors, with
// clamd's signature name as the reason the user sees; a clean 200 MiB file becomes available.
func TestClamdVerdicts(t *testing.T) {
	t.Parallel()
	clamd := mftdtest.StartClamd(t)
	e := newSFTPEnv(t, mftdtest.Options{ScannerYAML: scannerYAML(clamd)})
	ctx := testCtx(t, 5*time.Minute)

	tusEICAR := tusUpload(t, ctx, e.api, "eicar.txt", []byte(eicar))
	tusSigned := tusUpload(t, ctx, e.api, "signed.csv", signed(1<<20))
	bigPath, bigSum := genFile(t, "big.bin", 200<<20, 77)
	tusBig := tusUploadFile(t, ctx, e.api, bigPath, "big.bin")

	dir := t.TempDir()
	for name, data := range map[string][]byte{"eicar.com": []byte(eicar), "signed.txt": signed(300 << 10)} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	r := e.ssh.Batch(ctx, time.Minute, []string{
		"put " + filepath.Join(dir, "eicar.com") + " /upload/eicar.com",
		"put " + filepath.Join(dir, "signed.txt") + " /upload/signed.txt",
	})
	if r.Code != 0 {
		t.Fatalf("sftp put: %s", transcript(r))
	}

	wantQuarantined(t, "tus EICAR", waitTerminal(t, ctx, e.api, tusEICAR, time.Minute), mftdtest.ClamdEICARName)
	wantQuarantined(t, "tus test signature", waitTerminal(t, ctx, e.api, tusSigned, time.Minute), mftdtest.ClamdTestSignatureName)
	wantQuarantined(t, "sftp EICAR", waitUpload(t, ctx, e, oneUpload(t, e.d, e.user.Name, "eicar.com").ID, time.Minute), mftdtest.ClamdEICARName)
	wantQuarantined(t, "sftp test signature", waitUpload(t, ctx, e, oneUpload(t, e.d, e.user.Name, "signed.txt").ID, time.Minute), mftdtest.ClamdTestSignatureName)
	wantAvailable(t, waitTerminal(t, ctx, e.api, tusBig, 2*time.Minute), 200<<20, bigSum)

	files := arrivals(t, ctx, e.api)
	if len(files) != 1 || files[0].Name != "big.bin" {
		t.Errorf("arrivals %+v, want only big.bin", files)
	}
	// Every quarantined object is under quarantine/, none under arrivals/.
	if n := dbCount(t, e.d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'upload.quarantine'`); n != 4 {
		t.Errorf("%d upload.quarantine audit records, want 4", n)
	}
	q, err := os.ReadDir(filepath.Join(e.d.DataDir, "objects", "quarantine"))
	if err != nil || len(q) != 4 {
		t.Errorf("quarantine folder: %d entries (%v), want 4", len(q), err)
	}
}

// With clamd stopped, completed uploads wait (processing, not in Arrivals), /readyz answers 503
// naming the scanner, the metrics say so; once clamd is back they are checked and released.
func TestClamdOutageHoldsFiles(t *testing.T) {
	t.Parallel()
	clamd := mftdtest.StartClamd(t)
	port, err := mftdtest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	admin := fmt.Sprintf("127.0.0.1:%d", port)
	d := startDaemon(t, mftdtest.Options{ScannerYAML: scannerYAML(clamd), AdminListen: admin})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 4*time.Minute)

	clamd.Stop()
	clean := readAllData(t, 4<<20, 5)
	urls := []string{
		tusUpload(t, ctx, alice, "first.bin", clean),
		tusUpload(t, ctx, alice, "eicar.txt", []byte(eicar)),
	}
	// Long enough for several attempts (the first retry is after 10 s at most, the health
	// check every 2 s).
	time.Sleep(6 * time.Second)
	for _, u := range urls {
		info, _, err := alice.Upload(ctx, mftdtest.UploadID(u))
		if err != nil {
			t.Fatal(err)
		}
		if info.Status != "processing" {
			t.Errorf("upload %s while clamd is down: status %q (reason %q), want processing", info.ID, info.Status, info.Reason)
		}
	}
	if files := arrivals(t, ctx, alice); len(files) != 0 {
		t.Errorf("arrivals while clamd is down: %+v, want none", files)
	}
	resp, err := d.HTTP().Get(d.URL("/readyz"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), `"scanner":"failing"`) {
		t.Errorf("/readyz while clamd is down: %d %s; want 503 with the scanner failing", resp.StatusCode, body)
	}
	metrics := scrapeText(t, "http://"+admin+"/metrics")
	for _, want := range []string{"mftd_scanner_up 0", "mftd_scan_waiting 2"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics while clamd is down lack %q", want)
		}
	}
	if len(logLines(t, d, "clamd does not answer")) == 0 {
		t.Errorf("the daemon's log does not say that clamd does not answer")
	}

	clamd.Start()
	wantAvailable(t, waitTerminal(t, ctx, alice, urls[0], time.Minute), int64(len(clean)), mftdtest.SHA256Hex(clean))
	wantQuarantined(t, "EICAR after the outage", waitTerminal(t, ctx, alice, urls[1], time.Minute), mftdtest.ClamdEICARName)
	metrics = scrapeText(t, "http://"+admin+"/metrics")
	for _, want := range []string{"mftd_scanner_up 1", "mftd_scan_waiting 0"} {
		if !strings.Contains(metrics, want+"\n") {
			t.Errorf("metrics after clamd is back lack %q", want)
		}
	}
}

// An administrator lists the quarantine, releases a file (a reason is required; audited) which
// then appears in its owner's Arrivals with its SHA-256, deletes another, and cannot release one
// whose bytes changed in quarantine.
func TestQuarantineReleaseAndDelete(t *testing.T) {
	t.Parallel()
	clamd := mftdtest.StartClamd(t)
	d := startDaemon(t, mftdtest.Options{ScannerYAML: scannerYAML(clamd)})
	_, alice := d.NewUser("alice")
	ctx := testCtx(t, 4*time.Minute)

	data := map[string][]byte{"keep.csv": signed(200 << 10), "drop.csv": signed(100 << 10), "tampered.csv": signed(50 << 10)}
	ids := map[string]string{}
	for name, b := range data {
		u := tusUpload(t, ctx, alice, name, b)
		wantQuarantined(t, name, waitTerminal(t, ctx, alice, u, time.Minute), mftdtest.ClamdTestSignatureName)
		ids[name] = mftdtest.UploadID(u)
	}

	list := d.Admin("", "quarantine", "list")
	if list.Code != 0 {
		t.Fatalf("quarantine list: exit %d: %s", list.Code, list.Stderr)
	}
	for name, id := range ids {
		if !strings.Contains(list.Stdout, id) || !strings.Contains(list.Stdout, name) {
			t.Errorf("quarantine list lacks %s (%s):\n%s", name, id, list.Stdout)
		}
	}

	if r := d.Admin("", "quarantine", "release", ids["keep.csv"]); r.Code == 0 || !strings.Contains(r.Stderr, "--reason") {
		t.Errorf("release without a reason: exit %d, stderr %q; want a refusal asking for --reason", r.Code, r.Stderr)
	}
	if r := d.Admin("", "quarantine", "release", "no-such-upload", "--reason", "x"); r.Code == 0 {
		t.Errorf("release of an unknown id succeeded: %s", r.Stdout)
	}
	r := d.Admin("", "quarantine", "release", ids["keep.csv"], "--reason", "false positive, checked by hand (ticket 42)")
	if r.Code != 0 {
		t.Fatalf("quarantine release: exit %d: %s", r.Code, r.Stderr)
	}
	info, err := alice.WaitTerminal(ctx, ids["keep.csv"], time.Minute, 100*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	wantAvailable(t, info, int64(len(data["keep.csv"])), mftdtest.SHA256Hex(data["keep.csv"]))
	if f := findArrival(t, arrivals(t, ctx, alice), "keep.csv"); f.SHA256 != mftdtest.SHA256Hex(data["keep.csv"]) {
		t.Errorf("released file in Arrivals with sha256 %s", f.SHA256)
	}
	if n := dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'quarantine.release' AND object = ? AND result LIKE '%ticket 42%'`, ids["keep.csv"]); n != 1 {
		t.Errorf("%d quarantine.release audit records with the reason, want 1", n)
	}

	if r := d.Admin("", "quarantine", "delete", ids["drop.csv"], "--reason", "confirmed malware"); r.Code != 0 {
		t.Fatalf("quarantine delete: exit %d: %s", r.Code, r.Stderr)
	}
	if _, err := os.Stat(filepath.Join(d.DataDir, "objects", "quarantine", ids["drop.csv"])); !os.IsNotExist(err) {
		t.Errorf("deleted quarantined object still there: %v", err)
	}
	if info, _, err := alice.Upload(ctx, ids["drop.csv"]); err != nil || info.Status != "deleted" {
		t.Errorf("deleted upload: %+v, %v; want status deleted", info, err)
	}
	if n := dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'quarantine.delete' AND object = ?`, ids["drop.csv"]); n != 1 {
		t.Errorf("%d quarantine.delete audit records, want 1", n)
	}

	// Bytes changed in quarantine: the verdict was about other bytes, so no release.
	qpath := filepath.Join(d.DataDir, "objects", "quarantine", ids["tampered.csv"])
	if err := os.WriteFile(qpath, []byte("something else entirely"), 0o600); err != nil {
		t.Fatal(err)
	}
	r = d.Admin("", "quarantine", "release", ids["tampered.csv"], "--reason", "looks fine")
	if r.Code == 0 || !strings.Contains(r.Stderr, "SHA-256") {
		t.Errorf("release of changed bytes: exit %d, stderr %q; want a refusal naming the SHA-256", r.Code, r.Stderr)
	}
	if info, _, err := alice.Upload(ctx, ids["tampered.csv"]); err != nil || info.Status != "quarantined" {
		t.Errorf("tampered upload after a refused release: %+v, %v; want still quarantined", info, err)
	}
	if n := dbCount(t, d.DBPath(), `SELECT COUNT(*) FROM audit WHERE action_name = 'quarantine.release' AND object = ? AND result LIKE 'refused%'`, ids["tampered.csv"]); n != 1 {
		t.Errorf("%d refused quarantine.release audit records, want 1", n)
	}
	for _, f := range arrivals(t, ctx, alice) {
		if f.Name != "keep.csv" {
			t.Errorf("unexpected file in Arrivals: %+v", f)
		}
	}
	if r := d.Admin("", "audit", "verify"); r.Code != 0 {
		t.Errorf("audit verify after the quarantine actions: exit %d: %s", r.Code, r.Stderr)
	}
}

// scrapeText GETs a metrics page.
func scrapeText(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}
