package e2e

// The randomized differential tester, part 2: running a seqCase on kernel
// overlayfs (redirect_dir=on,index=on), on unionmount, and on a plain copy
// of the initial merged tree on the backing filesystem (ext4), side by side.
//
// After each operation the results (errno and output) are compared; at the
// end the merged trees (names, types, modes, owners, sizes, contents,
// symlink targets, xattrs, link counts and hard-link groups, mtimes), then
// both mounts are unmounted, remounted and compared again. A difference is a
// failure when unionmount differs from both the kernel and ext4. Where only
// the kernel differs, unionmount behaves as the better POSIX filesystem:
// those are the intended differences (README, "Differences from kernel
// overlayfs"), counted and reported, not failures. The ones seen so far:
//   - whiteouts in a lower directory that nothing below merges with: the
//     kernel lists them (lstat says ENOENT) and refuses rmdir (ENOTEMPTY);
//   - a failed rename of a lower directory leaves the kernel's copied-up
//     parent with a new mtime;
//   - merged directories' st_nlink (the kernel reports 1; not compared,
//     dirNlinkProblems checks unionmount's).
//
// Differences the ext4 oracle cannot settle are kept out of the generator,
// each with its reason where it is: trusted.overlay.* xattrs (genXattrNames),
// `.wh.NAME` files (unionmount runs with whiteout_files=off), directory
// atimes (never compared).
//
// unionmount's own invariants are checked too: directory link counts, d_ino
// == st_ino, no private xattr shown, distinct objects with distinct inode
// numbers, inode numbers unchanged by a remount, lowers never written, no
// temporary file left in workdir/work.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The options of a differential run. whiteout_files=off: kernel overlayfs
// shows `.wh.NAME` files of lowers as plain files (SPEC §3).
var (
	difftestKernelOpts = []string{"redirect_dir=on", "index=on"}
	difftestUnionOpts  = []string{"whiteout_files=off"}
)

// discrepancy is one difference found by a run. Sig classifies it (the
// stage and what differed, never a path), so that the shrinker can keep a
// smaller case failing in the same way.
type discrepancy struct {
	Sig    string
	Detail string
}

func (d discrepancy) String() string { return d.Sig + ": " + d.Detail }

// seqResult is what one run of a seqCase found.
type seqResult struct {
	discs []discrepancy // failures: unionmount differs from the kernel and from ext4
	// kernelOnly are the differences from the kernel where unionmount
	// behaves as ext4 does: intended differences, reported, not failures.
	kernelOnly []discrepancy
	log        []string // each operation and its result
}

func (r *seqResult) add(sig, format string, args ...any) {
	r.discs = append(r.discs, discrepancy{Sig: sig, Detail: fmt.Sprintf(format, args...)})
}

func (r *seqResult) has(sig string) bool {
	for _, d := range r.discs {
		if d.Sig == sig {
			return true
		}
	}
	return false
}

// checkSeq runs c and fails t with every discrepancy: the body of the
// regression tests the tester prints.
func checkSeq(t *testing.T, c seqCase) {
	t.Helper()
	requireMountable(t)
	res := runSeq(t, c)
	if len(res.discs) > 0 {
		t.Errorf("operations:\n  %s", strings.Join(res.log, "\n  "))
	}
	for _, d := range res.discs {
		t.Errorf("%s", d)
	}
	for _, d := range res.kernelOnly {
		t.Logf("intended difference (unionmount behaves as ext4, kernel overlayfs does not): %s", d)
	}
}

