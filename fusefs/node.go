// Package fusefs serves a union.Union through the kernel's FUSE interface
// with go-fuse's fs package. It translates requests into engine calls and
// engine errors into errnos; it holds no union logic of its own.
//
// A Node is one inode of the mount. It keeps the union stack (union.Entry)
// found when it was looked up; its union path is taken from go-fuse's tree
// at each request, since renames of ancestors change it.
//
// Lock order: Node.mu, then fileHandle.mu (Release holds both). Neither is
// held across a call into the engine, except Node.mu across ThroughIndex (a
// lookup that takes only the engine's leaf locks), so the engine's locks
// (union's package comment) never wait on them.
package fusefs

import (
	"context"
	"errors"
	"hash/fnv"
	"log/slog"
	"sync"
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

	mu sync.Mutex
	e  savedEntry // the union stack; its path is not kept: see entry()
	// gen is the union's copy-up generation when e.upper was last known
	// false: while it is unchanged, nothing can have been copied up.
	gen uint64
	// files are the node's open handles; nil when there are none (as for
	// most nodes: the kernel keeps a node for every entry it has seen).
	files *openFiles
	// skipped counts the names of this directory that READDIRPLUS did not
	// look up and no LOOKUP has asked for since (see plusPolicy).
	skipped int32
	// counted: the node counts against max_entries (see residency).
	counted bool
	// seen is a hash of the size and mtime last reported for a file whose
	// data is below, 0 before the first: when they change, a lower file
	// was changed behind our back and the kernel's cached pages are
	// dropped (see noteLower).
	seen uint64
}

// openFiles are the open handles of a node.
type openFiles struct {
	// lower are the open read-only handles on the lower file, to be
	// switched to the upper copy when the file is copied up.
	lower map[*fileHandle]bool
	// plain and pass count open handles without and with passthrough: the
	// kernel refuses to mix the two on one inode.
	plain, pass int
	// all are all open handles, for operations on a node that has no name
	// any more.
	all map[*fileHandle]bool
}

// What a Node implements.
var (
	_ = (fs.NodeLookuper)((*Node)(nil))
	_ = (fs.NodeGetattrer)((*Node)(nil))
	_ = (fs.NodeStatxer)((*Node)(nil))
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

// entry returns a copy of the node's union stack with the current path. An
// object may have been copied up through another node (as the parent of a
// new file): if any copy-up happened since the node last looked, it looks
// again. A node of a lower file with several names looks every time.
//
// A node with no name any more (an unlinked file still open, a removed
// directory) has no path: go-fuse would give the root's. Path operations on
// it fail with ENOENT; those with a descriptor use the open file instead.
func (n *Node) entry() (*union.Entry, syscall.Errno) { return n.entryFor(false) }

// entryFor is entry for a request that copies the object up before it
// changes it (change true): a copy-up checks itself, under its lock,
// whether it happened meanwhile, so the look for copy-ups elsewhere is
// left out.
func (n *Node) entryFor(change bool) (*union.Entry, syscall.Errno) {
	path := n.Path(nil)
	n.mu.Lock()
	e := n.e.entry(path)
	// The names of an indexed inode share this node but not their state.
	// An upper object's state changes only through this node (a
	// metadata-only copy's data is completed by its own requests, which
	// save what they did; a rename looks the moved node up again).
	stale := (!e.Upper && !change && n.gen != n.u.CopyUpGen()) || e.Index != ""
	n.mu.Unlock()
	if e.Path == "" && !n.IsRoot() {
		return e, syscall.ENOENT
	}
	if stale {
		gen := n.u.CopyUpGen()
		n.u.Refresh(e)
		n.save(e)
		n.mu.Lock()
		if !n.e.upper {
			n.gen = gen
		}
		n.mu.Unlock()
	}
	return e, 0
}

// dataUpper reports whether e's data is in upper (copied up, and not a
// metadata-only copy).
func dataUpper(e *union.Entry) bool { return e.Upper && !e.MetaCopy }

// save keeps what an engine call learnt about the node. When the node's
// data has just been copied up, its open read-only lower files switch to
// the copy. It reports whether the node's real object changed (a copy-up
// of the object or of its data makes a new one).
//
// The kernel keeps the birth time it was last told until it asks again
// (statx): a new real object has a new one, so it is told to ask.
func (n *Node) save(e *union.Entry) (replaced bool) {
	n.mu.Lock()
	copiedUp := dataUpper(e) && !n.e.dataUpper()
	replaced = copiedUp || (e.Upper && !n.e.upper)
	n.e.save(e)
	var files []*fileHandle
	if copiedUp && n.files != nil {
		for f := range n.files.lower {
			files = append(files, f)
		}
		n.files.lower = nil
	}
	n.mu.Unlock()
	if replaced {
		// Attributes only (offset -1): no page locks, safe inside a request.
		n.NotifyContent(-1, 0)
	}
	for _, f := range files {
		if f.readFd >= 0 {
			// Opened for writing on the metadata-only copy: reopen the
			// complete one with the same flags.
			fd, err := n.u.Open(e, f.flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC))
			if err != nil {
				slog.Warn("reopen after copy-up", "path", e.Path, "err", err)
				continue
			}
			f.finishPending(fd)
			continue
		}
		fd, err := n.u.Open(e, unix.O_RDONLY)
		if err != nil {
			slog.Warn("reopen after copy-up", "path", e.Path, "err", err)
			continue
		}
		f.switchTo(fd)
	}
	return replaced
}

