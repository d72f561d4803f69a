package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
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

// regime returns the samples of one cache regime.
func (b *bench) regime(reg string) []sample {
	var out []sample
	for _, s := range b.samples {
		if s.Regime == reg {
			out = append(out, s)
		}
	}
	return out
}

// headline is the samples of the headline regime (the first of -cache).
func (b *bench) headline() []sample { return b.regime(b.cfg.regimes[0]) }

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

// cell is a table cell: the median wall time (with the median run's
// extra), the median CPU time, and a mark when some runs failed.
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
	if cpu, ok := medianCPU(samples, w, cand); ok {
		c += fmt.Sprintf(" · %.2f", cpu.Seconds())
	}
	if failed > 0 {
		c += fmt.Sprintf(" **%d/%d failed**", failed, n)
	}
	return c
}

// ratioCell is "a/b" of the medians (wall, or CPU with cpu), "–" if either
// is missing.
func ratioCell(samples []sample, w, a, b string, cpu bool) (float64, string) {
	med := medianOf
	if cpu {
		med = medianCPU
	}
	x, okA := med(samples, w, a)
	y, okB := med(samples, w, b)
	if !okA || !okB || y <= 0 {
		return 0, "–"
	}
	r := ratio(x, y)
	return r, fmt.Sprintf("%.2f", r)
}

// pairs are the comparisons of issue 13: each unionmount candidate with
// its rival, run the same way.
func (b *bench) pairs() [][2]string {
	var out [][2]string
	for _, c := range b.cfg.candidates {
		if r := candidateOf(c).rival; r != "" && slices.Contains(b.cfg.candidates, r) {
			out = append(out, [2]string{c, r})
		}
	}
	return out
}

func shortName(c string) string {
	switch c {
	case candUnion:
		return "um"
	case candUnionNPT:
		return "um-nopt"
	case candUnionRL:
		return "um-rootless"
	case candFuseOv:
		return "fo"
	case candFuseOvRL:
		return "fo-rootless"
	}
	return c
}

// targetRow is one of issue 13's targets, as measured.
type targetRow struct{ target, measured, verdict string }

func verdict(known, met bool) string {
	switch {
	case !known:
		return "?"
	case met:
		return "met"
	}
	return "**missed**"
}

// targets evaluates issue 13's targets on the headline regime.
func (b *bench) targets() []targetRow {
	var rows []targetRow
	hs := b.headline()
	for _, pr := range b.pairs() {
		for _, cpu := range []bool{false, true} {
			var missed, met []string
			known := 0
			for _, w := range b.wls {
				if w.probe {
					continue
				}
				r, cell := ratioCell(hs, w.name, pr[0], pr[1], cpu)
				if cell == "–" {
					continue
				}
				known++
				if r < 1 {
					met = append(met, fmt.Sprintf("%s %.2f", w.name, r))
				} else {
					missed = append(missed, fmt.Sprintf("%s %.2f", w.name, r))
				}
			}
			what := "wall"
			if cpu {
				what = "CPU"
			}
			m := fmt.Sprintf("%d of %d faster", len(met), known)
			if len(missed) > 0 {
				m += "; slower: " + strings.Join(missed, ", ")
			}
			rows = append(rows, targetRow{
				fmt.Sprintf("every workload: %s faster than %s (%s time; ratio)", candidateTitle(pr[0]), candidateTitle(pr[1]), what),
				m, verdict(known > 0, len(missed) == 0)})
		}
	}
	for _, w := range b.wls {
		if w.kernelMax == 0 {
			continue
		}
		r, cell := ratioCell(hs, w.name, candUnion, candKernel, false)
		rows = append(rows, targetRow{fmt.Sprintf("%s: unionmount ≤ %gx kernel overlayfs", w.name, w.kernelMax),
			cell + "x", verdict(cell != "–", r <= w.kernelMax)})
	}
	if b.podman != nil && len(b.podman.Runs) > 0 {
		u, okU := b.podman.median(podmanBuildStep, "unionmount")
		f, okF := b.podman.median(podmanBuildStep, "fuse-overlayfs")
		m := "–"
		if okU && okF && f > 0 {
			m = fmt.Sprintf("%.2f s / %.2f s = %.2fx", u, f, u/f)
		}
		rows = append(rows, targetRow{"Podman build: unionmount ≤ 0.8x fuse-overlayfs", m, verdict(okU && okF, okU && okF && u <= 0.8*f)})
	}
	for _, pr := range b.pairs() {
		a, okA := b.startupMedian(pr[0])
		z, okZ := b.startupMedian(pr[1])
		if !okA || !okZ {
			continue
		}
		rows = append(rows, targetRow{fmt.Sprintf("mount + unmount: %s faster than %s", candidateTitle(pr[0]), candidateTitle(pr[1])),
			fmt.Sprintf("%.1f ms vs %.1f ms (%.2fx)", ms(a), ms(z), ratio(a, z)), verdict(true, a < z)})
	}
	for _, r := range b.straces {
		if candidateOf(r.Cand).daemon != "unionmount" || r.Requests == 0 || r.Err != "" {
			continue
		}
		per := float64(r.sched()) / float64(r.Requests)
		rows = append(rows, targetRow{fmt.Sprintf("%s: scheduling system calls < 0.5 per request (strace of %s)", candidateTitle(r.Cand), straceWorkload.name),
			fmt.Sprintf("%.2f (%d in %d requests)", per, r.sched(), r.Requests), verdict(true, per < 0.5)})
	}
	return rows
}

