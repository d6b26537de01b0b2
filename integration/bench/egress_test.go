package bench

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

const (
	// The project, share, users, portal and staged file of the egress benchmark.
	egressProject = "study"
	egressShare   = "outbox"
	egressIAO     = "olga"  // the project's IAO: grants the outbound right
	egressUser    = "bench" // the member who stages and asks for the push
	egressPortal  = "bench"
	egressFile    = "big.bin"
	// egressSettle is egress.settle: the staged file exists before the daemon starts, so it only
	// delays the first item by this much.
	egressSettle = "300ms"
	// egressPoll is how often the item's status is asked for after the request. The push's own
	// duration comes from its receipt, so this only rounds the end-to-end figure.
	egressPoll = 50 * time.Millisecond
	// procPeriod is how often the daemon's CPU time and resident set are read during a round.
	procPeriod = 10 * time.Millisecond
	// egressTarget is the least push throughput, as a share of curl's; egressRSS the most peak RSS.
	egressTarget = 0.9
	egressRSS    = 64 << 20
)

// egressRun is one push of the staged file, by mftd or by curl.
type egressRun struct {
	wall      time.Duration // mftd: receipt finished − started; curl: process start → exit
	cpu       float64       // mftd's CPU seconds over the push, or curl's own (utime + stime)
	rss       int64         // mftd: VmHWM of the measured process (after the restart) at the end; curl: ru_maxrss
	portalCPU float64       // this process (the portal: TLS, SHA-256) over the same span
	pushRSS   int64         // mftd only: the largest VmRSS sampled during the push
	toSent    time.Duration // mftd only: POST /api/v1/egress → status sent seen
	cpuToSent float64       // mftd only: its CPU seconds over toSent
	check     time.Duration // mftd only: POST /api/v1/egress → receipt started (checks, queue)
	speed     float64       // curl only: its own %{speed_upload}, bytes/s
	setupRSS  int64         // mftd only: VmHWM of the set-up process (start-up, two logins, the hash of the staged file)
}

func (r egressRun) mbps() float64            { return fileSize / r.wall.Seconds() / 1e6 }
func (r egressRun) cpuPerGiB() float64       { return r.cpu / (fileSize / gib) }
func (r egressRun) portalPerGiB() float64    { return r.portalCPU / (fileSize / gib) }
func (r egressRun) cpuToSentPerGiB() float64 { return r.cpuToSent / (fileSize / gib) }

