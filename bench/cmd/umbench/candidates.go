package main

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/unionmount/unionmount/internal/mountinfo"
	"golang.org/x/sys/unix"
)

// The candidates, in table order.
const (
	candNative   = "native"
	candKernel   = "kernel"
	candFuseOv   = "fuse-overlayfs"
	candUnion    = "unionmount"
	candUnionNPT = "unionmount-nopt"
	candFuseOvRL = "fuse-overlayfs-rootless"
	candUnionRL  = "unionmount-rootless"
)

// candidate says how to mount one candidate.
type candidate struct {
	name  string
	title string // column header
	// daemon is the FUSE daemon's program ("" for native and kernel).
	daemon string
	// opts are -o options added to lowerdir, upperdir and workdir.
	opts string
	// rootless: the daemon and the workloads run as rootlessUID, the daemon
	// mounting through fusermount3 (no passthrough, user.* xattrs), the
	// way test/e2e/rootless_test.go runs it.
	rootless bool
	// rival is the candidate it is compared with ("faster than").
	rival string
}

// Like with like: every candidate copies the data on a chmod or chown
// (fuse-overlayfs always does). metacopy=off is the default of kernel
// overlayfs and unionmount; it is set for the kernel in case the overlay
// module's parameter says otherwise.
var candidateTable = []candidate{
	{name: candNative, title: "native copy"},
	{name: candKernel, title: "kernel overlayfs", opts: "metacopy=off"},
	{name: candFuseOv, title: "fuse-overlayfs", daemon: "fuse-overlayfs"},
	{name: candUnion, title: "unionmount", daemon: "unionmount", rival: candFuseOv},
	{name: candUnionNPT, title: "unionmount passthrough=off", daemon: "unionmount", opts: "passthrough=off", rival: candFuseOv},
	{name: candFuseOvRL, title: "fuse-overlayfs rootless", daemon: "fuse-overlayfs", rootless: true},
	{name: candUnionRL, title: "unionmount rootless", daemon: "unionmount", rootless: true, rival: candFuseOvRL},
}

var allCandidates = mapSlice(candidateTable, func(c candidate) string { return c.name })

// The rootless user: nobody, as in test/e2e/rootless_test.go (fusermount3
// needs a name for the uid).
const rootlessUID, rootlessGID = 65534, 65534

func candidateOf(name string) candidate {
	for _, c := range candidateTable {
		if c.name == name {
			return c
		}
	}
	return candidate{name: name, title: name}
}

// candidateTitle is the column header of a candidate.
func candidateTitle(c string) string { return candidateOf(c).title }

func isFuse(c string) bool { return candidateOf(c).daemon != "" }

func isRootless(c string) bool { return candidateOf(c).rootless }

// credential is the user a candidate's daemon and workloads run as (nil:
// root, the harness's own).
func credential(c string) *syscall.Credential {
	if !isRootless(c) {
		return nil
	}
	return &syscall.Credential{Uid: rootlessUID, Gid: rootlessGID}
}

// instance is one live candidate: a fresh upper over the lower, mounted at
// the bench mount point (every candidate shows up at the same path, so the
// workloads and their outputs are the same).
type instance struct {
	cand  string
	mnt   string
	upper string // "" for native
	// daemon, for the FUSE candidates: started in the foreground (-f) by us,
	// so its pid is known (VmHWM) and it is stopped by that pid only.
	daemon     *exec.Cmd
	daemonDone chan error
	daemonLog  *bytes.Buffer
	mounted    bool
	peakRSS    int64 // bytes, read just before unmount
}

// mountOpts says how to set up one instance.
type mountOpts struct {
	lower   string // the lower directory
	runDir  string // scratch for upper/work/native copy; emptied by teardown
	mnt     string
	mutates bool     // native: work on a copy (else a read-only bind of the lower)
	copyDir []string // native + mutates: lower entries to copy (others are hard-linked)
	env     []string // extra environment for a FUSE daemon
	bin     string   // unionmount binary
}

