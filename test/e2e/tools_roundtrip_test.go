package e2e

// Round trips through real mounts: changes made through unionmount, then
// diff, export, import into an empty upper over the same lowers, and a
// mount that must show the identical tree; and export applied by an
// independent implementation of the OCI layer rules over the lower.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/moby/go-archive"
	"golang.org/x/sys/unix"
)

func TestToolsDiffListsTheChanges(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s, _ := changedStack(t)
	got := strings.Split(strings.TrimSuffix(mustTool(t, "diff", "-o", layersOpt(s)), "\n"), "\n")
	want := toolsDiff()
	sort.Slice(want, func(i, j int) bool { return want[i][2:] < want[j][2:] })
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("diff:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	var js struct{ Changed, Added, Deleted []string }
	if err := json.Unmarshal([]byte(mustTool(t, "diff", "--json", "-o", layersOpt(s))), &js); err != nil {
		t.Fatalf("diff --json: %v", err)
	}
	if n := len(js.Changed) + len(js.Added) + len(js.Deleted); n != len(want) {
		t.Errorf("diff --json: %d paths, want %d", n, len(want))
	}
	if len(js.Deleted) == 0 || js.Deleted[0] != "/dir2/gone" {
		t.Errorf("diff --json deleted = %q, want /dir2/gone first", js.Deleted)
	}
}

func TestToolsExportImportRoundTrip(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s, view := changedStack(t)
	lowersBefore := fingerprint(t, s.lowers...)
	opt := layersOpt(s)
	if out := mustTool(t, "check", "-o", opt); out != "unionmount check: clean\n" {
		t.Errorf("check of an upper the mount wrote: %q, want clean", out)
	}

	// The same upper gives the same bytes: twice, to a file and to stdout,
	// and after a mount that changed nothing.
	layerTar := filepath.Join(s.base, "layer.tar")
	mustTool(t, "export", "-o", opt, "-O", layerTar)
	first, err := os.ReadFile(layerTar)
	if err != nil {
		t.Fatal(err)
	}
	if out := mustTool(t, "export", "-o", opt); out != string(first) {
		t.Errorf("export to stdout differs from export -O (%d and %d bytes)", len(out), len(first))
	}
	unmount(t, mountUnion(t, s.lowers, s.upper, s.work))
	mustTool(t, "export", "-o", opt, "-O", layerTar)
	if again, _ := os.ReadFile(layerTar); !bytes.Equal(again, first) {
		t.Errorf("export after a remount differs (%d and %d bytes)", len(again), len(first))
	}
	checkLayerTar(t, first)

	// Import into a fresh upper over the same lowers: the same tree.
	upper, work := freshUpper(t, s, "imported")
	mustTool(t, "import", "-o", "lowerdir="+strings.Join(s.lowers, ":")+",upperdir="+upper+",workdir="+work, layerTar)
	if left := dirEntries(t, filepath.Join(work, "work")); len(left) != 0 {
		t.Errorf("import left %v in workdir/work", left)
	}
	mnt := mountUnion(t, s.lowers, upper, work)
	sameView(t, "merged view after export and import", "original", view, "imported", snapshot(t, mnt))
	unmount(t, mnt)

	// Exporting the imported upper gives the same layer again: the renamed
	// directory is now an opaque one with its contents, which is how the
	// first export wrote it.
	again := mustTool(t, "export", "-o", "lowerdir="+strings.Join(s.lowers, ":")+",upperdir="+upper)
	if again != string(first) {
		t.Errorf("export of the imported upper differs from the layer imported (%d and %d bytes)", len(again), len(first))
	}

	// A gzip-compressed layer from stdin imports the same.
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write(first)
	zw.Close()
	upper2, work2 := freshUpper(t, s, "imported-gz")
	if r := runTool(t, gz.Bytes(), "import", "-o", "lowerdir="+strings.Join(s.lowers, ":")+",upperdir="+upper2+",workdir="+work2, "-"); r.code != 0 {
		t.Fatalf("import of a gzip layer from stdin: exit %d: %s", r.code, r.stderr)
	}
	mnt = mountUnion(t, s.lowers, upper2, work2)
	sameView(t, "merged view after importing the gzipped layer", "original", view, "imported", snapshot(t, mnt))
	unmount(t, mnt)
	reportDiff(t, "lowers changed", diffFingerprints(lowersBefore, fingerprint(t, s.lowers...)))
}

// checkLayerTar checks the OCI conventions in an exported layer, read with
// archive/tar: whiteouts, the opaque marker, links, xattrs, the sparse file.
func checkLayerTar(t *testing.T, layer []byte) {
	t.Helper()
	tr := tar.NewReader(bytes.NewReader(layer))
	got := map[string]*tar.Header{}
	var names []string
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("exported layer: %v", err)
		}
		if h.Typeflag == tar.TypeReg && h.Name == "sparse" {
			b, _ := io.ReadAll(tr)
			if len(b) != 64<<20 || string(b[40000000:40000004]) != "tail" || bytes.Count(b, []byte{0}) != len(b)-4 {
				t.Errorf("sparse: %d bytes read back, not 64 MiB of zeros with \"tail\" at 40000000", len(b))
			}
		}
		got[h.Name] = h
		names = append(names, h.Name)
	}
	if !sort.StringsAreSorted(names[1:]) || names[0] != "./" {
		t.Errorf("entries not in order, from ./: %q", names)
	}
	for _, want := range []struct{ name, what string }{
		{".wh.dir3", "whiteout"}, {"dir2/.wh.gone", "whiteout"}, {".wh.dir5", "whiteout"}, {".wh.lowerfile2", "whiteout"},
		{"dir4/.wh..wh..opq", "opaque"}, {"dir5moved/.wh..wh..opq", "opaque"},
	} {
		if h := got[want.name]; h == nil || h.Typeflag != tar.TypeReg || h.Size != 0 {
			t.Errorf("%s: want an empty file (%s)", want.name, want.what)
		}
	}
	// "newdir/hardlink" comes first in the tar: the file, then its link.
	if h := got["newfile"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "newdir/hardlink" {
		t.Errorf("newfile: want a hard link to newdir/hardlink, got %+v", h)
	}
	if h := got["dir5moved/w2"]; h == nil || h.Typeflag != tar.TypeLink || h.Linkname != "dir5moved/w" {
		t.Errorf("dir5moved/w2: want a hard link to dir5moved/w, got %+v", h)
	}
	if h := got["newdir/hardlink"]; h == nil || h.PAXRecords["SCHILY.xattr.trusted.secret"] != "s3" {
		t.Errorf("newdir/hardlink: want its xattr as a PAX record")
	}
	for name, h := range got {
		for k := range h.PAXRecords {
			if strings.Contains(k, ".overlay.") {
				t.Errorf("%s: carries overlay's own xattr %s", name, k)
			}
		}
		if !h.AccessTime.IsZero() || !h.ChangeTime.IsZero() || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: atime, ctime or user names recorded: not reproducible", name)
		}
	}
	if len(layer) > 4<<20 {
		t.Errorf("layer is %d bytes: the 64 MiB sparse file was not kept sparse", len(layer))
	}
}