// newFile wraps fd, opened on the node's data: with passthrough for data in
// upper (or anywhere on a union without upper) unless plain handles are
// open on the node, else plain (and, on lower data, registered to be
// switched when the data is copied up).
func (n *Node) newFile(fd int, e *union.Entry) fs.FileHandle {
	f := &fileHandle{fd: fd, readFd: -1}
	n.mu.Lock()
	defer n.mu.Unlock()
	of := n.register(f)
	// Through the index, a name still below reads the upper inode too.
	// Without an upper nothing is ever copied up: lower files pass
	// through as well.
	if (dataUpper(e) || n.u.ThroughIndex(e) || n.u.ReadOnly()) && of.plain == 0 {
		of.pass++
		return &passthroughFile{f}
	}
	of.plain++
	if !dataUpper(e) {
		f.lower = true
		of.addLower(f)
	}
	return f
}

// newPendingFile wraps a handle opened for writing on a metadata-only copy
// (see union.OpenDeferred): it reads from rfd until its first write.
func (n *Node) newPendingFile(wfd, rfd, flags int) fs.FileHandle {
	f := &fileHandle{fd: wfd, readFd: rfd, node: n, flags: flags}
	n.mu.Lock()
	defer n.mu.Unlock()
	of := n.register(f)
	of.plain++
	of.addLower(f)
	return f
}

// completeData copies up the node's data.
func (n *Node) completeData() syscall.Errno {
	e, en := n.entry()
	if en != 0 {
		return en
	}
	err := n.u.CopyUpData(e)
	n.save(e)
	return errno(err)
}

// Release forgets a closed handle.
func (n *Node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	n.mu.Lock()
	defer n.mu.Unlock()
	var h *fileHandle
	switch f := f.(type) {
	case *passthroughFile:
		h = f.fileHandle
		if n.files != nil {
			n.files.pass--
		}
	case *fileHandle:
		h = f
		if n.files != nil {
			n.files.plain--
			delete(n.files.lower, h)
		}
	default:
		return 0
	}
	if n.files != nil {
		delete(n.files.all, h)
		if len(n.files.all) == 0 {
			n.files = nil
		}
	}
	return h.Release(ctx)
}

// register notes an open handle and returns the node's open files.
// Preconditions: n.mu is held.
func (n *Node) register(f *fileHandle) *openFiles {
	if n.files == nil {
		n.files = &openFiles{all: map[*fileHandle]bool{}}
	}
	n.files.all[f] = true
	return n.files
}

// addLower notes an open handle on the lower file.
func (of *openFiles) addLower(f *fileHandle) {
	if of.lower == nil {
		of.lower = map[*fileHandle]bool{}
	}
	of.lower[f] = true
}

