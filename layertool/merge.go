package layertool

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/union"
)

// Merge writes the merged view of cfg's layers, as a mount would show it,
// into a new directory dest (squash): contents, modes, owners, times,
// xattrs (but overlay's own), hard links, sparse files and special files.
// dest must be missing or an empty directory, outside every layer; the
// tree is built beside it under a temporary name and renamed to dest only
// when complete.
func Merge(ctx context.Context, cfg union.Config, dest string, opts *Options) (err error) {
	if len(cfg.Lowers) == 0 {
		return errors.New("lowerdir: at least one lower directory is required")
	}
	s, err := openSession(cfg, false)
	if err != nil {
		return err
	}
	defer s.close()
	if err := RefuseInsideLayers(cfg, "destination", dest); err != nil {
		return err
	}
	abs, err := filepath.Abs(dest)
	if err != nil {
		return fmt.Errorf("destination %q: %w", dest, err)
	}
	parent, err := layer.Open(filepath.Dir(abs))
	if err != nil {
		return fmt.Errorf("destination %q: %w", dest, unwrap(err))
	}
	defer parent.Close()
	name := filepath.Base(abs)
	replace := false
	if st, err := parent.Lstat(name); err == nil {
		empty := false
		if isDir(&st) {
			empty, _ = emptyDir(parent, name)
		}
		if !empty {
			return fmt.Errorf("destination %q exists and is not an empty directory", dest)
		}
		replace = true
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("destination %q: %w", dest, err)
	}
	root, err := s.u.Root()
	if err != nil {
		return err
	}
	stop := countInBackground(ctx, opts.progress(), func(ctx context.Context, add func(int64)) error {
		return s.u.Walk(root, func(v *union.Visited) error {
			if err := ctx.Err(); err != nil {
				return err
			}
			if v.Stat.Mode&unix.S_IFMT == unix.S_IFREG {
				add(v.Stat.Size)
			} else {
				add(0)
			}
			return nil
		})
	})
	defer stop()
	b, err := newBuilder(parent, tempName(name, "merge"), opts)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			b.abort()
		}
	}()
	links := map[fileID]string{}
	format := s.u.Format()
	err = s.u.Walk(root, func(v *union.Visited) error {
		if err := canceled(ctx); err != nil {
			return err
		}
		rel, st := v.Entry.Path, &v.Stat
		m := metaOf(st)
		var err error
		if m.xattrs, err = readXattrs(v.Layer, v.Real, format); err != nil {
			return err
		}
		size := int64(0)
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			size = st.Size
		}
		opts.progress().Add(1, size)
		if isDir(st) {
			return b.mkdir(rel, &m)
		}
		if st.Nlink > 1 {
			id := fileID{st.Dev, st.Ino}
			if first, ok := links[id]; ok {
				return b.link(first, rel)
			}
			links[id] = rel
		}
		return copyObject(b, rel, m, v.Layer, v.Real, st, func() (int, error) {
			return s.u.Open(v.Entry, unix.O_RDONLY) // a metadata-only copy's data is below
		})
	})
	if err != nil {
		return err
	}
	return b.commit(parent, name, replace)
}