// runSeq runs c on kernel overlayfs, on unionmount and on a plain copy of
// the initial merged tree on the backing filesystem (ext4), and returns
// what differed. A difference is a failure when unionmount differs from
// both the kernel and ext4: where the kernel alone differs and unionmount
// does what ext4 does, unionmount is the better POSIX filesystem, and the
// difference is an intended one (seqResult.kernelOnly). It fails t only for
// trouble with the test machinery (a mount that does not come up).
func runSeq(t *testing.T, c seqCase) *seqResult {
	t.Helper()
	res := &seqResult{}
	start := time.Now()
	p := newPair(t, stackSpec{lowers: c.Lowers, upper: c.Upper}, difftestKernelOpts, difftestUnionOpts)
	kern, ours, sides := p.kern, p.ours, p.sides()
	p.mount(t, nil)
	ext4 := filepath.Join(t.TempDir(), "ext4")
	if err := copyTree(kern.mnt, ext4); err != nil {
		t.Fatalf("copying the merged tree to %s: %v", ext4, err)
	}

	kc, oc, ec := &opCtx{mnt: kern.mnt}, &opCtx{mnt: ours.mnt}, &opCtx{mnt: ext4}
	for i, g := range c.Ops {
		if g.Kind == gRemount || g.Kind == gRotate {
			// Kept descriptors are closed everywhere (ext4 too, so
			// that later operations on them agree).
			for _, c := range []*opCtx{kc, oc, ec} {
				c.closeAll()
			}
			for _, s := range sides {
				s.unmount(t)
				if g.Kind == gRotate {
					// Each side's upper becomes its topmost lower: from
					// now on it must not be written either.
					for _, line := range p.lowersWritten(t, s) {
						res.add("lowers-written", "%s wrote its lowers: %s", s.name, line)
					}
					s.rotate(t)
					p.fingerprintLowers(t, s)
				}
				s.mount(t, nil)
			}
			kc.mnt, oc.mnt = kern.mnt, ours.mnt
			res.log = append(res.log, fmt.Sprintf("%2d %s", i, g))
			continue
		}
		o := g.toOp()
		rk, ro, re := runGenOp(kc, o, g.As), runGenOp(oc, o, g.As), runGenOp(ec, o, g.As)
		if rk == ro {
			res.log = append(res.log, fmt.Sprintf("%2d %s: %s", i, g, rk))
			continue
		}
		sig := fmt.Sprintf("op:%s:%s/%s", g.Kind, rk.err, ro.err)
		if rk.err == ro.err {
			sig = fmt.Sprintf("op:%s:output", g.Kind)
		}
		d := discrepancy{Sig: sig, Detail: fmt.Sprintf("op %d %s: kernel %s, unionmount %s, ext4 %s", i, g, rk, ro, re)}
		if ro == re {
			res.log = append(res.log, fmt.Sprintf("%2d %s: kernel %s, unionmount and ext4 %s  <== kernel differs", i, g, rk, ro))
			res.kernelOnly = append(res.kernelOnly, d)
			continue
		}
		res.log = append(res.log, fmt.Sprintf("%2d %s: kernel %s, unionmount %s, ext4 %s  <== differs", i, g, rk, ro, re))
		res.discs = append(res.discs, d)
		// unionmount's tree differs from both from here on: what
		// follows would only report the consequences.
		break
	}
	for _, c := range []*opCtx{kc, oc, ec} {
		c.closeAll()
	}

	opts := diffOpts{freshAfter: start}
	treeK, treeO := res.snapshot("tree", kern), res.snapshot("tree", ours)
	treeE, errs := snapshotErrs(ext4)
	if len(errs) > 0 {
		t.Fatalf("reading the ext4 reference tree: %s", strings.Join(errs, "; "))
	}
	compareTreesInto(res, "tree", treeK, treeO, treeE, opts)
	if !selftestKernel {
		for _, p := range dinoProblems(ours.mnt, treeO) {
			res.add("dino", "%s", p)
		}
	}

	p.unmount(t)
	if left := dirEntries(t, filepath.Join(ours.work, "work")); len(left) > 0 && !selftestKernel {
		res.add("work-not-empty", "workdir/work holds %v after unmount", left)
	}

	p.mount(t, nil)
	treeK2, treeO2 := res.snapshot("remount", kern), res.snapshot("remount", ours)
	compareTreesInto(res, "remount", treeK2, treeO2, treeE, opts)
	for _, line := range diffTrees("before", treeO, "after", treeO2, opts) {
		res.add("remount-changed:"+diffField(line), "unionmount's tree before vs after remount: %s", line)
	}
	for _, p := range sortedKeys(treeO) {
		a, ok := treeO2[p]
		if b := treeO[p]; ok && a.Type == b.Type && a.Ino != b.Ino {
			res.add("ino-remount", "%s: unionmount st_ino %d before remount, %d after", p, b.Ino, a.Ino)
		}
	}
	p.unmount(t)
	for _, s := range sides {
		for _, line := range p.lowersWritten(t, s) {
			res.add("lowers-written", "%s wrote its lowers: %s", s.name, line)
		}
	}
	return res
}

