// Package bench measures a 2 GiB upload through mftd against its peers, in one run, and writes
// the tables to docs/benchmarks.md. BenchmarkUpload (this file) runs mftd on local disk against
// tusd v2.9.1's file store and the durable-disk ceiling (dd with fdatasync); BenchmarkUploadS3
// (s3_test.go) runs mftd on S3 (MinIO) against tusd v2.9.1's S3 store on the same MinIO and the
// ceiling of a direct minio-go PutObject; BenchmarkUploadSFTP (sftp_test.go) runs OpenSSH's sftp
// client into mftd's SFTP door and into OpenSSH's own sftp-server; BenchmarkUploadScan
// (scan_test.go) times a 1 GiB file from upload completion to available through mftd's clamd scan
// against clamdscan --stream on the same clamd; BenchmarkEgress (egress_test.go) pushes a 2 GiB
// staged file to a local HTTPS portal against curl -T of the same file to the same portal. Each
// writes its own section of the file.
//
//	make bench
//	# or: bash integration/scripts/install-tusd.sh && bash integration/scripts/install-minio.sh &&
//	#     go test -run='^$' -bench='Upload|Egress' -benchtime=1x -timeout=60m ./integration/bench/
//	# -bench='Upload$' runs only the local-disk benchmark, -bench=UploadS3 only the S3 one,
//	# -bench=UploadSFTP only the SFTP one, -bench=Egress only the egress push.
//
// MFTD_BIN, if set, names a prebuilt mftd binary to measure instead of building ./cmd/mftd.
// It is a benchmark, not a test: nothing here asserts the targets; the table shows them.
package bench

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

const (
	fileSize  = 2 << 30  // bytes uploaded to each server
	patchSize = 64 << 20 // bytes per PATCH request
	gib       = 1 << 30
	command   = "go test -run='^$' -bench='Upload|Egress' -benchtime=1x ./integration/bench/"
)

// serverRun is what one upload cost one server.
type serverRun struct {
	wall   time.Duration // creation → answer to the last PATCH
	cpu    float64       // server user+system CPU seconds over the same span
	rss    int64         // server VmHWM at the end, bytes
	toDone time.Duration // mftd only: creation → status available
	cpuTo  float64       // mftd only: server CPU seconds creation → available
}

func (r serverRun) mbps() float64        { return fileSize / r.wall.Seconds() / 1e6 }
func (r serverRun) cpuPerGiB() float64   { return r.cpu / (fileSize / gib) }
func (r serverRun) cpuToPerGiB() float64 { return r.cpuTo / (fileSize / gib) }
func (r serverRun) rssMiB() float64      { return float64(r.rss) / (1 << 20) }

func BenchmarkUpload(b *testing.B) {
	root, err := mftdtest.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	bin := mftdBinary(b, root)
	tusd, err := mftdtest.TusdPath(root)
	if err != nil {
		b.Fatal(err)
	}
	load := loadAvg()
	src, sum := sourceFile(b)

	// Rounds interleave the three measurements, so that a change in the
	// machine's load touches each alike; the table reports medians.
	rounds := benchRounds()
	var ms, ts []serverRun
	var dds []time.Duration
	for i := 1; i <= rounds; i++ {
		b.Run(fmt.Sprintf("round%d/mftd", i), func(b *testing.B) {
			r := benchMftd(b, bin, src, sum)
			report(b, r)
			b.ReportMetric(r.toDone.Seconds(), "s-to-available")
			b.ReportMetric(r.cpuToPerGiB(), "cpu-s/GiB-to-available")
			ms = append(ms, r)
		})
		b.Run(fmt.Sprintf("round%d/tusd", i), func(b *testing.B) {
			r := benchTusd(b, tusd, src)
			report(b, r)
			ts = append(ts, r)
		})
		b.Run(fmt.Sprintf("round%d/dd", i), func(b *testing.B) {
			d := benchDD(b, src)
			b.ReportMetric(fileSize/d.Seconds()/1e6, "MB/s")
			dds = append(dds, d)
		})
	}
	if len(ms) != rounds || len(ts) != rounds || len(dds) != rounds {
		b.Fatal("a measurement is missing; docs/benchmarks.md left as it was")
	}
	mftd, peer, dd := medianRun(ms), medianRun(ts), median(dds)

	md := table(mftd, peer, dd, load, rounds)
	fmt.Println(md)
	if err := writeSection(root, "local", md); err != nil {
		b.Fatal(err)
	}
}

// mftdBinary is MFTD_BIN (a prebuilt binary to measure), or else ./cmd/mftd built into a temp folder.
func mftdBinary(b *testing.B, root string) string {
	if bin := os.Getenv("MFTD_BIN"); bin != "" {
		return bin
	}
	bin, err := mftdtest.Build(root, b.TempDir())
	if err != nil {
		b.Fatal(err)
	}
	return bin
}

