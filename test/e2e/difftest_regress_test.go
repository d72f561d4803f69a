package e2e

// Regression tests found by the differential tester (TestDifferentialRandom),
// each the shrunk case it printed, renamed after what it shows. Each runs
// on kernel overlayfs, unionmount and ext4 like the tester does (checkSeq).

import "testing"

// Found by TestDifferentialRandom, seed 4: tree:unreadable:unionmount.
// A lower directory renamed into a directory of another layer gets the
// redirect "/a/d"; in lower1, "a" is a symlink. Following the redirect must
// stop there (a non-directory ends the lookup); unionmount failed the whole
// listing of d/a with ELOOP.
func TestDiffRedirectThroughLowerSymlinkListing(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("a/d/c"),
			},
			{
				Symlink("a", "e/b"),
				Symlink("d/a/e", "../../b/c"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "a/d", Path2: "d/a/b"},
		},
	})
}

// Found by TestDifferentialRandom, seed 193: the same, the symlink being
// the redirect's first component in the lower layer.
func TestDiffRedirectThroughLowerSymlinkSelf(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("d/e/a"),
			},
			{
				File("a/e/b", "x"),
				Symlink("d", "d"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "d/e/a", Path2: "a/e/d"},
		},
	})
}

// Found by TestDifferentialRandom, seed 322: op:rename:ok/ELOOP. Renaming a
// file over a redirected directory's old place fails with ELOOP.
func TestDiffRedirectThroughLowerSymlinkRename(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("c/c/b"),
			},
			{
				Dir("e/e/d"),
			},
			{
				File("a/e", ""),
				Symlink("c", "e"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "c/c", Path2: "e/b"},
			{Kind: gLink, Path: "a/e", Path2: "e/e/d/b"},
			{Kind: gRename, Path: "e/e/d/b", Path2: "e/b", Flags: 2},
		},
	})
}

// Found by TestDifferentialRandom, seed 82: tree:only in unionmount. After
// RENAME_EXCHANGE of lower dir a/c and lower fifo b, upper b carries the
// redirect "/a/c". In lower1 "a" is a regular file, which hides lower2's
// a/c; unionmount followed the redirect past it and showed lower2's a/c/c
// as b/c.
func TestDiffRedirectStopsAtLowerFile(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("a/c/b", "x"),
			},
			{
				File("a", ""),
			},
			{
				Fifo("b"),
				File("a/c/c", "x"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "a/c", Path2: "b", Flags: 2},
		},
	})
}

// Found by TestDifferentialRandom, seeds 325 and 382: tree:mode. root
// creates a file with mode 06711 in a set-group-ID directory of another
// group: it gets the directory's group and keeps both bits (root has
// CAP_FSETID), as on ext4 and kernel overlayfs; unionmount lost them.
func TestDiffCreateSetuidInSetgidDir(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("a/a").WithMode(0o2775).WithOwner(65534, 65534),
			},
		},
		Ops: []genOp{
			{Kind: gCreate, Path: "a/a/a", Data: "x", Mode: 0o6711},
			{Kind: gStat, Path: "a/a/a"},
		},
	})
}

// Found by TestDifferentialRandom, seed 1143: tree:xattrs. fsetxattr on a
// descriptor of a file unlinked since: unionmount set the xattr on the
// mount's root directory instead (kernel and ext4: on the open file).
func TestDiffFsetxattrOnUnlinkedFile(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("a", "x"),
			},
		},
		Ops: []genOp{
			{Kind: gOpen, Path: "a", Key: "fd0", Flags: 2},
			{Kind: gUnlink, Path: "a"},
			{Kind: gFsetxattr, Data: "v", Name: "user.fd", Key: "fd0"},
			{Kind: gListxattr, Path: "."},
		},
	})
}

// The same with fchmod: it must change the unlinked file, not the root.
func TestDiffFchmodOnUnlinkedFile(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("a", "x"),
			},
		},
		Ops: []genOp{
			{Kind: gOpen, Path: "a", Key: "fd0", Flags: 2},
			{Kind: gUnlink, Path: "a"},
			{Kind: gFchmod, Mode: 0o600, Key: "fd0"},
			{Kind: gFstat, Key: "fd0"},
			{Kind: gStat, Path: "."},
		},
	})
}

// Found by TestDifferentialRandom, seed 1207: op:read:ok/EIO. Opening one
// name of a lower hard-link pair for writing copies it up (indexed); then
// reading the other name fails with EIO on unionmount.
func TestDiffReadOtherNameOfCopiedUpHardlink(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("a/e", "x"),
				Hardlink("d", "a/e"),
			},
		},
		Ops: []genOp{
			{Kind: gOpen, Path: "d", Key: "fd0", Flags: 2},
			{Kind: gRead, Path: "a/e"},
		},
	})
}

