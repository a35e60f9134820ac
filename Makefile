# dstore build, test and maintenance targets. `make test` is exactly what CI
# runs (.ci/run). With CI=true, a missing tool is an error, never a skip.

SHELL := /bin/bash
.SHELLFLAGS := -euo pipefail -c
.DEFAULT_GOAL := build

GO       ?= go
GOFMT    ?= $(shell $(GO) env GOROOT)/bin/gofmt
VERSION  ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS  := -X main.version=$(VERSION)
DATA     ?= ./data
# Extra flags for `go test`, e.g. TESTFLAGS='-run TestModel'.
TESTFLAGS ?=
# The end-to-end tests (./e2e): User-Mode Linux guests, two at a time
# (DSTORE_E2E_PARALLEL=1: one after another), 3 to 10 minutes in all
# depending on the host. E2EFLAGS adds flags for them alone, e.g.
# E2EFLAGS='-run TestKernelClient/all/kill'.
E2EFLAGS ?=
E2E_TIMEOUT ?= 30m
# The scenarios `make test` runs: all of them (mount, ops, dd, dd-mem1G,
# bigdir, vdisk, fio, kill, enospc).
E2E_TEST ?= TestKernelClient
BENCHFLAGS ?=
FUZZTIME ?= 15s

# $(call need,MESSAGE): an error under CI=true, a warning otherwise.
define need
if [[ "$${CI:-}" == true ]]; then echo "make: $(1)" >&2; exit 1; fi; \
echo "make: warning: $(1)" >&2
endef

.PHONY: build run test e2e e2e-tools vet fmt-check lint bench bench-go bench-snap fuzz clean versitygw

build:
	$(GO) build -ldflags '$(LDFLAGS)' -o bin/dstore ./cmd/dstore

# run serves ./data over NFSv3 on 127.0.0.1:2049 (initializing it if empty)
# until Ctrl-C.
run: build
	bin/dstore serve --data $(DATA)

vet:
	$(GO) vet ./...

fmt-check:
	@[[ -x "$(GOFMT)" ]] || { echo "make: gofmt not found at $(GOFMT)" >&2; exit 1; }
	@files=$$(find . \( -name .git -o -name .cache -o -name bin -o -name data -o -name testdata \) -prune \
		-o -name '*.go' -print); \
	bad=$$([[ -z "$$files" ]] || $(GOFMT) -l $$files); \
	if [[ -n "$$bad" ]]; then echo "gofmt -l: these files need gofmt -w:" >&2; echo "$$bad" >&2; exit 1; fi

lint: fmt-check vet

# The race detector needs cgo and a C compiler. Without them the tests still
# run locally (with a warning); CI must have them. Then the end-to-end
# scenarios run, two User-Mode Linux guests at a time (E2E_TEST).
test: vet fmt-check versitygw e2e-tools
	@race=-race; \
	if [[ "$$($(GO) env CGO_ENABLED)" != 1 ]] || ! command -v "$$($(GO) env CC)" >/dev/null 2>&1; then \
		$(call need,no C compiler (or CGO_ENABLED=0): go test -race cannot run; install gcc); \
		race=; \
	fi; \
	pkgs=$$($(GO) list ./... | grep -v '/e2e$$'); \
	echo "$(GO) test $$race -count=1 -timeout 25m $(TESTFLAGS) ./... (all but ./e2e)"; \
	$(GO) test $$race -count=1 -timeout 25m $(TESTFLAGS) $$pkgs
	$(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) -run '$(E2E_TEST)' ./e2e/

# versitygw, the S3 server the objex tests start on 127.0.0.1, installed
# once into .cache/bin (about a minute to build).
VERSITYGW_VERSION ?= v1.8.0
versitygw:
	@[[ -x .cache/bin/versitygw ]] || GOBIN=$(CURDIR)/.cache/bin $(GO) install github.com/versity/versitygw/cmd/versitygw@$(VERSITYGW_VERSION) || { \
		$(call need,could not install versitygw: the S3 tests of objex skip); }

