// Package layer is the only way into a layer's directory tree.
//
// A Layer is an open directory file descriptor. Every access below it goes
// through *at system calls on a parent directory that was resolved with
// openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS): a
// symlink, ".." or a race that swaps a directory for a symlink can never make
// an operation reach outside the layer. Paths handed to a Layer are relative
// to its root ("" is the root itself, "a/b" a descendant); they are names in
// the union's namespace, never host paths.
//
// The on-disk format shared with kernel overlayfs (xattr names, whiteout and
// opaque forms) is defined once, in format.go.
package layer

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// Layer is one directory tree of a union: the upper, a lower, or the work
// directory.
type Layer struct {
	// Root is the host path the layer was opened from, for messages only.
	Root string
	fd   int
	// Dev is the st_dev of the layer's root directory.
	Dev  uint64
	dirs dirCache
	// resolve is how paths below the layer are resolved: beneath, and
	// RESOLVE_NO_XDEV for a layer that is not a clone of its mount.
	resolve uint64
	// cloned: the layer is on a private clone of its mount (see Clone).
	cloned bool
	// mnt is the mount ID a layer that is not a clone must stay on, and
	// crossing logs the first attempt to leave it.
	mnt      uint64
	crossing *sync.Once
}

// Open opens the directory at hostPath as a layer, as it is: on the host's
// mount, whose submounts its lookups cross. The offline tools use it; a
// mounted union opens its layers with Clone.
func Open(hostPath string) (*Layer, error) {
	fd, err := unix.Open(hostPath, unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: hostPath, Err: err}
	}
	defer unix.Close(fd)
	return openPlain(hostPath, fd)
}

// openPlain opens directory pinned (an O_PATH descriptor of hostPath) as a
// layer.
func openPlain(hostPath string, pinned int) (*Layer, error) {
	fd, err := unix.Openat(pinned, ".", unix.O_DIRECTORY|unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: hostPath, Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, &os.PathError{Op: "stat", Path: hostPath, Err: err}
	}
	return &Layer{Root: hostPath, fd: fd, Dev: st.Dev, resolve: beneath}, nil
}

// Close releases the layer's descriptors.
func (l *Layer) Close() error {
	l.dirs.closeAll()
	return unix.Close(l.fd)
}

// FD is the layer's root directory descriptor. Callers must not close it.
func (l *Layer) FD() int { return l.fd }

// beneath is the resolution every lookup inside a layer uses.
const beneath = unix.RESOLVE_BENEATH | unix.RESOLVE_NO_SYMLINKS | unix.RESOLVE_NO_MAGICLINKS

// Join joins union path components: Join("", "a") = "a".
func Join(dir, name string) string {
	if dir == "" {
		return name
	}
	return dir + "/" + name
}

// Split splits a union path into parent and final name: Split("a/b") = ("a", "b").
func Split(p string) (dir, name string) {
	i := strings.LastIndexByte(p, '/')
	if i < 0 {
		return "", p
	}
	return p[:i], p[i+1:]
}

// Clean turns a layer path as stored in a redirect xattr ("/a/b") into a
// union path ("a/b"); it refuses paths that climb out with "..".
func Clean(p string) (string, error) {
	c := path.Clean("/" + p)
	if strings.Contains(c, "/../") || strings.HasSuffix(c, "/..") {
		return "", fmt.Errorf("path %q leaves the layer", p)
	}
	return strings.TrimPrefix(c, "/"), nil
}

// OpenDir opens the directory at rel with O_PATH, resolved beneath the layer.
// The caller closes the returned descriptor.
//
// A path of PATH_MAX bytes or more, which the kernel refuses in one call,
// is opened a piece at a time: paths in a union have no length limit, as
// on ext4 and kernel overlayfs.
func (l *Layer) OpenDir(rel string) (int, error) {
	if rel == "" {
		rel = "."
	}
	dirfd, owned := l.fd, -1
	defer func() {
		if owned >= 0 {
			unix.Close(owned)
		}
	}()
	for len(rel) >= unix.PathMax {
		cut := strings.LastIndexByte(rel[:unix.PathMax-1], '/')
		if cut <= 0 {
			return -1, unix.ENAMETOOLONG
		}
		fd, err := openDirBeneath(dirfd, rel[:cut], l.resolve)
		if err != nil {
			return -1, err
		}
		if owned >= 0 {
			unix.Close(owned)
		}
		dirfd, owned, rel = fd, fd, rel[cut+1:]
	}
	return openDirBeneath(dirfd, rel, l.resolve)
}

