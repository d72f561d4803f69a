package union

import (
	"errors"
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// errGone is the error of a request on an object that no layer holds any
// more: removed or renamed away by a request that raced with this one.
var errGone = unix.ENOENT

// top returns the layer and path of e's visible object; errGone if there
// is none any more (a racing unlink or rename left e no layer).
func (u *Union) top(e *Entry) (*layer.Layer, string, error) {
	if e.Upper && u.upper != nil {
		return u.upper, e.Path, nil
	}
	if u.indexedKey(e.Index) != "" {
		return u.index, e.Index, nil
	}
	if len(e.Lower) == 0 {
		return nil, "", errGone
	}
	return e.Lower[0].Layer, e.Lower[0].Path, nil
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
	return u.top(e)
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
	var st unix.Stat_t
	l, p, err := u.top(e)
	if err != nil {
		return st, err
	}
	st, err = l.Lstat(p)
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

// btime returns the birth time of e's visible object (see Btime).
func (u *Union) btime(e *Entry) (t unix.StatxTimestamp, ok bool, err error) {
	l, p, err := u.top(e)
	if err != nil {
		return t, false, err
	}
	sx, err := l.Statx(p, unix.STATX_BTIME)
	if err != nil {
		return t, false, err
	}
	return sx.Btime, sx.Mask&unix.STATX_BTIME != 0, nil
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

// Readlink returns the target of r's object, a symlink.
func (u *Union) Readlink(r Ref) (string, error) {
	e, err := u.Entry(r)
	if err != nil {
		return "", err
	}
	l, p, err := u.top(e)
	if err != nil {
		return "", err
	}
	t, err := l.Readlink(p)
	if errors.Is(err, unix.EINVAL) {
		return "", unix.ENOENT // renamed away meanwhile: no symlink there now
	}
	return t, err
}

// SetAttr says which attributes to change; nil fields stay as they are.
type SetAttr struct {
	Mode         *uint32
	Uid, Gid     *uint32
	Size         *int64
	Atime, Mtime *unix.Timespec // may hold UTIME_NOW
}

// setAttr changes attributes of e, copying it up first (for a size change
// only the bytes that remain are copied; other changes copy only the
// metadata where they can, and are made to the copy while it is built).
func (u *Union) setAttr(e *Entry, a SetAttr) error {
	if u.upper == nil {
		return errReadOnly
	}
	r := copyReq{size: metaOnly, change: &a}
	if a.Size != nil {
		r = copyReq{size: *a.Size}
	}
	applied, err := u.copyUp(e, r)
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

// empty reports whether a changes nothing: chown(path, -1, -1) and the
// like, which still change ctime.
func (a SetAttr) empty() bool { return a == SetAttr{} }

// Apply makes the changes of a to the object open as fd (any descriptor of
// it, O_PATH included) of type mode.
func (a SetAttr) Apply(fd int, mode uint32) error {
	if a.empty() {
		// Nothing to change but ctime, as kernel overlayfs does on the
		// upper object (POSIX allows either).
		return unix.Fchownat(fd, "", -1, -1, unix.AT_EMPTY_PATH)
	}
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
//
// Unlike Apply, it does nothing for an empty a: copy-up applies what is
// left of a change after building the copy with its mode, and a fresh copy
// has a fresh ctime (fchown(-1, -1) would clear its set-user-ID bit).
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
