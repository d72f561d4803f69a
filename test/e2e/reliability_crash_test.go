package e2e

// Crash torture (issue 6): workers run copy-up storms, rename storms and
// create/delete churn through a mount while the daemon is killed with
// SIGKILL at a random moment; then the union is checked and remounted, and
// every worker's subtree must show exactly the state before or after the
// operation that was in flight: no partial or empty copy, no name both
// renamed and still there, no lost file, right link counts. The lowers must
// not change. Rounds go on over the same upper, so later rounds also crash
// over the debris of earlier ones.
//
// Each worker owns one subtree (w0, w1, ...), so its operations form one
// sequence whose outcome the model predicts exactly; the workers run at the
// same time, so several operations are in flight at each kill.
//
//	TORTURE_SEED=N      the seed (CI: fixed; `make torture`: random, printed)
//	TORTURE_KILLS=N     kill points (CI: 12)
//	TORTURE_WORKERS=N   workers (CI: 4)
//	TORTURE_MAXDELAY=MS longest time from the storm's start to the kill (400)
//
// The seed fixes the layers, the operations each worker draws and the kill
// delays; where a kill lands in the operations still depends on timing, so
// a replay reproduces the run, not the exact interleaving.

import (
	"fmt"
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

// tortureSeed is TORTURE_SEED: a number, "random" (a new one, printed), or
// the fixed CI seed.
func tortureSeed(t *testing.T) int64 {
	t.Helper()
	v := os.Getenv("TORTURE_SEED")
	if v == "" {
		return 20260601
	}
	if v == "random" {
		return time.Now().UnixNano() % 1_000_000_000
	}
	var n int64
	if _, err := fmt.Sscan(v, &n); err != nil {
		t.Fatalf("TORTURE_SEED=%q: not a number", v)
	}
	return n
}

// tortureNames are the names operations pick new names from: few, so that
// they collide; one with a newline, one with a space, one of 255 bytes.
var tortureNames = []string{"n0", "n1", "n2", "n3", "n4", "n5", "n6", "sp ace", "nl\nname", strings.Repeat("L", 255)}

// tWorker is one worker's subtree and what it knows about it.
type tWorker struct {
	idx    int
	root   string // relative to the mount: "w<idx>"
	model  *tModel
	nextID int
	// After a kill: the states the subtree may show (nil: model only).
	candidates []*tModel
	inFlight   string
	done       int // operations completed, all rounds
	err        error
	errAt      time.Time
	oddErrs    int // errors other than ENOTCONN after the kill
}

// lowerFile is deterministic content for a lower file.
func lowerContent(rng *rand.Rand, label string, size int) []byte {
	b := make([]byte, size)
	rng.Read(b)
	copy(b, label+"\n")
	return b
}

// buildTortureLayers makes two lowers with one subtree per worker, and the
// workers' models of them.
func buildTortureLayers(t *testing.T, lower0, lower1 string, seed int64, workers int) []*tWorker {
	t.Helper()
	var ws []*tWorker
	for i := 0; i < workers; i++ {
		rng := rand.New(rand.NewSource(seed*1000 + int64(i)))
		w := &tWorker{idx: i, root: fmt.Sprintf("w%d", i), model: newTModel(), nextID: 1}
		add := func(rel string, in *tInode) int {
			id := w.nextID
			w.nextID++
			w.model.paths[rel] = id
			w.model.inodes[id] = in
			return id
		}
		file := func(layer, rel string, size int, perm uint32, xattrs map[string]string) {
			data := lowerContent(rng, fmt.Sprintf("w%d/%s@%s", i, rel, filepath.Base(layer)), size)
			p := filepath.Join(layer, w.root, rel)
			if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(p, os.FileMode(perm)); err != nil {
				t.Fatal(err)
			}
			for k, v := range xattrs {
				if err := unix.Lsetxattr(p, k, []byte(v), 0); err != nil {
					t.Fatal(err)
				}
			}
			if layer == lower0 || w.model.kind(rel) == 0 {
				add(rel, &tInode{kind: 'f', data: data, perm: perm, xattrs: xattrs})
			}
		}
		dir := func(layer, rel string) {
			if err := os.MkdirAll(filepath.Join(layer, w.root, rel), 0o755); err != nil {
				t.Fatal(err)
			}
			if w.model.kind(rel) == 0 {
				add(rel, &tInode{kind: 'd', perm: 0o755, xattrs: map[string]string{}})
			}
		}
		for _, l := range []string{lower0, lower1} {
			if err := os.MkdirAll(filepath.Join(l, w.root), 0o755); err != nil {
				t.Fatal(err)
			}
		}
		dir(lower0, "a")
		dir(lower0, "a/b")
		dir(lower0, "c")
		dir(lower1, "c") // merged with lower0's
		dir(lower1, "d1")
		for k := 0; k < 4; k++ {
			file(lower0, fmt.Sprintf("s%d", k), 1+rng.Intn(4000), 0o644, nil)
		}
		file(lower0, "a/s4", 1+rng.Intn(4000), 0o640, map[string]string{"user.k": "lower"})
		file(lower0, "a/b/m1", 256<<10+rng.Intn(768<<10), 0o644, nil)
		file(lower0, "m0", 100<<10+rng.Intn(200<<10), 0o600, nil)
		file(lower0, "big", 3<<20+rng.Intn(1<<20), 0o644, nil)
		file(lower1, "c/s5", 1+rng.Intn(4000), 0o644, nil)
		file(lower1, "c/m2", 100<<10+rng.Intn(200<<10), 0o644, nil)
		file(lower1, "s0", 100, 0o644, nil) // hidden by lower0's s0
		file(lower1, "only1", 1+rng.Intn(4000), 0o644, nil)
		file(lower1, "d1/x", 1+rng.Intn(4000), 0o644, nil)
		// A sparse file: two islands of data in 8 MiB.
		sparse := make([]byte, 8<<20)
		copy(sparse[4096:], lowerContent(rng, "island1", 4096))
		copy(sparse[6<<20:], lowerContent(rng, "island2", 4096))
		sp := filepath.Join(lower0, w.root, "sparse")
		f, err := os.Create(sp)
		if err != nil {
			t.Fatal(err)
		}
		for _, off := range []int64{4096, 6 << 20} {
			if _, err := f.WriteAt(sparse[off:off+4096], off); err != nil {
				t.Fatal(err)
			}
		}
		if err := f.Truncate(8 << 20); err != nil {
			t.Fatal(err)
		}
		f.Close()
		add("sparse", &tInode{kind: 'f', data: sparse, perm: 0o644})
		// Hard links in the lower.
		file(lower0, "h1", 20<<10, 0o644, nil)
		if err := os.Link(filepath.Join(lower0, w.root, "h1"), filepath.Join(lower0, w.root, "a/h2")); err != nil {
			t.Fatal(err)
		}
		w.model.paths["a/h2"] = w.model.paths["h1"]
		// Symlinks, one pointing outside.
		for rel, target := range map[string]string{"ln": "s0", "evil": "/etc/passwd", "up": "../../../.."} {
			if err := os.Symlink(target, filepath.Join(lower0, w.root, rel)); err != nil {
				t.Fatal(err)
			}
			add(rel, &tInode{kind: 'l', target: target})
		}
		for _, in := range w.model.inodes {
			if in.xattrs == nil {
				in.xattrs = map[string]string{}
			}
		}
		ws = append(ws, w)
	}
	return ws
}

// tOp is one operation: the syscalls it makes and the model after each.
type tOp struct {
	name   string
	steps  []func() error
	states []*tModel // states[0] before, states[i] after step i
	close  func()    // closes what the steps left open (after an abort)
}

func (o *tOp) step(fn func() error, next *tModel) {
	o.steps = append(o.steps, fn)
	if next == nil {
		next = o.states[len(o.states)-1]
	}
	o.states = append(o.states, next)
}

// genOp draws an operation that the model says succeeds.
func (w *tWorker) genOp(rng *rand.Rand, mnt string) *tOp {
	m := w.model
	full := func(rel string) string { return filepath.Join(mnt, w.root, rel) }
	pick := func(list []string) string {
		if len(list) == 0 {
			return ""
		}
		return list[rng.Intn(len(list))]
	}
	files := m.sortedPaths("f")
	dirs := m.sortedPaths("d")
	nonDirs := m.sortedPaths("fl")
	// freshName is a new name in a random directory (or the root), not
	// under avoid.
	freshName := func(avoid string) string {
		for tries := 0; tries < 20; tries++ {
			d := pick(append([]string{""}, dirs...))
			if avoid != "" && under(d, avoid) {
				continue
			}
			p := joinModel(d, pick(tortureNames))
			if m.kind(p) == 0 {
				return p
			}
		}
		return ""
	}
	o := &tOp{states: []*tModel{m}, close: func() {}}
	fd := -1
	o.close = func() {
		if fd >= 0 {
			unix.Close(fd)
			fd = -1
		}
	}
	openStep := func(p string, flags int, next *tModel) {
		o.step(func() (err error) {
			fd, err = unix.Open(full(p), flags|unix.O_CLOEXEC, 0o644)
			return err
		}, next)
	}
	writeStep := func(b []byte, off int64, next *tModel) {
		o.step(func() error {
			n, err := unix.Pwrite(fd, b, off)
			if err == nil && n != len(b) {
				err = fmt.Errorf("short write %d of %d", n, len(b))
			}
			return err
		}, next)
	}
	appendStep := func(b []byte, next *tModel) {
		o.step(func() error {
			n, err := unix.Write(fd, b)
			if err == nil && n != len(b) {
				err = fmt.Errorf("short write %d of %d", n, len(b))
			}
			return err
		}, next)
	}
	closeStep := func() {
		o.step(func() error { err := unix.Close(fd); fd = -1; return err }, nil)
	}
	newID := func() int { w.nextID++; return w.nextID - 1 }
	content := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	total := len(m.paths)
	for {
		switch k := rng.Intn(19); {
		case k == 0: // chmod
			p := pick(append(files, dirs...))
			perm := []uint32{0o600, 0o640, 0o644, 0o755, 0o700}[rng.Intn(5)]
			o.name = fmt.Sprintf("chmod %04o %q", perm, p)
			o.step(func() error { return unix.Chmod(full(p), perm) }, m.with(p, func(in *tInode) { in.perm = perm }))
		case k == 1: // lchown
			p := pick(m.sortedPaths(""))
			uid, gid := []int{0, 1000, 1001}[rng.Intn(3)], []int{0, 1000, 1001}[rng.Intn(3)]
			o.name = fmt.Sprintf("lchown %d:%d %q", uid, gid, p)
			o.step(func() error { return unix.Lchown(full(p), uid, gid) }, m.with(p, func(in *tInode) { in.uid, in.gid = uid, gid }))
		case k == 2: // setxattr
			p := pick(append(files, dirs...))
			v := fmt.Sprintf("v%d", rng.Intn(1000))
			o.name = fmt.Sprintf("setxattr user.t=%s %q", v, p)
			o.step(func() error { return unix.Lsetxattr(full(p), "user.t", []byte(v), 0) }, m.with(p, func(in *tInode) { in.xattrs["user.t"] = v }))
		case k == 3: // utimes: a copy-up that changes nothing the model sees
			p := pick(append(files, dirs...))
			o.name = fmt.Sprintf("utimes %q", p)
			ts := []unix.Timespec{{Sec: 1e9}, {Sec: 1e9 + int64(rng.Intn(1e6))}}
			o.step(func() error { return unix.UtimesNanoAt(unix.AT_FDCWD, full(p), ts, unix.AT_SYMLINK_NOFOLLOW) }, nil)
		case k == 4 || k == 5: // append
			p := pick(files)
			tag := content(1 + rng.Intn(512))
			o.name = fmt.Sprintf("append %d bytes to %q", len(tag), p)
			openStep(p, unix.O_WRONLY|unix.O_APPEND, nil)
			appendStep(tag, m.with(p, func(in *tInode) { in.data = append(append([]byte(nil), in.data...), tag...) }))
			closeStep()
		case k == 6: // overwrite the start in place
			p := pick(files)
			size := len(m.inode(p).data)
			if size == 0 {
				continue
			}
			b := content(min(size, 512))
			o.name = fmt.Sprintf("pwrite %d bytes at 0 of %q", len(b), p)
			openStep(p, unix.O_WRONLY, nil)
			writeStep(b, 0, m.with(p, func(in *tInode) {
				d := append([]byte(nil), in.data...)
				copy(d, b)
				in.data = d
			}))
			closeStep()
		case k == 7: // truncate (a copy-up of only the first n bytes)
			p := pick(files)
			size := len(m.inode(p).data)
			n := rng.Intn(size + 1)
			if rng.Intn(4) == 0 {
				n = size + rng.Intn(10000)
			}
			o.name = fmt.Sprintf("truncate %q from %d to %d", p, size, n)
			o.step(func() error { return unix.Truncate(full(p), int64(n)) }, m.with(p, func(in *tInode) {
				d := make([]byte, n)
				copy(d, in.data)
				in.data = d
			}))
		case k == 8: // open for writing, write nothing
			p := pick(files)
			o.name = fmt.Sprintf("open O_RDWR and close %q", p)
			openStep(p, unix.O_RDWR, nil)
			closeStep()
		case k == 9: // O_TRUNC and rewrite: empty in between, as on any fs
			p := pick(files)
			b := content(rng.Intn(2000))
			o.name = fmt.Sprintf("O_TRUNC rewrite %q with %d bytes", p, len(b))
			openStep(p, unix.O_WRONLY|unix.O_TRUNC, m.with(p, func(in *tInode) { in.data = nil }))
			writeStep(b, 0, m.with(p, func(in *tInode) { in.data = b }))
			closeStep()
		case k == 10 || k == 11: // rename a non-directory
			p := pick(nonDirs)
			var q string
			if rng.Intn(3) == 0 {
				q = pick(nonDirs) // over another (or the same inode)
			} else {
				q = freshName("")
			}
			if p == "" || q == "" || p == q {
				continue
			}
			flags := 0
			if m.kind(q) == 0 && rng.Intn(2) == 0 {
				flags = unix.RENAME_NOREPLACE
			}
			next := m.clone()
			if m.paths[p] != m.paths[q] || m.kind(q) == 0 {
				next.movePath(p, q)
			}
			o.name = fmt.Sprintf("rename %q to %q (flags %d)", p, q, flags)
			o.step(func() error { return unix.Renameat2(unix.AT_FDCWD, full(p), unix.AT_FDCWD, full(q), uint(flags)) }, next)
		case k == 12: // rename a directory (a lower one gets a redirect)
			p := pick(dirs)
			if p == "" {
				continue
			}
			q := freshName(p)
			if rng.Intn(3) == 0 {
				// Over an empty directory elsewhere.
				for _, d := range dirs {
					if len(m.children(d)) == 0 && !under(d, p) && !under(p, d) {
						q = d
					}
				}
			}
			if q == "" || under(q, p) {
				continue
			}
			next := m.clone()
			next.movePath(p, q)
			o.name = fmt.Sprintf("rename directory %q to %q", p, q)
			o.step(func() error { return unix.Rename(full(p), full(q)) }, next)
		case k == 13: // exchange
			all := m.sortedPaths("")
			p, q := pick(all), pick(all)
			if p == q || under(p, q) || under(q, p) {
				continue
			}
			next := m.clone()
			if m.paths[p] != m.paths[q] {
				next.exchange(p, q)
			}
			o.name = fmt.Sprintf("exchange %q and %q", p, q)
			o.step(func() error {
				return unix.Renameat2(unix.AT_FDCWD, full(p), unix.AT_FDCWD, full(q), unix.RENAME_EXCHANGE)
			}, next)
		case k == 14: // unlink
			p := pick(nonDirs)
			if p == "" || total < 10 {
				continue
			}
			next := m.clone()
			next.removePath(p)
			o.name = fmt.Sprintf("unlink %q", p)
			o.step(func() error { return unix.Unlink(full(p)) }, next)
		case k == 15: // rmdir of an empty directory, else mkdir
			var empty []string
			for _, d := range dirs {
				if len(m.children(d)) == 0 {
					empty = append(empty, d)
				}
			}
			if p := pick(empty); p != "" && rng.Intn(2) == 0 {
				next := m.clone()
				next.removePath(p)
				o.name = fmt.Sprintf("rmdir %q", p)
				o.step(func() error { return unix.Rmdir(full(p)) }, next)
				break
			}
			q := freshName("")
			if q == "" || len(dirs) > 12 {
				continue
			}
			next := m.clone()
			id := newID()
			next.paths[q] = id
			next.inodes[id] = &tInode{kind: 'd', perm: 0o755, xattrs: map[string]string{}}
			o.name = fmt.Sprintf("mkdir %q", q)
			o.step(func() error { return unix.Mkdir(full(q), 0o755) }, next)
		case k == 16: // create a file whole: temporary name, then rename
			q := freshName("")
			if q == "" || total > 70 {
				continue
			}
			tmp := joinModel(parentRel(q), fmt.Sprintf(".t%d", w.nextID))
			b := content(1 + rng.Intn(3000))
			id := newID()
			s1 := m.clone()
			s1.paths[tmp] = id
			s1.inodes[id] = &tInode{kind: 'f', perm: 0o644, xattrs: map[string]string{}}
			s2 := s1.with(tmp, func(in *tInode) { in.data = b })
			s3 := s2.clone()
			s3.movePath(tmp, q)
			o.name = fmt.Sprintf("create %q (%d bytes) by way of %q", q, len(b), tmp)
			openStep(tmp, unix.O_WRONLY|unix.O_CREAT|unix.O_EXCL, s1)
			writeStep(b, 0, s2)
			closeStep()
			o.step(func() error { return unix.Rename(full(tmp), full(q)) }, s3)
		case k == 17: // hard link
			p, q := pick(files), freshName("")
			if p == "" || q == "" || total > 70 {
				continue
			}
			next := m.clone()
			next.paths[q] = m.paths[p]
			o.name = fmt.Sprintf("link %q to %q", p, q)
			o.step(func() error { return unix.Link(full(p), full(q)) }, next)
		case k == 18: // symlink
			q := freshName("")
			if q == "" || total > 70 {
				continue
			}
			target := []string{"s1", "../..", "/etc/shadow", "nl\nname"}[rng.Intn(4)]
			next := m.clone()
			id := newID()
			next.paths[q] = id
			next.inodes[id] = &tInode{kind: 'l', target: target, xattrs: map[string]string{}}
			o.name = fmt.Sprintf("symlink %q -> %q", q, target)
			o.step(func() error { return unix.Symlink(target, full(q)) }, next)
		}
		if len(o.steps) > 0 {
			return o
		}
	}
}

// run draws and runs operations until the daemon dies (killed set). It
// leaves w.model at the state after the last completed operation and, if
// one was cut short, w.candidates at the states it may have left.
func (w *tWorker) run(rng *rand.Rand, mnt string, killed *atomic.Bool, inFlight *atomic.Int64) {
	for !killed.Load() {
		o := w.genOp(rng, mnt)
		w.inFlight = o.name
		for i, step := range o.steps {
			inFlight.Add(1)
			err := step()
			inFlight.Add(-1)
			if err == nil {
				continue
			}
			o.close()
			w.errAt = time.Now()
			if !killed.Load() {
				w.err = fmt.Errorf("%s: step %d: %v (with the daemon alive)", o.name, i+1, err)
				return
			}
			if !isDeadConn(err) {
				// In the milliseconds the kernel takes to tear the
				// connection down, a call may fail otherwise (ENOENT
				// was seen); what counts is the state after remount.
				w.oddErrs++
			}
			w.candidates = []*tModel{o.states[i], o.states[i+1]}
			return
		}
		w.model = o.states[len(o.states)-1]
		w.done++
		w.inFlight = ""
	}
}

// verify compares the worker's subtree under mnt with its model or, after
// a kill, its candidates, and keeps the one that matches.
func (w *tWorker) verify(mnt string) error {
	obs, err := observe(filepath.Join(mnt, w.root))
	if err != nil {
		return fmt.Errorf("%s: reading the tree: %v", w.root, err)
	}
	cands := w.candidates
	if len(cands) == 0 {
		cands = []*tModel{w.model}
	}
	var report []string
	for i, c := range cands {
		d := c.diff(obs, 12)
		if len(d) == 0 {
			w.model, w.candidates = c, nil
			return nil
		}
		report = append(report, fmt.Sprintf("  as state %d of %d:\n    %s", i+1, len(cands), strings.Join(d, "\n    ")))
	}
	what := "after the last operation"
	if w.inFlight != "" {
		what = fmt.Sprintf("before or after the operation in flight at the kill (%s)", w.inFlight)
	}
	return fmt.Errorf("%s does not show the state %s:\n%s", w.root, what, strings.Join(report, "\n"))
}

func TestCrashTorture(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	seed := tortureSeed(t)
	kills := envInt("TORTURE_KILLS", 12)
	nworkers := envInt("TORTURE_WORKERS", 4)
	maxDelay := envInt("TORTURE_MAXDELAY", 400)
	replay := fmt.Sprintf("TORTURE_SEED=%d TORTURE_KILLS=%d TORTURE_WORKERS=%d go test -count=1 -run 'TestCrashTorture$' ./test/e2e/", seed, kills, nworkers)
	t.Logf("torture: seed %d, %d kill points, %d workers (replay: %s)", seed, kills, nworkers, replay)

	base := t.TempDir()
	lower0, lower1 := filepath.Join(base, "lower0"), filepath.Join(base, "lower1")
	upper, work := filepath.Join(base, "upper"), filepath.Join(base, "work")
	for _, d := range []string{lower0, lower1, upper, work} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	workers := buildTortureLayers(t, lower0, lower1, seed, nworkers)
	guardLowers(t, lower0, lower1)
	opts := unionOptions([]string{lower0, lower1}, upper, work, nil)
	mnt := filepath.Join(base, "mnt")
	if err := os.Mkdir(mnt, 0o755); err != nil {
		t.Fatal(err)
	}
	verifyAll := func(round int) bool {
		ok := true
		for _, w := range workers {
			if err := w.verify(mnt); err != nil {
				t.Errorf("kill point %d (seed %d): %v\nreplay: %s", round, seed, err, replay)
				ok = false
			}
		}
		return ok
	}
	delays := rand.New(rand.NewSource(seed))
	survived, leftovers, cut := 0, 0, 0
	var inFlightAtKill []int64
	for round := 1; round <= kills; round++ {
		d := startDaemon(t, binPath, mnt, opts)
		if !verifyAll(round - 1) {
			d.stop()
			break
		}
		if round > 1 {
			survived++
		}
		var killed atomic.Bool
		var inFlight atomic.Int64
		var wg sync.WaitGroup
		for _, w := range workers {
			rng := rand.New(rand.NewSource(seed*7919 + int64(round)*104729 + int64(w.idx)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				w.run(rng, mnt, &killed, &inFlight)
			}()
		}
		delay := time.Duration(1+delays.Intn(maxDelay)) * time.Millisecond
		time.Sleep(delay) // the kill point: how long the storm runs
		killed.Store(true)
		inFlightAtKill = append(inFlightAtKill, inFlight.Load())
		killAt := time.Now()
		d.kill()
		waited := make(chan struct{})
		go func() { wg.Wait(); close(waited) }()
		select {
		case <-waited:
		case <-time.After(time.Minute):
			t.Fatalf("kill point %d: workers still blocked a minute after the kill (seed %d)", round, seed)
		}
		for _, w := range workers {
			if w.err != nil {
				t.Errorf("kill point %d (seed %d): %s: %v (%v after the SIGKILL was sent)", round, seed, w.root, w.err, w.errAt.Sub(killAt))
				w.err = nil
			}
			if len(w.candidates) > 0 {
				cut++
			}
		}
		if t.Failed() {
			break
		}
		// A crash may leave temporaries in workdir/work, and nothing else.
		code, probs, out := runCheck(t, opts)
		for _, p := range probs {
			if strings.HasPrefix(p, "leftover ") {
				leftovers++
			} else {
				t.Errorf("kill point %d (seed %d): check after the kill: %s", round, seed, p)
			}
		}
		if code != 0 && code != 1 || code == 1 && len(probs) == 0 {
			t.Errorf("kill point %d: check exit %d:\n%s", round, code, out)
		}
		if t.Failed() {
			break
		}
	}
	if !t.Failed() {
		// The last remount: its state, then a clean unmount and a clean check.
		d := startDaemon(t, binPath, mnt, opts)
		if verifyAll(kills) {
			survived++
		}
		d.stop()
		wantCheckClean(t, opts)
	}
	ops, odd := 0, 0
	for _, w := range workers {
		ops += w.done
		odd += w.oddErrs
	}
	t.Logf("torture: seed %d: %d of %d kill points survived; %d operations completed, %d cut short by a kill "+
		"(syscalls in flight at each kill: %v; %d failed with another errno than ENOTCONN as the connection died); "+
		"%d leftovers in workdir/work cleared by the next mount",
		seed, survived, kills, ops, cut, inFlightAtKill, odd, leftovers)
}

// TestCrashTortureCatchesDamage shows the torture's oracle is sharp: after
// a storm and a kill, damage of the kinds a broken copy-up or rename would
// leave (a copy cut short, an empty copy, an old name back beside the new
// one) is put in the upper by hand, and verification must report each.
func TestCrashTortureCatchesDamage(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	base := t.TempDir()
	lower0, lower1 := filepath.Join(base, "lower0"), filepath.Join(base, "lower1")
	upper, work, mnt := filepath.Join(base, "upper"), filepath.Join(base, "work"), filepath.Join(base, "mnt")
	for _, d := range []string{lower0, lower1, upper, work, mnt} {
		if err := os.Mkdir(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	workers := buildTortureLayers(t, lower0, lower1, 1, 1)
	w := workers[0]
	opts := unionOptions([]string{lower0, lower1}, upper, work, nil)
	damages := []struct {
		name string
		do   func(t *testing.T)
	}{
		{"copy cut short", func(t *testing.T) {
			// big copied up, but with only half its data.
			src := filepath.Join(lower0, "w0/big")
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(filepath.Join(upper, "w0/big"), b[:len(b)/2], 0o644); err != nil {
				t.Fatal(err)
			}
		}},
		{"empty copy", func(t *testing.T) {
			if err := os.WriteFile(filepath.Join(upper, "w0/m0"), nil, 0o600); err != nil {
				t.Fatal(err)
			}
		}},
		{"renamed file back at its old name", func(t *testing.T) {
			// The whiteout of a rename lost: s1 shows again.
			if err := os.Remove(filepath.Join(upper, "w0/s1")); err != nil {
				t.Fatal(err)
			}
		}},
	}
	for _, dm := range damages {
		if err := os.RemoveAll(upper); err != nil {
			t.Fatal(err)
		}
		if err := os.Mkdir(upper, 0o755); err != nil {
			t.Fatal(err)
		}
		model := w.model
		d := startDaemon(t, binPath, mnt, opts)
		// Copy up big and m0 (chmod to the same mode: metadata only, so
		// open for writing too), rename s1 away.
		for _, p := range []string{"big", "m0"} {
			f, err := os.OpenFile(filepath.Join(mnt, "w0", p), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := f.Write(nil); err != nil {
				t.Fatal(err)
			}
			if err := unix.Truncate(filepath.Join(mnt, "w0", p), int64(len(model.inode(p).data))); err != nil {
				t.Fatal(err)
			}
			f.Close()
		}
		if err := os.Rename(filepath.Join(mnt, "w0/s1"), filepath.Join(mnt, "w0/n9")); err != nil {
			t.Fatal(err)
		}
		next := model.clone()
		next.movePath("s1", "n9")
		w.model = next
		if err := w.verify(mnt); err != nil {
			t.Fatalf("before any damage: %v", err)
		}
		d.kill()
		if dm.name == "renamed file back at its old name" {
			// n9 is the copy; the whiteout at s1 goes.
			if _, err := os.Lstat(filepath.Join(upper, "w0/s1")); err != nil {
				t.Fatalf("no whiteout for the renamed s1: %v", err)
			}
		}
		dm.do(t)
		d = startDaemon(t, binPath, mnt, opts)
		if err := w.verify(mnt); err == nil {
			t.Errorf("%s: verification did not notice", dm.name)
		} else {
			t.Logf("%s: caught: %v", dm.name, err)
		}
		d.stop()
		w.model = model
	}
}
