package e2e

// SPEC §5: the seed's "known non-POSIX behaviours" that unionmount must not
// have, and the userxattr namespace of §3.

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestReadOnlyFdSeesCopyUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "old content"),
			File("g", "old g"),
		}}},
		ops: []op{
			opOpenKeep("r", "f", rdonly),
			expect(opPread("r"), `ok, "old content"`),
			opWrite("f", wr|trunc, -1, "new content"),
			expect(opPread("r"), `ok, "new content"`),
			opOpenKeep("rg", "g", rdonly),
			opChmod("g", 0o600),
			opWrite("g", wr|appnd, -1, "+"),
			expect(opPread("rg"), `ok, "old g+"`),
		},
	})
}

func TestFdMetadataOnReadOnlyFd(t *testing.T) {
	t.Parallel()
	mt := time.Date(2012, 3, 4, 5, 6, 7, 8, time.UTC)
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "f"),
			File("g", "g"),
			File("h", "h"),
			File("k", "k"),
		}}},
		ops: []op{
			opOpenKeep("f", "f", rdonly),
			opOpenKeep("g", "g", rdonly),
			opOpenKeep("h", "h", rdonly),
			opOpenKeep("k", "k", rdonly),
			expect(opFd("f", "fchmod 0600", func(f *os.File) (string, error) { return "", f.Chmod(0o600) }), "ok"),
			expect(opFd("g", "fchown 5:6", func(f *os.File) (string, error) { return "", f.Chown(5, 6) }), "ok"),
			expect(opFd("h", "futimens", func(f *os.File) (string, error) {
				ts := []unix.Timespec{unix.NsecToTimespec(mt.UnixNano()), unix.NsecToTimespec(mt.UnixNano())}
				return "", unix.UtimesNanoAt(int(f.Fd()), "", ts, unix.AT_EMPTY_PATH)
			}), "ok"),
			expect(opFd("k", "fsetxattr user.k", func(f *os.File) (string, error) {
				return "", unix.Fsetxattr(int(f.Fd()), "user.k", []byte("v"), 0)
			}), "ok"),
			expect(opFd("f", "fstat", fstatMode), `ok, "0600"`),
			expect(opStat("f"), `ok, "file 0600 0:0 size=1 nlink=1"`),
			expect(opStat("g"), `ok, "file 0644 5:6 size=1 nlink=1"`),
			expect(opTimes("h"), `ok, "`+fmtTime(mt)+" "+fmtTime(mt)+`"`),
			expect(opGetxattr("k", "user.k"), `ok, "v"`),
		},
	})
}

func fstatMode(f *os.File) (string, error) {
	var st unix.Stat_t
	if err := unix.Fstat(int(f.Fd()), &st); err != nil {
		return "", err
	}
	return fmt.Sprintf("%04o", st.Mode&0o7777), nil
}

func TestInodeNumbersStable(t *testing.T) {
	t.Parallel()
	bothFilesystems(t, stackSpec{lowers: [][]Entry{{
		File("f", "f"),
		Dir("d"),
		File("d/g", "g"),
		Symlink("l", "f"),
		Dir("moved"),
		File("moved/m", "m"),
	}}}, func(t *testing.T, s *side) {
		paths := []string{"f", "d", "d/g", "l", "moved", "moved/m"}
		inos := func(rename bool) map[string]uint64 {
			m := map[string]uint64{}
			for _, p := range paths {
				q := p
				if rename && (p == "moved" || p == "moved/m") {
					q = "renamed" + p[len("moved"):]
				}
				st, err := lstatPath(filepath.Join(s.mnt, q))
				if err != nil {
					t.Fatalf("%s: lstat %s: %v", s.name, q, err)
				}
				m[p] = st.Ino
			}
			return m
		}
		s.mount(t, nil)
		before := inos(false)
		mustOps(t, s.name, s.mnt, []op{
			opWrite("f", wr|appnd, -1, "+"),
			opChmod("d", 0o700),
			opSetxattr("d/g", "user.x", "1"),
			opLchown("l", 1, 1),
			opRename("moved", "renamed"),
		})
		after := inos(true)
		s.unmount(t)
		s.mount(t, nil)
		remounted := inos(true)
		checkGetdents(t, s, ".")
		checkGetdents(t, s, "d")
		for _, p := range paths {
			if before[p] != after[p] || before[p] != remounted[p] {
				t.Errorf("%s: %s: st_ino %d before copy-up, %d after, %d after remount; want it stable (SPEC §5)",
					s.name, p, before[p], after[p], remounted[p])
			}
		}
	})
}

func TestUserxattrFormat(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			Dir("d"),
			File("d/x", "x"),
			File("f", "f"),
			Dir("e"),
			File("e/y", "y"),
		}}},
		// The kernel refuses redirect_dir=on (and off, which means
		// "follow") together with userxattr.
		opts:       []string{"userxattr"},
		kernelOpts: []string{"redirect_dir=nofollow"},
		unionOpts:  []string{"redirect_dir=off"},
		ops: []op{
			opUnlink("d/x"),
			opRmdir("d"),
			opMkdir("d", 0o755),
			opUnlink("f"),
			opSetxattr("e", "user.mine", "1"),
			opListxattr("e"),
			opGetxattr("d", "user.overlay.opaque"),
			opReaddir("d"),
		},
		onDisk: func(t *testing.T, s *side) {
			p := filepath.Join(s.upper, "d")
			if v, err := getXattr(p, "user.overlay.opaque"); err != nil || v != "y" {
				t.Errorf("%s: upper/d: user.overlay.opaque = %q (%v), want \"y\"", s.name, v, err)
			}
			if v, err := getXattr(p, xattrOpaque); err == nil {
				t.Errorf("%s: upper/d: has %s=%q with userxattr", s.name, xattrOpaque, v)
			}
			wantWhiteout(t, s, "f")
		},
	})
}

func TestHardlinkedLowerCopyUp(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("a", "shared"),
			Hardlink("b", "a"),
			Dir("d"),
			Hardlink("d/c", "a"),
		}}},
		// The kernel keeps lower hard links whole only with its inode
		// index, the anchor SPEC §5 names.
		kernelOpts: []string{"index=on"},
		ops: []op{
			expect(opStat("a"), `ok, "file 0644 0:0 size=6 nlink=3"`),
			opWrite("a", wr|appnd, -1, "+more"),
			expect(opRead("b"), `ok, "shared+more"`),
			expect(opRead("d/c"), `ok, "shared+more"`),
			expect(opStat("b"), `ok, "file 0644 0:0 size=11 nlink=3"`),
			expect(opSameInode("a", "d/c"), `ok, "same"`),
			opUnlink("b"),
			expect(opStat("a"), `ok, "file 0644 0:0 size=11 nlink=2"`),
		},
		// With index=on the kernel ties the upper to its index; mounting
		// each filesystem on the other's layers is not meaningful here.
		noCross: true,
	})
}
