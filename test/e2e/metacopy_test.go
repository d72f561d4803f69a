package e2e

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestMetaCopyInterop: chmod of a lower file copies no data; the upper is
// kernel overlayfs's metacopy format, so the kernel (metacopy=on) reads the
// data from below, and so does unionmount from an upper the kernel wrote.
func TestMetaCopyInterop(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	data := bytes.Repeat([]byte("0123456789abcdef"), 1<<16) // 1 MiB
	mk := func() (string, string, string) {
		d := t.TempDir()
		l, u, w := filepath.Join(d, "l"), filepath.Join(d, "u"), filepath.Join(d, "w")
		for _, p := range []string{l, u, w} {
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(filepath.Join(l, "f"), data, 0o644); err != nil {
			t.Fatal(err)
		}
		return l, u, w
	}
	check := func(who, mnt string, mode os.FileMode) {
		t.Helper()
		fi, err := os.Stat(filepath.Join(mnt, "f"))
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(filepath.Join(mnt, "f"))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode || !bytes.Equal(got, data) {
			t.Errorf("%s: mode %v, %d bytes (equal to the lower's: %v)", who, fi.Mode(), len(got), bytes.Equal(got, data))
		}
	}

	// unionmount writes it, the kernel reads it.
	l, u, w := mk()
	mnt := mountUnion(t, []string{l}, u, w, "metacopy=on")
	if err := os.Chmod(filepath.Join(mnt, "f"), 0o600); err != nil {
		t.Fatal(err)
	}
	check("unionmount after chmod", mnt, 0o600)
	unmount(t, mnt)
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(u, "f"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks > 8 {
		t.Errorf("chmod copied data up: upper file has %d blocks", st.Blocks)
	}
	if _, err := unix.Getxattr(filepath.Join(u, "f"), "trusted.overlay.metacopy", nil); err != nil {
		t.Errorf("upper file has no metacopy mark: %v", err)
	}
	check("kernel overlayfs (metacopy=on) on unionmount's upper", mountKernel(t, []string{l}, u, w, "metacopy=on"), 0o600)

	// The kernel writes it, unionmount reads it, and completes it on write.
	l, u, w = mk()
	kmnt := mountKernel(t, []string{l}, u, w, "metacopy=on")
	if err := os.Chmod(filepath.Join(kmnt, "f"), 0o640); err != nil {
		t.Fatal(err)
	}
	unmount(t, kmnt)
	mnt = mountUnion(t, []string{l}, u, w, "metacopy=on")
	check("unionmount on kernel overlayfs's metacopy upper", mnt, 0o640)
	fh, err := os.OpenFile(filepath.Join(mnt, "f"), os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := fh.Write([]byte("!")); err != nil {
		t.Fatal(err)
	}
	fh.Close()
	got, err := os.ReadFile(filepath.Join(u, "f"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, append(append([]byte{}, data...), '!')) {
		t.Errorf("after a write the upper holds %d bytes, want the data and the write", len(got))
	}
}

// TestOpenForWriteCopiesDataOnlyWhenWritten: touch (an open for writing
// that never writes) copies no data; a handle opened for reading and
// writing reads the lower data, and its first write copies the data up
// under it and under every other open handle.
func TestOpenForWriteCopiesDataOnlyWhenWritten(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{
		File("touched", string(bytes.Repeat([]byte("t"), 1<<20))),
		File("rw", "0123456789"),
	}}})
	mnt := mountUnion(t, s.lowers, s.upper, s.work, "metacopy=on")
	sh(t, mnt, "touch -d @1000000000 touched")
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(s.upper, "touched"), &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks > 8 || st.Mtim.Sec != 1000000000 {
		t.Errorf("touch: upper file has %d blocks (want no data) and mtime %d", st.Blocks, st.Mtim.Sec)
	}

	reader, err := os.Open(filepath.Join(mnt, "rw"))
	if err != nil {
		t.Fatal(err)
	}
	defer reader.Close()
	rw, err := os.OpenFile(filepath.Join(mnt, "rw"), os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer rw.Close()
	buf := make([]byte, 4)
	if _, err := rw.ReadAt(buf, 2); err != nil || string(buf) != "2345" {
		t.Fatalf("read through a handle opened for writing: %q, %v", buf, err)
	}
	if _, err := rw.WriteAt([]byte("XY"), 4); err != nil {
		t.Fatal(err)
	}
	for name, f := range map[string]*os.File{"writer": rw, "reader": reader} {
		got := make([]byte, 10)
		if _, err := f.ReadAt(got, 0); err != nil || string(got) != "0123XY6789" {
			t.Errorf("%s reads %q, %v after the write; want 0123XY6789", name, got, err)
		}
	}
	got, err := os.ReadFile(filepath.Join(s.upper, "rw"))
	if err != nil || string(got) != "0123XY6789" {
		t.Errorf("upper rw = %q, %v", got, err)
	}
	if _, err := unix.Getxattr(filepath.Join(s.upper, "rw"), "trusted.overlay.metacopy", nil); err == nil {
		t.Error("metacopy mark left after a write")
	}
}

// TestDefaultUpperReadsEverywhere: with the default options, chmod, chown
// and setxattr of lower files copy their data up (metacopy is off by
// default, as in the kernel), so kernel overlayfs with its default
// metacopy=off and fuse-overlayfs read the same contents from the upper
// unionmount wrote, not EPERM or zero bytes.
func TestDefaultUpperReadsEverywhere(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	contents := map[string]string{"chmodded": "chmod data\n", "chowned": "chown data\n", "xattred": "xattr data\n"}
	var lower []Entry
	for name, data := range contents {
		lower = append(lower, File(name, data))
	}
	s := newStack(t, stackSpec{lowers: [][]Entry{lower}})
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	if err := os.Chmod(filepath.Join(mnt, "chmodded"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(filepath.Join(mnt, "chowned"), 5, 5); err != nil {
		t.Fatal(err)
	}
	if err := unix.Setxattr(filepath.Join(mnt, "xattred"), "user.x", []byte("1"), 0); err != nil {
		t.Fatal(err)
	}
	unmount(t, mnt)
	for name := range contents {
		if hasOverlayXattr(filepath.Join(s.upper, name), "metacopy") {
			t.Errorf("%s: the default mount wrote a metadata-only copy", name)
		}
	}
	readers := map[string]func() string{
		"kernel overlayfs (metacopy=off)": func() string { return mountKernel(t, s.lowers, s.upper, s.work) },
	}
	if _, err := exec.LookPath("fuse-overlayfs"); err == nil {
		readers["fuse-overlayfs"] = func() string { return mountFuseOverlayfs(t, s.lowers, s.upper, s.work) }
	} else {
		t.Log("fuse-overlayfs not installed: only kernel overlayfs reads the upper")
	}
	for who, mount := range readers {
		m := mount()
		for name, want := range contents {
			got, err := os.ReadFile(filepath.Join(m, name))
			if err != nil || string(got) != want {
				t.Errorf("%s reads %s as %q, %v; want %q", who, name, got, err, want)
			}
		}
		unmount(t, m)
	}
}
