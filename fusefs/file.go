package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/union"
)

// fileHandle is an open file of the mount: a descriptor on the upper or a
// lower layer. A read-only descriptor on a lower file is switched to the
// upper copy when the file is copied up, so it reads what later writers
// wrote (SPEC §5). It deliberately offers no passthrough backing file: the
// kernel keeps one per inode, and a lower one would go on serving the inode
// after copy-up.
type fileHandle struct {
	mu    sync.RWMutex
	fd    int
	lower bool // fd is on a lower layer, read-only
	// retired are descriptors replaced by switchTo: a read may still be
	// splicing from one, so they are closed only at Release.
	retired []int
	// readFd, while not -1, is where reads go: the data below a
	// metadata-only copy opened for writing (fd, on the upper file, has no
	// data yet). The first write copies the data up through node first.
	readFd int
	node   *Node
	flags  int // the open flags, to reopen the complete copy
}

// passthroughFile is a handle whose reads and writes the kernel does itself
// on the backing file (FUSE passthrough). Only files in upper get one (and
// lower files of a union without upper, which never copies up): the kernel
// keeps one backing inode per inode, which must not be a lower file that a
// copy-up is about to replace.
type passthroughFile struct {
	*fileHandle
}

// PassthroughFd offers the descriptor as the backing file.
func (p *passthroughFile) PassthroughFd() (int, bool) {
	p.mu.RLock()
	defer p.mu.RUnlock()
	return p.fd, true
}

// What a fileHandle implements.
var (
	_ = (fs.FileReader)((*fileHandle)(nil))
	_ = (fs.FileWriter)((*fileHandle)(nil))
	_ = (fs.FileFlusher)((*fileHandle)(nil))
	_ = (fs.FileFsyncer)((*fileHandle)(nil))
	_ = (fs.FileReleaser)((*fileHandle)(nil))
	_ = (fs.FileGetattrer)((*fileHandle)(nil))
	_ = (fs.FileLseeker)((*fileHandle)(nil))
	_ = (fs.FileAllocater)((*fileHandle)(nil))
	_ = (fs.FilePassthroughFder)((*passthroughFile)(nil))
)

// dataFd is the descriptor that holds the file's data now.
// Preconditions: f.mu is held.
func (f *fileHandle) dataFd() int {
	if f.readFd >= 0 {
		return f.readFd
	}
	return f.fd
}

// Read reads at off, by splicing from the descriptor where the kernel can.
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if len(dest) >= spliceMin {
		// Large reads (of large files) move the data by splice, without
		// copying it through the daemon.
		return fuse.ReadResultFd(uintptr(f.dataFd()), off, len(dest)), 0
	}
	// Small ones are a plain pread: go-fuse's splice path costs three to
	// four syscalls a read, and twice that when the file ends before the
	// kernel's request does (every small file's read).
	n, err := pread(f.dataFd(), dest, off)
	if err != nil {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// spliceMin is the size from which reads are spliced.
const spliceMin = 128 << 10

// pread reads up to len(dest) bytes at off. A regular file's read is
// short only at its end, which is what a short reply tells the kernel.
func pread(fd int, dest []byte, off int64) (int, error) {
	for {
		n, err := unix.Pread(fd, dest, off)
		if err != unix.EINTR {
			return n, err
		}
	}
}

// ensureData copies the data up before the first change through a handle
// opened on a metadata-only copy.
func (f *fileHandle) ensureData() syscall.Errno {
	f.mu.RLock()
	n := f.node
	pending := f.readFd >= 0
	f.mu.RUnlock()
	if !pending {
		return 0
	}
	if en := n.completeData(); en == syscall.ENOENT {
		// Unlinked meanwhile: no path to copy up by; copy into the open
		// file from the data it was reading.
		return f.materialize()
	} else if en != 0 {
		return en
	}
	// completeData switched every handle of the node, this one included.
	return 0
}

// finishPending: the data is in upper now, in a new file (see
// union.completeMetaCopy): reads and writes go to fd, opened on it.
func (f *fileHandle) finishPending(fd int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readFd >= 0 {
		f.retired = append(f.retired, f.readFd)
		f.readFd = -1
	}
	f.retired = append(f.retired, f.fd)
	f.fd, f.node = fd, nil
}

// Write writes at off.
func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if en := f.ensureData(); en != 0 {
		return 0, en
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := unix.Pwrite(f.fd, data, off)
	if err != nil {
		return 0, errno(err)
	}
	return uint32(n), 0
}

// Flush would run at each close(2). The layers are local filesystems with
// nothing to report at close, so ENOSYS tells the kernel never to send it
// again, saving a round trip per close.
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno {
	return syscall.ENOSYS
}

// Fsync syncs data (and metadata unless FUSE_FSYNC_FDATASYNC).
func (f *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	f.mu.RLock()
	defer f.mu.RUnlock()
	if flags&1 != 0 {
		return errno(unix.Fdatasync(f.fd))
	}
	return errno(unix.Fsync(f.fd))
}

// Release closes the descriptors.
func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, fd := range f.retired {
		unix.Close(fd)
	}
	f.retired = nil
	if f.readFd >= 0 {
		unix.Close(f.readFd)
		f.readFd = -1
	}
	err := unix.Close(f.fd)
	f.fd = -1
	return errno(err)
}

