package e2e

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestMaxEntriesBoundsResidentFiles: with max_entries=N the daemon keeps
// about N file nodes however many files are walked (the kernel is asked to
// drop the oldest unused names and forgets their inodes), and the union
// reads the same as without the bound: names, inode numbers, sizes and
// contents on a second walk, and a file held open across the dropping.
func TestMaxEntriesBoundsResidentFiles(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	const dirs, perDir, maxEntries, batch = 40, 100, 500, 1024
	base := t.TempDir()
	lower, upper, work, mnt := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
	for _, d := range []string{upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]string{}
	for d := 0; d < dirs; d++ {
		dir := filepath.Join(lower, fmt.Sprintf("d%02d", d))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			t.Fatal(err)
		}
		for f := 0; f < perDir; f++ {
			rel := fmt.Sprintf("d%02d/f%03d", d, f)
			want[rel] = "contents of " + rel
			if err := os.WriteFile(filepath.Join(lower, rel), []byte(want[rel]), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	guardLowers(t, lower)
	stats := filepath.Join(base, "stats")
	opts := unionOptions([]string{lower}, upper, work, []string{fmt.Sprintf("max_entries=%d", maxEntries)})
	d := startDaemon(t, binPath, mnt, opts, "UNIONMOUNT_DEBUG_STATS="+stats)

	held, err := os.Open(filepath.Join(mnt, "d00/f000"))
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	// walk stats and reads every file: path -> "ino size contents".
	walk := func() map[string]string {
		got := map[string]string{}
		for rel := range want {
			p := filepath.Join(mnt, rel)
			var st syscall.Stat_t
			if err := syscall.Lstat(p, &st); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			got[rel] = fmt.Sprintf("%d %d %s", st.Ino, st.Size, b)
		}
		return got
	}
	first := walk()
	second := walk()
	for rel, w := range want {
		if first[rel] != second[rel] {
			t.Errorf("%s: first walk %q, second %q", rel, first[rel], second[rel])
		}
		var ino, size int64
		var body string
		if _, err := fmt.Sscanf(second[rel], "%d %d %s", &ino, &size, &body); err != nil || size != int64(len(w)) {
			t.Errorf("%s: %q, want size %d", rel, second[rel], len(w))
		}
	}

	// The bound is kept once the kernel has forgotten what it was asked to.
	limit := maxEntries + batch
	var files int
	deadline := time.Now().Add(10 * time.Second)
	for {
		n, ok := daemonStat(d.pid(), stats, "files")
		if !ok {
			t.Fatal("the daemon has no stats hook (UNIONMOUNT_DEBUG_STATS)")
		}
		files = n
		if files <= limit || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("%d files walked twice with max_entries=%d: %d file nodes held", len(want), maxEntries, files)
	if files > limit {
		t.Errorf("%d file nodes held after walking %d files with max_entries=%d (want at most %d)", files, len(want), maxEntries, limit)
	}

	// The descriptor opened before everything was dropped still reads.
	b, err := io.ReadAll(held)
	if err != nil || string(b) != want["d00/f000"] {
		t.Errorf("held descriptor read %q, %v; want %q", b, err, want["d00/f000"])
	}
}
