package union

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/internal/testreq"
)

// requireRoot: whiteouts (mknod 0:0) and trusted.* xattrs need root. Under
// CI a missing privilege is a failure, not a skip.
func requireRoot(t *testing.T) {
	t.Helper()
	testreq.Root(t, "engine tests")
}

type fixture struct {
	dir    string
	lowers []string
	upper  string
	work   string
}

// newFixture makes n lower dirs and an upper/work pair, and runs fill on
// each lower (index 0 is topmost).
func newFixture(t *testing.T, n int) *fixture {
	t.Helper()
	requireRoot(t)
	d := t.TempDir()
	f := &fixture{dir: d, upper: filepath.Join(d, "upper"), work: filepath.Join(d, "work")}
	for i := 0; i < n; i++ {
		l := filepath.Join(d, "lower"+string(rune('0'+i)))
		must(t, os.Mkdir(l, 0o755))
		f.lowers = append(f.lowers, l)
	}
	must(t, os.Mkdir(f.upper, 0o755))
	must(t, os.Mkdir(f.work, 0o755))
	return f
}

func (f *fixture) open(t *testing.T) *Union {
	t.Helper()
	u, err := New(Config{Lowers: f.lowers, Upper: f.upper, Work: f.work, RedirectDir: true, WhiteoutFiles: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { u.Close() })
	return u
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func write(t *testing.T, path, data string) {
	t.Helper()
	must(t, os.MkdirAll(filepath.Dir(path), 0o755))
	must(t, os.WriteFile(path, []byte(data), 0o644))
}

func whiteout(t *testing.T, path string) {
	t.Helper()
	must(t, unix.Mknod(path, unix.S_IFCHR, 0))
}

func resolve(t *testing.T, u *Union, p string) *Entry {
	t.Helper()
	e, err := u.Resolve(p)
	if err != nil {
		t.Fatalf("resolve %s: %v", p, err)
	}
	return e
}

func names(t *testing.T, u *Union, p string) []string {
	t.Helper()
	ents, err := u.ReadDir(resolve(t, u, p))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name)
	}
	sort.Strings(out)
	return out
}

func readAll(t *testing.T, u *Union, p string) string {
	t.Helper()
	fd, err := u.Open(resolve(t, u, p), unix.O_RDONLY)
	if err != nil {
		t.Fatal(err)
	}
	f := os.NewFile(uintptr(fd), p)
	defer f.Close()
	var b bytes.Buffer
	_, err = b.ReadFrom(f)
	must(t, err)
	return b.String()
}

func TestLookupWalksStackTopDown(t *testing.T) {
	f := newFixture(t, 3)
	write(t, f.lowers[0]+"/d/top", "0")
	write(t, f.lowers[1]+"/d/mid", "1")
	whiteout(t, f.lowers[1]+"/d/gone")
	write(t, f.lowers[2]+"/d/gone", "2")
	write(t, f.lowers[2]+"/d/bottom", "2")
	write(t, f.lowers[1]+"/file", "mid")
	write(t, f.lowers[2]+"/file", "bottom")
	// A non-directory in the middle hides a directory below it.
	write(t, f.lowers[1]+"/shadow", "file")
	write(t, f.lowers[2]+"/shadow/inside", "hidden")
	u := f.open(t)

	if got, want := names(t, u, "d"), []string{"bottom", "mid", "top"}; strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("merged d = %v, want %v", got, want)
	}
	if _, err := u.Resolve("d/gone"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("whited-out name: err = %v, want ENOENT", err)
	}
	if got := readAll(t, u, "file"); got != "mid" {
		t.Errorf("file = %q, want the topmost layer's", got)
	}
	if e := resolve(t, u, "shadow"); e.IsDir() {
		t.Error("shadow is a directory; the file above should hide it")
	}
	if e := resolve(t, u, "d"); len(e.Lower) != 3 {
		t.Errorf("d's union stack has %d lowers, want 3", len(e.Lower))
	}
}

func TestOpaqueForms(t *testing.T) {
	f := newFixture(t, 3)
	write(t, f.lowers[0]+"/x/a", "")
	write(t, f.lowers[0]+"/y/a", "")
	write(t, f.lowers[0]+"/y/"+layer.OpaqueWhiteout, "")
	write(t, f.lowers[0]+"/z/a", "")
	write(t, f.lowers[0]+"/z/.wh.b", "")
	for _, d := range []string{"x", "y", "z"} {
		write(t, f.lowers[1]+"/"+d+"/b", "")
	}
	must(t, unix.Setxattr(f.lowers[0]+"/x", "trusted.overlay.opaque", []byte("y"), 0))
	write(t, f.lowers[2]+"/z/c", "")
	u := f.open(t)
	for d, want := range map[string]string{"x": "a", "y": "a", "z": "a,c"} {
		if got := strings.Join(names(t, u, d), ","); got != want {
			t.Errorf("%s lists %q, want %q", d, got, want)
		}
	}
}

