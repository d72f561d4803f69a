package e2e

// The randomized differential tester, part 4: the tests that drive it.
//
//	go test -run TestDifferentialRandom ./test/e2e/       CI: seeds 1..250, bounded
//	make fuzz                                             unbounded, random base seed
//	DIFFTEST_SEED=N DIFFTEST_SEQS=1 go test -run TestDifferentialRandom ./test/e2e/
//	                                                      replay sequence N
//	go test -run '^$' -fuzz FuzzDifferential ./test/e2e/  Go's fuzzer picks the seeds
//
// Settings (environment, all optional):
//
//	DIFFTEST_SEED      first seed (default 1; "random" picks one and prints it)
//	DIFFTEST_SEQS      sequences to run, seeds SEED..SEED+SEQS-1 (default 250,
//	                   60 with -short; 0 = until DIFFTEST_DURATION or a failure)
//	DIFFTEST_OPS       operations per sequence (default 20)
//	DIFFTEST_LOWERS    at most this many lower layers (default 3)
//	DIFFTEST_HARDLINKS 0: generate no hard links inside layers (default 1)
//	DIFFTEST_PARALLEL  sequences run at once (default 2)
//	DIFFTEST_DURATION  stop starting sequences after this long (e.g. 30m)
//	DIFFTEST_MAXFAIL   stop after this many failing sequences (default: 0 =
//	                   never when bounded, 1 when unbounded)
//	DIFFTEST_SHRINK    shrink at most this many failures, one per kind of
//	                   discrepancy (default 3), DIFFTEST_SHRINK_TRIALS runs
//	                   each (default 250)
//	DIFFTEST_OUT       directory to write each reproducer into, as a .go file
//
// A failing sequence is reported with its seed, its operations and what
// differed, then shrunk, and the shrunk case is printed as a Go test ready
// to paste into difftest_regress_test.go.

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

type difftestConfig struct {
	seed         int64
	seqs         int
	gen          genConfig
	parallel     int
	duration     time.Duration
	maxFail      int
	shrink       int
	shrinkTrials int
	out          string
}

func difftestConfigFromEnv(t *testing.T) difftestConfig {
	t.Helper()
	c := difftestConfig{
		seed:         1,
		seqs:         250,
		gen:          genConfig{ops: 20, maxLowers: 3},
		parallel:     2,
		shrink:       3,
		shrinkTrials: 250,
		out:          os.Getenv("DIFFTEST_OUT"),
	}
	if testing.Short() {
		c.seqs = 60
	}
	num := func(name string, dst *int) {
		if v := os.Getenv(name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 {
				t.Fatalf("%s=%q: want a number >= 0", name, v)
			}
			*dst = n
		}
	}
	switch v := os.Getenv("DIFFTEST_SEED"); v {
	case "":
	case "random":
		c.seed = time.Now().UnixNano() % 1e12
	default:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			t.Fatalf("DIFFTEST_SEED=%q: want a number or \"random\"", v)
		}
		c.seed = n
	}
	num("DIFFTEST_SEQS", &c.seqs)
	num("DIFFTEST_OPS", &c.gen.ops)
	num("DIFFTEST_LOWERS", &c.gen.maxLowers)
	num("DIFFTEST_PARALLEL", &c.parallel)
	c.gen.noLinks = os.Getenv("DIFFTEST_HARDLINKS") == "0"
	if c.seqs == 0 {
		c.maxFail = 1
	}
	num("DIFFTEST_MAXFAIL", &c.maxFail)
	num("DIFFTEST_SHRINK", &c.shrink)
	num("DIFFTEST_SHRINK_TRIALS", &c.shrinkTrials)
	if v := os.Getenv("DIFFTEST_DURATION"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("DIFFTEST_DURATION=%q: %v", v, err)
		}
		c.duration = d
	}
	c.gen.maxLowers = max(c.gen.maxLowers, 1)
	c.parallel = max(c.parallel, 1)
	return c
}

