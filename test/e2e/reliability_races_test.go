package e2e

// Minimal races between an operation on a name and a rename that moves
// another object to that name: the operation must act on the object it
// resolved (or fail with ENOENT), never on what now stands at the name
// (ENXIO from opening a whiteout, EOPNOTSUPP from chmod of a symlink).
// TestConcurrencyStorm found these; each case here runs two goroutines for
// two seconds.

import (
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestRacingNamesErrnos(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	s := newStack(t, stackSpec{lowers: [][]Entry{{
		File("f", "lower f\n"), Symlink("s", "g0"), File("g0", "g0\n"),
	}}})
	guardLowers(t, s.lowers...)
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	p := func(n string) string { return filepath.Join(mnt, n) }
	cases := []struct {
		name   string
		mover  func() error
		victim func() error
	}{
		{"open while the name goes back and forth by rename (a whiteout in between)",
			func() error { return errors.Join(unix.Rename(p("f"), p("g")), unix.Rename(p("g"), p("f"))) },
			func() error {
				fd, err := unix.Open(p("f"), unix.O_RDONLY|unix.O_CLOEXEC, 0)
				if err == nil {
					unix.Close(fd)
				}
				return err
			}},
		{"chmod while the file and a symlink exchange names",
			func() error {
				return unix.Renameat2(unix.AT_FDCWD, p("f"), unix.AT_FDCWD, p("s"), unix.RENAME_EXCHANGE)
			},
			func() error { return unix.Fchmodat(unix.AT_FDCWD, p("f"), 0o644, 0) }},
	}
	for _, c := range cases {
		var stop atomic.Bool
		counts := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		wg.Add(2)
		go func() {
			defer wg.Done()
			for !stop.Load() {
				if err := c.mover(); err != nil && !errors.Is(err, unix.ENOENT) {
					mu.Lock()
					counts["mover: "+errText(err, mnt)]++
					mu.Unlock()
				}
			}
		}()
		go func() {
			defer wg.Done()
			for !stop.Load() {
				err := c.victim()
				mu.Lock()
				counts[errText(err, mnt)]++
				mu.Unlock()
			}
		}()
		time.Sleep(2 * time.Second)
		stop.Store(true)
		wg.Wait()
		bad := 0
		for k, n := range counts {
			if k != "ok" && k != "ENOENT" {
				bad += n
			}
		}
		if bad > 0 {
			t.Errorf("%s: %v (want only ok and ENOENT)", c.name, counts)
		} else {
			t.Logf("%s: %v", c.name, counts)
		}
	}
}