// Found by TestDifferentialRandom, seed 5458: op:stat:ok/EIO. The same as
// the test above with lstat: the other name of a lower hard link copied up
// by an open for writing gives EIO.
func TestDiffStatOtherNameOfCopiedUpHardlink(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("b", "x"),
				Hardlink("c/a/a", "b"),
			},
		},
		Ops: []genOp{
			{Kind: gOpen, Path: "b", Key: "fd0", Flags: 2},
			{Kind: gStat, Path: "c/a/a"},
		},
	})
}

// Found by TestDifferentialRandom, seed 5216: op:open:ok/EIO. A lower file
// with three names in a lower layer under another one: link one name to a
// new one (copy-up through the index), then open two of the old names.
func TestDiffOpenNamesAfterLinkingLowerHardlink(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("b/a/e"),
			},
			{
				File("b/d", "x"),
				Hardlink("b/a/d", "b/d"),
				Hardlink("e/c/b", "b/d"),
			},
		},
		Ops: []genOp{
			{Kind: gLink, Path: "b/a/d", Path2: "b/a/e/c"},
			{Kind: gOpen, Path: "b/a/d", Key: "fd0"},
			{Kind: gOpen, Path: "e/c/b", Key: "fd2"},
			{Kind: gRead, Path: "b/a/e/c"},
		},
	})
}

// Found by TestDifferentialRandom, seed 5619: op:fsetxattr:EEXIST/EROFS.
// fsetxattr through a read-only descriptor of a lower file unlinked since:
// ext4 sets it; unionmount said EROFS (kernel overlayfs fails too, with
// EEXIST; SPEC §5 wants it to work).
func TestDiffFsetxattrOnUnlinkedLowerFile(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("a/a/c", "x"),
			},
		},
		Ops: []genOp{
			{Kind: gOpen, Path: "a/a/c", Key: "fd0"},
			{Kind: gUnlink, Path: "a/a/c"},
			{Kind: gFsetxattr, Data: "v", Name: "user.fd", Key: "fd0"},
			{Kind: gFchmod, Mode: 0o600, Key: "fd0"},
			{Kind: gFstat, Key: "fd0"},
		},
	})
}

// Found by TestDifferentialRandom, seed 12037: op:fchmod:ok/EROFS. The same
// with a lower hard link: the open name is unlinked, the file lives on under
// its other name; kernel overlayfs and ext4 change it, unionmount said EROFS.
func TestDiffFchmodOnUnlinkedLowerHardlink(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("c/b/b", "x"),
				Hardlink("e/a/b", "c/b/b"),
			},
		},
		Ops: []genOp{
			{Kind: gOpen, Path: "e/a/b", Key: "fd0"},
			{Kind: gUnlink, Path: "e/a/b"},
			{Kind: gFchmod, Key: "fd0", Mode: 0o640},
			{Kind: gStat, Path: "c/b/b"},
		},
	})
}

// Found by TestDifferentialRandom, seed 50883663628: tree:only in
// unionmount. A lower directory renamed through the union is found below by
// its redirect path; a layer where a directory on that path is opaque ends
// the search, as kernel overlayfs stops there. unionmount looked in every
// layer and showed e/e/d of the bottom layer under d/d.
func TestDiffRedirectStopsAtOpaqueAncestor(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("e/e/b"),
			},
			{
				Dir("e").WithXattr("trusted.overlay.opaque", "y"),
				File("d/b/b", ""),
			},
			{
				File("e/e/d", "h"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "e/e", Path2: "d/d"},
		},
	})
}

// Issue 14 item 8 (the outside union-mount suite's rename-move-dir case in
// its 3-layer mode), built by hand: a/dir of the bottom layer was renamed
// to a/dirx (a relative redirect in the middle layer), then to a/e/dir (an
// absolute one in the top layer). The relative redirect found in the
// middle layer is resolved against where that directory was found,
// /a/dirx, giving /a/dir; unionmount resolved it under the merged parent
// a/e and listed a/e/dir empty.
func TestDiffRelativeRedirectBelowAbsolute(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("a/e/dir").WithXattr(xattrRedirect, "/a/dirx"),
				Whiteout("a/dirx"),
			},
			{
				Dir("a/dirx").WithXattr(xattrRedirect, "dir"),
				Whiteout("a/dir"),
			},
			{
				File("a/dir/file", "in the bottom layer\n"),
			},
		},
		Ops: []genOp{
			{Kind: gReaddir, Path: "a/e/dir"},
			{Kind: gRead, Path: "a/e/dir/file"},
		},
	})
}

