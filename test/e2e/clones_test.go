package e2e

// Layers as private mount clones (issue 12): a union on a lower's own mount
// point (the seeds' `mount -o union`), submounts of a layer never crossed
// (the union's own mount point inside a lower included), and a lazily
// unmounted union served until its last user leaves.

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/unionmount/unionmount/internal/testreq"
	"golang.org/x/sys/unix"
)

// bindReadOnly bind-mounts src at dst read-only and unmounts it in
// t.Cleanup (registered first, so it runs after the cleanups of what is
// mounted over it).
func bindReadOnly(t *testing.T, src, dst string) {
	t.Helper()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("mount --bind %s %s: %v", src, dst, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dst, 0); err != nil {
			t.Errorf("umount %s: %v", dst, err)
			_ = unix.Unmount(dst, unix.MNT_DETACH)
		}
	})
	if err := unix.Mount("", dst, "", unix.MS_BIND|unix.MS_REMOUNT|unix.MS_RDONLY, ""); err != nil {
		t.Fatalf("mount -o remount,bind,ro %s: %v", dst, err)
	}
}

// mountTmpfs mounts a tmpfs at dir, holding the file name, and unmounts it
// in t.Cleanup.
func mountTmpfs(t *testing.T, dir, name string) {
	t.Helper()
	if err := unix.Mount("tmpfs", dir, "tmpfs", 0, "size=1m"); err != nil {
		t.Fatalf("mount -t tmpfs %s: %v", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("umount %s: %v", dir, err)
			_ = unix.Unmount(dir, unix.MNT_DETACH)
		}
	})
	if err := os.WriteFile(filepath.Join(dir, name), []byte("on the tmpfs\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// listDir lists dir, sorted.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatalf("ls %s: %v", dir, err)
	}
	out := []string{}
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// readString reads a file, "" with the error in t's log if it cannot.
func readString(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("read %s: %v", p, err)
	}
	return string(b)
}

