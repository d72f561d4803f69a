package union

import (
	"errors"

	"github.com/unionmount/unionmount/internal/layer"
	"golang.org/x/sys/unix"
)

// getxattr reads xattr name of e; overlay's own attributes do not exist for
// users.
func (u *Union) getxattr(e *Entry, name string, dest []byte) (int, error) {
	if u.format.IsPrivate(name) || noXattrs(e) {
		return 0, unix.ENODATA
	}
	l, p, err := u.top(e)
	if err != nil {
		return 0, err
	}
	return l.Getxattr(p, name, dest)
}

// noXattrs reports whether e's visible object is known to have no xattrs
// but overlay's own.
func noXattrs(e *Entry) bool { return e.Upper && e.NoXattrs && e.Index == "" && !e.IsDir() }

// listxattr lists e's xattr names, without overlay's own.
func (u *Union) listxattr(e *Entry) ([]string, error) {
	if noXattrs(e) {
		return nil, nil
	}
	l, p, err := u.top(e)
	if err != nil {
		return nil, err
	}
	names, err := l.Listxattr(p)
	if err != nil {
		return nil, err
	}
	out := names[:0]
	for _, n := range names {
		if !u.format.IsPrivate(n) {
			out = append(out, n)
		}
	}
	return out, nil
}

// setxattr sets xattr name of e after copying it up.
func (u *Union) setxattr(e *Entry, name string, value []byte, flags int) error {
	if u.format.IsPrivate(name) {
		return unix.EPERM
	}
	if u.upper == nil {
		return errReadOnly
	}
	obj, err := u.copiedForXattrs(e)
	if err != nil {
		return err
	}
	defer unix.Close(obj)
	return unix.Setxattr(layer.ProcFd(obj), name, value, flags)
}

// copiedForXattrs copies e up (its metadata, at least) and opens its upper
// object (O_PATH) for an xattr change; e no longer counts as having none.
func (u *Union) copiedForXattrs(e *Entry) (int, error) {
	if _, err := u.copyUp(e, copyReq{size: metaOnly}); err != nil {
		return -1, err
	}
	e.NoXattrs = false
	return u.upperObject(e.Path, e.Mode)
}

// removexattr removes xattr name of e, copying it up only if it has it.
func (u *Union) removexattr(e *Entry, name string) error {
	if u.format.IsPrivate(name) {
		return unix.EPERM
	}
	if u.upper == nil {
		return errReadOnly
	}
	if !e.Upper {
		l, p, err := u.top(e)
		if err != nil {
			return err
		}
		if _, err := l.Getxattr(p, name, nil); err != nil {
			if errors.Is(err, unix.ENODATA) {
				return unix.ENODATA
			}
			return err
		}
	}
	obj, err := u.copiedForXattrs(e)
	if err != nil {
		return err
	}
	defer unix.Close(obj)
	return unix.Removexattr(layer.ProcFd(obj), name)
}
