package e2e

// Interoperability: layers written by one filesystem read by the other
// (SPEC §3), and stacks of three lowers with the kernel's markers inside.

import (
	"testing"
	"time"
)

// interopSpec is a stack with something of every kind to change.
func interopSpec() stackSpec {
	return stackSpec{lowers: [][]Entry{
		{
			Dir("etc").WithMode(0o755),
			File("etc/conf", "key=value\n").WithMode(0o644).WithXattr("user.origin", "lower"),
			File("etc/passwd", "root:x:0:0\n"),
			Dir("var/lib/app"),
			File("var/lib/app/state", "state"),
			Dir("var/cache"),
			File("var/cache/a", "a"),
			File("var/cache/b", "b"),
			Dir("opt/tool/bin"),
			File("opt/tool/bin/run", "#!/bin/sh\n").WithMode(0o755),
			Dir("opt/tool/share"),
			File("opt/tool/share/doc", "doc"),
			Symlink("opt/current", "tool"),
			File("hard1", "linked"),
			Hardlink("hard2", "hard1"),
			File("bin/suid", "suid").WithMode(0o4755),
			Fifo("run/fifo"),
		},
		{
			Dir("etc"),
			File("etc/old", "from the bottom layer"),
			Dir("var/cache"),
			File("var/cache/c", "c"),
			Dir("opt/tool/share"),
			File("opt/tool/share/man", "man"),
		},
	}}
}

// interopOps change the stack in every way that leaves a mark on disk:
// copy-ups, whiteouts, an opaque directory, renamed lower directories
// (redirects), new objects of every type, metadata changes.
func interopOps() []op {
	t1 := time.Date(2015, 5, 5, 5, 5, 5, 5, time.UTC)
	return []op{
		opWrite("etc/conf", wr|appnd, -1, "more=1\n"),
		opChmod("etc/passwd", 0o600),
		opSetxattr("etc/passwd", "user.tag", "x"),
		opUnlink("etc/old"),
		opUnlink("var/cache/a"),
		opUnlink("var/cache/b"),
		opUnlink("var/cache/c"),
		opRmdir("var/cache"),
		opMkdir("var/cache", 0o700),
		opCreate("var/cache/fresh", "fresh", 0o644),
		opRename("opt/tool", "opt/tool2"),
		opRename("opt/tool2/share", "share-moved"),
		opSymlink("tool2", "opt/current2"),
		opUnlink("opt/current"),
		opLink("etc/conf", "conf-link"),
		opMknod("run/fifo2", 0o010644, 0, 0),
		opLchown("bin/suid", 1, 1),
		opUtimes("var/lib/app/state", t1, t1),
		expect(opMkdir("new/deep/dir", 0o755), "ENOENT"),
		opMkdir("new", 0o755),
		opMkdir("new/deep", 0o755),
		opCreate("new/deep/file", "new", 0o600),
		opTruncate("var/lib/app/state", 2),
	}
}

// mustOps runs ops on one mount; each must succeed unless it says
// otherwise with expect.
func mustOps(t *testing.T, who, mnt string, ops []op) {
	t.Helper()
	c := &opCtx{mnt: mnt}
	defer c.closeAll()
	for i, o := range ops {
		r := runOp(c, o)
		want := o.want
		if want == "" {
			want = "ok"
		}
		if r.err != want && r.String() != want {
			t.Errorf("%s: op %d %s: got %s, want %s", who, i, o.name, r, want)
		}
	}
}

func TestInteropUnionmountThenKernel(t *testing.T) {
	t.Parallel()
	requireMountable(t)
	s := &side{name: "unionmount", stack: newStack(t, interopSpec())}
	s.mount(t, nil)
	mustOps(t, s.name, s.mnt, interopOps())
	ours := snapshot(t, s.mnt)
	s.unmount(t)
	checkWorkEmpty(t, s)

	k := mountKernel(t, s.lowers, s.upper, s.work, crossKernelOpts(nil)...)
	kern := snapshot(t, k)
	// The same files on disk: every mtime must match exactly.
	reportDiff(t, "unionmount's view vs kernel overlayfs's view of the same layers",
		diffTrees("unionmount", ours, "kernel", kern, diffOpts{}))
	unmount(t, k)

	s.mount(t, nil)
	reportDiff(t, "unionmount's view before vs after the kernel mounted the layers",
		diffTrees("before", ours, "after", snapshot(t, s.mnt), diffOpts{}))
	s.unmount(t)
}