// TestUnionOverOwnMountPoint is the seeds' `mount -o union`: the base is a
// read-only mount at newroot, and the union (lowerdir=newroot) is mounted
// on newroot itself. Writes land in upper, the base is unchanged, and once
// the union is unmounted newroot shows the read-only base again.
func TestUnionOverOwnMountPoint(t *testing.T) {
	requireMountable(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: mounts with its own mount point")
	}
	parallelUnlessTiming(t)
	dir := t.TempDir()
	base, newroot := filepath.Join(dir, "base"), filepath.Join(dir, "newroot")
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	makeLayer(t, base, File("etc/hostname", "box\n"), File("data", "base data\n"), Dir("var"))
	for _, d := range []string{newroot, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	before := fingerprint(t, base)
	bindReadOnly(t, base, newroot)
	if err := os.WriteFile(filepath.Join(newroot, "probe"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Fatalf("writing the read-only base before the union: %v, want EROFS", err)
	}

	mountUnionAt(t, newroot, []string{newroot}, upper, work)
	if got := fsType(newroot); !strings.HasPrefix(got, "fuse") {
		t.Fatalf("%s is %q after mounting the union on it", newroot, got)
	}
	sh := exec.Command("sh", "-euc", `echo union >> etc/hostname; echo new > new; rm data; mkdir var/log; cat etc/hostname; ls`)
	sh.Dir = newroot
	out, err := sh.CombinedOutput()
	if want := "box\nunion\netc\nnew\nvar\n"; err != nil || string(out) != want {
		t.Errorf("in the union: %v\n%s\nwant:\n%s", err, out, want)
	}
	unmount(t, newroot)

	if got := readString(t, filepath.Join(upper, "etc/hostname")); got != "box\nunion\n" {
		t.Errorf("upper etc/hostname = %q, want the copy-up with the line appended", got)
	}
	if got := readString(t, filepath.Join(upper, "new")); got != "new\n" {
		t.Errorf("upper new = %q", got)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "data"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("upper data: %v, mode %o rdev %d: want a whiteout", err, st.Mode, st.Rdev)
	}
	reportDiff(t, "the base was written to", diffFingerprints(before, fingerprint(t, base)))
	// The read-only base is back at newroot.
	if got := fsType(newroot); got == "" || strings.HasPrefix(got, "fuse") {
		t.Errorf("%s is %q after unmounting the union, want the base's bind mount", newroot, got)
	}
	if got, want := listDir(t, newroot), []string{"data", "etc", "var"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ls %s after unmount = %q, want the base's %q", newroot, got, want)
	}
	if got := readString(t, filepath.Join(newroot, "etc/hostname")); got != "box\n" {
		t.Errorf("etc/hostname after unmount = %q, want the base's", got)
	}
	if err := os.WriteFile(filepath.Join(newroot, "probe"), nil, 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing newroot after unmount: %v, want EROFS (the read-only base)", err)
	}
}

// TestMountpointInsideLower mounts the union inside its own lower: the
// mount point shows the empty directory beneath it, not the union again
// (which recursed without end and grew the daemon until it was killed),
// and a walk of the whole union keeps the daemon small.
func TestMountpointInsideLower(t *testing.T) {
	requireMountable(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: mounts with its own mount point")
	}
	parallelUnlessTiming(t)
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("a", "a\n"), Dir("mnt"), File("d/b", "b\n")}}})
	mnt := filepath.Join(s.lowers[0], "mnt")
	mountUnionAt(t, mnt, s.lowers, s.upper, s.work)

	if got, want := listDir(t, mnt), []string{"a", "d", "mnt"}; !reflect.DeepEqual(got, want) {
		t.Errorf("ls mnt = %q, want %q", got, want)
	}
	if got := listDir(t, filepath.Join(mnt, "mnt")); len(got) != 0 {
		t.Errorf("ls mnt/mnt = %q, want the empty directory beneath the mount point", got)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "mnt/mnt")); !errors.Is(err, unix.ENOENT) {
		t.Errorf("stat mnt/mnt/mnt: %v, want ENOENT", err)
	}
	var walked []string
	err := filepath.WalkDir(mnt, func(p string, _ os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(mnt, p)
		walked = append(walked, rel)
		if strings.Count(rel, "/") > 2 {
			return filepath.SkipAll // the union inside itself: no need to go on
		}
		return nil
	})
	if want := []string{".", "a", "d", "d/b", "mnt"}; err != nil || !reflect.DeepEqual(walked, want) {
		t.Errorf("walk: %v, %q, want %q", err, walked, want)
	}
	h := daemonOf(t, mnt)
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", h.pid))
	if err != nil {
		t.Fatal(err)
	}
	var peakKB int
	for _, line := range strings.Split(string(status), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmHWM:" {
			peakKB, _ = strconv.Atoi(f[1])
		}
	}
	if peakKB == 0 || peakKB > 100*1024 {
		t.Errorf("daemon peak memory (VmHWM) %d KiB, want under 100 MiB", peakKB)
	}
	t.Logf("daemon peak memory: %d KiB", peakKB)
}

// TestSubmountInLowerNotCrossed: a tmpfs mounted inside a lower is not
// part of the layer; the directory beneath it shows, as under kernel
// overlayfs, which the same lower is mounted with for comparison.
func TestSubmountInLowerNotCrossed(t *testing.T) {
	requireMountable(t)
	parallelUnlessTiming(t)
	spec := stackSpec{lowers: [][]Entry{{File("sub/beneath", "under the tmpfs\n"), File("top", "top\n")}}}
	ks, us := newStack(t, spec), newStack(t, spec)
	// One lower for both: the kernel's upper and ours are separate.
	us.lowers = ks.lowers
	mountTmpfs(t, filepath.Join(ks.lowers[0], "sub"), "on-tmpfs")

	kmnt := mountKernel(t, ks.lowers, ks.upper, ks.work)
	umnt := mountUnion(t, us.lowers, us.upper, us.work)
	if got, want := listDir(t, filepath.Join(umnt, "sub")), []string{"beneath"}; !reflect.DeepEqual(got, want) {
		t.Errorf("unionmount: ls sub = %q, want %q (the directory beneath the tmpfs)", got, want)
	}
	reportDiff(t, "kernel overlayfs vs unionmount over a lower with a tmpfs inside",
		diffTrees("kernel", snapshot(t, kmnt), "unionmount", snapshot(t, umnt), diffOpts{}))
}

