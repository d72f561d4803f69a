package union

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Metadata-only copy-up. chmod, chown, utimes and xattr changes of a lower
// regular file copy up its metadata only: the upper file is sparse at the
// lower file's size and carries the metacopy xattr; its data is read from
// the lower file. Kernel overlayfs writes and reads the same format with
// -o metacopy=on. The first change to the data (a write, truncate, link,
// rename) completes the copy: a complete file is built in workdir/work and
// renamed over the metadata-only one, so a crash or a full disk at any
// point leaves either the metadata-only copy (the lower data in force) or
// the complete copy.

// copyUpMeta makes a metadata-only copy of lower regular file e, with the
// changes of change (if not nil) made to it while it is built; applied
// says they were (see copyReq).
// Preconditions: u.renameMu and the copy-up lock of e.Path are held; e's
// parent is in upper, with attributes pst.
func (u *Union) copyUpMeta(e *Entry, pst *unix.Stat_t, change *SetAttr) (applied bool, err error) {
	done, err := u.copyUpTmpfile(e, metaOnly, pst, change, nil)
	if err != nil {
		return false, err
	}
	if !done {
		src := e.Lower[0]
		st, err := src.Layer.Lstat(src.Path)
		if err != nil {
			return false, err
		}
		tmp, err := u.buildCopy(src, &st, metaOnly, nil)
		if err != nil {
			return false, err
		}
		if err := u.placeCopy(tmp, e.Path, &st, pst); err != nil {
			return false, err
		}
	}
	e.MetaCopy = true
	if e.Data == nil {
		e.Data = &e.Lower[0]
	}
	return done && change != nil, nil
}

// hasMetacopy reports whether upper file p is a metadata-only copy.
func (u *Union) hasMetacopy(p string) bool {
	_, err := u.upper.Getxattr(p, u.format.Name(layer.Metacopy), nil)
	return err == nil
}

// completeMetaCopy replaces metadata-only copy e with a complete one (only
// the first size bytes when size >= 0): the data from below and the upper
// file's own metadata, built in workdir/work and renamed over it, so that a
// failure (ENOSPC, EDQUOT) or a crash leaves the metadata-only copy as it
// was and takes no space. The upper inode changes: files open on the old
// one reopen (see File).
// Preconditions: u.renameMu is held; the copy-up lock of e.Path is not.
func (u *Union) completeMetaCopy(e *Entry, size int64) (err error) {
	unlock := u.copyLocks.lock(e.Path)
	defer unlock()
	if !u.hasMetacopy(e.Path) {
		e.MetaCopy = false
		return nil
	}
	src, p, err := u.dataTop(e)
	if err != nil {
		return err
	}
	ust, err := u.upper.Lstat(e.Path)
	if err != nil {
		return err
	}
	in, err := src.Open(p, unix.O_RDONLY|unix.O_NOATIME, 0)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	var lst unix.Stat_t
	if err := unix.Fstat(in, &lst); err != nil {
		return err
	}
	n := min(ust.Size, lst.Size)
	if size >= 0 && size < n {
		n = size
	}
	tmp := u.tempName()
	defer func() {
		if err != nil {
			_ = u.work.RemoveAll(tmp)
			_ = unix.Syncfs(u.work.FD()) // see the space given back at once
			err = fmt.Errorf("complete copy-up of %s: %w", e.Path, err)
		}
	}()
	out, err := u.work.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(out)
	if err := copyData(out, in, n, n == lst.Size); err != nil {
		return err
	}
	if u.root {
		if err := unix.Fchown(out, int(ust.Uid), int(ust.Gid)); err != nil {
			return err
		}
	}
	if err := unix.Fchmod(out, ust.Mode&^unix.S_IFMT); err != nil {
		return err
	}
	names, err := u.upper.Listxattr(e.Path)
	if err != nil {
		return err
	}
	for _, name := range names {
		if name == u.format.Name(layer.Metacopy) {
			continue
		}
		v, err := u.upper.GetxattrString(e.Path, name)
		if err != nil {
			return err
		}
		if err := unix.Fsetxattr(out, name, []byte(v), 0); err != nil && !ignorableXattrErr(err) {
			return err
		}
	}
	if !u.cfg.NoFsync {
		if err := unix.Fsync(out); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
	}
	// Writing the data is not a change of the file's: keep its times.
	if err := unix.UtimesNanoAt(out, "", []unix.Timespec{ust.Atim, ust.Mtim}, unix.AT_EMPTY_PATH); err != nil {
		return err
	}
	parent := parentOf(e.Path)
	pst, perr := u.upper.Lstat(parent)
	if err := u.work.Rename(tmp, u.upper, e.Path, 0); err != nil {
		return err
	}
	if perr == nil {
		_ = u.upper.Lutimes(parent, []unix.Timespec{pst.Atim, pst.Mtim})
	}
	u.copyGen.Add(1)
	e.MetaCopy = false
	return nil
}
