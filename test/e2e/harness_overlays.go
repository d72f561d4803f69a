package e2e

// What the real-client tests (rootfs, Podman, rootless) share: the three
// overlay filesystems they run side by side, unionmount, kernel overlayfs
// (the reference) and fuse-overlayfs (the program unionmount means to
// replace), behind one mount call; bind mounts; a table of timings; and the
// check that an upper holds exactly a session's changes.

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// overlayKind names one overlay filesystem.
type overlayKind string

const (
	kindKernel        overlayKind = "kernel"
	kindUnionmount    overlayKind = "unionmount"
	kindFuseOverlayfs overlayKind = "fuse-overlayfs"
)

// overlayKinds lists the filesystems a side-by-side test runs on: kernel
// overlayfs first (the reference), unionmount, then fuse-overlayfs when it
// is installed (an optional dependency: without it its column is left out,
// with a note in the log). fuse-overlayfs is there for the timings only, so
// a test for which it is costly (costly=true) adds it only when E2E_TIMING=1
// (the make targets), not in the CI run.
func overlayKinds(t *testing.T, costly bool) []overlayKind {
	t.Helper()
	kinds := []overlayKind{kindKernel, kindUnionmount}
	if costly && os.Getenv("E2E_TIMING") != "1" {
		return kinds
	}
	if _, err := exec.LookPath("fuse-overlayfs"); err != nil {
		t.Logf("fuse-overlayfs not installed: its timings are left out")
		return kinds
	}
	return append(kinds, kindFuseOverlayfs)
}

// parallelUnlessTiming runs t in parallel with the other tests, unless
// E2E_TIMING=1 (set by the make targets that run one scenario): then it
// runs alone, so that the timings it logs are not disturbed.
func parallelUnlessTiming(t *testing.T) {
	if os.Getenv("E2E_TIMING") != "1" {
		t.Parallel()
	}
}

// mountOverlay mounts lowers (topmost first), upper and work with the given
// filesystem and unmounts in t.Cleanup. Kernel overlayfs gets the harness's
// defaults (see kernelOptions).
func mountOverlay(t *testing.T, kind overlayKind, lowers []string, upper, work string, opts ...string) string {
	t.Helper()
	switch kind {
	case kindKernel:
		return mountKernel(t, lowers, upper, work, opts...)
	case kindUnionmount:
		return mountUnion(t, lowers, upper, work, opts...)
	case kindFuseOverlayfs:
		return mountFuseOverlayfs(t, lowers, upper, work, opts...)
	}
	t.Fatalf("unknown overlay kind %q", kind)
	return ""
}

// mountFuseOverlayfs mounts fuse-overlayfs (which detaches once mounted)
// and registers it with the harness, which unmounts it with fusermount3 -u
// and waits for its daemon to exit.
func mountFuseOverlayfs(t *testing.T, lowers []string, upper, work string, extraOpts ...string) string {
	t.Helper()
	prog, err := exec.LookPath("fuse-overlayfs")
	if err != nil {
		t.Fatalf("fuse-overlayfs not installed: %v", err)
	}
	mnt := filepath.Join(t.TempDir(), "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	mountDetached(t, launch{bin: prog, opts: unionOptions(lowers, upper, work, extraOpts), mnt: mnt})
	return mnt
}

// runWithTimeout runs cmd and kills it if it has not exited after d.
func runWithTimeout(cmd *exec.Cmd, d time.Duration) error {
	if err := cmd.Start(); err != nil {
		return err
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s did not exit within %v", cmd.Path, d)
	}
}

// findProcess finds a process running the executable exe with arg among
// its arguments; 0 if there is none.
func findProcess(exe, arg string) int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return 0
	}
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscanf(e.Name(), "%d", &pid); err != nil {
			continue
		}
		got, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
		if err != nil || strings.TrimSuffix(got, " (deleted)") != exe {
			continue
		}
		cmdline, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", pid))
		if err != nil {
			continue
		}
		for _, a := range strings.Split(string(cmdline), "\x00") {
			if a == arg {
				return pid
			}
		}
	}
	return 0
}

