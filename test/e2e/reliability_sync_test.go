package e2e

// fsync, fdatasync, syncfs, O_SYNC and O_DSYNC through the mount reach the
// upper's disk (issue 6): the upper is an ext4 image on a loop device, and
// after each sync the written bytes must be in the image file itself, which
// holds only what the upper filesystem wrote back (its dirty page cache is
// not in it). Then the daemon is killed, the union remounted, and the data
// read back. A copy-up is on disk before it is renamed into place, so the
// copied data is in the image even before any sync of the user's.
//
// syncfs(2) on the mount is the exception, a limit of FUSE (README,
// Limitations): the kernel sends FUSE_SYNCFS to virtiofs servers only, so
// unionmount never hears of it. The test notes whether it reached the disk
// and checks that sync(2) does.

import (
	"bytes"
	"crypto/rand"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func TestSyncReachesUpperDisk(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	fsdir := mountImage(t, 128<<20, "ext4", "mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0")
	img := filepath.Join(filepath.Dir(fsdir), "fs.img")
	base := t.TempDir()
	lower, mnt := filepath.Join(base, "lower"), filepath.Join(base, "mnt")
	upper, work := filepath.Join(fsdir, "upper"), filepath.Join(fsdir, "work")
	for _, d := range []string{lower, mnt, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pattern := func() []byte {
		b := make([]byte, 64<<10)
		if _, err := rand.Read(b); err != nil {
			t.Fatal(err)
		}
		return b
	}
	// Lower files to be copied up by a write; their data is unique too.
	methods := []string{"fsync", "fdatasync", "O_SYNC", "O_DSYNC", "syncfs", "sync", "none"}
	lowerData := map[string][]byte{}
	for _, m := range methods {
		lowerData[m] = pattern()
		if err := os.WriteFile(filepath.Join(lower, "old-"+m), lowerData[m], 0o644); err != nil {
			t.Fatal(err)
		}
	}
	guardLowers(t, lower)
	opts := unionOptions([]string{lower}, upper, work, nil)
	d := startDaemon(t, binPath, mnt, opts)

	inImage := func(b []byte) bool {
		// The first block is enough: file data is block aligned on disk.
		data, err := os.ReadFile(img)
		if err != nil {
			t.Fatal(err)
		}
		return bytes.Contains(data, b[:4096])
	}
	written := map[string][]byte{}
	for _, m := range methods {
		for _, name := range []string{"new-" + m, "old-" + m} {
			flags := unix.O_WRONLY | unix.O_CLOEXEC
			if name[:3] == "new" {
				flags |= unix.O_CREAT | unix.O_EXCL
			} else {
				flags |= unix.O_APPEND
			}
			switch m {
			case "O_SYNC":
				flags |= unix.O_SYNC
			case "O_DSYNC":
				flags |= unix.O_DSYNC
			}
			fd, err := unix.Open(filepath.Join(mnt, name), flags|unix.O_CLOEXEC, 0o644)
			if err != nil {
				t.Fatalf("%s: open: %v", name, err)
			}
			b := pattern()
			if _, err := unix.Write(fd, b); err != nil {
				t.Fatalf("%s: write: %v", name, err)
			}
			switch m {
			case "fsync":
				err = unix.Fsync(fd)
			case "fdatasync":
				err = unix.Fdatasync(fd)
			case "syncfs":
				err = unix.Syncfs(fd)
			case "sync":
				unix.Sync()
			}
			if err != nil {
				t.Errorf("%s: %s: %v", name, m, err)
			}
			synced := inImage(b)
			switch {
			case m == "syncfs":
				t.Logf("%s: syncfs on the mount reached the upper's disk: %v (FUSE sends syncfs to virtiofs only)", name, synced)
			case m != "none" && !synced:
				t.Errorf("%s: data written and synced with %s through the mount is not on the upper's disk", name, m)
			case m == "none" && synced:
				t.Logf("%s: unsynced data already on disk (written back early): the control shows nothing here", name)
			case m == "none":
				t.Logf("%s: control: unsynced data not on disk yet, as expected (the check can tell)", name)
			}
			if name[:3] == "old" && !inImage(lowerData[m]) {
				t.Errorf("%s: the copied-up lower data is not on disk: copy-up must sync before renaming into place", name)
			}
			written[name] = b
			if err := unix.Close(fd); err != nil {
				t.Errorf("%s: close: %v", name, err)
			}
		}
	}
	d.kill()
	d = startDaemon(t, binPath, mnt, opts)
	for name, b := range written {
		want := b
		if name[:3] == "old" {
			want = append(append([]byte(nil), lowerData[name[4:]]...), b...)
		}
		got, err := os.ReadFile(filepath.Join(mnt, name))
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("%s after SIGKILL and remount: %d bytes (%v), want %d: %s", name, len(got), err, len(want), describeData(got, want))
		}
	}
	d.stop()
	wantCheckClean(t, opts)
}
