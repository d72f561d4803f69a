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

# staticcheck is installed by `make deps` into $(go env GOPATH)/bin; fall back
# to one on PATH.
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
	@echo "  build      go build -o $(BIN) ./cmd/unionmount (default)"
	@echo "  deps       install missing Debian packages and staticcheck (scripts/deps.sh)"
	@echo "  lint       gofmt -l (must be empty), go vet, staticcheck"
	@echo "  fmt        gofmt -w the tree"
	@echo "  test       lint, race tests of internal/ and union/, then go test ./... (incl. test/e2e)"
	@echo "  demo       mount a small demo union and walk through copy-up and whiteouts"
	@echo "  install    install $(BIN) to \$$(DESTDIR)$(BINDIR) (+ man page if present)"
	@echo "  uninstall  remove what install put in place"
	@echo "  clean      remove build output"
	@echo "  tools-bench  time check/diff/export/import/merge on a GOROOT-sized union (root, ~15 s)"
	@echo "  bench      benchmark vs native, kernel overlayfs, fuse-overlayfs (root, 10-30 min; BENCH_ARGS=-quick|-scale|-pprof|-h)"

build:
	$(GO) build -o $(BIN) ./cmd/unionmount

deps:
	bash scripts/deps.sh

# Every .go file in the tree except .git, bin, vendor and testdata dirs.
GO_FILES_CMD := find . \( -path ./.git -o -path ./bin -o -path ./vendor -o -name testdata \) -prune -o -type f -name '*.go' -print

lint:
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
		echo "staticcheck not found at $(STATICCHECK); run 'make deps'" >&2; \
		exit 1; \
	fi
	@"$(STATICCHECK)" ./...
	@echo "lint: OK"

fmt:
	@files=$$($(GO_FILES_CMD)); \
	if [ -n "$$files" ]; then $(GOFMT) -l -w $$files; fi

test: lint
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

# Benchmarks (never part of test/CI): every workload on a native copy, kernel
# overlayfs, fuse-overlayfs and unionmount, fresh upper each run; a markdown
# report of medians and ratios on stdout and in bench/out/report.md. Needs
# root. BENCH_ARGS: -quick (smoke run), -reps N, -workloads a,b,
# -candidates a,b, -scale (10k/100k/1M trees), -pprof [-perf], -cache warm,
# -keep; `bin/umbench -h` lists them all. See bench/RESULTS.md.
BENCH_ARGS ?=

.PHONY: bench
bench:
	bash bench/deps.sh $(if $(findstring -perf,$(BENCH_ARGS)),--perf)
	$(GO) build -o bin/umbench ./bench/cmd/umbench
	bin/umbench $(BENCH_ARGS)

# The layer tools on a GOROOT-sized union (never part of test/CI).
.PHONY: tools-bench
tools-bench: build
	bash scripts/tools-bench.sh
