package e2e

// Raw getdents: d_ino and d_off as the kernel hands them to programs.

import (
	"encoding/binary"
	"fmt"
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
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
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
	fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
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
