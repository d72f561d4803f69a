package layertool

import (
	"archive/tar"
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/internal/layer"
	"github.com/unionmount/unionmount/union"
)

// Export writes the upper of cfg to w as an OCI image layer tar: what the
// upper holds, with whiteouts as ".wh.NAME" files and opaque directories
// marked by a ".wh..wh..opq" entry. A directory renamed from a lower one
// (redirect xattr), which a tar cannot express, is written as an opaque
// directory with its whole merged contents, and a metadata-only copy with
// its data, read from the lower layer. Hard links become tar links,
// xattrs (but overlay's own) PAX records, sparse files GNU sparse entries.
//
// The output depends only on the layers: entries come depth first in byte
// order of their names, with each object's own mtime and no atime, ctime,
// user or group names, so the same upper gives the same bytes.
func Export(ctx context.Context, cfg union.Config, w io.Writer, opts *Options) error {
	if cfg.Upper == "" {
		return errors.New("upperdir: required")
	}
	s, err := openSession(cfg, false)
	if err != nil {
		return err
	}
	defer s.close()
	root, err := s.u.Root()
	if err != nil {
		return err
	}
	stop := countInBackground(ctx, opts.progress(), func(ctx context.Context, add func(int64)) error {
		c := &exporter{u: s.u, format: s.u.Format(), count: add}
		return c.upperDir(ctx, root)
	})
	defer stop()
	bw := bufio.NewWriterSize(w, 1<<20)
	x := &exporter{u: s.u, format: s.u.Format(), tw: newTarWriter(bw), links: map[fileID]string{}, done: map[string]bool{}, opts: opts}
	if err := x.upperDir(ctx, root); err != nil {
		return err
	}
	if err := x.indexVisible(ctx, root); err != nil {
		return err
	}
	if err := x.tw.tw.Close(); err != nil {
		return fmt.Errorf("write tar: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write tar: %w", err)
	}
	return nil
}

// fileID identifies a real object, for hard links.
type fileID struct{ dev, ino uint64 }

// exporter walks the upper and writes (or, with count set, only counts)
// the entries of the layer.
type exporter struct {
	u      *union.Union
	format layer.Format
	tw     *tarWriter
	links  map[fileID]string // first tar name of each multiply linked object
	done   map[string]bool   // union paths written
	opts   *Options
	count  func(size int64) // counting pass: called per object instead of writing
	buf    []byte
}

// upperDir exports upper directory e and what is in it.
func (x *exporter) upperDir(ctx context.Context, e *union.Entry) error {
	if err := canceled(ctx); err != nil {
		return err
	}
	up := x.u.UpperLayer()
	rel := e.Path
	st, err := x.dir(rel, up, rel)
	if err != nil {
		return err
	}
	opaque, err := up.GetxattrString(rel, x.format.Name(layer.Opaque))
	if err != nil {
		return fmt.Errorf("export %s: %w", unionPath(rel), err)
	}
	redirect, err := up.GetxattrString(rel, x.format.Name(layer.Redirect))
	if err != nil {
		return fmt.Errorf("export %s: %w", unionPath(rel), err)
	}
	if layer.IsOpaqueValue(opaque) || redirect != "" {
		if err := x.marker(layer.Join(rel, layer.OpaqueWhiteout), &st); err != nil {
			return err
		}
	}
	if redirect != "" {
		// Renamed from a lower directory: a layer tar cannot say so, so it
		// holds the whole merged directory, opaque.
		return x.u.Walk(e, func(v *union.Visited) error {
			if v.Entry.Path == rel {
				return nil
			}
			if err := canceled(ctx); err != nil {
				return err
			}
			xs, err := x.xattrs(v.Layer, v.Real)
			if err != nil {
				return err
			}
			return x.object(v.Entry.Path, v.Layer, v.Real, &v.Stat, xs, func() (int, error) {
				return x.u.Open(v.Entry, unix.O_RDONLY)
			})
		})
	}
	ents, err := up.ReadDir(rel)
	if err != nil {
		return fmt.Errorf("export %s: %w", unionPath(rel), err)
	}
	// Entries in the order of their names in the tar.
	type item struct {
		tarName, name string
		st            unix.Stat_t
	}
	items := make([]item, 0, len(ents))
	for _, d := range ents {
		p := layer.Join(rel, d.Name)
		cst, err := up.Lstat(p)
		if err != nil {
			return fmt.Errorf("export %s: %w", unionPath(p), err)
		}
		tn := d.Name
		if layer.IsWhiteout(&cst) {
			tn = layer.WhiteoutPrefix + d.Name
		}
		items = append(items, item{tn, d.Name, cst})
	}
	sort.Slice(items, func(i, j int) bool { return items[i].tarName < items[j].tarName })
	for _, it := range items {
		p := layer.Join(rel, it.name)
		switch {
		case layer.IsWhiteout(&it.st):
			if err := x.marker(layer.Join(rel, it.tarName), &it.st); err != nil {
				return err
			}
		case isDir(&it.st):
			child, _, err := x.u.Lookup(e, it.name)
			if err != nil {
				return fmt.Errorf("export %s: %w", unionPath(p), err)
			}
			if err := x.upperDir(ctx, child); err != nil {
				return err
			}
		default:
			xs, err := x.xattrs(up, p)
			if err != nil {
				return err
			}
			// The data through the engine: a metadata-only copy's is below.
			open := func() (int, error) {
				child, _, err := x.u.Lookup(e, it.name)
				if err != nil {
					return -1, err
				}
				return x.u.Open(child, unix.O_RDONLY)
			}
			if err := x.object(p, up, p, &it.st, xs, open); err != nil {
				return err
			}
		}
	}
	return nil
}

