package union

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Operations on an object with no name any more (unlinked while open, or
// made by O_TMPFILE): its path is gone, its open files are not. Each works
// through an open file of the node, the one given if not nil; with none it
// fails with ENOENT. A lower file is never written: before the first
// change, an open lower file is copied into an unnamed upper one (see
// detach).

// errClosed says the open file an operation picked was closed meanwhile.
var errClosed = errors.New("open file closed meanwhile")

// withFile runs op on f, or, with f nil, on any open file of n (ENOENT
// with none). Another request's Close may close the file picked while op
// starts: op then returns errClosed (the file's fd is -1 under its lock)
// and another file of n is tried, Close having taken that one out of n's
// files first. Such a race must not come out as EBADF, which stat(2) and
// open(2) never return (issue 14 item 4: open(O_TRUNC) racing rename and
// unlink). op holds f.mu while it uses the descriptor, so that it stays
// open: its number could name another file once closed.
func (n *Node) withFile(f *File, op func(f *File) error) error {
	for {
		g := n.anyFile(f)
		if g == nil {
			return unix.ENOENT
		}
		err := op(g)
		if !errors.Is(err, errClosed) {
			return err
		}
		if f != nil {
			return unix.ENOENT
		}
	}
}

// held runs op on f's descriptor with f.mu held for reading, so that it
// stays open meanwhile: errClosed if f was closed, EROFS if op is a change
// (write) and the descriptor is of a lower file.
func (f *File) held(write bool, op func(fd int) error) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	switch {
	case f.fd < 0:
		return errClosed
	case write && f.below:
		return unix.EROFS
	}
	return op(f.fd)
}

// anyFile returns f if it is not nil, else an open file of n; nil if n
// has none.
func (n *Node) anyFile(f *File) *File {
	if f != nil {
		return f
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	for f := range n.files {
		return f
	}
	return nil
}

// statUnnamed returns the attributes of n's object through an open file,
// or, for a directory removed while the kernel still holds it, its last
// attributes (see keepRemoved).
func (u *Union) statUnnamed(n *Node, f *File) (unix.Stat_t, error) {
	if st, ok := u.removed.Load(n); ok {
		return st.(unix.Stat_t), nil
	}
	var st unix.Stat_t
	var below bool
	err := n.withFile(f, func(f *File) error {
		return f.held(false, func(fd int) error {
			below = f.below || f.dataFd >= 0
			return unix.Fstat(fd, &st)
		})
	})
	if err != nil {
		return st, err
	}
	st.Ino = n.Ino()
	if below {
		// The lower file keeps its links, but the union shows no name.
		st.Nlink = 0
	}
	if key := n.Index(); key != "" {
		st.Nlink = u.indexNlink(key, st.Nlink)
	}
	return st, nil
}

// btimeUnnamed returns the birth time of n's object through an open
// file; ok is false where there is none, or its filesystem keeps none.
func (u *Union) btimeUnnamed(n *Node, f *File) (t unix.StatxTimestamp, ok bool) {
	var sx unix.Statx_t
	err := n.withFile(f, func(f *File) error {
		return f.held(false, func(fd int) error {
			return unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &sx)
		})
	})
	return sx.Btime, err == nil && sx.Mask&unix.STATX_BTIME != 0
}

// keepRemoved is called before name in parent, n's object, is removed or
// replaced. A directory can still be asked for its attributes after that
// (fstat of a descriptor open on it, the working directory of a process),
// which then have a link count of 0, as on ext4 and kernel overlayfs
// (generic/035): the returned function keeps them if the removal was done,
// until Forget.
func (u *Union) keepRemoved(parent *Entry, name string, n *Node) func(err error) {
	if n == nil {
		return func(error) {}
	}
	e := u.entryOf(n, layer.Join(parent.Path, name), false)
	if !e.IsDir() {
		return func(error) {}
	}
	st, err := u.Stat(e)
	return func(removeErr error) {
		if err == nil && removeErr == nil {
			st.Nlink = 0
			u.removed.Store(n, st)
		}
	}
}

// Forget drops what the engine keeps of n once its caller forgets it.
func (u *Union) Forget(n *Node) { u.removed.Delete(n) }

// setAttrUnnamed changes attributes of n's object through an open file.
func (u *Union) setAttrUnnamed(n *Node, f *File, a SetAttr) error {
	return n.withFile(f, func(f *File) error {
		if err := f.detach(n.Index()); err != nil {
			return err
		}
		if a.Size != nil {
			if err := f.materialize(); err != nil {
				return err
			}
		}
		return f.held(true, func(fd int) error { return a.Apply(fd, unix.S_IFREG) })
	})
}

// getxattrUnnamed reads xattr name of n's object through an open file.
func (u *Union) getxattrUnnamed(n *Node, name string, dest []byte) (int, error) {
	var sz int
	err := u.xattrUnnamed(n, name, false, func(fd int) (err error) {
		sz, err = unix.Fgetxattr(fd, name, dest)
		return err
	})
	return sz, err
}

// listxattrUnnamed lists the xattr names of n's object through an open
// file, without overlay's own.
func (u *Union) listxattrUnnamed(n *Node) ([]string, error) {
	var names []string
	err := u.xattrUnnamed(n, "", false, func(fd int) error {
		all, err := layer.ListxattrFd(fd)
		for _, a := range all {
			if !u.format.IsPrivate(a) {
				names = append(names, a)
			}
		}
		return err
	})
	return names, err
}

