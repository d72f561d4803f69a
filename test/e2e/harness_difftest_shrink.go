package e2e

// The randomized differential tester, part 3: shrinking a failing case to a
// small one that fails the same way, and printing it as a Go test to paste
// into difftest_regress_test.go.

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"testing"
)

// shrinker tries smaller versions of a failing case; a candidate is kept
// when running it still reports a discrepancy with signature sig.
type shrinker struct {
	t      *testing.T
	sig    string
	trials int
	budget int
}

// shrinkCase returns the smallest case it finds that still fails with sig,
// trying at most budget candidates. Each candidate runs in a subtest of t
// (so its mounts are cleaned up before the next one).
func shrinkCase(t *testing.T, c seqCase, sig string, budget int) (seqCase, int) {
	s := &shrinker{t: t, sig: sig, budget: budget}
	for changed := true; changed && s.trials < s.budget; {
		changed = false
		var ok bool
		if c.Ops, ok = shrinkList(s, c.Ops, func(ops []genOp) seqCase { d := c; d.Ops = ops; return d }); ok {
			changed = true
		}
		// Whole layers, then single entries of each.
		for i := 0; len(c.Lowers) > 1 && i < len(c.Lowers); i++ {
			d := c
			d.Lowers = append(append([][]Entry(nil), c.Lowers[:i]...), c.Lowers[i+1:]...)
			if s.try(d) {
				c, changed = d, true
				i--
			}
		}
		if c.Upper != nil {
			d := c
			d.Upper = nil
			if s.try(d) {
				c, changed = d, true
			}
		}
		for i := range c.Lowers {
			if c.Lowers[i], ok = shrinkList(s, c.Lowers[i], func(es []Entry) seqCase {
				d := c
				d.Lowers = append([][]Entry(nil), c.Lowers...)
				d.Lowers[i] = withoutDanglingLinks(es)
				return d
			}); ok {
				c.Lowers[i] = withoutDanglingLinks(c.Lowers[i])
				changed = true
			}
		}
		if c.Upper, ok = shrinkList(s, c.Upper, func(es []Entry) seqCase {
			d := c
			d.Upper = withoutDanglingLinks(es)
			return d
		}); ok {
			c.Upper = withoutDanglingLinks(c.Upper)
			changed = true
		}
		// Simpler details: default metadata, short contents, root.
		if s.simplifyEntries(&c) || s.simplifyOps(&c) {
			changed = true
		}
	}
	return c, s.trials
}

func (s *shrinker) try(c seqCase) bool {
	if s.trials >= s.budget {
		return false
	}
	s.trials++
	failed := false
	s.t.Run(fmt.Sprintf("shrink-%03d", s.trials), func(t *testing.T) {
		failed = runSeq(t, c).has(s.sig)
	})
	return failed
}

// shrinkList removes chunks of items (halves, quarters, ..., single ones)
// while build(rest) still fails. It reports whether it removed anything.
func shrinkList[T any](s *shrinker, items []T, build func([]T) seqCase) ([]T, bool) {
	changed := false
	for size := max(len(items)/2, 1); len(items) > 0 && s.trials < s.budget; size /= 2 {
		for start := 0; start < len(items) && s.trials < s.budget; {
			end := min(start+size, len(items))
			cand := append(append([]T(nil), items[:start]...), items[end:]...)
			if s.try(build(cand)) {
				items, changed = cand, true
				continue
			}
			start = end
		}
		if size == 1 {
			break
		}
	}
	return items, changed
}

// withoutDanglingLinks drops hard links whose target entry was removed.
func withoutDanglingLinks(es []Entry) []Entry {
	have := map[string]bool{}
	var out []Entry
	for _, e := range es {
		if e.Kind == kindHardlink && !have[e.Target] {
			continue
		}
		have[e.Path] = true
		out = append(out, e)
	}
	return out
}

