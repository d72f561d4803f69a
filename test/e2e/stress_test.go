package e2e

// stress-ng's filesystem stressors, each run with --verify inside a
// unionmount whose lower layer has a small tree of its own. CI runs each
// for a few seconds; `make stress` runs them longer and with more
// instances:
//
//	STRESS_TIME=60s STRESS_INSTANCES=2 go test -run TestStressNG -timeout 0 ./test/e2e/
//
// STRESS_STRESSORS=dir,rename limits the run to those stressors.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// stressStressors are stress-ng 0.15's stressors that work on files.
// (The "sparse" is not a stressor of this version; fpunch, fsize
// and hdd cover sparse files.)
var stressStressors = []string{
	"access", "chmod", "chown", "copy-file", "dentry", "dir", "dirdeep", "fallocate", "fcntl",
	"fifo", "filename", "flock", "fpunch", "fsize", "fstat", "getdent", "hdd", "iomix", "link",
	"lockf", "lockofd", "mknod", "mmap", "open", "readahead", "rename", "seek", "symlink",
	"sync-file", "utime", "xattr",
}

func TestStressNG(t *testing.T) {
	requireMountable(t)
	requireProgram(t, "stress-ng", "stress-ng")
	bin, err := exec.LookPath("stress-ng")
	if err != nil {
		t.Fatal(err)
	}
	t.Parallel()
	dur := 2 * time.Second
	if v := os.Getenv("STRESS_TIME"); v != "" {
		if dur, err = time.ParseDuration(v); err != nil {
			t.Fatalf("STRESS_TIME=%q: %v", v, err)
		}
	}
	instances := 1
	if v := os.Getenv("STRESS_INSTANCES"); v != "" {
		if instances, err = strconv.Atoi(v); err != nil || instances < 1 {
			t.Fatalf("STRESS_INSTANCES=%q: want a number >= 1", v)
		}
	}
	names := stressStressors
	if v := os.Getenv("STRESS_STRESSORS"); v != "" {
		names = strings.Split(v, ",")
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			s := &side{name: "unionmount", stack: newStack(t, stackSpec{lowers: [][]Entry{{
				File("etc/conf", "lower data\n"), Dir("var/lib"), File("usr/bin/tool", "#!/bin/sh\n").WithMode(0o755),
			}}})}
			s.mount(t, nil)
			dir := filepath.Join(s.mnt, "stress")
			if err := os.Mkdir(dir, 0o777); err != nil {
				t.Fatal(err)
			}
			args := []string{
				"--" + name, strconv.Itoa(instances),
				"--timeout", strconv.Itoa(max(int(dur.Seconds()), 1)) + "s",
				"--verify", "--temp-path", dir, "--metrics-brief", "--no-rand-seed",
			}
			cmd := exec.Command(bin, args...)
			cmd.Dir = dir
			start := time.Now()
			out, err := cmd.CombinedOutput()
			// stress-ng exits 0 after some failures (a stressor that
			// stops early on an error is "successful"): its messages
			// decide too.
			// A stressor that merely stops early ("finished
			// prematurely", as dirdeep does on a loaded machine) is
			// only logged.
			var bad []string
			for _, line := range strings.Split(string(out), "\n") {
				for _, mark := range []string{" error: ", " fail: ", " skip: "} {
					if strings.Contains(line, mark) {
						bad = append(bad, line)
						break
					}
				}
				if strings.Contains(line, "finished prematurely") {
					t.Logf("%s", line)
				}
			}
			if err != nil || len(bad) > 0 {
				t.Errorf("stress-ng %s (%v): %v, %d error line(s):\n%s", strings.Join(args, " "), time.Since(start).Round(time.Millisecond), err, len(bad), out)
			} else {
				t.Logf("stress-ng --%s %d --verify: passed in %v", name, instances, time.Since(start).Round(time.Millisecond))
			}
			// The mount must still work and hold nothing of the run.
			if ents, err := os.ReadDir(dir); err != nil || len(ents) != 0 {
				t.Errorf("after stress-ng --%s: %s holds %d entries (%v)", name, dir, len(ents), err)
			}
			if b, err := os.ReadFile(filepath.Join(s.mnt, "etc/conf")); err != nil || string(b) != "lower data\n" {
				t.Errorf("after stress-ng --%s: etc/conf: %q %v", name, b, err)
			}
			s.unmount(t)
			checkWorkEmpty(t, s)
		})
	}
}
