package union

import (
	"cmp"
	"fmt"
	"slices"
	"testing"
)

func entries(names ...string) []DirEntry {
	var l []DirEntry
	for _, n := range names {
		l = append(l, DirEntry{Name: n})
	}
	return l
}

// Two listings of the same names, built in different orders (as before and
// after copy-ups), have the same order and offsets; a listing without one
// of the names keeps the others' offsets.
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
	if _, found := slices.BinarySearchFunc(c, gone.Off, func(d DirEntry, off uint64) int { return cmp.Compare(d.Off, off) }); found {
		t.Fatalf("removed %s left its offset behind", gone.Name)
	}
}

// Names whose cookies collide get increasing offsets, in name order.
func TestListingOffsetsCollide(t *testing.T) {
	l := []DirEntry{{Name: "c", Off: 7}, {Name: "a", Off: 7}, {Name: "d", Off: 8}, {Name: "b", Off: 7}}
	sortByOff(l)
	want := []DirEntry{{Name: "a", Off: 7}, {Name: "b", Off: 8}, {Name: "c", Off: 9}, {Name: "d", Off: 10}}
	if !slices.Equal(l, want) {
		t.Fatalf("got %v, want %v", l, want)
	}
}
