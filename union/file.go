package union

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"golang.org/x/sys/unix"
)

// File is an open file of the union: a descriptor of its object's data
// that follows the object, as kernel overlayfs's file.c does (each call
// asks which real file is current):
//
//   - a file opened read-only on a lower file reads the upper copy once
//     the object is copied up (SPEC §5);
//   - a file opened for writing on a metadata-only copy (see metacopy.go)
//     reads the data below until its first change, which completes the
//     copy;
//   - a file whose object has no name any more (unlinked while open) is
//     still read, written and changed through its descriptor (see
//     unnamed.go).
//
// A failure to follow is the error of the call that needed it.
type File struct {
	u    *Union
	node *Node
	ref  Ref // where the object is now

	mu sync.RWMutex
	fd int
	// below says fd is on a lower layer, read-only: the file follows a
	// copy-up of its object.
	below bool
	// dataFd, while not -1, is where reads go: the data below a
	// metadata-only copy opened for writing (fd, on the upper file, has no
	// data yet). The first change completes the copy first.
	dataFd int
	flags  int // the open flags, to reopen the complete copy
	// seen is the union's copy-up generation when the file last looked
	// whether it must follow a copy-up (see follow).
	seen atomic.Uint64
	// retired are descriptors the file no longer uses: a read may still
	// be splicing from one (see DataFd), so they are closed only at Close.
	retired []int
}

// OpenFile opens r's object with flags: opening for writing or with
// O_TRUNC copies it up first (see Open); where a metadata-only copy can
// stand in it copies no data until the first write. An object with no
// name is opened again through an open file's descriptor.
func (u *Union) OpenFile(r Ref, flags int) (*File, error) {
	n := r.UnionNode()
	path, ok := r.UnionPath()
	if !ok {
		return u.reopenUnnamed(r, flags)
	}
	write := flags&unix.O_ACCMODE != unix.O_RDONLY
	e := u.entryOf(n, path, write || flags&unix.O_TRUNC != 0)
	if write {
		// A write-open that may never write (touch) copies no data yet.
		wfd, rfd, ok, err := u.openDeferred(e, flags)
		n.learn(e)
		if err != nil {
			return nil, err
		}
		if ok {
			return u.newFile(r, wfd, rfd, flags, false), nil
		}
	}
	fd, err := u.Open(e, flags)
	n.learn(e)
	if err != nil {
		return nil, err
	}
	return u.NewFile(r, e, fd, flags), nil
}

// NewFile makes fd, just opened with flags on e's data (by Create,
// Tmpfile), an open file of r's object.
func (u *Union) NewFile(r Ref, e *Entry, fd, flags int) *File {
	// Through the index, a name still below reads the upper inode already.
	return u.newFile(r, fd, -1, flags, !e.DataUpper() && !u.ThroughIndex(e))
}

// newFile registers a new open file of r's object.
func (u *Union) newFile(r Ref, fd, dataFd, flags int, below bool) *File {
	n := r.UnionNode()
	f := &File{u: u, node: n, ref: r, fd: fd, below: below, dataFd: dataFd, flags: flags}
	f.seen.Store(u.copyUpGen())
	n.mu.Lock()
	if n.files == nil {
		n.files = map[*File]struct{}{}
	}
	n.files[f] = struct{}{}
	n.mu.Unlock()
	return f
}

// Fixed reports whether the file's descriptor is the one it will always
// use: its data is in upper (or the union has no upper, so nothing is ever
// copied up). Only such a file may be read by someone else through Fd
// (FUSE passthrough): a lower file would go on serving after a copy-up.
func (f *File) Fixed() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return (!f.below && f.dataFd < 0) || f.u.ReadOnly()
}

// Pending reports whether the file is open for writing on a metadata-only
// copy whose data is still below: its first change completes the copy.
func (f *File) Pending() bool {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.dataFd >= 0
}

// Fd is the file's descriptor (see Fixed).
func (f *File) Fd() int {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.fd
}

// data is the descriptor that holds the file's data now.
// Preconditions: f.mu is held.
func (f *File) data() int {
	if f.dataFd >= 0 {
		return f.dataFd
	}
	return f.fd
}

