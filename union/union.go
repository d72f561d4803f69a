package union

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Config says which directories make up a union and how it behaves.
type Config struct {
	// Lowers are the read-only layers, topmost first. At least one.
	Lowers []string
	// Upper is the writable layer; "" makes a read-only union.
	Upper string
	// Work is the work directory, on the same filesystem as Upper. Required
	// with Upper.
	Work string
	// UserXattr selects the user.overlay.* namespace instead of
	// trusted.overlay.*.
	UserXattr bool
	// RedirectDir lets renames of lower directories work by writing a
	// redirect xattr; off, they fail with EXDEV.
	RedirectDir bool
	// WhiteoutFiles reads ".wh.NAME" and ".wh..wh..opq" in lower layers as
	// whiteouts and opaque markers (as aufs and fuse-overlayfs do).
	WhiteoutFiles bool
	// MetaCopy makes metadata-only changes (chmod, chown, utimes, xattrs)
	// of a lower file copy up its metadata only, leaving the data below, in
	// kernel overlayfs's metacopy format (which kernel overlayfs reads with
	// -o metacopy=on, and fuse-overlayfs does not read).
	MetaCopy bool
	// NoFsync skips syncing copied-up data before it is linked or renamed into place
	// (kernel overlayfs "volatile"): faster, but a crash may leave an empty
	// or partial file where a copy-up happened.
	NoFsync bool
	// NoAtime and NoDirAtime are the mount options noatime and nodiratime:
	// reads of files and directories in upper, and listings of
	// directories, leave their access times alone. Otherwise they update
	// them as the upper's filesystem does on a read (relatime, usually),
	// as kernel overlayfs does. Objects in lower layers never change.
	NoAtime, NoDirAtime bool
	// Mountpoint is where the union is to be mounted, if known. A layer
	// whose mount could not be cloned (see layer.OpenDetached) must not hold it:
	// the union would show itself inside itself.
	Mountpoint string
}

// Union is a mounted (or mountable) union of layers.
type Union struct {
	cfg    Config
	format layer.Format
	upper  *layer.Layer // nil for a read-only union
	work   *layer.Layer // workdir/work: where copies are built
	index  *layer.Layer // workdir/unionmount-index: see index.go
	lowers []*layer.Layer
	// unlock drops the locks on upper and workdir (LockLayers), held for
	// as long as the union is open.
	unlock func()

	devMu sync.Mutex
	devs  map[uint64]uint64 // st_dev -> its number in inode numbers (see ino.go)

	subdirsMu  sync.Mutex
	subdirs    map[string]int // merged directory path -> subdirectories (see SubdirCount)
	subdirsGen uint64         // counts forgetSubdirs calls

	// removed are the last attributes (link count 0) of directories
	// removed while their nodes are held, by *Node (see keepRemoved).
	removed sync.Map

	renameMu  sync.RWMutex
	copyLocks keyedMutex
	tmpSeq    atomic.Uint64
	copyGen   atomic.Uint64 // counts copy-ups, so callers can tell if one happened
	noTmpfile atomic.Bool   // the upper filesystem has no O_TMPFILE: copies are built in workdir
	noClone   sync.Map      // st_dev of lower filesystems whose files the upper cannot clone (FICLONE)

	root bool // running as root: can chown, create whiteouts, set trusted.*
}

// Errno values the engine returns; the FUSE layer passes them to the kernel.
var (
	errReadOnly = unix.EROFS
)

// New opens and checks the layers of cfg. On any error nothing was written
// and the error names the option or path at fault.
func New(cfg Config) (*Union, error) {
	u := &Union{cfg: cfg, devs: map[uint64]uint64{}, subdirs: map[string]int{}, root: os.Geteuid() == 0}
	if cfg.UserXattr || !u.root {
		u.format = layer.Format{Prefix: layer.UserPrefix}
	} else {
		u.format = layer.Format{Prefix: layer.TrustedPrefix}
	}
	if err := u.open(); err != nil {
		u.Close()
		return nil, err
	}
	return u, nil
}