// BenchmarkEgress measures the push of a 2 GiB staged file to a local HTTPS portal (a PUT of the
// raw body): through mftd's egress (staged, requested, checked with the built-in checks, pushed)
// against `curl -T` of the same file to the same portal, in interleaved rounds, and writes the
// medians to the "egress" section of docs/benchmarks.md. The portal (mftdtest.StartPortal, put,
// Discard: it hashes every byte and keeps none) runs in the benchmark process and serves both.
func BenchmarkEgress(b *testing.B) {
	root, err := mftdtest.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	curl, err := exec.LookPath("curl")
	if err != nil {
		b.Fatalf("%v: install curl", err)
	}
	bin := mftdBinary(b, root)
	load := loadAvg()

	dir := b.TempDir()
	ca, err := mftdtest.NewTestCA(dir)
	if err != nil {
		b.Fatal(err)
	}
	portal := mftdtest.StartPortal(b, ca, mftdtest.PortalOptions{Method: mftdtest.PortalPut, Discard: true})
	// The file is written straight into the staging folder (one link: a hardlink is never
	// staged) and stays there for every round (remove_sent: false): each round's fresh daemon
	// finds it at its start-up rescan, and curl sends the very same file.
	staging := filepath.Join(dir, "staging")
	userDir := filepath.Join(staging, egressShare, egressUser)
	if err := os.MkdirAll(userDir, 0o750); err != nil {
		b.Fatal(err)
	}
	src := filepath.Join(userDir, egressFile)
	sum, err := mftdtest.WriteFile(src, fileSize, 42)
	if err != nil {
		b.Fatal(err)
	}
	opts := mftdtest.Options{EgressYAML: fmt.Sprintf("egress:\n"+
		"  staging_dir: %q\n"+
		"  settle: %s\n"+
		"  remove_sent: false\n"+
		"  portals:\n"+
		"    - {name: %s, url: %q, method: put, ca_file: %q, allow_private: true}\n"+
		"  shares:\n"+
		"    %s: {portals: [%s], checks: [malware]}\n",
		staging, egressSettle, egressPortal, portal.URL, ca.CAFile, egressShare, egressPortal)}

	rounds := benchRounds()
	var ms, cs []egressRun
	var cipher string
	for i := 1; i <= rounds; i++ {
		b.Run(fmt.Sprintf("round%d/mftd", i), func(b *testing.B) {
			r := benchEgressMftd(b, bin, opts, portal, sum)
			reportEgress(b, r)
			b.ReportMetric(r.toSent.Seconds(), "s-request-to-sent")
			b.ReportMetric(r.check.Seconds(), "s-request-to-push")
			b.ReportMetric(r.cpuToSentPerGiB(), "cpu-s/GiB-request-to-sent")
			b.ReportMetric(float64(r.pushRSS)/(1<<20), "push-max-RSS-MiB")
			b.ReportMetric(float64(r.setupRSS)/(1<<20), "setup-peak-RSS-MiB")
			ms = append(ms, r)
		})
		b.Run(fmt.Sprintf("round%d/curl", i), func(b *testing.B) {
			var r egressRun
			r, cipher = benchCurl(b, curl, ca.CAFile, portal, src, sum)
			reportEgress(b, r)
			b.ReportMetric(r.speed/1e6, "speed_upload-MB/s")
			cs = append(cs, r)
		})
	}
	if len(ms) != rounds || len(cs) != rounds {
		b.Fatal("a measurement is missing; docs/benchmarks.md left as it was")
	}
	md := egressTable(medianEgress(ms), medianEgress(cs), load, curlVersion(curl), cipher, rounds)
	fmt.Println(md)
	if err := writeSection(root, "egress", md); err != nil {
		b.Fatal(err)
	}
}

func reportEgress(b *testing.B, r egressRun) {
	b.ReportMetric(r.mbps(), "MB/s")
	b.ReportMetric(r.cpuPerGiB(), "cpu-s/GiB")
	b.ReportMetric(float64(r.rss)/(1<<20), "peak-RSS-MiB")
	b.ReportMetric(r.portalPerGiB(), "portal-cpu-s/GiB")
}

// egressItem is what GET /api/v1/egress/{id} shows of an item.
type egressItem struct {
	ID      string `json:"id"`
	Path    string `json:"path"`
	Size    int64  `json:"size"`
	SHA256  string `json:"sha256"`
	Status  string `json:"status"`
	Reason  string `json:"reason"`
	Receipt *struct {
		Portal   string    `json:"portal"`
		Method   string    `json:"method"`
		Status   int       `json:"status"`
		SHA256   string    `json:"sha256"`
		Size     int64     `json:"size"`
		Started  time.Time `json:"started"`
		Finished time.Time `json:"finished"`
		Attempts int       `json:"attempts"`
	} `json:"receipt"`
}

