package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

const (
	s3PartSize  = 16 << 20 // mftd's part_size and PutObject's PartSize
	minioUser   = "mftdtest"
	minioSecret = "mftdtest-secret"
	minioRegion = "us-east-1"
	// minFree is the free space the S3 benchmark wants on the temp file system before it starts:
	// the 2 GiB source, up to two copies of it in MinIO (mftd's upload and the object it publishes),
	// tusd's spooled parts (up to 20 × 50 MiB) and a margin.
	minFree = 10 << 30
	// samplePeriod is how often the local temp folders are measured during an upload.
	samplePeriod = 50 * time.Millisecond
)

// s3Run is what one upload into S3 cost: the server figures plus MinIO's and the client's share
// and the local disk the server used on the way.
type s3Run struct {
	serverRun
	minioCPU   float64 // MinIO user+system CPU seconds, creation → answer to the last PATCH
	clientCPU  float64 // this process (the client), same span
	tmpPeak    int64   // largest size of the server's TMPDIR, bytes
	dataPeak   int64   // mftd only: largest growth of its data_dir, bytes
	minioCPUTo float64 // mftd only: MinIO CPU seconds, creation → status available
}

func (r s3Run) minioPerGiB() float64   { return r.minioCPU / (fileSize / gib) }
func (r s3Run) clientPerGiB() float64  { return r.clientCPU / (fileSize / gib) }
func (r s3Run) minioToPerGiB() float64 { return r.minioCPUTo / (fileSize / gib) }

// BenchmarkUploadS3 measures 2 GiB through mftd into its S3 backend on MinIO, through tusd
// v2.9.1's S3 store into the same MinIO, and a direct minio-go PutObject of the same file (the
// ceiling), in interleaved rounds, and writes the medians to the "s3" section of
// docs/benchmarks.md.
func BenchmarkUploadS3(b *testing.B) {
	root, err := mftdtest.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	if free := freeBytes(b, os.TempDir()); free < minFree {
		b.Fatalf("%s has %.1f GiB free; the S3 benchmark wants %d GiB", os.TempDir(), float64(free)/gib, minFree>>30)
	} else {
		fmt.Printf("%s: %.1f GiB free at the start\n", os.TempDir(), float64(free)/gib)
	}
	bin := mftdBinary(b, root)
	tusd, err := mftdtest.TusdPath(root)
	if err != nil {
		b.Fatal(err)
	}
	load := loadAvg()
	src, sum := sourceFile(b)
	e := startMinIO(b, root)

	rounds := benchRounds()
	var ms, ts, ps []s3Run
	for i := 1; i <= rounds; i++ {
		b.Run(fmt.Sprintf("round%d/mftd", i), func(b *testing.B) {
			r := benchMftdS3(b, bin, src, sum, e, e.bucket(b, fmt.Sprintf("mftd-r%d", i)))
			reportS3(b, r)
			b.ReportMetric(r.toDone.Seconds(), "s-to-available")
			b.ReportMetric(r.cpuToPerGiB(), "cpu-s/GiB-to-available")
			ms = append(ms, r)
		})
		b.Run(fmt.Sprintf("round%d/tusd", i), func(b *testing.B) {
			r := benchTusdS3(b, tusd, src, e, e.bucket(b, fmt.Sprintf("tusd-r%d", i)))
			reportS3(b, r)
			ts = append(ts, r)
		})
		b.Run(fmt.Sprintf("round%d/putobject", i), func(b *testing.B) {
			r := benchPutObject(b, src, e, e.bucket(b, fmt.Sprintf("put-r%d", i)))
			b.ReportMetric(r.mbps(), "MB/s")
			b.ReportMetric(r.clientPerGiB(), "client-cpu-s/GiB")
			b.ReportMetric(r.minioPerGiB(), "minio-cpu-s/GiB")
			ps = append(ps, r)
		})
	}
	if len(ms) != rounds || len(ts) != rounds || len(ps) != rounds {
		b.Fatal("a measurement is missing; docs/benchmarks.md left as it was")
	}
	md := s3Table(medianS3(ms), medianS3(ts), medianS3(ps), load, rounds)
	fmt.Println(md)
	if err := writeSection(root, "s3", md); err != nil {
		b.Fatal(err)
	}
}

