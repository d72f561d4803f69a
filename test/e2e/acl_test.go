package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
)

// TestPosixACLs: ACLs grant and deny as on ext4 (the kernel enforces them
// on a unionmount too), and new objects get ext4's modes: the umask applies
// except under a default ACL. Compared with kernel overlayfs.
func TestPosixACLs(t *testing.T) {
	requireMountable(t)
	requireProgram(t, "setfacl", "acl")
	t.Parallel()
	mk := func() (lower, upper, work string) {
		d := t.TempDir()
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
		lower, upper, work = filepath.Join(d, "l"), filepath.Join(d, "u"), filepath.Join(d, "w")
		for _, p := range []string{lower, upper, work, filepath.Join(lower, "inherit")} {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		for _, f := range []string{"granted", "denied"} {
			if err := os.WriteFile(filepath.Join(lower, f), []byte("secret"), 0o600); err != nil {
				t.Fatal(err)
			}
		}
		for _, args := range [][]string{
			{"-m", "u:65534:r", filepath.Join(lower, "granted")},
			{"-d", "-m", "u:65534:rwx", filepath.Join(lower, "inherit")},
		} {
			if out, err := exec.Command("setfacl", args...).CombinedOutput(); err != nil {
				t.Fatalf("setfacl %q: %v: %s", args, err, out)
			}
		}
		return
	}
	kl, ku, kw := mk()
	ul, uu, uw := mk()
	kmnt := mountKernel(t, []string{kl}, ku, kw)
	umnt := mountUnion(t, []string{ul}, uu, uw)
	traversable(t, kmnt)
	traversable(t, umnt)

	asNobody := func(dir string, args ...string) bool {
		cmd := exec.Command(args[0], args[1:]...)
		cmd.Dir = dir
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: 65534, Gid: 65534}}
		return cmd.Run() == nil
	}
	for _, c := range [][]string{{"cat", "granted"}, {"cat", "denied"}} {
		k, u := asNobody(kmnt, c...), asNobody(umnt, c...)
		if k != u {
			t.Errorf("uid 65534 %q: kernel allowed=%v, unionmount allowed=%v", c, k, u)
		}
	}
	if !asNobody(umnt, "cat", "granted") || asNobody(umnt, "cat", "denied") {
		t.Error("the ACL entry for uid 65534 is not what decides access on unionmount")
	}

	modes := func(mnt string) map[string]os.FileMode {
		script := "umask 022 && touch f && mkdir d && touch inherit/f && mkdir inherit/d && umask 077 && touch g"
		if out, err := exec.Command("sh", "-c", "cd "+mnt+" && "+script).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v: %s", script, err, out)
		}
		m := map[string]os.FileMode{}
		for _, n := range []string{"f", "d", "inherit/f", "inherit/d", "g"} {
			fi, err := os.Lstat(filepath.Join(mnt, n))
			if err != nil {
				t.Fatal(err)
			}
			m[n] = fi.Mode()
		}
		return m
	}
	km, um := modes(kmnt), modes(umnt)
	for n, k := range km {
		if um[n] != k {
			t.Errorf("new %s: kernel mode %v, unionmount %v", n, k, um[n])
		}
	}
	if um["inherit/f"].Perm() != 0o664 || um["f"].Perm() != 0o644 {
		t.Errorf("modes: f %v inherit/f %v, want 644 and 664 (umask ignored under a default ACL)", um["f"], um["inherit/f"])
	}
}