// benchEgressMftd starts a fresh daemon on the staging folder, gives egressUser the outbound right
// in egressShare, waits until the staged file is an item, restarts the daemon, asks for the push
// and polls the item until it is sent. The push is timed by its receipt; the daemon's CPU time and
// resident set are sampled every procPeriod, so that the CPU over the push is read at the
// receipt's start and end.
func benchEgressMftd(b *testing.B, bin string, o mftdtest.Options, portal *mftdtest.Portal, sum string) egressRun {
	d := mftdtest.Start(b, bin, o)
	_, iao := d.NewUser(egressIAO)
	_, c := d.NewUser(egressUser)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Minute)
	defer cancel()
	if r := d.Admin("", "project", "create", egressProject, "--owner", egressIAO); r.Code != 0 {
		b.Fatalf("mftd project create: exit %d\nstdout: %s\nstderr: %s", r.Code, r.Stdout, r.Stderr)
	}
	apiJSON(b, ctx, iao, http.MethodPost, "/api/v1/projects/"+egressProject+"/shares", map[string]string{"name": egressShare}, http.StatusCreated, nil)
	apiJSON(b, ctx, iao, http.MethodPut, "/api/v1/shares/"+egressShare+"/members/"+egressUser, map[string]bool{"outbound": true}, http.StatusNoContent, nil)
	waitStaged(b, ctx, c, sum)
	// The measured process is a second one on the same data_dir: the set-up's two logins each
	// take argon2id's 19 MiB, which the first process keeps until the Go runtime returns it, and
	// the push should not be charged with that. The session outlives the restart, and the rescan
	// at start-up knows the staged file (same size and mtime) and does not hash it again.
	setupRSS, err := mftdtest.PeakRSS(d.PID())
	if err != nil {
		b.Fatal(err)
	}
	d.Stop()
	d.Launch()
	c = d.Client(c.Token)
	waitStaged(b, ctx, c, sum)
	received := len(portal.Received())

	settle()
	pid, self := d.PID(), os.Getpid()
	stop := sampleProcs(pid, self)
	b.ResetTimer()
	start := time.Now()
	var req struct{ ID, Status string }
	apiJSON(b, ctx, c, http.MethodPost, "/api/v1/egress",
		map[string]string{"share": egressShare, "path": egressFile, "portal": egressPortal}, http.StatusAccepted, &req)
	var it egressItem
	for {
		apiJSON(b, ctx, c, http.MethodGet, "/api/v1/egress/"+req.ID, nil, http.StatusOK, &it)
		if it.Status != "checking" && it.Status != "queued" && it.Status != "pushing" {
			break
		}
		select {
		case <-ctx.Done():
			b.Fatalf("egress item %s still %s: %v", req.ID, it.Status, ctx.Err())
		case <-time.After(egressPoll):
		}
	}
	toSent := time.Since(start)
	b.StopTimer()
	samples := stop()
	if it.Status != "sent" || it.Receipt == nil {
		b.Fatalf("egress item %s ended %q (%s), want sent with a receipt", req.ID, it.Status, it.Reason)
	}
	rc := it.Receipt
	if rc.Size != fileSize || rc.SHA256 != sum || rc.Method != "put" || rc.Attempts != 1 {
		b.Fatalf("receipt: %+v; want %d bytes, sha256 %s, put, in 1 attempt", *rc, int64(fileSize), sum)
	}
	got, err := portal.WaitReceived(received+1, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if g := got[received]; g.Size != fileSize || g.SHA256 != sum || g.Name != egressFile || g.ClaimedSHA256 != sum {
		b.Fatalf("portal received %+v; want %s, %d bytes, sha256 %s claimed and found", g, egressFile, int64(fileSize), sum)
	}
	rss, err := mftdtest.PeakRSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	r := egressRun{
		wall:      rc.Finished.Sub(rc.Started),
		cpu:       cpuBetween(samples, 0, rc.Started, rc.Finished),
		rss:       rss,
		portalCPU: cpuBetween(samples, 1, rc.Started, rc.Finished),
		pushRSS:   rssMax(samples, rc.Started, rc.Finished),
		toSent:    toSent,
		cpuToSent: cpuBetween(samples, 0, start, start.Add(toSent)),
		check:     rc.Started.Sub(start),
		setupRSS:  setupRSS,
	}
	d.Stop()
	return r
}

