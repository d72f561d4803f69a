package layertool

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"
	"time"

	"github.com/moby/go-archive/compression"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/union"
)

// Import applies an OCI image layer tar read from r (uncompressed, or
// compressed with gzip, zstd, bzip2 or xz) to cfg.Upper, in overlay format:
// ".wh.NAME" entries become whiteouts (character devices 0:0),
// ".wh..wh..opq" entries opaque directories, and everything else what it
// says. It is the reverse of Export, so that a container image's layers can
// become the lowers and the upper of a union.
//
// The upper must be missing or an empty directory: the layer is built under
// a temporary name (in workdir/work when there is a workdir, else beside
// the upper) and renamed into place only when complete. Lowers are
// optional; when given, directories the tar implies without an entry of
// their own get the lower directory's metadata (as a copy-up would), and a
// hard link to a file of a lower layer copies that file up.
func Import(ctx context.Context, cfg union.Config, r io.Reader, opts *Options) (err error) {
	if cfg.Upper == "" {
		return errors.New("upperdir: required")
	}
	upper, err := filepath.Abs(cfg.Upper)
	if err != nil {
		return fmt.Errorf("upperdir %q: %w", cfg.Upper, err)
	}
	// The upper may not exist yet: check the rest, then where it will be.
	rest := cfg
	rest.Upper, rest.Work = "", ""
	if err := checkLayers(rest); err != nil {
		return err
	}
	parent, err := layer.Open(filepath.Dir(upper))
	if err != nil {
		return fmt.Errorf("upperdir %q: %w", cfg.Upper, unwrap(err))
	}
	defer parent.Close()
	name := filepath.Base(upper)
	replace := false
	var rootMeta *meta
	if st, err := parent.Lstat(name); err == nil {
		if !isDir(&st) {
			return fmt.Errorf("upperdir %q: not a directory", cfg.Upper)
		}
		empty, err := emptyDir(parent, name)
		if err != nil {
			return fmt.Errorf("upperdir %q: %w", cfg.Upper, err)
		}
		if !empty {
			return fmt.Errorf("upperdir %q is not empty: import makes a new upper (give an empty or missing directory)", cfg.Upper)
		}
		replace = true
		m := metaOf(&st)
		if m.xattrs, err = readXattrs(parent, name, formatOf(cfg)); err != nil {
			return err
		}
		rootMeta = &m
	} else if !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("upperdir %q: %w", cfg.Upper, err)
	}
	check := cfg
	if !replace {
		check.Upper = ""
	}
	if err := union.CheckLayers(check); err != nil {
		return err
	}
	if !replace {
		if err := RefuseInsideLayers(rest, "upperdir", upper); err != nil {
			return err
		}
	}

	// Where the layer is built: workdir/work, or beside the upper.
	stageIn := parent
	if cfg.Work != "" {
		release, lerr := lockLayers(union.Config{Work: cfg.Work}, true)
		if lerr != nil {
			return lerr
		}
		defer release()
		wd, werr := layer.Open(cfg.Work)
		if werr != nil {
			return fmt.Errorf("workdir %q: %w", cfg.Work, unwrap(werr))
		}
		defer wd.Close()
		madeWork := false
		if err := wd.Mkdir("work", 0o700); err == nil {
			madeWork = true
		} else if !errors.Is(err, unix.EEXIST) {
			return fmt.Errorf("workdir %q: %w", cfg.Work, err)
		}
		defer func() {
			if err != nil && madeWork {
				_ = wd.Rmdir("work") // made for the import: gone again
			}
		}()
		if stageIn, err = wd.OpenLayer("work"); err != nil {
			return fmt.Errorf("workdir %q: %w", cfg.Work, unwrap(err))
		}
		defer stageIn.Close()
	}
	var lowers *union.Union
	if len(cfg.Lowers) > 0 {
		if lowers, err = lowerUnion(cfg); err != nil {
			return err
		}
		defer lowers.Close()
	}
	b, err := newBuilder(stageIn, tempName(name, "import"), opts)
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			b.abort()
		}
	}()
	in, err := compression.DecompressStream(r)
	if err != nil {
		return fmt.Errorf("layer: %w", err)
	}
	defer in.Close()
	im := &importer{b: b, lowers: lowers, format: formatOf(cfg), opts: opts, dirs: map[string]bool{"": true}, buf: make([]byte, 1<<20)}
	if err := im.apply(ctx, tar.NewReader(in)); err != nil {
		return err
	}
	if _, ok := b.dirMet[""]; !ok {
		if rootMeta == nil {
			now := unix.NsecToTimespec(time.Now().UnixNano())
			rootMeta = &meta{mode: unix.S_IFDIR | 0o755, uid: os.Geteuid(), gid: os.Getegid(), atime: now, mtime: now}
		}
		if err := b.mkdir("", rootMeta); err != nil {
			return err
		}
	}
	return b.commit(parent, name, replace)
}

