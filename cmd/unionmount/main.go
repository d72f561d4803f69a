// Command unionmount mounts a union of directories with FUSE.
//
//	unionmount [-f] [-d] -o lowerdir=L1:L2,upperdir=U,workdir=W MOUNTPOINT
//
// By default it detaches: it re-executes itself as a daemon and exits 0 only
// once the daemon reports the mount live, or prints the daemon's error and
// exits 1. Go cannot fork, so the daemon is a fresh process that tells its
// parent through an inherited pipe.
package main

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/hanwen/go-fuse/v2/splice"
	"golang.org/x/sys/unix"

	"github.com/unionmount/unionmount/fusefs"
	"github.com/unionmount/unionmount/internal/mountinfo"
	"github.com/unionmount/unionmount/union"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "0.1.0-dev"

// notifyEnv names the descriptor on which a daemon reports readiness.
const notifyEnv = "UNIONMOUNT_NOTIFY_FD"

func main() {
	os.Exit(run(os.Args[1:]))
}

func run(args []string) int {
	if len(args) > 0 {
		if tool, ok := subcommands[args[0]]; ok {
			return tool(args[1:])
		}
	}
	for _, a := range args {
		switch a {
		case "-h", "--help":
			fmt.Print(usage())
			return 0
		case "-V", "--version":
			fmt.Printf("unionmount version %s\n", version)
			return 0
		}
	}
	c, err := parseArgs(args)
	if err != nil {
		fmt.Fprintf(os.Stderr, "unionmount: %v\n%s", err, "Try 'unionmount --help'.\n")
		return 2
	}
	if c.remount {
		if err := remount(c); err != nil {
			fmt.Fprintf(os.Stderr, "unionmount: %v\n", err)
			return 1
		}
		return 0
	}
	if fdStr := os.Getenv(notifyEnv); fdStr != "" {
		return daemon(c, fdStr)
	}
	if !c.foreground {
		return detach(args)
	}
	return serve(c, func(error) {})
}

// detach starts the daemon and waits for its word.
func detach(args []string) int {
	// Descriptors the caller left open across exec must not live on in the
	// daemon: one on a file in another mount would keep that mount busy
	// for as long as the daemon runs (and two daemons holding each other's
	// files would wait for each other after umount -l). What the daemon is
	// given (ExtraFiles) is set up in the child after this.
	if err := unix.CloseRange(3, ^uint(0), unix.CLOSE_RANGE_CLOEXEC); err != nil {
		fmt.Fprintf(os.Stderr, "unionmount: %v\n", err)
		return 1
	}
	r, w, err := os.Pipe()
	if err != nil {
		fmt.Fprintf(os.Stderr, "unionmount: %v\n", err)
		return 1
	}
	self, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "unionmount: %v\n", err)
		return 1
	}
	cmd := exec.Command(self, args...)
	cmd.Env = append(os.Environ(), notifyEnv+"=3")
	cmd.ExtraFiles = []*os.File{w}
	if fi, err := os.Stderr.Stat(); err == nil && fi.Mode().IsRegular() {
		// A log file: the daemon keeps writing to it (see daemon).
		cmd.Stderr = os.Stderr
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := cmd.Start(); err != nil {
		fmt.Fprintf(os.Stderr, "unionmount: start daemon: %v\n", err)
		return 1
	}
	w.Close()
	msg, _ := io.ReadAll(bufio.NewReader(r))
	r.Close()
	text := strings.TrimSpace(string(msg))
	if text == "ok" {
		_ = cmd.Process.Release()
		return 0
	}
	_ = cmd.Wait()
	if text == "" {
		text = "daemon exited before the mount was ready"
	}
	fmt.Fprintf(os.Stderr, "unionmount: %s\n", text)
	return 1
}

