// Package fusefs serves a union.Union through the kernel's FUSE interface
// with go-fuse's fs package. It translates requests into engine calls and
// engine errors into errnos; it holds no union logic of its own.
//
// A Node is one inode of the mount. It holds the engine's state of the
// object (union.Node), which engine calls keep up to date themselves; its
// union path is taken from go-fuse's tree at each request, since renames of
// ancestors change it. Open files are the engine's too (union.File).
//
// The lock order is the engine's (union/lock.go): a node's counters are
// atomic, and the only lock held across an engine call is an open
// directory's, outermost.
package fusefs

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync/atomic"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/union"
)

// Node is an inode of the union mount.
type Node struct {
	fs.Inode
	*mount

	// un is the engine's state of the object.
	un union.Node
	// plain counts the open handles without passthrough (see newFile).
	plain atomic.Int32
	// skipped counts the names of this directory that READDIRPLUS did not
	// look up and no LOOKUP has asked for since (see plusPolicy).
	skipped atomic.Int32
	// counted: the node counts against max_entries (see residency).
	counted bool
	// seen is a hash of the size and mtime last reported for a file whose
	// data is below, 0 before the first: when they change, a lower file
	// was changed behind our back and the kernel's cached pages are
	// dropped (see noteLower).
	// 32 bits are enough to notice a change, and keep the node small.
	seen atomic.Uint32
}

// What a Node implements.
var (
	_ = (fs.NodeLookuper)((*Node)(nil))
	_ = (fs.NodeGetattrer)((*Node)(nil))
	_ = (fs.NodeStatxer)((*Node)(nil))
	_ = (fs.NodeIoctler)((*Node)(nil))
	_ = (fs.NodeSetattrer)((*Node)(nil))
	_ = (fs.NodeOpener)((*Node)(nil))
	_ = (fs.NodeCreater)((*Node)(nil))
	_ = (fs.NodeTmpfiler)((*Node)(nil))
	_ = (fs.NodeOpendirHandler)((*Node)(nil))
	_ = (fs.NodeMkdirer)((*Node)(nil))
	_ = (fs.NodeMknoder)((*Node)(nil))
	_ = (fs.NodeSymlinker)((*Node)(nil))
	_ = (fs.NodeLinker)((*Node)(nil))
	_ = (fs.NodeReadlinker)((*Node)(nil))
	_ = (fs.NodeUnlinker)((*Node)(nil))
	_ = (fs.NodeRmdirer)((*Node)(nil))
	_ = (fs.NodeRenamer)((*Node)(nil))
	_ = (fs.NodeGetxattrer)((*Node)(nil))
	_ = (fs.NodeSetxattrer)((*Node)(nil))
	_ = (fs.NodeRemovexattrer)((*Node)(nil))
	_ = (fs.NodeListxattrer)((*Node)(nil))
	_ = (fs.NodeStatfser)((*Node)(nil))
	_ = (fs.NodeReleaser)((*Node)(nil))
	_ = (fs.NodeOnForgetter)((*Node)(nil))
)

// The node is the engine's handle on its object (union.Ref).
var _ = (union.Ref)((*Node)(nil))

// UnionNode is the engine's state of the node's object.
func (n *Node) UnionNode() *union.Node { return &n.un }

// UnionPath is the node's union path, from go-fuse's tree; ok is false
// when it has none: an unlinked file still open, a removed directory
// (go-fuse would give the root's path).
func (n *Node) UnionPath() (path string, ok bool) {
	path = n.Path(nil)
	return path, path != "" || n.IsRoot()
}

// entry returns the node's union stack (ENOENT when it has no name).
func (n *Node) entry() (*union.Entry, syscall.Errno) {
	e, err := n.u.Entry(n)
	return e, errno(err)
}

// child registers the node for e under n, or updates the one the kernel
// already knows with the same inode number.
func (n *Node) child(ctx context.Context, e *union.Entry, st *unix.Stat_t, out *fuse.EntryOut) *fs.Inode {
	if e.Merged() {
		if full, err := n.u.Stat(e); err == nil {
			st.Nlink = full.Nlink
		}
	}
	c := &Node{mount: n.mount}
	c.un.Init(e)
	// Names of one inode share a node (lower hard links stay one inode
	// after copy-up: see union/index.go).
	id := fs.StableAttr{Mode: e.Mode, Ino: e.Ino}
	in := n.NewInode(ctx, c, id)
	if in.Operations() == c {
		c.noteLower(st)
		if e.Mode != unix.S_IFDIR {
			c.counted = true
			n.resident.add(in)
		}
	}
	if old, ok := in.Operations().(*Node); ok && old != c {
		if !old.un.SameObject(old.Path(nil), e) {
			// Two visible objects with one inode number: give this name
			// a node of its own.
			h := fnv.New64a()
			h.Write([]byte(e.Path))
			if n.nfsExport {
				// The inode number is the node ID: another one.
				id.Ino = h.Sum64() | 1<<63
			} else {
				id.Gen = h.Sum64() | 1
			}
			c = &Node{mount: n.mount}
			c.un.Init(e)
			in = n.NewInode(ctx, c, id)
			old, _ = in.Operations().(*Node)
		}
		if old != c {
			replaced := old.watchCopyUp()
			old.un.Found(e)
			replaced()
			old.noteLower(st)
		}
	}
	fillAttr(&out.Attr, st)
	return in
}