// Found by TestDifferentialRandom, seed 210 (with rotations, issue 14 item
// 8): dino. dm, a lower directory renamed from c/a (redirect "/c/a"), is
// rotated into the lowers; its subdirectory e is then moved to e/e, whose
// redirect "/dm/e" crosses dm in the layer below: the layers under that
// one look for c/a/e, as kernel overlayfs rewrites the rest of the path at
// a redirected directory on the way. unionmount looked for dm/e there and
// found nothing.
func TestDiffRedirectThroughRedirectedAncestor(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Dir("c/a/e").WithXattr("trusted.overlay.opaque", "y"),
				Dir("e/e"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "c/a", Path2: "dm"},
			{Kind: gRotate},
			{Kind: gRename, Path: "dm/e", Path2: "e/e"},
		},
	})
}

// Found by TestDifferentialRandom, seed 104 (with rotations): tree:nlink.
// b/c and d/d/c, one lower inode, are copied up through the index; the
// upper is then rotated into the lowers, where the copy's links on disk
// count one more, in the old workdir's index. The count the union kept
// (unionmount's nlink xattr on the copy) is the one shown, as ext4 shows.
func TestDiffRotatedIndexedLinkCount(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("b/c", "x"),
				Hardlink("d/d/c", "b/c"),
			},
		},
		Ops: []genOp{
			{Kind: gWrite, Path: "d/d/c"},
			{Kind: gRead, Path: "b/c"},
			{Kind: gTruncOpen, Path: "d/d/c", Data: "x"},
			{Kind: gRotate},
		},
	})
}

// Found by TestDifferentialRandom, seed 44 (with rotations): tree:only in
// unionmount. After a/b/b is moved to b/a/d (redirect /a/b/b) and the
// upper rotated into the lowers, a layer that has no a/ keeps the whole
// path for the layers below: unionmount dropped the middle (a/b) and
// merged a/b into b/a/d.
func TestDiffRedirectPathMissingInLayer(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				Whiteout("b/a/c"),
			},
			{
				Dir("a/b/b"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "a/b/b", Path2: "b/a/d"},
			{Kind: gRotate},
		},
	})
}

// Found by TestDifferentialRandom, seed 20 (with rotations): tree:nlink.
// The copy of a lower file with three names (one hidden) is rotated into
// the lowers with one name and the old index's link: its recorded union
// count (3, from the lower) is more than its links on disk (2), which is
// what kernel overlayfs and ext4 show.
func TestDiffRotatedIndexedLinkCountHidden(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("a/d", "x"),
			},
			{
				File("d/b/c", "x"),
				Hardlink("a/d/b", "d/b/c"),
				Hardlink("c/c/e", "d/b/c"),
			},
			{
				Fifo("a/c/e"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "c/c", Path2: "a/c/em"},
			{Kind: gTruncate, Path: "a/c/em/e"},
			{Kind: gRotate},
		},
	})
}

// Found by TestDifferentialRandom, seed 739 (with rotations): tree:nlink.
// A copy of a hard-linked lower file, rotated into the lowers, is copied up
// again through the new union's index: the count it starts from is the
// one the rotated layer recorded, not its links on disk (which count the
// old index's).
func TestDiffRotatedIndexedCopiedAgain(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("a", "x"),
				Hardlink("e/d/b", "a"),
			},
		},
		Ops: []genOp{
			{Kind: gRename, Path: "e/d", Path2: "e/bm"},
			{Kind: gWrite, Path: "e/bm/b", Data: "x"},
			{Kind: gSetxattr, Path: "a", Data: "x", Name: "trusted.t"},
			{Kind: gRotate},
			{Kind: gWrite, Path: "e/bm/b", Data: "x"},
		},
	})
}

// Found by TestDifferentialRandom, seed 9127 (with rotations):
// remount-changed:nlink. Both names of a lower file copied up (one by
// truncate, one by an open for writing), then the upper rotated into the
// lowers: lookup showed the union count the copy recorded (2), but a
// later stat the links on disk (3, the old workdir's index among them).
func TestDiffSeed9127(t *testing.T) {
	t.Parallel()
	checkSeq(t, seqCase{
		Lowers: [][]Entry{
			{
				File("e/d/b", "x"),
				Hardlink("a/b/a", "e/d/b"),
			},
		},
		Ops: []genOp{
			{Kind: gTruncate, Path: "a/b/a", Off: 4096},
			{Kind: gOpen, Path: "e/d/b", Key: "fd0", Flags: 2},
			{Kind: gRotate},
			{Kind: gRead, Path: "a/b/a"},
		},
	})
}