// daemon serves the mount in the background, reporting to fd fdStr.
func daemon(c mountConfig, fdStr string) int {
	fd, err := strconv.Atoi(fdStr)
	if err != nil {
		return 1
	}
	notify := os.NewFile(uintptr(fd), "notify")
	os.Unsetenv(notifyEnv)
	// Let go of the caller's terminal and pipes (a caller reading a pipe to
	// its end would wait for the daemon), but keep a log file as stderr.
	std := []int{0, 1, 2}
	var st unix.Stat_t
	if unix.Fstat(2, &st) == nil && st.Mode&unix.S_IFMT == unix.S_IFREG {
		std = std[:2]
	}
	if devnull, err := os.OpenFile(os.DevNull, os.O_RDWR, 0); err == nil {
		for _, fd := range std {
			_ = unix.Dup2(int(devnull.Fd()), fd)
		}
		devnull.Close()
	}
	return serve(c, func(err error) {
		if err != nil {
			fmt.Fprintln(notify, err)
		} else {
			fmt.Fprintln(notify, "ok")
		}
		notify.Close()
	})
}

// serve mounts c and serves it until unmounted. ready is called once, with
// nil when the mount is live or with the error that prevented it.
func serve(c mountConfig, ready func(error)) int {
	fail := func(err error) int {
		ready(err)
		fmt.Fprintf(os.Stderr, "unionmount: %v\n", err)
		return 1
	}
	unix.Umask(0) // modes from the kernel already have the caller's umask applied
	// From the start: a signal before the mount is live is handled once it
	// is, rather than killing the daemon halfway.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	if path := os.Getenv("UNIONMOUNT_CPUPROFILE"); path != "" {
		// For benchmarks: a CPU profile of the daemon, written at unmount.
		if f, err := os.Create(path); err == nil {
			if pprof.StartCPUProfile(f) == nil {
				defer f.Close()
				defer pprof.StopCPUProfile()
			}
		}
	}
	if path := os.Getenv("UNIONMOUNT_MEMPROFILE"); path != "" {
		// For benchmarks: a heap profile of the daemon, written on each
		// SIGUSR1 (not at unmount: the kernel forgets its inodes first).
		go heapProfileOnSignal(path)
	}
	if err := checkMountpoint(c.mountpoint); err != nil {
		return fail(err)
	}
	c.union.Mountpoint = c.mountpoint
	u, err := union.New(c.union)
	if err != nil {
		return fail(err)
	}
	defer u.Close()
	level := slog.LevelInfo
	if c.debug {
		level = slog.LevelDebug
	}
	slog.SetDefault(slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level})))
	// After a pivot_root into the union, paths lead into the union itself,
	// which the daemon would then ask of itself: what it reads later is
	// opened now (mount tables, through /proc; go-fuse's /dev/null).
	proc, err := mountinfo.OpenProc()
	if err != nil {
		return fail(err)
	}
	defer proc.Close()
	// go-fuse opens /dev/null by its path the first time it empties a
	// splice pipe: have it do so now.
	if p, err := splice.Get(); err == nil {
		splice.Done(p)
	}
	root := unix.Geteuid() == 0
	server, err := fusefs.Mount(u, c.mountpoint, fusefs.Options{
		AllowOther:    root,
		ReadOnly:      c.readOnly || u.ReadOnly(),
		FsName:        c.fsName,
		Debug:         c.debug,
		Timeout:       c.timeout,
		MaxEntries:    c.maxEntries,
		NoPassthrough: c.noPassthrough,
		NFSExport:     c.nfsExport,
		MountFlags:    mountFlags(root, c.mountFlags),
	})
	if err != nil {
		return fail(fmt.Errorf("mount %s: %w", c.mountpoint, err))
	}
	if err := server.WaitMount(); err != nil {
		if typ, _ := mountinfo.FsType(c.mountpoint); !strings.HasPrefix(typ, "fuse") {
			// Unmounted before it was ready: go-fuse's first look into
			// the new mount found the directory beneath. The mount came
			// and went as asked, which ends the daemon cleanly.
			slog.Info("unmounted before it was ready", "mountpoint", c.mountpoint)
			ready(nil)
			return 0
		}
		return fail(fmt.Errorf("mount %s: %w", c.mountpoint, err))
	}
	conn, dev := fuseConnection(c.mountpoint)
	if path := os.Getenv("UNIONMOUNT_DEBUG_STATS"); path != "" {
		go debugStats(path, u)
	}
	ready(nil)
	served := make(chan struct{})
	go func() {
		<-sigs
		unmount(server, c.mountpoint, conn, served)
	}()
	waited := make(chan struct{})
	go func() {
		server.Wait()
		close(waited)
	}()
	gone := make(chan struct{})
	if dev != "" {
		go func() {
			if proc.WaitGone(dev, waited) == nil {
				close(gone)
			}
		}()
	}
	select {
	case <-waited:
	case <-gone:
		endWhenUnmounted(proc, c.mountpoint, dev, waited)
	}
	close(served)
	return 0
}

