package e2e

// Behaviours that xfstests' generic group checks and kernel overlayfs has
// (issue 14), each through a real mount and, where the layers allow it,
// compared with kernel overlayfs on the same lower.

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// btime is the birth time statx reports for path; ok is false without one.
func btime(t *testing.T, path string) (ts unix.StatxTimestamp, ok bool) {
	t.Helper()
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, unix.AT_SYMLINK_NOFOLLOW, unix.STATX_BASIC_STATS|unix.STATX_BTIME, &sx); err != nil {
		t.Fatalf("statx %s: %v", path, err)
	}
	return sx.Btime, sx.Mask&unix.STATX_BTIME != 0
}

// TestStatxBirthTime: statx reports the birth time of the real object, the
// lower file's until a copy-up and the upper copy's after it (generic/528),
// as kernel overlayfs does.
func TestStatxBirthTime(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("f", "lower"), Dir("d"), File("g", "g")}}})
	if _, ok := btime(t, filepath.Join(s.lowers[0], "f")); !ok {
		t.Fatalf("%s keeps no birth times: the test needs a filesystem that does (ext4)", s.base)
	}
	ks := newStack(t, stackSpec{})
	kmnt := mountKernel(t, s.lowers, ks.upper, ks.work)
	mnt := mountUnion(t, s.lowers, s.upper, s.work)

	same := func(what, path, real string) {
		t.Helper()
		got, ok := btime(t, path)
		want, _ := btime(t, real)
		if !ok || got != want {
			t.Errorf("%s: statx btime %v (reported: %v); the real file's is %v", what, got, ok, want)
		}
	}
	for _, name := range []string{"f", "d"} {
		same("kernel overlayfs, lower "+name, filepath.Join(kmnt, name), filepath.Join(s.lowers[0], name))
		same("unionmount, lower "+name, filepath.Join(mnt, name), filepath.Join(s.lowers[0], name))
	}
	// A copy-up makes a new file: its birth time is the copy's.
	if err := os.Chmod(filepath.Join(mnt, "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "new"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	same("unionmount, copied-up f", filepath.Join(mnt, "f"), filepath.Join(s.upper, "f"))
	same("unionmount, new file", filepath.Join(mnt, "new"), filepath.Join(s.upper, "new"))
	// An open file with no name any more asks its descriptor.
	fd, err := unix.Open(filepath.Join(mnt, "g"), unix.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	want, _ := btime(t, filepath.Join(s.upper, "g"))
	if err := unix.Unlink(filepath.Join(mnt, "g")); err != nil {
		t.Fatal(err)
	}
	var sx unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_BTIME, &sx); err != nil || sx.Mask&unix.STATX_BTIME == 0 || sx.Btime != want {
		t.Errorf("unlinked open file: statx btime %v (mask %#x, err %v); want the upper copy's %v", sx.Btime, sx.Mask, err, want)
	}
}

// TestFstatOfRemovedDirectory: a descriptor open on a directory that a
// rename replaced, or rmdir removed, still answers fstat, with a link count
// of 0 (generic/035), as on ext4: for a directory in the lower layer, in
// upper, and merged. Kernel overlayfs does so for a directory in upper
// (which generic/035 runs on); for one with a lower part it reports the
// real lower directory's link count, a departure the README lists.
func TestFstatOfRemovedDirectory(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	for _, kind := range []overlayKind{kindKernel, kindUnionmount} {
		t.Run(string(kind), func(t *testing.T) {
			s := newStack(t, stackSpec{lowers: [][]Entry{{
				Dir("lower-src"), Dir("lower-dst"), Dir("lower-gone"),
				Dir("merged-dst"), Dir("merged-gone"),
			}}})
			mnt := mountOverlay(t, kind, s.lowers, s.upper, s.work)
			for _, d := range []string{"upper-src", "upper-dst", "upper-gone"} {
				if err := os.Mkdir(filepath.Join(mnt, d), 0o755); err != nil {
					t.Fatal(err)
				}
			}
			for _, d := range []string{"merged-dst", "merged-gone"} {
				if err := os.WriteFile(filepath.Join(mnt, d, "f"), nil, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Remove(filepath.Join(mnt, d, "f")); err != nil {
					t.Fatal(err)
				}
			}
			check := func(what, dir string, remove func() error) {
				t.Helper()
				fd, err := unix.Open(filepath.Join(mnt, dir), unix.O_RDONLY|unix.O_DIRECTORY, 0)
				if err != nil {
					t.Fatal(err)
				}
				defer unix.Close(fd)
				if err := remove(); err != nil {
					t.Fatalf("%s: %v", what, err)
				}
				var st unix.Stat_t
				if err := unix.Fstat(fd, &st); err != nil {
					t.Errorf("%s: fstat of the open directory: %v; want success with link count 0", what, err)
				} else if kind == kindKernel && !strings.HasPrefix(dir, "upper") {
					return // the kernel's departure (see above)
				} else if st.Nlink != 0 || st.Mode&unix.S_IFMT != unix.S_IFDIR {
					t.Errorf("%s: fstat of the open directory: mode %#o, link count %d; want a directory with link count 0", what, st.Mode, st.Nlink)
				}
			}
			for _, c := range [][2]string{{"lower-src", "lower-dst"}, {"upper-src", "upper-dst"}, {"upper-dst", "merged-dst"}} {
				check("rename "+c[0]+" over "+c[1], c[1], func() error {
					return unix.Rename(filepath.Join(mnt, c[0]), filepath.Join(mnt, c[1]))
				})
			}
			for _, d := range []string{"lower-gone", "upper-gone", "merged-gone"} {
				check("rmdir "+d, d, func() error { return unix.Rmdir(filepath.Join(mnt, d)) })
			}
		})
	}
}
