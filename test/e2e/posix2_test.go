package e2e

// POSIX behaviours through a real mount, each compared with the same
// scenario on a plain directory of the backing filesystem (ext4): the
// scenario writes a transcript of what it observed (errnos, modes, sizes,
// contents; never inode or device numbers), and unionmount's transcript
// must equal ext4's. Each runs twice: with the scenario's objects in the
// lower layer (so that changing them copies them up) and made through the
// mount (in the upper).

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// transcript is what a scenario observed, one line per observation.
type transcript struct{ lines []string }

func (tr *transcript) add(format string, args ...any) {
	tr.lines = append(tr.lines, fmt.Sprintf(format, args...))
}

// errno records the outcome of a call: "what: ok" or "what: ENOENT".
func (tr *transcript) errno(what string, err error) {
	tr.add("%s: %s", what, errText(err, ""))
}

// ext4VsUnion runs scenario on ext4 and on unionmount (see the file
// comment). setup makes the scenario's objects under a directory: the
// ext4 one, unionmount's lower layer, or unionmount's mount point.
// opts are added to unionmount's options.
func ext4VsUnion(t *testing.T, setup func(t *testing.T, dir string), scenario func(t *testing.T, root string, tr *transcript), opts ...string) {
	t.Helper()
	requireMountable(t)
	t.Parallel()
	for _, where := range []string{"lower", "upper"} {
		t.Run("objects-in-"+where, func(t *testing.T) {
			t.Parallel()
			base := t.TempDir()
			ref := filepath.Join(base, "ext4")
			lower, upper, work := filepath.Join(base, "lower"), filepath.Join(base, "upper"), filepath.Join(base, "work")
			for _, d := range []string{ref, lower, upper, work} {
				if err := os.Mkdir(d, 0o755); err != nil {
					t.Fatal(err)
				}
			}
			setup(t, ref)
			if where == "lower" {
				setup(t, lower)
			}
			mnt := mountUnion(t, []string{lower}, upper, work, opts...)
			traversable(t, mnt)
			traversable(t, ref)
			if err := os.Chmod(base, 0o755); err != nil {
				t.Fatal(err)
			}
			if where == "upper" {
				setup(t, mnt)
			}
			var want, got transcript
			scenario(t, ref, &want)
			scenario(t, mnt, &got)
			if len(want.lines) == 0 {
				t.Fatal("the scenario observed nothing")
			}
			compareTranscripts(t, want.lines, got.lines)
		})
	}
}

func compareTranscripts(t *testing.T, ext4, ours []string) {
	t.Helper()
	var diffs []string
	for i := 0; i < len(ext4) || i < len(ours); i++ {
		var a, b string
		if i < len(ext4) {
			a = ext4[i]
		}
		if i < len(ours) {
			b = ours[i]
		}
		if a != b {
			diffs = append(diffs, fmt.Sprintf("line %d:\n      ext4:       %s\n      unionmount: %s", i, a, b))
		}
	}
	if len(diffs) > 0 {
		t.Errorf("unionmount does not behave as ext4 (%d of %d lines differ):\n  %s\nwhole ext4 transcript:\n  %s",
			len(diffs), len(ext4), strings.Join(diffs, "\n  "), strings.Join(ext4, "\n  "))
	} else {
		t.Logf("%d observations, all as on ext4", len(ext4))
	}
}

// asUser runs fn with fsuid and fsgid uid (and uid as the only
// supplementary group) on a thread of its own, discarded afterwards. The
// change of fsuid from 0 drops root's file capabilities on that thread, so
// fn runs as an ordinary user as far as files are concerned.
func asUser(uid int, fn func() error) error {
	done := make(chan error)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the goroutine
		if err := unix.Setgroups([]int{uid}); err != nil {
			done <- fmt.Errorf("setgroups: %w", err)
			return
		}
		unix.Setfsgid(uid)
		unix.Setfsuid(uid)
		if got, _ := unix.SetfsuidRetUid(-1); got != uid {
			done <- fmt.Errorf("setfsuid(%d) did not take", uid)
			return
		}
		done <- fn()
	}()
	return <-done
}

func mkfile(t *testing.T, p, content string, mode uint32, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

func mkdirOwned(t *testing.T, p string, mode uint32, uid, gid int) {
	t.Helper()
	if err := os.MkdirAll(p, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Lchown(p, uid, gid); err != nil {
		t.Fatal(err)
	}
	if err := unix.Chmod(p, mode); err != nil {
		t.Fatal(err)
	}
}

// statLine describes p: type, mode, owner, size, nlink (not of dirs).
func statLine(p string) string {
	st, err := lstatPath(p)
	if err != nil {
		return errText(err, "")
	}
	if st.Mode&unix.S_IFMT == unix.S_IFDIR {
		return fmt.Sprintf("dir %04o %d:%d", st.Mode&0o7777, st.Uid, st.Gid)
	}
	return fmt.Sprintf("%s %04o %d:%d size=%d nlink=%d", fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Nlink)
}

func fstatLine(fd int) string {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		return errText(err, "")
	}
	return fmt.Sprintf("%s %04o %d:%d size=%d nlink=%d", fileType(st.Mode), st.Mode&0o7777, st.Uid, st.Gid, st.Size, st.Nlink)
}

func readLine(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return errText(err, "")
	}
	return fmt.Sprintf("%q", short(string(b)))
}