// endWhenUnmounted decides, once the mount has left this namespace while
// the connection is still up, when serving ends (waited is closed when the
// kernel ends the connection).
//
// Two cases look the same from here, and the mount tables of the other
// namespaces tell them apart:
//   - detached lazily (umount -l) while in use: processes still hold files
//     or a working directory in it. A filesystem serves them until the
//     last one leaves, when the kernel ends the connection: so we wait.
//   - unmounted (fusermount3 -u, umount), but a mount namespace made while
//     it was up (unshare -m, a container) keeps a copy of the mount, which
//     keeps the connection open for as long as that namespace lives. The
//     user asked for the end of the mount, so serving ends now (the
//     copies then answer ENOTCONN) instead of holding the upper and
//     workdir for ever.
//
// Both at once (copies elsewhere and lazy users here) count as the second.
func endWhenUnmounted(proc *mountinfo.Proc, mountpoint, dev string, waited <-chan struct{}) {
	elsewhere, err := proc.MountedElsewhere(dev)
	if err != nil {
		slog.Warn("unmounted here; cannot read other namespaces' mount tables, serving until the connection ends", "mountpoint", mountpoint, "err", err)
	}
	if dev == "" || !elsewhere {
		slog.Info("unmounted here; serving those still inside until the last one leaves", "mountpoint", mountpoint)
		<-waited
		return
	}
	select {
	case <-waited:
	case <-time.After(time.Second):
		slog.Info("unmounted, but still mounted in another mount namespace: exiting", "mountpoint", mountpoint)
	}
}

// mountFlags are the generic mount options to pass on: as root, dev and
// suid unless the command line says otherwise (as mount(8) and kernel
// overlayfs do: a union used as a root filesystem needs device nodes and
// set-user-ID programs); fusermount3 decides them for others.
func mountFlags(root bool, given []string) []string {
	if !root {
		return given
	}
	return append([]string{"dev", "suid"}, given...)
}

// debugStats, for tests: on each SIGUSR1, (over)write path with the
// daemon's goroutine count, heap in use and file nodes the kernel holds,
// by a rename so that a reader never sees half a line.
func debugStats(path string, u *union.Union) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	for range usr1 {
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		line := fmt.Sprintf("goroutines=%d heap_inuse=%d files=%d\n", runtime.NumGoroutine(), ms.HeapInuse, fusefs.ResidentFiles(u))
		tmp := path + ".tmp"
		if os.WriteFile(tmp, []byte(line), 0o644) == nil {
			_ = os.Rename(tmp, path)
		}
	}
}

// heapProfileOnSignal (over)writes path with a heap profile of what is
// live on each SIGUSR1, by a rename so that a reader never sees half a file.
func heapProfileOnSignal(path string) {
	usr1 := make(chan os.Signal, 1)
	signal.Notify(usr1, syscall.SIGUSR1)
	for range usr1 {
		runtime.GC() // the profile is that of the last collection
		writeHeapProfile(path)
	}
}

// writeHeapProfile writes a heap profile to path, by way of a temporary file.
func writeHeapProfile(path string) {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		slog.Warn("heap profile", "err", err)
		return
	}
	err = pprof.WriteHeapProfile(f)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		slog.Warn("heap profile", "err", err)
	}
}

// fuseConnection names the mount's FUSE connection in the fusectl
// filesystem (the minor number of its device) and its device number as
// mountinfo writes it ("0:NN"); "" if unknown.
func fuseConnection(mountpoint string) (conn, dev string) {
	var st unix.Stat_t
	if err := unix.Stat(mountpoint, &st); err != nil {
		return "", ""
	}
	return strconv.FormatUint(uint64(unix.Minor(st.Dev)), 10), fmt.Sprintf("%d:%d", unix.Major(st.Dev), unix.Minor(st.Dev))
}

