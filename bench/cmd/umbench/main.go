// Command umbench is unionmount's benchmark suite (`make bench`).
//
// For every workload and candidate (a native copy of the lower, kernel
// overlayfs, fuse-overlayfs, unionmount) it mounts a fresh upper over the
// same lower, runs the workload, records the time (and the FUSE daemon's
// peak RSS), and unmounts. Repetitions alternate candidates and workloads,
// so slow drift hits everyone alike. It prints a markdown report of medians
// and ratios (also written to -o), and checks the targets.
//
//	go run ./bench/cmd/umbench [-quick] [-reps N] [-workloads a,b] [-candidates a,b]
//	                           [-scale] [-pprof] [-cache cold|warm] [-keep] [-o FILE]
//
// Runs as root. Everything it creates lives under -dir and is removed at the
// end (the lower and the scale trees are kept with -keep, for the next run).
// Daemons are started in the foreground (-f) by umbench itself and stopped
// by unmounting; nothing is ever killed by name.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

type config struct {
	repo       string
	bin        string
	dir        string
	out        string
	quick      bool
	reps       int
	workloads  []string
	candidates []string
	scale      bool
	scaleSizes []int
	scaleFlat  int
	scaleReps  int
	pprof      bool
	perf       bool
	cache      string   // the regime being run: cold or warm
	regimes    []string // -cache: the regimes, headline first
	coldReps   int
	flatFiles  int
	count      bool
	strace     bool
	startReps  int
	podman     bool
	podmanReps int
	keep       bool
	timeout    time.Duration
	quietWait  time.Duration
	bigSize    int64
	randIO     int64
	smallFiles int
	rmTarget   string
	exclude    []string
	goroot     string
	args       []string
}

