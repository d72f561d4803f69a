package layer

import (
	"os"

	"golang.org/x/sys/unix"
)

// OpenLayer opens directory rel, resolved beneath l, as a layer of its own:
// a tree a tool builds (merge's result, an import's staging directory) is
// then reached the same safe way as the layers themselves.
func (l *Layer) OpenLayer(rel string) (*Layer, error) {
	fd, err := l.Open(rel, unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		return nil, &os.PathError{Op: "open", Path: Join(l.Root, rel), Err: err}
	}
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, err
	}
	root := l.Root
	if rel != "" {
		root = l.Root + "/" + rel
	}
	return &Layer{Root: root, fd: fd, Dev: st.Dev, resolve: l.resolve, cloned: l.cloned, mnt: l.mnt, crossing: l.crossing}, nil
}
