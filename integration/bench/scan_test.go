package bench

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

const (
	scanSize = 1 << 30 // bytes of the file scanned
	// clamdLimit is clamd's StreamMaxLength, MaxFileSize and MaxScanSize, and mftd's
	// scanner.clamd.max_stream_size: all over scanSize, so that the file is scanned whole.
	clamdLimit = "2000M"
	// clamdNice is clamd's CPU niceness, as README recommends for deployments: scans yield the
	// CPU to uploads (and to the daemon's own work), so ingest is not slowed by them.
	clamdNice = 19
	// statusPoll is how often the upload's status is asked for after its last PATCH.
	statusPoll = 20 * time.Millisecond
	// scanTarget is the most mftd's scan may take, as a multiple of clamdscan's.
	scanTarget = 1.10
	// ingestTarget is the least upload throughput while a scan runs, as a share of the
	// throughput with none running.
	ingestTarget = 0.9
)

// scanRun is one scan of the 1 GiB file, by mftd or by clamdscan.
type scanRun struct {
	wall     time.Duration // mftd: answer to the PATCH → status available; clamdscan: start → exit
	clamdCPU float64       // clamd's user+system CPU seconds over wall
	ownCPU   float64       // mftd's (the daemon's) or clamdscan's CPU seconds over wall
	upload   time.Duration // mftd only: creation → answer to the PATCH, no scan running: (d)
}

func (r scanRun) mbps() float64 { return scanSize / r.wall.Seconds() / 1e6 }

// overlapRun is a pair of uploads into one daemon: A with no scan running, then B while A is
// scanned.
type overlapRun struct {
	first   time.Duration // A: creation → answer to its PATCH, no scan running: (d)
	upload  time.Duration // B, started once A's PATCH is answered: creation → answer to its PATCH: (c)
	scan    time.Duration // A: answer to its PATCH → status available (B's scan joins once B is complete)
	overlap float64       // share of B's upload span during which A was being scanned
	ratio   float64       // B's throughput / A's: (c)/(d)
}

// BenchmarkUploadScan measures the scan of 1 GiB of clean pseudo-random data: through mftd (local
// storage, one clamd), from the answer to the upload's last PATCH until the upload is available,
// against `clamdscan --stream` of the same file into the same clamd; and the throughput of a tus
// upload made while the previous upload is scanned against one made with no scan running. Rounds
// interleave the measurements; the medians go to the "scan" section of docs/benchmarks.md. It
// needs clamd (integration/scripts/clamd.sh installs it) and clamdscan (package clamdscan).
func BenchmarkUploadScan(b *testing.B) {
	root, err := mftdtest.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	if _, err := exec.LookPath("clamdscan"); err != nil {
		b.Fatalf("%v: install the clamdscan package", err)
	}
	bin := mftdBinary(b, root)
	load := loadAvg()
	src, sum := scanSource(b)
	cd := mftdtest.StartClamdWith(b, mftdtest.ClamdOptions{
		StreamMaxLength: clamdLimit, MaxFileSize: clamdLimit, MaxScanSize: clamdLimit, DisableCache: true, Nice: clamdNice})
	clamdPID, clientConf := cd.PID(), cd.ClientConfig()
	opts := mftdtest.Options{ScannerYAML: fmt.Sprintf(
		"scanner:\n  workers: 2\n  clamd: {address: %q, timeout: 5m, max_stream_size: %siB}\n", cd.Addr(), clamdLimit)}

	rounds := benchRounds()
	var ms, cs []scanRun
	var ovs []overlapRun
	for i := 1; i <= rounds; i++ {
		b.Run(fmt.Sprintf("round%d/mftd", i), func(b *testing.B) {
			r := benchScanMftd(b, bin, opts, clamdPID, src, sum)
			reportScan(b, r)
			b.ReportMetric(scanSize/r.upload.Seconds()/1e6, "upload-MB/s")
			ms = append(ms, r)
		})
		b.Run(fmt.Sprintf("round%d/clamdscan", i), func(b *testing.B) {
			r := benchClamdscan(b, clientConf, clamdPID, src)
			reportScan(b, r)
			cs = append(cs, r)
		})
		b.Run(fmt.Sprintf("round%d/overlap", i), func(b *testing.B) {
			r := benchOverlap(b, bin, opts, src, sum)
			b.ReportMetric(scanSize/r.upload.Seconds()/1e6, "MB/s")
			b.ReportMetric(scanSize/r.first.Seconds()/1e6, "no-scan-MB/s")
			b.ReportMetric(r.ratio, "ratio")
			b.ReportMetric(100*r.overlap, "%-overlap")
			b.ReportMetric(r.scan.Seconds(), "s-scan-A")
			ovs = append(ovs, r)
		})
	}
	if len(ms) != rounds || len(cs) != rounds || len(ovs) != rounds {
		b.Fatal("a measurement is missing; docs/benchmarks.md left as it was")
	}
	md := scanTable(medianScan(ms), medianScan(cs), medianOverlap(ovs), load, rounds)
	fmt.Println(md)
	if err := writeSection(root, "scan", md); err != nil {
		b.Fatal(err)
	}
}

