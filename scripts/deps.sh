#!/usr/bin/env bash
# scripts/deps.sh — install what unionmount's build, tests and demo need.
#
# Installs only what is missing, so a second run takes a second or two:
#   * Debian packages (checked with dpkg-query; apt-get update runs only if
#     something has to be installed):
#       required: fuse3 (fusermount3), attr (getfattr/setfattr), git, tar,
#                 findutils, make, gcc + libc6-dev (cgo, needed by -race),
#                 procps (pgrep) and groff-base (the man page check) for the
#                 mount(8) test,
#                 busybox-static (the union root filesystem test), podman +
#                 runc (the mount_program test),
#                 stress-ng (test/e2e/stress_test.go, make stress),
#                 e2fsprogs + btrfs-progs (reliability tests: an ext4 upper
#                 image for fsync, a btrfs qgroup for EDQUOT),
#                 sshfs + openssh-server (a lower on sshfs: the test runs
#                 its own sshd on 127.0.0.1; the package's service is kept
#                 from starting while it is installed),
#                 ca-certificates (Go module downloads)
#       optional: fuse-overlayfs (a failure to install it is only a warning)
#   * staticcheck, via `go install`, into "$(go env GOPATH)/bin" (where the
#     Makefile looks for it). Reinstalled if it was built by another Go.
#
# Usage: scripts/deps.sh [--no-staticcheck | --only-staticcheck]
# Env:   STATICCHECK_VERSION  module version to install (default: latest)
#        SKIP_OPTIONAL=1      do not try to install optional packages
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

REQUIRED_PKGS=(fuse3 attr git tar findutils make gcc libc6-dev ca-certificates acl procps groff-base busybox-static podman runc stress-ng e2fsprogs btrfs-progs sshfs openssh-server)
OPTIONAL_PKGS=(fuse-overlayfs)
STATICCHECK_PKG=honnef.co/go/tools/cmd/staticcheck
STATICCHECK_VERSION=${STATICCHECK_VERSION:-latest}

want_staticcheck=1
want_packages=1
for arg in "$@"; do
	case "$arg" in
	--no-staticcheck) want_staticcheck=0 ;;
	--only-staticcheck) want_packages=0 ;;
	-h | --help)
		sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'
		exit 0
		;;
	*)
		echo "deps.sh: unknown argument: $arg (try --help)" >&2
		exit 2
		;;
	esac
done

log() { printf 'deps: %s\n' "$*"; }
die() {
	printf 'deps: ERROR: %s\n' "$*" >&2
	exit 1
}

start=$SECONDS
export DEBIAN_FRONTEND=noninteractive

is_installed() {
	[ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null || true)" = "install ok installed" ]
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
	if command -v sudo >/dev/null 2>&1; then
		SUDO=(sudo -n)
	fi
fi

apt_updated=0
# apt_install PKG... — returns non-zero (never exits) on failure, so callers
# decide whether that is fatal.
apt_install() {
	if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
		log "not root and no sudo: cannot install $*"
		return 1
	fi
	if [ "$apt_updated" -eq 0 ]; then
		log "apt-get update"
		"${SUDO[@]}" apt-get update -qq -o Acquire::Retries=3 || return 1
		apt_updated=1
	fi
	log "apt-get install $*"
	"${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive \
		apt-get install -y -qq --no-install-recommends -o Acquire::Retries=3 "$@" || return 1
}

if [ "$want_packages" -eq 1 ]; then
if ! command -v dpkg-query >/dev/null 2>&1; then
	die "dpkg-query not found: this script expects Debian/Ubuntu; install by hand: ${REQUIRED_PKGS[*]} ${OPTIONAL_PKGS[*]}"
fi

missing=()
for p in "${REQUIRED_PKGS[@]}"; do
	is_installed "$p" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
	# No service starts during the install (openssh-server's sshd would
	# listen on every interface): policy-rc.d says no, as in containers.
	if [ ! -e /usr/sbin/policy-rc.d ] && [ "$(id -u)" -eq 0 ]; then
		printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
		chmod 0755 /usr/sbin/policy-rc.d
		trap 'rm -f /usr/sbin/policy-rc.d' EXIT
	fi
	apt_install "${missing[@]}" || die "could not install required package(s): ${missing[*]}"
	for p in "${missing[@]}"; do
		is_installed "$p" || die "package $p is still not installed after apt-get install"
	done
else
	log "required packages already installed: ${REQUIRED_PKGS[*]}"
fi

if [ "${SKIP_OPTIONAL:-0}" != 1 ]; then
	opt_missing=()
	for p in "${OPTIONAL_PKGS[@]}"; do
		is_installed "$p" || opt_missing+=("$p")
	done
	if [ ${#opt_missing[@]} -gt 0 ]; then
		apt_install "${opt_missing[@]}" ||
			log "WARNING: could not install optional package(s) ${opt_missing[*]}; continuing"
	else
		log "optional packages already installed: ${OPTIONAL_PKGS[*]}"
	fi
fi

for tool in fusermount3 getfattr setfattr git tar find make gcc; do
	command -v "$tool" >/dev/null 2>&1 || die "$tool not found in PATH after installing packages"
done
if [ ! -c /dev/fuse ]; then
	log "WARNING: /dev/fuse is missing: mounting (make demo, test/e2e) will not work here"
fi
fi # want_packages

if [ "$want_staticcheck" -eq 1 ]; then
	if ! command -v go >/dev/null 2>&1; then
		if [ -x /usr/local/go/bin/go ]; then
			export PATH="/usr/local/go/bin:$PATH"
		else
			die "go not found in PATH (nor /usr/local/go/bin): cannot install staticcheck"
		fi
	fi
	gobin="$(go env GOPATH)/bin"
	sc="$gobin/staticcheck"
	goversion="$(go env GOVERSION)"
	need=1
	if [ -x "$sc" ]; then
		built_with="$(go version "$sc" 2>/dev/null | awk '{print $2}' || true)"
		if [ "$built_with" = "$goversion" ]; then
			need=0
			log "staticcheck already installed: $sc ($("$sc" -version 2>/dev/null || echo '?'))"
		else
			log "staticcheck at $sc was built with ${built_with:-unknown Go}, not $goversion: reinstalling"
		fi
	fi
	if [ "$need" -eq 1 ]; then
		log "go install $STATICCHECK_PKG@$STATICCHECK_VERSION (into $gobin)"
		GOBIN="$gobin" go install "$STATICCHECK_PKG@$STATICCHECK_VERSION" ||
			die "could not install staticcheck"
		log "installed $("$sc" -version 2>/dev/null || echo staticcheck)"
	fi
fi

log "done in $((SECONDS - start))s"