func (s *shrinker) simplifyEntries(c *seqCase) bool {
	changed := false
	layers := append([][]Entry{c.Upper}, c.Lowers...)
	for li := range layers {
		for ei := range layers[li] {
			e := layers[li][ei]
			var simpler []Entry
			if e.Xattrs != nil {
				f := e
				f.Xattrs = nil
				if e.Xattrs[xattrOpaque] != "" {
					f.Xattrs = map[string]string{xattrOpaque: e.Xattrs[xattrOpaque]}
				}
				if len(f.Xattrs) != len(e.Xattrs) {
					simpler = append(simpler, f)
				}
			}
			if e.UID != 0 || e.GID != 0 {
				f := e
				f.UID, f.GID = 0, 0
				simpler = append(simpler, f)
			}
			if e.Perm != 0 {
				f := e
				f.Perm = 0
				simpler = append(simpler, f)
			}
			if e.Kind == kindFile && (len(e.Content) > 1 || e.Size != 0) {
				f := e
				f.Content, f.Size, f.Offset = "x", 0, 0
				simpler = append(simpler, f)
			}
			for _, f := range simpler {
				d := cloneCase(*c)
				if li == 0 {
					d.Upper[ei] = f
				} else {
					d.Lowers[li-1][ei] = f
				}
				if s.try(d) {
					*c, changed = d, true
					layers = append([][]Entry{c.Upper}, c.Lowers...)
					e = f
				}
			}
		}
	}
	return changed
}

func (s *shrinker) simplifyOps(c *seqCase) bool {
	changed := false
	for i := range c.Ops {
		o := c.Ops[i]
		var simpler []genOp
		if o.As != 0 {
			f := o
			f.As = 0
			simpler = append(simpler, f)
		}
		if len(o.Data) > 1 && o.Kind != gSymlink && o.Kind != gReaddirMut {
			f := o
			f.Data = "x"
			simpler = append(simpler, f)
		}
		if o.Off != 0 && o.Kind != gUtimes && o.Kind != gFutimens {
			f := o
			f.Off = 0
			simpler = append(simpler, f)
		}
		for _, f := range simpler {
			d := cloneCase(*c)
			d.Ops[i] = f
			if s.try(d) {
				*c, changed = d, true
			}
		}
	}
	return changed
}

func cloneCase(c seqCase) seqCase {
	d := seqCase{Ops: append([]genOp(nil), c.Ops...)}
	if c.Upper != nil {
		d.Upper = append([]Entry(nil), c.Upper...)
	}
	for _, l := range c.Lowers {
		d.Lowers = append(d.Lowers, append([]Entry(nil), l...))
	}
	return d
}

// goSource prints c as a Go test named name, to paste into
// difftest_regress_test.go (package e2e; it needs no imports).
func (c seqCase) goSource(name, comment string) string {
	var b strings.Builder
	for _, line := range strings.Split(comment, "\n") {
		fmt.Fprintf(&b, "// %s\n", line)
	}
	fmt.Fprintf(&b, "func %s(t *testing.T) {\n\tt.Parallel()\n\tcheckSeq(t, seqCase{\n", name)
	b.WriteString("\t\tLowers: [][]Entry{\n")
	for _, l := range c.Lowers {
		b.WriteString("\t\t\t{\n")
		for _, e := range l {
			fmt.Fprintf(&b, "\t\t\t\t%s,\n", entrySource(e))
		}
		b.WriteString("\t\t\t},\n")
	}
	b.WriteString("\t\t},\n")
	if c.Upper != nil {
		b.WriteString("\t\tUpper: []Entry{\n")
		for _, e := range c.Upper {
			fmt.Fprintf(&b, "\t\t\t%s,\n", entrySource(e))
		}
		b.WriteString("\t\t},\n")
	}
	b.WriteString("\t\tOps: []genOp{\n")
	for _, o := range c.Ops {
		fmt.Fprintf(&b, "\t\t\t%s,\n", o.source())
	}
	b.WriteString("\t\t},\n\t})\n}\n")
	return b.String()
}

// strLit is a Go expression for s: a quoted string, or rep(...) for a long
// run of one byte.
func strLit(s string) string {
	if len(s) > 40 && strings.Count(s, s[:1]) == len(s) {
		return fmt.Sprintf("rep(%q, %d)", s[:1], len(s))
	}
	return strconv.Quote(s)
}

// rep is strings.Repeat, under a name that needs no import in printed tests.
func rep(s string, n int) string { return strings.Repeat(s, n) }

