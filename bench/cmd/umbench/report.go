package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

type kv struct{ k, v string }

// machineInfo describes the machine, the filesystem of the work directory
// and the versions of everything measured.
func machineInfo(cfg *config) []kv {
	var m []kv
	add := func(k, v string) {
		if v = strings.TrimSpace(v); v != "" {
			m = append(m, kv{k, v})
		}
	}
	cpu, n := "", 0
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				cpu = strings.TrimSpace(v)
				n++
			}
		}
		f.Close()
	}
	hv := ""
	if out, err := exec.Command("lscpu").Output(); err == nil {
		for _, l := range strings.Split(string(out), "\n") {
			if v, ok := strings.CutPrefix(l, "Hypervisor vendor:"); ok {
				hv = ", VM (" + strings.TrimSpace(v) + ")"
			}
		}
	}
	add("CPU", fmt.Sprintf("%d x %s%s", n, cpu, hv))
	var si unix.Sysinfo_t
	if unix.Sysinfo(&si) == nil {
		add("memory", fmt.Sprintf("%.1f GiB", float64(si.Totalram)*float64(si.Unit)/(1<<30)))
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		add("kernel", unix.ByteSliceToString(u.Release[:]))
	}
	if data, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, l := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(l, "PRETTY_NAME="); ok {
				add("OS", strings.Trim(v, `"`))
			}
		}
	}
	if out, err := exec.Command("findmnt", "-no", "SOURCE,FSTYPE,OPTIONS", "-T", cfg.dir).Output(); err == nil {
		f := strings.Fields(string(out))
		if len(f) >= 2 {
			dev := f[0]
			size := ""
			if data, err := os.ReadFile("/sys/class/block/" + filepath.Base(dev) + "/size"); err == nil {
				var sectors int64
				if _, err := fmt.Sscan(string(data), &sectors); err == nil {
					size = fmt.Sprintf(", %d GiB", sectors*512>>30)
				}
			}
			add("filesystem (lower, upper, copy)", fmt.Sprintf("%s on %s%s (%s)", f[1], dev, size, strings.Join(f[2:], " ")))
		}
	}
	first := func(name string, args ...string) string {
		out, err := exec.Command(name, args...).CombinedOutput()
		if err != nil && len(out) == 0 {
			return ""
		}
		lines := strings.Split(strings.TrimSpace(string(out)), "\n")
		for _, l := range lines { // fuse-overlayfs prints a warning, then versions of itself, libfuse, fusermount3
			if strings.HasPrefix(l, filepath.Base(name)) && strings.Contains(strings.ToLower(l), "version") {
				return l
			}
		}
		return lines[0]
	}
	add("Go", first("go", "version"))
	add("fuse-overlayfs", first("fuse-overlayfs", "--version"))
	add("fusermount3", first("fusermount3", "--version"))
	add("fio", first("fio", "--version"))
	add("git", first("git", "--version"))
	rev := first("git", "-C", cfg.repo, "rev-parse", "--short", "HEAD")
	if rev != "" {
		dirty := exec.Command("git", "-C", cfg.repo, "status", "--porcelain", "--untracked-files=no")
		dirty.Env = append(os.Environ(), "GIT_OPTIONAL_LOCKS=0")
		if out, err := dirty.Output(); err == nil && len(strings.TrimSpace(string(out))) > 0 {
			rev += " + uncommitted changes"
		}
		add("unionmount", "commit "+rev+" (bin/unionmount rebuilt at the start of the run)")
	}
	if prio, err := unix.Getpriority(unix.PRIO_PROCESS, 0); err == nil {
		// The raw syscall returns 20 - nice.
		add("benchmark priority", fmt.Sprintf("nice %d (daemons and workloads inherit it; `make bench` runs at BENCH_NICE=-10 so that other jobs on the machine disturb less)", 20-prio))
	}
	var params []string
	for _, p := range []string{"redirect_dir", "index", "metacopy", "xino_auto", "nfs_export"} {
		if data, err := os.ReadFile("/sys/module/overlay/parameters/" + p); err == nil {
			params = append(params, p+"="+strings.TrimSpace(string(data)))
		}
	}
	add("kernel overlayfs defaults", strings.Join(params, " "))
	return m
}

// median of the successful samples' durations of workload w on cand.
func (b *bench) median(w, cand string) (time.Duration, bool) {
	return medianOf(b.samples, w, cand)
}

