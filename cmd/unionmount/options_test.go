package main

import (
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseArgs(t *testing.T) {
	for _, tc := range []struct {
		args    []string
		lowers  []string
		upper   string
		check   func(c mountConfig) bool
		wantErr string
	}{
		{args: []string{"-o", "lowerdir=/a:/b,upperdir=/u,workdir=/w", "/m"}, lowers: []string{"/a", "/b"}, upper: "/u",
			check: func(c mountConfig) bool {
				return c.mountpoint == "/m" && !c.foreground && c.union.RedirectDir && c.union.WhiteoutFiles
			}},
		// mount.fuse3's form, generic options, podman's empty element.
		{args: []string{"src", "/m", "-o", "rw,nodev,noatime,lowerdir=/a,,upperdir=/u,workdir=/w,volatile"}, lowers: []string{"/a"}, upper: "/u",
			check: func(c mountConfig) bool { return c.fsName == "src" && c.mountpoint == "/m" && c.union.NoFsync }},
		{args: []string{"-f", "-olowerdir=/a\\:b", "-o", "redirect_dir=off,fsync=0,userxattr", "/m"}, lowers: []string{"/a:b"},
			check: func(c mountConfig) bool {
				return c.foreground && !c.union.RedirectDir && c.union.NoFsync && c.union.UserXattr
			}},
		// ro with an upper shows the upper as the topmost lower.
		{args: []string{"-o", "ro,lowerdir=/a,upperdir=/u,workdir=/w", "/m"}, lowers: []string{"/u", "/a"}, upper: "",
			check: func(c mountConfig) bool { return c.readOnly && c.union.Work == "" }},
		{args: []string{"-d", "-o", "lowerdir=/a", "/m"}, lowers: []string{"/a"},
			check: func(c mountConfig) bool { return c.debug && c.foreground }},
		{args: []string{"-o", "lowerdir=/a,passthrough=off", "/m"}, lowers: []string{"/a"},
			check: func(c mountConfig) bool { return c.noPassthrough }},
		{args: []string{"-o", "lowerdir=/a,passthrough=off,passthrough=on", "/m"}, lowers: []string{"/a"},
			check: func(c mountConfig) bool { return !c.noPassthrough }},
		{args: []string{"-o", "lowerdir=/a,passthrough=no", "/m"}, wantErr: `passthrough="no": want on or off`},
		// A backslash escapes a comma (and a colon in lowerdir), as for
		// kernel overlayfs; upperdir and workdir are unescaped too.
		{args: []string{"-o", `lowerdir=/x/a\,b:/c\:d,upperdir=/u\,v,workdir=/w`, "/m"}, lowers: []string{"/x/a,b", "/c:d"}, upper: "/u,v"},
		{args: []string{"-o", "lowerdir=/a,timeout=0.5", "/m"}, lowers: []string{"/a"},
			check: func(c mountConfig) bool { return c.timeout == 500*time.Millisecond }},
		{args: []string{"-o", "lowerdir=/a,timeout=NaN", "/m"}, wantErr: `option timeout="NaN"`},
		{args: []string{"-o", "lowerdir=/a,timeout=inf", "/m"}, wantErr: `option timeout="inf"`},
		{args: []string{"-o", "lowerdir=/a,timeout=1e300", "/m"}, wantErr: `option timeout="1e300"`},
		{args: []string{"-o", "lowerdir=/a,timeout=-0", "/m"}, wantErr: `option timeout="-0"`},
		{args: []string{"-o", "lowerdir=/a,bogus", "/m"}, wantErr: `unknown option "bogus"`},
		{args: []string{"-o", "lowerdir=/a,redirect_dir=yes", "/m"}, wantErr: "redirect_dir"},
		{args: []string{"-o", "lowerdir=/a::/b", "/m"}, wantErr: "empty layer"},
		{args: []string{"-o", "lowerdir=/a,uidmapping=0:1:1", "/m"}, wantErr: "not supported"},
		{args: []string{"-o", "upperdir=/u", "/m"}, wantErr: "lowerdir is required"},
		{args: []string{"-o", "lowerdir=/a"}, wantErr: "missing MOUNTPOINT"},
		{args: []string{"-o", "lowerdir=/a", "a", "b", "c"}, wantErr: "too many arguments"},
		{args: []string{"-x", "-o", "lowerdir=/a", "/m"}, wantErr: `unknown flag "-x"`},
		{args: []string{"/m", "-o"}, wantErr: "-o needs an argument"},
	} {
		c, err := parseArgs(tc.args)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err %v, want %q", tc.args, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("%q: %v", tc.args, err)
			continue
		}
		if !reflect.DeepEqual(c.union.Lowers, tc.lowers) || c.union.Upper != tc.upper {
			t.Errorf("%q: lowers %q upper %q, want %q %q", tc.args, c.union.Lowers, c.union.Upper, tc.lowers, tc.upper)
		}
		if tc.check != nil && !tc.check(c) {
			t.Errorf("%q: parsed to %+v", tc.args, c)
		}
	}
}