// openFile returns the handle of f, or else any open handle of the node,
// for operations on the open file; nil if there is none.
func (n *Node) openFile(f fs.FileHandle) *fileHandle {
	switch h := f.(type) {
	case *fileHandle:
		return h
	case *passthroughFile:
		return h.fileHandle
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.files == nil {
		return nil
	}
	for h := range n.files.all {
		return h
	}
	return nil
}

// child registers the node for e under n, or refreshes the one the kernel
// already knows with the same inode number.
//
// gen is the copy-up generation read before e was looked up (see Node.gen).
func (n *Node) child(ctx context.Context, e *union.Entry, st *unix.Stat_t, out *fuse.EntryOut, gen uint64) *fs.Inode {
	if e.Merged() {
		if full, err := n.u.Stat(e); err == nil {
			st.Nlink = full.Nlink
		}
	}
	c := &Node{mount: n.mount, gen: gen}
	c.e.save(e)
	// Names of one inode share a node (lower hard links stay one inode
	// after copy-up: see union/index.go).
	id := fs.StableAttr{Mode: e.Mode, Ino: e.Ino}
	in := n.NewInode(ctx, c, id)
	if in.Operations() == c {
		c.noteLower(e, st)
		if e.Mode != unix.S_IFDIR {
			c.counted = true
			n.resident.add(in)
		}
	}
	if old, ok := in.Operations().(*Node); ok && old != c {
		old.noteLower(e, st)
		if collides(old, e) {
			// Two visible objects with one inode number (an origin whose
			// lower file is visible elsewhere too, after layers were
			// changed offline): give this name a node of its own.
			h := fnv.New64a()
			h.Write([]byte(e.Path))
			id.Gen = h.Sum64() | 1
			c = &Node{mount: n.mount, gen: gen}
			c.e.save(e)
			in = n.NewInode(ctx, c, id)
			old, _ = in.Operations().(*Node)
		}
		if old != c {
			old.save(e)
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
	if n.IsDir() {
		n.removed.Delete(n)
	}
}

// keepRemoved is called before c, a name of this directory, is removed
// or replaced. A directory can still be asked for its attributes after
// that (fstat of a descriptor open on it, the working directory of a
// process), which then have a link count of 0, as on ext4 and kernel
// overlayfs (generic/035); the returned function keeps them if the
// removal was done.
func (n *Node) keepRemoved(c *fs.Inode) func(err error) {
	if c == nil || !c.IsDir() {
		return func(error) {}
	}
	cn, ok := c.Operations().(*Node)
	if !ok {
		return func(error) {}
	}
	e, en := cn.entry()
	if en != 0 {
		return func(error) {}
	}
	st, err := n.u.Stat(e)
	return func(removeErr error) {
		if err == nil && removeErr == nil {
			st.Nlink = 0
			n.removed.Store(cn, st)
		}
	}
}

// collides reports whether e, found under another name than old's, is
// another object than old's although it has the same inode number.
// Several names of one object are normal (hard links: indexed lower ones,
// upper ones, which then share the real inode).
func collides(old *Node, e *union.Entry) bool {
	old.mu.Lock()
	oldIndex, oldReal := old.e.index(), old.e.real
	old.mu.Unlock()
	if e.IsDir() || oldIndex != "" || e.Index != "" || oldReal == e.Real || oldReal == [2]uint64{} {
		return false
	}
	return old.Path(nil) != e.Path
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
	n.mu.Lock()
	skipped := n.skipped > 0
	if skipped {
		n.skipped--
	}
	n.mu.Unlock()
	if skipped {
		n.plus.noteAsked()
	}
	return n.lookup(ctx, name, out)
}

// lookup looks name up in the directory.
func (n *Node) lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, en
	}
	// Nothing copied up after this needs no second look (see entry).
	gen := n.u.CopyUpGen()
	e, st, err := n.u.Lookup(pe, name)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, e, &st, out, gen), 0
}

