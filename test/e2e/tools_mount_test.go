package e2e

// mount(8) and /etc/fstab: `make install` puts the binary where mount(8)
// looks (its PATH is reset to /usr/local/sbin:/usr/local/bin:/usr/sbin:...),
// mount.fuse3 runs it as `unionmount SOURCE MOUNTPOINT -o OPTS`, and umount
// ends it. The installed tree is bind-mounted over /usr/local/bin in a
// private mount namespace, so the test installs nothing on the machine.

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
)

func TestMountTypeFuseUnionmount(t *testing.T) {
	requireMountable(t)
	// Not parallel: the mount namespace it makes (unshare -m) would copy
	// every FUSE mount other tests have up, and keep their daemons serving
	// after those tests unmount. Sequential tests run before any parallel
	// one starts.
	for _, tool := range []string{"make", "unshare", "mount", "umount", "mount.fuse3", "pgrep", "groff"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not found: %v", tool, err)
		}
	}
	d := t.TempDir()
	lower, upper, work, mnt := filepath.Join(d, "lower"), filepath.Join(d, "upper"), filepath.Join(d, "work"), filepath.Join(d, "mnt")
	for _, p := range []string{lower, upper, work, mnt} {
		if err := os.Mkdir(p, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("from lower\n"), 0o644); err != nil {
		t.Fatal(err)
	}

	dest := makeInstall(t, d)
	bindir := filepath.Join(dest, "usr/local/bin")
	man := filepath.Join(dest, "usr/local/share/man/man8/unionmount.8")
	if out, err := exec.Command("groff", "-man", "-Tutf8", "-ww", "-z", man).CombinedOutput(); err != nil || len(out) != 0 {
		t.Errorf("man page %s: %v %s", man, err, out)
	}

	opts := "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	fstab := filepath.Join(d, "fstab")
	line := fmt.Sprintf("unionmount %s fuse.unionmount noauto,nodev,%s,x-systemd.requires-mounts-for=%s 0 0\n", mnt, opts, d)
	if err := os.WriteFile(fstab, []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { killDaemonsOf(t, mnt) })
	// In a private mount namespace: mount and unmount by type, then by the
	// fstab line; after each umount the daemon must be gone.
	script := `set -eu
trap 'umount -l "$MNT" 2>/dev/null || true' EXIT
mount --bind "$BINDIR" /usr/local/bin
gone() {
	i=0
	while pgrep -f -- "unionmount $MNT " >/dev/null; do
		i=$((i+1)); [ $i -lt 300 ] || { echo "daemon still running after umount"; exit 1; }
		sleep 0.05
	done
}
mount -t fuse.unionmount unionmount "$MNT" -o "$OPTS"
grep " $MNT " /proc/self/mountinfo | grep -q ' - fuse.unionmount unionmount ' || { echo "not a fuse.unionmount mount"; exit 1; }
cat "$MNT/f"
echo by-type > "$MNT/by-type"
umount "$MNT"
gone
mount -T "$FSTAB" "$MNT"
grep -q " $MNT " /proc/self/mountinfo || { echo "fstab mount not live"; exit 1; }
echo by-fstab > "$MNT/by-fstab"
umount "$MNT"
gone
echo done
`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "MNT="+mnt, "OPTS="+opts, "FSTAB="+fstab, "BINDIR="+bindir)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "done\n") || !strings.HasPrefix(string(out), "from lower\n") {
		t.Fatalf("mount -t fuse.unionmount and umount: %v\n%s", err, out)
	}
	for name, want := range map[string]string{"by-type": "by-type\n", "by-fstab": "by-fstab\n"} {
		if b, err := os.ReadFile(filepath.Join(upper, name)); err != nil || string(b) != want {
			t.Errorf("upper/%s: %q, %v: the write through the mount did not land", name, b, err)
		}
	}
}

// makeInstall runs make install, with the binary this test run built, into
// a DESTDIR under d, and returns that DESTDIR.
func makeInstall(t *testing.T, d string) string {
	t.Helper()
	dest := filepath.Join(d, "destdir")
	install := exec.Command("make", "-o", "build", "install", "BIN="+binPath, "DESTDIR="+dest)
	install.Dir = filepath.Join("..", "..")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	if fi, err := os.Stat(filepath.Join(dest, "usr/local/bin/unionmount")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("make install did not put an executable unionmount in /usr/local/bin: %v", err)
	}
	return dest
}

