package e2e

// One test per row of SPEC §4's semantics table, each differential against
// kernel overlayfs, plus checks of the upper on disk that the row implies
// (run on the kernel's upper as well, which proves them right).

import (
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

const (
	wr     = os.O_WRONLY
	rdwr   = os.O_RDWR
	trunc  = os.O_TRUNC
	appnd  = os.O_APPEND
	rdonly = os.O_RDONLY
)

// pattern is n bytes that differ at every offset of a small period.
func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte('a' + (i*7+i/251)%26)
	}
	return b
}

func TestCreateNewName(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("d").WithMode(0o750).WithOwner(1000, 1001).WithXattr("user.dir", "lower"),
			File("d/old", "old"),
			Dir("a").WithMode(0o711).WithOwner(7, 8),
			Dir("a/b").WithMode(0o755),
			Dir("a/b/c").WithMode(0o700),
		}}},
		ops: []op{
			opCreate("new", "hello", 0o640),
			opCreate("d/new", "in a lower dir", 0o600),
			opCreate("a/b/c/deep", "deep", 0o644),
			opCreate("d/old", "exists", 0o644),
			opCreate("missing/x", "", 0o644),
			opRead("d/new"),
			opRead("d/old"),
			opStat("d/new"),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperContent(t, s, "new", []byte("hello"))
			wantMode(t, s, "new", 0o640)
			wantUpperContent(t, s, "d/new", []byte("in a lower dir"))
			// Parents copied up first, with the lower's metadata; the
			// ones whose merged contents did not change keep their times.
			wantCopiedUpLike(t, s, "d", 0, false)
			wantCopiedUpLike(t, s, "a", 0, true)
			wantCopiedUpLike(t, s, "a/b", 0, true)
			wantCopiedUpLike(t, s, "a/b/c", 0, false)
			wantNoUpperEntry(t, s, "d/old")
		},
	})
}

func TestMknodNewName(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("d").WithMode(0o775).WithOwner(3, 4),
			File("d/f", "f"),
		}}},
		ops: []op{
			opMknod("d/fifo", unix.S_IFIFO|0o640, 0, 0),
			opMknod("d/null", unix.S_IFCHR|0o620, 1, 3),
			opMknod("top-fifo", unix.S_IFIFO|0o600, 0, 0),
			opMknod("d/f", unix.S_IFIFO|0o644, 0, 0),
			opStat("d/fifo"),
			opStat("d/null"),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperType(t, s, "d/fifo", "fifo")
			wantMode(t, s, "d/fifo", 0o640)
			wantUpperType(t, s, "d/null", "chardev")
			if st, ok := upperStat(t, s, "d/null"); ok && (unix.Major(st.Rdev) != 1 || unix.Minor(st.Rdev) != 3) {
				t.Errorf("%s: upper/d/null: rdev %d:%d, want 1:3", s.name, unix.Major(st.Rdev), unix.Minor(st.Rdev))
			}
			wantCopiedUpLike(t, s, "d", 0, false)
			wantNoUpperEntry(t, s, "d/f")
		},
	})
}

func TestSymlinkNewName(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("d").WithMode(0o705),
			File("d/target", "t"),
		}}},
		ops: []op{
			opSymlink("target", "d/link"),
			opSymlink("/nowhere/at/all", "dangling"),
			opSymlink("x", "d/target"),
			opReadlink("d/link"),
			opRead("d/link"),
			opStat("dangling"),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperType(t, s, "d/link", "symlink")
			if target, err := os.Readlink(filepath.Join(s.upper, "d/link")); err != nil || target != "target" {
				t.Errorf("%s: upper/d/link -> %q (%v), want target", s.name, target, err)
			}
			wantUpperType(t, s, "dangling", "symlink")
			wantCopiedUpLike(t, s, "d", 0, false)
			wantNoUpperEntry(t, s, "d/target")
		},
	})
}

