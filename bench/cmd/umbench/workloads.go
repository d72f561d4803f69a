package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// runEnv is what a workload sees: the mount point (with the lower's "go"
// tree and "big.bin" in it), a scratch directory outside the union that is
// emptied for every run, and the run's settings.
type runEnv struct {
	ctx     context.Context
	cfg     *config
	cand    string
	mnt     string
	lower   string
	upper   string // the instance's upper ("" for native)
	scratch string
	// cred is the user the workload runs as (nil: root); owner the
	// "uid:gid" meta chowns to (one the user may give).
	cred  *syscall.Credential
	owner string
	// self is a copy of this program any user may run (-internal).
	self string
}

// result of one timed run.
type result struct {
	dur   time.Duration
	cpu   time.Duration // CPU time of the workload's processes (user + system)
	out   string        // a check value, compared across candidates when the workload says so
	extra string        // throughput and the like, shown beside the time
}

// workload is one row of the table.
type workload struct {
	name string
	desc string // markdown: what is run
	// mutates: the native candidate needs a private copy of the lower (else
	// it runs on a read-only bind mount of the lower itself).
	mutates bool
	// checkOut: out must be the same for every candidate.
	checkOut bool
	prepare  func(e *runEnv) error // untimed, after mounting, before caches are dropped
	run      func(e *runEnv) (result, error)
	// verify, untimed after run, returns the check value (instead of run's).
	verify func(e *runEnv) (string, error)
	// kernelMax is issue 13's target for unionmount (as root, warm caches):
	// at most this ratio to kernel overlayfs (0: none). Every workload
	// also has the target "faster than its rival" (fuse-overlayfs, run the
	// same way) in wall and CPU time, for every unionmount candidate.
	kernelMax float64
	// probe: a measurement beside the workloads, never profiled.
	probe bool
	// flat: runs on the flat lower (one directory of -flat files) instead
	// of the main lower.
	flat bool
}

// roundTrips is how many requests the roundtrip workload makes.
const roundTrips = 20000