// sourceFile writes the 2 GiB of pseudo-random data every server receives into os.TempDir and
// returns its path and SHA-256 (hex). The file is removed at cleanup.
func sourceFile(b *testing.B) (path, sum string) {
	path = filepath.Join(os.TempDir(), fmt.Sprintf("mftd-bench-%d.bin", os.Getpid()))
	b.Cleanup(func() { os.Remove(path) })
	sum, err := mftdtest.WriteFile(path, fileSize, 42)
	if err != nil {
		b.Fatal(err)
	}
	return path, sum
}

// benchRounds is BENCH_ROUNDS, or 3.
func benchRounds() int {
	if v, err := strconv.Atoi(os.Getenv("BENCH_ROUNDS")); err == nil && v > 0 {
		return v
	}
	return 3
}

func report(b *testing.B, r serverRun) {
	b.ReportMetric(r.mbps(), "MB/s")
	b.ReportMetric(r.cpuPerGiB(), "cpu-s/GiB")
	b.ReportMetric(r.rssMiB(), "peak-RSS-MiB")
}

// settle writes back the dirty pages earlier steps left (the generated file, the previous
// server's upload), so that each measurement starts from the same state. Outside the timing.
func settle() { syscall.Sync() }

func benchMftd(b *testing.B, bin, src, sum string) serverRun {
	d := mftdtest.Start(b, bin, mftdtest.Options{})
	_, c := d.NewUser("bench")
	settle()
	b.ResetTimer()
	r, url, start, cpu0 := upload(b, c, d.PID(), src, map[string]string{"filename": "bench.bin", "sha256": sum})
	b.StopTimer()

	info, err := c.WaitTerminal(context.Background(), mftdtest.UploadID(url), 10*time.Minute, 50*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	r.toDone = time.Since(start)
	cpu, err := mftdtest.CPUSeconds(d.PID())
	if err != nil {
		b.Fatal(err)
	}
	r.cpuTo = cpu - cpu0
	if r.rss, err = mftdtest.PeakRSS(d.PID()); err != nil {
		b.Fatal(err)
	}
	if info.Status != "available" || info.SHA256 != sum {
		b.Fatalf("mftd: upload ended %q (%s) with sha256 %s, want available with %s", info.Status, info.Reason, info.SHA256, sum)
	}
	d.Stop()
	return r
}

func benchTusd(b *testing.B, bin, src string) serverRun {
	s := mftdtest.StartTusd(b, bin)
	settle()
	b.ResetTimer()
	r, url, _, _ := upload(b, s.Client(), s.PID(), src, map[string]string{"filename": "bench.bin"})
	b.StopTimer()
	var err error
	if r.rss, err = mftdtest.PeakRSS(s.PID()); err != nil {
		b.Fatal(err)
	}
	if st, err := os.Stat(filepath.Join(s.UploadDir, mftdtest.UploadID(url))); err != nil || st.Size() != fileSize {
		b.Fatalf("tusd: stored file: %v %v", st, err)
	}
	return r
}

// upload sends src to the server in 64 MiB PATCHes and measures wall and server CPU time from
// the creation request to the answer to the last PATCH.
func upload(b *testing.B, c *mftdtest.Client, pid int, src string, meta map[string]string) (r serverRun, url string, start time.Time, cpu0 float64) {
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	if cpu0, err = mftdtest.CPUSeconds(pid); err != nil {
		b.Fatal(err)
	}
	start = time.Now()
	resp, err := c.Create(ctx, fileSize, meta)
	if err != nil || resp.Status != http.StatusCreated {
		b.Fatalf("create: %v %v", resp, err)
	}
	url = c.Resolve(resp.Header.Get("Location"))
	for off := int64(0); off < fileSize; off += patchSize {
		n := min(patchSize, fileSize-off)
		resp, err := c.Patch(ctx, url, off, io.NewSectionReader(f, off, n), n, "")
		if err != nil || resp.Status != http.StatusNoContent || resp.Offset() != off+n {
			b.Fatalf("PATCH at %d: %v %v", off, resp, err)
		}
	}
	r.wall = time.Since(start)
	cpu1, err := mftdtest.CPUSeconds(pid)
	if err != nil {
		b.Fatal(err)
	}
	r.cpu = cpu1 - cpu0
	return r, url, start, cpu0
}

func benchDD(b *testing.B, src string) time.Duration {
	out := filepath.Join(b.TempDir(), "dd.out")
	settle()
	b.ResetTimer()
	start := time.Now()
	cmd := exec.Command("dd", "if="+src, "of="+out, "bs=4M", "conv=fdatasync")
	msg, err := cmd.CombinedOutput()
	wall := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatalf("dd: %v\n%s", err, msg)
	}
	b.Logf("dd: %s", strings.TrimSpace(string(msg)))
	if st, err := os.Stat(out); err != nil || st.Size() != fileSize {
		b.Fatalf("dd output: %v %v", st, err)
	}
	os.Remove(out)
	return wall
}