// OnForget: the kernel forgot the node (a file node counts against
// max_entries while it holds it).
func (n *Node) OnForget() {
	if n.counted {
		n.resident.forgot()
	}
	n.u.Forget(&n.un)
}

func caller(ctx context.Context) union.Owner {
	if c, ok := fuse.FromContext(ctx); ok {
		return union.Owner{Uid: c.Uid, Gid: c.Gid}
	}
	return union.Owner{Uid: uint32(unix.Geteuid()), Gid: uint32(unix.Getegid())}
}

// errno maps an engine error to the errno the kernel gets.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	slog.Error("unexpected error", "err", err)
	return syscall.EIO
}

func fillAttr(a *fuse.Attr, st *unix.Stat_t) {
	a.Ino = st.Ino
	a.Size = uint64(st.Size)
	a.Blocks = uint64(st.Blocks)
	a.Atime, a.Atimensec = uint64(st.Atim.Sec), uint32(st.Atim.Nsec)
	a.Mtime, a.Mtimensec = uint64(st.Mtim.Sec), uint32(st.Mtim.Nsec)
	a.Ctime, a.Ctimensec = uint64(st.Ctim.Sec), uint32(st.Ctim.Nsec)
	a.Mode = st.Mode
	a.Nlink = uint32(st.Nlink)
	a.Uid, a.Gid = st.Uid, st.Gid
	a.Rdev = uint32(st.Rdev)
	a.Blksize = uint32(st.Blksize)
}

// Lookup finds name in this directory.
func (n *Node) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	for c := n.skipped.Load(); c > 0; c = n.skipped.Load() {
		if n.skipped.CompareAndSwap(c, c-1) {
			n.plus.noteAsked()
			break
		}
	}
	return n.lookup(ctx, name, out)
}

// lookup looks name up in the directory.
func (n *Node) lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, en
	}
	e, st, err := n.u.Lookup(pe, name)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, e, &st, out), 0
}

// Getattr reports the merged attributes.
func (n *Node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	st, err := n.u.Getattr(n, file(f))
	if err != nil {
		return errno(err)
	}
	n.noteLower(&st)
	fillAttr(&out.Attr, &st)
	return 0
}

// Statx is Getattr with the birth time of the real object (statx(2) asks
// for it; kernel overlayfs reports the real file's).
func (n *Node) Statx(ctx context.Context, f fs.FileHandle, flags uint32, mask uint32, out *fuse.StatxOut) syscall.Errno {
	var ao fuse.AttrOut
	if en := n.Getattr(ctx, f, &ao); en != 0 {
		return en
	}
	a, sx := &ao.Attr, &out.Statx
	sx.Mask = unix.STATX_BASIC_STATS
	sx.Ino, sx.Size, sx.Blocks, sx.Blksize = a.Ino, a.Size, a.Blocks, a.Blksize
	sx.Mode, sx.Nlink, sx.Uid, sx.Gid = uint16(a.Mode), a.Nlink, a.Uid, a.Gid
	sx.Atime = fuse.SxTime{Sec: a.Atime, Nsec: a.Atimensec}
	sx.Mtime = fuse.SxTime{Sec: a.Mtime, Nsec: a.Mtimensec}
	sx.Ctime = fuse.SxTime{Sec: a.Ctime, Nsec: a.Ctimensec}
	sx.RdevMajor, sx.RdevMinor = unix.Major(uint64(a.Rdev)), unix.Minor(uint64(a.Rdev))
	if mask&unix.STATX_BTIME == 0 {
		return 0
	}
	if bt, ok := n.u.Btime(n, file(f)); ok {
		sx.Mask |= unix.STATX_BTIME
		sx.Btime.FromStatxTimestamp(&bt)
	}
	return 0
}

