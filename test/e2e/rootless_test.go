package e2e

// Rootless: a user without privileges mounts unionmount (through
// fusermount3) over directories it owns. Metadata goes to user.overlay.*,
// whiteouts are the character devices 0:0 an unprivileged user may make,
// and the upper it writes must mount with kernel overlayfs -o userxattr and
// show the same tree (and the reverse).

import (
	"bufio"
	"bytes"
	"encoding/hex"
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

// The rootless user: nobody, because fusermount3 needs a name for the uid.
const rootlessUID, rootlessGID = 65534, 65534

// rootlessSession is what the user does in the union, on unionmount and on
// kernel overlayfs alike: each core behaviour once.
const rootlessSession = `set -eu
echo appended >> copyup; cat copyup
chmod 0600 mode-only
touch -d '2010-01-01 00:00:00' mtime-only
setfattr -n user.note -v hello xattr-file
getfattr -n user.note --only-values xattr-file; echo
truncate -s 3 truncated
rm gone
rm -r gonedir
rm -r again; mkdir again; echo new > again/new
mv renamed-from renamed-to
mv dir-from dir-to; ls dir-to
echo x > newfile; mkdir -p newdir/sub; ln -s newfile newlink; mkfifo newfifo
ln lower-hard new-hard
rm merged/from-bottom; echo top > merged/added
ls -a merged again
if touch root-owned 2>/dev/null; then echo "wrote a root-owned file"; exit 1; fi
cat root-owned
if getfattr -d -m - . 2>/dev/null | grep -q overlay; then echo "private xattrs show"; exit 1; fi
`

// rootlessSpec is the stack the session runs on: two lowers, everything
// owned by the user but one read-only root-owned file.
var rootlessSpec = stackSpec{
	lowers: [][]Entry{
		{
			File("copyup", "lower\n"),
			File("mode-only", "mode\n"),
			File("mtime-only", "mtime\n"),
			File("xattr-file", "x\n").WithXattr("user.kept", "yes"),
			File("truncated", "truncate me\n"),
			File("gone", "gone\n"),
			File("gonedir/a", "a\n"),
			File("gonedir/sub/b", "b\n"),
			File("again/old", "old\n"),
			File("renamed-from", "renamed\n"),
			File("dir-from/a", "a\n"),
			Dir("dir-from/sub"),
			File("dir-from/sub/b", "b\n"),
			File("lower-hard", "hard\n"),
			Dir("merged"),
			File("merged/from-top", "top\n"),
			File("root-owned", "root's\n").WithOwner(0, 0),
		},
		{
			Dir("merged"),
			File("merged/from-bottom", "bottom\n"),
			File("merged/also-bottom", "bottom 2\n"),
			File("dir-from/from-bottom", "deep\n"),
		},
	},
}

// TestRootless runs rootlessSession as an unprivileged user on a unionmount
// the user mounted and on kernel overlayfs -o userxattr over an identical
// stack, then compares what the user sees, the uppers' format, and each
// filesystem mounted over the other's upper.
func TestRootless(t *testing.T) {
	requireMountable(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: this test runs the binary itself, as a user would")
	}
	for _, prog := range []string{"setfattr", "getfattr", "find", "sha256sum", "truncate"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s not installed: %v", prog, err)
		}
	}
	parallelUnlessTiming(t)
	allowDevFuse(t)
	bin := userBinary(t)
	start := time.Now()

	kern, ours := newStack(t, rootlessSpec), newStack(t, rootlessSpec)
	for _, s := range []*stack{kern, ours} {
		giveToUser(t, s)
	}
	lowersBefore := []map[string]string{fingerprint(t, kern.lowers...), fingerprint(t, ours.lowers...)}

	var tm timings
	var kmnt, umnt, kout, uout string
	var kerr, uerr error
	tm.time("mount", kindKernel, func() { kmnt = mountKernelForUser(t, kern) })
	tm.time("mount", kindUnionmount, func() { umnt = mountAsUser(t, bin, ours) })
	tm.time("session", kindKernel, func() { kout, kerr = runAsUser(kmnt, rootlessSession) })
	tm.time("session", kindUnionmount, func() { uout, uerr = runAsUser(umnt, rootlessSession) })
	if kerr != nil {
		t.Fatalf("the session on kernel overlayfs -o userxattr failed (the test's fault): %v\n%s", kerr, kout)
	}
	if uerr != nil || uout != kout {
		t.Errorf("the session as uid %d:\n--- kernel overlayfs -o userxattr (%v):\n%s--- unionmount (%v):\n%s", rootlessUID, kerr, kout, uerr, uout)
	}
	if prog, err := exec.LookPath("fuse-overlayfs"); err == nil {
		// For the timings: fuse-overlayfs, rootless too.
		fo := newStack(t, rootlessSpec)
		giveToUser(t, fo)
		var fmnt, fout string
		var ferr error
		tm.time("mount", kindFuseOverlayfs, func() { fmnt = mountAsUser(t, prog, fo) })
		tm.time("session", kindFuseOverlayfs, func() { fout, ferr = runAsUser(fmnt, rootlessSession) })
		if ferr != nil || fout != kout {
			t.Logf("for comparison, fuse-overlayfs rootless: the session differs from the kernel's (%v):\n%s", ferr, fout)
		}
	}
	t.Logf("rootless session as uid %d; seconds per step:\n%s", rootlessUID, tm.table())
	opts := diffOpts{freshAfter: start}
	treeK, treeU := snapshotAsUser(t, kmnt), snapshotAsUser(t, umnt)
	reportDiff(t, "what the user sees (kernel -o userxattr vs unionmount)", diffTrees("kernel", treeK, "unionmount", treeU, opts))
	unmount(t, kmnt)
	unmount(t, umnt)

	// The upper: the user's objects, user.overlay.* metadata, real whiteouts.
	checkRootlessUpper(t, ours.upper)
	reportDiff(t, "uppers on disk (kernel vs unionmount)",
		diffUppers("kernel", rawUpper(t, kern.upper), "unionmount", rawUpper(t, ours.upper), kern))

	// Each filesystem over the other's upper shows the same tree.
	kx := mountKernelForUser(t, ours)
	reportDiff(t, "kernel overlayfs -o userxattr over unionmount's rootless upper vs what unionmount showed",
		diffTrees("unionmount", treeU, "kernel-over-unionmount's", snapshotAsUser(t, kx), opts))
	unmount(t, kx)
	// The kernel, mounted by root, made workdir/work root's; mounted in
	// the user's namespace it would have been the user's.
	if err := chownTree(kern.work, rootlessUID, rootlessGID); err != nil {
		t.Fatal(err)
	}
	ux := mountAsUser(t, bin, kern)
	reportDiff(t, "rootless unionmount over the kernel's upper vs what the kernel showed",
		diffTrees("kernel", treeK, "unionmount-over-kernel's", snapshotAsUser(t, ux), opts))
	unmount(t, ux)

	reportDiff(t, "the kernel's lowers were written to", diffFingerprints(lowersBefore[0], fingerprint(t, kern.lowers...)))
	reportDiff(t, "unionmount's lowers were written to", diffFingerprints(lowersBefore[1], fingerprint(t, ours.lowers...)))
}

