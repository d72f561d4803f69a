// Package mountinfo answers what is mounted where, from
// /proc/self/mountinfo.
package mountinfo

import (
	"bufio"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// FsType returns the filesystem type of the topmost mount at dir ("fuse.unionmount",
// "overlay", ...), or "" if dir is not a mount point. dir must be absolute and clean.
func FsType(dir string) (typ string, err error) {
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return "", err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 5 || Unescape(fields[4]) != dir {
			continue
		}
		for i := 5; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				typ = fields[i+1] // the last one listed is the top of the stack
				break
			}
		}
	}
	return typ, sc.Err()
}

// Unescape undoes mountinfo's octal escapes (\040 for a space).
func Unescape(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if n, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(n))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// mounted reports whether table (a mountinfo file's text) lists a mount of
// the filesystem with device number dev ("major:minor").
func mounted(table, dev string) bool {
	for _, line := range strings.Split(table, "\n") {
		if f := strings.Fields(line); len(f) > 2 && f[2] == dev {
			return true
		}
	}
	return false
}

// MountedElsewhere reports whether a filesystem with device number dev
// ("major:minor", as in field 3 of mountinfo) is mounted in a mount
// namespace other than this process's, as far as /proc shows: the table of
// one process of each other namespace is read.
func MountedElsewhere(dev string) (bool, error) {
	own, err := os.Readlink("/proc/self/ns/mnt")
	if err != nil {
		return false, err
	}
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return false, err
	}
	seen := map[string]bool{own: true}
	for _, e := range ents {
		if _, err := strconv.Atoi(e.Name()); err != nil {
			continue
		}
		ns, err := os.Readlink("/proc/" + e.Name() + "/ns/mnt")
		if err != nil || seen[ns] {
			continue // gone meanwhile, or not ours to look at
		}
		seen[ns] = true
		table, err := os.ReadFile("/proc/" + e.Name() + "/mountinfo")
		if err == nil && mounted(string(table), dev) {
			return true, nil
		}
	}
	return false, nil
}

// WaitGone blocks until no mount of the filesystem with device number dev
// ("major:minor", unique to it while it lives) is left in this namespace's
// mount table (the kernel signals every change of it to poll), or done is
// closed. Not a mount ID: those are reused, by anyone's next mount.
func WaitGone(dev string, done <-chan struct{}) error {
	fd, err := unix.Open("/proc/self/mountinfo", unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	for {
		select {
		case <-done:
			return nil
		default:
		}
		table, err := os.ReadFile("/proc/self/mountinfo")
		if err != nil {
			return err
		}
		if !mounted(string(table), dev) {
			return nil
		}
		// POLLPRI on a change of the table (the poll itself resets the
		// event); wake up now and then to see done closed.
		pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLPRI}}
		n, err := unix.Poll(pfd, 1000)
		if err != nil && err != unix.EINTR {
			return err
		}
		if n > 0 {
			// Other mounts come and go in bursts (a container start, a
			// test suite): look at the table at most a few times a second.
			select {
			case <-done:
				return nil
			case <-time.After(changeCoalesce):
			}
		}
	}
}

// changeCoalesce is how long WaitGone lets mount table changes gather
// before it reads the table again.
const changeCoalesce = 200 * time.Millisecond
