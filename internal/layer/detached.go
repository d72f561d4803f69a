package layer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

// OpenDetached opens the directories at hostPaths, which must all be on
// one mount, as layers reached through one detached clone of that mount
// (open_tree(2)) with the mount attributes attrs (unix.MOUNT_ATTR_RDONLY,
// _NOATIME, _NODIRATIME): what they forbid no access through the layers
// does, the kernel's own neither (FUSE passthrough reads through the
// layers' descriptors). One clone for all keeps renames between them
// possible (workdir to upperdir). It needs CAP_SYS_ADMIN; the caller
// falls back to Open.
func OpenDetached(attrs uint64, hostPaths ...string) ([]*Layer, error) {
	reals := make([]string, len(hostPaths))
	for i, p := range hostPaths {
		r, err := filepath.EvalSymlinks(p)
		if err == nil {
			r, err = filepath.Abs(r)
		}
		if err != nil {
			return nil, err
		}
		reals[i] = r
	}
	// The deepest directory above all of them, on their mount.
	top := reals[0]
	for _, r := range reals[1:] {
		for top != "/" && r != top && !strings.HasPrefix(r, top+"/") {
			top = filepath.Dir(top)
		}
	}
	mnt, err := mountID(top)
	if err != nil {
		return nil, err
	}
	for i, r := range reals {
		if id, err := mountID(r); err != nil || id != mnt {
			return nil, fmt.Errorf("%s is not on the mount of %s", hostPaths[i], top)
		}
	}
	tree, err := unix.OpenTree(unix.AT_FDCWD, top, unix.OPEN_TREE_CLONE|unix.OPEN_TREE_CLOEXEC)
	if err != nil {
		return nil, &os.PathError{Op: "open_tree", Path: top, Err: err}
	}
	defer unix.Close(tree)
	attr := unix.MountAttr{Attr_set: attrs}
	if attrs&unix.MOUNT_ATTR__ATIME != 0 {
		attr.Attr_clr = unix.MOUNT_ATTR__ATIME // an atime mode replaces the clone's
	}
	if err := unix.MountSetattr(tree, "", unix.AT_EMPTY_PATH, &attr); err != nil {
		return nil, &os.PathError{Op: "mount_setattr", Path: top, Err: err}
	}
	var ls []*Layer
	for i, r := range reals {
		rel := strings.TrimPrefix(strings.TrimPrefix(r, top), "/")
		if rel == "" {
			rel = "."
		}
		fd, err := unix.Openat2(tree, rel, &unix.OpenHow{
			Flags:   unix.O_DIRECTORY | unix.O_RDONLY | unix.O_CLOEXEC,
			Resolve: beneath | unix.RESOLVE_NO_XDEV,
		})
		var st unix.Stat_t
		if err == nil {
			if err = unix.Fstat(fd, &st); err != nil {
				unix.Close(fd)
			}
		}
		if err != nil {
			for _, l := range ls {
				l.Close()
			}
			return nil, &os.PathError{Op: "open", Path: hostPaths[i], Err: err}
		}
		ls = append(ls, &Layer{Root: hostPaths[i], fd: fd, Dev: st.Dev})
	}
	return ls, nil
}

// mountID is the id of the mount that path is on.
func mountID(path string) (uint64, error) {
	var sx unix.Statx_t
	if err := unix.Statx(unix.AT_FDCWD, path, 0, unix.STATX_MNT_ID, &sx); err != nil {
		return 0, &os.PathError{Op: "statx", Path: path, Err: err}
	}
	return sx.Mnt_id, nil
}
