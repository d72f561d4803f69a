package e2e

// Concurrency and load (issue 6): 16 workers run mixed operations on a
// small set of shared names (the same lower files copied up, renamed,
// unlinked, linked, listed and read at once, directories renamed under
// them) against a daemon built with the race detector. A watchdog fails
// the test if any operation hangs. Every errno must be one a filesystem
// gives for such races (ENOENT, EEXIST, ENOTEMPTY, ...), never EIO or a
// dead mount. Each worker also appends records to a file of its own and
// reads them back: under all that load its view stays exactly its own
// history. Afterwards the tree is consistent (every listed name stats, link
// counts match the names), identical after a remount, check finds nothing,
// the lowers are unchanged, and the daemon's descriptors, goroutines and
// memory come back down after each of two halves (no growth from one to
// the next).
//
//	STORM_TIME=30s     how long (CI: 30 s, in two halves)
//	STORM_WORKERS=16

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// stormAllowed are the errnos races between operations on shared names
// may give.
// ELOOP: symlinks the workers make may point at themselves; EPERM: link(2)
// of what another worker turned into a directory.
var stormAllowed = []unix.Errno{unix.ENOENT, unix.EEXIST, unix.ENOTEMPTY, unix.EISDIR, unix.ENOTDIR, unix.EINVAL, unix.ENODATA, unix.ELOOP}

type stormStats struct {
	ops, errs atomic.Int64
	byErr     sync.Map // errno string -> *atomic.Int64
}

func (s *stormStats) note(err error) {
	s.ops.Add(1)
	if err == nil {
		return
	}
	s.errs.Add(1)
	v, _ := s.byErr.LoadOrStore(errText(err, ""), new(atomic.Int64))
	v.(*atomic.Int64).Add(1)
}

