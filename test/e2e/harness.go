package e2e

// The harness: build the binary once, check that this machine can mount,
// mount and unmount unionmount and kernel overlayfs, and never leave a mount
// behind.

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/mountinfo"
	"github.com/unionmount/unionmount/internal/testreq"
	"golang.org/x/sys/unix"
)

var (
	// selftestKernel makes mountUnion mount kernel overlayfs instead of
	// unionmount, to check the harness against the reference.
	selftestKernel = os.Getenv("E2E_SELFTEST_KERNEL") == "1"
	keepLogs       = os.Getenv("E2E_KEEP_LOGS") == "1"

	binPath  string // the unionmount binary built by TestMain
	buildErr error  // why it could not be built, with go build's output
)

const (
	mountTimeout   = 30 * time.Second // for the command to report a live mount
	unmountTimeout = 15 * time.Second // for the daemon to exit after unmount
)

func runMain(m *testing.M) int {
	flag.Parse()
	// A filesystem that hangs would keep tests blocked until go test's
	// timeout kills the process, leaving mounts behind. Shortly before
	// that, kill our daemons and detach every mount: blocked calls then
	// fail with ENOTCONN and the tests end (and clean up) normally.
	if f := flag.Lookup("test.timeout"); f != nil {
		if d, err := time.ParseDuration(f.Value.String()); err == nil && d > 0 {
			margin := 30 * time.Second
			if d < 2*margin {
				margin = d / 10
			}
			time.AfterFunc(d-margin, abortAllMounts)
		}
	}
	if !selftestKernel {
		dir, err := os.MkdirTemp("", "unionmount-e2e-bin-")
		if err != nil {
			fmt.Fprintln(os.Stderr, "e2e:", err)
			return 1
		}
		defer os.RemoveAll(dir)
		binPath = filepath.Join(dir, "unionmount")
		buildErr = buildBinary(binPath)
	}
	return m.Run()
}

// buildBinary runs `CGO_ENABLED=0 go build -o out ./cmd/unionmount` from the repository
// root, two levels above this package (go test runs in the package folder).
func buildBinary(out string) error {
	wd, err := os.Getwd()
	if err != nil {
		return err
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	if _, err := os.Stat(filepath.Join(root, "go.mod")); err != nil {
		return fmt.Errorf("repository root not found from %s: %w", wd, err)
	}
	goBin, err := exec.LookPath("go")
	if err != nil {
		goBin = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	cmd := exec.Command(goBin, "build", "-o", out, "./cmd/unionmount")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0") // as make build: see the Makefile
	cmd.Dir = root
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("go build ./cmd/unionmount: %v\n%s", err, b)
	}
	return nil
}

var (
	mountableOnce   sync.Once
	mountableReason string
)

// requireMountable stops the test unless this machine can run it: root,
// /dev/fuse, fusermount3 and kernel overlayfs. With CI=true a missing
// requirement fails the test instead of skipping it, so CI cannot go green by
// running nothing. A binary that does not build always fails.
func requireMountable(t *testing.T) {
	t.Helper()
	mountableOnce.Do(func() {
		trackInputs()
		mountableReason = mountabilityProblem()
	})
	if mountableReason != "" {
		skipOrFail(t, "cannot run e2e tests: "+mountableReason)
	}
	if buildErr != nil {
		t.Fatalf("unionmount binary: %v", buildErr)
	}
}

// skipOrFail and requireProgram: the suite's rule for a missing
// requirement (package testreq: a failure with CI=true, else a skip).
var (
	skipOrFail     = testreq.SkipOrFail
	requireProgram = testreq.Program
)

// trackInputs tells go test's result cache what the results depend on
// beyond this package: the environment switches and every source file of
// the repository the binary is built from. (Reads made before the tests
// start, in TestMain or package init, are not recorded; these are.)
// Without this, a cached pass could be served for a changed filesystem.
func trackInputs() {
	for _, k := range []string{"E2E_SELFTEST_KERNEL", "E2E_KEEP_LOGS", "CI", "PATH"} {
		os.Getenv(k)
	}
	wd, err := os.Getwd()
	if err != nil {
		return
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	_ = filepath.WalkDir(root, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return nil
		}
		if d.IsDir() {
			if name := d.Name(); name == ".git" || name == "testdata" && p != root {
				return filepath.SkipDir
			}
			if f, err := os.Open(p); err == nil { // records the listing
				f.Close()
			}
			return nil
		}
		if strings.HasSuffix(p, ".go") || d.Name() == "go.mod" || d.Name() == "go.sum" {
			_, _ = os.Stat(p)
		}
		return nil
	})
}

