package layertool

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/union"
)

// Change is one path the upper changes, as podman diff reports it.
type Change struct {
	// Kind is 'A' (added), 'C' (changed) or 'D' (deleted).
	Kind byte
	// Path is the union path, with a leading slash.
	Path string
}

func (c Change) String() string { return string(c.Kind) + " " + c.Path }

// Diff lists what the upper of cfg changes in the tree its lowers make,
// sorted by path: every path the merged view has and the lowers do not
// (A), every object of the lowers the upper replaces or modifies (C; a
// directory only when its own mode, owner, mtime or xattrs differ, not
// because something in it changed), and every path of the lowers the
// merged view no longer shows (D, only the topmost of a deleted subtree).
func Diff(ctx context.Context, cfg union.Config) ([]Change, error) {
	if cfg.Upper == "" {
		return nil, errors.New("upperdir: required")
	}
	s, err := openSession(cfg, false)
	if err != nil {
		return nil, err
	}
	defer s.close()
	lowers, err := lowerUnion(cfg)
	if err != nil {
		return nil, err
	}
	defer lowers.Close()
	d := &differ{ctx: ctx, u: s.u, lowers: lowers}
	m, err := s.u.Root()
	if err != nil {
		return nil, err
	}
	l, err := lowers.Root()
	if err != nil {
		return nil, err
	}
	if err := d.dir(m, l); err != nil {
		return nil, err
	}
	if err := d.indexVisible(m); err != nil {
		return nil, err
	}
	sort.Slice(d.out, func(i, j int) bool { return d.out[i].Path < d.out[j].Path })
	return d.out, nil
}

// differ compares the merged view (u) with the lowers' (lowers).
type differ struct {
	ctx    context.Context
	u      *union.Union
	lowers *union.Union
	out    []Change
}

func (d *differ) add(kind byte, p string) { d.out = append(d.out, Change{kind, unionPath(p)}) }

// dir compares merged directory m with l, the lowers' directory at the
// same path.
func (d *differ) dir(m, l *union.Entry) error {
	if err := canceled(d.ctx); err != nil {
		return err
	}
	if m.Upper && sameLowers(m.Lower, l.Lower) {
		// An ordinary merged directory: only what the upper holds differs.
		up := d.u.UpperLayer()
		ents, err := up.ReadDir(m.Path)
		if err != nil {
			return fmt.Errorf("diff %s: %w", unionPath(m.Path), err)
		}
		for _, e := range ents {
			p := layer.Join(m.Path, e.Name)
			st, err := up.Lstat(p)
			if err != nil {
				return fmt.Errorf("diff %s: %w", unionPath(p), err)
			}
			if layer.IsWhiteout(&st) {
				if lc, err := d.lookup(d.lowers, l, e.Name); err != nil {
					return err
				} else if lc != nil {
					d.add('D', p)
				}
				continue
			}
			if err := d.entry(m, l, e.Name); err != nil {
				return err
			}
		}
		return nil
	}
	// Opaque, redirected, or below a redirect: compare the listings.
	mNames, err := d.names(d.u, m)
	if err != nil {
		return err
	}
	lNames, err := d.names(d.lowers, l)
	if err != nil {
		return err
	}
	for n := range lNames {
		if !mNames[n] {
			d.add('D', layer.Join(m.Path, n))
		}
	}
	for n := range mNames {
		if err := d.entry(m, l, n); err != nil {
			return err
		}
	}
	return nil
}

// entry compares name in merged directory m with name in l.
func (d *differ) entry(m, l *union.Entry, name string) error {
	p := layer.Join(m.Path, name)
	mc, err := d.lookup(d.u, m, name)
	if err != nil {
		return err
	}
	if mc == nil {
		return nil
	}
	lc, err := d.lookup(d.lowers, l, name)
	if err != nil {
		return err
	}
	switch {
	case lc == nil:
		d.add('A', p)
		if mc.IsDir() {
			return d.addAll(mc)
		}
	case !mc.Upper && sameLowers(mc.Lower, lc.Lower):
		// The same lower object, seen from the same place.
	case mc.IsDir() && lc.IsDir():
		changed, err := d.dirChanged(mc, lc)
		if err != nil {
			return err
		}
		if changed {
			d.add('C', p)
		}
		return d.dir(mc, lc)
	default:
		d.add('C', p)
		if mc.IsDir() {
			return d.addAll(mc)
		}
	}
	return nil
}