// Getattr reports the merged attributes.
func (n *Node) Getattr(ctx context.Context, f fs.FileHandle, out *fuse.AttrOut) syscall.Errno {
	e, en := n.entry()
	if en == 0 {
		st, err := n.u.Stat(e)
		if err == nil {
			n.noteLower(e, &st)
			fillAttr(&out.Attr, &st)
			return 0
		}
		en = errno(err)
	}
	if st, ok := n.removed.Load(n); ok {
		st := st.(unix.Stat_t)
		fillAttr(&out.Attr, &st)
		return 0
	}
	// Unlinked but still open: ask the descriptor.
	h := n.openFile(f)
	if h == nil {
		return en
	}
	if en := h.Getattr(ctx, out); en != 0 {
		return en
	}
	out.Ino = e.Ino
	h.mu.RLock()
	below := h.lower || h.readFd >= 0
	h.mu.RUnlock()
	if below {
		// The lower file keeps its links, but the union shows no name.
		out.Nlink = 0
	}
	out.Nlink = uint32(n.u.IndexNlink(e, uint64(out.Nlink)))
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
	var bt unix.StatxTimestamp
	var ok bool
	if e, en := n.entry(); en == 0 {
		bt, ok, _ = n.u.Btime(e)
	} else if h := n.openFile(f); h != nil {
		// Unlinked but still open: ask the descriptor.
		var st unix.Statx_t
		h.mu.RLock()
		err := unix.Statx(h.fd, "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &st)
		h.mu.RUnlock()
		bt, ok = st.Btime, err == nil && st.Mask&unix.STATX_BTIME != 0
	}
	if ok {
		sx.Mask |= unix.STATX_BTIME
		sx.Btime.FromStatxTimestamp(&bt)
	}
	return 0
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
	e, en := n.entryFor(true)
	if en != 0 {
		// Unlinked but still open: change the open file.
		h := n.openFile(f)
		if h == nil {
			return en
		}
		if en := h.setattrFd(n.u, e.Index, a); en != 0 {
			return en
		}
		return n.Getattr(ctx, h, out)
	}
	err := n.u.SetAttr(e, a)
	replaced := n.save(e)
	if err != nil {
		return errno(err)
	}
	if en := n.Getattr(ctx, f, out); en != 0 {
		return en
	}
	// go-fuse sets no timeout on a SETATTR reply: without one the kernel
	// asks again (GETATTR) at the next stat, chown or open. After a
	// copy-up it must ask again, for the copy's birth time (see save).
	if !replaced {
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
	e, en := n.entryFor(flags&syscall.O_ACCMODE != syscall.O_RDONLY || flags&syscall.O_TRUNC != 0)
	if en != 0 {
		return n.reopen(e, flags, en)
	}
	if flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		// A write-open that may never write (touch) copies no data yet.
		wfd, rfd, ok, err := n.u.OpenDeferred(e, int(flags))
		n.save(e)
		if err != nil {
			return nil, 0, errno(err)
		}
		if ok {
			return n.newPendingFile(wfd, rfd, int(flags)), fuse.FOPEN_KEEP_CACHE, 0
		}
	}
	fd, err := n.u.Open(e, int(flags))
	n.save(e)
	if err != nil {
		return nil, 0, errno(err)
	}
	// Every write goes through this mount, so cached pages stay right
	// across opens (and across a copy-up, which keeps the contents).
	return n.newFile(fd, e), fuse.FOPEN_KEEP_CACHE, 0
}

// reopen opens a node with no name (through /proc/self/fd/N of an open
// file, say) by reopening an open handle's descriptor; en is the error if
// there is none.
func (n *Node) reopen(e *union.Entry, flags uint32, en syscall.Errno) (fs.FileHandle, uint32, syscall.Errno) {
	h := n.openFile(nil)
	if h == nil {
		return nil, 0, en
	}
	h.mu.RLock()
	src, lower := h.dataFd(), h.lower || h.readFd >= 0
	h.mu.RUnlock()
	if lower && flags&syscall.O_ACCMODE != syscall.O_RDONLY {
		return nil, 0, syscall.EROFS
	}
	fd, err := unix.Open(layer.ProcFd(src), int(flags)&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_NOCTTY)|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, 0, errno(err)
	}
	re := *e
	re.Upper, re.MetaCopy = !lower, false
	return n.newFile(fd, &re), fuse.FOPEN_KEEP_CACHE, 0
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
	c.e.save(e)
	in := n.NewInode(ctx, c, fs.StableAttr{Mode: e.Mode, Ino: e.Ino})
	fillAttr(&out.Attr, &st)
	return in, in.Operations().(*Node).newFile(fd, e), fuse.FOPEN_KEEP_CACHE, 0
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
	child := n.child(ctx, e, &st, out, 0)
	return child, child.Operations().(*Node).newFile(fd, e), fuse.FOPEN_KEEP_CACHE, 0
}

