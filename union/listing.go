package union

import (
	"cmp"
	"slices"
	"strings"

	"golang.org/x/sys/unix"
)

// Listing is the merged listing of directory e as a reader sees it: "."
// (e) and ".." (parentIno), then the names in the order of their offsets
// (DirEntry.Off), which are not positions but cookies of the names (see
// nameCookie). A reader may go on reading a listing from an offset another
// listing of the same directory gave out (the kernel caches listings
// across opens, and asks the reader's handle for the rest when its cache
// is dropped halfway), and listings differ in order as names are copied up
// (a copy-up moves a name to the upper's part of a merged listing, and is
// no change of the directory the kernel sees). With offsets that depend on
// the name alone, every listing of the same names has the same order and
// offsets, and one that gained or lost names keeps the others' places.
func (u *Union) Listing(e *Entry, parentIno uint64) ([]DirEntry, error) {
	ents, err := u.ReadDir(e)
	if err != nil {
		return nil, err
	}
	sortByCookie(ents)
	return append([]DirEntry{
		{Name: ".", Mode: unix.S_IFDIR, Ino: e.Ino, Off: dotOff},
		{Name: "..", Mode: unix.S_IFDIR, Ino: parentIno, Off: dotDotOff},
	}, ents...), nil
}

// Offsets of "." and "..", which come first; names' cookies are greater.
const (
	dotOff    = 1
	dotDotOff = 2
)

// nameCookie is the offset of name in any listing of its directory: a
// hash of the name, above the offsets of "." and "..", with room above it
// for the few that sortByCookie moves up on a collision (d_off is a signed
// 64-bit number).
func nameCookie(name string) uint64 {
	// FNV-1a, 64 bits (hash/fnv's, without its allocations).
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return h>>2 + dotDotOff + 1
}

// sortByCookie sets each entry's offset to its name's cookie and sorts
// the entries by it (see sortByOff).
func sortByCookie(list []DirEntry) {
	for i := range list {
		list[i].Off = nameCookie(list[i].Name)
	}
	sortByOff(list)
}

// sortByOff sorts entries by offset (by name among equal offsets), then
// moves up the offset of any entry whose offset is not above the one
// before it, so offsets strictly increase. Only names whose 62-bit
// hashes collide get offsets that depend on the rest of the listing.
func sortByOff(list []DirEntry) {
	slices.SortFunc(list, func(a, b DirEntry) int {
		if c := cmp.Compare(a.Off, b.Off); c != 0 {
			return c
		}
		return strings.Compare(a.Name, b.Name)
	})
	for i := 1; i < len(list); i++ {
		if list[i].Off <= list[i-1].Off {
			list[i].Off = list[i-1].Off + 1
		}
	}
}