func reportScan(b *testing.B, r scanRun) {
	b.ReportMetric(r.wall.Seconds(), "s-scan")
	b.ReportMetric(r.mbps(), "MB/s")
	b.ReportMetric(r.clamdCPU, "clamd-cpu-s")
	b.ReportMetric(r.ownCPU, "own-cpu-s")
}

// scanSource writes the 1 GiB of pseudo-random data every measurement uses into os.TempDir and
// returns its path and SHA-256 (hex). The file is removed at cleanup.
func scanSource(b *testing.B) (path, sum string) {
	path = filepath.Join(os.TempDir(), fmt.Sprintf("mftd-bench-scan-%d.bin", os.Getpid()))
	b.Cleanup(func() { os.Remove(path) })
	sum, err := mftdtest.WriteFile(path, scanSize, 42)
	if err != nil {
		b.Fatal(err)
	}
	return path, sum
}

// benchScanMftd uploads src to a fresh daemon and measures the upload (no scan running) and then
// the span from the answer to its PATCH until the upload is available, with mftd's and clamd's CPU
// time over that span.
func benchScanMftd(b *testing.B, bin string, o mftdtest.Options, clamdPID int, src, sum string) scanRun {
	d := mftdtest.Start(b, bin, o)
	_, c := d.NewUser("bench")
	settle()
	b.ResetTimer()
	id, start, done := putFile(b, c, src, "scan.bin", sum)
	mftd0, clamd0 := cpuOf(b, d.PID()), cpuOf(b, clamdPID)
	waitAvailable(b, c, id, sum)
	wall := time.Since(done)
	b.StopTimer()
	r := scanRun{
		wall:     wall,
		clamdCPU: cpuOf(b, clamdPID) - clamd0,
		ownCPU:   cpuOf(b, d.PID()) - mftd0,
		upload:   done.Sub(start),
	}
	d.Stop()
	return r
}

// benchClamdscan runs `clamdscan --stream` on src against the benchmark's clamd (through the
// client config conf) and measures it from start to exit, with clamd's and its own CPU time.
func benchClamdscan(b *testing.B, conf string, clamdPID int, src string) scanRun {
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "clamdscan", "--stream", "--no-summary", "-c", conf, src)
	cmd.SysProcAttr = mftdtest.DieWithParent()
	settle()
	clamd0 := cpuOf(b, clamdPID)
	b.ResetTimer()
	start := time.Now()
	out, err := cmd.CombinedOutput()
	wall := time.Since(start)
	b.StopTimer()
	// Exit status 0 and "FILE: OK": clean; 1 is a finding, 2 an error.
	if err != nil || strings.TrimSpace(string(out)) != src+": OK" {
		b.Fatalf("clamdscan --stream %s: %v\n%s", src, err, out)
	}
	return scanRun{
		wall:     wall,
		clamdCPU: cpuOf(b, clamdPID) - clamd0,
		ownCPU:   (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds(),
	}
}