func TestInteropKernelThenUnionmount(t *testing.T) {
	t.Parallel()
	requireMountable(t)
	s := &side{name: "kernel", stack: newStack(t, interopSpec())}
	k := mountKernel(t, s.lowers, s.upper, s.work)
	mustOps(t, "kernel", k, interopOps())
	kern := snapshot(t, k)
	unmount(t, k)

	u := mountUnion(t, s.lowers, s.upper, s.work)
	ours := snapshot(t, u)
	reportDiff(t, "kernel overlayfs's view vs unionmount's view of the same layers",
		diffTrees("kernel", kern, "unionmount", ours, diffOpts{}))
	reportDiff(t, "overlay-private xattrs shown by unionmount", privateXattrPaths(ours))
	// And unionmount can go on changing what the kernel wrote.
	mustOps(t, "unionmount", u, []op{
		opWrite("etc/conf", wr|appnd, -1, "again\n"),
		opRename("opt/tool2", "opt/tool3"),
		opRename("share-moved", "opt/tool3/share"),
		opUnlink("conf-link"),
		opUnlink("new/deep/file"),
		opRmdir("new/deep"),
	})
	after := snapshot(t, u)
	unmount(t, u)
	checkWorkEmpty(t, &side{name: "unionmount", stack: s.stack})

	k2 := mountKernel(t, s.lowers, s.upper, s.work, crossKernelOpts(nil)...)
	reportDiff(t, "unionmount's view vs the kernel's after unionmount changed the kernel's layers",
		diffTrees("unionmount", after, "kernel", snapshot(t, k2), diffOpts{}))
}

func TestThreeLowerLayers(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{
			{ // top
				Dir("d"),
				File("d/top", "top"),
				File("d/shadow", "top wins"),
				Dir("o"),
				File("o/from-top", "above the opaque dir: visible"),
			},
			{ // middle: whiteouts and an opaque dir, the kernel's way
				Dir("d"),
				Whiteout("d/gone"),
				Whiteout("d/gonedir"),
				File("d/shadow", "middle"),
				File("d/mid", "mid"),
				OpaqueDir("o"),
				File("o/from-middle", "mid"),
				Whiteout("w"),
			},
			{ // bottom
				Dir("d"),
				File("d/gone", "whited out in the middle"),
				Dir("d/gonedir"),
				File("d/gonedir/x", "x"),
				File("d/shadow", "bottom"),
				File("d/bottom", "bottom"),
				Dir("o"),
				File("o/from-bottom", "hidden by the opaque middle dir"),
				Dir("w"),
				File("w/hidden", "hidden"),
			},
		}},
		ops: []op{
			expect(opReaddir("d"), `ok, "bottom mid shadow top"`),
			expect(opReaddir("o"), `ok, "from-middle from-top"`),
			expect(opRead("d/shadow"), `ok, "top wins"`),
			expect(opStat("d/gone"), "ENOENT"),
			expect(opStat("w"), "ENOENT"),
			opWrite("d/bottom", wr|appnd, -1, "+"),
			opUnlink("d/mid"),
			opMkdir("d/gonedir", 0o755),
			opReaddir("d/gonedir"),
			opMkdir("w", 0o755),
			opReaddir("w"),
			opRename("o", "o2"),
			opReaddir("o2"),
			opUnlink("o2/from-top"),
			opUnlink("o2/from-middle"),
			opRmdir("o2"),
			opReaddir("."),
		},
		mounted: func(t *testing.T, s *side) {
			checkGetdents(t, s, "d")
		},
	})
}
