package layer

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// A mounted union reaches its layers through private mounts of its own: each
// layer is opened on a detached, non-recursive clone of the mount holding it
// (open_tree(OPEN_TREE_CLONE) without AT_RECURSIVE), taken before the union
// is mounted. That gives, as kernel overlayfs's private clones do:
//
//   - the union can be mounted on a lower's own mount point (the seeds'
//     `mount -o union`): the clone was taken before the union covered it;
//   - submounts of a layer are never crossed, as the clone has none: a tmpfs
//     mounted in a lower, or the union's own mount point inside a lower,
//     shows the directory beneath it;
//   - a lower is read-only for real (MOUNT_ATTR_RDONLY on its clone): any
//     write the daemon might attempt on it fails with EROFS; and noatime:
//     no read changes it either;
//   - `umount -l` of a layer's mount, or of the old root after pivot_root,
//     leaves the union's layers in place.
//
// Cloning a mount needs CAP_SYS_ADMIN over the mount namespace. Without it
// (an unprivileged user outside a user namespace of its own) a layer is the
// plain directory, and every lookup below it refuses to cross into another
// mount instead (RESOLVE_NO_XDEV; a stat that would cross fails with EXDEV).

// OpenDetached opens hostPaths, which must all be on one mount, as layers
// on one detached, non-recursive clone of that mount with the mount
// attributes attrs (unix.MOUNT_ATTR_RDONLY, _NOATIME, _NODIRATIME): what
// they forbid, no access through the layers does, the kernel's own neither
// (FUSE passthrough reads through the layers' descriptors). One clone for
// all keeps renames between them possible (workdir to upperdir). Where
// cloning is not allowed, the layers are the plain directories, resolved
// without crossing mounts (see Cloned).
func OpenDetached(attrs uint64, hostPaths ...string) ([]*Layer, error) {
	pinned := make([]int, 0, len(hostPaths))
	defer func() {
		for _, fd := range pinned {
			unix.Close(fd)
		}
	}()
	var ids []uint64
	for _, p := range hostPaths {
		fd, err := unix.Open(p, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: p, Err: err}
		}
		pinned = append(pinned, fd)
		id, err := mountID(fd)
		if err != nil {
			return nil, &os.PathError{Op: "statx", Path: p, Err: err}
		}
		ids = append(ids, id)
	}
	for i := range ids {
		if ids[i] != ids[0] {
			return nil, fmt.Errorf("%q and %q are not under one mount", hostPaths[0], hostPaths[i])
		}
	}
	ls, err := cloneLayers(attrs, hostPaths, pinned)
	if errors.Is(err, errNoClone) {
		return openNoXdev(hostPaths, pinned, ids[0])
	}
	return ls, err
}

// errNoClone: this process may not clone the mount.
var errNoClone = errors.New("cannot clone the mount")

// cloneLayers clones the mount at the paths' nearest common directory and
// opens each path beneath the clone. pinned are the paths opened with O_PATH
// beforehand: what is opened in the clone must be those very directories.
func cloneLayers(attrs uint64, hostPaths []string, pinned []int) ([]*Layer, error) {
	base, rels, err := commonDir(hostPaths)
	if err != nil {
		return nil, err
	}
	from := pinned[0]
	if len(hostPaths) > 1 {
		fd, err := unix.Open(base, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			return nil, &os.PathError{Op: "open", Path: base, Err: err}
		}
		defer unix.Close(fd)
		from = fd
	}
	tree, err := unix.OpenTree(from, "", unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC|unix.AT_EMPTY_PATH)
	if err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EACCES) {
			// EPERM: no CAP_SYS_ADMIN over the mount namespace; EINVAL:
			// the mount has submounts locked to it (a user namespace's
			// view of its parent's mounts) or is in another namespace.
			return nil, fmt.Errorf("%w: %v", errNoClone, err)
		}
		return nil, &os.PathError{Op: "open_tree", Path: base, Err: err}
	}
	// The clone holds the mount for as long as a layer descriptor does;
	// the tree's own descriptor is not needed past opening them.
	defer unix.Close(tree)
	// Private: no mount made later at the original propagates into it.
	attr := unix.MountAttr{Attr_set: attrs, Propagation: unix.MS_PRIVATE}
	if attrs&unix.MOUNT_ATTR__ATIME != 0 {
		attr.Attr_clr = unix.MOUNT_ATTR__ATIME // an atime mode replaces the clone's
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOSYS) {
			return nil, fmt.Errorf("%w: %v", errNoClone, err)
		}
		return nil, &os.PathError{Op: "mount_setattr", Path: base, Err: err}
	}
	var ls []*Layer
	for i, rel := range rels {
		l, err := openIn(tree, rel, hostPaths[i], pinned[i])
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		ls = append(ls, l)
	}
	return ls, nil
}

