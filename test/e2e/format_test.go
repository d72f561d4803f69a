package e2e

// Read-only unions, the on-disk formats unionmount reads beyond the kernel's,
// private xattrs, faithful copy-up and racing copy-ups.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"golang.org/x/sys/unix"
)

// checkOps runs ops on one mount; each must give its expected result.
func checkOps(t *testing.T, who, mnt string, ops []op) {
	t.Helper()
	c := &opCtx{mnt: mnt}
	defer c.closeAll()
	for i, o := range ops {
		r := runOp(c, o)
		if o.want == "" {
			t.Fatalf("op %d %s has no expected result", i, o.name)
		}
		if r.String() != o.want {
			t.Errorf("%s: op %d %s: got %s, want %s", who, i, o.name, r, o.want)
		}
	}
}

func TestReadOnlyUnionEROFS(t *testing.T) {
	t.Parallel()
	erofs := func(o op) op { return expect(o, "EROFS") }
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{
			noUpper: true,
			lowers: [][]Entry{
				{
					Dir("d"),
					File("d/top", "top"),
					Whiteout("d/gone"),
					OpaqueDir("o"),
					File("o/shown", "shown"),
					File("f", "f").WithXattr("user.x", "1"),
				},
				{
					Dir("d"),
					File("d/gone", "whited out by the lower above"),
					File("d/bottom", "bottom"),
					Dir("o"),
					File("o/hidden", "hidden by the opaque dir above"),
					Dir("e"),
				},
			},
		},
		ops: []op{
			expect(opReaddir("d"), `ok, "bottom top"`),
			expect(opReaddir("o"), `ok, "shown"`),
			expect(opRead("d/bottom"), `ok, "bottom"`),
			expect(opStat("d/gone"), "ENOENT"),
			erofs(opCreate("x", "x", 0o644)),
			erofs(opCreate("d/x", "x", 0o644)),
			erofs(opMkdir("n", 0o755)),
			erofs(opMknod("p", unix.S_IFIFO|0o644, 0, 0)),
			erofs(opSymlink("f", "s")),
			erofs(opUnlink("d/top")),
			erofs(opRmdir("e")),
			erofs(opRename("f", "g")),
			erofs(opLink("f", "g")),
			erofs(opChmod("f", 0o600)),
			erofs(opLchown("f", 1, 1)),
			erofs(opUtimes("f", layerTime, layerTime)),
			erofs(opSetxattr("f", "user.y", "2")),
			erofs(opRemovexattr("f", "user.x")),
			erofs(opTruncate("f", 0)),
			erofs(opOpenClose("f", wr)),
			erofs(opOpenClose("f", rdwr)),
			erofs(opOpenClose("f", rdonly|trunc)),
			expect(opRead("f"), `ok, "f"`),
		},
	})
}

func TestWhiteoutFormatsInLower(t *testing.T) {
	t.Parallel()
	requireMountable(t)
	if selftestKernel {
		t.Skip("kernel overlayfs shows .wh. files as plain files (SPEC §3): not differential")
	}
	s := &side{name: "unionmount", stack: newStack(t, stackSpec{lowers: [][]Entry{
		{
			Dir("d"),
			File("d/.wh.a", ""),
			File("d/.wh.sub", ""),
			File("d/keep", "keep"),
			Dir("x"),
			File("x/.wh..wh..opq", ""),
			File("x/r", "r"),
		},
		{
			Dir("d"),
			File("d/a", "hidden by .wh.a"),
			Dir("d/sub"),
			File("d/sub/z", "hidden with its directory"),
			File("d/keep2", "keep2"),
			Dir("x"),
			File("x/p", "hidden by the opaque marker"),
			Dir("x/q"),
		},
	}})}
	s.mnt = mountUnion(t, s.lowers, s.upper, s.work)
	checkOps(t, s.name, s.mnt, []op{
		expect(opReaddir("d"), `ok, "keep keep2"`),
		expect(opReaddir("x"), `ok, "r"`),
		expect(opStat("d/a"), "ENOENT"),
		expect(opStat("d/sub"), "ENOENT"),
		expect(opStat("d/sub/z"), "ENOENT"),
		expect(opStat("d/.wh.a"), "ENOENT"),
		expect(opStat("x/.wh..wh..opq"), "ENOENT"),
		expect(opStat("x/p"), "ENOENT"),
		expect(opStat("x/q"), "ENOENT"),
		// A new directory where a .wh. whiteout stands must hide what
		// the whiteout hid: it is opaque, in the kernel's format.
		expect(opMkdir("d/sub", 0o755), "ok"),
		expect(opReaddir("d/sub"), "ok"),
		expect(opCreate("d/a", "new a", 0o644), "ok"),
		expect(opRead("d/a"), `ok, "new a"`),
		expect(opReaddir("d"), `ok, "a keep keep2 sub"`),
	})
	checkGetdents(t, s, "d")
	checkGetdents(t, s, "x")
	s.unmount(t)
	wantOpaque(t, s, "d/sub")
	wantUpperContent(t, s, "d/a", []byte("new a"))
	for _, p := range upperFiles(t, s) {
		if strings.Contains(p, ".wh.") {
			t.Errorf("upper/%s: unionmount wrote a .wh. name; it must write the kernel's format only", p)
		}
	}
}

