#!/usr/bin/env bash
# scripts/tools-bench.sh — time the layer tools on a /usr/local/go-sized
# union (make tools-bench). Needs root (whiteouts, trusted.* xattrs).
#
# The upper is the Go toolchain (GOROOT: ~15,000 files) imported from a
# tar, over a small lower; then export, diff, check and merge run on it,
# each once, cold-ish (caches not dropped). Prints one line per tool, and
# for reference GNU tar -c and cp -a of the same upper.
#
# Env: BIN (default bin/unionmount), SRC (default $(go env GOROOT)),
#      TMPDIR (where the layers go; default /var/tmp).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
BIN=${BIN:-bin/unionmount}
SRC=${SRC:-$(go env GOROOT)}
[ "$(id -u)" -eq 0 ] || { echo "tools-bench: needs root" >&2; exit 1; }
[ -x "$BIN" ] || { echo "tools-bench: $BIN not built (make build)" >&2; exit 1; }
d=$(mktemp -d "${TMPDIR:-/var/tmp}/unionmount-tools-bench.XXXXXX")
trap 'rm -rf "$d"' EXIT
mkdir -p "$d/lower/src" "$d/work" "$d/work2"
echo "old" > "$d/lower/src/README"
files=$(find "$SRC" -type f | wc -l)
bytes=$(du -sb "$SRC" | cut -f1)
echo "tools-bench: $SRC, $files files, $((bytes / 1048576)) MiB, in $d"
tar -C "$SRC" -cf "$d/src.tar" .
O="lowerdir=$d/lower,upperdir=$d/upper,workdir=$d/work"
t() {
	local name=$1
	shift
	local start end
	start=$(date +%s.%N)
	"$@" >/dev/null
	end=$(date +%s.%N)
	awk -v n="$name" -v s="$start" -v e="$end" 'BEGIN { printf "tools-bench: %-8s %6.2f s\n", n, e - s }'
}
t import "$BIN" import -q -o "$O" "$d/src.tar"
t export "$BIN" export -q -o "$O" -O "$d/layer.tar"
echo "tools-bench: layer.tar $(( $(stat -c %s "$d/layer.tar") / 1048576 )) MiB"
t diff "$BIN" diff -o "$O"
t check "$BIN" check -o "$O"
t merge "$BIN" merge -q -o "$O" "$d/merged"
t import2 "$BIN" import -q -o "lowerdir=$d/lower,upperdir=$d/upper2,workdir=$d/work2" "$d/layer.tar"
t tar-ref tar -C "$d/upper" -cf "$d/ref.tar" .
t cp-ref cp -a "$d/upper" "$d/cp-ref"
cmp <("$BIN" export -o "lowerdir=$d/lower,upperdir=$d/upper2") "$d/layer.tar" && echo "tools-bench: re-export of the import: same bytes"