// openIn opens directory rel beneath the clone tree as the layer hostPath,
// checking that it is the directory pinned (the same inode).
func openIn(tree int, rel, hostPath string, pinned int) (*Layer, error) {
	fd, err := unix.Openat2(tree, rel, &unix.OpenHow{
		Flags:   unix.O_RDONLY | unix.O_DIRECTORY | unix.O_CLOEXEC,
		Resolve: beneath | unix.RESOLVE_NO_XDEV,
	})
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: hostPath, Err: err}
	}
	var st, want unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: hostPath, Err: err}
	}
	if err := unix.Fstat(pinned, &want); err != nil || st.Dev != want.Dev || st.Ino != want.Ino {
		unix.Close(fd)
		return nil, fmt.Errorf("%q changed or moved while it was being opened", hostPath)
	}
	return &Layer{Root: hostPath, fd: fd, Dev: st.Dev, resolve: beneath, cloned: true}, nil
}

// openNoXdev opens the paths as plain directories whose lookups do not
// cross into other mounts than mount mnt.
func openNoXdev(hostPaths []string, pinned []int, mnt uint64) ([]*Layer, error) {
	var ls []*Layer
	for i, p := range hostPaths {
		l, err := openPlain(p, pinned[i])
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, err
		}
		l.resolve |= unix.RESOLVE_NO_XDEV
		l.mnt = mnt
		l.crossing = new(sync.Once)
		ls = append(ls, l)
	}
	return ls, nil
}

// commonDir returns the nearest directory holding every path (absolute,
// clean) and each path relative to it ("." for itself).
func commonDir(paths []string) (string, []string, error) {
	abs := make([]string, len(paths))
	for i, p := range paths {
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return "", nil, err
		}
		if abs[i], err = filepath.Abs(real); err != nil {
			return "", nil, err
		}
	}
	base := abs[0]
	for _, a := range abs[1:] {
		for base != "/" && a != base && !strings.HasPrefix(a, base+"/") {
			base = filepath.Dir(base)
		}
	}
	rels := make([]string, len(abs))
	for i, a := range abs {
		r, err := filepath.Rel(base, a)
		if err != nil {
			return "", nil, err
		}
		rels[i] = r
	}
	return base, rels, nil
}

// mountID is the ID of the mount fd is on (as in /proc/self/mountinfo).
func mountID(fd int) (uint64, error) {
	var stx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_MNT_ID, &stx); err != nil {
		return 0, err
	}
	return stx.Mnt_id, nil
}

// Cloned reports whether the layer is on a private clone of its mount; if
// not, its lookups refuse to cross mounts, and the union must not be
// mounted inside it (it would show itself, endlessly).
func (l *Layer) Cloned() bool { return l.cloned }

// lstatNoXdev is fstatat of name in dirfd for a layer that is not a clone:
// an object on another mount (name is a mount point) is refused with
// EXDEV, and the first such refusal is logged.
func (l *Layer) lstatNoXdev(dirfd int, name string, st *unix.Stat_t) error {
	var stx unix.Statx_t
	err := unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW|unix.AT_NO_AUTOMOUNT,
		unix.STATX_BASIC_STATS|unix.STATX_MNT_ID, &stx)
	if err != nil {
		return err
	}
	if stx.Mnt_id != l.mnt {
		l.crossing.Do(func() {
			slog.Warn("a mount point inside a layer is not crossed (EXDEV): unionmount could not clone the layer's mount, so it does not see the directory beneath",
				"layer", l.Root, "name", name)
		})
		return unix.EXDEV
	}
	*st = unix.Stat_t{
		Dev:     unix.Mkdev(stx.Dev_major, stx.Dev_minor),
		Ino:     stx.Ino,
		Nlink:   uint64(stx.Nlink),
		Mode:    uint32(stx.Mode),
		Uid:     stx.Uid,
		Gid:     stx.Gid,
		Rdev:    unix.Mkdev(stx.Rdev_major, stx.Rdev_minor),
		Size:    int64(stx.Size),
		Blksize: int64(stx.Blksize),
		Blocks:  int64(stx.Blocks),
		Atim:    unix.Timespec{Sec: stx.Atime.Sec, Nsec: int64(stx.Atime.Nsec)},
		Mtim:    unix.Timespec{Sec: stx.Mtime.Sec, Nsec: int64(stx.Mtime.Nsec)},
		Ctim:    unix.Timespec{Sec: stx.Ctime.Sec, Nsec: int64(stx.Ctime.Nsec)},
	}
	return nil
}
