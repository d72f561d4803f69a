package union

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Owner is who a new object belongs to: the caller of the request.
type Owner struct{ Uid, Gid uint32 }

// Create makes regular file name in parent and opens it with flags.
func (u *Union) Create(parent *Entry, name string, flags int, mode uint32, owner Owner) (*Entry, unix.Stat_t, int, error) {
	fd := -1
	flags = flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC) | unix.O_CREAT | unix.O_EXCL
	e, st, err := u.create(parent, name, &owner, mode|unix.S_IFREG, func(l *layer.Layer, rel string) error {
		var err error
		fd, err = l.Open(rel, flags, mode&^unix.S_IFMT)
		return err
	})
	if err != nil && fd >= 0 {
		unix.Close(fd)
		fd = -1
	}
	if fd >= 0 {
		u.keepAtime(fd)
	}
	return e, st, fd, err
}

// Mkdir makes directory name in parent; over a whiteout it is opaque.
func (u *Union) Mkdir(parent *Entry, name string, mode uint32, owner Owner) (*Entry, unix.Stat_t, error) {
	return u.create(parent, name, &owner, mode|unix.S_IFDIR, func(l *layer.Layer, rel string) error {
		return l.Mkdir(rel, mode&^unix.S_IFMT)
	})
}

// Mknod makes a device, fifo or socket node name in parent.
func (u *Union) Mknod(parent *Entry, name string, mode uint32, dev uint64, owner Owner) (*Entry, unix.Stat_t, error) {
	if mode&unix.S_IFMT == unix.S_IFCHR && dev == layer.WhiteoutDev {
		// A 0:0 character device is a whiteout on disk: it would hide
		// itself. Kernel overlayfs refuses it the same way.
		return nil, unix.Stat_t{}, unix.EPERM
	}
	return u.create(parent, name, &owner, mode, func(l *layer.Layer, rel string) error {
		return l.Mknod(rel, mode, dev)
	})
}

// Symlink makes name in parent a symlink to target.
func (u *Union) Symlink(parent *Entry, name, target string, owner Owner) (*Entry, unix.Stat_t, error) {
	return u.create(parent, name, &owner, unix.S_IFLNK|0o777, func(l *layer.Layer, rel string) error {
		return l.Symlink(target, rel)
	})
}

// link makes name in parent a hard link to src, copying src up first.
func (u *Union) link(src, parent *Entry, name string) (*Entry, unix.Stat_t, error) {
	if u.upper == nil {
		return nil, unix.Stat_t{}, errReadOnly
	}
	if src.IsDir() {
		return nil, unix.Stat_t{}, unix.EPERM
	}
	if _, err := u.copyUp(src, copyReq{size: All}); err != nil {
		return nil, unix.Stat_t{}, err
	}
	e, st, err := u.create(parent, name, nil, src.Mode, func(l *layer.Layer, rel string) error {
		return u.upper.Link(src.Path, l, rel)
	})
	if err != nil {
		return nil, st, err
	}
	// The new name is the same inode, with the same identity.
	e.Ino, e.Lower, e.Index = src.Ino, src.Lower, src.Index
	if e.Index != "" {
		if err := u.addNlink(e.Index, 1); err != nil {
			return nil, st, err
		}
	}
	return e, u.fixStat(e, st), nil
}

// Tmpfile makes an unnamed regular file in directory dir (O_TMPFILE),
// opened with flags, and returns its descriptor and entry (with no path).
func (u *Union) Tmpfile(dir *Entry, flags int, mode uint32, owner Owner) (*Entry, unix.Stat_t, int, error) {
	var st unix.Stat_t
	if u.upper == nil {
		return nil, st, -1, errReadOnly
	}
	if _, err := u.copyUp(dir, copyReq{size: All}); err != nil {
		return nil, st, -1, err
	}
	fd, err := u.upper.Open(dir.Path, flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_DIRECTORY)|unix.O_TMPFILE, mode&0o7777)
	if err != nil {
		return nil, st, -1, err
	}
	if u.root && (int(owner.Uid) != os.Geteuid() || int(owner.Gid) != os.Getegid()) {
		gid := int(owner.Gid)
		if dst, err := u.upper.Lstat(dir.Path); err == nil && dst.Mode&unix.S_ISGID != 0 {
			gid = int(dst.Gid)
		}
		if err := unix.Fchown(fd, int(owner.Uid), gid); err != nil {
			unix.Close(fd)
			return nil, st, -1, err
		}
	}
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, st, -1, err
	}
	e := &Entry{Mode: unix.S_IFREG, Upper: true, Ino: u.Ino(st.Dev, st.Ino)}
	u.keepAtime(fd)
	return e, u.fixStat(e, st), fd, nil
}

// LinkFd gives open upper file fd (made by Tmpfile, or unlinked while open)
// the name name in parent.
func (u *Union) LinkFd(fd int, parent *Entry, name string) (*Entry, unix.Stat_t, error) {
	return u.create(parent, name, nil, unix.S_IFREG, func(l *layer.Layer, rel string) error {
		return l.LinkFd(fd, rel)
	})
}

