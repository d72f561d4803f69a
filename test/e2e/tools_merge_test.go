package e2e

// merge: the merged view, written into a new directory, must equal what the
// mount shows byte for byte; a failed merge leaves nothing behind.

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestToolsMergeEqualsMergedView(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s, _ := changedStack(t)
	// A socket in a lower: merge keeps special files a tar cannot hold.
	ln, err := net.Listen("unix", filepath.Join(s.lowers[1], "sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	if err := unix.Setxattr(filepath.Join(s.lowers[1], "base1"), "security.capability", capNetRaw, 0); err != nil {
		t.Fatal(err)
	}
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	view := snapshot(t, mnt)
	unmount(t, mnt)
	if view["sock"].Type != "socket" || view["base1"].Xattrs["security.capability"] == "" {
		t.Fatalf("the mount does not show the socket or the capability: %+v %+v", view["sock"], view["base1"])
	}

	dest := filepath.Join(s.base, "merged")
	r := runTool(t, nil, "merge", "-o", layersOpt(s), dest)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("merge: exit %d: %s", r.code, r.stderr)
	}
	merged := snapshot(t, dest)
	sameView(t, "merge output against the merged view", "mount", view, "merge", merged)
	if merged["keep/k"].Nlink != 2 || merged["newfile"].Nlink != 2 {
		t.Errorf("hard links not kept: keep/k nlink %d, newfile nlink %d", merged["keep/k"].Nlink, merged["newfile"].Nlink)
	}
	var st unix.Stat_t
	if err := unix.Lstat(filepath.Join(dest, "sparse"), &st); err != nil || st.Blocks*512 > 1<<20 {
		t.Errorf("merged sparse file has %d blocks: not sparse (%v)", st.Blocks, err)
	}
	if names := dirEntries(t, s.base); strings.Contains(strings.Join(names, " "), ".merge-") {
		t.Errorf("merge left a temporary beside the destination: %v", names)
	}

	// The merged view of the lowers alone: a read-only union, squashed.
	dest2 := filepath.Join(s.base, "lowers-only")
	if err := os.Mkdir(dest2, 0o755); err != nil { // an empty directory is replaced
		t.Fatal(err)
	}
	mustTool(t, "merge", "-o", "lowerdir="+strings.Join(s.lowers, ":"), dest2)
	ro := mountUnion(t, s.lowers, "", "")
	sameView(t, "merge of the lowers alone", "mount", snapshot(t, ro), "merge", snapshot(t, dest2))
}

// capNetRaw is a security.capability value (VFS_CAP_REVISION_2,
// cap_net_raw permitted and effective).
var capNetRaw = []byte{0, 0, 0, 2, 0, 32, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}

func TestToolsMergeLeavesNothingOnFailure(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("a", "a"), File("b/c", "c")}}})
	// A metadata-only copy whose data (in a lower) is missing: merge fails
	// on it after it has begun writing.
	makeLayer(t, s.upper, File("z", "").WithXattr("trusted.overlay.metacopy", ""))
	before := dirListing(t, s.base)
	dest := filepath.Join(s.base, "dest")
	r := runTool(t, nil, "merge", "-o", layersOpt(s), dest)
	if r.code != 1 || !strings.Contains(r.stderr, "z") || strings.Count(r.stderr, "\n") != 1 {
		t.Errorf("merge over a metacopy file without data: exit %d, stderr %q; want 1 and one line naming z", r.code, r.stderr)
	}
	if r := runTool(t, nil, "check", "-o", layersOpt(s)); r.code != 1 || !strings.Contains(r.stdout, filepath.Join(s.upper, "z")+": ") || !strings.Contains(r.stdout, "[metacopy]") {
		t.Errorf("check of a metacopy file without data: exit %d, %q", r.code, r.stdout)
	}
	if after := dirListing(t, s.base); after != before {
		t.Errorf("a failed merge left something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	// Refusals name what is wrong and write nothing.
	if err := os.MkdirAll(filepath.Join(s.base, "full", "x"), 0o755); err != nil {
		t.Fatal(err)
	}
	before = dirListing(t, s.base)
	for _, tc := range []struct {
		dest, want string
	}{
		{filepath.Join(s.upper, "out"), "is inside upperdir"},
		{filepath.Join(s.lowers[0], "out"), "is inside lowerdir"},
		{filepath.Join(s.base, "full"), "exists and is not an empty directory"},
		{filepath.Join(s.base, "nodir", "out"), "no such file or directory"},
	} {
		r := runTool(t, nil, "merge", "-o", layersOpt(s), tc.dest)
		if r.code != 1 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("merge to %s: exit %d, %q; want exit 1 and %q", tc.dest, r.code, r.stderr, tc.want)
		}
	}
	if after := dirListing(t, s.base); after != before {
		t.Errorf("a refused merge wrote something:\nbefore:\n%s\nafter:\n%s", before, after)
	}
}
