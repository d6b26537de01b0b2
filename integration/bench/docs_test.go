package bench

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"time"
)

// docHeader starts docs/benchmarks.md when it does not exist yet.
const docHeader = "# Benchmarks\n\nWritten by `make bench` (integration/scripts/bench.sh). Each benchmark owns one section " +
	"between its `<!-- begin ... -->` and `<!-- end ... -->` markers and replaces only that section; " +
	"the rest of the file is kept.\n"

// writeSection replaces the section called name in docs/benchmarks.md with body, or appends it
// if the file has no such section yet, so that each benchmark keeps the others' tables.
func writeSection(root, name, body string) error {
	path := filepath.Join(root, "docs", "benchmarks.md")
	begin, end := "<!-- begin "+name+" -->\n", "<!-- end "+name+" -->\n"
	old, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		old = []byte(docHeader)
	case err != nil:
		return err
	}
	doc, section := string(old), begin+"\n"+strings.TrimSpace(body)+"\n\n"+end
	i := strings.Index(doc, begin)
	j := strings.Index(doc, end)
	if i >= 0 && j > i {
		doc = doc[:i] + section + doc[j+len(end):]
	} else {
		doc = strings.TrimRight(doc, "\n") + "\n\n" + section
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(doc), 0o644)
}

// provenance says what wrote a section, when and on which machine. only is the -bench pattern
// that runs this benchmark alone.
func provenance(load, only string) string {
	return fmt.Sprintf("Written by `make bench`, which runs `%s` (`-bench='%s'` runs this benchmark alone), on %s.\n\n"+
		"Machine: %s, %d cores, Linux %s, %s; load average at the start: %s.\n\n",
		command, only, time.Now().UTC().Format("2006-01-02 15:04 MST"), cpuModel(), runtime.NumCPU(), kernel(), runtime.Version(), load)
}

func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return "unknown CPU"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return "unknown CPU"
}

// loadAvg is the 1, 5 and 15 minute load average: a busy machine makes one-run numbers noisy.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func kernel() string {
	b, err := os.ReadFile("/proc/sys/kernel/osrelease")
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}
