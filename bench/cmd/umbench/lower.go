package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"
)

// lowerSpec describes the main lower; a lower already on disk is reused
// (with -keep) only when its spec matches.
type lowerSpec struct {
	Version int      `json:"version"`
	GoRoot  string   `json:"goroot"`
	GoVer   string   `json:"go_version"`
	BigSize int64    `json:"big_size"`
	Exclude []string `json:"exclude"`
}

const lowerSpecVersion = 1

// buildLower makes dir/lower: go/ (a copy of GOROOT, minus spec.Exclude,
// committed into a git repository, bin/ and pkg/ ignored) and big.bin
// (random bytes).
func buildLower(ctx context.Context, dir string, spec lowerSpec, logf func(string, ...any)) (string, error) {
	lower := filepath.Join(dir, "lower")
	specPath := filepath.Join(dir, "lower.json")
	want, _ := json.Marshal(spec)
	if have, err := os.ReadFile(specPath); err == nil && string(have) == string(want) {
		if _, err := os.Stat(filepath.Join(lower, "big.bin")); err == nil {
			logf("reusing the lower in %s", lower)
			return lower, nil
		}
	}
	os.Remove(specPath)
	if err := os.RemoveAll(lower); err != nil {
		return "", err
	}
	if err := os.MkdirAll(lower, 0o755); err != nil {
		return "", err
	}
	start := time.Now()
	goDir := filepath.Join(lower, "go")
	if err := runQuiet(ctx, "", "cp", "-a", spec.GoRoot, goDir); err != nil {
		return "", err
	}
	for _, x := range spec.Exclude {
		if err := os.RemoveAll(filepath.Join(goDir, x)); err != nil {
			return "", err
		}
	}
	// A committed checkout: everything but the binaries.
	git := func(args ...string) error {
		return runQuiet(ctx, goDir, "git", append([]string{"-c", "user.name=umbench", "-c", "user.email=umbench@localhost",
			"-c", "init.defaultBranch=main", "-c", "gc.auto=0", "-c", "safe.directory=*"}, args...)...)
	}
	for _, args := range [][]string{{"init", "-q"}} {
		if err := git(args...); err != nil {
			return "", err
		}
	}
	if err := os.WriteFile(filepath.Join(goDir, ".git", "info", "exclude"), []byte("/bin/\n/pkg/\n"), 0o644); err != nil {
		return "", err
	}
	for _, args := range [][]string{{"add", "-A"}, {"commit", "-q", "-m", "lower"}, {"gc", "-q", "--prune=now"}, {"status", "-s"}} {
		if err := git(args...); err != nil {
			return "", err
		}
	}
	if err := writeRandom(filepath.Join(lower, "big.bin"), spec.BigSize); err != nil {
		return "", err
	}
	if err := runQuiet(ctx, "", "sync"); err != nil {
		return "", err
	}
	n, _ := countEntries(lower)
	logf("built the lower in %s: %d entries, %s", time.Since(start).Round(time.Second), n, lower)
	return lower, os.WriteFile(specPath, want, 0o644)
}

// writeRandom writes size pseudo-random (incompressible) bytes to path.
func writeRandom(path string, size int64) error {
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{'u', 'm', 'b', 'e', 'n', 'c', 'h'})
	buf := make([]byte, 1<<20)
	for left := size; left > 0; {
		n := int64(len(buf))
		if left < n {
			n = left
		}
		_, _ = rng.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// genTree makes a tree of files empty files under dir: flat puts them all in
// dir/flat; otherwise dir/dMMM/dLL/fFF, 100 files a leaf directory and 100
// leaf directories a middle one. It returns the number of entries.
func genTree(ctx context.Context, dir string, files int, flat bool) (int, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return 0, err
	}
	if flat {
		d := filepath.Join(dir, "flat")
		if err := os.Mkdir(d, 0o755); err != nil {
			return 0, err
		}
		jobs := make(chan [2]int)
		go func() {
			defer close(jobs)
			for i := 0; i < files; i += 1000 {
				jobs <- [2]int{i, min(i+1000, files)}
			}
		}()
		err := parallel(ctx, jobs, func(j [2]int) error {
			for i := j[0]; i < j[1]; i++ {
				if err := touchFile(filepath.Join(d, fmt.Sprintf("f%07d", i))); err != nil {
					return err
				}
			}
			return nil
		})
		return files + 1, err
	}
	leaves := (files + 99) / 100
	mids := (leaves + 99) / 100
	for m := 0; m < mids; m++ {
		if err := os.Mkdir(filepath.Join(dir, fmt.Sprintf("d%03d", m)), 0o755); err != nil {
			return 0, err
		}
	}
	jobs := make(chan [2]int)
	go func() {
		defer close(jobs)
		for l := 0; l < leaves; l++ {
			jobs <- [2]int{l, min(100, files-l*100)}
		}
	}()
	err := parallel(ctx, jobs, func(j [2]int) error {
		leaf := filepath.Join(dir, fmt.Sprintf("d%03d", j[0]/100), fmt.Sprintf("d%02d", j[0]%100))
		if err := os.Mkdir(leaf, 0o755); err != nil {
			return err
		}
		for i := 0; i < j[1]; i++ {
			if err := touchFile(filepath.Join(leaf, fmt.Sprintf("f%02d", i))); err != nil {
				return err
			}
		}
		return nil
	})
	return files + leaves + mids, err
}

func touchFile(p string) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		return err
	}
	return f.Close()
}

// parallel runs fn on every job with 4 workers and returns the first error.
func parallel[T any](ctx context.Context, jobs <-chan T, fn func(T) error) error {
	var (
		wg    sync.WaitGroup
		mu    sync.Mutex
		first error
	)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range jobs {
				mu.Lock()
				failed := first != nil
				mu.Unlock()
				if failed || ctx.Err() != nil {
					continue // drain
				}
				if err := fn(j); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}

// runQuiet runs a command, returning its output in the error if it fails.
func runQuiet(ctx context.Context, dir, name string, args ...string) error {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v: %s", name, strings.Join(args, " "), err, tail(string(out), 400))
	}
	return nil
}