// OpendirHandle lists the merged directory, with "." and "..", once per
// open. The kernel may cache the listing: every change to it goes through
// the kernel, which drops its cache when it makes one, and the order and
// offsets of a listing do not depend on what was copied up (see
// dirHandle), which the kernel does not see as changes of the directory.
func (n *Node) OpendirHandle(ctx context.Context, flags uint32) (fs.FileHandle, uint32, syscall.Errno) {
	return &dirHandle{n: n}, fuse.FOPEN_CACHE_DIR | fuse.FOPEN_KEEP_CACHE, 0
}

// listing is the merged listing: "." and "..", then the names in the
// order of their offsets (see dirHandle).
func (n *Node) listing() ([]fuse.DirEntry, syscall.Errno) {
	e, en := n.entry()
	if en != 0 {
		return nil, 0 // removed while open: empty, as on ext4
	}
	ents, err := n.u.ReadDir(e)
	if err != nil {
		return nil, errno(err)
	}
	parentIno := e.Ino
	if _, p := n.Parent(); p != nil {
		parentIno = p.StableAttr().Ino
	}
	list := make([]fuse.DirEntry, 0, len(ents)+2)
	list = append(list,
		fuse.DirEntry{Name: ".", Mode: unix.S_IFDIR, Ino: e.Ino, Off: dotOff},
		fuse.DirEntry{Name: "..", Mode: unix.S_IFDIR, Ino: parentIno, Off: dotDotOff})
	for _, d := range ents {
		list = append(list, fuse.DirEntry{Name: d.Name, Mode: d.Mode, Ino: d.Ino})
	}
	sortByCookie(list[2:])
	return list, 0
}

// Mkdir makes a directory (opaque where a whiteout stood).
func (n *Node) Mkdir(ctx context.Context, name string, mode uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, en
	}
	e, st, err := n.u.Mkdir(pe, name, mode, caller(ctx))
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, e, &st, out, 0), 0
}

// Mknod makes a device, fifo or socket.
func (n *Node) Mknod(ctx context.Context, name string, mode uint32, dev uint32, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, en
	}
	e, st, err := n.u.Mknod(pe, name, mode, uint64(dev), caller(ctx))
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, e, &st, out, 0), 0
}

// Symlink makes a symlink.
func (n *Node) Symlink(ctx context.Context, target, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	pe, en := n.entry()
	if en != 0 {
		return nil, en
	}
	e, st, err := n.u.Symlink(pe, name, target, caller(ctx))
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, e, &st, out, 0), 0
}

// Link makes a hard link to target, copying it up first.
func (n *Node) Link(ctx context.Context, target fs.InodeEmbedder, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	src, ok := target.(*Node)
	if !ok {
		return nil, syscall.EXDEV
	}
	pe, en := n.entry()
	if en != 0 {
		return nil, en
	}
	se, en := src.entry()
	if en != 0 {
		// No name (O_TMPFILE, or unlinked while open): link the open file.
		h := src.openFile(nil)
		if h == nil {
			return nil, en
		}
		h.mu.RLock()
		fd, lower := h.fd, h.lower
		h.mu.RUnlock()
		if lower {
			return nil, syscall.EXDEV
		}
		e, st, err := n.u.LinkFd(fd, pe, name)
		if err != nil {
			return nil, errno(err)
		}
		return n.child(ctx, e, &st, out, 0), 0
	}
	e, st, err := n.u.Link(se, pe, name)
	src.save(se)
	if err != nil {
		return nil, errno(err)
	}
	return n.child(ctx, e, &st, out, 0), 0
}

// Readlink reads a symlink's target.
func (n *Node) Readlink(ctx context.Context) ([]byte, syscall.Errno) {
	e, en := n.entry()
	if en != 0 {
		return nil, en
	}
	t, err := n.u.Readlink(e)
	if err != nil {
		return nil, errno(err)
	}
	return []byte(t), 0
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
	kept := n.keepRemoved(n.GetChild(name))
	err := n.u.Rmdir(e, name)
	kept(err)
	return errno(err)
}

