package fusefs

import (
	"hash/maphash"

	"github.com/unionmount/unionmount/union"
	"golang.org/x/sys/unix"
)

// What the kernel caches of the mount, and when it must drop it.

// noteLower drops the kernel's cached pages of a file whose data is in a
// lower layer when its size or mtime differs from what was last reported:
// the seeds forbid changing a lower while mounted, but then the new data
// must show, not old pages padded with zeros.
func (n *Node) noteLower(e *union.Entry, st *unix.Stat_t) {
	if e.Mode != unix.S_IFREG || dataUpper(e) {
		return
	}
	now := maphash.Comparable(seenSeed, [3]int64{st.Size, st.Mtim.Sec, st.Mtim.Nsec}) | 1
	n.mu.Lock()
	changed := n.seen != 0 && n.seen != now
	n.seen = now
	n.mu.Unlock()
	if changed {
		// Not from inside the request: the kernel may hold the inode.
		go n.NotifyContent(0, 0)
	}
}

// seenSeed seeds the hashes of Node.seen.
var seenSeed = maphash.MakeSeed()