// create makes a new object at name in parent with build, owned by owner
// (nil: leave as built). Where a whiteout stands, or where the owner must be
// set, the object is built in workdir/work and renamed into place, so it
// appears complete or not at all; a directory replacing a whiteout is made
// opaque.
func (u *Union) create(parent *Entry, name string, owner *Owner, mode uint32, build func(l *layer.Layer, rel string) error) (*Entry, unix.Stat_t, error) {
	var st unix.Stat_t
	if u.upper == nil {
		return nil, st, errReadOnly
	}
	if len(name) > 255 {
		return nil, st, unix.ENAMETOOLONG
	}
	u.renameMu.RLock()
	defer u.renameMu.RUnlock()
	if _, err := u.copyUpHeld(parent, copyReq{size: All}); err != nil {
		return nil, st, err
	}
	p := layer.Join(parent.Path, name)
	whiteout := false
	if cur, err := u.upper.Lstat(p); err == nil {
		if !layer.IsWhiteout(&cur) {
			return nil, st, unix.EEXIST
		}
		whiteout = true
	} else if !errors.Is(err, unix.ENOENT) {
		return nil, st, err
	}
	isDir := mode&unix.S_IFMT == unix.S_IFDIR
	// A directory made where a whiteout hides a lower one must not merge
	// with it: opaque.
	opaque := isDir && whiteout
	if isDir && !whiteout && len(parent.Lower) > 0 {
		var err error
		if opaque, err = u.whiteoutBelow(parent, name); err != nil {
			return nil, st, err
		}
	}
	uid, gid := -1, -1
	if owner != nil && u.root {
		uid, gid = int(owner.Uid), int(owner.Gid)
		pst, err := u.upper.Lstat(parent.Path)
		if err != nil {
			return nil, st, err
		}
		if pst.Mode&unix.S_ISGID != 0 {
			gid = int(pst.Gid)
		}
		if uid == os.Geteuid() && gid == os.Getegid() {
			uid, gid = -1, -1
		}
	}
	if !whiteout && !opaque && uid < 0 {
		// Fast path: nothing to hide and nobody else to own it.
		if err := build(u.upper, p); err != nil {
			return nil, st, err
		}
	} else if err := u.buildInWork(p, mode, owner, whiteout, opaque, uid, gid, build); err != nil {
		return nil, st, err
	}
	if isDir {
		u.forgetSubdirs(&parent.Path)
	}
	st, err := u.upper.Lstat(p)
	if err != nil {
		return nil, st, fmt.Errorf("create %s: %w", p, err)
	}
	e := &Entry{Path: p, Mode: st.Mode & unix.S_IFMT, Upper: true, Ino: u.Ino(st.Dev, st.Ino)}
	return e, u.fixStat(e, st), nil
}

func (u *Union) buildInWork(p string, mode uint32, owner *Owner, whiteout, opaque bool, uid, gid int, build func(l *layer.Layer, rel string) error) (err error) {
	isDir := mode&unix.S_IFMT == unix.S_IFDIR
	tmp := u.tempName()
	if err := build(u.work, tmp); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			_ = u.work.RemoveAll(tmp)
		}
	}()
	if uid >= 0 || gid >= 0 {
		if err := u.work.Lchown(tmp, uid, gid); err != nil {
			return err
		}
		// chown cleared the set-id bits the caller asked for: put back
		// what ext4 would have kept. A caller outside the file's group
		// (its primary group: FUSE says no more) and not root loses
		// S_ISGID.
		if perm := mode & 0o7777; !isDir && mode&unix.S_IFMT != unix.S_IFLNK && perm&(unix.S_ISUID|unix.S_ISGID) != 0 {
			if owner != nil && owner.Uid != 0 && int(owner.Gid) != gid {
				perm &^= unix.S_ISGID
			}
			if err := u.work.Chmod(tmp, perm); err != nil {
				return err
			}
		}
	}
	if isDir {
		pst, err := u.upper.Lstat(parentOf(p))
		if err != nil {
			return err
		}
		if pst.Mode&unix.S_ISGID != 0 {
			st, err := u.work.Lstat(tmp)
			if err != nil {
				return err
			}
			if err := u.work.Chmod(tmp, st.Mode&^unix.S_IFMT|unix.S_ISGID); err != nil {
				return err
			}
		}
		if opaque {
			if err := u.work.Setxattr(tmp, u.format.Name(layer.Opaque), []byte("y"), 0); err != nil {
				return fmt.Errorf("set opaque: %w", err)
			}
		}
	}
	return u.place(tmp, p, isDir, whiteout)
}

// place renames finished object tmp from workdir/work to upper path p,
// replacing the whiteout at p if there is one.
func (u *Union) place(tmp, p string, isDir, whiteout bool) error {
	if !whiteout {
		return u.work.Rename(tmp, u.upper, p, unix.RENAME_NOREPLACE)
	}
	if !isDir {
		return u.work.Rename(tmp, u.upper, p, 0)
	}
	// A directory cannot replace a non-directory: swap them, then drop the
	// whiteout, now in workdir/work.
	if err := u.work.Rename(tmp, u.upper, p, unix.RENAME_EXCHANGE); err != nil {
		return err
	}
	return u.work.Unlink(tmp)
}
