package fusefs

import (
	"context"
	"sort"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open directory. The merged listing is built on the first
// read, not at open: when the kernel has the listing cached it still opens
// the directory but never reads it. Once built, the listing is fixed for the
// life of the handle.
//
// Offsets (d_off) are the engine's stable offsets of the names (see
// union.Listing): the kernel keeps a directory's listing across opens
// (FOPEN_CACHE_DIR), and when the cached pages are dropped halfway through
// a read it asks the reader's own handle for the rest, from the last
// offset the cache gave out, which came from another handle.
type dirHandle struct {
	n    *Node
	mu   sync.Mutex
	list []fuse.DirEntry
	done bool // list is built
	next int  // position of the next entry to return
	// skipFiles is how many more files this listing skips, decided by the
	// mount's READDIRPLUS policy at its first lookup.
	skipFiles int
	decided   bool
}

// What a dirHandle implements.
var (
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fs.FileFsyncdirer)((*dirHandle)(nil))
	_ = (fs.FileLookuper)((*dirHandle)(nil))
)

// Fsyncdir syncs the upper directory, if there is one: a directory only in
// the lowers has nothing unwritten.
func (d *dirHandle) Fsyncdir(ctx context.Context, flags uint32) syscall.Errno {
	e, en := d.n.entry()
	if en != 0 {
		return 0 // removed: nothing of it is left to sync
	}
	return errno(d.n.u.SyncDir(e))
}

func (d *dirHandle) load() syscall.Errno {
	if d.done {
		return 0
	}
	list, en := d.n.listing()
	if en != 0 {
		return en
	}
	d.list, d.done = list, true
	return 0
}

// Readdirent returns the next entry, or nil at the end.
func (d *dirHandle) Readdirent(ctx context.Context) (*fuse.DirEntry, syscall.Errno) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if en := d.load(); en != 0 {
		return nil, en
	}
	if d.next >= len(d.list) {
		return nil, 0
	}
	de := d.list[d.next]
	d.next++
	return &de, 0
}

// Seekdir moves to the entry after offset off: the first whose offset is
// greater (0 is the start). An offset whose name is gone goes on with the
// names that followed it.
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if en := d.load(); en != 0 {
		return en
	}
	d.next = sort.Search(len(d.list), func(i int) bool { return d.list[i].Off > off })
	return 0
}

// Lookup looks up an entry for READDIRPLUS, which hands the kernel each
// listed name with its attributes. Looking up every file costs a stat of it
// in every layer: wasted on walks that only need names and types (find
// -name, find -type f, globbing), and on names the kernel knows already.
// So a name with a node already is not looked up again, and files are
// looked up only while the walkers seen lately went on to stat what they
// listed (see plusPolicy). A skipped name goes to the kernel as a plain
// entry; it sends a LOOKUP if it needs more.
func (d *dirHandle) Lookup(ctx context.Context, name string, out *fuse.EntryOut) (*fs.Inode, syscall.Errno) {
	if d.n.GetChild(name) != nil {
		return nil, syscall.ENOENT
	}
	d.mu.Lock()
	var mode uint32
	if d.next > 0 && d.next <= len(d.list) && d.list[d.next-1].Name == name {
		mode = d.list[d.next-1].Mode
	}
	if !d.decided {
		d.skipFiles, d.decided = d.n.plus.skipFiles(), true
	}
	skip := mode&syscall.S_IFMT != syscall.S_IFDIR && d.skipFiles > 0
	if skip {
		d.skipFiles--
	}
	d.mu.Unlock()
	if !skip {
		return d.n.lookup(ctx, name, out)
	}
	if d.n.skipped.Load() < maxSkipped { // a soft bound
		d.n.skipped.Add(1)
	}
	d.n.plus.noteSkipped()
	return nil, syscall.ENOENT
}

// maxSkipped bounds a directory's count of skipped names: a directory
// listed again and again without stats must not keep counting.
const maxSkipped = 1 << 16

// plusPolicy decides, per directory listing, whether READDIRPLUS looks up
// files, from what walkers did with the files it skipped: if most were
// looked up afterwards (ls -l, find -printf, tar, git status), it does;
// if few were (find -name), it does not. It starts looking up; while it
// does, one listing in probeEvery skips a few files, to notice a change
// of walker.
type plusPolicy struct {
	mu       sync.Mutex
	skip     bool
	listings uint64
	// skips and asked count the files skipped and the LOOKUPs of skipped
	// names since the last decision.
	skips, asked int
}

const (
	probeEvery = 8
	probeFiles = 8
	// plusWindow is how many skipped files make a decision.
	plusWindow = 32
)

// skipFiles decides how many files one listing skips. The LOOKUPs that
// follow the previous listings have arrived by the time a walker lists
// another directory, so the decision looks at them first.
func (p *plusPolicy) skipFiles() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.skips >= plusWindow {
		p.skip = p.asked*2 < p.skips
		p.skips, p.asked = 0, 0
	}
	p.listings++
	switch {
	case p.skip:
		return maxSkipped
	case p.listings%probeEvery == 0:
		return probeFiles
	}
	return 0
}

// noteSkipped counts a file READDIRPLUS did not look up.
func (p *plusPolicy) noteSkipped() {
	p.mu.Lock()
	p.skips++
	p.mu.Unlock()
}

// noteAsked counts a LOOKUP of a name READDIRPLUS skipped.
func (p *plusPolicy) noteAsked() {
	p.mu.Lock()
	p.asked++
	p.mu.Unlock()
}
