package e2e

// Listings resumed from the kernel's cache of a directory.

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

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
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
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
