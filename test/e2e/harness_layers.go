package e2e

// Declarative layers: a test says what each lower (and, for format tests,
// the upper) holds, and makeLayer builds it on disk, including the kernel's
// on-disk whiteouts and opaque markers.

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// layerTime is the atime and mtime every object of a built layer gets: old
// (so relatime would update atime on any read) and with nanoseconds (so a
// copy-up that drops them shows).
var layerTime = time.Date(2001, 2, 3, 4, 5, 6, 123456789, time.UTC)

const (
	xattrOpaque   = "trusted.overlay.opaque"
	xattrRedirect = "trusted.overlay.redirect"
)

type entryKind int

const (
	kindFile entryKind = iota
	kindDir
	kindSymlink
	kindFifo
	kindCharDev
	kindHardlink
	kindWhiteout // character device 0:0, the kernel's whiteout
)

// Entry is one object of a layer. Build them with File, Dir, Symlink, Fifo,
// CharDev, Hardlink, Whiteout and OpaqueDir, and refine them with the With*
// methods.
type Entry struct {
	Path    string
	Kind    entryKind
	Content string
	Size    int64  // for files: final size (sparse past Content) if > len(Content)
	Offset  int64  // for files: where Content is written
	Perm    uint32 // permission bits incl. suid/sgid/sticky; 0 means default
	UID     int
	GID     int
	Target  string // symlink target, or hardlink's existing path
	Major   uint32
	Minor   uint32
	Xattrs  map[string]string
}

// File is a regular file (mode 0644) holding content.
func File(path, content string) Entry { return Entry{Path: path, Kind: kindFile, Content: content} }

// SparseFile is a file of size bytes whose only data is content at offset.
func SparseFile(path string, size, offset int64, content string) Entry {
	return Entry{Path: path, Kind: kindFile, Content: content, Size: size, Offset: offset}
}

// Dir is a directory (mode 0755).
func Dir(path string) Entry { return Entry{Path: path, Kind: kindDir} }

// OpaqueDir is a directory marked opaque the kernel's way.
func OpaqueDir(path string) Entry { return Dir(path).WithXattr(xattrOpaque, "y") }

// Symlink is a symbolic link to target.
func Symlink(path, target string) Entry { return Entry{Path: path, Kind: kindSymlink, Target: target} }

// Fifo is a named pipe (mode 0644).
func Fifo(path string) Entry { return Entry{Path: path, Kind: kindFifo} }

// CharDev is a character device (mode 0644).
func CharDev(path string, major, minor uint32) Entry {
	return Entry{Path: path, Kind: kindCharDev, Major: major, Minor: minor}
}

// Hardlink is another name for the existing (earlier) entry at existing.
func Hardlink(path, existing string) Entry {
	return Entry{Path: path, Kind: kindHardlink, Target: existing}
}

// Whiteout is the kernel's whiteout: a character device 0:0, mode 0000.
func Whiteout(path string) Entry { return Entry{Path: path, Kind: kindWhiteout} }

// WithMode sets the permission bits (suid, sgid and sticky included).
func (e Entry) WithMode(perm uint32) Entry { e.Perm = perm; return e }

// WithOwner sets the owner.
func (e Entry) WithOwner(uid, gid int) Entry { e.UID, e.GID = uid, gid; return e }

// WithXattr adds an extended attribute.
func (e Entry) WithXattr(name, value string) Entry {
	m := map[string]string{}
	for k, v := range e.Xattrs {
		m[k] = v
	}
	m[name] = value
	e.Xattrs = m
	return e
}

// makeLayer creates dir (if needed) and builds entries in it, in order,
// creating missing parents as 0755 directories. Afterwards every object in
// dir, dir itself included, gets layerTime as atime and mtime.
func makeLayer(t *testing.T, dir string, entries ...Entry) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if err := makeEntry(dir, e); err != nil {
			t.Fatalf("layer %s: %s: %v", dir, e.Path, err)
		}
	}
	if err := setTimesTree(dir, layerTime); err != nil {
		t.Fatalf("layer %s: setting times: %v", dir, err)
	}
}

func makeEntry(dir string, e Entry) error {
	p := filepath.Join(dir, e.Path)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		return err
	}
	perm := e.Perm
	switch e.Kind {
	case kindFile:
		if perm == 0 {
			perm = 0o644
		}
		f, err := os.OpenFile(p, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o600)
		if err != nil {
			return err
		}
		if _, err := f.WriteAt([]byte(e.Content), e.Offset); err != nil {
			f.Close()
			return err
		}
		if e.Size > e.Offset+int64(len(e.Content)) {
			if err := f.Truncate(e.Size); err != nil {
				f.Close()
				return err
			}
		}
		if err := f.Close(); err != nil {
			return err
		}
	case kindDir:
		if perm == 0 {
			perm = 0o755
		}
		if err := os.Mkdir(p, 0o700); err != nil && !os.IsExist(err) {
			return err
		}
	case kindSymlink:
		if err := os.Symlink(e.Target, p); err != nil {
			return err
		}
	case kindFifo:
		if perm == 0 {
			perm = 0o644
		}
		if err := unix.Mknod(p, unix.S_IFIFO|0o600, 0); err != nil {
			return err
		}
	case kindCharDev:
		if perm == 0 {
			perm = 0o644
		}
		if err := unix.Mknod(p, unix.S_IFCHR|0o600, int(unix.Mkdev(e.Major, e.Minor))); err != nil {
			return err
		}
	case kindWhiteout:
		if err := unix.Mknod(p, unix.S_IFCHR, 0); err != nil {
			return err
		}
		return unix.Chmod(p, 0)
	case kindHardlink:
		return os.Link(filepath.Join(dir, e.Target), p)
	default:
		return fmt.Errorf("unknown entry kind %d", e.Kind)
	}
	// Owner before mode: chown clears suid/sgid.
	if err := os.Lchown(p, e.UID, e.GID); err != nil {
		return err
	}
	if e.Kind != kindSymlink {
		if err := unix.Chmod(p, perm); err != nil {
			return err
		}
	}
	for _, name := range sortedKeys(e.Xattrs) {
		if err := unix.Lsetxattr(p, name, []byte(e.Xattrs[name]), 0); err != nil {
			return fmt.Errorf("setxattr %s: %w", name, err)
		}
	}
	return nil
}

