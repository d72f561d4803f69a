package union

import (
	"reflect"
	"testing"
)

// TestNodeRoundTrip: a node gives back every field of the union stack it
// keeps (a field the packing forgets would silently read as its zero
// value).
func TestNodeRoundTrip(t *testing.T) {
	one := []Object{{Path: "a/b", XWhiteouts: true}}
	two := []Object{{Path: "a/b"}, {Path: "c"}}
	data := &Object{Path: "d"}
	cases := []Entry{
		{Path: "p", Mode: 0o100000},
		{Path: "p", Mode: 0o100000, Upper: true, Ino: 7, Real: [2]uint64{1, 2}, NoXattrs: true},
		{Path: "p", Mode: 0o100000, Upper: true, MetaCopy: true, Lower: one, Data: data, Ino: 9},
		{Path: "p", Mode: 0o040000, Lower: two, Ino: 3},
		{Path: "p", Mode: 0o100000, Lower: one, Index: "0a:1b", Ino: 4},
	}
	// Every field of Entry is set by some case.
	set := map[string]bool{}
	for _, e := range cases {
		v := reflect.ValueOf(e)
		for i := 0; i < v.NumField(); i++ {
			if !v.Field(i).IsZero() {
				set[v.Type().Field(i).Name] = true
			}
		}
	}
	for i, n := 0, reflect.TypeOf(Entry{}).NumField(); i < n; i++ {
		if f := reflect.TypeOf(Entry{}).Field(i); f.IsExported() && !set[f.Name] {
			t.Errorf("no case sets Entry.%s: add one", f.Name)
		}
	}
	for _, e := range cases {
		var n Node
		n.Init(&e)
		n.mu.Lock()
		got := n.entry(e.Path)
		n.mu.Unlock()
		if !reflect.DeepEqual(*got, e) {
			t.Errorf("kept %+v, got back %+v", e, *got)
		}
	}
}