// Ioctl serves the inode flag ioctls (chattr, lsattr; see
// union.FlagIoctl), which the kernel sends on a file or directory after
// checking ownership and CAP_LINUX_IMMUTABLE; others are not supported.
func (n *Node) Ioctl(ctx context.Context, f fs.FileHandle, cmd uint32, arg uint64, input []byte, output []byte) (int32, syscall.Errno) {
	size := union.FlagIoctlSize(cmd)
	if size == 0 {
		return 0, syscall.ENOTTY
	}
	set := cmd == union.IocSetFlags || cmd == union.IocFsSetXattr
	buf := make([]byte, size)
	if set {
		copy(buf, input)
		defer n.watchCopyUp()()
	}
	err := n.u.FlagIoctl(n, cmd, buf)
	if !set {
		copy(output, buf)
	}
	return 0, errno(err)
}

// Setattr changes attributes, copying up first.
func (n *Node) Setattr(ctx context.Context, f fs.FileHandle, in *fuse.SetAttrIn, out *fuse.AttrOut) syscall.Errno {
	var a union.SetAttr
	if m, ok := in.GetMode(); ok {
		a.Mode = &m
	}
	if uid, ok := in.GetUID(); ok {
		a.Uid = &uid
	}
	if gid, ok := in.GetGID(); ok {
		a.Gid = &gid
	}
	if sz, ok := in.GetSize(); ok {
		s := int64(sz)
		a.Size = &s
	}
	a.Atime = setTime(in.Valid, fuse.FATTR_ATIME, fuse.FATTR_ATIME_NOW, in.Atime, in.Atimensec)
	a.Mtime = setTime(in.Valid, fuse.FATTR_MTIME, fuse.FATTR_MTIME_NOW, in.Mtime, in.Mtimensec)
	replaced := n.watchCopyUp()
	if err := n.u.SetAttr(n, file(f), a); err != nil {
		replaced()
		return errno(err)
	}
	if en := n.Getattr(ctx, f, out); en != 0 {
		return en
	}
	// go-fuse sets no timeout on a SETATTR reply: without one the kernel
	// asks again (GETATTR) at the next stat, chown or open. After a
	// copy-up it must ask again, for the copy's birth time.
	if !replaced() {
		out.SetTimeout(n.attrTimeout)
	}
	return 0
}

func setTime(valid, set, now uint32, sec uint64, nsec uint32) *unix.Timespec {
	if valid&set == 0 {
		return nil
	}
	if valid&now != 0 {
		return &unix.Timespec{Nsec: unix.UTIME_NOW}
	}
	return &unix.Timespec{Sec: int64(sec), Nsec: int64(nsec)}
}

// Open opens the file; writing copies it up first.
func (n *Node) Open(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	defer n.watchCopyUp()()
	f, err := n.u.OpenFile(n, int(flags))
	if err != nil {
		return nil, 0, errno(err)
	}
	// Every write goes through this mount, so cached pages stay right
	// across opens (and across a copy-up, which keeps the contents).
	return n.newFile(f), fuse.FOPEN_KEEP_CACHE, 0
}

// Tmpfile makes and opens an unnamed regular file (O_TMPFILE).
func (n *Node) Tmpfile(ctx context.Context, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, nil, 0, en
	}
	e, st, fd, err := n.u.Tmpfile(pe, int(flags), mode, caller(ctx))
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	c := &Node{mount: n.mount}
	c.un.Init(e)
	in := n.NewInode(ctx, c, fs.StableAttr{Mode: e.Mode, Ino: e.Ino})
	fillAttr(&out.Attr, &st)
	cn := in.Operations().(*Node)
	return in, cn.newFile(n.u.NewFile(cn, e, fd, int(flags))), fuse.FOPEN_KEEP_CACHE, 0
}

// Create makes and opens a new regular file.
func (n *Node) Create(ctx context.Context, name string, flags uint32, mode uint32, out *fuse.EntryOut) (*fs.Inode, fs.FileHandle, uint32, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, nil, 0, en
	}
	e, st, fd, err := n.u.Create(pe, name, int(flags), mode, caller(ctx))
	if err != nil {
		return nil, nil, 0, errno(err)
	}
	child := n.child(ctx, e, &st, out)
	cn := child.Operations().(*Node)
	return child, cn.newFile(n.u.NewFile(cn, e, fd, int(flags))), fuse.FOPEN_KEEP_CACHE, 0
}

// OpendirHandle lists the merged directory, with "." and "..", once per
// open. The kernel may cache the listing: every change to it goes through
// the kernel, which drops its cache when it makes one, and the order and
// offsets of a listing do not depend on what was copied up (see
// dirHandle), which the kernel does not see as changes of the directory.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// listing is the merged listing (see union.Listing).
func (n *Node) listing() ([]fuse.DirEntry, syscall.Errno) {
	e, en := n.entry()
	if en != 0 {
		return nil, 0 // removed while open: empty, as on ext4
	}
	parentIno := e.Ino
	if _, p := n.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	ents, err := n.u.Listing(e, parentIno)
	if err != nil {
		return nil, errno(err)
	}
	list := make([]fuse.DirEntry, len(ents))
	for i, d := range ents {
		list[i] = fuse.DirEntry{Name: d.Name, Mode: d.Mode, Ino: d.Ino, Off: d.Off}
	}
	return list, 0
}