// The kernel keeps symlink targets in its page cache (FUSE_CACHE_SYMLINKS):
// a symlink replaced under the same name, in every way, must show its new
// target, also while the old one is still held (O_PATH) and the upper
// filesystem may hand its inode number to the new one.
func TestSymlinkReplacedShowsNewTarget(t *testing.T) {
	t.Parallel()
	ops := []op{
		opReadlink("l"), opReadlink("d/l"), opRead("d/l"),
		opOpenKeep("old", "l", unix.O_PATH|unix.O_NOFOLLOW),
		opUnlink("l"), opSymlink("two", "l"), opReadlink("l"),
		opSymlink("../f2", "tmp"), opReadlink("tmp"), opRename("tmp", "d/l"), opReadlink("d/l"), opRead("d/l"),
	}
	for i := range 20 {
		target := fmt.Sprintf("t%d", i)
		ops = append(ops, opReadlink("l"), opUnlink("l"), opSymlink(target, "l"), opReadlink("l"))
	}
	ops = append(ops, opClose("old"), opReaddir("."))
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Symlink("l", "one"),
			Dir("d"),
			File("d/f", "f"),
			File("f2", "f2"),
			Symlink("d/l", "f"),
		}}},
		ops: ops,
	})
}

func TestMkdirNewName(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("a").WithMode(0o750).WithOwner(1, 2).WithXattr("user.a", "1"),
			Dir("a/b").WithMode(0o705).WithOwner(3, 4).WithXattr("trusted.b", "2"),
			File("a/b/f", "f"),
			Dir("a/b/c").WithMode(0o1777),
		}}},
		ops: []op{
			opMkdir("a/b/new", 0o700),
			opMkdir("a/b/new/sub", 0o755),
			opMkdir("a/b/c/new", 0o2755),
			opMkdir("top", 0o755),
			opMkdir("a/b", 0o755),
			opMkdir("a/b/f", 0o755),
			opMkdir("nope/x", 0o755),
			opStat("a/b/new"),
			opStat("a/b/c/new"),
			opReaddir("a/b"),
			opReaddir("a/b/new"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperType(t, s, "a/b/new", "dir")
			wantMode(t, s, "a/b/new", 0o700)
			wantUpperType(t, s, "a/b/new/sub", "dir")
			wantUpperType(t, s, "top", "dir")
			// Parents: mode, owner, xattrs of the lower; times too where
			// the directory's merged contents did not change.
			wantCopiedUpLike(t, s, "a", 0, true)
			wantCopiedUpLike(t, s, "a/b", 0, false)
			wantCopiedUpLike(t, s, "a/b/c", 0, false)
			wantNoUpperEntry(t, s, "a/b/f")
		},
	})
}

func TestMkdirOverWhiteoutIsOpaque(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{
			lowers: [][]Entry{{
				Dir("d"),
				File("d/x", "x"),
				Dir("d/sub"),
				File("d/sub/y", "y"),
				File("f", "a file"),
				Dir("w"),
				File("w/z", "hidden by a whiteout already in upper"),
			}},
			upper: []Entry{Whiteout("w")},
		},
		ops: []op{
			opUnlink("d/x"),
			opUnlink("d/sub/y"),
			opRmdir("d/sub"),
			opRmdir("d"),
			opMkdir("d", 0o700),
			opReaddir("d"),
			opUnlink("f"),
			opMkdir("f", 0o755),
			opReaddir("f"),
			opReaddir("w"),
			opMkdir("w", 0o755),
			opReaddir("w"),
			opStat("w/z"),
			opCreate("d/new", "n", 0o644),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantOpaque(t, s, "d")
			wantOpaque(t, s, "f")
			wantOpaque(t, s, "w")
			wantNoUpperEntry(t, s, "d/x")
			wantNoUpperEntry(t, s, "d/sub")
		},
	})
}

func TestOpenForWriteCopiesUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "lower content").WithMode(0o640).WithOwner(5, 6).WithXattr("user.k", "v"),
			File("g", "0123456789"),
			File("d/h", "h"),
		}}},
		ops: []op{
			opOpenClose("f", wr),
			opOpenClose("d/h", rdwr),
			opWrite("g", rdwr, 3, "abc"),
			opRead("f"),
			opRead("g"),
			opOpenClose("missing", wr),
		},
		onDisk: func(t *testing.T, s *side) {
			// Opened for write: the data is copied, not just metadata.
			wantUpperContent(t, s, "f", []byte("lower content"))
			wantCopiedUpLike(t, s, "f", 0, true)
			wantUpperContent(t, s, "g", []byte("012abc6789"))
			wantUpperContent(t, s, "d/h", []byte("h"))
		},
	})
}

func TestOTruncCopiesUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "a long lower content that goes away").WithMode(0o600).WithXattr("user.k", "v"),
			File("g", "also goes"),
		}}},
		ops: []op{
			opWrite("f", wr|trunc, -1, "new"),
			opOpenClose("g", rdwr|trunc),
			opRead("f"),
			opStat("f"),
			opStat("g"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperContent(t, s, "f", []byte("new"))
			wantMode(t, s, "f", 0o600)
			wantUpperContent(t, s, "g", nil)
			if x, _ := userXattrs(filepath.Join(s.upper, "f")); x != `{user.k="v"}` {
				t.Errorf("%s: upper/f xattrs %s, want user.k kept", s.name, x)
			}
		},
	})
}

func TestOAppendCopiesUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "head").WithMode(0o664),
			File("d/g", ""),
		}}},
		ops: []op{
			opWrite("f", wr|appnd, -1, "+tail"),
			opWrite("f", rdwr|appnd, -1, "+more"),
			opWrite("d/g", wr|appnd, -1, "first"),
			opRead("f"),
			opRead("d/g"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperContent(t, s, "f", []byte("head+tail+more"))
			wantMode(t, s, "f", 0o664)
			wantUpperContent(t, s, "d/g", []byte("first"))
		},
	})
}

func TestTruncateCopiesOnlyNBytes(t *testing.T) {
	t.Parallel()
	data := pattern(1 << 20)
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", string(data)).WithMode(0o640),
			File("g", "to zero"),
			File("h", "short"),
			File("k", string(data[:10000])),
		}}},
		ops: []op{
			opTruncate("f", 1000),
			opStat("f"),
			opRead("f"),
			opTruncate("g", 0),
			opTruncate("h", 5000),
			opRead("h"),
			opOpenKeep("k", "k", rdwr),
			opFd("k", "ftruncate 123", func(f *os.File) (string, error) { return "", f.Truncate(123) }),
			opClose("k"),
			opStat("k"),
			opTruncate("missing", 1),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperContent(t, s, "f", data[:1000])
			wantMode(t, s, "f", 0o640)
			if st, ok := upperStat(t, s, "f"); ok && st.Blocks > 16 {
				t.Errorf("%s: upper/f: %d blocks allocated for 1000 bytes", s.name, st.Blocks)
			}
			wantUpperContent(t, s, "g", nil)
			wantUpperContent(t, s, "h", append([]byte("short"), make([]byte, 5000-5)...))
			wantUpperContent(t, s, "k", data[:123])
		},
	})
}

func TestChmodCopiesUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "data").WithXattr("user.a", "1"),
			Dir("d"),
			File("d/inner", "inner"),
			Fifo("p"),
			File("s", "to be suid").WithMode(0o755),
		}}},
		ops: []op{
			opChmod("f", 0o600),
			opChmod("d", 0o700),
			opChmod("p", 0o606),
			opChmod("s", 0o4755),
			opChmod("missing", 0o600),
			opStat("f"),
			opStat("d"),
			opStat("s"),
			opRead("f"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantMode(t, s, "f", 0o600)
			wantMode(t, s, "d", 0o700)
			wantMode(t, s, "p", 0o606)
			wantMode(t, s, "s", 0o4755)
			wantUpperType(t, s, "p", "fifo")
			wantNoUpperEntry(t, s, "d/inner")
		},
	})
}

func TestChownCopiesUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "suid file").WithMode(0o4755),
			Symlink("l", "f"),
			Dir("d").WithMode(0o2775),
			File("d/inner", "inner"),
		}}},
		ops: []op{
			opLchown("f", 1234, 5678),
			opLchown("l", 42, 43),
			opLchown("d", 7, 8),
			opStat("f"),
			opStat("l"),
			opStat("d"),
			opLchown("missing", 1, 1),
		},
		onDisk: func(t *testing.T, s *side) {
			wantOwner(t, s, "f", 1234, 5678)
			wantOwner(t, s, "l", 42, 43)
			wantUpperType(t, s, "l", "symlink")
			wantOwner(t, s, "d", 7, 8)
			wantNoUpperEntry(t, s, "d/inner")
		},
	})
}

