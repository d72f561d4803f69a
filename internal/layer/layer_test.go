package layer

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/testreq"
)

// newLayer opens a fresh directory as a layer; outside is a file next to
// it, which nothing done through the layer may reach.
func newLayer(t *testing.T) (l *Layer, root, outside string) {
	t.Helper()
	dir := t.TempDir()
	root = filepath.Join(dir, "layer")
	outside = filepath.Join(dir, "outside")
	if err := os.Mkdir(root, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(outside, []byte("secret"), 0o644); err != nil {
		t.Fatal(err)
	}
	l, err := Open(root)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, root, outside
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestJoinSplitClean(t *testing.T) {
	for _, c := range []struct{ dir, name, joined string }{
		{"", "a", "a"},
		{"a", "b", "a/b"},
		{"a/b", "c", "a/b/c"},
	} {
		if got := Join(c.dir, c.name); got != c.joined {
			t.Errorf("Join(%q, %q) = %q, want %q", c.dir, c.name, got, c.joined)
		}
		if d, n := Split(c.joined); d != c.dir || n != c.name {
			t.Errorf("Split(%q) = %q, %q", c.joined, d, n)
		}
	}
	for in, want := range map[string]string{"/a/b": "a/b", "a//b/": "a/b", "/": "", "/a/./b": "a/b", "/a/x/../b": "a/b"} {
		if got, err := Clean(in); err != nil || got != want {
			t.Errorf("Clean(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"/..", "/../etc", "a/../../b"} {
		// path.Clean of a rooted path drops leading "..": what is left
		// stays inside the layer either way.
		if got, err := Clean(in); err == nil && (got == ".." || filepath.IsAbs(got)) {
			t.Errorf("Clean(%q) = %q leaves the layer", in, got)
		}
	}
}

func TestFormat(t *testing.T) {
	f := Format{Prefix: TrustedPrefix}
	if got := f.Name(Opaque); got != "trusted.overlay.opaque" {
		t.Errorf("Name(Opaque) = %q", got)
	}
	if !f.IsPrivate("trusted.overlay.redirect") || f.IsPrivate("user.overlay.redirect") || f.IsPrivate("security.capability") {
		t.Error("IsPrivate does not follow the prefix in force")
	}
	if u := (Format{Prefix: UserPrefix}); u.Name(Metacopy) != "user.overlay.metacopy" || !u.IsPrivate("user.overlay.x") {
		t.Error("user namespace names are wrong")
	}
	for name, want := range map[string]string{".wh.a": "a", ".wh..hidden": ".hidden"} {
		if got, ok := WhiteoutTarget(name); !ok || got != want {
			t.Errorf("WhiteoutTarget(%q) = %q, %v", name, got, ok)
		}
	}
	for _, name := range []string{OpaqueWhiteout, "a.wh.b", "plain"} {
		if _, ok := WhiteoutTarget(name); ok {
			t.Errorf("WhiteoutTarget(%q) says whiteout", name)
		}
	}
	if !IsOpaqueValue("y") || IsOpaqueValue("x") || IsOpaqueValue("") {
		t.Error("IsOpaqueValue: only \"y\" makes a directory opaque")
	}
	dev, ino, ok := ParseOrigin(OriginValue(0x803, 1<<40+5))
	if !ok || dev != 0x803 || ino != 1<<40+5 {
		t.Errorf("origin round trip: %x %x %v", dev, ino, ok)
	}
	for _, bad := range []string{"", "803", "x:1", "1:y", "1:2:3"} {
		if _, _, ok := ParseOrigin(bad); ok {
			t.Errorf("ParseOrigin(%q) accepted", bad)
		}
	}
	if !IsWhiteout(&unix.Stat_t{Mode: unix.S_IFCHR}) || IsWhiteout(&unix.Stat_t{Mode: unix.S_IFCHR, Rdev: 1}) ||
		IsWhiteout(&unix.Stat_t{Mode: unix.S_IFREG}) {
		t.Error("IsWhiteout: only a 0:0 character device is a whiteout")
	}
}

// No path handed to a layer reaches outside it: not through "..", not
// through a symlink in the layer (absolute or relative), not by creating
// through one.
func TestNothingEscapesTheLayer(t *testing.T) {
	l, root, outside := newLayer(t)
	must(t, os.Symlink(outside, filepath.Join(root, "abs")))
	must(t, os.Symlink("../outside", filepath.Join(root, "rel")))
	must(t, os.Symlink("..", filepath.Join(root, "up")))
	must(t, os.Mkdir(filepath.Join(root, "d"), 0o755))
	for _, rel := range []string{"abs", "rel", "up/outside", "../outside", "d/../../outside"} {
		if fd, err := l.Open(rel, unix.O_RDONLY, 0); err == nil {
			unix.Close(fd)
			t.Errorf("Open(%q) reached outside the layer", rel)
		}
		if fd, err := l.Open(rel, unix.O_WRONLY|unix.O_TRUNC, 0); err == nil {
			unix.Close(fd)
			t.Errorf("Open(%q) for writing reached outside the layer", rel)
		}
	}
	if err := l.Mkdir("up/made", 0o755); err == nil {
		t.Error("Mkdir through a symlink succeeded")
	}
	if err := l.Setxattr("abs", "user.x", []byte("v"), 0); err == nil {
		t.Error("Setxattr followed a symlink")
	}
	if got, err := os.ReadFile(outside); err != nil || string(got) != "secret" {
		t.Fatalf("the file outside changed: %q, %v", got, err)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(root), "made")); err == nil {
		t.Error("a directory was made outside the layer")
	}
	// The symlinks themselves are objects of the layer.
	st, err := l.Lstat("abs")
	must(t, err)
	if st.Mode&unix.S_IFMT != unix.S_IFLNK {
		t.Errorf("Lstat(abs) mode %o, want a symlink", st.Mode)
	}
	if target, err := l.Readlink("abs"); err != nil || target != outside {
		t.Errorf("Readlink(abs) = %q, %v", target, err)
	}
}

// The namespace operations do what their names say, and a rename drops
// cached directories so that old names no longer resolve.
func TestNamespaceOps(t *testing.T) {
	l, root, _ := newLayer(t)
	must(t, l.Mkdir("a", 0o755))
	must(t, l.Mkdir("a/b", 0o755))
	fd, err := l.Open("a/b/f", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o640)
	must(t, err)
	_, err = unix.Write(fd, []byte("data"))
	must(t, err)
	unix.Close(fd)
	if ok, err := l.Exists("a/b/f"); !ok || err != nil {
		t.Errorf("Exists(a/b/f) = %v, %v", ok, err)
	}
	if ok, err := l.Exists("a/b/none"); ok || err != nil {
		t.Errorf("Exists(a/b/none) = %v, %v", ok, err)
	}
	must(t, l.Link("a/b/f", l, "a/g"))
	st, err := l.Lstat("a/g")
	must(t, err)
	if st.Nlink != 2 || st.Size != 4 || st.Mode&0o777 != 0o640 {
		t.Errorf("link: nlink %d size %d mode %o", st.Nlink, st.Size, st.Mode)
	}
	must(t, l.Chmod("a/g", 0o600))
	ts := []unix.Timespec{{Sec: 1000}, {Sec: 2000}}
	must(t, l.Lutimes("a/g", ts))
	st, err = l.Lstat("a/b/f")
	must(t, err)
	if st.Mode&0o777 != 0o600 || st.Mtim.Sec != 2000 {
		t.Errorf("chmod/utimes: mode %o mtime %d", st.Mode, st.Mtim.Sec)
	}
	// Resolve a/b (caching it), then rename a away: a/b/f is gone.
	if _, err := l.Lstat("a/b/f"); err != nil {
		t.Fatal(err)
	}
	must(t, l.Rename("a", l, "c", unix.RENAME_NOREPLACE))
	if _, err := l.Lstat("a/b/f"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("after rename, a/b/f: %v, want ENOENT", err)
	}
	if _, err := l.Lstat("c/b/f"); err != nil {
		t.Errorf("after rename, c/b/f: %v", err)
	}
	ents, err := l.ReadDir("c")
	must(t, err)
	var names []string
	for _, e := range ents {
		names = append(names, e.Name)
		if e.Name == "b" && DTToMode(e.Type) != unix.S_IFDIR || e.Name == "g" && DTToMode(e.Type) != unix.S_IFREG {
			t.Errorf("ReadDir: %s has type %d", e.Name, e.Type)
		}
	}
	slices.Sort(names)
	if !slices.Equal(names, []string{"b", "g"}) {
		t.Errorf("ReadDir(c) = %v", names)
	}
	must(t, l.Symlink("b/f", "c/s"))
	must(t, l.RemoveAll("c"))
	if _, err := os.Lstat(filepath.Join(root, "c")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("RemoveAll left c: %v", err)
	}
}

// An unnamed file made in a directory becomes visible only when linked.
func TestTmpfileLink(t *testing.T) {
	l, root, _ := newLayer(t)
	must(t, l.Mkdir("d", 0o755))
	fd, err := l.OpenTmpfile("d", unix.O_RDWR, 0o600)
	if errors.Is(err, unix.EOPNOTSUPP) {
		testreq.SkipOrFail(t, "no O_TMPFILE on the test directory's filesystem")
	}
	must(t, err)
	defer unix.Close(fd)
	_, err = unix.Write(fd, []byte("x"))
	must(t, err)
	if ents, _ := os.ReadDir(filepath.Join(root, "d")); len(ents) != 0 {
		t.Fatalf("an unnamed file shows: %v", ents)
	}
	must(t, l.LinkFd(fd, "d/named"))
	if got, err := os.ReadFile(filepath.Join(root, "d/named")); err != nil || string(got) != "x" {
		t.Errorf("linked file holds %q, %v", got, err)
	}
}

func TestXattrs(t *testing.T) {
	l, _, _ := newLayer(t)
	must(t, l.Mkdir("d", 0o755))
	if err := l.Setxattr("d", "user.test", []byte("value"), 0); errors.Is(err, unix.EOPNOTSUPP) {
		testreq.SkipOrFail(t, "no user xattrs on the test directory's filesystem")
	} else {
		must(t, err)
	}
	if v, err := l.GetxattrString("d", "user.test"); err != nil || v != "value" {
		t.Errorf("GetxattrString = %q, %v", v, err)
	}
	if v, err := l.GetxattrString("d", "user.none"); err != nil || v != "" {
		t.Errorf("GetxattrString of a missing xattr = %q, %v; want \"\", nil", v, err)
	}
	names, err := l.Listxattr("d")
	must(t, err)
	if !slices.Contains(names, "user.test") {
		t.Errorf("Listxattr = %v", names)
	}
	buf := make([]byte, 64)
	if sz, err := PackNames([]string{"user.a", "user.bc"}, buf); err != nil || string(buf[:sz]) != "user.a\x00user.bc\x00" {
		t.Errorf("PackNames = %q, %v", buf[:sz], err)
	}
	if sz, err := PackNames([]string{"user.a"}, nil); err != nil || sz != 7 {
		t.Errorf("PackNames measuring = %d, %v; want 7", sz, err)
	}
	if _, err := PackNames([]string{"user.a"}, buf[:3]); !errors.Is(err, unix.ERANGE) {
		t.Errorf("PackNames into too small a buffer: %v, want ERANGE", err)
	}
	must(t, l.Removexattr("d", "user.test"))
	if _, err := l.Getxattr("d", "user.test", nil); !errors.Is(err, unix.ENODATA) {
		t.Errorf("after Removexattr: %v, want ENODATA", err)
	}
}

// A whiteout made with the format's mode and device reads as one.
func TestWhiteoutMknod(t *testing.T) {
	testreq.Root(t, "whiteouts (mknod 0:0)")
	l, _, _ := newLayer(t)
	must(t, l.Mknod("wh", WhiteoutMode, WhiteoutDev))
	st, err := l.Lstat("wh")
	must(t, err)
	if !IsWhiteout(&st) || st.Mode&0o7777 != 0 {
		t.Errorf("mknod made mode %o rdev %d, not a whiteout", st.Mode, st.Rdev)
	}
}

// A layer opened below a layer stays below it.
func TestOpenLayer(t *testing.T) {
	l, root, _ := newLayer(t)
	must(t, os.Symlink("..", filepath.Join(root, "up")))
	if _, err := l.OpenLayer("up"); err == nil {
		t.Error("OpenLayer followed a symlink out")
	}
	must(t, l.Mkdir("sub", 0o755))
	s, err := l.OpenLayer("sub")
	must(t, err)
	defer s.Close()
	must(t, s.Mkdir("x", 0o700))
	if _, err := os.Stat(filepath.Join(root, "sub", "x")); err != nil {
		t.Error(err)
	}
}