func TestInodeNumbersMatchReaddir(t *testing.T) {
	f := newFixture(t, 2)
	write(t, f.lowers[0]+"/d/a", "a")
	write(t, f.lowers[1]+"/d/b", "b")
	write(t, f.lowers[1]+"/d/sub/c", "c")
	u := f.open(t)
	d := resolve(t, u, "d")
	check := func() {
		t.Helper()
		ents, err := u.ReadDir(d)
		must(t, err)
		for _, de := range ents {
			_, st, err := u.Lookup(d, de.Name)
			must(t, err)
			if st.Ino != de.Ino {
				t.Errorf("%s: d_ino %d, st_ino %d", de.Name, de.Ino, st.Ino)
			}
		}
	}
	check()
	before := resolve(t, u, "d/b").Ino
	must(t, copyUpAll(u, resolve(t, u, "d/b")))
	must(t, copyUpAll(u, resolve(t, u, "d/sub")))
	d = resolve(t, u, "d")
	check()
	if after := resolve(t, u, "d/b").Ino; after != before {
		t.Errorf("copy-up changed the inode number: %d -> %d", before, after)
	}
}

func TestCopyUpKeepsDataMetadataAndHoles(t *testing.T) {
	f := newFixture(t, 1)
	p := f.lowers[0] + "/dir/sparse"
	must(t, os.MkdirAll(filepath.Dir(p), 0o750))
	fh, err := os.Create(p)
	must(t, err)
	_, err = fh.WriteAt([]byte("end"), 64<<20)
	must(t, err)
	must(t, fh.Close())
	must(t, os.Chmod(p, 0o4751))
	must(t, os.Chown(p, 1234, 5678))
	must(t, unix.Setxattr(p, "user.note", []byte("kept"), 0))
	must(t, unix.Setxattr(p, "trusted.overlay.opaque", []byte("y"), 0)) // private: not copied
	mtime := unix.NsecToTimespec(1_000_000_000_123)
	must(t, unix.UtimesNanoAt(unix.AT_FDCWD, p, []unix.Timespec{mtime, mtime}, 0))
	var dirBefore unix.Stat_t
	must(t, unix.Lstat(f.lowers[0]+"/dir", &dirBefore))

	u := f.open(t)
	must(t, copyUpAll(u, resolve(t, u, "dir/sparse")))

	var lo, up unix.Stat_t
	must(t, unix.Lstat(p, &lo))
	must(t, unix.Lstat(f.upper+"/dir/sparse", &up))
	if up.Mode != lo.Mode || up.Uid != 1234 || up.Gid != 5678 || up.Size != lo.Size || up.Mtim != mtime {
		t.Errorf("upper copy: mode %o uid %d gid %d size %d mtime %v; lower mode %o size %d mtime %v",
			up.Mode, up.Uid, up.Gid, up.Size, up.Mtim, lo.Mode, lo.Size, mtime)
	}
	if up.Blocks > 64 {
		t.Errorf("copy is not sparse: %d blocks", up.Blocks)
	}
	buf := make([]byte, 16)
	n, _ := unix.Getxattr(f.upper+"/dir/sparse", "user.note", buf)
	if string(buf[:n]) != "kept" {
		t.Errorf("user.note = %q", buf[:n])
	}
	if _, err := unix.Getxattr(f.upper+"/dir/sparse", "trusted.overlay.opaque", buf); err == nil {
		t.Error("a private xattr of the lower was copied up")
	}
	var dirAfter unix.Stat_t
	must(t, unix.Lstat(f.upper+"/dir", &dirAfter))
	if dirAfter.Mode != dirBefore.Mode || dirAfter.Mtim != dirBefore.Mtim {
		t.Errorf("parent copied up with mode %o mtime %v, lower has %o %v", dirAfter.Mode, dirAfter.Mtim, dirBefore.Mode, dirBefore.Mtim)
	}
	if ents, _ := os.ReadDir(f.work + "/work"); len(ents) != 0 {
		t.Errorf("workdir/work not empty after copy-up: %v", ents)
	}
}

