package union

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Rename moves oldName in oldParent to newName in newParent (renameat2 flags
// RENAME_NOREPLACE and RENAME_EXCHANGE are honoured). Files are copied up and
// renamed in upper; a directory that exists below is copied up alone (not
// its children) and given a redirect xattr naming its lower path, as kernel
// overlayfs does with redirect_dir=on. The old name gets a whiteout when a
// lower layer still has it, in the same rename (RENAME_WHITEOUT).
//
// moved and replaced, if not nil, are the nodes of the objects at oldName
// and newName: the moved objects now live in upper under their new names,
// and their nodes learn it now, not at their next lookup, since they may
// be open; a directory replaced keeps its last attributes (see
// keepRemoved).
func (u *Union) Rename(oldParent *Entry, oldName string, newParent *Entry, newName string, flags uint32, moved, replaced *Node) error {
	kept := func(error) {}
	if flags&unix.RENAME_EXCHANGE == 0 {
		kept = u.keepRemoved(newParent, newName, replaced)
	}
	err := u.rename(oldParent, oldName, newParent, newName, flags)
	kept(err)
	if err != nil {
		return err
	}
	u.relook(moved, newParent, newName)
	if flags&unix.RENAME_EXCHANGE != 0 {
		u.relook(replaced, oldParent, oldName)
	}
	return nil
}

// relook gives n, if not nil, the state of its object at name in parent,
// if that is n's object.
func (u *Union) relook(n *Node, parent *Entry, name string) {
	if n == nil {
		return
	}
	p := *parent
	u.refresh(&p)
	if e, _, err := u.Lookup(&p, name); err == nil && e.Ino == n.Ino() {
		n.Found(e)
	}
}

// rename is Rename without the nodes.
func (u *Union) rename(oldParent *Entry, oldName string, newParent *Entry, newName string, flags uint32) error {
	if u.upper == nil {
		return errReadOnly
	}
	if len(newName) > 255 {
		return unix.ENAMETOOLONG
	}
	if flags&^(unix.RENAME_NOREPLACE|unix.RENAME_EXCHANGE) != 0 {
		return unix.EINVAL
	}
	u.renameMu.Lock()
	defer u.renameMu.Unlock()
	defer u.forgetSubdirs(nil)
	src, _, err := u.Lookup(oldParent, oldName)
	if err != nil {
		return err
	}
	dst, _, err := u.Lookup(newParent, newName)
	if errors.Is(err, unix.ENOENT) {
		dst = nil
	} else if err != nil {
		return err
	}
	if flags&unix.RENAME_EXCHANGE != 0 {
		if dst == nil {
			return unix.ENOENT
		}
		return u.exchange(oldParent, src, newParent, dst)
	}
	if dst != nil {
		if flags&unix.RENAME_NOREPLACE != 0 {
			return unix.EEXIST
		}
		switch {
		case src.IsDir() && !dst.IsDir():
			return unix.ENOTDIR
		case !src.IsDir() && dst.IsDir():
			return unix.EISDIR
		case dst.IsDir():
			empty, err := u.IsEmpty(dst)
			if err != nil {
				return err
			}
			if !empty {
				return unix.ENOTEMPTY
			}
		}
	}
	if src.IsDir() && len(src.Lower) > 0 && !u.cfg.RedirectDir {
		return unix.EXDEV
	}
	oldBelow, err := u.lowerPositive(oldParent, oldName)
	if err != nil {
		return err
	}
	newBelow, err := u.lowerPositive(newParent, newName)
	if err != nil {
		return err
	}
	if _, err := u.copyUpHeld(newParent, copyReq{size: All}); err != nil {
		return err
	}
	if _, err := u.copyUpHeld(src, copyReq{size: All}); err != nil {
		return err
	}
	if dst != nil {
		if err := u.indexBeforeRemove(dst); err != nil {
			return err
		}
	}
	if src.IsDir() {
		if err := u.markMovedDir(src, oldParent, newParent, newBelow); err != nil {
			return err
		}
	}
	newPath := layer.Join(newParent.Path, newName)
	whiteoutAtNew := false
	if st, err := u.upper.Lstat(newPath); err == nil {
		whiteoutAtNew = layer.IsWhiteout(&st)
		if dst != nil && dst.IsDir() && dst.Upper {
			// The merged view is empty, so it holds only whiteouts; a
			// directory must be empty to be renamed over.
			if err := u.clearWhiteouts(newPath); err != nil {
				return err
			}
		}
	}
	if whiteoutAtNew && src.IsDir() {
		// A directory cannot replace the whiteout (a non-directory): swap,
		// which leaves the whiteout at the old name, where it may be wanted.
		if err := u.upper.Rename(src.Path, u.upper, newPath, unix.RENAME_EXCHANGE); err != nil {
			return err
		}
		if !oldBelow {
			return u.upper.Unlink(src.Path)
		}
		return nil
	}
	var rflags uint
	if oldBelow {
		rflags = unix.RENAME_WHITEOUT
	}
	err = u.upper.Rename(src.Path, u.upper, newPath, rflags)
	if err != nil && rflags != 0 && (errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EPERM)) {
		// No RENAME_WHITEOUT on this filesystem: rename, then whiteout.
		if err = u.upper.Rename(src.Path, u.upper, newPath, 0); err == nil {
			err = u.upper.Mknod(src.Path, layer.WhiteoutMode, layer.WhiteoutDev)
		}
	}
	if err == nil && dst != nil && dst.Index != "" {
		// The replaced name was one of an indexed inode's.
		err = u.addNlink(dst.Index, -1)
	}
	return err
}