// mountKernelForUser mounts s with kernel overlayfs -o userxattr (which
// implies redirect_dir=nofollow and metacopy=off) where the user can reach
// it.
func mountKernelForUser(t *testing.T, s *stack) string {
	t.Helper()
	mnt := mountKernel(t, s.lowers, s.upper, s.work, "userxattr", "redirect_dir=nofollow")
	for _, d := range []string{filepath.Dir(mnt), filepath.Dir(filepath.Dir(mnt))} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return mnt
}

// allowDevFuse lets every user open /dev/fuse (mode 0600 on these machines)
// for the test's run, and restores its mode afterwards.
func allowDevFuse(t *testing.T) {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Stat("/dev/fuse", &st); err != nil {
		t.Fatal(err)
	}
	mode := st.Mode & 0o7777
	if mode&0o006 == 0o006 {
		return
	}
	if err := unix.Chmod("/dev/fuse", mode|0o666); err != nil {
		t.Fatalf("chmod /dev/fuse: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Chmod("/dev/fuse", mode); err != nil {
			t.Errorf("restoring /dev/fuse to %04o: %v", mode, err)
		}
	})
}

// userBinary copies the binary where the user can run it (the harness
// builds it in a directory only root may enter).
func userBinary(t *testing.T) string {
	t.Helper()
	dir := userTempDir(t)
	b, err := os.ReadFile(binPath)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "unionmount")
	if err := os.WriteFile(p, b, 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// userTempDir is a t.TempDir the user can enter.
func userTempDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{dir, filepath.Dir(dir)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// giveToUser makes the user own a stack (but what the spec gave to root)
// and lets the user reach it.
func giveToUser(t *testing.T, s *stack) {
	t.Helper()
	for _, d := range []string{s.base, filepath.Dir(s.base)} {
		if err := os.Chmod(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	for _, dir := range append([]string{s.upper, s.work}, s.lowers...) {
		err := filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
			if err != nil {
				return err
			}
			if filepath.Base(p) == "root-owned" {
				return nil
			}
			// Keep the layer's times: chown changes only ctime.
			return os.Lchown(p, rootlessUID, rootlessGID)
		})
		if err != nil {
			t.Fatal(err)
		}
	}
}

// chownTree gives dir and everything under it to uid:gid.
func chownTree(dir string, uid, gid int) error {
	return filepath.Walk(dir, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		return os.Lchown(p, uid, gid)
	})
}

// mountAsUser mounts s with the binary bin (unionmount, or fuse-overlayfs,
// which takes the same options) as the user and registers the mount with
// the harness (which unmounts it with fusermount3 -u).
func mountAsUser(t *testing.T, bin string, s *stack) string {
	t.Helper()
	mnt := filepath.Join(userTempDir(t), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(mnt, rootlessUID, rootlessGID); err != nil {
		t.Fatal(err)
	}
	mountDetached(t, launch{bin: bin, opts: unionOptions(s.lowers, s.upper, s.work, nil), mnt: mnt,
		user: &syscall.Credential{Uid: rootlessUID, Gid: rootlessGID}})
	return mnt
}

// runAsUser runs a bash script as the user in dir.
func runAsUser(dir, script string) (string, error) {
	cmd := exec.Command("bash", "-c", script)
	cmd.Dir = dir
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent", "LC_ALL=C", "TZ=UTC"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: rootlessUID, Gid: rootlessGID}}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := runWithTimeout(cmd, time.Minute)
	return out.String(), err
}

// snapshotScript prints, for every path under the current directory, the
// fields of a Node (find -printf), the file hashes and the xattrs the
// caller can read (hex-encoded).
const snapshotScript = `set -u
echo "== find"
find . -printf '%P\t%y\t%m\t%U\t%G\t%s\t%T@\t%l\t%n\t%i\t%D\n' 2>&1
echo "== sha256"
find . -type f -print0 2>/dev/null | xargs -0 -r sha256sum 2>&1
echo "== xattrs"
getfattr -R -h -d -m - -e hex . 2>&1
echo "== end"
`

// snapshotAsUser is snapshot taken by the user (a rootless FUSE mount is
// closed to everyone else, root included).
func snapshotAsUser(t *testing.T, root string) Tree {
	t.Helper()
	out, err := runAsUser(root, snapshotScript)
	if err != nil || !strings.HasSuffix(out, "== end\n") {
		t.Fatalf("snapshot of %s as uid %d: %v\n%s", root, rootlessUID, err, out)
	}
	tree := Tree{}
	types := map[string]string{"f": "file", "d": "dir", "l": "symlink", "p": "fifo", "c": "chardev", "b": "blockdev", "s": "socket"}
	inodes := map[string][]string{}
	section, xfile := "", ""
	sc := bufio.NewScanner(strings.NewReader(out))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "== ") {
			section = line[3:]
			continue
		}
		if strings.HasPrefix(line, "find: ") || strings.HasPrefix(line, "sha256sum: ") || strings.HasPrefix(line, "getfattr: ") {
			t.Errorf("snapshot of %s as uid %d: %s", root, rootlessUID, line)
			continue
		}
		switch section {
		case "find":
			f := strings.Split(line, "\t")
			if len(f) != 11 {
				t.Fatalf("snapshot of %s: bad find line %q", root, line)
			}
			p := f[0]
			if p == "" {
				p = "."
			}
			mode, _ := strconv.ParseUint(f[2], 8, 32)
			uid, _ := strconv.ParseUint(f[3], 10, 32)
			gid, _ := strconv.ParseUint(f[4], 10, 32)
			size, _ := strconv.ParseInt(f[5], 10, 64)
			nlink, _ := strconv.ParseUint(f[8], 10, 64)
			n := Node{Type: types[f[1]], Mode: uint32(mode), UID: uint32(uid), GID: uint32(gid), Mtime: parseFindTime(f[6])}
			switch n.Type {
			case "dir":
				n.DirNlink = nlink
			case "symlink":
				n.Target, n.Size, n.Nlink = f[7], size, nlink
			default:
				n.Size, n.Nlink = size, nlink
			}
			if n.Type != "dir" && nlink > 1 {
				inodes[f[9]+":"+f[10]] = append(inodes[f[9]+":"+f[10]], p)
			}
			tree[p] = n
		case "sha256":
			hash, p, ok := strings.Cut(line, "  ")
			if !ok {
				continue
			}
			p = strings.TrimPrefix(p, "./")
			n := tree[p]
			n.Hash = hash[:16]
			tree[p] = n
		case "xattrs":
			switch {
			case strings.HasPrefix(line, "# file: "):
				xfile = strings.TrimPrefix(strings.TrimPrefix(line, "# file: "), "./")
				if xfile == "." || xfile == "" {
					xfile = "."
				}
			case strings.Contains(line, "="):
				name, val, _ := strings.Cut(line, "=")
				b, err := hex.DecodeString(strings.TrimPrefix(val, "0x"))
				if err != nil {
					b = []byte(val)
				}
				n := tree[xfile]
				if n.Xattrs == nil {
					n.Xattrs = map[string]string{}
				}
				n.Xattrs[name] = string(b)
				tree[xfile] = n
			}
		}
	}
	for _, paths := range inodes {
		for _, p := range paths {
			n := tree[p]
			for _, q := range paths {
				if q != p {
					n.Links = append(n.Links, q)
				}
			}
			tree[p] = n
		}
	}
	return tree
}

