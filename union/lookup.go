package union

import (
	"errors"
	"fmt"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Object is a real object in one lower layer.
type Object struct {
	Layer *layer.Layer
	// Path is the object's path in Layer; it differs from the union path
	// below a redirected directory.
	Path string
	// XWhiteouts says that this directory's zero-size files with the
	// whiteout xattr are whiteouts (its opaque xattr is "x").
	XWhiteouts bool
	// Blocks is, for the data of a metadata-only copy (Entry.Data), its
	// st_blocks when known (lower files do not change); 0: unknown.
	Blocks int64
}

// Entry is what a lookup finds at one union path: the seed's union stack.
type Entry struct {
	// Path is the union path, which is also the path in upper. Callers set
	// it afresh before each call, since renames of ancestors change it.
	Path string
	// Mode holds the S_IFMT bits of the visible object.
	Mode uint32
	// Upper says whether the object exists in the upper layer.
	Upper bool
	// Lower is, for a directory, every lower directory merged into it, top
	// first; for anything else, the lower object it is (or was copied up
	// from), if any.
	Lower []Object
	// Ino is the union inode number: the lower origin's for objects that
	// came from a lower, else the upper object's.
	Ino uint64
	// MetaCopy says the upper object is a metadata-only copy of a regular
	// lower file, whose data is still below (see metacopy.go).
	MetaCopy bool
	// Data is where the data is when the visible object holds none: the
	// lower file below an upper metadata-only copy, or below a lower one
	// (a lower layer that was once an upper). nil otherwise.
	Data *Object
	// Real is the device and inode number of the visible object itself (the
	// union's Ino may come from an origin): two entries with one Ino but
	// different Real, both visible, are two objects (see fusefs).
	Real [2]uint64
	// NoXattrs says the upper object is known to have no extended
	// attributes but overlay's own (seen when it was looked up or copied
	// up): reading one needs no system call. Only for upper non-directories.
	NoXattrs bool
	// gen is the union's copy-up generation when the lookup that made the
	// entry began: nothing copied up since needs no second look (see
	// Node).
	gen uint64
	// Index is the index key of a regular lower file with several names
	// (see index.go), whether or not one of them was copied up yet; ""
	// otherwise. Such a file's names share one union inode.
	Index string
}

// IsDir reports whether the entry is a directory.
func (e *Entry) IsDir() bool { return e.Mode == unix.S_IFDIR }

// DataUpper reports whether e's data is in upper (copied up, and not a
// metadata-only copy).
func (e *Entry) DataUpper() bool { return e.Upper && !e.MetaCopy }

// Merged reports whether a directory shows more than one real directory,
// or a lower one through an upper one.
func (e *Entry) Merged() bool {
	return e.IsDir() && (len(e.Lower) > 1 || (e.Upper && len(e.Lower) > 0))
}

// Root returns the entry of the union's root directory.
func (u *Union) Root() (*Entry, error) {
	e := &Entry{Mode: unix.S_IFDIR}
	if u.upper != nil {
		st, err := u.upper.Lstat("")
		if err != nil {
			return nil, fmt.Errorf("upperdir: %w", err)
		}
		e.Upper = true
		e.Ino = u.Ino(st.Dev, st.Ino)
		v, err := u.upper.GetxattrString("", u.format.Name(layer.Opaque))
		if err != nil {
			return nil, fmt.Errorf("upperdir: %w", err)
		}
		if layer.IsOpaqueValue(v) {
			return e, nil
		}
	}
	for _, l := range u.lowers {
		st, err := l.Lstat("")
		if err != nil {
			return nil, fmt.Errorf("lowerdir %q: %w", l.Root, err)
		}
		if !e.Upper && len(e.Lower) == 0 {
			e.Ino = u.Ino(st.Dev, st.Ino)
		}
		d, err := u.lowerDirFlags(l, "")
		if err != nil {
			return nil, err
		}
		e.Lower = append(e.Lower, Object{Layer: l, Path: "", XWhiteouts: d.xwhiteouts})
		if d.opaque {
			break
		}
	}
	return e, nil
}

// Lookup finds name in directory parent, walking parent's union stack top
// down: the first layer that has name decides; a whiteout ends the walk with
// ENOENT; an opaque directory ends it after its own layer; a non-directory
// hides everything below it. It returns the entry and the attributes of the
// visible object (with the union inode number).
func (u *Union) Lookup(parent *Entry, name string) (*Entry, unix.Stat_t, error) {
	var top unix.Stat_t
	if len(name) > 255 {
		return nil, top, unix.ENAMETOOLONG
	}
	p := layer.Join(parent.Path, name)
	e := &Entry{Path: p, gen: u.copyUpGen()}
	found := false
	// lowerPath is where name lives in the next lower layer: under each
	// parent lower directory, unless a redirect says otherwise.
	redirect := ""
	if parent.Upper && u.upper != nil {
		st, err := u.upper.Lstat(p)
		switch {
		case err == nil && layer.IsWhiteout(&st):
			return nil, top, unix.ENOENT
		case err == nil:
			found = true
			top = st
			e.Upper = true
			e.Mode = st.Mode & unix.S_IFMT
			e.Ino = u.Ino(st.Dev, st.Ino)
			if !e.IsDir() {
				x, err := u.upperFileXattrs(p)
				if err != nil {
					return nil, top, err
				}
				if ino, ok := u.originIno(x.origin); ok {
					e.Ino = ino
					if st.Nlink > 1 {
						e.Index = x.origin
					}
				}
				e.NoXattrs = !x.user
				if x.metacopy && e.Mode == unix.S_IFREG {
					e.MetaCopy = true
					e.Data = u.metacopyData(parent, name, x.redirect, nil)
				}
				return e, u.fixStat(e, top), nil
			}
			x, err := u.upperDirXattrs(p)
			if err != nil {
				return nil, top, err
			}
			if layer.IsOpaqueValue(x.opaque) {
				return e, u.fixStat(e, top), nil
			}
			redirect = x.redirect
		case errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR):
		default:
			return nil, top, fmt.Errorf("lookup %s in upper: %w", p, err)
		}
	}
	cands := u.candidates(parent, name, redirect, nil)
	if u.cfg.WhiteoutFiles && strings.HasPrefix(name, layer.WhiteoutPrefix) {
		cands = nil // whiteout markers of the lowers are not names of the union
	}
	for i := 0; i < len(cands); i++ {
		cand := cands[i]
		st, err := cand.Layer.Lstat(cand.Path)
		if blocked(err) {
			break
		}
		if notFound(err) {
			if u.cfg.WhiteoutFiles && cand.parent != nil {
				wh, err := cand.Layer.Exists(layer.Join(cand.parentPath, layer.WhiteoutPrefix+cand.name))
				if err != nil {
					return nil, top, err
				}
				if wh {
					break
				}
			}
			continue
		}
		if err != nil {
			return nil, top, fmt.Errorf("lookup %s in lowerdir %q: %w", cand.Path, cand.Layer.Root, err)
		}
		if layer.IsWhiteout(&st) || u.isXWhiteout(cand, &st) {
			break
		}
		isDir := st.Mode&unix.S_IFMT == unix.S_IFDIR
		if found && (!isDir || !e.IsDir()) {
			// A non-directory hides what is below it; a directory below a
			// non-directory is hidden too.
			break
		}
		if !found {
			found = true
			top = st
			e.Mode = st.Mode & unix.S_IFMT
		}
		if len(e.Lower) == 0 {
			// The topmost lower object is the union object's identity.
			e.Ino = u.Ino(st.Dev, st.Ino)
		}
		obj := Object{Layer: cand.Layer, Path: cand.Path}
		if !isDir {
			e.Lower = append(e.Lower, obj)
			if !e.Upper && u.lowerMetacopy(cand.Layer, cand.Path, &st) {
				// A metadata-only copy in a lower layer: its data is below.
				r, _ := cand.Layer.GetxattrString(cand.Path, u.format.Name(layer.Redirect))
				e.Data = u.metacopyData(parent, name, cand.resolve(r), cand.Layer)
			}
			if !e.Upper && st.Nlink > 1 && st.Mode&unix.S_IFMT == unix.S_IFREG && u.index != nil {
				// Another name of this file may have been copied up: then
				// this one shows the copy, through the index.
				e.Index = indexKey(&st)
				if ist, err := u.index.Lstat(e.Index); err == nil {
					top = ist
				}
			}
			break
		}
		d, err := u.lowerDirFlags(cand.Layer, cand.Path)
		if err != nil {
			return nil, top, err
		}
		obj.XWhiteouts = d.xwhiteouts
		e.Lower = append(e.Lower, obj)
		if d.opaque {
			break
		}
		// A redirect in a lower layer applies to the layers below it.
		if d.redirect != "" {
			cands = append(cands[:i+1], u.candidates(parent, name, cand.resolve(d.redirect), cand.Layer)...)
		}
	}
	if !found {
		return nil, top, unix.ENOENT
	}
	return e, u.fixStat(e, top), nil
}

