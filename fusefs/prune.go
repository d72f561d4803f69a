package fusefs

import (
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
)

// residency bounds the file nodes of a mount. The kernel keeps an inode
// for every name it has seen until memory runs short, and go-fuse (and
// so the daemon) keeps a node for each: a walk of a million files would
// hold a million nodes. Past max file nodes, the oldest are handed back
// in batches (FUSE_NOTIFY_PRUNE, Linux 6.16): the kernel drops those of
// their names that nothing uses, and forgets the inodes, which frees the
// nodes. A name used again is looked up again. Directories are never
// handed back (mounts may sit on them; there are few).
type residency struct {
	mu    sync.Mutex
	max   int         // 0: no bound
	queue []*fs.Inode // in creation order, from head on
	head  int
	off   bool // the kernel cannot prune
	// live counts the file nodes the kernel has not forgotten.
	live int
}

// pruneBatch is how many nodes one notification hands back.
const pruneBatch = 1024

// add notes a new file node, and hands back the oldest when there are too
// many.
func (r *residency) add(in *fs.Inode) {
	r.mu.Lock()
	r.live++
	if r.off || r.max <= 0 {
		r.mu.Unlock()
		return
	}
	r.queue = append(r.queue, in)
	var batch []*fs.Inode
	if len(r.queue)-r.head >= r.max+pruneBatch {
		batch = make([]*fs.Inode, pruneBatch)
		copy(batch, r.queue[r.head:])
		clear(r.queue[r.head : r.head+pruneBatch])
		r.head += pruneBatch
		if r.head > len(r.queue)/2 {
			r.queue = append(r.queue[:0], r.queue[r.head:]...)
			r.head = 0
		}
	}
	r.mu.Unlock()
	if batch != nil {
		// Not from inside a request: the kernel evicts the inodes on the
		// notification's write, and may need locks the request holds.
		go r.prune(batch)
	}
}

// forgot notes that the kernel forgot a file node.
func (r *residency) forgot() {
	r.mu.Lock()
	r.live--
	r.mu.Unlock()
}

// prune hands nodes back to the kernel. A node forgotten meanwhile is
// nothing to the kernel any more; one it still uses stays.
func (r *residency) prune(batch []*fs.Inode) {
	if errno := batch[0].NotifyPrune(batch); errno == syscall.ENOSYS {
		r.mu.Lock()
		r.off = true
		r.queue, r.head = nil, 0
		r.mu.Unlock()
	}
}
