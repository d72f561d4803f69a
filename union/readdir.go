package union

import (
	"fmt"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// DirEntry is one name of a merged directory listing.
type DirEntry struct {
	Name string
	Mode uint32 // S_IFMT bits
	Ino  uint64 // equal to what Lookup reports for the name
	Off  uint64 // the name's offset in a Listing (0 from ReadDir)
}

// dirLayer is one real directory of a union stack, as readdir walks it.
type dirLayer struct {
	l     *layer.Layer
	path  string
	upper bool
	xwh   bool
}

func (u *Union) stack(e *Entry) []dirLayer {
	var s []dirLayer
	if e.Upper && u.upper != nil {
		s = append(s, dirLayer{l: u.upper, path: e.Path, upper: true})
	}
	for _, o := range e.Lower {
		s = append(s, dirLayer{l: o.Layer, path: o.Path, xwh: o.XWhiteouts})
	}
	return s
}

// ReadDir lists directory e: the union of its layers' entries minus
// whiteouts and whiteout markers, each name once, with inode numbers equal to
// those Lookup gives. Order: upper's entries, then each lower's new ones.
//
// It is a reader's listing: the upper directory's access time is updated
// as Config.NoAtime and NoDirAtime say.
func (u *Union) ReadDir(e *Entry) ([]DirEntry, error) {
	return u.readDir(e, true)
}

// SubdirCount is the number of directories in the merged listing of e, for
// the directory's link count (2 + subdirectories).
//
// Counts are cached by path: they change only by mkdir and rmdir in the
// directory (which drop its entry) and by renames (which drop them all).
func (u *Union) SubdirCount(e *Entry) (int, error) {
	u.subdirsMu.Lock()
	n, ok := u.subdirs[e.Path]
	gen := u.subdirsGen
	u.subdirsMu.Unlock()
	if ok {
		return n, nil
	}
	ents, err := u.readDir(e, false)
	if err != nil {
		return 0, err
	}
	n = 0
	for _, d := range ents {
		if d.Mode == unix.S_IFDIR {
			n++
		}
	}
	u.subdirsMu.Lock()
	if len(u.subdirs) > subdirsMax {
		clear(u.subdirs)
	}
	if u.subdirsGen == gen {
		// Not if a change came while we counted: it may be missing.
		u.subdirs[e.Path] = n
	}
	u.subdirsMu.Unlock()
	return n, nil
}

// subdirsMax bounds the cache of subdirectory counts.
const subdirsMax = 1 << 16

// forgetSubdirs drops the cached subdirectory count of directory p, or all
// of them when p is nil (a rename moves whole trees).
func (u *Union) forgetSubdirs(p *string) {
	u.subdirsMu.Lock()
	defer u.subdirsMu.Unlock()
	u.subdirsGen++
	if p == nil {
		clear(u.subdirs)
		return
	}
	delete(u.subdirs, *p)
}

func (u *Union) readDir(e *Entry, withIno bool) ([]DirEntry, error) {
	var out []DirEntry
	seen := map[string]bool{}
	for _, dl := range u.stack(e) {
		list := dl.l.ReadDir
		if withIno && dl.upper && !u.cfg.NoAtime && !u.cfg.NoDirAtime {
			list = dl.l.ReadDirAccess // a reader's listing (see ReadDir)
		}
		ents, err := list(dl.path)
		if err != nil {
			return nil, fmt.Errorf("readdir %s in %s: %w", dl.path, dl.l.Root, err)
		}
		var hides []string // whiteouts hide names in the layers below only
		for _, d := range ents {
			name := d.Name
			if !dl.upper && u.cfg.WhiteoutFiles {
				if name == layer.OpaqueWhiteout {
					continue
				}
				if t, ok := layer.WhiteoutTarget(name); ok {
					hides = append(hides, t)
					continue
				}
			}
			if seen[name] {
				continue
			}
			rel := layer.Join(dl.path, name)
			if d.Type == unix.DT_CHR || d.Type == unix.DT_UNKNOWN || (dl.xwh && d.Type == unix.DT_REG) {
				st, err := dl.l.Lstat(rel)
				if err != nil {
					return nil, fmt.Errorf("readdir %s in %s: %w", rel, dl.l.Root, err)
				}
				d.Type = modeToDT(st.Mode)
				if layer.IsWhiteout(&st) || (dl.xwh && u.isXWhiteout(candidate{Object: Object{Layer: dl.l, Path: rel}, parent: &Object{XWhiteouts: true}}, &st)) {
					hides = append(hides, name)
					continue
				}
			}
			seen[name] = true
			de := DirEntry{Name: name, Mode: layer.DTToMode(d.Type)}
			if withIno {
				if dl.upper {
					// An upper object's number may come from its lower origin:
					// ask Lookup, the one place that decides.
					child, _, err := u.Lookup(e, name)
					if err != nil {
						return nil, err
					}
					de.Ino = child.Ino
				} else {
					de.Ino = u.Ino(dl.l.Dev, d.Ino)
				}
			}
			out = append(out, de)
		}
		for _, h := range hides {
			seen[h] = true
		}
	}
	return out, nil
}

// IsEmpty reports whether merged directory e shows no entries.
func (u *Union) IsEmpty(e *Entry) (bool, error) {
	ents, err := u.readDir(e, false)
	return len(ents) == 0, err
}

func modeToDT(mode uint32) uint8 {
	switch mode & unix.S_IFMT {
	case unix.S_IFDIR:
		return unix.DT_DIR
	case unix.S_IFREG:
		return unix.DT_REG
	case unix.S_IFLNK:
		return unix.DT_LNK
	case unix.S_IFCHR:
		return unix.DT_CHR
	case unix.S_IFBLK:
		return unix.DT_BLK
	case unix.S_IFIFO:
		return unix.DT_FIFO
	case unix.S_IFSOCK:
		return unix.DT_SOCK
	}
	return unix.DT_UNKNOWN
}