// difftestRun is the state shared by the sequences of one test.
type difftestRun struct {
	cfg      difftestConfig
	mu       sync.Mutex
	failed   int
	shrunk   map[string]bool // signatures already shrunk
	ran, ops int
	failures []string
	// kernelOnly counts the intended differences seen, by signature,
	// with one example each.
	kernelOnly map[string]int
	examples   map[string]string
}

// TestDifferentialRandom runs generated sequences on kernel overlayfs and
// unionmount and compares them (see harness_difftest_run.go).
func TestDifferentialRandom(t *testing.T) {
	requireMountable(t)
	cfg := difftestConfigFromEnv(t)
	run := &difftestRun{cfg: cfg, shrunk: map[string]bool{}, kernelOnly: map[string]int{}, examples: map[string]string{}}
	bound := "unbounded"
	if cfg.seqs > 0 {
		bound = fmt.Sprintf("seeds %d..%d", cfg.seed, cfg.seed+int64(cfg.seqs)-1)
	}
	t.Logf("differential tester: %s, %d ops each, up to %d lowers, %d at once (replay one: DIFFTEST_SEED=N DIFFTEST_SEQS=1)",
		bound, cfg.gen.ops, cfg.gen.maxLowers, cfg.parallel)
	fmt.Fprintf(os.Stderr, "difftest: base seed %d (%s)\n", cfg.seed, bound)
	start := time.Now()
	seeds := make(chan int64)
	go func() {
		defer close(seeds)
		for i := 0; cfg.seqs == 0 || i < cfg.seqs; i++ {
			if cfg.duration > 0 && time.Since(start) > cfg.duration || run.stop() {
				return
			}
			seeds <- cfg.seed + int64(i)
		}
	}()
	var wg sync.WaitGroup
	for w := 0; w < cfg.parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for seed := range seeds {
				t.Run(fmt.Sprintf("seed=%d", seed), func(t *testing.T) { run.one(t, seed) })
			}
		}()
	}
	wg.Wait()
	t.Logf("differential tester: %d sequences, %d operations run on both filesystems in %v; %d failed",
		run.ran, run.ops, time.Since(start).Round(time.Second), run.failed)
	if len(run.kernelOnly) > 0 {
		var lines []string
		for _, sig := range sortedKeys(run.kernelOnly) {
			lines = append(lines, fmt.Sprintf("%4d x %s, e.g. %s", run.kernelOnly[sig], sig, run.examples[sig]))
		}
		t.Logf("intended differences seen (kernel overlayfs differs, unionmount does what ext4 does):\n  %s", strings.Join(lines, "\n  "))
	}
	if len(run.failures) > 0 {
		t.Errorf("failing sequences:\n  %s", strings.Join(run.failures, "\n  "))
	}
}

func (r *difftestRun) stop() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.cfg.maxFail > 0 && r.failed >= r.cfg.maxFail
}