// Rename moves name to newName in newParent.
func (n *Node) Rename(ctx context.Context, name string, newParent fs.InodeEmbedder, newName string, flags uint32) syscall.Errno {
	np, ok := newParent.(*Node)
	if !ok {
		return syscall.EXDEV
	}
	moved, replaced := n.GetChild(name), np.GetChild(newName)
	oe, en := n.entry()
	if en != 0 {
		return en
	}
	ne, en := np.entry()
	if en != 0 {
		return en
	}
	kept := func(error) {}
	if flags&unix.RENAME_EXCHANGE == 0 {
		kept = np.keepRemoved(replaced)
	}
	err := n.u.Rename(oe, name, ne, newName, flags)
	kept(err)
	if err != nil {
		return errno(err)
	}
	// The moved objects now live in upper, under their new names: their
	// nodes learn it now, not at their next lookup, since they may be open.
	refresh := func(c *fs.Inode, parent *Node, name string) {
		if c == nil {
			return
		}
		cn, ok := c.Operations().(*Node)
		if !ok {
			return
		}
		pe, en := parent.entry()
		if en != 0 {
			return
		}
		if e, _, err := n.u.Lookup(pe, name); err == nil && e.Ino == cn.StableAttr().Ino {
			cn.save(e)
		}
	}
	refresh(moved, np, newName)
	if flags&unix.RENAME_EXCHANGE != 0 {
		refresh(replaced, n, name)
	}
	return 0
}

// Getxattr reads an extended attribute.
func (n *Node) Getxattr(ctx context.Context, attr string, dest []byte) (uint32, syscall.Errno) {
	e, en := n.entry()
	if en != 0 {
		var sz int
		en = n.xattrFd(en, false, attr, func(fd int) (err error) {
			sz, err = unix.Fgetxattr(fd, attr, dest)
			return err
		})
		return uint32(sz), en
	}
	sz, err := n.u.Getxattr(e, attr, dest)
	return uint32(sz), errno(err)
}

// Setxattr sets an extended attribute, copying up first.
func (n *Node) Setxattr(ctx context.Context, attr string, data []byte, flags uint32) syscall.Errno {
	e, en := n.entry()
	if en != 0 {
		return n.xattrFd(en, true, attr, func(fd int) error { return unix.Fsetxattr(fd, attr, data, int(flags)) })
	}
	err := n.u.Setxattr(e, attr, data, int(flags))
	n.save(e)
	return errno(err)
}

// Removexattr removes an extended attribute, copying up first.
func (n *Node) Removexattr(ctx context.Context, attr string) syscall.Errno {
	e, en := n.entry()
	if en != 0 {
		return n.xattrFd(en, true, attr, func(fd int) error { return unix.Fremovexattr(fd, attr) })
	}
	err := n.u.Removexattr(e, attr)
	n.save(e)
	return errno(err)
}

// Listxattr lists extended attribute names.
func (n *Node) Listxattr(ctx context.Context, dest []byte) (uint32, syscall.Errno) {
	var names []string
	e, en := n.entry()
	if en != 0 {
		en = n.xattrFd(en, false, "", func(fd int) error {
			all, err := layer.ListxattrFd(fd)
			for _, a := range all {
				if !n.u.Format().IsPrivate(a) {
					names = append(names, a)
				}
			}
			return err
		})
		if en != 0 {
			return 0, en
		}
	} else {
		var err error
		if names, err = n.u.Listxattr(e); err != nil {
			return 0, errno(err)
		}
	}
	sz := 0
	for _, s := range names {
		sz += len(s) + 1
	}
	if len(dest) == 0 {
		return uint32(sz), 0
	}
	if len(dest) < sz {
		return uint32(sz), syscall.ERANGE
	}
	off := 0
	for _, s := range names {
		off += copy(dest[off:], s)
		dest[off] = 0
		off++
	}
	return uint32(sz), 0
}

// xattrFd runs an xattr call on an open handle of a node with no name; en
// is the error if there is none. Overlay's own attributes stay hidden.
func (n *Node) xattrFd(en syscall.Errno, write bool, attr string, op func(fd int) error) syscall.Errno {
	h := n.openFile(nil)
	if h == nil {
		return en
	}
	if attr != "" && n.u.Format().IsPrivate(attr) {
		if write {
			return syscall.EPERM
		}
		return syscall.ENODATA
	}
	n.mu.Lock()
	key := n.e.index()
	n.mu.Unlock()
	return h.xattrFd(n.u, key, write, op)
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