// TestToolsExportAppliedIndependently applies the exported layer over a
// copy of the lower with go-archive (moby's implementation of the layer
// rules, which deletes what .wh. entries name) and with GNU tar, and
// compares with the merged view.
func TestToolsExportAppliedIndependently(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	spec := toolsLayers()
	spec.lowers = spec.lowers[:1] // one lower: a plain copy of it is the tree below
	s := newStack(t, spec)
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	sh(t, mnt, toolsChanges)
	view := snapshot(t, mnt)
	unmount(t, mnt)
	layerTar := filepath.Join(s.base, "layer.tar")
	mustTool(t, "export", "-o", layersOpt(s), "-O", layerTar)

	applied := filepath.Join(s.base, "applied")
	if out, err := exec.Command("cp", "-a", s.lowers[0], applied).CombinedOutput(); err != nil {
		t.Fatalf("cp -a: %v: %s", err, out)
	}
	f, err := os.Open(layerTar)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := archive.ApplyUncompressedLayer(applied, f, &archive.TarOptions{}); err != nil {
		t.Fatalf("go-archive ApplyUncompressedLayer: %v", err)
	}
	got := snapshot(t, applied)
	// go-archive skips a layer's root entry by design, so the root keeps
	// the mtime the whiteouts applied in it gave it.
	root := got["."]
	root.Mtime = view["."].Mtime
	got["."] = root
	sameView(t, "go-archive's application of the export over the lower", "merged view", view, "applied", got)

	// GNU tar reads the sparse entry and the xattrs the same.
	gnu := filepath.Join(s.base, "gnutar")
	if err := os.Mkdir(gnu, 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("tar", "--xattrs", "--xattrs-include=*", "-xpf", layerTar, "-C", gnu).CombinedOutput(); err != nil {
		t.Fatalf("GNU tar -x of the export: %v: %s", err, out)
	}
	g := snapshot(t, gnu)
	for _, p := range []string{"sparse", "newfile", "newdir/deep/deeper/f", "dir1/file_c"} {
		if g[p].Hash != view[p].Hash || g[p].Size != view[p].Size || g[p].Mode != view[p].Mode || fmtXattrs(g[p].Xattrs) != fmtXattrs(view[p].Xattrs) {
			t.Errorf("GNU tar extracted %s as %+v, the mount shows %+v", p, g[p], view[p])
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(gnu, "sparse"), &st); err != nil || st.Blocks*512 > 1<<20 {
		t.Errorf("GNU tar extracted sparse with %d blocks: not sparse (%v)", st.Blocks, err)
	}
}
