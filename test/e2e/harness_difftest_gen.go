package e2e

// The randomized differential tester, part 1: what a test sequence is and
// how one is generated from a seed.
//
// A seqCase is a stack of generated layers (lowers, optionally a pre-filled
// upper) and a list of genOps. It is plain data, so that it can be shrunk
// (harness_difftest_shrink.go) and printed as a Go test, and it is a pure
// function of the seed (no mount is needed to generate it), so that a seed
// alone reproduces a run. harness_difftest_run.go runs it on kernel overlayfs
// and on unionmount side by side.

import (
	"fmt"
	"math/rand"
	"path"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// seqCase is one generated test: layers and operations.
type seqCase struct {
	Lowers [][]Entry // topmost first
	Upper  []Entry   // on-disk kernel format, built before mounting
	Ops    []genOp
}

// The kinds of generated operation. Paths are relative to the mount point.
const (
	gCreate      = "create"      // O_CREAT|O_EXCL Path (Mode), write Data
	gWrite       = "write"       // open Path O_WRONLY, pwrite Data at Off
	gAppend      = "append"      // open Path O_WRONLY|O_APPEND, write Data
	gTruncOpen   = "trunc-open"  // open Path O_WRONLY|O_TRUNC, write Data
	gTruncate    = "truncate"    // truncate(Path, Off)
	gChmod       = "chmod"       // chmod(Path, Mode) (follows symlinks)
	gChown       = "lchown"      // lchown(Path, UID, GID)
	gUtimes      = "utimes"      // utimensat(Path, Off ns or now if 0, nofollow)
	gSetxattr    = "setxattr"    // lsetxattr(Path, Name, Data)
	gRemovexattr = "removexattr" // lremovexattr(Path, Name)
	gLink        = "link"        // link(Path, Path2)
	gSymlink     = "symlink"     // symlink(Data, Path)
	gMkdir       = "mkdir"       // mkdir(Path, Mode)
	gRmdir       = "rmdir"       // rmdir(Path)
	gUnlink      = "unlink"      // unlink(Path)
	gRename      = "rename"      // renameat2(Path, Path2, Flags)
	gMkfifo      = "mkfifo"      // mknod(Path, S_IFIFO|Mode)
	gOpen        = "open"        // open Path with Flags, kept as Key
	gPread       = "pread"       // read all of Key from offset 0
	gPwrite      = "pwrite"      // pwrite Data at Off through Key
	gFchmod      = "fchmod"      // fchmod(Key, Mode)
	gFsetxattr   = "fsetxattr"   // fsetxattr(Key, Name, Data)
	gFstat       = "fstat"       // fstat(Key): type, mode, size, nlink
	gFdSameIno   = "fd-same-ino" // is fstat(Key).st_ino == lstat(Path).st_ino?
	gFchown      = "fchown"      // fchown(Key, UID, GID)
	gFutimens    = "futimens"    // futimens(Key, Off ns or now if 0)
	gFtruncate   = "ftruncate"   // ftruncate(Key, Off)
	gClose       = "close"       // close(Key)
	gRemount     = "remount"     // close every kept descriptor, unmount, mount again
	gRotate      = "rotate"      // as remount, with the upper made the topmost lower under a fresh upper
	gReaddirMut  = "readdir-mut" // list Path partly, do Name(Path2, Data) in it, list the rest
	gStat        = "stat"        // lstat(Path): type, mode, owner, size, nlink
	gRead        = "read"        // read all of Path
	gReaddir     = "readdir"     // sorted names in Path
	gReadlink    = "readlink"    // readlink(Path)
	gListxattr   = "listxattr"   // llistxattr(Path)
)

// genOp is one generated operation. Which fields matter depends on Kind
// (see the constants above). As, when not 0, runs the operation with that
// fsuid and fsgid (and no supplementary groups), which also drops root's
// file capabilities for the calling thread: it is another user.
type genOp struct {
	Kind  string
	Path  string
	Path2 string
	Data  string
	Name  string
	Key   string
	Off   int64
	Mode  uint32
	UID   int
	GID   int
	Flags int
	As    int
}

// Users that own generated objects and run some operations.
var genUsers = []int{0, 1000, 65534}

// genNames are the names generated trees and operations use: few, so that
// layers and operations collide on them often.
var genNames = []string{"a", "b", "c", "d", "e"}

// longName is over NAME_MAX; maxName is exactly NAME_MAX.
var (
	longName = strings.Repeat("L", 256)
	maxName  = strings.Repeat("M", 255)
)

// genConfig bounds a generated case.
type genConfig struct {
	ops       int  // operations per sequence
	maxLowers int  // 1..maxLowers lower layers
	noLinks   bool // no hard links inside layers
}

// gen draws everything of a case from one seeded source.
type gen struct {
	r   *rand.Rand
	cfg genConfig
}

// generateCase builds the case for seed. The same seed and config always
// give the same case.
func generateCase(seed int64, cfg genConfig) seqCase {
	g := &gen{r: rand.New(rand.NewSource(seed)), cfg: cfg}
	var c seqCase
	n := 1 + g.r.Intn(cfg.maxLowers)
	for i := 0; i < n; i++ {
		c.Lowers = append(c.Lowers, g.layer(i == n-1, 4+g.r.Intn(10)))
	}
	if g.r.Intn(4) == 0 {
		c.Upper = g.layer(false, 1+g.r.Intn(4))
	}
	layers := c.Lowers
	if c.Upper != nil {
		layers = append([][]Entry{c.Upper}, c.Lowers...)
	}
	m := newModel(mergedView(layers))
	for len(c.Ops) < cfg.ops {
		for _, o := range g.ops(m) {
			c.Ops = append(c.Ops, o)
			m.apply(o)
		}
	}
	if len(c.Ops) > cfg.ops {
		c.Ops = c.Ops[:cfg.ops]
	}
	return c
}

func (g *gen) pick(s []string) string { return s[g.r.Intn(len(s))] }

func (g *gen) chance(n int) bool { return g.r.Intn(n) == 0 }

// content is short text, sometimes empty, sometimes a few pages.
func (g *gen) content() string {
	switch g.r.Intn(8) {
	case 0:
		return ""
	case 1:
		return rep(string(rune('a'+g.r.Intn(26))), 4096+g.r.Intn(5000))
	}
	b := make([]byte, 1+g.r.Intn(24))
	for i := range b {
		b[i] = byte('a' + g.r.Intn(26))
	}
	return string(b)
}

func (g *gen) fileMode() uint32 {
	return []uint32{0o644, 0o644, 0o600, 0o755, 0o4755, 0o2755, 0o6711, 0o444, 0o000, 0o666, 0o640}[g.r.Intn(11)]
}

func (g *gen) dirMode() uint32 {
	return []uint32{0o755, 0o755, 0o700, 0o1777, 0o2775, 0o555, 0o777, 0o750}[g.r.Intn(8)]
}

func (g *gen) owner() (int, int) {
	u := genUsers[g.r.Intn(len(genUsers))]
	return u, u
}

// layer generates one layer of about n entries. bottom is the lowest layer
// (no whiteouts or opaque directories: they would hide nothing).
func (g *gen) layer(bottom bool, n int) []Entry {
	kinds := map[string]entryKind{} // what this layer has at each path
	var out []Entry
	var files []string
	// Bounded: earlier entries (top-level files) can leave no room.
	for tries := 0; len(out) < n && tries < 50*n; tries++ {
		depth := 1 + g.r.Intn(3)
		var parts []string
		for i := 0; i < depth; i++ {
			parts = append(parts, g.pick(genNames))
		}
		p := strings.Join(parts, "/")
		if _, taken := kinds[p]; taken {
			continue
		}
		ok := true
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			if k, has := kinds[dir]; has && k != kindDir {
				ok = false
			}
		}
		if !ok {
			continue
		}
		for dir := path.Dir(p); dir != "."; dir = path.Dir(dir) {
			kinds[dir] = kindDir
		}
		var e Entry
		switch k := g.r.Intn(100); {
		case k < 40:
			if g.chance(8) {
				e = SparseFile(p, 70000+int64(g.r.Intn(3))*4096, 65536, g.content())
			} else {
				e = File(p, g.content())
			}
			e = e.WithMode(g.fileMode())
			files = append(files, p)
		case k < 60:
			e = Dir(p).WithMode(g.dirMode())
		case k < 70:
			e = Symlink(p, g.symlinkTarget(p))
		case k < 75:
			e = Fifo(p).WithMode(0o644)
		case k < 85 && len(files) > 0 && !g.cfg.noLinks:
			e = Hardlink(p, g.pick(files))
		case k < 93 && !bottom:
			e = Whiteout(p)
		case k < 100 && !bottom:
			e = OpaqueDir(p).WithMode(g.dirMode())
		default:
			e = File(p, g.content())
			files = append(files, p)
		}
		if e.Kind != kindHardlink && e.Kind != kindWhiteout && e.Kind != kindSymlink || e.Kind == kindSymlink && g.chance(3) {
			if g.chance(2) {
				e = e.WithOwner(g.owner())
			}
		}
		if (e.Kind == kindFile || e.Kind == kindDir) && g.chance(4) {
			e = e.WithXattr(g.pick([]string{"user.a", "user.b", "trusted.t"}), "v"+fmt.Sprint(g.r.Intn(9)))
		}
		kinds[p] = e.Kind
		if e.Kind == kindHardlink {
			kinds[p] = kindFile
		}
		out = append(out, e)
	}
	return out
}

