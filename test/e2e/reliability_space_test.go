package e2e

// A full, over-quota or read-only upper (issue 6): operations that need
// room fail with ENOSPC, EDQUOT or EROFS, the merged view and the upper
// keep no trace of them (no partial copy, no temporary in workdir/work),
// the daemon lives on, and after room is made (or the upper is writable
// again) the same operations work.

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// spaceCase is one operation that must fail with want and change nothing.
type spaceCase struct {
	name string
	op   func(mnt string) error
	want unix.Errno
	// after, if set, checks the result once the operation was retried
	// with room.
	after func(t *testing.T, mnt string)
	// touched is a file whose mtime and ctime a failed write may set, as
	// on ext4 (a write updates them before it runs out of room).
	touched string
}

// spaceLower is the lower the full-disk tests use: more data than the
// upper can hold.
func spaceLower(t *testing.T, dir string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{
		"big":          bytes.Repeat([]byte("B"), 20<<20),
		"mid1":         bytes.Repeat([]byte("1"), 4<<20),
		"mid2":         bytes.Repeat([]byte("2"), 4<<20),
		"h1":           bytes.Repeat([]byte("h"), 4<<20),
		"s0":           []byte("small zero\n"),
		"s1":           []byte("small one\n"),
		"s2":           []byte("small two\n"),
		"deep/a/b/c/f": []byte("deep\n"),
		"rmd/x":        []byte("x\n"),
	}
	for p, b := range files {
		full := filepath.Join(dir, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "emptydir"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(filepath.Join(dir, "h1"), filepath.Join(dir, "h2")); err != nil {
		t.Fatal(err)
	}
	return files
}

func pwriteAt(p string, b []byte, off int64) error {
	f, err := os.OpenFile(p, os.O_WRONLY, 0)
	if err != nil {
		return err
	}
	_, err = f.WriteAt(b, off)
	return errors.Join(err, f.Close())
}

func appendTo(p string, b []byte) error {
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// fill writes to a new file until the filesystem says want; it returns the
// file's path.
func fillUp(t *testing.T, mnt, name string, want unix.Errno) string {
	t.Helper()
	p := filepath.Join(mnt, name)
	f, err := os.Create(p)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	chunk := bytes.Repeat([]byte("f"), 1<<20)
	for i := 0; i < 1024; i++ {
		if _, err := f.Write(chunk); err != nil {
			if !errors.Is(err, want) {
				t.Fatalf("filling %s: %v, want %v", name, err, want)
			}
			return p
		}
	}
	t.Fatalf("wrote 1 GiB to %s without %v", name, want)
	return p
}

// runSpaceCases runs each case: the error, an unchanged view and upper,
// nothing left in workdir/work. It returns how many failed as wanted.
func runSpaceCases(t *testing.T, mnt, upper, work string, cases []spaceCase, ignore string) int {
	t.Helper()
	n := 0
	for _, c := range cases {
		before, beforeUp := snapshot(t, mnt), snapshot(t, upper)
		usedBefore := usedBytes(t, upper)
		err := c.op(mnt)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, err, c.want)
		} else {
			n++
		}
		after, afterUp := snapshot(t, mnt), snapshot(t, upper)
		for _, tree := range []Tree{before, after, beforeUp, afterUp} {
			delete(tree, ignore)
			if n, ok := tree[c.touched]; ok && c.touched != "" {
				n.Mtime = time.Time{}
				tree[c.touched] = n
			}
		}
		if d := diffTrees("before", before, "after", after, diffOpts{}); len(d) > 0 {
			t.Errorf("%s: the failed operation changed the merged view:\n  %s", c.name, strings.Join(d, "\n  "))
		}
		if d := diffTrees("before", beforeUp, "after", afterUp, diffOpts{}); len(d) > 0 {
			// Parent directories copied up before the failure are
			// complete copies (the view above shows no change); say so.
			t.Logf("%s: upper after the failure (view unchanged):\n  %s", c.name, strings.Join(d, "\n  "))
		}
		if kept := usedBytes(t, upper) - usedBefore; kept > 64<<10 {
			t.Errorf("%s: the failed operation kept %d KiB of the upper's space", c.name, kept>>10)
		}
		if left := dirEntries(t, filepath.Join(work, "work")); len(left) > 0 {
			t.Errorf("%s: workdir/work holds %v after the failure", c.name, left)
		}
	}
	return n
}

// usedBytes is the space in use on the filesystem holding dir.
func usedBytes(t *testing.T, dir string) int64 {
	t.Helper()
	var sfs unix.Statfs_t
	if err := unix.Statfs(dir, &sfs); err != nil {
		t.Fatal(err)
	}
	return int64(sfs.Blocks-sfs.Bfree) * sfs.Bsize
}

// retrySpaceCases runs each case again, now with room: it must work.
func retrySpaceCases(t *testing.T, mnt string, cases []spaceCase) {
	t.Helper()
	for _, c := range cases {
		if err := c.op(mnt); err != nil {
			t.Errorf("%s, with room again: %v", c.name, err)
			continue
		}
		if c.after != nil {
			c.after(t, mnt)
		}
	}
}

func wantContent(t *testing.T, p string, want []byte) {
	t.Helper()
	got, err := os.ReadFile(p)
	if err != nil {
		t.Errorf("%s: %v", p, err)
		return
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s: %s, want %d bytes", p, describeData(got, want), len(want))
	}
}

// blockCases are the operations that need data blocks the full upper
// does not have.
func blockCases(lower map[string][]byte, errno unix.Errno) []spaceCase {
	tail := []byte("+tail")
	return []spaceCase{
		{"append to a lower file (full copy-up)", func(m string) error { return appendTo(filepath.Join(m, "mid1"), tail) }, errno,
			func(t *testing.T, m string) {
				wantContent(t, filepath.Join(m, "mid1"), append(append([]byte(nil), lower["mid1"]...), tail...))
			}, "mid1"},
		{"write to a metadata-only copy (completing it)", func(m string) error { return appendTo(filepath.Join(m, "mid2"), tail) }, errno,
			func(t *testing.T, m string) {
				wantContent(t, filepath.Join(m, "mid2"), append(append([]byte(nil), lower["mid2"]...), tail...))
				if fi, err := os.Stat(filepath.Join(m, "mid2")); err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("mid2 after the retried write: %v %v, want mode 0600", fi, err)
				}
			}, "mid2"},
		{"rename of a lower file (copy-up)", func(m string) error { return os.Rename(filepath.Join(m, "mid1"), filepath.Join(m, "mid1-moved")) }, errno,
			func(t *testing.T, m string) {
				wantContent(t, filepath.Join(m, "mid1-moved"), append(append([]byte(nil), lower["mid1"]...), tail...))
				if _, err := os.Lstat(filepath.Join(m, "mid1")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("mid1 still there after the rename: %v", err)
				}
			}, ""},
		{"hard link of a lower hard-linked file (index copy-up)", func(m string) error { return os.Link(filepath.Join(m, "h1"), filepath.Join(m, "h3")) }, errno,
			func(t *testing.T, m string) {
				var st unix.Stat_t
				if err := unix.Stat(filepath.Join(m, "h2"), &st); err != nil || st.Nlink != 3 {
					t.Errorf("h2 after link h1 h3: nlink %d (%v), want 3", st.Nlink, err)
				}
				wantContent(t, filepath.Join(m, "h3"), lower["h1"])
			}, ""},
		{"write a new block of a file made through the mount", func(m string) error { return pwriteAt(filepath.Join(m, "mine"), []byte("n"), 1<<20) }, errno,
			func(t *testing.T, m string) {
				want := make([]byte, 1<<20+1)
				copy(want, "mine\n")
				want[1<<20] = 'n'
				wantContent(t, filepath.Join(m, "mine"), want)
			}, "mine"},
	}
}