// openDirBeneath opens directory rel under dirfd with O_PATH and resolve
// (beneath: never leaving dirfd, following no symlink).
func openDirBeneath(dirfd int, rel string, resolve uint64) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   unix.O_PATH | unix.O_DIRECTORY | unix.O_CLOEXEC,
			Resolve: resolve,
		})
		if err == unix.EAGAIN {
			continue // see openBeneath
		}
		if err != nil {
			return -1, err
		}
		return fd, nil
	}
}

// openFlags are the open(2) flags passed on to openat2, which, unlike
// open(2), refuses unknown bits: the kernel's FUSE requests carry internal
// ones (__FMODE_EXEC on an exec).
const openFlags = unix.O_ACCMODE | unix.O_APPEND | unix.O_NONBLOCK | unix.O_DSYNC | unix.O_SYNC |
	unix.O_DIRECT | unix.O_NOATIME | unix.O_LARGEFILE | unix.O_TRUNC | unix.O_CREAT | unix.O_EXCL |
	unix.O_DIRECTORY | unix.O_NOFOLLOW | unix.O_PATH | unix.O_CLOEXEC | unix.O_NOCTTY | unix.O_TMPFILE

// Open opens rel with flags (O_NOFOLLOW is always added), resolved beneath
// the layer.
func (l *Layer) Open(rel string, flags int, mode uint32) (int, error) {
	if rel == "" {
		rel = "."
	}
	flags &= openFlags
	if rel != "." {
		// From the cached parent directory: one component to resolve.
		var fd int
		err := l.at(rel, func(dirfd int, name string) error {
			var err error
			fd, err = openBeneath(dirfd, name, flags, mode, l.resolve)
			return err
		})
		return fd, err
	}
	return openBeneath(l.fd, rel, flags, mode, l.resolve)
}

// openBeneath is openat2 of rel under dirfd with resolve (beneath, never
// leaving dirfd), following no symlink.
func openBeneath(dirfd int, rel string, flags int, mode uint32, resolve uint64) (int, error) {
	for {
		fd, err := unix.Openat2(dirfd, rel, &unix.OpenHow{
			Flags:   uint64(flags | unix.O_NOFOLLOW | unix.O_CLOEXEC),
			Mode:    uint64(mode),
			Resolve: resolve,
		})
		if err == unix.EAGAIN {
			// openat2 with RESOLVE_* may ask to retry after a concurrent rename.
			continue
		}
		if err == unix.EPERM && flags&unix.O_NOATIME != 0 {
			// O_NOATIME needs ownership or CAP_FOWNER; fall back.
			flags &^= unix.O_NOATIME
			continue
		}
		return fd, err
	}
}

// at runs op on the parent directory of rel and its final name. The parent
// comes from the layer's cache of directory descriptors.
func (l *Layer) at(rel string, op func(dirfd int, name string) error) error {
	if rel == "" {
		return op(l.fd, ".")
	}
	dir, name := Split(rel)
	return l.inDir(dir, func(dirfd int) error { return op(dirfd, name) })
}

// Lstat returns the attributes of rel without following a final symlink.
func (l *Layer) Lstat(rel string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := l.at(rel, func(dirfd int, name string) error {
		if l.crossing != nil {
			return l.lstatNoXdev(dirfd, name, &st)
		}
		return unix.Fstatat(dirfd, name, &st, unix.AT_SYMLINK_NOFOLLOW)
	})
	return st, err
}

// Statx returns the attributes in mask of rel (statx(2)) without following
// a final symlink.
func (l *Layer) Statx(rel string, mask int) (unix.Statx_t, error) {
	var sx unix.Statx_t
	err := l.at(rel, func(dirfd int, name string) error {
		return unix.Statx(dirfd, name, unix.AT_SYMLINK_NOFOLLOW, mask, &sx)
	})
	return sx, err
}

// Exists reports whether rel exists. A missing name, a name too long to
// exist, or a path through a non-directory or a symlink (never followed) is
// "no"; other errors are errors.
func (l *Layer) Exists(rel string) (bool, error) {
	_, err := l.Lstat(rel)
	if err == nil {
		return true, nil
	}
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP) ||
		errors.Is(err, unix.ENAMETOOLONG) {
		// ENAMETOOLONG: a name that cannot exist, such as the ".wh." probe
		// of a 255-byte name.
		return false, nil
	}
	return false, err
}

// Mkdir creates directory rel.
func (l *Layer) Mkdir(rel string, mode uint32) error {
	return l.at(rel, func(dirfd int, name string) error { return unix.Mkdirat(dirfd, name, mode) })
}

// Mknod creates a special file (or a whiteout, mode S_IFCHR and dev 0).
func (l *Layer) Mknod(rel string, mode uint32, dev uint64) error {
	return l.at(rel, func(dirfd int, name string) error { return unix.Mknodat(dirfd, name, mode, int(dev)) })
}