// indexVisible writes the names that the upper does not hold but that show
// a copied-up file through the engine's index: the other names of a lower
// file with several, one of which was copied up. Each becomes a hard link
// to the copy written already (or the file itself if no upper name of it
// is left), after whatever parent directories the tar lacks. Only a union
// with indexed files pays for this walk of the merged tree.
func (x *exporter) indexVisible(ctx context.Context, root *union.Entry) error {
	if ok, err := x.u.HasIndexed(); err != nil || !ok {
		return err
	}
	return x.u.Walk(root, func(v *union.Visited) error {
		if err := canceled(ctx); err != nil {
			return err
		}
		if x.done[v.Entry.Path] || !x.u.ThroughIndex(v.Entry) {
			return nil
		}
		var parents []string
		for p := v.Entry.Path; p != ""; {
			p, _ = layer.Split(p)
			if p != "" && !x.done[p] {
				parents = append([]string{p}, parents...)
			}
		}
		for _, p := range parents {
			e, err := x.u.Resolve(p)
			if err != nil {
				return fmt.Errorf("export %s: %w", unionPath(p), err)
			}
			l, real, err := x.u.Visible(e)
			if err != nil {
				return fmt.Errorf("export %s: %w", unionPath(p), err)
			}
			if _, err := x.dir(p, l, real); err != nil {
				return err
			}
		}
		xs, err := x.xattrs(v.Layer, v.Real)
		if err != nil {
			return err
		}
		return x.object(v.Entry.Path, v.Layer, v.Real, &v.Stat, xs, func() (int, error) {
			return x.u.Open(v.Entry, unix.O_RDONLY)
		})
	})
}

// xattrs reads the xattrs of rel in l that a mount shows, sorted.
func (x *exporter) xattrs(l *layer.Layer, rel string) ([]xattr, error) {
	if x.count != nil {
		return nil, nil
	}
	return readXattrs(l, rel, x.format)
}

// readXattrs reads the xattrs of rel in l but the overlay's own, sorted by
// name.
func readXattrs(l *layer.Layer, rel string, f layer.Format) ([]xattr, error) {
	names, err := l.Listxattr(rel)
	if err != nil {
		return nil, fmt.Errorf("list xattrs of %s: %w", hostPath(l, rel), err)
	}
	sort.Strings(names)
	var out []xattr
	for _, n := range names {
		if f.IsPrivate(n) {
			continue
		}
		v, err := l.GetxattrString(rel, n)
		if err != nil {
			return nil, fmt.Errorf("read xattr %s of %s: %w", n, hostPath(l, rel), err)
		}
		out = append(out, xattr{n, []byte(v)})
	}
	return out, nil
}

// marker writes a whiteout or opaque marker: an empty regular file with
// st's owner and mtime.
func (x *exporter) marker(name string, st *unix.Stat_t) error {
	if x.count != nil {
		x.count(0)
		return nil
	}
	return x.write(&tar.Header{
		Typeflag: tar.TypeReg,
		Name:     name,
		Uid:      int(st.Uid),
		Gid:      int(st.Gid),
		ModTime:  mtimeOf(st),
		Format:   tar.FormatPAX,
	}, nil)
}

// dir writes directory rel of the union, found at real in l, and returns
// its attributes.
func (x *exporter) dir(rel string, l *layer.Layer, real string) (unix.Stat_t, error) {
	st, err := l.Lstat(real)
	if err != nil {
		return st, fmt.Errorf("export %s: %w", unionPath(rel), err)
	}
	xs, err := x.xattrs(l, real)
	if err != nil {
		return st, err
	}
	return st, x.object(rel, l, real, &st, xs, nil)
}