# The tools of the end-to-end scenarios, installed once, before they start,
# under CI=true: the scenarios run two at a time, and on a fresh machine
# each one's own install (uml-nfs/run, the harness's fio) raced the other
# for apt's lock and failed. Elsewhere a missing tool is only reported.
E2E_TOOLS = linux.uml:user-mode-linux insmod:kmod mkfs.ext4:e2fsprogs fio:fio
e2e-tools:
	@missing=; \
	for t in $(E2E_TOOLS); do command -v "$${t%%:*}" >/dev/null 2>&1 || missing="$$missing $${t#*:}"; done; \
	if [[ -z "$$missing" ]]; then exit 0; fi; \
	if [[ "$${CI:-}" != true ]]; then \
		echo "make: warning: not installed:$$missing (the e2e scenarios that need them skip; CI=true installs them)" >&2; exit 0; \
	fi; \
	echo "make: installing$$missing for the e2e scenarios"; \
	(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing) || { \
		echo "make: apt-get install$$missing failed" >&2; exit 1; }

# End-to-end tests with the real Linux NFS client in User-Mode Linux guests
# (../shared/uml-nfs; DSTORE_UMLNFS overrides). Without linux.uml they are
# skipped, except under CI=true, where e2e-tools installs it.
e2e: e2e-tools
	$(GO) test -count=1 -v -timeout $(E2E_TIMEOUT) $(TESTFLAGS) $(E2EFLAGS) ./e2e/

# dstore side by side with NFS-Ganesha, fio, qemu-img, restic and borg, in
# one run (bench/run.sh): writes docs/BENCHMARKS.md and docs/benchmarks/*.svg,
# raw results under bench/out/ (gitignored). Needs root and the peers (the
# script names what is missing). QUICK=1: short runs, under 3 minutes.
# SECTIONS='nfs durability' picks sections. Not part of `make test`.
QUICK ?=
bench:
	QUICK='$(QUICK)' bench/run.sh

# The block store's Go benchmarks: output lands in bench/out/ (gitignored),
# one file per run.
bench-go:
	@mkdir -p bench/out
	@out=bench/out/blockstore-$$(date +%Y%m%d-%H%M%S)-$(VERSION).txt; \
	echo "writing $$out"; \
	$(GO) test -run XXX -bench . -benchmem $(BENCHFLAGS) ./blockstore/ | tee "$$out"

# Snapshot, clone and clone-chain read benchmarks through the snapstore API
# (snapstore/bench_test.go, docs/notes/benchmarks.md): the 8 GiB datastore
# is written once per run and needs about 9 GiB in $TMPDIR. Output lands in
# bench/out/.
SNAPBENCH ?= Snapshot|Clone
bench-snap:
	@mkdir -p bench/out
	@out=bench/out/snapstore-$$(date +%Y%m%d-%H%M%S)-$(VERSION).txt; \
	echo "writing $$out"; \
	$(GO) test -run XXX -bench '$(SNAPBENCH)' -benchtime 200x -count 3 -timeout 60m -benchmem $(BENCHFLAGS) ./snapstore/ | tee "$$out"

# Runs every fuzz target in the module for FUZZTIME each.
fuzz:
	@found=0; \
	pkgs=$$($(GO) list -f '{{if or .TestGoFiles .XTestGoFiles}}{{.ImportPath}}{{end}}' ./...); \
	for pkg in $$pkgs; do \
		list=$$($(GO) test -list '^Fuzz' "$$pkg"); \
		targets=$$(grep '^Fuzz' <<<"$$list" || true); \
		for t in $$targets; do \
			found=1; \
			echo "fuzz $$pkg $$t for $(FUZZTIME)"; \
			$(GO) test -run '^$$' -fuzz "^$$t\$$" -fuzztime $(FUZZTIME) "$$pkg"; \
		done; \
	done; \
	if [[ $$found == 0 ]]; then echo "make fuzz: no fuzz targets yet"; fi

clean:
	rm -rf bin
