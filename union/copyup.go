package union

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// copyReq says what a copy-up copies, and what it does on the way.
type copyReq struct {
	// size is All for the whole file, N >= 0 for its first N bytes (a
	// truncate to N), or metaOnly for a metadata-only copy where one is
	// possible (a lower regular file with one name, -o metacopy=on), else
	// the whole file. Anything but metaOnly completes a metadata-only
	// copy.
	size int64
	// change, if not nil, is made to the copy while it is built, before
	// it is visible: one build, not a build then a change. copyUp's
	// applied says it was; if not (the object was in upper already, or the
	// copy was not built that way), the caller makes the changes.
	change *SetAttr
	// opened, if not nil, is set to a read-write descriptor of the copy
	// when the call built it as an unnamed file (the caller closes it);
	// else it is left alone.
	opened *int
}

// All, as copyReq.size, copies the whole file.
const All int64 = -1

// metaOnly, as copyReq.size, makes a metadata-only copy (see metacopy.go).
const metaOnly int64 = -2

// copyUp is the one way into copy-up; it takes the locks it needs (see
// copyUpHeld).
// Preconditions: u.renameMu is not held.
func (u *Union) copyUp(e *Entry, r copyReq) (applied bool, err error) {
	u.renameMu.RLock()
	defer u.renameMu.RUnlock()
	return u.copyUpHeld(e, r)
}

// copyUpHeld makes e exist in upper as r says: a copy of its lower object
// with the same contents, mode, owner, times and xattrs, built as an
// unnamed file in its upper directory (regular files, see copyUpTmpfile)
// or in workdir/work, and linked or renamed into place only when complete,
// so no partial object is ever visible. Parents are copied up first. A
// directory is copied without its children. A lower file with several
// names goes through the hard-link index (see index.go). Racing copy-ups
// of one path copy it once: each takes the copy-up lock of the path. On
// success e.Upper is true (and e.MetaCopy says whether the data is still
// below).
// Preconditions: u.renameMu is held, for reading or writing.
func (u *Union) copyUpHeld(e *Entry, r copyReq) (applied bool, err error) {
	if u.upper == nil {
		return false, errReadOnly
	}
	if e.Upper {
		if e.MetaCopy && r.size != metaOnly {
			return false, u.completeMetaCopy(e, r.size)
		}
		return false, nil
	}
	if r.size == metaOnly && (!u.cfg.MetaCopy || e.Mode != unix.S_IFREG || e.Index != "" || len(e.Lower) == 0) {
		r.size = All // no metadata-only copy possible: a whole one
	}
	pst, err := u.ensureUpperDir(parentOf(e.Path))
	if err != nil {
		return false, err
	}
	unlock := u.copyLocks.lock(e.Path)
	if u.copiedMeanwhile(e) {
		unlock()
		if e.MetaCopy && r.size != metaOnly {
			return false, u.completeMetaCopy(e, r.size)
		}
		return false, nil
	}
	defer unlock()
	if len(e.Lower) == 0 && u.indexedKey(e.Index) == "" {
		return false, fmt.Errorf("copy up %s: no lower object: %w", e.Path, unix.EIO)
	}
	if r.size == metaOnly {
		applied, err = u.copyUpMeta(e, &pst, r.change)
	} else {
		applied, err = u.copyUpOne(e, r.size, &pst, r.change, r.opened)
	}
	if err != nil {
		return false, fmt.Errorf("copy up %s: %w", e.Path, err)
	}
	u.copyGen.Add(1)
	e.Upper = true
	return applied, nil
}

// copiedMeanwhile reports (and notes in e) that e exists in upper already:
// another copy-up may have finished while we waited for its lock.
// Preconditions: the copy-up lock of e.Path is held.
func (u *Union) copiedMeanwhile(e *Entry) bool {
	st, err := u.upper.Lstat(e.Path)
	if err != nil || layer.IsWhiteout(&st) {
		return false
	}
	e.Upper = true
	e.MetaCopy = st.Mode&unix.S_IFMT == unix.S_IFREG && u.hasMetacopy(e.Path)
	if e.MetaCopy && e.Data == nil && len(e.Lower) > 0 {
		e.Data = &e.Lower[0]
	}
	return true
}

func parentOf(p string) string {
	dir, _ := layer.Split(p)
	return dir
}