func parseFlags(args []string) (*config, error) {
	fs := flag.NewFlagSet("umbench", flag.ContinueOnError)
	c := &config{args: args}
	var wl, cands, sizes, big, randIO, cache string
	fs.StringVar(&c.repo, "repo", ".", "the unionmount source tree (bin/unionmount is rebuilt there)")
	fs.StringVar(&c.bin, "bin", "", "use this unionmount binary instead of rebuilding bin/unionmount")
	fs.StringVar(&c.dir, "dir", "/var/tmp/umbench", "work directory for lowers, uppers and the mount point (removed at the end)")
	fs.StringVar(&c.out, "o", "bench/out/report.md", "write the markdown report here too (relative to -repo); samples go beside it as JSON")
	fs.BoolVar(&c.quick, "quick", false, "smoke run: smaller lower and files, 1 repetition")
	fs.IntVar(&c.reps, "reps", 5, "repetitions of every workload and candidate")
	fs.StringVar(&wl, "workloads", "", "comma-separated workloads (default all; -list shows them)")
	fs.StringVar(&cands, "candidates", "", "comma-separated candidates: native,kernel,fuse-overlayfs,unionmount (default all)")
	fs.BoolVar(&c.scale, "scale", false, "also run the scale walks (generated trees of -scale-sizes entries and one flat directory)")
	fs.StringVar(&sizes, "scale-sizes", "10k,100k,1M", "files in the scale trees")
	fs.IntVar(&c.scaleFlat, "scale-flat", 100000, "files in the one-directory scale tree (0: none)")
	fs.IntVar(&c.scaleReps, "scale-reps", 3, "repetitions of each scale walk")
	fs.BoolVar(&c.pprof, "pprof", false, "profile unionmount's daemon (UNIONMOUNT_CPUPROFILE) on the two workloads furthest from kernel overlayfs")
	fs.BoolVar(&c.perf, "perf", false, "with -pprof: also record the daemon with perf (kernel side included)")
	fs.StringVar(&cache, "cache", "warm,cold", "the cache regimes, headline first: warm (the lower read once before; fresh mount and daemon every run), cold (sync and drop the page/dentry/inode caches before every timed run)")
	fs.IntVar(&c.coldReps, "cold-reps", 0, "repetitions in the cold regime (default -reps)")
	fs.IntVar(&c.flatFiles, "flat", 100000, "files in the flat lower directory of the flat-ls-* workloads (0: no flat workloads)")
	fs.BoolVar(&c.count, "count", true, "count each FUSE run's requests by opcode (tracefs event fuse_request_send, filtered to the mount)")
	fs.BoolVar(&c.strace, "strace", true, "strace -c -f each FUSE daemon on a tar of go/src/net: system calls per request")
	fs.IntVar(&c.startReps, "startup-reps", 5, "repetitions of the mount start-up and teardown timing (0: none)")
	fs.BoolVar(&c.podman, "podman", true, "run Podman's build/run/commit scenario with each mount program (test/e2e TestPodmanMountProgram)")
	fs.IntVar(&c.podmanReps, "podman-reps", 1, "repetitions of the Podman scenario")
	fs.BoolVar(&c.keep, "keep", false, "keep the generated lower and scale trees in -dir for the next run")
	fs.DurationVar(&c.timeout, "timeout", 15*time.Minute, "limit for one timed run")
	fs.DurationVar(&c.quietWait, "quiet-wait", 20*time.Second, "before each timed run, wait up to this long for other processes to leave the CPUs idle (<20% busy)")
	fs.StringVar(&big, "big", "1G", "size of the big lower file (fio)")
	fs.StringVar(&randIO, "randio", "128M", "bytes read by each fio random-read run")
	fs.IntVar(&c.smallFiles, "smallfiles", 5000, "files in the smallfiles workload")
	fs.StringVar(&c.rmTarget, "rm", "src/cmd", "the lower subtree (in go/) that rm-rf removes")
	list := fs.Bool("list", false, "list the workloads and exit")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if c.quick {
		def := func(name string, apply func()) {
			if !set[name] {
				apply()
			}
		}
		def("reps", func() { c.reps = 1 })
		def("big", func() { big = "64M" })
		def("randio", func() { randIO = "8M" })
		def("smallfiles", func() { c.smallFiles = 1000 })
		def("rm", func() { c.rmTarget = "src/crypto" })
		def("scale-sizes", func() { sizes = "10k" })
		def("scale-flat", func() { c.scaleFlat = 10000 })
		def("scale-reps", func() { c.scaleReps = 1 })
		def("flat", func() { c.flatFiles = 10000 })
		def("startup-reps", func() { c.startReps = 2 })
		c.exclude = []string{"test", "src/cmd"}
	}
	var err error
	if c.bigSize, err = parseSize(big); err != nil {
		return nil, err
	}
	if c.randIO, err = parseSize(randIO); err != nil {
		return nil, err
	}
	for _, s := range splitList(sizes) {
		n, err := parseCount(s)
		if err != nil {
			return nil, err
		}
		c.scaleSizes = append(c.scaleSizes, n)
	}
	c.regimes = splitList(cache)
	for _, r := range c.regimes {
		if r != "cold" && r != "warm" {
			return nil, fmt.Errorf("-cache %q: want warm, cold or both (warm,cold)", cache)
		}
	}
	if len(c.regimes) == 0 {
		return nil, fmt.Errorf("-cache: no regime")
	}
	c.cache = c.regimes[0]
	if c.reps < 1 || c.scaleReps < 1 || c.podmanReps < 1 {
		return nil, fmt.Errorf("-reps, -scale-reps and -podman-reps must be at least 1")
	}
	if c.coldReps <= 0 {
		c.coldReps = c.reps
	}
	all := workloads(c)
	if *list {
		for _, w := range all {
			fmt.Printf("%-20s %s\n", w.name, w.desc)
		}
		os.Exit(0)
	}
	c.workloads = splitList(wl)
	for _, w := range c.workloads {
		if !slices.ContainsFunc(all, func(x *workload) bool { return x.name == w }) {
			return nil, fmt.Errorf("unknown workload %q (try -list)", w)
		}
	}
	c.candidates = splitList(cands)
	for _, x := range c.candidates {
		if !slices.Contains(allCandidates, x) {
			return nil, fmt.Errorf("unknown candidate %q (%s)", x, strings.Join(allCandidates, ", "))
		}
	}
	if len(c.candidates) == 0 {
		c.candidates = allCandidates
	} else { // table order
		c.candidates = slices.DeleteFunc(slices.Clone(allCandidates), func(x string) bool { return !slices.Contains(c.candidates, x) })
	}
	if c.repo, err = filepath.Abs(c.repo); err != nil {
		return nil, err
	}
	if !filepath.IsAbs(c.out) {
		c.out = filepath.Join(c.repo, c.out)
	}
	if c.dir, err = filepath.Abs(c.dir); err != nil {
		return nil, err
	}
	return c, nil
}

