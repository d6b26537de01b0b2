package bench

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mftd/mftd/integration/internal/mftdtest"
)

const (
	sshdBin = "/usr/sbin/sshd"
	// sshdPrivsepDir must exist for sshd to start (bench.sh creates it).
	sshdPrivsepDir = "/run/sshd"
	// sftpName is the file each upload writes: /upload/NAME in mftd (an Arrival NAME once
	// checked), DEST/NAME in OpenSSH's fresh destination folder.
	sftpName = "bench.bin"
	// treePeriod is how often the OpenSSH session's processes are read from /proc.
	treePeriod = 50 * time.Millisecond
)

// sftpMode is one set of client options every server is measured with.
type sftpMode struct {
	name  string   // sub-benchmark name
	label string   // for the table
	args  []string // sftp options
}

var sftpModes = []sftpMode{
	{"aes128-gcm", "(a) `-c aes128-gcm@openssh.com -B 261120 -R 64`",
		[]string{"-c", "aes128-gcm@openssh.com", "-B", "261120", "-R", "64"}},
	{"defaults", "(b) the client's defaults (32 KiB writes, 64 outstanding)", nil},
}

// sftpRun is what one `sftp put` of the 2 GiB file cost one server.
type sftpRun struct {
	serverRun         // wall: sftp started → sftp exited; cpu: server CPU over that span (see the notes); rss
	cipher    string  // client→server cipher the client negotiated (from `sftp -v`)
	liveCPU   float64 // OpenSSH only: utime+stime of the session's processes, read while they ran
}

// BenchmarkUploadSFTP measures 2 GiB uploaded with the OpenSSH sftp client (batch `put`) into
// mftd's SFTP door and into OpenSSH's own sftp server (a throwaway sshd with internal-sftp), with
// AES-GCM and large requests and with the client's defaults, in interleaved rounds, and writes
// the medians to the "sftp" section of docs/benchmarks.md. It needs sshd (openssh-server) and
// /run/sshd, which integration/scripts/bench.sh installs.
func BenchmarkUploadSFTP(b *testing.B) {
	root, err := mftdtest.RepoRoot()
	if err != nil {
		b.Fatal(err)
	}
	for _, p := range []string{sshdBin, sshdPrivsepDir} {
		if _, err := os.Stat(p); err != nil {
			b.Fatalf("%v: install openssh-server and create %s (integration/scripts/bench.sh does both)", err, sshdPrivsepDir)
		}
	}
	bin := mftdBinary(b, root)
	load := loadAvg()
	src, sum := sourceFile(b)
	cl := newSFTPClient(b)

	rounds := benchRounds()
	ms := make(map[string][]sftpRun) // by mode: mftd
	ps := make(map[string][]sftpRun) // by mode: OpenSSH
	for i := 1; i <= rounds; i++ {
		for _, m := range sftpModes {
			b.Run(fmt.Sprintf("round%d/mftd/%s", i, m.name), func(b *testing.B) {
				r := benchMftdSFTP(b, bin, cl, src, sum, m)
				report(b, r.serverRun)
				b.ReportMetric(r.toDone.Seconds(), "s-to-available")
				ms[m.name] = append(ms[m.name], r)
			})
			b.Run(fmt.Sprintf("round%d/openssh/%s", i, m.name), func(b *testing.B) {
				r := benchOpenSSH(b, cl, src, m)
				report(b, r.serverRun)
				b.ReportMetric(r.liveCPU/(fileSize/gib), "live-cpu-s/GiB")
				ps[m.name] = append(ps[m.name], r)
			})
		}
	}
	var mm, om []sftpRun
	for _, m := range sftpModes {
		if len(ms[m.name]) != rounds || len(ps[m.name]) != rounds {
			b.Fatal("a measurement is missing; docs/benchmarks.md left as it was")
		}
		mm, om = append(mm, medianSFTP(ms[m.name])), append(om, medianSFTP(ps[m.name]))
	}
	md := sftpTable(mm, om, load, rounds)
	fmt.Println(md)
	if err := writeSection(root, "sftp", md); err != nil {
		b.Fatal(err)
	}
}

