package e2e

// Raw getdents: d_ino and d_off as the kernel hands them to programs.

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// dirent is one linux_dirent64.
type dirent struct {
	ino  uint64
	off  int64
	typ  uint8
	name string
}

// readDirents calls getdents64 with a bufSize buffer until the end.
func readDirents(fd, bufSize int) ([]dirent, error) {
	var out []dirent
	buf := make([]byte, bufSize)
	for {
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			return out, err
		}
		if n <= 0 {
			return out, nil
		}
		out = append(out, parseDirents(buf[:n])...)
	}
}

func parseDirents(b []byte) []dirent {
	var out []dirent
	for len(b) >= 19 {
		reclen := int(binary.NativeEndian.Uint16(b[16:18]))
		if reclen < 19 || reclen > len(b) {
			break
		}
		name := b[19:reclen]
		if i := strings.IndexByte(string(name), 0); i >= 0 {
			name = name[:i]
		}
		out = append(out, dirent{
			ino:  binary.NativeEndian.Uint64(b[0:8]),
			off:  int64(binary.NativeEndian.Uint64(b[8:16])),
			typ:  b[18],
			name: string(name),
		})
		b = b[reclen:]
	}
	return out
}

func direntNames(t *testing.T, dir string) []string {
	t.Helper()
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatalf("open %s: %v", dir, err)
	}
	defer unix.Close(fd)
	ents, err := readDirents(fd, 8192)
	if err != nil {
		t.Fatalf("getdents %s: %v", dir, err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.name)
	}
	return names
}

var dtypeOf = map[string]uint8{
	"file": unix.DT_REG, "dir": unix.DT_DIR, "symlink": unix.DT_LNK, "fifo": unix.DT_FIFO,
	"chardev": unix.DT_CHR, "blockdev": unix.DT_BLK, "socket": unix.DT_SOCK,
}

// checkGetdents checks a merged directory's listing as programs see it:
// every name once, "." and ".." present, no whiteout markers, d_ino equal to
// st_ino and d_type to the type stat reports, and d_off usable with lseek
// for as long as the directory stays open.
func checkGetdents(t *testing.T, s *side, rel string) {
	t.Helper()
	dir := filepath.Join(s.mnt, rel)
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Errorf("%s: open %s: %v", s.name, rel, err)
		return
	}
	defer unix.Close(fd)
	// A small buffer, so a big directory takes many getdents calls.
	ents, err := readDirents(fd, 512)
	if err != nil {
		t.Errorf("%s: getdents %s: %v", s.name, rel, err)
		return
	}
	seen := map[string]int{}
	for _, e := range ents {
		seen[e.name]++
	}
	for name, n := range seen {
		if n > 1 {
			t.Errorf("%s: readdir %s lists %q %d times", s.name, rel, name, n)
		}
		if strings.HasPrefix(name, ".wh.") {
			t.Errorf("%s: readdir %s shows whiteout marker %q", s.name, rel, name)
		}
	}
	for _, want := range []string{".", ".."} {
		if seen[want] != 1 {
			t.Errorf("%s: readdir %s: %q listed %d times, want once", s.name, rel, want, seen[want])
		}
	}
	for _, e := range ents {
		if e.name == ".." {
			continue // its inode is the parent's, outside this check
		}
		p := filepath.Join(dir, e.name)
		st, err := lstatPath(p)
		if err != nil {
			t.Errorf("%s: readdir %s lists %q but lstat says %v", s.name, rel, e.name, err)
			continue
		}
		if st.Ino != e.ino {
			t.Errorf("%s: %s: d_ino %d != st_ino %d", s.name, joinRel(rel, e.name), e.ino, st.Ino)
		}
		if want := dtypeOf[fileType(st.Mode)]; e.typ != unix.DT_UNKNOWN && e.typ != want {
			t.Errorf("%s: %s: d_type %d, stat says %s", s.name, joinRel(rel, e.name), e.typ, fileType(st.Mode))
		}
	}
	// Seek back to the middle: the listing must go on from there.
	if len(ents) < 4 {
		return
	}
	k := len(ents) / 2
	if _, err := unix.Seek(fd, ents[k].off, 0); err != nil {
		t.Errorf("%s: lseek %s to d_off %d: %v", s.name, rel, ents[k].off, err)
		return
	}
	rest, err := readDirents(fd, 4096)
	if err != nil {
		t.Errorf("%s: getdents %s after lseek: %v", s.name, rel, err)
		return
	}
	if got, want := names(rest), names(ents[k+1:]); got != want {
		t.Errorf("%s: readdir %s after lseek to entry %d's d_off:\n    got  %s\n    want %s", s.name, rel, k, got, want)
	}
}

