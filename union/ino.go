package union

import (
	"errors"
	"io/fs"

	"github.com/unionmount/unionmount/internal/layer"
	"golang.org/x/sys/unix"
)

// Inode numbers. Every object of the union has one number for its life,
// across copy-up and remounts (SPEC §5): the real inode number of the lower
// object it came from (kept in the origin xattr of its copy), tagged in the
// high bits with a small number for the filesystem it lives on, as kernel
// overlayfs does with xino. Devices are numbered in layer order, upper
// first, so the same layers number the same at every mount.

// numberDevs gives each layer's device a small number, upper first, so that inode
// numbers are the same at every mount of the same layers.
func (u *Union) numberDevs(ls ...*layer.Layer) {
	for _, l := range ls {
		u.devNumber(l.Dev)
	}
}

func (u *Union) devNumber(dev uint64) uint64 {
	u.devMu.Lock()
	defer u.devMu.Unlock()
	i, ok := u.devs[dev]
	if !ok {
		i = uint64(len(u.devs))
		u.devs[dev] = i
	}
	return i
}

// inoBits is how many low bits of an inode number are the real inode number;
// the bits above say which filesystem it came from (as kernel overlayfs xino).
const inoBits = 56

// Ino is the union inode number of real object (dev, ino).
func (u *Union) Ino(dev, ino uint64) uint64 {
	fs := u.devNumber(dev)
	if ino>>inoBits != 0 {
		// Too wide to tag: fold the high bits in.
		ino = (ino ^ ino>>inoBits) & (1<<inoBits - 1)
	}
	n := fs<<inoBits | ino
	if n <= 1 {
		// 0 and 1 are reserved by FUSE and go-fuse.
		n |= 1 << 63
	}
	return n
}

// originIno is the union inode number of origin value v ("dev:ino").
func (u *Union) originIno(v string) (uint64, bool) {
	d, i, ok := layer.ParseOrigin(v)
	if !ok {
		return 0, false
	}
	return u.Ino(d, i), true
}

// originValue is what the origin xattr holds for lower object st.
func originValue(st *unix.Stat_t) []byte {
	return []byte(layer.OriginValue(st.Dev, st.Ino))
}

// fixStat turns the attributes of a real object into the union object's:
// the union inode number, and the union link count of an indexed inode or
// of a lower file with several names.
func (u *Union) fixStat(e *Entry, st unix.Stat_t) unix.Stat_t {
	e.Real = [2]uint64{st.Dev, st.Ino}
	st.Ino = e.Ino
	switch {
	case u.indexedKey(e.Index) != "":
		st.Nlink = u.indexNlink(e.Index, st.Nlink)
	case !e.Upper && len(e.Lower) > 0 && st.Nlink > 1 && st.Mode&unix.S_IFMT == unix.S_IFREG:
		// A lower file with several names that no name of was copied
		// up: the count lookup shows (see lowerNlink), not its links on
		// disk, which count an old index's when the layer was an upper.
		st.Nlink = u.lowerNlink(e.Lower[0].Layer, e.Lower[0].Path, st.Nlink)
	}
	return st
}

// errFound ends the walk of PathOf.
var errFound = errors.New("found")

// PathOf returns the union path of the object whose union inode number is
// ino, by walking the merged tree from the root: the way back from a file
// handle whose object nobody has looked up since (its cost grows with the
// tree). ESTALE if there is no such object any more, as kernel overlayfs
// answers a handle of a removed object.
func (u *Union) PathOf(ino uint64) (string, error) {
	root, err := u.Root()
	if err != nil {
		return "", err
	}
	var path string
	err = u.Walk(root, func(v *Visited) error {
		if v.Entry.Ino == ino && v.Entry.Path != "" {
			path = v.Entry.Path
			return errFound
		}
		return nil
	})
	if err != nil && !errors.Is(err, errFound) && !errors.Is(err, fs.SkipDir) {
		return "", err
	}
	if path == "" {
		return "", unix.ESTALE
	}
	return path, nil
}
