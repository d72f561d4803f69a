package layertool

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/union"
)

// The kinds of problem Check finds. Each Problem says whether --repair
// fixed it; the ones marked "not repaired" never are.
const (
	// KindLeftover: something in workdir/work, which only a crash leaves
	// (a mount clears it at start), except whiteouts: kernel overlayfs
	// keeps one there. Repair removes it.
	KindLeftover = "leftover"
	// KindWhiteoutHidesNothing: a whiteout with nothing below it to hide.
	// Repair removes it; the merged view does not change.
	KindWhiteoutHidesNothing = "whiteout-hides-nothing"
	// KindOpaqueMisplaced: an opaque xattr on a non-directory, or with a
	// value that means nothing in an upper. Repair removes it; the merged
	// view does not change.
	KindOpaqueMisplaced = "opaque-misplaced"
	// KindRedirectMisplaced: a redirect xattr on a non-directory that is
	// not a regular file (on a regular file it is kernel overlayfs's
	// metacopy format). Repair removes it; the merged view does not change.
	KindRedirectMisplaced = "redirect-misplaced"
	// KindRedirectDangling: a redirect to a path where no lower has a
	// directory, or one no reader follows. Repair removes it and, where a
	// lower has a directory at the renamed directory's own path, marks the
	// directory opaque, so the merged view does not change.
	KindRedirectDangling = "redirect-dangling"
	// KindForeignWhiteout: a whiteout or opaque marker in a form unionmount
	// and kernel overlayfs only honour in lower layers (".wh.NAME",
	// ".wh..wh..opq", an xattr whiteout, user.fuseoverlayfs.opaque), which
	// in an upper hides nothing. Repair converts it into the form they
	// write, so it hides what its writer (fuse-overlayfs, aufs) meant it
	// to hide: the merged view changes accordingly.
	KindForeignWhiteout = "foreign-whiteout"
	// KindOtherNamespace: overlay xattrs in the namespace not in force
	// (user.overlay.* without -o userxattr, or the reverse), which this
	// mount would ignore. Not repaired: pass the other option.
	KindOtherNamespace = "xattr-namespace"
	// KindMetacopy: a metadata-only copy (metacopy xattr) whose data, in
	// a lower layer, cannot be found. Not repaired.
	KindMetacopy = "metacopy"
	// KindStaleLock: the workdir lock is held by a process that is no
	// unionmount. Not repaired: end that process.
	KindStaleLock = "stale-lock"
)

// Problem is one thing Check found wrong.
type Problem struct {
	Kind string
	// Path names the object on disk (for messages).
	Path string
	// What says what is wrong.
	What string
	// Repaired says what --repair did; "" if it did nothing.
	Repaired string
}

func (p Problem) String() string {
	s := fmt.Sprintf("%s: %s [%s]", p.Path, p.What, p.Kind)
	if p.Repaired != "" {
		s += "; repaired: " + p.Repaired
	}
	return s
}

// CheckOptions tune Check.
type CheckOptions struct {
	// Repair fixes what is safe to fix.
	Repair bool
	// Report, if not nil, is called with each problem as it is found (and
	// repaired).
	Report func(Problem)
}

// Check verifies the upper (and the workdir, if cfg has one) of cfg
// against its lowers, which it never writes. It returns the problems found;
// an error means it could not run (bad layers, or a union that is mounted
// or in use by another tool).
func Check(ctx context.Context, cfg union.Config, opts CheckOptions) ([]Problem, error) {
	if cfg.Upper == "" {
		return nil, errors.New("upperdir: required")
	}
	if err := checkLayers(cfg); err != nil {
		return nil, err
	}
	c := &checker{ctx: ctx, opts: opts}
	release, err := lockLayers(cfg, opts.Repair)
	var le *LockedError
	switch {
	case errors.As(err, &le) && le.Stale():
		for _, h := range le.Holders {
			c.report(Problem{Kind: KindStaleLock, Path: le.Dir,
				What: fmt.Sprintf("locked by %s, so no mount can start; end that process", h)})
		}
	case err != nil:
		return nil, err
	default:
		defer release()
	}
	u, err := union.Offline(cfg)
	if err != nil {
		return nil, err
	}
	defer u.Close()
	c.u, c.up, c.format = u, u.UpperLayer(), u.Format()
	c.other = layer.Format{Prefix: layer.UserPrefix}
	if c.format.Prefix == layer.UserPrefix {
		c.other = layer.Format{Prefix: layer.TrustedPrefix}
	}
	if cfg.Work != "" {
		if err := c.workdir(cfg.Work); err != nil {
			return c.found, err
		}
	}
	root, err := u.Root()
	if err != nil {
		return c.found, err
	}
	if err := c.object("", root, nil); err != nil {
		return c.found, err
	}
	return c.found, nil
}