// Symlink creates rel as a symlink to target. The target is data, never
// resolved by us.
func (l *Layer) Symlink(target, rel string) error {
	return l.at(rel, func(dirfd int, name string) error { return unix.Symlinkat(target, dirfd, name) })
}

// Readlink returns the target of symlink rel.
func (l *Layer) Readlink(rel string) (string, error) {
	var out string
	err := l.at(rel, func(dirfd int, name string) error {
		buf := make([]byte, 256)
		for {
			n, err := unix.Readlinkat(dirfd, name, buf)
			if err != nil {
				return err
			}
			if n < len(buf) {
				out = string(buf[:n])
				return nil
			}
			buf = make([]byte, 2*len(buf))
		}
	})
	return out, err
}

// Unlink removes non-directory rel.
func (l *Layer) Unlink(rel string) error {
	return l.at(rel, func(dirfd int, name string) error { return unix.Unlinkat(dirfd, name, 0) })
}

// Rmdir removes empty directory rel.
func (l *Layer) Rmdir(rel string) error {
	err := l.at(rel, func(dirfd int, name string) error { return unix.Unlinkat(dirfd, name, unix.AT_REMOVEDIR) })
	l.dirs.invalidate(rel)
	return err
}

// Rename renames oldRel in l to newRel in dst (both layers must be on one
// filesystem) with renameat2 flags (RENAME_NOREPLACE, RENAME_EXCHANGE,
// RENAME_WHITEOUT).
//
// Cached descriptors of both names and below are dropped afterwards, so a
// lookup racing with the rename cannot leave one naming the wrong directory.
func (l *Layer) Rename(oldRel string, dst *Layer, newRel string, flags uint) error {
	err := l.at(oldRel, func(odir int, oname string) error {
		return dst.at(newRel, func(ndir int, nname string) error {
			return unix.Renameat2(odir, oname, ndir, nname, flags)
		})
	})
	l.dirs.invalidate(oldRel)
	dst.dirs.invalidate(newRel)
	return err
}

// Link makes newRel in dst a hard link to oldRel in l.
func (l *Layer) Link(oldRel string, dst *Layer, newRel string) error {
	return l.at(oldRel, func(odir int, oname string) error {
		return dst.at(newRel, func(ndir int, nname string) error {
			return unix.Linkat(odir, oname, ndir, nname, 0)
		})
	})
}

// LinkFd makes rel a name of open file fd (an O_TMPFILE file, say).
func (l *Layer) LinkFd(fd int, rel string) error {
	return l.at(rel, func(dirfd int, name string) error {
		// linkat(AT_EMPTY_PATH) needs CAP_DAC_READ_SEARCH, or a kernel
		// that lets the opener of the file link it (6.10); else through
		// /proc, which costs a path walk.
		err := unix.Linkat(fd, "", dirfd, name, unix.AT_EMPTY_PATH)
		if errors.Is(err, unix.EPERM) || errors.Is(err, unix.ENOENT) || errors.Is(err, unix.EINVAL) {
			err = unix.Linkat(unix.AT_FDCWD, ProcFd(fd), dirfd, name, unix.AT_SYMLINK_FOLLOW)
		}
		return err
	})
}

// OpenTmpfile makes an unnamed regular file (O_TMPFILE) in directory dir,
// open with flags (O_RDWR or O_WRONLY), from the cached descriptor of dir
// itself: one call, no path walk.
func (l *Layer) OpenTmpfile(dir string, flags int, mode uint32) (int, error) {
	fd := -1
	err := l.inDir(dir, func(dirfd int) error {
		var err error
		fd, err = unix.Openat(dirfd, ".", unix.O_TMPFILE|unix.O_CLOEXEC|flags, mode)
		return err
	})
	return fd, err
}

// inDir runs op on the descriptor of directory dir (O_PATH), from the
// layer's cache.
func (l *Layer) inDir(dir string, op func(dirfd int) error) error {
	if dir == "" {
		return op(l.fd)
	}
	d := l.dirs.get(dir)
	if d == nil {
		fd, err := l.OpenDir(dir)
		if err != nil {
			return err
		}
		d = l.dirs.add(dir, fd)
	}
	defer l.dirs.release(d)
	return op(d.fd)
}

