package e2e

// Tree snapshots taken through a mount, raw snapshots of upper directories
// and fingerprints of lower directories, and readable diffs of each.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Node is what a snapshot records for one path.
type Node struct {
	Type     string // file, dir, symlink, fifo, chardev, blockdev, socket
	Mode     uint32 // permission bits with suid, sgid and sticky
	UID, GID uint32
	Size     int64  // not for directories (their size is the backing fs's)
	Hash     string // of a regular file's content
	Target   string // of a symlink
	Nlink    uint64 // of a non-directory
	DirNlink uint64 // of a directory; compared separately (see dirNlinkDiffs)
	Rdev     string // major:minor of a device
	Xattrs   map[string]string
	Mtime    time.Time
	Ino      uint64   // not compared across filesystems; see Links
	Links    []string // the other names of this inode in the tree
}

// Tree maps a path relative to the snapshot root ("." for the root) to its
// node.
type Tree map[string]Node

func fileType(mode uint32) string {
	switch mode & unix.S_IFMT {
	case unix.S_IFREG:
		return "file"
	case unix.S_IFDIR:
		return "dir"
	case unix.S_IFLNK:
		return "symlink"
	case unix.S_IFIFO:
		return "fifo"
	case unix.S_IFCHR:
		return "chardev"
	case unix.S_IFBLK:
		return "blockdev"
	case unix.S_IFSOCK:
		return "socket"
	}
	return fmt.Sprintf("type%o", mode&unix.S_IFMT)
}

// shownXattr says which xattr names a snapshot records: the ones a user
// works with. system.* (ACLs) are left out.
func shownXattr(name string) bool {
	return strings.HasPrefix(name, "user.") || strings.HasPrefix(name, "trusted.") || strings.HasPrefix(name, "security.")
}

// snapshot records every path under root (walked through whatever is
// mounted there).
func snapshot(t *testing.T, root string) Tree {
	t.Helper()
	tree, errs := snapshotErrs(root)
	for _, e := range errs {
		t.Errorf("%s", e)
	}
	return tree
}