// ensureUpperDir makes directory p exist in upper, copying it and its
// ancestors up from the lowers as needed, and returns its attributes (a
// copy-up into it keeps its times).
// Preconditions: u.renameMu is held.
func (u *Union) ensureUpperDir(p string) (unix.Stat_t, error) {
	st, err := u.upper.Lstat(p)
	if err == nil && st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return st, nil
	}
	if p == "" {
		return st, fmt.Errorf("upper root: %w", err)
	}
	e, err := u.Resolve(p)
	if err != nil {
		return st, fmt.Errorf("copy up parent %s: %w", p, err)
	}
	if !e.IsDir() {
		return st, unix.ENOTDIR
	}
	if _, err := u.copyUpHeld(e, copyReq{size: All}); err != nil {
		return st, err
	}
	return u.upper.Lstat(p)
}

// copyUpOne copies e's lower object; its parent already is in upper, with
// attributes pst. A regular file is built in place as an unnamed file where
// the upper filesystem can (see copyUpTmpfile), with change made to it.
// Preconditions: the copy-up lock of e.Path is held.
func (u *Union) copyUpOne(e *Entry, size int64, pst *unix.Stat_t, change *SetAttr, opened *int) (applied bool, err error) {
	if e.Index != "" && u.index != nil {
		return false, u.copyUpIndexed(e, size)
	}
	if e.Mode == unix.S_IFREG {
		if done, err := u.copyUpTmpfile(e, size, pst, change, opened); done || err != nil {
			return done && change != nil, err
		}
	}
	src := e.Lower[0]
	st, err := src.Layer.Lstat(src.Path)
	if err != nil {
		return false, err
	}
	tmp, err := u.buildCopy(src, &st, size, e.Data)
	if err != nil {
		return false, err
	}
	return false, u.placeCopy(tmp, e.Path, &st, pst)
}

// copyUpTmpfile copies up regular file e without a name in workdir: the
// copy is an unnamed file (O_TMPFILE) in its upper parent directory, made
// complete there (data as buildCopy's size says, owner, mode, xattrs,
// origin, the changes of change, times), synced when it holds data, and
// only then linked at e.Path. A crash or an error before the link leaves
// nothing behind, so no workdir temporary and no rename are needed; kernel
// overlayfs copies regular files up the same way. Every change is made
// through the descriptors: no path is walked twice.
//
// done is false, with nothing done, where the upper filesystem has no
// O_TMPFILE or the lower file cannot be opened for reading (a user's
// metadata-only copy-up of a file it may not read): the caller builds the
// copy in workdir.
// Preconditions: the copy-up lock of e.Path is held; e's parent is in
// upper, with attributes pst.
func (u *Union) copyUpTmpfile(e *Entry, size int64, pst *unix.Stat_t, change *SetAttr, opened *int) (done bool, err error) {
	if u.noTmpfile.Load() {
		return false, nil
	}
	src := e.Lower[0]
	in, err := src.Layer.Open(src.Path, unix.O_RDONLY|unix.O_NOATIME, 0)
	if errors.Is(err, unix.EACCES) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer unix.Close(in)
	var st unix.Stat_t
	if err := unix.Fstat(in, &st); err != nil {
		return false, err
	}
	if st.Mode&unix.S_IFMT != unix.S_IFREG {
		return false, fmt.Errorf("lower %s is no longer a regular file: %w", src.Path, unix.EIO)
	}
	dir, _ := layer.Split(e.Path)
	out, err := u.upper.OpenTmpfile(dir, unix.O_RDWR, 0o600)
	if errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL) {
		u.noTmpfile.Store(true) // the upper filesystem has no O_TMPFILE
		return false, nil
	}
	if err != nil {
		return false, err
	}
	defer func() {
		if out >= 0 {
			unix.Close(out) // if unlinked, its space is freed now
		}
		if err != nil {
			_ = unix.Syncfs(u.upper.FD()) // see the space given back at once
		}
	}()
	synced := u.cfg.NoFsync
	switch {
	case size == metaOnly:
		if err := unix.Ftruncate(out, st.Size); err != nil {
			return false, err
		}
		if err := unix.Fsetxattr(out, u.format.Name(layer.Metacopy), nil, 0); err != nil {
			return false, fmt.Errorf("set metacopy: %w", err)
		}
		synced = true // no data to sync; the metadata is journalled with the link
	case e.Data != nil:
		// src is itself a metadata-only copy: the data is below it.
		data, err := e.Data.Layer.Open(e.Data.Path, unix.O_RDONLY|unix.O_NOATIME, 0)
		if err != nil {
			return false, err
		}
		want := st.Size
		if size >= 0 && size < want {
			want = size
		}
		var dst unix.Stat_t
		err = unix.Fstat(data, &dst)
		if err == nil {
			err = u.copySize(out, data, &dst, want)
		}
		if err == nil && want > dst.Size {
			err = unix.Ftruncate(out, want)
		}
		unix.Close(data)
		if err != nil {
			return false, err
		}
	default:
		if err := u.copySize(out, in, &st, size); err != nil {
			return false, err
		}
	}
	// Owner before mode (chown clears set-id bits), xattrs after owner
	// (chown drops security.capability), the changes after all that, as if
	// made to the finished copy, times last.
	if u.root {
		if err := unix.Fchown(out, int(st.Uid), int(st.Gid)); err != nil {
			return false, fmt.Errorf("chown: %w", err)
		}
	}
	var c SetAttr
	if change != nil {
		c = *change
		c.Atime, c.Mtime = nil, nil // set with the copy's own, below
	}
	mode := st.Mode &^ unix.S_IFMT
	if c.Mode != nil && c.Uid == nil && c.Gid == nil {
		// A chmod alone: the new mode at once.
		mode, c.Mode = *c.Mode&^unix.S_IFMT, nil
	}
	if err := unix.Fchmod(out, mode); err != nil {
		return false, fmt.Errorf("chmod: %w", err)
	}
	names, err := copyXattrs(out, in, u.format.IsPrivate)
	if err != nil {
		return false, err
	}
	noXattrs, err := u.dropInheritedACLs(out, names)
	if err != nil {
		return false, err
	}
	if err := unix.Fsetxattr(out, u.format.Name(layer.Origin), originValue(&st), 0); err != nil && !ignorableXattrErr(err) {
		return false, fmt.Errorf("set origin: %w", err)
	}
	times := []unix.Timespec{st.Atim, st.Mtim}
	if change != nil {
		if err := c.ApplyFile(out); err != nil {
			return false, err
		}
		if change.Atime != nil {
			times[0] = *change.Atime
		}
		if change.Mtime != nil {
			times[1] = *change.Mtime
		}
	}
	if err := unix.UtimesNanoAt(out, "", times, unix.AT_EMPTY_PATH); err != nil {
		return false, fmt.Errorf("set times: %w", err)
	}
	if !synced {
		if err := unix.Fsync(out); err != nil {
			return false, fmt.Errorf("fsync: %w", err)
		}
	}
	if err := u.upper.LinkFd(out, e.Path); err != nil {
		return false, err
	}
	// A copy-up is no change the user made to the parent: keep its times.
	_ = u.upper.Lutimes(dir, []unix.Timespec{pst.Atim, pst.Mtim})
	e.NoXattrs = noXattrs
	if size == metaOnly && e.Data == nil {
		d := src
		d.Blocks = st.Blocks
		e.Data = &d
	}
	if opened != nil {
		*opened, out = out, -1
	}
	return true, nil
}