// Lchown changes the owner of rel without following a final symlink.
func (l *Layer) Lchown(rel string, uid, gid int) error {
	return l.at(rel, func(dirfd int, name string) error {
		return unix.Fchownat(dirfd, name, uid, gid, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// Lutimes sets the access and modification times of rel without following
// a final symlink. UTIME_OMIT in a Timespec leaves that time alone.
func (l *Layer) Lutimes(rel string, ts []unix.Timespec) error {
	return l.at(rel, func(dirfd int, name string) error {
		return unix.UtimesNanoAt(dirfd, name, ts, unix.AT_SYMLINK_NOFOLLOW)
	})
}

// withPath runs op with a /proc/self/fd path naming rel itself (not a
// symlink's target). It is how calls with no *at form (chmod of a possible
// symlink, the xattr calls) reach an object that was resolved safely.
func (l *Layer) withPath(rel string, op func(procPath string) error) error {
	fd, err := l.Open(rel, unix.O_PATH, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	return op(ProcFd(fd))
}

// Chmod sets the permission bits of rel (EOPNOTSUPP for a symlink).
func (l *Layer) Chmod(rel string, mode uint32) error {
	err := l.at(rel, func(dirfd int, name string) error {
		return unix.Fchmodat(dirfd, name, mode, unix.AT_SYMLINK_NOFOLLOW)
	})
	if errors.Is(err, unix.EOPNOTSUPP) {
		// Kernels before 6.6 lack fchmodat2; a symlink answers EOPNOTSUPP again.
		err = l.withPath(rel, func(p string) error { return unix.Chmod(p, mode) })
	}
	return err
}

// Getxattr reads attribute attr of rel into dest (nil dest asks the size).
func (l *Layer) Getxattr(rel, attr string, dest []byte) (int, error) {
	var n int
	err := l.at(rel, func(dirfd int, name string) (err error) {
		n, err = getxattrAt(dirfd, name, attr, dest)
		return err
	})
	return n, err
}

// GetxattrString reads attribute attr of rel; a missing attribute is "" with
// no error.
func (l *Layer) GetxattrString(rel, attr string) (string, error) {
	buf := make([]byte, 256)
	for {
		n, err := l.Getxattr(rel, attr, buf)
		switch {
		case err == nil:
			return string(buf[:n]), nil
		case errors.Is(err, unix.ENODATA) || errors.Is(err, unix.EOPNOTSUPP):
			return "", nil
		case errors.Is(err, unix.ERANGE):
			buf = make([]byte, 4*len(buf))
		default:
			return "", err
		}
	}
}

// Listxattr lists the attribute names of rel.
func (l *Layer) Listxattr(rel string) ([]string, error) {
	var names []string
	err := l.at(rel, func(dirfd int, name string) error {
		var err error
		names, err = listNames(func(buf []byte) (int, error) { return listxattrAt(dirfd, name, buf) })
		return err
	})
	return names, err
}

// ListxattrFd lists the attribute names of open file fd.
func ListxattrFd(fd int) ([]string, error) {
	return listNames(func(buf []byte) (int, error) { return unix.Flistxattr(fd, buf) })
}

// listNames runs a listxattr call, growing the buffer as needed, and splits
// the names. A filesystem without xattrs has none.
func listNames(call func(buf []byte) (int, error)) ([]string, error) {
	buf := make([]byte, 256)
	for {
		n, err := call(buf)
		if errors.Is(err, unix.ERANGE) {
			buf = make([]byte, 4*len(buf))
			continue
		}
		if errors.Is(err, unix.EOPNOTSUPP) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		var names []string
		for _, s := range strings.Split(string(buf[:n]), "\x00") {
			if s != "" {
				names = append(names, s)
			}
		}
		return names, nil
	}
}

// PackNames puts names into dest as listxattr(2) returns them: each
// followed by a NUL. It returns the size the list takes; with an empty
// dest it only measures, and a dest too small is ERANGE.
func PackNames(names []string, dest []byte) (int, error) {
	size := 0
	for _, s := range names {
		size += len(s) + 1
	}
	if len(dest) == 0 {
		return size, nil
	}
	if len(dest) < size {
		return size, unix.ERANGE
	}
	off := 0
	for _, s := range names {
		off += copy(dest[off:], s)
		dest[off] = 0
		off++
	}
	return size, nil
}

// Setxattr sets attribute attr of rel.
func (l *Layer) Setxattr(rel, attr string, data []byte, flags int) error {
	return l.at(rel, func(dirfd int, name string) error {
		return setxattrAt(dirfd, name, attr, data, flags)
	})
}

// Removexattr removes attribute attr of rel.
func (l *Layer) Removexattr(rel, attr string) error {
	return l.at(rel, func(dirfd int, name string) error {
		return removexattrAt(dirfd, name, attr)
	})
}

// Statfs reports the filesystem holding the layer.
func (l *Layer) Statfs() (unix.Statfs_t, error) {
	var st unix.Statfs_t
	err := unix.Fstatfs(l.fd, &st)
	return st, err
}
