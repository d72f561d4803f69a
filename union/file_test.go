package union

import (
	"errors"
	"fmt"
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// ref is a Ref at a fixed path, for tests.
type ref struct {
	n     *Node
	path  string
	named bool
}

func (r *ref) UnionNode() *Node          { return r.n }
func (r *ref) UnionPath() (string, bool) { return r.path, r.named }

// refAt returns a new node's Ref for union path p.
func refAt(t *testing.T, u *Union, p string) *ref {
	t.Helper()
	n := &Node{}
	n.Init(resolve(t, u, p))
	return &ref{n, p, true}
}

func readFile(t *testing.T, f *File) string {
	t.Helper()
	buf := make([]byte, 64)
	n, err := f.ReadAt(buf, 0)
	must(t, err)
	return string(buf[:n])
}

// A file opened read-only on a lower file reads the upper copy once its
// object is copied up through another open file (SPEC §5).
func TestFileFollowsCopyUp(t *testing.T) {
	_, u, at, r := openLower(t, false, unix.O_RDONLY)
	if r.Fixed() {
		t.Error("a file open on a lower file says its descriptor is final")
	}
	w, err := u.OpenFile(at, unix.O_WRONLY|unix.O_TRUNC)
	must(t, err)
	defer w.Close()
	if _, err := w.WriteAt([]byte("new!"), 0); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r); got != "new!" {
		t.Errorf("read-only file after copy-up reads %q, want %q", got, "new!")
	}
}

// A file that cannot follow its object's copy-up fails the read that
// needed it, rather than going on reading the lower file.
func TestFileFollowFailureIsAnError(t *testing.T) {
	fx, u, at, r := openLower(t, false, unix.O_RDONLY)
	mode := uint32(0o600)
	must(t, u.SetAttr(at, nil, SetAttr{Mode: &mode}))
	// The copy is gone behind the engine's back, something else in its place.
	must(t, os.Remove(fx.upper+"/f"))
	must(t, os.Mkdir(fx.upper+"/f", 0o755))
	if _, err := r.ReadAt(make([]byte, 8), 0); err == nil {
		t.Error("a read that could not follow the copy-up succeeded")
	}
}

// openLower opens lower file "f" (holding "lower data") with flags, in a
// union with metacopy as given.
func openLower(t *testing.T, metaCopy bool, flags int) (*fixture, *Union, *ref, *File) {
	t.Helper()
	fx := newFixture(t, 1)
	write(t, fx.lowers[0]+"/f", "lower data")
	u, err := New(Config{Lowers: fx.lowers, Upper: fx.upper, Work: fx.work, MetaCopy: metaCopy})
	must(t, err)
	t.Cleanup(func() { u.Close() })
	at := refAt(t, u, "f")
	f, err := u.OpenFile(at, flags)
	must(t, err)
	t.Cleanup(func() { f.Close() })
	return fx, u, at, f
}

// readBack reads what f's descriptor holds, through a read-only open of
// it (f itself may be write-only).
func readBack(t *testing.T, f *File) string {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/self/fd/%d", f.Fd()))
	must(t, err)
	return string(b)
}

// A write-only open of a metadata-only copy reads the data below until its
// first write, which completes the copy; another file open the same way
// then holds and writes the complete copy. (A read-write open copies the
// data at once: see openDeferred.)
func TestFileCompletesMetaCopyOnFirstWrite(t *testing.T) {
	fx, u, at, a := openLower(t, true, unix.O_WRONLY)
	b, err := u.OpenFile(at, unix.O_WRONLY)
	must(t, err)
	defer b.Close()
	if _, err := unix.Getxattr(fx.upper+"/f", "trusted.overlay.metacopy", nil); err != nil {
		t.Fatalf("write-open made no metadata-only copy: %v", err)
	}
	if got := readFile(t, a); got != "lower data" {
		t.Errorf("before the first write, read %q", got)
	}
	if _, err := a.WriteAt([]byte("L"), 0); err != nil {
		t.Fatal(err)
	}
	if _, err := unix.Getxattr(fx.upper+"/f", "trusted.overlay.metacopy", nil); !errors.Is(err, unix.ENODATA) {
		t.Errorf("the first write left the copy metadata-only (%v)", err)
	}
	if _, err := b.WriteAt(nil, 0); err != nil { // follows the copy
		t.Fatal(err)
	}
	if got := readBack(t, b); got != "Lower data" {
		t.Errorf("the other file holds %q after the write", got)
	}
	if _, err := b.WriteAt([]byte("!"), 9); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(fx.upper + "/f"); string(got) != "Lower dat!" {
		t.Errorf("upper holds %q", got)
	}
}

// A metadata-only copy open for writing whose name was removed is
// completed from the data it was reading, in the open file itself.
func TestFileUnnamedMetaCopyWrite(t *testing.T) {
	_, u, at, f := openLower(t, true, unix.O_WRONLY)
	must(t, u.Unlink(resolve(t, u, ""), "f"))
	at.named = false
	if _, err := f.WriteAt([]byte("L"), 0); err != nil {
		t.Fatal(err)
	}
	if got := readBack(t, f); got != "Lower data" {
		t.Errorf("unlinked file holds %q after a write", got)
	}
	st, err := u.Getattr(at, nil)
	must(t, err)
	if st.Nlink != 0 || st.Size != 10 {
		t.Errorf("unlinked file: nlink %d size %d, want 0 and 10", st.Nlink, st.Size)
	}
}

// A file open read-only on one name of a lower file with several names
// reads what is written through another name after that one is copied up
// (both are one inode, through the hard-link index).
func TestFileFollowsCopyUpOfAnotherName(t *testing.T) {
	fx := newFixture(t, 1)
	write(t, fx.lowers[0]+"/f", "old")
	must(t, os.Link(fx.lowers[0]+"/f", fx.lowers[0]+"/g"))
	u := fx.open(t)
	at := refAt(t, u, "f") // the names share one node, as in fusefs
	r, err := u.OpenFile(at, unix.O_RDONLY)
	must(t, err)
	defer r.Close()
	w, err := u.OpenFile(&ref{at.n, "g", true}, unix.O_WRONLY|unix.O_TRUNC)
	must(t, err)
	defer w.Close()
	if _, err := w.WriteAt([]byte("new!"), 0); err != nil {
		t.Fatal(err)
	}
	if got := readFile(t, r); got != "new!" {
		t.Errorf("the other name's open file reads %q, want %q", got, "new!")
	}
}
