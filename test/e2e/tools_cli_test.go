package e2e

// The tools' command line: refusals are one line naming what is wrong, with
// exit 2 for a bad command line and 1 for bad input, and leave nothing
// written; progress is drawn only when asked or on a terminal.

import (
	"archive/tar"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// layerOf builds a tar from headers (regular files get body "x").
func layerOf(t *testing.T, hdrs ...*tar.Header) []byte {
	t.Helper()
	var b bytes.Buffer
	tw := tar.NewWriter(&b)
	for _, h := range hdrs {
		if h.Typeflag == tar.TypeReg {
			h.Size = 1
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write([]byte("x"))
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func TestToolsRefuseBadInput(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("a", "a")}}, upper: []Entry{File("u", "u")}})
	opt := layersOpt(s)
	newUpper := filepath.Join(s.base, "new")
	importOpt := "upperdir=" + newUpper + ",workdir=" + s.work
	write := func(name string, b []byte) string {
		p := filepath.Join(s.base, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	garbage := write("garbage.tar", bytes.Repeat([]byte("not a tar "), 100))
	escape := write("escape.tar", layerOf(t, &tar.Header{Name: "ok", Typeflag: tar.TypeReg}, &tar.Header{Name: "../evil", Typeflag: tar.TypeReg}))
	badLink := write("link.tar", layerOf(t, &tar.Header{Name: "l", Typeflag: tar.TypeLink, Linkname: "nowhere"}))
	good := write("good.tar", layerOf(t, &tar.Header{Name: "f", Typeflag: tar.TypeReg, Mode: 0o644}))
	before := dirListing(t, s.base)
	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"import into a non-empty upper", []string{"import", "-o", "upperdir=" + s.upper, good}, 1, "is not empty"},
		{"import of a non-tar", []string{"import", "-o", importOpt, garbage}, 1, "layer: "},
		{"import climbing out", []string{"import", "-o", importOpt, escape}, 1, `"../evil" leaves the layer`},
		{"import of a link to nothing", []string{"import", "-o", importOpt, badLink}, 1, "hard link l to nowhere"},
		{"import of a missing file", []string{"import", "-o", importOpt, filepath.Join(s.base, "nope.tar")}, 1, "no such file"},
		{"import without upperdir", []string{"import", "-o", "lowerdir=" + s.lowers[0], good}, 2, "upperdir is required"},
		{"export -O into the upper", []string{"export", "-o", opt, "-O", filepath.Join(s.upper, "l.tar")}, 1, "is inside upperdir"},
		{"export without lowerdir", []string{"export", "-o", "upperdir=" + s.upper}, 2, "lowerdir is required"},
		{"export with an unknown flag", []string{"export", "-o", opt, "--frobnicate"}, 2, "frobnicate"},
		{"export with an unknown option", []string{"export", "-o", opt + ",frobnicate"}, 2, `unknown option "frobnicate"`},
		{"diff with a missing lower", []string{"diff", "-o", "lowerdir=" + s.base + "/gone,upperdir=" + s.upper}, 1, `lowerdir "` + s.base + `/gone": no such file or directory`},
		{"check without upperdir", []string{"check", "-o", "lowerdir=" + s.lowers[0]}, 2, "upperdir is required"},
		{"check of overlapping layers", []string{"check", "-o", "lowerdir=" + s.upper + ",upperdir=" + s.upper}, 2, "same directory"},
		{"merge without DEST", []string{"merge", "-o", opt}, 2, "want one DEST"},
	} {
		r := runTool(t, nil, tc.args...)
		first, _, _ := strings.Cut(r.stderr, "\n")
		if r.code != tc.code || !strings.Contains(first, tc.want) || !strings.HasPrefix(first, "unionmount "+tc.args[0]+": ") {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and a line with %q", tc.name, r.code, r.stderr, tc.code, tc.want)
		}
		if tc.code == 1 && strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s: message is not one line: %q", tc.name, r.stderr)
		}
	}
	if after := dirListing(t, s.base); after != before {
		t.Errorf("refused tools wrote something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if r := runTool(t, nil, "diff", "--help"); r.code != 0 || !strings.Contains(r.stdout, "usage: unionmount diff") {
		t.Errorf("diff --help: exit %d, %q", r.code, r.stdout)
	}
}

func TestToolsProgress(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("a", "a")}}, upper: []Entry{File("u", strings.Repeat("u", 100000)), Dir("d"), File("d/f", "f")}})
	out := filepath.Join(s.base, "l.tar")
	// Not a terminal: quiet.
	if r := runTool(t, nil, "export", "-o", layersOpt(s), "-O", out); r.code != 0 || r.stderr != "" {
		t.Errorf("export to a pipe: exit %d, stderr %q; want 0 and nothing", r.code, r.stderr)
	}
	// Asked for: a bar that ends at 100%, with the counts and a rate.
	r := runTool(t, nil, "export", "--progress", "-o", layersOpt(s), "-O", out)
	last := r.stderr[strings.LastIndex(r.stderr, "\r")+1:]
	for _, want := range []string{"export", "100%", "4/4 files", "97.7 KiB/97.7 KiB", "/s", "\n"} {
		if r.code != 0 || !strings.Contains(last, want) {
			t.Errorf("export --progress: exit %d, last line %q; want %q in it", r.code, last, want)
		}
	}
	dest := filepath.Join(s.base, "m")
	if r := runTool(t, nil, "merge", "--progress", "-o", layersOpt(s), dest); r.code != 0 || !strings.Contains(r.stderr, "100%") {
		t.Errorf("merge --progress: exit %d, %q", r.code, r.stderr)
	}
}