// snapshotErrs is snapshot returning what it could not read.
func snapshotErrs(root string) (Tree, []string) {
	tree := Tree{}
	var errs []string
	var walk func(rel string)
	walk = func(rel string) {
		p := filepath.Join(root, rel)
		n, err := statNode(p)
		if err != nil {
			errs = append(errs, fmt.Sprintf("snapshot %s: %v", p, err))
			return
		}
		tree[rel] = n
		if n.Type != "dir" {
			return
		}
		ents, err := os.ReadDir(p)
		if err != nil {
			errs = append(errs, fmt.Sprintf("snapshot: readdir %s: %v", p, err))
			return
		}
		for _, e := range ents {
			walk(joinRel(rel, e.Name()))
		}
	}
	walk(".")
	byIno := map[uint64][]string{}
	for p, n := range tree {
		if n.Type != "dir" && n.Nlink > 1 {
			byIno[n.Ino] = append(byIno[n.Ino], p)
		}
	}
	for _, paths := range byIno {
		if len(paths) < 2 {
			continue
		}
		sort.Strings(paths)
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
	return tree, errs
}

func statNode(p string) (Node, error) {
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return Node{}, err
	}
	n := Node{
		Type:  fileType(st.Mode),
		Mode:  st.Mode & 0o7777,
		UID:   st.Uid,
		GID:   st.Gid,
		Mtime: time.Unix(st.Mtim.Sec, st.Mtim.Nsec),
		Ino:   st.Ino,
	}
	if n.Type == "dir" {
		n.DirNlink = uint64(st.Nlink)
	} else {
		n.Nlink = uint64(st.Nlink)
		n.Size = st.Size
	}
	switch n.Type {
	case "file":
		h, err := hashFile(p)
		if err != nil {
			return n, err
		}
		n.Hash = h
	case "symlink":
		target, err := os.Readlink(p)
		if err != nil {
			return n, err
		}
		n.Target = target
	case "chardev", "blockdev":
		n.Rdev = fmt.Sprintf("%d:%d", unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
	xattrs, err := listXattrs(p)
	if err != nil {
		return n, err
	}
	for name, v := range xattrs {
		if shownXattr(name) {
			if n.Xattrs == nil {
				n.Xattrs = map[string]string{}
			}
			n.Xattrs[name] = v
		}
	}
	return n, nil
}

func hashFile(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// listXattrs returns all xattrs of p (not following symlinks).
func listXattrs(p string) (map[string]string, error) {
	names, err := xattrNames(p)
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for _, name := range names {
		v, err := getXattr(p, name)
		if err != nil {
			return nil, fmt.Errorf("getxattr %s %s: %w", p, name, err)
		}
		out[name] = v
	}
	return out, nil
}

func xattrNames(p string) ([]string, error) {
	sz, err := unix.Llistxattr(p, nil)
	if err != nil {
		if err == unix.ENOTSUP {
			return nil, nil
		}
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	if sz == 0 {
		return nil, nil
	}
	buf := make([]byte, sz)
	sz, err = unix.Llistxattr(p, buf)
	if err != nil {
		return nil, fmt.Errorf("listxattr %s: %w", p, err)
	}
	var names []string
	for _, name := range strings.Split(string(buf[:sz]), "\x00") {
		if name != "" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	return names, nil
}

func getXattr(p, name string) (string, error) {
	sz, err := unix.Lgetxattr(p, name, nil)
	if err != nil {
		return "", err
	}
	buf := make([]byte, sz)
	sz, err = unix.Lgetxattr(p, name, buf)
	if err != nil {
		return "", err
	}
	return string(buf[:sz]), nil
}

// diffOpts tunes diffTrees.
type diffOpts struct {
	// freshAfter: an mtime at or after it is "set by the test run"; two
	// such mtimes count as equal (the two mounts do the same operation a
	// few milliseconds apart). Older mtimes (the layers') must be equal to
	// the nanosecond. Zero compares every mtime exactly.
	freshAfter time.Time
	// volatile paths: size and content not compared.
	volatile func(path string) bool
}

// diffTrees lists every difference between two snapshots, one readable line
// each, naming the sides aName and bName. Directory link counts are not
// compared (see dirNlinkDiffs).
func diffTrees(aName string, a Tree, bName string, b Tree, o diffOpts) []string {
	var out []string
	for _, p := range allKeys(a, b) {
		na, inA := a[p]
		nb, inB := b[p]
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("%s: only in %s (%s)", p, bName, describe(nb)))
			continue
		case !inB:
			out = append(out, fmt.Sprintf("%s: only in %s (%s)", p, aName, describe(na)))
			continue
		}
		add := func(what string, va, vb any) {
			out = append(out, fmt.Sprintf("%s: %s: %s=%v %s=%v", p, what, aName, va, bName, vb))
		}
		if na.Type != nb.Type {
			add("type", na.Type, nb.Type)
			continue
		}
		if na.Mode != nb.Mode {
			add("mode", fmt.Sprintf("%04o", na.Mode), fmt.Sprintf("%04o", nb.Mode))
		}
		if na.UID != nb.UID || na.GID != nb.GID {
			add("owner", fmt.Sprintf("%d:%d", na.UID, na.GID), fmt.Sprintf("%d:%d", nb.UID, nb.GID))
		}
		if o.volatile == nil || !o.volatile(p) {
			if na.Size != nb.Size {
				add("size", na.Size, nb.Size)
			}
			if na.Hash != nb.Hash {
				add("content hash", na.Hash, nb.Hash)
			}
		}
		if na.Target != nb.Target {
			add("symlink target", na.Target, nb.Target)
		}
		if na.Nlink != nb.Nlink {
			add("nlink", na.Nlink, nb.Nlink)
		}
		if na.Rdev != nb.Rdev {
			add("rdev", na.Rdev, nb.Rdev)
		}
		if xa, xb := fmtXattrs(na.Xattrs), fmtXattrs(nb.Xattrs); xa != xb {
			add("xattrs", xa, xb)
		}
		if la, lb := strings.Join(na.Links, ","), strings.Join(nb.Links, ","); la != lb {
			add("hard links", "["+la+"]", "["+lb+"]")
		}
		if !na.Mtime.Equal(nb.Mtime) {
			fresh := !o.freshAfter.IsZero() && !na.Mtime.Before(o.freshAfter) && !nb.Mtime.Before(o.freshAfter)
			if !fresh {
				add("mtime", fmtTime(na.Mtime), fmtTime(nb.Mtime))
			}
		}
	}
	return out
}

// dirNlinkDiffs lists directories whose link counts differ. Kept apart from
// diffTrees: kernel overlayfs reports nlink=1 for a merged directory (one
// that has both an upper and a lower, the root included) while unionmount
// reports the real count, so a difference here is only a failure where
// neither side reports 1.
func dirNlinkDiffs(aName string, a Tree, bName string, b Tree) (real, merged []string) {
	for _, p := range sortedKeys(a) {
		na, nb := a[p], b[p]
		if na.Type != "dir" || nb.Type != "dir" || na.DirNlink == nb.DirNlink {
			continue
		}
		line := fmt.Sprintf("%s: dir nlink: %s=%d %s=%d", p, aName, na.DirNlink, bName, nb.DirNlink)
		if na.DirNlink == 1 || nb.DirNlink == 1 {
			merged = append(merged, line)
		} else {
			real = append(real, line)
		}
	}
	return real, merged
}

func describe(n Node) string {
	switch n.Type {
	case "file":
		return fmt.Sprintf("file %04o size %d", n.Mode, n.Size)
	case "symlink":
		return "symlink -> " + n.Target
	case "chardev", "blockdev":
		return n.Type + " " + n.Rdev
	}
	return fmt.Sprintf("%s %04o", n.Type, n.Mode)
}

func fmtXattrs(m map[string]string) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s=%q", k, m[k]))
	}
	return "{" + strings.Join(parts, " ") + "}"
}

func fmtTime(tm time.Time) string { return tm.UTC().Format("2006-01-02T15:04:05.000000000") }

// reportDiff fails t with every line of diff under a heading.
func reportDiff(t *testing.T, heading string, diff []string) {
	t.Helper()
	if len(diff) == 0 {
		return
	}
	const max = 60
	extra := ""
	if len(diff) > max {
		extra = fmt.Sprintf("\n  ... and %d more", len(diff)-max)
		diff = diff[:max]
	}
	t.Errorf("%s: %d difference(s):\n  %s%s", heading, len(diff), strings.Join(diff, "\n  "), extra)
}

// privateXattrPaths lists paths whose snapshot shows an overlay-private
// xattr, which must never show through a mount.
func privateXattrPaths(tree Tree) []string {
	var out []string
	for _, p := range sortedKeys(tree) {
		for name := range tree[p].Xattrs {
			if isPrivateXattr(name) {
				out = append(out, fmt.Sprintf("%s: shows %s", p, name))
			}
		}
	}
	sort.Strings(out)
	return out
}

func isPrivateXattr(name string) bool {
	return strings.HasPrefix(name, "trusted.overlay.") || strings.HasPrefix(name, "user.overlay.")
}

// RawNode is what the raw upper comparison records: only what the on-disk
// format fixes. Contents are left out on purpose: a metadata-only copy-up may
// legitimately hold no data (SPEC §4, kernel metacopy).
type RawNode struct {
	Type     string
	Whiteout bool   // character device 0:0
	Mode     uint32 // of whiteouts only
	Opaque   string // overlay.opaque value
	Redirect string // overlay.redirect value
}

// rawUpper records every path of an upper directory on disk.
func rawUpper(t *testing.T, upper string) map[string]RawNode {
	t.Helper()
	out := map[string]RawNode{}
	err := filepath.Walk(upper, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		var st unix.Stat_t
		if err := unix.Lstat(p, &st); err != nil {
			return err
		}
		rel, _ := filepath.Rel(upper, p)
		n := RawNode{Type: fileType(st.Mode)}
		if n.Type == "chardev" && st.Rdev == 0 {
			n.Whiteout = true
			n.Mode = st.Mode & 0o7777
		}
		if n.Type == "dir" {
			n.Opaque = overlayXattr(p, "opaque")
			n.Redirect = overlayXattr(p, "redirect")
		}
		out[rel] = n
		return nil
	})
	if err != nil {
		t.Errorf("reading upper %s: %v", upper, err)
	}
	return out
}