// follow switches f to the copy of its object in upper if the object was
// copied up, or its metadata-only copy completed, since f last looked
// (each look costs an atomic load while nothing was copied up anywhere).
// A name of a lower file with several names may show the copy made for
// another name, through the hard-link index: that is the same inode.
// Preconditions: f.mu is not held.
func (f *File) follow() error {
	gen := f.u.copyUpGen()
	if f.seen.Load() == gen {
		return nil
	}
	f.mu.RLock()
	watch := f.below || f.dataFd >= 0
	f.mu.RUnlock()
	path, named := f.ref.UnionPath()
	if !watch || !named {
		// Nothing to follow, or no name any more: nothing can copy the
		// object up.
		f.seen.Store(gen)
		return nil
	}
	e := f.u.entryOf(f.node, path, false)
	if !e.DataUpper() && !f.u.ThroughIndex(e) {
		f.seen.Store(gen)
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	var fd int
	var err error
	switch {
	case f.dataFd >= 0:
		// Opened for writing on the metadata-only copy: the complete copy
		// is a new file, opened with the same flags.
		fd, err = f.u.openChecked(f.u.upper, e.Path, f.flags&^(unix.O_CREAT|unix.O_EXCL|unix.O_TRUNC|unix.O_NOCTTY), e.Mode)
		if err == nil {
			f.u.keepAtime(fd)
		}
	case f.below:
		fd, err = f.u.Open(e, unix.O_RDONLY) // read-only: copies nothing
	default:
		return nil // followed meanwhile
	}
	if err != nil {
		return fmt.Errorf("reopen %s after copy-up: %w", e.Path, err)
	}
	if f.dataFd >= 0 {
		f.retired = append(f.retired, f.dataFd)
		f.dataFd = -1
	}
	f.retired = append(f.retired, f.fd)
	f.fd, f.below = fd, false
	f.seen.Store(gen)
	return nil
}

// ReadAt reads up to len(dest) bytes at off. A regular file's read is
// short only at its end.
func (f *File) ReadAt(dest []byte, off int64) (int, error) {
	if err := f.follow(); err != nil {
		return 0, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	for {
		n, err := unix.Pread(f.data(), dest, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// DataFd returns the descriptor that holds the file's data, to splice
// from: it stays open until Close, even if the file follows a copy-up.
func (f *File) DataFd() (int, error) {
	if err := f.follow(); err != nil {
		return -1, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.data(), nil
}

// WriteAt writes data at off.
func (f *File) WriteAt(data []byte, off int64) (int, error) {
	if err := f.completeData(); err != nil {
		return 0, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return unix.Pwrite(f.fd, data, off)
}

// Allocate is fallocate(2).
func (f *File) Allocate(mode uint32, off, size int64) error {
	if err := f.completeData(); err != nil {
		return err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return unix.Fallocate(f.fd, mode, off, size)
}

// Sync is fsync(2), or fdatasync(2) if datasync.
func (f *File) Sync(datasync bool) error {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if datasync {
		return unix.Fdatasync(f.fd)
	}
	return unix.Fsync(f.fd)
}

// Seek serves SEEK_DATA and SEEK_HOLE.
func (f *File) Seek(off int64, whence int) (int64, error) {
	if err := f.follow(); err != nil {
		return 0, err
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return unix.Seek(f.data(), off, whence)
}

// Close closes the file's descriptors; the node forgets it.
func (f *File) Close() error {
	n := f.node
	n.mu.Lock()
	delete(n.files, f)
	if len(n.files) == 0 {
		n.files = nil
	}
	n.mu.Unlock()
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fd := range f.retired {
		unix.Close(fd)
	}
	f.retired = nil
	if f.dataFd >= 0 {
		unix.Close(f.dataFd)
		f.dataFd = -1
	}
	err := unix.Close(f.fd)
	f.fd = -1
	return err
}

// completeData copies the data up before the first change through a file
// opened on a metadata-only copy, and switches to the complete copy.
// Preconditions: f.mu is not held (a copy-up takes the engine's locks).
func (f *File) completeData() error {
	f.mu.RLock()
	pending := f.dataFd >= 0
	f.mu.RUnlock()
	if !pending {
		return nil
	}
	if path, named := f.ref.UnionPath(); named {
		err := f.u.copyUpData(f.node, path)
		if err == nil {
			return f.follow()
		}
		if !errors.Is(err, unix.ENOENT) {
			return err
		}
	}
	// Unlinked meanwhile: there is no path to copy up by; copy into the
	// open file from the data it was reading.
	return f.materialize()
}

// materialize copies the data below into an unnamed metadata-only copy
// opened for writing, before its data or size changes: with no name, the
// engine cannot complete it by path. It holds f.mu, so no write through
// f lands before the copy.
func (f *File) materialize() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.dataFd < 0 {
		return nil
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.dataFd, &st); err != nil {
		return err
	}
	if err := copyData(f.fd, f.dataFd, st.Size, true); err != nil {
		return fmt.Errorf("copy up an unlinked file: %w", err)
	}
	f.retired = append(f.retired, f.dataFd)
	f.dataFd = -1
	return nil
}
