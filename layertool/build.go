package layertool

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// meta is what the builder gives an object besides its contents.
type meta struct {
	mode         uint32 // st_mode: type and permission bits
	uid, gid     int
	atime, mtime unix.Timespec
	xattrs       []xattr
}

type xattr struct {
	name  string
	value []byte
}

func metaOf(st *unix.Stat_t) meta {
	return meta{mode: st.Mode, uid: int(st.Uid), gid: int(st.Gid), atime: st.Atim, mtime: st.Mtim}
}

// builder makes a new tree beneath one directory it created under a
// temporary name, and renames it into place at the end (commit), so the
// final name shows the complete tree or nothing. Directories get their
// metadata last, deepest first, so that making their contents neither
// changes their times nor trips over a read-only mode.
type builder struct {
	tmpIn  *layer.Layer // the directory holding the temporary name
	tmp    string
	t      *layer.Layer // the tree being built, rooted at tmp
	root   bool         // running as root: owners can be set
	opts   *Options
	dirs   []string // in the order they were made
	dirMet map[string]meta
	failed map[string]bool // xattr names already warned about
}

var tmpSeq atomic.Uint64

// tempName is a name for a temporary beside final that no one else uses.
func tempName(final, what string) string {
	return fmt.Sprintf(".%s.%s-%d-%d", final, what, os.Getpid(), tmpSeq.Add(1))
}

// newBuilder makes directory tmp in dir and starts a tree there.
func newBuilder(dir *layer.Layer, tmp string, opts *Options) (*builder, error) {
	if err := dir.Mkdir(tmp, 0o700); err != nil {
		return nil, fmt.Errorf("make %s: %w", hostPath(dir, tmp), err)
	}
	t, err := dir.OpenLayer(tmp)
	if err != nil {
		_ = dir.Rmdir(tmp)
		return nil, err
	}
	return &builder{tmpIn: dir, tmp: tmp, t: t, root: os.Geteuid() == 0, opts: opts,
		dirMet: map[string]meta{}, failed: map[string]bool{}}, nil
}

// abort removes everything built.
func (b *builder) abort() {
	b.t.Close()
	_ = b.tmpIn.RemoveAll(b.tmp)
}

// commit sets the directories' metadata and renames the tree to name in
// dir, replacing an empty directory there (replace) or only where nothing
// is (!replace). On error the tree is left for abort.
func (b *builder) commit(dir *layer.Layer, name string, replace bool) error {
	if err := b.finishDirs(); err != nil {
		return err
	}
	if err := unix.Fsync(b.t.FD()); err != nil {
		return fmt.Errorf("sync %s: %w", b.t.Root, err)
	}
	var flags uint
	if !replace {
		flags = unix.RENAME_NOREPLACE
	}
	if err := b.tmpIn.Rename(b.tmp, dir, name, flags); err != nil {
		if errors.Is(err, unix.EXDEV) {
			return fmt.Errorf("rename %s to %s: %s and %s are on different filesystems", hostPath(b.tmpIn, b.tmp), hostPath(dir, name), b.tmpIn.Root, dir.Root)
		}
		return fmt.Errorf("rename %s to %s: %w", hostPath(b.tmpIn, b.tmp), hostPath(dir, name), err)
	}
	b.t.Close()
	return nil
}

// finishDirs gives every directory its recorded metadata, deepest first.
func (b *builder) finishDirs() error {
	for i := len(b.dirs) - 1; i >= 0; i-- {
		rel := b.dirs[i]
		m, ok := b.dirMet[rel]
		if !ok {
			continue
		}
		if err := b.setMeta(rel, m); err != nil {
			return err
		}
	}
	b.dirs, b.dirMet = nil, map[string]meta{}
	return nil
}