func entrySource(e Entry) string {
	var s string
	switch e.Kind {
	case kindFile:
		if e.Size > 0 || e.Offset > 0 {
			s = fmt.Sprintf("SparseFile(%q, %d, %d, %s)", e.Path, e.Size, e.Offset, strLit(e.Content))
		} else {
			s = fmt.Sprintf("File(%q, %s)", e.Path, strLit(e.Content))
		}
	case kindDir:
		s = fmt.Sprintf("Dir(%q)", e.Path)
	case kindSymlink:
		s = fmt.Sprintf("Symlink(%q, %q)", e.Path, e.Target)
	case kindFifo:
		s = fmt.Sprintf("Fifo(%q)", e.Path)
	case kindCharDev:
		s = fmt.Sprintf("CharDev(%q, %d, %d)", e.Path, e.Major, e.Minor)
	case kindHardlink:
		s = fmt.Sprintf("Hardlink(%q, %q)", e.Path, e.Target)
	case kindWhiteout:
		return fmt.Sprintf("Whiteout(%q)", e.Path)
	}
	if e.Perm != 0 {
		s += fmt.Sprintf(".WithMode(0o%o)", e.Perm)
	}
	if e.UID != 0 || e.GID != 0 {
		s += fmt.Sprintf(".WithOwner(%d, %d)", e.UID, e.GID)
	}
	keys := make([]string, 0, len(e.Xattrs))
	for k := range e.Xattrs {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		s += fmt.Sprintf(".WithXattr(%q, %q)", k, e.Xattrs[k])
	}
	return s
}

var genKindConst = map[string]string{
	gCreate: "gCreate", gWrite: "gWrite", gAppend: "gAppend", gTruncOpen: "gTruncOpen",
	gTruncate: "gTruncate", gChmod: "gChmod", gChown: "gChown", gUtimes: "gUtimes",
	gSetxattr: "gSetxattr", gRemovexattr: "gRemovexattr", gLink: "gLink", gSymlink: "gSymlink",
	gMkdir: "gMkdir", gRmdir: "gRmdir", gUnlink: "gUnlink", gRename: "gRename", gMkfifo: "gMkfifo",
	gOpen: "gOpen", gPread: "gPread", gPwrite: "gPwrite", gFchmod: "gFchmod", gFsetxattr: "gFsetxattr",
	gFstat: "gFstat", gFdSameIno: "gFdSameIno", gClose: "gClose", gReaddirMut: "gReaddirMut",
	gFchown: "gFchown", gFutimens: "gFutimens", gFtruncate: "gFtruncate", gRemount: "gRemount", gRotate: "gRotate",
	gStat: "gStat", gRead: "gRead", gReaddir: "gReaddir", gReadlink: "gReadlink", gListxattr: "gListxattr",
}

// source is o as a Go composite literal (inside a []genOp).
func (o genOp) source() string {
	kind := genKindConst[o.Kind]
	if kind == "" {
		kind = strconv.Quote(o.Kind)
	}
	parts := []string{"Kind: " + kind}
	str := func(k, v string) {
		if v != "" {
			parts = append(parts, k+": "+strLit(v))
		}
	}
	str("Path", o.Path)
	str("Path2", o.Path2)
	str("Data", o.Data)
	if o.Name != "" {
		if c := genKindConst[o.Name]; c != "" {
			parts = append(parts, "Name: "+c)
		} else {
			str("Name", o.Name)
		}
	}
	str("Key", o.Key)
	if o.Off != 0 {
		parts = append(parts, fmt.Sprintf("Off: %d", o.Off))
	}
	if o.Mode != 0 {
		parts = append(parts, fmt.Sprintf("Mode: 0o%o", o.Mode))
	}
	if o.UID != 0 || o.GID != 0 || o.Kind == gChown || o.Kind == gFchown {
		parts = append(parts, fmt.Sprintf("UID: %d, GID: %d", o.UID, o.GID))
	}
	if o.Flags != 0 {
		parts = append(parts, fmt.Sprintf("Flags: %d", o.Flags))
	}
	if o.As != 0 {
		parts = append(parts, fmt.Sprintf("As: %d", o.As))
	}
	return "{" + strings.Join(parts, ", ") + "}"
}