// dropInheritedACLs removes from new upper file out the ACLs that a
// default ACL of its directory gave it and its lower file (with xattrs
// names) does not have, and reports whether out is left with no xattrs but
// overlay's own.
func (u *Union) dropInheritedACLs(out int, names []string) (noXattrs bool, err error) {
	has, err := layer.ListxattrFd(out)
	if err != nil {
		return false, fmt.Errorf("list xattrs of the copy: %w", err)
	}
	noXattrs = true
	for _, n := range has {
		if u.format.IsPrivate(n) {
			continue
		}
		if strings.HasPrefix(n, "system.posix_acl_") && !slices.Contains(names, n) {
			if err := unix.Fremovexattr(out, n); err != nil {
				return false, fmt.Errorf("remove inherited %s: %w", n, err)
			}
			continue
		}
		noXattrs = false
	}
	return noXattrs, nil
}

// buildCopy makes a copy of lower object src (st) in workdir/work and
// returns its name there: data (the first size bytes when size >= 0; none,
// with the metacopy mark, when size is metaOnly; from data, not src, when
// src is a metadata-only copy), owner, mode, xattrs, origin and times.
//
// Order matters: owner before mode (chown clears set-id bits), xattrs after
// owner (chown drops security.capability), times last.
func (u *Union) buildCopy(src Object, st *unix.Stat_t, size int64, data *Object) (tmp string, err error) {
	tmp = u.tempName()
	defer func() {
		if err != nil {
			_ = u.work.RemoveAll(tmp)
			_ = unix.Syncfs(u.work.FD()) // see the space given back at once
		}
	}()
	mode := st.Mode & unix.S_IFMT
	perm := st.Mode &^ unix.S_IFMT
	switch mode {
	case unix.S_IFREG:
		switch {
		case size == metaOnly:
			err = u.makeMetaCopy(st, tmp)
		case data != nil:
			// src is itself a metadata-only copy: the data is below it.
			err = u.copyFile(*data, st, tmp, size)
		default:
			err = u.copyFile(src, st, tmp, size)
		}
		if err != nil {
			return "", err
		}
	case unix.S_IFDIR:
		if err := u.work.Mkdir(tmp, 0o700); err != nil {
			return "", err
		}
	case unix.S_IFLNK:
		target, err := src.Layer.Readlink(src.Path)
		if err != nil {
			return "", err
		}
		if err := u.work.Symlink(target, tmp); err != nil {
			return "", err
		}
	default:
		if err := u.work.Mknod(tmp, mode|perm, st.Rdev); err != nil {
			return "", err
		}
	}
	if err := u.copyMeta(src, st, tmp); err != nil {
		return "", err
	}
	if err := u.work.Setxattr(tmp, u.format.Name(layer.Origin), originValue(st), 0); err != nil && !ignorableXattrErr(err) {
		return "", fmt.Errorf("set origin: %w", err)
	}
	if mode != unix.S_IFDIR {
		if err := u.work.Lutimes(tmp, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
			return "", err
		}
	}
	return tmp, nil
}