// object writes the object at rel in the union, found at real in l; open
// opens a regular file's data.
func (x *exporter) object(rel string, l *layer.Layer, real string, st *unix.Stat_t, xs []xattr, open func() (int, error)) error {
	if x.count != nil {
		if st.Mode&unix.S_IFMT == unix.S_IFREG {
			x.count(st.Size)
		} else {
			x.count(0)
		}
		return nil
	}
	if x.done != nil {
		x.done[rel] = true
	}
	h := &tar.Header{
		Name:    rel,
		Mode:    int64(st.Mode & 0o7777),
		Uid:     int(st.Uid),
		Gid:     int(st.Gid),
		ModTime: mtimeOf(st),
		Format:  tar.FormatPAX,
	}
	if rel == "" {
		h.Name = "./"
	}
	for _, a := range xs {
		if h.PAXRecords == nil {
			h.PAXRecords = map[string]string{}
		}
		h.PAXRecords["SCHILY.xattr."+a.name] = string(a.value)
	}
	typ := st.Mode & unix.S_IFMT
	if typ != unix.S_IFDIR && st.Nlink > 1 {
		id := fileID{st.Dev, st.Ino}
		if first, ok := x.links[id]; ok {
			// With the file's own metadata, as GNU tar writes links:
			// extractors apply it to the shared inode.
			h.Typeflag, h.Linkname = tar.TypeLink, first
			return x.write(h, nil)
		}
		x.links[id] = rel
	}
	switch typ {
	case unix.S_IFDIR:
		h.Typeflag = tar.TypeDir
		if rel != "" {
			h.Name += "/"
		}
	case unix.S_IFREG:
		h.Typeflag, h.Size = tar.TypeReg, st.Size
		return x.file(h, st, open)
	case unix.S_IFLNK:
		target, err := l.Readlink(real)
		if err != nil {
			return fmt.Errorf("export %s: %w", unionPath(rel), err)
		}
		h.Typeflag, h.Linkname = tar.TypeSymlink, target
	case unix.S_IFCHR, unix.S_IFBLK:
		h.Typeflag = tar.TypeChar
		if typ == unix.S_IFBLK {
			h.Typeflag = tar.TypeBlock
		}
		h.Devmajor, h.Devminor = int64(unix.Major(st.Rdev)), int64(unix.Minor(st.Rdev))
	case unix.S_IFIFO:
		h.Typeflag = tar.TypeFifo
	default:
		x.opts.warnf("%s: a socket, which a tar cannot hold: left out", unionPath(rel))
		return nil
	}
	return x.write(h, nil)
}

// file writes regular file h, its data read from what open opens; a file
// with holes becomes a sparse entry.
func (x *exporter) file(h *tar.Header, st *unix.Stat_t, open func() (int, error)) error {
	fd, err := open()
	if err != nil {
		return fmt.Errorf("export %s: %w", unionPath(h.Name), err)
	}
	defer unix.Close(fd)
	var dst unix.Stat_t
	if err := unix.Fstat(fd, &dst); err != nil {
		return fmt.Errorf("export %s: %w", unionPath(h.Name), err)
	}
	if st.Size > 0 && dst.Blocks*512 < st.Size {
		segs := dataSegments(fd, st.Size)
		var data int64
		for _, s := range segs {
			data += s.len
		}
		if data < st.Size {
			if err := x.tw.writeSparse(h, segs, fd); err != nil {
				return fmt.Errorf("export %s: %w", unionPath(h.Name), err)
			}
			x.opts.progress().Add(1, st.Size)
			return nil
		}
	}
	return x.write(h, io.NewSectionReader(fdReaderAt(fd), 0, st.Size))
}

func (x *exporter) write(h *tar.Header, data io.Reader) error {
	if err := x.tw.tw.WriteHeader(h); err != nil {
		return fmt.Errorf("export %s: %w", unionPath(h.Name), err)
	}
	if data != nil {
		if x.buf == nil {
			x.buf = make([]byte, 1<<20)
		}
		n, err := io.CopyBuffer(x.tw.tw, data, x.buf)
		if err == nil && n != h.Size {
			err = fmt.Errorf("%w (file changed while exported)", io.ErrUnexpectedEOF)
		}
		if err != nil {
			return fmt.Errorf("export %s: %w", unionPath(h.Name), err)
		}
	}
	x.opts.progress().Add(1, h.Size)
	return nil
}

// fdReaderAt reads a descriptor at offsets.
type fdReaderAt int

func (f fdReaderAt) ReadAt(b []byte, off int64) (int, error) {
	n, err := unix.Pread(int(f), b, off)
	if err != nil {
		return 0, err
	}
	if n == 0 && len(b) > 0 {
		return 0, io.EOF
	}
	return n, nil
}

func mtimeOf(st *unix.Stat_t) time.Time { return time.Unix(st.Mtim.Sec, st.Mtim.Nsec) }

// countInBackground runs count, a pass over the same objects the tool will
// do, beside the tool, to give p its total; nothing when p is nil. stop
// ends it and waits.
func countInBackground(ctx context.Context, p *Progress, count func(ctx context.Context, add func(size int64)) error) (stop func()) {
	if p == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		var files, bytes int64
		if count(ctx, func(size int64) { files++; bytes += size }) == nil {
			p.SetTotal(files, bytes)
		}
	}()
	return func() { cancel(); <-done }
}