// parseFindTime parses find's %T@ (seconds.nanoseconds).
func parseFindTime(s string) time.Time {
	sec, frac, _ := strings.Cut(s, ".")
	secs, _ := strconv.ParseInt(sec, 10, 64)
	frac = (frac + "000000000")[:9]
	nsec, _ := strconv.ParseInt(frac, 10, 64)
	return time.Unix(secs, nsec)
}

// checkRootlessUpper checks the upper a rootless unionmount wrote: every
// object the user's (root-owned ones cannot be made), metadata in
// user.overlay.* only, whiteouts as character devices 0:0.
func checkRootlessUpper(t *testing.T, upper string) {
	t.Helper()
	var problems []string
	whiteouts := 0
	err := filepath.Walk(upper, func(p string, fi os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		st := fi.Sys().(*syscall.Stat_t)
		if st.Uid != rootlessUID {
			problems = append(problems, fmt.Sprintf("%s: owned by uid %d", rel, st.Uid))
		}
		if st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
			whiteouts++
		}
		names, err := xattrNames(p)
		if err != nil {
			return err
		}
		for _, name := range names {
			if strings.HasPrefix(name, "trusted.") {
				problems = append(problems, fmt.Sprintf("%s: has %s (rootless: user.overlay.* only)", rel, name))
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if whiteouts == 0 {
		problems = append(problems, "no whiteout (character device 0:0) at all")
	}
	if v, err := getXattr(filepath.Join(upper, "again"), "user.overlay.opaque"); err != nil || v != "y" {
		problems = append(problems, fmt.Sprintf("again: user.overlay.opaque = %q, %v; want \"y\"", v, err))
	}
	if len(problems) > 0 {
		t.Errorf("rootless upper %s:\n  %s", upper, strings.Join(problems, "\n  "))
	}
}

// TestRootlessNoClone: an unprivileged user outside a user namespace of its
// own may not clone mounts, so its layers are the plain directories. A
// mount point inside a lower is then refused at start-up (the union would
// show itself inside itself), and a mount inside a lower is not crossed:
// its name is listed, but looking it up fails with EXDEV, and the daemon's
// log says why. Not parallel: allowDevFuse changes /dev/fuse for the run.
func TestRootlessNoClone(t *testing.T) {
	requireMountable(t)
	if selftestKernel {
		t.Skip("E2E_SELFTEST_KERNEL: this test runs the binary itself, as a user would")
	}
	allowDevFuse(t)
	bin := userBinary(t)
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("a", "a\n"), Dir("mnt"), File("sub/beneath", "beneath\n")}}})
	giveToUser(t, s)
	mountTmpfs(t, filepath.Join(s.lowers[0], "sub"), "on-tmpfs")

	inside := filepath.Join(s.lowers[0], "mnt")
	cmd := exec.Command(bin, "-o", unionOptions(s.lowers, s.upper, s.work, nil), inside)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: rootlessUID, Gid: rootlessGID}}
	out, err := cmd.CombinedOutput()
	if fsType(inside) != "" {
		_ = unix.Unmount(inside, unix.MNT_DETACH)
		t.Fatalf("as uid %d, a union mounted inside its own lower: %v\n%s", rootlessUID, err, out)
	}
	if want := `mountpoint "` + inside + `" is inside lowerdir "` + s.lowers[0] + `"`; err == nil || !strings.Contains(string(out), want) {
		t.Errorf("as uid %d, mount point inside the lower: %v, %q; want a refusal saying %q", rootlessUID, err, out, want)
	}

	mnt := mountAsUser(t, bin, s)
	got, err := runAsUser(mnt, "ls; cat sub/beneath; cat a")
	if want := "a\nmnt\nsub\ncat: sub/beneath: Invalid cross-device link\na\n"; got != want {
		t.Errorf("as uid %d over a lower with a tmpfs inside: %v\n%s\nwant:\n%s", rootlessUID, err, got, want)
	}
	log := readLog(filepath.Join(filepath.Dir(mnt), "unionmount.log"))
	if !strings.Contains(log, "not crossed") || !strings.Contains(log, s.lowers[0]) {
		t.Errorf("the daemon's log does not name the mount it did not cross:\n%s", log)
	}
}
