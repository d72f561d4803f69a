#!/usr/bin/env bash
# bench/deps.sh — install what `make bench` needs, only if missing:
# fio, git, fuse3 (fusermount3), fuse-overlayfs, util-linux (findmnt),
# strace (system calls per request), Podman with runc and a static busybox
# (the Podman scenario), and with --perf also perf (linux-perf). apt-get
# update runs only when something has to be installed.
set -euo pipefail

want=(fio:fio git:git fusermount3:fuse3 fuse-overlayfs:fuse-overlayfs findmnt:util-linux tar:tar xargs:findutils
	strace:strace podman:podman runc:runc conmon:conmon busybox:busybox-static)
for arg in "$@"; do
	case "$arg" in
	--perf) want+=(perf:linux-perf) ;;
	*)
		echo "bench/deps.sh: unknown argument: $arg" >&2
		exit 2
		;;
	esac
done

missing=()
for w in "${want[@]}"; do
	cmd=${w%%:*} pkg=${w#*:}
	command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) != 0 ]]; then
	echo "bench/deps.sh: missing ${missing[*]}; run as root to install them" >&2
	exit 1
fi
echo "bench/deps.sh: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
