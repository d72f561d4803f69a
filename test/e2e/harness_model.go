package e2e

// A model of a directory tree, for the crash torture: what a subtree of a
// mount must show after a sequence of operations, compared with what it
// shows. Models are immutable values: every change makes a new one (maps
// copied, file contents shared), so an operation can keep the state before
// and after each of its steps.

import (
	"bytes"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"golang.org/x/sys/unix"
)

// tInode is one object of a model. Never changed once in a model.
type tInode struct {
	kind     byte // 'f' file, 'd' directory, 'l' symlink
	data     []byte
	target   string
	perm     uint32
	uid, gid int
	xattrs   map[string]string // user.* only
}

// tModel maps paths (relative to a root, which is not in the map) to
// inodes; hard links are paths with the same inode.
type tModel struct {
	paths  map[string]int
	inodes map[int]*tInode
}

func newTModel() *tModel { return &tModel{paths: map[string]int{}, inodes: map[int]*tInode{}} }

func (m *tModel) clone() *tModel {
	return &tModel{paths: maps.Clone(m.paths), inodes: maps.Clone(m.inodes)}
}

// with returns a copy of m in which fn changed the inode of path p.
func (m *tModel) with(p string, fn func(*tInode)) *tModel {
	n := m.clone()
	id := n.paths[p]
	in := *n.inodes[id]
	in.xattrs = maps.Clone(in.xattrs)
	fn(&in)
	n.inodes[id] = &in
	return n
}

func (m *tModel) kind(p string) byte {
	if id, ok := m.paths[p]; ok {
		return m.inodes[id].kind
	}
	return 0
}

func (m *tModel) inode(p string) *tInode { return m.inodes[m.paths[p]] }

