package union

import (
	"sync"

	"github.com/unionmount/unionmount/internal/layer"
	"golang.org/x/sys/unix"
)

// Node is the engine's state of one union object between requests, for a
// caller that keeps objects (the FUSE adapter keeps one per inode the
// kernel holds): its union stack (upper, lowers, copied-up and
// metadata-only state) and its open files. The engine calls that change
// the object (copy-up, completing a metadata-only copy) update the node
// themselves: a caller keeps nothing in sync by hand.
//
// A node does not keep its path: renames of ancestors change it, and the
// caller knows it (go-fuse's tree). Calls take it afresh each time.
//
// A caller may hold a node for every entry of a large tree, so it is
// packed: most objects have at most one lower object and nothing else,
// which is kept inline, and the rest of a stack behind one pointer.
type Node struct {
	mu   sync.Mutex
	ino  uint64
	real [2]uint64
	// lower is the only lower object when hasLower and rare is nil or has
	// no lower objects of its own.
	lower    Object
	rare     *rareState
	mode     uint32
	upper    bool
	metaCopy bool
	noXattrs bool
	hasLower bool
	// gen is the union's copy-up generation when upper was last known
	// false: while it is unchanged, nothing can have been copied up.
	gen uint64
	// files are the node's open files (see File); nil when there are none,
	// as for most nodes.
	files map[*File]struct{}
}

// rareState holds the parts of a node's stack that few have.
type rareState struct {
	lower []Object // when there are several
	data  *Object
	index string
}

// Init gives a new node the state of e.
func (n *Node) Init(e *Entry) {
	n.mu.Lock()
	n.set(e)
	n.gen = e.gen
	n.mu.Unlock()
}

// Found gives n the state of e, its object found again by a lookup (under
// another name, or after a rename).
func (n *Node) Found(e *Entry) {
	n.mu.Lock()
	n.set(e)
	n.mu.Unlock()
}

// set packs e.
// Preconditions: n.mu is held.
func (n *Node) set(e *Entry) {
	n.ino, n.real, n.mode = e.Ino, e.Real, e.Mode
	n.upper, n.metaCopy, n.noXattrs = e.Upper, e.MetaCopy, e.NoXattrs
	n.lower, n.hasLower, n.rare = Object{}, false, nil
	if len(e.Lower) == 1 {
		n.lower, n.hasLower = e.Lower[0], true
	}
	if len(e.Lower) > 1 || e.Data != nil || e.Index != "" {
		n.rare = &rareState{data: e.Data, index: e.Index}
		if len(e.Lower) > 1 {
			n.rare.lower = e.Lower
		}
	}
}

// entryWithLower is an entry allocated with room for one lower object.
type entryWithLower struct {
	e     Entry
	lower [1]Object
}

// entry unpacks the node's stack at path into a new Entry, which the
// caller may change freely (its Lower slice is shared, but the engine
// never changes one in place).
// Preconditions: n.mu is held.
func (n *Node) entry(path string) *Entry {
	x := &entryWithLower{e: Entry{Path: path, Mode: n.mode, Upper: n.upper, Ino: n.ino, MetaCopy: n.metaCopy, NoXattrs: n.noXattrs, Real: n.real}}
	if n.hasLower {
		x.lower[0] = n.lower
		x.e.Lower = x.lower[:1:1]
	}
	if r := n.rare; r != nil {
		if r.lower != nil {
			x.e.Lower = r.lower
		}
		x.e.Data, x.e.Index = r.data, r.index
	}
	return &x.e
}

// Ino is the node's union inode number.
func (n *Node) Ino() uint64 {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.ino
}

// Copied reports whether n's object is in upper, and whether its data
// is: a copy-up makes a new real object (with a new birth time, say).
func (n *Node) Copied() (upper, data bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.upper, n.upper && !n.metaCopy
}

// Index is the node's hard-link index key (see Entry.Index).
func (n *Node) Index() string {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.rare == nil {
		return ""
	}
	return n.rare.index
}

// SameObject reports whether e, found under another name than path, is
// n's object. Several names of one object are normal (hard links: indexed
// lower ones, upper ones, which then share the real inode); two visible
// objects with one inode number are not (an origin whose lower file is
// visible elsewhere too, after layers were changed offline).
func (n *Node) SameObject(path string, e *Entry) bool {
	n.mu.Lock()
	index, real := "", n.real
	if n.rare != nil {
		index = n.rare.index
	}
	n.mu.Unlock()
	if e.IsDir() || index != "" || e.Index != "" || real == e.Real || real == [2]uint64{} {
		return true
	}
	return path == e.Path
}

// A Ref is a caller's handle on a union object: the engine's state of it,
// and where it is now (renames of its ancestors change that; the caller
// knows it, as go-fuse's tree does).
type Ref interface {
	// UnionNode is the engine's state of the object.
	UnionNode() *Node
	// UnionPath is the object's current union path; ok is false when it
	// has none any more (unlinked while open, or removed).
	UnionPath() (path string, ok bool)
}

// Entry returns r's union stack at its path; ENOENT when it has no name.
// An object may have been copied up through another node (as the parent
// of a new file): if any copy-up happened since the node last looked, it
// looks again. A node of a lower file with several names looks every
// time.
func (u *Union) Entry(r Ref) (*Entry, error) {
	path, ok := r.UnionPath()
	if !ok {
		return nil, unix.ENOENT
	}
	return u.entryOf(r.UnionNode(), path, false), nil
}