func medianOf(samples []sample, w, cand string) (time.Duration, bool) {
	ds := durations(samples, w, cand)
	if len(ds) == 0 {
		return 0, false
	}
	if len(ds)%2 == 1 {
		return ds[len(ds)/2], true
	}
	return (ds[len(ds)/2-1] + ds[len(ds)/2]) / 2, true
}

func durations(samples []sample, w, cand string) []time.Duration {
	var ds []time.Duration
	for _, s := range samples {
		if s.Workload == w && s.Cand == cand && s.Err == "" {
			ds = append(ds, s.Dur)
		}
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	return ds
}

// medianSample is the successful sample at the (lower) median, for its extra.
func medianSample(samples []sample, w, cand string) (sample, bool) {
	var ok []sample
	for _, s := range samples {
		if s.Workload == w && s.Cand == cand && s.Err == "" {
			ok = append(ok, s)
		}
	}
	if len(ok) == 0 {
		return sample{}, false
	}
	sort.Slice(ok, func(i, j int) bool { return ok[i].Dur < ok[j].Dur })
	return ok[(len(ok)-1)/2], true
}

// medianCPU is the median CPU time of the successful samples.
func medianCPU(samples []sample, w, cand string) (time.Duration, bool) {
	var cs []time.Duration
	for _, s := range samples {
		if s.Workload == w && s.Cand == cand && s.Err == "" {
			cs = append(cs, s.CPU)
		}
	}
	if len(cs) == 0 {
		return 0, false
	}
	sort.Slice(cs, func(i, j int) bool { return cs[i] < cs[j] })
	if len(cs)%2 == 1 {
		return cs[len(cs)/2], true
	}
	return (cs[len(cs)/2-1] + cs[len(cs)/2]) / 2, true
}

func medianRSS(samples []sample, w, cand string) int64 {
	var rs []int64
	for _, s := range samples {
		if s.Workload == w && s.Cand == cand && s.Err == "" && s.RSS > 0 {
			rs = append(rs, s.RSS)
		}
	}
	if len(rs) == 0 {
		return 0
	}
	sort.Slice(rs, func(i, j int) bool { return rs[i] < rs[j] })
	return rs[(len(rs)-1)/2]
}

func fmtDur(d time.Duration) string {
	s := d.Seconds()
	switch {
	case s < 1:
		return fmt.Sprintf("%.3f s", s)
	case s < 10:
		return fmt.Sprintf("%.2f s", s)
	case s < 100:
		return fmt.Sprintf("%.1f s", s)
	}
	return fmt.Sprintf("%.0f s", s)
}

func fmtMiB(n int64) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.0f MiB", float64(n)/(1<<20))
}

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return float64(a) / float64(b)
}

// cell is a table cell: the median (with the median run's extra) and a
// mark when some runs failed.
func (b *bench) cell(samples []sample, w, cand string) string {
	n, failed := 0, 0
	for _, s := range samples {
		if s.Workload == w && s.Cand == cand {
			n++
			if s.Err != "" {
				failed++
			}
		}
	}
	if n == 0 {
		return "–"
	}
	med, ok := medianOf(samples, w, cand)
	if !ok {
		return "**FAIL**"
	}
	c := fmtDur(med)
	if ms, ok := medianSample(samples, w, cand); ok && ms.Extra != "" && !strings.HasSuffix(ms.Extra, "files") {
		c += " (" + ms.Extra + ")"
	}
	if failed > 0 {
		c += fmt.Sprintf(" **%d/%d failed**", failed, n)
	}
	return c
}

// target evaluates a workload's targets for unionmount.
func (b *bench) target(w *workload) (text, verdict string) {
	var parts []string
	met, known := true, true
	u, okU := b.median(w.name, candUnion)
	if fo, ok := b.median(w.name, candFuseOv); ok && okU {
		met = met && u < fo
	} else {
		known = false
	}
	parts = append(parts, "< fuse-overlayfs")
	k, okK := b.median(w.name, candKernel)
	switch {
	case w.kernelFaster:
		parts = append(parts, "< kernel")
		if okK && okU {
			met = met && u < k
		} else {
			known = false
		}
	case w.kernelMax > 0:
		parts = append(parts, fmt.Sprintf("≤ %.2gx kernel", w.kernelMax))
		if okK && okU {
			met = met && ratio(u, k) <= w.kernelMax
		} else {
			known = false
		}
	}
	text = strings.Join(parts, ", ")
	switch {
	case !known:
		verdict = "?"
	case met:
		verdict = "met"
	default:
		verdict = "**missed**"
	}
	return text, verdict
}