func workloads(cfg *config) []*workload {
	big := cfg.bigSize
	return []*workload{
		{
			name: "find", desc: "`find . -type f \\| wc -l`", checkOut: true, kernelMax: 2.5,
			run: func(e *runEnv) (result, error) { return e.shTree("find . -type f | wc -l") },
		},
		{
			name: "find-printf", desc: "`find . -printf '%s %m\\n' \\| wc -l` (stat all)", checkOut: true, kernelMax: 2.5,
			run: func(e *runEnv) (result, error) { return e.shTree(`find . -printf '%s %m\n' | wc -l`) },
		},
		{
			name: "ls-laR", desc: "`ls -laR \\| wc -l`", checkOut: true, kernelMax: 2.5,
			run: func(e *runEnv) (result, error) { return e.shTree("ls -laR | wc -l") },
		},
		{
			name: "tar", desc: "`tar -cf - . \\| wc -c` (read every file)", checkOut: true, kernelMax: 1.5,
			run: func(e *runEnv) (result, error) { return e.shTree("tar -cf - . | wc -c") },
		},
		{
			name: "append-go", desc: "append 1 byte to every `.go` file (copy-up storm)", mutates: true, checkOut: true, kernelMax: 1.3,
			run: func(e *runEnv) (result, error) {
				return e.shTree(`find . -name '*.go' -type f -exec sh -c 'for f do printf x >>"$f"; done' sh {} +`)
			},
			verify: verifyAppend,
		},
		{
			name: "meta", desc: "`chmod g+w`, `chown` (root: to 1000:1000; rootless: to the user itself), `touch` on every file of `src/` (metadata only)",
			mutates: true, checkOut: true, kernelMax: 1.2,
			prepare: func(e *runEnv) error {
				n, err := writeFileList(filepath.Join(e.lower, "go"), "src", filepath.Join(e.scratch, "meta.list"))
				if err == nil {
					err = os.WriteFile(filepath.Join(e.scratch, "meta.count"), []byte(strconv.Itoa(n)), 0o644)
				}
				return err
			},
			run: func(e *runEnv) (result, error) {
				l := filepath.Join(e.scratch, "meta.list")
				r, err := e.shTree(fmt.Sprintf("xargs -0 -a %[1]s chmod g+w && xargs -0 -a %[1]s chown %[2]s && xargs -0 -a %[1]s touch", l, e.owner))
				if n, _ := os.ReadFile(filepath.Join(e.scratch, "meta.count")); err == nil {
					r.extra = string(n) + " files"
				}
				return r, err
			},
			verify: func(e *runEnv) (string, error) {
				uid, gid, _ := strings.Cut(e.owner, ":")
				r, err := e.shTree(fmt.Sprintf("find src -type f -uid %s -gid %s -perm -g+w -newer ../big.bin | wc -l", uid, gid))
				return r.out, err
			},
		},
		{
			name: "smallfiles", desc: fmt.Sprintf("create+write (100 B) %d files in `src/`, stat each, unlink each", cfg.smallFiles),
			mutates: true, checkOut: true,
			run: func(e *runEnv) (result, error) {
				return e.internal("smallfiles", filepath.Join(e.mnt, "go", "src"), strconv.Itoa(e.cfg.smallFiles))
			},
		},
		{
			name: "rm-rf", desc: fmt.Sprintf("`rm -rf %s` (%s lower entries)", cfg.rmTarget, "RMCOUNT"),
			mutates: true, checkOut: true,
			run: func(e *runEnv) (result, error) {
				return e.shTree("rm -rf " + e.cfg.rmTarget)
			},
			verify: func(e *runEnv) (string, error) {
				r, err := e.shTree(fmt.Sprintf("test -e %s && echo present || echo gone; ls -a %s | wc -l", e.cfg.rmTarget, filepath.Dir(e.cfg.rmTarget)))
				return strings.ReplaceAll(r.out, "\n", ", "), err
			},
		},
		{
			name: "fio-seqwrite", desc: fmt.Sprintf("fio sequential write %s new file, bs=1M, end_fsync", human(big)),
			mutates: true,
			run: func(e *runEnv) (result, error) {
				return e.fio("--name=seqwrite", "--filename=fio-seqwrite.bin", "--rw=write", "--bs=1M",
					"--size="+strconv.FormatInt(big, 10), "--end_fsync=1")
			},
		},
		{
			name: "fio-seqread", desc: fmt.Sprintf("fio sequential read of the %s lower file, bs=1M", human(big)),
			run: func(e *runEnv) (result, error) {
				return e.fio("--name=seqread", "--filename=big.bin", "--readonly", "--rw=read", "--bs=1M",
					"--size="+strconv.FormatInt(big, 10))
			},
		},
		{
			name: "fio-randread-lower", desc: fmt.Sprintf("fio 4k random read, %s of the %s lower file", human(cfg.randIO), human(big)),
			kernelMax: 1.25,
			run: func(e *runEnv) (result, error) {
				return e.fio("--name=randread", "--filename=big.bin", "--readonly", "--rw=randread", "--bs=4k",
					"--size="+strconv.FormatInt(big, 10), "--io_size="+strconv.FormatInt(e.cfg.randIO, 10))
			},
		},
		{
			name: "fio-randread-upper", desc: fmt.Sprintf("fio 4k random read, %s of a %s upper file", human(cfg.randIO), human(big)),
			mutates: true,
			prepare: func(e *runEnv) error {
				_, err := e.sh(e.mnt, "dd if=big.bin of=upper.bin bs=1M conv=fsync status=none")
				return err
			},
			run: func(e *runEnv) (result, error) {
				return e.fio("--name=randread", "--filename=upper.bin", "--readonly", "--rw=randread", "--bs=4k",
					"--size="+strconv.FormatInt(big, 10), "--io_size="+strconv.FormatInt(e.cfg.randIO, 10))
			},
		},
		{
			name: "git-status", desc: "`git status --porcelain` in the committed checkout `go/`", checkOut: true, kernelMax: 2.5,
			run: func(e *runEnv) (result, error) {
				r, err := e.shTree("git -c safe.directory='*' status --porcelain | wc -l")
				if err == nil && e.upper != "" {
					if _, serr := os.Lstat(filepath.Join(e.upper, "go", ".git", "index")); serr == nil {
						r.extra = "index rewritten"
					}
				}
				return r, err
			},
		},
		{
			name: "go-build", desc: "`go build` of a hello-world (fmt) with the union as GOROOT, empty GOCACHE", checkOut: true,
			prepare: func(e *runEnv) error {
				dir := filepath.Join(e.scratch, "hello")
				if err := os.MkdirAll(dir, 0o755); err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(dir, "go.mod"), []byte("module hello\n\ngo 1.21\n"), 0o644); err != nil {
					return err
				}
				return os.WriteFile(filepath.Join(dir, "main.go"), []byte("package main\n\nimport \"fmt\"\n\nfunc main() { fmt.Println(\"hello\") }\n"), 0o644)
			},
			run: func(e *runEnv) (result, error) {
				goroot := filepath.Join(e.mnt, "go")
				env := []string{
					"GOROOT=" + goroot,
					"PATH=" + goroot + "/bin:" + basePath,
					"GOCACHE=" + filepath.Join(e.scratch, "gocache"),
					"GOPATH=" + filepath.Join(e.scratch, "gopath"),
					"GOTOOLCHAIN=local", "GOENV=off", "GOFLAGS=", "GOPROXY=off", "CGO_ENABLED=0", "GO111MODULE=on",
				}
				return e.sh(filepath.Join(e.scratch, "hello"), "go build -o ../hello.out . && ../hello.out", env...)
			},
		},
		{
			// Not one of the workloads: the cost of one request to
			// the daemon, which bounds every metadata workload. ls -l asks
			// every file for security.selinux; the kernel caches neither
			// the answer nor its absence, so each call is a round trip.
			name: "roundtrip", probe: true, desc: fmt.Sprintf("%d `getxattr(security.selinux)` of one file (one FUSE request each)", roundTrips),
			run: func(e *runEnv) (result, error) {
				r, err := e.internal("roundtrip", filepath.Join(e.mnt, "go", "README.md"), strconv.Itoa(roundTrips))
				if err == nil {
					r.extra = fmt.Sprintf("%.1f µs each", float64(r.dur.Nanoseconds())/roundTrips/1000)
					r.out = ""
				}
				return r, err
			},
		},
		{
			name: "flat-ls-f", flat: true, checkOut: true, kernelMax: 3,
			desc: fmt.Sprintf("`ls -f \\| wc -l` of one lower directory of %d files", cfg.flatFiles),
			run:  func(e *runEnv) (result, error) { return e.sh(filepath.Join(e.mnt, "flat"), "ls -f | wc -l") },
		},
		{
			name: "flat-ls-l", flat: true, checkOut: true, kernelMax: 3,
			desc: fmt.Sprintf("`ls -l \\| wc -l` of one lower directory of %d files", cfg.flatFiles),
			run:  func(e *runEnv) (result, error) { return e.sh(filepath.Join(e.mnt, "flat"), "ls -l | wc -l") },
		},
	}
}

