package e2e

// The differential runner: same layers, same operations, kernel overlayfs on
// one side and unionmount on the other; errnos, merged trees and uppers on
// disk must agree, now, after remounting, and when each filesystem mounts the
// other's layers.

import (
	"bytes"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// side is one of the two stacks of a differential run.
type side struct {
	name string // "kernel" or "unionmount"
	*stack
	mnt string // current mount point ("" when unmounted)
	// Options for this side's mounts (added to the common ones) when it
	// is mounted with kernel overlayfs (always on the kernel's side, and
	// on both in self-test mode) and when with unionmount.
	kernelOpts, unionOpts []string
}

func (s *side) mount(t *testing.T, opts []string) {
	t.Helper()
	opts = append([]string(nil), opts...)
	switch {
	case s.name == "kernel":
		s.mnt = mountKernel(t, s.lowers, s.upper, s.work, append(opts, s.kernelOpts...)...)
	case selftestKernel:
		s.mnt = mountUnion(t, s.lowers, s.upper, s.work, append(opts, s.kernelOpts...)...)
	default:
		s.mnt = mountUnion(t, s.lowers, s.upper, s.work, append(opts, s.unionOpts...)...)
	}
}

func (s *side) unmount(t *testing.T) {
	t.Helper()
	unmount(t, s.mnt)
	s.mnt = ""
}

// pair is the differential engine both runners drive (sameOnBoth for the
// hand-written cases, runSeq for the tester's generated sequences): one
// stack built twice, one side mounted with kernel overlayfs (the oracle)
// and one with unionmount, and each side's lowers fingerprinted, to prove
// at the end that nothing wrote them.
type pair struct {
	kern, ours *side
	lowers     map[*side]map[string]string // fingerprints of each side's lowers
}

// newPair builds both stacks from spec; kernelOpts and unionOpts are the
// sides' own options (see side).
func newPair(t *testing.T, spec stackSpec, kernelOpts, unionOpts []string) *pair {
	t.Helper()
	p := &pair{
		kern:   &side{name: "kernel", stack: newStack(t, spec), kernelOpts: kernelOpts, unionOpts: unionOpts},
		ours:   &side{name: "unionmount", stack: newStack(t, spec), kernelOpts: kernelOpts, unionOpts: unionOpts},
		lowers: map[*side]map[string]string{},
	}
	for _, s := range p.sides() {
		p.fingerprintLowers(t, s)
	}
	return p
}

func (p *pair) sides() []*side { return []*side{p.kern, p.ours} }

// mount mounts both sides, each with its filesystem, opts added.
func (p *pair) mount(t *testing.T, opts []string) {
	t.Helper()
	for _, s := range p.sides() {
		s.mount(t, opts)
	}
}

// unmount unmounts both sides.
func (p *pair) unmount(t *testing.T) {
	t.Helper()
	for _, s := range p.sides() {
		s.unmount(t)
	}
}

// fingerprintLowers records s's lowers as they are now (again after its
// upper was rotated into them).
func (p *pair) fingerprintLowers(t *testing.T, s *side) {
	t.Helper()
	p.lowers[s] = fingerprint(t, s.lowers...)
}

// lowersWritten is what changed in s's lowers since they were
// fingerprinted: nothing, or unionmount broke its first promise.
func (p *pair) lowersWritten(t *testing.T, s *side) []string {
	t.Helper()
	return diffFingerprints(p.lowers[s], fingerprint(t, s.lowers...))
}

// diffCase is one differential test.
type diffCase struct {
	stackSpec
	ops  []op
	opts []string // mount options for both filesystems
	// mounted runs on each side once the ops are done, still mounted.
	mounted func(t *testing.T, s *side)
	// onDisk runs on each side right after the first unmount, before
	// anything else mounts the layers: the place to check the upper on
	// disk. It runs on the kernel's side too, which checks the check.
	onDisk func(t *testing.T, s *side)
	// noCross skips mounting each filesystem on the other's layers.
	noCross bool
	// volatile names paths whose content may differ between the two
	// mounts for reasons outside the filesystem (e.g. git's index records
	// st_dev and st_ino): their size and content are not compared.
	volatile func(path string) bool
	// kernelOpts are added to the options when mounting kernel overlayfs,
	// unionOpts when mounting unionmount (for options the two spell
	// differently, or that only one needs).
	kernelOpts, unionOpts []string
}

// sameOnBoth builds two identical stacks from c, mounts one with kernel
// overlayfs and one with unionmount, runs c.ops on both (comparing each
// op's errno and output) and compares:
//  1. the merged trees (diffTrees; directory nlink apart, see dirNlinkDiffs);
//  2. after unmounting: the uppers on disk (types, whiteouts, opaque and
//     redirect xattrs: diffUppers) and workdir/work, which must be empty;
//  3. each stack remounted with its own filesystem;
//  4. each filesystem mounted on the other's stack (interoperability);
//  5. the lowers, which must not have changed at all.
//
// It returns both sides, unmounted.
func sameOnBoth(t *testing.T, c diffCase) (kern, ours *side) {
	t.Helper()
	requireMountable(t)
	start := time.Now()
	p := newPair(t, c.stackSpec, c.kernelOpts, c.unionOpts)
	kern, ours = p.kern, p.ours
	sides := p.sides()
	p.mount(t, c.opts)

	// The operations, each on both sides before the next.
	kc, oc := &opCtx{mnt: kern.mnt}, &opCtx{mnt: ours.mnt}
	for i, o := range c.ops {
		rk, ro := runOp(kc, o), runOp(oc, o)
		for _, r := range []struct {
			side string
			res  opResult
		}{{"kernel", rk}, {"unionmount", ro}} {
			if o.want != "" && r.res.String() != o.want {
				t.Errorf("op %d %s: %s: got %s, want %s", i, o.name, r.side, r.res, o.want)
			}
		}
		if rk != ro {
			t.Errorf("op %d %s:\n    kernel:     %s\n    unionmount: %s", i, o.name, rk, ro)
		} else {
			t.Logf("op %d %s: %s", i, o.name, rk)
		}
	}
	kc.closeAll()
	oc.closeAll()
	if c.mounted != nil {
		for _, s := range sides {
			c.mounted(t, s)
		}
	}
	opts := diffOpts{freshAfter: start, volatile: c.volatile}
	treeK, treeO := snapshot(t, kern.mnt), snapshot(t, ours.mnt)
	compareTrees(t, "merged trees after the operations", treeK, treeO, opts)

	p.unmount(t)
	for _, s := range sides {
		if s.upper != "" {
			checkWorkEmpty(t, s)
		}
	}
	if c.onDisk != nil {
		for _, s := range sides {
			c.onDisk(t, s)
		}
	}
	if kern.upper != "" {
		reportDiff(t, "uppers on disk (kernel vs unionmount)",
			diffUppers("kernel", rawUpper(t, kern.upper), "unionmount", rawUpper(t, ours.upper), kern.stack))
	}

	// Each remounted with its own filesystem.
	p.mount(t, c.opts)
	treeK2, treeO2 := snapshot(t, kern.mnt), snapshot(t, ours.mnt)
	compareTrees(t, "merged trees after remounting each with its own filesystem", treeK2, treeO2, opts)
	reportDiff(t, "unionmount's tree before vs after remount",
		diffTrees("before", treeO, "after", treeO2, opts))
	p.unmount(t)

	// Each filesystem on the other's layers.
	if !c.noCross && kern.upper != "" {
		kx := mountKernel(t, ours.lowers, ours.upper, ours.work, crossKernelOpts(append(append([]string(nil), c.opts...), c.kernelOpts...))...)
		reportDiff(t, "kernel overlayfs on unionmount's layers vs kernel on its own",
			diffTrees("kernel-own", treeK2, "kernel-on-unionmount's", snapshot(t, kx), opts))
		unmount(t, kx)
		extra := c.unionOpts
		if selftestKernel {
			extra = c.kernelOpts
		}
		ux := mountUnion(t, kern.lowers, kern.upper, kern.work, append(append([]string(nil), c.opts...), extra...)...)
		reportDiff(t, "unionmount on kernel's layers vs kernel on its own",
			diffTrees("kernel-own", treeK2, "unionmount-on-kernel's", snapshot(t, ux), opts))
		unmount(t, ux)
	}

	for _, s := range sides {
		reportDiff(t, s.name+"'s lowers were written to", p.lowersWritten(t, s))
	}
	return kern, ours
}

// checkWorkEmpty checks that no temporary file is left in workdir/work
// after unmounting. Kernel overlayfs keeps one whiteout there that it
// hard-links to make whiteouts (named #hex; removed at the next mount), so
// whiteouts are tolerated on the kernel's side only.
func checkWorkEmpty(t *testing.T, s *side) {
	t.Helper()
	work := filepath.Join(s.work, "work")
	var left []string
	for _, name := range dirEntries(t, work) {
		if s.name == "kernel" || selftestKernel {
			if st, err := lstatPath(filepath.Join(work, name)); err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0 {
				continue
			}
		}
		left = append(left, name)
	}
	if len(left) > 0 {
		t.Errorf("%s: workdir/work not empty after unmount: %v", s.name, left)
	}
}

// crossKernelOpts are the options the kernel mounts unionmount's layers
// with: metacopy=on as well, so that metadata-only copy-ups unionmount may
// write (SPEC §4) are read, not refused. metacopy needs redirect_dir=on and
// no userxattr, so it is left off where the test changes those.
func crossKernelOpts(opts []string) []string {
	for _, o := range opts {
		if strings.HasPrefix(o, "redirect_dir=") || o == "userxattr" || strings.HasPrefix(o, "metacopy=") {
			return opts
		}
	}
	return append(append([]string(nil), opts...), "metacopy=on")
}

// compareTrees reports the differences between the kernel's and
// unionmount's merged trees, checks that no private xattr shows through
// unionmount, and checks unionmount's directory link counts.
func compareTrees(t *testing.T, heading string, kern, ours Tree, o diffOpts) {
	t.Helper()
	reportDiff(t, heading+" (kernel vs unionmount)", diffTrees("kernel", kern, "unionmount", ours, o))
	real, merged := dirNlinkDiffs("kernel", kern, "unionmount", ours)
	reportDiff(t, heading+": directory link counts", real)
	if len(merged) > 0 {
		t.Logf("%s: known difference, kernel overlayfs reports nlink=1 for merged directories:\n  %s", heading, strings.Join(merged, "\n  "))
	}
	reportDiff(t, heading+": overlay-private xattrs shown by unionmount", privateXattrPaths(ours))
	if !selftestKernel {
		reportDiff(t, heading+": unionmount's directory link counts (SPEC §5)", dirNlinkProblems(ours))
	}
}

// dirNlinkProblems checks that every directory's nlink is 2 plus its number
// of subdirectories, as SPEC §5 requires of unionmount.
func dirNlinkProblems(tree Tree) []string {
	subdirs := map[string]uint64{}
	for p, n := range tree {
		if n.Type == "dir" && p != "." {
			subdirs[filepath.Dir(p)]++
		}
	}
	var out []string
	for _, p := range sortedKeys(tree) {
		if n := tree[p]; n.Type == "dir" && n.DirNlink != 2+subdirs[p] {
			out = append(out, fmt.Sprintf("%s: nlink %d, want %d (2 + %d subdirectories)", p, n.DirNlink, 2+subdirs[p], subdirs[p]))
		}
	}
	return out
}

// op is one operation run on both mounts. fn returns what it observed (to
// be compared) and an error whose errno is compared.
type op struct {
	name string
	fn   func(c *opCtx) (string, error)
	want string // if set, the result (opResult.String) each side must give
}

// expect makes o check its result on each side, not just compare them.
func expect(o op, want string) op {
	o.want = want
	return o
}

// opCtx is one side's state while ops run: its mount point and the files
// ops keep open between them.
type opCtx struct {
	mnt   string
	files map[string]*os.File
}

func (c *opCtx) path(rel string) string { return filepath.Join(c.mnt, rel) }

func (c *opCtx) closeAll() {
	for k, f := range c.files {
		f.Close()
		delete(c.files, k)
	}
}

// opResult is what is compared between the two sides for one op.
type opResult struct {
	out string
	err string
}

func (r opResult) String() string {
	if r.out == "" {
		return r.err
	}
	return fmt.Sprintf("%s, %q", r.err, r.out)
}

func runOp(c *opCtx, o op) opResult {
	out, err := o.fn(c)
	return opResult{out: strings.ReplaceAll(out, c.mnt, "$MNT"), err: errText(err, c.mnt)}
}

// errText is "ok", an errno's name (ENOENT) or, for other errors, the
// message with the mount point replaced.
func errText(err error, mnt string) string {
	if err == nil {
		return "ok"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		if name := unix.ErrnoName(errno); name != "" {
			return name
		}
		return fmt.Sprintf("errno %d", int(errno))
	}
	return strings.ReplaceAll(err.Error(), mnt, "$MNT")
}

// The ops. Paths are relative to the mount point.

func opCreate(p, content string, perm os.FileMode) op {
	return op{name: fmt.Sprintf("create %s %o", p, perm), fn: func(c *opCtx) (string, error) {
		f, err := os.OpenFile(c.path(p), os.O_CREATE|os.O_EXCL|os.O_WRONLY, perm)
		if err != nil {
			return "", err
		}
		_, err = f.WriteString(content)
		return "", errors.Join(err, f.Close())
	}}
}

// opWrite opens p with flags (no O_CREAT needed), writes content at off
// (off < 0: at the current position) and closes it.
func opWrite(p string, flags int, off int64, content string) op {
	return op{name: fmt.Sprintf("write %s flags=%#o off=%d %q", p, flags, off, short(content)), fn: func(c *opCtx) (string, error) {
		f, err := os.OpenFile(c.path(p), flags, 0o644)
		if err != nil {
			return "", err
		}
		if off >= 0 {
			_, err = f.WriteAt([]byte(content), off)
		} else {
			_, err = f.WriteString(content)
		}
		return "", errors.Join(err, f.Close())
	}}
}

func opOpenClose(p string, flags int) op {
	return op{name: fmt.Sprintf("open+close %s flags=%#o", p, flags), fn: func(c *opCtx) (string, error) {
		f, err := os.OpenFile(c.path(p), flags, 0o644)
		if err != nil {
			return "", err
		}
		return "", f.Close()
	}}
}

func opMknod(p string, mode uint32, major, minor uint32) op {
	return op{name: fmt.Sprintf("mknod %s %o %d:%d", p, mode, major, minor), fn: func(c *opCtx) (string, error) {
		return "", unix.Mknod(c.path(p), mode, int(unix.Mkdev(major, minor)))
	}}
}

func opSymlink(target, p string) op {
	return op{name: fmt.Sprintf("symlink %s -> %s", p, target), fn: func(c *opCtx) (string, error) {
		return "", os.Symlink(target, c.path(p))
	}}
}

func opMkdir(p string, perm uint32) op {
	return op{name: fmt.Sprintf("mkdir %s %o", p, perm), fn: func(c *opCtx) (string, error) {
		return "", unix.Mkdir(c.path(p), perm)
	}}
}

func opTruncate(p string, size int64) op {
	return op{name: fmt.Sprintf("truncate %s %d", p, size), fn: func(c *opCtx) (string, error) {
		return "", unix.Truncate(c.path(p), size)
	}}
}

func opChmod(p string, mode uint32) op {
	return op{name: fmt.Sprintf("chmod %s %o", p, mode), fn: func(c *opCtx) (string, error) {
		return "", unix.Chmod(c.path(p), mode)
	}}
}

func opLchown(p string, uid, gid int) op {
	return op{name: fmt.Sprintf("lchown %s %d:%d", p, uid, gid), fn: func(c *opCtx) (string, error) {
		return "", unix.Lchown(c.path(p), uid, gid)
	}}
}

func opUtimes(p string, atime, mtime time.Time) op {
	return op{name: fmt.Sprintf("utimensat(nofollow) %s %s %s", p, fmtTime(atime), fmtTime(mtime)), fn: func(c *opCtx) (string, error) {
		ts := []unix.Timespec{unix.NsecToTimespec(atime.UnixNano()), unix.NsecToTimespec(mtime.UnixNano())}
		return "", unix.UtimesNanoAt(unix.AT_FDCWD, c.path(p), ts, unix.AT_SYMLINK_NOFOLLOW)
	}}
}

func opSetxattr(p, name, value string) op {
	return op{name: fmt.Sprintf("lsetxattr %s %s=%q", p, name, value), fn: func(c *opCtx) (string, error) {
		return "", unix.Lsetxattr(c.path(p), name, []byte(value), 0)
	}}
}

func opRemovexattr(p, name string) op {
	return op{name: fmt.Sprintf("lremovexattr %s %s", p, name), fn: func(c *opCtx) (string, error) {
		return "", unix.Lremovexattr(c.path(p), name)
	}}
}

func opGetxattr(p, name string) op {
	return op{name: fmt.Sprintf("lgetxattr %s %s", p, name), fn: func(c *opCtx) (string, error) {
		return getXattr(c.path(p), name)
	}}
}

func opListxattr(p string) op {
	return op{name: "llistxattr " + p, fn: func(c *opCtx) (string, error) {
		names, err := xattrNames(c.path(p))
		var shown []string
		for _, n := range names {
			if shownXattr(n) {
				shown = append(shown, n)
			}
		}
		return strings.Join(shown, " "), err
	}}
}

// opTimes reports atime and mtime.
func opTimes(p string) op {
	return op{name: "times " + p, fn: func(c *opCtx) (string, error) {
		st, err := lstatPath(c.path(p))
		return fmtTime(time.Unix(st.Atim.Sec, st.Atim.Nsec)) + " " + fmtTime(time.Unix(st.Mtim.Sec, st.Mtim.Nsec)), err
	}}
}

func opUnlink(p string) op {
	return op{name: "unlink " + p, fn: func(c *opCtx) (string, error) { return "", unix.Unlink(c.path(p)) }}
}

func opRmdir(p string) op {
	return op{name: "rmdir " + p, fn: func(c *opCtx) (string, error) { return "", unix.Rmdir(c.path(p)) }}
}

func opLink(oldp, newp string) op {
	return op{name: fmt.Sprintf("link %s %s", oldp, newp), fn: func(c *opCtx) (string, error) {
		return "", unix.Link(c.path(oldp), c.path(newp))
	}}
}

func opRename(oldp, newp string) op {
	return op{name: fmt.Sprintf("rename %s %s", oldp, newp), fn: func(c *opCtx) (string, error) {
		return "", unix.Rename(c.path(oldp), c.path(newp))
	}}
}

func opRead(p string) op {
	return op{name: "read " + p, fn: func(c *opCtx) (string, error) {
		b, err := os.ReadFile(c.path(p))
		return short(string(b)), err
	}}
}

// opStat reports type, mode, owner and, for non-directories, size and nlink.
func opStat(p string) op {
	return op{name: "lstat " + p, fn: func(c *opCtx) (string, error) {
		n, err := statNode(c.path(p))
		if err != nil {
			return "", err
		}
		if n.Type == "dir" {
			return fmt.Sprintf("%s %04o %d:%d", n.Type, n.Mode, n.UID, n.GID), nil
		}
		return fmt.Sprintf("%s %04o %d:%d size=%d nlink=%d", n.Type, n.Mode, n.UID, n.GID, n.Size, n.Nlink), nil
	}}
}

func opReaddir(p string) op {
	return op{name: "readdir " + p, fn: func(c *opCtx) (string, error) {
		ents, err := os.ReadDir(c.path(p))
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		return strings.Join(names, " "), err
	}}
}

func opReadlink(p string) op {
	return op{name: "readlink " + p, fn: func(c *opCtx) (string, error) { return os.Readlink(c.path(p)) }}
}

// opSameInode reports whether two paths are the same inode.
func opSameInode(p1, p2 string) op {
	return op{name: fmt.Sprintf("same inode? %s %s", p1, p2), fn: func(c *opCtx) (string, error) {
		var a, b unix.Stat_t
		if err := unix.Lstat(c.path(p1), &a); err != nil {
			return "", err
		}
		if err := unix.Lstat(c.path(p2), &b); err != nil {
			return "", err
		}
		if a.Ino == b.Ino && a.Dev == b.Dev {
			return "same", nil
		}
		return "different", nil
	}}
}

// opOpenKeep opens p and keeps the file open under key for later ops.
func opOpenKeep(key, p string, flags int) op {
	return op{name: fmt.Sprintf("open %s flags=%#o as %s", p, flags, key), fn: func(c *opCtx) (string, error) {
		f, err := os.OpenFile(c.path(p), flags, 0o644)
		if err != nil {
			return "", err
		}
		if c.files == nil {
			c.files = map[string]*os.File{}
		}
		c.files[key] = f
		return "", nil
	}}
}

// opFd runs fn on the file kept under key.
func opFd(key, what string, fn func(f *os.File) (string, error)) op {
	return op{name: fmt.Sprintf("%s on %s", what, key), fn: func(c *opCtx) (string, error) {
		f := c.files[key]
		if f == nil {
			return "", fmt.Errorf("no open file %s", key)
		}
		return fn(f)
	}}
}

// opPread reads the whole file through the kept descriptor from offset 0.
func opPread(key string) op {
	return opFd(key, "pread all", func(f *os.File) (string, error) {
		var buf bytes.Buffer
		b := make([]byte, 64*1024)
		for off := int64(0); ; {
			n, err := f.ReadAt(b, off)
			buf.Write(b[:n])
			off += int64(n)
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				return short(buf.String()), err
			}
		}
	})
}

func opClose(key string) op {
	return op{name: "close " + key, fn: func(c *opCtx) (string, error) {
		f := c.files[key]
		if f == nil {
			return "", fmt.Errorf("no open file %s", key)
		}
		delete(c.files, key)
		return "", f.Close()
	}}
}

// opSh runs a shell script with the mount point as working directory and
// compares its combined output and exit status. $MNT is the mount point.
func opSh(script string) op {
	return op{name: "sh -c " + short(script), fn: func(c *opCtx) (string, error) {
		cmd := exec.Command("sh", "-c", script)
		cmd.Dir = c.mnt
		cmd.Env = append(os.Environ(), "MNT="+c.mnt, "LC_ALL=C", "TZ=UTC")
		out, err := cmd.CombinedOutput()
		return string(out), err
	}}
}

// short keeps long strings readable in reports: the first bytes and a hash.
func short(s string) string {
	if len(s) <= 120 {
		return s
	}
	return fmt.Sprintf("%s...(%d bytes, sha %s)", s[:60], len(s), hashString(s))
}

func hashString(s string) string {
	h := fnv.New64a()
	h.Write([]byte(s))
	return fmt.Sprintf("%016x", h.Sum64())
}