// median returns the middle value (the upper middle for an even count).
func median[T int64 | float64 | time.Duration](v []T) T {
	c := slices.Clone(v)
	slices.Sort(c)
	return c[len(c)/2]
}

// medianOf is the median of f over runs.
func medianOf[R any](rs []R, f func(R) float64) float64 {
	v := make([]float64, len(rs))
	for i, r := range rs {
		v[i] = f(r)
	}
	return median(v)
}

// medianRun is the median of each figure over several runs of one server.
func medianRun(rs []serverRun) serverRun {
	pick := func(f func(serverRun) float64) float64 { return medianOf(rs, f) }
	return serverRun{
		wall:   time.Duration(pick(func(r serverRun) float64 { return float64(r.wall) })),
		cpu:    pick(func(r serverRun) float64 { return r.cpu }),
		rss:    int64(pick(func(r serverRun) float64 { return float64(r.rss) })),
		toDone: time.Duration(pick(func(r serverRun) float64 { return float64(r.toDone) })),
		cpuTo:  pick(func(r serverRun) float64 { return r.cpuTo }),
	}
}

func table(m, t serverRun, dd time.Duration, load string, rounds int) string {
	ddMBps := fileSize / dd.Seconds() / 1e6
	ceiling := min(t.mbps(), ddMBps)
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	var s strings.Builder
	s.WriteString("## Local disk: mftd, tusd's file store, dd\n\n")
	s.WriteString(provenance(load, "Upload$"))
	fmt.Fprintf(&s, "%d rounds; in each, one upload of the same 2 GiB (%d bytes) of pseudo-random data to each server, from a Go tus client "+
		"over HTTPS (HTTP/1.1, self-signed certificate) on 127.0.0.1, in %d MiB PATCHes. mftd runs the minimal config "+
		"(local storage, SQLite, every other key default); tusd v2.9.1 runs its file store with `-disable-download`. "+
		"`dd if=FILE of=OUT bs=4M conv=fdatasync` of the same file is the durable-disk ceiling. Each figure is the "+
		"median over the rounds (each per-round figure is in the `go test -bench` output above the table).\n\n", rounds, fileSize, patchSize>>20)
	s.WriteString("| | mftd | tusd v2.9.1 | dd | mftd/tusd | mftd/dd | target | met |\n")
	s.WriteString("|---|---:|---:|---:|---:|---:|---|---|\n")
	fmt.Fprintf(&s, "| throughput, MB/s (creation → answer to the last PATCH) | %.0f | %.0f | %.0f | %.2f | %.2f | ≥ 0.9 × min(tusd, dd) = %.0f | %s |\n",
		m.mbps(), t.mbps(), ddMBps, m.mbps()/t.mbps(), m.mbps()/ddMBps, 0.9*ceiling, yes(m.mbps() >= 0.9*ceiling))
	fmt.Fprintf(&s, "| server CPU, s/GiB (same span) | %.2f | %.2f | | %.2f | | ≤ 1.0 × tusd | %s |\n",
		m.cpuPerGiB(), t.cpuPerGiB(), m.cpuPerGiB()/t.cpuPerGiB(), yes(m.cpuPerGiB() <= t.cpuPerGiB()))
	fmt.Fprintf(&s, "| server peak RSS (VmHWM), MiB | %.1f | %.1f | | %.2f | | ≤ 64 MiB | %s |\n",
		m.rssMiB(), t.rssMiB(), m.rssMiB()/t.rssMiB(), yes(m.rssMiB() <= 64))
	fmt.Fprintf(&s, "| time until `available`, s (creation → status available: re-read, hash check, scan) | %.2f | | | | | | |\n", m.toDone.Seconds())
	fmt.Fprintf(&s, "| server CPU until `available`, s/GiB | %.2f | | | | | | |\n", m.cpuToPerGiB())
	s.WriteString("\nMB = 10⁶ bytes. Server CPU is utime + stime of the server process from `/proc/PID/stat` (USER_HZ 100), " +
		"its change over the span divided by 2 GiB; the client runs on the same cores. tusd neither hashes nor fsyncs; " +
		"mftd hashes every byte and makes every acknowledged byte durable. The page cache is not dropped (the source " +
		"file is read from memory); `sync` runs before each measurement so that none inherits another's dirty pages, " +
		"and nothing is fsynced beyond what each server does itself. Single runs on this shared 2-core VM vary by " +
		"10–20%, more if the machine is busy (see the load average): hence interleaved rounds and medians.\n")
	return s.String()
}