// sftpClient is what every run of the OpenSSH sftp client shares: one ed25519 key (registered
// with mftd, authorized in sshd) and an askpass program that answers mftd's code prompt.
type sftpClient struct {
	key     string // private key file; its public half is key+".pub"
	pub     []byte
	askpass string // prints $MFTD_BENCH_CODE for a "Verification code:" prompt
}

func newSFTPClient(b *testing.B) *sftpClient {
	dir := b.TempDir()
	c := &sftpClient{key: filepath.Join(dir, "id_ed25519"), askpass: filepath.Join(dir, "askpass")}
	runTool(b, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "mftd-bench", "-f", c.key)
	var err error
	if c.pub, err = os.ReadFile(c.key + ".pub"); err != nil {
		b.Fatal(err)
	}
	script := "#!/bin/sh\n" +
		"# The askpass program of BenchmarkUploadSFTP: ssh runs it with the prompt as its argument.\n" +
		"case \"$1\" in\n*'Verification code:'*) printf '%s\\n' \"$MFTD_BENCH_CODE\"; exit 0 ;;\nesac\n" +
		"echo \"askpass: unexpected prompt: $1\" >&2\nexit 1\n"
	if err := os.WriteFile(c.askpass, []byte(script), 0o700); err != nil {
		b.Fatal(err)
	}
	return c
}

// runTool runs a short command and returns its standard output; it fails the benchmark on error.
func runTool(b *testing.B, name string, args ...string) string {
	var stderr bytes.Buffer
	cmd := exec.Command(name, args...)
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		b.Fatalf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, out, stderr.Bytes())
	}
	return string(out)
}

// put uploads src with `sftp -b` (one `put src dst` line) to user@addr and returns the wall
// time from starting sftp to its exit and the client→server cipher it negotiated. The host key
// must match hostPub. With code set, the client answers mftd's code prompt through askpass
// (key + code); without, it logs in with the key alone. The client reads no ssh_config (-F
// /dev/null): "defaults" are the compiled-in ones.
func (c *sftpClient) put(b *testing.B, addr, user, hostPub, code, src, dst string, m sftpMode) (time.Duration, string) {
	dir := b.TempDir()
	host, port, _ := strings.Cut(addr, ":")
	knownHosts := filepath.Join(dir, "known_hosts")
	if err := os.WriteFile(knownHosts, []byte(fmt.Sprintf("[%s]:%s %s\n", host, port, strings.TrimSpace(hostPub))), 0o600); err != nil {
		b.Fatal(err)
	}
	batch := filepath.Join(dir, "batch")
	if err := os.WriteFile(batch, []byte(fmt.Sprintf("put \"%s\" \"%s\"\n", src, dst)), 0o600); err != nil {
		b.Fatal(err)
	}
	args := []string{"-v", "-F", "/dev/null", "-P", port, "-i", c.key,
		"-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none",
		"-o", "UserKnownHostsFile=" + knownHosts, "-o", "GlobalKnownHostsFile=/dev/null", "-o", "StrictHostKeyChecking=yes"}
	env := environWithout("SSH_AUTH_SOCK", "SSH_ASKPASS", "SSH_ASKPASS_REQUIRE", "DISPLAY", "MFTD_BENCH_CODE")
	if code != "" {
		// sftp -b turns BatchMode on, which disables every prompt; the first value given wins.
		args = append(args, "-o", "BatchMode=no", "-o", "PreferredAuthentications=publickey,keyboard-interactive")
		env = append(env, "SSH_ASKPASS="+c.askpass, "SSH_ASKPASS_REQUIRE=force", "MFTD_BENCH_CODE="+code)
	} else {
		args = append(args, "-o", "PreferredAuthentications=publickey")
	}
	args = append(append(args, m.args...), "-b", batch, user+"@"+host)

	logPath := filepath.Join(dir, "sftp.log")
	logf, err := os.Create(logPath)
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sftp", args...)
	cmd.Env, cmd.Stdout, cmd.Stderr = env, logf, logf
	// No controlling terminal: ssh asks askpass, never /dev/tty.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true, Pdeathsig: syscall.SIGKILL}
	start := time.Now()
	err = cmd.Run()
	wall := time.Since(start)
	if err != nil {
		b.Fatalf("sftp %s: %v\n%s", strings.Join(args, " "), err, tailFile(logPath, 8<<10))
	}
	log, err := os.ReadFile(logPath)
	if err != nil {
		b.Fatal(err)
	}
	cipher := negotiatedCipher(log)
	if i := slices.Index(m.args, "-c"); i >= 0 && cipher != m.args[i+1] {
		b.Fatalf("sftp negotiated cipher %q, want %q", cipher, m.args[i+1])
	}
	return wall, cipher
}