func (u *Union) open() error {
	cfg := u.cfg
	if len(cfg.Lowers) == 0 {
		return errors.New("lowerdir: at least one lower directory is required")
	}
	if cfg.Upper != "" && cfg.Work == "" {
		return errors.New("workdir: required when upperdir is given")
	}
	if cfg.Upper == "" && cfg.Work != "" {
		return errors.New("workdir: given without upperdir")
	}
	all, err := LayerDirs(cfg)
	if err != nil {
		return err
	}
	if err := checkOverlap(all); err != nil {
		return err
	}
	for _, l := range cfg.Lowers {
		// Read-only, and no access time ever changes, whoever reads.
		lls, err := layer.OpenDetached(unix.MOUNT_ATTR_RDONLY|unix.MOUNT_ATTR_NOATIME, l)
		if err != nil {
			return fmt.Errorf("lowerdir %q: %w", l, unwrapPathErr(err))
		}
		u.lowers = append(u.lowers, lls[0])
	}
	if cfg.Upper == "" {
		u.numberDevs(u.lowers...)
		return u.checkMountpoint(all)
	}
	if unix.Access(cfg.Upper, unix.W_OK) != nil {
		return fmt.Errorf("upperdir %q: not writable", cfg.Upper)
	}
	if unix.Access(cfg.Work, unix.W_OK) != nil {
		return fmt.Errorf("workdir %q: not writable", cfg.Work)
	}
	var ust, wst unix.Stat_t
	if unix.Stat(cfg.Upper, &ust) == nil && unix.Stat(cfg.Work, &wst) == nil && ust.Dev != wst.Dev {
		return fmt.Errorf("workdir %q is not on the same filesystem as upperdir %q", cfg.Work, cfg.Upper)
	}
	up, wd, err := u.openUpper()
	if err != nil {
		return err
	}
	u.upper = up
	defer wd.Close()
	if err := u.checkMountpoint(all); err != nil {
		return err
	}
	unlock, err := LockLayers(cfg, true)
	if err != nil {
		return err
	}
	u.unlock = unlock
	if err := u.openWork(wd); err != nil {
		return err
	}
	u.numberDevs(append([]*layer.Layer{u.upper}, u.lowers...)...)
	return nil
}

// openUpper opens the upperdir and the workdir through one detached clone
// of their mount (see layer.OpenDetached), with the noatime and nodiratime
// options as its attributes, so that reads the kernel makes itself (FUSE
// passthrough) follow them too. Where cloning is not allowed (not root),
// they are the directories themselves, and the daemon's own reads still
// leave access times alone (see keepAtime).
func (u *Union) openUpper() (up, wd *layer.Layer, err error) {
	var attrs uint64
	if u.cfg.NoAtime {
		attrs |= unix.MOUNT_ATTR_NOATIME
	}
	if u.cfg.NoDirAtime {
		attrs |= unix.MOUNT_ATTR_NODIRATIME
	}
	// One clone for both: copy-ups are renamed from workdir/work into upper.
	ls, err := layer.OpenDetached(attrs, u.cfg.Upper, u.cfg.Work)
	if err != nil {
		return nil, nil, fmt.Errorf("upperdir %q, workdir %q: %w", u.cfg.Upper, u.cfg.Work, unwrapPathErr(err))
	}
	return ls[0], ls[1], nil
}

// checkMountpoint refuses a mount point inside a layer that is not a clone
// of its mount (all are the layers' directories, lowers first, as opened).
func (u *Union) checkMountpoint(all []LayerDir) error {
	if u.cfg.Mountpoint == "" {
		return nil
	}
	mp, err := filepath.EvalSymlinks(u.cfg.Mountpoint)
	if err != nil {
		return fmt.Errorf("mountpoint %q: %w", u.cfg.Mountpoint, unwrapPathErr(err))
	}
	mp, _ = filepath.Abs(mp)
	// all is lowers, then upper and workdir, which share one clone (or none).
	opened := append(append([]*layer.Layer{}, u.lowers...), u.upper, u.upper)
	for i, d := range all {
		if mp == d.Real || !d.Within(mp) || opened[i].Cloned() {
			continue
		}
		return fmt.Errorf("mountpoint %q is inside %s %q, whose mount this user may not clone: the union would show itself inside itself (mount it elsewhere, or run as root or in a user namespace of your own)",
			u.cfg.Mountpoint, d.Opt, d.Path)
	}
	return nil
}