type checker struct {
	ctx    context.Context
	opts   CheckOptions
	u      *union.Union
	up     *layer.Layer
	format layer.Format
	other  layer.Format // the overlay namespace not in force
	found  []Problem
}

func (c *checker) report(p Problem) {
	c.found = append(c.found, p)
	if c.opts.Report != nil {
		c.opts.Report(p)
	}
}

// problem reports a problem at upper path rel, repairing it with fix when
// asked to; fix returns what it did.
func (c *checker) problem(kind, rel, what string, fix func() (string, error)) error {
	p := Problem{Kind: kind, Path: hostPath(c.up, rel), What: what}
	if c.opts.Repair && fix != nil {
		did, err := fix()
		if err != nil {
			return fmt.Errorf("repair %s: %w", p.Path, err)
		}
		p.Repaired = did
	}
	c.report(p)
	return nil
}

// workdir reports everything in workdir/work.
func (c *checker) workdir(dir string) error {
	wd, err := layer.Open(dir)
	if err != nil {
		return fmt.Errorf("workdir %q: %w", dir, unwrap(err))
	}
	defer wd.Close()
	st, err := wd.Lstat("work")
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil || !isDir(&st) {
		return fmt.Errorf("workdir %q: work: not a directory (%v)", dir, err)
	}
	ents, err := wd.ReadDir("work")
	if err != nil {
		return fmt.Errorf("workdir %q: %w", dir, err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	for _, e := range ents {
		rel := layer.Join("work", e.Name)
		if st, err := wd.Lstat(rel); err == nil && layer.IsWhiteout(&st) {
			// Kernel overlayfs keeps one whiteout in work/ and links the
			// upper's whiteouts to it; a crash's whiteout there hides
			// nothing either. A mount clears them.
			continue
		}
		what := "left by a crash: a temporary copy-up, creation or removal"
		if e.Name == "incompat" {
			what = "left by a kernel overlayfs mount with -o volatile that was not cleanly unmounted: the upper may have lost changes"
		}
		p := Problem{Kind: KindLeftover, Path: hostPath(wd, rel), What: what}
		if c.opts.Repair {
			if err := wd.RemoveAll(rel); err != nil {
				return fmt.Errorf("repair %s: %w", p.Path, err)
			}
			p.Repaired = "removed"
		}
		c.report(p)
	}
	return nil
}

// object checks upper object rel, whose merged entry is e (nil for a
// whiteout or a non-directory) and whose parent's merged entry is parent
// (nil for the root).
func (c *checker) object(rel string, e *union.Entry, parent *union.Entry) error {
	if err := canceled(c.ctx); err != nil {
		return err
	}
	st, err := c.up.Lstat(rel)
	if err != nil {
		return fmt.Errorf("check %s: %w", hostPath(c.up, rel), err)
	}
	_, name := layer.Split(rel)
	if layer.IsWhiteout(&st) {
		return c.whiteout(rel, name, parent)
	}
	names, err := c.up.Listxattr(rel)
	if err != nil {
		return fmt.Errorf("check %s: %w", hostPath(c.up, rel), err)
	}
	xa := map[string]bool{}
	for _, n := range names {
		xa[n] = true
	}
	for _, n := range names {
		if strings.HasPrefix(n, c.other.Prefix) {
			if err := c.problem(KindOtherNamespace, rel, fmt.Sprintf("has %s, but %s* is the namespace in force (mount options disagree about userxattr?)", n, c.format.Prefix), nil); err != nil {
				return err
			}
		}
	}
	if xa[c.format.Name(layer.Metacopy)] && st.Mode&unix.S_IFMT == unix.S_IFREG && parent != nil {
		if child, _, err := c.u.Lookup(parent, name); err != nil || child.Data == nil {
			if err := c.problem(KindMetacopy, rel, "metadata-only copy whose data, in a lower layer, is missing", nil); err != nil {
				return err
			}
		}
	}
	opaqueName, redirectName := c.format.Name(layer.Opaque), c.format.Name(layer.Redirect)
	if !isDir(&st) {
		if xa[opaqueName] {
			if err := c.problem(KindOpaqueMisplaced, rel, "opaque xattr on a non-directory", c.removeXattr(rel, opaqueName)); err != nil {
				return err
			}
		}
		// Kernel overlayfs (metacopy=on) sets a redirect on a regular file
		// that is renamed or linked while a metadata-only copy, and leaves
		// it there when the data is copied: part of its format. On any
		// other non-directory it means nothing.
		if xa[redirectName] && st.Mode&unix.S_IFMT != unix.S_IFREG {
			if err := c.problem(KindRedirectMisplaced, rel, "redirect xattr on a non-directory that is no regular file", c.removeXattr(rel, redirectName)); err != nil {
				return err
			}
		}
		if rel != "" && parent != nil {
			return c.foreignFile(rel, name, &st, xa)
		}
		return nil
	}
	if xa[opaqueName] {
		v, err := c.up.GetxattrString(rel, opaqueName)
		if err != nil {
			return fmt.Errorf("check %s: %w", hostPath(c.up, rel), err)
		}
		if !layer.IsOpaqueValue(v) {
			if err := c.problem(KindOpaqueMisplaced, rel, fmt.Sprintf("opaque xattr %q, which means nothing in an upper", v), c.removeXattr(rel, opaqueName)); err != nil {
				return err
			}
		}
	}
	// Markers of the directory itself first: converting them changes how
	// its contents merge.
	converted := false
	if xa[layer.FuseOverlayfsOpaque] {
		converted = c.opts.Repair
		if err := c.foreignOpaque(rel, "opaque by "+layer.FuseOverlayfsOpaque, func() error {
			return c.up.Removexattr(rel, layer.FuseOverlayfsOpaque)
		}); err != nil {
			return err
		}
	}
	marker := layer.Join(rel, layer.OpaqueWhiteout)
	if mst, err := c.up.Lstat(marker); err == nil && mst.Mode&unix.S_IFMT == unix.S_IFREG {
		converted = c.opts.Repair
		if err := c.foreignOpaque(rel, "opaque by a "+layer.OpaqueWhiteout+" entry", func() error {
			return c.keepTimes(marker, func() error { return c.up.Unlink(marker) })
		}); err != nil {
			return err
		}
	}
	if xa[redirectName] && parent != nil {
		if err := c.redirect(rel, name, e, parent); err != nil {
			return err
		}
		converted = converted || c.opts.Repair
	}
	if converted {
		if e, err = c.lookupAgain(rel, parent); err != nil {
			return err
		}
	}
	ents, err := c.up.ReadDir(rel)
	if err != nil {
		return fmt.Errorf("check %s: %w", hostPath(c.up, rel), err)
	}
	sort.Slice(ents, func(i, j int) bool { return ents[i].Name < ents[j].Name })
	for _, d := range ents {
		if d.Name == layer.OpaqueWhiteout && rel != "" {
			continue // checked with its directory
		}
		p := layer.Join(rel, d.Name)
		var child *union.Entry
		if d.Type == unix.DT_DIR {
			if child, _, err = c.u.Lookup(e, d.Name); err != nil {
				return fmt.Errorf("check %s: %w", hostPath(c.up, p), err)
			}
		}
		if err := c.object(p, child, e); err != nil {
			return err
		}
	}
	return nil
}

// whiteout checks whiteout rel (name in parent).
func (c *checker) whiteout(rel, name string, parent *union.Entry) error {
	below := &union.Entry{Path: parent.Path, Mode: unix.S_IFDIR, Lower: parent.Lower}
	_, _, err := c.u.Lookup(below, name)
	if err == nil {
		return nil
	}
	if !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.ENOTDIR) {
		return fmt.Errorf("check %s: %w", hostPath(c.up, rel), err)
	}
	return c.problem(KindWhiteoutHidesNothing, rel, "whiteout with nothing below it to hide", func() (string, error) {
		return "removed", c.keepTimes(rel, func() error { return c.up.Unlink(rel) })
	})
}

// foreignFile checks a non-directory for the whiteout forms only lowers
// may use.
func (c *checker) foreignFile(rel, name string, st *unix.Stat_t, xa map[string]bool) error {
	dir, _ := layer.Split(rel)
	empty := st.Mode&unix.S_IFMT == unix.S_IFREG && st.Size == 0
	if target, ok := layer.WhiteoutTarget(name); ok && empty && target != "" {
		return c.problem(KindForeignWhiteout, rel, fmt.Sprintf("whiteout of %q as a %s file", target, layer.WhiteoutPrefix), func() (string, error) {
			t := layer.Join(dir, target)
			if ok, err := c.up.Exists(t); err != nil || ok {
				if err == nil {
					err = fmt.Errorf("%s exists: not converted", hostPath(c.up, t))
				}
				return "", err
			}
			err := c.keepTimes(rel, func() error {
				if err := c.up.Mknod(t, layer.WhiteoutMode, layer.WhiteoutDev); err != nil {
					return err
				}
				return c.up.Unlink(rel)
			})
			return "made a whiteout of " + target + " and removed the " + layer.WhiteoutPrefix + " file", err
		})
	}
	if empty && xa[c.format.Name(layer.XWhiteout)] {
		return c.problem(KindForeignWhiteout, rel, "xattr whiteout ("+c.format.Name(layer.XWhiteout)+")", func() (string, error) {
			tmp := layer.Join(dir, tempName(name, "whiteout"))
			return "replaced by a whiteout", c.keepTimes(rel, func() error {
				if err := c.up.Mknod(tmp, layer.WhiteoutMode, layer.WhiteoutDev); err != nil {
					return err
				}
				if err := c.up.Rename(tmp, c.up, rel, 0); err != nil {
					_ = c.up.Unlink(tmp)
					return err
				}
				return nil
			})
		})
	}
	return nil
}

// foreignOpaque reports directory dir made opaque in a form we only read,
// and converts it with drop (which removes the old marker).
func (c *checker) foreignOpaque(dir, what string, drop func() error) error {
	return c.problem(KindForeignWhiteout, dir, what, func() (string, error) {
		if err := c.up.Setxattr(dir, c.format.Name(layer.Opaque), []byte("y"), 0); err != nil {
			return "", err
		}
		return "set " + c.format.Name(layer.Opaque) + "=y instead", drop()
	})
}

// redirect checks the redirect of upper directory rel (name in parent),
// whose merged entry is e.
func (c *checker) redirect(rel, name string, e, parent *union.Entry) error {
	v, err := c.up.GetxattrString(rel, c.format.Name(layer.Redirect))
	if err != nil {
		return fmt.Errorf("check %s: %w", hostPath(c.up, rel), err)
	}
	what := ""
	opaque, _ := c.up.GetxattrString(rel, c.format.Name(layer.Opaque))
	switch {
	case layer.IsOpaqueValue(opaque):
		what = fmt.Sprintf("redirect %q on an opaque directory, which hides the lowers anyway", v)
	case v == "" || (!strings.HasPrefix(v, "/") && (strings.Contains(v, "/") || v == "." || v == "..")):
		what = fmt.Sprintf("redirect %q is not a valid one (a bare name or an absolute path), so it is not followed", v)
	case len(e.Lower) == 0:
		what = fmt.Sprintf("redirect %q points where no lower layer has a directory", v)
	default:
		return nil
	}
	return c.problem(KindRedirectDangling, rel, what, func() (string, error) {
		// Without the redirect the directory would merge with what the
		// lowers have at its own name; keep hiding that, as now.
		below := &union.Entry{Path: parent.Path, Mode: unix.S_IFDIR, Lower: parent.Lower}
		own, _, err := c.u.Lookup(below, name)
		hidden := err == nil && own.IsDir() && len(e.Lower) == 0
		if hidden {
			if err := c.up.Setxattr(rel, c.format.Name(layer.Opaque), []byte("y"), 0); err != nil {
				return "", err
			}
		}
		if err := c.up.Removexattr(rel, c.format.Name(layer.Redirect)); err != nil {
			return "", err
		}
		if hidden {
			return "removed it and made the directory opaque, as the lower directory at its name stays hidden", nil
		}
		return "removed it", nil
	})
}

// keepTimes runs change, which adds or removes rel, and gives rel's
// directory back its times: a repair is no change a user made to it.
func (c *checker) keepTimes(rel string, change func() error) error {
	dir, _ := layer.Split(rel)
	st, err := c.up.Lstat(dir)
	if err != nil {
		return err
	}
	if err := change(); err != nil {
		return err
	}
	return c.up.Lutimes(dir, []unix.Timespec{st.Atim, st.Mtim})
}

// lookupAgain finds the merged entry of upper directory rel afresh, after
// a repair changed how it merges.
func (c *checker) lookupAgain(rel string, parent *union.Entry) (*union.Entry, error) {
	var e *union.Entry
	var err error
	if parent == nil {
		e, err = c.u.Root()
	} else {
		_, name := layer.Split(rel)
		e, _, err = c.u.Lookup(parent, name)
	}
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", hostPath(c.up, rel), err)
	}
	return e, nil
}

func (c *checker) removeXattr(rel, name string) func() (string, error) {
	return func() (string, error) { return "removed it", c.up.Removexattr(rel, name) }
}