func TestUtimesCopiesUp(t *testing.T) {
	t.Parallel()
	at := time.Date(2010, 1, 2, 3, 4, 5, 600000007, time.UTC)
	mt := time.Date(2011, 6, 7, 8, 9, 10, 111111111, time.UTC)
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "f"),
			Dir("d"),
			File("d/inner", "inner"),
			Symlink("l", "f"),
		}}},
		ops: []op{
			opUtimes("f", at, mt),
			opUtimes("d", at, mt),
			opUtimes("l", at, mt),
			opUtimes("missing", at, mt),
			expect(opTimes("f"), `ok, "`+fmtTime(at)+" "+fmtTime(mt)+`"`),
			expect(opTimes("d"), `ok, "`+fmtTime(at)+" "+fmtTime(mt)+`"`),
			expect(opTimes("l"), `ok, "`+fmtTime(at)+" "+fmtTime(mt)+`"`),
		},
		onDisk: func(t *testing.T, s *side) {
			for _, p := range []string{"f", "d", "l"} {
				// atime is not checked here: the snapshots read the files.
				wantMtime(t, s, p, mt)
			}
			wantUpperType(t, s, "l", "symlink")
			wantNoUpperEntry(t, s, "d/inner")
		},
	})
}

func TestSetxattrCopiesUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "f").WithXattr("user.old", "kept"),
			Dir("d"),
			File("d/inner", "inner"),
			Symlink("l", "f"),
		}}},
		ops: []op{
			opSetxattr("f", "user.new", "1"),
			opSetxattr("d", "user.new", "2"),
			opSetxattr("f", "trusted.t", "3"),
			opSetxattr("l", "trusted.s", "4"),
			opSetxattr("l", "user.s", "5"),
			opGetxattr("f", "user.new"),
			opGetxattr("f", "user.old"),
			opListxattr("f"),
			opListxattr("l"),
			opSetxattr("missing", "user.x", "1"),
		},
		onDisk: func(t *testing.T, s *side) {
			if x, _ := userXattrs(filepath.Join(s.upper, "f")); x != `{trusted.t="3" user.new="1" user.old="kept"}` {
				t.Errorf("%s: upper/f xattrs %s", s.name, x)
			}
			if x, _ := userXattrs(filepath.Join(s.upper, "d")); x != `{user.new="2"}` {
				t.Errorf("%s: upper/d xattrs %s", s.name, x)
			}
			if x, _ := userXattrs(filepath.Join(s.upper, "l")); x != `{trusted.s="4"}` {
				t.Errorf("%s: upper/l xattrs %s", s.name, x)
			}
			wantNoUpperEntry(t, s, "d/inner")
		},
	})
}

func TestRemovexattrCopiesUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "f").WithXattr("user.a", "1").WithXattr("user.b", "2").WithXattr("trusted.c", "3"),
			Dir("d").WithXattr("user.d", "4"),
		}}},
		ops: []op{
			opRemovexattr("f", "user.a"),
			opRemovexattr("f", "trusted.c"),
			opRemovexattr("f", "user.missing"),
			opRemovexattr("d", "user.d"),
			opListxattr("f"),
			opListxattr("d"),
			opRead("f"),
		},
		onDisk: func(t *testing.T, s *side) {
			if x, _ := userXattrs(filepath.Join(s.upper, "f")); x != `{user.b="2"}` {
				t.Errorf("%s: upper/f xattrs %s, want only user.b", s.name, x)
			}
			if x, _ := userXattrs(filepath.Join(s.upper, "d")); x != `{}` {
				t.Errorf("%s: upper/d xattrs %s, want none", s.name, x)
			}
		},
	})
}

func TestReadOnlyAccessWritesNothing(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{
			{
				Dir("d"),
				File("d/f", "top").WithXattr("user.x", "1"),
				Symlink("d/l", "f"),
				Fifo("d/p"),
			},
			{
				Dir("d"),
				File("d/g", "bottom"),
				Dir("d/sub"),
				File("d/sub/h", "deep"),
			},
		}},
		ops: []op{
			opRead("d/f"),
			opRead("d/g"),
			opRead("d/l"),
			opOpenClose("d/sub/h", rdonly),
			opOpenClose("d/f", rdonly|os.O_CREATE),
			opStat("d/f"),
			opStat("d/p"),
			opReaddir("d"),
			opReaddir("d/sub"),
			opReadlink("d/l"),
			opListxattr("d/f"),
			opGetxattr("d/f", "user.x"),
			opSh("ls -lR . > /dev/null && cat d/sub/h"),
		},
		onDisk: func(t *testing.T, s *side) {
			if names := upperFiles(t, s); len(names) > 0 {
				t.Errorf("%s: read-only access wrote to upper: %v", s.name, names)
			}
			x, err := listXattrs(s.upper)
			if err != nil {
				t.Fatal(err)
			}
			if s.name == "kernel" || selftestKernel {
				// The kernel stamps its mount's uuid on the upper root.
				delete(x, "trusted.overlay.uuid")
			}
			if len(x) > 0 {
				t.Errorf("%s: upper root got xattrs: %s", s.name, fmtXattrs(x))
			}
			if st, _ := lstatPath(s.upper); !time.Unix(st.Mtim.Sec, st.Mtim.Nsec).Equal(layerTime) {
				t.Errorf("%s: upper root mtime changed", s.name)
			}
			checkLowerAtimes(t, s)
		},
	})
}

