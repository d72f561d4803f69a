package main

import (
	"reflect"
	"testing"
)

func TestToolFlags(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		lowers []string
		pos    []string
		repair bool
	}{
		{[]string{"-o", "lowerdir=/a:/b,upperdir=/u", "--repair"}, []string{"/a", "/b"}, nil, true},
		// Flags after positional arguments, mount(8)'s -oOPTS, repeated -o.
		{[]string{"/dest", "-olowerdir=/a", "-o", "upperdir=/u", "--repair"}, []string{"/a"}, []string{"/dest"}, true},
		// After --, everything is positional.
		{[]string{"-o", "lowerdir=/a", "--", "--repair"}, []string{"/a"}, []string{"--repair"}, false},
	} {
		f := newToolFlags("check")
		repair := f.fs.Bool("repair", false, "")
		if err := f.parse(tc.args); err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !reflect.DeepEqual(f.union().Lowers, tc.lowers) || !reflect.DeepEqual(f.args, tc.pos) || *repair != tc.repair {
			t.Errorf("%q: lowers %q, args %q, repair %v", tc.args, f.union().Lowers, f.args, *repair)
		}
	}
	f := newToolFlags("diff")
	if err := f.parse([]string{"-o", "lowerdir=/a,bogus"}); err == nil {
		t.Error("an unknown -o option was accepted")
	}
	// Every tool has a usage text.
	for name := range subcommands {
		if toolUsage[name] == "" {
			t.Errorf("no usage for %s", name)
		}
	}
}