func reportS3(b *testing.B, r s3Run) {
	report(b, r.serverRun)
	b.ReportMetric(r.clientPerGiB(), "client-cpu-s/GiB")
	b.ReportMetric(r.minioPerGiB(), "minio-cpu-s/GiB")
	b.ReportMetric(float64(r.tmpPeak)/(1<<20), "tmp-peak-MiB")
}

func benchMftdS3(b *testing.B, bin, src, sum string, e *minioServer, bucket string) s3Run {
	// The first TempDir of a (sub-)benchmark fixes the parent of all its later ones, so
	// mftdtest.Start's folders go beside tmp, not into it, although TMPDIR names tmp meanwhile.
	tmp := b.TempDir()
	var d *mftdtest.Daemon
	withEnv("TMPDIR", tmp, func() { // inherited by the daemon only
		d = mftdtest.Start(b, bin, mftdtest.Options{StorageYAML: fmt.Sprintf(
			"storage:\n  backend: s3\n  s3: {endpoint: %q, bucket: %s, access_key: %s, secret_key: %s, part_size: %dMiB}\n",
			e.endpoint, bucket, minioUser, minioSecret, s3PartSize>>20)})
	})
	_, c := d.NewUser("bench")
	data0 := dirSize(d.DataDir)
	settle()
	tmpPeak, dataPeak := sampleSize(tmp), sampleSize(d.DataDir)
	minio0, self0 := cpuOf(b, e.pid), cpuOf(b, os.Getpid())
	b.ResetTimer()
	sr, url, start, cpu0 := upload(b, c, d.PID(), src, map[string]string{"filename": "bench.bin", "sha256": sum})
	b.StopTimer()
	r := s3Run{serverRun: sr, minioCPU: cpuOf(b, e.pid) - minio0, clientCPU: cpuOf(b, os.Getpid()) - self0}

	info, err := c.WaitTerminal(context.Background(), mftdtest.UploadID(url), 10*time.Minute, 50*time.Millisecond)
	if err != nil {
		b.Fatal(err)
	}
	r.toDone = time.Since(start)
	r.cpuTo = cpuOf(b, d.PID()) - cpu0
	r.minioCPUTo = cpuOf(b, e.pid) - minio0
	r.tmpPeak, r.dataPeak = tmpPeak(), max(0, dataPeak()-data0)
	if r.rss, err = mftdtest.PeakRSS(d.PID()); err != nil {
		b.Fatal(err)
	}
	if info.Status != "available" || info.SHA256 != sum {
		b.Fatalf("mftd: upload ended %q (%s) with sha256 %s, want available with %s", info.Status, info.Reason, info.SHA256, sum)
	}
	e.wantObject(b, bucket, "arrivals/bench/bench.bin")
	d.Stop()
	return r
}

func benchTusdS3(b *testing.B, bin, src string, e *minioServer, bucket string) s3Run {
	tmp := b.TempDir()
	s := startTusdS3(b, bin, e, bucket, tmp)
	settle()
	tmpPeak := sampleSize(tmp)
	minio0, self0 := cpuOf(b, e.pid), cpuOf(b, os.Getpid())
	b.ResetTimer()
	sr, url, _, _ := upload(b, s.Client(), s.PID(), src, map[string]string{"filename": "bench.bin"})
	b.StopTimer()
	r := s3Run{serverRun: sr, minioCPU: cpuOf(b, e.pid) - minio0, clientCPU: cpuOf(b, os.Getpid()) - self0}
	r.tmpPeak = tmpPeak()
	var err error
	if r.rss, err = mftdtest.PeakRSS(s.PID()); err != nil {
		b.Fatal(err)
	}
	// tusd's upload ID is OBJECT+MULTIPART-ID; the object is OBJECT, completed by the last PATCH.
	key, _, _ := strings.Cut(mftdtest.UploadID(url), "+")
	e.wantObject(b, bucket, key)
	s.Stop(b)
	return r
}