func TestUnlinkLowerLeavesWhiteout(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "f"),
			Symlink("l", "f"),
			Fifo("p"),
			Dir("d"),
			File("d/g", "g"),
			File("d/keep", "keep"),
			File("c", "copied up first"),
		}}},
		ops: []op{
			opUnlink("f"),
			opUnlink("l"),
			opUnlink("d/g"),
			opWrite("c", wr|appnd, -1, "+"),
			opUnlink("c"),
			opUnlink("f"),
			opStat("f"),
			opUnlink("p"),
			opCreate("p", "a new file where a fifo was", 0o644),
			opUnlink("d"),
			opReaddir("."),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			for _, p := range []string{"f", "l", "d/g", "c"} {
				wantWhiteout(t, s, p)
			}
			wantUpperType(t, s, "p", "file")
			wantNoUpperEntry(t, s, "d/keep")
		},
	})
}

func TestRmdirLowerLeavesWhiteout(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("e"),
			Dir("d"),
			File("d/a", "a"),
			Dir("d/sub"),
			File("d/sub/x", "x"),
			Dir("keep"),
		}}},
		ops: []op{
			opRmdir("e"),
			opUnlink("d/a"),
			opUnlink("d/sub/x"),
			opRmdir("d/sub"),
			opRmdir("d"),
			opRmdir("e"),
			opRmdir("d/a"),
			opStat("d"),
			opReaddir("."),
		},
		onDisk: func(t *testing.T, s *side) {
			wantWhiteout(t, s, "e")
			wantWhiteout(t, s, "d")
			wantNoUpperEntry(t, s, "keep")
		},
	})
}

func TestUnlinkUpperOnlyNoWhiteout(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("d"),
			File("d/keep", "keep"),
		}}},
		ops: []op{
			opCreate("new", "n", 0o644),
			opCreate("d/new", "n", 0o644),
			opSymlink("x", "d/sym"),
			opMknod("d/fifo", unix.S_IFIFO|0o644, 0, 0),
			opUnlink("new"),
			opUnlink("d/new"),
			opUnlink("d/sym"),
			opUnlink("d/fifo"),
			opReaddir("."),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			for _, p := range []string{"new", "d/new", "d/sym", "d/fifo"} {
				wantNoUpperEntry(t, s, p)
			}
		},
	})
}

func TestRmdirUpperOnlyNoWhiteout(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("d"),
			File("d/keep", "keep"),
		}}},
		ops: []op{
			opMkdir("n", 0o755),
			opMkdir("d/n", 0o755),
			opMkdir("n2", 0o755),
			opCreate("n2/f", "f", 0o644),
			opRmdir("n2"),
			opUnlink("n2/f"),
			opRmdir("n2"),
			opRmdir("n"),
			opRmdir("d/n"),
			opReaddir("."),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			for _, p := range []string{"n", "n2", "d/n"} {
				wantNoUpperEntry(t, s, p)
			}
		},
	})
}

func TestRmdirMergedNotEmpty(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{
			lowers: [][]Entry{
				{Dir("d"), File("d/a", "a")},
				{Dir("d"), File("d/b", "b"), Dir("d/sub"), File("d/sub/x", "x")},
			},
		},
		ops: []op{
			opRmdir("d"),
			opUnlink("d/a"),
			opRmdir("d"),
			opUnlink("d/b"),
			opRmdir("d"),
			opRmdir("d/sub"),
			opUnlink("d/sub/x"),
			opRmdir("d/sub"),
			opCreate("d/c", "c", 0o644),
			opRmdir("d"),
			opUnlink("d/c"),
			opReaddir("d"),
			// Merged view empty, upper holds whiteouts: rmdir succeeds.
			opRmdir("d"),
			opStat("d"),
			opReaddir("."),
		},
		onDisk: func(t *testing.T, s *side) {
			wantWhiteout(t, s, "d")
		},
	})
}

