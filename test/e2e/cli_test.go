package e2e

// The command as a user meets it: refusals at start-up, the argument form
// mount.fuse3 uses, ending the daemon by signal or umount, and other users
// on a root mount.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// dirListing names everything under dir, recursively, to show that a
// refused command wrote nothing.
func dirListing(t *testing.T, dir string) string {
	t.Helper()
	var names []string
	err := filepath.Walk(dir, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(dir, p)
		names = append(names, rel)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return strings.Join(names, "\n")
}

// runCmd runs the binary and returns its exit code and stderr.
func runCmd(t *testing.T, args ...string) (int, string) {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode(), stderr.String()
		}
		if err != nil {
			t.Fatal(err)
		}
		return 0, stderr.String()
	case <-time.After(mountTimeout):
		_ = cmd.Process.Kill()
		t.Fatalf("unionmount %q did not return in %v", args, mountTimeout)
		return -1, ""
	}
}

func TestStartupRefusals(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	d := t.TempDir()
	lower, upper, work, mnt := filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "mnt")
	for _, p := range []string{lower, upper, work, mnt, filepath.Join(upper, "nested")} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	file := filepath.Join(d, "file")
	if err := os.WriteFile(file, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	opts := func(extra string) string {
		return "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work + extra
	}
	cases := []struct {
		name string
		args []string
		code int
		want string
	}{
		{"missing lower", []string{"-o", "lowerdir=" + d + "/nope,upperdir=" + upper + ",workdir=" + work, mnt}, 1, `lowerdir "` + d + `/nope": no such file or directory`},
		{"lower is a file", []string{"-o", "lowerdir=" + file + ",upperdir=" + upper + ",workdir=" + work, mnt}, 1, "not a directory"},
		{"workdir inside upper", []string{"-o", "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + upper + "/nested", mnt}, 1, "layers must not overlap"},
		{"lower is upper", []string{"-o", "lowerdir=" + upper + ",upperdir=" + upper + ",workdir=" + work, mnt}, 1, "same directory"},
		{"upper without workdir", []string{"-o", "lowerdir=" + lower + ",upperdir=" + upper, mnt}, 1, "workdir: required"},
		{"unknown option", []string{"-o", opts(",frobnicate=1"), mnt}, 2, `unknown option "frobnicate=1"`},
		{"bad redirect_dir", []string{"-o", opts(",redirect_dir=maybe"), mnt}, 2, "redirect_dir"},
		{"no lowerdir", []string{"-o", "upperdir=" + upper + ",workdir=" + work, mnt}, 2, "lowerdir is required"},
		{"no mountpoint", []string{"-o", opts("")}, 2, "missing MOUNTPOINT"},
		{"missing mountpoint", []string{"-o", opts(""), d + "/nomnt"}, 1, "no such file or directory"},
	}
	var st unix.Stat_t
	if unix.Stat("/dev/shm", &st) == nil {
		var ust unix.Stat_t
		if unix.Stat(upper, &ust) == nil && ust.Dev != st.Dev {
			cases = append(cases, struct {
				name string
				args []string
				code int
				want string
			}{"workdir on another filesystem", []string{"-o", "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=/dev/shm", mnt}, 1, "not on the same filesystem"})
		}
	}
	before := dirListing(t, d)
	for _, tc := range cases {
		code, stderr := runCmd(t, tc.args...)
		if code != tc.code || !strings.Contains(stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", tc.name, code, stderr, tc.code, tc.want)
		}
		if lines := strings.Count(strings.TrimSpace(stderr), "\n"); tc.code == 1 && lines != 0 {
			t.Errorf("%s: message is %d lines, want one: %q", tc.name, lines+1, stderr)
		}
		if after := dirListing(t, d); after != before {
			t.Errorf("%s: a refused mount wrote something:\nbefore:\n%s\nafter:\n%s", tc.name, before, after)
		}
	}

	// The same upper and workdir in use by a live mount.
	mountUnion(t, []string{lower}, upper, work)
	code, stderr := runCmd(t, "-o", opts(""), mnt)
	if code != 1 || !strings.Contains(stderr, "in use by another unionmount") {
		t.Errorf("second mount of one upper+workdir: exit %d, %q", code, stderr)
	}
	if typ := fsType(mnt); typ != "" {
		t.Errorf("refused second mount left %s mounted (%s)", mnt, typ)
	}
}

func TestMountFuse3Form(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	d := t.TempDir()
	lower, upper, work, mnt := filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "mnt")
	for _, p := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	// mount.fuse3 passes: SOURCE MOUNTPOINT -o OPTS, with generic options.
	code, stderr := runCmd(t, "mysource", mnt, "-o", "rw,nodev,nosuid,noatime,lowerdir="+lower+",upperdir="+upper+",workdir="+work+",,")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	h := &mountHandle{dir: mnt, kind: "unionmount", pid: findProcess(binPath, mnt)}
	register(t, h)
	if typ := fsType(mnt); typ != "fuse.unionmount" {
		t.Errorf("mount type %q, want fuse.unionmount", typ)
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	if !strings.Contains(string(mounts), "mysource "+mnt+" fuse.unionmount") {
		t.Errorf("/proc/self/mounts does not show source mysource at %s", mnt)
	}
	if b, err := os.ReadFile(filepath.Join(mnt, "f")); err != nil || string(b) != "x" {
		t.Errorf("read through the mount: %q, %v", b, err)
	}
}

// startForeground runs unionmount -f over fresh layers (startDaemon) and
// returns once the mount is live.
func startForeground(t *testing.T) *fgDaemon {
	t.Helper()
	d := t.TempDir()
	lower, upper, work, mnt := filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "mnt")
	for _, p := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return startDaemon(t, binPath, mnt, "lowerdir="+lower+",upperdir="+upper+",workdir="+work)
}

// waitExit waits for d to exit after something ended its mount, and checks
// that it exited with status 0.
func waitExit(t *testing.T, d *fgDaemon, after string) {
	t.Helper()
	select {
	case <-d.exited:
		if d.waitErr != nil {
			t.Errorf("%s: daemon exited with %v, want 0", after, d.waitErr)
		}
	case <-time.After(unmountTimeout):
		t.Fatalf("%s: daemon still running after %v", after, unmountTimeout)
	}
}

func TestSignalsUnmountCleanly(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	for _, sig := range []syscall.Signal{syscall.SIGTERM, syscall.SIGINT} {
		d := startForeground(t)
		if err := d.cmd.Process.Signal(sig); err != nil {
			t.Fatal(err)
		}
		waitExit(t, d, sig.String())
		if typ := fsType(d.mnt); typ != "" {
			t.Errorf("%v: %s still mounted (%s)", sig, d.mnt, typ)
		}
	}
}

func TestUmountEndsDaemon(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	d := startForeground(t)
	// EBUSY can be transient, as in the harness's unmount: a parallel
	// test's fork holds copies of descriptors until it execs, and a mount
	// namespace another test made meanwhile holds a propagated copy while
	// its processes start. Retried for a bounded time.
	deadline := time.Now().Add(unmountTimeout)
	for {
		out, err := exec.Command("umount", d.mnt).CombinedOutput()
		if err == nil {
			break
		}
		if !strings.Contains(string(out), "busy") || time.Now().After(deadline) {
			t.Fatalf("umount: %v: %s", err, out)
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitExit(t, d, "umount")
}

// TestOtherUsersSeeModeBits runs commands as uid 65534 against a root
// mount and kernel overlayfs over the same layers: every outcome must agree.
func TestOtherUsersSeeModeBits(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	type layers struct{ lower, upper, work string }
	mk := func() layers {
		d := t.TempDir()
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		l := layers{filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work")}
		for _, p := range []string{l.lower, l.upper, l.work} {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		files := []struct {
			path string
			mode os.FileMode
			dir  bool
		}{
			{"public", 0o644, false},
			{"secret", 0o600, false},
			{"rootdir", 0o755, true},
			{"private", 0o700, true},
			{"private/inside", 0o644, false},
			{"shared", 0o777, true},
			{"shared/mine", 0o644, false},
		}
		for _, f := range files {
			p := filepath.Join(l.lower, f.path)
			var err error
			if f.dir {
				err = os.Mkdir(p, f.mode)
			} else {
				err = os.WriteFile(p, []byte("data"), f.mode)
			}
			if err == nil {
				err = os.Chmod(p, f.mode)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Chown(filepath.Join(l.lower, "shared/mine"), 65534, 65534); err != nil {
			t.Fatal(err)
		}
		return l
	}
	kl, ul := mk(), mk()
	kmnt := mountKernel(t, []string{kl.lower}, kl.upper, kl.work)
	umnt := mountUnion(t, []string{ul.lower}, ul.upper, ul.work)
	traversable(t, kmnt)
	traversable(t, umnt)
	cmds := [][]string{
		{"cat", "public"},
		{"cat", "secret"},
		{"ls", "private"},
		{"cat", "private/inside"},
		{"touch", "rootdir/new"},
		{"touch", "public"},
		{"chmod", "777", "public"},
		{"chown", "65534", "public"},
		{"rm", "-f", "public"},
		{"mkdir", "shared/sub"},
		{"sh", "-c", "echo more >> shared/mine"},
		{"chmod", "600", "shared/mine"},
		{"mv", "shared/mine", "shared/moved"},
		{"rm", "shared/moved"},
	}
	asNobody := func(dir string, args []string) string {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		err := cmd.Run()
		if err != nil {
			return "refused"
		}
		return "allowed"
	}
	for _, c := range cmds {
		k, u := asNobody(kmnt, c), asNobody(umnt, c)
		if k != u {
			t.Errorf("uid 65534 %q: kernel overlayfs %s, unionmount %s", c, k, u)
		}
	}
	// And the outcomes that matter are the expected ones.
	for _, c := range [][]string{{"cat", "secret"}, {"ls", "private"}, {"touch", "rootdir/new2"}, {"chmod", "777", "rootdir"}} {
		if got := asNobody(umnt, c); got != "refused" {
			t.Errorf("uid 65534 %q on unionmount: %s, want refused", c, got)
		}
	}
	for _, c := range [][]string{{"cat", "public"}, {"touch", "shared/another"}} {
		if got := asNobody(umnt, c); got != "allowed" {
			t.Errorf("uid 65534 %q on unionmount: %s, want allowed", c, got)
		}
	}
}

// traversable lets other users reach mnt: every directory above it, up to
// the system's temporary directory, gets search permission for all (test
// temporary directories are 0700). mnt itself is left alone.
func traversable(t *testing.T, mnt string) {
	t.Helper()
	tmp := filepath.Clean(os.TempDir())
	for p := filepath.Dir(mnt); strings.HasPrefix(p, tmp+"/"); p = filepath.Dir(p) {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, fi.Mode().Perm()|0o011); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMakeLintInstallsStaticcheck: a newcomer's `make demo` installs the
// packages only; the `make test` after it must not stop at "staticcheck
// not found". make test runs scripts/deps.sh first, and make lint installs
// staticcheck into $(go env GOPATH)/bin when it is missing: here, with a
// fresh GOPATH and a PATH without the usual one, the lint target's
// prerequisite builds it (from the warm module and build caches).
func TestMakeLintInstallsStaticcheck(t *testing.T) {
	t.Parallel()
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Fatal(err)
	}
	modCache, err := exec.Command(goBin, "env", "GOMODCACHE").Output()
	if err != nil {
		t.Fatal(err)
	}
	gopath := t.TempDir()
	t.Cleanup(func() { _ = exec.Command("chmod", "-R", "u+w", gopath).Run() }) // go's module files are read-only
	env := append(os.Environ(),
		"PATH="+filepath.Dir(goBin)+":/usr/sbin:/usr/bin:/sbin:/bin",
		"GOPATH="+gopath, "GOMODCACHE="+strings.TrimSpace(string(modCache)))
	root := filepath.Join("..", "..")

	dry := exec.Command("make", "-n", "test")
	dry.Dir, dry.Env = root, env
	out, err := dry.CombinedOutput()
	if err != nil {
		t.Fatalf("make -n test: %v\n%s", err, out)
	}
	plan := string(out)
	if deps, vet := strings.Index(plan, "scripts/deps.sh"), strings.Index(plan, "lint"); deps < 0 || vet < deps {
		t.Errorf("make test does not run scripts/deps.sh before lint:\n%s", plan)
	}

	sc := filepath.Join(gopath, "bin", "staticcheck")
	install := exec.Command("make", "-s", sc)
	install.Dir, install.Env = root, env
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("make %s (lint's prerequisite): %v\n%s", sc, err, out)
	}
	if out, err := exec.Command(sc, "-version").CombinedOutput(); err != nil {
		t.Errorf("%s -version: %v %s", sc, err, out)
	}
}

// TestOptionEscapesAndBadValues (issue 14 item 7): a backslash escapes a
// comma in lowerdir, as for kernel overlayfs, which mounts the same
// option string; timeout= values that are no number of seconds are refused
// (ParseFloat takes them); one lower given twice, through a bind mount of
// it, is refused, as the kernel refuses it ("conflicting lowerdir path").
func TestOptionEscapesAndBadValues(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	d := t.TempDir()
	dirs := mkdirs(t, d, "a,b", "lower", "alias", "upper", "work", "mnt")
	comma, lower, alias, upper, work, mnt := dirs[0], dirs[1], dirs[2], dirs[3], dirs[4], dirs[5]
	if err := os.WriteFile(filepath.Join(comma, "f"), []byte("in a,b\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	escaped := strings.ReplaceAll(comma, ",", `\,`)
	for who, m := range map[string]string{
		"kernel overlayfs": mountKernel(t, []string{escaped, lower}, "", ""),
		"unionmount":       mountUnion(t, []string{escaped, lower}, upper, work),
	} {
		if b, err := os.ReadFile(filepath.Join(m, "f")); err != nil || string(b) != "in a,b\n" {
			t.Errorf("%s with lowerdir=%s: f reads %q, %v", who, escaped, b, err)
		}
		unmount(t, m)
	}

	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	before := dirListing(t, d)
	for _, v := range []string{"NaN", "inf", "-Inf", "1e300", "-0", "-1"} {
		code, stderr := runCmd(t, "-o", opts+",timeout="+v, mnt)
		if code != 2 || !strings.Contains(stderr, `option timeout="`+v+`"`) {
			t.Errorf("timeout=%s: exit %d, %q; want 2 and a message naming it", v, code, stderr)
		}
		refusedLeftNoMount(t, mnt)
	}

	bindMount(t, lower, alias)
	kopts := "lowerdir=" + lower + ":" + alias
	if err := unix.Mount("overlay", mnt, "overlay", 0, kopts); err == nil {
		_ = unix.Unmount(mnt, 0)
		t.Errorf("kernel overlayfs mounted %s (the oracle refuses it)", kopts)
	}
	code, stderr := runCmd(t, "-o", "lowerdir="+lower+":"+alias+",upperdir="+upper+",workdir="+work, mnt)
	if code != 1 || !strings.Contains(stderr, "are the same directory") {
		t.Errorf("one lower twice through a bind mount: exit %d, %q; want 1 and \"are the same directory\"", code, stderr)
	}
	refusedLeftNoMount(t, mnt)
	unbind(t, alias)
	if after := dirListing(t, d); after != before {
		t.Errorf("refused mounts wrote something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}

// TestUpperLockedWithAnotherWorkdir (issue 14 item 6): one upper with a
// second, different workdir is refused while a mount uses it, as kernel
// overlayfs refuses it ("upperdir is in-use"), and so is a tool that
// writes it; a second upper with the first one's workdir likewise.
func TestUpperLockedWithAnotherWorkdir(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	dirs := mkdirs(t, t.TempDir(), "lower", "upper", "upper2", "work", "work2", "mnt")
	lower, upper, upper2, work, work2, mnt := dirs[0], dirs[1], dirs[2], dirs[3], dirs[4], dirs[5]
	// The oracle: kernel overlayfs refuses the upper of a live mount with
	// another workdir (with index=on; index=off only warns that both
	// mounts writing it is undefined: unionmount always refuses).
	k := mountKernel(t, []string{lower}, upper, work, "index=on")
	if err := unix.Mount("overlay", mnt, "overlay", 0, kernelOptions([]string{lower}, upper, work2, []string{"index=on"})); err == nil {
		_ = unix.Unmount(mnt, 0)
		t.Error("kernel overlayfs mounted an upper in use with a second workdir")
	}
	unmount(t, k)

	mountUnion(t, []string{lower}, upper, work)
	for _, tc := range []struct{ upper, work, want string }{
		{upper, work2, `upperdir "` + upper + `": in use by another unionmount`},
		{upper2, work, `workdir "` + work + `": in use by another unionmount`},
	} {
		code, stderr := runCmd(t, "-o", "lowerdir="+lower+",upperdir="+tc.upper+",workdir="+tc.work, mnt)
		if code != 1 || !strings.Contains(stderr, tc.want) {
			t.Errorf("upperdir=%s,workdir=%s beside a mount: exit %d, %q; want 1 and %q", tc.upper, tc.work, code, stderr, tc.want)
		}
		refusedLeftNoMount(t, mnt)
	}
	r := runTool(t, nil, "check", "--repair", "-o", "lowerdir="+lower+",upperdir="+upper+",workdir="+work2)
	if r.code != 2 || !strings.Contains(r.stderr, `upperdir "`+upper+`" is in use by a mounted union`) {
		t.Errorf("check --repair of the mounted upper with another workdir: exit %d, %q", r.code, r.stderr)
	}
}

// refusedLeftNoMount checks that a mount that should have been refused
// left nothing mounted at mnt, and unmounts what it left.
func refusedLeftNoMount(t *testing.T, mnt string) {
	t.Helper()
	if typ := fsType(mnt); typ != "" {
		t.Errorf("a mount that should have been refused is up at %s (%s)", mnt, typ)
		if out, err := exec.Command("fusermount3", "-u", mnt).CombinedOutput(); err != nil {
			t.Errorf("fusermount3 -u %s: %v %s", mnt, err, out)
		}
	}
}

// mkdirs makes directories names in base and returns their paths.
func mkdirs(t *testing.T, base string, names ...string) []string {
	t.Helper()
	var out []string
	for _, n := range names {
		p := filepath.Join(base, n)
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
		out = append(out, p)
	}
	return out
}