func (b *bench) report() string {
	cfg := b.cfg
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	p("# unionmount benchmark\n\n")
	p("Run %s, %s, `umbench %s`.\n\n", b.started.Format("2006-01-02 15:04 MST"), time.Since(b.started).Round(time.Second), strings.Join(cfg.args, " "))
	p("## Machine\n\n| | |\n|---|---|\n")
	for _, x := range b.machine {
		p("| %s | %s |\n", x.k, strings.ReplaceAll(x.v, "|", `\|`))
	}
	for _, c := range allCandidates {
		if m, ok := b.mounts[c]; ok && c != candNative {
			p("| %s mount | `%s %s %s` |\n", candidateTitle(c), m.fstype, m.opts, m.superOpts)
		}
	}
	p("\n")
	for _, n := range b.notes {
		p("> %s\n\n", n)
	}

	if len(b.samples) > 0 {
		lowerDesc := "a copy of `" + cfg.goroot + "`"
		if len(cfg.exclude) > 0 {
			lowerDesc += " without `" + strings.Join(cfg.exclude, "`, `") + "`"
		}
		if b.lower != "" {
			if n, err := countEntries(filepath.Join(b.lower, "go")); err == nil {
				lowerDesc += fmt.Sprintf(" (%d entries, including its `.git`)", n)
			}
		}
		p("## Workloads\n\n")
		p("Lower: `go/` = %s, committed as a git checkout (`bin/`, `pkg/` ignored), and `big.bin`, %s of random bytes. ", lowerDesc, human(cfg.bigSize))
		p("Every run mounts a fresh, empty upper over it (native copy: `cp -a` of `go/` for the workloads that write, a read-only bind mount of the lower for those that don't), ")
		if cfg.cache == "cold" {
			p("then `sync; echo 3 > /proc/sys/vm/drop_caches` (**cold** caches: lower, upper and the mount's dentries and inodes are all uncached, the FUSE daemons are fresh), ")
		} else {
			p("with **warm** page caches (the lower was read once at the start; no caches dropped; the mount and daemon are fresh), ")
		}
		p("then times the workload alone (setup, verification and unmount are not timed). ")
		p("Tree workloads run in `go/`; fio runs at the root. Each cell is the median of %d runs; the candidates alternate run by run, in an order rotated every repetition. ", cfg.reps)
		p("Ratios are unionmount's median over the other's (below 1: unionmount is faster). Peak RSS is the daemon's VmHWM just before unmount. Daemons run in the foreground (`-f`), with default options.\n\n")
		p("| workload | what | %s | um / kernel | um / fuse-ovl | target | |\n", strings.Join(mapSlice(cfg.candidates, candidateTitle), " | "))
		p("|---|---|%s---|---|---|---|\n", strings.Repeat("---|", len(cfg.candidates)))
		for _, w := range b.wls {
			var cells []string
			for _, c := range cfg.candidates {
				cells = append(cells, b.cell(b.samples, w.name, c))
			}
			rk, rf := "–", "–"
			if u, ok := b.median(w.name, candUnion); ok {
				if k, ok := b.median(w.name, candKernel); ok {
					rk = fmt.Sprintf("%.2fx", ratio(u, k))
				}
				if f, ok := b.median(w.name, candFuseOv); ok {
					rf = fmt.Sprintf("%.2fx", ratio(u, f))
				}
			}
			t, v := b.target(w)
			p("| %s | %s | %s | %s | %s | %s | %s |\n", w.name, w.desc, strings.Join(cells, " | "), rk, rf, t, v)
		}
		p("\n")
		var busy []float64
		for _, s := range b.samples {
			busy = append(busy, s.Busy)
		}
		sort.Float64s(busy)
		if len(busy) > 0 {
			p("Background load just before the timed runs (share of both CPUs busy with other processes, after waiting up to %s for it to drop below 20%%): median %.0f%%, max %.0f%%.\n\n",
				cfg.quietWait, 100*busy[(len(busy)-1)/2], 100*busy[len(busy)-1])
		}
		p("### CPU time (median seconds of CPU: the workload's processes + the FUSE daemon, user + system)\n\n")
		p("Less disturbed by other load than wall time; it leaves out waiting (disk, context switches) and kernel threads (writeback).\n\n")
		p("| workload | %s | um / kernel | um / fuse-ovl |\n|---|%s---|---|\n", strings.Join(mapSlice(cfg.candidates, candidateTitle), " | "), strings.Repeat("---|", len(cfg.candidates)))
		for _, w := range b.wls {
			var cells []string
			for _, c := range cfg.candidates {
				if d, ok := medianCPU(b.samples, w.name, c); ok {
					cells = append(cells, fmt.Sprintf("%.2f", d.Seconds()))
				} else {
					cells = append(cells, "–")
				}
			}
			rk, rf := "–", "–"
			if u, ok := medianCPU(b.samples, w.name, candUnion); ok {
				if k, ok := medianCPU(b.samples, w.name, candKernel); ok && k > 0 {
					rk = fmt.Sprintf("%.2fx", ratio(u, k))
				}
				if f, ok := medianCPU(b.samples, w.name, candFuseOv); ok && f > 0 {
					rf = fmt.Sprintf("%.2fx", ratio(u, f))
				}
			}
			p("| %s | %s | %s | %s |\n", w.name, strings.Join(cells, " | "), rk, rf)
		}
		p("\n")
		if slices := fuseCands(cfg.candidates); len(slices) > 0 {
			p("### Daemon peak RSS (median VmHWM)\n\n| workload | %s |\n|---|%s\n", strings.Join(slices, " | "), strings.Repeat("---|", len(slices)))
			for _, w := range b.wls {
				var cells []string
				for _, c := range slices {
					cells = append(cells, fmtMiB(medianRSS(b.samples, w.name, c)))
				}
				p("| %s | %s |\n", w.name, strings.Join(cells, " | "))
			}
			p("\n")
		}
		p("### Every run (seconds, in run order)\n\n| workload | %s |\n|---|%s\n", strings.Join(mapSlice(cfg.candidates, candidateTitle), " | "), strings.Repeat("---|", len(cfg.candidates)))
		for _, w := range b.wls {
			var cells []string
			for _, c := range cfg.candidates {
				var xs []string
				for _, s := range b.samples {
					if s.Workload == w.name && s.Cand == c {
						if s.Err != "" {
							xs = append(xs, "fail")
						} else {
							xs = append(xs, fmt.Sprintf("%.3g", s.Dur.Seconds()))
						}
					}
				}
				cells = append(cells, strings.Join(xs, " "))
			}
			p("| %s | %s |\n", w.name, strings.Join(cells, " | "))
		}
		p("\n")
		b.reportChecks(p)
	}
	if len(b.scale) > 0 {
		b.reportScale(p)
	}
	if len(b.profiles) > 0 {
		p("## Profiles\n\nunionmount's daemon, one extra run of each of the workloads furthest from kernel overlayfs, with `UNIONMOUNT_CPUPROFILE`. Files in `%s`.\n\n", filepath.Dir(cfg.out)+"/profiles")
		for _, pr := range b.profiles {
			p("### %s", pr.Workload)
			if pr.Ratio > 0 {
				p(" (%.2fx kernel overlayfs)", pr.Ratio)
			}
			p("\n\n")
			if pr.Err != "" {
				p("%s\n\n", pr.Err)
			}
			if pr.Top != "" {
				p("Flat:\n\n```\n%s\n```\n\nCumulative:\n\n```\n%s\n```\n\n", pr.Top, pr.Cum)
			}
			if pr.PerfTop != "" {
				p("perf (daemon, kernel side included, self time):\n\n```\n%s\n```\n\n", pr.PerfTop)
			}
		}
	}
	return sb.String()
}