func TestLinkCopiesUpSource(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "data").WithMode(0o640).WithXattr("user.k", "v"),
			Dir("d"),
			Dir("e"),
		}}},
		ops: []op{
			opLink("f", "d/g"),
			opSameInode("f", "d/g"),
			opStat("f"),
			opStat("d/g"),
			opWrite("d/g", wr|appnd, -1, "+"),
			opRead("f"),
			opLink("missing", "x"),
			opLink("f", "d/g"),
			opLink("e", "e2"),
		},
		onDisk: func(t *testing.T, s *side) {
			a, ok1 := upperStat(t, s, "f")
			b, ok2 := upperStat(t, s, "d/g")
			if ok1 && ok2 && (a.Ino != b.Ino || a.Nlink != 2) {
				t.Errorf("%s: upper/f and upper/d/g: inodes %d %d, nlink %d; want one inode with nlink 2", s.name, a.Ino, b.Ino, a.Nlink)
			}
			wantUpperContent(t, s, "f", []byte("data+"))
			wantMode(t, s, "f", 0o640)
		},
	})
}

func TestRenameFile(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("a", "A").WithMode(0o600).WithXattr("user.a", "1"),
			File("b", "B"),
			File("x", "X"),
			Dir("d"),
			File("d/c", "C"),
			Dir("e"),
			Dir("dir"),
			Symlink("s", "a"),
		}}},
		ops: []op{
			opRename("a", "a2"),
			opRename("d/c", "e/c"),
			opRename("b", "x"),
			opRename("s", "d/s"),
			opCreate("n", "new", 0o644),
			opRename("n", "n2"),
			opRename("a2", "dir"),
			opRename("missing", "m2"),
			opRename("a2", "a2"),
			opRead("a2"),
			opRead("e/c"),
			opRead("x"),
			opReadlink("d/s"),
			opReaddir("."),
			opReaddir("d"),
			opReaddir("e"),
		},
		onDisk: func(t *testing.T, s *side) {
			for _, p := range []string{"a", "b", "d/c", "s"} {
				wantWhiteout(t, s, p)
			}
			wantNoUpperEntry(t, s, "n")
			wantUpperContent(t, s, "a2", []byte("A"))
			wantCopiedUpFrom(t, s, "a2", "a", 0, false)
			wantUpperContent(t, s, "e/c", []byte("C"))
			wantUpperContent(t, s, "x", []byte("B"))
			wantUpperType(t, s, "d/s", "symlink")
		},
	})
}

func TestRenameUpperOnlyDir(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("m"),
			File("m/f", "f"),
		}}},
		ops: []op{
			opMkdir("n", 0o750),
			opCreate("n/f1", "1", 0o644),
			opMkdir("n/sub", 0o755),
			opCreate("n/sub/f2", "2", 0o644),
			opRename("n", "n2"),
			opRename("n2", "m/n3"),
			opStat("n"),
			opStat("n2"),
			opReaddir("m"),
			opReaddir("m/n3"),
			opRead("m/n3/sub/f2"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantNoUpperEntry(t, s, "n")
			wantNoUpperEntry(t, s, "n2")
			wantUpperType(t, s, "m/n3", "dir")
			wantUpperContent(t, s, "m/n3/sub/f2", []byte("2"))
			if v := overlayXattr(filepath.Join(s.upper, "m/n3"), "redirect"); v != "" {
				t.Errorf("%s: upper/m/n3 has a redirect (%q): an upper-only directory needs a plain rename", s.name, v)
			}
		},
	})
}