// markMovedDir prepares upper directory src to live at a new name: one that
// shows lower directories gets a redirect to them (see redirectFor); one
// that shows none is made opaque if the new name has lower entries it must
// not merge with.
func (u *Union) markMovedDir(src, oldParent, newParent *Entry, newBelow bool) error {
	if len(src.Lower) == 0 {
		if !newBelow {
			return nil
		}
		return u.upper.Setxattr(src.Path, u.format.Name(layer.Opaque), []byte("y"), 0)
	}
	redirect, err := u.redirectFor(src, oldParent.Path == newParent.Path)
	if err != nil || redirect == "" {
		return err
	}
	err = u.upper.Setxattr(src.Path, u.format.Name(layer.Redirect), []byte(redirect), 0)
	if errors.Is(err, unix.ENOSPC) || errors.Is(err, unix.E2BIG) || errors.Is(err, unix.ERANGE) {
		// The redirect does not fit in an xattr (a deep lower path): as
		// kernel overlayfs, EXDEV, so that mv falls back to copying.
		return unix.EXDEV
	}
	if err != nil {
		return fmt.Errorf("set redirect on %s: %w", src.Path, err)
	}
	return nil
}

// exchange swaps two names atomically (RENAME_EXCHANGE); both stay occupied,
// so no whiteout is needed.
func (u *Union) exchange(oldParent, a, newParent, b *Entry) error {
	if !u.cfg.RedirectDir && ((a.IsDir() && len(a.Lower) > 0) || (b.IsDir() && len(b.Lower) > 0)) {
		return unix.EXDEV
	}
	aBelow, err := u.lowerPositive(oldParent, layerBase(a.Path))
	if err != nil {
		return err
	}
	bBelow, err := u.lowerPositive(newParent, layerBase(b.Path))
	if err != nil {
		return err
	}
	for _, e := range []*Entry{oldParent, newParent, a, b} {
		if _, err := u.copyUpHeld(e, copyReq{size: All}); err != nil {
			return err
		}
	}
	if a.IsDir() {
		if err := u.markMovedDir(a, oldParent, newParent, bBelow); err != nil {
			return err
		}
	}
	if b.IsDir() {
		if err := u.markMovedDir(b, newParent, oldParent, aBelow); err != nil {
			return err
		}
	}
	return u.upper.Rename(a.Path, u.upper, b.Path, unix.RENAME_EXCHANGE)
}

func layerBase(p string) string {
	_, b := layer.Split(p)
	return b
}

// redirectFor is the redirect upper directory src (which shows lower
// directories) needs to be moved, as kernel overlayfs's ovl_set_redirect
// makes it: "" if the one it has still holds (an absolute one, or any
// within the same parent); within the same parent its current name; else
// its path in the union, from the root or from the nearest ancestor (or
// itself) with an absolute redirect, each name replaced by the directory's
// relative redirect if it has one. That path is what a lookup walks in
// every lower layer, following the redirects of directories on the way, so
// it stays right when the upper becomes a lower layer in its turn.
func (u *Union) redirectFor(src *Entry, samedir bool) (string, error) {
	redirectOf := func(p string) (string, error) {
		x, err := u.upperDirXattrs(p)
		if errors.Is(err, unix.ENOENT) {
			return "", nil // not in upper: no redirect of its own
		}
		return x.redirect, err
	}
	own, err := redirectOf(src.Path)
	if err != nil {
		return "", err
	}
	if own != "" && (samedir || strings.HasPrefix(own, "/")) {
		return "", nil
	}
	parts := strings.Split(src.Path, "/")
	if samedir {
		return parts[len(parts)-1], nil
	}
	var tail []string
	for i := len(parts) - 1; i >= 0; i-- {
		r := own
		if i < len(parts)-1 {
			if r, err = redirectOf(strings.Join(parts[:i+1], "/")); err != nil {
				return "", err
			}
		}
		if strings.HasPrefix(r, "/") {
			if c, err := layer.Clean(r); err == nil {
				return "/" + layer.Join(c, strings.Join(tail, "/")), nil
			}
		}
		name := parts[i]
		if relativeRedirect(r) {
			name = r
		}
		tail = append([]string{name}, tail...)
	}
	return "/" + strings.Join(tail, "/"), nil
}