// benchPutObject is the ceiling: minio-go's PutObject of the file straight into MinIO from this
// process (it reads the file with ReadAt, several parts in flight, as minio-go does by default).
func benchPutObject(b *testing.B, src string, e *minioServer, bucket string) s3Run {
	f, err := os.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	settle()
	minio0, self0 := cpuOf(b, e.pid), cpuOf(b, os.Getpid())
	b.ResetTimer()
	start := time.Now()
	info, err := e.mc.PutObject(ctx, bucket, "bench.bin", f, fileSize,
		minio.PutObjectOptions{PartSize: s3PartSize, ContentType: "application/octet-stream"})
	wall := time.Since(start)
	b.StopTimer()
	if err != nil {
		b.Fatalf("PutObject: %v", err)
	}
	if info.Size != fileSize {
		b.Fatalf("PutObject stored %d bytes, want %d", info.Size, fileSize)
	}
	return s3Run{
		serverRun: serverRun{wall: wall},
		minioCPU:  cpuOf(b, e.pid) - minio0,
		clientCPU: cpuOf(b, os.Getpid()) - self0,
	}
}

// medianS3 is the median of each figure over several runs of one contestant.
func medianS3(rs []s3Run) s3Run {
	base := make([]serverRun, len(rs))
	for i, r := range rs {
		base[i] = r.serverRun
	}
	pick := func(f func(s3Run) float64) float64 { return medianOf(rs, f) }
	return s3Run{
		serverRun:  medianRun(base),
		minioCPU:   pick(func(r s3Run) float64 { return r.minioCPU }),
		clientCPU:  pick(func(r s3Run) float64 { return r.clientCPU }),
		tmpPeak:    int64(pick(func(r s3Run) float64 { return float64(r.tmpPeak) })),
		dataPeak:   int64(pick(func(r s3Run) float64 { return float64(r.dataPeak) })),
		minioCPUTo: pick(func(r s3Run) float64 { return r.minioCPUTo }),
	}
}