func TestRenameLowerDir(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{
			{
				Dir("a").WithMode(0o750).WithXattr("user.a", "1"),
				File("a/x", "x"),
				Dir("a/y"),
				File("a/y/z", "z"),
				Dir("b"),
			},
			{
				Dir("a"),
				File("a/bottom", "merged from the lower below"),
			},
		}},
		ops: []op{
			opRename("a", "a2"),
			opReaddir("a2"),
			opRead("a2/x"),
			opRead("a2/bottom"),
			opRename("a2/y", "b/y2"),
			opReaddir("b/y2"),
			opRead("b/y2/z"),
			opStat("a"),
			opStat("a2/y"),
			opMkdir("a", 0o755),
			opReaddir("a"),
			opReaddir("a2"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantUpperType(t, s, "a2", "dir")
			wantUpperType(t, s, "b/y2", "dir")
			for _, p := range []string{"a2", "b/y2"} {
				if v := overlayXattr(filepath.Join(s.upper, p), "redirect"); v == "" {
					t.Errorf("%s: upper/%s: no overlay.redirect on a renamed lower directory", s.name, p)
				}
			}
			wantCopiedUpLike(t, s, "b", 0, false)
			// No recursive copy: no child of the renamed directories.
			for _, p := range []string{"a2/x", "a2/bottom", "b/y2/z"} {
				wantNoUpperEntry(t, s, p)
			}
			wantWhiteout(t, s, "a2/y")
			wantOpaque(t, s, "a")
		},
	})
}

func TestRenameLowerDirRedirectOff(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("a"),
			File("a/x", "x"),
			File("f", "f"),
			Dir("b"),
		}}},
		opts: []string{"redirect_dir=off"},
		ops: []op{
			opRename("a", "a2"),
			opRename("a", "b/a"),
			opRename("f", "g"),
			opMkdir("n", 0o755),
			opRename("n", "n2"),
			opReaddir("."),
			opReaddir("a"),
		},
		onDisk: func(t *testing.T, s *side) {
			wantNoUpperEntry(t, s, "a")
			wantNoUpperEntry(t, s, "a2")
			wantWhiteout(t, s, "f")
		},
	})
}

// readdirSpec is the stack of TestReaddirMerged: a directory d made of two
// lowers and an upper with whiteouts and opaque directories at every level,
// and enough names that getdents needs several calls.
func readdirSpec() stackSpec {
	top := []Entry{
		Dir("d"),
		File("d/b", "top b"),
		File("d/e", "e"),
		Whiteout("d/c"),
		Dir("d/sub"),
		File("d/sub/s0", "s0"),
	}
	bottom := []Entry{
		Dir("d"),
		File("d/a", "a"),
		File("d/b", "bottom b"),
		File("d/c", "c"),
		Dir("d/sub"),
		File("d/sub/s1", "s1"),
		Dir("d/opq"),
		File("d/opq/hidden", "hidden"),
	}
	for i := 0; i < 150; i++ {
		name := "d/many-" + string(rune('a'+i%26)) + string(rune('a'+i/26))
		if i%3 == 0 {
			top = append(top, File(name, "t"))
		} else {
			bottom = append(bottom, File(name, "b"))
		}
		if i%5 == 0 {
			top = append(top, File(name+"-both", "t"))
			bottom = append(bottom, File(name+"-both", "b"))
		}
	}
	return stackSpec{
		lowers: [][]Entry{top, bottom},
		upper: []Entry{
			Dir("d"),
			Whiteout("d/a"),
			File("d/f", "f"),
			OpaqueDir("d/opq"),
			File("d/opq/shown", "shown"),
		},
	}
}

func TestReaddirMerged(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: readdirSpec(),
		ops: []op{
			opReaddir("d"),
			opReaddir("d/sub"),
			opReaddir("d/opq"),
			opStat("d/a"),
			opStat("d/c"),
			opRead("d/b"),
			opCreate("d/new", "n", 0o644),
			opUnlink("d/e"),
			opReaddir("d"),
		},
		mounted: func(t *testing.T, s *side) {
			for _, dir := range []string{".", "d", "d/sub", "d/opq"} {
				checkGetdents(t, s, dir)
			}
			names := direntNames(t, filepath.Join(s.mnt, "d"))
			for _, hidden := range []string{"a", "c", "e"} {
				if slices.Contains(names, hidden) {
					t.Errorf("%s: readdir d shows %q, which is whited out", s.name, hidden)
				}
			}
			for _, want := range []string{"b", "f", "new", "sub", "opq", "many-aa", "many-aa-both"} {
				if !slices.Contains(names, want) {
					t.Errorf("%s: readdir d lacks %q", s.name, want)
				}
			}
		},
	})
}