// setTimesTree sets atime and mtime of everything under root, children
// before their directory so the directory's times stay put.
func setTimesTree(root string, tm time.Time) error {
	var paths []string
	err := filepath.Walk(root, func(p string, _ os.FileInfo, err error) error {
		if err != nil {
			return err
		}
		paths = append(paths, p)
		return nil
	})
	if err != nil {
		return err
	}
	ts := []unix.Timespec{unix.NsecToTimespec(tm.UnixNano()), unix.NsecToTimespec(tm.UnixNano())}
	for i := len(paths) - 1; i >= 0; i-- {
		if err := unix.UtimesNanoAt(unix.AT_FDCWD, paths[i], ts, unix.AT_SYMLINK_NOFOLLOW); err != nil {
			return fmt.Errorf("%s: %w", paths[i], err)
		}
	}
	return nil
}

// stack is one set of directories to mount: lowers (topmost first), upper
// and work, all on the same filesystem, under base.
type stack struct {
	base   string
	lowers []string
	upper  string // "" for a read-only union
	work   string
}

// stackSpec says what a stack holds. Upper entries are in the on-disk format
// (Whiteout, OpaqueDir, redirect xattrs) and are built before mounting.
type stackSpec struct {
	lowers  [][]Entry // topmost first
	upper   []Entry
	noUpper bool
	// setup, if set, runs after the entries are built and before the
	// layer times are fixed, e.g. to run a program that makes a git repo.
	setup func(t *testing.T, lowers []string)
}

// newStack builds a fresh stack from spec under a new temporary directory.
func newStack(t *testing.T, spec stackSpec) *stack {
	t.Helper()
	s := &stack{base: t.TempDir()}
	for i := range spec.lowers {
		s.lowers = append(s.lowers, filepath.Join(s.base, fmt.Sprintf("lower%d", i)))
	}
	for i, entries := range spec.lowers {
		if err := os.Mkdir(s.lowers[i], 0o755); err != nil {
			t.Fatal(err)
		}
		for _, e := range entries {
			if err := makeEntry(s.lowers[i], e); err != nil {
				t.Fatalf("lower%d: %s: %v", i, e.Path, err)
			}
		}
	}
	if spec.setup != nil {
		spec.setup(t, s.lowers)
	}
	for _, l := range s.lowers {
		if err := setTimesTree(l, layerTime); err != nil {
			t.Fatal(err)
		}
	}
	if !spec.noUpper {
		s.upper = filepath.Join(s.base, "upper")
		s.work = filepath.Join(s.base, "work")
		if err := os.Mkdir(s.work, 0o755); err != nil {
			t.Fatal(err)
		}
		makeLayer(t, s.upper, spec.upper...)
		if err := unix.Chmod(s.upper, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// rotate makes the upper the topmost lower, under a fresh, empty upper
// and workdir: what a container image build does with each layer.
func (s *stack) rotate(t *testing.T) {
	t.Helper()
	n := len(s.lowers)
	upper, work := filepath.Join(s.base, fmt.Sprintf("upper%d", n)), filepath.Join(s.base, fmt.Sprintf("work%d", n))
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	s.lowers = append([]string{s.upper}, s.lowers...)
	s.upper, s.work = upper, work
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// allKeys returns the keys of a and b together, sorted, each once.
func allKeys[V any](a, b map[string]V) []string {
	both := make(map[string]V, len(a)+len(b))
	for k, v := range a {
		both[k] = v
	}
	for k, v := range b {
		both[k] = v
	}
	return sortedKeys(both)
}

// lowerDirVisible reports whether, without anything in upper, the lowers
// of s would show a directory at rel: the first lower that has rel decides
// (a whiteout or non-directory hides it), and a lower whose ancestor of rel
// is opaque, a whiteout or not a directory hides everything below it.
func (s *stack) lowerDirVisible(rel string) bool {
	for _, l := range s.lowers {
		if st, err := lstatPath(filepath.Join(l, rel)); err == nil {
			return st.Mode&unix.S_IFMT == unix.S_IFDIR
		}
		for dir := filepath.Dir(rel); dir != "."; dir = filepath.Dir(dir) {
			st, err := lstatPath(filepath.Join(l, dir))
			if err != nil {
				continue
			}
			if st.Mode&unix.S_IFMT != unix.S_IFDIR || overlayXattr(filepath.Join(l, dir), "opaque") == "y" {
				return false
			}
		}
	}
	return false
}

// joinRel is filepath.Join that keeps "." for the root.
func joinRel(dir, name string) string {
	if dir == "." || dir == "" {
		return name
	}
	return dir + "/" + name
}
