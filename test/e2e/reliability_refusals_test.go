package e2e

// SPEC §7 refusals that TestStartupRefusals (cli_test.go) does not cover:
// an upper filesystem that cannot hold xattrs (ramfs) or whiteouts (kernel
// overlayfs refuses mknod 0:0), an upper that is a file or missing, a
// missing workdir, every way two layers can overlap (symlinked aliases
// included), an empty layer, and a lower the mounting user cannot read.
// Each: exit status, a one-line message naming the option and path, and
// nothing created or changed anywhere.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

func TestMoreStartupRefusals(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	d := t.TempDir()
	p := func(rel string) string { return filepath.Join(d, rel) }
	for _, dir := range []string{"l/sub", "u/in", "w", "mnt", "ovl/l", "ovl/u", "ovl/w", "ovl/m"} {
		if err := os.MkdirAll(p(dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p("file"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("u", p("alias-of-u")); err != nil {
		t.Fatal(err)
	}
	// An upper on ramfs: no xattrs at all.
	ram := mountScratch(t, "ramfs", "mode=0755")
	for _, dir := range []string{"u", "w"} {
		if err := os.Mkdir(filepath.Join(ram, dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	// An upper inside kernel overlayfs: mknod of a 0:0 device (a whiteout)
	// is refused with EPERM.
	if err := unix.Mount("overlay", p("ovl/m"), "overlay", 0, "lowerdir="+p("ovl/l")+",upperdir="+p("ovl/u")+",workdir="+p("ovl/w")); err != nil {
		t.Fatalf("mount overlay: %v", err)
	}
	t.Cleanup(func() { unmountScratch(t, p("ovl/m")) })
	for _, dir := range []string{"up", "wk"} {
		if err := os.Mkdir(filepath.Join(p("ovl/m"), dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	o := func(lower, upper, work string) string {
		return "lowerdir=" + lower + ",upperdir=" + upper + ",workdir=" + work
	}
	cases := []struct {
		name, opts string
		code       int
		want       []string // all in the message
	}{
		{"upper cannot hold xattrs (ramfs)", o(p("l"), ram+"/u", ram+"/w"), 1, []string{`upperdir "` + ram + `/u"`, "xattrs"}},
		{"upper cannot hold whiteouts (inside overlayfs)", o(p("l"), p("ovl/m/up"), p("ovl/m/wk")), 1, []string{`upperdir "` + p("ovl/m/up") + `"`, "whiteouts"}},
		{"upper is a file", o(p("l"), p("file"), p("w")), 1, []string{`upperdir "` + p("file") + `"`, "not a directory"}},
		{"missing upper", o(p("l"), p("nope"), p("w")), 1, []string{`upperdir "` + p("nope") + `"`, "no such file or directory"}},
		{"missing workdir", o(p("l"), p("u"), p("nope")), 1, []string{`workdir "` + p("nope") + `"`, "no such file or directory"}},
		{"upper inside a lower", o(p("l"), p("l/sub"), p("w")), 1, []string{`upperdir "` + p("l/sub") + `"`, "overlap"}},
		{"lower inside the upper", o(p("u/in"), p("u"), p("w")), 1, []string{`lowerdir "` + p("u/in") + `"`, "overlap"}},
		{"lower inside another lower", o(p("l")+":"+p("l/sub"), p("u"), p("w")), 1, []string{`lowerdir "` + p("l/sub") + `"`, "overlap"}},
		{"one lower twice", o(p("l")+":"+p("l"), p("u"), p("w")), 1, []string{`lowerdir "` + p("l") + `"`, "same directory"}},
		{"workdir is the upper", o(p("l"), p("u"), p("u")), 1, []string{`workdir "` + p("u") + `"`, "same directory"}},
		{"workdir inside a lower", o(p("l"), p("u"), p("l/sub")), 1, []string{`workdir "` + p("l/sub") + `"`, "overlap"}},
		{"lower is the upper by a symlink", o(p("alias-of-u"), p("u"), p("w")), 1, []string{"lowerdir", "upperdir", "same directory"}},
		{"empty lower", "lowerdir=," + "upperdir=" + p("u") + ",workdir=" + p("w"), 2, []string{"lowerdir", "empty"}},
	}
	before := dirListing(t, d) + "\n" + dirListing(t, ram)
	for _, tc := range cases {
		code, stderr := runCmd(t, "-o", tc.opts, p("mnt"))
		msg := strings.TrimSpace(stderr)
		first, _, _ := strings.Cut(msg, "\n")
		ok := code == tc.code
		for _, w := range tc.want {
			ok = ok && strings.Contains(first, w)
		}
		if !ok {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q in the first line", tc.name, code, msg, tc.code, tc.want)
		}
		if tc.code == 1 && strings.Contains(msg, "\n") {
			t.Errorf("%s: message is not one line: %q", tc.name, msg)
		}
		if typ := fsType(p("mnt")); typ != "" {
			t.Errorf("%s: refused, but %s is mounted (%s)", tc.name, p("mnt"), typ)
			_ = unix.Unmount(p("mnt"), unix.MNT_DETACH)
		}
		if after := dirListing(t, d) + "\n" + dirListing(t, ram); after != before {
			t.Errorf("%s: a refused mount wrote something:\nbefore:\n%s\nafter:\n%s", tc.name, before, after)
			before = after
		}
	}
	t.Logf("%d refusals checked", len(cases))
}

// TestRefusesUnreadableLower: a user mounting (rootless) a lower it cannot
// read or search, or an upper it cannot write, is refused up front, not
// given a mount that fails later.
func TestRefusesUnreadableLayers(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	bin := userBinary(t)
	d := userTempDir(t)
	p := func(rel string) string { return filepath.Join(d, rel) }
	for _, dir := range []string{"secret", "open", "u", "w", "mnt", "rootu"} {
		if err := os.Mkdir(p(dir), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.WriteFile(p("secret/f"), []byte("root only"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(p("secret"), 0o700); err != nil {
		t.Fatal(err)
	}
	for _, dir := range []string{"open", "u", "w", "mnt"} {
		if err := os.Chown(p(dir), rootlessUID, rootlessGID); err != nil {
			t.Fatal(err)
		}
	}
	cases := []struct{ name, opts, option, path, why string }{
		{"unreadable lower", "lowerdir=" + p("secret") + ",upperdir=" + p("u") + ",workdir=" + p("w"), "lowerdir", p("secret"), "not readable"},
		{"upper not writable", "lowerdir=" + p("open") + ",upperdir=" + p("rootu") + ",workdir=" + p("w"), "upperdir", p("rootu"), "not writable"},
	}
	before := dirListing(t, d)
	for _, tc := range cases {
		cmd := exec.Command(bin, "-o", tc.opts, p("mnt"))
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=/nonexistent"}
		cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{Uid: rootlessUID, Gid: rootlessGID}}
		out, err := cmd.CombinedOutput()
		msg := strings.TrimSpace(string(out))
		if fsType(p("mnt")) != "" {
			t.Errorf("%s: mounted", tc.name)
			_ = exec.Command("fusermount3", "-u", "-z", p("mnt")).Run()
		}
		ee, _ := err.(*exec.ExitError)
		if ee == nil || ee.ExitCode() != 1 || strings.Contains(msg, "\n") ||
			!strings.Contains(msg, tc.option+` "`+tc.path+`"`) || !strings.Contains(msg, tc.why) {
			t.Errorf("%s: %v, output %q; want exit 1 and one line naming %s %q: %s", tc.name, err, msg, tc.option, tc.path, tc.why)
		}
		if after := dirListing(t, d); after != before {
			t.Errorf("%s: a refused mount wrote something:\nbefore:\n%s\nafter:\n%s", tc.name, before, after)
			before = after
		}
	}
}
