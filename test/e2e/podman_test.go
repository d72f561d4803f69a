package e2e

// unionmount as Podman's mount_program, in place of fuse-overlayfs: the
// command line Podman 4.3 uses (TestPodmanStyleInvocation, no Podman
// needed), and Podman itself importing, running, building, diffing and
// committing images with each overlay filesystem side by side
// (TestPodmanMountProgram; runs where Podman is installed, as in CI; `make
// podman-test` installs it and runs this alone).

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestPodmanStyleInvocation calls the binary exactly as Podman 4.3 calls its
// mount_program (seen with a logging wrapper): from the graph root, lowers
// given as symlinks under l/ (relative to the working directory when the
// option string gets long), an empty option element and volatile, a
// read-only mount with lowerdir= only, --version; it must return only once
// the mount is live, and exit by itself after fusermount3 -u.
func TestPodmanStyleInvocation(t *testing.T) {
	requireMountable(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: this test runs the binary itself, as a user would")
	}
	t.Parallel()

	out, err := exec.Command(binPath, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "version") {
		t.Errorf("%s --version: %v, %q", binPath, err, out)
	}

	graph := filepath.Join(t.TempDir(), "overlay")
	layer := func(id string, entries ...Entry) {
		makeLayer(t, filepath.Join(graph, id, "diff"), entries...)
		if err := os.MkdirAll(filepath.Join(graph, "l"), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(filepath.Join("..", id, "diff"), filepath.Join(graph, "l", strings.ToUpper(id))); err != nil {
			t.Fatal(err)
		}
	}
	layer("base", File("etc/hostname", "base\n"), File("bin/tool", "#!/bin/sh\n").WithMode(0o755), Dir("tmp").WithMode(0o1777))
	layer("step1", File("etc/hostname", "step1\n"), Whiteout("bin/tool"))
	ctr := filepath.Join(graph, "ctr")
	for _, d := range []string{"diff", "work", "merged"} {
		if err := os.MkdirAll(filepath.Join(ctr, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.MkdirAll(filepath.Join(graph, "base", "empty"), 0o700); err != nil {
		t.Fatal(err)
	}

	// runFromGraph runs the binary in graph the way Podman does: it waits
	// for the command to exit, after which the mount must be live.
	runFromGraph := func(opts, mnt string) int {
		t.Helper()
		pid := mountDetached(t, launch{opts: opts, mnt: mnt, dir: graph, logPath: filepath.Join(t.TempDir(), "unionmount.log")})
		if pid == 0 {
			t.Fatalf("no unionmount daemon found serving %s", mnt)
		}
		return pid
	}
	// fusermountU unmounts as Podman does and waits for the daemon to end
	// by itself.
	fusermountU := func(mnt string, pid int) {
		t.Helper()
		if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
			t.Fatalf("fusermount3 -u %s: %v: %s", mnt, err, out)
		}
		if !waitExited(pid, unmountTimeout) {
			t.Errorf("daemon %d still running %v after fusermount3 -u %s", pid, unmountTimeout, mnt)
			_ = unix.Kill(pid, unix.SIGKILL)
		}
	}

	// A container's mount, absolute symlinked lowers (short option string).
	mnt := filepath.Join(ctr, "merged")
	pid := runFromGraph("lowerdir="+filepath.Join(graph, "l/STEP1")+":"+filepath.Join(graph, "l/BASE")+
		",upperdir="+filepath.Join(ctr, "diff")+",workdir="+filepath.Join(ctr, "work")+",,volatile", mnt)
	if b, err := os.ReadFile(filepath.Join(mnt, "etc/hostname")); err != nil || string(b) != "step1\n" {
		t.Errorf("etc/hostname through the mount: %q, %v; want the top lower's", b, err)
	}
	if _, err := os.Lstat(filepath.Join(mnt, "bin/tool")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("bin/tool is whited out in step1, got %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "tmp/new"), []byte("x"), 0o644); err != nil {
		t.Errorf("writing through the mount: %v", err)
	}
	fusermountU(mnt, pid)
	if _, err := os.Stat(filepath.Join(ctr, "diff/tmp/new")); err != nil {
		t.Errorf("the write did not land in the upper: %v", err)
	}

	// The same with relative lowers (as Podman passes them when the option
	// string would pass a page) and fsync=0.
	pid = runFromGraph("lowerdir=l/STEP1:l/BASE,upperdir=ctr/diff,workdir=ctr/work,fsync=0", mnt)
	if b, err := os.ReadFile(filepath.Join(mnt, "tmp/new")); err != nil || string(b) != "x" {
		t.Errorf("tmp/new after remounting with relative paths: %q, %v", b, err)
	}
	fusermountU(mnt, pid)

	// Read-only, lowers only: what build, commit and diff mount.
	ro := filepath.Join(graph, "base", "merged")
	if err := os.Mkdir(ro, 0o700); err != nil {
		t.Fatal(err)
	}
	pid = runFromGraph("lowerdir="+filepath.Join(graph, "base/diff")+":"+filepath.Join(graph, "base/empty"), ro)
	if b, err := os.ReadFile(filepath.Join(ro, "etc/hostname")); err != nil || string(b) != "base\n" {
		t.Errorf("read-only mount: etc/hostname %q, %v", b, err)
	}
	if err := os.WriteFile(filepath.Join(ro, "etc/hostname"), []byte("no"), 0o644); !errors.Is(err, unix.EROFS) {
		t.Errorf("writing a read-only union: %v, want EROFS", err)
	}
	fusermountU(ro, pid)
}

// requirePodman stops the test unless podman, runc and conmon are
// installed (Debian packages podman and runc: CI installs them, and so does
// `make podman-test`); with CI=true or E2E_PODMAN=1 their absence is a
// failure.
func requirePodman(t *testing.T) {
	t.Helper()
	for _, prog := range []string{"podman", "runc", "conmon"} {
		if _, err := exec.LookPath(prog); err != nil && os.Getenv("E2E_PODMAN") == "1" {
			t.Fatalf("%s not installed (Debian packages podman, runc): %v", prog, err)
		}
		requireProgram(t, prog, "podman, runc; `make podman-test` installs them")
	}
}

// podmanEnv is one isolated Podman setup: a fresh graph root and run root in
// a temporary directory, the mount program (none for kernel overlayfs), and
// the containers.conf this kind of machine needs (no CAP_SYS_RESOURCE:
// ulimits below the hard limits; hybrid cgroups: cgroupfs; no network).
//
// Podman 4.3 as root also writes a blob-info cache to
// /var/lib/containers/cache on import, build and commit, whatever the
// storage.conf says. So every podman command runs in a private mount
// namespace (held by a sleeping process) where /var/lib is an overlay whose
// upper is in the temporary directory: the host's /var/lib is never
// written, and whatever Podman leaves mounted goes with the namespace.
type podmanEnv struct {
	dir    string
	kind   overlayKind
	env    []string
	holder *exec.Cmd // keeps the mount namespace
}

func newPodmanEnv(t *testing.T, kind overlayKind) *podmanEnv {
	t.Helper()
	dir := t.TempDir()
	p := &podmanEnv{dir: dir, kind: kind}
	mountProgram := ""
	switch kind {
	case kindUnionmount:
		if !selftestKernel { // else Podman's native driver: the harness's self-test
			mountProgram = binPath
		}
	case kindFuseOverlayfs:
		prog, err := exec.LookPath("fuse-overlayfs")
		if err != nil {
			t.Fatal(err)
		}
		mountProgram = prog
	}
	storage := fmt.Sprintf("[storage]\ndriver = \"overlay\"\ngraphroot = %q\nrunroot = %q\n",
		filepath.Join(dir, "graph"), filepath.Join(dir, "run"))
	if mountProgram != "" {
		// In storage.conf, not --storage-opt: that replaces every option.
		storage += fmt.Sprintf("[storage.options.overlay]\nmount_program = %q\n", mountProgram)
	}
	containers := fmt.Sprintf(`[containers]
netns = "none"
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]
[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
events_logfile_path = %q
tmp_dir = %q
runtime = "runc"
`, filepath.Join(dir, "events.log"), filepath.Join(dir, "libpod-tmp"))
	files := map[string]string{
		"storage.conf":    storage,
		"containers.conf": containers,
		"registries.conf": "unqualified-search-registries = []\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, d := range []string{"varlib-upper", "varlib-work"} {
		if err := os.Mkdir(filepath.Join(dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	p.env = append(os.Environ(),
		"CONTAINERS_STORAGE_CONF="+filepath.Join(dir, "storage.conf"),
		"CONTAINERS_CONF="+filepath.Join(dir, "containers.conf"),
		"CONTAINERS_REGISTRIES_CONF="+filepath.Join(dir, "registries.conf"),
		"XDG_CONFIG_HOME="+filepath.Join(dir, "config"),
		"TMPDIR="+dir,
	)

	// A new mount namespace starts with a copy of every mount, those of
	// other tests (or other runs) included, and a copy of a FUSE or overlay
	// mount would keep it alive after its owner unmounts it: drop them
	// (lazily, deepest first) before anything else.
	p.holder = exec.Command("unshare", "--mount", "--propagation", "private", "--", "sh", "-c", `
awk '{ for (i = 7; i <= NF; i++) if ($i == "-") { if ($(i+1) ~ /^(fuse|fuseblk|overlay)$|^fuse\./) print $5; break } }' /proc/self/mountinfo |
	sort -r | while read -r m; do umount -l "$(printf '%b' "$m")"; done
mount -t overlay overlay -o "lowerdir=/var/lib,upperdir=$1/varlib-upper,workdir=$1/varlib-work" /var/lib &&
	echo ready && exec sleep 1000000`,
		"sh", dir)
	out, err := p.holder.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr bytes.Buffer
	p.holder.Stderr = &stderr
	if err := p.holder.Start(); err != nil {
		t.Fatalf("unshare: %v", err)
	}
	t.Cleanup(func() { p.cleanup(t) })
	ready := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		ready <- line
	}()
	select {
	case line := <-ready:
		if line != "ready\n" {
			t.Fatalf("making Podman's mount namespace: %q %s", line, stderr.String())
		}
	case <-time.After(mountTimeout):
		t.Fatalf("making Podman's mount namespace: no answer in %v: %s", mountTimeout, stderr.String())
	}
	return p
}

// run runs podman with args (stdin from stdin if not nil) in the
// namespace and returns its combined output.
func (p *podmanEnv) run(stdin io.Reader, args ...string) (string, error) {
	cmd := exec.Command("nsenter", append([]string{"--target", fmt.Sprint(p.holder.Process.Pid), "--mount", "--", "podman"}, args...)...)
	cmd.Env = p.env
	cmd.Dir = p.dir
	cmd.Stdin = stdin
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runWithTimeout(cmd, 5*time.Minute)
	if err != nil {
		err = fmt.Errorf("podman %s: %w\n%s", strings.Join(args, " "), err, out.String())
	}
	return out.String(), err
}

// must is run that fails the test on an error.
func (p *podmanEnv) must(t *testing.T, stdin io.Reader, args ...string) string {
	t.Helper()
	out, err := p.run(stdin, args...)
	if err != nil {
		t.Fatalf("%s: %v", p.kind, err)
	}
	return out
}

// cleanup removes every container and image, checks that Podman left no
// FUSE mount behind, ends the namespace (and with it any mount left), and
// checks that every mount-program daemon then exits.
func (p *podmanEnv) cleanup(t *testing.T) {
	t.Helper()
	if p.holder.Process == nil {
		return
	}
	for _, args := range [][]string{{"rm", "-a", "-f", "-t", "0"}, {"rmi", "-a", "-f"}} {
		if _, err := p.run(nil, args...); err != nil {
			t.Errorf("%s cleanup: %v", p.kind, err)
		}
	}
	var fuseLeft []string
	for _, m := range mountsUnder(fmt.Sprintf("/proc/%d/mountinfo", p.holder.Process.Pid), p.dir) {
		if strings.HasPrefix(m.fsType, "fuse") {
			fuseLeft = append(fuseLeft, m.dir)
		}
	}
	if len(fuseLeft) > 0 {
		t.Errorf("%s: Podman left FUSE mounts behind: %v", p.kind, fuseLeft)
	}
	// Podman unmounted with fusermount3 -u: each daemon must have exited by
	// itself (or do so now).
	prog := ""
	switch p.kind {
	case kindUnionmount:
		prog = binPath
	case kindFuseOverlayfs:
		prog, _ = exec.LookPath("fuse-overlayfs")
	}
	if prog != "" && len(fuseLeft) == 0 {
		for _, pid := range processesUnder(prog, p.dir) {
			if !waitExited(pid, unmountTimeout) {
				t.Errorf("%s: daemon %d still running %v after Podman unmounted its mount", p.kind, pid, unmountTimeout)
			}
		}
	}
	_ = p.holder.Process.Kill()
	_ = p.holder.Wait()
	if prog != "" {
		for _, pid := range processesUnder(prog, p.dir) {
			if !waitExited(pid, unmountTimeout) {
				t.Errorf("%s: daemon %d still running after its mount namespace ended; killing it", p.kind, pid)
				_ = unix.Kill(pid, unix.SIGKILL)
			}
		}
	}
}

// mountPoint is one line of a mountinfo file.
type mountPoint struct{ dir, fsType string }

// mountsUnder lists the mounts under dir in a mountinfo file, parents
// before children.
func mountsUnder(mountinfo, dir string) []mountPoint {
	b, err := os.ReadFile(mountinfo)
	if err != nil {
		return nil
	}
	var out []mountPoint
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		sep := -1
		for i, x := range f {
			if x == "-" {
				sep = i
				break
			}
		}
		if len(f) < 5 || sep < 0 || sep+1 >= len(f) {
			continue
		}
		mp := unescapeMountinfo(f[4])
		if mp == dir || strings.HasPrefix(mp, dir+"/") {
			out = append(out, mountPoint{mp, f[sep+1]})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].dir < out[j].dir })
	return out
}

// unescapeMountinfo undoes mountinfo's octal escapes (\040 for a space).
func unescapeMountinfo(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var c byte
			if _, err := fmt.Sscanf(s[i+1:i+4], "%03o", &c); err == nil {
				b.WriteByte(c)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// processesUnder lists live processes running exe with an argument that
// names a path under dir.
func processesUnder(exe, dir string) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var out []int
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || strings.TrimSuffix(got, " (deleted)") != exe || waitExited(pid, 0) {
			continue
		}
		cmdline, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if strings.Contains(string(cmdline), dir+"/") {
			out = append(out, pid)
		}
	}
	return out
}

// podmanBase is the base image: a busybox root, the objects the build
// changes, and a bulk of files that make diff and commit walk a tree the
// size of a small distribution's.
func podmanBase(t *testing.T, busybox []byte, bulk int) []Entry {
	t.Helper()
	entries := []Entry{
		File("bin/busybox", string(busybox)).WithMode(0o755),
		Dir("etc"), Dir("proc"), Dir("sys"), Dir("dev"), Dir("tmp").WithMode(0o1777), Dir("root").WithMode(0o700),
		File("etc/passwd", "root:x:0:0:root:/root:/bin/sh\n"),
		File("etc/group", "root:x:0:\n"),
		File("base/content", "base\n"),
		File("base/mode", "base\n"),
		File("base/mtime", "base\n"),
		File("base/rename", "base-rename\n"),
		File("base/delete", "base\n"),
		File("base/dir-rename/a", "a\n"),
		File("base/dir-rename/b", "b\n"),
		File("base/dir-delete/a", "a\n"),
		File("base/dir-delete/sub/b", "b\n"),
		File("base/dir-recreate/old1", "old\n"),
		File("base/dir-recreate/sub/old2", "old\n"),
		File("base/dir-mtime/f", "f\n"),
		File("base/dir-mode/f", "f\n"),
		File("base/suid", "#!/bin/sh\n").WithMode(0o4755),
		File("base/owned", "owned\n").WithOwner(1000, 1000),
	}
	out, err := exec.Command(busyboxPath, "--list").Output()
	if err != nil {
		t.Fatalf("busybox --list: %v", err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet != "busybox" {
			entries = append(entries, Symlink("bin/"+applet, "busybox"))
		}
	}
	for i := 0; i < bulk; i++ {
		entries = append(entries, File(fmt.Sprintf("usr/share/bulk/d%02d/f%04d", i/100, i), fmt.Sprintf("bulk file %d\n", i)))
	}
	return entries
}

// podmanContainerfile builds on the base in three RUN steps, each changing
// the base and earlier steps: create, change content, chmod only, mtime
// only, rename, delete, for files and directories; and a base directory
// deleted then made again (twice).
const podmanContainerfile = `FROM localhost/localbase
RUN set -e; \
    mkdir -p /s1/dir/sub /s1/deldir; \
    for f in content mode mtime rename delete; do echo s1 > /s1/$f; done; \
    echo x > /s1/dir/sub/x; echo y > /s1/deldir/y; \
    echo changed >> /base/content; chmod 0600 /base/mode; touch -t 200001020304.05 /base/mtime; \
    mv /base/rename /base/renamed; rm /base/delete; \
    mv /base/dir-rename /base/dir-renamed; rm -r /base/dir-delete; \
    rm -r /base/dir-recreate; mkdir /base/dir-recreate; echo new > /base/dir-recreate/new
RUN set -e; \
    echo s2 >> /s1/content; chmod 0700 /s1/mode; touch -t 200001020304.05 /s1/mtime; \
    mv /s1/rename /s1/renamed; rm /s1/delete; rm -r /s1/deldir; mv /s1/dir /s1/dir2; \
    echo s2 >> /base/renamed; chmod 0750 /base/dir-renamed; echo s2 > /base/dir-renamed/added; \
    rm /base/dir-renamed/a; chmod 0700 /base/dir-mode; touch -t 200203040506.07 /base/dir-mtime
RUN set -e; \
    rm /bin/vi; ln -s renamed /s1/link; ln /s1/content /s1/hardlink; mkfifo /s1/fifo; \
    echo h > /s1/h1; ln /s1/h1 /s1/h2; \
    rm -r /base/dir-recreate; mkdir /base/dir-recreate; echo newer > /base/dir-recreate/newer; \
    echo s3 > /s1/dir2/sub/x
`

// podmanChanges is what the container for diff and commit does to the built
// image, and podmanDiffWant what podman diff must then say.
const podmanChanges = `set -e; echo n > /newfile; rm /base/content; echo m >> /s1/renamed; mkdir /newdir; rm -r /s1/dir2; chmod 0600 /base/owned`

// (/etc changes in every container: Podman makes its hosts, hostname and
// resolv.conf there.)
var podmanDiffWant = []string{"A /newdir", "A /newfile", "C /base", "C /base/owned", "C /etc", "C /s1", "C /s1/renamed", "D /base/content", "D /s1/dir2"}

// TestPodmanMountProgram runs one Podman session per overlay filesystem,
// each with its own fresh storage: import a base image, run --rm, run -d /
// exec / stop / rm, build a Containerfile of three RUN steps, export the
// image, change a container, podman diff and commit it, export the commit.
// The built and committed images must hold exactly the right files, the
// same with unionmount as with kernel overlayfs (Podman's native driver).
func TestPodmanMountProgram(t *testing.T) {
	requirePodman(t)
	requireMountable(t)
	busybox := requireStaticBusybox(t)
	// Not parallel: the mount namespaces podmanEnv makes would copy the
	// mounts other tests have up (see newPodmanEnv). Sequential tests run
	// before any parallel one starts.
	start := time.Now()
	base := t.TempDir()
	rootfs := filepath.Join(base, "rootfs")
	// The bulk makes diff and commit walk a tree the size of a small
	// distribution's: that is what the timings are about (make
	// podman-test); CI, which checks only the results, walks a smaller one.
	bulk := 1000
	if os.Getenv("E2E_TIMING") == "1" {
		bulk = 6000
	}
	makeLayer(t, rootfs, podmanBase(t, busybox, bulk)...)
	ctx := filepath.Join(base, "context")
	if err := os.Mkdir(ctx, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(ctx, "Containerfile"), []byte(podmanContainerfile), 0o644); err != nil {
		t.Fatal(err)
	}
	var baseTar bytes.Buffer
	tarCmd := exec.Command("tar", "-C", rootfs, "-c", ".")
	tarCmd.Stdout = &baseTar
	if err := tarCmd.Run(); err != nil {
		t.Fatalf("tar of the base rootfs: %v", err)
	}

	var tm timings
	type result struct {
		built, committed imageManifest
		diff             []string
	}
	results := map[overlayKind]result{}
	kinds := overlayKinds(t, true)
	// E2E_PODMAN_ROTATE=N starts with the Nth filesystem (make bench
	// alternates the order between repetitions).
	if n, err := strconv.Atoi(os.Getenv("E2E_PODMAN_ROTATE")); err == nil && n > 0 {
		n %= len(kinds)
		kinds = append(kinds[n:], kinds[:n]...)
	}
	for _, kind := range kinds {
		p := newPodmanEnv(t, kind)
		var res result
		step := func(name string, fn func()) { tm.time(name, kind, fn) }
		step("import (tar | podman import)", func() {
			p.must(t, bytes.NewReader(baseTar.Bytes()), "import", "-", "localhost/localbase")
		})
		step("run --rm", func() {
			out := p.must(t, nil, "run", "--rm", "localhost/localbase", "/bin/sh", "-c", "cat /base/content; echo hi > /tmp/x; cat /tmp/x")
			if out != "base\nhi\n" {
				t.Errorf("%s: run --rm: got %q", kind, out)
			}
		})
		step("run -d, exec, stop, rm", func() { podmanService(t, p) })
		step("build (3 RUN steps)", func() {
			p.must(t, nil, "build", "--network=none", "-t", "localhost/built", ctx)
		})
		step("export the built image", func() { res.built = podmanExport(t, p, "localhost/built") })
		p.must(t, nil, "run", "--name", "changer", "localhost/built", "/bin/sh", "-c", podmanChanges)
		step("diff", func() {
			out := p.must(t, nil, "diff", "changer")
			res.diff = strings.Split(strings.TrimSpace(out), "\n")
			sort.Strings(res.diff)
		})
		step("commit", func() { p.must(t, nil, "commit", "-q", "changer", "localhost/committed") })
		step("export the commit", func() { res.committed = podmanExport(t, p, "localhost/committed") })
		p.must(t, nil, "rm", "changer")
		results[kind] = res
	}
	t.Logf("Podman 4.3 with each filesystem (base: busybox + %d files); seconds per step:\n%s", bulk, tm.table())
	tm.save(t)

	kern, ours := results[kindKernel], results[kindUnionmount]
	checkBuilt(t, "kernel overlayfs", kern.built, false)
	checkBuilt(t, "unionmount", ours.built, !selftestKernel)
	opts := diffOpts{freshAfter: start}
	// Podman's naive diff loses a directory's mtime-only change and a link
	// to an older file (see checkBuilt): differences no mount program can
	// avoid.
	naive := func(d []string) []string {
		var out []string
		for _, l := range d {
			if selftestKernel || !(strings.HasPrefix(l, "base/dir-mtime: mtime: ") ||
				strings.HasPrefix(l, "s1/content: hard links: ") || strings.HasPrefix(l, "s1/hardlink: hard links: ")) {
				out = append(out, l)
			}
		}
		return out
	}
	reportDiff(t, "built image (kernel vs unionmount)", naive(diffManifests("kernel", kern.built, "unionmount", ours.built, opts)))
	reportDiff(t, "committed image (kernel vs unionmount)", naive(diffManifests("kernel", kern.committed, "unionmount", ours.committed, opts)))
	for _, kind := range []overlayKind{kindKernel, kindUnionmount} {
		if got := results[kind].diff; strings.Join(got, "\n") != strings.Join(podmanDiffWant, "\n") {
			t.Errorf("%s: podman diff:\n  %s\nwant:\n  %s", kind, strings.Join(got, "\n  "), strings.Join(podmanDiffWant, "\n  "))
		}
	}
	c := ours.committed
	for _, p := range []string{"base/content", "s1/dir2"} {
		if _, ok := c[p]; ok {
			t.Errorf("unionmount: committed image still has %s", p)
		}
	}
	if c["newfile"].Hash != contentHash("n\n") || c["newdir"].Type != "dir" || c["s1/renamed"].Hash != contentHash("s1\nm\n") || c["base/owned"].Mode != 0o600 {
		t.Errorf("unionmount: committed image lacks the container's changes: newfile %+v newdir %+v s1/renamed %+v base/owned %+v",
			c["newfile"], c["newdir"], c["s1/renamed"], c["base/owned"])
	}
	if fo, ok := results[kindFuseOverlayfs]; ok {
		if d := diffManifests("kernel", kern.built, "fuse-overlayfs", fo.built, opts); len(d) > 0 {
			t.Logf("for comparison, fuse-overlayfs's built image differs from the kernel's in %d ways:\n  %s", len(d), strings.Join(d, "\n  "))
		}
	}
}

// podmanService runs a container in the background, execs into it, stops
// and removes it.
func podmanService(t *testing.T, p *podmanEnv) {
	t.Helper()
	p.must(t, nil, "run", "-d", "--name", "svc", "localhost/localbase", "/bin/sh", "-c",
		`trap "exit 0" TERM; echo ready > /tmp/ready; sleep 1000 & wait`)
	deadline := time.Now().Add(30 * time.Second)
	for {
		out, err := p.run(nil, "exec", "svc", "cat", "/tmp/ready")
		if err == nil && out == "ready\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: the service container never became ready: %v", p.kind, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	out := p.must(t, nil, "exec", "svc", "/bin/sh", "-c", "echo from-exec > /root/x && cat /root/x /base/content")
	if out != "from-exec\nbase\n" {
		t.Errorf("%s: exec: got %q", p.kind, out)
	}
	p.must(t, nil, "stop", "-t", "10", "svc")
	p.must(t, nil, "rm", "svc")
}

// imageManifest is what an exported image holds, by path.
type imageManifest map[string]Node

// podmanExport exports a container made from image (through the mount
// program) and reads the tar.
func podmanExport(t *testing.T, p *podmanEnv, image string) imageManifest {
	t.Helper()
	name := "export-" + strings.ReplaceAll(path.Base(image), ":", "-")
	p.must(t, nil, "create", "--name", name, image, "/bin/true")
	defer p.must(t, nil, "rm", name)
	file := filepath.Join(p.dir, name+".tar")
	p.must(t, nil, "export", "-o", file, name)
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer os.Remove(file)
	defer f.Close()
	m := imageManifest{}
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("%s: reading the export of %s: %v", p.kind, image, err)
		}
		name := path.Clean(strings.TrimPrefix(h.Name, "/"))
		n := Node{Mode: uint32(h.Mode) & 0o7777, UID: uint32(h.Uid), GID: uint32(h.Gid), Mtime: h.ModTime}
		switch h.Typeflag {
		case tar.TypeReg:
			n.Type, n.Size = "file", h.Size
			hs := sha256.New()
			if _, err := io.Copy(hs, tr); err != nil {
				t.Fatal(err)
			}
			n.Hash = hex.EncodeToString(hs.Sum(nil))[:16]
		case tar.TypeDir:
			n.Type = "dir"
		case tar.TypeSymlink:
			n.Type, n.Target = "symlink", h.Linkname
		case tar.TypeLink:
			n.Type, n.Target = "hardlink", path.Clean(h.Linkname)
		case tar.TypeFifo:
			n.Type = "fifo"
		case tar.TypeChar:
			n.Type, n.Rdev = "chardev", fmt.Sprintf("%d:%d", h.Devmajor, h.Devminor)
		default:
			n.Type = fmt.Sprintf("tar type %q", h.Typeflag)
		}
		for k, v := range h.PAXRecords {
			if x, ok := strings.CutPrefix(k, "SCHILY.xattr."); ok {
				if n.Xattrs == nil {
					n.Xattrs = map[string]string{}
				}
				n.Xattrs[x] = v
			}
		}
		m[name] = n
	}
	return m
}

// diffManifests compares two exported images: a hard link may be stored
// under either name (tar picks the first it meets), so hard links are
// compared as the set of names.
func diffManifests(aName string, a imageManifest, bName string, b imageManifest, o diffOpts) []string {
	norm := func(m imageManifest) Tree {
		t := Tree{}
		groups := map[string][]string{} // first name -> every name
		for p, n := range m {
			if n.Type == "hardlink" {
				groups[n.Target] = append(groups[n.Target], p)
			} else {
				t[p] = n
			}
		}
		for first, names := range groups {
			all := append([]string{first}, names...)
			sort.Strings(all)
			for _, p := range all {
				n := m[first]
				n.Links = nil
				for _, q := range all {
					if q != p {
						n.Links = append(n.Links, q)
					}
				}
				t[p] = n
			}
		}
		return t
	}
	return diffTrees(aName, norm(a), bName, norm(b), o)
}

// contentHash is the hash a snapshot records for a file holding s.
func contentHash(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])[:16]
}

// checkBuilt checks the built image against what podmanContainerfile does.
// naiveDiff says the layers were made by containers/storage's naive diff,
// which it always uses with a mount program: it compares two mounted trees
// by lstat (pkg/archive changes.go) and ignores the mtime of directories
// and link counts, so whatever the filesystem, a directory whose mtime
// alone changed is not in the layer, and a new name linked to an older
// file becomes a copy in the layer (the old name is unchanged, so the tar
// holds the new one alone).
func checkBuilt(t *testing.T, who string, m imageManifest, naiveDiff bool) {
	t.Helper()
	var problems []string
	want := func(p string, ok bool, what string) {
		if !ok {
			problems = append(problems, fmt.Sprintf("%s: %s (got %+v)", p, what, m[p]))
		}
	}
	absent := func(p string) {
		if _, ok := m[p]; ok {
			problems = append(problems, p+": should be gone")
		}
	}
	content := func(p, c string) { want(p, m[p].Hash == contentHash(c), fmt.Sprintf("content %q", c)) }
	year := func(p string, y int) { want(p, m[p].Mtime.Year() == y, fmt.Sprintf("mtime in %d", y)) }

	content("base/content", "base\nchanged\n")
	want("base/mode", m["base/mode"].Mode == 0o600, "mode 0600")
	content("base/mode", "base\n")
	content("base/mtime", "base\n")
	year("base/mtime", 2000)
	content("base/renamed", "base-rename\ns2\n")
	absent("base/rename")
	absent("base/delete")
	absent("base/dir-rename")
	absent("base/dir-rename/a")
	absent("base/dir-renamed/a")
	content("base/dir-renamed/b", "b\n")
	content("base/dir-renamed/added", "s2\n")
	want("base/dir-renamed", m["base/dir-renamed"].Mode == 0o750, "mode 0750")
	absent("base/dir-delete")
	absent("base/dir-delete/a")
	absent("base/dir-recreate/old1")
	absent("base/dir-recreate/sub")
	absent("base/dir-recreate/new")
	content("base/dir-recreate/newer", "newer\n")
	want("base/dir-mode", m["base/dir-mode"].Mode == 0o700, "mode 0700")
	if naiveDiff {
		if m["base/dir-mtime"].Mtime.Year() != 2002 {
			t.Logf("%s: base/dir-mtime keeps its base mtime (%v): a directory's mtime-only change is lost by Podman's naive diff", who, m["base/dir-mtime"].Mtime)
		}
	} else {
		year("base/dir-mtime", 2002)
	}
	content("base/dir-mtime/f", "f\n")
	want("base/suid", m["base/suid"].Mode == 0o4755, "mode 04755")
	want("base/owned", m["base/owned"].UID == 1000 && m["base/owned"].GID == 1000, "owner 1000:1000")
	content("s1/mode", "s1\n")
	want("s1/mode", m["s1/mode"].Mode == 0o700, "mode 0700")
	year("s1/mtime", 2000)
	content("s1/renamed", "s1\n")
	absent("s1/rename")
	absent("s1/delete")
	absent("s1/deldir")
	absent("s1/dir")
	content("s1/dir2/sub/x", "s3\n")
	want("s1/link", m["s1/link"].Type == "symlink" && m["s1/link"].Target == "renamed", "symlink to renamed")
	want("s1/fifo", m["s1/fifo"].Type == "fifo", "fifo")
	linked := func(a, b, data string) {
		na, nb := m[a], m[b]
		want(a+" + "+b, (na.Hash == contentHash(data) && nb.Type == "hardlink" && nb.Target == a) ||
			(nb.Hash == contentHash(data) && na.Type == "hardlink" && na.Target == b), "one file, two names")
	}
	linked("s1/h1", "s1/h2", "h\n")
	if naiveDiff {
		content("s1/content", "s1\ns2\n")
		content("s1/hardlink", "s1\ns2\n")
	} else {
		linked("s1/content", "s1/hardlink", "s1\ns2\n")
	}
	absent("bin/vi")
	want("bin/sh", m["bin/sh"].Type == "symlink", "untouched symlink")
	want("usr/share/bulk/d00/f0000", m["usr/share/bulk/d00/f0000"].Hash == contentHash("bulk file 0\n"), "untouched bulk file")
	if len(problems) > 0 {
		t.Errorf("%s: the built image is not what the Containerfile makes:\n  %s", who, strings.Join(problems, "\n  "))
	}
}
