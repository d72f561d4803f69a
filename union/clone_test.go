package union

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestLowerIsReadOnlyToTheEngine drives the layer code on the lower
// descriptors a union opened: every kind of write fails with EROFS (the
// lower is a read-only clone of its mount), while the lower's directory
// stays writable for everyone else and the upper for the engine.
func TestLowerIsReadOnlyToTheEngine(t *testing.T) {
	f := newFixture(t, 1)
	write(t, filepath.Join(f.lowers[0], "file"), "lower\n")
	must(t, os.Mkdir(filepath.Join(f.lowers[0], "dir"), 0o755))
	u := f.open(t)
	lower := u.lowers[0]
	if !lower.Cloned() {
		t.Fatal("the lower is not a clone of its mount (running as root, it must be)")
	}

	writes := map[string]func() error{
		"open for writing": func() error {
			fd, err := lower.Open("file", unix.O_WRONLY, 0)
			if err == nil {
				unix.Close(fd)
			}
			return err
		},
		"create": func() error {
			fd, err := lower.Open("new", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			return err
		},
		"O_TMPFILE": func() error {
			fd, err := lower.OpenTmpfile("dir", unix.O_RDWR, 0o600)
			closeIfOpen(fd, err)
			return err
		},
		"mkdir":    func() error { return lower.Mkdir("newdir", 0o755) },
		"mknod":    func() error { return lower.Mknod("wh", unix.S_IFCHR, 0) },
		"symlink":  func() error { return lower.Symlink("file", "link") },
		"unlink":   func() error { return lower.Unlink("file") },
		"rmdir":    func() error { return lower.Rmdir("dir") },
		"rename":   func() error { return lower.Rename("file", lower, "renamed", 0) },
		"link":     func() error { return lower.Link("file", lower, "hard") },
		"chmod":    func() error { return lower.Chmod("file", 0o600) },
		"chown":    func() error { return lower.Lchown("file", 1, 1) },
		"utimes":   func() error { return lower.Lutimes("file", []unix.Timespec{{Sec: 1}, {Sec: 1}}) },
		"setxattr": func() error { return lower.Setxattr("file", "user.x", []byte("y"), 0) },
		"overlay xattr": func() error {
			return lower.Setxattr("dir", u.format.Name("opaque"), []byte("y"), 0)
		},
	}
	for name, w := range writes {
		if err := w(); !errors.Is(err, unix.EROFS) {
			t.Errorf("%s on the lower: %v, want EROFS", name, err)
		}
	}
	if b, err := os.ReadFile(filepath.Join(f.lowers[0], "file")); err != nil || string(b) != "lower\n" {
		t.Errorf("lower file now %q, %v", b, err)
	}
	// Read-only is the clone's, not the directory's.
	must(t, os.WriteFile(filepath.Join(f.lowers[0], "host-write"), nil, 0o644))
	if err := u.upper.Mkdir("upper-dir", 0o755); err != nil {
		t.Errorf("mkdir in the upper: %v", err)
	}
}

func closeIfOpen(fd int, err error) {
	if err == nil {
		unix.Close(fd)
	}
}
