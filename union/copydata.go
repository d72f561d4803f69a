package union

import (
	"errors"
	"fmt"
	"io"

	"github.com/unionmount/unionmount/internal/layer"
	"golang.org/x/sys/unix"
)

// copySize copies the first size bytes (all when size < 0) of regular
// file in (st) to the start of empty file out, keeping holes.
func (u *Union) copySize(out, in int, st *unix.Stat_t, size int64) error {
	if size < 0 || size > st.Size {
		size = st.Size
	}
	if size > 0 && st.Blocks*512 >= st.Size {
		// Fully allocated: no hole to look for (three lseeks and a
		// truncate fewer). Cloning is tried first when all is wanted,
		// unless it failed before from this filesystem.
		if _, no := u.noClone.Load(st.Dev); !no && size == st.Size {
			err := unix.IoctlFileClone(out, in)
			if err == nil {
				return nil
			}
			if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EXDEV) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.ENOTTY) {
				u.noClone.Store(st.Dev, true)
			}
		}
		return copyRange(out, in, 0, size)
	}
	return copyData(out, in, size, size == st.Size)
}

// copyXattrs copies the extended attributes of open file in to out, but
// those skip says no to; those the upper cannot hold are left out, as
// kernel overlayfs does. It returns the names of in's attributes.
func copyXattrs(out, in int, skip func(string) bool) ([]string, error) {
	names, err := layer.ListxattrFd(in)
	if err != nil {
		return nil, fmt.Errorf("list xattrs: %w", err)
	}
	var buf []byte
	for _, n := range names {
		if skip(n) {
			continue
		}
		if buf == nil {
			buf = make([]byte, 4096)
		}
		var sz int
		for {
			sz, err = unix.Fgetxattr(in, n, buf)
			if errors.Is(err, unix.ERANGE) {
				buf = make([]byte, 4*len(buf))
				continue
			}
			break
		}
		if errors.Is(err, unix.ENODATA) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("get xattr %s: %w", n, err)
		}
		if err := unix.Fsetxattr(out, n, buf[:sz], 0); err != nil && !ignorableXattrErr(err) {
			return nil, fmt.Errorf("set xattr %s: %w", n, err)
		}
	}
	return names, nil
}

// ignorableXattrErr: the upper filesystem or namespace can't hold this
// attribute (user.* on a symlink, a security module's label); kernel
// overlayfs skips those too.
func ignorableXattrErr(err error) bool {
	return errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EPERM)
}

// copyData copies size bytes from in to out: by cloning the extents when the
// filesystem can and the whole file is wanted, else range by range over the
// data segments only, so holes stay holes.
func copyData(out, in int, size int64, whole bool) error {
	if whole && size > 0 && unix.IoctlFileClone(out, in) == nil {
		return nil
	}
	var off int64
	for off < size {
		data, err := unix.Seek(in, off, unix.SEEK_DATA)
		if errors.Is(err, unix.ENXIO) {
			break // only a hole remains
		}
		if err != nil {
			// No SEEK_DATA here: treat it all as data.
			data = off
		}
		if data >= size {
			break
		}
		end, err := unix.Seek(in, data, unix.SEEK_HOLE)
		if err != nil || end > size {
			end = size
		}
		if err := copyRange(out, in, data, end-data); err != nil {
			return err
		}
		off = end
	}
	return unix.Ftruncate(out, size)
}

// copyRange copies n bytes at off from in to out at the same offset.
func copyRange(out, in int, off, n int64) error {
	roff, woff := off, off
	for n > 0 {
		c, err := unix.CopyFileRange(in, &roff, out, &woff, int(min(n, 1<<30)), 0)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			if errors.Is(err, unix.EXDEV) || errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
				return copyRangeRW(out, in, roff, n)
			}
			return fmt.Errorf("copy_file_range: %w", err)
		}
		if c == 0 {
			return fmt.Errorf("copy_file_range: %w", io.ErrUnexpectedEOF)
		}
		n -= int64(c)
	}
	return nil
}

// pwriteAll writes all of b at off: a short write (a filesystem filling
// up) is retried for the rest, which then fails with the real error.
func pwriteAll(fd int, b []byte, off int64) error {
	for len(b) > 0 {
		w, err := unix.Pwrite(fd, b, off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("write: %w", err)
		}
		if w == 0 {
			return fmt.Errorf("write: %w", unix.ENOSPC)
		}
		b, off = b[w:], off+int64(w)
	}
	return nil
}

func copyRangeRW(out, in int, off, n int64) error {
	buf := make([]byte, 1<<20)
	for n > 0 {
		c, err := unix.Pread(in, buf[:min(n, int64(len(buf)))], off)
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			return fmt.Errorf("read: %w", err)
		}
		if c == 0 {
			return fmt.Errorf("read: %w", io.ErrUnexpectedEOF)
		}
		if err := pwriteAll(out, buf[:c], off); err != nil {
			return err
		}
		off += int64(c)
		n -= int64(c)
	}
	return nil
}

// CopyData copies size bytes of regular file in to out the way copy-up
// does: by cloning extents where the filesystem can, else over the data
// segments only, so holes stay holes. out ends up size bytes long.
func CopyData(out, in int, size int64) error { return copyData(out, in, size, true) }