func (b *bench) report() string {
	cfg := b.cfg
	var sb strings.Builder
	p := func(format string, args ...any) { fmt.Fprintf(&sb, format, args...) }
	p("# unionmount benchmark\n\n")
	p("Run %s, %s, `umbench %s`. Load average (1, 5, 15 min) at the start %s, at the end %s.\n\n",
		b.started.Format("2006-01-02 15:04 MST"), time.Since(b.started).Round(time.Second), strings.Join(cfg.args, " "), b.loadStart, b.loadEnd)
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
	if ts := b.targets(); len(ts) > 0 {
		p("## Issue 13's targets (%s caches)\n\n| target | measured | |\n|---|---|---|\n", cfg.regimes[0])
		for _, t := range ts {
			p("| %s | %s | %s |\n", t.target, t.measured, t.verdict)
		}
		p("\n")
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
		p("Lower: `go/` = %s, committed as a git checkout (`bin/`, `pkg/` ignored), and `big.bin`, %s of random bytes", lowerDesc, human(cfg.bigSize))
		if b.flatLower != "" {
			p("; the `flat-*` workloads use another lower, one directory of %d empty files", cfg.flatFiles)
		}
		p(". Every run mounts a fresh, empty upper over it with a fresh daemon (native copy: `cp -a` of `go/` for the workloads that write, a read-only bind mount of the lower for those that don't) and times the workload alone (setup, verification and unmount are not timed). ")
		p("**Warm** caches: the lower was read once before the regime's runs, nothing is dropped (a cached base image). **Cold**: `sync; echo 3 > /proc/sys/vm/drop_caches` before every run. ")
		p("Tree workloads run in `go/`; fio runs at the root. The candidates alternate run by run, in an order rotated every repetition; the regimes run one after the other (warm first). ")
		p("Rootless candidates: the daemon runs as uid %d through fusermount3 (so `userxattr`, no passthrough), and so do the workloads (the lower is the user's). `unionmount-nopt` is root's mount with `-o passthrough=off`. ", rootlessUID)
		p("Each cell: the median wall time · the median CPU seconds (user + system of the workload's processes and of the FUSE daemon). Daemons run in the foreground (`-f`) with default options.\n\n")
		for _, reg := range cfg.regimes {
			rs := b.regime(reg)
			if len(rs) == 0 {
				continue
			}
			reps := cfg.reps
			if reg == "cold" {
				reps = cfg.coldReps
			}
			p("### %s caches: wall · CPU (median of %d)\n\n", strings.ToUpper(reg[:1])+reg[1:], reps)
			p("| workload | what | %s |\n", strings.Join(mapSlice(cfg.candidates, candidateTitle), " | "))
			p("|---|---|%s\n", strings.Repeat("---|", len(cfg.candidates)))
			for _, w := range b.wls {
				var cells []string
				for _, c := range cfg.candidates {
					cells = append(cells, b.cell(rs, w.name, c))
				}
				p("| %s | %s | %s |\n", w.name, w.desc, strings.Join(cells, " | "))
			}
			p("\n")
			b.reportLoad(p, rs)
		}
		b.reportRatios(p)
		b.reportRequests(p)
		if fc := fuseCands(cfg.candidates); len(fc) > 0 {
			hs := b.headline()
			p("### Daemon peak RSS (median VmHWM, %s)\n\n| workload | %s |\n|---|%s\n", cfg.regimes[0], strings.Join(fc, " | "), strings.Repeat("---|", len(fc)))
			for _, w := range b.wls {
				var cells []string
				for _, c := range fc {
					cells = append(cells, fmtMiB(medianRSS(hs, w.name, c)))
				}
				p("| %s | %s |\n", w.name, strings.Join(cells, " | "))
			}
			p("\n")
		}
	}
	b.reportStrace(p)
	b.reportStartup(p)
	b.reportPodman(p)
	if len(b.samples) > 0 {
		for _, reg := range cfg.regimes {
			rs := b.regime(reg)
			if len(rs) == 0 {
				continue
			}
			p("### Every run, %s (wall seconds, in run order; load average before → after)\n\n| workload | %s |\n|---|%s\n", reg, strings.Join(mapSlice(cfg.candidates, candidateTitle), " | "), strings.Repeat("---|", len(cfg.candidates)))
			for _, w := range b.wls {
				var cells []string
				for _, c := range cfg.candidates {
					var xs []string
					for _, s := range rs {
						if s.Workload == w.name && s.Cand == c {
							l0, _, _ := strings.Cut(s.LoadBefore, " ")
							l1, _, _ := strings.Cut(s.LoadAfter, " ")
							if s.Err != "" {
								xs = append(xs, "fail")
							} else {
								xs = append(xs, fmt.Sprintf("%.3g (%s→%s)", s.Dur.Seconds(), l0, l1))
							}
						}
					}
					cells = append(cells, strings.Join(xs, " "))
				}
				p("| %s | %s |\n", w.name, strings.Join(cells, " | "))
			}
			p("\n")
		}
		b.reportChecks(p)
	}
	if len(b.scale) > 0 {
		b.reportScale(p)
	}
	if len(b.profiles) > 0 {
		p("## Profiles\n\nunionmount's daemon, one extra run (%s caches) of each workload where a unionmount candidate missed a target, with `UNIONMOUNT_CPUPROFILE`. Files in `%s`.\n\n", cfg.regimes[0], filepath.Dir(cfg.out)+"/profiles")
		for _, pr := range b.profiles {
			p("### %s on %s", pr.Workload, pr.Cand)
			if pr.Why != "" {
				p(" (%s)", pr.Why)
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

// reportLoad summarizes the machine's load around the runs of one regime.
func (b *bench) reportLoad(p func(string, ...any), rs []sample) {
	var busy, load []float64
	for _, s := range rs {
		busy = append(busy, s.Busy)
		for _, l := range []string{s.LoadBefore, s.LoadAfter} {
			f, _, _ := strings.Cut(l, " ")
			if v, err := strconv.ParseFloat(f, 64); err == nil {
				load = append(load, v)
			}
		}
	}
	sort.Float64s(busy)
	sort.Float64s(load)
	if len(busy) == 0 {
		return
	}
	p("Machine load: CPUs busy with other work just before the runs (after waiting up to %s for < 20%%) median %.0f%%, max %.0f%%",
		b.cfg.quietWait, 100*busy[(len(busy)-1)/2], 100*busy[len(busy)-1])
	if len(load) > 0 {
		p("; 1-minute load average around the runs median %.2f, max %.2f (2 CPUs)", load[(len(load)-1)/2], load[len(load)-1])
	}
	p(".\n\n")
}

// reportRatios prints each comparison of issue 13 per workload, wall and
// CPU, headline regime first.
func (b *bench) reportRatios(p func(string, ...any)) {
	cfg := b.cfg
	type col struct {
		a, z string
		cpu  bool
	}
	var cols []col
	if slices.Contains(cfg.candidates, candUnion) && slices.Contains(cfg.candidates, candKernel) {
		cols = append(cols, col{candUnion, candKernel, false})
	}
	for _, pr := range b.pairs() {
		cols = append(cols, col{pr[0], pr[1], false}, col{pr[0], pr[1], true})
	}
	if len(cols) == 0 {
		return
	}
	var heads []string
	for _, c := range cols {
		h := shortName(c.a) + " / " + shortName(c.z)
		if c.cpu {
			h += " CPU"
		} else if c.z != candKernel {
			h += " wall"
		}
		heads = append(heads, h)
	}
	other := ""
	if len(cfg.regimes) > 1 {
		other = fmt.Sprintf(" (%s in brackets)", cfg.regimes[1])
	}
	p("### Ratios: %s caches%s\n\nBelow 1: the first is faster. um = unionmount, fo = fuse-overlayfs.\n\n", cfg.regimes[0], other)
	p("| workload | %s | kernel target |\n|---|%s---|\n", strings.Join(heads, " | "), strings.Repeat("---|", len(cols)))
	hs := b.headline()
	var os []sample
	if len(cfg.regimes) > 1 {
		os = b.regime(cfg.regimes[1])
	}
	for _, w := range b.wls {
		var cells []string
		for _, c := range cols {
			_, x := ratioCell(hs, w.name, c.a, c.z, c.cpu)
			if os != nil {
				_, y := ratioCell(os, w.name, c.a, c.z, c.cpu)
				x += " [" + y + "]"
			}
			cells = append(cells, x)
		}
		kt := "–"
		if w.kernelMax > 0 {
			kt = fmt.Sprintf("≤ %gx", w.kernelMax)
		}
		p("| %s | %s | %s |\n", w.name, strings.Join(cells, " | "), kt)
	}
	p("\n")
}

// reportRequests prints the requests each daemon got per workload (the
// median run of the headline regime).
func (b *bench) reportRequests(p func(string, ...any)) {
	fc := fuseCands(b.cfg.candidates)
	hs := b.headline()
	any := false
	for _, s := range hs {
		any = any || len(s.Requests) > 0
	}
	if !any || len(fc) == 0 {
		return
	}
	p("### FUSE requests per workload (%s, the median run; tracefs event fuse:fuse_request_send)\n\n", b.cfg.regimes[0])
	p("| workload | %s | unionmount's most frequent | fuse-overlayfs's most frequent |\n|---|%s---|---|\n", strings.Join(fc, " | "), strings.Repeat("---|", len(fc)))
	lost := false
	for _, w := range b.wls {
		var cells []string
		tops := map[string]string{}
		for _, c := range fc {
			ms, ok := medianSample(hs, w.name, c)
			if !ok || ms.Requests == nil {
				cells = append(cells, "–")
				continue
			}
			x := strconv.Itoa(requestTotal(ms.Requests))
			if ms.RequestsLost {
				x += " (lost some)"
				lost = true
			}
			cells = append(cells, x)
			tops[c] = topRequests(ms.Requests, 5)
		}
		p("| %s | %s | %s | %s |\n", w.name, strings.Join(cells, " | "), tops[candUnion], tops[candFuseOv])
	}
	p("\n")
	if lost {
		p("(lost some): the trace buffer overflowed; the count is a lower bound.\n\n")
	}
}

// reportStrace prints the strace table: system calls per request.
func (b *bench) reportStrace(p func(string, ...any)) {
	if len(b.straces) == 0 {
		return
	}
	p("## System calls per request\n\n`strace -c -f -p DAEMON` during %s (warm caches, fresh mount), divided by the FUSE requests of the same run. Scheduling calls: %s. Issue 13's target: fewer than 0.5 scheduling calls per request (fuse-overlayfs: 0).\n\n",
		straceWorkload.desc, strings.Join(schedCalls, ", "))
	cols := append([]string{"requests", "syscalls / request", "scheduling / request"}, schedCalls...)
	cols = append(cols, "most frequent")
	p("| daemon | %s |\n|---|%s\n", strings.Join(cols, " | "), strings.Repeat("---|", len(cols)))
	for _, r := range b.straces {
		if r.Err != "" && r.Calls == nil {
			p("| %s | %s |\n", r.Cand, oneLine(r.Err))
			continue
		}
		per := func(n int) string {
			if r.Requests == 0 {
				return strconv.Itoa(n)
			}
			return fmt.Sprintf("%.2f", float64(n)/float64(r.Requests))
		}
		cells := []string{strconv.Itoa(r.Requests), per(r.Total), per(r.sched())}
		for _, c := range schedCalls {
			cells = append(cells, fmt.Sprintf("%d (%s)", r.Calls[c], per(r.Calls[c])))
		}
		cells = append(cells, topRequests(r.Calls, 6))
		p("| %s | %s |\n", r.Cand, strings.Join(cells, " | "))
	}
	p("\nCells of single calls: the count in the run (per request).\n\n")
}

func (b *bench) startupMedian(c string) (time.Duration, bool) {
	var xs []time.Duration
	for _, s := range b.startups {
		if s.Cand == c && s.Err == "" {
			xs = append(xs, s.Start+s.Teardown)
		}
	}
	if len(xs) == 0 {
		return 0, false
	}
	slices.Sort(xs)
	return xs[(len(xs)-1)/2], true
}

// reportStartup prints the start-up and teardown times.
func (b *bench) reportStartup(p func(string, ...any)) {
	if len(b.startups) == 0 {
		return
	}
	p("## Mount start-up and teardown\n\nThe mount program as Podman runs it, over the main lower, %d times each, alternating: start-up = exec of the command (no `-f`) until it has returned and the mount is live; teardown = `fusermount3 -u` until the daemon has exited. Kernel overlayfs: the mount(2) and umount(2) calls. Median milliseconds.\n\n", b.cfg.startReps)
	p("| candidate | start-up | teardown | both | failed |\n|---|---|---|---|---|\n")
	for _, c := range b.cfg.candidates {
		var st, td []time.Duration
		failed := 0
		for _, s := range b.startups {
			if s.Cand != c {
				continue
			}
			if s.Err != "" {
				failed++
				continue
			}
			st, td = append(st, s.Start), append(td, s.Teardown)
		}
		if len(st)+failed == 0 {
			continue
		}
		med := func(xs []time.Duration) string {
			if len(xs) == 0 {
				return "–"
			}
			slices.Sort(xs)
			return fmt.Sprintf("%.1f", ms(xs[(len(xs)-1)/2]))
		}
		both := "–"
		if m, ok := b.startupMedian(c); ok {
			both = fmt.Sprintf("%.1f", ms(m))
		}
		p("| %s | %s | %s | %s | %d |\n", candidateTitle(c), med(st), med(td), both, failed)
	}
	p("\n")
	for _, s := range b.startups {
		if s.Err != "" {
			p("- %s, run %d: `%s`\n", s.Cand, s.Rep+1, oneLine(s.Err))
		}
	}
}

// reportPodman prints the Podman table.
func (b *bench) reportPodman(p func(string, ...any)) {
	r := b.podman
	if r == nil {
		return
	}
	p("## Podman\n\n`go test -run TestPodmanMountProgram ./test/e2e/` with `E2E_TIMING=1`: Podman with each filesystem as its overlay (kernel: the native driver; the others as `mount_program`), each in fresh storage in a temporary directory: import a base image (busybox + 6,000 files), run, build a Containerfile of three RUN steps, export, diff, commit. %d repetitions, the filesystems' order rotated each; median seconds. Load average per repetition: %s.\n\n",
		len(r.Runs), strings.Join(r.Load, "; "))
	for _, e := range r.Errs {
		p("> %s\n\n", oneLine(e))
	}
	if len(r.Runs) == 0 {
		return
	}
	p("| step | %s | unionmount / fuse-overlayfs | unionmount / kernel |\n|---|%s---|---|\n", strings.Join(podmanKinds, " | "), strings.Repeat("---|", len(podmanKinds)))
	row := func(name string, get func(kind string) (float64, bool)) {
		var cells []string
		for _, k := range podmanKinds {
			if v, ok := get(k); ok {
				cells = append(cells, fmt.Sprintf("%.2f", v))
			} else {
				cells = append(cells, "–")
			}
		}
		u, okU := get("unionmount")
		f, okF := get("fuse-overlayfs")
		k, okK := get("kernel")
		rf, rk := "–", "–"
		if okU && okF && f > 0 {
			rf = fmt.Sprintf("%.2f", u/f)
		}
		if okU && okK && k > 0 {
			rk = fmt.Sprintf("%.2f", u/k)
		}
		p("| %s | %s | %s | %s |\n", strings.ReplaceAll(name, "|", `\|`), strings.Join(cells, " | "), rf, rk)
	}
	for _, s := range r.Steps {
		row(s, func(k string) (float64, bool) { return r.median(s, k) })
	}
	row("**total**", r.total)
	p("\n")
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

func mapSlice[T, U any](xs []T, f func(T) U) []U {
	out := make([]U, len(xs))
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