// waitStaged polls the share's items until the staged file is one, staged with the SHA-256 sum.
func waitStaged(b *testing.B, ctx context.Context, c *mftdtest.Client, sum string) {
	deadline := time.Now().Add(5 * time.Minute)
	for {
		var list struct{ Items []egressItem }
		apiJSON(b, ctx, c, http.MethodGet, "/api/v1/egress?share="+egressShare, nil, http.StatusOK, &list)
		for _, it := range list.Items {
			if it.Path == egressFile && it.Status == "staged" {
				if it.SHA256 != sum || it.Size != fileSize {
					b.Fatalf("staged item %+v; want %d bytes with sha256 %s", it, int64(fileSize), sum)
				}
				return
			}
		}
		if time.Now().After(deadline) {
			b.Fatalf("%s/%s/%s is no staged item after 5 minutes: %+v", egressShare, egressUser, egressFile, list.Items)
		}
		time.Sleep(egressPoll)
	}
}

// benchCurl runs `curl -T src` to the portal with the test CA and measures it from start to exit,
// with its own CPU time and peak RSS from its rusage and the portal's (this process's) CPU time.
// It returns the TLS version and cipher curl reports.
func benchCurl(b *testing.B, curl, caFile string, portal *mftdtest.Portal, src, sum string) (egressRun, string) {
	received := len(portal.Received())
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	// -v only adds the TLS handshake and the headers to stderr; the answer goes to /dev/null.
	cmd := exec.CommandContext(ctx, curl, "-sS", "-v", "--fail", "--cacert", caFile, "-T", src,
		"-o", "/dev/null", "-w", "%{http_code} %{size_upload} %{speed_upload}", portal.URL)
	cmd.SysProcAttr = mftdtest.DieWithParent()
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	settle()
	self0 := cpuOf(b, os.Getpid())
	b.ResetTimer()
	start := time.Now()
	err := cmd.Run()
	wall := time.Since(start)
	b.StopTimer()
	self1 := cpuOf(b, os.Getpid())
	if err != nil {
		b.Fatalf("curl -T %s: %v\n%s\n%s", src, err, out.String(), tailBytes(errb.Bytes(), 4<<10))
	}
	f := strings.Fields(out.String())
	if len(f) != 3 || f[0] != "201" || f[1] != strconv.Itoa(fileSize) {
		b.Fatalf("curl -T %s: -w says %q; want 201 and %d bytes", src, out.String(), fileSize)
	}
	speed, _ := strconv.ParseFloat(f[2], 64)
	got, err := portal.WaitReceived(received+1, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	if g := got[received]; g.Size != fileSize || g.SHA256 != sum {
		b.Fatalf("portal received %+v from curl; want %d bytes with sha256 %s", g, int64(fileSize), sum)
	}
	ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage)
	if !ok {
		b.Fatal("curl: no rusage")
	}
	return egressRun{
		wall:      wall,
		cpu:       (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(),
		rss:       ru.Maxrss << 10, // KiB on Linux
		portalCPU: self1 - self0,
		speed:     speed,
	}, curlCipher(errb.Bytes())
}

// curlCipher is "TLSv1.3 / TLS_AES_128_GCM_SHA256" from `curl -v` output ("" if not found).
func curlCipher(log []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		if _, after, ok := strings.Cut(sc.Text(), "SSL connection using "); ok {
			return strings.TrimSpace(after)
		}
	}
	return ""
}

// curlVersion is "curl 7.88.1 (OpenSSL/3.0.19)" from `curl --version`: the version and its TLS library.
func curlVersion(curl string) string {
	out, err := exec.Command(curl, "--version").Output()
	if err != nil {
		return "curl, unknown version"
	}
	line, _, _ := strings.Cut(string(out), "\n")
	f := strings.Fields(line) // "curl 7.88.1 (x86_64-pc-linux-gnu) libcurl/7.88.1 OpenSSL/3.0.19 zlib/..."
	if len(f) < 2 {
		return "curl, unknown version"
	}
	v := "curl " + f[1]
	for _, w := range f[2:] {
		for _, lib := range []string{"OpenSSL/", "GnuTLS/", "wolfSSL/", "mbedTLS/", "BoringSSL", "LibreSSL/", "rustls-ffi/"} {
			if strings.HasPrefix(w, lib) {
				return v + " (" + w + ")"
			}
		}
	}
	return v
}