// bindMount binds src (not recursively) at dst and unmounts it in
// t.Cleanup, which runs before the cleanup of any mount made earlier (the
// overlay dst lives in).
func bindMount(t *testing.T, src, dst string) {
	t.Helper()
	if err := unix.Mount(src, dst, "", unix.MS_BIND, ""); err != nil {
		t.Fatalf("mount --bind %s %s: %v", src, dst, err)
	}
	t.Cleanup(func() { unbind(t, dst) })
}

// unbind unmounts a bind mount made by bindMount; doing it again (in
// t.Cleanup) does nothing.
func unbind(t *testing.T, dst string) {
	t.Helper()
	if fsType(dst) == "" {
		return
	}
	deadline := time.Now().Add(unmountTimeout)
	for {
		err := unix.Unmount(dst, 0)
		if err == nil || err == unix.EINVAL {
			return
		}
		if time.Now().After(deadline) {
			t.Errorf("umount %s: %v; detaching lazily", dst, err)
			_ = unix.Unmount(dst, unix.MNT_DETACH)
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// timings collects how long each step took on each filesystem and prints
// them as one table.
type timings struct {
	steps []string
	by    map[string]map[overlayKind]time.Duration
}

func (tm *timings) add(step string, kind overlayKind, d time.Duration) {
	if tm.by == nil {
		tm.by = map[string]map[overlayKind]time.Duration{}
	}
	if tm.by[step] == nil {
		tm.by[step] = map[overlayKind]time.Duration{}
		tm.steps = append(tm.steps, step)
	}
	tm.by[step][kind] += d
}

// time runs fn and adds its duration under step.
func (tm *timings) time(step string, kind overlayKind, fn func()) {
	start := time.Now()
	fn()
	tm.add(step, kind, time.Since(start))
}

// table formats the timings, one row per step, one column per kind, with
// unionmount's ratio to the kernel's.
func (tm *timings) table() string {
	kinds := []overlayKind{kindKernel, kindUnionmount, kindFuseOverlayfs}
	var b strings.Builder
	fmt.Fprintf(&b, "%-34s", "step")
	for _, k := range kinds {
		fmt.Fprintf(&b, " %14s", k)
	}
	fmt.Fprintf(&b, " %10s\n", "um/kernel")
	for _, s := range tm.steps {
		fmt.Fprintf(&b, "%-34s", s)
		for _, k := range kinds {
			if d, ok := tm.by[s][k]; ok {
				fmt.Fprintf(&b, " %13.3fs", d.Seconds())
			} else {
				fmt.Fprintf(&b, " %14s", "-")
			}
		}
		k, u := tm.by[s][kindKernel], tm.by[s][kindUnionmount]
		if k > 0 && u > 0 {
			fmt.Fprintf(&b, " %9.1fx", u.Seconds()/k.Seconds())
		}
		b.WriteByte('\n')
	}
	return b.String()
}

// save writes the timings as JSON to the file E2E_TIMINGS_OUT names, if it
// names one (for make bench: seconds by step, then by filesystem).
func (tm *timings) save(t *testing.T) {
	t.Helper()
	path := os.Getenv("E2E_TIMINGS_OUT")
	if path == "" {
		return
	}
	secs := map[string]map[overlayKind]float64{}
	for s, by := range tm.by {
		secs[s] = map[overlayKind]float64{}
		for k, d := range by {
			secs[s][k] = d.Seconds()
		}
	}
	data, err := json.Marshal(struct {
		Steps   []string                           `json:"steps"`
		Seconds map[string]map[overlayKind]float64 `json:"seconds"`
	}{tm.steps, secs})
	if err == nil {
		err = os.WriteFile(path, data, 0o644)
	}
	if err != nil {
		t.Errorf("E2E_TIMINGS_OUT: %v", err)
	}
}

// upperContents snapshots an upper directory on disk for comparing two
// filesystems' uppers: overlay-private xattrs are dropped (each filesystem
// keeps its own bookkeeping; the format markers that matter, whiteouts,
// opaque and redirect, are compared by rawUpper/diffUppers), and so are the
// data of metadata-only copies (kernel metacopy format: their data is the
// lower's) and the link counts of whiteouts (the kernel links them all to
// one inode).
func upperContents(t *testing.T, upper string) Tree {
	t.Helper()
	out := Tree{}
	for p, n := range snapshot(t, upper) {
		if n.Type == "file" && (hasXattr(n, "trusted.overlay.metacopy") || hasXattr(n, "user.overlay.metacopy")) {
			n.Size, n.Hash = 0, "(metacopy)"
		}
		if n.Type == "chardev" && n.Rdev == "0:0" {
			n.Nlink, n.Links = 0, nil
		}
		out[p] = n
	}
	return withoutPrivateXattrs(out)
}

// alignMetacopies makes a file that one upper holds as a metadata-only copy
// compare equal in data to the other's full copy (the merged views compare
// the data).
func alignMetacopies(a, b Tree) {
	for p, na := range a {
		nb, ok := b[p]
		if !ok || na.Type != "file" || nb.Type != "file" || (na.Hash != "(metacopy)") == (nb.Hash != "(metacopy)") {
			continue
		}
		na.Size, na.Hash, nb.Size, nb.Hash = 0, "(metacopy)", 0, "(metacopy)"
		a[p], b[p] = na, nb
	}
}

func hasXattr(n Node, name string) bool {
	_, ok := n.Xattrs[name]
	return ok
}

// withoutPrivateXattrs drops overlay-private xattrs from a tree.
func withoutPrivateXattrs(tree Tree) Tree {
	out := Tree{}
	for p, n := range tree {
		if len(n.Xattrs) > 0 {
			x := map[string]string{}
			for k, v := range n.Xattrs {
				if !isPrivateXattr(k) {
					x[k] = v
				}
			}
			if len(x) == 0 {
				x = nil
			}
			n.Xattrs = x
		}
		out[p] = n
	}
	return out
}

// upperChanges checks that an upper holds exactly the changes a session
// made: every entry in it is a change of the merged view against the lower
// (new, deleted, different in content or metadata) or a directory that
// leads to one; and every change of the merged view against the lower is
// recorded in the upper. lower and merged are snapshots of the lower and of
// the merged view; upper is the upper directory on disk, unmounted.
func upperChanges(t *testing.T, lower, merged Tree, upper string) []string {
	t.Helper()
	raw := rawUpper(t, upper)
	var out []string
	hasChild := map[string]bool{}
	for p := range raw {
		for d := filepath.Dir(p); ; d = filepath.Dir(d) {
			hasChild[d] = true
			if d == "." || d == "/" {
				break
			}
		}
	}
	for _, p := range sortedKeys(raw) {
		if p == "." {
			continue
		}
		r := raw[p]
		ln, inLower := lower[p]
		mn, inMerged := merged[p]
		switch {
		case r.Whiteout:
			if !inLower {
				out = append(out, fmt.Sprintf("upper %s: whiteout of a name the lower does not have", p))
			}
			if inMerged {
				out = append(out, fmt.Sprintf("upper %s: whiteout but the merged view shows %s", p, describe(mn)))
			}
		case !inMerged:
			out = append(out, fmt.Sprintf("upper %s: %s on disk but not in the merged view", p, r.Type))
		case !inLower || r.Opaque != "" || r.Redirect != "":
		case r.Type == "dir" && hasChild[p]:
		default:
			if d := diffTrees("lower", Tree{p: ln}, "merged", Tree{p: mn}, diffOpts{}); len(d) == 0 {
				out = append(out, fmt.Sprintf("upper %s: copied up (%s) but unchanged from the lower", p, describe(mn)))
			}
		}
	}
	// Every change is in the upper, at its path or at a directory above it
	// that replaces the lower's (opaque, redirected, or new).
	recorded := func(p string) bool {
		for q := p; q != "."; q = filepath.Dir(q) {
			if r, ok := raw[q]; ok && (q == p || r.Opaque != "" || r.Redirect != "" || r.Whiteout) {
				return true
			}
			if _, ok := raw[q]; ok {
				if _, inLower := lower[q]; !inLower {
					return true
				}
			}
		}
		return false
	}
	for _, p := range allKeys(lower, merged) {
		if p == "." {
			continue
		}
		ln, inLower := lower[p]
		mn, inMerged := merged[p]
		changed := inLower != inMerged
		if inLower && inMerged {
			ln.DirNlink, mn.DirNlink = 0, 0
			changed = len(diffTrees("lower", Tree{p: ln}, "merged", Tree{p: mn}, diffOpts{})) > 0
		}
		if changed && !recorded(p) {
			out = append(out, fmt.Sprintf("%s: changed in the merged view but not recorded in the upper", p))
		}
	}
	sort.Strings(out)
	return out
}
