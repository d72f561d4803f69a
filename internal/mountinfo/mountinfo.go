// Package mountinfo answers what is mounted where, from
// /proc/self/mountinfo.
package mountinfo

import (
	"bufio"
	"io"
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

// Proc reads mount tables through a descriptor of procfs opened once, so
// that nothing is looked up by path afterwards: a daemon whose union became
// its root (pivot_root) would otherwise look "/proc" up in the union it
// serves, through itself.
type Proc struct{ fd int }

// OpenProc opens /proc for the mount table readers.
func OpenProc() (*Proc, error) {
	fd, err := unix.Open("/proc", unix.O_PATH|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/proc", Err: err}
	}
	return &Proc{fd: fd}, nil
}

// Close releases the descriptor.
func (p *Proc) Close() error { return unix.Close(p.fd) }

// open opens name (as "self/mountinfo") under /proc.
func (p *Proc) open(name string, flags int) (*os.File, error) {
	fd, err := unix.Openat(p.fd, name, flags|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: "/proc/" + name, Err: err}
	}
	return os.NewFile(uintptr(fd), "/proc/"+name), nil
}

// readFile reads name under /proc.
func (p *Proc) readFile(name string) ([]byte, error) {
	f, err := p.open(name, unix.O_RDONLY)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return io.ReadAll(f)
}

// mountedHere reports whether this namespace's table lists dev. A table
// read while mounts come and go can miss a line (it is read a page at a
// time), so an absence is believed only when a second read agrees.
func (p *Proc) mountedHere(dev string) (bool, error) {
	for range 2 {
		table, err := p.readFile("self/mountinfo")
		if err != nil {
			return false, err
		}
		if mounted(string(table), dev) {
			return true, nil
		}
	}
	return false, nil
}

// readlink reads symlink name under /proc.
func (p *Proc) readlink(name string) (string, error) {
	buf := make([]byte, 256)
	n, err := unix.Readlinkat(p.fd, name, buf)
	if err != nil {
		return "", &os.PathError{Op: "readlink", Path: "/proc/" + name, Err: err}
	}
	return string(buf[:n]), nil
}

// MountedElsewhere reports whether a filesystem with device number dev
// ("major:minor", as in field 3 of mountinfo) is mounted in a mount
// namespace other than this process's, as far as /proc shows: the table of
// one process of each other namespace is read.
func (p *Proc) MountedElsewhere(dev string) (bool, error) {
	own, err := p.readlink("self/ns/mnt")
	if err != nil {
		return false, err
	}
	dir, err := p.open(".", unix.O_RDONLY|unix.O_DIRECTORY)
	if err != nil {
		return false, err
	}
	names, err := dir.Readdirnames(-1)
	dir.Close()
	if err != nil {
		return false, err
	}
	seen := map[string]bool{own: true}
	for _, pid := range names {
		if _, err := strconv.Atoi(pid); err != nil {
			continue
		}
		ns, err := p.readlink(pid + "/ns/mnt")
		if err != nil || seen[ns] {
			continue // gone meanwhile, or not ours to look at
		}
		seen[ns] = true
		table, err := p.readFile(pid + "/mountinfo")
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
func (p *Proc) WaitGone(dev string, done <-chan struct{}) error {
	watch, err := p.open("self/mountinfo", unix.O_RDONLY)
	if err != nil {
		return err
	}
	defer watch.Close()
	for {
		select {
		case <-done:
			return nil
		default:
		}
		here, err := p.mountedHere(dev)
		if err != nil {
			return err
		}
		if !here {
			return nil
		}
		// POLLPRI on a change of the table (the poll itself resets the
		// event); wake up now and then to see done closed.
		pfd := []unix.PollFd{{Fd: int32(watch.Fd()), Events: unix.POLLPRI}}
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