// TestLazyUnmount detaches the union (umount -l) while a process has a
// file open in it and a shell has its working directory inside: reading,
// fstat, listing and creating keep working, the new file lands in upper,
// as under kernel overlayfs; and once the last user is gone the daemon
// exits. Not parallel: a mount namespace made by a parallel test would hold
// a copy of the mount, and the daemon would then rightly end at unmount
// (see TestUnmountWithNamespaceCopy).
func TestLazyUnmount(t *testing.T) {
	requireMountable(t)
	spec := stackSpec{lowers: [][]Entry{{File("f", "lower data\n"), File("dir/g", "g\n")}}}
	for _, kind := range []overlayKind{kindKernel, kindUnionmount} {
		t.Run(string(kind), func(t *testing.T) {
			if selftestKernel && kind == kindUnionmount {
				t.Skip("E2E_SELFTEST_KERNEL")
			}
			s := newStack(t, spec)
			mnt := mountOverlay(t, kind, s.lowers, s.upper, s.work)
			var h mountHandle
			if kind == kindUnionmount {
				h = daemonOf(t, mnt)
			}
			f, err := os.Open(filepath.Join(mnt, "f"))
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sh := startShell(t, filepath.Join(mnt, "dir"))
			if err := unix.Unmount(mnt, unix.MNT_DETACH); err != nil {
				t.Fatalf("umount -l %s: %v", mnt, err)
			}
			if kind == kindUnionmount {
				// The daemon saw its mount leave; what it decided is in its log.
				waitForLog(t, h.logPath, "unmounted")
			}

			buf := make([]byte, 64)
			if n, err := f.ReadAt(buf, 0); string(buf[:n]) != "lower data\n" {
				t.Errorf("pread of the open file after umount -l: %q, %v", buf[:n], err)
			}
			if fi, err := f.Stat(); err != nil || fi.Size() != int64(len("lower data\n")) {
				t.Errorf("fstat of the open file after umount -l: %v", err)
			}
			out := sh.run(t, "ls; cat g; echo made > new; cat new")
			if want := "g\ng\nmade\n"; out != want {
				t.Errorf("in the cwd after umount -l: %q, want %q", out, want)
			}
			if got := readString(t, filepath.Join(s.upper, "dir/new")); got != "made\n" {
				t.Errorf("upper dir/new = %q, want the file made after umount -l", got)
			}
			f.Close()
			sh.exit(t)
			if kind == kindUnionmount && !waitProcessExit(t, h.pid, unmountTimeout) {
				t.Errorf("daemon %d still running %v after the last user of its detached mount left", h.pid, unmountTimeout)
			}
		})
	}
}

// TestUnmountWithNamespaceCopy unmounts the union while a mount namespace
// made after it was mounted holds a copy: the daemon ends (the harness's
// unmount waits for it), rather than serving the copy for as long as that
// namespace lives. Not parallel: the namespace copies every mount there is.
func TestUnmountWithNamespaceCopy(t *testing.T) {
	requireMountable(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: about the daemon")
	}
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("f", "f\n")}}})
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	h := daemonOf(t, mnt)
	holder := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", `echo ready; exec cat >/dev/null`)
	in, err := holder.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	outPipe, err := holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := holder.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	defer func() {
		in.Close()
		_ = holder.Wait()
	}()
	if line, err := bufio.NewReader(outPipe).ReadString('\n'); line != "ready\n" {
		t.Fatalf("namespace holder: %q, %v", line, err)
	}
	unmount(t, mnt)
	if !waitProcessExit(t, h.pid, unmountTimeout) {
		t.Errorf("daemon %d still running after unmount with a copy in another namespace", h.pid)
	}
	if log := readLog(h.logPath); !strings.Contains(log, "still mounted in another mount namespace") {
		t.Errorf("the daemon's log does not say why it ended:\n%s", log)
	}
}

// shell is a bash reading commands from a pipe, with its working directory
// where the test put it.
type shell struct {
	cmd *exec.Cmd
	in  io.WriteCloser
	out *bufio.Reader
}