// TestNameMaxAndPathMax: ENAMETOOLONG for a name over 255 bytes in every
// call that takes one, names of 255 bytes work, and relative paths up to
// PATH_MAX work in a deep tree (copied up, in the lower case).
func TestNameMaxAndPathMax(t *testing.T) {
	name255, name256 := strings.Repeat("n", 255), strings.Repeat("n", 256)
	comp := strings.Repeat("p", 250)
	// 16 directories of 250 bytes + 16 slashes = 4016 bytes; a last name
	// of 79 makes a path of 4095 bytes (PATH_MAX with its NUL), 80 one too
	// long.
	var deepDirs []string
	for i := 0; i < 16; i++ {
		deepDirs = append(deepDirs, comp)
	}
	deep := strings.Join(deepDirs, "/")
	ext4VsUnion(t, func(t *testing.T, dir string) {
		mkfile(t, filepath.Join(dir, "f"), "f", 0o644, 0, 0)
		mkfile(t, filepath.Join(dir, name255), "long", 0o644, 0, 0)
		mkfile(t, filepath.Join(dir, "d", "g"), "g", 0o644, 0, 0)
		// The deep tree, made with *at calls (its full path is too
		// long for one call from the mount point's parent).
		fd, err := unix.Open(dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range deepDirs {
			if err := unix.Mkdirat(fd, c, 0o755); err != nil && err != unix.EEXIST {
				t.Fatal(err)
			}
			nfd, err := unix.Openat(fd, c, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
			unix.Close(fd)
			if err != nil {
				t.Fatal(err)
			}
			fd = nfd
		}
		if err := os.WriteFile(fmt.Sprintf("/proc/self/fd/%d/leaf", fd), []byte("deep"), 0o644); err != nil {
			t.Fatal(err)
		}
		unix.Close(fd)
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		for _, n := range []string{name255, name256} {
			l := len(n)
			fd, err := unix.Open(p("d/"+n), unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				unix.Close(fd)
			}
			tr.errno(fmt.Sprintf("create %d", l), err)
			tr.errno(fmt.Sprintf("mkdir %d", l), unix.Mkdir(p("k"+n[1:]), 0o755))
			tr.errno(fmt.Sprintf("symlink %d", l), unix.Symlink("f", p("s"+n[1:])))
			tr.errno(fmt.Sprintf("link %d", l), unix.Link(p("f"), p("l"+n[1:])))
			tr.errno(fmt.Sprintf("mknod %d", l), unix.Mknod(p("m"+n[1:]), unix.S_IFIFO|0o644, 0))
			tr.errno(fmt.Sprintf("rename to %d", l), unix.Rename(p("d/g"), p("r"+n[1:])))
			tr.errno(fmt.Sprintf("rename back %d", l), unix.Rename(p("r"+n[1:]), p("d/g")))
			tr.errno(fmt.Sprintf("setxattr %d", l), unix.Lsetxattr(p(n), "user.x", []byte("1"), 0))
			tr.add("stat %d: %s", l, statLine(p(n)))
			tr.errno(fmt.Sprintf("unlink %d", l), unix.Unlink(p("m"+n[1:])))
		}
		tr.errno("symlink target 4095", unix.Symlink(strings.Repeat("t", 4095), p("t4095")))
		tr.errno("symlink target 4096", unix.Symlink(strings.Repeat("t", 4096), p("t4096")))
		if target, err := os.Readlink(p("t4095")); err == nil {
			tr.add("readlink 4095: %d bytes", len(target))
		}
		rootFd, err := unix.Open(root, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(rootFd)
		for _, last := range []int{79, 80} {
			rel := deep + "/" + strings.Repeat("q", last)
			fd, err := unix.Openat(rootFd, rel, unix.O_CREAT|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
			if err == nil {
				_, err = unix.Write(fd, []byte("at path max"))
				unix.Close(fd)
			}
			tr.errno(fmt.Sprintf("create relative path of %d bytes", len(rel)), err)
		}
		fd, err := unix.Openat(rootFd, deep+"/leaf", unix.O_RDWR|unix.O_APPEND|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Write(fd, []byte("+more"))
			buf := make([]byte, 64)
			n, _ := unix.Pread(fd, buf, 0)
			tr.add("deep leaf: %q", buf[:n])
			unix.Close(fd)
		}
		tr.errno("append to the deep leaf", err)
		// The same deep tree walked by a program.
		dfd, err := unix.Openat(rootFd, deep, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err == nil {
			names, err := readNames(fmt.Sprintf("/proc/self/fd/%d", dfd))
			tr.add("deep listing: %q %v", names, err)
			unix.Close(dfd)
		}
	})
}

// TestUnlinkedOpenFile: an open file whose last name is gone has nlink 0,
// stays readable and writable through its descriptor, and what is done
// through the descriptor changes it, not anything else.
func TestUnlinkedOpenFile(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		mkfile(t, filepath.Join(dir, "f"), "lower data", 0o644, 0, 0)
		mkfile(t, filepath.Join(dir, "g"), "other", 0o644, 0, 0)
		mkfile(t, filepath.Join(dir, "h"), "replaced", 0o644, 0, 0)
		if err := os.Link(filepath.Join(dir, "g"), filepath.Join(dir, "g2")); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		rootBefore := statLine(root)
		fd, err := unix.Open(p("f"), unix.O_RDWR|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		tr.errno("unlink f", unix.Unlink(p("f")))
		tr.add("fstat: %s", fstatLine(fd))
		_, err = unix.Pwrite(fd, []byte("LOWER"), 0)
		tr.errno("pwrite", err)
		buf := make([]byte, 64)
		n, err := unix.Pread(fd, buf, 0)
		tr.add("pread: %q %s", buf[:max(n, 0)], errText(err, ""))
		tr.errno("fchmod 0600", unix.Fchmod(fd, 0o600))
		tr.errno("fchown 7:8", unix.Fchown(fd, 7, 8))
		tr.errno("fsetxattr", unix.Fsetxattr(fd, "user.u", []byte("v"), 0))
		tr.errno("ftruncate 3", unix.Ftruncate(fd, 3))
		tr.add("fstat after: %s", fstatLine(fd))
		tr.add("root unchanged: %v", statLine(root) == rootBefore)
		x, err := listXattrs(root)
		tr.add("root xattrs: %s %v", fmtXattrs(x), err)
		tr.add("stat f: %s", statLine(p("f")))

		gfd, err := unix.Open(p("g"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(gfd)
		tr.errno("unlink g", unix.Unlink(p("g")))
		tr.add("fstat g (one name left): %s", fstatLine(gfd))
		tr.errno("unlink g2", unix.Unlink(p("g2")))
		tr.add("fstat g (no name left): %s", fstatLine(gfd))

		hfd, err := unix.Open(p("h"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(hfd)
		mkfile(t, p("new"), "new", 0o644, 0, 0)
		tr.errno("rename new over h", unix.Rename(p("new"), p("h")))
		tr.add("fstat replaced h: %s", fstatLine(hfd))
		n, err = unix.Pread(hfd, buf, 0)
		tr.add("pread replaced h: %q %s", buf[:max(n, 0)], errText(err, ""))
		tr.add("h now: %s", readLine(p("h")))
	})
}

// TestSetidClearedLikeExt4: a write, truncate or chown clears set-user-ID
// (and set-group-ID on group-executable files) as on ext4; root's writes
// keep them; other users' chmod and chown are refused.
func TestSetidClearedLikeExt4(t *testing.T) {
	files := []string{"w", "t", "c", "rootw", "own", "mine", "nox"}
	ext4VsUnion(t, func(t *testing.T, dir string) {
		for _, f := range files {
			mkfile(t, filepath.Join(dir, f), "data", 0o6777, 0, 0)
		}
		mkfile(t, filepath.Join(dir, "mine"), "data", 0o6775, 1000, 1000)
		mkfile(t, filepath.Join(dir, "own"), "data", 0o6755, 1000, 1000)
		mkfile(t, filepath.Join(dir, "nox"), "data", 0o6766, 0, 0) // sgid without group exec: mandatory locking bit
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		write := func(n string) error {
			fd, err := unix.Open(p(n), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			_, err = unix.Write(fd, []byte("+"))
			return firstErr(err, unix.Close(fd))
		}
		tr.errno("write w as 1000", asUser(1000, func() error { return write("w") }))
		tr.errno("truncate t as 1000", asUser(1000, func() error { return unix.Truncate(p("t"), 2) }))
		tr.errno("write nox as 1000", asUser(1000, func() error { return write("nox") }))
		tr.errno("chown c as root", unix.Chown(p("c"), 1000, 1000))
		tr.errno("write rootw as root", write("rootw"))
		tr.errno("chmod c as 65534", asUser(65534, func() error { return unix.Chmod(p("c"), 0o777) }))
		tr.errno("chown own to 65534 as 1000", asUser(1000, func() error { return unix.Chown(p("own"), 65534, 1000) }))
		tr.errno("chown own to :1000 as 1000", asUser(1000, func() error { return unix.Chown(p("own"), -1, 1000) }))
		tr.errno("chown mine to 1000:1000 as 1000", asUser(1000, func() error { return unix.Chown(p("mine"), 1000, 1000) }))
		tr.errno("chmod mine 06775 as 1000", asUser(1000, func() error { return unix.Chmod(p("mine"), 0o6775) }))
		for _, f := range files {
			if f == "nox" {
				// Which set-id bits a write kills is decided by the
				// kernel's FUSE layer, by an older rule than ext4's for
				// S_ISGID without group execute (README, Limitations):
				// only S_ISUID and the permission bits are compared.
				var st unix.Stat_t
				err := unix.Lstat(p(f), &st)
				tr.add("%s: suid=%v perm=%o %v", f, st.Mode&unix.S_ISUID != 0, st.Mode&0o777, err)
				continue
			}
			tr.add("%s: %s", f, statLine(p(f)))
		}
	})
}

// TestCtimeUpdated: every change of an object's metadata or data moves its
// ctime forward (each change comes after the clock has moved past the
// previous ctime, so that an unchanged ctime cannot be granularity).
func TestCtimeUpdated(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		for _, f := range []string{"chmod", "chown", "utimes", "setxattr", "removexattr", "link", "unlink-other", "rename", "truncate", "write", "fchmod"} {
			mkfile(t, filepath.Join(dir, f), "data", 0o644, 0, 0)
		}
		if err := unix.Lsetxattr(filepath.Join(dir, "removexattr"), "user.x", []byte("1"), 0); err != nil {
			t.Fatal(err)
		}
		if err := os.Link(filepath.Join(dir, "unlink-other"), filepath.Join(dir, "other-name")); err != nil {
			t.Fatal(err)
		}
		mkdirOwned(t, filepath.Join(dir, "dir"), 0o755, 0, 0)
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		changes := []struct {
			name string
			fn   func() error
		}{
			{"chmod", func() error { return unix.Chmod(p("chmod"), 0o600) }},
			{"chown", func() error { return unix.Chown(p("chown"), 5, 5) }},
			{"utimes", func() error { return unix.UtimesNano(p("utimes"), []unix.Timespec{{Sec: 5}, {Sec: 5}}) }},
			{"setxattr", func() error { return unix.Setxattr(p("setxattr"), "user.y", []byte("1"), 0) }},
			{"removexattr", func() error { return unix.Removexattr(p("removexattr"), "user.x") }},
			{"link", func() error { return unix.Link(p("link"), p("link2")) }},
			{"unlink-other", func() error { return unix.Unlink(p("other-name")) }},
			{"rename", func() error { return unix.Rename(p("rename"), p("dir/renamed")) }},
			{"truncate", func() error { return unix.Truncate(p("truncate"), 1) }},
			{"write", func() error { return os.WriteFile(p("write"), []byte("new"), 0o644) }},
			{"fchmod", func() error {
				fd, err := unix.Open(p("fchmod"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err != nil {
					return err
				}
				return firstErr(unix.Fchmod(fd, 0o640), unix.Close(fd))
			}},
		}
		for _, c := range changes {
			path := p(c.name)
			if c.name == "rename" {
				path = p("dir/renamed")
			}
			before, err := lstatPath(p(c.name))
			if err != nil {
				t.Fatal(err)
			}
			waitClockPast(before.Ctim)
			err = c.fn()
			after, err2 := lstatPath(path)
			advanced := err2 == nil && timespecAfter(after.Ctim, before.Ctim)
			tr.add("%s: %s, ctime advanced: %v", c.name, errText(err, ""), advanced)
		}
	})
}

// waitClockPast waits until the coarse clock the filesystem stamps times
// with has moved past ts (a few milliseconds at most).
func waitClockPast(ts unix.Timespec) {
	for {
		var now unix.Timespec
		if unix.ClockGettime(unix.CLOCK_REALTIME_COARSE, &now) != nil || timespecAfter(now, ts) {
			return
		}
		time.Sleep(time.Millisecond)
	}
}

func timespecAfter(a, b unix.Timespec) bool {
	return a.Sec > b.Sec || a.Sec == b.Sec && a.Nsec > b.Nsec
}

func firstErr(errs ...error) error {
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// TestFifosAndDeviceNodes: mkfifo and mknod of every type, a fifo used as
// a pipe (a lower one, and after its copy-up), device numbers, a unix
// socket bound and connected to inside the mount.
func TestFifosAndDeviceNodes(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		if err := unix.Mknod(filepath.Join(dir, "fifo"), unix.S_IFIFO|0o644, 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Mknod(filepath.Join(dir, "null"), unix.S_IFCHR|0o666, int(unix.Mkdev(1, 3))); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		pipe := func(name string) {
			r, err := unix.Open(p(name), unix.O_RDONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				tr.errno("open "+name+" for reading", err)
				return
			}
			defer unix.Close(r)
			w, err := unix.Open(p(name), unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC, 0)
			if err != nil {
				tr.errno("open "+name+" for writing", err)
				return
			}
			_, err = unix.Write(w, []byte("through "+name))
			unix.Close(w)
			buf := make([]byte, 64)
			n, err2 := unix.Read(r, buf)
			tr.add("pipe %s: write %s, read %q %s", name, errText(err, ""), buf[:max(n, 0)], errText(err2, ""))
		}
		pipe("fifo")
		tr.errno("chmod fifo", unix.Chmod(p("fifo"), 0o600))
		pipe("fifo")
		tr.add("fifo: %s", statLine(p("fifo")))
		tr.errno("mkfifo new", unix.Mkfifo(p("newfifo"), 0o640))
		pipe("newfifo")
		for _, n := range []struct {
			name string
			mode uint32
			dev  uint64
		}{{"chr", unix.S_IFCHR | 0o600, unix.Mkdev(1, 7)}, {"blk", unix.S_IFBLK | 0o600, unix.Mkdev(7, 200)}, {"sock", unix.S_IFSOCK | 0o600, 0}, {"reg", unix.S_IFREG | 0o600, 0}} {
			tr.errno("mknod "+n.name, unix.Mknod(p(n.name), n.mode, int(n.dev)))
			st, err := lstatPath(p(n.name))
			tr.add("%s: %s rdev %d:%d %s", n.name, statLine(p(n.name)), unix.Major(st.Rdev), unix.Minor(st.Rdev), errText(err, ""))
		}
		// A character device in the lower, used in place.
		fd, err := unix.Open(p("null"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Write(fd, []byte("into /dev/null"))
			unix.Close(fd)
		}
		tr.errno("write to the null device node", err)
		tr.errno("chown null device", unix.Chown(p("null"), 3, 3))
		st, _ := lstatPath(p("null"))
		tr.add("null after chown: %s rdev %d:%d", statLine(p("null")), unix.Major(st.Rdev), unix.Minor(st.Rdev))
		// A unix socket bound in the tree.
		sock := p("s")
		lfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(lfd)
		err = unix.Bind(lfd, &unix.SockaddrUnix{Name: sock})
		tr.errno("bind", err)
		if err == nil {
			tr.errno("listen", unix.Listen(lfd, 1))
			cfd, err := unix.Socket(unix.AF_UNIX, unix.SOCK_STREAM, 0)
			if err != nil {
				t.Fatal(err)
			}
			defer unix.Close(cfd)
			tr.errno("connect", unix.Connect(cfd, &unix.SockaddrUnix{Name: sock}))
			tr.add("socket node: %s", statLine(sock))
		}
	})
}

// TestOTmpfile: an O_TMPFILE file has no name and nlink 0 until linkat
// gives it one (not with O_EXCL), in a lower directory too.
func TestOTmpfile(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		mkdirOwned(t, filepath.Join(dir, "d"), 0o755, 0, 0)
		mkfile(t, filepath.Join(dir, "d", "x"), "x", 0o644, 0, 0)
	}, func(t *testing.T, root string, tr *transcript) {
		dir := filepath.Join(root, "d")
		for _, excl := range []bool{false, true} {
			flags := unix.O_TMPFILE | unix.O_RDWR
			if excl {
				flags |= unix.O_EXCL
			}
			fd, err := unix.Open(dir, flags|unix.O_CLOEXEC, 0o640)
			tr.errno(fmt.Sprintf("open O_TMPFILE excl=%v", excl), err)
			if err != nil {
				continue
			}
			_, err = unix.Write(fd, []byte("tmpfile data"))
			tr.errno("write", err)
			tr.add("fstat: %s", fstatLine(fd))
			names, _ := readNames(dir)
			tr.add("listing: %v", names)
			name := fmt.Sprintf("named-%v", excl)
			err = unix.Linkat(unix.AT_FDCWD, fmt.Sprintf("/proc/self/fd/%d", fd), unix.AT_FDCWD, filepath.Join(dir, name), unix.AT_SYMLINK_FOLLOW)
			tr.errno("linkat", err)
			tr.add("fstat after linkat: %s", fstatLine(fd))
			tr.add("%s: %s %s", name, statLine(filepath.Join(dir, name)), readLine(filepath.Join(dir, name)))
			unix.Close(fd)
		}
		fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_RDONLY|unix.O_CLOEXEC, 0o600)
		if err == nil {
			unix.Close(fd)
		}
		tr.errno("O_TMPFILE read-only", err)
	})
}

// TestFallocateAndSeekHoles: fallocate's modes and SEEK_DATA/SEEK_HOLE on
// a sparse file, before and after it is copied up.
func TestFallocateAndSeekHoles(t *testing.T) {
	const mib = 1 << 20
	ext4VsUnion(t, func(t *testing.T, dir string) {
		for _, f := range []string{"sparse", "alloc", "keep", "punch", "zero"} {
			p := filepath.Join(dir, f)
			f, err := os.OpenFile(p, os.O_CREATE|os.O_WRONLY, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			for _, off := range []int64{0, mib} {
				if _, err := f.WriteAt(bytes.Repeat([]byte("D"), 8192), off); err != nil {
					t.Fatal(err)
				}
			}
			if err := f.Truncate(2 * mib); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		// holes records a file's SEEK_DATA/SEEK_HOLE map. Where
		// fallocate left unwritten extents, a filesystem may call them
		// data or hole (what decides is whether their pages are cached):
		// there exact maps are not compared, only that every hole reads
		// as zeros.
		exact := true
		holes := func(name string) {
			fd, err := unix.Open(p(name), unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				tr.errno("open "+name, err)
				return
			}
			defer unix.Close(fd)
			var m []string
			for _, off := range []int64{0, 4096, 8192, 100000, mib, mib + 8192, 2*mib - 1, 2 * mib, 3 * mib} {
				d, err1 := unix.Seek(fd, off, unix.SEEK_DATA)
				h, err2 := unix.Seek(fd, off, unix.SEEK_HOLE)
				m = append(m, fmt.Sprintf("%d:data=%d/%s,hole=%d/%s", off, d, errText(err1, ""), h, errText(err2, "")))
			}
			st, _ := lstatPath(p(name))
			h, herr := hashFile(p(name))
			if herr != nil {
				h = "(" + herr.Error() + ")" // so that a failure says which
			}
			if !exact {
				tr.add("%s: size=%d sha=%s holes read as zeros: %v", name, st.Size, h, holesAreZero(fd, st.Size))
				return
			}
			tr.add("%s: size=%d sha=%s %s", name, st.Size, h, strings.Join(m, " "))
		}
		holes("sparse")
		// Copy it up (first byte rewritten in place), then again.
		fd, err := unix.Open(p("sparse"), unix.O_WRONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			_, err = unix.Pwrite(fd, []byte("d"), 0)
			unix.Close(fd)
		}
		tr.errno("pwrite sparse", err)
		holes("sparse")
		exact = false
		modes := []struct {
			name      string
			mode      uint32
			off, size int64
		}{
			{"alloc", 0, 2*mib + 4096, mib},
			{"keep", unix.FALLOC_FL_KEEP_SIZE, 2 * mib, mib},
			{"punch", unix.FALLOC_FL_PUNCH_HOLE | unix.FALLOC_FL_KEEP_SIZE, 0, 4096},
			{"zero", unix.FALLOC_FL_ZERO_RANGE, 4096, 8192},
		}
		for _, m := range modes {
			fd, err := unix.Open(p(m.name), unix.O_RDWR|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			tr.errno("fallocate "+m.name, unix.Fallocate(fd, m.mode, m.off, m.size))
			unix.Close(fd)
			holes(m.name)
		}
		// fallocate through a read-only descriptor fails.
		fd, err = unix.Open(p("alloc"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err == nil {
			tr.errno("fallocate on a read-only fd", unix.Fallocate(fd, 0, 0, 4096))
			unix.Close(fd)
		}
	})
}

// holesAreZero checks that every range SEEK_HOLE reports reads as zeros.
func holesAreZero(fd int, size int64) bool {
	buf := make([]byte, 64*1024)
	for off := int64(0); off < size; {
		h, err := unix.Seek(fd, off, unix.SEEK_HOLE)
		if err != nil || h >= size {
			return err == nil
		}
		d, err := unix.Seek(fd, h, unix.SEEK_DATA)
		if err != nil {
			d = size
		}
		for p := h; p < d; p += int64(len(buf)) {
			n, _ := unix.Pread(fd, buf[:min(int64(len(buf)), d-p)], p)
			if bytes.Count(buf[:n], []byte{0}) != n {
				return false
			}
		}
		off = d
	}
	return true
}

// TestFallocateCollapseInsertRefused: FALLOC_FL_COLLAPSE_RANGE and
// FALLOC_FL_INSERT_RANGE are refused with EOPNOTSUPP and change nothing.
// The kernel refuses them for every FUSE filesystem before asking it (ext4
// and kernel overlayfs do them): a known difference.
func TestFallocateCollapseInsertRefused(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := &side{name: "unionmount", stack: newStack(t, stackSpec{lowers: [][]Entry{{File("f", strings.Repeat("x", 16384))}}})}
	s.mount(t, nil)
	defer s.unmount(t)
	fd, err := unix.Open(filepath.Join(s.mnt, "f"), unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(fd)
	for _, mode := range []uint32{unix.FALLOC_FL_COLLAPSE_RANGE, unix.FALLOC_FL_INSERT_RANGE} {
		if err := unix.Fallocate(fd, mode, 4096, 4096); err != unix.EOPNOTSUPP {
			t.Errorf("fallocate mode %#x: %v, want EOPNOTSUPP", mode, err)
		}
	}
	if b, _ := os.ReadFile(filepath.Join(s.mnt, "f")); string(b) != strings.Repeat("x", 16384) {
		t.Errorf("the file changed: %s", short(string(b)))
	}
}

// TestCopyFileRange: copy_file_range within the mount, at offsets, and to
// and from a file outside it.
func TestCopyFileRange(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		mkfile(t, filepath.Join(dir, "src"), strings.Repeat("0123456789", 10000), 0o644, 0, 0)
		mkfile(t, filepath.Join(dir, "dst"), "existing destination", 0o644, 0, 0)
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		outside := filepath.Join(t.TempDir(), "outside")
		if err := os.WriteFile(outside, []byte("from outside the mount"), 0o644); err != nil {
			t.Fatal(err)
		}
		// Between two filesystems the kernel itself answers EXDEV (for
		// any FUSE filesystem; programs fall back to read and write);
		// within ext4 it copies. Either way the result must be whole.
		crossFS := func(from, to string) bool { return from == outside || to == outside }
		cfr := func(from, to string, off1, off2 int64, n int, flags int) {
			in, err := unix.Open(from, unix.O_RDONLY|unix.O_CLOEXEC, 0)
			if err != nil {
				tr.errno("open "+filepath.Base(from), err)
				return
			}
			defer unix.Close(in)
			out, err := unix.Open(to, unix.O_WRONLY|unix.O_CREAT|unix.O_CLOEXEC, 0o644)
			if err != nil {
				tr.errno("open "+filepath.Base(to), err)
				return
			}
			defer unix.Close(out)
			total := 0
			for total < n {
				c, err := unix.CopyFileRange(in, &off1, out, &off2, n-total, flags)
				if err == unix.EXDEV && total == 0 && crossFS(from, to) {
					b := make([]byte, n)
					r, _ := unix.Pread(in, b, off1)
					w, werr := unix.Pwrite(out, b[:r], off2)
					tr.add("copy %s -> %s: across filesystems, %d bytes by read and write, %s", filepath.Base(from), filepath.Base(to), w, errText(werr, ""))
					return
				}
				if err != nil || c == 0 {
					tr.add("copy_file_range %s -> %s: %d bytes, %s", filepath.Base(from), filepath.Base(to), total, errText(err, ""))
					return
				}
				total += c
			}
			if crossFS(from, to) {
				tr.add("copy %s -> %s: across filesystems, %d bytes by read and write, ok", filepath.Base(from), filepath.Base(to), total)
				return
			}
			tr.add("copy_file_range %s -> %s: %d bytes, ok", filepath.Base(from), filepath.Base(to), total)
		}
		cfr(p("src"), p("new"), 0, 0, 100000, 0)
		cfr(p("src"), p("dst"), 5, 9, 20, 0)
		cfr(p("src"), p("new2"), 99990, 4096, 100, 0)
		cfr(outside, p("fromout"), 0, 0, 22, 0)
		cfr(p("src"), outside, 0, 3, 10, 0)
		cfr(p("src"), p("bad"), 0, 0, 10, 1)
		for _, f := range []string{"new", "dst", "new2", "fromout", "bad"} {
			h, err := hashFile(p(f))
			tr.add("%s: %s sha=%s %s", f, statLine(p(f)), h, errText(err, ""))
		}
		tr.add("outside: %s", readLine(outside))
	})
}

// TestLocks: flock, open file description (OFD) and POSIX record locks
// conflict and report as on ext4, and keep doing so when the file is copied
// up while locked.
func TestLocks(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		mkfile(t, filepath.Join(dir, "f"), "locked file", 0o644, 0, 0)
		mkfile(t, filepath.Join(dir, "g"), "ofd", 0o644, 0, 0)
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		open := func(n string, flags int) int {
			fd, err := unix.Open(p(n), flags|unix.O_CLOEXEC, 0)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { unix.Close(fd) })
			return fd
		}
		a, b := open("f", unix.O_RDONLY), open("f", unix.O_RDONLY)
		tr.errno("flock a EX", unix.Flock(a, unix.LOCK_EX|unix.LOCK_NB))
		tr.errno("flock b SH", unix.Flock(b, unix.LOCK_SH|unix.LOCK_NB))
		// Copy-up while locked: the lock is on the file, not on a layer.
		w := open("f", unix.O_WRONLY|unix.O_APPEND)
		_, err := unix.Write(w, []byte("+"))
		tr.errno("append (copy-up)", err)
		c := open("f", unix.O_RDONLY)
		tr.errno("flock c EX after copy-up", unix.Flock(c, unix.LOCK_EX|unix.LOCK_NB))
		tr.errno("flock a UN", unix.Flock(a, unix.LOCK_UN))
		tr.errno("flock c EX", unix.Flock(c, unix.LOCK_EX|unix.LOCK_NB))

		ofd := func(fd int, cmd int, typ int16, start, length int64) (unix.Flock_t, error) {
			lk := unix.Flock_t{Type: typ, Whence: 0, Start: start, Len: length}
			err := unix.FcntlFlock(uintptr(fd), cmd, &lk)
			return lk, err
		}
		g1, g2 := open("g", unix.O_RDWR), open("g", unix.O_RDONLY)
		_, err = ofd(g1, unix.F_OFD_SETLK, unix.F_WRLCK, 0, 10)
		tr.errno("OFD write lock g1 0-9", err)
		_, err = ofd(g2, unix.F_OFD_SETLK, unix.F_RDLCK, 5, 1)
		tr.errno("OFD read lock g2 5", err)
		lk, err := ofd(g2, unix.F_OFD_GETLK, unix.F_RDLCK, 0, 0)
		tr.add("OFD getlk g2: type=%d start=%d len=%d pid=%d %s", lk.Type, lk.Start, lk.Len, lk.Pid, errText(err, ""))
		_, err = ofd(g2, unix.F_OFD_SETLK, unix.F_RDLCK, 10, 5)
		tr.errno("OFD read lock g2 10-14", err)
		_, err = ofd(g1, unix.F_OFD_SETLK, unix.F_UNLCK, 0, 0)
		tr.errno("OFD unlock g1", err)
		_, err = ofd(g2, unix.F_OFD_SETLK, unix.F_RDLCK, 5, 1)
		tr.errno("OFD read lock g2 5 again", err)
		// Classic POSIX locks: the process's own locks never conflict.
		_, err = ofd(g1, unix.F_SETLK, unix.F_WRLCK, 100, 10)
		tr.errno("POSIX write lock", err)
		lk, err = ofd(g2, unix.F_GETLK, unix.F_WRLCK, 100, 10)
		tr.add("POSIX getlk own lock: type=%d %s", lk.Type, errText(err, ""))
		_, err = ofd(g2, unix.F_SETLK, unix.F_WRLCK, 0, 1)
		tr.errno("POSIX write lock on a read-only fd", err)
		tr.errno("lockf-style F_SETLKW unlock", func() error { _, err := ofd(g1, unix.F_SETLKW, unix.F_UNLCK, 0, 0); return err }())
	})
}

// TestPosixACLsLikeExt4: access and default ACLs as xattrs: set, read back,
// enforced for another user, inherited by new objects, on a lower file
// (copied up with its ACL) and on a new one.
func TestPosixACLsLikeExt4(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		mkfile(t, filepath.Join(dir, "secret"), "secret", 0o600, 0, 0)
		mkfile(t, filepath.Join(dir, "granted"), "granted", 0o600, 0, 0)
		mkdirOwned(t, filepath.Join(dir, "inherit"), 0o755, 0, 0)
		if err := unix.Setxattr(filepath.Join(dir, "granted"), "system.posix_acl_access", aclXattr(6, 0, 0, 4, 0o600), 0); err != nil {
			t.Fatal(err)
		}
		if err := unix.Setxattr(filepath.Join(dir, "inherit"), "system.posix_acl_default", aclXattr(7, 5, 5, 7, 0o755), 0); err != nil {
			t.Fatal(err)
		}
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		read := func(n string) error {
			_, err := os.ReadFile(p(n))
			return err
		}
		tr.errno("65534 reads secret", asUser(65534, func() error { return read("secret") }))
		tr.errno("65534 reads granted", asUser(65534, func() error { return read("granted") }))
		tr.errno("set ACL on secret", unix.Setxattr(p("secret"), "system.posix_acl_access", aclXattr(6, 4, 0, 4, 0o600), 0))
		tr.errno("65534 reads secret now", asUser(65534, func() error { return read("secret") }))
		tr.add("secret: %s", statLine(p("secret")))
		tr.errno("remove ACL of granted", unix.Removexattr(p("granted"), "system.posix_acl_access"))
		tr.errno("65534 reads granted now", asUser(65534, func() error { return read("granted") }))
		tr.errno("create inherit/f", os.WriteFile(p("inherit/f"), []byte("x"), 0o666))
		tr.errno("mkdir inherit/d", unix.Mkdir(p("inherit/d"), 0o777))
		tr.errno("65534 writes inherit/f", asUser(65534, func() error {
			return os.WriteFile(p("inherit/f"), []byte("y"), 0o666)
		}))
		for _, n := range []string{"secret", "granted", "inherit", "inherit/f", "inherit/d"} {
			acc, err1 := getXattr(p(n), "system.posix_acl_access")
			def, err2 := getXattr(p(n), "system.posix_acl_default")
			tr.add("%s: %s access=%x (%s) default=%x (%s)", n, statLine(p(n)), acc, errText(err1, ""), def, errText(err2, ""))
		}
	})
}

// aclXattr encodes a POSIX ACL (xattr format version 2) with entries for
// the owner, uid 65534 (if userPerm >= 0), the group, the mask and others,
// the owner's, group's and others' permissions taken from mode.
func aclXattr(ownerPerm, userPerm, groupPerm, maskPerm int, mode uint32) []byte {
	type entry struct {
		tag, perm uint16
		id        uint32
	}
	const (
		userObj  = 0x01
		user     = 0x02
		groupObj = 0x04
		mask     = 0x10
		other    = 0x20
	)
	_ = mode
	entries := []entry{{userObj, uint16(ownerPerm), 0xffffffff}}
	if userPerm >= 0 {
		entries = append(entries, entry{user, uint16(userPerm), 65534})
	}
	entries = append(entries,
		entry{groupObj, uint16(groupPerm), 0xffffffff},
		entry{mask, uint16(maskPerm), 0xffffffff},
		entry{other, 0, 0xffffffff})
	b := []byte{2, 0, 0, 0}
	for _, e := range entries {
		b = append(b, byte(e.tag), byte(e.tag>>8), byte(e.perm), byte(e.perm>>8),
			byte(e.id), byte(e.id>>8), byte(e.id>>16), byte(e.id>>24))
	}
	return b
}

// TestOtherUsersLikeExt4: what users 1000 and 65534 may do (read, write,
// create, unlink, rename, chmod, chown, utimes, xattrs) in a tree of
// varied modes and owners is what ext4 allows with the same modes.
func TestOtherUsersLikeExt4(t *testing.T) {
	ext4VsUnion(t, func(t *testing.T, dir string) {
		p := func(n string) string { return filepath.Join(dir, n) }
		mkfile(t, p("public"), "public", 0o644, 0, 0)
		mkfile(t, p("secret"), "secret", 0o600, 0, 0)
		mkfile(t, p("groupw"), "groupw", 0o664, 0, 1000)
		mkfile(t, p("worldw"), "worldw", 0o666, 0, 0)
		mkfile(t, p("mine"), "mine", 0o644, 1000, 1000)
		mkdirOwned(t, p("ro"), 0o555, 0, 0)
		mkfile(t, p("ro/f"), "f", 0o666, 0, 0)
		mkdirOwned(t, p("noread"), 0o711, 0, 0)
		mkfile(t, p("noread/known"), "known", 0o644, 0, 0)
		mkdirOwned(t, p("sticky"), 0o1777, 0, 0)
		mkfile(t, p("sticky/root"), "root's", 0o666, 0, 0)
		mkfile(t, p("sticky/u1000"), "1000's", 0o666, 1000, 1000)
		mkdirOwned(t, p("shared"), 0o777, 0, 0)
		mkfile(t, p("shared/f"), "f", 0o644, 65534, 65534)
		mkdirOwned(t, p("sgid"), 0o2775, 0, 1000)
		mkdirOwned(t, p("home"), 0o755, 1000, 1000)
		mkfile(t, p("home/f"), "f", 0o644, 1000, 1000)
	}, func(t *testing.T, root string, tr *transcript) {
		p := func(n string) string { return filepath.Join(root, n) }
		write := func(n string) error {
			fd, err := unix.Open(p(n), unix.O_WRONLY|unix.O_APPEND|unix.O_CLOEXEC, 0)
			if err != nil {
				return err
			}
			_, err = unix.Write(fd, []byte("+"))
			return firstErr(err, unix.Close(fd))
		}
		create := func(n string) error {
			fd, err := unix.Open(p(n), unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o664)
			if err != nil {
				return err
			}
			return unix.Close(fd)
		}
		read := func(n string) error { _, err := os.ReadFile(p(n)); return err }
		list := func(n string) error { _, err := os.ReadDir(p(n)); return err }
		now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
		old := []unix.Timespec{{Sec: 100}, {Sec: 100}}
		cases := []struct {
			name string
			fn   func() error
		}{
			{"read public", func() error { return read("public") }},
			{"read secret", func() error { return read("secret") }},
			{"write public", func() error { return write("public") }},
			{"write groupw", func() error { return write("groupw") }},
			{"write worldw", func() error { return write("worldw") }},
			{"write mine", func() error { return write("mine") }},
			{"truncate worldw", func() error { return unix.Truncate(p("worldw"), 2) }},
			{"truncate public", func() error { return unix.Truncate(p("public"), 2) }},
			{"create in root", func() error { return create("new") }},
			{"create in ro", func() error { return create("ro/new") }},
			{"write ro/f", func() error { return write("ro/f") }},
			{"unlink ro/f", func() error { return unix.Unlink(p("ro/f")) }},
			{"list noread", func() error { return list("noread") }},
			{"read noread/known", func() error { return read("noread/known") }},
			{"create in shared", func() error { return create("shared/mine") }},
			{"unlink shared/f", func() error { return unix.Unlink(p("shared/f")) }},
			{"rename in shared", func() error { return unix.Rename(p("shared/mine"), p("shared/moved")) }},
			{"unlink sticky/root", func() error { return unix.Unlink(p("sticky/root")) }},
			{"unlink sticky/u1000", func() error { return unix.Unlink(p("sticky/u1000")) }},
			{"rename sticky/root", func() error { return unix.Rename(p("sticky/root"), p("sticky/r2")) }},
			{"create in sgid", func() error { return create("sgid/f") }},
			{"mkdir in sgid", func() error { return unix.Mkdir(p("sgid/d"), 0o755) }},
			{"chmod public", func() error { return unix.Chmod(p("public"), 0o777) }},
			{"chmod mine", func() error { return unix.Chmod(p("mine"), 0o4755) }},
			{"chown mine to root", func() error { return unix.Chown(p("mine"), 0, 0) }},
			{"chown mine to group 65534", func() error { return unix.Chown(p("mine"), -1, 65534) }},
			{"chown mine to group 1000", func() error { return unix.Chown(p("mine"), -1, 1000) }},
			{"utimes now worldw", func() error { return unix.UtimesNano(p("worldw"), now) }},
			{"utimes old worldw", func() error { return unix.UtimesNano(p("worldw"), old) }},
			{"utimes old mine", func() error { return unix.UtimesNano(p("mine"), old) }},
			{"setxattr mine", func() error { return unix.Setxattr(p("mine"), "user.x", []byte("1"), 0) }},
			{"setxattr worldw", func() error { return unix.Setxattr(p("worldw"), "user.x", []byte("1"), 0) }},
			{"setxattr public", func() error { return unix.Setxattr(p("public"), "user.x", []byte("1"), 0) }},
			{"setxattr trusted on mine", func() error { return unix.Setxattr(p("mine"), "trusted.x", []byte("1"), 0) }},
			{"rename home/f to root", func() error { return unix.Rename(p("home/f"), p("fromhome")) }},
			{"rmdir home", func() error { return unix.Rmdir(p("home")) }},
			{"link public", func() error { return unix.Link(p("public"), p("shared/publink")) }},
			{"symlink in shared", func() error { return unix.Symlink("x", p("shared/sym")) }},
			{"mkfifo in shared", func() error { return unix.Mkfifo(p("shared/fifo"), 0o644) }},
		}
		for _, uid := range []int{1000, 65534} {
			for _, c := range cases {
				tr.errno(fmt.Sprintf("uid %d: %s", uid, c.name), asUser(uid, c.fn))
			}
		}
		var names []string
		err := filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
			if err == nil && path != root {
				names = append(names, strings.TrimPrefix(path, root+"/"))
			}
			return err
		})
		tr.errno("walk", err)
		for _, n := range names {
			tr.add("%s: %s", n, statLine(p(n)))
		}
	})
}

// TestSharedMmapSeesCopyUp: a file mapped MAP_SHARED through a read-only
// descriptor opened before its copy-up shows what is written afterwards
// (SPEC §5; kernel overlayfs documents that its mapping keeps the lower
// file, an intended difference). Writes through a shared writable mapping
// are seen by read(2) on another descriptor.
func TestSharedMmapSeesCopyUp(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := &side{name: "unionmount", stack: newStack(t, stackSpec{lowers: [][]Entry{{
		File("f", strings.Repeat("a", 8192)),
	}}})}
	s.mount(t, nil)
	p := filepath.Join(s.mnt, "f")
	fd, err := unix.Open(p, unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(fd, 0, 8192, unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	if string(m[:3]) != "aaa" {
		t.Fatalf("mapping shows %q before the copy-up", m[:3])
	}
	w, err := unix.Open(p, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	for i, chunk := range []struct {
		off  int64
		data string
	}{{0, "NEW"}, {4096, "SECOND PAGE"}} {
		if _, err := unix.Pwrite(w, []byte(chunk.data), chunk.off); err != nil {
			t.Fatal(err)
		}
		if got := string(m[chunk.off : chunk.off+int64(len(chunk.data))]); got != chunk.data {
			t.Errorf("write %d: the shared mapping (read-only fd opened before the copy-up) shows %q, want %q", i, got, chunk.data)
		}
	}
	// A writable shared mapping of the (now upper) file, read back by read(2).
	wm, err := unix.Mmap(w, 0, 8192, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	copy(wm[100:], "VIA MAPPING")
	buf := make([]byte, 11)
	if _, err := unix.Pread(fd, buf, 100); err != nil || string(buf) != "VIA MAPPING" {
		t.Errorf("read(2) after a store through a shared mapping: %q %v, want \"VIA MAPPING\"", buf, err)
	}
	if string(m[100:111]) != "VIA MAPPING" {
		t.Errorf("the read-only mapping after a store through the writable one: %q", m[100:111])
	}
	if err := unix.Msync(wm, unix.MS_SYNC); err != nil {
		t.Errorf("msync: %v", err)
	}
	for _, mapping := range [][]byte{m, wm} {
		if err := unix.Munmap(mapping); err != nil {
			t.Error(err)
		}
	}
	unix.Close(w)
	unix.Close(fd)
	s.unmount(t)
	if b, err := os.ReadFile(filepath.Join(s.upper, "f")); err != nil || !bytes.HasPrefix(b, []byte("NEW")) || string(b[100:111]) != "VIA MAPPING" || string(b[4096:4107]) != "SECOND PAGE" {
		t.Errorf("upper/f after unmount: %q... %v", short(string(b)), err)
	}
}

// TestLowerHardlinksAcrossRemount: hard links of a lower file stay one
// inode after one name is copied up: same data and st_ino through every
// name, the right st_nlink through link and unlink, and all of it again
// after unmount and remount. Kernel overlayfs (index=on) passes it too.
func TestLowerHardlinksAcrossRemount(t *testing.T) {
	t.Parallel()
	spec := stackSpec{lowers: [][]Entry{{
		File("a", "shared"),
		Hardlink("b", "a"),
		Dir("d"),
		Hardlink("d/c", "a"),
		File("other", "other"),
	}}}
	bothFilesystems(t, spec, func(t *testing.T, s *side) {
		s.kernelOpts = []string{"index=on"}
		check := func(when string, names []string, content string, nlink uint64) {
			t.Helper()
			var ino uint64
			for _, n := range names {
				st, err := lstatPath(filepath.Join(s.mnt, n))
				if err != nil {
					t.Errorf("%s: %s: %s: %v", s.name, when, n, err)
					continue
				}
				b, _ := os.ReadFile(filepath.Join(s.mnt, n))
				if string(b) != content || st.Nlink != nlink {
					t.Errorf("%s: %s: %s: %q nlink %d, want %q nlink %d", s.name, when, n, b, st.Nlink, content, nlink)
				}
				if ino == 0 {
					ino = st.Ino
				} else if st.Ino != ino {
					t.Errorf("%s: %s: %s: st_ino %d, another name has %d", s.name, when, n, st.Ino, ino)
				}
			}
			if st, _ := lstatPath(filepath.Join(s.mnt, "other")); st.Ino == ino {
				t.Errorf("%s: %s: an unrelated file has the same st_ino %d", s.name, when, ino)
			}
		}
		s.mount(t, nil)
		check("before", []string{"a", "b", "d/c"}, "shared", 3)
		mustOps(t, s.name, s.mnt, []op{opWrite("b", wr|appnd, -1, "+b")})
		check("after writing b", []string{"a", "b", "d/c"}, "shared+b", 3)
		mustOps(t, s.name, s.mnt, []op{opChmod("d/c", 0o600), opLink("a", "e")})
		check("after chmod and link", []string{"a", "b", "d/c", "e"}, "shared+b", 4)
		s.unmount(t)
		s.mount(t, nil)
		check("after remount", []string{"a", "b", "d/c", "e"}, "shared+b", 4)
		mustOps(t, s.name, s.mnt, []op{opUnlink("a"), opWrite("d/c", wr|appnd, -1, "+c")})
		check("after unlink", []string{"b", "d/c", "e"}, "shared+b+c", 3)
		if st, _ := lstatPath(filepath.Join(s.mnt, "b")); st.Mode&0o777 != 0o600 {
			t.Errorf("%s: b: mode %o, want 600 (chmod through d/c)", s.name, st.Mode&0o777)
		}
		s.unmount(t)
		s.mount(t, nil)
		check("after second remount", []string{"b", "d/c", "e"}, "shared+b+c", 3)
		s.unmount(t)
	})
}

// TestStDevIsTheMounts: st_dev of every object, lower, upper, copied up or
// open, is the mount's device.
func TestStDevIsTheMounts(t *testing.T) {
	t.Parallel()
	spec := stackSpec{lowers: [][]Entry{{
		File("f", "f"), Dir("d"), File("d/g", "g"), Symlink("l", "f"), Fifo("p"), File("c", "to copy up"),
	}}}
	bothFilesystems(t, spec, func(t *testing.T, s *side) {
		s.mount(t, nil)
		defer s.unmount(t)
		mustOps(t, s.name, s.mnt, []op{opCreate("new", "n", 0o644), opMkdir("nd", 0o755), opWrite("c", wr|appnd, -1, "+")})
		want := mountDev(t, s.mnt)
		for _, n := range []string{".", "f", "d", "d/g", "l", "p", "c", "new", "nd"} {
			st, err := lstatPath(filepath.Join(s.mnt, n))
			if err != nil {
				t.Errorf("%s: %s: %v", s.name, n, err)
				continue
			}
			if st.Dev != want {
				t.Errorf("%s: %s: st_dev %d:%d, the mount is %d:%d", s.name, n, unix.Major(st.Dev), unix.Minor(st.Dev), unix.Major(want), unix.Minor(want))
			}
		}
		fd, err := unix.Open(filepath.Join(s.mnt, "c"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(fd)
		var st unix.Stat_t
		if err := unix.Fstat(fd, &st); err != nil || st.Dev != want {
			t.Errorf("%s: fstat c: st_dev %d:%d (%v), the mount is %d:%d", s.name, unix.Major(st.Dev), unix.Minor(st.Dev), err, unix.Major(want), unix.Minor(want))
		}
	})
}

// mountDev is the device number /proc/self/mountinfo gives the mount at mnt.
func mountDev(t *testing.T, mnt string) uint64 {
	t.Helper()
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && f[4] == mnt {
			var maj, min uint32
			if _, err := fmt.Sscanf(f[2], "%d:%d", &maj, &min); err != nil {
				t.Fatal(err)
			}
			return unix.Mkdev(maj, min)
		}
	}
	t.Fatalf("%s not in mountinfo", mnt)
	return 0
}

// TestMergedDirNlink: a directory's st_nlink is 2 + its subdirectories as
// listed, through merging, whiteouts, mkdir, rmdir and renames, and after a
// remount (kernel overlayfs reports 1 for merged directories).
func TestMergedDirNlink(t *testing.T) {
	t.Parallel()
	requireMountable(t)
	s := &side{name: "unionmount", stack: newStack(t, stackSpec{lowers: [][]Entry{
		{Dir("m/a"), Dir("m/b"), File("m/f", "f"), Dir("m/hidden"), Dir("other/x")},
		{Dir("m/b"), Dir("m/c"), Dir("m/c/deep"), Dir("m/d"), File("m/e", "e")},
	}})}
	s.mount(t, nil)
	check := func(when string) {
		t.Helper()
		tree := snapshot(t, s.mnt)
		reportDiff(t, "directory link counts "+when, dirNlinkProblems(tree))
		// find(1) relies on them to skip leaves: both walks must agree.
		ran := func(args ...string) string {
			out, err := execIn(s.mnt, "find", args...)
			if err != nil {
				t.Fatalf("find %v: %v: %s", args, err, out)
			}
			return out
		}
		if a, b := ran(".", "-type", "d"), ran(".", "-noleaf", "-type", "d"); a != b {
			t.Errorf("%s: find lists other directories with and without -noleaf:\n%s\nvs\n%s", when, a, b)
		}
	}
	check("at mount")
	mustOps(t, s.name, s.mnt, []op{
		opRmdir("m/hidden"), opMkdir("m/new", 0o755), opRename("other/x", "m/moved"),
		opRename("m/a", "other/a"), opMkdir("m/hidden", 0o755), opRmdir("m/d"),
		opRename("m/c", "m/c2"), opUnlink("m/e"), opMkdir("m/e", 0o755),
	})
	check("after changes")
	s.unmount(t)
	s.mount(t, nil)
	check("after remount")
	s.unmount(t)
}

// execIn runs a program in dir and returns its combined output.
func execIn(dir, name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Dir = dir
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// TestStackedUpper: an upper written by unionmount, used as the top lower
// of a new mount under a fresh upper, shows the same tree (types, modes,
// owners, contents, xattrs, times, hard links), with unionmount and with
// kernel overlayfs.
func TestStackedUpper(t *testing.T) {
	t.Parallel()
	requireMountable(t)
	s := &side{name: "unionmount", stack: newStack(t, stackSpec{lowers: [][]Entry{{
		File("etc/conf", "a=1\n"), File("etc/gone", "x"), Dir("var/lib/old"), File("var/lib/old/f", "f"),
		Dir("dir/sub"), File("dir/sub/f", "f"), File("big", strings.Repeat("b", 100000)), File("meta", "data"),
		File("link1", "linked"), Hardlink("link2", "link1"), Dir("opq/x"), File("opq/y", "y"),
	}}})}
	s.mount(t, nil)
	mustOps(t, s.name, s.mnt, []op{
		opWrite("etc/conf", wr|appnd, -1, "b=2\n"), opUnlink("etc/gone"), opRename("var/lib/old", "var/lib/new"),
		opRename("dir", "renamed"), opChmod("meta", 0o600), opSetxattr("meta", "user.m", "1"),
		opLchown("big", 7, 7), opWrite("link2", wr|appnd, -1, "+"), opCreate("etc/new", "new", 0o640),
		opUnlink("opq/y"), opRmdir("opq/x"), opRmdir("opq"), opMkdir("opq", 0o700), opCreate("opq/z", "z", 0o644),
		opSymlink("etc/conf", "sym"), opMkdir("var/empty", 0o755), opUtimes("var/empty", layerTime, layerTime),
	})
	first := snapshot(t, s.mnt)
	s.unmount(t)

	base := t.TempDir()
	up2, work2 := filepath.Join(base, "upper2"), filepath.Join(base, "work2")
	for _, d := range []string{up2, work2} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	lowers := append([]string{s.upper}, s.lowers...)
	opts := diffOpts{}
	// The root of a mount is its upper's root: a fresh directory here.
	// link1 and link2 were one lower inode, kept whole by the index in
	// workdir, which a layer does not carry: stacked, link1 is the lower
	// file again, with unionmount as with the kernel (compared below).
	skip := map[string]bool{".": true, "link1": true, "link2": true}
	without := func(tree Tree) Tree {
		out := Tree{}
		for p, n := range tree {
			if !skip[p] {
				out[p] = n
			}
		}
		return out
	}
	stacked := mountUnion(t, lowers, up2, work2)
	ours := snapshot(t, stacked)
	reportDiff(t, "unionmount over its own upper as a lower vs the first mount", diffTrees("first", without(first), "stacked", without(ours), opts))
	unmount(t, stacked)
	for _, d := range []string{"kupper", "kwork"} {
		if err := os.Mkdir(filepath.Join(base, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	kern := mountKernel(t, lowers, filepath.Join(base, "kupper"), filepath.Join(base, "kwork"), "metacopy=on")
	theirs := snapshot(t, kern)
	reportDiff(t, "kernel overlayfs over unionmount's upper as a lower vs the first mount", diffTrees("first", without(first), "kernel-stacked", without(theirs), opts))
	delete(skip, "link1")
	delete(skip, "link2")
	reportDiff(t, "unionmount vs kernel overlayfs, both over unionmount's upper as a lower", diffTrees("kernel-stacked", without(theirs), "stacked", without(ours), opts))
	unmount(t, kern)
}

// TestChownNoChangeUpdatesCtime (issue 14 item 8b): chown(path, -1, -1)
// changes nothing but ctime. POSIX allows leaving ctime alone; kernel
// overlayfs updates it (on the copy of a lower object, and on an upper
// file or directory), and so must unionmount. Each object's ctime is
// compared after the coarse clock has passed it, so an update shows.
func TestChownNoChangeUpdatesCtime(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	spec := stackSpec{
		lowers: [][]Entry{{File("lowerfile", "l\n"), Dir("lowerdir"), File("setuid", "s\n").WithMode(0o4755)}},
		upper:  []Entry{File("upperfile", "u\n"), Dir("upperdir")},
	}
	names := []string{"lowerfile", "lowerdir", "upperfile", "upperdir", "."}
	for _, kind := range []overlayKind{kindKernel, kindUnionmount} {
		s := newStack(t, spec)
		mnt := mountOverlay(t, kind, s.lowers, s.upper, s.work)
		for _, name := range names {
			p := filepath.Join(mnt, name)
			var before, after unix.Stat_t
			if err := unix.Stat(p, &before); err != nil {
				t.Fatal(err)
			}
			waitClockPast(before.Ctim)
			if err := unix.Chown(p, -1, -1); err != nil {
				t.Fatalf("%s: chown %s -1 -1: %v", kind, name, err)
			}
			if err := unix.Stat(p, &after); err != nil {
				t.Fatal(err)
			}
			if after.Ctim == before.Ctim {
				t.Errorf("%s: chown(%s, -1, -1) left ctime at %d.%09d", kind, name, before.Ctim.Sec, before.Ctim.Nsec)
			}
			if after.Uid != before.Uid || after.Gid != before.Gid || after.Mode != before.Mode {
				t.Errorf("%s: chown(%s, -1, -1) changed owner or mode: %d:%d %o -> %d:%d %o", kind, name,
					before.Uid, before.Gid, before.Mode, after.Uid, after.Gid, after.Mode)
			}
		}
		// A copy-up that applies a chmod leaves nothing for a ctime-only
		// change to do: the set-user-ID bit stays.
		if err := unix.Chmod(filepath.Join(mnt, "setuid"), 0o4755); err != nil {
			t.Fatal(err)
		}
		var st unix.Stat_t
		if err := unix.Stat(filepath.Join(mnt, "setuid"), &st); err != nil || st.Mode&0o7777 != 0o4755 {
			t.Errorf("%s: chmod 4755 of a lower set-user-ID file: mode %o, %v", kind, st.Mode&0o7777, err)
		}
		unmount(t, mnt)
	}
}