// negotiatedCipher is the client→server cipher from `ssh -v` output ("" if not found).
func negotiatedCipher(log []byte) string {
	sc := bufio.NewScanner(bytes.NewReader(log))
	for sc.Scan() {
		if _, after, ok := strings.Cut(sc.Text(), "kex: client->server cipher: "); ok {
			if f := strings.Fields(after); len(f) > 0 {
				return f[0]
			}
		}
	}
	return ""
}

// totpClock hands out TOTP steps for one account: mftd accepts each step once per account,
// within ±1 step of now, each after the last one used. It waits for the next 30 s window when
// the allowed ones are used up.
type totpClock struct{ last int64 }

func (t *totpClock) next() time.Time {
	for {
		cur := time.Now().Unix() / 30
		if n := max(t.last+1, cur); n <= cur+1 {
			t.last = n
			return time.Unix(n*30, 0)
		}
		time.Sleep(time.Until(time.Unix((cur+1)*30, 0)) + 100*time.Millisecond)
	}
}

func benchMftdSFTP(b *testing.B, bin string, cl *sftpClient, src, sum string, m sftpMode) sftpRun {
	d := mftdtest.Start(b, bin, mftdtest.Options{SFTP: true})
	u := d.AddUser("bench")
	if r := d.Admin(string(cl.pub), "user", "add-key", u.Name); r.Code != 0 {
		b.Fatalf("mftd user add-key: exit %d\n%s%s", r.Code, r.Stdout, r.Stderr)
	}
	steps := &totpClock{}
	api := d.Client(d.Login(u, steps.next()))
	hostPub := runTool(b, "ssh-keygen", "-y", "-f", filepath.Join(d.DataDir, "keys", "ssh_host_ed25519_key"))
	code := mftdtest.Code(b, u.Secret, steps.next())
	settle()
	cpu0 := cpuOf(b, d.PID())
	b.ResetTimer()
	start := time.Now()
	wall, cipher := cl.put(b, d.SFTPAddr, u.Name, hostPub, code, src, "/upload/"+sftpName, m)
	b.StopTimer()
	r := sftpRun{serverRun: serverRun{wall: wall, cpu: cpuOf(b, d.PID()) - cpu0}, cipher: cipher}

	// A clean close queued the upload for its checks; it must arrive whole, with the source's hash.
	a := waitArrival(b, api, sftpName, 10*time.Minute)
	r.toDone = time.Since(start)
	r.cpuTo = cpuOf(b, d.PID()) - cpu0
	if a.Size != fileSize || a.SHA256 != sum {
		b.Fatalf("mftd: arrival %s has %d bytes, sha256 %s; want %d bytes, sha256 %s", a.Name, a.Size, a.SHA256, int64(fileSize), sum)
	}
	var err error
	if r.rss, err = mftdtest.PeakRSS(d.PID()); err != nil {
		b.Fatal(err)
	}
	d.Stop()
	return r
}