// setup mounts cand as described by o.
func setup(cand string, o mountOpts) (*instance, error) {
	if err := os.RemoveAll(o.runDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(o.runDir, 0o755); err != nil {
		return nil, err
	}
	in := &instance{cand: cand, mnt: o.mnt}
	switch cand {
	case candNative:
		src := o.lower
		if o.mutates {
			src = filepath.Join(o.runDir, "native")
			if err := nativeCopy(o.lower, src, o.copyDir); err != nil {
				return nil, fmt.Errorf("native copy: %w", err)
			}
		}
		if err := unix.Mount(src, o.mnt, "", unix.MS_BIND, ""); err != nil {
			return nil, fmt.Errorf("bind mount: %w", err)
		}
		in.mounted = true
		if !o.mutates {
			if err := unix.Mount("", o.mnt, "", unix.MS_REMOUNT|unix.MS_BIND|unix.MS_RDONLY, ""); err != nil {
				in.teardown()
				return nil, fmt.Errorf("remount ro: %w", err)
			}
		}
		return in, nil
	}
	in.upper = filepath.Join(o.runDir, "upper")
	work := filepath.Join(o.runDir, "work")
	for _, d := range []string{in.upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			return nil, err
		}
	}
	opts := "lowerdir=" + o.lower + ",upperdir=" + in.upper + ",workdir=" + work
	cd := candidateOf(cand)
	if cd.opts != "" {
		opts += "," + cd.opts
	}
	if cd.rootless {
		for _, d := range []string{in.upper, work, o.mnt} {
			if err := os.Chown(d, rootlessUID, rootlessGID); err != nil {
				return nil, err
			}
		}
	}
	switch cd.daemon {
	case "":
		if cand != candKernel {
			return nil, fmt.Errorf("unknown candidate %q", cand)
		}
		if err := unix.Mount("overlay", o.mnt, "overlay", 0, opts); err != nil {
			return nil, fmt.Errorf("mount -t overlay: %w", err)
		}
		in.mounted = true
		return in, nil
	case "fuse-overlayfs":
		in.daemon = exec.Command("fuse-overlayfs", "-f", "-o", opts, o.mnt)
	case "unionmount":
		in.daemon = exec.Command(o.bin, "-f", "-o", opts, o.mnt)
	}
	in.daemonLog = &bytes.Buffer{}
	in.daemon.Stdout = in.daemonLog
	in.daemon.Stderr = in.daemonLog
	in.daemon.Env = append(os.Environ(), o.env...)
	in.daemon.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Credential: credential(cand)}
	if cd.rootless {
		in.daemon.Dir = "/"
		in.daemon.Env = append([]string{"PATH=" + basePath, "HOME=/nonexistent"}, o.env...)
	}
	if err := in.daemon.Start(); err != nil {
		return nil, err
	}
	in.daemonDone = make(chan error, 1)
	go func(c *exec.Cmd, done chan error) { done <- c.Wait() }(in.daemon, in.daemonDone)
	deadline := time.Now().Add(20 * time.Second)
	for {
		typ, _ := fsTypeAt(o.mnt)
		if strings.HasPrefix(typ, "fuse") {
			in.mounted = true
			return in, nil
		}
		select {
		case err := <-in.daemonDone:
			in.daemon = nil
			return nil, fmt.Errorf("%s exited before mounting (%v): %s", cand, err, strings.TrimSpace(in.daemonLog.String()))
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			in.teardown()
			return nil, fmt.Errorf("%s: not mounted after 20s", cand)
		}
	}
}

// pid of the FUSE daemon, 0 if none.
func (in *instance) pid() int {
	if in.daemon == nil || in.daemon.Process == nil {
		return 0
	}
	return in.daemon.Process.Pid
}