func s3Table(m, t, p s3Run, load string, rounds int) string {
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	mib := func(n int64) float64 { return float64(n) / (1 << 20) }
	var s strings.Builder
	s.WriteString("## S3 (MinIO): mftd's S3 backend, tusd's S3 store, direct PutObject\n\n")
	s.WriteString(provenance(load, "UploadS3"))
	fmt.Fprintf(&s, "%d rounds; in each, one upload of the same 2 GiB (%d bytes) of pseudo-random data through each contestant into "+
		"one MinIO (single drive, its data on the local disk, plain HTTP on 127.0.0.1), each into its own fresh bucket, "+
		"emptied and removed after its measurement. mftd and tusd get the same Go tus client over HTTPS (HTTP/1.1, "+
		"self-signed certificate) on 127.0.0.1, in %d MiB PATCHes. mftd runs `storage: {backend: s3, s3: {endpoint, "+
		"bucket, access_key, secret_key, part_size: %dMiB}}` (SQLite, every other key default); tusd v2.9.1 runs "+
		"`-s3-bucket B -s3-endpoint http://127.0.0.1:PORT -disable-download` plus `-tls-certificate`/`-tls-key` (for "+
		"HTTPS, like mftd), with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION=us-east-1 and its S3 defaults "+
		"(50 MiB parts, 10 concurrent part uploads, up to 20 buffered parts). The ceiling is minio-go v7.4.1 "+
		"`PutObject` of the same file with a %d MiB PartSize, from the benchmark process. Each figure is the median "+
		"over the rounds (each per-round figure is in the `go test -bench` output above the table).\n\n",
		rounds, fileSize, patchSize>>20, s3PartSize>>20, s3PartSize>>20)
	s.WriteString("| | mftd | tusd v2.9.1 S3 | PutObject | mftd/tusd | mftd/PutObject | target | met |\n")
	s.WriteString("|---|---:|---:|---:|---:|---:|---|---|\n")
	fmt.Fprintf(&s, "| throughput, MB/s (creation → answer to the last PATCH; PutObject: call → return) | %.0f | %.0f | %.0f | %.2f | %.2f | "+
		"≥ 1.5 × tusd = %.0f; ≥ 0.8 × PutObject = %.0f | %s; %s |\n",
		m.mbps(), t.mbps(), p.mbps(), m.mbps()/t.mbps(), m.mbps()/p.mbps(),
		1.5*t.mbps(), 0.8*p.mbps(), yes(m.mbps() >= 1.5*t.mbps()), yes(m.mbps() >= 0.8*p.mbps()))
	fmt.Fprintf(&s, "| server CPU, s/GiB (same span) | %.2f | %.2f | n/a (no server) | %.2f | | | |\n",
		m.cpuPerGiB(), t.cpuPerGiB(), m.cpuPerGiB()/t.cpuPerGiB())
	fmt.Fprintf(&s, "| client CPU, s/GiB (the benchmark process: tus client over HTTPS, or minio-go PutObject over HTTP) | %.2f | %.2f | %.2f | | | | |\n",
		m.clientPerGiB(), t.clientPerGiB(), p.clientPerGiB())
	fmt.Fprintf(&s, "| MinIO CPU, s/GiB (same span) | %.2f | %.2f | %.2f | %.2f | %.2f | | |\n",
		m.minioPerGiB(), t.minioPerGiB(), p.minioPerGiB(), m.minioPerGiB()/t.minioPerGiB(), m.minioPerGiB()/p.minioPerGiB())
	fmt.Fprintf(&s, "| server peak RSS (VmHWM), MiB | %.1f | %.1f | n/a | %.2f | | ≤ 128 MiB (%d MiB parts) | %s |\n",
		m.rssMiB(), t.rssMiB(), m.rssMiB()/t.rssMiB(), s3PartSize>>20, yes(m.rssMiB() <= 128))
	fmt.Fprintf(&s, "| local temp disk, peak MiB (the server's own TMPDIR) | %.1f | %.1f | n/a | | | 0 | %s |\n",
		mib(m.tmpPeak), mib(t.tmpPeak), yes(m.tmpPeak == 0))
	fmt.Fprintf(&s, "| local disk under data_dir, peak growth, MiB (SQLite and anything else) | %.1f | | | | | | |\n", mib(m.dataPeak))
	fmt.Fprintf(&s, "| time until `available`, s (creation → status available: re-read, hash check, scan, publish) | %.2f | | | | | | |\n", m.toDone.Seconds())
	fmt.Fprintf(&s, "| server CPU until `available`, s/GiB | %.2f | | | | | | |\n", m.cpuToPerGiB())
	fmt.Fprintf(&s, "| MinIO CPU until `available`, s/GiB | %.2f | | | | | | |\n", m.minioToPerGiB())
	s.WriteString("\nMB = 10⁶ bytes. CPU figures are utime + stime from `/proc/PID/stat` (USER_HZ 100) of the server, of MinIO " +
		"(its PID from minio.pid) and of the benchmark process, their change over the span divided by 2 GiB; all run on " +
		"the same 2 cores. PutObject has no server: its client CPU is the benchmark process's while PutObject runs, and " +
		"it has no RSS or temp-disk figure. Peak RSS is VmHWM at the end (for mftd after `available`). Local disk: " +
		"each server runs with TMPDIR set to its own empty folder, whose size (the sum of its files' sizes) is polled " +
		"every 50 ms and the largest value kept, from creation to the last PATCH's answer for tusd and to `available` " +
		"for mftd; mftd's data_dir is polled alike and its growth over the start is shown, so that a spool moved " +
		"there would show. tusd neither hashes nor scans; mftd hashes every byte and makes every acknowledged byte " +
		"durable in S3 before it answers. `sync` runs before each measurement. Single runs on this shared 2-core VM " +
		"vary by 10–20%, more if the machine is busy (see the load average): hence interleaved rounds and medians.\n")
	return s.String()
}