// formatOf is the xattr namespace a mount of cfg would use.
func formatOf(cfg union.Config) layer.Format {
	if cfg.UserXattr || os.Geteuid() != 0 {
		return layer.Format{Prefix: layer.UserPrefix}
	}
	return layer.Format{Prefix: layer.TrustedPrefix}
}

// importer applies one tar's entries to a builder.
type importer struct {
	b      *builder
	lowers *union.Union // nil without lowerdir
	format layer.Format
	opts   *Options
	dirs   map[string]bool // directories known to exist in the tree
	buf    []byte
}

func (im *importer) apply(ctx context.Context, tr *tar.Reader) error {
	for {
		if err := canceled(ctx); err != nil {
			return err
		}
		h, err := tr.Next()
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		if err := im.entry(h, tr); err != nil {
			return err
		}
	}
}

// cleanName turns a tar name into a path in the layer ("" for the root);
// a name that climbs out of the layer is refused.
func cleanName(name string) (string, error) {
	p := path.Clean("/" + name)
	if strings.Contains(name, "\x00") {
		return "", fmt.Errorf("layer: entry %q: NUL in name", name)
	}
	for _, c := range strings.Split(name, "/") {
		if c == ".." {
			return "", fmt.Errorf("layer: entry %q leaves the layer", name)
		}
	}
	return strings.TrimPrefix(p, "/"), nil
}