// unmount ends the mount on a signal, and makes sure the daemon ends with
// it. Unmount can wait for ever when a mount namespace holds a copy of the
// mount, or fail while the mount is busy, so the wait is bounded and then
// the mount is detached lazily; a detached mount lives on while anything
// uses it, so if serving has not ended soon after, the FUSE connection is
// aborted, or the daemon exits (served is closed when serving ends).
func unmount(server *fuse.Server, mountpoint, conn string, served <-chan struct{}) {
	done := make(chan error, 1)
	go func() { done <- server.Unmount() }()
	select {
	case err := <-done:
		if err == nil {
			return
		}
		slog.Warn("unmount failed, detaching lazily", "mountpoint", mountpoint, "err", err)
	case <-time.After(5 * time.Second):
		slog.Warn("unmount timed out, detaching lazily", "mountpoint", mountpoint)
	}
	if err := unix.Unmount(mountpoint, unix.MNT_DETACH); err != nil {
		_ = exec.Command("fusermount3", "-u", "-z", mountpoint).Run()
	}
	select {
	case <-served:
		return
	case <-time.After(2 * time.Second):
	}
	slog.Warn("mount still in use after detaching: ending the FUSE connection", "mountpoint", mountpoint)
	if conn != "" {
		_ = os.WriteFile("/sys/fs/fuse/connections/"+conn+"/abort", []byte("1"), 0)
	}
	select {
	case <-served:
	case <-time.After(2 * time.Second):
		// No fusectl: exiting closes the device, which ends the connection.
		os.Exit(0)
	}
}

// checkMountpoint refuses a mount point that is missing or not a directory.
// It may be a mount point already, a lower's own one included (the seeds'
// `mount -o union`): the layers are cloned before the union covers them.
func checkMountpoint(mp string) error {
	fi, err := os.Stat(mp)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return fmt.Errorf("mountpoint %q: %w", mp, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("mountpoint %q: not a directory", mp)
	}
	return nil
}

// remountFlags are the flags of a mount that a remount keeps unless the
// options change them; statfs reports them under the same values.
const remountFlags = unix.MS_RDONLY | unix.MS_NOSUID | unix.MS_NODEV | unix.MS_NOEXEC |
	unix.MS_SYNCHRONOUS | unix.MS_NOATIME | unix.MS_NODIRATIME | unix.MS_RELATIME

// remount changes the flags of the unionmount mounted at c.mountpoint, as
// mount(8)'s -o remount asks through mount.fuse3: read-only or read-write
// and the generic flags given; the others stay as they are. The daemon
// keeps serving: the kernel refuses writes to a read-only mount (EROFS)
// before they reach it.
func remount(c mountConfig) error {
	real, err := filepath.EvalSymlinks(c.mountpoint)
	if err != nil {
		return fmt.Errorf("remount %q: %w", c.mountpoint, err)
	}
	real, _ = filepath.Abs(real)
	typ, err := mountinfo.FsType(real)
	if err != nil {
		return fmt.Errorf("remount %q: %w", c.mountpoint, err)
	}
	if typ != "fuse.unionmount" {
		return fmt.Errorf("remount %q: not a unionmount mount point (type %q)", c.mountpoint, typ)
	}
	var st unix.Statfs_t
	if err := unix.Statfs(real, &st); err != nil {
		return fmt.Errorf("remount %q: %w", c.mountpoint, err)
	}
	flags := uintptr(st.Flags) & remountFlags
	if c.rwSet {
		flags &^= unix.MS_RDONLY
		if c.readOnly {
			flags |= unix.MS_RDONLY
		}
	}
	for _, f := range c.mountFlags {
		switch f {
		case "nodev":
			flags |= unix.MS_NODEV
		case "dev":
			flags &^= unix.MS_NODEV
		case "nosuid":
			flags |= unix.MS_NOSUID
		case "suid":
			flags &^= unix.MS_NOSUID
		case "noexec":
			flags |= unix.MS_NOEXEC
		case "exec":
			flags &^= unix.MS_NOEXEC
		}
	}
	if err := unix.Mount("", real, "", unix.MS_REMOUNT|flags, ""); err != nil {
		return fmt.Errorf("remount %q: %w", c.mountpoint, err)
	}
	return nil
}
