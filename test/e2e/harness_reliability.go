package e2e

// What the reliability tests (reliability_*_test.go, issue 6) share: a
// daemon run in the foreground so the test owns its pid (to SIGKILL it),
// a race-detector build of the binary, scratch filesystems (tmpfs, loop
// images) that are always unmounted, guards that the lowers stay
// byte-identical, the check tool, and the daemon's resource counters.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// fgDaemon is a unionmount daemon started with -f by the test, which owns
// its pid: it can be killed at any moment.
type fgDaemon struct {
	t       *testing.T
	bin     string
	mnt     string
	opts    string
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{} // closed once the process has been waited for
	waitErr error
	killed  bool
}

// startDaemon runs `bin -f -o opts mnt` and returns once mnt is a live FUSE
// mount. env is added to the daemon's environment. The daemon is stopped
// (or, if killed, its mount detached) in t.Cleanup; it is also known to the
// harness, whose timeout guard kills it if the test hangs.
func startDaemon(t *testing.T, bin, mnt, opts string, env ...string) *fgDaemon {
	t.Helper()
	d, err := tryStartDaemon(t, bin, mnt, opts, env...)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func tryStartDaemon(t *testing.T, bin, mnt, opts string, env ...string) (*fgDaemon, error) {
	t.Helper()
	d := &fgDaemon{t: t, bin: bin, mnt: mnt, opts: opts, exited: make(chan struct{})}
	l := launch{bin: bin, opts: opts, mnt: mnt, env: env, logPath: filepath.Join(t.TempDir(), "daemon.log")}
	cmd, logf, err := l.command(true)
	if err != nil {
		return nil, err
	}
	defer logf.Close()
	d.cmd, d.logPath = cmd, l.logPath
	if err := d.cmd.Start(); err != nil {
		return nil, err
	}
	go func() {
		d.waitErr = d.cmd.Wait()
		close(d.exited)
	}()
	mountsMu.Lock()
	mounts[mnt] = &mountHandle{dir: mnt, kind: "unionmount-fg", pid: d.cmd.Process.Pid, logPath: d.logPath, done: true}
	mountsMu.Unlock()
	t.Cleanup(d.cleanup)
	deadline := time.Now().Add(mountTimeout)
	for !strings.HasPrefix(fsType(mnt), "fuse") {
		select {
		case <-d.exited:
			return nil, fmt.Errorf("unionmount -f -o %s %s exited before mounting (%v):\n%s", opts, mnt, d.waitErr, readLog(d.logPath))
		default:
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("unionmount -f -o %s %s: no mount within %v\n%s", opts, mnt, mountTimeout, readLog(d.logPath))
		}
		time.Sleep(5 * time.Millisecond)
	}
	return d, nil
}

func (d *fgDaemon) pid() int { return d.cmd.Process.Pid }

func (d *fgDaemon) alive() bool {
	select {
	case <-d.exited:
		return false
	default:
		return true
	}
}

// kill sends SIGKILL, waits for the process and detaches its dead mount.
func (d *fgDaemon) kill() {
	d.t.Helper()
	d.killed = true
	_ = syscall.Kill(d.pid(), syscall.SIGKILL)
	select {
	case <-d.exited:
	case <-time.After(unmountTimeout):
		d.t.Errorf("daemon %d did not die within %v of SIGKILL", d.pid(), unmountTimeout)
	}
	detach(d.t, d.mnt)
}

// stop unmounts cleanly (fusermount3 -u, retried while busy) and waits for
// the daemon to exit; it fails the test if that does not work.
func (d *fgDaemon) stop() {
	d.t.Helper()
	if !d.alive() {
		detach(d.t, d.mnt)
		return
	}
	deadline := time.Now().Add(unmountTimeout)
	for {
		out, err := exec.Command("fusermount3", "-u", d.mnt).CombinedOutput()
		if err == nil || fsType(d.mnt) == "" {
			break
		}
		if time.Now().After(deadline) {
			d.t.Errorf("fusermount3 -u %s: %v: %s", d.mnt, err, bytes.TrimSpace(out))
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	select {
	case <-d.exited:
		if d.waitErr != nil {
			d.t.Errorf("daemon exited with %v after unmount\n%s", d.waitErr, readLog(d.logPath))
		}
	case <-time.After(unmountTimeout):
		stacks := kernelStacks(d.pid())
		// SIGQUIT: the Go runtime writes every goroutine to the log.
		_ = syscall.Kill(d.pid(), syscall.SIGQUIT)
		select {
		case <-d.exited:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(d.pid(), syscall.SIGKILL)
			<-d.exited
		}
		d.t.Errorf("daemon %d still running %v after unmounting %s (mount gone: %v); threads in the kernel:\n%s\ndaemon log (goroutines at the end):\n%s",
			d.pid(), unmountTimeout, d.mnt, fsType(d.mnt) == "", stacks, readLog(d.logPath))
	}
	detach(d.t, d.mnt)
	d.checkLog()
}

// checkLog fails the test if the daemon's log shows a panic or a data race.
func (d *fgDaemon) checkLog() {
	d.t.Helper()
	log := readLog(d.logPath)
	for _, bad := range []string{"panic:", "WARNING: DATA RACE", "fatal error:"} {
		if strings.Contains(log, bad) {
			d.t.Errorf("daemon log of %s shows %q:\n%s", d.mnt, bad, log)
			return
		}
	}
}

func (d *fgDaemon) cleanup() {
	if d.alive() {
		d.stop()
	} else {
		detach(d.t, d.mnt)
	}
	mountsMu.Lock()
	if h := mounts[d.mnt]; h != nil && h.pid == d.pid() {
		delete(mounts, d.mnt)
	}
	mountsMu.Unlock()
	if d.t.Failed() || keepLogs {
		if log := strings.TrimSpace(readLog(d.logPath)); log != "" {
			d.t.Logf("daemon log for %s:\n%s", d.mnt, log)
		}
	}
}

// detach lazily unmounts whatever is mounted at dir, if anything.
func detach(t *testing.T, dir string) {
	t.Helper()
	deadline := time.Now().Add(unmountTimeout)
	for fsType(dir) != "" {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil && fsType(dir) != "" {
			if time.Now().After(deadline) {
				t.Errorf("umount -l %s: %v", dir, err)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// raceBinary builds the command with the race detector into a directory
// of t's, removed with it.
func raceBinary(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "unionmount-race")
	wd, _ := os.Getwd()
	cmd := exec.Command("go", "build", "-race", "-o", bin, "./cmd/unionmount")
	cmd.Dir = filepath.Clean(filepath.Join(wd, "..", ".."))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build -race ./cmd/unionmount: %v\n%s", err, out)
	}
	return bin
}

// mountScratch mounts a filesystem of type typ (tmpfs, ramfs) with data at
// a new directory and unmounts it in t.Cleanup (lazily if it is busy).
func mountScratch(t *testing.T, typ, data string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), typ)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount(typ, dir, typ, 0, data); err != nil {
		t.Fatalf("mount -t %s -o %s %s: %v", typ, data, dir, err)
	}
	t.Cleanup(func() { unmountScratch(t, dir) })
	return dir
}

func unmountScratch(t *testing.T, dir string) {
	deadline := time.Now().Add(unmountTimeout)
	for fsType(dir) != "" {
		err := unix.Unmount(dir, 0)
		if err == nil {
			continue
		}
		if time.Now().After(deadline) {
			t.Errorf("umount %s: %v; detaching lazily", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// mountImage makes a size-byte image file, formats it with mkfs (argv,
// the image path appended), attaches it to a loop device and mounts it;
// everything is undone in t.Cleanup. It skips (fails under CI=true) when
// the mkfs program is missing.
func mountImage(t *testing.T, size int64, fstype string, mkfs ...string) string {
	t.Helper()
	if _, err := exec.LookPath(mkfs[0]); err != nil {
		skipOrFail(t, fmt.Sprintf("%s not installed (scripts/deps.sh installs it)", mkfs[0]))
	}
	base := t.TempDir()
	img, dir := filepath.Join(base, "fs.img"), filepath.Join(base, fstype)
	if err := os.Mkdir(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(size); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if out, err := exec.Command(mkfs[0], append(mkfs[1:], img)...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v\n%s", strings.Join(mkfs, " "), err, out)
	}
	out, err := exec.Command("losetup", "--find", "--show", img).CombinedOutput()
	if err != nil {
		t.Fatalf("losetup: %v: %s", err, out)
	}
	loop := strings.TrimSpace(string(out))
	t.Cleanup(func() {
		if out, err := exec.Command("losetup", "-d", loop).CombinedOutput(); err != nil {
			t.Errorf("losetup -d %s: %v: %s", loop, err, out)
		}
	})
	if err := unix.Mount(loop, dir, fstype, 0, ""); err != nil {
		t.Fatalf("mount %s (%s) on %s: %v", loop, fstype, dir, err)
	}
	t.Cleanup(func() { unmountScratch(t, dir) })
	return dir
}

// guardLowers fingerprints dirs (contents, modes, owners, xattrs, times,
// ctimes) now and checks in t.Cleanup that nothing changed. Call it before
// mounting, so that it runs after the unmounts.
func guardLowers(t *testing.T, dirs ...string) {
	t.Helper()
	guardDirs(t, "a lower layer", dirs...)
}

// guardDirs is guardLowers for any directories, named what in messages.
func guardDirs(t *testing.T, what string, dirs ...string) {
	t.Helper()
	before := fingerprint(t, dirs...)
	t.Cleanup(func() {
		if d := diffFingerprints(before, fingerprint(t, dirs...)); len(d) > 0 {
			t.Errorf("%s changed (%d paths; lowerN/ is the Nth of %q):\n%s", what, len(d), dirs, strings.Join(d, "\n"))
		}
	})
}

// runCheck runs `unionmount check -o opts` and returns its exit code and
// the problems it printed, as "kind path" lines.
func runCheck(t *testing.T, opts string) (int, []string, string) {
	t.Helper()
	r := runTool(t, nil, "check", "-q", "-o", opts)
	var probs []string
	for _, line := range strings.Split(strings.TrimSpace(r.stdout), "\n") {
		i, j := strings.LastIndex(line, "["), strings.LastIndex(line, "]")
		if i < 0 || j < i {
			continue
		}
		path, _, _ := strings.Cut(line, ": ")
		probs = append(probs, line[i+1:j]+" "+path)
	}
	return r.code, probs, r.stdout + r.stderr
}

// wantCheckClean fails the test unless check finds nothing.
func wantCheckClean(t *testing.T, opts string) {
	t.Helper()
	if code, _, out := runCheck(t, opts); code != 0 {
		t.Errorf("unionmount check -o %s: exit %d, want 0 (clean):\n%s", opts, code, out)
	}
}

// procCounts are a process's resources from /proc.
type procCounts struct {
	fds, threads int
	rssKB, hwmKB int
}

func daemonCounts(pid int) (procCounts, error) {
	var c procCounts
	ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	if err != nil {
		return c, err
	}
	c.fds = len(ents)
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return c, err
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		f := strings.Fields(v)
		if len(f) == 0 {
			continue
		}
		n, _ := strconv.Atoi(f[0])
		switch k {
		case "Threads":
			c.threads = n
		case "VmRSS":
			c.rssKB = n
		case "VmHWM":
			c.hwmKB = n
		}
	}
	return c, nil
}

// fdTargets lists what a process's descriptors point to, for messages.
func fdTargets(pid int) []string {
	ents, _ := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
	var out []string
	for _, e := range ents {
		l, err := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", pid, e.Name()))
		if err == nil {
			out = append(out, e.Name()+" -> "+l)
		}
	}
	return out
}

// goroutineCount asks the daemon for its goroutine count through the
// debug hook UNIONMOUNT_DEBUG_STATS (SIGUSR1 writes "goroutines=N ..." to
// the file it names); ok is false if the daemon has no such hook.
func goroutineCount(pid int, statsFile string) (n int, ok bool) {
	return daemonStat(pid, statsFile, "goroutines")
}

// daemonStat asks the daemon for one value of its debug hook
// UNIONMOUNT_DEBUG_STATS (SIGUSR1 writes "goroutines=N heap_inuse=N
// files=N" to the file it names); ok is false if the daemon has no hook.
func daemonStat(pid int, statsFile, key string) (n int, ok bool) {
	// Without a handler SIGUSR1 would end the daemon: send it only if the
	// daemon catches it (SigCgt in /proc/PID/status).
	if !catchesSignal(pid, syscall.SIGUSR1) {
		return 0, false
	}
	_ = os.Remove(statsFile)
	if err := syscall.Kill(pid, syscall.SIGUSR1); err != nil {
		return 0, false
	}
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(statsFile); err == nil {
			for _, f := range strings.Fields(string(b)) {
				if v, ok := strings.CutPrefix(f, key+"="); ok {
					if n, err := strconv.Atoi(v); err == nil {
						return n, true
					}
				}
			}
		}
		time.Sleep(20 * time.Millisecond)
	}
	return 0, false
}

func catchesSignal(pid int, sig syscall.Signal) bool {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "SigCgt:"); ok {
			mask, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			return err == nil && mask&(1<<(uint(sig)-1)) != 0
		}
	}
	return false
}

// isDeadConn reports whether err is what calls on a mount whose daemon
// died return.
func isDeadConn(err error) bool {
	return errors.Is(err, unix.ENOTCONN) || errors.Is(err, unix.ECONNABORTED)
}

// envInt is an integer from the environment, or def.
func envInt(name string, def int) int {
	if v := os.Getenv(name); v != "" {
		if n, err := strconv.Atoi(v); err == nil {
			return n
		}
	}
	return def
}