// startShell starts bash in dir; it is ended in t.Cleanup if still running.
func startShell(t *testing.T, dir string) *shell {
	t.Helper()
	cmd := exec.Command("bash", "--noprofile", "--norc")
	cmd.Dir = dir
	in, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &shell{cmd: cmd, in: in, out: bufio.NewReader(out)}
	t.Cleanup(func() {
		if s.cmd.ProcessState == nil {
			_ = s.cmd.Process.Kill()
			_ = s.cmd.Wait()
		}
	})
	// Started: bash has looked up its working directory's path (which
	// fails once the directory is detached).
	if out := s.run(t, "true"); out != "" {
		t.Fatalf("bash in %s: %s", dir, out)
	}
	return s
}

// run runs script in the shell and returns its output (stderr included).
func (s *shell) run(t *testing.T, script string) string {
	t.Helper()
	const end = "--end-of-output--"
	if _, err := fmt.Fprintf(s.in, "%s 2>&1; echo %s\n", script, end); err != nil {
		t.Fatalf("shell: %v", err)
	}
	var b strings.Builder
	for {
		line, err := s.out.ReadString('\n')
		if line == end+"\n" {
			return b.String()
		}
		b.WriteString(line)
		if err != nil {
			t.Fatalf("shell ended: %v; output %q", err, b.String())
		}
	}
}

// exit ends the shell and waits for it.
func (s *shell) exit(t *testing.T) {
	t.Helper()
	s.in.Close()
	if err := s.cmd.Wait(); err != nil {
		t.Errorf("shell: %v", err)
	}
}

// waitProcessExit waits, through a pidfd, for process pid (not our child)
// to exit; false if it is still running after timeout.
func waitProcessExit(t *testing.T, pid int, timeout time.Duration) bool {
	t.Helper()
	fd, err := unix.PidfdOpen(pid, 0)
	if errors.Is(err, unix.ESRCH) {
		return true
	}
	if err != nil {
		t.Fatalf("pidfd_open %d: %v", pid, err)
	}
	defer unix.Close(fd)
	deadline := time.Now().Add(timeout)
	for {
		ms := int(time.Until(deadline).Milliseconds())
		if ms < 0 {
			ms = 0
		}
		n, err := unix.Poll([]unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}, ms)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatalf("poll pidfd: %v", err)
		}
		return n > 0
	}
}

