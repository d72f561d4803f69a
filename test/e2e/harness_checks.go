package e2e

// Assertions on one side's directories on disk, used by the tests' onDisk
// hooks. Messages start with the side's name, so a failure on the kernel's
// side (which means the test is wrong, not unionmount) is obvious.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func lstatPath(p string) (unix.Stat_t, error) {
	var st unix.Stat_t
	err := unix.Lstat(p, &st)
	return st, err
}

// upperStat stats rel in s's upper; it fails the test if rel is missing.
func upperStat(t *testing.T, s *side, rel string) (unix.Stat_t, bool) {
	t.Helper()
	st, err := lstatPath(filepath.Join(s.upper, rel))
	if err != nil {
		t.Errorf("%s: upper/%s: %v", s.name, rel, err)
		return st, false
	}
	return st, true
}

func wantWhiteout(t *testing.T, s *side, rel string) {
	t.Helper()
	st, ok := upperStat(t, s, rel)
	if !ok {
		return
	}
	if st.Mode&unix.S_IFMT != unix.S_IFCHR || st.Rdev != 0 {
		t.Errorf("%s: upper/%s: want a whiteout (char device 0:0), have %s rdev %d:%d",
			s.name, rel, fileType(st.Mode), unix.Major(st.Rdev), unix.Minor(st.Rdev))
	}
}

// wantNoUpperEntry: nothing at all (no copy, no whiteout) at rel in upper.
func wantNoUpperEntry(t *testing.T, s *side, rel string) {
	t.Helper()
	if st, err := lstatPath(filepath.Join(s.upper, rel)); err == nil {
		what := fileType(st.Mode)
		if what == "chardev" && st.Rdev == 0 {
			what = "whiteout"
		}
		t.Errorf("%s: upper/%s: want nothing there, have a %s", s.name, rel, what)
	} else if err != unix.ENOENT && err != unix.ENOTDIR {
		t.Errorf("%s: upper/%s: %v", s.name, rel, err)
	}
}

func wantUpperType(t *testing.T, s *side, rel, typ string) {
	t.Helper()
	if st, ok := upperStat(t, s, rel); ok && fileType(st.Mode) != typ {
		t.Errorf("%s: upper/%s: want %s, have %s", s.name, rel, typ, fileType(st.Mode))
	}
}

func wantUpperContent(t *testing.T, s *side, rel string, want []byte) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(s.upper, rel))
	if err != nil {
		t.Errorf("%s: upper/%s: %v", s.name, rel, err)
		return
	}
	if hasOverlayXattr(filepath.Join(s.upper, rel), "metacopy") && len(b) == len(want) {
		// A metadata-only copy (kernel metacopy format): the data is still
		// the lower file's, at the same path.
		for _, l := range s.lowers {
			if lb, err := os.ReadFile(filepath.Join(l, rel)); err == nil {
				b = lb
				break
			}
		}
	}
	if !bytes.Equal(b, want) {
		t.Errorf("%s: upper/%s: content %q, want %q", s.name, rel, short(string(b)), short(string(want)))
	}
}

// hasOverlayXattr reports whether p has overlay xattr name in either
// namespace (overlayXattr cannot tell an empty value from none).
func hasOverlayXattr(p, name string) bool {
	for _, ns := range []string{"trusted.overlay.", "user.overlay."} {
		if _, err := getXattr(p, ns+name); err == nil {
			return true
		}
	}
	return false
}

func wantOpaque(t *testing.T, s *side, rel string) {
	t.Helper()
	wantUpperType(t, s, rel, "dir")
	if v := overlayXattr(filepath.Join(s.upper, rel), "opaque"); v != "y" {
		t.Errorf("%s: upper/%s: overlay.opaque = %q, want \"y\"", s.name, rel, v)
	}
}

func wantMode(t *testing.T, s *side, rel string, mode uint32) {
	t.Helper()
	if st, ok := upperStat(t, s, rel); ok && st.Mode&0o7777 != mode {
		t.Errorf("%s: upper/%s: mode %04o, want %04o", s.name, rel, st.Mode&0o7777, mode)
	}
}

func wantOwner(t *testing.T, s *side, rel string, uid, gid uint32) {
	t.Helper()
	if st, ok := upperStat(t, s, rel); ok && (st.Uid != uid || st.Gid != gid) {
		t.Errorf("%s: upper/%s: owner %d:%d, want %d:%d", s.name, rel, st.Uid, st.Gid, uid, gid)
	}
}

func wantMtime(t *testing.T, s *side, rel string, tm time.Time) {
	t.Helper()
	if st, ok := upperStat(t, s, rel); ok {
		if got := time.Unix(st.Mtim.Sec, st.Mtim.Nsec); !got.Equal(tm) {
			t.Errorf("%s: upper/%s: mtime %s, want %s", s.name, rel, fmtTime(got), fmtTime(tm))
		}
	}
}

// userXattrs lists the xattrs of p on disk that are not overlay-private.
func userXattrs(p string) (string, error) {
	x, err := listXattrs(p)
	if err != nil {
		return "", err
	}
	for k := range x {
		if isPrivateXattr(k) {
			delete(x, k)
		}
	}
	return fmtXattrs(x), nil
}