// benchOverlap uploads src twice to a fresh daemon: A, with no scan running, then B as soon as
// A's PATCH is answered, so that B's transfer runs while A is scanned. A's status is polled
// meanwhile, to tell how much of B's upload the scan overlapped.
func benchOverlap(b *testing.B, bin string, o mftdtest.Options, src, sum string) overlapRun {
	d := mftdtest.Start(b, bin, o)
	_, c := d.NewUser("bench")
	settle()
	b.ResetTimer()
	idA, startA, doneA := putFile(b, c, src, "first.bin", sum)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel() // ends the poll if B's upload fails the benchmark
	avail := make(chan error, 1)
	var availA time.Time // written before the send on avail, read after the receive
	go func() {
		info, err := c.WaitTerminal(ctx, idA, 10*time.Minute, statusPoll)
		availA = time.Now()
		if err == nil && (info.Status != "available" || info.SHA256 != sum) {
			err = fmt.Errorf("mftd: upload %s ended %q (%s) with sha256 %s, want available with %s",
				idA, info.Status, info.Reason, info.SHA256, sum)
		}
		avail <- err
	}()
	idB, startB, doneB := putFile(b, c, src, "second.bin", sum)
	b.StopTimer()
	if err := <-avail; err != nil {
		b.Fatal(err)
	}
	waitAvailable(b, c, idB, sum)
	scanEnd := availA
	if scanEnd.After(doneB) {
		scanEnd = doneB
	}
	r := overlapRun{
		first:   doneA.Sub(startA),
		upload:  doneB.Sub(startB),
		scan:    availA.Sub(doneA),
		overlap: max(0, scanEnd.Sub(startB).Seconds()) / doneB.Sub(startB).Seconds(),
		ratio:   doneA.Sub(startA).Seconds() / doneB.Sub(startB).Seconds(),
	}
	d.Stop()
	return r
}

// putFile sends src (scanSize bytes) as a new upload named name, in one PATCH, and returns the
// upload's ID, when the creation request was sent and when the PATCH was answered with 204 (the
// upload complete and queued for its checks).
func putFile(b *testing.B, c *mftdtest.Client, src, name, sum string) (id string, start, done time.Time) {
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	start = time.Now()
	resp, err := c.Create(ctx, scanSize, map[string]string{"filename": name, "sha256": sum})
	if err != nil || resp.Status != http.StatusCreated {
		b.Fatalf("create: %v %v", resp, err)
	}
	url := c.Resolve(resp.Header.Get("Location"))
	resp, err = c.Patch(ctx, url, 0, f, scanSize, "")
	done = time.Now()
	if err != nil || resp.Status != http.StatusNoContent || resp.Offset() != scanSize {
		b.Fatalf("PATCH %s: %v %v", name, resp, err)
	}
	return mftdtest.UploadID(url), start, done
}

// waitAvailable polls upload id every statusPoll until its status is final, and fails the
// benchmark unless it is available with the SHA-256 sum.
func waitAvailable(b *testing.B, c *mftdtest.Client, id, sum string) {
	info, err := c.WaitTerminal(context.Background(), id, 10*time.Minute, statusPoll)
	if err != nil {
		b.Fatal(err)
	}
	if info.Status != "available" || info.SHA256 != sum {
		b.Fatalf("mftd: upload %s ended %q (%s) with sha256 %s, want available with %s", id, info.Status, info.Reason, info.SHA256, sum)
	}
}

// medianScan is the median of each figure over several scans by one contestant.
func medianScan(rs []scanRun) scanRun {
	pick := func(f func(scanRun) float64) float64 { return medianOf(rs, f) }
	return scanRun{
		wall:     time.Duration(pick(func(r scanRun) float64 { return float64(r.wall) })),
		clamdCPU: pick(func(r scanRun) float64 { return r.clamdCPU }),
		ownCPU:   pick(func(r scanRun) float64 { return r.ownCPU }),
		upload:   time.Duration(pick(func(r scanRun) float64 { return float64(r.upload) })),
	}
}

