// Package union is the union engine: it layers one writable upper directory
// over read-only lower directories and answers every question about the
// merged tree. It knows nothing of FUSE; the fusefs package translates kernel
// requests into calls on a *Union.
//
// Map of the package, one concern per file (as kernel overlayfs's
// fs/overlayfs and gVisor's fsimpl/overlay):
//
//   - union.go: Config, New (start-up checks, workdir lock, workdir/work).
//   - lookup.go: Entry (the union stack of one path), Object, Root, Lookup
//     and Resolve: the stack walked top down honouring whiteouts, opaque and
//     redirected directories.
//   - whiteout.go: recognising and clearing whiteouts.
//   - ino.go: inode numbers (device numbering, origin), stable across
//     copy-up and remounts.
//   - readdir.go: merged directory listings, subdirectory counts.
//   - copyup.go: copy-up of files, directories, symlinks and special files:
//     regular files built as unnamed files (O_TMPFILE) in their upper
//     directory and linked when complete, the rest built in workdir/work
//     and renamed into place.
//   - copydata.go: copying data (clone, copy_file_range, holes kept) and
//     xattrs.
//   - metacopy.go: metadata-only copy-up, and completing it with the data.
//   - index.go: the hard-link index: lower files with several names stay
//     one inode after copy-up (an index of upper inodes by lower origin).
//   - open.go: opening an object (copy-up for writing, O_TRUNC).
//   - attr.go: attributes (stat, setattr, readlink).
//   - xattr.go: extended attributes, overlay's own hidden.
//   - create.go, remove.go, rename.go: namespace changes with whiteouts.
//   - walk.go, offline.go: the engine for the offline tools (layertool).
//   - lock.go: the lock order, and per-key locks.
//
// The on-disk format (xattr names, whiteout forms, origin values) is defined
// once, in internal/layer/format.go.
//
// Paths given to the engine are union paths: relative, slash-separated, ""
// for the root. A union path is also the object's path in the upper layer;
// lower paths can differ because of redirected directories, so an Entry
// carries its own lower paths.
package union
