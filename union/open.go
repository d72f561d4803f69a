package union

import (
	"errors"

	"github.com/unionmount/unionmount/internal/layer"
	"golang.org/x/sys/unix"
)

// Open opens e's visible object. Opening for writing or with O_TRUNC copies
// it up first (O_TRUNC copies no data); read-only opens never write upper
// and do not update a lower file's access time (an upper one's follows
// Config.NoAtime).
func (u *Union) Open(e *Entry, flags int) (int, error) {
	fd, err := u.openVisible(e, flags)
	if err == nil {
		u.keepAtime(fd)
	}
	return fd, err
}

// keepAtime makes reads through fd, the daemon's or the kernel's (by
// passthrough), leave the file's access time alone under the noatime
// option.
func (u *Union) keepAtime(fd int) {
	if !u.cfg.NoAtime {
		return
	}
	fl, err := unix.FcntlInt(uintptr(fd), unix.F_GETFL, 0)
	if err == nil && fl&unix.O_NOATIME == 0 {
		// EPERM (a daemon not root and not the owner) leaves the
		// upper filesystem's rule, as an open with O_NOATIME would.
		_, _ = unix.FcntlInt(uintptr(fd), unix.F_SETFL, fl|unix.O_NOATIME)
	}
}

func (u *Union) openVisible(e *Entry, flags int) (int, error) {
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
		if _, err := u.copyUp(e, copyReq{size: size, opened: &opened}); err != nil {
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

// openDeferred opens e for writing without copying its data up yet, where
// a metadata-only copy can stand in until the first write (write-only open
// without O_TRUNC or O_APPEND of a lower regular file with one name,
// metacopy on): it returns a writable descriptor of the upper file and a
// read-only one of the data below. Before writing through wfd the caller
// must complete the copy (copyUpData); until then reads must use rfd (see
// File). ok is false where this does not apply; the caller then opens with
// Open.
func (u *Union) openDeferred(e *Entry, flags int) (wfd, rfd int, ok bool, err error) {
	// O_APPEND is there to write: copying the data at once costs one build
	// instead of two. A read-write open may be mapped shared: its writes
	// then reach the file only when written back, and stat must see them
	// at once, as with a mapping of the copy itself (by passthrough).
	if u.upper == nil || !u.cfg.MetaCopy || flags&(unix.O_TRUNC|unix.O_APPEND) != 0 || e.Mode != unix.S_IFREG ||
		e.Index != "" || flags&unix.O_ACCMODE != unix.O_WRONLY {
		return -1, -1, false, nil
	}
	// A lower file, or a metadata-only copy whose data is known. One found
	// by a lookup has no e.Lower (the upper file hides it), only e.Data.
	if (e.Upper && (!e.MetaCopy || e.Data == nil)) || (!e.Upper && len(e.Lower) == 0) {
		return -1, -1, false, nil
	}
	if _, err = u.copyUp(e, copyReq{size: metaOnly}); err != nil || !e.MetaCopy {
		return -1, -1, false, err
	}
	rfd, err = u.Open(e, unix.O_RDONLY)
	if err != nil {
		return -1, -1, false, err
	}
	wfd, err = u.upper.Open(e.Path, flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_NOCTTY), 0)
	if err != nil {
		unix.Close(rfd)
		return -1, -1, false, err
	}
	u.keepAtime(wfd)
	return wfd, rfd, true, nil
}
