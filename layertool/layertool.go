// Package layertool holds the offline tools that work on the layers of a
// stopped union, given the same directories a mount takes (union.Config):
//
//   - check.go: Check verifies an upper and its workdir against the lowers
//     (leftovers of a crash, whiteouts that hide nothing, misplaced or
//     dangling overlay xattrs, whiteouts in formats we only read, a stale
//     lock) and, asked to, repairs what is safe.
//   - diff.go: Diff lists the changes the upper makes to the lowers (A, C,
//     D per path, as podman diff).
//   - export.go: Export writes the upper as an OCI image layer tar
//     (whiteouts as .wh.NAME, opaque directories as .wh..wh..opq), in a
//     deterministic order; tarsparse.go writes the sparse files archive/tar
//     cannot.
//   - import.go: Import applies an OCI layer tar to an empty upper, in
//     overlay format: the reverse of Export.
//   - merge.go: Merge writes the merged view into a new directory (squash).
//   - build.go: the tree builder Import and Merge write through: every
//     object made beneath one directory descriptor, metadata in the right
//     order, directories' last; built under a temporary name and renamed
//     into place at the end, so a failure leaves nothing half-written.
//   - lock.go: the workdir lock (the one a mount holds) and who holds it.
//   - progress.go: the progress bar shown on a terminal.
//
// Every access to a layer goes through internal/layer (openat2 beneath the
// layer's root); the on-disk names come from internal/layer/format.go and
// the merged view from the union engine. Lowers are only ever read. The
// package does not import FUSE.
package layertool

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/union"
)

// Options are what every tool takes besides its layers.
type Options struct {
	// Progress, if not nil, is told how far the tool has got.
	Progress *Progress
	// Warnf, if not nil, is told of things skipped that do not make the
	// tool fail (a socket in an export, an xattr the target refuses).
	Warnf func(format string, args ...any)
}

func (o *Options) warnf(format string, args ...any) {
	if o != nil && o.Warnf != nil {
		o.Warnf(format, args...)
	}
}

func (o *Options) progress() *Progress {
	if o == nil {
		return nil
	}
	return o.Progress
}

// session is a union opened for a tool, with the workdir lock held.
type session struct {
	cfg     union.Config
	u       *union.Union // upper over lowers, as mounted
	release func()
}

func (s *session) close() {
	if s.u != nil {
		s.u.Close()
	}
	if s.release != nil {
		s.release()
	}
}

// openSession checks cfg's directories, takes the locks on its upper and
// workdir (shared, or exclusive for a tool that writes the upper), and
// opens the union without writing anything.
func openSession(cfg union.Config, exclusive bool) (*session, error) {
	if err := checkLayers(cfg); err != nil {
		return nil, err
	}
	s := &session{cfg: cfg}
	release, err := lockLayers(cfg, exclusive)
	if err != nil {
		return nil, err
	}
	s.release = release
	u, err := union.Offline(cfg)
	if err != nil {
		s.close()
		return nil, err
	}
	s.u = u
	return s, nil
}

// lowerUnion opens the lowers of cfg alone: the tree the upper changes.
func lowerUnion(cfg union.Config) (*union.Union, error) {
	lc := cfg
	lc.Upper, lc.Work = "", ""
	return union.Offline(lc)
}

// checkLayers refuses what a mount refuses (union.CheckLayers) and a
// workdir without an upper.
func checkLayers(cfg union.Config) error {
	if cfg.Upper == "" && cfg.Work != "" {
		return errors.New("workdir: given without upperdir")
	}
	return union.CheckLayers(cfg)
}

// realPath is p with symlinks resolved, absolute and clean.
func realPath(p string) (string, error) {
	r, err := filepath.EvalSymlinks(p)
	if err != nil {
		return "", err
	}
	return filepath.Abs(r)
}

// RefuseInsideLayers refuses an output path (merge's DEST, export's -O)
// that is a layer or inside one: a tool never writes a lower, nor the
// upper or workdir it is reading.
func RefuseInsideLayers(cfg union.Config, what, p string) error {
	abs, err := filepath.Abs(p)
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, p, err)
	}
	parent, err := realPath(filepath.Dir(abs))
	if err != nil {
		return fmt.Errorf("%s %q: %w", what, p, unwrap(err))
	}
	real := filepath.Join(parent, filepath.Base(abs))
	dirs, err := union.LayerDirs(cfg)
	if err != nil {
		return err
	}
	for _, d := range dirs {
		if d.Within(real) {
			return fmt.Errorf("%s %q is inside %s %q", what, p, d.Opt, d.Path)
		}
		if (union.LayerDir{Real: real}).Within(d.Real) {
			return fmt.Errorf("%s %q holds %s %q", what, p, d.Opt, d.Path)
		}
	}
	return nil
}

func unwrap(err error) error {
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// canceled returns ctx's error, wrapped to say the tool was interrupted.
func canceled(ctx context.Context) error {
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("interrupted: %w", err)
	}
	return nil
}

// hostPath names rel inside layer l, for messages only: no file is ever
// reached by this path.
func hostPath(l *layer.Layer, rel string) string {
	if rel == "" {
		return l.Root
	}
	return filepath.Join(l.Root, rel)
}

// unionPath is how users see union path p: "/a/b".
func unionPath(p string) string { return "/" + p }

// isDir reports whether st is a directory.
func isDir(st *unix.Stat_t) bool { return st.Mode&unix.S_IFMT == unix.S_IFDIR }
