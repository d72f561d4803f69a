package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// reqTracer counts the requests the kernel sends one FUSE connection, by
// opcode: the tracefs event fuse:fuse_request_send in a trace instance of
// its own, filtered to the connection. It sees every request the same way
// for every daemon, and costs the daemon nothing (a ring-buffer write in
// the kernel per request).
type reqTracer struct {
	tracefs string // the tracefs mount
	inst    string // our instance
	mounted bool   // we mounted tracefs, so we unmount it
}

const tracefsDir = "/sys/kernel/tracing"

func newReqTracer() (*reqTracer, error) {
	t := &reqTracer{tracefs: tracefsDir}
	if _, err := os.Stat(filepath.Join(t.tracefs, "instances")); err != nil {
		if err := unix.Mount("nodev", t.tracefs, "tracefs", 0, ""); err != nil {
			return nil, fmt.Errorf("mount tracefs at %s: %w", t.tracefs, err)
		}
		t.mounted = true
	}
	if _, err := os.Stat(filepath.Join(t.tracefs, "events", "fuse", "fuse_request_send")); err != nil {
		t.close()
		return nil, fmt.Errorf("this kernel has no fuse:fuse_request_send trace event: %w", err)
	}
	t.inst = filepath.Join(t.tracefs, "instances", fmt.Sprintf("umbench-%d", os.Getpid()))
	if err := os.Mkdir(t.inst, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
		t.close()
		return nil, fmt.Errorf("trace instance: %w", err)
	}
	// 32 MiB a CPU: about 800k requests before anything is lost.
	if err := t.write("buffer_size_kb", "32768"); err != nil {
		t.close()
		return nil, err
	}
	return t, nil
}

func (t *reqTracer) write(name, val string) error {
	if err := os.WriteFile(filepath.Join(t.inst, name), []byte(val+"\n"), 0o644); err != nil {
		return fmt.Errorf("tracefs %s: %w", name, err)
	}
	return nil
}

const reqEvent = "events/fuse/fuse_request_send/"

// start clears the buffer and counts the requests of the connection of
// the mount whose device is dev ("major:minor", as in mountinfo).
func (t *reqTracer) start(dev string) error {
	ma, mi, ok := strings.Cut(dev, ":")
	major, err1 := strconv.ParseUint(ma, 10, 32)
	minor, err2 := strconv.ParseUint(mi, 10, 32)
	if !ok || err1 != nil || err2 != nil {
		return fmt.Errorf("bad device %q", dev)
	}
	kdev := major<<20 | minor // the kernel's dev_t (MKDEV)
	if err := t.write(reqEvent+"enable", "0"); err != nil {
		return err
	}
	if err := t.write("trace", ""); err != nil { // clears the buffer
		return err
	}
	if err := t.write(reqEvent+"filter", fmt.Sprintf("connection == %d", kdev)); err != nil {
		return err
	}
	return t.write(reqEvent+"enable", "1")
}

var opcodeRE = regexp.MustCompile(`opcode \d+ \((?:FUSE_)?(\w+)\)`)

// stop stops counting and returns the counts by opcode name, and whether
// the buffer lost events.
func (t *reqTracer) stop() (map[string]int, bool, error) {
	if err := t.write(reqEvent+"enable", "0"); err != nil {
		return nil, false, err
	}
	f, err := os.Open(filepath.Join(t.inst, "trace"))
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	counts := map[string]int{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		if m := opcodeRE.FindStringSubmatch(sc.Text()); m != nil {
			counts[m[1]]++
		}
	}
	lost := false
	stats, _ := filepath.Glob(filepath.Join(t.inst, "per_cpu", "cpu*", "stats"))
	for _, p := range stats {
		data, _ := os.ReadFile(p)
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "overrun:"); ok && strings.TrimSpace(v) != "0" {
				lost = true
			}
		}
	}
	return counts, lost, sc.Err()
}

func (t *reqTracer) close() {
	if t.inst != "" {
		_ = t.write(reqEvent+"enable", "0")
		_ = os.Remove(t.inst)
	}
	if t.mounted {
		_ = unix.Unmount(t.tracefs, 0)
	}
}

func requestTotal(m map[string]int) int {
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

// topRequests formats the most frequent opcodes: "READ 18012, GETATTR 16700".
func topRequests(m map[string]int, k int) string {
	type oc struct {
		op string
		n  int
	}
	var xs []oc
	for op, n := range m {
		xs = append(xs, oc{op, n})
	}
	sort.Slice(xs, func(i, j int) bool { return xs[i].n > xs[j].n || xs[i].n == xs[j].n && xs[i].op < xs[j].op })
	var parts []string
	for i, x := range xs {
		if i == k {
			parts = append(parts, "…")
			break
		}
		parts = append(parts, fmt.Sprintf("%s %d", x.op, x.n))
	}
	return strings.Join(parts, ", ")
}
