package fusefs

import (
	"hash/maphash"

	"golang.org/x/sys/unix"
)

// What the kernel caches of the mount, and when it must drop it.

// noteLower drops the kernel's cached pages of a file whose data is in a
// lower layer when its size or mtime differs from what was last reported:
// the seeds forbid changing a lower while mounted, but then the new data
// must show, not old pages padded with zeros.
func (n *Node) noteLower(st *unix.Stat_t) {
	if _, data := n.un.Copied(); st.Mode&unix.S_IFMT != unix.S_IFREG || data {
		return
	}
	now := uint32(maphash.Comparable(seenSeed, [3]int64{st.Size, st.Mtim.Sec, st.Mtim.Nsec})) | 1
	old := n.seen.Swap(now)
	changed := old != 0 && old != now
	if changed {
		// Not from inside the request: the kernel may hold the inode.
		go n.NotifyContent(0, 0)
	}
}

// seenSeed seeds the hashes of Node.seen.
var seenSeed = maphash.MakeSeed()

// watchCopyUp returns a function to call after an engine call that may
// have copied up the node's object: if it did, the object is a new real
// one, and the kernel is told to ask for its attributes again (the birth
// time it keeps until it asks, by statx, is the old object's); the
// function reports whether it did.
func (n *Node) watchCopyUp() func() bool {
	upper, data := n.un.Copied()
	return func() bool {
		u2, d2 := n.un.Copied()
		if (u2 && !upper) || (d2 && !data) {
			// Attributes only (offset -1): no page locks, safe inside a
			// request.
			n.NotifyContent(-1, 0)
			return true
		}
		return false
	}
}
