package union

// Lock order, outermost first. Each function that needs a lock held says
// so in a "Preconditions:" line of its doc comment.
//
//  1. Union.renameMu: Rename holds it for writing; every other namespace
//     change holds it for reading, and copyUp, the one way into copy-up,
//     takes it for reading. Never taken twice by one goroutine (a waiting
//     writer would deadlock it).
//  2. copyLocks, by key: a union path (copy-up of that path; a parent's is
//     taken and released before a child's), or "\x00index/KEY" (an indexed
//     inode: its copy-up and link count).
//  3. File.mu, then Node.mu: an open file's descriptors, then a node's
//     state and open files. Neither is held while taking 1 or 2: a file
//     completes a copy (File.completeData) with no lock of its own held,
//     then switches to the copy (File.follow) under File.mu.
//  4. subdirsMu, devMu, and each Layer's directory-cache mutex: leaves, held
//     for map operations only.
//
// The FUSE adapter holds no lock of its own across an engine call but an
// open directory's (fusefs.dirHandle.mu, outermost, across the listing).
// No lock is held while waiting for the kernel's FUSE requests.
import "sync"

// keyedMutex serialises work on one key (a union path) at a time.
type keyedMutex struct {
	mu    sync.Mutex
	locks map[string]*keyedEntry
}

type keyedEntry struct {
	mu   sync.Mutex
	refs int
}

func (k *keyedMutex) lock(key string) func() {
	k.mu.Lock()
	if k.locks == nil {
		k.locks = map[string]*keyedEntry{}
	}
	e := k.locks[key]
	if e == nil {
		e = &keyedEntry{}
		k.locks[key] = e
	}
	e.refs++
	k.mu.Unlock()
	e.mu.Lock()
	return func() {
		e.mu.Unlock()
		k.mu.Lock()
		e.refs--
		if e.refs == 0 {
			delete(k.locks, key)
		}
		k.mu.Unlock()
	}
}
