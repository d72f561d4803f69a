package fusefs

import (
	"context"
	"sync"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
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
}

// passthroughFile is a handle whose reads and writes the kernel does itself
// on the backing file (FUSE passthrough). Only files in upper get one: the
// kernel keeps one backing inode per inode, which must not be a lower file
// that a copy-up is about to replace.
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

// Read reads at off, by splicing from the descriptor where the kernel can.
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return fuse.ReadResultFd(uintptr(f.fd), off, len(dest)), 0
}

// Write writes at off.
func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
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
	n, err := unix.Seek(f.fd, int64(off), int(whence))
	return uint64(n), errno(err)
}

// Allocate is fallocate(2).
func (f *fileHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
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
