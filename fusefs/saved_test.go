package fusefs

import (
	"reflect"
	"testing"

	"github.com/unionmount/unionmount/union"
)

// TestSavedEntryRoundTrip: a node gives back every field of the union
// stack it saved (a field the packing forgets would silently read as its
// zero value).
func TestSavedEntryRoundTrip(t *testing.T) {
	one := []union.Object{{Path: "a/b", XWhiteouts: true}}
	two := []union.Object{{Path: "a/b"}, {Path: "c"}}
	data := &union.Object{Path: "d"}
	cases := []union.Entry{
		{Path: "p", Mode: 0o100000},
		{Path: "p", Mode: 0o100000, Upper: true, Ino: 7, Real: [2]uint64{1, 2}, NoXattrs: true},
		{Path: "p", Mode: 0o100000, Upper: true, MetaCopy: true, Lower: one, Data: data, Ino: 9},
		{Path: "p", Mode: 0o040000, Lower: two, Ino: 3},
		{Path: "p", Mode: 0o100000, Lower: one, Index: "0a:1b", Ino: 4},
	}
	// Every field of union.Entry is set by some case.
	set := map[string]bool{}
	for _, e := range cases {
		v := reflect.ValueOf(e)
		for i := 0; i < v.NumField(); i++ {
			if !v.Field(i).IsZero() {
				set[v.Type().Field(i).Name] = true
			}
		}
	}
	for i, n := 0, reflect.TypeOf(union.Entry{}).NumField(); i < n; i++ {
		if name := reflect.TypeOf(union.Entry{}).Field(i).Name; !set[name] {
			t.Errorf("no case sets union.Entry.%s: add one", name)
		}
	}
	for _, e := range cases {
		var s savedEntry
		s.save(&e)
		if got := s.entry(e.Path); !reflect.DeepEqual(*got, e) {
			t.Errorf("saved %+v, got back %+v", e, *got)
		}
	}
}