// waitArrival polls the Arrivals listing until name is in it.
func waitArrival(b *testing.B, c *mftdtest.Client, name string, timeout time.Duration) mftdtest.Arrival {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for {
		files, err := c.Arrivals(ctx)
		if err != nil && ctx.Err() == nil {
			b.Fatal(err)
		}
		for _, f := range files {
			if f.Name == name {
				return f
			}
		}
		select {
		case <-ctx.Done():
			b.Fatalf("mftd: %s not in Arrivals %v after the upload", name, timeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func benchOpenSSH(b *testing.B, cl *sftpClient, src string, m sftpMode) sftpRun {
	s := startSSHD(b, cl.pub)
	me, err := user.Current()
	if err != nil {
		b.Fatal(err)
	}
	dst := filepath.Join(s.dest, sftpName)
	settle()
	t0 := s.treeTicks(b)
	sample := sampleTree(s.pid())
	b.ResetTimer()
	wall, cipher := cl.put(b, s.addr, me.Username, s.hostPub, "", src, dst, m)
	b.StopTimer()
	live := sample()
	// The session's processes exit and are reaped right after the client: wait for that, so
	// that their CPU time has been added to the listener's cutime and cstime.
	s.waitNoChildren(b, 30*time.Second)
	r := sftpRun{
		serverRun: serverRun{wall: wall, cpu: float64(s.treeTicks(b)-t0) / clockTicks, rss: live.peakHWM},
		cipher:    cipher,
		liveCPU:   float64(live.ticks) / clockTicks,
	}
	if st, err := os.Stat(dst); err != nil || st.Size() != fileSize {
		b.Fatalf("OpenSSH: stored file: %v %v; want %d bytes", st, err, int64(fileSize))
	}
	os.Remove(dst)
	s.stop(b)
	return r
}

// clockTicks is USER_HZ, the unit of the times in /proc/PID/stat.
const clockTicks = 100

// sshd is a throwaway OpenSSH server: `sshd -D -e -f CONFIG` on a free port of 127.0.0.1, with
// its host key, authorized_keys and config in a temp folder, internal-sftp as the sftp
// subsystem and a fresh, empty destination folder.
type sshd struct {
	addr    string
	hostPub string
	dest    string
	logPath string
	cmd     *exec.Cmd
	exited  <-chan struct{}
}

func startSSHD(b *testing.B, authorized []byte) *sshd {
	dir := b.TempDir()
	port, err := mftdtest.FreePort()
	if err != nil {
		b.Fatal(err)
	}
	s := &sshd{addr: fmt.Sprintf("127.0.0.1:%d", port), dest: filepath.Join(dir, "dest"),
		logPath: filepath.Join(dir, "sshd.log")}
	hostKey := filepath.Join(dir, "ssh_host_ed25519_key")
	runTool(b, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", hostKey)
	pub, err := os.ReadFile(hostKey + ".pub")
	if err != nil {
		b.Fatal(err)
	}
	s.hostPub = string(pub)
	authKeys := filepath.Join(dir, "authorized_keys")
	if err := os.WriteFile(authKeys, authorized, 0o600); err != nil {
		b.Fatal(err)
	}
	if err := os.Mkdir(s.dest, 0o755); err != nil {
		b.Fatal(err)
	}
	config := filepath.Join(dir, "sshd_config")
	conf := fmt.Sprintf("ListenAddress 127.0.0.1\nPort %d\nHostKey %s\nAuthorizedKeysFile %s\n"+
		"PermitRootLogin prohibit-password\nPubkeyAuthentication yes\nPasswordAuthentication no\n"+
		"KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nPidFile none\nLogLevel INFO\n"+
		"Subsystem sftp internal-sftp\n", port, hostKey, authKeys)
	if err := os.WriteFile(config, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	s.cmd = exec.Command(sshdBin, "-D", "-e", "-f", config)
	s.exited = startLogged(b, "sshd", s.cmd, s.logPath)
	// Ready once it logs that it listens (a probe connection would start a session of its own).
	want := fmt.Sprintf("Server listening on 127.0.0.1 port %d.", port)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-s.exited:
			b.Fatalf("sshd exited during start-up:\n%s", tailFile(s.logPath, 16<<10))
		default:
		}
		if log, _ := os.ReadFile(s.logPath); bytes.Contains(log, []byte(want)) {
			return s
		}
		if time.Now().After(deadline) {
			b.Fatalf("sshd not listening after 30s:\n%s", tailFile(s.logPath, 16<<10))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (s *sshd) pid() int { return s.cmd.Process.Pid }

// treeTicks is the listener's utime+stime+cutime+cstime in clock ticks: its own CPU time and
// that of every descendant that has exited and been waited for (each sshd process waits for
// its children, so a finished session's whole tree is in it).
func (s *sshd) treeTicks(b *testing.B) int64 {
	t, err := procTicks(s.pid())
	if err != nil {
		b.Fatal(err)
	}
	return t.utime + t.stime + t.cutime + t.cstime
}

// waitNoChildren waits until the listener has no child process left.
func (s *sshd) waitNoChildren(b *testing.B, timeout time.Duration) {
	deadline := time.Now().Add(timeout)
	for len(children(s.pid())) > 0 {
		if time.Now().After(deadline) {
			b.Fatalf("sshd: session processes %v still running %v after the client exited", children(s.pid()), timeout)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM and waits up to a minute for sshd to exit.
func (s *sshd) stop(b *testing.B) {
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(time.Minute):
		b.Fatalf("sshd (pid %d) still running a minute after SIGTERM", s.pid())
	}
}

// ticks are the CPU times of /proc/PID/stat (fields 14-17), in clock ticks.
type ticks struct{ utime, stime, cutime, cstime int64 }

func procTicks(pid int) (ticks, error) {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return ticks{}, err
	}
	// The command name (field 2) may hold spaces; the fields after its closing ')' are plain.
	i := bytes.LastIndexByte(raw, ')')
	if i < 0 {
		return ticks{}, fmt.Errorf("/proc/%d/stat: no ')'", pid)
	}
	f := strings.Fields(string(raw[i+1:])) // f[0] is field 3
	if len(f) < 15 {
		return ticks{}, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	var v [4]int64
	for k := range v {
		if v[k], err = strconv.ParseInt(f[11+k], 10, 64); err != nil {
			return ticks{}, fmt.Errorf("/proc/%d/stat field %d: %w", pid, 14+k, err)
		}
	}
	return ticks{v[0], v[1], v[2], v[3]}, nil
}

// children are pid's child processes (sshd is single-threaded: its main task has them all).
func children(pid int) []int {
	raw, err := os.ReadFile(fmt.Sprintf("/proc/%d/task/%d/children", pid, pid))
	if err != nil {
		return nil
	}
	var out []int
	for _, f := range strings.Fields(string(raw)) {
		if c, err := strconv.Atoi(f); err == nil {
			out = append(out, c)
		}
	}
	return out
}

// descendants are pid's children, their children, and so on.
func descendants(pid int) []int {
	var out []int
	for _, c := range children(pid) {
		out = append(append(out, c), descendants(c)...)
	}
	return out
}

// treeSample is what sampleTree saw of a listener's descendants.
type treeSample struct {
	peakHWM int64 // largest sum, over one reading, of the live descendants' VmHWM, bytes
	ticks   int64 // utime+stime of every descendant seen, each at its last reading, summed
}

// sampleTree reads the descendants of pid every treePeriod until the returned function is
// called, which returns what it saw.
func sampleTree(pid int) (stop func() treeSample) {
	var (
		mu      sync.Mutex
		peakHWM int64
		last    = make(map[int]int64) // pid → utime+stime at its last reading
	)
	take := func() {
		var hwm int64
		for _, p := range descendants(pid) {
			h, err1 := mftdtest.PeakRSS(p)
			t, err2 := procTicks(p)
			if err1 != nil || err2 != nil {
				continue // exited meanwhile
			}
			hwm += h
			mu.Lock()
			last[p] = max(last[p], t.utime+t.stime)
			mu.Unlock()
		}
		mu.Lock()
		peakHWM = max(peakHWM, hwm)
		mu.Unlock()
	}
	done, finished := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(finished)
		t := time.NewTicker(treePeriod)
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
	return func() treeSample {
		close(done)
		<-finished
		mu.Lock()
		defer mu.Unlock()
		var sum int64
		for _, t := range last {
			sum += t
		}
		return treeSample{peakHWM: peakHWM, ticks: sum}
	}
}

// medianSFTP is the median of each figure over several runs of one server in one mode.
func medianSFTP(rs []sftpRun) sftpRun {
	base := make([]serverRun, len(rs))
	for i, r := range rs {
		base[i] = r.serverRun
	}
	ciphers := make([]string, 0, len(rs))
	for _, r := range rs {
		if !slices.Contains(ciphers, r.cipher) {
			ciphers = append(ciphers, r.cipher)
		}
	}
	return sftpRun{
		serverRun: medianRun(base),
		cipher:    strings.Join(ciphers, ", "),
		liveCPU:   medianOf(rs, func(r sftpRun) float64 { return r.liveCPU }),
	}
}

// sshdVersion is the openssh-server package version, or else the first line `sshd -V` prints.
func sshdVersion() string {
	if out, err := exec.Command("dpkg-query", "-W", "-f", "${Version}", "openssh-server").Output(); err == nil && len(out) > 0 {
		return "openssh-server " + strings.TrimSpace(string(out))
	}
	out, _ := exec.Command(sshdBin, "-V").CombinedOutput()
	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	if line == "" {
		return "unknown version"
	}
	return line
}

func sftpTable(m, o []sftpRun, load string, rounds int) string {
	yes := func(ok bool) string {
		if ok {
			return "yes"
		}
		return "**no**"
	}
	var s strings.Builder
	s.WriteString("## SFTP: mftd's SFTP door, OpenSSH's sftp server\n\n")
	s.WriteString(provenance(load, "UploadSFTP"))
	fmt.Fprintf(&s, "%d rounds; in each, one upload of the same 2 GiB (%d bytes) of pseudo-random data with the OpenSSH `sftp` "+
		"client (%s; `sftp -F /dev/null -b BATCH` with one `put SRC DST` line, so no ssh_config applies) to each server, on "+
		"127.0.0.1, in two client configurations, interleaved: mftd (a), OpenSSH (a), mftd (b), OpenSSH (b). mftd runs the "+
		"minimal config plus `sftp: {listen: 127.0.0.1:PORT}` (local storage, SQLite, every other key default, so a 4 MiB "+
		"reorder window), a fresh daemon and account per upload, logging in with an ed25519 key registered with `mftd user "+
		"add-key` and the TOTP code (keyboard-interactive, answered by SSH_ASKPASS), writing `/upload/%s`. OpenSSH is a fresh "+
		"`%s -D -e -f CONFIG` per upload (%s; `Subsystem sftp internal-sftp`, `UsePAM no`, `StrictModes no`, key "+
		"authentication as the user running the benchmark), writing into a fresh empty folder on the same file system. "+
		"Each figure is the median over the rounds (each per-round figure is in the `go test -bench` output above the table).\n\n",
		rounds, fileSize, sshClientVersion(), sftpName, sshdBin, sshdVersion())
	s.WriteString("| | mftd | OpenSSH | mftd/OpenSSH | target | met |\n")
	s.WriteString("|---|---:|---:|---:|---|---|\n")
	for i, mode := range sftpModes {
		a, b := m[i], o[i]
		fmt.Fprintf(&s, "| **%s** — cipher negotiated: mftd `%s`, OpenSSH `%s` | | | | | |\n", mode.label, a.cipher, b.cipher)
		fmt.Fprintf(&s, "| throughput, MB/s (sftp started → sftp exited) | %.0f | %.0f | %.2f | ≥ 0.9 × OpenSSH = %.0f | %s |\n",
			a.mbps(), b.mbps(), a.mbps()/b.mbps(), 0.9*b.mbps(), yes(a.mbps() >= 0.9*b.mbps()))
		fmt.Fprintf(&s, "| server CPU, s/GiB (same span) | %.2f | %.2f | %.2f | ≤ 1.3 × OpenSSH = %.2f | %s |\n",
			a.cpuPerGiB(), b.cpuPerGiB(), a.cpuPerGiB()/b.cpuPerGiB(), 1.3*b.cpuPerGiB(), yes(a.cpuPerGiB() <= 1.3*b.cpuPerGiB()))
		fmt.Fprintf(&s, "| server peak RSS, MiB (mftd: daemon VmHWM; OpenSSH: session processes, see below) | %.1f | %.1f | %.2f | ≤ 64 MiB | %s |\n",
			a.rssMiB(), b.rssMiB(), float64(a.rss)/float64(b.rss), yes(a.rssMiB() <= 64))
		fmt.Fprintf(&s, "| mftd: time until the file is in Arrivals, s (sftp started → listed with its size and SHA-256) | %.2f | | | | |\n",
			a.toDone.Seconds())
		fmt.Fprintf(&s, "| mftd: server CPU until then, s/GiB | %.2f | | | | |\n", a.cpuToPerGiB())
	}
	s.WriteString("\nMB = 10⁶ bytes. The span is from starting `sftp` to its exit: connection, key exchange, login (mftd: key " +
		"and code; OpenSSH: key), the put, the close and the disconnect. Both servers get the same client; the client runs " +
		"on the same 2 cores.\n\n" +
		"Server CPU is utime + stime from `/proc/PID/stat` (USER_HZ 100), its change over the span divided by 2 GiB. For " +
		"mftd it is the daemon process (all its threads). For OpenSSH it is the whole process tree of the session: the " +
		"change of the listening sshd's utime + stime + cutime + cstime from before the client starts to after the " +
		"session's processes have exited and been reaped (each sshd process waits for its children, so their CPU time is " +
		"added to their parent's cutime/cstime and, in the end, to the listener's). That tree is the pre-authentication " +
		"child (`sshd: USER [net]`, key exchange and login), the session process (for root `sshd: root@notty`: the same " +
		"process as the privileged monitor, which does the SSH transport, i.e. the decryption) and its forked " +
		"internal-sftp child (`sshd: root@internal-sftp`: the SFTP protocol and the file writes), plus the listener's " +
		"own accept and fork. internal-sftp is not an exec'd program, so it cannot be told apart by name; it and the " +
		"transport are both counted, which is what mftd does in one process. As a cross-check, the listener's descendants are " +
		"also read while they run, every 50 ms: the sum over them of utime + stime at each one's last reading is in the " +
		"per-round output (`live-cpu-s/GiB`); it misses what a process used in its last < 50 ms and the " +
		"pre-authentication child when no reading catches it.\n\n" +
		"Peak RSS: for mftd the daemon's VmHWM after the file is in Arrivals (a fresh daemon per upload, so it covers " +
		"start-up, the login, the transfer and the checks). For OpenSSH, the listener's descendants are read every 50 ms " +
		"and the largest sum of their VmHWM over one reading is kept: during the transfer that is the session process " +
		"plus its internal-sftp child (a sum of peaks, counting shared pages of the two forked processes twice: an upper " +
		"bound); the listener itself (idle, not serving the session) is not counted.\n\n" +
		"Durability differs: OpenSSH's sftp-server writes with plain write(2) and never fsyncs (only when the client " +
		"sends fsync@openssh.com, which `put` does only with `-f`), so its figures include no fsync, and the page " +
		"cache absorbs the 2 GiB; mftd hashes every byte (SHA-256, streaming) and fsyncs its checkpoints, and its " +
		"close answers only once the bytes are durable and the upload is queued for its checks. The page cache is not " +
		"dropped (the source file is read from memory); `sync` runs before each measurement so that none inherits " +
		"another's dirty pages. Single runs on this shared 2-core VM vary by 10–20%, more if the machine is busy (see " +
		"the load average): hence interleaved rounds and medians.\n")
	return s.String()
}

// sshClientVersion is what `ssh -V` prints.
func sshClientVersion() string {
	out, _ := exec.Command("ssh", "-V").CombinedOutput()
	if v := strings.TrimSpace(string(out)); v != "" {
		return v
	}
	return "unknown version"
}