// openWork makes workdir/work (kernel overlayfs uses the same name), clears
// what a crash left in it, and checks that the upper filesystem can hold
// whiteouts and our xattrs.
func (u *Union) openWork(wd *layer.Layer) error {
	made := false
	st, err := wd.Lstat("work")
	switch {
	case err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR:
		return fmt.Errorf("workdir %q: work is not a directory", u.cfg.Work)
	case errors.Is(err, unix.ENOENT):
		if err := wd.Mkdir("work", 0o700); err != nil {
			return fmt.Errorf("workdir %q: %w", u.cfg.Work, err)
		}
		made = true
	case err != nil:
		return fmt.Errorf("workdir %q: %w", u.cfg.Work, err)
	}
	madeIndex := false
	undo := func() {
		if made {
			_ = wd.Rmdir("work")
		}
		if madeIndex {
			_ = wd.Rmdir(layer.IndexDir)
		}
	}
	w, err := wd.OpenLayer("work")
	if errors.Is(err, unix.EACCES) {
		// Kernel overlayfs leaves work/ at mode 0000; it is ours to clear
		// and reuse, as the kernel does.
		if cerr := wd.Chmod("work", 0o700); cerr == nil {
			w, err = wd.OpenLayer("work")
		}
	}
	if err != nil {
		undo()
		return fmt.Errorf("workdir %q: %w", u.cfg.Work, unwrapPathErr(err))
	}
	u.work = w
	if _, err := wd.Lstat(layer.IndexDir); errors.Is(err, unix.ENOENT) {
		if err := wd.Mkdir(layer.IndexDir, 0o700); err != nil {
			undo()
			return fmt.Errorf("workdir %q: %w", u.cfg.Work, err)
		}
		madeIndex = true
	}
	// Beneath the workdir's descriptor, never through a symlink planted
	// there: what goes into the index must stay in the layers.
	ix, err := wd.OpenLayer(layer.IndexDir)
	if err != nil {
		undo()
		return fmt.Errorf("workdir %q: %w", u.cfg.Work, unwrapPathErr(err))
	}
	u.index = ix
	if err := u.clearWork(); err != nil {
		return fmt.Errorf("workdir %q: clearing leftovers: %w", u.cfg.Work, err)
	}
	probe := u.tempName()
	if err := w.Mknod(probe, layer.WhiteoutMode, layer.WhiteoutDev); err != nil {
		undo()
		return fmt.Errorf("upperdir %q: filesystem cannot hold whiteouts (mknod 0:0: %v)", u.cfg.Upper, err)
	}
	_ = w.Unlink(probe)
	if err := w.Mkdir(probe, 0o700); err != nil {
		undo()
		return fmt.Errorf("workdir %q: %w", u.cfg.Work, err)
	}
	xerr := w.Setxattr(probe, u.format.Name(layer.Opaque), []byte("y"), 0)
	_ = w.Rmdir(probe)
	if xerr != nil {
		undo()
		return fmt.Errorf("upperdir %q: filesystem cannot hold %s* xattrs (%v)", u.cfg.Upper, u.format.Prefix, xerr)
	}
	return nil
}

// clearWork removes everything in workdir/work: temporaries of copy-ups and
// removals that a crash interrupted. None of them is visible in the union.
func (u *Union) clearWork() error {
	ents, err := u.work.ReadDir("")
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := u.work.RemoveAll(e.Name); err != nil {
			return err
		}
	}
	return nil
}

// Close releases the layers and the workdir lock.
func (u *Union) Close() error {
	for _, l := range append([]*layer.Layer{u.upper, u.work, u.index}, u.lowers...) {
		if l != nil {
			l.Close()
		}
	}
	if u.unlock != nil {
		u.unlock()
		u.unlock = nil
	}
	return nil
}

// ReadOnly reports whether the union has no upper layer.
func (u *Union) ReadOnly() bool { return u.upper == nil }

// Format is the xattr namespace in force.
func (u *Union) Format() layer.Format { return u.format }

// Statfs reports the filesystem that takes the union's writes.
func (u *Union) Statfs() (unix.Statfs_t, error) {
	if u.upper != nil {
		return u.upper.Statfs()
	}
	return u.lowers[0].Statfs()
}

// tempName returns a fresh name for a temporary in workdir/work.
func (u *Union) tempName() string {
	return fmt.Sprintf("#%x", u.tmpSeq.Add(1))
}

func unwrapPathErr(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}