// minioServer is a throwaway MinIO started by integration/scripts/minio.sh.
type minioServer struct {
	endpoint string // 127.0.0.1:PORT
	dir      string // minio.sh's folder: data/, minio.log, minio.pid
	pid      int
	mc       *minio.Client
}

// startMinIO runs MinIO (built by integration/scripts/install-minio.sh) for the benchmark and
// stops it, by the PID minio.sh recorded, at cleanup.
func startMinIO(b *testing.B, root string) *minioServer {
	port, err := mftdtest.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	e := &minioServer{endpoint: net.JoinHostPort("127.0.0.1", strconv.Itoa(port)), dir: b.TempDir()}
	script := filepath.Join(root, "integration", "scripts", "minio.sh")
	out, err := exec.Command("bash", script, "start", e.dir, strconv.Itoa(port)).CombinedOutput()
	b.Cleanup(func() {
		if out, err := exec.Command("bash", script, "stop", e.dir).CombinedOutput(); err != nil {
			b.Errorf("stop MinIO: %v\n%s", err, out)
		}
	})
	if err != nil {
		b.Fatalf("start MinIO (integration/scripts/minio.sh): %v\n%s", err, out)
	}
	pid, err := os.ReadFile(filepath.Join(e.dir, "minio.pid"))
	if err != nil {
		b.Fatal(err)
	}
	if e.pid, err = strconv.Atoi(strings.TrimSpace(string(pid))); err != nil {
		b.Fatalf("minio.pid: %v", err)
	}
	e.mc, err = minio.New(e.endpoint, &minio.Options{Creds: credentials.NewStaticV4(minioUser, minioSecret, ""), Region: minioRegion})
	if err != nil {
		b.Fatal(err)
	}
	return e
}

// bucket makes an empty bucket; at the (sub-)benchmark's cleanup it is emptied (objects and
// incomplete multipart uploads) and removed, so that MinIO's disk holds one upload at a time.
func (e *minioServer) bucket(b *testing.B, name string) string {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := e.mc.MakeBucket(ctx, name, minio.MakeBucketOptions{Region: minioRegion}); err != nil {
		b.Fatalf("make bucket %s: %v", name, err)
	}
	b.Cleanup(func() {
		if err := e.drop(name); err != nil {
			b.Errorf("remove bucket %s: %v", name, err)
		}
		if err := e.purgeTrash(); err != nil {
			b.Errorf("purge MinIO's trash: %v", err)
		}
		b.Logf("MinIO data after removing bucket %s: %.1f MiB; %.1f GiB free", name,
			float64(dirSize(filepath.Join(e.dir, "data")))/(1<<20), float64(freeBytes(b, e.dir))/gib)
	})
	return name
}

func (e *minioServer) drop(bucket string) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	for u := range e.mc.ListIncompleteUploads(ctx, bucket, "", true) {
		if u.Err != nil {
			return u.Err
		}
		if err := e.mc.RemoveIncompleteUpload(ctx, bucket, u.Key); err != nil {
			return err
		}
	}
	objects := e.mc.ListObjects(ctx, bucket, minio.ListObjectsOptions{Recursive: true})
	for r := range e.mc.RemoveObjects(ctx, bucket, objects, minio.RemoveObjectsOptions{}) {
		if r.Err != nil {
			return fmt.Errorf("remove %s: %w", r.ObjectName, r.Err)
		}
	}
	return e.mc.RemoveBucket(ctx, bucket)
}

// purgeTrash removes what MinIO has deleted but not yet purged. A single-drive MinIO moves deleted
// objects into DATA/.minio.sys/tmp/.trash and purges that folder only every 5 minutes (the first
// time regardless of MINIO_API_DELETE_CLEANUP_INTERVAL), so without this the disk would hold every
// round's uploads. The entries there belong to no object any more: removing them is what MinIO's
// own purge does, and it does not have to happen in the middle of the next measurement.
func (e *minioServer) purgeTrash() error {
	trash := filepath.Join(e.dir, "data", ".minio.sys", "tmp", ".trash")
	entries, err := os.ReadDir(trash)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	for _, d := range entries {
		if err := os.RemoveAll(filepath.Join(trash, d.Name())); err != nil {
			return err
		}
	}
	return nil
}