// TestRemountThroughMount8 (issue 14 item 12; xfstests generic/306 and
// generic/452): mount -o remount,ro through mount(8) (which runs
// mount.fuse3, which runs unionmount with remount among the options)
// makes the live mount read-only: writes fail with EROFS, the same daemon
// serves on, the other flags stay; remount,rw makes it writable again.
// Kernel overlayfs on other layers does the same, side by side.
func TestRemountThroughMount8(t *testing.T) {
	requireMountable(t)
	// Not parallel, for the same reason as TestMountTypeFuseUnionmount.
	d := t.TempDir()
	dirs := mkdirs(t, d, "lower", "upper", "work", "mnt", "kupper", "kwork", "kmnt")
	lower, upper, work, mnt, kupper, kwork, kmnt := dirs[0], dirs[1], dirs[2], dirs[3], dirs[4], dirs[5], dirs[6]
	if err := os.WriteFile(filepath.Join(lower, "f"), []byte("from lower\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bindir := filepath.Join(makeInstall(t, d), "usr/local/bin")
	t.Cleanup(func() { killDaemonsOf(t, mnt) })
	script := `set -eu
trap 'umount -l "$MNT" 2>/dev/null || true; umount -l "$KMNT" 2>/dev/null || true' EXIT
mount --bind "$BINDIR" /usr/local/bin
mount -t fuse.unionmount unionmount "$MNT" -o "nosuid,$OPTS"
mount -t overlay overlay "$KMNT" -o "$KOPTS"
daemon=$(pgrep -f -- " $MNT -o ")
flags() { awk -v m="$1" '$5 == m { print $6 }' /proc/self/mountinfo; }
for m in "$KMNT" "$MNT"; do
	mount -o remount,ro "$m"
	echo "$m ro: $(flags "$m")"
	if (echo x > "$m/new") 2>"$m.err"; then echo "$m: a write to a read-only mount worked"; exit 1; fi
	grep -q 'Read-only file system' "$m.err" || { cat "$m.err"; exit 1; }
	cat "$m/f"
	mount -o remount,rw "$m"
	echo "$m rw: $(flags "$m")"
	echo back > "$m/new"
done
[ "$(pgrep -f -- " $MNT -o ")" = "$daemon" ] || { echo "not the same daemon: $daemon, now $(pgrep -f -- " $MNT -o ")"; exit 1; }
umount "$MNT"
umount "$KMNT"
echo done
`
	cmd := exec.Command("unshare", "-m", "--propagation", "private", "sh", "-c", script)
	cmd.Env = append(os.Environ(), "MNT="+mnt, "KMNT="+kmnt, "BINDIR="+bindir,
		"OPTS=lowerdir="+lower+",upperdir="+upper+",workdir="+work,
		"KOPTS="+kernelOptions([]string{lower}, kupper, kwork, nil))
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.HasSuffix(string(out), "done\n") {
		t.Fatalf("remount,ro and remount,rw through mount(8): %v\n%s", err, out)
	}
	t.Logf("%s", out)
	for _, want := range []string{mnt + " ro: ro,nosuid,", mnt + " rw: rw,nosuid,", kmnt + " ro: ro,", kmnt + " rw: rw,"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("mount flags: no %q in\n%s", want, out)
		}
	}
	if b, err := os.ReadFile(filepath.Join(upper, "new")); err != nil || string(b) != "back\n" {
		t.Errorf("upper/new: %q, %v: the write after remount,rw did not land", b, err)
	}
}

// killDaemonsOf kills any unionmount still serving mnt (a failed test's).
func killDaemonsOf(t *testing.T, mnt string) {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		cmdline, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || !strings.Contains(string(cmdline), "\x00"+mnt+"\x00") || !strings.Contains(string(cmdline), "unionmount") {
			continue
		}
		t.Errorf("unionmount daemon %d still serves %s: killing it", pid, mnt)
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
}
