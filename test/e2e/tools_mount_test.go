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

	// make install, with the binary this test run built.
	dest := filepath.Join(d, "destdir")
	install := exec.Command("make", "-o", "build", "install", "BIN="+binPath, "DESTDIR="+dest)
	install.Dir = filepath.Join("..", "..")
	if out, err := install.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	bindir := filepath.Join(dest, "usr/local/bin")
	if fi, err := os.Stat(filepath.Join(bindir, "unionmount")); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatalf("make install did not put an executable unionmount in /usr/local/bin: %v", err)
	}
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
