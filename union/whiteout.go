package union

import (
	"errors"

	"github.com/unionmount/unionmount/internal/layer"
	"golang.org/x/sys/unix"
)

// Whiteouts: how the engine reads and clears the markers that hide a lower
// name. The forms (a 0:0 character device; an xattr whiteout in a directory
// marked "x"; an OCI ".wh.NAME" file in a lower, with -o whiteout-files) are
// defined in internal/layer/format.go. Whiteouts are made by remove.go and
// rename.go (through buildInWork), where a removed name still exists below.

// whiteoutBelow reports whether the first thing the lowers of parent have at
// name is a whiteout (of any form).
func (u *Union) whiteoutBelow(parent *Entry, name string) (bool, error) {
	for _, cand := range u.candidates(parent, name, "", nil) {
		st, err := cand.Layer.Lstat(cand.Path)
		if blocked(err) {
			return false, nil
		}
		if notFound(err) {
			if u.cfg.WhiteoutFiles {
				wh, err := cand.Layer.Exists(layer.Join(cand.parentPath, layer.WhiteoutPrefix+cand.name))
				if err != nil || wh {
					return wh, err
				}
			}
			continue
		}
		if err != nil {
			return false, err
		}
		return layer.IsWhiteout(&st) || u.isXWhiteout(cand, &st), nil
	}
	return false, nil
}

// isXWhiteout reports whether st, found at cand, is an xattr whiteout: a
// zero-size regular file with the whiteout xattr in a directory marked "x".
func (u *Union) isXWhiteout(cand candidate, st *unix.Stat_t) bool {
	if cand.parent == nil || !cand.parent.XWhiteouts || st.Mode&unix.S_IFMT != unix.S_IFREG || st.Size != 0 {
		return false
	}
	_, err := cand.Layer.Getxattr(cand.Path, u.format.Name(layer.XWhiteout), nil)
	return err == nil
}

// lowerPositive reports whether a lower layer of parent shows something at
// name (so removing or renaming it away needs a whiteout).
func (u *Union) lowerPositive(parent *Entry, name string) (bool, error) {
	if len(parent.Lower) == 0 {
		return false, nil
	}
	below := *parent
	below.Upper = false
	_, _, err := u.Lookup(&below, name)
	if errors.Is(err, unix.ENOENT) {
		return false, nil
	}
	return err == nil, err
}

// clearWhiteouts removes the whiteouts in upper directory p, which must hold
// nothing else (ENOTEMPTY otherwise).
func (u *Union) clearWhiteouts(p string) error {
	ents, err := u.upper.ReadDir(p)
	if err != nil {
		return err
	}
	for _, d := range ents {
		rel := layer.Join(p, d.Name)
		st, err := u.upper.Lstat(rel)
		if err != nil {
			return err
		}
		if !layer.IsWhiteout(&st) {
			return unix.ENOTEMPTY
		}
		if err := u.upper.Unlink(rel); err != nil {
			return err
		}
	}
	return nil
}