// sortedPaths lists the paths of m whose inode kind is in kinds ("" for
// all).
func (m *tModel) sortedPaths(kinds string) []string {
	var out []string
	for p, id := range m.paths {
		if kinds == "" || strings.IndexByte(kinds, m.inodes[id].kind) >= 0 {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

// children lists the paths directly in dir ("" for the root).
func (m *tModel) children(dir string) []string {
	var out []string
	for p := range m.paths {
		if parentRel(p) == dir {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func parentRel(p string) string {
	if i := strings.LastIndexByte(p, '/'); i >= 0 {
		return p[:i]
	}
	return ""
}

func joinModel(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// under reports whether p is d or inside it.
func under(p, d string) bool { return p == d || strings.HasPrefix(p, d+"/") }

// removePath drops p (and, for a directory, everything under it) and the
// inodes no path names any more.
func (m *tModel) removePath(p string) {
	for q := range m.paths {
		if under(q, p) {
			delete(m.paths, q)
		}
	}
	m.gc()
}

func (m *tModel) gc() {
	used := map[int]bool{}
	for _, id := range m.paths {
		used[id] = true
	}
	for id := range m.inodes {
		if !used[id] {
			delete(m.inodes, id)
		}
	}
}

// movePath renames p (with its subtree) to q, replacing what q held.
func (m *tModel) movePath(p, q string) {
	moved := map[string]int{}
	for r, id := range m.paths {
		if under(r, p) {
			moved[q+strings.TrimPrefix(r, p)] = id
			delete(m.paths, r)
		}
	}
	for r := range m.paths {
		if under(r, q) {
			delete(m.paths, r)
		}
	}
	maps.Copy(m.paths, moved)
	m.gc()
}

// exchange swaps p and q with their subtrees.
func (m *tModel) exchange(p, q string) {
	a, b := map[string]int{}, map[string]int{}
	for r, id := range m.paths {
		switch {
		case under(r, p):
			a[q+strings.TrimPrefix(r, p)] = id
			delete(m.paths, r)
		case under(r, q):
			b[p+strings.TrimPrefix(r, q)] = id
			delete(m.paths, r)
		}
	}
	maps.Copy(m.paths, a)
	maps.Copy(m.paths, b)
}

// obsNode is what a path showed.
type obsNode struct {
	st     unix.Stat_t
	data   []byte
	target string
	xattrs map[string]string
}

// observe reads the tree under root (through a mount): every path, its
// stat, file contents, symlink targets and user.* xattrs.
func observe(root string) (map[string]obsNode, error) {
	out := map[string]obsNode{}
	var walk func(rel string) error
	walk = func(rel string) error {
		dir := filepath.Join(root, rel)
		ents, err := os.ReadDir(dir)
		if err != nil {
			return err
		}
		for _, e := range ents {
			r := joinModel(rel, e.Name())
			p := filepath.Join(root, r)
			var n obsNode
			if err := unix.Lstat(p, &n.st); err != nil {
				return fmt.Errorf("lstat %q: %w", r, err)
			}
			switch n.st.Mode & unix.S_IFMT {
			case unix.S_IFREG:
				if n.data, err = os.ReadFile(p); err != nil {
					return fmt.Errorf("read %q: %w", r, err)
				}
			case unix.S_IFLNK:
				if n.target, err = os.Readlink(p); err != nil {
					return fmt.Errorf("readlink %q: %w", r, err)
				}
			}
			x, err := listXattrs(p)
			if err != nil {
				return fmt.Errorf("xattrs %q: %w", r, err)
			}
			n.xattrs = map[string]string{}
			for k, v := range x {
				if strings.HasPrefix(k, "user.") {
					n.xattrs[k] = v
				}
			}
			out[r] = n
			if n.st.Mode&unix.S_IFMT == unix.S_IFDIR {
				if err := walk(r); err != nil {
					return err
				}
			}
		}
		return nil
	}
	return out, walk("")
}

// diff lists how obs differs from m (at most max lines).
func (m *tModel) diff(obs map[string]obsNode, max int) []string {
	var out []string
	add := func(format string, args ...any) {
		if len(out) < max {
			out = append(out, fmt.Sprintf(format, args...))
		}
	}
	kinds := map[uint32]byte{unix.S_IFREG: 'f', unix.S_IFDIR: 'd', unix.S_IFLNK: 'l'}
	for _, p := range m.sortedPaths("") {
		in := m.inode(p)
		o, ok := obs[p]
		if !ok {
			add("%q: missing (want %c)", p, in.kind)
			continue
		}
		if k := kinds[o.st.Mode&unix.S_IFMT]; k != in.kind {
			add("%q: is %s, want %c", p, fileType(o.st.Mode), in.kind)
			continue
		}
		switch in.kind {
		case 'f':
			if !bytes.Equal(o.data, in.data) {
				add("%q: content %s, want %s", p, describeData(o.data, in.data), describeData(in.data, nil))
			}
		case 'l':
			if o.target != in.target {
				add("%q: symlink to %q, want %q", p, o.target, in.target)
			}
		}
		if in.kind != 'l' && o.st.Mode&0o7777 != in.perm {
			add("%q: mode %04o, want %04o", p, o.st.Mode&0o7777, in.perm)
		}
		if int(o.st.Uid) != in.uid || int(o.st.Gid) != in.gid {
			add("%q: owner %d:%d, want %d:%d", p, o.st.Uid, o.st.Gid, in.uid, in.gid)
		}
		if in.kind != 'l' && !maps.Equal(o.xattrs, in.xattrs) && !(len(o.xattrs) == 0 && len(in.xattrs) == 0) {
			add("%q: xattrs %v, want %v", p, o.xattrs, in.xattrs)
		}
	}
	var extra []string
	for p := range obs {
		if _, ok := m.paths[p]; !ok {
			extra = append(extra, p)
		}
	}
	sort.Strings(extra)
	for _, p := range extra {
		o := obs[p]
		add("%q: unexpected %s (size %d)", p, fileType(o.st.Mode), o.st.Size)
	}
	// Hard links: the paths of one model inode are one inode, with that
	// many links; different model inodes are different inodes.
	groups := map[int][]string{}
	for _, p := range m.sortedPaths("fl") {
		if _, ok := obs[p]; ok {
			groups[m.paths[p]] = append(groups[m.paths[p]], p)
		}
	}
	owner := map[uint64]int{}
	ids := make([]int, 0, len(groups))
	for id := range groups {
		ids = append(ids, id)
	}
	sort.Ints(ids)
	for _, id := range ids {
		paths := groups[id]
		first := obs[paths[0]].st
		for _, p := range paths {
			st := obs[p].st
			if st.Ino != first.Ino {
				add("%q and %q: different inodes (%d, %d), want one (hard links)", paths[0], p, first.Ino, st.Ino)
			}
			if m.inode(p).kind == 'f' && st.Nlink != uint64(len(paths)) {
				add("%q: %d links, want %d (%v)", p, st.Nlink, len(paths), paths)
			}
		}
		if prev, ok := owner[first.Ino]; ok && prev != id {
			add("%q: same inode %d as another, unrelated file", paths[0], first.Ino)
		}
		owner[first.Ino] = id
	}
	return out
}

// describeData says how got differs from want, or, with want nil, what
// got is.
func describeData(got, want []byte) string {
	if want == nil {
		return fmt.Sprintf("%d bytes %s", len(got), shortHash(got))
	}
	i := 0
	for i < len(got) && i < len(want) && got[i] == want[i] {
		i++
	}
	zeros := len(got) > 0 && bytes.Count(got, []byte{0}) == len(got)
	s := fmt.Sprintf("%d bytes %s, first difference at %d", len(got), shortHash(got), i)
	if zeros {
		s += " (all zeros)"
	}
	return s
}

func shortHash(b []byte) string { return hashString(string(b))[:12] }
