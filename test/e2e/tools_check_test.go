package e2e

// check: each kind of problem, crafted in an upper and workdir, is found
// with its path; --repair fixes the safe ones without changing what the
// mount shows (but for the conversions of foreign whiteouts, whose effect
// is the one their writer meant); a live mount stops every tool.

import (
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// brokenStack is an upper with one of each problem check knows.
func brokenStack(t *testing.T) *stack {
	t.Helper()
	s := newStack(t, stackSpec{
		lowers: [][]Entry{{
			File("keep", "k"),
			File("opq/x", "x"),
			Dir("shadow"), File("shadow/s", "s"),
			File("old", "o"),
			File("fo/y", "y"),
			File("aufs/z", "z"),
			File("ns/n", "n"),
		}},
		upper: []Entry{
			Whiteout("ghost"),                   // nothing named ghost below
			OpaqueDir("opq"), Whiteout("opq/x"), // below an opaque dir
			File("file1", "1").WithXattr(xattrOpaque, "y"),
			// On a regular file a redirect is kernel overlayfs's (a
			// metacopy renamed or linked): only elsewhere is it misplaced.
			Fifo("file2").WithMode(0o644).WithXattr(xattrRedirect, "/keep"),
			Dir("weird").WithXattr(xattrOpaque, "n"),
			Dir("moved").WithXattr(xattrRedirect, "/gone"),
			Dir("shadow").WithXattr(xattrRedirect, "/gone2"), File("shadow/mine", "m"),
			File(".wh.old", ""),
			Dir("fo").WithXattr("user.fuseoverlayfs.opaque", "y"),
			File("aufs/.wh..wh..opq", ""),
			Dir("ns").WithXattr("user.overlay.opaque", "y"),
		},
	})
	for _, p := range []string{"work/#1", "work/#2/inner"} {
		if err := os.MkdirAll(filepath.Join(s.work, filepath.Dir(p)), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(s.work, p), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// wantProblems are the problems brokenStack has: kind and path.
func wantProblems(s *stack) []string {
	up := func(p string) string { return filepath.Join(s.upper, p) }
	return []string{
		"leftover " + filepath.Join(s.work, "work/#1"),
		"leftover " + filepath.Join(s.work, "work/#2"),
		"whiteout-hides-nothing " + up("ghost"),
		"whiteout-hides-nothing " + up("opq/x"),
		"opaque-misplaced " + up("file1"),
		"redirect-misplaced " + up("file2"),
		"opaque-misplaced " + up("weird"),
		"redirect-dangling " + up("moved"),
		"redirect-dangling " + up("shadow"),
		"foreign-whiteout " + up(".wh.old"),
		"foreign-whiteout " + up("fo"),
		"foreign-whiteout " + up("aufs"),
		"xattr-namespace " + up("ns"),
	}
}

// problems parses check's output into "kind path" lines, sorted.
func problems(out string) []string {
	var got []string
	for _, line := range strings.Split(strings.TrimSpace(out), "\n") {
		if strings.HasPrefix(line, "unionmount check:") || line == "" {
			continue
		}
		path, rest, _ := strings.Cut(line, ": ")
		i, j := strings.LastIndex(rest, "["), strings.LastIndex(rest, "]")
		if i < 0 || j < i {
			got = append(got, "unparsed: "+line)
			continue
		}
		got = append(got, rest[i+1:j]+" "+path)
	}
	sort.Strings(got)
	return got
}

func TestToolsCheckFindsAndRepairs(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := brokenStack(t)
	want := wantProblems(s)
	sort.Strings(want)
	lowersBefore := fingerprint(t, s.lowers...)
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	before := snapshot(t, mnt)
	unmount(t, mnt)
	// The mount cleared workdir/work: leave the crash's leftovers again.
	for _, p := range []string{"work/#1", "work/#2/inner"} {
		os.MkdirAll(filepath.Join(s.work, filepath.Dir(p)), 0o700)
		if err := os.WriteFile(filepath.Join(s.work, p), []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	// A stale lock: held by this test process, which is no unionmount.
	lock, err := unix.Open(s.work, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Flock(lock, unix.LOCK_EX); err != nil {
		t.Fatal(err)
	}
	withLock := append([]string{"stale-lock " + s.work}, want...)
	sort.Strings(withLock)

	rawBefore, workBefore := rawUpper(t, s.upper), dirListing(t, s.work)
	r := runTool(t, nil, "check", "-o", layersOpt(s))
	if r.code != 1 {
		t.Errorf("check: exit %d, want 1\n%s%s", r.code, r.stdout, r.stderr)
	}
	if got := problems(r.stdout); strings.Join(got, "\n") != strings.Join(withLock, "\n") {
		t.Errorf("check found:\n  %s\nwant:\n  %s", strings.Join(got, "\n  "), strings.Join(withLock, "\n  "))
	}
	if !strings.Contains(r.stdout, "pid "+strconv.Itoa(os.Getpid())) {
		t.Errorf("the stale lock's report does not name its holder, pid %d:\n%s", os.Getpid(), r.stdout)
	}
	reportDiff(t, "check without --repair changed the upper", diffUppers("before", rawBefore, "after", rawUpper(t, s.upper), s))
	if after := dirListing(t, s.work); after != workBefore {
		t.Errorf("check without --repair changed the workdir:\n%s\nthen:\n%s", workBefore, after)
	}

	r = runTool(t, nil, "check", "--repair", "-o", layersOpt(s))
	if r.code != 1 {
		t.Errorf("check --repair with unrepairable problems: exit %d, want 1\n%s", r.code, r.stdout)
	}
	for _, line := range strings.Split(r.stdout, "\n") {
		repairable := !strings.Contains(line, "[stale-lock]") && !strings.Contains(line, "[xattr-namespace]") && strings.Contains(line, "[")
		if repairable != strings.Contains(line, "; repaired: ") {
			t.Errorf("check --repair: %q: want a repair for exactly the safe kinds", line)
		}
	}
	unix.Close(lock)

	// What is left: only what is never repaired.
	r = runTool(t, nil, "check", "-o", layersOpt(s))
	if got := problems(r.stdout); r.code != 1 || strings.Join(got, " ") != "xattr-namespace "+filepath.Join(s.upper, "ns") {
		t.Errorf("check after --repair: exit %d, %q; want only the xattr-namespace problem", r.code, got)
	}
	if err := unix.Removexattr(filepath.Join(s.upper, "ns"), "user.overlay.opaque"); err != nil {
		t.Fatal(err)
	}
	if out := mustTool(t, "check", "-o", layersOpt(s)); out != "unionmount check: clean\n" {
		t.Errorf("check of the repaired upper: %q, want clean", out)
	}
	if n := dirEntries(t, filepath.Join(s.work, "work")); len(n) != 0 {
		t.Errorf("leftovers still in workdir/work: %v", n)
	}

	// The repairs kept the merged view, but where a foreign whiteout now
	// hides what its writer meant it to.
	mnt = mountUnion(t, s.lowers, s.upper, s.work)
	after := snapshot(t, mnt)
	for _, p := range []string{"old", "fo/y", "aufs/z", ".wh.old", "aufs/.wh..wh..opq"} {
		if _, ok := after[p]; ok {
			t.Errorf("%s still shows after --repair converted the foreign whiteout", p)
		}
		delete(before, p)
	}
	for _, p := range []string{"fo", "ns"} { // markers converted, or removed above
		b := before[p]
		b.Xattrs = nil
		before[p] = b
	}
	sameView(t, "merged view before and after check --repair", "before", before, "after", after)
	unmount(t, mnt)
	reportDiff(t, "lowers changed", diffFingerprints(lowersBefore, fingerprint(t, s.lowers...)))
}

func TestToolsRefuseALiveUnion(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{File("a", "a")}}})
	mountUnion(t, s.lowers, s.upper, s.work)
	opt := layersOpt(s)
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"check", "-o", opt}, 2},
		{[]string{"check", "--repair", "-o", opt}, 2},
		{[]string{"diff", "-o", opt}, 1},
		{[]string{"export", "-o", opt, "-O", filepath.Join(s.base, "l.tar")}, 1},
		{[]string{"merge", "-o", opt, filepath.Join(s.base, "m")}, 1},
	} {
		r := runTool(t, nil, tc.args...)
		if r.code != tc.code || !strings.Contains(r.stderr, "in use by a mounted union (unionmount pid") || strings.Count(r.stderr, "\n") != 1 {
			t.Errorf("%s on a mounted union: exit %d, %q; want exit %d and one line saying it is in use", tc.args[0], r.code, r.stderr, tc.code)
		}
	}
	for _, p := range []string{"l.tar", "m"} {
		if _, err := os.Lstat(filepath.Join(s.base, p)); err == nil {
			t.Errorf("a refused tool wrote %s", p)
		}
	}
}

// TestCheckCleanOnKernelUppers (issue 14 item 3): an upper kernel
// overlayfs wrote with index=off, userxattr, index=on or metacopy=on is
// clean to check (the kernel's shared whiteout in work/, the redirects it
// leaves on regular files linked or renamed while metadata-only copies),
// and check --repair changes nothing the union shows: the kernel's merged
// view and unionmount's are the same before and after it.
func TestCheckCleanOnKernelUppers(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	// h1 and h2 are one lower inode; f and d are renamed; gone and tree
	// are removed, tree made again.
	spec := stackSpec{lowers: [][]Entry{{
		File("h1", "one\n"), Hardlink("h2", "h1"), File("f", "f\n"), File("gone", "g\n"),
		Dir("d"), File("d/x", "x\n"), Dir("tree"), File("tree/y", "y\n"),
	}}}
	for _, opts := range [][]string{{"index=off"}, {"userxattr", "redirect_dir=nofollow"}, {"index=on"}, {"metacopy=on", "index=off"}, {"metacopy=on", "index=on"}} {
		// No '=' or ',' in the test's name: its temporary directories
		// go into the mount options.
		t.Run(strings.NewReplacer("=", "-", ",", "_").Replace(strings.Join(opts, "_")), func(t *testing.T) {
			s := newStack(t, spec)
			script := "rm gone && rm -r tree && mkdir tree && echo new > tree/z && ln h1 h3 && chown 5 h2 && echo z >> h2 && echo w >> h3 && mv f g"
			userxattr := opts[0] == "userxattr"
			if !userxattr {
				script += " && mv d e" // a redirect (the kernel follows none with userxattr)
			}
			// The view before is taken from the session that wrote the
			// upper: a new kernel mount clears workdir/work.
			k := mountKernel(t, s.lowers, s.upper, s.work, opts...)
			sh(t, k, script)
			kBefore := snapshot(t, k)
			unmount(t, k)
			toolOpts := layersOpt(s)
			// unionmount reads the upper read-only (as the topmost lower),
			// so that it does not clear workdir/work, where the kernel
			// keeps its whiteout.
			unionOpts := []string{"ro"}
			if userxattr {
				toolOpts += ",userxattr"
				unionOpts = append(unionOpts, "userxattr")
			}
			unionView := func() Tree {
				u := mountUnion(t, s.lowers, s.upper, s.work, unionOpts...)
				defer unmount(t, u)
				return snapshot(t, u)
			}
			uBefore := unionView()
			// With index=on the kernel keeps its whiteout in workdir/index.
			if n := dirEntries(t, filepath.Join(s.work, "work")); !slices.Contains(opts, "index=on") && len(n) == 0 {
				t.Errorf("no whiteout of the kernel's in workdir/work: the test tests nothing there")
			}
			if r := runTool(t, nil, "check", "-o", toolOpts); r.code != 0 || r.stdout != "unionmount check: clean\n" {
				t.Errorf("check of the kernel's upper: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			if r := runTool(t, nil, "check", "--repair", "-o", toolOpts); r.code != 0 || strings.Contains(r.stdout, "repaired") {
				t.Errorf("check --repair of the kernel's upper: exit %d\n%s%s", r.code, r.stdout, r.stderr)
			}
			k = mountKernel(t, s.lowers, s.upper, s.work, opts...)
			kAfter := snapshot(t, k)
			unmount(t, k)
			uAfter := unionView()
			sameView(t, "kernel overlayfs's view before and after check --repair", "before", kBefore, "after", kAfter)
			sameView(t, "unionmount's view before and after check --repair", "before", uBefore, "after", uAfter)
		})
	}
}
