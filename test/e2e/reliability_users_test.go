package e2e

// Other users on a root mount with allow_other (issue 6), beyond
// TestOtherUsersSeeModeBits (cli_test.go) and TestOtherUsersLikeExt4
// (posix2_test.go): the same objects in three states, only in a lower,
// made in upper, and copied up by root through the mount (metadata-only
// copies, a 0700 directory among them), and what uid 65534 can do to them
// (read a 0600 file, write into a 0755 root directory, chmod, chown or set
// times or xattrs on root's files, see through a 0700 directory) must be
// exactly what ext4 allows. And a refused operation leaves no trace: the
// upper is byte for byte as before (a refused chmod copies nothing up).

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func usersSetup(t *testing.T, dir string) {
	p := func(n string) string { return filepath.Join(dir, n) }
	mkfile(t, p("secret"), "secret", 0o600, 0, 0)
	mkfile(t, p("public"), "public", 0o644, 0, 0)
	mkfile(t, p("groupr"), "groupr", 0o640, 0, 65534)
	mkfile(t, p("nobodys"), "nobody's", 0o644, 65534, 65534)
	mkdirOwned(t, p("rootdir"), 0o755, 0, 0)
	mkfile(t, p("rootdir/f"), "f", 0o644, 0, 0)
	mkdirOwned(t, p("private"), 0o700, 0, 0)
	mkfile(t, p("private/inside"), "inside", 0o644, 0, 0)
	mkdirOwned(t, p("private/sub"), 0o755, 0, 0)
	if err := os.Symlink("inside", p("private/link")); err != nil {
		t.Fatal(err)
	}
	mkdirOwned(t, p("xonly"), 0o711, 0, 0)
	mkfile(t, p("xonly/known"), "known", 0o644, 0, 0)
	for _, f := range []string{"secret", "public"} {
		if err := unix.Setxattr(p(f), "user.k", []byte("v"), 0); err != nil {
			t.Fatal(err)
		}
	}
}

// usersScenario is what uid 65534 tries; each line of the transcript is
// an operation and its errno.
func usersScenario(root string, tr *transcript, noTrace func(name string, err error)) {
	p := func(n string) string { return filepath.Join(root, n) }
	now := []unix.Timespec{{Nsec: unix.UTIME_NOW}, {Nsec: unix.UTIME_NOW}}
	old := []unix.Timespec{{Sec: 100}, {Sec: 100}}
	open := func(n string, flags int) error {
		fd, err := unix.Open(p(n), flags|unix.O_CLOEXEC, 0o644)
		if err == nil {
			if flags&(unix.O_WRONLY|unix.O_RDWR) != 0 {
				_, err = unix.Write(fd, []byte("+"))
			}
			unix.Close(fd)
		}
		return err
	}
	cases := []struct {
		name string
		fn   func() error
	}{
		{"read secret", func() error { return open("secret", unix.O_RDONLY) }},
		{"read public", func() error { return open("public", unix.O_RDONLY) }},
		{"read groupr", func() error { return open("groupr", unix.O_RDONLY) }},
		{"append public", func() error { return open("public", unix.O_WRONLY|unix.O_APPEND) }},
		{"O_TRUNC public", func() error { return open("public", unix.O_WRONLY|unix.O_TRUNC) }},
		{"truncate secret", func() error { return unix.Truncate(p("secret"), 1) }},
		{"getxattr user.k secret", func() error { _, err := unix.Getxattr(p("secret"), "user.k", make([]byte, 16)); return err }},
		{"getxattr user.k public", func() error { _, err := unix.Getxattr(p("public"), "user.k", make([]byte, 16)); return err }},
		{"setxattr user.x public", func() error { return unix.Setxattr(p("public"), "user.x", []byte("1"), 0) }},
		{"removexattr user.k public", func() error { return unix.Removexattr(p("public"), "user.k") }},
		{"chmod public", func() error { return unix.Chmod(p("public"), 0o666) }},
		{"chown public to 65534", func() error { return unix.Chown(p("public"), 65534, -1) }},
		{"chgrp public to 65534", func() error { return unix.Chown(p("public"), -1, 65534) }},
		{"utimes now public", func() error { return unix.UtimesNano(p("public"), now) }},
		{"utimes old public", func() error { return unix.UtimesNano(p("public"), old) }},
		{"create in rootdir", func() error { return open("rootdir/new", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL) }},
		{"mkdir in rootdir", func() error { return unix.Mkdir(p("rootdir/d"), 0o755) }},
		{"symlink in rootdir", func() error { return unix.Symlink("x", p("rootdir/s")) }},
		{"mkfifo in rootdir", func() error { return unix.Mkfifo(p("rootdir/fifo"), 0o644) }},
		{"link nobodys into rootdir", func() error { return unix.Link(p("nobodys"), p("rootdir/l")) }},
		{"rename rootdir/f out", func() error { return unix.Rename(p("rootdir/f"), p("f-moved")) }},
		{"rename nobodys into rootdir", func() error { return unix.Rename(p("nobodys"), p("rootdir/n")) }},
		{"unlink rootdir/f", func() error { return unix.Unlink(p("rootdir/f")) }},
		{"rmdir rootdir", func() error { return unix.Rmdir(p("rootdir")) }},
		{"unlink public (root's, in root's dir)", func() error { return unix.Unlink(p("public")) }},
		{"stat private/inside", func() error { var st unix.Stat_t; return unix.Lstat(p("private/inside"), &st) }},
		{"read private/inside", func() error { return open("private/inside", unix.O_RDONLY) }},
		{"readdir private", func() error { _, err := os.ReadDir(p("private")); return err }},
		{"readlink private/link", func() error { _, err := os.Readlink(p("private/link")); return err }},
		{"open private/sub", func() error { return open("private/sub", unix.O_RDONLY|unix.O_DIRECTORY) }},
		{"chmod private", func() error { return unix.Chmod(p("private"), 0o777) }},
		{"readdir xonly", func() error { _, err := os.ReadDir(p("xonly")); return err }},
		{"read xonly/known", func() error { return open("xonly/known", unix.O_RDONLY) }},
		{"create in xonly", func() error { return open("xonly/new", unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL) }},
		{"chmod nobodys 0600", func() error { return unix.Chmod(p("nobodys"), 0o600) }},
		{"chmod nobodys 4755", func() error { return unix.Chmod(p("nobodys"), 0o4755) }},
		{"chown nobodys to root", func() error { return unix.Chown(p("nobodys"), 0, 0) }},
		{"utimes old nobodys", func() error { return unix.UtimesNano(p("nobodys"), old) }},
		{"setxattr trusted nobodys", func() error { return unix.Setxattr(p("nobodys"), "trusted.x", []byte("1"), 0) }},
		{"setxattr user nobodys", func() error { return unix.Setxattr(p("nobodys"), "user.x", []byte("1"), 0) }},
	}
	for _, c := range cases {
		err := asUser(65534, c.fn)
		tr.errno(c.name, err)
		noTrace(c.name, err)
	}
	// What is left, as root sees it.
	var names []string
	_ = filepath.Walk(root, func(path string, _ os.FileInfo, err error) error {
		if err == nil && path != root {
			names = append(names, strings.TrimPrefix(path, root+"/"))
		}
		return nil
	})
	for _, n := range names {
		tr.add("%s: %s %s", n, statLine(p(n)), readLine(p(n)))
	}
}

