package fusefs

import (
	"github.com/hanwen/go-fuse/v2/fuse"
)

// aclUmask applies the caller's umask to new objects as ext4 does with
// POSIX ACLs on: not at all in a directory with a default ACL (the
// inherited ACL decides), else mode &^ umask. The mount negotiates
// FUSE_DONT_MASK so that the kernel leaves this to us; go-fuse's node API
// does not carry the umask, so it is applied here, on the raw requests.
type aclUmask struct {
	fuse.RawFileSystem
}

func (a *aclUmask) mask(parent uint64, caller fuse.Caller, mode, umask uint32) uint32 {
	if umask == 0 {
		return mode
	}
	hdr := &fuse.InHeader{NodeId: parent, Caller: caller}
	if _, st := a.RawFileSystem.GetXAttr(nil, hdr, "system.posix_acl_default", nil); st.Ok() {
		return mode
	}
	return mode &^ (umask & 0o7777)
}

func (a *aclUmask) Create(cancel <-chan struct{}, in *fuse.CreateIn, name string, out *fuse.CreateOut) fuse.Status {
	in.Mode = a.mask(in.NodeId, in.Caller, in.Mode, in.Umask)
	return a.RawFileSystem.Create(cancel, in, name, out)
}

func (a *aclUmask) Mkdir(cancel <-chan struct{}, in *fuse.MkdirIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = a.mask(in.NodeId, in.Caller, in.Mode, in.Umask)
	return a.RawFileSystem.Mkdir(cancel, in, name, out)
}

func (a *aclUmask) Mknod(cancel <-chan struct{}, in *fuse.MknodIn, name string, out *fuse.EntryOut) fuse.Status {
	in.Mode = a.mask(in.NodeId, in.Caller, in.Mode, in.Umask)
	return a.RawFileSystem.Mknod(cancel, in, name, out)
}
