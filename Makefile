# Makefile for unionmount — `make help` lists the targets.
#
# CI runs `bash .ci/run`, which installs dependencies (scripts/deps.sh) and
# then runs `make test`.

SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := build

GO      ?= go
GOFMT   ?= $(shell $(GO) env GOROOT)/bin/gofmt
MODULE  := $(shell $(GO) list -m 2>/dev/null || echo github.com/unionmount/unionmount)
BIN     := bin/unionmount

# staticcheck is installed by scripts/deps.sh into $(go env GOPATH)/bin (by
# `make lint` itself when it is missing); fall back to one on PATH.
GOPATH_BIN  := $(shell $(GO) env GOPATH)/bin
STATICCHECK ?= $(or $(wildcard $(GOPATH_BIN)/staticcheck),$(shell command -v staticcheck 2>/dev/null),$(GOPATH_BIN)/staticcheck)

# Core packages run under the race detector (import paths matching this
# regexp); picked from `go list ./...` so the target works as the tree grows.
RACE_PKGS_RE  := ^$(MODULE)/(internal|union)(/|$$)
RACE_TIMEOUT  ?= 10m
TEST_TIMEOUT  ?= 15m

PREFIX  ?= /usr/local
BINDIR  ?= $(PREFIX)/bin
MANDIR  ?= $(PREFIX)/share/man
DESTDIR ?=
MANPAGE := doc/unionmount.8

.PHONY: all help build deps lint fmt test demo install uninstall clean

all: build

help:
	@echo "Targets:"
	@echo "  build      CGO_ENABLED=0 go build -o $(BIN) ./cmd/unionmount (default)"
	@echo "  deps       install missing Debian packages and staticcheck (scripts/deps.sh)"
	@echo "  lint       gofmt -l (must be empty), go vet, staticcheck (installed if missing)"
	@echo "  fmt        gofmt -w the tree"
	@echo "  test       deps, lint, race tests of internal/ and union/, then go test ./... (incl. test/e2e)"
	@echo "  demo       mount a small demo union and walk through copy-up and whiteouts"
	@echo "  install    install $(BIN) to \$$(DESTDIR)$(BINDIR) (+ man page if present)"
	@echo "  uninstall  remove what install put in place"
	@echo "  clean      remove build output"
	@echo "  fuzz       differential tester vs kernel overlayfs, unbounded, random seed (root; FUZZ_ARGS: DIFFTEST_* env, see test/e2e/difftest_test.go)"
	@echo "  stress     stress-ng's filesystem stressors in a mount, 60 s each, 2 instances (root; STRESS_TIME, STRESS_INSTANCES, STRESS_STRESSORS)"
	@echo "  torture    SIGKILL the daemon at 300 random moments of copy-up/rename storms, check after each (root; TORTURE_SEED, TORTURE_KILLS, TORTURE_WORKERS)"
	@echo "  storm      16 workers on shared names for 10 min against a -race daemon (root; STORM_TIME, STORM_WORKERS)"
	@echo "  names-storm  open(O_TRUNC)/rename/unlink on three names, and handles of an unlinked file, for NAMES_STORM_SECONDS (root; default 30)"
	@echo "  tools-bench  time check/diff/export/import/merge on a GOROOT-sized union (root, ~15 s)"
	@echo "  bench      benchmark vs native, kernel overlayfs, fuse-overlayfs, as root and rootless, warm and cold caches, + strace, start-up, Podman (root, 1-2 h; BENCH_ARGS=-quick|-reps N|-scale|-pprof|-h)"

# Without cgo: a static binary (for an initramfs, a busybox root), and no
# libc in the daemon, whose threads would open files by path when they
# start (glibc's arena setup reads /sys/devices/system/cpu/online): after a
# pivot_root into the union, into the union itself, through the daemon,
# which deadlocked it with a garbage collection.
build:
	CGO_ENABLED=0 $(GO) build -o $(BIN) ./cmd/unionmount

deps:
	bash scripts/deps.sh

# Every .go file in the tree except .git, bin, vendor and testdata dirs.
GO_FILES_CMD := find . \( -path ./.git -o -path ./bin -o -path ./vendor -o -name testdata \) -prune -o -type f -name '*.go' -print

# A file target: `make lint` (and so `make test`) installs staticcheck when
# it is missing, e.g. after `make demo`, which installs only what it needs.
$(STATICCHECK):
	bash scripts/deps.sh --only-staticcheck

lint: $(STATICCHECK)
	@echo "==> gofmt -l"
	@files=$$($(GO_FILES_CMD)); \
	if [ -n "$$files" ]; then \
		unformatted=$$($(GOFMT) -l $$files); \
		if [ -n "$$unformatted" ]; then \
			echo "These files need gofmt (run 'make fmt'):"; \
			echo "$$unformatted" | sed 's/^/  /'; \
			exit 1; \
		fi; \
	fi
	@echo "==> go vet ./..."
	@$(GO) vet ./...
	@echo "==> staticcheck ./..."
	@if [ ! -x "$(STATICCHECK)" ]; then \
		echo "staticcheck not found at $(STATICCHECK) (scripts/deps.sh installs it into \$$(go env GOPATH)/bin)" >&2; \
		exit 1; \
	fi
	@"$(STATICCHECK)" ./...
	@echo "lint: OK"