// mkdir makes directory rel (if it is not one already) and records m for
// it, to be set at the end; nil m keeps what it has.
func (b *builder) mkdir(rel string, m *meta) error {
	if rel != "" {
		err := b.t.Mkdir(rel, 0o700)
		switch {
		case err == nil:
			b.dirs = append(b.dirs, rel)
		case errors.Is(err, unix.EEXIST):
			st, serr := b.t.Lstat(rel)
			if serr != nil || !isDir(&st) {
				return fmt.Errorf("mkdir %s: %w", rel, err)
			}
		default:
			return fmt.Errorf("mkdir %s: %w", rel, err)
		}
	} else if _, ok := b.dirMet[""]; !ok {
		b.dirs = append([]string{""}, b.dirs...) // the root is last to be set
	}
	if m != nil {
		b.dirMet[rel] = *m
	}
	return nil
}

// file makes regular file rel, lets write fill the open descriptor, then
// sets m.
func (b *builder) file(rel string, m meta, write func(fd int) error) error {
	fd, err := b.t.Open(rel, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("create %s: %w", rel, err)
	}
	err = write(fd)
	if cerr := unix.Close(fd); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("write %s: %w", rel, err)
	}
	return b.setMeta(rel, m)
}

// symlink makes rel a symlink to target.
func (b *builder) symlink(rel, target string, m meta) error {
	if err := b.t.Symlink(target, rel); err != nil {
		return fmt.Errorf("symlink %s: %w", rel, err)
	}
	return b.setMeta(rel, m)
}

// special makes a device, fifo or socket node.
func (b *builder) special(rel string, m meta, rdev uint64) error {
	if err := b.t.Mknod(rel, m.mode&unix.S_IFMT|0o600, rdev); err != nil {
		return fmt.Errorf("mknod %s: %w", rel, err)
	}
	return b.setMeta(rel, m)
}

// whiteout makes the kernel's whiteout at rel (mode 0000), with m's owner
// and times.
func (b *builder) whiteout(rel string, m meta) error {
	if err := b.t.Mknod(rel, layer.WhiteoutMode, layer.WhiteoutDev); err != nil {
		return fmt.Errorf("make whiteout %s: %w", rel, err)
	}
	if b.root {
		if err := b.t.Lchown(rel, m.uid, m.gid); err != nil {
			return fmt.Errorf("chown %s: %w", rel, err)
		}
	}
	if err := b.t.Lutimes(rel, []unix.Timespec{m.atime, m.mtime}); err != nil {
		return fmt.Errorf("set times of %s: %w", rel, err)
	}
	return nil
}

// link makes rel another name of existing.
func (b *builder) link(existing, rel string) error {
	if err := b.t.Link(existing, b.t, rel); err != nil {
		return fmt.Errorf("link %s to %s: %w", rel, existing, err)
	}
	return nil
}

// setMeta gives rel its owner, mode, xattrs and times, in the order that
// keeps each: owner before mode (chown clears set-id bits), xattrs after
// owner (chown drops security.capability), times last.
func (b *builder) setMeta(rel string, m meta) error {
	if b.root {
		if err := b.t.Lchown(rel, m.uid, m.gid); err != nil {
			return fmt.Errorf("chown %s: %w", rel, err)
		}
	}
	if m.mode&unix.S_IFMT != unix.S_IFLNK {
		if err := b.t.Chmod(rel, m.mode&^unix.S_IFMT); err != nil {
			return fmt.Errorf("chmod %s: %w", rel, err)
		}
	}
	for _, x := range m.xattrs {
		if err := b.t.Setxattr(rel, x.name, x.value, 0); err != nil {
			if !errors.Is(err, unix.EOPNOTSUPP) && !errors.Is(err, unix.EPERM) {
				return fmt.Errorf("set xattr %s on %s: %w", x.name, rel, err)
			}
			if !b.failed[x.name] {
				b.failed[x.name] = true
				b.opts.warnf("xattr %s not kept (on %s and maybe others): %v", x.name, unionPath(rel), err)
			}
		}
	}
	if err := b.t.Lutimes(rel, []unix.Timespec{m.atime, m.mtime}); err != nil {
		return fmt.Errorf("set times of %s: %w", rel, err)
	}
	return nil
}

// emptyDir reports whether rel in l is a directory holding nothing.
func emptyDir(l *layer.Layer, rel string) (bool, error) {
	ents, err := l.ReadDir(rel)
	if err != nil {
		return false, err
	}
	return len(ents) == 0, nil
}