// snapshot takes s's merged tree; what cannot be read is a discrepancy,
// except on the kernel's side a listed name that lstat says does not exist:
// kernel overlayfs lists the whiteouts of a lower directory that is merged
// with nothing below (an intended difference: unionmount hides them, and
// dinoProblems checks that every name it lists exists).
func (r *seqResult) snapshot(stage string, s *side) Tree {
	tree, errs := snapshotErrs(s.mnt)
	for _, e := range errs {
		if (s.name == "kernel" || selftestKernel) && strings.HasPrefix(e, "snapshot ") && strings.HasSuffix(e, ": "+unix.ENOENT.Error()) {
			continue
		}
		r.add(stage+":unreadable:"+s.name, "%s: %s", s.name, strings.ReplaceAll(e, s.mnt, "$MNT"))
	}
	return tree
}

// compareTreesInto records how unionmount's merged tree differs from the
// kernel's and from ext4's (failures where it differs from both), and
// unionmount's own invariants.
func compareTreesInto(res *seqResult, stage string, kern, ours, ext4 Tree, o diffOpts) {
	fromExt4 := map[string]bool{}
	for _, line := range diffTrees("ext4", ext4, "unionmount", ours, o) {
		fromExt4[diffKey(line)] = true
	}
	for _, line := range diffTrees("kernel", kern, "unionmount", ours, o) {
		d := discrepancy{Sig: stage + ":" + diffField(line), Detail: line}
		if fromExt4[diffKey(line)] {
			res.discs = append(res.discs, d)
		} else {
			res.kernelOnly = append(res.kernelOnly, d)
		}
	}
	for _, p := range sortedKeys(ours) {
		for name := range ours[p].Xattrs {
			// The namespace in force: as root, without userxattr,
			// user.overlay.* is an ordinary name.
			if strings.HasPrefix(name, "trusted.overlay.") {
				res.add("private-xattr", "%s: shows %s", p, name)
			}
		}
	}
	if selftestKernel {
		return
	}
	for _, line := range dirNlinkProblems(ours) {
		res.add("dir-nlink", "%s", line)
	}
	ko, oo, eo := inoGroups(kern), inoGroups(ours), inoGroups(ext4)
	for _, p := range sortedKeys(oo) {
		if k, ok := ko[p]; ok && k != oo[p] && eo[p] != oo[p] {
			res.add(stage+":ino-groups", "%s: same st_ino as [%s] on unionmount, as [%s] on the kernel, [%s] on ext4", p, oo[p], k, eo[p])
		}
	}
}

// diffKey is the path and what differs of a diffTrees line.
func diffKey(line string) string {
	p, _, _ := strings.Cut(line, ": ")
	f := diffField(line)
	if strings.HasPrefix(f, "only in ") {
		f = "presence"
	}
	return p + ": " + f
}

// diffField is what a diffTrees line says differs ("mode", "nlink", "only
// in kernel", ...), without the path.
func diffField(line string) string {
	_, rest, _ := strings.Cut(line, ": ")
	if strings.HasPrefix(rest, "only in ") {
		f, _, _ := strings.Cut(rest, " (")
		return f
	}
	f, _, _ := strings.Cut(rest, ":")
	return f
}

// inoGroups maps each path to the other paths with the same st_ino. Two
// distinct objects must never share one, and hard links always do.
func inoGroups(tree Tree) map[string]string {
	by := map[uint64][]string{}
	for p, n := range tree {
		by[n.Ino] = append(by[n.Ino], p)
	}
	out := map[string]string{}
	for p, n := range tree {
		var others []string
		for _, q := range by[n.Ino] {
			if q != p {
				others = append(others, q)
			}
		}
		sort.Strings(others)
		out[p] = strings.Join(others, ",")
	}
	return out
}