func TestPrivateXattrsHidden(t *testing.T) {
	t.Parallel()
	requireMountable(t)
	if selftestKernel {
		t.Skip("kernel overlayfs >= 6.7 lets root set escaped trusted.overlay.* xattrs; unionmount must not (SPEC §3)")
	}
	s := &side{name: "unionmount", stack: newStack(t, stackSpec{
		lowers: [][]Entry{{
			Dir("o"),
			File("o/hidden", "hidden"),
			Dir("r"),
			File("r/f", "f"),
			Dir("q"),
			File("q/x", "x"),
			File("plain", "plain"),
		}},
		upper: []Entry{
			OpaqueDir("o"),
			File("o/shown", "shown"),
			Dir("moved").WithXattr(xattrRedirect, "r"),
			Whiteout("r"),
		},
	})}
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	checkOps(t, s.name, mnt, []op{
		expect(opReaddir("o"), `ok, "shown"`),
		expect(opReaddir("moved"), `ok, "f"`),
		expect(opStat("r"), "ENOENT"),
		expect(opRename("q", "q2"), "ok"),
		expect(opUnlink("plain"), "ok"),
		expect(opMkdir("plain", 0o755), "ok"),
		expect(opListxattr("o"), "ok"),
		expect(opListxattr("moved"), "ok"),
		expect(opListxattr("q2"), "ok"),
		expect(opListxattr("plain"), "ok"),
		expect(opGetxattr("o", xattrOpaque), "ENODATA"),
		expect(opGetxattr("moved", xattrRedirect), "ENODATA"),
	})
	reportDiff(t, "overlay-private xattrs shown through the mount", privateXattrPaths(snapshot(t, mnt)))
	// Setting or removing one must fail, whatever the errno.
	c := &opCtx{mnt: mnt}
	for _, o := range []op{
		opSetxattr("o/shown", xattrOpaque, "y"),
		opSetxattr("q2", xattrRedirect, "/o"),
		opSetxattr("o/shown", "trusted.overlay.anything", "1"),
		opRemovexattr("o", xattrOpaque),
		opRemovexattr("moved", xattrRedirect),
	} {
		if r := runOp(c, o); r.err == "ok" {
			t.Errorf("%s: succeeded; overlay-private xattrs must not be settable through the mount", o.name)
		} else {
			t.Logf("%s: %s", o.name, r.err)
		}
	}
	checkOps(t, s.name, mnt, []op{
		expect(opReaddir("o"), `ok, "shown"`),
		expect(opReaddir("moved"), `ok, "f"`),
	})
	unmount(t, mnt)
	wantOpaque(t, s, "o")
	if v := overlayXattr(filepath.Join(s.upper, "moved"), "redirect"); v != "r" {
		t.Errorf("upper/moved: redirect %q, want \"r\"", v)
	}
	for _, p := range []string{"o/shown", "q2"} {
		x, err := listXattrs(filepath.Join(s.upper, p))
		if err != nil {
			t.Fatal(err)
		}
		for name := range x {
			if strings.HasPrefix(name, "trusted.overlay.overlay.") || (p == "o/shown" && isPrivateXattr(name)) {
				t.Errorf("upper/%s: has %s after refused sets", p, name)
			}
		}
	}
}

func TestCopyUpPreservesMetadata(t *testing.T) {
	t.Parallel()
	sameOnBoth(t, diffCase{
		stackSpec: stackSpec{lowers: [][]Entry{{
			File("f", "content").WithMode(0o4755).WithOwner(1000, 2000).WithXattr("user.a", "1").WithXattr("trusted.b", "2"),
			Dir("d").WithMode(0o2775).WithOwner(3, 4).WithXattr("user.d", "x"),
			File("d/g", "g").WithMode(0o1644).WithOwner(5, 6),
			Symlink("l", "f").WithOwner(7, 8).WithXattr("trusted.s", "3"),
			Fifo("p").WithMode(0o640).WithOwner(9, 10),
			CharDev("c", 1, 7).WithMode(0o600).WithXattr("trusted.c", "4"),
		}}},
		ops: []op{
			// Copy-ups that change no metadata: then upper must carry
			// exactly the lower's.
			opOpenClose("f", wr),
			opOpenClose("d/g", rdwr),
			opLchown("l", 7, 8),
			opChmod("p", 0o640),
			opChmod("c", 0o600),
			opStat("f"),
			opStat("d"),
			opStat("l"),
			opStat("c"),
		},
		onDisk: func(t *testing.T, s *side) {
			for _, p := range []string{"f", "d", "d/g", "l", "p", "c"} {
				wantCopiedUpLike(t, s, p, 0, true)
			}
			wantUpperContent(t, s, "f", []byte("content"))
		},
	})
	t.Run("sparse", testSparseCopyUp)
}