func (im *importer) entry(h *tar.Header, data io.Reader) error {
	switch h.Typeflag {
	case tar.TypeXGlobalHeader:
		return nil
	}
	rel, err := cleanName(h.Name)
	if err != nil {
		return err
	}
	for _, c := range strings.Split(rel, "/") {
		if strings.HasPrefix(c, layer.WhiteoutPrefix+layer.WhiteoutPrefix) && c != layer.OpaqueWhiteout {
			return nil // aufs's own metadata (.wh..wh.plnk, ...): not part of the tree
		}
	}
	dir, base := layer.Split(rel)
	if rel != "" {
		if err := im.ensureDir(dir); err != nil {
			return err
		}
	}
	b := im.b
	if base == layer.OpaqueWhiteout {
		if err := b.t.Setxattr(dir, im.format.Name(layer.Opaque), []byte("y"), 0); err != nil {
			return fmt.Errorf("layer: %s: set opaque: %w", h.Name, err)
		}
		im.opts.progress().Add(1, 0)
		return nil
	}
	m := meta{
		mode:  uint32(h.Mode & 0o7777),
		uid:   h.Uid,
		gid:   h.Gid,
		mtime: unix.NsecToTimespec(h.ModTime.UnixNano()),
	}
	m.atime = m.mtime
	if !h.AccessTime.IsZero() {
		m.atime = unix.NsecToTimespec(h.AccessTime.UnixNano())
	}
	for k, v := range h.PAXRecords {
		n, ok := strings.CutPrefix(k, "SCHILY.xattr.")
		if !ok {
			continue
		}
		if strings.HasPrefix(n, layer.TrustedPrefix) || strings.HasPrefix(n, layer.UserPrefix) {
			im.opts.warnf("%s: overlay xattr %s in the layer: left out", h.Name, n)
			continue
		}
		m.xattrs = append(m.xattrs, xattr{n, []byte(v)})
	}
	if target, ok := layer.WhiteoutTarget(base); ok && rel != "" {
		if target == "" || target == "." || target == ".." {
			return fmt.Errorf("layer: invalid whiteout entry %q", h.Name)
		}
		p := layer.Join(dir, target)
		if ok, err := b.t.Exists(p); err != nil || ok {
			// A whiteout hides what lower layers have; an entry of this
			// same layer stays.
			return err
		}
		im.opts.progress().Add(1, 0)
		return b.whiteout(p, m)
	}
	if h.Typeflag == tar.TypeDir {
		m.mode |= unix.S_IFDIR
		if err := im.replace(rel, true); err != nil {
			return err
		}
		im.dirs[rel] = true
		im.opts.progress().Add(1, 0)
		return b.mkdir(rel, &m)
	}
	if rel == "" {
		return fmt.Errorf("layer: entry %q: the root must be a directory", h.Name)
	}
	if err := im.replace(rel, false); err != nil {
		return err
	}
	im.opts.progress().Add(1, 0) // the bytes are counted as the layer is read
	switch h.Typeflag {
	case tar.TypeReg: // archive/tar reads the old TypeRegA as TypeReg
		m.mode |= unix.S_IFREG
		return b.file(rel, m, func(fd int) error { return im.writeData(fd, data, h.Size) })
	case tar.TypeSymlink:
		m.mode |= unix.S_IFLNK
		return b.symlink(rel, h.Linkname, m)
	case tar.TypeLink:
		target, err := cleanName(h.Linkname)
		if err != nil {
			return err
		}
		if err := im.linkTarget(target, h.Name); err != nil {
			return err
		}
		return b.link(target, rel)
	case tar.TypeChar, tar.TypeBlock, tar.TypeFifo:
		m.mode |= map[byte]uint32{tar.TypeChar: unix.S_IFCHR, tar.TypeBlock: unix.S_IFBLK, tar.TypeFifo: unix.S_IFIFO}[h.Typeflag]
		return b.special(rel, m, unix.Mkdev(uint32(h.Devmajor), uint32(h.Devminor)))
	}
	return fmt.Errorf("layer: entry %q: unsupported type %q", h.Name, h.Typeflag)
}

// replace clears rel for a new entry: a later entry of a tar replaces an
// earlier one, but a directory over a directory only updates it.
func (im *importer) replace(rel string, dir bool) error {
	st, err := im.b.t.Lstat(rel)
	if errors.Is(err, unix.ENOENT) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("layer: %s: %w", rel, err)
	}
	if dir && isDir(&st) {
		return nil
	}
	if rel == "" {
		return fmt.Errorf("layer: the root must be a directory")
	}
	delete(im.dirs, rel)
	return im.b.t.RemoveAll(rel)
}

// ensureDir makes directory rel and its parents if the tar has not: with
// the metadata the lowers give it, if they have it (as a copy-up would),
// else mode 0755.
func (im *importer) ensureDir(rel string) error {
	if im.dirs[rel] {
		return nil
	}
	parent, _ := layer.Split(rel)
	if err := im.ensureDir(parent); err != nil {
		return err
	}
	st, err := im.b.t.Lstat(rel)
	if err == nil && isDir(&st) {
		im.dirs[rel] = true
		return nil
	}
	if err == nil {
		return fmt.Errorf("layer: %s is not a directory but the layer has entries in it", rel)
	}
	var m *meta
	if im.lowers != nil {
		if e, err := im.lowers.Resolve(rel); err == nil && e.IsDir() {
			l, p, err := im.lowers.Visible(e)
			if err != nil {
				return fmt.Errorf("lowerdir: %s: %w", rel, err)
			}
			lst, err := l.Lstat(p)
			if err != nil {
				return fmt.Errorf("lowerdir: %s: %w", rel, err)
			}
			mm := metaOf(&lst)
			if mm.xattrs, err = readXattrs(l, p, im.format); err != nil {
				return err
			}
			m = &mm
		}
	}
	if m == nil {
		now := unix.NsecToTimespec(time.Now().UnixNano())
		m = &meta{mode: unix.S_IFDIR | 0o755, uid: os.Geteuid(), gid: os.Getegid(), atime: now, mtime: now}
	}
	if err := im.b.mkdir(rel, m); err != nil {
		return err
	}
	im.dirs[rel] = true
	return nil
}