// teardown unmounts and stops the daemon (by its pid). It records the
// daemon's peak RSS first. Safe to call twice.
func (in *instance) teardown() error {
	var errs []error
	if pid := in.pid(); pid != 0 {
		if rss, err := vmHWM(pid); err == nil {
			in.peakRSS = rss
		}
	}
	if in.mounted {
		if isFuse(in.cand) {
			if out, err := exec.Command("fusermount3", "-u", in.mnt).CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("fusermount3 -u: %v: %s", err, bytes.TrimSpace(out)))
				_ = exec.Command("fusermount3", "-u", "-z", in.mnt).Run()
			}
		} else if err := umountRetry(in.mnt); err != nil {
			errs = append(errs, err)
		}
		in.mounted = false
	}
	if in.daemon != nil {
		select {
		case <-in.daemonDone:
		case <-time.After(30 * time.Second):
			errs = append(errs, fmt.Errorf("%s daemon (pid %d) still running 30s after unmount: SIGTERM", in.cand, in.pid()))
			_ = in.daemon.Process.Signal(syscall.SIGTERM)
			select {
			case <-in.daemonDone:
			case <-time.After(10 * time.Second):
				_ = in.daemon.Process.Kill()
				<-in.daemonDone
			}
		}
		in.daemon = nil
	}
	// A lazily detached mount may linger; make sure nothing is left at mnt.
	if typ, _ := fsTypeAt(in.mnt); typ != "" {
		_ = unix.Unmount(in.mnt, unix.MNT_DETACH)
	}
	return errors.Join(errs...)
}

func umountRetry(mnt string) error {
	var err error
	for i := 0; i < 50; i++ {
		if err = unix.Unmount(mnt, 0); err == nil || errors.Is(err, unix.EINVAL) {
			return nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	_ = unix.Unmount(mnt, unix.MNT_DETACH)
	return fmt.Errorf("umount %s: %w (detached lazily)", mnt, err)
}

// nativeCopy makes dst a copy of lower: the entries named in copyDir with
// cp -a, every other top-level entry hard-linked (the big file: no workload
// writes to it, so a link saves copying a gigabyte per run).
func nativeCopy(lower, dst string, copyDir []string) error {
	if err := os.Mkdir(dst, 0o755); err != nil {
		return err
	}
	ents, err := os.ReadDir(lower)
	if err != nil {
		return err
	}
	for _, e := range ents {
		s, d := filepath.Join(lower, e.Name()), filepath.Join(dst, e.Name())
		copyIt := e.IsDir()
		for _, c := range copyDir {
			if c == e.Name() {
				copyIt = true
			}
		}
		if copyIt {
			if out, err := exec.Command("cp", "-a", s, d).CombinedOutput(); err != nil {
				return fmt.Errorf("cp -a %s: %v: %s", s, err, out)
			}
		} else if err := os.Link(s, d); err != nil {
			return err
		}
	}
	return nil
}

// fsTypeAt returns the type of the topmost mount at dir, "" if none.
func fsTypeAt(dir string) (string, error) {
	m, err := mountAt(dir)
	return m.fstype, err
}

type mountEntry struct {
	fstype, source, opts, superOpts string
	dev                             string // major:minor
}

// mountAt reads /proc/self/mountinfo for the topmost mount at dir.
func mountAt(dir string) (mountEntry, error) {
	var m mountEntry
	f, err := os.Open("/proc/self/mountinfo")
	if err != nil {
		return m, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64*1024), 1024*1024)
	for sc.Scan() {
		// id parent maj:min root mountpoint opts [optional...] - fstype source superopts
		fields := strings.Fields(sc.Text())
		if len(fields) < 7 || mountinfo.Unescape(fields[4]) != dir {
			continue
		}
		for i := 6; i+1 < len(fields); i++ {
			if fields[i] == "-" {
				m = mountEntry{fstype: fields[i+1], opts: fields[5], dev: fields[2]}
				if i+2 < len(fields) {
					m.source = fields[i+2]
				}
				if i+3 < len(fields) {
					m.superOpts = fields[i+3]
				}
				break
			}
		}
	}
	return m, sc.Err()
}

// vmHWM returns the peak resident set size of pid in bytes.
func vmHWM(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			f := strings.Fields(v)
			if len(f) == 0 {
				break
			}
			kb, err := strconv.ParseInt(f[0], 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmHWM for pid %d", pid)
}