// Getattr stats the open file (used when it has no name any more).
func (f *fileHandle) Getattr(ctx context.Context, out *fuse.AttrOut) syscall.Errno {
	f.mu.RLock()
	defer f.mu.RUnlock()
	var st unix.Stat_t
	if err := unix.Fstat(f.fd, &st); err != nil {
		return errno(err)
	}
	fillAttr(&out.Attr, &st)
	return 0
}

// Lseek serves SEEK_DATA and SEEK_HOLE.
func (f *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	n, err := unix.Seek(f.dataFd(), int64(off), int(whence))
	return uint64(n), errno(err)
}

// Allocate is fallocate(2).
func (f *fileHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if en := f.ensureData(); en != 0 {
		return en
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	return errno(unix.Fallocate(f.fd, mode, int64(off), int64(size)))
}

// switchTo replaces a lower descriptor with fd, a read-only descriptor of the
// upper copy.
func (f *fileHandle) switchTo(fd int) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fd < 0 {
		unix.Close(fd)
		return
	}
	f.retired = append(f.retired, f.fd)
	f.fd, f.lower = fd, false
}

// Operations on the open file itself, for a node with no name any more
// (unlinked while open): its path is gone, its descriptor is not. Only an
// upper descriptor may be changed: a lower file is never written.

// changeable returns the descriptor to change the file through, or EROFS if
// it is a lower file.
// Preconditions: f.mu is held.
func (f *fileHandle) changeable() (int, syscall.Errno) {
	if f.lower {
		return -1, syscall.EROFS
	}
	return f.fd, 0
}

// detach makes an open lower file that has no name any more changeable:
// its data and metadata are copied into an unnamed upper file, which the
// handle then uses.
//
// A lower file with other names still has their shared copy in the index
// (made when this name was removed): that is the file to change.
func (f *fileHandle) detach(u *union.Union, indexKey string) syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if !f.lower {
		return 0
	}
	fd, ok, err := u.OpenIndex(indexKey)
	if err != nil {
		return errno(err)
	}
	if !ok {
		if fd, err = u.CopyOpenFile(f.fd); err != nil {
			return errno(err)
		}
	}
	f.retired = append(f.retired, f.fd)
	f.fd, f.lower = fd, false
	return 0
}

// setattrFd applies a to the open file.
func (f *fileHandle) setattrFd(u *union.Union, indexKey string, a union.SetAttr) syscall.Errno {
	if en := f.detach(u, indexKey); en != 0 {
		return en
	}
	if a.Size != nil {
		if en := f.materialize(); en != 0 {
			return en
		}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	fd, en := f.changeable()
	if en != 0 {
		return en
	}
	return errno(a.Apply(fd, unix.S_IFREG))
}

// materialize copies the data below into an unlinked metadata-only copy
// opened for writing, before its size changes: with no name, the engine
// cannot do it by path.
func (f *fileHandle) materialize() syscall.Errno {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.readFd < 0 {
		return 0
	}
	var st unix.Stat_t
	if err := unix.Fstat(f.readFd, &st); err != nil {
		return errno(err)
	}
	if err := union.CopyData(f.fd, f.readFd, st.Size); err != nil {
		return errno(err)
	}
	f.retired = append(f.retired, f.readFd)
	f.readFd, f.node = -1, nil
	return 0
}

// xattrFd runs an xattr call on the open file; write says it changes it.
func (f *fileHandle) xattrFd(u *union.Union, indexKey string, write bool, op func(fd int) error) syscall.Errno {
	if write {
		if en := f.detach(u, indexKey); en != 0 {
			return en
		}
	}
	f.mu.RLock()
	defer f.mu.RUnlock()
	fd := f.fd
	if write {
		var en syscall.Errno
		if fd, en = f.changeable(); en != 0 {
			return en
		}
	}
	return errno(op(fd))
}