func names(ents []dirent) string {
	var b strings.Builder
	for _, e := range ents {
		fmt.Fprintf(&b, "%s ", e.name)
	}
	return b.String()
}

// TestListingAcrossCopyUps reads a directory the way find did when
// .go files went missing after append-go: the kernel keeps a directory's
// listing across opens (the daemon allows it), so a program gets the first
// entries from that cache and, when memory pressure drops the cached pages
// in the middle, the rest from the daemon, asked for at the d_off of the
// last entry it got. Files copied up since the listing was cached must
// not move across that d_off: every name comes exactly once.
func TestListingAcrossCopyUps(t *testing.T) {
	requireMountable(t)
	base := t.TempDir()
	lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// One directory per round: each needs a listing cached before its
	// copy-ups. Rounds break the listing at different entries.
	const rounds, files = 6, 150
	for r := 0; r < rounds; r++ {
		for i := 0; i < files; i++ {
			for _, ext := range []string{".go", ".s"} {
				mkfile(t, filepath.Join(lower, fmt.Sprintf("d%d/file%03d%s", r, i, ext)), "x", 0o644, 0, 0)
			}
		}
	}
	mnt := mountUnion(t, []string{lower}, upper, work)
	for r := 0; r < rounds; r++ {
		dir := filepath.Join(mnt, fmt.Sprintf("d%d", r))
		before := direntNames(t, dir) // now cached by the kernel
		if len(before) != 2*files+2 {
			t.Fatalf("%s lists %d names, want %d", dir, len(before), 2*files+2)
		}
		// The copy-up storm: append to every .go file.
		for i := 0; i < files; i++ {
			f, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("file%03d.go", i)), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.WriteString("x"); err != nil {
				t.Fatal(err)
			}
			if err := f.Close(); err != nil {
				t.Fatal(err)
			}
		}
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY, 0)
		if err != nil {
			t.Fatal(err)
		}
		// The first entries, from the kernel's cache.
		buf := make([]byte, 400+r*700)
		n, err := unix.Getdents(fd, buf)
		if err != nil {
			unix.Close(fd)
			t.Fatalf("getdents %s: %v", dir, err)
		}
		first := parseDirents(buf[:n])
		// Memory pressure: the cached pages go. The kernel asks the daemon
		// for the rest, from the last d_off it handed out.
		if err := unix.Fadvise(fd, 0, 0, unix.FADV_DONTNEED); err != nil {
			unix.Close(fd)
			t.Fatalf("fadvise %s: %v", dir, err)
		}
		rest, err := readDirents(fd, 4096)
		unix.Close(fd)
		if err != nil {
			t.Fatalf("getdents %s: %v", dir, err)
		}
		seen := map[string]int{}
		for _, e := range append(first, rest...) {
			seen[e.name]++
		}
		var wrong []string
		for _, name := range before {
			if seen[name] != 1 {
				wrong = append(wrong, fmt.Sprintf("%s %d times", name, seen[name]))
			}
		}
		if len(wrong) > 0 || len(seen) != len(before) {
			t.Errorf("d%d: listing broken after %d entries: %d names, want %d; %d wrong, first: %s",
				r, len(first), len(seen), len(before), len(wrong), strings.Join(wrong[:min(len(wrong), 8)], ", "))
		}
	}
}
