package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// scaleRow is one generated tree of the scale section.
type scaleRow struct {
	Label   string   `json:"label"`
	Files   int      `json:"files"`
	Entries int      `json:"entries"`
	Flat    bool     `json:"flat"`
	Samples []sample `json:"samples"`
}

func countLabel(n int) string {
	switch {
	case n >= 1000000 && n%1000000 == 0:
		return fmt.Sprintf("%dM", n/1000000)
	case n >= 1000 && n%1000 == 0:
		return fmt.Sprintf("%dk", n/1000)
	}
	return strconv.Itoa(n)
}

// scaleWalk is the walk timed on every scale tree: a stat of every entry.
var scaleWalk = &workload{
	name: "walk",
	desc: "`find . -printf '%s %m\\n' | wc -l`",
	run: func(e *runEnv) (result, error) {
		return e.sh(e.mnt, `find . -printf '%s %m\n' | wc -l`)
	},
}

// runScale generates each scale tree, walks it through every candidate
// (fresh mount, cold caches) scaleReps times, and removes it.
func (b *bench) runScale() error {
	cfg := b.cfg
	type tree struct {
		files int
		flat  bool
	}
	var trees []tree
	for _, n := range cfg.scaleSizes {
		trees = append(trees, tree{n, false})
	}
	if cfg.scaleFlat > 0 {
		trees = append(trees, tree{cfg.scaleFlat, true})
	}
	for _, t := range trees {
		label := countLabel(t.files)
		if t.flat {
			label = "flat-" + label
		}
		dir := filepath.Join(cfg.dir, "scale", label)
		lower := filepath.Join(dir, "lower")
		marker := filepath.Join(dir, "entries")
		entries := 0
		if data, err := os.ReadFile(marker); err == nil {
			entries, _ = strconv.Atoi(strings.TrimSpace(string(data)))
		}
		if entries == 0 {
			if err := b.checkSpace(1<<30, uint64(t.files+t.files/50+100000)); err != nil {
				return err
			}
			_ = os.RemoveAll(dir)
			start := time.Now()
			b.logf("scale: generating %s (%d files)", label, t.files)
			n, err := genTree(b.ctx, lower, t.files, t.flat)
			if err != nil {
				return fmt.Errorf("generating %s: %w", label, err)
			}
			entries = n
			if err := os.WriteFile(marker, []byte(strconv.Itoa(n)), 0o644); err != nil {
				return err
			}
			syscall.Sync()
			b.logf("scale: %s: %d entries in %s", label, n, time.Since(start).Round(time.Second))
		}
		row := scaleRow{Label: label, Files: t.files, Entries: entries, Flat: t.flat}
		for rep := 0; rep < cfg.scaleReps; rep++ {
			for k := range cfg.candidates {
				if b.ctx.Err() != nil {
					return b.ctx.Err()
				}
				c := cfg.candidates[(k+rep)%len(cfg.candidates)]
				s := b.runOne(scaleWalk, c, rep, &runHooks{lower: lower})
				s.Workload = "walk-" + label
				if s.Err == "" && s.Out != strconv.Itoa(entries+1) {
					s.Err = fmt.Sprintf("walk saw %s entries, want %d", s.Out, entries+1)
				}
				row.Samples = append(row.Samples, s)
				b.logf("scale %-10s %-15s %s  %.2f µs/entry", label, c, describe(s), perEntry(s.Dur, entries))
			}
		}
		b.scale = append(b.scale, row)
		if !cfg.keep {
			b.logf("scale: removing %s", label)
			if err := os.RemoveAll(dir); err != nil {
				return err
			}
		}
	}
	return nil
}

func perEntry(d time.Duration, entries int) float64 {
	if entries == 0 {
		return 0
	}
	return float64(d.Microseconds()) / float64(entries)
}

// profileResult is one profiled unionmount run.
type profileResult struct {
	Workload string
	Ratio    float64 // unionmount / kernel overlayfs in the suite (0: unknown)
	Dur      time.Duration
	Pprof    string // profile file
	Top      string // go tool pprof -top
	Cum      string // go tool pprof -top -cum
	Perf     string // perf.data
	PerfTop  string
	Err      string
}