// indexVisible reports as changed the names that show a copied-up file
// through the engine's index although the upper does not hold them (other
// names of a lower file with several). Only a union with indexed files
// pays for this walk of the merged tree.
func (d *differ) indexVisible(root *union.Entry) error {
	if ok, err := d.u.HasIndexed(); err != nil || !ok {
		return err
	}
	seen := map[string]bool{}
	for _, c := range d.out {
		seen[c.Path] = true
	}
	return d.u.Walk(root, func(v *union.Visited) error {
		if err := canceled(d.ctx); err != nil {
			return err
		}
		if d.u.ThroughIndex(v.Entry) && !seen[unionPath(v.Entry.Path)] {
			d.add('C', v.Entry.Path)
		}
		return nil
	})
}

// addAll reports everything below merged directory e as added.
func (d *differ) addAll(e *union.Entry) error {
	return d.u.Walk(e, func(v *union.Visited) error {
		if v.Entry.Path != e.Path {
			d.add('A', v.Entry.Path)
		}
		return canceled(d.ctx)
	})
}

// lookup finds name in directory e of u; nil if there is none.
func (d *differ) lookup(u *union.Union, e *union.Entry, name string) (*union.Entry, error) {
	c, _, err := u.Lookup(e, name)
	if errors.Is(err, unix.ENOENT) || errors.Is(err, unix.ENOTDIR) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("diff %s: %w", unionPath(layer.Join(e.Path, name)), err)
	}
	return c, nil
}

func (d *differ) names(u *union.Union, e *union.Entry) (map[string]bool, error) {
	ents, err := u.ReadDir(e)
	if err != nil {
		return nil, fmt.Errorf("diff %s: %w", unionPath(e.Path), err)
	}
	out := make(map[string]bool, len(ents))
	for _, de := range ents {
		out[de.Name] = true
	}
	return out, nil
}

// dirChanged reports whether two directories differ in mode, owner, mtime
// or xattrs.
func (d *differ) dirChanged(m, l *union.Entry) (bool, error) {
	ml, mp, err := d.u.Visible(m)
	if err != nil {
		return false, fmt.Errorf("diff %s: %w", unionPath(m.Path), err)
	}
	ll, lp, err := d.lowers.Visible(l)
	if err != nil {
		return false, fmt.Errorf("diff %s: %w", unionPath(m.Path), err)
	}
	ms, err := ml.Lstat(mp)
	if err != nil {
		return false, fmt.Errorf("diff %s: %w", unionPath(m.Path), err)
	}
	ls, err := ll.Lstat(lp)
	if err != nil {
		return false, fmt.Errorf("diff %s: %w", unionPath(m.Path), err)
	}
	if ms.Mode != ls.Mode || ms.Uid != ls.Uid || ms.Gid != ls.Gid || ms.Mtim != ls.Mtim {
		return true, nil
	}
	f := d.u.Format()
	mx, err := readXattrs(ml, mp, f)
	if err != nil {
		return false, err
	}
	lx, err := readXattrs(ll, lp, f)
	if err != nil {
		return false, err
	}
	if len(mx) != len(lx) {
		return true, nil
	}
	for i := range mx {
		if mx[i].name != lx[i].name || !bytes.Equal(mx[i].value, lx[i].value) {
			return true, nil
		}
	}
	return false, nil
}

// sameLowers reports whether two union stacks hold the same lower
// directories (of two unions over the same lowers).
func sameLowers(a, b []union.Object) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Layer.Root != b[i].Layer.Root || a[i].Path != b[i].Path {
			return false
		}
	}
	return true
}