func tailBytes(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

// apiJSON sends one API request as c with a JSON body (nil: none), fails the benchmark unless the
// answer has status want, and decodes its body into out (nil: not decoded).
func apiJSON(b *testing.B, ctx context.Context, c *mftdtest.Client, method, path string, body any, want int, out any) {
	b.Helper()
	var rd io.Reader
	if body != nil {
		data, err := json.Marshal(body)
		if err != nil {
			b.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.Base+path, rd)
	if err != nil {
		b.Fatal(err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	resp, err := c.HTTP.Do(req)
	if err != nil {
		b.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		b.Fatalf("%s %s: read body: %v", method, path, err)
	}
	if resp.StatusCode != want {
		b.Fatalf("%s %s: %d %s; want %d", method, path, resp.StatusCode, data, want)
	}
	if out != nil {
		if err := json.Unmarshal(data, out); err != nil {
			b.Fatalf("%s %s: %v in %s", method, path, err, data)
		}
	}
}

// procSample is what one look at the sampled processes saw.
type procSample struct {
	at  time.Time
	cpu []float64 // user+system CPU seconds so far, per process, in the order given
	rss int64     // VmRSS of the first process, bytes
}

// sampleProcs reads the CPU time of pids, and the resident set of the first, every procPeriod
// until the returned function is called; that function returns the samples, the last one taken
// when it was called. A process that cannot be read any more keeps its last value.
func sampleProcs(pids ...int) (stop func() []procSample) {
	var (
		mu      sync.Mutex
		samples []procSample
	)
	take := func() {
		s := procSample{at: time.Now(), cpu: make([]float64, len(pids))}
		mu.Lock()
		defer mu.Unlock()
		for i, pid := range pids {
			v, err := mftdtest.CPUSeconds(pid)
			if err != nil && len(samples) > 0 {
				v = samples[len(samples)-1].cpu[i]
			}
			s.cpu[i] = v
		}
		s.rss, _ = vmRSS(pids[0])
		samples = append(samples, s)
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(procPeriod)
		defer t.Stop()
		for {
			take()
			select {
			case <-done:
				return
			case <-t.C:
			}
		}
	}()
	return func() []procSample {
		close(done)
		<-finished
		take()
		mu.Lock()
		defer mu.Unlock()
		return samples
	}
}

// cpuBetween is process i's CPU seconds from the last sample at or before from to the first at
// or after to (so it may hold up to procPeriod more on each side, never less).
func cpuBetween(s []procSample, i int, from, to time.Time) float64 {
	lo, hi := s[0].cpu[i], s[len(s)-1].cpu[i]
	for _, x := range s {
		if !x.at.After(from) {
			lo = x.cpu[i]
		}
	}
	for j := len(s) - 1; j >= 0; j-- {
		if !s[j].at.Before(to) {
			hi = s[j].cpu[i]
		}
	}
	return hi - lo
}

// rssMax is the largest resident set sampled between from and to.
func rssMax(s []procSample, from, to time.Time) int64 {
	var top int64
	for _, x := range s {
		if !x.at.Before(from) && !x.at.After(to) {
			top = max(top, x.rss)
		}
	}
	return top
}

// vmRSS is VmRSS of process pid in bytes, from /proc/PID/status.
func vmRSS(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			f := strings.Fields(v) // "12345 kB"
			if len(f) != 2 || f[1] != "kB" {
				return 0, fmt.Errorf("/proc/%d/status: VmRSS %q", pid, v)
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb << 10, err
		}
	}
	return 0, fmt.Errorf("/proc/%d/status: no VmRSS", pid)
}

// medianEgress is the median of each figure over several pushes by one contestant.
func medianEgress(rs []egressRun) egressRun {
	pick := func(f func(egressRun) float64) float64 { return medianOf(rs, f) }
	return egressRun{
		wall:      time.Duration(pick(func(r egressRun) float64 { return float64(r.wall) })),
		cpu:       pick(func(r egressRun) float64 { return r.cpu }),
		rss:       int64(pick(func(r egressRun) float64 { return float64(r.rss) })),
		portalCPU: pick(func(r egressRun) float64 { return r.portalCPU }),
		pushRSS:   int64(pick(func(r egressRun) float64 { return float64(r.pushRSS) })),
		toSent:    time.Duration(pick(func(r egressRun) float64 { return float64(r.toSent) })),
		cpuToSent: pick(func(r egressRun) float64 { return r.cpuToSent }),
		check:     time.Duration(pick(func(r egressRun) float64 { return float64(r.check) })),
		speed:     pick(func(r egressRun) float64 { return r.speed }),
		setupRSS:  int64(pick(func(r egressRun) float64 { return float64(r.setupRSS) })),
	}
}

func egressTable(m, c egressRun, load, curlVer, cipher string, rounds int) string {
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	if cipher == "" {
		cipher = "not reported"
	}
	var s strings.Builder
	s.WriteString("## Egress: mftd's push to an HTTPS portal, curl -T\n\n")
	fmt.Fprintf(&s, "Written by `make bench`, which runs `%s` (`-bench=Egress` runs this benchmark alone, e.g. "+
		"`bash integration/scripts/bench.sh -bench=Egress`), on %s.\n\n"+
		"Machine: %s, %d cores, Linux %s, %s; %s; load average at the start: %s.\n\n",
		command, time.Now().UTC().Format("2006-01-02 15:04 MST"), cpuModel(), runtime.NumCPU(), kernel(), runtime.Version(), curlVer, load)
	fmt.Fprintf(&s, "Target (issue 7): push throughput of a 2 GiB staged file ≥ %.1f × `curl -T` of the same file to the same "+
		"portal in the same run, and mftd's peak RSS ≤ %d MiB.\n\n", egressTarget, egressRSS>>20)
	fmt.Fprintf(&s, "%d rounds; in each, interleaved: (a) a fresh mftd (local storage, SQLite, `egress: {staging_dir, settle: %s, "+
		"remove_sent: false, portals: [{name: %s, url: https://localhost:PORT/upload, method: put, ca_file, allow_private: "+
		"true}], shares: {%s: {portals: [%s], checks: [malware]}}}`, every other key default, no clamd: the built-in "+
		"checks only) finds the 2 GiB (%d bytes) of pseudo-random data staged at `<staging_dir>/%s/%s/%s` and hashes "+
		"it; the project's IAO creates the share and grants the member the outbound right over the API; the daemon is "+
		"then stopped and started again on the same data_dir (the measured process: the set-up's logins stay out of "+
		"it, the session and the staged item carry over), and the member asks for the push (`POST /api/v1/egress`) and "+
		"for the item every %d ms until it is `sent`; the push is timed by the item's receipt (`finished − started`: "+
		"the pusher's dial, TLS handshake, the PUT of the whole file, hashed (BLAKE3) as it goes, and the portal's answer); "+
		"(b) `curl -sS -v --fail --cacert CA -T FILE -o /dev/null URL` of the same file to the same portal, timed "+
		"from start to exit. The portal is an HTTPS PUT endpoint in the benchmark process (Go net/http, HTTP/1.1, an "+
		"ECDSA P-256 certificate of a throwaway CA, on 127.0.0.1) that reads each body in 256 KiB blocks, hashes "+
		"it (SHA-256) and keeps nothing; it serves both alike. curl negotiated %s. Each figure is the median over "+
		"the rounds (each per-round figure is in the `go test -bench` output above the table).\n\n",
		rounds, egressSettle, egressPortal, egressShare, egressPortal, fileSize, egressShare, egressUser, egressFile,
		egressPoll.Milliseconds(), cipher)
	s.WriteString("| | mftd | curl | mftd/curl | target | met |\n")
	s.WriteString("|---|---:|---:|---:|---|---|\n")
	fmt.Fprintf(&s, "| push throughput, MB/s (mftd: receipt started → finished; curl: start → exit) | %.0f | %.0f | %.2f | "+
		"≥ %.1f × curl = %.0f | %s |\n",
		m.mbps(), c.mbps(), m.mbps()/c.mbps(), egressTarget, egressTarget*c.mbps(), yes(m.mbps() >= egressTarget*c.mbps()))
	fmt.Fprintf(&s, "| CPU, s/GiB (mftd: the daemon over the push; curl: its process) | %.2f | %.2f | %.2f | | |\n",
		m.cpuPerGiB(), c.cpuPerGiB(), m.cpuPerGiB()/c.cpuPerGiB())
	fmt.Fprintf(&s, "| peak RSS, MiB (mftd: VmHWM of the measured daemon process at the end of the round; curl: ru_maxrss) | %.1f | %.1f | %.2f | "+
		"≤ %d MiB | %s |\n", mib(m.rss), mib(c.rss), float64(m.rss)/float64(c.rss), egressRSS>>20, yes(m.rss <= egressRSS))
	fmt.Fprintf(&s, "| portal CPU, s/GiB (the benchmark process, same span: TLS, SHA-256) | %.2f | %.2f | %.2f | | |\n",
		m.portalPerGiB(), c.portalPerGiB(), m.portalPerGiB()/c.portalPerGiB())
	fmt.Fprintf(&s, "| largest VmRSS sampled during the push, MiB | %.1f | | | | |\n", mib(m.pushRSS))
	fmt.Fprintf(&s, "| VmHWM of the set-up process, MiB (start-up, hash of the staged file, two logins, set-up API calls) | %.1f | | | | |\n",
		mib(m.setupRSS))
	fmt.Fprintf(&s, "| request → `sent`, s (`POST /api/v1/egress` → status `sent` seen: checks, queue, push) | %.2f | | | | |\n",
		m.toSent.Seconds())
	fmt.Fprintf(&s, "| of which request → push started, s (the built-in checks read and hash the file) | %.2f | | | | |\n",
		m.check.Seconds())
	fmt.Fprintf(&s, "| end-to-end throughput, MB/s (2 GiB / request → `sent`) | %.0f | | | | |\n", fileSize/m.toSent.Seconds()/1e6)
	fmt.Fprintf(&s, "| daemon CPU, request → `sent`, s/GiB | %.2f | | | | |\n", m.cpuToSentPerGiB())
	fmt.Fprintf(&s, "| cross-check: curl's own `%%{speed_upload}`, MB/s | | %.0f | | | |\n", c.speed/1e6)
	fmt.Fprintf(&s, "\nMB = 10⁶ bytes. CPU figures are utime + stime (USER_HZ 100): mftd's from `/proc/PID/stat`, read every "+
		"%d ms during the round and taken at the samples around the receipt's start and end (so up to %d ms more, never "+
		"less); curl's from its exit status; the portal's is the benchmark process's over the same span (the mftd "+
		"round's also holds the status requests and the sampling). The daemon, curl and the portal share the same %d "+
		"cores, so the portal's work (TLS decryption and SHA-256 of every byte) competes with the sender's. mftd's "+
		"peak RSS is over the measured process's whole life: start-up, the rescan (which finds the staged file known "+
		"and does not hash it again), the status requests, the checks and the push; its VmRSS during the push alone "+
		"is shown too. The set-up process's peak is shown apart: each login verifies an argon2id hash with 19 MiB, "+
		"and the Go runtime keeps the first one's memory while the second runs. mftd reads the staged file twice after "+
		"the request (the checks, which hash it with SHA-256, then the push, which hashes it again with BLAKE3 and "+
		"holds back the end of the file until the whole file matched the BLAKE3 taken with the SHA-256 when it was "+
		"staged); curl reads it once and hashes nothing. The file is in the page cache "+
		"throughout (written before the first round, read by every set-up process); `sync` runs before each "+
		"measurement. Single runs on this shared VM vary by 10–20%%, more if the machine is busy (see the load "+
		"average): hence interleaved rounds and medians.\n", procPeriod.Milliseconds(), 2*procPeriod.Milliseconds(), runtime.NumCPU())
	return s.String()
}