// runProfiles profiles unionmount's daemon on the two workloads furthest
// from kernel overlayfs (by the suite's medians; without them, the first two
// workloads selected).
func (b *bench) runProfiles() error {
	type cand struct {
		w     *workload
		ratio float64
	}
	var picks []cand
	for _, w := range b.wls {
		if w.probe {
			continue
		}
		k, okK := b.median(w.name, candKernel)
		u, okU := b.median(w.name, candUnion)
		r := 0.0
		if okK && okU && k > 0 {
			r = float64(u) / float64(k)
		}
		picks = append(picks, cand{w, r})
	}
	sort.SliceStable(picks, func(i, j int) bool { return picks[i].ratio > picks[j].ratio })
	if len(picks) > 2 {
		picks = picks[:2]
	}
	dir := filepath.Join(filepath.Dir(b.cfg.out), "profiles")
	_ = os.RemoveAll(dir) // ours: the previous run's profiles
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, p := range picks {
		if b.ctx.Err() != nil {
			return b.ctx.Err()
		}
		pr := profileResult{Workload: p.w.name, Ratio: p.ratio, Pprof: filepath.Join(dir, p.w.name+".pprof")}
		_ = os.Remove(pr.Pprof)
		h := &runHooks{env: []string{"UNIONMOUNT_CPUPROFILE=" + pr.Pprof}}
		if b.cfg.perf {
			pr.Perf = filepath.Join(dir, p.w.name+".perf.data")
			h.around = func(pid int) func() {
				cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", pr.Perf)
				if err := cmd.Start(); err != nil {
					pr.Err = "perf: " + err.Error()
					return nil
				}
				time.Sleep(300 * time.Millisecond)
				return func() {
					_ = cmd.Process.Signal(os.Interrupt)
					_ = cmd.Wait()
				}
			}
		}
		b.logf("profiling unionmount on %s", p.w.name)
		s := b.runOne(p.w, candUnion, 0, h)
		pr.Dur = s.Dur
		if s.Err != "" {
			pr.Err = s.Err
		}
		if fi, err := os.Stat(pr.Pprof); err != nil || fi.Size() == 0 {
			pr.Err = strings.TrimPrefix(pr.Err+"; ", "; ") + "the daemon wrote no CPU profile (does this build honour UNIONMOUNT_CPUPROFILE?)"
			pr.Pprof = ""
		} else {
			pr.Top = pprofTop(pr.Pprof, false)
			pr.Cum = pprofTop(pr.Pprof, true)
		}
		if pr.Perf != "" {
			out, err := exec.Command("perf", "report", "-i", pr.Perf, "--stdio", "--no-children", "-g", "none",
				"--sort", "dso,sym", "--percent-limit", "0.7").Output()
			if err != nil {
				pr.Err = strings.TrimPrefix(pr.Err+"; ", "; ") + "perf report: " + err.Error()
			}
			pr.PerfTop = keepLines(string(out), func(l string) bool { return l != "" && !strings.HasPrefix(l, "#") }, 30)
		}
		b.profiles = append(b.profiles, pr)
		b.logf("profile of %s: %s", p.w.name, describe(s))
	}
	return nil
}

func pprofTop(path string, cum bool) string {
	args := []string{"tool", "pprof", "-top", "-nodecount=25"}
	if cum {
		args = append(args, "-cum")
	}
	out, err := exec.Command("go", append(args, path)...).CombinedOutput()
	if err != nil {
		return "go tool pprof: " + err.Error() + "\n" + string(out)
	}
	return keepLines(string(out), func(l string) bool {
		return !strings.HasPrefix(l, "File:") && !strings.HasPrefix(l, "Build ID:") && !strings.HasPrefix(l, "Type:")
	}, 32)
}

func keepLines(s string, keep func(string) bool, max int) string {
	var out []string
	for _, l := range strings.Split(strings.TrimSpace(s), "\n") {
		if keep(l) && len(out) < max {
			out = append(out, strings.TrimRight(l, " "))
		}
	}
	return strings.Join(out, "\n")
}