// entryOf is Entry for a call that copies the object up before it changes
// it (change true): a copy-up checks itself, under its lock, whether it
// happened meanwhile, so the look for copy-ups elsewhere is left out.
func (u *Union) entryOf(n *Node, path string, change bool) *Entry {
	n.mu.Lock()
	e := n.entry(path)
	// The names of an indexed inode share this node but not their state.
	// An upper object's state changes only through this node (a
	// metadata-only copy's data is completed through it; a rename looks
	// the moved node up again).
	stale := (!e.Upper && !change && n.gen != u.copyUpGen()) || e.Index != ""
	n.mu.Unlock()
	if stale {
		gen := u.copyUpGen()
		u.refresh(e)
		n.mu.Lock()
		n.set(e)
		if !n.upper {
			n.gen = gen
		}
		n.mu.Unlock()
	}
	return e
}

// learn keeps what an engine call found out about n's object.
func (n *Node) learn(e *Entry) {
	n.mu.Lock()
	n.set(e)
	n.mu.Unlock()
}

// The operations on a Ref's object. Those that change it look at the
// node's stack, change the object (copying it up first), and keep in the
// node what they found out. An object with no name is served through its
// open files (see unnamed.go); f, if not nil, is the one the request came
// through.

// Getattr returns the attributes of r's object (see Stat).
func (u *Union) Getattr(r Ref, f *File) (unix.Stat_t, error) {
	e, err := u.Entry(r)
	if err == nil {
		st, serr := u.Stat(e)
		if serr == nil {
			return st, nil
		}
		err = serr
	}
	st, uerr := u.statUnnamed(r.UnionNode(), f)
	if uerr != nil {
		return st, err
	}
	return st, nil
}

// Btime returns the birth time of r's object, the real file's as kernel
// overlayfs reports it (a copy's is the time of its copy-up); ok is false
// where its filesystem keeps none.
func (u *Union) Btime(r Ref, f *File) (t unix.StatxTimestamp, ok bool) {
	e, err := u.Entry(r)
	if err != nil {
		return u.btimeUnnamed(r.UnionNode(), f)
	}
	t, ok, _ = u.btime(e)
	return t, ok
}

// SetAttr changes attributes of r's object, copying it up first (for a
// size change only the bytes that remain are copied).
func (u *Union) SetAttr(r Ref, f *File, a SetAttr) error {
	n := r.UnionNode()
	path, ok := r.UnionPath()
	if !ok {
		return u.setAttrUnnamed(n, f, a)
	}
	e := u.entryOf(n, path, true)
	err := u.setAttr(e, a)
	n.learn(e)
	return err
}

// Getxattr reads xattr name of r's object; overlay's own attributes do not
// exist for users.
func (u *Union) Getxattr(r Ref, name string, dest []byte) (int, error) {
	e, err := u.Entry(r)
	if err != nil {
		return u.getxattrUnnamed(r.UnionNode(), name, dest)
	}
	return u.getxattr(e, name, dest)
}

// Listxattr lists the xattr names of r's object, without overlay's own.
func (u *Union) Listxattr(r Ref) ([]string, error) {
	e, err := u.Entry(r)
	if err != nil {
		return u.listxattrUnnamed(r.UnionNode())
	}
	return u.listxattr(e)
}

// Setxattr sets xattr name of r's object after copying it up.
func (u *Union) Setxattr(r Ref, name string, value []byte, flags int) error {
	n := r.UnionNode()
	e, err := u.Entry(r)
	if err != nil {
		return u.setxattrUnnamed(n, name, value, flags)
	}
	err = u.setxattr(e, name, value, flags)
	n.learn(e)
	return err
}

// Removexattr removes xattr name of r's object, copying it up only if it
// has it.
func (u *Union) Removexattr(r Ref, name string) error {
	n := r.UnionNode()
	e, err := u.Entry(r)
	if err != nil {
		return u.removexattrUnnamed(n, name)
	}
	err = u.removexattr(e, name)
	n.learn(e)
	return err
}

// Link makes a hard link name in parent to r's object, copying it up
// first (or, with no name, to its open file: linkat of an O_TMPFILE file).
func (u *Union) Link(r Ref, parent *Entry, name string) (*Entry, unix.Stat_t, error) {
	n := r.UnionNode()
	src, err := u.Entry(r)
	if err != nil {
		return u.linkUnnamed(n, parent, name)
	}
	e, st, err := u.link(src, parent, name)
	n.learn(src)
	return e, st, err
}

// copyUpData copies up the data of n's object at path, if it is not in
// upper yet (a metadata-only copy is completed).
func (u *Union) copyUpData(n *Node, path string) error {
	e := u.entryOf(n, path, false)
	_, err := u.copyUp(e, copyReq{size: All})
	n.learn(e)
	return err
}

// copyUpGen is a counter that changes whenever something is copied up.
func (u *Union) copyUpGen() uint64 { return u.copyGen.Load() }

// refresh notes in e whether its object exists in upper at e.Path: it may
// have been copied up since e was looked up. For a lower file with several
// names, copied up one name at a time, it depends on the name, so it is
// checked both ways.
func (u *Union) refresh(e *Entry) {
	if u.upper == nil || (e.Upper && e.Index == "" && !e.MetaCopy) {
		return
	}
	st, err := u.upper.Lstat(e.Path)
	wasUpper := e.Upper
	e.Upper = err == nil && !layer.IsWhiteout(&st) && st.Mode&unix.S_IFMT == e.Mode
	e.NoXattrs = e.NoXattrs && wasUpper && e.Upper
	e.MetaCopy = e.Upper && e.Mode == unix.S_IFREG && (e.Data != nil || len(e.Lower) > 0) && u.hasMetacopy(e.Path)
	if e.MetaCopy && e.Data == nil {
		e.Data = &e.Lower[0]
	}
}