// one runs the sequence of seed and, if it fails, reports and shrinks it.
func (r *difftestRun) one(t *testing.T, seed int64) {
	c := generateCase(seed, r.cfg.gen)
	res := runSeq(t, c)
	r.mu.Lock()
	r.ran++
	r.ops += len(c.Ops)
	if r.ran%100 == 0 {
		fmt.Fprintf(os.Stderr, "difftest: %d sequences, %d operations, %d failed\n", r.ran, r.ops, r.failed)
	}
	for _, d := range res.kernelOnly {
		if r.kernelOnly[d.Sig]++; r.examples[d.Sig] == "" {
			r.examples[d.Sig] = fmt.Sprintf("seed %d: %s", seed, d.Detail)
		}
	}
	if len(res.discs) == 0 {
		r.mu.Unlock()
		return
	}
	r.failed++
	first := res.discs[0]
	r.failures = append(r.failures, fmt.Sprintf("seed %d: %s", seed, first))
	doShrink := r.cfg.shrink > 0 && !r.shrunk[first.Sig]
	if doShrink {
		r.shrunk[first.Sig] = true
		r.cfg.shrink--
	}
	r.mu.Unlock()

	fmt.Fprintf(os.Stderr, "difftest: seed %d FAILED: %s\n", seed, first)
	t.Logf("the whole case:\n%s", c.goSource(fmt.Sprintf("TestDiffSeed%dWhole", seed), "unshrunk"))
	t.Errorf("seed %d (replay: DIFFTEST_SEED=%d DIFFTEST_SEQS=1): operations:\n  %s", seed, seed, strings.Join(res.log, "\n  "))
	for _, d := range res.discs {
		t.Errorf("%s", d)
	}
	if !doShrink {
		t.Logf("not shrinking (a failure of kind %q was shrunk already, or DIFFTEST_SHRINK is used up)", first.Sig)
		return
	}
	small, trials := shrinkCase(t, c, first.Sig, r.cfg.shrinkTrials)
	name := fmt.Sprintf("TestDiffSeed%d", seed)
	src := small.goSource(name, fmt.Sprintf("Found by TestDifferentialRandom, seed %d: %s", seed, first.Sig))
	t.Errorf("minimal reproducer (%d ops, shrunk in %d runs), paste into difftest_regress_test.go:\n\n%s", len(small.Ops), trials, src)
	if r.cfg.out != "" {
		if err := os.MkdirAll(r.cfg.out, 0o755); err == nil {
			p := filepath.Join(r.cfg.out, fmt.Sprintf("seed%d_test.go.txt", seed))
			if err := os.WriteFile(p, []byte(src), 0o644); err == nil {
				fmt.Fprintf(os.Stderr, "difftest: reproducer written to %s\n", p)
			}
		}
	}
}

// FuzzDifferential is the tester under Go's fuzzer (`go test -fuzz`): the
// fuzzer picks seeds. Without -fuzz it runs the few seeds below.
func FuzzDifferential(f *testing.F) {
	f.Add(int64(1000001))
	f.Add(int64(1000002))
	f.Fuzz(func(t *testing.T, seed int64) {
		requireMountable(t)
		cfg := difftestConfigFromEnv(t)
		c := generateCase(seed, cfg.gen)
		res := runSeq(t, c)
		if len(res.discs) == 0 {
			return
		}
		t.Errorf("seed %d: operations:\n  %s", seed, strings.Join(res.log, "\n  "))
		for _, d := range res.discs {
			t.Errorf("%s", d)
		}
		if cfg.shrink > 0 {
			small, _ := shrinkCase(t, c, res.discs[0].Sig, cfg.shrinkTrials)
			t.Errorf("minimal reproducer:\n\n%s", small.goSource(fmt.Sprintf("TestDiffSeed%d", seed), "Found by FuzzDifferential: "+res.discs[0].Sig))
		}
	})
}

// TestDifftestGeneratorDeterministic: a seed alone reproduces a case, and
// the generator's model of the merged tree reads layers as overlayfs does
// (no mount needed).
func TestDifftestGeneratorDeterministic(t *testing.T) {
	cfg := genConfig{ops: 20, maxLowers: 3}
	for seed := int64(1); seed <= 50; seed++ {
		a, b := generateCase(seed, cfg), generateCase(seed, cfg)
		if a.goSource("X", "") != b.goSource("X", "") {
			t.Fatalf("seed %d: two generations differ", seed)
		}
		if len(a.Ops) != cfg.ops || len(a.Lowers) == 0 {
			t.Fatalf("seed %d: %d ops, %d lowers", seed, len(a.Ops), len(a.Lowers))
		}
	}
	view := mergedView([][]Entry{
		{Whiteout("a"), Dir("d").WithXattr(xattrOpaque, "y"), File("d/new", ""), File("f", "")},
		{File("a", ""), Dir("d"), File("d/old", ""), Dir("f"), File("f/hidden", ""), Dir("m/x")},
		{Dir("m/y"), File("m/z", ""), File("m/x/deep", "")},
	})
	want := map[string]byte{".": 'd', "d": 'd', "d/new": 'f', "f": 'f', "m": 'd', "m/x": 'd', "m/y": 'd', "m/z": 'f', "m/x/deep": 'f'}
	if fmt.Sprint(view) != fmt.Sprint(want) {
		t.Errorf("mergedView:\n got %v\nwant %v", view, want)
	}
}