// Mkdir makes a directory (opaque where a whiteout stood).
func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.made(ctx, out, func(pe *union.Entry) (*union.Entry, unix.Stat_t, error) {
		return n.u.Mkdir(pe, name, mode, caller(ctx))
	})
}

// Mknod makes a device, fifo or socket.
func (n *Node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.made(ctx, out, func(pe *union.Entry) (*union.Entry, unix.Stat_t, error) {
		return n.u.Mknod(pe, name, mode, uint64(dev), caller(ctx))
	})
}

// Symlink makes a symlink.
func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	return n.made(ctx, out, func(pe *union.Entry) (*union.Entry, unix.Stat_t, error) {
		return n.u.Symlink(pe, name, target, caller(ctx))
	})
}

// Link makes a hard link to target, copying it up first.
func (n *Node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	src, ok := target.(*Node)
	if !ok {
		return nil, syscall.EXDEV
	}
	defer src.watchCopyUp()()
	return n.made(ctx, out, func(pe *union.Entry) (*union.Entry, unix.Stat_t, error) {
		return n.u.Link(src, pe, name)
	})
}

// made registers the object that mk made in this directory (given as pe).
func (n *Node) made(ctx context.Context, out *fuse.EntryOut, mk func(pe *union.Entry) (*union.Entry, unix.Stat_t, error)) (*fs.Inode, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, en
	}
	e, st, err := mk(pe)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, e, &st, out), 0
}

// Readlink reads a symlink's target.
func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	t, err := n.u.Readlink(n)
	return []byte(t), errno(err)
}

// Unlink removes a non-directory, leaving a whiteout if a lower has it.
func (n *Node) Unlink(ctx context.Context, name string) syscall.Errno {
	e, en := n.entry()
	if en != 0 {
		return en
	}
	return errno(n.u.Unlink(e, name))
}

// Rmdir removes an empty (merged) directory.
func (n *Node) Rmdir(ctx context.Context, name string) syscall.Errno {
	e, en := n.entry()
	if en != 0 {
		return en
	}
	return errno(n.u.Rmdir(e, name, nodeOf(n.GetChild(name)).engine()))
}

// Rename moves name to newName in newParent.
func (n *Node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok {
		return syscall.EXDEV
	}
	oe, en := n.entry()
	if en != 0 {
		return en
	}
	ne, en := np.entry()
	if en != 0 {
		return en
	}
	moved, replaced := n.GetChild(name), np.GetChild(newName)
	m, r := nodeOf(moved), nodeOf(replaced)
	for _, c := range []*Node{m, r} {
		if c != nil {
			defer c.watchCopyUp()()
		}
	}
	return errno(n.u.Rename(oe, name, ne, newName, flags, m.engine(), r.engine()))
}

// nodeOf is the node of in, or nil.
func nodeOf(in *fs.Inode) *Node {
	if in == nil {
		return nil
	}
	n, _ := in.Operations().(*Node)
	return n
}

// engine is the engine's node of n, or nil if n is nil.
func (n *Node) engine() *union.Node {
	if n == nil {
		return nil
	}
	return &n.un
}

// Getxattr reads an extended attribute.
func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	sz, err := n.u.Getxattr(n, attr, dest)
	return uint32(sz), errno(err)
}

// Setxattr sets an extended attribute, copying up first.
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	defer n.watchCopyUp()()
	return errno(n.u.Setxattr(n, attr, data, int(flags)))
}

// Removexattr removes an extended attribute, copying up first.
func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	defer n.watchCopyUp()()
	return errno(n.u.Removexattr(n, attr))
}

// Listxattr lists extended attribute names.
func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	names, err := n.u.Listxattr(n)
	if err != nil {
		return 0, errno(err)
	}
	sz, err := layer.PackNames(names, dest)
	return uint32(sz), errno(err)
}

// Statfs reports the upper filesystem's space.
func (n *Node) Statfs(ctx context.Context, out *fuse.StatfsOut) syscall.Errno {
	st, err := n.u.Statfs()
	if err != nil {
		return errno(err)
	}
	out.Blocks, out.Bfree, out.Bavail = st.Blocks, st.Bfree, st.Bavail
	out.Files, out.Ffree = st.Files, st.Ffree
	out.Bsize, out.Frsize = uint32(st.Bsize), uint32(st.Frsize)
	out.NameLen = uint32(st.Namelen)
	return 0
}