func fuseCands(cands []string) []string {
	var out []string
	for _, c := range cands {
		if isFuse(c) {
			out = append(out, c)
		}
	}
	return out
}

func mapSlice(xs []string, f func(string) string) []string {
	out := make([]string, len(xs))
	for i, x := range xs {
		out[i] = f(x)
	}
	return out
}

// reportChecks lists failed runs and outputs that differ from the native
// copy's (or, without it, from the first candidate's).
func (b *bench) reportChecks(p func(string, ...any)) {
	var lines []string
	for _, w := range b.wls {
		ref, refCand := "", ""
		for _, c := range b.cfg.candidates {
			if s, ok := medianSample(b.samples, w.name, c); ok {
				ref, refCand = s.Out, c
				break
			}
		}
		diff := map[string]bool{}
		for _, s := range b.samples {
			if s.Workload != w.name {
				continue
			}
			if s.Note != "" {
				lines = append(lines, fmt.Sprintf("- %s, %s, run %d (timing kept): `%s`", w.name, s.Cand, s.Rep+1, oneLine(s.Note)))
			}
			if s.Err != "" {
				lines = append(lines, fmt.Sprintf("- %s, %s, run %d failed: `%s`", w.name, s.Cand, s.Rep+1, oneLine(s.Err)))
				continue
			}
			if w.checkOut && s.Out != ref && !diff[s.Cand] {
				diff[s.Cand] = true
				lines = append(lines, fmt.Sprintf("- %s: %s gave `%s`, %s gave `%s`", w.name, s.Cand, oneLine(s.Out), refCand, oneLine(ref)))
			}
		}
		if w.name == "git-status" {
			for _, c := range b.cfg.candidates {
				if ms, ok := medianSample(b.samples, w.name, c); ok && ms.Extra != "" {
					lines = append(lines, fmt.Sprintf("- git-status: %s: %s (git found stat data changed and refreshed `.git/index`, which copied it up)", c, ms.Extra))
				}
			}
		}
	}
	p("### Checks\n\n")
	if len(lines) == 0 {
		p("Every run succeeded, and every candidate gave the same output (file counts, bytes read, what was left behind).\n\n")
		return
	}
	p("%s\n\n", strings.Join(lines, "\n"))
}