// overlayXattr reads overlay.NAME in either namespace (trusted. as root,
// user. with userxattr).
func overlayXattr(p, name string) string {
	for _, ns := range []string{"trusted.overlay.", "user.overlay."} {
		if v, err := getXattr(p, ns+name); err == nil {
			return v
		}
	}
	return ""
}

// diffUppers compares two raw uppers made from the same lowers. An opaque
// marker only counts where the lowers would show a directory at that path
// (stack.lowerDirVisible): elsewhere it hides nothing, and the kernel sets it
// in cases where it is not needed (on a new upper directory moved into a
// merged one; on a directory made where a lower layer's whiteout stands,
// which keeps hiding what is below).
func diffUppers(aName string, a map[string]RawNode, bName string, b map[string]RawNode, s *stack) []string {
	var out []string
	for _, p := range allKeys(a, b) {
		na, inA := a[p]
		nb, inB := b[p]
		desc := func(n RawNode) string {
			if n.Whiteout {
				return "whiteout"
			}
			return n.Type
		}
		switch {
		case !inA:
			out = append(out, fmt.Sprintf("upper %s: only in %s (%s)", p, bName, desc(nb)))
			continue
		case !inB:
			out = append(out, fmt.Sprintf("upper %s: only in %s (%s)", p, aName, desc(na)))
			continue
		}
		add := func(what string, va, vb any) {
			out = append(out, fmt.Sprintf("upper %s: %s: %s=%v %s=%v", p, what, aName, va, bName, vb))
		}
		if desc(na) != desc(nb) {
			add("type", desc(na), desc(nb))
			continue
		}
		if na.Whiteout && na.Mode != nb.Mode {
			add("whiteout mode", fmt.Sprintf("%04o", na.Mode), fmt.Sprintf("%04o", nb.Mode))
		}
		if na.Opaque != nb.Opaque && s.lowerDirVisible(p) {
			add("opaque xattr", fmt.Sprintf("%q", na.Opaque), fmt.Sprintf("%q", nb.Opaque))
		}
		if na.Redirect != nb.Redirect {
			add("redirect xattr", fmt.Sprintf("%q", na.Redirect), fmt.Sprintf("%q", nb.Redirect))
		}
	}
	return out
}