// dinoProblems checks that every directory's getdents d_ino equals the
// st_ino lstat gives for the name (SPEC §4, §5).
func dinoProblems(mnt string, tree Tree) []string {
	var out []string
	for _, dir := range sortedKeys(tree) {
		if tree[dir].Type != "dir" {
			continue
		}
		p := filepath.Join(mnt, dir)
		fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			out = append(out, fmt.Sprintf("open %s: %v", dir, err))
			continue
		}
		ents, err := readDirents(fd, 4096)
		unix.Close(fd)
		if err != nil {
			out = append(out, fmt.Sprintf("getdents %s: %v", dir, err))
			continue
		}
		for _, e := range ents {
			if e.name == ".." {
				continue
			}
			st, err := lstatPath(filepath.Join(p, e.name))
			if err != nil {
				out = append(out, fmt.Sprintf("%s: getdents lists %q, lstat: %v", dir, e.name, err))
			} else if st.Ino != e.ino {
				out = append(out, fmt.Sprintf("%s: d_ino %d, st_ino %d", joinRel(dir, e.name), e.ino, st.Ino))
			}
		}
	}
	return out
}

// runGenOp runs o as root, or as user as with that fsuid/fsgid on a thread
// of its own (the thread is discarded afterwards, so no other code ever
// runs with those credentials).
func runGenOp(c *opCtx, o op, as int) opResult {
	if as == 0 {
		return runOp(c, o)
	}
	done := make(chan opResult)
	go func() {
		// Never unlocked: the thread exits with the goroutine.
		runtime.LockOSThread()
		if err := unix.Setgroups([]int{as}); err != nil {
			done <- opResult{err: "setgroups: " + err.Error()}
			return
		}
		unix.Setfsgid(as)
		unix.Setfsuid(as)
		if got, _ := unix.SetfsuidRetUid(-1); got != as {
			done <- opResult{err: fmt.Sprintf("setfsuid(%d) did not take (fsuid %d)", as, got)}
			return
		}
		done <- runOp(c, o)
	}()
	return <-done
}

// String is a short readable form, for logs.
func (g genOp) String() string {
	var b strings.Builder
	b.WriteString(g.Kind)
	add := func(k, v string) { fmt.Fprintf(&b, " %s=%s", k, v) }
	if g.Key != "" {
		add("key", g.Key)
	}
	if g.Path != "" {
		add("path", short(g.Path))
	}
	if g.Path2 != "" {
		add("path2", short(g.Path2))
	}
	if g.Name != "" {
		add("name", g.Name)
	}
	if g.Data != "" {
		add("data", fmt.Sprintf("%q", short(g.Data)))
	}
	if g.Off != 0 {
		add("off", fmt.Sprint(g.Off))
	}
	if g.Mode != 0 {
		add("mode", fmt.Sprintf("%#o", g.Mode))
	}
	if g.Kind == gChown || g.Kind == gFchown {
		add("owner", fmt.Sprintf("%d:%d", g.UID, g.GID))
	}
	if g.Flags != 0 {
		add("flags", fmt.Sprintf("%#x", g.Flags))
	}
	if g.As != 0 {
		add("as", fmt.Sprint(g.As))
	}
	return b.String()
}

// Every open of the tester is non-blocking, so that opening a fifo never
// waits for a peer.
const genOpenFlags = unix.O_NONBLOCK | unix.O_CLOEXEC

