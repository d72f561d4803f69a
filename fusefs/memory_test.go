package fusefs

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"testing"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/unionmount/unionmount/union"
)

// TestMemoryPerEntry walks a tree of empty files through go-fuse's request
// layer, without a kernel (so nothing is forgotten halfway, whatever else
// runs on the machine), and reports the heap that stays allocated per
// entry: what a daemon keeps for every inode the kernel holds after a walk.
// UNIONMOUNT_MEMTEST_LOWER names a tree to walk instead of a generated one;
// UNIONMOUNT_MEMTEST_PROFILE a file for a heap profile taken at the end
// (with -memprofilerate=1 to see every allocation).
func TestMemoryPerEntry(t *testing.T) {
	lower := os.Getenv("UNIONMOUNT_MEMTEST_LOWER")
	if lower == "" {
		lower = filepath.Join(t.TempDir(), "lower")
		genFiles(t, lower, 100, 100)
	}
	tmp := t.TempDir()
	for _, d := range []string{"upper", "work"} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	u, err := union.New(union.Config{Lowers: []string{lower}, Upper: filepath.Join(tmp, "upper"), Work: filepath.Join(tmp, "work")})
	if err != nil {
		t.Fatal(err)
	}
	defer u.Close()
	rootEntry, err := u.Root()
	if err != nil {
		t.Fatal(err)
	}
	root := &Node{mount: &mount{u: u}}
	root.un.Init(rootEntry)
	timeout := time.Second
	bridge := fs.NewNodeFS(root, &fs.Options{
		EntryTimeout:   &timeout,
		AttrTimeout:    &timeout,
		RootStableAttr: &fs.StableAttr{Ino: rootEntry.Ino},
	})

	before := heapAlloc()
	entries := 0
	var walk func(dir string, id uint64)
	walk = func(dir string, id uint64) {
		names, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range names {
			var out fuse.EntryOut
			if st := bridge.Lookup(nil, &fuse.InHeader{NodeId: id}, d.Name(), &out); !st.Ok() {
				t.Fatalf("lookup %s: %v", filepath.Join(dir, d.Name()), st)
			}
			entries++
			if d.IsDir() {
				walk(filepath.Join(dir, d.Name()), out.NodeId)
			}
		}
	}
	walk(lower, fuse.FUSE_ROOT_ID)
	perEntry := float64(heapAlloc()-before) / float64(entries)
	if path := os.Getenv("UNIONMOUNT_MEMTEST_PROFILE"); path != "" {
		f, err := os.Create(path)
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		if err := pprof.WriteHeapProfile(f); err != nil {
			t.Fatal(err)
		}
	}
	runtime.KeepAlive(bridge)
	t.Logf("%d entries: %.0f bytes of heap per entry", entries, perEntry)
	// About 230 bytes are go-fuse's (its Inode, tables and tree), the
	// rest the node's: a regression shows here before a benchmark.
	if perEntry > maxHeapPerEntry {
		t.Errorf("%.0f bytes of heap per entry, want at most %d", perEntry, maxHeapPerEntry)
	}
}

// maxHeapPerEntry bounds TestMemoryPerEntry's result, with some margin.
const maxHeapPerEntry = 580

// heapAlloc is the heap in use after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// genFiles makes dirs directories of files empty files each under dir.
func genFiles(t *testing.T, dir string, dirs, files int) {
	for i := range dirs {
		d := filepath.Join(dir, fmt.Sprintf("d%03d", i))
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for j := range files {
			if err := os.WriteFile(filepath.Join(d, fmt.Sprintf("f%05d", j)), nil, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}
