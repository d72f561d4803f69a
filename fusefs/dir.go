package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// dirHandle is an open directory. The merged listing is built on the first
// read, not at open: when the kernel has the listing cached it still opens
// the directory but never reads it. Once built, the listing is fixed for the
// life of the handle, so offsets are stable.
type dirHandle struct {
	n    *Node
	mu   sync.Mutex
	list []fuse.DirEntry
	done bool // list is built
	next int  // index of the next entry to return
}

// What a dirHandle implements.
var (
	_ = (fs.FileReaddirenter)((*dirHandle)(nil))
	_ = (fs.FileSeekdirer)((*dirHandle)(nil))
	_ = (fs.FileReleasedirer)((*dirHandle)(nil))
	_ = (fs.FileFsyncdirer)((*dirHandle)(nil))
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
	de.Off = uint64(d.next)
	return &de, 0
}

// Seekdir moves to offset off (0 is the start; entry i has offset i+1).
func (d *dirHandle) Seekdir(ctx context.Context, off uint64) syscall.Errno {
	d.mu.Lock()
	defer d.mu.Unlock()
	if en := d.load(); en != 0 {
		return en
	}
	if off > uint64(len(d.list)) {
		off = uint64(len(d.list))
	}
	d.next = int(off)
	return 0
}

// Releasedir drops the listing.
func (d *dirHandle) Releasedir(ctx context.Context, releaseFlags uint32) {}