// toOp turns g into an op runnable by runOp.
func (g genOp) toOp() op {
	name := g.String()
	mk := func(fn func(c *opCtx) (string, error)) op { return op{name: name, fn: fn} }
	writeFile := func(p string, flags int, off int64, data string) func(c *opCtx) (string, error) {
		return func(c *opCtx) (string, error) {
			fd, err := unix.Open(c.path(p), flags|genOpenFlags, g.Mode)
			if err != nil {
				return "", err
			}
			if off >= 0 {
				_, err = unix.Pwrite(fd, []byte(data), off)
			} else {
				_, err = unix.Write(fd, []byte(data))
			}
			return "", errors.Join(err, unix.Close(fd))
		}
	}
	fdOp := func(fn func(fd int) (string, error)) op {
		return mk(func(c *opCtx) (string, error) {
			f := c.files[g.Key]
			if f == nil {
				return "", fmt.Errorf("no open file %s", g.Key)
			}
			return fn(int(f.Fd()))
		})
	}
	switch g.Kind {
	case gCreate:
		return mk(writeFile(g.Path, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY, -1, g.Data))
	case gWrite:
		return mk(writeFile(g.Path, unix.O_WRONLY, g.Off, g.Data))
	case gAppend:
		return mk(writeFile(g.Path, unix.O_WRONLY|unix.O_APPEND, -1, g.Data))
	case gTruncOpen:
		return mk(writeFile(g.Path, unix.O_WRONLY|unix.O_TRUNC, -1, g.Data))
	case gTruncate:
		return mk(func(c *opCtx) (string, error) { return "", unix.Truncate(c.path(g.Path), g.Off) })
	case gChmod:
		return mk(func(c *opCtx) (string, error) { return "", unix.Chmod(c.path(g.Path), g.Mode) })
	case gChown:
		return mk(func(c *opCtx) (string, error) { return "", unix.Lchown(c.path(g.Path), g.UID, g.GID) })
	case gUtimes:
		return mk(func(c *opCtx) (string, error) {
			ts := unix.Timespec{Nsec: unix.UTIME_NOW}
			if g.Off != 0 {
				ts = unix.NsecToTimespec(g.Off)
			}
			return "", unix.UtimesNanoAt(unix.AT_FDCWD, c.path(g.Path), []unix.Timespec{ts, ts}, unix.AT_SYMLINK_NOFOLLOW)
		})
	case gSetxattr:
		return mk(func(c *opCtx) (string, error) { return "", unix.Lsetxattr(c.path(g.Path), g.Name, []byte(g.Data), 0) })
	case gRemovexattr:
		return mk(func(c *opCtx) (string, error) { return "", unix.Lremovexattr(c.path(g.Path), g.Name) })
	case gLink:
		return mk(func(c *opCtx) (string, error) { return "", unix.Link(c.path(g.Path), c.path(g.Path2)) })
	case gSymlink:
		return mk(func(c *opCtx) (string, error) { return "", unix.Symlink(g.Data, c.path(g.Path)) })
	case gMkdir:
		return mk(func(c *opCtx) (string, error) { return "", unix.Mkdir(c.path(g.Path), g.Mode) })
	case gRmdir:
		return mk(func(c *opCtx) (string, error) { return "", unix.Rmdir(c.path(g.Path)) })
	case gUnlink:
		return mk(func(c *opCtx) (string, error) { return "", unix.Unlink(c.path(g.Path)) })
	case gRename:
		return mk(func(c *opCtx) (string, error) {
			return "", unix.Renameat2(unix.AT_FDCWD, c.path(g.Path), unix.AT_FDCWD, c.path(g.Path2), uint(g.Flags))
		})
	case gMkfifo:
		return mk(func(c *opCtx) (string, error) { return "", unix.Mknod(c.path(g.Path), unix.S_IFIFO|g.Mode, 0) })
	case gOpen:
		return mk(func(c *opCtx) (string, error) {
			if old := c.files[g.Key]; old != nil {
				old.Close()
				delete(c.files, g.Key)
			}
			fd, err := unix.Open(c.path(g.Path), g.Flags|genOpenFlags, 0)
			if err != nil {
				return "", err
			}
			if c.files == nil {
				c.files = map[string]*os.File{}
			}
			c.files[g.Key] = os.NewFile(uintptr(fd), g.Path)
			return "", nil
		})
	case gPread:
		return fdOp(preadAll)
	case gPwrite:
		return fdOp(func(fd int) (string, error) { _, err := unix.Pwrite(fd, []byte(g.Data), g.Off); return "", err })
	case gFchmod:
		return fdOp(func(fd int) (string, error) { return "", unix.Fchmod(fd, g.Mode) })
	case gFsetxattr:
		return fdOp(func(fd int) (string, error) { return "", unix.Fsetxattr(fd, g.Name, []byte(g.Data), 0) })
	case gFchown:
		return fdOp(func(fd int) (string, error) { return "", unix.Fchown(fd, g.UID, g.GID) })
	case gFutimens:
		return fdOp(func(fd int) (string, error) {
			ts := unix.Timespec{Nsec: unix.UTIME_NOW}
			if g.Off != 0 {
				ts = unix.NsecToTimespec(g.Off)
			}
			return "", unix.UtimesNanoAt(fd, "", []unix.Timespec{ts, ts}, unix.AT_EMPTY_PATH)
		})
	case gFtruncate:
		return fdOp(func(fd int) (string, error) { return "", unix.Ftruncate(fd, g.Off) })
	case gFstat:
		return fdOp(func(fd int) (string, error) {
			var st unix.Stat_t
			if err := unix.Fstat(fd, &st); err != nil {
				return "", err
			}
			if st.Mode&unix.S_IFMT == unix.S_IFDIR {
				// Merged directories' nlink: an intended difference.
				return fmt.Sprintf("dir %04o", st.Mode&0o7777), nil
			}
			return fmt.Sprintf("%s %04o size=%d nlink=%d", fileType(st.Mode), st.Mode&0o7777, st.Size, st.Nlink), nil
		})
	case gFdSameIno:
		return mk(func(c *opCtx) (string, error) {
			f := c.files[g.Key]
			if f == nil {
				return "", fmt.Errorf("no open file %s", g.Key)
			}
			var a unix.Stat_t
			if err := unix.Fstat(int(f.Fd()), &a); err != nil {
				return "", err
			}
			b, err := lstatPath(c.path(g.Path))
			if err != nil {
				return "", err
			}
			if a.Ino == b.Ino && a.Dev == b.Dev {
				return "same", nil
			}
			return "different", nil
		})
	case gClose:
		return mk(func(c *opCtx) (string, error) {
			f := c.files[g.Key]
			if f == nil {
				return "", fmt.Errorf("no open file %s", g.Key)
			}
			delete(c.files, g.Key)
			return "", f.Close()
		})
	case gReaddirMut:
		return mk(g.readdirMut)
	case gStat:
		return opStat(g.Path)
	case gRead:
		return mk(func(c *opCtx) (string, error) {
			fd, err := unix.Open(c.path(g.Path), unix.O_RDONLY|genOpenFlags, 0)
			if err != nil {
				return "", err
			}
			defer unix.Close(fd)
			return preadAll(fd)
		})
	case gReaddir:
		return mk(func(c *opCtx) (string, error) {
			ents, err := os.ReadDir(c.path(g.Path))
			var names []string
			for _, e := range ents {
				if listedButMissing(filepath.Join(c.path(g.Path), e.Name())) {
					continue
				}
				names = append(names, e.Name())
			}
			return strings.Join(names, " "), err
		})
	case gReadlink:
		return opReadlink(g.Path)
	case gListxattr:
		return opListxattr(g.Path)
	}
	return mk(func(*opCtx) (string, error) { return "", fmt.Errorf("unknown op kind %q", g.Kind) })
}