func medianOverlap(rs []overlapRun) overlapRun {
	pick := func(f func(overlapRun) float64) float64 { return medianOf(rs, f) }
	return overlapRun{
		first:   time.Duration(pick(func(r overlapRun) float64 { return float64(r.first) })),
		upload:  time.Duration(pick(func(r overlapRun) float64 { return float64(r.upload) })),
		scan:    time.Duration(pick(func(r overlapRun) float64 { return float64(r.scan) })),
		overlap: pick(func(r overlapRun) float64 { return r.overlap }),
		ratio:   pick(func(r overlapRun) float64 { return r.ratio }),
	}
}

// clamavVersion is the clamav-daemon package version, or else what `clamd --version` prints.
func clamavVersion() string {
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "clamav-daemon").Output(); err == nil && len(out) > 0 {
		return "ClamAV " + strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("clamd", "--version").Output(); err == nil {
		return strings.TrimSpace(string(out))
	}
	return "ClamAV, unknown version"
}

func scanTable(m, c scanRun, o overlapRun, load string, rounds int) string {
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	mb := func(d time.Duration) float64 { return scanSize / d.Seconds() / 1e6 }
	var s strings.Builder
	s.WriteString("## Scan: mftd's clamd scan, clamdscan --stream\n\n")
	s.WriteString(provenance(load, "UploadScan"))
	fmt.Fprintf(&s, "%d rounds; in each, interleaved: (a) one upload of the same 1 GiB (%d bytes) of clean pseudo-random data "+
		"to a fresh mftd, from a Go tus client over HTTPS (HTTP/1.1, self-signed certificate) on 127.0.0.1, in one "+
		"PATCH, timed from the answer (204) to that PATCH until `GET /api/v1/uploads/{id}`, asked every %d ms, says "+
		"`available`; (b) `clamdscan --stream --no-summary -c CONF FILE` of the same file, timed from start to exit; "+
		"(c)/(d) in another fresh mftd, an upload A of the file (d: no scan running) and, as soon as A's PATCH is "+
		"answered, a second upload B of it (c), so that B's transfer runs while A is scanned; (c)/(d) is the median "+
		"of the per-round ratios of B's throughput to A's. One clamd (%s, started by integration/scripts/clamd.sh with "+
		"its small test signature database, `StreamMaxLength`, `MaxFileSize` and `MaxScanSize` %s, `DisableCache yes`, run at nice %d as README recommends) serves the whole run "+
		"on 127.0.0.1 over TCP; CONF names only its TCP address and its StreamMaxLength (clamdscan stops sending a "+
		"file at its config's StreamMaxLength). mftd runs local storage, SQLite and `scanner: {workers: 2, clamd: "+
		"{address: tcp://127.0.0.1:PORT, timeout: 5m, max_stream_size: %siB}}` (every other key default); each upload "+
		"carries its SHA-256 in its metadata. Each figure is the median over the rounds (each per-round figure is in "+
		"the `go test -bench` output above the table).\n\n",
		rounds, scanSize, statusPoll.Milliseconds(), clamavVersion(), clamdLimit, clamdNice, clamdLimit)
	s.WriteString("| | mftd | clamdscan | mftd/clamdscan | target | met |\n")
	s.WriteString("|---|---:|---:|---:|---|---|\n")
	fmt.Fprintf(&s, "| scan time, s (mftd: answer to the PATCH → `available`; clamdscan: start → exit) | %.2f | %.2f | %.2f | "+
		"≤ %.2f × clamdscan = %.2f | %s |\n",
		m.wall.Seconds(), c.wall.Seconds(), m.wall.Seconds()/c.wall.Seconds(), scanTarget, scanTarget*c.wall.Seconds(),
		yes(m.wall.Seconds() <= scanTarget*c.wall.Seconds()))
	fmt.Fprintf(&s, "| scan throughput, MB/s (1 GiB / scan time) | %.0f | %.0f | %.2f | | |\n", m.mbps(), c.mbps(), m.mbps()/c.mbps())
	fmt.Fprintf(&s, "| clamd CPU, s (same span) | %.2f | %.2f | %.2f | | |\n", m.clamdCPU, c.clamdCPU, m.clamdCPU/c.clamdCPU)
	fmt.Fprintf(&s, "| client CPU, s (same span; mftd: the daemon: read back, SHA-256, built-in checks, INSTREAM, publish, "+
		"status requests; clamdscan: its process) | %.2f | %.2f | %.2f | | |\n", m.ownCPU, c.ownCPU, m.ownCPU/c.ownCPU)
	fmt.Fprintf(&s, "| ingest while a scan runs, MB/s: (c) upload B, creation → answer to its PATCH | %.0f | | (c)/(d) = %.2f | "+
		"unchanged: ≥ %.1f | %s |\n", mb(o.upload), o.ratio, ingestTarget, yes(o.ratio >= ingestTarget))
	fmt.Fprintf(&s, "| ingest with no scan running, MB/s: (d) upload A, just before B, same span | %.0f | | | | |\n", mb(o.first))
	fmt.Fprintf(&s, "| share of B's upload span during which A was being scanned | %.0f%% | | | | |\n", 100*o.overlap)
	fmt.Fprintf(&s, "| cross-check of (d): the upload of (a), no scan running, MB/s | %.0f | | | | |\n", mb(m.upload))
	s.WriteString("\nMB = 10⁶ bytes. CPU figures are utime + stime from `/proc/PID/stat` (USER_HZ 100) of clamd (its PID " +
		"from clamd.pid; all its threads) and of the mftd daemon over the scan span, and clamdscan's own from its exit " +
		"status; the client, mftd, clamd and clamdscan share the same 2 cores.\n\n" +
		"Both paths end in clamd's INSTREAM over TCP on 127.0.0.1, and clamd does the same work for both: it writes each " +
		"stream to its TemporaryDirectory (on the same disk) and scans that file once the stream ends. clamdscan reads " +
		"the source file, which is in the page cache, in 8 KiB chunks; mftd reads the upload back from its own object " +
		"under data_dir (just written and fsynced, also in the page cache), hashes it (SHA-256, compared with the hash " +
		"taken on arrival), runs the built-in checks on the same read and sends it in 256 KiB chunks, then, once clamd " +
		"answers, moves the file into the owner's Arrivals and records it. mftd's span also holds the wait for the next " +
		"status request (up to 20 ms) and the hand-over from the upload to the scan worker. clamd's cache is off because " +
		"every measurement scans the same content: with it on (clamd's default), clamd answers for a content it found " +
		"clean before as soon as it has hashed it (MD5), so whichever path came second in a round would get a cheap " +
		"cache hit (a fraction of a full scan). The test database has three signatures; with ClamAV's official " +
		"databases clamd's own scan takes longer and mftd's fixed share (read back, hash, publish) weighs less in the " +
		"ratio. Ingest: on 2 cores, clamd's and mftd's scan work " +
		"competes with the upload (client, TLS, hash, fsync) for CPU, so (c) measures that contention; the share of " +
		"B's upload span during which A's scan ran is shown, because a scan may end before B's transfer does. (d) is A, " +
		"in the same daemon right before B, so that a change in the machine's load touches both alike; the upload of " +
		"(a) is shown as a cross-check. B's own scan starts once B is complete, after the span measured. The page cache is not dropped; `sync` " +
		"runs before each measurement. Single runs on this shared 2-core VM vary by 10–20%, more if the machine is busy " +
		"(see the load average): hence interleaved rounds and medians.\n")
	return s.String()
}