fmt:
	@files=$$($(GO_FILES_CMD)); \
	if [ -n "$$files" ]; then $(GOFMT) -l -w $$files; fi

# The tests need the Debian packages of scripts/deps.sh (fuse3, podman,
# stress-ng, ...): a run with everything installed checks them in a second.
test: deps
	@$(MAKE) --no-print-directory lint
	@echo "==> go test -race (core packages)"
	@all=$$($(GO) list -e ./...); \
	pkgs=$$(grep -E '$(RACE_PKGS_RE)' <<<"$$all" || true); \
	if [ -z "$$pkgs" ]; then \
		echo "no internal/ or union/ packages yet: skipping the race run"; \
	else \
		echo "$(GO) test -race -count=1 -timeout $(RACE_TIMEOUT)" $$pkgs; \
		$(GO) test -race -count=1 -timeout $(RACE_TIMEOUT) $$pkgs; \
	fi
	@echo "==> go test ./... (everything, including test/e2e real mounts)"
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...

demo:
	bash scripts/demo.sh

install: build
	install -D -m 0755 $(BIN) $(DESTDIR)$(BINDIR)/unionmount
	@if [ -f $(MANPAGE) ]; then \
		echo "install -D -m 0644 $(MANPAGE) $(DESTDIR)$(MANDIR)/man8/unionmount.8"; \
		install -D -m 0644 $(MANPAGE) $(DESTDIR)$(MANDIR)/man8/unionmount.8; \
	else \
		echo "($(MANPAGE) not present: no man page installed)"; \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/unionmount $(DESTDIR)$(MANDIR)/man8/unionmount.8

clean:
	rm -rf bin
	rm -f ./unionmount

# Benchmarks (never part of test/CI): every workload on a native copy,
# kernel overlayfs, fuse-overlayfs and unionmount (as root, with
# passthrough=off, and both FUSE daemons rootless through fusermount3), fresh
# upper and daemon each run, warm caches (the headline) and cold; wall and
# CPU time, FUSE requests per workload, strace of each daemon (system calls
# per request), mount start-up/teardown, a flat 100k-entry directory, and
# Podman with each mount program. A markdown report on stdout and in
# bench/out/report.md. Needs root. BENCH_ARGS: -quick (smoke run, ~15 min),
# -reps N, -cold-reps N, -cache warm|cold|warm,cold, -workloads a,b,
# -candidates a,b, -podman=false, -scale (10k/100k/1M trees), -pprof
# [-perf] (profiles of every missed target), -keep; `bin/umbench -h` lists
# them all. See bench/RESULTS.md.
# It runs at nice BENCH_NICE (inherited by the daemons and workloads) so that
# other jobs on the machine disturb it less.
BENCH_ARGS ?=
BENCH_NICE ?= -10

.PHONY: bench
bench:
	bash bench/deps.sh $(if $(findstring -perf,$(BENCH_ARGS)),--perf)
	$(GO) build -o bin/umbench ./bench/cmd/umbench
	nice -n $(BENCH_NICE) bin/umbench $(BENCH_ARGS)

# The layer tools on a GOROOT-sized union (never part of test/CI).
.PHONY: tools-bench
tools-bench: build
	bash scripts/tools-bench.sh

# Real clients (test/e2e/rootfs*_test.go, podman_test.go, rootless_test.go).
# CI runs the busybox root, Podman and rootless tests as part of `make test`;
# these targets run one scenario alone (E2E_TIMING=1: not in parallel with
# other tests, so the side-by-side timings it logs are clean), installing
# what it needs first. Need root and the Debian mirror (apt's source).
#   rootfs-debian  a debootstrap --variant=minbase bookworm root (made once,
#                  kept in DEBIAN_ROOT) as the lower; apt-get, useradd,
#                  ldconfig, dpkg --verify inside unionmount, kernel overlayfs
#                  and fuse-overlayfs (E2E_LONG=1)
#   podman-test    Podman 4.3 with unionmount as mount_program vs fuse-overlayfs
#                  vs its native kernel overlay driver (own storage in a temp dir)
#   rootfs-busybox the busybox root filesystem session alone
#   rootless-test  the rootless (fusermount3, userxattr) test alone
DEBIAN_ROOT ?= /var/tmp/unionmount-e2e/debian-bookworm-minbase
E2E_RUN      = E2E_TIMING=1 $(GO) test -count=1 -v -timeout 30m

# apt_ensure installs the Debian packages in $(1) that are missing.
define apt_ensure
	@missing=""; for p in $(1); do \
		[ "$$(dpkg-query -W -f='$${Status}' $$p 2>/dev/null)" = "install ok installed" ] || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "apt-get install$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