// waitForLog waits until the log at path contains text (the daemon writes
// it when it has decided something), failing the test after
// unmountTimeout.
func waitForLog(t *testing.T, path, text string) {
	t.Helper()
	deadline := time.Now().Add(unmountTimeout)
	for !strings.Contains(readLog(path), text) {
		if time.Now().After(deadline) {
			t.Fatalf("the daemon's log does not say %q after %v:\n%s", text, unmountTimeout, readLog(path))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pivotInner runs in the busybox root, entered by pivot_root: it edits the
// root, detaches the old root, and shows what it sees.
const pivotInner = `set -eu
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
grep -c '^[^ ]* / fuse.unionmount ' /proc/mounts
echo union >> /etc/hostname
mkdir /root/made
echo new > /root/made/new
rm /etc/old.conf
umount -l /oldroot
echo after > /tmp/after
cat /etc/hostname /root/made/new /tmp/after
ls /etc | grep -c old.conf || true
`

// TestUnionRootPivot builds a busybox root the seeds' way, in a private
// mount namespace: the base mounted read-only at newroot, the union mounted
// over it with lowerdir=newroot, then pivot_root into it and a shell of
// the busybox root, which edits /etc, detaches the old root and goes on
// working. The changes are in upper, and the base is unchanged.
func TestUnionRootPivot(t *testing.T) {
	requireMountable(t)
	busybox := requireStaticBusybox(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: runs the binary itself")
	}
	for prog, pkg := range map[string]string{"unshare": "util-linux", "pivot_root": "util-linux", "chroot": "coreutils", "mount": "mount"} {
		testreq.Program(t, prog, pkg)
	}
	parallelUnlessTiming(t)
	dir := t.TempDir()
	base, newroot := filepath.Join(dir, "base"), filepath.Join(dir, "newroot")
	upper, work := filepath.Join(dir, "upper"), filepath.Join(dir, "work")
	makeLayer(t, base, append(busyboxRoot(t, busybox), Dir("oldroot"))...)
	for _, d := range []string{newroot, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	before := fingerprint(t, base)
	script := `set -eu
mount --bind "$BASE" "$NEWROOT"
mount -o remount,bind,ro "$NEWROOT"
"$BIN" -o "lowerdir=$NEWROOT,upperdir=$UPPER,workdir=$WORK" "$NEWROOT"
cd "$NEWROOT"
pivot_root . oldroot
exec chroot . /bin/sh -c "$INNER"
`
	logPath := filepath.Join(dir, "unionmount.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "BASE="+base, "NEWROOT="+newroot, "UPPER="+upper, "WORK="+work, "BIN="+binPath, "INNER="+pivotInner)
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, logf
	err = runWithTimeout(cmd, time.Minute)
	// The daemon lives on in the namespace, whose root it serves; ending
	// it ends the namespace and every mount in it.
	if pid := findProcess(binPath, newroot); pid != 0 {
		_ = unix.Kill(pid, unix.SIGKILL)
		if !waitProcessExit(t, pid, unmountTimeout) {
			t.Errorf("daemon %d still running after SIGKILL", pid)
		}
	} else {
		t.Errorf("no daemon found for %s", newroot)
	}
	if want := "1\nbox\nunion\nnew\nafter\n0\n"; err != nil || out.String() != want {
		t.Errorf("in the busybox root after pivot_root: %v\n%s\nwant:\n%s\nlog:\n%s", err, out.String(), want, readLog(logPath))
	}
	if got := readString(t, filepath.Join(upper, "etc/hostname")); got != "box\nunion\n" {
		t.Errorf("upper etc/hostname = %q", got)
	}
	if got := readString(t, filepath.Join(upper, "tmp/after")); got != "after\n" {
		t.Errorf("upper tmp/after = %q: written after umount -l /oldroot", got)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(upper, "etc/old.conf"), &st); err != nil || st.Mode&unix.S_IFMT != unix.S_IFCHR {
		t.Errorf("upper etc/old.conf: %v, mode %o: want a whiteout", err, st.Mode)
	}
	reportDiff(t, "the base was written to", diffFingerprints(before, fingerprint(t, base)))
	if typ := fsType(newroot); typ != "" {
		t.Errorf("%s is mounted here (%s): the namespace's mounts leaked", newroot, typ)
	}
}

// TestDaemonDropsCallersDescriptors: a descriptor the caller leaves open
// across exec (here on a file in another union) is not kept by the daemon,
// which would otherwise keep that other mount busy for its whole life.
func TestDaemonDropsCallersDescriptors(t *testing.T) {
	requireMountable(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: about the daemon")
	}
	parallelUnlessTiming(t)
	other := newStack(t, stackSpec{lowers: [][]Entry{{File("held", "held\n")}}})
	otherMnt := mountUnion(t, other.lowers, other.upper, other.work)
	held, err := os.Open(filepath.Join(otherMnt, "held"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	s := newStack(t, stackSpec{lowers: [][]Entry{{File("f", "f\n")}}})
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(binPath, "-o", unionOptions(s.lowers, s.upper, s.work, nil), mnt)
	// fds 3 and 4 of the command, not close-on-exec (the daemon gets its
	// own fd 3 from the command).
	cmd.ExtraFiles = []*os.File{held, held}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("unionmount: %v\n%s", err, out)
	}
	h := &mountHandle{dir: mnt, kind: "unionmount", pid: findProcess(binPath, mnt)}
	register(t, h)
	if h.pid == 0 {
		t.Fatalf("no daemon for %s", mnt)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", h.pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		if target, _ := os.Readlink(fmt.Sprintf("/proc/%d/fd/%s", h.pid, fd.Name())); target == held.Name() {
			t.Errorf("the daemon holds the caller's descriptor of %s as its fd %s", target, fd.Name())
		}
	}
}