// testSparseCopyUp: a 100 MiB file with one written block stays sparse when
// copied up.
func testSparseCopyUp(t *testing.T) {
	const size, off = 100 << 20, 50 << 20
	block := strings.Repeat("x", 4096)
	bothFilesystems(t, stackSpec{lowers: [][]Entry{{SparseFile("sparse", size, off, block)}}}, func(t *testing.T, s *side) {
		s.mount(t, nil)
		f, err := os.OpenFile(filepath.Join(s.mnt, "sparse"), os.O_WRONLY, 0)
		if err != nil {
			t.Fatal(err)
		}
		// A change of the data (truncating to the same size) copies it up;
		// opening for writing alone may copy the metadata only.
		if err := f.Truncate(size); err != nil {
			t.Fatal(err)
		}
		if err := f.Close(); err != nil {
			t.Fatal(err)
		}
		s.unmount(t)
		lo, _ := lstatPath(filepath.Join(s.lowers[0], "sparse"))
		up, ok := upperStat(t, s, "sparse")
		if !ok {
			return
		}
		if up.Size != size {
			t.Errorf("%s: upper/sparse: size %d, want %d", s.name, up.Size, size)
		}
		// Kernel overlayfs copies in 1 MiB chunks and skips only holes
		// that span whole chunks, so it allocates 1 MiB here. Allow 2 MiB:
		// a copy that filled the holes would take 100 MiB.
		if up.Blocks*512 > lo.Blocks*512+2<<20 {
			t.Errorf("%s: upper/sparse: %d blocks of 512 bytes, lower has %d: the copy-up filled the holes", s.name, up.Blocks, lo.Blocks)
		}
		g, err := os.Open(filepath.Join(s.upper, "sparse"))
		if err != nil {
			t.Fatal(err)
		}
		defer g.Close()
		buf := make([]byte, 8192)
		if _, err := g.ReadAt(buf, off-4096); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(buf[:4096], make([]byte, 4096)) || string(buf[4096:]) != block {
			t.Errorf("%s: upper/sparse: wrong data around offset %d", s.name, off)
		}
	})
}

func TestConcurrentCopyUpOnce(t *testing.T) {
	t.Parallel()
	const (
		files   = 4
		writers = 24
		readers = 8
		stride  = 4096
	)
	data := pattern(writers * stride)
	var entries []Entry
	for i := 0; i < files; i++ {
		entries = append(entries, File(fmt.Sprintf("f%d", i), string(data)).WithMode(0o640))
	}
	entries = append(entries, File("untouched", "u"))
	bothFilesystems(t, stackSpec{lowers: [][]Entry{entries}}, func(t *testing.T, s *side) {
		s.mount(t, nil)
		want := append([]byte(nil), data...)
		for w := 0; w < writers; w++ {
			want[w*stride+7] = byte('A' + w)
		}
		for i := 0; i < files; i++ {
			p := filepath.Join(s.mnt, fmt.Sprintf("f%d", i))
			start := make(chan struct{})
			var wg sync.WaitGroup
			errs := make(chan error, writers+readers)
			for w := 0; w < writers; w++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					f, err := os.OpenFile(p, os.O_RDWR, 0)
					if err != nil {
						errs <- err
						return
					}
					if _, err := f.WriteAt([]byte{byte('A' + w)}, int64(w*stride+7)); err != nil {
						errs <- err
					}
					if err := f.Close(); err != nil {
						errs <- err
					}
				}()
			}
			for r := 0; r < readers; r++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					<-start
					b, err := os.ReadFile(p)
					if err != nil {
						errs <- err
					} else if len(b) != len(data) {
						errs <- fmt.Errorf("reader saw %d bytes, want %d", len(b), len(data))
					}
				}()
			}
			close(start)
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Errorf("%s: f%d: %v", s.name, i, err)
			}
			got, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("%s: f%d: content after concurrent copy-up and writes is wrong (a write was lost to a second copy-up?): %s",
					s.name, i, firstDiff(got, want))
			}
		}
		s.unmount(t)
		var wantUpper []string
		for i := 0; i < files; i++ {
			name := fmt.Sprintf("f%d", i)
			wantUpper = append(wantUpper, name)
			wantUpperContent(t, s, name, want)
			wantMode(t, s, name, 0o640)
		}
		if got := upperFiles(t, s); strings.Join(got, " ") != strings.Join(wantUpper, " ") {
			t.Errorf("%s: upper holds %v, want %v", s.name, got, wantUpper)
		}
		checkWorkEmpty(t, s)
	})
}

func firstDiff(got, want []byte) string {
	if len(got) != len(want) {
		return fmt.Sprintf("length %d, want %d", len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			return fmt.Sprintf("first difference at offset %d: %q, want %q", i, got[i], want[i])
		}
	}
	return "equal"
}
