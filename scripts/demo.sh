#!/usr/bin/env bash
# scripts/demo.sh — a guided tour of unionmount for newcomers (`make demo`).
#
# Builds bin/unionmount, makes a tiny union in a temporary directory
#   lower/   read-only layer with a few files and a directory
#   upper/   empty writable layer: every change lands here
#   work/    scratch space the filesystem needs on the upper's filesystem
#   merged/  the mount point where you see the union
# mounts it, shows copy-up, whiteouts and new directories, then unmounts and
# removes everything (also on failure or Ctrl-C).
#
# Needs root (or permission to use /dev/fuse) and fusermount3; missing Debian
# packages are installed via scripts/deps.sh.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO=$PWD
BIN=$REPO/bin/unionmount
CMD_TIMEOUT=${DEMO_CMD_TIMEOUT:-20} # seconds for each shown command

if [ -t 1 ] && [ -z "${NO_COLOR:-}" ]; then
	B=$'\033[1m' DIM=$'\033[2m' R=$'\033[0m'
else
	B='' DIM='' R=''
fi

step=0
heading() {
	step=$((step + 1))
	printf '\n%s== %d. %s ==%s\n' "$B" "$step" "$*" "$R"
}
say() { printf '%s\n' "$@"; }
die() {
	printf '\ndemo: ERROR: %s\n' "$*" >&2
	exit 1
}

# run 'SHELL COMMAND' — print it like a prompt, run it from the demo dir and
# indent its output. Fails the demo if the command fails.
run() {
	printf '  %s$ %s%s\n' "$DIM" "$1" "$R"
	(cd "$DEMO" && timeout "$CMD_TIMEOUT" bash -c "$1") 2>&1 | sed 's/^/    /'
}
# run_fails 'SHELL COMMAND' — like run, for a command that is meant to fail.
run_fails() {
	printf '  %s$ %s%s\n' "$DIM" "$1" "$R"
	if (cd "$DEMO" && timeout "$CMD_TIMEOUT" bash -c "$1") 2>&1 | sed 's/^/    /'; then
		die "expected '$1' to fail, but it succeeded"
	fi
}

# is_mounted PATH — true if PATH is a mount point in /proc/mounts.
is_mounted() {
	awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts
}

DEMO=''
MNT=''
cleanup() {
	local rc=$?
	set +e
	trap - EXIT INT TERM
	if [ -n "$MNT" ] && is_mounted "$MNT"; then
		say "" "(cleanup) unmounting $MNT"
		fusermount3 -u "$MNT" 2>/dev/null ||
			{ sleep 1 && fusermount3 -u "$MNT"; } ||
			fusermount3 -uz "$MNT"
	fi
	if [ -n "$DEMO" ] && [ -d "$DEMO" ]; then
		if [ -n "$MNT" ] && is_mounted "$MNT"; then
			say "demo: WARNING: $MNT is still mounted; leaving $DEMO in place" >&2
		else
			# --one-file-system: never descend into a mount, whatever happened.
			rm -rf --one-file-system "$DEMO"
		fi
	fi
	if [ "$rc" -ne 0 ]; then
		say "demo: FAILED (exit $rc)" >&2
	fi
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --------------------------------------------------------------------------
say "${B}unionmount demo${R}: a writable upper directory layered over a read-only lower one."

heading "Preparing"
say "Checking dependencies and building bin/unionmount ..."
SKIP_OPTIONAL=1 bash scripts/deps.sh --no-staticcheck | sed 's/^/  /'
command -v go >/dev/null 2>&1 || PATH="/usr/local/go/bin:$PATH"
go build -o "$BIN" ./cmd/unionmount || die "go build ./cmd/unionmount failed"
say "  built $BIN"
[ -c /dev/fuse ] || die "/dev/fuse is missing: FUSE mounts are not possible here"

DEMO=$(mktemp -d /tmp/unionmount-demo.XXXXXX)
mkdir "$DEMO"/{lower,upper,work,merged}
mkdir "$DEMO/lower/docs"
printf 'Hello from the lower layer.\n' >"$DEMO/lower/hello.txt"
printf 'line 1, written in the lower layer\n' >"$DEMO/lower/notes.txt"
printf 'an old log file that we will delete\n' >"$DEMO/lower/old.log"
printf 'How to use the docs directory.\n' >"$DEMO/lower/docs/guide.txt"

say "" "Demo directory: $DEMO  (all commands below run from there)" \
	"  lower/   the read-only layer, with some files in it" \
	"  upper/   the writable layer, empty for now" \
	"  work/    scratch space unionmount needs next to upper/" \
	"  merged/  the (empty) directory we mount the union on"
run 'find lower upper | sort'

heading "Mounting"
say "unionmount detaches and returns as soon as the mount is live."
MNT=$DEMO/merged
mount_cmd=("$BIN" -o "lowerdir=$DEMO/lower,upperdir=$DEMO/upper,workdir=$DEMO/work" "$MNT")
printf '  %s$ %s%s\n' "$DIM" "bin/unionmount -o lowerdir=$DEMO/lower,upperdir=$DEMO/upper,workdir=$DEMO/work $MNT" "$R"
# Not piped: the detached daemon keeps our stdout/stderr open.
timeout 60 "${mount_cmd[@]}" || die "unionmount failed to mount (exit $?)"
is_mounted "$MNT" || die "unionmount returned but $MNT is not in /proc/mounts"
run "findmnt -o TARGET,SOURCE,FSTYPE,OPTIONS $MNT"

heading "The merged view"
say "merged/ shows the lower layer's files as if they were one directory:"
run 'ls -l merged merged/docs'
run 'cat merged/hello.txt'

heading "Changing a lower file: copy-up"
say "Writing to a file that lives in the read-only layer first copies it up" \
	"into upper/, then changes the copy. The lower file is never touched."
run 'echo "line 2, appended through the mount" >> merged/notes.txt'
run 'cat merged/notes.txt'
say "The copy now in upper/ holds both lines:"
run 'ls -l upper'
run 'cat upper/notes.txt'
say "while lower/ still has the original:"
run 'cat lower/notes.txt'

heading "Deleting a lower file: whiteouts"
say "lower/ can't be changed, so deleting old.log leaves a 'whiteout' in upper/:" \
	"a character device with device number 0:0 that hides the lower file."
run 'rm merged/old.log'
run_fails 'ls -l merged/old.log'
run 'ls merged'
say "The whiteout in upper/ (note the leading 'c' and '0, 0'):"
run 'ls -l upper/old.log'
run 'stat -c "%n: %F, device %t:%T" upper/old.log'
say "and the file itself is still in lower/:"
run 'ls -l lower/old.log'

heading "Creating a new directory"
say "New files and directories are created in upper/ only:"
run 'mkdir merged/projects && echo "brand new" > merged/projects/todo.txt'
run 'ls -l merged'
run 'cat merged/projects/todo.txt'
run 'find upper | sort'
run_fails 'ls lower/projects'

heading "Unmounting"
run 'fusermount3 -u merged'
is_mounted "$MNT" && die "$MNT is still mounted after fusermount3 -u"
say "merged/ is an empty directory again (0 entries):"
run 'ls -A merged | wc -l'
say "but the changes persist in upper/, ready to be mounted again over the"\
	"same, unchanged lower/:"
run 'find lower upper | sort'

heading "Done"
say "Summary: reads fall through to lower/; writes copy files up to upper/;" \
	"deletions leave 0:0 character-device whiteouts in upper/; new files and" \
	"directories go straight to upper/. lower/ never changes." \
	"" "Removing $DEMO."
