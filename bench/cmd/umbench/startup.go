package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// startupSample is one mount and unmount of a candidate over the main
// lower, the way a mount program is used (Podman): the command without -f
// returns once the mount is live ("start-up": exec to mounted), and
// fusermount3 -u ends the daemon ("teardown": unmount to the daemon's
// exit). Kernel overlayfs: the mount(2) and umount(2) calls.
type startupSample struct {
	Cand     string        `json:"candidate"`
	Rep      int           `json:"rep"`
	Start    time.Duration `json:"start_ns"`
	Teardown time.Duration `json:"teardown_ns"`
	Err      string        `json:"error,omitempty"`
}

func (b *bench) runStartup() error {
	cfg := b.cfg
	var cands []string
	for _, c := range cfg.candidates {
		if c != candNative {
			cands = append(cands, c)
		}
	}
	b.logf("start-up and teardown: %d candidates x %d reps; loadavg %s", len(cands), cfg.startReps, loadAvg())
	for rep := 0; rep < cfg.startReps; rep++ {
		for k := range cands {
			if b.ctx.Err() != nil {
				return b.ctx.Err()
			}
			c := cands[(k+rep)%len(cands)]
			s := b.startupOnce(c)
			s.Rep = rep
			b.startups = append(b.startups, s)
			if s.Err != "" {
				b.logf("startup %-23s ERROR %s", c, s.Err)
			} else {
				b.logf("startup %-23s start %.1f ms, teardown %.1f ms", c, ms(s.Start), ms(s.Teardown))
			}
		}
	}
	return nil
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

func (b *bench) startupOnce(cand string) (s startupSample) {
	s.Cand = cand
	fail := func(err error) startupSample {
		s.Err = err.Error()
		return s
	}
	if err := resetDir(b.runDir, "upper", "work"); err != nil {
		return fail(err)
	}
	defer func() {
		if typ, _ := fsTypeAt(b.mnt); typ != "" {
			if isFuseType(typ) {
				_ = exec.Command("fusermount3", "-u", b.mnt).Run()
			}
			_ = unix.Unmount(b.mnt, unix.MNT_DETACH)
			if s.Err == "" {
				s.Err = "left mounted"
			}
		}
		_ = os.RemoveAll(b.runDir)
	}()
	upper, work := filepath.Join(b.runDir, "upper"), filepath.Join(b.runDir, "work")
	cd := candidateOf(cand)
	opts := "lowerdir=" + b.lower + ",upperdir=" + upper + ",workdir=" + work
	if cd.opts != "" {
		opts += "," + cd.opts
	}
	if cd.rootless {
		for _, d := range []string{upper, work, b.mnt} {
			if err := os.Chown(d, rootlessUID, rootlessGID); err != nil {
				return fail(err)
			}
		}
	}
	if cd.daemon == "" {
		t0 := time.Now()
		if err := unix.Mount("overlay", b.mnt, "overlay", 0, opts); err != nil {
			return fail(fmt.Errorf("mount -t overlay: %w", err))
		}
		t1 := time.Now()
		if err := unix.Unmount(b.mnt, 0); err != nil {
			return fail(err)
		}
		s.Start, s.Teardown = t1.Sub(t0), time.Since(t1)
		return s
	}
	prog := cd.daemon
	if prog == "unionmount" {
		prog = b.bin
	}
	cmd := exec.Command(prog, "-o", opts, b.mnt)
	var log bytes.Buffer
	cmd.Stdout, cmd.Stderr = &log, &log
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: credential(cand)}
	if cd.rootless {
		cmd.Dir = "/"
		cmd.Env = []string{"PATH=" + basePath, "HOME=/nonexistent"}
	}
	t0 := time.Now()
	if err := cmd.Run(); err != nil {
		return fail(fmt.Errorf("%s -o %s: %v: %s", prog, opts, err, strings.TrimSpace(log.String())))
	}
	for {
		if typ, _ := fsTypeAt(b.mnt); isFuseType(typ) {
			break
		}
		if time.Since(t0) > 20*time.Second {
			return fail(fmt.Errorf("%s returned but nothing is mounted after 20s", cand))
		}
		time.Sleep(200 * time.Microsecond)
	}
	s.Start = time.Since(t0)
	pid := findDaemon(filepath.Base(prog), b.mnt)
	if pid == 0 {
		return fail(fmt.Errorf("no %s process serving %s", prog, b.mnt))
	}
	pidfd, err := unix.PidfdOpen(pid, 0)
	if err != nil {
		return fail(fmt.Errorf("pidfd_open %d: %w", pid, err))
	}
	defer unix.Close(pidfd)
	t1 := time.Now()
	if out, err := exec.Command("fusermount3", "-u", b.mnt).CombinedOutput(); err != nil {
		return fail(fmt.Errorf("fusermount3 -u: %v: %s", err, bytes.TrimSpace(out)))
	}
	fds := []unix.PollFd{{Fd: int32(pidfd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(fds, 30000)
		if err == unix.EINTR {
			continue
		}
		if err != nil || n == 0 {
			return fail(fmt.Errorf("%s (pid %d) still running 30s after fusermount3 -u (%v)", cand, pid, err))
		}
		break
	}
	s.Teardown = time.Since(t1)
	return s
}

// findDaemon returns the pid of the process named name whose last argument
// is mnt (a daemon serving it), 0 if none.
func findDaemon(name, mnt string) int {
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil || len(data) == 0 {
			continue
		}
		args := strings.Split(strings.TrimSuffix(string(data), "\x00"), "\x00")
		if filepath.Base(args[0]) == name && args[len(args)-1] == mnt {
			pid, _ := strconv.Atoi(filepath.Base(filepath.Dir(p)))
			return pid
		}
	}
	return 0
}
