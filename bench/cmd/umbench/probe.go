package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// straceRow is one daemon's system calls during the strace workload.
type straceRow struct {
	Cand     string         `json:"candidate"`
	Dur      time.Duration  `json:"ns"`
	Requests int            `json:"requests"` // from the request trace (0: not counted)
	Calls    map[string]int `json:"calls"`    // by system call
	Total    int            `json:"total"`
	Err      string         `json:"error,omitempty"`
}

// schedCalls are the system calls that only schedule (wake, sleep, poll,
// signal threads): issue 13 wants fewer than half a one per request.
var schedCalls = []string{"futex", "nanosleep", "epoll_pwait", "epoll_wait", "sched_yield", "tgkill"}

func (r straceRow) sched() int {
	n := 0
	for _, c := range schedCalls {
		n += r.Calls[c]
	}
	return n
}

// runStrace runs the strace workload once on each FUSE candidate (warm
// caches) with `strace -c -f` attached to the daemon.
func (b *bench) runStrace() error {
	cfg := b.cfg
	prev := cfg.cache
	cfg.cache = "warm"
	defer func() { cfg.cache = prev }()
	b.warmLowers()
	for _, c := range cfg.candidates {
		if !isFuse(c) {
			continue
		}
		if b.ctx.Err() != nil {
			return b.ctx.Err()
		}
		out := filepath.Join(b.cfg.dir, "strace-"+c+".txt")
		_ = os.Remove(out)
		row := straceRow{Cand: c}
		h := &runHooks{around: func(pid int) func() {
			cmd := exec.Command("strace", "-c", "-f", "-q", "-o", out, "-p", strconv.Itoa(pid))
			stderr, err := cmd.StderrPipe()
			if err != nil {
				row.Err = err.Error()
				return nil
			}
			if err := cmd.Start(); err != nil {
				row.Err = "strace: " + err.Error()
				return nil
			}
			// Every thread attached: strace is quiet (-q) until then, so
			// wait for the daemon's threads to show as traced instead.
			waitTraced(pid, 5*time.Second)
			go func() { _, _ = bufio.NewReader(stderr).WriteTo(discard{}) }()
			return func() {
				_ = cmd.Process.Signal(os.Interrupt)
				_ = cmd.Wait()
			}
		}}
		s := b.runOne(straceWorkload, c, 0, h)
		row.Dur, row.Requests = s.Dur, requestTotal(s.Requests)
		if s.Err != "" {
			row.Err = strings.TrimPrefix(row.Err+"; "+s.Err, "; ")
		}
		if calls, total, err := parseStraceC(out); err != nil {
			row.Err = strings.TrimPrefix(row.Err+"; "+err.Error(), "; ")
		} else {
			row.Calls, row.Total = calls, total
		}
		b.straces = append(b.straces, row)
		b.logf("strace %-23s %s; %d system calls, %d scheduling, %d requests", c, describe(s), row.Total, row.sched(), row.Requests)
	}
	return nil
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// waitTraced waits until every thread of pid has a tracer (TracerPid in
// /proc/PID/task/TID/status), or d has passed.
func waitTraced(pid int, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
		all := len(tasks) > 0
		for _, t := range tasks {
			data, _ := os.ReadFile(t)
			if !strings.Contains(string(data), "TracerPid:\t") || strings.Contains(string(data), "TracerPid:\t0\n") {
				all = false
			}
		}
		if all {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// parseStraceC reads strace -c's table: calls by system call, and the total.
func parseStraceC(path string) (map[string]int, int, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, 0, fmt.Errorf("strace output: %w", err)
	}
	calls := map[string]int{}
	total := 0
	for _, l := range strings.Split(string(data), "\n") {
		f := strings.Fields(l)
		// % time  seconds  usecs/call  calls  [errors]  syscall
		if len(f) < 5 || strings.HasPrefix(l, "%") || strings.HasPrefix(l, "-") {
			continue
		}
		n, err := strconv.Atoi(f[3])
		if err != nil {
			continue
		}
		name := f[len(f)-1]
		if name == "total" {
			total = n
		} else {
			calls[name] += n
		}
	}
	if total == 0 && len(calls) == 0 {
		return nil, 0, fmt.Errorf("strace -c wrote no table (%s)", path)
	}
	return calls, total, nil
}
