package layer

import (
	"runtime"
	"strconv"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// The xattr calls relative to a directory descriptor (Linux 6.13:
// getxattrat, setxattrat, listxattrat, removexattrat) cost a third to a half
// of their l* forms on a /proc/self/fd/N/name path, which walk procfs first.
// On older kernels the l* forms on that path are used instead.

// Syscall numbers of the *xattrat calls: the same on every architecture
// (the generic table), which x/sys/unix names but does not wrap.
const (
	sysSetxattrat    = 463
	sysGetxattrat    = 464
	sysListxattrat   = 465
	sysRemovexattrat = 466
)

// noXattrat is set once the kernel answered ENOSYS to an *xattrat call.
var noXattrat atomic.Bool

// xattrArgs is the kernel's struct xattr_args.
type xattrArgs struct {
	value uint64
	size  uint32
	flags uint32
}

// procPath names dirfd's entry name through /proc, for the l* xattr calls
// on kernels without the *at forms. It resolves nothing but the magic link
// to dirfd itself.
func procPath(dirfd int, name string) string { return ProcFd(dirfd) + "/" + name }

// ProcFd names open descriptor fd for calls that take a path (the object
// itself, not a symlink's target, when it was opened O_PATH|O_NOFOLLOW).
func ProcFd(fd int) string { return "/proc/self/fd/" + strconv.Itoa(fd) }

// cstrings converts name and attr for a syscall.
func cstrings(name, attr string) (*byte, *byte, error) {
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return nil, nil, err
	}
	a, err := unix.BytePtrFromString(attr)
	return p, a, err
}

// result turns a raw syscall result into Go's, noting ENOSYS (the caller
// then falls back).
func result(r, _ uintptr, e unix.Errno) (int, error) {
	if e == unix.ENOSYS {
		noXattrat.Store(true)
	}
	if e != 0 {
		return 0, e
	}
	return int(r), nil
}

// getxattrAt reads attribute attr of name in dirfd, not following a symlink.
func getxattrAt(dirfd int, name, attr string, dest []byte) (int, error) {
	if noXattrat.Load() {
		return unix.Lgetxattr(procPath(dirfd, name), attr, dest)
	}
	p, a, err := cstrings(name, attr)
	if err != nil {
		return 0, err
	}
	args := &xattrArgs{size: uint32(len(dest))}
	if len(dest) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&dest[0])))
	}
	n, err := result(unix.Syscall6(sysGetxattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), unix.AT_SYMLINK_NOFOLLOW,
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(args)), unsafe.Sizeof(*args)))
	runtime.KeepAlive(dest)
	if err == unix.ENOSYS {
		return unix.Lgetxattr(procPath(dirfd, name), attr, dest)
	}
	return n, err
}

// setxattrAt sets attribute attr of name in dirfd, not following a symlink.
func setxattrAt(dirfd int, name, attr string, data []byte, flags int) error {
	if noXattrat.Load() {
		return unix.Lsetxattr(procPath(dirfd, name), attr, data, flags)
	}
	p, a, err := cstrings(name, attr)
	if err != nil {
		return err
	}
	args := &xattrArgs{size: uint32(len(data)), flags: uint32(flags)}
	if len(data) > 0 {
		args.value = uint64(uintptr(unsafe.Pointer(&data[0])))
	}
	_, err = result(unix.Syscall6(sysSetxattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), unix.AT_SYMLINK_NOFOLLOW,
		uintptr(unsafe.Pointer(a)), uintptr(unsafe.Pointer(args)), unsafe.Sizeof(*args)))
	runtime.KeepAlive(data)
	if err == unix.ENOSYS {
		return unix.Lsetxattr(procPath(dirfd, name), attr, data, flags)
	}
	return err
}

// listxattrAt lists the attribute names of name in dirfd into buf, not
// following a symlink.
func listxattrAt(dirfd int, name string, buf []byte) (int, error) {
	if noXattrat.Load() {
		return unix.Llistxattr(procPath(dirfd, name), buf)
	}
	p, err := unix.BytePtrFromString(name)
	if err != nil {
		return 0, err
	}
	var b unsafe.Pointer
	if len(buf) > 0 {
		b = unsafe.Pointer(&buf[0])
	}
	n, err := result(unix.Syscall6(sysListxattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), unix.AT_SYMLINK_NOFOLLOW,
		uintptr(b), uintptr(len(buf)), 0))
	if err == unix.ENOSYS {
		return unix.Llistxattr(procPath(dirfd, name), buf)
	}
	return n, err
}

// removexattrAt removes attribute attr of name in dirfd, not following a
// symlink.
func removexattrAt(dirfd int, name, attr string) error {
	if noXattrat.Load() {
		return unix.Lremovexattr(procPath(dirfd, name), attr)
	}
	p, a, err := cstrings(name, attr)
	if err != nil {
		return err
	}
	_, err = result(unix.Syscall6(sysRemovexattrat, uintptr(dirfd), uintptr(unsafe.Pointer(p)), unix.AT_SYMLINK_NOFOLLOW,
		uintptr(unsafe.Pointer(a)), 0, 0))
	if err == unix.ENOSYS {
		return unix.Lremovexattr(procPath(dirfd, name), attr)
	}
	return err
}