func splitList(s string) []string {
	var out []string
	for _, x := range strings.Split(s, ",") {
		if x = strings.TrimSpace(x); x != "" {
			out = append(out, x)
		}
	}
	return out
}

// parseSize reads a byte size: 4096, 64K, 64M, 1G (binary multiples).
func parseSize(s string) (int64, error) {
	s = strings.TrimSuffix(strings.TrimSpace(s), "B")
	mult := int64(1)
	for i, u := range []string{"K", "M", "G"} {
		if strings.HasSuffix(s, u) {
			mult, s = int64(1)<<(10*(i+1)), strings.TrimSuffix(s, u)
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("bad size %q", s)
	}
	return n * mult, nil
}

// parseCount reads a count: 10000, 10k, 1M (decimal multiples).
func parseCount(s string) (int, error) {
	s = strings.TrimSpace(s)
	mult := 1
	switch {
	case strings.HasSuffix(s, "k"), strings.HasSuffix(s, "K"):
		mult, s = 1000, s[:len(s)-1]
	case strings.HasSuffix(s, "M"):
		mult, s = 1000000, s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("bad count %q", s)
	}
	return n * mult, nil
}

// sample is one timed run.
type sample struct {
	Regime   string        `json:"regime"` // warm or cold
	Workload string        `json:"workload"`
	Cand     string        `json:"candidate"`
	Rep      int           `json:"rep"`
	Dur      time.Duration `json:"ns"`
	CPU      time.Duration `json:"cpu_ns"` // workload processes + FUSE daemon, user + system
	Out      string        `json:"out,omitempty"`
	Extra    string        `json:"extra,omitempty"`
	RSS      int64         `json:"peak_rss,omitempty"`
	Busy     float64       `json:"background_busy"` // share of the CPUs busy just before the run
	Err      string        `json:"error,omitempty"`
	Note     string        `json:"note,omitempty"` // a problem after the timed run (slow daemon exit)
	// Load is /proc/loadavg's 1, 5 and 15 minute averages just before and
	// just after the timed run.
	LoadBefore string `json:"load_before"`
	LoadAfter  string `json:"load_after"`
	// Requests the kernel sent the FUSE daemon during the timed run, by
	// opcode (-count); RequestsLost: the trace buffer overflowed.
	Requests     map[string]int `json:"requests,omitempty"`
	RequestsLost bool           `json:"requests_lost,omitempty"`
}

type bench struct {
	cfg       *config
	flatLower string // the flat lower (-flat), "" if none
	self      string // a copy of this program every user may run
	tracer    *reqTracer
	straces   []straceRow
	startups  []startupSample
	podman    *podmanResult
	loadStart string
	loadEnd   string
	ctx       context.Context
	bin       string
	lower     string
	runDir    string
	scratch   string
	mnt       string
	wls       []*workload
	samples   []sample
	scale     []scaleRow
	profiles  []profileResult
	machine   []kv
	mounts    map[string]mountEntry // first mount of each candidate, for the report
	notes     []string
	logw      io.Writer
	started   time.Time
	cur       *instance
	waited    time.Duration
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "-internal" {
		if err := runInternal(os.Args[2:]); err != nil {
			fmt.Fprintf(os.Stderr, "umbench -internal: %v\n", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	cfg, err := parseFlags(os.Args[1:])
	if err != nil {
		if err == flag.ErrHelp {
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "umbench: %v\n", err)
		os.Exit(2)
	}
	os.Exit(run(cfg))
}

func run(cfg *config) int {
	b := &bench{cfg: cfg, started: time.Now(), mounts: map[string]mountEntry{}, logw: os.Stderr}
	if err := b.main(); err != nil {
		b.logf("FAILED: %v", err)
		return 1
	}
	return 0
}

func (b *bench) logf(format string, args ...any) {
	fmt.Fprintf(b.logw, "%s umbench: %s\n", time.Now().Format("15:04:05"), fmt.Sprintf(format, args...))
}

func (b *bench) main() error {
	cfg := b.cfg
	if os.Geteuid() != 0 {
		return fmt.Errorf("must run as root (mounts, drop_caches)")
	}
	need := []string{"fio", "git", "tar", "find", "xargs", "cp", "sync", "go", "dd"}
	anyFuse, anyRootless, anyUnion := false, false, false
	for _, c := range cfg.candidates {
		cd := candidateOf(c)
		anyFuse = anyFuse || cd.daemon != ""
		anyRootless = anyRootless || cd.rootless
		anyUnion = anyUnion || cd.daemon == "unionmount"
		if cd.daemon == "fuse-overlayfs" {
			need = append(need, "fuse-overlayfs")
		}
	}
	if anyFuse {
		need = append(need, "fusermount3")
	}
	if cfg.strace && anyFuse {
		need = append(need, "strace")
	}
	if cfg.perf {
		need = append(need, "perf")
	}
	for _, n := range need {
		if _, err := exec.LookPath(n); err != nil {
			return fmt.Errorf("%s not found (make bench installs the tools: bash bench/deps.sh)", n)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	b.ctx = ctx
	b.loadStart = loadAvg()

	// Work directory, locked against a concurrent run.
	if err := os.MkdirAll(cfg.dir, 0o755); err != nil {
		return err
	}
	lock, err := os.Open(cfg.dir)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := unix.Flock(int(lock.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		return fmt.Errorf("%s is in use by another umbench", cfg.dir)
	}
	b.runDir = filepath.Join(cfg.dir, "run")
	b.scratch = filepath.Join(cfg.dir, "scratch")
	b.mnt = filepath.Join(cfg.dir, "mnt")
	if typ, _ := fsTypeAt(b.mnt); typ != "" { // left over by a killed run
		b.logf("unmounting a leftover %s mount at %s", typ, b.mnt)
		if isFuseType(typ) {
			_ = exec.Command("fusermount3", "-u", b.mnt).Run()
		}
		_ = unix.Unmount(b.mnt, unix.MNT_DETACH)
	}
	if err := os.MkdirAll(b.mnt, 0o755); err != nil {
		return err
	}
	defer b.cleanup()

	if err := os.MkdirAll(filepath.Dir(cfg.out), 0o755); err != nil {
		return err
	}
	logFile, err := os.Create(strings.TrimSuffix(cfg.out, ".md") + ".log")
	if err == nil {
		defer logFile.Close()
		b.logw = io.MultiWriter(os.Stderr, logFile)
	}
	b.logf("loadavg at the start: %s", b.loadStart)

	// Fresh unionmount binary: the filesystem changes under us.
	if cfg.bin != "" {
		if b.bin, err = filepath.Abs(cfg.bin); err != nil {
			return err
		}
		b.notes = append(b.notes, "unionmount: the prebuilt "+cfg.bin+" (-bin), not a fresh build")
	} else if anyUnion || cfg.podman {
		b.bin = filepath.Join(cfg.repo, "bin", "unionmount")
		b.logf("building %s", b.bin)
		build := exec.CommandContext(ctx, "go", "build", "-o", b.bin, "./cmd/unionmount")
		build.Dir = cfg.repo
		build.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build
		if out, err := build.CombinedOutput(); err != nil {
			return fmt.Errorf("go build ./cmd/unionmount: %v\n%s", err, out)
		}
	}
	// Copies of the programs every user may run (the rootless daemon, the
	// -internal workloads), in the work directory.
	tools := filepath.Join(cfg.dir, "tools")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	if b.self, err = installTool(self, tools); err != nil {
		return err
	}
	if b.bin != "" {
		if b.bin, err = installTool(b.bin, tools); err != nil {
			return err
		}
	}
	goroot, err := exec.Command("go", "env", "GOROOT").Output()
	if err != nil {
		return fmt.Errorf("go env GOROOT: %v", err)
	}
	cfg.goroot = strings.TrimSpace(string(goroot))

	if slices.Contains(cfg.regimes, "cold") {
		if err := dropCaches(); err != nil {
			b.notes = append(b.notes, fmt.Sprintf("drop_caches failed (%v): no cold regime", err))
			b.logf("cannot drop caches (%v): warm regime only", err)
			cfg.regimes = slices.DeleteFunc(cfg.regimes, func(r string) bool { return r == "cold" })
			if len(cfg.regimes) == 0 {
				cfg.regimes = []string{"warm"}
			}
		}
	}
	b.machine = machineInfo(cfg)

	b.wls = workloads(cfg)
	if len(cfg.workloads) > 0 {
		b.wls = slices.DeleteFunc(b.wls, func(w *workload) bool { return !slices.Contains(cfg.workloads, w.name) })
	}
	if cfg.flatFiles == 0 {
		b.wls = slices.DeleteFunc(b.wls, func(w *workload) bool { return w.flat })
	}
	if anyRootless {
		restore, err := allowDevFuse()
		if err != nil {
			return err
		}
		defer restore()
	}
	if cfg.count && anyFuse {
		if b.tracer, err = newReqTracer(); err != nil {
			b.notes = append(b.notes, "no request counts: "+err.Error())
			b.logf("no request counts: %v", err)
		} else {
			defer b.tracer.close()
		}
	}
	mainLower := len(b.wls) > 0 || cfg.pprof || cfg.strace || cfg.startReps > 0
	if mainLower {
		if err := b.checkSpace(3*cfg.bigSize+2<<30, 0); err != nil {
			return err
		}
		spec := lowerSpec{Version: lowerSpecVersion, GoRoot: cfg.goroot, GoVer: goVersion(), BigSize: cfg.bigSize, Exclude: cfg.exclude}
		b.logf("building the lower (a copy of %s in a git checkout, and a %s file)", cfg.goroot, human(cfg.bigSize))
		if b.lower, err = buildLower(ctx, cfg.dir, spec, b.logf); err != nil {
			return fmt.Errorf("building the lower: %w", err)
		}
		if anyRootless { // the rootless user works on its own files
			if err := chownTree(b.lower, rootlessUID, rootlessGID); err != nil {
				return err
			}
		}
		rmN, err := countEntries(filepath.Join(b.lower, "go", cfg.rmTarget))
		if err != nil {
			return fmt.Errorf("-rm %s: %w", cfg.rmTarget, err)
		}
		for _, w := range b.wls {
			w.desc = strings.Replace(w.desc, "RMCOUNT", strconv.Itoa(rmN+1), 1)
		}
	}
	if slices.ContainsFunc(b.wls, func(w *workload) bool { return w.flat }) {
		if b.flatLower, err = b.makeFlat(); err != nil {
			return err
		}
	}

	defer b.writeReport()
	// The short sections first, so that a run cut short (Ctrl-C writes the
	// report) still has them; the profiles right after the headline regime.
	if cfg.strace && anyFuse {
		if err := b.runStrace(); err != nil {
			return err
		}
	}
	if cfg.startReps > 0 {
		if err := b.runStartup(); err != nil {
			return err
		}
	}
	if cfg.podman {
		if err := b.runPodman(); err != nil {
			return err
		}
	}
	for i, reg := range cfg.regimes {
		if err := b.runSuite(reg); err != nil {
			return err
		}
		if n := b.failedChecks(); n > 0 {
			return fmt.Errorf("%d runs failed their check of the result (verify errors above)", n)
		}
		if i == 0 && cfg.pprof {
			if err := b.runProfiles(); err != nil {
				return err
			}
		}
	}
	if cfg.scale {
		if err := b.runScale(); err != nil {
			return err
		}
	}
	return ctx.Err()
}

// installTool copies the program at path into dir (mode 0755, as the
// directory) and returns the copy's path.
func installTool(path, dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	dst := filepath.Join(dir, filepath.Base(path))
	tmp := dst + ".new"
	if err := os.WriteFile(tmp, data, 0o755); err != nil {
		return "", err
	}
	return dst, os.Rename(tmp, dst)
}

// chownTree gives dir and everything under it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	return filepath.WalkDir(dir, func(p string, _ fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// allowDevFuse lets every user open /dev/fuse (the rootless daemons) and
// returns the function that restores its mode.
func allowDevFuse() (func(), error) {
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		return nil, err
	}
	mode := st.Mode & 0o7777
	if mode&0o006 == 0o006 {
		return func() {}, nil
	}
	if err := unix.Chmod("/dev/fuse", mode|0o666); err != nil {
		return nil, fmt.Errorf("chmod /dev/fuse: %w", err)
	}
	return func() { _ = unix.Chmod("/dev/fuse", mode) }, nil
}

// loadAvg is /proc/loadavg's 1, 5 and 15 minute load averages.
func loadAvg() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}

// makeFlat makes (or, kept from an earlier run, reuses) the flat lower: a
// directory "flat" of -flat empty files.
func (b *bench) makeFlat() (string, error) {
	dir := filepath.Join(b.cfg.dir, "flat", strconv.Itoa(b.cfg.flatFiles))
	lower := filepath.Join(dir, "lower")
	marker := filepath.Join(dir, "done")
	if _, err := os.Stat(marker); err == nil {
		return lower, nil
	}
	if err := b.checkSpace(1<<30, uint64(b.cfg.flatFiles+100000)); err != nil {
		return "", err
	}
	_ = os.RemoveAll(dir)
	b.logf("generating the flat lower (%d files in one directory)", b.cfg.flatFiles)
	if _, err := genTree(b.ctx, lower, b.cfg.flatFiles, true); err != nil {
		return "", fmt.Errorf("generating the flat lower: %w", err)
	}
	unix.Sync()
	return lower, os.WriteFile(marker, nil, 0o644)
}

func isFuseType(t string) bool { return strings.HasPrefix(t, "fuse") }

func goVersion() string {
	out, _ := exec.Command("go", "version").Output()
	return strings.TrimSpace(string(out))
}

// checkSpace fails when the work directory's filesystem has less than
// bytes free, or fewer than inodes free inodes.
func (b *bench) checkSpace(bytes int64, inodes uint64) error {
	var st unix.Statfs_t
	if err := unix.Statfs(b.cfg.dir, &st); err != nil {
		return err
	}
	if free := int64(st.Bavail) * st.Bsize; free < bytes {
		return fmt.Errorf("%s has %s free, needs about %s", b.cfg.dir, human(free&^(1<<20-1)), human(bytes&^(1<<20-1)))
	}
	if inodes > 0 && st.Ffree < inodes {
		return fmt.Errorf("%s has %d free inodes, needs about %d", b.cfg.dir, st.Ffree, inodes)
	}
	return nil
}

// dropCaches writes back dirty data and drops the page, dentry and inode
// caches.
func dropCaches() error {
	unix.Sync()
	return os.WriteFile("/proc/sys/vm/drop_caches", []byte("3\n"), 0o644)
}

// runSuite runs every workload on every candidate in the cache regime
// reg: rep by rep, workload by workload, the candidates in an order
// rotated each rep.
func (b *bench) runSuite(reg string) error {
	cfg := b.cfg
	if len(b.wls) == 0 {
		return nil
	}
	cfg.cache = reg
	defer func() { cfg.cache = cfg.regimes[0] }()
	reps := cfg.reps
	if reg == "cold" {
		reps = cfg.coldReps
	}
	if reg == "warm" {
		b.warmLowers()
	}
	total := reps * len(b.wls) * len(cfg.candidates)
	b.logf("suite: %d workloads x %d candidates x %d reps, %s caches; loadavg %s", len(b.wls), len(cfg.candidates), reps, reg, loadAvg())
	i := 0
	for rep := 0; rep < reps; rep++ {
		for _, w := range b.wls {
			for k := range cfg.candidates {
				if b.ctx.Err() != nil {
					return b.ctx.Err()
				}
				c := cfg.candidates[(k+rep)%len(cfg.candidates)]
				i++
				s := b.runOne(w, c, rep, nil)
				if b.ctx.Err() != nil { // interrupted: not a result
					return b.ctx.Err()
				}
				b.samples = append(b.samples, s)
				b.logf("[%s %d/%d] %-19s %-23s %s", reg, i, total, w.name, c, describe(s))
			}
		}
	}
	return nil
}

// warmLowers reads the lowers once (file data, and the flat directory's
// inodes), so that warm runs find them in the page cache.
func (b *bench) warmLowers() {
	if b.lower != "" {
		_ = runQuiet(b.ctx, b.lower, "bash", "-c", "tar -cf - . | cat >/dev/null")
	}
	if b.flatLower != "" {
		_ = runQuiet(b.ctx, b.flatLower, "bash", "-c", "ls -l flat >/dev/null")
	}
}

func describe(s sample) string {
	if s.Err != "" {
		return "ERROR " + s.Err
	}
	d := fmtDur(s.Dur) + fmt.Sprintf(" [cpu %.2fs]", s.CPU.Seconds())
	if s.Extra != "" {
		d += " (" + s.Extra + ")"
	}
	if s.Out != "" {
		d += "  out=" + strings.ReplaceAll(s.Out, "\n", " ")
	}
	if s.RSS > 0 {
		d += fmt.Sprintf("  rss=%.1fMiB", float64(s.RSS)/(1<<20))
	}
	if s.Busy >= 0.05 {
		d += fmt.Sprintf("  background=%.0f%%", 100*s.Busy)
	}
	if s.LoadBefore != "" {
		d += fmt.Sprintf("  load %s -> %s", s.LoadBefore, s.LoadAfter)
	}
	if n := requestTotal(s.Requests); n > 0 {
		d += fmt.Sprintf("  requests=%d", n)
	}
	return d
}

// verifyPrefix starts the error of a run whose result failed its check.
const verifyPrefix = "verify: "

// hooks of a profiled run.
type runHooks struct {
	env    []string             // for the daemon
	around func(pid int) func() // started before the timed run; the returned func after it
	after  func(in *instance)   // after teardown
	lower  string               // another lower (scale)
	run    func(e *runEnv) (result, error)
}

// runOne mounts a fresh instance of cand, runs w once and tears down.
func (b *bench) runOne(w *workload, cand string, rep int, h *runHooks) (s sample) {
	s = sample{Regime: b.cfg.cache, Workload: w.name, Cand: cand, Rep: rep}
	fail := func(err error) sample {
		if s.Err == "" {
			s.Err = err.Error()
		}
		return s
	}
	if err := resetDir(b.scratch, "home", "tmp"); err != nil {
		return fail(err)
	}
	lower := b.lower
	if w.flat {
		lower = b.flatLower
	}
	if h != nil && h.lower != "" {
		lower = h.lower
	}
	o := mountOpts{lower: lower, runDir: b.runDir, mnt: b.mnt, mutates: w.mutates, copyDir: []string{"go"}, bin: b.bin}
	if h != nil {
		o.env = h.env
	}
	in, err := setup(cand, o)
	if err != nil {
		return fail(fmt.Errorf("setup: %w", err))
	}
	b.cur = in
	if _, seen := b.mounts[cand]; !seen {
		b.mounts[cand], _ = mountAt(b.mnt)
	}
	defer func() {
		if err := in.teardown(); err != nil {
			s.Note = "teardown: " + err.Error()
		}
		b.cur = nil
		s.RSS = in.peakRSS
		if h != nil && h.after != nil {
			h.after(in)
		}
		if err := os.RemoveAll(b.runDir); err != nil && s.Err == "" {
			s.Err = err.Error()
		}
		_ = os.RemoveAll(b.scratch)
	}()
	e := &runEnv{ctx: b.ctx, cfg: b.cfg, cand: cand, mnt: b.mnt, lower: lower, upper: in.upper, scratch: b.scratch,
		cred: credential(cand), owner: "1000:1000", self: b.self}
	if isRootless(cand) {
		e.owner = fmt.Sprintf("%d:%d", rootlessUID, rootlessGID)
	}
	if w.prepare != nil {
		if err := w.prepare(e); err != nil {
			return fail(fmt.Errorf("prepare: %w", err))
		}
	}
	if isRootless(cand) {
		if err := chownTree(b.scratch, rootlessUID, rootlessGID); err != nil {
			return fail(err)
		}
	}
	if b.cfg.cache == "cold" {
		if err := dropCaches(); err != nil {
			return fail(err)
		}
	} else {
		unix.Sync()
	}
	s.Busy = b.waitQuiet()
	var done func()
	if h != nil && h.around != nil {
		done = h.around(in.pid())
	}
	runFn := w.run
	if h != nil && h.run != nil {
		runFn = h.run
	}
	counting := false
	if b.tracer != nil && in.pid() != 0 {
		if m, err := mountAt(b.mnt); err == nil {
			counting = b.tracer.start(m.dev) == nil
		}
	}
	s.LoadBefore = loadAvg()
	daemonCPU := procCPU(in.pid())
	r, err := runFn(e)
	if in.pid() != 0 {
		r.cpu += procCPU(in.pid()) - daemonCPU
	}
	s.LoadAfter = loadAvg()
	if counting {
		s.Requests, s.RequestsLost, _ = b.tracer.stop()
	}
	if done != nil {
		done()
	}
	if err != nil {
		return fail(err)
	}
	s.Dur, s.CPU, s.Out, s.Extra = r.dur, r.cpu, r.out, r.extra
	if w.verify != nil {
		out, err := w.verify(e)
		if err != nil && in.daemonLog != nil {
			log := filepath.Join(b.cfg.dir, fmt.Sprintf("daemon-%s-%s.log", w.name, time.Now().Format("20060102-150405")))
			if werr := os.WriteFile(log, in.daemonLog.Bytes(), 0o644); werr == nil {
				err = fmt.Errorf("%w (daemon log %s)", err, log)
			}
		}
		if err != nil {
			return fail(fmt.Errorf("%s%w", verifyPrefix, err))
		}
		s.Out = out
	}
	return s
}

// failedChecks counts the runs whose result was wrong (a workload's verify
// failed): a wrong result is a failure of the whole benchmark, not a slow run.
func (b *bench) failedChecks() int {
	n := 0
	for _, s := range b.samples {
		if strings.HasPrefix(s.Err, verifyPrefix) {
			n++
		}
	}
	return n
}

// waitQuiet waits (up to -quiet-wait; not at all once ten times that has
// been spent waiting) until the CPUs are less than 20% busy over half a
// second, and returns the last busy share measured.
func (b *bench) waitQuiet() float64 {
	start := time.Now()
	wait := b.cfg.quietWait
	if b.waited > 10*b.cfg.quietWait { // the machine stays busy: stop waiting, just record it
		wait = 0
	}
	defer func() { b.waited += time.Since(start) }()
	warned := false
	for {
		busy := cpuBusy(500 * time.Millisecond)
		if busy < 0.20 || time.Since(start) > wait || b.ctx.Err() != nil {
			return busy
		}
		if !warned {
			b.logf("waiting for the CPUs to quiet down (%.0f%% busy)", 100*busy)
			warned = true
		}
		time.Sleep(2 * time.Second)
	}
}

// cpuBusy is the share of all CPUs' time not idle (nor in iowait) over d.
func cpuBusy(d time.Duration) float64 {
	read := func() (busy, total uint64) {
		data, err := os.ReadFile("/proc/stat")
		if err != nil {
			return 0, 0
		}
		line, _, _ := strings.Cut(string(data), "\n")
		f := strings.Fields(line)
		for i, x := range f[1:] {
			v, _ := strconv.ParseUint(x, 10, 64)
			total += v
			if i != 3 && i != 4 { // idle, iowait
				busy += v
			}
		}
		return busy, total
	}
	b0, t0 := read()
	time.Sleep(d)
	b1, t1 := read()
	if t1 <= t0 {
		return 0
	}
	return float64(b1-b0) / float64(t1-t0)
}

// resetDir empties dir and creates the named subdirectories.
func resetDir(dir string, subs ...string) error {
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for _, s := range append([]string{""}, subs...) {
		if err := os.MkdirAll(filepath.Join(dir, s), 0o755); err != nil {
			return err
		}
	}
	return nil
}

// cleanup unmounts whatever is still mounted and removes what we created.
func (b *bench) cleanup() {
	if b.cur != nil {
		if err := b.cur.teardown(); err != nil {
			b.logf("cleanup: %v", err)
		}
		b.cur = nil
	}
	if typ, _ := fsTypeAt(b.mnt); typ != "" {
		_ = unix.Unmount(b.mnt, unix.MNT_DETACH)
	}
	for _, d := range []string{b.runDir, b.scratch, b.mnt} {
		if err := os.RemoveAll(d); err != nil {
			b.logf("cleanup: %v", err)
		}
	}
	if b.cfg.keep {
		b.logf("kept the lower and scale trees in %s (-keep)", b.cfg.dir)
		return
	}
	if err := os.RemoveAll(b.cfg.dir); err != nil {
		b.logf("cleanup: %v", err)
	}
}

// writeReport prints the report and writes it (and the raw samples).
func (b *bench) writeReport() {
	b.loadEnd = loadAvg()
	b.logf("loadavg at the end: %s", b.loadEnd)
	rep := b.report()
	fmt.Print(rep)
	if err := os.WriteFile(b.cfg.out, []byte(rep), 0o644); err != nil {
		b.logf("writing %s: %v", b.cfg.out, err)
	}
	raw, _ := json.MarshalIndent(struct {
		Samples  []sample        `json:"samples"`
		Strace   []straceRow     `json:"strace,omitempty"`
		Startup  []startupSample `json:"startup,omitempty"`
		Podman   *podmanResult   `json:"podman,omitempty"`
		Scale    []scaleRow      `json:"scale,omitempty"`
		LoadFrom string          `json:"load_start"`
		LoadTo   string          `json:"load_end"`
	}{b.samples, b.straces, b.startups, b.podman, b.scale, b.loadStart, b.loadEnd}, "", "  ")
	if err := os.WriteFile(strings.TrimSuffix(b.cfg.out, ".md")+".json", raw, 0o644); err != nil {
		b.logf("writing samples: %v", err)
	}
	b.logf("report written to %s", b.cfg.out)
}