// notFound reports whether err from a lower lookup means "nothing here".
func notFound(err error) bool {
	return errors.Is(err, unix.ENOENT) || blocked(err)
}

// blocked reports whether err from a lower lookup means that a component
// of the path is not a directory in that layer: a non-directory (ENOTDIR)
// or a symlink (ELOOP: layers are walked without following symlinks). That
// hides the layers below too, as in kernel overlayfs, which stops the walk
// of a redirected path at the first layer where it meets a non-directory.
// (Without a redirect the parent is known to be a directory there, so it
// cannot happen.)
func blocked(err error) bool {
	return errors.Is(err, unix.ENOTDIR) || errors.Is(err, unix.ELOOP)
}

// candidate is a place a name may be found in one lower layer.
type candidate struct {
	Object
	parent     *Object // the parent lower directory
	parentPath string
	name       string
	// absolute: found by an absolute redirect's path, not under the
	// merged parent's lower directories.
	absolute bool
}

// resolve turns redirect, found on the object at c, into what the layers
// below c follow. A relative redirect (a bare name) replaces the last
// component of the path where c was found, as in kernel overlayfs: under
// the merged parent's lower directories that is the parent's path in each
// layer, but after an absolute redirect it is c's own path, so the result
// is absolute too.
func (c candidate) resolve(redirect string) string {
	if !c.absolute || !relativeRedirect(redirect) {
		return redirect
	}
	return "/" + layer.Join(c.parentPath, redirect)
}

