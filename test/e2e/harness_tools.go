package e2e

// What the tools' tests share: running a tool, the layers every round-trip
// test starts from, and the changes they make through a mount.

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// toolResult is what one run of a tool gave.
type toolResult struct {
	code           int
	stdout, stderr string
}

// runTool runs `unionmount args...` with stdin (may be nil) and returns its
// exit code and output; it fails t if the tool does not end in time.
func runTool(t *testing.T, stdin []byte, args ...string) toolResult {
	t.Helper()
	cmd := exec.Command(binPath, args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		code := 0
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return toolResult{code, stdout.String(), stderr.String()}
	case <-time.After(2 * time.Minute):
		_ = cmd.Process.Kill()
		t.Fatalf("unionmount %q did not end within 2 minutes", args)
		return toolResult{}
	}
}

// mustTool runs a tool that must succeed and say nothing on stderr.
func mustTool(t *testing.T, args ...string) string {
	t.Helper()
	r := runTool(t, nil, args...)
	if r.code != 0 || r.stderr != "" {
		t.Fatalf("unionmount %s: exit %d\nstderr: %s", strings.Join(args, " "), r.code, r.stderr)
	}
	return r.stdout
}

// layersOpt is the -o value naming s's layers.
func layersOpt(s *stack) string {
	return unionOptions(s.lowers, s.upper, s.work, nil)
}

// toolsLayers are the lowers of the round-trip tests: files, merged and
// hard-linked ones, a directory that will be renamed, and one in both
// lowers.
func toolsLayers() stackSpec {
	return stackSpec{lowers: [][]Entry{
		{
			File("lower0file", "l0"),
			File("dir1/file_a", "a"), File("dir1/file_b", "b"), File("dir1/file_c", "c"),
			File("dir2/gone", "g"), File("dir2/stay", "s"),
			File("dir3/x", "x"), File("dir3/sub/y", "y"),
			File("dir4/old", "o"),
			File("dir5/inner/z", "z"), File("dir5/w", "w"), Hardlink("dir5/w2", "dir5/w"),
			File("lowerfile2", "l2").WithXattr("user.kept", "v"),
			File("keep/k", "k").WithMode(0o640).WithOwner(7, 8), Hardlink("keep/k2", "keep/k"),
			SparseFile("keep/sparse", 1<<20, 4096, "mid"),
		},
		{
			File("dir1/file_d", "d"), File("dir2/from1", "f1"), File("base1", "b1"), File("dir3/from1", "f"),
		},
	}}
}

// toolsChanges is what the round-trip tests do through the mount.
const toolsChanges = `set -e
echo new > newfile
printf more >> lower0file
chmod 0600 dir1/file_a
chown 1000:1000 dir1/file_b
setfattr -n user.note -v hello dir1/file_c
setfattr -n trusted.secret -v s3 newfile
rm dir2/gone
rm -r dir3
rm -r dir4; mkdir dir4; echo fresh > dir4/fresh
mv dir5 dir5moved
mv lowerfile2 renamedfile
mkdir -p newdir/deep/deeper
echo d > newdir/deep/deeper/f
ln newfile newdir/hardlink
ln -s ../newfile newdir/symlink
mkfifo newdir/fifo
mknod newdir/null c 1 3
truncate -s 64M sparse
printf tail | dd of=sparse bs=1 seek=40000000 conv=notrunc status=none
printf x > "$(printf 'odd name \377')"
long=$(printf 'd%.0s' $(seq 1 120))
mkdir "$long"
echo l > "$long/$(printf 'f%.0s' $(seq 1 200))"
chmod 4755 newdir/deep/deeper/f
touch -d '2020-01-02 03:04:05.123456789' newdir/deep/deeper/f
chmod 1777 newdir
`

// toolsDiff is what diff must report after toolsChanges.
func toolsDiff() []string {
	long := strings.Repeat("d", 120)
	return []string{
		"D /dir5", "A /dir5moved", "A /dir5moved/inner", "A /dir5moved/inner/z", "A /dir5moved/w", "A /dir5moved/w2",
		"C /dir1/file_a", "C /dir1/file_b", "C /dir1/file_c",
		"C /dir2", "D /dir2/gone",
		"D /dir3",
		"C /dir4", "A /dir4/fresh", "D /dir4/old",
		"C /lower0file", "D /lowerfile2", "A /renamedfile",
		"A /newfile", "A /newdir", "A /newdir/deep", "A /newdir/deep/deeper", "A /newdir/deep/deeper/f",
		"A /newdir/fifo", "A /newdir/hardlink", "A /newdir/null", "A /newdir/symlink",
		"A /sparse", "A /odd name \377",
		"A /" + long, "A /" + long + "/" + strings.Repeat("f", 200),
	}
}

// changedStack builds toolsLayers, mounts unionmount, runs toolsChanges
// and unmounts; it returns the stack and the merged view as it was.
func changedStack(t *testing.T) (*stack, Tree) {
	t.Helper()
	s := newStack(t, toolsLayers())
	mnt := mountUnion(t, s.lowers, s.upper, s.work)
	sh(t, mnt, toolsChanges)
	view := snapshot(t, mnt)
	unmount(t, mnt)
	return s, view
}

// sh runs a shell script in dir and fails t if it fails.
func sh(t *testing.T, dir, script string) {
	t.Helper()
	cmd := exec.Command("sh", "-c", script)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "LC_ALL=C", "TZ=UTC")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sh in %s: %v\n%s\nscript:\n%s", dir, err, out, script)
	}
}

// freshUpper makes an empty upper and workdir beside s's, for an import.
func freshUpper(t *testing.T, s *stack, name string) (upper, work string) {
	t.Helper()
	upper = filepath.Join(s.base, name)
	work = filepath.Join(s.base, name+"-work")
	if err := os.Mkdir(work, 0o755); err != nil {
		t.Fatal(err)
	}
	return upper, work
}

// sameView fails t with every difference between two merged views, mtimes
// compared to the nanosecond.
func sameView(t *testing.T, heading string, aName string, a Tree, bName string, b Tree) {
	t.Helper()
	reportDiff(t, heading, diffTrees(aName, a, bName, b, diffOpts{}))
}
