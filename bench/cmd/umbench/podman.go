package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"
)

// podmanResult is the Podman scenario of the e2e suite
// (TestPodmanMountProgram: import, run, build of a 3-step Containerfile,
// export, diff, commit), run with each mount program, each with its own
// fresh storage in a temporary directory: seconds by step and
// filesystem, one map per repetition.
type podmanResult struct {
	Steps []string                        `json:"steps"`
	Runs  []map[string]map[string]float64 `json:"runs"`
	Errs  []string                        `json:"errors,omitempty"`
	Load  []string                        `json:"load,omitempty"` // loadavg before and after each repetition
}

// podmanKinds are the test's filesystems, in its table order.
var podmanKinds = []string{"kernel", "fuse-overlayfs", "unionmount"}

func (b *bench) runPodman() error {
	cfg := b.cfg
	res := &podmanResult{}
	b.podman = res
	for _, prog := range []string{"podman", "runc", "conmon", "busybox"} {
		if _, err := exec.LookPath(prog); err != nil {
			res.Errs = append(res.Errs, fmt.Sprintf("%s not installed (bash bench/deps.sh installs it): no Podman runs", prog))
			b.logf("podman: %s not installed: skipped", prog)
			return nil
		}
	}
	tmp := filepath.Join(cfg.dir, "podman-tmp")
	for rep := 0; rep < cfg.podmanReps; rep++ {
		if b.ctx.Err() != nil {
			return b.ctx.Err()
		}
		if err := resetDir(tmp); err != nil {
			return err
		}
		out := filepath.Join(cfg.dir, fmt.Sprintf("podman-%d.json", rep))
		_ = os.Remove(out)
		cmd := exec.CommandContext(b.ctx, "go", "test", "-count=1", "-v", "-timeout", "30m", "-run", "^TestPodmanMountProgram$", "./test/e2e/")
		cmd.Dir = cfg.repo
		cmd.Env = append(os.Environ(), "E2E_PODMAN=1", "E2E_TIMING=1", "E2E_TIMINGS_OUT="+out,
			"E2E_PODMAN_ROTATE="+strconv.Itoa(rep), "TMPDIR="+tmp)
		load := loadAvg()
		b.logf("podman: repetition %d (go test -run TestPodmanMountProgram ./test/e2e/); loadavg %s", rep+1, load)
		start := time.Now()
		log, err := cmd.CombinedOutput()
		load += " -> " + loadAvg()
		res.Load = append(res.Load, load)
		if err != nil {
			res.Errs = append(res.Errs, fmt.Sprintf("repetition %d: %v: %s", rep+1, err, tail(string(log), 1500)))
			b.logf("podman: repetition %d failed: %v\n%s", rep+1, err, tail(string(log), 3000))
		}
		data, rerr := os.ReadFile(out)
		if rerr != nil {
			continue
		}
		var doc struct {
			Steps   []string                      `json:"steps"`
			Seconds map[string]map[string]float64 `json:"seconds"`
		}
		if err := json.Unmarshal(data, &doc); err != nil {
			res.Errs = append(res.Errs, fmt.Sprintf("repetition %d: %v", rep+1, err))
			continue
		}
		if len(res.Steps) == 0 {
			res.Steps = doc.Steps
		}
		res.Runs = append(res.Runs, doc.Seconds)
		b.logf("podman: repetition %d in %s: build %s", rep+1, time.Since(start).Round(time.Second), fmtPodmanStep(doc.Seconds[podmanBuildStep]))
	}
	_ = os.RemoveAll(tmp)
	return nil
}

// podmanBuildStep is the step issue 13's Podman target is about.
const podmanBuildStep = "build (3 RUN steps)"

func fmtPodmanStep(m map[string]float64) string {
	var parts []string
	for _, k := range podmanKinds {
		if v, ok := m[k]; ok {
			parts = append(parts, fmt.Sprintf("%s %.2f s", k, v))
		}
	}
	return strings.Join(parts, ", ")
}

// median of step on kind over the repetitions.
func (r *podmanResult) median(step, kind string) (float64, bool) {
	var xs []float64
	for _, run := range r.Runs {
		if v, ok := run[step][kind]; ok {
			xs = append(xs, v)
		}
	}
	if len(xs) == 0 {
		return 0, false
	}
	sort.Float64s(xs)
	if len(xs)%2 == 1 {
		return xs[len(xs)/2], true
	}
	return (xs[len(xs)/2-1] + xs[len(xs)/2]) / 2, true
}

// total of every step on kind, median over the repetitions.
func (r *podmanResult) total(kind string) (float64, bool) {
	var xs []float64
	for _, run := range r.Runs {
		t, ok := 0.0, true
		for _, s := range r.Steps {
			v, have := run[s][kind]
			ok = ok && have
			t += v
		}
		if ok {
			xs = append(xs, t)
		}
	}
	if len(xs) == 0 {
		return 0, false
	}
	sort.Float64s(xs)
	return xs[(len(xs)-1)/2], true
}