// symlinkTarget is a relative target that stays inside the tree (so that
// nothing done through it escapes the mount), or a dangling absolute one
// under a directory that does not exist.
func (g *gen) symlinkTarget(from string) string {
	if g.chance(6) {
		return "/nonexistent-unionmount-test/" + g.pick(genNames)
	}
	up := strings.Count(from, "/")
	var parts []string
	for i := 0; i < up; i++ {
		parts = append(parts, "..")
	}
	depth := 1 + g.r.Intn(2)
	for i := 0; i < depth; i++ {
		parts = append(parts, g.pick(genNames))
	}
	return strings.Join(parts, "/")
}

// model is the generator's idea of the merged tree: path -> kind. It only
// steers the generator towards paths that exist; it need not be exact.
type model struct {
	nodes   map[string]byte // 'f' file, 'd' dir, 'l' symlink, 'p' fifo
	keys    []string        // open descriptors' keys
	nextKey int
}

func newModel(nodes map[string]byte) *model { return &model{nodes: nodes} }

func (m *model) paths(kinds string) []string {
	var out []string
	for p, k := range m.nodes {
		if p != "." && (kinds == "" || strings.IndexByte(kinds, k) >= 0) {
			out = append(out, p)
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) children(dir string) []string {
	var out []string
	for p := range m.nodes {
		if p != "." && path.Dir(p) == dir {
			out = append(out, path.Base(p))
		}
	}
	sort.Strings(out)
	return out
}

func (m *model) subtree(p string) []string {
	var out []string
	for q := range m.nodes {
		if q == p || strings.HasPrefix(q, p+"/") {
			out = append(out, q)
		}
	}
	return out
}

func (m *model) apply(o genOp) {
	parentIsDir := func(p string) bool { return m.nodes[path.Dir(p)] == 'd' }
	_, exists := m.nodes[o.Path]
	switch o.Kind {
	case gCreate:
		if !exists && parentIsDir(o.Path) {
			m.nodes[o.Path] = 'f'
		}
	case gMkdir:
		if !exists && parentIsDir(o.Path) {
			m.nodes[o.Path] = 'd'
		}
	case gSymlink:
		if !exists && parentIsDir(o.Path) {
			m.nodes[o.Path] = 'l'
		}
	case gMkfifo:
		if !exists && parentIsDir(o.Path) {
			m.nodes[o.Path] = 'p'
		}
	case gLink:
		if k, ok := m.nodes[o.Path]; ok && k != 'd' && parentIsDir(o.Path2) {
			if _, taken := m.nodes[o.Path2]; !taken {
				m.nodes[o.Path2] = k
			}
		}
	case gUnlink:
		if k := m.nodes[o.Path]; exists && k != 'd' {
			delete(m.nodes, o.Path)
		}
	case gRmdir:
		if m.nodes[o.Path] == 'd' && len(m.children(o.Path)) == 0 {
			delete(m.nodes, o.Path)
		}
	case gRename:
		m.rename(o)
	case gReaddirMut:
		a, b := joinRel(o.Path, o.Path2), joinRel(o.Path, o.Data)
		m.apply(genOp{Kind: o.Name, Path: a, Path2: b})
	case gOpen:
		m.keys = append(m.keys, o.Key)
	case gRemount, gRotate:
		m.keys = nil
	case gClose:
		for i, k := range m.keys {
			if k == o.Key {
				m.keys = append(m.keys[:i], m.keys[i+1:]...)
				break
			}
		}
	}
}

func (m *model) rename(o genOp) {
	a, b := o.Path, o.Path2
	ka, okA := m.nodes[a]
	kb, okB := m.nodes[b]
	if !okA || a == b || strings.HasPrefix(b, a+"/") || m.nodes[path.Dir(b)] != 'd' {
		return
	}
	move := func(from, to string, set map[string]byte) {
		for _, q := range m.subtree(from) {
			set[to+q[len(from):]] = m.nodes[q]
		}
	}
	switch {
	case o.Flags&unix.RENAME_EXCHANGE != 0:
		if !okB || strings.HasPrefix(a, b+"/") {
			return
		}
		next := map[string]byte{}
		move(a, b, next)
		move(b, a, next)
		for _, q := range append(m.subtree(a), m.subtree(b)...) {
			delete(m.nodes, q)
		}
		for q, k := range next {
			m.nodes[q] = k
		}
		return
	case okB && o.Flags&unix.RENAME_NOREPLACE != 0:
		return
	case okB && (ka == 'd') != (kb == 'd'):
		return
	case okB && kb == 'd' && len(m.children(b)) > 0:
		return
	}
	next := map[string]byte{}
	move(a, b, next)
	for _, q := range append(m.subtree(a), m.subtree(b)...) {
		delete(m.nodes, q)
	}
	for q, k := range next {
		m.nodes[q] = k
	}
}

// mergedView computes what a union of layers (topmost first, kernel
// format) shows: path -> kind, the root included as ".".
func mergedView(layers [][]Entry) map[string]byte {
	type layerView struct {
		kinds  map[string]entryKind
		opaque map[string]bool
	}
	views := make([]layerView, len(layers))
	for i, entries := range layers {
		v := layerView{kinds: map[string]entryKind{".": kindDir}, opaque: map[string]bool{}}
		for _, e := range entries {
			for dir := path.Dir(e.Path); dir != "."; dir = path.Dir(dir) {
				if _, ok := v.kinds[dir]; !ok {
					v.kinds[dir] = kindDir
				}
			}
			k := e.Kind
			if k == kindHardlink {
				k = kindFile
			}
			v.kinds[e.Path] = k
			if e.Xattrs[xattrOpaque] == "y" {
				v.opaque[e.Path] = true
			}
		}
		views[i] = v
	}
	out := map[string]byte{".": 'd'}
	var walk func(dir string, stack []int)
	walk = func(dir string, stack []int) {
		names := map[string]bool{}
		for _, i := range stack {
			for p := range views[i].kinds {
				if p != "." && path.Dir(p) == dir {
					names[path.Base(p)] = true
				}
			}
		}
		for name := range names {
			p := joinRel(dir, name)
			for si, i := range stack {
				k, ok := views[i].kinds[p]
				if !ok {
					continue
				}
				switch k {
				case kindWhiteout:
				case kindDir:
					out[p] = 'd'
					sub := []int{i}
					if !views[i].opaque[p] {
						for _, j := range stack[si+1:] {
							kj, ok := views[j].kinds[p]
							if !ok {
								continue
							}
							if kj != kindDir {
								break
							}
							sub = append(sub, j)
							if views[j].opaque[p] {
								break
							}
						}
					}
					walk(p, sub)
				case kindSymlink:
					out[p] = 'l'
				case kindFifo:
					out[p] = 'p'
				default:
					out[p] = 'f'
				}
				break
			}
		}
	}
	all := make([]int, len(layers))
	for i := range all {
		all[i] = i
	}
	walk(".", all)
	return out
}

// existing picks a path of one of kinds (any kind if ""), or a fresh one if
// there is none or by chance.
func (g *gen) existing(m *model, kinds string) string {
	ps := m.paths(kinds)
	if len(ps) == 0 || g.chance(6) {
		return g.fresh(m)
	}
	return g.pick(ps)
}

// fresh is a name in an existing directory, often a taken one; rarely one
// of NAME_MAX bytes or longer.
func (g *gen) fresh(m *model) string {
	dirs := append(m.paths("d"), ".")
	sort.Strings(dirs)
	name := g.pick(genNames)
	switch g.r.Intn(40) {
	case 0:
		name = longName
	case 1:
		name = maxName
	}
	return joinRel(g.pick(dirs), name)
}

func (g *gen) user() int {
	if g.chance(6) {
		return genUsers[1+g.r.Intn(len(genUsers)-1)]
	}
	return 0
}

var genTimes = []int64{
	0, // now
	time.Date(2005, 6, 7, 8, 9, 10, 0, time.UTC).UnixNano(),
	time.Date(2010, 1, 2, 3, 4, 5, 987654321, time.UTC).UnixNano(),
}

// genXattrNames are the xattrs operations set and remove. user.overlay.*
// is an ordinary name when the mount uses trusted.overlay.*. No
// trusted.overlay.* name: unionmount refuses to set one (SPEC §3), kernel
// overlayfs (since 6.7) stores it escaped, an intended difference.
var genXattrNames = []string{"user.a", "user.b", "user.a", "trusted.t", "security.s", "user.overlay.x"}

var genSizes = []int64{0, 1, 5, 100, 4096, 5000, 70000}

var genOffsets = []int64{0, 0, 3, 100, 4090, 70000}

// ops generates the next operation, or a few that belong together.
func (g *gen) ops(m *model) []genOp {
	as := g.user()
	one := func(o genOp) []genOp {
		o.As = as
		return []genOp{o}
	}
	switch k := g.r.Intn(138); {
	case k < 10:
		return one(genOp{Kind: gWrite, Path: g.existing(m, "fl"), Off: genOffsets[g.r.Intn(len(genOffsets))], Data: g.content()})
	case k < 16:
		return one(genOp{Kind: gAppend, Path: g.existing(m, "fl"), Data: g.content()})
	case k < 24:
		return one(genOp{Kind: gCreate, Path: g.fresh(m), Mode: g.fileMode(), Data: g.content()})
	case k < 27:
		return one(genOp{Kind: gTruncOpen, Path: g.existing(m, "f"), Data: g.content()})
	case k < 32:
		return one(genOp{Kind: gTruncate, Path: g.existing(m, "f"), Off: genSizes[g.r.Intn(len(genSizes))]})
	case k < 38:
		p := g.existing(m, "")
		mode := g.fileMode()
		if m.nodes[p] == 'd' {
			mode = g.dirMode()
		}
		return one(genOp{Kind: gChmod, Path: p, Mode: mode})
	case k < 43:
		u, gid := g.owner()
		if g.chance(3) {
			gid = genUsers[g.r.Intn(len(genUsers))]
		}
		return one(genOp{Kind: gChown, Path: g.existing(m, ""), UID: u, GID: gid})
	case k < 47:
		return one(genOp{Kind: gUtimes, Path: g.existing(m, ""), Off: genTimes[g.r.Intn(len(genTimes))]})
	case k < 52:
		return one(genOp{Kind: gSetxattr, Path: g.existing(m, ""), Name: g.pick(genXattrNames), Data: "x" + fmt.Sprint(g.r.Intn(9))})
	case k < 55:
		return one(genOp{Kind: gRemovexattr, Path: g.existing(m, ""), Name: g.pick(genXattrNames)})
	case k < 60:
		return one(genOp{Kind: gLink, Path: g.existing(m, "flp"), Path2: g.fresh(m)})
	case k < 64:
		p := g.fresh(m)
		return one(genOp{Kind: gSymlink, Path: p, Data: g.symlinkTarget(p)})
	case k < 70:
		return one(genOp{Kind: gMkdir, Path: g.fresh(m), Mode: g.dirMode()})
	case k < 75:
		return one(genOp{Kind: gRmdir, Path: g.existing(m, "d")})
	case k < 82:
		return one(genOp{Kind: gUnlink, Path: g.existing(m, "flp")})
	case k < 94:
		o := genOp{Kind: gRename, Path: g.existing(m, "")}
		if g.chance(3) {
			o.Path2 = g.existing(m, "")
		} else {
			o.Path2 = g.fresh(m)
		}
		switch g.r.Intn(8) {
		case 0:
			o.Flags = unix.RENAME_NOREPLACE
		case 1:
			o.Flags = unix.RENAME_EXCHANGE
		}
		return one(o)
	case k < 96:
		return one(genOp{Kind: gMkfifo, Path: g.fresh(m), Mode: 0o644})
	case k < 103:
		return g.fdOps(m)
	case k < 106:
		return g.readdirMut(m)
	case k < 112:
		return one(genOp{Kind: gStat, Path: g.existing(m, "")})
	case k < 117:
		return one(genOp{Kind: gRead, Path: g.existing(m, "fl")})
	case k < 122:
		return one(genOp{Kind: gReaddir, Path: g.existing(m, "d")})
	case k < 124:
		return one(genOp{Kind: gReadlink, Path: g.existing(m, "l")})
	case k < 127:
		return []genOp{{Kind: gRemount}}
	case k < 129:
		return []genOp{{Kind: gRotate}}
	case k < 133:
		return one(g.moveDir(m))
	default:
		return one(genOp{Kind: gListxattr, Path: g.existing(m, "")})
	}
}

// moveDir renames a directory (often one of a lower layer, which leaves a
// redirect) to a fresh name in its own parent or in another directory.
// With rotations between them, such renames stack redirects in several
// layers, relative ones below absolute ones.
func (g *gen) moveDir(m *model) genOp {
	p := g.existing(m, "d")
	var to []string
	for _, d := range append(m.paths("d"), ".") {
		if d != p && !strings.HasPrefix(d, p+"/") {
			to = append(to, d)
		}
	}
	dir := path.Dir(p)
	if len(to) > 0 && g.chance(2) {
		dir = g.pick(to)
	}
	return genOp{Kind: gRename, Path: p, Path2: joinRel(dir, g.pick(genNames)+"m")}
}

// fdOps works on a kept descriptor: opens one (often read-only, on a file
// still in a lower layer) or uses or closes one already open; often it
// changes the file through its name and reads back through the old
// descriptor, the case SPEC §5 is about.
func (g *gen) fdOps(m *model) []genOp {
	if len(m.keys) == 0 || g.chance(3) {
		key := fmt.Sprintf("fd%d", m.nextKey)
		m.nextKey++
		flags := unix.O_RDONLY
		if g.chance(4) {
			flags = unix.O_RDWR
		}
		p := g.existing(m, "f")
		out := []genOp{{Kind: gOpen, Key: key, Path: p, Flags: flags}}
		if g.chance(2) {
			out = append(out,
				genOp{Kind: gAppend, Path: p, Data: g.content()},
				genOp{Kind: gPread, Key: key},
				genOp{Kind: gFdSameIno, Key: key, Path: p})
		}
		return out
	}
	key := g.pick(m.keys)
	switch g.r.Intn(11) {
	case 0:
		return []genOp{{Kind: gPwrite, Key: key, Off: genOffsets[g.r.Intn(len(genOffsets))], Data: g.content()}}
	case 1:
		return []genOp{{Kind: gFchmod, Key: key, Mode: g.fileMode()}}
	case 2:
		return []genOp{{Kind: gFsetxattr, Key: key, Name: "user.fd", Data: "v"}}
	case 3:
		return []genOp{{Kind: gFstat, Key: key}}
	case 4:
		return []genOp{{Kind: gFdSameIno, Key: key, Path: g.existing(m, "f")}}
	case 5:
		return []genOp{{Kind: gClose, Key: key}}
	case 6:
		u, gid := g.owner()
		return []genOp{{Kind: gFchown, Key: key, UID: u, GID: gid}}
	case 7:
		return []genOp{{Kind: gFutimens, Key: key, Off: genTimes[g.r.Intn(len(genTimes))]}}
	case 8:
		return []genOp{{Kind: gFtruncate, Key: key, Off: genSizes[g.r.Intn(len(genSizes))]}}
	}
	return []genOp{{Kind: gPread, Key: key}}
}

// readdirMut lists a directory while it changes.
func (g *gen) readdirMut(m *model) []genOp {
	dir := g.existing(m, "d")
	if m.nodes[dir] != 'd' {
		dir = "."
	}
	o := genOp{Kind: gReaddirMut, Path: dir}
	kids := m.children(dir)
	pickKid := func() string {
		if len(kids) == 0 || g.chance(4) {
			return g.pick(genNames)
		}
		return g.pick(kids)
	}
	switch g.r.Intn(5) {
	case 0:
		o.Name, o.Path2 = gCreate, g.pick(genNames)+"n"
	case 1:
		o.Name, o.Path2 = gMkdir, g.pick(genNames)+"n"
	case 2:
		o.Name, o.Path2 = gUnlink, pickKid()
	case 3:
		o.Name, o.Path2 = gRmdir, pickKid()
	default:
		o.Name, o.Path2, o.Data = gRename, pickKid(), g.pick(genNames)+"r"
	}
	return []genOp{o}
}