// relativeRedirect reports whether redirect is a valid relative one: a
// bare name (with no slash, and not "." or "..").
func relativeRedirect(redirect string) bool {
	return redirect != "" && !strings.Contains(redirect, "/") && redirect != "." && redirect != ".."
}

// candidates lists where to look for name in the lower layers below layer
// below (all of them when below is nil): under each lower directory of
// parent, or, for a directory redirected to an absolute path, at that path
// in every such layer.
func (u *Union) candidates(parent *Entry, name, redirect string, below *layer.Layer) []candidate {
	var out []candidate
	under := func(l *layer.Layer) bool {
		if below == nil {
			return true
		}
		passed := false
		for _, ll := range u.lowers {
			if ll == l {
				return passed
			}
			if ll == below {
				passed = true
			}
		}
		return false
	}
	if strings.HasPrefix(redirect, "/") {
		p, err := layer.Clean(redirect)
		if err != nil {
			return nil
		}
		for _, l := range u.lowers {
			if !under(l) {
				continue
			}
			dir, base := layer.Split(p)
			out = append(out, candidate{Object: Object{Layer: l, Path: p}, parent: &Object{Layer: l, Path: dir}, parentPath: dir, name: base, absolute: true})
			next, stop := u.followPath(l, p)
			if stop {
				break
			}
			p = next
		}
		return out
	}
	if relativeRedirect(redirect) {
		name = redirect
	}
	for i := range parent.Lower {
		pl := parent.Lower[i]
		if !under(pl.Layer) {
			continue
		}
		out = append(out, candidate{
			Object:     Object{Layer: pl.Layer, Path: layer.Join(pl.Path, name), XWhiteouts: pl.XWhiteouts},
			parent:     &parent.Lower[i],
			parentPath: pl.Path,
			name:       name,
		})
	}
	return out
}

// followPath walks the directories above p in lower layer l, as kernel
// overlayfs walks an absolute redirect's path in each layer: a directory on
// the way that is opaque hides the layers below (stop); one that is
// redirected itself moves the rest of the path for the layers below, to its
// redirect (an absolute one, or a bare name in its parent). next is where
// the layers below l look for p. An error reads as "not here": the lookup
// that follows meets it.
func (u *Union) followPath(l *layer.Layer, p string) (next string, stop bool) {
	parts := strings.Split(p, "/")
	pre := "" // where the layers below see parts[:i]
	i := 0
	for ; i < len(parts)-1; i++ {
		q := strings.Join(parts[:i+1], "/")
		st, err := l.Lstat(q)
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFDIR {
			break // not on this layer's path: the rest stays as it is
		}
		d, err := u.lowerDirFlags(l, q)
		if err != nil {
			break
		}
		pre = layer.Join(pre, parts[i])
		if d.opaque {
			return "", true
		}
		switch {
		case strings.HasPrefix(d.redirect, "/"):
			if c, err := layer.Clean(d.redirect); err == nil {
				pre = c
			}
		case relativeRedirect(d.redirect):
			pre = layer.Join(parentOf(pre), d.redirect)
		}
	}
	return layer.Join(pre, strings.Join(parts[i:], "/")), false
}

// lowerDir is what a lookup needs to know of a lower directory.
type lowerDir struct {
	opaque     bool   // hides the layers below (xattr, or ".wh..wh..opq")
	xwhiteouts bool   // may hold xattr whiteouts (opaque xattr "x")
	redirect   string // where the layers below have it, if renamed
}

