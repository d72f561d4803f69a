package e2e

// Behaviours that xfstests' generic group checks and kernel overlayfs has
// (issue 14), each through a real mount and, where the layers allow it,
// compared with kernel overlayfs on the same lower.

import (
	"os"
	"path/filepath"
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
