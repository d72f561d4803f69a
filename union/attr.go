package union

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// top returns the layer and path of e's visible object.
func (u *Union) top(e *Entry) (*layer.Layer, string) {
	if e.Upper && u.upper != nil {
		return u.upper, e.Path
	}
	if u.indexedKey(e.Index) != "" {
		return u.index, e.Index
	}
	return e.Lower[0].Layer, e.Lower[0].Path
}

// dataTop returns the layer and path of e's data: the lower file of a
// metadata-only copy, else the visible object.
func (u *Union) dataTop(e *Entry) (*layer.Layer, string, error) {
	if dataBelow(e) {
		if e.Data == nil {
			return nil, "", fmt.Errorf("%s: the lower file holding its data is missing: %w", e.Path, unix.EIO)
		}
		return e.Data.Layer, e.Data.Path, nil
	}
	l, p := u.top(e)
	return l, p, nil
}

// dataBelow reports whether e's visible object is a metadata-only copy, in
// upper or in a lower layer, whose data is e.Data.
func dataBelow(e *Entry) bool {
	return (e.Upper && e.MetaCopy) || (!e.Upper && e.Data != nil)
}

// Stat returns the attributes of e: its visible object's, with the union
// inode number, and for a merged directory the link count of the merged
// view (2 + its subdirectories).
func (u *Union) Stat(e *Entry) (unix.Stat_t, error) {
	l, p := u.top(e)
	st, err := l.Lstat(p)
	if err != nil {
		return st, err
	}
	if st.Mode&unix.S_IFMT != e.Mode {
		return st, unix.ENOENT // renamed away meanwhile; something else is there
	}
	st = u.fixStat(e, st)
	if dataBelow(e) && e.Data != nil {
		// The blocks are the data's, as kernel overlayfs reports them.
		if e.Data.Blocks > 0 {
			st.Blocks = e.Data.Blocks
		} else if dst, err := e.Data.Layer.Lstat(e.Data.Path); err == nil {
			st.Blocks = dst.Blocks
		}
	}
	if e.Merged() {
		n, err := u.SubdirCount(e)
		if err != nil {
			return st, err
		}
		st.Nlink = uint64(2 + n)
	}
	return st, nil
}