func mountabilityProblem() string {
	if os.Geteuid() != 0 {
		return "need root (mounting, mknod of whiteouts and trusted.* xattrs)"
	}
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		return fmt.Sprintf("/dev/fuse missing or not a character device (%v)", err)
	}
	if _, err := exec.LookPath("fusermount3"); err != nil {
		return "fusermount3 not in PATH (Debian package fuse3)"
	}
	// The definitive check for overlayfs is to mount it.
	dir, err := os.MkdirTemp("", "unionmount-e2e-probe-")
	if err != nil {
		return err.Error()
	}
	defer os.RemoveAll(dir)
	for _, d := range []string{"l", "u", "w", "m"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o755); err != nil {
			return err.Error()
		}
	}
	opts := kernelOptions([]string{filepath.Join(dir, "l")}, filepath.Join(dir, "u"), filepath.Join(dir, "w"), nil)
	mnt := filepath.Join(dir, "m")
	if err := unix.Mount("overlay", mnt, "overlay", 0, opts); err != nil {
		return fmt.Sprintf("kernel overlayfs mount failed (%v) with -o %s", err, opts)
	}
	if err := unix.Unmount(mnt, 0); err != nil {
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
		return fmt.Sprintf("unmounting the probe overlay: %v", err)
	}
	return ""
}

// mountHandle is one live mount made by this package.
type mountHandle struct {
	dir     string
	kind    string // "kernel" or "unionmount"
	pid     int    // unionmount daemon, 0 if unknown
	logPath string // daemon output
	under   string // type of what was mounted at dir before, "" if nothing
	done    bool
	aborted bool // by abortAllMounts
}

var (
	mountsMu sync.Mutex
	mounts   = map[string]*mountHandle{}
)