func oneLine(s string) string {
	s = strings.ReplaceAll(strings.ReplaceAll(s, "\n", " "), "`", "'")
	if len(s) > 300 {
		s = s[:300] + "..."
	}
	return s
}

func (b *bench) reportScale(p func(string, ...any)) {
	cfg := b.cfg
	p("## Scale\n\nGenerated trees of empty files (100 files a directory, 100 directories a parent; `flat`: one directory), each the only lower, fresh empty upper, %s caches; the walk is %s at the root. Median of %d runs; time per entry in µs.\n\n",
		cfg.cache, scaleWalk.desc, cfg.scaleReps)
	fc := fuseCands(cfg.candidates)
	p("| tree | entries | %s |", strings.Join(mapSlice(cfg.candidates, candidateTitle), " | "))
	for _, c := range fc {
		p(" peak RSS %s |", c)
	}
	p("\n|---|---|%s%s\n", strings.Repeat("---|", len(cfg.candidates)), strings.Repeat("---|", len(fc)))
	for _, r := range b.scale {
		p("| %s | %d |", r.Label, r.Entries)
		for _, c := range cfg.candidates {
			if d, ok := medianOf(r.Samples, "walk-"+r.Label, c); ok {
				p(" %s (%.2f µs) |", fmtDur(d), perEntry(d, r.Entries))
			} else {
				p(" **FAIL** |")
			}
		}
		for _, c := range fc {
			p(" %s |", fmtMiB(medianRSS(r.Samples, "walk-"+r.Label, c)))
		}
		p("\n")
	}
	p("\n")
	// Targets: RSS under 300 MB at the largest tree, time per entry roughly
	// flat (largest within 1.5x of smallest) for unionmount.
	var trees []scaleRow
	for _, r := range b.scale {
		if !r.Flat {
			trees = append(trees, r)
		}
	}
	if len(trees) > 0 && contains(cfg.candidates, candUnion) {
		small, large := trees[0], trees[len(trees)-1]
		rss := medianRSS(large.Samples, "walk-"+large.Label, candUnion)
		v := "met"
		if rss == 0 {
			v = "?"
		} else if rss >= 300*1000*1000 {
			v = "**missed**"
		}
		p("- unionmount peak RSS at %s entries: %s (target < 300 MB): %s\n", large.Label, fmtMiB(rss), v)
		ds, okS := medianOf(small.Samples, "walk-"+small.Label, candUnion)
		dl, okL := medianOf(large.Samples, "walk-"+large.Label, candUnion)
		if okS && okL && large.Label != small.Label {
			a, z := perEntry(ds, small.Entries), perEntry(dl, large.Entries)
			v := "met"
			if z > 1.5*a {
				v = "**missed**"
			}
			p("- unionmount time per entry %s → %s: %.2f → %.2f µs (%.2fx; target roughly flat, read as ≤ 1.5x): %s\n", small.Label, large.Label, a, z, z/a, v)
		}
		p("\n")
	}
	var fails []string
	for _, r := range b.scale {
		for _, s := range r.Samples {
			if s.Err != "" {
				fails = append(fails, fmt.Sprintf("- %s, %s, run %d: `%s`", r.Label, s.Cand, s.Rep+1, oneLine(s.Err)))
			}
		}
	}
	if len(fails) > 0 {
		p("Failed runs:\n\n%s\n\n", strings.Join(fails, "\n"))
	}
}

func contains(xs []string, x string) bool {
	for _, y := range xs {
		if x == y {
			return true
		}
	}
	return false
}
