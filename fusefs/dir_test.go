package fusefs

import (
	"context"
	"fmt"
	"slices"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
)

func entries(names ...string) []fuse.DirEntry {
	var l []fuse.DirEntry
	for _, n := range names {
		l = append(l, fuse.DirEntry{Name: n})
	}
	return l
}

// Two listings of the same names, built in different orders (as before and
// after copy-ups), have the same order and offsets; a listing without one
// of the names keeps the others' offsets, and a seek to the missing name's
// offset goes on with the name after it.
func TestListingOffsetsDependOnNamesOnly(t *testing.T) {
	var names []string
	for i := range 300 {
		names = append(names, fmt.Sprintf("file%03d.go", i))
	}
	a := entries(names...)
	slices.Reverse(names)
	b := entries(names...)
	sortByCookie(a)
	sortByCookie(b)
	if !slices.Equal(a, b) {
		t.Fatal("listings of the same names differ in order or offsets")
	}
	for i := 1; i < len(a); i++ {
		if a[i].Off <= a[i-1].Off || a[i].Off <= dotDotOff {
			t.Fatalf("offsets not increasing above %d: %d after %d", dotDotOff, a[i].Off, a[i-1].Off)
		}
	}
	gone := a[100]
	c := slices.Delete(slices.Clone(a), 100, 101)
	sortByCookie(c)
	for i := range c {
		if c[i].Off != nameCookie(c[i].Name) {
			t.Fatalf("%s moved from %d to %d", c[i].Name, nameCookie(c[i].Name), c[i].Off)
		}
	}
	d := &dirHandle{list: c, done: true}
	if en := d.Seekdir(context.Background(), gone.Off); en != 0 {
		t.Fatal(en)
	}
	if de, _ := d.Readdirent(context.Background()); de == nil || de.Name != a[101].Name {
		t.Fatalf("after the offset of removed %s: %v, want %s", gone.Name, de, a[101].Name)
	}
}

// Names whose cookies collide get increasing offsets, in name order.
func TestListingOffsetsCollide(t *testing.T) {
	l := []fuse.DirEntry{{Name: "c", Off: 7}, {Name: "a", Off: 7}, {Name: "d", Off: 8}, {Name: "b", Off: 7}}
	sortByOff(l)
	want := []fuse.DirEntry{{Name: "a", Off: 7}, {Name: "b", Off: 8}, {Name: "c", Off: 9}, {Name: "d", Off: 10}}
	if !slices.Equal(l, want) {
		t.Fatalf("got %v, want %v", l, want)
	}
}
