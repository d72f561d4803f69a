package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
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
	Cand     string
	Why      string // the targets missed
	Dur      time.Duration
	Pprof    string // profile file
	Top      string // go tool pprof -top
	Cum      string // go tool pprof -top -cum
	Perf     string // perf.data
	PerfTop  string
	Err      string
}

// misses lists, per workload, the targets a unionmount candidate missed in
// the headline regime: slower than its rival (wall or CPU), or further
// from kernel overlayfs than the workload's target.
func (b *bench) misses(w *workload, cand string) []string {
	hs := b.headline()
	var why []string
	if r := candidateOf(cand).rival; r != "" {
		if x, c := ratioCell(hs, w.name, cand, r, false); c != "–" && x >= 1 {
			why = append(why, fmt.Sprintf("%.2fx %s wall", x, shortName(r)))
		}
		if x, c := ratioCell(hs, w.name, cand, r, true); c != "–" && x >= 1 {
			why = append(why, fmt.Sprintf("%.2fx %s CPU", x, shortName(r)))
		}
	}
	if cand == candUnion && w.kernelMax > 0 {
		if x, c := ratioCell(hs, w.name, cand, candKernel, false); c != "–" && x > w.kernelMax {
			why = append(why, fmt.Sprintf("%.2fx kernel, target %gx", x, w.kernelMax))
		}
	}
	return why
}

// runProfiles profiles the daemon on every workload where a unionmount
// candidate missed a target: unionmount as root, and unionmount with
// passthrough=off where that missed (it stands in for the rootless daemon
// too: the same request path, and root may write the profile).
func (b *bench) runProfiles() error {
	type pick struct {
		w    *workload
		cand string
		why  []string
	}
	var picks []pick
	for _, w := range b.wls {
		if w.probe {
			continue
		}
		for _, c := range []string{candUnion, candUnionNPT} {
			if !slices.Contains(b.cfg.candidates, c) {
				continue
			}
			why := b.misses(w, c)
			if c == candUnionNPT && slices.Contains(b.cfg.candidates, candUnionRL) {
				for _, x := range b.misses(w, candUnionRL) {
					why = append(why, "rootless "+x)
				}
			}
			if len(why) > 0 {
				picks = append(picks, pick{w, c, why})
			}
		}
	}
	dir := filepath.Join(filepath.Dir(b.cfg.out), "profiles")
	_ = os.RemoveAll(dir) // ours: the previous run's profiles
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	prev := b.cfg.cache
	b.cfg.cache = b.cfg.regimes[0]
	defer func() { b.cfg.cache = prev }()
	if b.cfg.cache == "warm" {
		b.warmLowers()
	}
	for _, p := range picks {
		if b.ctx.Err() != nil {
			return b.ctx.Err()
		}
		pr := profileResult{Workload: p.w.name, Cand: p.cand, Why: strings.Join(p.why, "; "),
			Pprof: filepath.Join(dir, p.w.name+"-"+p.cand+".pprof")}
		_ = os.Remove(pr.Pprof)
		h := &runHooks{env: []string{"UNIONMOUNT_CPUPROFILE=" + pr.Pprof}}
		if b.cfg.perf {
			pr.Perf = filepath.Join(dir, p.w.name+"-"+p.cand+".perf.data")
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
		b.logf("profiling %s on %s (%s)", p.cand, p.w.name, pr.Why)
		s := b.runOne(p.w, p.cand, 0, h)
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
		b.logf("profile of %s on %s: %s", p.cand, p.w.name, describe(s))
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