func TestOtherUsersAllStates(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	base := t.TempDir()
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(base, "ext4")
	if err := os.Mkdir(ref, 0o755); err != nil {
		t.Fatal(err)
	}
	usersSetup(t, ref)
	traversable(t, ref)
	var want transcript
	usersScenario(ref, &want, func(string, error) {})
	cases := 0
	for _, state := range []string{"lower", "upper", "copied-up"} {
		t.Run(state, func(t *testing.T) {
			s := newStack(t, stackSpec{lowers: [][]Entry{{}}})
			if err := os.Chmod(s.base, 0o755); err != nil {
				t.Fatal(err)
			}
			if state != "upper" {
				usersSetup(t, s.lowers[0])
			}
			guardLowers(t, s.lowers...)
			mnt := mountUnion(t, s.lowers, s.upper, s.work)
			traversable(t, mnt)
			switch state {
			case "upper":
				usersSetup(t, mnt)
			case "copied-up":
				// root copies everything up, metadata only: chmod to
				// the same mode.
				_ = filepath.Walk(mnt, func(path string, fi os.FileInfo, err error) error {
					if err == nil && path != mnt && fi.Mode()&os.ModeSymlink == 0 {
						var st unix.Stat_t
						if unix.Lstat(path, &st) == nil {
							err = unix.Chmod(path, st.Mode&0o7777)
						}
					}
					return err
				})
			}
			upperBefore := rawUpperState(t, s.upper)
			var got transcript
			usersScenario(mnt, &got, func(name string, err error) {
				if err == nil {
					upperBefore = rawUpperState(t, s.upper)
					return
				}
				if after := rawUpperState(t, s.upper); after != upperBefore {
					t.Errorf("uid 65534 %s was refused (%v) but the upper changed:\nbefore:\n%s\nafter:\n%s", name, err, upperBefore, after)
					upperBefore = after
				}
			})
			compareTranscripts(t, want.lines, got.lines)
			cases += len(got.lines)
		})
	}
	t.Logf("%d permission observations (uid 65534 vs root's objects in lower, upper and copied up), all as on ext4", cases)
}

// rawUpperState describes everything in upper, xattrs included, for a
// byte-for-byte comparison.
func rawUpperState(t *testing.T, upper string) string {
	t.Helper()
	var b strings.Builder
	err := walkNoatime(upper, ".", func(rel string, st *unix.Stat_t) error {
		x, _ := listXattrs(filepath.Join(upper, rel))
		fmt.Fprintf(&b, "%s mode=%o uid=%d gid=%d size=%d mtime=%d.%d xattrs=%s\n", rel, st.Mode, st.Uid, st.Gid, st.Size, st.Mtim.Sec, st.Mtim.Nsec, fmtXattrs(x))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return b.String()
}