func TestTruncateCopiesOnlyNBytes(t *testing.T) {
	f := newFixture(t, 1)
	write(t, f.lowers[0]+"/f", "0123456789")
	u := f.open(t)
	n := int64(4)
	must(t, u.setAttr(resolve(t, u, "f"), SetAttr{Size: &n}))
	got, err := os.ReadFile(f.upper + "/f")
	must(t, err)
	if string(got) != "0123" {
		t.Errorf("upper f = %q, want %q", got, "0123")
	}
}

func TestRacingCopyUpsCopyOnce(t *testing.T) {
	f := newFixture(t, 1)
	data := strings.Repeat("x", 1<<20)
	write(t, f.lowers[0]+"/a/b/f", data)
	u := f.open(t)
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			e, err := u.Resolve("a/b/f")
			if err == nil {
				var fd int
				fd, err = u.Open(e, unix.O_WRONLY|unix.O_APPEND)
				if err == nil {
					_, err = unix.Write(fd, []byte("!"))
					unix.Close(fd)
				}
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		must(t, err)
	}
	got, err := os.ReadFile(f.upper + "/a/b/f")
	must(t, err)
	if want := data + strings.Repeat("!", 16); string(got) != want {
		t.Errorf("upper file has %d bytes, want %d: a copy-up overwrote writes", len(got), len(want))
	}
	if ents, _ := os.ReadDir(f.work + "/work"); len(ents) != 0 {
		t.Errorf("workdir/work not empty: %v", ents)
	}
}

func isWhiteoutFile(t *testing.T, p string) bool {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return false
	}
	return layer.IsWhiteout(&st)
}

func TestRemoveLeavesWhiteoutOnlyWhenNeeded(t *testing.T) {
	f := newFixture(t, 1)
	write(t, f.lowers[0]+"/low", "")
	write(t, f.lowers[0]+"/copied", "")
	write(t, f.lowers[0]+"/dir/x", "")
	u := f.open(t)
	root := resolve(t, u, "")
	_, _, fd, err := u.Create(root, "new", unix.O_WRONLY, 0o644, Owner{})
	must(t, err)
	unix.Close(fd)
	must(t, copyUpAll(u, resolve(t, u, "copied")))

	must(t, u.Unlink(resolve(t, u, ""), "low"))
	must(t, u.Unlink(resolve(t, u, ""), "copied"))
	must(t, u.Unlink(resolve(t, u, ""), "new"))
	if err := u.Rmdir(resolve(t, u, ""), "dir", nil); !errors.Is(err, unix.ENOTEMPTY) {
		t.Errorf("rmdir of non-empty merged dir: %v, want ENOTEMPTY", err)
	}
	must(t, u.Unlink(resolve(t, u, "dir"), "x"))
	must(t, u.Rmdir(resolve(t, u, ""), "dir", nil))

	for _, n := range []string{"low", "copied", "dir"} {
		if !isWhiteoutFile(t, f.upper+"/"+n) {
			t.Errorf("%s: no whiteout in upper", n)
		}
	}
	if _, err := os.Lstat(f.upper + "/new"); !os.IsNotExist(err) {
		t.Errorf("upper-only file left something behind: %v", err)
	}
	if got := names(t, u, ""); len(got) != 0 {
		t.Errorf("root lists %v after removing everything", got)
	}
}

func TestMkdirOverWhiteoutIsOpaque(t *testing.T) {
	f := newFixture(t, 1)
	write(t, f.lowers[0]+"/d/old", "")
	u := f.open(t)
	must(t, u.Unlink(resolve(t, u, "d"), "old"))
	must(t, u.Rmdir(resolve(t, u, ""), "d", nil))
	_, _, err := u.Mkdir(resolve(t, u, ""), "d", 0o755, Owner{})
	must(t, err)
	if got := names(t, u, "d"); len(got) != 0 {
		t.Errorf("new dir over whiteout shows %v", got)
	}
	v, err := u.upper.GetxattrString("d", "trusted.overlay.opaque")
	must(t, err)
	if v != "y" {
		t.Errorf("opaque xattr = %q", v)
	}
}

