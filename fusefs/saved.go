package fusefs

import "github.com/unionmount/unionmount/union"

// savedEntry is a union.Entry as a node keeps it between requests: without
// its path (go-fuse's tree has it), and in less memory, since the kernel
// may hold a node for every entry of a large tree. Most entries have at
// most one lower object and nothing else: that object is kept inline,
// and the rest of a stack behind one pointer.
type savedEntry struct {
	ino  uint64
	real [2]uint64
	// lower is the only lower object when hasLower and rare is nil or has
	// no lower objects of its own.
	lower    union.Object
	rare     *rareEntry
	mode     uint32
	upper    bool
	metaCopy bool
	noXattrs bool
	hasLower bool
}

// rareEntry holds the parts of an entry that few have.
type rareEntry struct {
	lower []union.Object // when there are several
	data  *union.Object
	index string
}

// save packs e.
func (s *savedEntry) save(e *union.Entry) {
	*s = savedEntry{ino: e.Ino, real: e.Real, mode: e.Mode, upper: e.Upper, metaCopy: e.MetaCopy, noXattrs: e.NoXattrs}
	if len(e.Lower) == 1 {
		s.lower, s.hasLower = e.Lower[0], true
	}
	if len(e.Lower) > 1 || e.Data != nil || e.Index != "" {
		s.rare = &rareEntry{data: e.Data, index: e.Index}
		if len(e.Lower) > 1 {
			s.rare.lower = e.Lower
		}
	}
}

// entryWithLower is an entry allocated with room for one lower object.
type entryWithLower struct {
	e     union.Entry
	lower [1]union.Object
}

// entry unpacks the saved entry at path into a new union.Entry, which the
// caller may change freely (its Lower slice is shared, but the engine
// never changes one in place).
func (s *savedEntry) entry(path string) *union.Entry {
	x := &entryWithLower{e: union.Entry{Path: path, Mode: s.mode, Upper: s.upper, Ino: s.ino, MetaCopy: s.metaCopy, NoXattrs: s.noXattrs, Real: s.real}}
	if s.hasLower {
		x.lower[0] = s.lower
		x.e.Lower = x.lower[:1:1]
	}
	if r := s.rare; r != nil {
		if r.lower != nil {
			x.e.Lower = r.lower
		}
		x.e.Data, x.e.Index = r.data, r.index
	}
	return &x.e
}

// index is the saved entry's index key (see union.Entry.Index).
func (s *savedEntry) index() string {
	if s.rare == nil {
		return ""
	}
	return s.rare.index
}

// dataUpper reports whether the data is in upper (see dataUpper).
func (s *savedEntry) dataUpper() bool { return s.upper && !s.metaCopy }