// wantObject fails the benchmark unless bucket holds key with fileSize bytes.
func (e *minioServer) wantObject(b *testing.B, bucket, key string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	st, err := e.mc.StatObject(ctx, bucket, key, minio.StatObjectOptions{})
	if err != nil || st.Size != fileSize {
		b.Fatalf("%s/%s: %d bytes, %v; want %d bytes", bucket, key, st.Size, err, fileSize)
	}
}

// startTusdS3 starts tusd with its S3 store on MinIO and TMPDIR set to tmp (where that store
// spools parts).
func startTusdS3(b *testing.B, bin string, e *minioServer, bucket, tmp string) *mftdtest.Tusd {
	return mftdtest.StartTusdWith(b, bin, []string{"-s3-bucket", bucket, "-s3-endpoint", "http://" + e.endpoint},
		append(environWithout("TMPDIR", "AWS_"), "TMPDIR="+tmp,
			"AWS_ACCESS_KEY_ID="+minioUser, "AWS_SECRET_ACCESS_KEY="+minioSecret, "AWS_REGION="+minioRegion))
}

// environWithout is this process's environment without the variables named, or starting with a
// prefix ending in "_".
func environWithout(names ...string) []string {
	var env []string
next:
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		for _, n := range names {
			if k == n || strings.HasSuffix(n, "_") && strings.HasPrefix(k, n) {
				continue next
			}
		}
		env = append(env, kv)
	}
	return env
}

// withEnv runs fn with the environment variable key set to value (for the processes fn starts),
// and restores it afterwards, also if fn fails the benchmark.
func withEnv(key, value string, fn func()) {
	old, had := os.LookupEnv(key)
	os.Setenv(key, value)
	defer func() {
		if had {
			os.Setenv(key, old)
		} else {
			os.Unsetenv(key)
		}
	}()
	fn()
}

// sampleSize measures dir's size (see dirSize) every samplePeriod until the returned function is
// called; that function returns the largest size seen, the last one taken when it was called.
func sampleSize(dir string) (stop func() int64) {
	done, peak := make(chan struct{}), make(chan int64)
	go func() {
		t := time.NewTicker(samplePeriod)
		defer t.Stop()
		var top int64
		for {
			top = max(top, dirSize(dir))
			select {
			case <-done:
				peak <- max(top, dirSize(dir))
				return
			case <-t.C:
			}
		}
	}()
	return func() int64 {
		close(done)
		return <-peak
	}
}

// dirSize is the sum of the sizes of the regular files under dir; files that vanish while it
// walks count as nothing.
func dirSize(dir string) int64 {
	var n int64
	filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.Type().IsRegular() {
			if info, err := d.Info(); err == nil {
				n += info.Size()
			}
		}
		return nil
	})
	return n
}

// freeBytes is the space available to this user on the file system holding path.
func freeBytes(b *testing.B, path string) int64 {
	var st syscall.Statfs_t
	if err := syscall.Statfs(path, &st); err != nil {
		b.Fatalf("statfs %s: %v", path, err)
	}
	return int64(st.Bavail) * st.Bsize
}

func cpuOf(b *testing.B, pid int) float64 {
	s, err := mftdtest.CPUSeconds(pid)
	if err != nil {
		b.Fatal(err)
	}
	return s
}

// tailFile is the last n bytes of the file at path, or why it cannot be read.
func tailFile(path string, n int64) string {
	f, err := os.Open(path)
	if err != nil {
		return err.Error()
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.Size() > n {
		f.Seek(st.Size()-n, io.SeekStart)
	}
	b, err := io.ReadAll(f)
	if err != nil && !errors.Is(err, io.EOF) {
		return err.Error()
	}
	return string(b)
}
