package layer

import (
	"container/list"
	"strings"
	"sync"

	"golang.org/x/sys/unix"
)

// dirCache keeps O_PATH descriptors of recently used directories of a
// layer, so that an operation on "a/b/c" costs one *at call on the cached
// descriptor of "a/b" instead of a path walk (openat2), the call, and a
// close. Entries are reference counted: an evicted descriptor is closed only
// once its last user is done with it.
//
// Lower layers never change while mounted. In the upper layer, every rename
// and rmdir goes through Layer, which drops the affected entries, so a
// cached descriptor always names the directory at its path.
type dirCache struct {
	mu  sync.Mutex
	max int
	m   map[string]*list.Element // of *cachedDir
	lru list.List                // front: most recently used
}

type cachedDir struct {
	path    string
	fd      int
	refs    int
	evicted bool
}

// dirCacheSize bounds the descriptors one layer keeps open.
const dirCacheSize = 2048

func (c *dirCache) get(path string) *cachedDir {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[path]; ok {
		c.lru.MoveToFront(el)
		d := el.Value.(*cachedDir)
		d.refs++
		return d
	}
	return nil
}

// add caches fd for path and returns it referenced; if another goroutine
// cached path meanwhile, fd is closed and the cached one returned.
func (c *dirCache) add(path string, fd int) *cachedDir {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.m[path]; ok {
		unix.Close(fd)
		d := el.Value.(*cachedDir)
		d.refs++
		return d
	}
	if c.m == nil {
		c.m = map[string]*list.Element{}
		c.max = dirCacheSize
	}
	d := &cachedDir{path: path, fd: fd, refs: 1}
	c.m[path] = c.lru.PushFront(d)
	for c.lru.Len() > c.max {
		c.evictLocked(c.lru.Back())
	}
	return d
}

func (c *dirCache) release(d *cachedDir) {
	c.mu.Lock()
	defer c.mu.Unlock()
	d.refs--
	if d.refs == 0 && d.evicted {
		unix.Close(d.fd)
	}
}

func (c *dirCache) evictLocked(el *list.Element) {
	d := el.Value.(*cachedDir)
	c.lru.Remove(el)
	delete(c.m, d.path)
	d.evicted = true
	if d.refs == 0 {
		unix.Close(d.fd)
	}
}

// invalidate drops path and everything below it.
func (c *dirCache) invalidate(path string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.m) == 0 {
		return
	}
	if path == "" {
		for c.lru.Len() > 0 {
			c.evictLocked(c.lru.Back())
		}
		return
	}
	prefix := path + "/"
	for p, el := range c.m {
		if p == path || strings.HasPrefix(p, prefix) {
			c.evictLocked(el)
		}
	}
}

// closeAll closes every cached descriptor (the layer is being closed).
func (c *dirCache) closeAll() { c.invalidate("") }
