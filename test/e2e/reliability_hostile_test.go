package e2e

// Hostile trees (issue 6): layers holding symlinks that point outside
// (/etc/passwd, ../../.., a canary directory), symlinked parent
// directories, redirect and metacopy xattrs that point out of the layer or
// through a symlink, a workdir whose work/ is a symlink, names with
// newlines and of 255 bytes. Every operation through the mount must stay
// inside the layers: a canary directory outside, /etc/passwd and
// /etc/shadow and the lowers are fingerprinted before and compared after.
// And a race: while copy-ups run in an upper directory, that directory is
// swapped (on the upper, behind the daemon's back) for a symlink to the
// canary or to the lower; nothing outside the upper may change.

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// canary makes a directory outside every layer with a few files, and
// checks in t.Cleanup that neither it nor /etc/passwd and /etc/shadow
// changed.
func canary(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "canary")
	for _, f := range []string{"file", "sub/deep", "f0", "f1"} {
		p := filepath.Join(dir, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("canary "+f+"\n"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	guardDirs(t, "the canary directory outside the layers", dir)
	for _, f := range []string{"/etc/passwd", "/etc/shadow"} {
		before := fingerprintFile(t, f)
		t.Cleanup(func() {
			if after := fingerprintFile(t, f); after != before {
				t.Errorf("%s changed:\n  before: %s\n  after:  %s", f, before, after)
			}
		})
	}
	return dir
}

func fingerprintFile(t *testing.T, p string) string {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Lstat(p, &st); err != nil {
		return err.Error()
	}
	h, err := hashFileNoatime(p)
	if err != nil {
		return err.Error()
	}
	return fmt.Sprintf("mode=%o uid=%d size=%d mtime=%d ctime=%d.%d hash=%s", st.Mode, st.Uid, st.Size, st.Mtim.Sec, st.Ctim.Sec, st.Ctim.Nsec, h)
}

func TestHostileTrees(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	can := canary(t)
	long := strings.Repeat("x", 255)
	s := newStack(t, stackSpec{
		lowers: [][]Entry{
			{
				Symlink("evil", "/etc/passwd"),
				Symlink("shadow", "/etc/shadow"),
				Symlink("up", "../../../../../../.."),
				Symlink("canlink", can),
				Dir("realdir"), File("realdir/mine", "mine\n"),
				Symlink("etclink", "/etc"),
				File("nl\nname", "newline\n"),
				File(long, "long\n"),
				File("meta-target", "lower data\n"),
				Symlink("metasym", "/etc/shadow"),
				Dir("r"), File("r/x", "x\n"),
			},
			{
				// Below realdir: a symlinked parent in another layer.
				Symlink("realdir2", can),
				File("realdir/below", "below\n"),
			},
		},
		upper: []Entry{
			// A redirect out of the layer and one through a symlink.
			Dir("redir-out").WithXattr(xattrRedirect, "/../../../../../../../etc"),
			Dir("redir-rel").WithXattr(xattrRedirect, "../../../../../../etc"),
			Dir("redir-link").WithXattr(xattrRedirect, "/etclink"),
			Dir("redir-canary").WithXattr(xattrRedirect, "/canlink"),
			// Metadata-only copies whose data would be outside.
			File("metasym", "").WithXattr("trusted.overlay.metacopy", ""),
			File("meta-redir", "").WithXattr("trusted.overlay.metacopy", "").WithXattr(xattrRedirect, "/evil"),
			File("meta-up", "").WithXattr("trusted.overlay.metacopy", "").WithXattr(xattrRedirect, "/../../../../etc/passwd"),
			// An upper symlink over a lower directory.
			Symlink("r", can),
		},
	})
	guardLowers(t, s.lowers...)
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	m := func(rel string) string { return filepath.Join(mnt, rel) }
	passwd, _ := os.ReadFile("/etc/passwd")
	attempts := 0
	// Reads that must not show anything from outside.
	for _, rel := range []string{"redir-out", "redir-rel", "redir-link", "redir-canary"} {
		attempts++
		ents, err := os.ReadDir(m(rel))
		if err != nil {
			t.Errorf("readdir %s: %v", rel, err)
		}
		for _, e := range ents {
			t.Errorf("readdir %s (a redirect out of the lowers) lists %q: it reached outside", rel, e.Name())
		}
	}
	for _, rel := range []string{"metasym", "meta-redir", "meta-up"} {
		attempts++
		b, err := os.ReadFile(m(rel))
		if err == nil && len(b) > 0 {
			t.Errorf("read %s (metadata-only copy with its data outside): %d bytes %q", rel, len(b), truncateStr(string(b), 60))
		}
		if err == nil && strings.Contains(string(b), "root:") {
			t.Errorf("read %s gave /etc/passwd or /etc/shadow", rel)
		}
	}
	attempts++
	if ents, _ := os.ReadDir(m("realdir")); len(ents) != 2 {
		t.Errorf("realdir lists %d entries, want mine and below", len(ents))
	}
	// Operations on the symlinks themselves (never followed by the
	// daemon): copy-ups, renames, links, removals.
	ts := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9}}
	for _, rel := range []string{"evil", "shadow", "up", "canlink", "etclink"} {
		ops := []struct {
			name string
			fn   func() error
		}{
			{"lchown", func() error { return unix.Lchown(m(rel), 1000, 1000) }},
			{"utimes nofollow", func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, m(rel), ts, unix.AT_SYMLINK_NOFOLLOW) }},
			{"lsetxattr trusted", func() error { return unix.Lsetxattr(m(rel), "trusted.t", []byte("1"), 0) }},
			{"readlink", func() error { _, err := os.Readlink(m(rel)); return err }},
			{"link", func() error { return unix.Linkat(unix.AT_FDCWD, m(rel), unix.AT_FDCWD, m(rel+".link"), 0) }},
			{"rename", func() error { return unix.Rename(m(rel), m(rel+".moved")) }},
			{"rename back", func() error { return unix.Rename(m(rel+".moved"), m(rel)) }},
			{"unlink link", func() error { return unix.Unlink(m(rel + ".link")) }},
		}
		for _, op := range ops {
			attempts++
			if err := op.fn(); err != nil {
				t.Errorf("%s %s: %v", op.name, rel, err)
			}
		}
	}
	// Through the upper symlink r (to the canary): nothing, since the
	// kernel follows it to the canary itself; but the lower directory r
	// below must stay hidden and untouched.
	attempts++
	if fi, err := os.Lstat(m("r")); err != nil || fi.Mode()&os.ModeSymlink == 0 {
		t.Errorf("r: %v %v, want the upper symlink", fi, err)
	}
	// Odd names: copy up, rename, remove.
	for _, rel := range []string{"nl\nname", long} {
		for _, op := range []func() error{
			func() error { return unix.Chmod(m(rel), 0o600) },
			func() error { return appendTo(m(rel), []byte("more")) },
			func() error { return unix.Rename(m(rel), m(rel[:len(rel)-1]+"Z")) },
			func() error { return unix.Unlink(m(rel[:len(rel)-1] + "Z")) },
		} {
			attempts++
			if err := op(); err != nil {
				t.Errorf("%q: %v", truncateStr(rel, 20), err)
			}
		}
	}
	// New objects with hostile names and targets.
	for _, op := range []func() error{
		func() error { return os.Symlink("../../../../etc/passwd", m("new-evil")) },
		func() error { return os.WriteFile(m("nl\nnew"), []byte("x"), 0o644) },
		func() error { return os.WriteFile(m(strings.Repeat("y", 255)), []byte("y"), 0o644) },
		func() error { return os.Mkdir(m("..."), 0o755) },
		func() error { return unix.Lchown(m("new-evil"), 7, 7) },
	} {
		attempts++
		if err := op(); err != nil {
			t.Errorf("%v", err)
		}
	}
	attempts++
	if err := os.WriteFile(m(strings.Repeat("z", 256)), nil, 0o644); !errors.Is(err, unix.ENAMETOOLONG) {
		t.Errorf("256-byte name: %v, want ENAMETOOLONG", err)
	}
	if b, _ := os.ReadFile("/etc/passwd"); string(b) != string(passwd) {
		t.Error("/etc/passwd changed")
	}
	unmount(t, mnt)
	t.Logf("%d escape attempts through the mount, none reached outside the layers", attempts)
}