// fingerprint records everything about the given directories that a write
// would change (ctime included), to prove lowers are never written. It reads
// with O_NOATIME so that it does not disturb checkLowerAtimes.
func fingerprint(t *testing.T, dirs ...string) map[string]string {
	t.Helper()
	out := map[string]string{}
	for i, dir := range dirs {
		err := walkNoatime(dir, ".", func(rel string, st *unix.Stat_t) error {
			p := filepath.Join(dir, rel)
			s := fmt.Sprintf("mode=%o uid=%d gid=%d nlink=%d rdev=%x mtime=%d.%09d ctime=%d.%09d",
				st.Mode, st.Uid, st.Gid, st.Nlink, st.Rdev, st.Mtim.Sec, st.Mtim.Nsec, st.Ctim.Sec, st.Ctim.Nsec)
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFDIR:
			case unix.S_IFREG:
				h, err := hashFileNoatime(p)
				if err != nil {
					return err
				}
				s += fmt.Sprintf(" size=%d hash=%s", st.Size, h)
			default:
				// Not a symlink's target: readlink(2) updates atime
				// whatever the flags. Its size stands in for it.
				s += fmt.Sprintf(" size=%d", st.Size)
			}
			x, err := listXattrs(p)
			if err != nil {
				return err
			}
			s += " xattrs=" + fmtXattrs(x)
			out[fmt.Sprintf("lower%d/%s", i, rel)] = s
			return nil
		})
		if err != nil {
			t.Fatalf("fingerprint %s: %v", dir, err)
		}
	}
	return out
}

// walkNoatime calls fn for rel under root and everything below it, reading
// directories with O_NOATIME.
func walkNoatime(root, rel string, fn func(rel string, st *unix.Stat_t) error) error {
	p := filepath.Join(root, rel)
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err
	}
	if err := fn(rel, &st); err != nil {
		return err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFDIR {
		return nil
	}
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	f := os.NewFile(uintptr(fd), p)
	names, err := f.Readdirnames(-1)
	f.Close()
	if err != nil {
		return err
	}
	sort.Strings(names)
	for _, name := range names {
		if err := walkNoatime(root, joinRel(rel, name), fn); err != nil {
			return err
		}
	}
	return nil
}

func hashFileNoatime(p string) (string, error) {
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_NOATIME|unix.O_CLOEXEC, 0)
	if err != nil {
		return "", err
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// diffFingerprints lists the paths whose fingerprint changed.
func diffFingerprints(before, after map[string]string) []string {
	var out []string
	keys := map[string]bool{}
	for k := range before {
		keys[k] = true
	}
	for k := range after {
		keys[k] = true
	}
	for _, k := range sortedKeys(keys) {
		if before[k] != after[k] {
			out = append(out, fmt.Sprintf("%s:\n    before: %s\n    after:  %s", k, before[k], after[k]))
		}
	}
	return out
}

// dirEntries lists the names in dir on disk (not through a mount).
func dirEntries(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil && !os.IsNotExist(err) {
		t.Fatalf("readdir %s: %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}