// placeCopy renames finished copy tmp to upper path p, keeping the times
// of the copy (a directory's are set after the rename, which may touch
// them) and of p's parent: a copy-up is not a change the user made to the
// parent, and kernel overlayfs keeps its times too.
//
// pst, if not nil, holds the parent's attributes from before.
func (u *Union) placeCopy(tmp, p string, st, pst *unix.Stat_t) error {
	parent := parentOf(p)
	if pst == nil {
		if st, err := u.upper.Lstat(parent); err == nil {
			pst = &st
		}
	}
	if err := u.work.Rename(tmp, u.upper, p, unix.RENAME_NOREPLACE); err != nil {
		_ = u.work.RemoveAll(tmp)
		return err
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		if err := u.upper.Lutimes(p, []unix.Timespec{st.Atim, st.Mtim}); err != nil {
			return err
		}
	}
	if pst != nil {
		_ = u.upper.Lutimes(parent, []unix.Timespec{pst.Atim, pst.Mtim})
	}
	return nil
}

// copyMeta gives tmp in workdir/work the owner, mode and xattrs of src.
func (u *Union) copyMeta(src Object, st *unix.Stat_t, tmp string) error {
	if u.root {
		if err := u.work.Lchown(tmp, int(st.Uid), int(st.Gid)); err != nil {
			return fmt.Errorf("chown: %w", err)
		}
	}
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		if err := u.work.Chmod(tmp, st.Mode&^unix.S_IFMT); err != nil {
			return fmt.Errorf("chmod: %w", err)
		}
	}
	names, err := src.Layer.Listxattr(src.Path)
	if err != nil {
		return fmt.Errorf("list xattrs: %w", err)
	}
	for _, n := range names {
		if u.format.IsPrivate(n) {
			continue
		}
		v, err := src.Layer.GetxattrString(src.Path, n)
		if err != nil {
			return fmt.Errorf("get xattr %s: %w", n, err)
		}
		if err := u.work.Setxattr(tmp, n, []byte(v), 0); err != nil && !ignorableXattrErr(err) {
			return fmt.Errorf("set xattr %s: %w", n, err)
		}
	}
	return nil
}

// makeMetaCopy makes tmp a file of st's size with no data, marked as a
// metadata-only copy.
func (u *Union) makeMetaCopy(st *unix.Stat_t, tmp string) error {
	out, err := u.work.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	err = unix.Ftruncate(out, st.Size)
	unix.Close(out)
	if err != nil {
		return err
	}
	return u.work.Setxattr(tmp, u.format.Name(layer.Metacopy), nil, 0)
}

// copyFile copies the first size bytes (all when size < 0) of regular file
// src into a new file tmp in workdir/work, keeping holes.
func (u *Union) copyFile(src Object, st *unix.Stat_t, tmp string, size int64) error {
	in, err := src.Layer.Open(src.Path, unix.O_RDONLY|unix.O_NOATIME, 0)
	if err != nil {
		return err
	}
	defer unix.Close(in)
	out, err := u.work.Open(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return err
	}
	defer unix.Close(out)
	if size < 0 || size > st.Size {
		size = st.Size
	}
	if err := copyData(out, in, size, size == st.Size); err != nil {
		return err
	}
	if !u.cfg.NoFsync {
		if err := unix.Fsync(out); err != nil {
			return fmt.Errorf("fsync: %w", err)
		}
	}
	return nil
}