func truncateStr(s string, n int) string {
	if len(s) > n {
		return s[:n] + "..."
	}
	return s
}

// TestHostileWorkdir: workdir/work and the index directory planted as
// symlinks to a canary: mounting (which clears leftovers in work/) must
// refuse or stay inside the workdir.
func TestHostileWorkdir(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	can := canary(t)
	for _, planted := range []string{"work", "index", "unionmount-index"} {
		s := newStack(t, stackSpec{lowers: [][]Entry{{File("f", "f\n"), File("h", "h\n"), Hardlink("h2", "h")}}})
		if err := os.Symlink(can, filepath.Join(s.work, planted)); err != nil {
			t.Fatal(err)
		}
		opts := unionOptions(s.lowers, s.upper, s.work, nil)
		mnt := filepath.Join(s.base, "mnt")
		if err := os.Mkdir(mnt, 0o755); err != nil {
			t.Fatal(err)
		}
		d, err := tryStartDaemon(t, binPath, mnt, opts)
		if err != nil {
			t.Logf("workdir/%s a symlink to a canary: refused: %s", planted, lastLine(err.Error()))
			continue
		}
		// Copy-ups, removals and hard links go through work/ and the index.
		_ = appendTo(filepath.Join(mnt, "f"), []byte("x"))
		_ = os.WriteFile(filepath.Join(mnt, "g"), []byte("g"), 0o644)
		_ = os.Remove(filepath.Join(mnt, "g"))
		_ = os.Remove(filepath.Join(mnt, "f"))
		_ = appendTo(filepath.Join(mnt, "h"), []byte("x")) // an index copy-up
		_ = os.Remove(filepath.Join(mnt, "h2"))
		d.stop()
		t.Logf("workdir/%s a symlink to a canary: mounted, canary untouched so far", planted)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestUpperDirSwappedForSymlink races copy-ups into an upper directory
// against swapping that directory, on the upper itself, for a symlink to
// a canary or to the lower's own directory.
func TestUpperDirSwappedForSymlink(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	can := canary(t)
	var entries []Entry
	for i := 0; i < 10; i++ {
		entries = append(entries, File(fmt.Sprintf("d/f%d", i), strings.Repeat(fmt.Sprint(i), 64<<10)))
		entries = append(entries, File(fmt.Sprintf("d/sub/g%d", i), "g"))
	}
	s := newStack(t, stackSpec{lowers: [][]Entry{entries}})
	guardLowers(t, s.lowers...)
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	// d and d/sub in upper.
	if err := os.WriteFile(filepath.Join(mnt, "d/sub/start"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	ud, real := filepath.Join(s.upper, "d"), filepath.Join(s.upper, "d.real")
	targets := []string{can, filepath.Join(s.lowers[0], "d")}
	var stop atomic.Bool
	var swaps, ops, refused atomic.Int64
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { // the attacker
		defer wg.Done()
		for i := 0; !stop.Load(); i++ {
			if err := os.Rename(ud, real); err != nil {
				continue
			}
			if err := os.Symlink(targets[i%2], ud); err == nil {
				time.Sleep(time.Duration(i%3) * time.Millisecond)
				_ = os.Remove(ud)
			}
			_ = os.Rename(real, ud)
			swaps.Add(1)
		}
	}()
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; !stop.Load(); i++ {
				p := filepath.Join(mnt, "d", fmt.Sprintf("f%d", (i+w)%10))
				q := filepath.Join(mnt, "d/sub", fmt.Sprintf("g%d", (i+w)%10))
				var err error
				switch i % 6 {
				case 0:
					err = unix.Chmod(p, 0o600)
				case 1:
					err = appendTo(p, []byte("!"))
				case 2:
					err = unix.Truncate(q, 1)
				case 3:
					err = os.WriteFile(filepath.Join(mnt, "d", fmt.Sprintf("new%d", w)), []byte("n"), 0o644)
				case 4:
					err = os.Remove(filepath.Join(mnt, "d", fmt.Sprintf("new%d", w)))
				case 5:
					err = unix.Setxattr(q, "user.x", []byte("1"), 0)
				}
				ops.Add(1)
				if err != nil {
					refused.Add(1)
				}
			}
		}()
	}
	time.Sleep(3 * time.Second)
	stop.Store(true)
	wg.Wait()
	if _, err := os.Lstat(ud); err != nil {
		_ = os.Rename(real, ud)
	}
	if _, err := os.ReadDir(filepath.Join(mnt, "d")); err != nil && !errors.Is(err, unix.ENOENT) {
		t.Logf("readdir d after the race: %v", err)
	}
	t.Logf("%d swaps of upper/d for a symlink during %d copy-up operations (%d refused): canary, /etc and the lower unchanged", swaps.Load(), ops.Load(), refused.Load())
}