// SyncDir syncs directory e's upper directory, if it has one.
func (u *Union) SyncDir(e *Entry) error {
	if !e.Upper || u.upper == nil {
		return nil
	}
	fd, err := u.upper.Open(e.Path, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return unix.Fsync(fd)
}

// Readlink returns the target of symlink e.
func (u *Union) Readlink(e *Entry) (string, error) {
	l, p := u.top(e)
	t, err := l.Readlink(p)
	if errors.Is(err, unix.EINVAL) {
		return "", unix.ENOENT // renamed away meanwhile: no symlink there now
	}
	return t, err
}

// Open opens e's visible object. Opening for writing or with O_TRUNC copies
// it up first (O_TRUNC copies no data); read-only opens never write upper
// and do not update a lower file's access time.
func (u *Union) Open(e *Entry, flags int) (int, error) {
	flags &^= unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY
	if flags&unix.O_ACCMODE != unix.O_RDONLY || flags&unix.O_TRUNC != 0 {
		if u.upper == nil {
			return -1, errReadOnly
		}
		size := All
		if flags&unix.O_TRUNC != 0 {
			size = 0
		}
		opened := -1
		u.renameMu.RLock()
		_, err := u.copyUp(e, size, nil, &opened)
		u.renameMu.RUnlock()
		if err != nil {
			return -1, err
		}
		if opened >= 0 {
			// The copy just built, open read-write: no second open
			// where no flag asks for one.
			if fd, ok := reuseOpened(opened, flags); ok {
				return fd, nil
			}
			unix.Close(opened)
		}
		return u.openChecked(u.upper, e.Path, flags, e.Mode)
	}
	l, p, err := u.dataTop(e)
	if err != nil {
		return -1, err
	}
	if l != u.upper {
		flags |= unix.O_NOATIME
	}
	return u.openChecked(l, p, flags, e.Mode)
}

// reuseOpened returns fd, a read-write descriptor of a file just copied
// up, as the file opened with flags, where flags ask for nothing an open
// would give and fcntl cannot: O_APPEND and O_NONBLOCK it sets; the access
// mode does not matter (reads and writes come from the kernel, which
// checked the mode; passthrough opens its own file with the kernel's
// flags).
func reuseOpened(fd, flags int) (int, bool) {
	// 0x8000: O_LARGEFILE as the kernel sends it on x86-64 (x/sys has 0;
	// elsewhere it differs, and the file is opened again).
	const plain = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | 0x8000 | unix.O_TRUNC |
		unix.O_CREAT | unix.O_EXCL | unix.O_NOCTTY | unix.O_CLOEXEC
	if flags&^plain != 0 {
		return -1, false
	}
	if set := flags & (unix.O_APPEND | unix.O_NONBLOCK); set != 0 {
		if _, err := unix.FcntlInt(uintptr(fd), unix.F_SETFL, set); err != nil {
			return -1, false
		}
	}
	return fd, true
}

// openChecked opens p in l and makes sure it is still an object of e's type:
// a rename racing with the request may have put something else, or a
// whiteout (a device, ENXIO), at the name. Then the name is gone: ENOENT.
func (u *Union) openChecked(l *layer.Layer, p string, flags int, mode uint32) (int, error) {
	fd, err := l.Open(p, flags, 0)
	if (errors.Is(err, unix.ENXIO) || errors.Is(err, unix.ENODEV)) && mode != unix.S_IFCHR && mode != unix.S_IFBLK && mode != unix.S_IFIFO && mode != unix.S_IFSOCK {
		return -1, unix.ENOENT // a device, a whiteout, is at the name now
	}
	if errors.Is(err, unix.ELOOP) && mode != unix.S_IFLNK {
		return -1, unix.ENOENT // a symlink is at the name now
	}
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if st.Mode&unix.S_IFMT != mode {
		unix.Close(fd)
		return -1, unix.ENOENT
	}
	return fd, nil
}

// upperObject opens upper path p with O_PATH and makes sure it still holds
// an object of type mode: a rename racing with the request may have put
// something else (a symlink, a whiteout) at the name; then ENOENT. Changes
// are then made through the descriptor, to exactly that object.
func (u *Union) upperObject(p string, mode uint32) (int, error) {
	fd, err := u.upper.Open(p, unix.O_PATH, 0)
	if err != nil {
		return -1, err
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return -1, err
	}
	if layer.IsWhiteout(&st) || st.Mode&unix.S_IFMT != mode {
		unix.Close(fd)
		return -1, unix.ENOENT
	}
	return fd, nil
}

// SetAttr says which attributes to change; nil fields stay as they are.
type SetAttr struct {
	Mode         *uint32
	Uid, Gid     *uint32
	Size         *int64
	Atime, Mtime *unix.Timespec // may hold UTIME_NOW
}

// SetAttr changes attributes of e, copying it up first (for a size change
// only the bytes that remain are copied).
func (u *Union) SetAttr(e *Entry, a SetAttr) error {
	if u.upper == nil {
		return errReadOnly
	}
	u.renameMu.RLock()
	var err error
	applied := false
	if a.Size != nil {
		err = u.CopyUp(e, *a.Size) // only the bytes that remain
	} else {
		// A lower file gets the changes while its copy is built.
		applied, err = u.copyUpMeta(e, &a)
	}
	u.renameMu.RUnlock()
	if err != nil || applied {
		return err
	}
	obj, err := u.upperObject(e.Path, e.Mode)
	if err != nil {
		return err
	}
	defer unix.Close(obj)
	return a.Apply(obj, e.Mode)
}

// Apply makes the changes of a to the object open as fd (any descriptor of
// it, O_PATH included) of type mode.
func (a SetAttr) Apply(fd int, mode uint32) error {
	if a.Uid != nil || a.Gid != nil {
		uid, gid := -1, -1
		if a.Uid != nil {
			uid = int(*a.Uid)
		}
		if a.Gid != nil {
			gid = int(*a.Gid)
		}
		if err := unix.Fchownat(fd, "", uid, gid, unix.AT_EMPTY_PATH); err != nil {
			return err
		}
	}
	if a.Mode != nil {
		if mode == unix.S_IFLNK {
			return unix.EOPNOTSUPP
		}
		if err := unix.Chmod(layer.ProcFd(fd), *a.Mode&^unix.S_IFMT); err != nil {
			return err
		}
	}
	if a.Size != nil {
		w, err := unix.Open(layer.ProcFd(fd), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		err = unix.Ftruncate(w, *a.Size)
		unix.Close(w)
		if err != nil {
			return err
		}
	}
	return a.applyTimes(fd)
}

// applyTimes sets the times a changes on the object open as fd.
func (a SetAttr) applyTimes(fd int) error {
	if a.Atime == nil && a.Mtime == nil {
		return nil
	}
	ts := []unix.Timespec{{Nsec: unix.UTIME_OMIT}, {Nsec: unix.UTIME_OMIT}}
	if a.Atime != nil {
		ts[0] = *a.Atime
	}
	if a.Mtime != nil {
		ts[1] = *a.Mtime
	}
	return unix.UtimesNanoAt(fd, "", ts, unix.AT_EMPTY_PATH)
}

// ApplyFile makes the changes of a to the regular file open as fd for
// writing: through the descriptor, with no path walk.
func (a SetAttr) ApplyFile(fd int) error {
	if a.Uid != nil || a.Gid != nil {
		uid, gid := -1, -1
		if a.Uid != nil {
			uid = int(*a.Uid)
		}
		if a.Gid != nil {
			gid = int(*a.Gid)
		}
		if err := unix.Fchown(fd, uid, gid); err != nil {
			return err
		}
	}
	if a.Mode != nil {
		if err := unix.Fchmod(fd, *a.Mode&^unix.S_IFMT); err != nil {
			return err
		}
	}
	if a.Size != nil {
		if err := unix.Ftruncate(fd, *a.Size); err != nil {
			return err
		}
	}
	return a.applyTimes(fd)
}

// Getxattr reads xattr name of e; overlay's own attributes do not exist for
// users.
func (u *Union) Getxattr(e *Entry, name string, dest []byte) (int, error) {
	if u.format.IsPrivate(name) || noXattrs(e) {
		return 0, unix.ENODATA
	}
	l, p := u.top(e)
	return l.Getxattr(p, name, dest)
}

// noXattrs reports whether e's visible object is known to have no xattrs
// but overlay's own.
func noXattrs(e *Entry) bool { return e.Upper && e.NoXattrs && e.Index == "" && !e.IsDir() }

// Listxattr lists e's xattr names, without overlay's own.
func (u *Union) Listxattr(e *Entry) ([]string, error) {
	if noXattrs(e) {
		return nil, nil
	}
	l, p := u.top(e)
	names, err := l.Listxattr(p)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if !u.format.IsPrivate(n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// Setxattr sets xattr name of e after copying it up.
func (u *Union) Setxattr(e *Entry, name string, value []byte, flags int) error {
	if u.format.IsPrivate(name) {
		return unix.EPERM
	}
	if u.upper == nil {
		return errReadOnly
	}
	u.renameMu.RLock()
	err := u.CopyUpMeta(e)
	u.renameMu.RUnlock()
	if err != nil {
		return err
	}
	e.NoXattrs = false
	obj, err := u.upperObject(e.Path, e.Mode)
	if err != nil {
		return err
	}
	defer unix.Close(obj)
	return unix.Setxattr(layer.ProcFd(obj), name, value, flags)
}

// Removexattr removes xattr name of e, copying it up only if it has it.
func (u *Union) Removexattr(e *Entry, name string) error {
	if u.format.IsPrivate(name) {
		return unix.EPERM
	}
	if u.upper == nil {
		return errReadOnly
	}
	if !e.Upper {
		l, p := u.top(e)
		if _, err := l.Getxattr(p, name, nil); err != nil {
			if errors.Is(err, unix.ENODATA) {
				return unix.ENODATA
			}
			return err
		}
	}
	u.renameMu.RLock()
	err := u.CopyUpMeta(e)
	u.renameMu.RUnlock()
	if err != nil {
		return err
	}
	e.NoXattrs = false
	obj, err := u.upperObject(e.Path, e.Mode)
	if err != nil {
		return err
	}
	defer unix.Close(obj)
	return unix.Removexattr(layer.ProcFd(obj), name)
}
