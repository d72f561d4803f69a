package fusefs

import (
	"context"
	"syscall"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"

	"github.com/unionmount/unionmount/union"
)

// fileHandle is an open file of the mount: the engine's union.File, which
// follows copy-ups itself; this only translates. It offers no passthrough
// backing file: the kernel keeps one per inode, and a lower one would go on
// serving the inode after copy-up.
type fileHandle struct {
	*union.File
	node *Node
}

// passthroughFile is a handle whose reads and writes the kernel does itself
// on the backing file (FUSE passthrough): only a file whose descriptor is
// final (union.File.Fixed).
type passthroughFile struct {
	*fileHandle
}

// PassthroughFd offers the descriptor as the backing file.
func (p *passthroughFile) PassthroughFd() (int, bool) { return p.Fd(), true }

// What a fileHandle implements.
var (
	_ = (fs.FileReader)((*fileHandle)(nil))
	_ = (fs.FileWriter)((*fileHandle)(nil))
	_ = (fs.FileFlusher)((*fileHandle)(nil))
	_ = (fs.FileFsyncer)((*fileHandle)(nil))
	_ = (fs.FileReleaser)((*fileHandle)(nil))
	_ = (fs.FileLseeker)((*fileHandle)(nil))
	_ = (fs.FileAllocater)((*fileHandle)(nil))
	_ = (fs.FilePassthroughFder)((*passthroughFile)(nil))
)

// spliceMin is the size from which reads are spliced.
const spliceMin = 128 << 10

// Read reads at off, by splicing from the descriptor where the kernel can.
func (f *fileHandle) Read(ctx context.Context, dest []byte, off int64) (fuse.ReadResult, syscall.Errno) {
	if len(dest) >= spliceMin {
		// Large reads (of large files) move the data by splice, without
		// copying it through the daemon.
		fd, err := f.DataFd()
		if err != nil {
			return nil, errno(err)
		}
		return fuse.ReadResultFd(uintptr(fd), off, len(dest)), 0
	}
	// Small ones are a plain pread: go-fuse's splice path costs three to
	// four syscalls a read, and twice that when the file ends before the
	// kernel's request does (every small file's read).
	n, err := f.ReadAt(dest, off)
	if err != nil {
		return nil, errno(err)
	}
	return fuse.ReadResultData(dest[:n]), 0
}

// Write writes at off.
func (f *fileHandle) Write(ctx context.Context, data []byte, off int64) (uint32, syscall.Errno) {
	if f.Pending() {
		defer f.node.watchCopyUp()()
	}
	n, err := f.WriteAt(data, off)
	return uint32(n), errno(err)
}

// Flush would run at each close(2). The layers are local filesystems with
// nothing to report at close, so ENOSYS tells the kernel never to send it
// again, saving a round trip per close.
func (f *fileHandle) Flush(ctx context.Context) syscall.Errno {
	return syscall.ENOSYS
}

// Fsync syncs data (and metadata unless FUSE_FSYNC_FDATASYNC).
func (f *fileHandle) Fsync(ctx context.Context, flags uint32) syscall.Errno {
	return errno(f.Sync(flags&1 != 0))
}

// Release closes the file.
func (f *fileHandle) Release(ctx context.Context) syscall.Errno {
	return errno(f.Close())
}

// Lseek serves SEEK_DATA and SEEK_HOLE.
func (f *fileHandle) Lseek(ctx context.Context, off uint64, whence uint32) (uint64, syscall.Errno) {
	n, err := f.Seek(int64(off), int(whence))
	return uint64(n), errno(err)
}

// Allocate is fallocate(2).
func (f *fileHandle) Allocate(ctx context.Context, off uint64, size uint64, mode uint32) syscall.Errno {
	if f.Pending() {
		defer f.node.watchCopyUp()()
	}
	return errno(f.File.Allocate(mode, int64(off), int64(size)))
}

// newFile wraps an open file of the node: with passthrough if its
// descriptor is final and no plain handle is open on the node (the kernel
// refuses to mix the two on one inode), else plain.
func (n *Node) newFile(f *union.File) fs.FileHandle {
	h := &fileHandle{File: f, node: n}
	if !f.Fixed() {
		n.plain.Add(1)
		return h
	}
	for {
		c := n.plain.Load()
		if c > 0 {
			if n.plain.CompareAndSwap(c, c+1) {
				return h
			}
			continue
		}
		return &passthroughFile{h}
	}
}

// Release forgets a closed handle.
func (n *Node) Release(ctx context.Context, f fs.FileHandle) syscall.Errno {
	var h *fileHandle
	switch f := f.(type) {
	case *passthroughFile:
		h = f.fileHandle
	case *fileHandle:
		h = f
		n.plain.Add(-1)
	default:
		return 0
	}
	return h.Release(ctx)
}

// file returns the engine's open file of handle f, or nil.
func file(f fs.FileHandle) *union.File {
	switch h := f.(type) {
	case *fileHandle:
		return h.File
	case *passthroughFile:
		return h.File
	}
	return nil
}