// straceWorkload is the workload the daemons run under strace -c: a tar of
// one subtree (about two thousand requests).
var straceWorkload = &workload{
	name: "tar-net", desc: "`tar -cf - src/net \\| wc -c`",
	run: func(e *runEnv) (result, error) { return e.shTree("tar -cf - src/net | wc -c") },
}

// internal runs one of this program's -internal workloads (see
// runInternal) as the workload's user.
func (e *runEnv) internal(args ...string) (result, error) {
	return e.sh(e.scratch, shellQuote(append([]string{e.self, "-internal"}, args...)))
}

const basePath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// shTree runs script in the union's go/ tree.
func (e *runEnv) shTree(script string) (result, error) {
	return e.sh(filepath.Join(e.mnt, "go"), script)
}

// sh runs script with bash in dir, timed, and returns its trimmed stdout as
// the check value. The command runs in its own process group, killed as a
// whole on timeout or interrupt.
func (e *runEnv) sh(dir, script string, env ...string) (result, error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.cfg.timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", "-o", "pipefail", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(e.baseEnv(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout = &stdout
	cmd.Stderr = &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: e.cred}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) }
	cmd.WaitDelay = 10 * time.Second
	start := time.Now()
	err := cmd.Run()
	d := time.Since(start)
	if err != nil {
		if ctx.Err() == context.DeadlineExceeded {
			err = fmt.Errorf("timed out after %v", e.cfg.timeout)
		}
		return result{}, fmt.Errorf("%s: %v: %s", script, err, tail(stderr.String(), 400))
	}
	cpu := cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime() // bash and all it waited for
	return result{dur: d, cpu: cpu, out: strings.TrimSpace(tail(stdout.String(), 200))}, nil
}

func (e *runEnv) baseEnv() []string {
	return []string{
		"PATH=" + basePath,
		"HOME=" + filepath.Join(e.scratch, "home"),
		"TMPDIR=" + filepath.Join(e.scratch, "tmp"),
		"LC_ALL=C",
		"GIT_CONFIG_NOSYSTEM=1",
	}
}