func TestConcurrencyStorm(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	total := 30 * time.Second
	if v := os.Getenv("STORM_TIME"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("STORM_TIME=%q: %v", v, err)
		}
		total = d
	}
	nworkers := envInt("STORM_WORKERS", 16)
	bin := raceBinary(t)

	base := t.TempDir()
	lower0, lower1 := filepath.Join(base, "lower0"), filepath.Join(base, "lower1")
	upper, work, mnt := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
	for _, d := range []string{lower0, lower1, upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	rng := rand.New(rand.NewSource(1))
	for d := 0; d < 4; d++ {
		for f := 0; f < 6; f++ {
			layer := lower0
			if f%3 == 2 {
				layer = lower1 // d0..d3 are merged directories
			}
			p := filepath.Join(layer, fmt.Sprintf("d%d/f%d", d, f))
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, lowerContent(rng, p, 1+rng.Intn(256<<10)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if err := os.Link(filepath.Join(lower0, fmt.Sprintf("d%d/f0", d)), filepath.Join(lower0, fmt.Sprintf("d%d/hl", d))); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink("f1", filepath.Join(lower0, fmt.Sprintf("d%d/sl", d))); err != nil {
			t.Fatal(err)
		}
	}
	for w := 0; w < nworkers; w++ {
		p := filepath.Join(lower0, "own", fmt.Sprintf("w%d", w))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(fmt.Sprintf("worker %d\n", w)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	guardLowers(t, lower0, lower1)
	opts := unionOptions([]string{lower0, lower1}, upper, work, nil)
	statsFile := filepath.Join(base, "stats")
	d := startDaemon(t, bin, mnt, opts, "UNIONMOUNT_DEBUG_STATS="+statsFile)
	snapshot(t, mnt) // warm up: every directory looked up once
	baseCounts, err := daemonCounts(d.pid())
	if err != nil {
		t.Fatal(err)
	}
	baseG, hook := goroutineCount(d.pid(), statsFile)
	if !hook {
		t.Log("no goroutine hook in the daemon (UNIONMOUNT_DEBUG_STATS): goroutines not checked")
	}
	t.Logf("baseline: %d fds, %d threads, %d goroutines, RSS %d KiB", baseCounts.fds, baseCounts.threads, baseG, baseCounts.rssKB)

	var stats stormStats
	var failures []string
	var failMu sync.Mutex
	fail := func(format string, args ...any) {
		failMu.Lock()
		defer failMu.Unlock()
		if len(failures) < 30 {
			failures = append(failures, fmt.Sprintf(format, args...))
		}
	}
	type slot struct {
		start atomic.Int64
		what  atomic.Value
	}
	slots := make([]slot, nworkers)
	names := []string{"f0", "f1", "f2", "f3", "f4", "f5", "hl", "sl", "n0", "n1", "sub"}
	dirNames := []string{"d0", "d1", "d2", "d3", "e0", "e1"}
	half := func(phase int, dur time.Duration) {
		var wg sync.WaitGroup
		deadline := time.Now().Add(dur)
		hung := make(chan string, 1)
		stopWatch := make(chan struct{})
		go func() { // the watchdog
			tick := time.NewTicker(time.Second)
			defer tick.Stop()
			for {
				select {
				case <-stopWatch:
					return
				case <-tick.C:
				}
				for i := range slots {
					if s := slots[i].start.Load(); s != 0 && time.Since(time.Unix(0, s)) > time.Minute {
						select {
						case hung <- fmt.Sprintf("worker %d: %v still running after a minute", i, slots[i].what.Load()):
						default:
						}
						return
					}
				}
			}
		}()
		for w := 0; w < nworkers; w++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewSource(int64(phase*1000 + w)))
				own := filepath.Join(mnt, "own", fmt.Sprintf("w%d", w))
				ownWant, err := os.ReadFile(own)
				if err != nil {
					fail("worker %d: read own file: %v", w, err)
					return
				}
				var held *os.File // a descriptor kept across copy-ups
				defer func() {
					if held != nil {
						held.Close()
					}
				}()
				for seq := 0; time.Now().Before(deadline); seq++ {
					dir := dirNames[r.Intn(len(dirNames))]
					p := filepath.Join(mnt, dir, names[r.Intn(len(names))])
					q := filepath.Join(mnt, dirNames[r.Intn(len(dirNames))], names[r.Intn(len(names))])
					var what string
					var err error
					op := r.Intn(20)
					run := func(name string, fn func() error) {
						what = name
						slots[w].what.Store(name)
						slots[w].start.Store(time.Now().UnixNano())
						err = fn()
						slots[w].start.Store(0)
					}
					switch op {
					case 0:
						run("read "+p, func() error { _, err := os.ReadFile(p); return err })
					case 1:
						run("readdir "+dir, func() error {
							ents, err := os.ReadDir(filepath.Join(mnt, dir))
							for _, e := range ents {
								if e.Type()&os.ModeDevice != 0 {
									fail("worker %d: readdir %s lists %s as a device: a whiteout shows", w, dir, e.Name())
								}
							}
							return err
						})
					case 2:
						run("append "+p, func() error { return appendTo(p, []byte(fmt.Sprintf("w%d.%d\n", w, seq))) })
					case 3:
						run("truncate "+p, func() error { return unix.Truncate(p, int64(r.Intn(4096))) })
					case 4:
						run("chmod "+p, func() error { return unix.Chmod(p, uint32(0o600+r.Intn(2)*0o44)) })
					case 5:
						run("setxattr "+p, func() error { return unix.Setxattr(p, "user.s", []byte(fmt.Sprint(seq)), 0) })
					case 6, 7:
						run("rename "+p+" "+q, func() error { return unix.Rename(p, q) })
					case 8:
						a, b := filepath.Join(mnt, dir), filepath.Join(mnt, dirNames[r.Intn(len(dirNames))])
						run("rename dir "+a+" "+b, func() error { return unix.Rename(a, b) })
					case 9:
						run("exchange "+p+" "+q, func() error {
							return unix.Renameat2(unix.AT_FDCWD, p, unix.AT_FDCWD, q, unix.RENAME_EXCHANGE)
						})
					case 10:
						run("unlink "+p, func() error { return unix.Unlink(p) })
					case 11:
						run("create "+p, func() error {
							fd, err := unix.Open(p, unix.O_CREAT|unix.O_EXCL|unix.O_WRONLY|unix.O_CLOEXEC, 0o644)
							if err == nil {
								_, err = unix.Write(fd, []byte("new\n"))
								err = errors.Join(err, unix.Close(fd))
							}
							return err
						})
					case 12:
						run("link "+p+" "+q, func() error { return unix.Link(p, q) })
					case 13:
						run("symlink "+q, func() error { return unix.Symlink("f0", q) })
					case 14:
						run("mkdir "+p, func() error { return unix.Mkdir(p, 0o755) })
					case 15:
						run("rmdir "+p, func() error { return unix.Rmdir(p) })
					case 16:
						run("stat "+p, func() error {
							var st unix.Stat_t
							err := unix.Lstat(p, &st)
							if err == nil && st.Mode&unix.S_IFMT == unix.S_IFCHR {
								fail("worker %d: stat %s: a character device %d:%d: a whiteout shows", w, p, unix.Major(st.Rdev), unix.Minor(st.Rdev))
							}
							return err
						})
					case 17:
						run("hold "+p, func() error {
							if held != nil {
								_, err := held.ReadAt(make([]byte, 64), 0)
								held.Close()
								held = nil
								if err != nil && !errors.Is(err, io.EOF) {
									return err
								}
							}
							f, err := os.Open(p)
							if err == nil {
								held = f
							}
							return err
						})
					case 18, 19: // the worker's own file: its history exactly
						rec := []byte(fmt.Sprintf("%d.%d\n", phase, seq))
						run("own append", func() error { return appendTo(own, rec) })
						if err == nil {
							ownWant = append(ownWant, rec...)
							var got []byte
							run("own read", func() error { var e error; got, e = os.ReadFile(own); return e })
							if err == nil && !bytes.Equal(got, ownWant) {
								fail("worker %d: own file reads %s, want its %d bytes of history", w, describeData(got, ownWant), len(ownWant))
							}
						}
					}
					stats.note(err)
					if err != nil {
						var en unix.Errno
						if !errors.As(err, &en) || !allowedErrno(en) && !(en == unix.EPERM && strings.HasPrefix(what, "link ")) {
							fail("worker %d: %s: %v", w, what, err)
						}
					}
				}
			}()
		}
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case h := <-hung:
			fail("hang: %s", h)
			d.kill() // unblocks the workers: the test ends
			<-done
		}
		close(stopWatch)
	}
	// settle waits until the daemon's counts stop falling (releases are
	// asynchronous) and returns them.
	settle := func() (procCounts, int) {
		var c procCounts
		g := 0
		prev := -1
		for i := 0; i < 50; i++ {
			c, _ = daemonCounts(d.pid())
			if c.fds == prev {
				break
			}
			prev = c.fds
			time.Sleep(100 * time.Millisecond)
		}
		if hook {
			g, _ = goroutineCount(d.pid(), statsFile)
		}
		return c, g
	}
	half(1, total/2)
	c1, g1 := settle()
	half(2, total-total/2)
	c2, g2 := settle()
	for _, f := range failures {
		t.Error(f)
	}
	if !d.alive() {
		t.Fatalf("the daemon is gone\n%s", readLog(d.logPath))
	}
	var errs []string
	stats.byErr.Range(func(k, v any) bool {
		errs = append(errs, fmt.Sprintf("%s %d", k, v.(*atomic.Int64).Load()))
		return true
	})
	t.Logf("%d workers x %v = %.1f worker-minutes: %d operations, %d refused by races (%s)",
		nworkers, total, float64(nworkers)*total.Minutes(), stats.ops.Load(), stats.errs.Load(), strings.Join(errs, ", "))
	t.Logf("after half 1: %d fds, %d threads, %d goroutines, RSS %d KiB; after half 2: %d fds, %d threads, %d goroutines, RSS %d KiB (peak %d KiB)",
		c1.fds, c1.threads, g1, c1.rssKB, c2.fds, c2.threads, g2, c2.rssKB, c2.hwmKB)
	// The directory cache keeps descriptors of directories in use (up to
	// 2048 a layer); a leak grows with every operation.
	if c1.fds > baseCounts.fds+256 || c2.fds > c1.fds+32 {
		t.Errorf("daemon descriptors: %d at the start, %d after half 1, %d after half 2: a leak\n%s",
			baseCounts.fds, c1.fds, c2.fds, strings.Join(fdTargets(d.pid()), "\n"))
	}
	if hook && (g1 > baseG+64 || g2 > g1+16) {
		t.Errorf("daemon goroutines: %d at the start, %d after half 1, %d after half 2: a leak", baseG, g1, g2)
	}
	if c2.rssKB > 2<<20 || c2.rssKB > c1.rssKB*3/2+64<<10 {
		t.Errorf("daemon memory: RSS %d KiB after half 1, %d KiB after half 2 (race detector on)", c1.rssKB, c2.rssKB)
	}

	// Consistency: every listed name stats, link counts equal names.
	view, problems := snapshotErrs(mnt)
	for _, p := range problems {
		t.Errorf("after the storm: %s", p)
	}
	names2 := map[uint64]int{}
	for _, n := range view {
		if n.Type == "file" {
			names2[n.Ino]++
		}
	}
	for p, n := range view {
		if n.Type == "file" && n.Nlink != uint64(names2[n.Ino]) {
			t.Errorf("after the storm: %s has %d links but %d names", p, n.Nlink, names2[n.Ino])
		}
	}
	d.stop()
	wantCheckClean(t, opts)
	d = startDaemon(t, binPath, mnt, opts)
	again := snapshot(t, mnt)
	reportDiff(t, "the merged view after a remount differs from the one before", diffTrees("before", view, "after remount", again, diffOpts{}))
	d.stop()
}

func allowedErrno(en unix.Errno) bool {
	for _, a := range stormAllowed {
		if en == a {
			return true
		}
	}
	return false
}