// listedButMissing reports whether a name a directory listing gave does
// not exist: kernel overlayfs lists the whiteouts of a lower directory
// merged with nothing below (see seqResult.snapshot). Listings compared
// between the two filesystems leave such names out.
func listedButMissing(p string) bool {
	_, err := lstatPath(p)
	return err == unix.ENOENT
}

// preadAll reads fd from offset 0 to its end.
func preadAll(fd int) (string, error) {
	var b strings.Builder
	buf := make([]byte, 64*1024)
	for off := int64(0); ; {
		n, err := unix.Pread(fd, buf, off)
		if err != nil {
			return short(b.String()), err
		}
		if n == 0 {
			return short(b.String()), nil
		}
		b.Write(buf[:n])
		off += int64(n)
	}
}

// readdirMut lists directory g.Path with getdents, changing it half-way:
// g.Name (create, mkdir, unlink, rmdir or rename) on g.Path2 (renamed to
// g.Data). POSIX leaves unspecified whether the names changed meanwhile are
// listed; every other name must be listed exactly once. The result is that
// set of names, which must be the same on both filesystems, and the change's
// errno.
func (g genOp) readdirMut(c *opCtx) (string, error) {
	dir := c.path(g.Path)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	defer unix.Close(fd)
	buf := make([]byte, 400) // room for at least one entry, not many
	n, err := unix.Getdents(fd, buf)
	if err != nil {
		return "", fmt.Errorf("first getdents: %w", err)
	}
	seen := parseDirents(buf[:n])
	a, b := filepath.Join(dir, g.Path2), filepath.Join(dir, g.Data)
	var mutErr error
	switch g.Name {
	case gCreate:
		var mfd int
		if mfd, mutErr = unix.Open(a, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|genOpenFlags, 0o644); mutErr == nil {
			unix.Close(mfd)
		}
	case gMkdir:
		mutErr = unix.Mkdir(a, 0o755)
	case gUnlink:
		mutErr = unix.Unlink(a)
	case gRmdir:
		mutErr = unix.Rmdir(a)
	case gRename:
		mutErr = unix.Rename(a, b)
	}
	rest, err := readDirents(fd, 8192)
	if err != nil {
		return "", fmt.Errorf("getdents after %s: %w", g.Name, err)
	}
	count := map[string]int{}
	for _, e := range append(seen, rest...) {
		if e.name != g.Path2 && e.name != g.Data && !listedButMissing(filepath.Join(dir, e.name)) {
			count[e.name]++
		}
	}
	var names []string
	for _, name := range sortedKeys(count) {
		if count[name] == 1 {
			names = append(names, name)
		} else {
			names = append(names, fmt.Sprintf("%s(x%d)", name, count[name]))
		}
	}
	return fmt.Sprintf("%s: %s", errText(mutErr, c.mnt), strings.Join(names, " ")), nil
}