// fio runs one fio job in the union's root and reports its throughput.
func (e *runEnv) fio(args ...string) (result, error) {
	out := filepath.Join(e.scratch, "fio.json")
	args = append(args, "--ioengine=psync", "--output-format=json", "--output="+out)
	if e.cfg.cache == "warm" {
		args = append(args, "--invalidate=0")
	}
	r, err := e.sh(e.mnt, "fio "+shellQuote(args))
	if err != nil {
		return r, err
	}
	data, err := os.ReadFile(out)
	if err != nil {
		return r, err
	}
	// fio may print warnings before the JSON document.
	if i := bytes.IndexByte(data, '{'); i > 0 {
		data = data[i:]
	}
	var doc struct {
		Jobs []struct {
			Error int      `json:"error"`
			Read  fioStats `json:"read"`
			Write fioStats `json:"write"`
		} `json:"jobs"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return r, fmt.Errorf("fio output: %v", err)
	}
	if len(doc.Jobs) != 1 {
		return r, fmt.Errorf("fio: %d jobs in output", len(doc.Jobs))
	}
	j := doc.Jobs[0]
	if j.Error != 0 {
		return r, fmt.Errorf("fio: job error %d", j.Error)
	}
	s := j.Read
	if j.Write.IOBytes > 0 {
		s = j.Write
	}
	if strings.Contains(strings.Join(args, " "), "--rw=randread") {
		r.extra = fmt.Sprintf("%.0f IOPS", s.IOPS)
	} else {
		r.extra = fmt.Sprintf("%.0f MiB/s", float64(s.BwBytes)/(1<<20))
	}
	r.out = strconv.FormatInt(s.IOBytes, 10)
	return r, nil
}

type fioStats struct {
	IOBytes int64   `json:"io_bytes"`
	BwBytes int64   `json:"bw_bytes"`
	IOPS    float64 `json:"iops"`
}

// runInternal runs a workload written in Go, in a process of its own (so
// that it can run as another user, and its CPU time is counted as a
// shell's): "smallfiles DIR N" creates N 100-byte files in DIR, stats each,
// unlinks each, and prints the bytes stated; "roundtrip FILE N" asks FILE
// N times for security.selinux.
func runInternal(args []string) error {
	if len(args) != 3 {
		return fmt.Errorf("-internal: want NAME PATH N, got %q", args)
	}
	n, err := strconv.Atoi(args[2])
	if err != nil {
		return err
	}
	switch args[0] {
	case "smallfiles":
		total, err := smallFiles(args[1], n)
		if err == nil {
			fmt.Println(total)
		}
		return err
	case "roundtrip":
		buf := make([]byte, 256)
		for i := 0; i < n; i++ {
			if _, err := syscall.Getxattr(args[1], "security.selinux", buf); err != nil && err != syscall.ENODATA && err != syscall.EOPNOTSUPP {
				return fmt.Errorf("getxattr %s: %w", args[1], err)
			}
		}
		return nil
	}
	return fmt.Errorf("-internal: unknown workload %q", args[0])
}

// smallFiles creates n 100-byte files in dir, stats each, unlinks each.
func smallFiles(dir string, n int) (int64, error) {
	data := bytes.Repeat([]byte("0123456789"), 10)
	name := func(i int) string { return filepath.Join(dir, fmt.Sprintf("umbench-small-%05d", i)) }
	for i := 0; i < n; i++ {
		if err := os.WriteFile(name(i), data, 0o644); err != nil {
			return 0, err
		}
	}
	var total int64
	for i := 0; i < n; i++ {
		fi, err := os.Lstat(name(i))
		if err != nil {
			return 0, err
		}
		total += fi.Size()
	}
	for i := 0; i < n; i++ {
		if err := os.Remove(name(i)); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// procCPU is the CPU time (user + system, all threads, exited ones too) of
// pid, from /proc/PID/stat, in clock ticks of 10 ms.
func procCPU(pid int) time.Duration {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// pid (comm) state ... : fields after the closing parenthesis.
	i := bytes.LastIndexByte(data, ')')
	if i < 0 {
		return 0
	}
	f := strings.Fields(string(data[i+1:]))
	if len(f) < 13 {
		return 0
	}
	ut, _ := strconv.ParseInt(f[11], 10, 64) // utime: field 14
	st, _ := strconv.ParseInt(f[12], 10, 64) // stime: field 15
	return time.Duration(ut+st) * 10 * time.Millisecond
}

// writeFileList writes the NUL-separated paths (relative to root) of the
// regular files under root/sub, and returns how many.
func writeFileList(root, sub, listPath string) (int, error) {
	var buf bytes.Buffer
	n := 0
	err := filepath.WalkDir(filepath.Join(root, sub), func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.Type().IsRegular() {
			rel, _ := filepath.Rel(root, p)
			buf.WriteString(rel)
			buf.WriteByte(0)
			n++
		}
		return nil
	})
	if err != nil {
		return 0, err
	}
	return n, os.WriteFile(listPath, buf.Bytes(), 0o644)
}

// countEntries counts everything under dir (dir itself excluded).
func countEntries(dir string) (int, error) {
	n := -1
	err := filepath.WalkDir(dir, func(string, fs.DirEntry, error) error { n++; return nil })
	return n, err
}

func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		q[i] = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
	}
	return strings.Join(q, " ")
}

func tail(s string, n int) string {
	s = strings.TrimSpace(s)
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func human(n int64) string {
	switch {
	case n >= 1<<30 && n%(1<<30) == 0:
		return fmt.Sprintf("%d GiB", n>>30)
	case n >= 1<<20 && n%(1<<20) == 0:
		return fmt.Sprintf("%d MiB", n>>20)
	}
	return fmt.Sprintf("%d B", n)
}