// lowerDirFlags reads lower directory rel's overlay xattrs with one
// listxattr (most directories have none) and reads only those present.
func (u *Union) lowerDirFlags(l *layer.Layer, rel string) (lowerDir, error) {
	var d lowerDir
	names, err := l.Listxattr(rel)
	if err != nil {
		return d, fmt.Errorf("lowerdir %q: %s: %w", l.Root, rel, err)
	}
	for _, n := range names {
		var v string
		switch n {
		case u.format.Name(layer.Opaque), layer.FuseOverlayfsOpaque, u.format.Name(layer.Redirect):
			if v, err = l.GetxattrString(rel, n); err != nil {
				return d, fmt.Errorf("lowerdir %q: %s: %w", l.Root, rel, err)
			}
		default:
			continue
		}
		switch {
		case n == u.format.Name(layer.Redirect):
			d.redirect = v
		case layer.IsOpaqueValue(v):
			d.opaque = true
		case n == u.format.Name(layer.Opaque) && v == "x":
			d.xwhiteouts = true
		}
	}
	if !d.opaque && u.cfg.WhiteoutFiles {
		ok, err := l.Exists(layer.Join(rel, layer.OpaqueWhiteout))
		if err != nil {
			return d, err
		}
		d.opaque = ok
	}
	return d, nil
}

type dirXattrs struct{ opaque, redirect string }

// upperDirXattrs reads the overlay xattrs of upper directory p.
func (u *Union) upperDirXattrs(p string) (dirXattrs, error) {
	var x dirXattrs
	names, err := u.upper.Listxattr(p)
	if err != nil {
		return x, fmt.Errorf("upper %s: %w", p, err)
	}
	for _, n := range names {
		var dst *string
		switch n {
		case u.format.Name(layer.Opaque):
			dst = &x.opaque
		case u.format.Name(layer.Redirect):
			dst = &x.redirect
		default:
			continue
		}
		if *dst, err = u.upper.GetxattrString(p, n); err != nil {
			return x, fmt.Errorf("upper %s: %w", p, err)
		}
	}
	return x, nil
}

// fileXattrs are the overlay xattrs of an upper non-directory.
type fileXattrs struct {
	origin   string // "dev:ino" of the lower object it was copied up from
	metacopy bool   // its data is still in a lower file
	redirect string // where that lower file is, if not at the same path
	user     bool   // it has xattrs besides overlay's own
}

// upperFileXattrs reads the overlay xattrs of upper non-directory p: one
// listxattr, and a read of each that is there.
func (u *Union) upperFileXattrs(p string) (fileXattrs, error) {
	var x fileXattrs
	names, err := u.upper.Listxattr(p)
	if err != nil {
		return x, fmt.Errorf("upper %s: %w", p, err)
	}
	for _, n := range names {
		if !u.format.IsPrivate(n) {
			x.user = true
			continue
		}
		switch n {
		case u.format.Name(layer.Origin):
			x.origin, err = u.upper.GetxattrString(p, n)
		case u.format.Name(layer.Metacopy):
			x.metacopy = true
		case u.format.Name(layer.Redirect):
			x.redirect, err = u.upper.GetxattrString(p, n)
		}
		if err != nil {
			return x, fmt.Errorf("upper %s: %w", p, err)
		}
	}
	return x, nil
}

// metacopyData finds the lower file holding the data of metadata-only copy
// name in parent (in upper, or in layer below): at the same path further
// down, or where its redirect says, past other metadata-only copies.
func (u *Union) metacopyData(parent *Entry, name, redirect string, below *layer.Layer) *Object {
	for _, cand := range u.candidates(parent, name, redirect, below) {
		st, err := cand.Layer.Lstat(cand.Path)
		if blocked(err) {
			break
		}
		if notFound(err) {
			continue
		}
		if err != nil || st.Mode&unix.S_IFMT != unix.S_IFREG {
			break
		}
		if u.lowerMetacopy(cand.Layer, cand.Path, &st) {
			continue
		}
		obj := cand.Object
		obj.Blocks = st.Blocks
		return &obj
	}
	return nil
}

// lowerMetacopy reports whether regular file p of lower layer l (st) is a
// metadata-only copy. Such a file has no data blocks: at most one block,
// which holds its xattrs. Files with more cost no xattr read.
func (u *Union) lowerMetacopy(l *layer.Layer, p string, st *unix.Stat_t) bool {
	if st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size == 0 || st.Blocks*512 > 4096 {
		return false
	}
	_, err := l.Getxattr(p, u.format.Name(layer.Metacopy), nil)
	return err == nil
}

// Resolve looks up union path p from the root.
func (u *Union) Resolve(p string) (*Entry, error) {
	e, err := u.Root()
	if err != nil {
		return nil, err
	}
	if p == "" {
		return e, nil
	}
	cur := ""
	for _, name := range strings.Split(p, "/") {
		e.Path = cur
		if !e.IsDir() {
			return nil, unix.ENOTDIR
		}
		e, _, err = u.Lookup(e, name)
		if err != nil {
			return nil, err
		}
		cur = layer.Join(cur, name)
	}
	e.Path = cur
	return e, nil
}
