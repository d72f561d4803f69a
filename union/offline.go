package union

// Access for the offline tools (package layertool): a union opened without
// the side effects of a mount, and the layers themselves for the tools that
// read or repair the upper on disk. The checks and the lock they share with
// a mount are in layers.go.

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
)

// Offline opens the layers of cfg for a tool that works on a stopped union.
// Unlike New it writes nothing: it neither makes nor clears workdir/work (a
// crash's leftovers stay there for the check tool to see), probes nothing
// and takes no lock (the tool checks the layers with CheckLayers and locks
// them with LockLayers first; cfg.Work may be ""). Only the read side of the engine may be used on the result:
// Root, Resolve, Lookup, ReadDir, Stat, Open read-only, Readlink, Getxattr,
// Listxattr and Walk.
func Offline(cfg Config) (*Union, error) {
	cfg.NoAtime = true // a tool's listings are no reader's
	u := &Union{cfg: cfg, devs: map[uint64]uint64{}, subdirs: map[string]int{}, root: os.Geteuid() == 0}
	if cfg.UserXattr || !u.root {
		u.format = layer.Format{Prefix: layer.UserPrefix}
	} else {
		u.format = layer.Format{Prefix: layer.TrustedPrefix}
	}
	var all []*layer.Layer
	if cfg.Upper != "" {
		up, err := openDirLayer("upperdir", cfg.Upper)
		if err != nil {
			return nil, err
		}
		u.upper = up
		all = append(all, up)
	}
	for _, l := range cfg.Lowers {
		ll, err := openDirLayer("lowerdir", l)
		if err != nil {
			u.Close()
			return nil, err
		}
		u.lowers = append(u.lowers, ll)
		all = append(all, ll)
	}
	u.numberDevs(all...)
	if cfg.Work != "" {
		// Lower files with several names may read through the index.
		if wd, err := layer.Open(cfg.Work); err == nil {
			if ix, err := wd.OpenLayer(layer.IndexDir); err == nil {
				u.index = ix
			}
			wd.Close()
		}
	}
	return u, nil
}

func openDirLayer(opt, p string) (*layer.Layer, error) {
	if p == "" {
		return nil, fmt.Errorf("%s: empty path", opt)
	}
	l, err := layer.Open(p)
	if err != nil {
		return nil, fmt.Errorf("%s %q: %w", opt, p, unwrapPathErr(err))
	}
	st, err := l.Lstat("")
	if err == nil && st.Mode&unix.S_IFMT != unix.S_IFDIR {
		err = unix.ENOTDIR
	}
	if err != nil {
		l.Close()
		return nil, fmt.Errorf("%s %q: %w", opt, p, err)
	}
	return l, nil
}

// UpperLayer is the upper layer, nil for a read-only union.
func (u *Union) UpperLayer() *layer.Layer { return u.upper }

// LowerLayers are the lower layers, topmost first.
func (u *Union) LowerLayers() []*layer.Layer { return u.lowers }

// Config returns the configuration the union was opened with.
func (u *Union) Config() Config { return u.cfg }

// Visible returns the layer and the path in it of e's visible object: the
// upper object if there is one, else the topmost lower one; ENOENT if no
// layer holds it.
func (u *Union) Visible(e *Entry) (*layer.Layer, string, error) { return u.top(e) }
