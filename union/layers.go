package union

// The layers a union is given: the one validation (CheckLayers) and the one
// lock (LockLayers) that both a mount (New) and the offline tools (package
// layertool) use, so that a tool refuses exactly what a mount refuses and
// never runs beside a mount of the same upper.

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// LayerDir is one directory of a union's configuration, checked.
type LayerDir struct {
	Opt  string // the option that names it: lowerdir, upperdir or workdir
	Path string // as given
	Real string // absolute, symlinks resolved
	// Dev and Ino identify the directory itself, whatever path (a bind
	// mount, a symlink) reaches it.
	Dev, Ino uint64
}

// Within reports whether the real path p is the directory or below it.
func (d LayerDir) Within(p string) bool {
	return p == d.Real || strings.HasPrefix(p, d.Real+"/") || d.Real == "/"
}

// LayerDirs checks that every directory of cfg exists, is a readable
// directory, and returns them: lowers topmost first, then upper and work.
func LayerDirs(cfg Config) ([]LayerDir, error) {
	var dirs []LayerDir
	add := func(opt, p string) error {
		if p == "" {
			return fmt.Errorf("%s: empty path", opt)
		}
		var st unix.Stat_t
		if err := unix.Stat(p, &st); err != nil {
			return fmt.Errorf("%s %q: %w", opt, p, err)
		}
		if st.Mode&unix.S_IFMT != unix.S_IFDIR {
			return fmt.Errorf("%s %q: not a directory", opt, p)
		}
		real, err := filepath.EvalSymlinks(p)
		if err != nil {
			return fmt.Errorf("%s %q: %w", opt, p, unwrapPathErr(err))
		}
		if real, err = filepath.Abs(real); err != nil {
			return fmt.Errorf("%s %q: %w", opt, p, err)
		}
		if unix.Access(real, unix.R_OK|unix.X_OK) != nil {
			return fmt.Errorf("%s %q: not readable", opt, p)
		}
		dirs = append(dirs, LayerDir{Opt: opt, Path: p, Real: real, Dev: st.Dev, Ino: st.Ino})
		return nil
	}
	for _, l := range cfg.Lowers {
		if err := add("lowerdir", l); err != nil {
			return nil, err
		}
	}
	if cfg.Upper != "" {
		if err := add("upperdir", cfg.Upper); err != nil {
			return nil, err
		}
	}
	if cfg.Work != "" {
		if err := add("workdir", cfg.Work); err != nil {
			return nil, err
		}
	}
	return dirs, nil
}

// CheckLayers refuses what kernel overlayfs refuses of the directories
// given: a missing or unreadable one, one directory given twice (also
// through another path to it: a bind mount, a symlink; the kernel's
// "conflicting lowerdir path") and layers nested in one another. Which of
// upperdir and workdir must be given is the caller's rule: a mount needs
// both or neither (New), a tool may read an upper alone.
func CheckLayers(cfg Config) error {
	dirs, err := LayerDirs(cfg)
	if err != nil {
		return err
	}
	return checkOverlap(dirs)
}

// checkOverlap refuses directories of dirs that are one directory or
// nested in one another.
func checkOverlap(dirs []LayerDir) error {
	for i, a := range dirs {
		for j, b := range dirs {
			switch {
			case i >= j:
			case a.Real == b.Real || (a.Dev == b.Dev && a.Ino == b.Ino):
				return fmt.Errorf("%s %q and %s %q are the same directory", a.Opt, a.Path, b.Opt, b.Path)
			case b.Within(a.Real):
				return fmt.Errorf("%s %q is inside %s %q: layers must not overlap", a.Opt, a.Path, b.Opt, b.Path)
			case a.Within(b.Real):
				return fmt.Errorf("%s %q is inside %s %q: layers must not overlap", b.Opt, b.Path, a.Opt, a.Path)
			}
		}
	}
	return nil
}

// ErrLocked is wrapped by the error of LockLayers when another process
// holds the lock.
var ErrLocked = errors.New("in use by another unionmount")

// LockError says which directory of a union is locked by another process.
type LockError struct {
	Opt, Dir string // "upperdir" or "workdir", and its path
}

func (e *LockError) Error() string {
	return fmt.Sprintf("%s %q: %v", e.Opt, e.Dir, ErrLocked)
}

// Unwrap makes errors.Is(err, ErrLocked) true.
func (e *LockError) Unwrap() error { return ErrLocked }

// LockLayers takes the lock a mount holds on its upper and its workdir for
// as long as it lives: an flock on each directory itself, so nothing is
// written for it and it dies with the process. Both are locked because
// either may be shared by mistake (kernel overlayfs refuses an upper or a
// workdir in use by another mount, too). exclusive is for a mount or a tool
// that writes the upper, shared for one that only reads it, so that readers
// may run together but never beside a mount or a writer. It fails at once,
// without waiting, with a *LockError for the first directory found locked.
// release drops the locks.
func LockLayers(cfg Config, exclusive bool) (release func(), err error) {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	var fds []int
	release = func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
		fds = nil
	}
	for _, d := range []struct{ opt, dir string }{{"upperdir", cfg.Upper}, {"workdir", cfg.Work}} {
		if d.dir == "" {
			continue
		}
		fd, err := unix.Open(d.dir, unix.O_RDONLY|unix.O_DIRECTORY|unix.O_CLOEXEC, 0)
		if err != nil {
			release()
			return nil, fmt.Errorf("%s %q: %w", d.opt, d.dir, err)
		}
		fds = append(fds, fd)
		if err := unix.Flock(fd, how|unix.LOCK_NB); err != nil {
			release()
			if errors.Is(err, unix.EWOULDBLOCK) {
				return nil, &LockError{Opt: d.opt, Dir: d.dir}
			}
			return nil, fmt.Errorf("%s %q: flock: %w", d.opt, d.dir, err)
		}
	}
	return release, nil
}