// mountUnion mounts unionmount (or, with E2E_SELFTEST_KERNEL=1, kernel
// overlayfs) over lowers (topmost first), upper and work, which may both be
// "" for a read-only union. extraOpts are added to -o. It returns a fresh
// mount point and unmounts in t.Cleanup, waiting for the daemon to exit.
func mountUnion(t *testing.T, lowers []string, upper, work string, extraOpts ...string) string {
	t.Helper()
	if selftestKernel {
		return mountKernel(t, lowers, upper, work, extraOpts...)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mountDetached(t, launch{opts: unionOptions(lowers, upper, work, extraOpts), mnt: mnt})
	return mnt
}

// mountUnionAt is mountUnion on a mount point of the caller's choosing,
// which may be a mount point already (a lower's own, say). The daemon's
// log is in a fresh directory; see daemonOf.
func mountUnionAt(t *testing.T, mnt string, lowers []string, upper, work string, extraOpts ...string) {
	t.Helper()
	mountDetached(t, launch{opts: unionOptions(lowers, upper, work, extraOpts), mnt: mnt,
		logPath: filepath.Join(t.TempDir(), "unionmount.log")})
}

// daemonOf is the handle of the live mount at mnt (its daemon's pid and
// log).
func daemonOf(t *testing.T, mnt string) mountHandle {
	t.Helper()
	mountsMu.Lock()
	defer mountsMu.Unlock()
	h := mounts[mnt]
	if h == nil || h.pid == 0 {
		t.Fatalf("no daemon known for %s", mnt)
	}
	return *h
}

// launch says how to start one FUSE daemon: the unionmount under test, or
// another program with its command line (fuse-overlayfs). Every test starts
// its daemons through it, detached (mountDetached, as users and Podman run
// it) or in the foreground (startDaemon: the test owns the process).
type launch struct {
	bin       string // the program; "" for the unionmount under test
	opts, mnt string // its -o options and mount point
	env       []string
	// user runs the daemon as another user, with an environment of PATH
	// and HOME=/nonexistent (plus env) and "/" as its working directory.
	user *syscall.Credential
	dir  string // working directory, if not the test's
	// logPath receives the daemon's output; "" for one beside mnt.
	logPath string
}

// command is l's command line; foreground adds -f. Output goes to a file,
// not a pipe: a detached daemon inherits it and a pipe would keep Wait from
// returning. The caller closes the returned log file once the command has
// started.
func (l *launch) command(foreground bool) (*exec.Cmd, *os.File, error) {
	if l.bin == "" {
		l.bin = binPath
	}
	if l.logPath == "" {
		l.logPath = filepath.Join(filepath.Dir(l.mnt), filepath.Base(l.bin)+".log")
	}
	logf, err := os.Create(l.logPath)
	if err != nil {
		return nil, nil, err
	}
	args := []string{"-o", l.opts, l.mnt}
	if foreground {
		args = append([]string{"-f"}, args...)
	}
	cmd := exec.Command(l.bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.Dir = l.dir
	cmd.Env = append(os.Environ(), l.env...)
	if l.user != nil {
		cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"}, l.env...)
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: l.user}
		if cmd.Dir == "" {
			cmd.Dir = "/"
		}
	}
	return cmd, logf, nil
}

// mountDetached runs l the way users and Podman do: the command returns
// once the mount is live. The mount is registered with the harness, which
// unmounts it in t.Cleanup and waits for the daemon to exit. It returns
// the daemon's pid.
func mountDetached(t *testing.T, l launch) int {
	t.Helper()
	cmd, logf, err := l.command(false)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	who := ""
	if l.user != nil {
		who = fmt.Sprintf("as uid %d: ", l.user.Uid)
	}
	under := fsType(l.mnt)
	if err := runWithTimeout(cmd, mountTimeout); err != nil {
		if fsType(l.mnt) != under {
			_ = unix.Unmount(l.mnt, unix.MNT_DETACH)
		}
		t.Fatalf("%s%s -o %s %s: %v\n%s", who, l.bin, l.opts, l.mnt, err, readLog(l.logPath))
	}
	if typ := fsType(l.mnt); !strings.HasPrefix(typ, "fuse") {
		t.Fatalf("%s%s exited 0 but %s is not a live FUSE mount (type %q)\n%s", who, l.bin, l.mnt, typ, readLog(l.logPath))
	}
	h := &mountHandle{dir: l.mnt, kind: filepath.Base(l.bin), logPath: l.logPath, pid: findProcess(l.bin, l.mnt), under: under}
	register(t, h)
	return h.pid
}

// mountKernel mounts kernel overlayfs with the harness's defaults
// (redirect_dir=on,index=off,metacopy=off; see kernelOptions) overridden by
// extraOpts, and unmounts in t.Cleanup.
func mountKernel(t *testing.T, lowers []string, upper, work string, extraOpts ...string) string {
	t.Helper()
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	var flags uintptr
	var rest []string
	for _, o := range extraOpts {
		if f, ok := kernelMountFlags[o]; ok {
			flags |= f
			continue
		}
		rest = append(rest, o)
	}
	opts := kernelOptions(lowers, upper, work, rest)
	// A mount of an upper unmounted a moment ago can fail with EBUSY: with
	// index=on the kernel keeps the upper "in use" until its old
	// superblock is gone, and a parallel test's fork may hold our
	// (close-on-exec) descriptors of the old mount until it execs.
	// Retried for a bounded time.
	deadline := time.Now().Add(30 * time.Second)
	for {
		err := unix.Mount("overlay", mnt, "overlay", flags, opts)
		if err == nil {
			break
		}
		if err != unix.EBUSY || time.Now().After(deadline) {
			t.Fatalf("mount -t overlay -o %s %s: %v (see dmesg; EBUSY for 30 s: the upper's previous mount is still referenced)", opts, mnt, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	register(t, &mountHandle{dir: mnt, kind: "kernel"})
	return mnt
}

// kernelMountFlags are the options mountKernel passes as mount flags, not
// in the option string (where overlayfs refuses them).
var kernelMountFlags = map[string]uintptr{
	"ro":          unix.MS_RDONLY,
	"noatime":     unix.MS_NOATIME,
	"nodiratime":  unix.MS_NODIRATIME,
	"relatime":    unix.MS_RELATIME,
	"strictatime": unix.MS_STRICTATIME,
}

// kernelOptions is the option string for kernel overlayfs. Defaults:
//   - redirect_dir=on: renaming a lower directory works, as unionmount's does;
//   - index=off: layers written by unionmount (which keeps no index) and
//     reused across mounts must mount; index=on would tie upper to the exact
//     lowers it was first mounted with;
//   - metacopy=off: the kernel's default, so its copy-ups are full copies.
//
// An extra option with the same key replaces the default.
func kernelOptions(lowers []string, upper, work string, extra []string) string {
	defaults := []string{"redirect_dir=on", "index=off", "metacopy=off"}
	opts := []string{"lowerdir=" + strings.Join(lowers, ":")}
	if upper != "" {
		opts = append(opts, "upperdir="+upper, "workdir="+work)
	}
	for _, d := range defaults {
		key, _, _ := strings.Cut(d, "=")
		overridden := false
		for _, e := range extra {
			if k, _, _ := strings.Cut(e, "="); k == key {
				overridden = true
			}
		}
		if !overridden {
			opts = append(opts, d)
		}
	}
	return strings.Join(append(opts, extra...), ",")
}

func unionOptions(lowers []string, upper, work string, extra []string) string {
	opts := []string{"lowerdir=" + strings.Join(lowers, ":")}
	if upper != "" {
		opts = append(opts, "upperdir="+upper, "workdir="+work)
	}
	return strings.Join(append(opts, extra...), ",")
}

func register(t *testing.T, h *mountHandle) {
	mountsMu.Lock()
	mounts[h.dir] = h
	mountsMu.Unlock()
	t.Cleanup(func() { unmount(t, h.dir) })
}

// unmount unmounts a mount made by mountUnion or mountKernel now (it is also
// done in t.Cleanup; a second call does nothing) and, for unionmount, waits
// for the daemon to exit.
func unmount(t *testing.T, mnt string) {
	t.Helper()
	mountsMu.Lock()
	h := mounts[mnt]
	if h == nil || h.done {
		mountsMu.Unlock()
		return
	}
	h.done = true
	aborted := h.aborted
	delete(mounts, mnt)
	mountsMu.Unlock()
	if aborted {
		t.Errorf("%s mount %s was still in use near the test timeout and was aborted: did the filesystem hang?", h.kind, mnt)
	}

	// EBUSY can be transient: a parallel test's fork holds copies of our
	// descriptors until it execs. Retry for a bounded time.
	unmountOnce := func() error {
		if h.kind == "kernel" {
			return unix.Unmount(mnt, 0)
		}
		if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
			return fmt.Errorf("fusermount3 -u: %v: %s", err, bytes.TrimSpace(out))
		}
		return nil
	}
	deadline := time.Now().Add(unmountTimeout)
	err := unmountOnce()
	for err != nil && time.Now().Before(deadline) && fsType(mnt) != h.under {
		time.Sleep(50 * time.Millisecond)
		err = unmountOnce()
	}
	if err != nil && fsType(mnt) != h.under {
		t.Errorf("unmounting %s (%s): %v; detaching lazily", mnt, h.kind, err)
		if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
			t.Errorf("umount -l %s: %v", mnt, err)
		}
	}
	if h.kind == "kernel" {
		return
	}
	if typ := fsType(mnt); typ != h.under {
		t.Errorf("%s still mounted (%s) after unmount", mnt, typ)
		_ = unix.Unmount(mnt, unix.MNT_DETACH)
	}
	if h.pid != 0 && !waitExited(h.pid, unmountTimeout) {
		t.Errorf("unionmount daemon %d still running %v after unmounting %s; killing it (its goroutines are in the log below)\n%s", h.pid, unmountTimeout, mnt, kernelStacks(h.pid))
		// SIGQUIT makes the Go runtime write every goroutine's stack to
		// the daemon's log: where it hangs.
		_ = syscall.Kill(h.pid, syscall.SIGQUIT)
		waitExited(h.pid, 2*time.Second)
		_ = syscall.Kill(h.pid, syscall.SIGKILL)
		waitExited(h.pid, unmountTimeout)
	}
	if log := readLog(h.logPath); (t.Failed() || keepLogs) && strings.TrimSpace(log) != "" {
		t.Logf("unionmount log for %s:\n%s", mnt, log)
	}
}

// kernelStacks describes where pid's threads are in the kernel (state and
// /proc/PID/task/TID/stack): a daemon blocked in a system call cannot
// answer SIGQUIT with its goroutines.
func kernelStacks(pid int) string {
	var b strings.Builder
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*", pid))
	for _, task := range tasks {
		stat, _ := os.ReadFile(filepath.Join(task, "stat"))
		stack, _ := os.ReadFile(filepath.Join(task, "stack"))
		if i := bytes.LastIndexByte(stat, ')'); i >= 0 && len(stat) > i+2 {
			fmt.Fprintf(&b, "thread %s state %c:\n%s", filepath.Base(task), stat[i+2], stack)
		}
	}
	return b.String()
}

// abortAllMounts kills every unionmount daemon we started and lazily
// detaches every live mount. The tests' cleanups still run afterwards.
func abortAllMounts() {
	mountsMu.Lock()
	defer mountsMu.Unlock()
	for dir, h := range mounts {
		fmt.Fprintf(os.Stderr, "e2e: test timeout near: aborting %s mount %s\n", h.kind, dir)
		h.aborted = true
		if h.pid != 0 {
			_ = syscall.Kill(h.pid, syscall.SIGKILL)
		}
		_ = unix.Unmount(dir, unix.MNT_DETACH)
	}
}

func readLog(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(no log: %v)", err)
	}
	if len(b) > 20000 {
		b = append([]byte("...\n"), b[len(b)-20000:]...)
	}
	return string(b)
}

// fsType is the filesystem type mounted exactly at dir, or "".
func fsType(dir string) string {
	typ, _ := mountinfo.FsType(dir)
	return typ
}

// waitExited polls until pid is gone or a zombie, or the deadline passes.
func waitExited(pid int, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return true
		}
		if i := bytes.LastIndexByte(b, ')'); i >= 0 {
			if f := strings.Fields(string(b[i+1:])); len(f) > 0 && (f[0] == "Z" || f[0] == "X") {
				return true
			}
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