func TestRenameLowerDirUsesRedirect(t *testing.T) {
	f := newFixture(t, 1)
	write(t, f.lowers[0]+"/a/dir/f", "content")
	must(t, os.Mkdir(f.lowers[0]+"/b", 0o755))
	u := f.open(t)
	must(t, u.rename(resolve(t, u, "a"), "dir", resolve(t, u, "a"), "same", 0))
	must(t, u.rename(resolve(t, u, "a"), "same", resolve(t, u, "b"), "moved", 0))
	if got := readAll(t, u, "b/moved/f"); got != "content" {
		t.Errorf("b/moved/f = %q", got)
	}
	if _, err := u.Resolve("a/dir"); !errors.Is(err, unix.ENOENT) {
		t.Errorf("old name still resolves: %v", err)
	}
	if _, err := os.Lstat(f.upper + "/b/moved/f"); !os.IsNotExist(err) {
		t.Error("children were copied up; a redirect should have sufficed")
	}
	v, err := u.upper.GetxattrString("b/moved", "trusted.overlay.redirect")
	must(t, err)
	if v != "/a/dir" {
		t.Errorf("redirect = %q, want /a/dir", v)
	}

	f.lowers = f.lowers[:1]
	u2, err := New(Config{Lowers: f.lowers, Upper: f.upper, Work: f.work, RedirectDir: false})
	if err == nil {
		t.Fatal("second open of the same workdir succeeded; the lock should refuse it")
	}
	_ = u2
}

func TestRenameLowerDirWithoutRedirectIsEXDEV(t *testing.T) {
	f := newFixture(t, 1)
	write(t, f.lowers[0]+"/dir/f", "")
	u, err := New(Config{Lowers: f.lowers, Upper: f.upper, Work: f.work})
	must(t, err)
	defer u.Close()
	if err := u.rename(resolve(t, u, ""), "dir", resolve(t, u, ""), "new", 0); !errors.Is(err, unix.EXDEV) {
		t.Errorf("err = %v, want EXDEV", err)
	}
}

func TestStartupRefusals(t *testing.T) {
	f := newFixture(t, 1)
	file := filepath.Join(f.dir, "file")
	write(t, file, "")
	nested := filepath.Join(f.upper, "nested")
	for _, tc := range []struct {
		name string
		cfg  Config
		want string
	}{
		{"no lower", Config{Upper: f.upper, Work: f.work}, "lowerdir: at least one"},
		{"missing lower", Config{Lowers: []string{f.dir + "/nope"}}, "no such file"},
		{"lower is a file", Config{Lowers: []string{file}}, "not a directory"},
		{"upper without work", Config{Lowers: f.lowers, Upper: f.upper}, "workdir: required"},
		{"work inside upper", Config{Lowers: f.lowers, Upper: f.upper, Work: nested}, "inside upperdir"},
		{"lower is upper", Config{Lowers: []string{f.upper}, Upper: f.upper, Work: f.work}, "same directory"},
		{"work on another fs", Config{Lowers: f.lowers, Upper: f.upper, Work: "/dev/shm"}, "not on the same filesystem"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.name == "work inside upper" {
				must(t, os.MkdirAll(nested, 0o755))
				defer os.Remove(nested)
			}
			u, err := New(tc.cfg)
			if err == nil {
				u.Close()
				t.Fatalf("accepted %+v", tc.cfg)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error %q does not say %q", err, tc.want)
			}
		})
	}
	if ents, _ := os.ReadDir(f.work); len(ents) != 0 {
		t.Errorf("a refused configuration wrote into workdir: %v", ents)
	}
}

func TestMetaCopyLeavesDataBelowUntilWritten(t *testing.T) {
	f := newFixture(t, 1)
	data := strings.Repeat("d", 1<<20)
	write(t, f.lowers[0]+"/f", data)
	u, err := New(Config{Lowers: f.lowers, Upper: f.upper, Work: f.work, MetaCopy: true})
	must(t, err)
	defer u.Close()
	mode := uint32(0o600)
	must(t, u.setAttr(resolve(t, u, "f"), SetAttr{Mode: &mode}))

	var st unix.Stat_t
	must(t, unix.Lstat(f.upper+"/f", &st))
	if st.Mode&0o777 != 0o600 || st.Size != int64(len(data)) || st.Blocks > 8 {
		t.Errorf("metadata-only copy: mode %o size %d blocks %d", st.Mode&0o777, st.Size, st.Blocks)
	}
	if _, err := unix.Getxattr(f.upper+"/f", "trusted.overlay.metacopy", nil); err != nil {
		t.Errorf("no metacopy mark: %v", err)
	}
	e := resolve(t, u, "f")
	if !e.MetaCopy {
		t.Error("lookup does not see the metadata-only copy")
	}
	if got := readAll(t, u, "f"); got != data {
		t.Errorf("read %d bytes through a metadata-only copy, want the lower's %d", len(got), len(data))
	}
	ust, err := u.Stat(e)
	must(t, err)
	if ust.Blocks < 2000 {
		t.Errorf("st_blocks %d: should be the data's", ust.Blocks)
	}

	fd, err := u.Open(e, unix.O_WRONLY|unix.O_APPEND)
	must(t, err)
	_, err = unix.Write(fd, []byte("+"))
	unix.Close(fd)
	must(t, err)
	got, err := os.ReadFile(f.upper + "/f")
	must(t, err)
	if string(got) != data+"+" {
		t.Errorf("after writing, upper has %d bytes, want the lower's data and the write", len(got))
	}
	if _, err := unix.Getxattr(f.upper+"/f", "trusted.overlay.metacopy", nil); err == nil {
		t.Error("metacopy mark left after the data was copied up")
	}
}

