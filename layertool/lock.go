package layertool

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/union"
)

// Holder is a process that holds the lock on an upper or workdir.
type Holder struct {
	Pid     int
	Command string // its comm, e.g. "unionmount"
	// Unionmount says it runs unionmount: a mount's daemon or a tool.
	Unionmount bool
	// Fuse says it has /dev/fuse open: a daemon serving a mount.
	Fuse bool
}

// Stale reports whether the lock is held by a process that is no
// unionmount at all, so no mount or tool is using the layers: the lock is
// a leftover (a process that inherited or took it by hand).
func (h Holder) Stale() bool { return !h.Unionmount }

func (h Holder) String() string {
	switch {
	case h.Fuse:
		return fmt.Sprintf("a mounted union (unionmount pid %d)", h.Pid)
	case h.Unionmount:
		return fmt.Sprintf("unionmount pid %d", h.Pid)
	}
	return fmt.Sprintf("pid %d (%s), which is not a unionmount", h.Pid, h.Command)
}

// LockedError says the lock on the upper or the workdir is held, and by
// whom.
type LockedError struct {
	Opt, Dir string   // "upperdir" or "workdir", and its path
	Holders  []Holder // empty if they could not be found
}

func (e *LockedError) Error() string {
	if len(e.Holders) == 0 {
		return fmt.Sprintf("%s %q is in use by another unionmount", e.Opt, e.Dir)
	}
	h := e.Holders[0]
	if h.Stale() {
		return fmt.Sprintf("%s %q is locked by %s: a stale lock (end that process)", e.Opt, e.Dir, h)
	}
	if h.Fuse {
		return fmt.Sprintf("%s %q is in use by %s: unmount it first", e.Opt, e.Dir, h)
	}
	return fmt.Sprintf("%s %q is in use by %s", e.Opt, e.Dir, h)
}

// Stale reports whether every holder found is stale.
func (e *LockedError) Stale() bool {
	for _, h := range e.Holders {
		if !h.Stale() {
			return false
		}
	}
	return len(e.Holders) > 0
}

// lockLayers takes a mount's locks on the upper and workdir of cfg
// (union.LockLayers) and, when one is held, says by whom.
func lockLayers(cfg union.Config, exclusive bool) (func(), error) {
	release, err := union.LockLayers(cfg, exclusive)
	var le *union.LockError
	if errors.As(err, &le) {
		holders, _ := lockHolders(le.Dir)
		return nil, &LockedError{Opt: le.Opt, Dir: le.Dir, Holders: holders}
	}
	return release, err
}

// lockHolders finds the processes holding an flock on dir, from
// /proc/locks.
func lockHolders(dir string) ([]Holder, error) {
	var st unix.Stat_t
	if err := unix.Stat(dir, &st); err != nil {
		return nil, err
	}
	f, err := os.Open("/proc/locks")
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// "1: FLOCK  ADVISORY  WRITE 1234 fd:01:5678 0 EOF"; waiters have "->".
	want := fmt.Sprintf("%02x:%02x:%d", unix.Major(st.Dev), unix.Minor(st.Dev), st.Ino)
	var out []Holder
	seen := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 6 || fields[1] != "FLOCK" || fields[5] != want {
			continue
		}
		pid, err := strconv.Atoi(fields[4])
		if err != nil || pid <= 0 || seen[pid] {
			continue
		}
		seen[pid] = true
		out = append(out, describeProcess(pid))
	}
	return out, sc.Err()
}

func describeProcess(pid int) Holder {
	h := Holder{Pid: pid}
	proc := "/proc/" + strconv.Itoa(pid)
	if b, err := os.ReadFile(proc + "/comm"); err == nil {
		h.Command = strings.TrimSpace(string(b))
	}
	exe, err := os.Readlink(proc + "/exe")
	if err != nil {
		// Not ours to inspect: assume the worst, that it is in use.
		h.Unionmount = true
		return h
	}
	h.Unionmount = filepath.Base(strings.TrimSuffix(exe, " (deleted)")) == "unionmount" || h.Command == "unionmount"
	fds, _ := os.ReadDir(proc + "/fd")
	for _, fd := range fds {
		if target, err := os.Readlink(proc + "/fd/" + fd.Name()); err == nil && target == "/dev/fuse" {
			h.Fuse = true
			break
		}
	}
	return h
}
