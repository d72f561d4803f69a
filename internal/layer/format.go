package layer

import (
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// The on-disk format is kernel overlayfs's, so that an upper written by one
// mounts with the other. Every name of it is defined here and nowhere else.
const (
	// TrustedPrefix is the xattr namespace of overlay metadata when mounting
	// as root.
	TrustedPrefix = "trusted.overlay."
	// UserPrefix is the namespace with -o userxattr or when not root.
	UserPrefix = "user.overlay."

	// Opaque marks an upper directory whose lower counterparts are hidden
	// ("y"), or a directory that may hold xattr whiteouts ("x").
	Opaque = "opaque"
	// Redirect names the lower directory a renamed directory came from: a
	// bare name in the same parent, or an absolute path from the layer root.
	Redirect = "redirect"
	// XWhiteout marks a zero-size regular file as a whiteout inside a
	// directory whose opaque xattr is "x" (kernel 6.7 "xwhiteouts").
	XWhiteout = "whiteout"
	// Origin is unionmount's own record of the lower object an upper object
	// was copied up from, as "dev:ino" in hex, so that inode numbers stay
	// the same across copy-up and remounts. Kernel overlayfs keeps its own
	// "origin" as a file handle; this name does not collide with it and, in
	// the overlay namespace, stays hidden under the kernel too.
	Origin = "unionmount.origin"
	// Nlink is unionmount's link count of an indexed inode (a lower file
	// with several names, once one name was copied up), kept on the index
	// entry: the names the union shows, not the links on disk.
	Nlink = "unionmount.nlink"
	// IndexDir, in the workdir, holds one hard link per indexed inode,
	// named by its lower origin, so every name of a lower file with several
	// names shares one upper inode after copy-up (kernel "index=on" keeps a
	// "index" directory of its own, in a format of file handles).
	IndexDir = "unionmount-index"

	// ProtAttr is where kernel overlayfs keeps the immutable and
	// append-only inode flags of an upper object ("i", "a"), not on the
	// object itself (whose copy-ups of children that would stop).
	ProtAttr = "protattr"

	// FuseOverlayfsOpaque is fuse-overlayfs's opaque marker, read only.
	FuseOverlayfsOpaque = "user.fuseoverlayfs.opaque"

	// WhiteoutPrefix starts an OCI/aufs whiteout file name, read only.
	WhiteoutPrefix = ".wh."
	// OpaqueWhiteout is the OCI/aufs opaque-directory marker entry, read only.
	OpaqueWhiteout = ".wh..wh..opq"
)

// Format is the xattr namespace in force for one mount.
type Format struct {
	// Prefix is TrustedPrefix or UserPrefix.
	Prefix string
}

// Name is the full xattr name of overlay attribute attr ("opaque", ...).
func (f Format) Name(attr string) string { return f.Prefix + attr }

// IsPrivate reports whether xattr name belongs to the overlay namespace in
// force, which the mount never shows or lets users set.
func (f Format) IsPrivate(name string) bool { return strings.HasPrefix(name, f.Prefix) }

// IsWhiteout reports whether st is a kernel-format whiteout: a character
// device with device number 0:0.
func IsWhiteout(st *unix.Stat_t) bool {
	return st.Mode&unix.S_IFMT == unix.S_IFCHR && st.Rdev == 0
}

// WhiteoutMode and WhiteoutDev are what mknod gets to make a whiteout.
const (
	WhiteoutMode = unix.S_IFCHR // permissions 0000
	WhiteoutDev  = 0
)

// WhiteoutTarget returns NAME for an OCI whiteout file name ".wh.NAME".
func WhiteoutTarget(name string) (string, bool) {
	if !strings.HasPrefix(name, WhiteoutPrefix) || name == OpaqueWhiteout {
		return "", false
	}
	return name[len(WhiteoutPrefix):], true
}

// IsOpaqueValue reports whether an opaque xattr value makes a directory
// opaque ("y"); "x" only says the directory may hold xattr whiteouts.
func IsOpaqueValue(v string) bool { return v == "y" }

// Metacopy marks an upper regular file whose data is still in a lower layer:
// a metadata-only copy-up (chmod, chown, utimes, xattrs of a lower file).
// The format is kernel overlayfs's (-o metacopy=on): an empty value, the
// upper file sparse at the lower file's size; an overlay.redirect on the
// file, if any, names the lower data file by absolute path.
const Metacopy = "metacopy"

// OriginValue is what the Origin xattr holds for lower object (dev, ino).
func OriginValue(dev, ino uint64) string {
	return strconv.FormatUint(dev, 16) + ":" + strconv.FormatUint(ino, 16)
}

// ParseOrigin reads an Origin xattr value; ok is false if it is malformed.
func ParseOrigin(v string) (dev, ino uint64, ok bool) {
	d, i, ok := strings.Cut(v, ":")
	if !ok {
		return 0, 0, false
	}
	dev, err1 := strconv.ParseUint(d, 16, 64)
	ino, err2 := strconv.ParseUint(i, 16, 64)
	return dev, ino, err1 == nil && err2 == nil
}
