package fusefs

import (
	"runtime"
	"sync"
	"time"

	"github.com/hanwen/go-fuse/v2/fs"
	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/unionmount/unionmount/union"
	"golang.org/x/sys/unix"
)

// mounts are the mounts of this process, by union (for ResidentFiles).
var mounts sync.Map // *union.Union → *mount

// DefaultMaxEntries is how many file nodes a mount keeps by default: about
// 200 MiB of daemon memory (see TestMemoryPerEntry and bench/RESULTS.md).
const DefaultMaxEntries = 150_000

// ResidentFiles is how many file nodes of u's mount the kernel holds.
func ResidentFiles(u *union.Union) int {
	m, ok := mounts.Load(u)
	if !ok {
		return 0
	}
	r := &m.(*mount).resident
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.live
}

// mount is what every node of one mount shares.
type mount struct {
	u *union.Union
	// attrTimeout is how long the kernel may cache the attributes a reply
	// carries.
	attrTimeout time.Duration
	plus        plusPolicy
	resident    residency
	// nfsExport: file handles outlive the kernel's cache (see Options).
	nfsExport bool
}

// Options are the FUSE-side settings of a mount.
type Options struct {
	// AllowOther lets every user use the mount (permissions are checked by
	// the kernel on the merged attributes).
	AllowOther bool
	// ReadOnly mounts read-only.
	ReadOnly bool
	// FsName is the source shown in /proc/mounts.
	FsName string
	// Debug logs every request.
	Debug bool
	// Timeout is how long the kernel may cache entries and attributes.
	Timeout time.Duration
	// MaxEntries bounds the file nodes kept (see residency); 0: no bound.
	MaxEntries int
	// MountFlags are generic options that become mount flags: dev, nodev,
	// suid, nosuid, exec, noexec (later ones win).
	MountFlags []string
	// NoPassthrough keeps FUSE passthrough off: every read and write of a
	// file goes through the daemon, as on a mount without CAP_SYS_ADMIN.
	NoPassthrough bool
	// NFSExport makes file handles (name_to_handle_at, open_by_handle_at,
	// an NFS export) work, as kernel overlayfs's nfs_export=on: a handle
	// is the union inode number, which lasts across copy-ups and
	// remounts, and one the daemon no longer knows is found again (see
	// LookupNode). Off, name_to_handle_at fails with EOPNOTSUPP, as on
	// kernel overlayfs by default.
	NFSExport bool
}

// spareProcs adds the spare Ps once per process (see Mount).
var spareProcs sync.Once

// Mount mounts u at mountpoint and returns the running server.
func Mount(u *union.Union, mountpoint string, o Options) (*fuse.Server, error) {
	rootEntry, err := u.Root()
	if err != nil {
		return nil, err
	}
	timeout := o.Timeout
	m := &mount{u: u, attrTimeout: timeout, resident: residency{max: o.MaxEntries}, nfsExport: o.NFSExport}
	mounts.Store(u, m)
	root := &Node{mount: m}
	root.un.Init(rootEntry)
	if o.FsName == "" {
		o.FsName = "unionmount"
	}
	opts := &fs.Options{
		// Nil timeouts would mean zero: every access a round trip.
		EntryTimeout:    &timeout,
		AttrTimeout:     &timeout,
		NegativeTimeout: &timeout,
		// Mode 0 stays 0 (a chmod 000 file must not show as 0644).
		NullPermissions: true,
		RootStableAttr:  &fs.StableAttr{Ino: rootEntry.Ino},
		MountOptions: fuse.MountOptions{
			AllowOther:  o.AllowOther,
			FsName:      o.FsName,
			Name:        "unionmount",
			DirectMount: unix.Geteuid() == 0,
			Debug:       o.Debug,
			MaxWrite:    1 << 20,
			// The kernel enforces and caches POSIX ACLs (ls -l asks every
			// file for them); we apply the umask (see aclUmask).
			EnableAcl:         true,
			ExtraCapabilities: fuse.CAP_DONT_MASK,
			// Every change goes through this mount, so the kernel need not
			// check mtimes (a GETATTR per open) to keep its page cache.
			ExplicitDataCacheControl: true,
			// A symlink's target never changes (a new target is a new
			// symlink, with a node of its own), so the kernel keeps it in
			// its page cache: one READLINK per symlink, not per use.
			EnableSymlinkCaching: true,
			// The kernel checks permissions on the merged attributes.
			Options: []string{"default_permissions"},
		},
	}
	if o.ReadOnly {
		opts.MountOptions.Options = append(opts.MountOptions.Options, "ro")
	}
	opts.MountOptions.Options = append(opts.MountOptions.Options, o.MountFlags...)
	if o.NFSExport {
		// Node IDs are the union's inode numbers, which a handle keeps.
		opts.ExternalNodeID = true
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_EXPORT_SUPPORT
	} else {
		opts.MountOptions.ExtraCapabilities |= fuse.CAP_NO_EXPORT_SUPPORT
	}
	if o.NoPassthrough {
		// Without the capability the first backing-file registration
		// fails and go-fuse stops offering backing files (as rootless).
		opts.MountOptions.DisabledCapabilities |= fuse.CAP_PASSTHROUGH
	}
	procs := runtime.GOMAXPROCS(0)
	server, err := fuse.NewServer(&aclUmask{fs.NewNodeFS(root, opts)}, mountpoint, &opts.MountOptions)
	if err != nil {
		return nil, err
	}
	// go-fuse reads requests with up to GOMAXPROCS goroutines (at least
	// two), each blocked in read(2) on /dev/fuse when idle, which holds its
	// P. With no P left idle the runtime's sysmon takes Ps back from every
	// system call longer than 20µs (a copy-up's fsync, the readers' own
	// reads) and hands them between threads: about a sixth of the daemon's
	// CPU in a copy-up storm, and a third more futex wake-ups per request.
	// As many more Ps as readers, set once the readers are counted, leave
	// Ps idle: 10% less CPU in append-go.
	spareProcs.Do(func() { runtime.GOMAXPROCS(procs + min(max(procs, 2), 16)) })
	go server.Serve()
	if err := server.WaitMount(); err != nil {
		return nil, err
	}
	return server, nil
}
