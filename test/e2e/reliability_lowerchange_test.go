package e2e

// A lower changed while mounted (issue 6; README, Limitations). The seeds
// forbid it; users do it. What unionmount promises, with -o timeout=N:
//
//   - a name added to, changed in or removed from a lower, where upper has
//     nothing at that path, shows as such within N seconds (the kernel's
//     entry and attribute caches), and the new contents are read (a changed
//     size or mtime drops the kernel's cached pages);
//   - what upper holds is never changed by it: a copied-up file, a
//     whiteout, an opaque directory keep hiding or overriding the lower;
//   - a metadata-only copy (chmod of a lower file) reads its data from the
//     lower, so it shows the lower's new data (at the size the copy
//     recorded), as kernel overlayfs with metacopy=on does;
//   - the lowers themselves are never written, and after a remount the
//     view is the merge of the new lowers and the unchanged upper.

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

func TestLowerChangedWhileMounted(t *testing.T) {
	requireMountable(t)
	t.Parallel()
	const timeout = 1 // seconds
	s := newStack(t, stackSpec{lowers: [][]Entry{{
		File("changed", "old contents\n"),
		File("changed-cold", "old contents\n"),
		File("removed", "removed\n"),
		File("copied", "lower copied\n"),
		File("whited", "whited\n"),
		File("meta", "0123456789\n"),
		Dir("opq"), File("opq/x", "x\n"),
		Dir("dir"), File("dir/old", "old\n"),
	}}})
	mnt := mountUnion(t, s.lowers, s.upper, s.work, "timeout=1", "metacopy=on")
	m := func(rel string) string { return filepath.Join(mnt, rel) }
	l := func(rel string) string { return filepath.Join(s.lowers[0], rel) }
	// Upper state first: a copy, a whiteout, an opaque directory, a
	// metadata-only copy.
	if err := appendTo(m("copied"), []byte("upper\n")); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(m("whited")); err != nil {
		t.Fatal(err)
	}
	if err := os.RemoveAll(m("opq")); err != nil {
		t.Fatal(err)
	}
	if err := os.Mkdir(m("opq"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(m("meta"), 0o600); err != nil {
		t.Fatal(err)
	}
	// Warm the kernel's caches with the old state (all but changed-cold
	// and meta, whose pages are not cached when the lower changes).
	for _, rel := range []string{"changed", "removed", "copied", "dir/old"} {
		if _, err := os.ReadFile(m(rel)); err != nil {
			t.Fatal(err)
		}
	}
	held, err := os.Open(m("changed")) // open before the change
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()
	upperBefore := snapshot(t, s.upper)

	// Change the lower behind the mount's back.
	write := func(rel, content string) {
		if err := os.WriteFile(l(rel), []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("changed", "new contents, longer\n")
	write("changed-cold", "new contents, longer\n")
	write("added", "added\n")
	write("dir/added", "added in dir\n")
	write("copied", "lower changed under a copy\n")
	write("whited", "lower changed under a whiteout\n")
	write("opq/y", "under an opaque dir\n")
	write("meta", "ABCDEFGHIJKLMNOP\n")
	if err := os.Remove(l("removed")); err != nil {
		t.Fatal(err)
	}
	changedAt := time.Now()

	// Within timeout (+ slack for a loaded machine) the view follows.
	want := map[string]string{
		"changed":      "new contents, longer\n",
		"changed-cold": "new contents, longer\n",
		"added":        "added\n",
		"dir/added":    "added in dir\n",
		"copied":       "lower copied\nupper\n",
		"meta":         "ABCDEFGHIJK", // the new lower data, at the recorded size
		"removed":      "",            // gone
		"whited":       "",            // still hidden
		"opq/y":        "",            // still hidden
	}
	deadline := changedAt.Add((timeout + 2) * time.Second)
	okAfter := map[string]time.Duration{}
	for {
		var wrong []string
		for rel, w := range want {
			b, err := os.ReadFile(m(rel))
			switch {
			case w == "" && !errors.Is(err, os.ErrNotExist):
				wrong = append(wrong, rel+": still there")
			case w != "" && (err != nil || string(b) != w):
				wrong = append(wrong, rel+": "+string(b)+" "+errText(err, mnt))
			default:
				if _, ok := okAfter[rel]; !ok {
					okAfter[rel] = time.Since(changedAt).Round(10 * time.Millisecond)
				}
			}
		}
		if len(wrong) == 0 {
			t.Logf("the view followed the lower after %v (timeout=%d): %v", time.Since(changedAt).Round(time.Millisecond), timeout, okAfter)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%v after the lower changed (timeout=%d), the view still shows: %q", time.Since(changedAt).Round(time.Millisecond), timeout, wrong)
		}
		time.Sleep(100 * time.Millisecond)
	}
	ents, err := os.ReadDir(m("dir"))
	if err != nil || len(ents) != 2 {
		t.Errorf("dir lists %v (%v), want old and added", ents, err)
	}
	// The descriptor opened before reads something whole: the old or the
	// new contents, never a mix.
	b := make([]byte, 100)
	n, _ := held.ReadAt(b, 0)
	if got := string(b[:n]); got != "old contents\n" && got != "new contents, longer\n" {
		t.Errorf("descriptor opened before the change reads %q", got)
	}
	// Nothing in upper changed.
	reportDiff(t, "the upper changed because a lower did", diffTrees("before", upperBefore, "after", snapshot(t, s.upper), diffOpts{}))
	// Writes still work, on the new lower data.
	if err := appendTo(m("changed"), []byte("+")); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(m("changed")); !bytes.Equal(b, []byte("new contents, longer\n+")) {
		t.Errorf("copy-up after the lower changed: %q", b)
	}
	// After a remount: the merge of the new lower and the same upper.
	held.Close()
	unmount(t, mnt)
	mnt = mountUnion(t, s.lowers, s.upper, s.work)
	for rel, w := range want {
		if rel == "changed" {
			w += "+"
		}
		b, err := os.ReadFile(filepath.Join(mnt, rel))
		if w == "" && !errors.Is(err, os.ErrNotExist) || w != "" && string(b) != w {
			t.Errorf("after a remount: %s: %q %v, want %q", rel, b, err, w)
		}
	}
	var st unix.Stat_t
	if err := unix.Stat(filepath.Join(mnt, "meta"), &st); err != nil || st.Mode&0o777 != 0o600 {
		t.Errorf("meta after a remount: mode %o (%v), want 0600", st.Mode&0o777, err)
	}
}