func TestFullUpperENOSPC(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	fsdir := mountScratch(t, "tmpfs", "size=16m,mode=0755")
	base := t.TempDir()
	lowerDir, mnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	upper, work := filepath.Join(fsdir, "upper"), filepath.Join(fsdir, "work")
	for _, d := range []string{lowerDir, mnt, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lower := spaceLower(t, lowerDir)
	guardLowers(t, lowerDir)
	opts := unionOptions([]string{lowerDir}, upper, work, nil)
	d := startDaemon(t, binPath, mnt, opts)
	cases := 0

	// A file bigger than the whole upper: its copy-up cannot fit even on
	// an empty upper.
	n := runSpaceCases(t, mnt, upper, work, []spaceCase{
		{"append to a 20 MiB lower file on a 16 MiB upper", func(m string) error { return appendTo(filepath.Join(m, "big"), []byte("x")) }, unix.ENOSPC, nil, "big"},
	}, "")
	cases += n
	// Metadata-only copies need no data blocks; truncate copies only
	// what is kept.
	if err := os.Chmod(filepath.Join(mnt, "mid2"), 0o600); err != nil {
		t.Fatalf("chmod of a lower file (metadata only) on an upper with room: %v", err)
	}
	if err := os.Truncate(filepath.Join(mnt, "big"), 1<<20); err != nil {
		t.Errorf("truncate of the 20 MiB lower file to 1 MiB (copies 1 MiB): %v", err)
	}
	wantContent(t, filepath.Join(mnt, "big"), lower["big"][:1<<20])

	// Fill the upper, then everything that needs a block must fail.
	if err := os.WriteFile(filepath.Join(mnt, "mine"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fill := fillUp(t, mnt, "fill", unix.ENOSPC)
	cases++
	bc := blockCases(lower, unix.ENOSPC)
	cases += runSpaceCases(t, mnt, upper, work, bc, "fill")
	if !d.alive() {
		t.Fatal("the daemon died")
	}
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	retrySpaceCases(t, mnt, bc)
	d.stop()
	wantCheckClean(t, opts)

	// No inodes left: whiteouts, metadata-only copies and directories
	// cannot be made.
	fsdir2 := mountScratch(t, "tmpfs", "size=16m,nr_inodes=40,mode=0755")
	upper2, work2 := filepath.Join(fsdir2, "upper"), filepath.Join(fsdir2, "work")
	for _, dir := range []string{upper2, work2} {
		if err := os.Mkdir(dir, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	opts2 := unionOptions([]string{lowerDir}, upper2, work2, nil)
	d = startDaemon(t, binPath, mnt, opts2)
	var fillers []string
	for i := 0; ; i++ {
		p := filepath.Join(mnt, fmt.Sprintf("inode%d", i))
		if err := os.WriteFile(p, nil, 0o644); err != nil {
			if !errors.Is(err, unix.ENOSPC) {
				t.Fatalf("using up inodes: %v", err)
			}
			break
		}
		fillers = append(fillers, p)
		if i > 100 {
			t.Fatal("nr_inodes=40 did not run out")
		}
	}
	cases++
	ic := []spaceCase{
		{"unlink of a lower file (whiteout)", func(m string) error { return os.Remove(filepath.Join(m, "s1")) }, unix.ENOSPC,
			func(t *testing.T, m string) {
				if _, err := os.Lstat(filepath.Join(m, "s1")); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("s1 after unlink: %v", err)
				}
			}, ""},
		{"rmdir of a lower directory (whiteout)", func(m string) error { return os.Remove(filepath.Join(m, "emptydir")) }, unix.ENOSPC, nil, ""},
		{"chmod of a lower file (metadata-only copy)", func(m string) error { return os.Chmod(filepath.Join(m, "s2"), 0o600) }, unix.ENOSPC, nil, ""},
		{"mkdir deep in lower directories", func(m string) error { return os.Mkdir(filepath.Join(m, "deep/a/b/c/new"), 0o755) }, unix.ENOSPC, nil, ""},
		{"symlink", func(m string) error { return os.Symlink("s0", filepath.Join(m, "newlink")) }, unix.ENOSPC, nil, ""},
		{"rename of a lower directory (redirect)", func(m string) error { return os.Rename(filepath.Join(m, "rmd"), filepath.Join(m, "rmd2")) }, unix.ENOSPC,
			func(t *testing.T, m string) { wantContent(t, filepath.Join(m, "rmd2/x"), lower["rmd/x"]) }, ""},
	}
	cases += runSpaceCases(t, mnt, upper2, work2, ic, "")
	for _, p := range fillers {
		if err := os.Remove(p); err != nil {
			t.Fatal(err)
		}
	}
	retrySpaceCases(t, mnt, ic)
	d.stop()
	wantCheckClean(t, opts2)
	t.Logf("%d ENOSPC cases, each failing cleanly and working again with room", cases)
}

func TestReadOnlyUpperEROFS(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	fsdir := mountScratch(t, "tmpfs", "size=64m,mode=0755")
	base := t.TempDir()
	lowerDir, mnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	upper, work := filepath.Join(fsdir, "upper"), filepath.Join(fsdir, "work")
	for _, d := range []string{lowerDir, mnt, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lower := spaceLower(t, lowerDir)
	guardLowers(t, lowerDir)
	opts := unionOptions([]string{lowerDir}, upper, work, nil)
	d := startDaemon(t, binPath, mnt, opts)
	if err := os.Chmod(filepath.Join(mnt, "mid2"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "mine"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	remount := func(flags uintptr) {
		t.Helper()
		// EBUSY while a descriptor open for writing is still being
		// released (FUSE releases files asynchronously).
		deadline := time.Now().Add(10 * time.Second)
		for {
			err := unix.Mount("", fsdir, "", unix.MS_REMOUNT|flags, "")
			if err == nil {
				return
			}
			if !errors.Is(err, unix.EBUSY) || time.Now().After(deadline) {
				t.Fatalf("remount %s (flags %#x): %v; daemon descriptors:\n%s", fsdir, flags, err, strings.Join(fdTargets(d.pid()), "\n"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	remount(unix.MS_RDONLY)
	t.Cleanup(func() { _ = unix.Mount("", fsdir, "", unix.MS_REMOUNT, "") })
	cases := append(blockCases(lower, unix.EROFS),
		spaceCase{"unlink of a lower file", func(m string) error { return os.Remove(filepath.Join(m, "s1")) }, unix.EROFS, nil, ""},
		spaceCase{"chmod of a lower file", func(m string) error { return os.Chmod(filepath.Join(m, "s2"), 0o600) }, unix.EROFS, nil, ""},
		spaceCase{"mkdir", func(m string) error { return os.Mkdir(filepath.Join(m, "deep/a/b/c/new"), 0o755) }, unix.EROFS, nil, ""},
		spaceCase{"setxattr", func(m string) error { return unix.Setxattr(filepath.Join(m, "s0"), "user.x", []byte("1"), 0) }, unix.EROFS, nil, ""},
	)
	n := runSpaceCases(t, mnt, upper, work, cases, "")
	// Reading works meanwhile.
	wantContent(t, filepath.Join(mnt, "s0"), lower["s0"])
	wantContent(t, filepath.Join(mnt, "mid2"), lower["mid2"])
	remount(0)
	retrySpaceCases(t, mnt, cases)
	d.stop()
	wantCheckClean(t, opts)
	t.Logf("%d EROFS cases, each failing cleanly and working again once the upper is writable", n)
}

// TestOverQuotaEDQUOT: the upper is a btrfs subvolume with a qgroup limit
// (btrfs applies it to root too; ext4 and tmpfs quotas are not built into
// this kernel, and root ignores them anyway).
func TestOverQuotaEDQUOT(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	fsdir := mountImage(t, 512<<20, "btrfs", "mkfs.btrfs", "-q", "-f")
	sub := filepath.Join(fsdir, "sub")
	for _, args := range [][]string{
		{"quota", "enable", fsdir},
		{"subvolume", "create", sub},
		{"qgroup", "limit", "16M", sub},
	} {
		if out, err := exec.Command("btrfs", args...).CombinedOutput(); err != nil {
			t.Fatalf("btrfs %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	base := t.TempDir()
	lowerDir, mnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	upper, work := filepath.Join(sub, "upper"), filepath.Join(sub, "work")
	for _, d := range []string{lowerDir, mnt, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lower := spaceLower(t, lowerDir)
	guardLowers(t, lowerDir)
	opts := unionOptions([]string{lowerDir}, upper, work, nil)
	d := startDaemon(t, binPath, mnt, opts)
	cases := runSpaceCases(t, mnt, upper, work, []spaceCase{
		{"append to a 20 MiB lower file over a 16 MiB quota", func(m string) error { return appendTo(filepath.Join(m, "big"), []byte("x")) }, unix.EDQUOT, nil, "big"},
	}, "")
	if err := os.Chmod(filepath.Join(mnt, "mid2"), 0o600); err != nil {
		t.Errorf("chmod of a lower file (metadata only) under the quota, after a failed copy-up: %v", err)
	}
	if err := os.WriteFile(filepath.Join(mnt, "mine"), []byte("mine\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	fill := fillUp(t, mnt, "fill", unix.EDQUOT)
	cases++
	bc := blockCases(lower, unix.EDQUOT)
	cases += runSpaceCases(t, mnt, upper, work, bc, "fill")
	if err := os.Remove(fill); err != nil {
		t.Fatal(err)
	}
	// btrfs gives freed space back to the qgroup when the transaction
	// commits.
	if out, err := exec.Command("btrfs", "filesystem", "sync", fsdir).CombinedOutput(); err != nil {
		t.Fatalf("btrfs filesystem sync: %v\n%s", err, out)
	}
	retrySpaceCases(t, mnt, bc)
	d.stop()
	wantCheckClean(t, opts)
	t.Logf("%d EDQUOT cases, each failing cleanly and working again under the quota", cases)
}

// TestCopyUpNearlyFullUpper: a copy-up that runs out of room part way
// through its last chunk must fail with ENOSPC, never complete with the
// missing tail as zeros. The upper is left with a little less room than
// the file needs, by a shortfall of one page up to most of a chunk; the
// copy-up is made by appending (data copy, or completing a metadata-only
// copy) and by a hard link of a lower hard-linked file (index copy).
func TestCopyUpNearlyFullUpper(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	base := t.TempDir()
	lowerDir, mnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	if err := os.Mkdir(lowerDir, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	data := make([]byte, 5<<20)
	for i := range data {
		data[i] = byte('a' + i%26)
	}
	for _, n := range []string{"f", "h"} {
		if err := os.WriteFile(filepath.Join(lowerDir, n), data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Link(filepath.Join(lowerDir, "h"), filepath.Join(lowerDir, "h2")); err != nil {
		t.Fatal(err)
	}
	guardLowers(t, lowerDir)
	for _, shortfall := range []int64{4 << 10, 64 << 10, 700 << 10} {
		for _, how := range []string{"append", "append metacopy=off", "link"} {
			name := fmt.Sprintf("%s, %d KiB short", how, shortfall>>10)
			fsdir := mountScratch(t, "tmpfs", "size=16m,mode=0755")
			upper, work := filepath.Join(fsdir, "upper"), filepath.Join(fsdir, "work")
			for _, d := range []string{upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			var extra []string
			if how == "append metacopy=off" {
				extra = []string{"metacopy=off"}
			}
			opts := unionOptions([]string{lowerDir}, upper, work, extra)
			d := startDaemon(t, binPath, mnt, opts)
			// Leave len(data)-shortfall bytes free.
			var sfs unix.Statfs_t
			if err := unix.Statfs(fsdir, &sfs); err != nil {
				t.Fatal(err)
			}
			free := int64(sfs.Bavail) * sfs.Bsize
			fill := make([]byte, free-(int64(len(data))-shortfall))
			if err := os.WriteFile(filepath.Join(fsdir, "fill"), fill, 0o644); err != nil {
				t.Fatalf("%s: filling: %v", name, err)
			}
			var err error
			var check string
			switch how {
			case "link":
				err = os.Link(filepath.Join(mnt, "h"), filepath.Join(mnt, "h3"))
				check = "h3"
			default:
				err = appendTo(filepath.Join(mnt, "f"), []byte("!"))
				check = "f"
			}
			got, rerr := os.ReadFile(filepath.Join(mnt, check))
			switch {
			case err == nil && rerr == nil && !bytes.Equal(got[:min(len(got), len(data))], data):
				t.Errorf("%s: the copy-up succeeded but %s lost data: %s", name, check, describeData(got, data))
			case err != nil && !errors.Is(err, unix.ENOSPC):
				t.Errorf("%s: %v, want ENOSPC", name, err)
			case err != nil && how != "link" && (rerr != nil || !bytes.Equal(got, data)):
				t.Errorf("%s: failed (%v) but f now reads %s (%v), want the lower data", name, err, describeData(got, data), rerr)
			}
			t.Logf("%s: %v", name, err)
			d.stop()
			unmountScratch(t, fsdir)
		}
	}
}