// A write-open of a metadata-only copy found by a lookup (after a remount,
// or a new lookup of the name) copies no data until the first write.
func TestOpenDeferredOfLookedUpMetaCopy(t *testing.T) {
	f := newFixture(t, 1)
	data := strings.Repeat("d", 1<<16)
	write(t, f.lowers[0]+"/f", data)
	u, err := New(Config{Lowers: f.lowers, Upper: f.upper, Work: f.work, MetaCopy: true})
	must(t, err)
	defer u.Close()
	mode := uint32(0o600)
	must(t, u.setAttr(resolve(t, u, "f"), SetAttr{Mode: &mode}))

	e := resolve(t, u, "f")
	wfd, rfd, ok, err := u.openDeferred(e, unix.O_WRONLY)
	must(t, err)
	if !ok {
		t.Fatal("a looked-up metadata-only copy was not opened deferred")
	}
	unix.Close(wfd)
	unix.Close(rfd)
	if _, err := unix.Getxattr(f.upper+"/f", "trusted.overlay.metacopy", nil); err != nil {
		t.Errorf("a write-open without a write copied the data up: %v", err)
	}
}

// A regular file is copied up as an unnamed file in its upper directory:
// a default ACL of that directory must not give the copy an access ACL the
// lower file does not have.
func TestCopyUpUnderDefaultACLAddsNoACL(t *testing.T) {
	f := newFixture(t, 1)
	write(t, f.lowers[0]+"/d/f", "data")
	must(t, os.Chmod(f.lowers[0]+"/d/f", 0o640))
	// user::rwx user:1000:rwx group::r-x mask::rwx other::r-x as a
	// system.posix_acl_default value.
	acl := []byte{2, 0, 0, 0,
		1, 0, 7, 0, 0xff, 0xff, 0xff, 0xff,
		2, 0, 7, 0, 0xe8, 0x03, 0, 0,
		4, 0, 5, 0, 0xff, 0xff, 0xff, 0xff,
		0x10, 0, 7, 0, 0xff, 0xff, 0xff, 0xff,
		0x20, 0, 5, 0, 0xff, 0xff, 0xff, 0xff}
	must(t, unix.Setxattr(f.lowers[0]+"/d", "system.posix_acl_default", acl, 0))
	u := f.open(t)
	for _, p := range []string{"d/f"} {
		mode := uint32(0o600)
		must(t, u.setAttr(resolve(t, u, p), SetAttr{Mode: &mode}))
	}
	if _, err := unix.Getxattr(f.upper+"/d/f", "system.posix_acl_access", nil); err == nil {
		t.Error("the copy-up inherited an access ACL from its upper directory's default ACL")
	}
	var st unix.Stat_t
	must(t, unix.Lstat(f.upper+"/d/f", &st))
	if st.Mode&0o7777 != 0o600 {
		t.Errorf("mode %o, want 600", st.Mode&0o7777)
	}
}

// copyUpAll copies e up whole.
func copyUpAll(u *Union, e *Entry) error {
	_, err := u.copyUp(e, copyReq{size: All})
	return err
}

// TestObjectWithNoLayerIsENOENT: an entry that a racing unlink or rename
// left with no layer (no upper object, no lower) answers ENOENT to every
// request, instead of the daemon panicking on its missing topmost lower.
func TestObjectWithNoLayerIsENOENT(t *testing.T) {
	f := newFixture(t, 1)
	write(t, filepath.Join(f.lowers[0], "f"), "x")
	u := f.open(t)
	e := resolve(t, u, "f")
	gone := *e
	gone.Lower = nil
	if _, err := u.Stat(&gone); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Stat: %v, want ENOENT", err)
	}
	if _, err := u.getxattr(&gone, "user.x", nil); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Getxattr: %v, want ENOENT", err)
	}
	if _, err := u.listxattr(&gone); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Listxattr: %v, want ENOENT", err)
	}
	if fd, err := u.Open(&gone, unix.O_RDONLY); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Open: fd %d, %v, want ENOENT", fd, err)
	}
	if _, _, err := u.Visible(&gone); !errors.Is(err, unix.ENOENT) {
		t.Errorf("Visible: %v, want ENOENT", err)
	}
}