endef

.PHONY: rootfs-debian podman-test rootfs-busybox rootless-test
rootfs-debian:
	$(call apt_ensure,debootstrap fuse3 fuse-overlayfs)
	E2E_LONG=1 E2E_DEBIAN_ROOT=$(DEBIAN_ROOT) $(E2E_RUN) -run '^TestUnionRootDebian$$' ./test/e2e/

podman-test:
	$(call apt_ensure,podman runc fuse3 fuse-overlayfs busybox-static)
	E2E_PODMAN=1 $(E2E_RUN) -run '^TestPodman' ./test/e2e/

rootfs-busybox:
	$(call apt_ensure,busybox-static fuse3 fuse-overlayfs)
	$(E2E_RUN) -run '^TestUnionRootBusybox$$' ./test/e2e/

rootless-test:
	$(call apt_ensure,fuse3 attr)
	$(E2E_RUN) -run '^TestRootless$$' ./test/e2e/

# The differential tester (test/e2e/difftest_*.go) without bounds: random
# sequences against kernel overlayfs from a random base seed (printed) until
# the first failure, which is shrunk and printed as a Go test. Replay one:
# DIFFTEST_SEED=N DIFFTEST_SEQS=1 go test -run TestDifferentialRandom ./test/e2e/
# DIFFTEST_DURATION=30m bounds it; reproducers also land in DIFFTEST_OUT.
DIFFTEST_SEED ?= random
DIFFTEST_OUT  ?= $(CURDIR)/bin/difftest

.PHONY: fuzz
fuzz:
	DIFFTEST_SEED=$(DIFFTEST_SEED) DIFFTEST_SEQS=$${DIFFTEST_SEQS:-0} DIFFTEST_SHRINK=$${DIFFTEST_SHRINK:-5} \
	DIFFTEST_OUT=$(DIFFTEST_OUT) $(GO) test -count=1 -timeout 0 -v -run '^TestDifferentialRandom$$' ./test/e2e/ 2>&1 | \
	grep -v -E '^\s*(=== (RUN|PAUSE|CONT|NAME)|--- PASS)'


# stress-ng's filesystem stressors in a unionmount, longer than in CI.
STRESS_TIME      ?= 60s
STRESS_INSTANCES ?= 2

.PHONY: stress
stress:
	STRESS_TIME=$(STRESS_TIME) STRESS_INSTANCES=$(STRESS_INSTANCES) \
	$(GO) test -count=1 -timeout 0 -v -run '^TestStressNG$$' ./test/e2e/ | grep -E '^\s*(---|ok|FAIL|PASS)|stress-ng'

# Reliability long runs (test/e2e/reliability_*_test.go, issue 6); CI runs
# short versions of both as part of `make test`.
#   torture  crash torture: SIGKILL of the daemon at TORTURE_KILLS random
#            moments of copy-up/rename/create-delete storms, remount and
#            check after each; random seed, printed (replay with
#            TORTURE_SEED=N). TORTURE_WORKERS, TORTURE_MAXDELAY (ms).
#   storm    STORM_WORKERS workers on shared names for STORM_TIME against a
#            race-detector build of the daemon, with a hang watchdog and
#            descriptor/goroutine/memory checks.
TORTURE_SEED    ?= random
TORTURE_KILLS   ?= 300
TORTURE_WORKERS ?= 8
STORM_TIME      ?= 10m
STORM_WORKERS   ?= 16

.PHONY: torture storm
torture:
	TORTURE_SEED=$(TORTURE_SEED) TORTURE_KILLS=$(TORTURE_KILLS) TORTURE_WORKERS=$(TORTURE_WORKERS) \
	$(GO) test -count=1 -timeout 0 -v -run '^TestCrashTorture$$' ./test/e2e/ 2>&1 | \
	grep -v -E '^\s*(=== (RUN|PAUSE|CONT|NAME))'

# The races of issue 14 item 4 for longer than CI runs them (2-3 s).
NAMES_STORM_SECONDS ?= 30

.PHONY: names-storm
names-storm:
	E2E_STORM_SECONDS=$(NAMES_STORM_SECONDS) E2E_RACE_SECONDS=$(NAMES_STORM_SECONDS) \
	$(GO) test -count=1 -timeout 0 -v -run '^(TestOpenRenameUnlinkStorm|TestNamelessFileRacingHandles)$$' ./test/e2e/ 2>&1 | \
	grep -v -E '^\s*(=== (RUN|PAUSE|CONT|NAME))'

storm:
	STORM_TIME=$(STORM_TIME) STORM_WORKERS=$(STORM_WORKERS) \
	$(GO) test -count=1 -timeout 0 -v -run '^(TestConcurrencyStorm|TestRacingNamesErrnos|TestUpperDirSwappedForSymlink)$$' ./test/e2e/ 2>&1 | \
	grep -v -E '^\s*(=== (RUN|PAUSE|CONT|NAME))'
