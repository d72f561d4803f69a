package e2e

// Real programs through the mount: cp -a, tar, find, rm -r, mv and git,
// compared with kernel overlayfs.

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// gitEnv makes git deterministic and independent of the machine's config.
const gitEnv = `export HOME=/nonexistent GIT_CONFIG_NOSYSTEM=1 GIT_CONFIG_GLOBAL=/dev/null \
GIT_AUTHOR_NAME=t GIT_AUTHOR_EMAIL=t@example.com GIT_COMMITTER_NAME=t GIT_COMMITTER_EMAIL=t@example.com \
GIT_AUTHOR_DATE=2020-01-01T00:00:00Z GIT_COMMITTER_DATE=2020-01-01T00:00:00Z; `

func TestRealPrograms(t *testing.T) {
	t.Parallel()
	requireMountable(t)
	for _, prog := range []string{"cp", "tar", "find", "sort", "sha256sum", "rm", "mv", "diff"} {
		if _, err := exec.LookPath(prog); err != nil {
			t.Fatalf("%s not installed: %v", prog, err)
		}
	}
	_, gitErr := exec.LookPath("git")
	if gitErr != nil {
		t.Logf("git not installed: the git part is left out")
	}
	archive := makeArchive(t)

	spec := stackSpec{
		lowers: [][]Entry{
			{
				Dir("src").WithMode(0o750),
				File("src/a.txt", "alpha\n").WithXattr("user.note", "kept by cp -a"),
				File("src/b.tmp", "temporary"),
				File("src/exec.sh", "#!/bin/sh\necho hi\n").WithMode(0o755),
				Symlink("src/link", "a.txt"),
				File("src/hard", "linked twice"),
				Hardlink("src/hard2", "src/hard"),
				Fifo("src/fifo"),
				Dir("src/sub/deeper"),
				File("src/sub/deeper/x", "x"),
				File("src/sub/y.tmp", "y"),
				Dir("src/dir2"),
				File("src/dir2/z", "z"),
			},
			{
				Dir("src"),
				File("src/from-bottom", "bottom\n"),
				Dir("src/sub"),
				File("src/sub/bottom.tmp", "bottom tmp"),
			},
		},
	}
	if gitErr == nil {
		spec.setup = func(t *testing.T, lowers []string) {
			cmd := exec.Command("sh", "-c", gitEnv+`set -e
git init -q repo && cd repo
printf 'hello\n' > README
mkdir src && printf 'package main\n' > src/main.go
git add -A && git commit -q -m init
printf 'two\n' > second && git add second && git commit -q -m second`)
			cmd.Dir = lowers[0]
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("making the lower git repo: %v\n%s", err, out)
			}
		}
	}

	ops := []op{
		opSh("cp -a src copy && echo copied"),
		opSh("find . -path ./repo -prune -o ! -type d -printf '%P %y %m %U:%G %s %n %l\\n' | sort"),
		opSh("find . -path ./repo -prune -o -type d -printf '%P %m %U:%G\\n' | sort"),
		opSh("tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner -C src -cf - . | sha256sum"),
		opSh("mkdir extracted && tar -C extracted -xpf " + archive + " && find extracted | sort"),
		opSh("find . -name '*.tmp' -delete && find . -name '*.tmp' | wc -l"),
		opSh("rm -r src/sub && ls src"),
		opSh("mv src/dir2 moved && ls moved"),
		opSh("cp -a copy copy2 && cd copy2 && find . -printf '%P %y %m %U:%G %s %n %l\\n' | sort"),
		opSh("cp -a extracted src/ && rm -rf extracted && ls -a src"),
	}
	if gitErr == nil {
		ops = append(ops,
			opGit("cd repo && git status --porcelain && git log --oneline"),
			opGit("cd repo && printf 'more\\n' >> README && git rm -q second && git add -A && git commit -q -m third && git rev-parse HEAD"),
			opGit("cd repo && git gc -q && git count-objects -v | grep -v size && git fsck --no-progress && git log --oneline"),
			opGit("cd repo && git checkout -q -b branch HEAD~2 && ls && git status --porcelain"),
			opGit("git clone -q repo clone && cd clone && git log --oneline --all | sort"),
		)
	}
	sameOnBoth(t, diffCase{
		stackSpec: spec,
		ops:       ops,
		volatile: func(p string) bool {
			// The index records st_dev, st_ino and ctimes; a clone
			// records the absolute path it was cloned from.
			return strings.HasSuffix(p, ".git/index") ||
				p == "clone/.git/config" || strings.HasPrefix(p, "clone/.git/logs/")
		},
	})
}

// opGit is opSh with gitEnv, named after the script alone.
func opGit(script string) op {
	o := opSh(gitEnv + script)
	o.name = "sh -c " + script
	return o
}

// makeArchive builds a tar archive outside any mount, with a tree of every
// kind of object, to extract through the mounts.
func makeArchive(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	tree := filepath.Join(dir, "tree")
	makeLayer(t, tree,
		File("top", "top"),
		File("d/f", "f").WithMode(0o600).WithOwner(12, 34),
		Dir("d/e").WithMode(0o700),
		Symlink("d/l", "f"),
		File("d/h", "hard"),
		Hardlink("d/h2", "d/h"),
		File("x/suid", "s").WithMode(0o4711),
	)
	archive := filepath.Join(dir, "archive.tar")
	if out, err := exec.Command("tar", "--xattrs", "-C", tree, "-cf", archive, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v\n%s", err, out)
	}
	if _, err := os.Stat(archive); err != nil {
		t.Fatal(err)
	}
	return archive
}