// wantCopiedUpLike checks that upper/rel carries the metadata of the lower
// object at the same path in lower number lowerIdx: type, mode, owner,
// non-private xattrs and, if times, the mtime to the nanosecond.
func wantCopiedUpLike(t *testing.T, s *side, rel string, lowerIdx int, times bool) {
	t.Helper()
	wantCopiedUpFrom(t, s, rel, rel, lowerIdx, times)
}

// wantCopiedUpFrom is wantCopiedUpLike for an object that was renamed: it
// compares upper/rel with lowerRel in lower number lowerIdx.
func wantCopiedUpFrom(t *testing.T, s *side, rel, lowerRel string, lowerIdx int, times bool) {
	t.Helper()
	up := filepath.Join(s.upper, rel)
	lo := filepath.Join(s.lowers[lowerIdx], lowerRel)
	su, err := lstatPath(up)
	if err != nil {
		t.Errorf("%s: upper/%s: %v (want a copy-up)", s.name, rel, err)
		return
	}
	sl, err := lstatPath(lo)
	if err != nil {
		t.Fatalf("lower%d/%s: %v", lowerIdx, lowerRel, err)
	}
	var diffs []string
	if su.Mode != sl.Mode {
		diffs = append(diffs, fmt.Sprintf("mode %s %04o, lower %s %04o", fileType(su.Mode), su.Mode&0o7777, fileType(sl.Mode), sl.Mode&0o7777))
	}
	if su.Uid != sl.Uid || su.Gid != sl.Gid {
		diffs = append(diffs, fmt.Sprintf("owner %d:%d, lower %d:%d", su.Uid, su.Gid, sl.Uid, sl.Gid))
	}
	xu, err1 := userXattrs(up)
	xl, err2 := userXattrs(lo)
	if err1 != nil || err2 != nil {
		diffs = append(diffs, fmt.Sprintf("xattrs: %v %v", err1, err2))
	} else if xu != xl {
		diffs = append(diffs, fmt.Sprintf("xattrs %s, lower %s", xu, xl))
	}
	if times && (su.Mtim != sl.Mtim) {
		diffs = append(diffs, fmt.Sprintf("mtime %s, lower %s",
			fmtTime(time.Unix(su.Mtim.Sec, su.Mtim.Nsec)), fmtTime(time.Unix(sl.Mtim.Sec, sl.Mtim.Nsec))))
	}
	if len(diffs) > 0 {
		t.Errorf("%s: upper/%s is not a faithful copy-up: %s", s.name, rel, strings.Join(diffs, "; "))
	}
}

// upperFiles lists every path in s's upper, root excluded, sorted.
func upperFiles(t *testing.T, s *side) []string {
	t.Helper()
	var out []string
	err := filepath.Walk(s.upper, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		if rel, _ := filepath.Rel(s.upper, p); rel != "." {
			out = append(out, rel)
		}
		return nil
	})
	if err != nil {
		t.Errorf("%s: walking upper: %v", s.name, err)
	}
	sort.Strings(out)
	return out
}

// checkLowerAtimes checks that reads through the mount did not touch the
// atime of lower objects (makeLayer set every atime to layerTime):
//   - regular files: neither filesystem may (the kernel reads lowers with
//     O_NOATIME);
//   - directories: only for unionmount; kernel overlayfs updates a lower
//     directory's atime when it lists it, a known difference;
//   - symlinks: not checked; readlink(2) updates atime whatever the caller.
//
// It first proves the check can fail: the backing filesystem must update
// atime on a plain read (relatime does, for an atime this old).
func checkLowerAtimes(t *testing.T, s *side) {
	t.Helper()
	probe := filepath.Join(s.base, "atime-probe")
	if err := os.WriteFile(probe, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := setTimesTree(probe, layerTime); err != nil {
		t.Fatal(err)
	}
	if _, err := os.ReadFile(probe); err != nil {
		t.Fatal(err)
	}
	if st, _ := lstatPath(probe); st.Atim.Sec == layerTime.Unix() {
		t.Logf("the filesystem under %s does not update atime on read (noatime?); lower atime check skipped", s.base)
		return
	}
	checkDirs := s.name == "unionmount" && !selftestKernel
	for i, l := range s.lowers {
		err := walkNoatime(l, ".", func(rel string, st *unix.Stat_t) error {
			switch st.Mode & unix.S_IFMT {
			case unix.S_IFLNK:
				return nil
			case unix.S_IFDIR:
				if !checkDirs {
					return nil
				}
			}
			if at := time.Unix(st.Atim.Sec, st.Atim.Nsec); !at.Equal(layerTime) {
				t.Errorf("%s: lower%d/%s: atime changed to %s (a read through the mount touched the lower)",
					s.name, i, rel, fmtTime(at))
			}
			return nil
		})
		if err != nil {
			t.Errorf("%s: walking lower%d: %v", s.name, i, err)
		}
	}
}

// bothFilesystems runs fn as subtests "kernel" and "unionmount", each with
// its own fresh stack: for checks that are not differential but that the
// kernel must pass too (which proves the check itself right).
func bothFilesystems(t *testing.T, spec stackSpec, fn func(t *testing.T, s *side)) {
	t.Helper()
	requireMountable(t)
	for _, name := range []string{"kernel", "unionmount"} {
		t.Run(name, func(t *testing.T) {
			s := &side{name: name, stack: newStack(t, spec)}
			fn(t, s)
		})
	}
}
