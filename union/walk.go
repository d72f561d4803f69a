package union

import (
	"errors"
	"fmt"
	"io/fs"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Visited is one object of the merged tree, as Walk reports it.
type Visited struct {
	// Entry is the object's union stack; Entry.Path is its union path.
	Entry *Entry
	// Layer and Real say where the visible object lives: the upper object
	// if there is one, else the topmost lower one.
	Layer *layer.Layer
	Real  string
	// Stat holds the visible object's own attributes, with its real inode
	// number (Entry.Ino is the union's), so that Stat.Dev and Stat.Ino
	// identify hard links.
	Stat unix.Stat_t
}

// Walk visits e and everything below it in the merged view, as a mount
// shows it: depth first, a directory before its contents, names in byte
// order, so that the same layers give the same sequence. Whiteouts, hidden
// names and the overlay's own markers are not visited. fs.SkipDir from fn
// for a directory skips what is in it; any other error ends the walk and
// is returned.
func (u *Union) Walk(e *Entry, fn func(v *Visited) error) error {
	l, p, err := u.top(e)
	if err != nil {
		return fmt.Errorf("walk %s: %w", e.Path, err)
	}
	st, err := l.Lstat(p)
	if err != nil {
		return fmt.Errorf("walk %s: %w", e.Path, err)
	}
	return u.walk(&Visited{Entry: e, Layer: l, Real: p, Stat: st}, fn)
}

func (u *Union) walk(v *Visited, fn func(v *Visited) error) error {
	if err := fn(v); errors.Is(err, fs.SkipDir) {
		return nil
	} else if err != nil || !v.Entry.IsDir() {
		return err
	}
	dir := v.Entry
	ents, err := u.readDir(dir, false) // inode numbers come with each Lookup
	if err != nil {
		return fmt.Errorf("walk %s: %w", dir.Path, err)
	}
	names := make([]string, len(ents))
	for i, d := range ents {
		names[i] = d.Name
	}
	sort.Strings(names)
	for _, name := range names {
		child, _, err := u.Lookup(dir, name)
		if err != nil {
			return fmt.Errorf("walk %s: %w", layer.Join(dir.Path, name), err)
		}
		l, p, err := u.top(child)
		if err != nil {
			return fmt.Errorf("walk %s: %w", child.Path, err)
		}
		st, err := l.Lstat(p)
		if err != nil {
			return fmt.Errorf("walk %s: %w", child.Path, err)
		}
		if err := u.walk(&Visited{Entry: child, Layer: l, Real: p, Stat: st}, fn); err != nil {
			return err
		}
	}
	return nil
}
