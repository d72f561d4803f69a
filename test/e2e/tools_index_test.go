package e2e

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestToolsSeeIndexedHardLinks: after one name of a lower file with several
// is written, the other names show the new data through the index without
// being in upper. diff reports them, and export writes them (as links to
// the copy), so the imported layer gives the same view.
func TestToolsSeeIndexedHardLinks(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{
		Dir("d"),
		File("d/a", "old"),
		Hardlink("b", "d/a"),
		Dir("e"),
		Hardlink("e/c", "d/a"),
	}}})
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	sh(t, mnt, "echo new >> d/a")
	view := snapshot(t, mnt)
	unmount(t, mnt)

	if got, want := strings.TrimSpace(mustTool(t, "diff", "-o", layersOpt(s))), "C /b\nC /d/a\nC /e/c"; got != want {
		t.Errorf("diff:\n%s\nwant:\n%s", got, want)
	}
	tarPath := filepath.Join(s.base, "layer.tar")
	mustTool(t, "export", "-o", layersOpt(s), "-O", tarPath)
	upper, work := freshUpper(t, s, "imported")
	mustTool(t, "import", "-o", unionOptions(s.lowers, upper, work, nil), tarPath)
	imnt := mountUnion(t, s.lowers, upper, work)
	sameView(t, "imported layer vs the changed union", "imported", snapshot(t, imnt), "original", view)
}
