package union

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Unlink removes non-directory name from parent.
func (u *Union) Unlink(parent *Entry, name string) error { return u.remove(parent, name, false) }

// Rmdir removes directory name from parent; ENOTEMPTY unless the merged
// view of it is empty. n, if not nil, is its node, which keeps the
// directory's last attributes (see keepRemoved).
func (u *Union) Rmdir(parent *Entry, name string, n *Node) error {
	kept := u.keepRemoved(parent, name, n)
	err := u.remove(parent, name, true)
	kept(err)
	return err
}

// remove deletes name: the upper object if any, then, if a lower layer still
// has the name, a whiteout in its place. Replacing an upper object with a
// whiteout is one rename, so the name never shows the lower object between.
func (u *Union) remove(parent *Entry, name string, dir bool) error {
	if u.upper == nil {
		return errReadOnly
	}
	u.renameMu.RLock()
	defer u.renameMu.RUnlock()
	e, _, err := u.Lookup(parent, name)
	if err != nil {
		return err
	}
	if err := u.indexBeforeRemove(e); err != nil {
		return err
	}
	if dir {
		defer u.forgetSubdirs(&parent.Path)
	}
	if err := u.removeEntry(parent, name, e, dir); err != nil {
		return err
	}
	if e.Index != "" {
		return u.addNlink(e.Index, -1)
	}
	return nil
}

func (u *Union) removeEntry(parent *Entry, name string, e *Entry, dir bool) error {
	switch {
	case dir && !e.IsDir():
		return unix.ENOTDIR
	case !dir && e.IsDir():
		return unix.EISDIR
	}
	if dir {
		empty, err := u.IsEmpty(e)
		if err != nil {
			return err
		}
		if !empty {
			return unix.ENOTEMPTY
		}
	}
	below, err := u.lowerPositive(parent, name)
	if err != nil {
		return err
	}
	if !below {
		if dir {
			if err := u.clearWhiteouts(e.Path); err != nil {
				return err
			}
			return u.upper.Rmdir(e.Path)
		}
		return u.upper.Unlink(e.Path)
	}
	if _, err := u.copyUpHeld(parent, copyReq{size: All}); err != nil {
		return err
	}
	if !e.Upper {
		return u.upper.Mknod(e.Path, layer.WhiteoutMode, layer.WhiteoutDev)
	}
	tmp := u.tempName()
	if err := u.work.Mknod(tmp, layer.WhiteoutMode, layer.WhiteoutDev); err != nil {
		return fmt.Errorf("make whiteout: %w", err)
	}
	if !dir {
		if err := u.work.Rename(tmp, u.upper, e.Path, 0); err != nil {
			_ = u.work.Unlink(tmp)
			return err
		}
		return nil
	}
	if err := u.work.Rename(tmp, u.upper, e.Path, unix.RENAME_EXCHANGE); err != nil {
		_ = u.work.Unlink(tmp)
		return err
	}
	// The old upper directory, now in workdir/work, holds only whiteouts.
	return u.work.RemoveAll(tmp)
}
