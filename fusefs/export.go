package fusefs

import (
	"context"
	"strings"
	"syscall"

	gofs "github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
)

// File handles (Options.NFSExport). The kernel makes a handle of a node's
// ID, which is the union inode number, and resolves it from its cache
// while it has the node; when it has not (its cache was dropped, the
// union remounted, an NFS server restarted), it asks the daemon to look up
// "." in that ID (LookupNode), then ".." to connect a directory to its
// parent (LookupParent).

// What a Node implements for file handles.
var (
	_ = (gofs.NodeLookupNoder)((*Node)(nil))
	_ = (gofs.NodeLookupParenter)((*Node)(nil))
)

// LookupNode finds the object whose union inode number is id, the node
// ID of a handle the daemon no longer knows (union.PathOf: a walk of the
// merged tree, the rare case of a handle older than the kernel's cache),
// and connects it to the tree by looking up every name of its path. An
// object that no longer exists is ESTALE, as on kernel overlayfs.
func (n *Node) LookupNode(ctx context.Context, id uint64, out *fuse.EntryOut) (*gofs.Inode, syscall.Errno) {
	if !n.nfsExport {
		return nil, syscall.ESTALE
	}
	path, err := n.u.PathOf(id)
	if err != nil {
		return nil, errno(err)
	}
	cur := n.EmbeddedInode()
	for _, name := range strings.Split(path, "/") {
		if c := cur.GetChild(name); c != nil {
			cur = c
			continue
		}
		dir, ok := cur.Operations().(*Node)
		if !ok {
			return nil, syscall.ESTALE
		}
		var eo fuse.EntryOut
		c, en := dir.lookup(ctx, name, &eo)
		if en != 0 {
			return nil, syscall.ESTALE // gone since the walk
		}
		cur.AddChild(name, c, false)
		cur = c
	}
	found, ok := cur.Operations().(*Node)
	if !ok || cur.StableAttr().Ino != id {
		return nil, syscall.ESTALE
	}
	var ao fuse.AttrOut
	if en := found.Getattr(ctx, nil, &ao); en != 0 {
		return nil, en
	}
	out.Attr = ao.Attr
	return cur, 0
}

// LookupParent returns the directory the node is in and its name there,
// with the directory's attributes.
func (n *Node) LookupParent(ctx context.Context, out *fuse.EntryOut) (*gofs.Inode, string, syscall.Errno) {
	name, parent := n.Parent()
	if parent == nil {
		return nil, "", syscall.ESTALE
	}
	p, ok := parent.Operations().(*Node)
	if !ok {
		return nil, "", syscall.ESTALE
	}
	var ao fuse.AttrOut
	if en := p.Getattr(ctx, nil, &ao); en != 0 {
		return nil, "", en
	}
	out.Attr = ao.Attr
	return parent, name, 0
}
