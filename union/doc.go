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
//   - node.go: Node, the engine's state of one object between requests
//     (for the FUSE adapter, one per inode); Ref, a caller's handle on an
//     object (its node and where it is now); the operations on a Ref, each
//     of which keeps the node up to date itself.
//   - file.go: File, an open file that follows its object: to the upper
//     copy after a copy-up, from the data below a metadata-only copy to the
//     complete copy at its first write.
//   - unnamed.go: operations on an object with no name any more (unlinked
//     while open, O_TMPFILE), through its open files.
//   - whiteout.go: recognising and clearing whiteouts.
//   - ino.go: inode numbers (device numbering, origin), stable across
//     copy-up and remounts.
//   - readdir.go: merged directory listings, subdirectory counts;
//     listing.go: a listing's stable offsets.
//   - copyup.go: copyUp, the one way into copy-up (whole, truncated to N,
//     or metadata only; it takes its own locks), and the copy of files,
//     directories, symlinks and special files: regular files built as
//     unnamed files (O_TMPFILE) in their upper directory and linked when
//     complete, the rest built in workdir/work and renamed into place.
//   - copydata.go: copying data (clone, copy_file_range, holes kept) and
//     xattrs.
//   - metacopy.go: metadata-only copies, and completing one with its data.
//   - index.go: the hard-link index: lower files with several names stay
//     one inode after copy-up (an index of upper inodes by lower origin).
//   - open.go: opening an object (copy-up for writing, O_TRUNC).
//   - attr.go: attributes (stat, setattr, readlink).
//   - xattr.go: extended attributes, overlay's own hidden.
//   - create.go, remove.go, rename.go: namespace changes with whiteouts.
//   - walk.go, offline.go: the engine for the offline tools (layertool).
//   - lock.go: the lock order, and per-key locks.
//
// Where each row of SPEC §4 lives:
//
//	create / mknod / symlink / mkdir     create.go (Create, Mknod, Symlink, Mkdir; parents: copyup.go ensureUpperDir)
//	mkdir where a whiteout stands        create.go (create: opaque dir), whiteout.go (whiteoutBelow)
//	open for write, O_TRUNC, truncate    file.go (OpenFile), open.go (Open), node.go (SetAttr) -> copyup.go (copyUp)
//	chmod, chown, utimes, *xattr         node.go (SetAttr, Setxattr, Removexattr) -> copyup.go, metacopy.go
//	open read-only, stat, readdir, readlink
//	                                     open.go (Open), attr.go (Stat, Readlink), readdir.go, listing.go
//	unlink / rmdir                       remove.go (whiteout where lowers have the name: whiteout.go lowerPositive)
//	rmdir of a merged directory          remove.go (IsEmpty, readdir.go), whiteout.go (clearWhiteouts)
//	link                                 node.go (Link) -> create.go (link); index.go for lower hard links
//	rename of a file / directory         rename.go (redirect xattr for lower directories)
//	readdir of a merged directory        readdir.go (merge, d_ino), listing.go (stable offsets)
//
// SPEC §5: a read-only file follows a copy-up (file.go, File.follow);
// f*() on a read-only or unlinked file (unnamed.go); link counts of lower
// hard links (index.go); d_ino = st_ino, stable across copy-up (ino.go).

// The on-disk format (xattr names, whiteout forms, origin values) is defined
// once, in internal/layer/format.go.
//
// Paths given to the engine are union paths: relative, slash-separated, ""
// for the root. A union path is also the object's path in the upper layer;
// lower paths can differ because of redirected directories, so an Entry
// carries its own lower paths.
package union
