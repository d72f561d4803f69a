package union

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Inode flags (chattr(1): FS_IOC_GETFLAGS and FS_IOC_SETFLAGS, and their
// xfs form FS_IOC_FSGETXATTR and FS_IOC_FSSETXATTR) of regular files and
// directories. They are the real object's, as on kernel overlayfs: a lower
// object's until a change copies it up, then the copy's. Where kernel
// overlayfs keeps immutable and append-only in the protattr xattr of an
// upper object, they are read from there too; unionmount sets all flags on
// the copy itself, where the upper filesystem enforces them.

// The inode flag ioctls (linux/fs.h; x/sys/unix names the first two only)
// and the flags that matter here.
const (
	IocGetFlags   = unix.FS_IOC_GETFLAGS
	IocSetFlags   = unix.FS_IOC_SETFLAGS
	IocFsGetXattr = 0x801c581f // _IOR('X', 31, struct fsxattr)
	IocFsSetXattr = 0x401c5820 // _IOW('X', 32, struct fsxattr)

	flagImmutable  = 0x10 // FS_IMMUTABLE_FL
	flagAppend     = 0x20 // FS_APPEND_FL
	xflagImmutable = 0x08 // FS_XFLAG_IMMUTABLE
	xflagAppend    = 0x10 // FS_XFLAG_APPEND
)

// FlagIoctlSize is the size of the argument of inode flag ioctl cmd (an
// int, or a struct fsxattr), 0 for other ioctls.
func FlagIoctlSize(cmd uint32) int {
	switch cmd {
	case IocGetFlags, IocSetFlags:
		return 4
	case IocFsGetXattr, IocFsSetXattr:
		return 28
	}
	return 0
}

// protFlags are the flags kernel overlayfs keeps in the protattr xattr, by
// the letters it writes, with their FS_IOC_GETFLAGS and xfs forms.
var protFlags = []struct {
	letter      byte
	flag, xflag uint32
}{{'a', flagAppend, xflagAppend}, {'i', flagImmutable, xflagImmutable}}

// FlagIoctl runs inode flag ioctl cmd (see FlagIoctlSize) on r's object
// with argument arg: one that reads fills arg from the visible object; one
// that sets copies the object up first and applies arg to the copy,
// dropping a protattr xattr of it (kernel overlayfs's), whose flags arg
// holds now.
func (u *Union) FlagIoctl(r Ref, cmd uint32, arg []byte) error {
	n := r.UnionNode()
	path, ok := r.UnionPath()
	if !ok {
		return unix.ENOENT
	}
	set := cmd == IocSetFlags || cmd == IocFsSetXattr
	e := u.entryOf(n, path, set)
	err := u.flagIoctl(e, cmd, arg)
	n.learn(e)
	return err
}

func (u *Union) flagIoctl(e *Entry, cmd uint32, arg []byte) error {
	if e.Mode != unix.S_IFREG && e.Mode != unix.S_IFDIR {
		return unix.ENOTTY
	}
	if len(arg) < FlagIoctlSize(cmd) || FlagIoctlSize(cmd) == 0 {
		return unix.EINVAL
	}
	set := cmd == IocSetFlags || cmd == IocFsSetXattr
	l, p, err := u.top(e)
	if err != nil {
		return err
	}
	if set {
		if _, err := u.copyUp(e, copyReq{size: All}); err != nil {
			return err
		}
		l, p = u.upper, e.Path
	}
	fd, err := l.Open(p, unix.O_RDONLY|unix.O_NONBLOCK|unix.O_NOATIME, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	if set {
		name := u.format.Name(layer.ProtAttr)
		if err := unix.Fremovexattr(fd, name); err != nil && !errors.Is(err, unix.ENODATA) && !ignorableXattrErr(err) {
			return fmt.Errorf("remove %s: %w", name, err)
		}
	}
	if _, _, en := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), uintptr(cmd), uintptr(unsafe.Pointer(&arg[0]))); en != 0 {
		return en
	}
	if set || l != u.upper {
		return nil
	}
	prot, err := l.GetxattrString(p, u.format.Name(layer.ProtAttr))
	if err != nil {
		return err
	}
	flags := binary.NativeEndian.Uint32(arg) // the flags, or fsx_xflags first in struct fsxattr
	for _, f := range protFlags {
		if strings.IndexByte(prot, f.letter) >= 0 {
			if cmd == IocGetFlags {
				flags |= f.flag
			} else {
				flags |= f.xflag
			}
		}
	}
	binary.NativeEndian.PutUint32(arg, flags)
	return nil
}