// setxattrUnnamed sets xattr name of n's object through an open file.
func (u *Union) setxattrUnnamed(n *Node, name string, value []byte, flags int) error {
	return u.xattrUnnamed(n, name, true, func(fd int) error { return unix.Fsetxattr(fd, name, value, flags) })
}

// removexattrUnnamed removes xattr name of n's object through an open file.
func (u *Union) removexattrUnnamed(n *Node, name string) error {
	return u.xattrUnnamed(n, name, true, func(fd int) error { return unix.Fremovexattr(fd, name) })
}

// xattrUnnamed runs op on the descriptor of an open file of n; write says
// it changes the file. Overlay's own attributes stay hidden.
func (u *Union) xattrUnnamed(n *Node, name string, write bool, op func(fd int) error) error {
	return n.withFile(nil, func(f *File) error {
		if name != "" && u.format.IsPrivate(name) {
			if write {
				return unix.EPERM
			}
			return unix.ENODATA
		}
		if write {
			if err := f.detach(n.Index()); err != nil {
				return err
			}
		}
		return f.held(write, op)
	})
}

// linkUnnamed gives n's object, which has no name, the name name in
// parent (linkat of an O_TMPFILE file).
func (u *Union) linkUnnamed(n *Node, parent *Entry, name string) (*Entry, unix.Stat_t, error) {
	var e *Entry
	var st unix.Stat_t
	err := n.withFile(nil, func(f *File) error {
		return f.held(false, func(fd int) error {
			if f.below {
				return unix.EXDEV
			}
			var err error
			e, st, err = u.LinkFd(fd, parent, name)
			return err
		})
	})
	return e, st, err
}

// reopenUnnamed opens r's object, which has no name, again (through
// /proc/self/fd/N of an open file, say) by reopening an open file's
// descriptor.
func (u *Union) reopenUnnamed(r Ref, flags int) (*File, error) {
	n := r.UnionNode()
	fd, below := -1, false
	err := n.withFile(nil, func(f *File) error {
		return f.held(false, func(int) error {
			below = f.below || f.dataFd >= 0
			if below && flags&unix.O_ACCMODE != unix.O_RDONLY {
				return unix.EROFS
			}
			var err error
			fd, err = unix.Open(layer.ProcFd(f.data()), flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_NOCTTY)|unix.O_CLOEXEC, 0)
			return err
		})
	})
	if err != nil {
		return nil, err
	}
	return u.newFile(r, fd, -1, flags, below), nil
}

// detach makes an open lower file that has no name any more changeable:
// its data and metadata are copied into an unnamed upper file, which the
// file then uses. A lower file with other names still has their shared
// copy in the hard-link index (made when this name was removed): that is
// the file to change.
// Preconditions: f.mu is not held.
func (f *File) detach(indexKey string) error {
	// f.mu is held while src is copied (which takes no engine lock): a
	// Close meanwhile would close it.
	f.mu.RLock()
	below, src := f.below, f.fd
	if src < 0 || !below {
		f.mu.RUnlock()
		if src < 0 {
			return errClosed
		}
		return nil
	}
	fd, ok, err := f.u.openIndex(indexKey)
	if err == nil && !ok {
		fd, err = f.u.CopyOpenFile(src)
	}
	f.mu.RUnlock()
	if err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fd < 0 || !f.below {
		unix.Close(fd) // closed, or detached, meanwhile
		if f.fd < 0 {
			return errClosed
		}
		return nil
	}
	f.retired = append(f.retired, f.fd)
	f.fd, f.below = fd, false
	return nil
}

// CopyOpenFile copies open lower file in, which has no name in the union
// any more (unlinked while open), into an unnamed upper file (O_TMPFILE in
// workdir/work) with its data and metadata, and returns that file open for
// reading and writing: a change through a descriptor of it must not reach
// the lower file, and there is no path to copy it up to.
func (u *Union) CopyOpenFile(in int) (int, error) {
	if u.upper == nil {
		return -1, errReadOnly
	}
	var st unix.Stat_t
	if err := unix.Fstat(in, &st); err != nil {
		return -1, err
	}
	out, err := u.work.Open("", unix.O_TMPFILE|unix.O_RDWR, 0o600)
	if err != nil {
		return -1, fmt.Errorf("copy up an unlinked file: %w", err)
	}
	fail := func(err error) (int, error) {
		unix.Close(out)
		return -1, fmt.Errorf("copy up an unlinked file: %w", err)
	}
	if err := copyData(out, in, st.Size, true); err != nil {
		return fail(err)
	}
	if u.root {
		if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
			return fail(err)
		}
	}
	if err := unix.Fchmod(out, st.Mode&^unix.S_IFMT); err != nil {
		return fail(err)
	}
	names, err := layer.ListxattrFd(in)
	if err != nil {
		return fail(err)
	}
	buf := make([]byte, 64*1024)
	for _, n := range names {
		if u.format.IsPrivate(n) {
			continue
		}
		sz, err := unix.Fgetxattr(in, n, buf)
		if err != nil {
			return fail(err)
		}
		if err := unix.Fsetxattr(out, n, buf[:sz], 0); err != nil && !ignorableXattrErr(err) {
			return fail(err)
		}
	}
	if err := unix.UtimesNanoAt(out, "", []unix.Timespec{st.Atim, st.Mtim}, unix.AT_EMPTY_PATH); err != nil {
		return fail(err)
	}
	return out, nil
}