// copyTree copies the tree at src (a merged mount) to dst, a new directory
// on the backing filesystem: types, contents, symlink targets, hard links,
// modes, owners, xattrs and times. It is the ext4 reference a run compares
// with. Names src lists but cannot stat (see listedButMissing) are skipped.
func copyTree(src, dst string) error {
	links := map[uint64]string{} // source inode -> first copy, for hard links
	var dirs []string            // to set times on after their contents
	var walk func(rel string) error
	walk = func(rel string) error {
		sp, dp := filepath.Join(src, rel), filepath.Join(dst, rel)
		st, err := lstatPath(sp)
		if err != nil {
			if err == unix.ENOENT && rel != "." {
				return nil
			}
			return err
		}
		switch st.Mode & unix.S_IFMT {
		case unix.S_IFDIR:
			if err := os.Mkdir(dp, 0o700); err != nil {
				return err
			}
			names, err := readNames(sp)
			if err != nil {
				return err
			}
			for _, name := range names {
				if err := walk(joinRel(rel, name)); err != nil {
					return err
				}
			}
			dirs = append(dirs, rel)
		case unix.S_IFREG:
			if first, ok := links[st.Ino]; ok && st.Nlink > 1 {
				return os.Link(filepath.Join(dst, first), dp)
			}
			links[st.Ino] = rel
			b, err := os.ReadFile(sp)
			if err != nil {
				return err
			}
			if err := os.WriteFile(dp, b, 0o600); err != nil {
				return err
			}
		case unix.S_IFLNK:
			target, err := os.Readlink(sp)
			if err != nil {
				return err
			}
			if err := os.Symlink(target, dp); err != nil {
				return err
			}
		default:
			if first, ok := links[st.Ino]; ok && st.Nlink > 1 {
				return os.Link(filepath.Join(dst, first), dp)
			}
			links[st.Ino] = rel
			if err := unix.Mknod(dp, st.Mode&unix.S_IFMT|0o600, int(st.Rdev)); err != nil {
				return err
			}
		}
		if err := unix.Lchown(dp, int(st.Uid), int(st.Gid)); err != nil {
			return err
		}
		if st.Mode&unix.S_IFMT != unix.S_IFLNK {
			if err := unix.Chmod(dp, st.Mode&0o7777); err != nil {
				return err
			}
		}
		xattrs, err := listXattrs(sp)
		if err != nil {
			return err
		}
		for _, name := range sortedKeys(xattrs) {
			if err := unix.Lsetxattr(dp, name, []byte(xattrs[name]), 0); err != nil {
				return fmt.Errorf("%s: setxattr %s: %w", dp, name, err)
			}
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return setTimes(dp, &st)
		}
		return nil
	}
	if err := walk("."); err != nil {
		return err
	}
	for _, dir := range dirs { // in post-order: children before parents
		st, err := lstatPath(filepath.Join(src, dir))
		if err != nil {
			return err
		}
		if err := setTimes(filepath.Join(dst, dir), &st); err != nil {
			return err
		}
	}
	return nil
}

func setTimes(p string, st *unix.Stat_t) error {
	return unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{st.Atim, st.Mtim}, unix.AT_SYMLINK_NOFOLLOW)
}

// readNames lists a directory, "." and ".." left out.
func readNames(dir string) ([]string, error) {
	f, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	names, err := f.Readdirnames(-1)
	sort.Strings(names)
	return names, err
}