// linkTarget makes sure the target of a hard link exists in the tree: a
// target only the lowers have is copied up first.
func (im *importer) linkTarget(target, name string) error {
	ok, err := im.b.t.Exists(target)
	if err != nil || ok {
		return err
	}
	if im.lowers == nil {
		return fmt.Errorf("layer: hard link %s to %s, which is not in the layer (give lowerdir if it is in a lower layer)", name, target)
	}
	e, err := im.lowers.Resolve(target)
	if err != nil || e.IsDir() {
		return fmt.Errorf("layer: hard link %s to %s, which is neither in the layer nor a file of the lowers", name, target)
	}
	l, p, err := im.lowers.Visible(e)
	if err != nil {
		return fmt.Errorf("lowerdir: %s: %w", target, err)
	}
	st, err := l.Lstat(p)
	if err != nil {
		return fmt.Errorf("lowerdir: %s: %w", target, err)
	}
	dir, _ := layer.Split(target)
	if err := im.ensureDir(dir); err != nil {
		return err
	}
	m := metaOf(&st)
	if m.xattrs, err = readXattrs(l, p, im.format); err != nil {
		return err
	}
	return copyObject(im.b, target, m, l, p, &st, func() (int, error) { return im.lowers.Open(e, unix.O_RDONLY) })
}

// copyObject makes rel in b a copy of non-directory p in l; open opens a
// regular file's data.
func copyObject(b *builder, rel string, m meta, l *layer.Layer, p string, st *unix.Stat_t, open func() (int, error)) error {
	switch st.Mode & unix.S_IFMT {
	case unix.S_IFREG:
		return b.file(rel, m, func(fd int) error {
			in, err := open()
			if err != nil {
				return err
			}
			defer unix.Close(in)
			return union.CopyData(fd, in, st.Size)
		})
	case unix.S_IFLNK:
		target, err := l.Readlink(p)
		if err != nil {
			return fmt.Errorf("readlink %s: %w", hostPath(l, p), err)
		}
		return b.symlink(rel, target, m)
	default:
		return b.special(rel, m, st.Rdev)
	}
}

// writeData copies size bytes of r into fd, leaving blocks of zeros as
// holes, so sparse files stay sparse.
func (im *importer) writeData(fd int, r io.Reader, size int64) error {
	const blk = 4096
	var zero [blk]byte
	var off int64
	for off < size {
		n, err := io.ReadFull(r, im.buf[:min(int64(len(im.buf)), size-off)])
		if err != nil {
			return fmt.Errorf("layer: %w", err)
		}
		chunk := im.buf[:n]
		for i := 0; i < len(chunk); {
			j := min(i+blk, len(chunk))
			if bytes.Equal(chunk[i:j], zero[:j-i]) {
				i = j
				continue
			}
			// A run of blocks with data, written at once.
			k := j
			for k < len(chunk) {
				e := min(k+blk, len(chunk))
				if bytes.Equal(chunk[k:e], zero[:e-k]) {
					break
				}
				k = e
			}
			if _, err := unix.Pwrite(fd, chunk[i:k], off+int64(i)); err != nil {
				return err
			}
			i = k
		}
		off += int64(n)
	}
	return unix.Ftruncate(fd, size)
}
