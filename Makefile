# sbcd build and CI. GNU make. `make test` is what CI runs (.ci/run).

# Go is installed in /usr/local/go; work even when it is not on PATH.
export PATH := /usr/local/go/bin:$(PATH)

GO      ?= go
# The repository may have no commits yet: fall back to "dev".
VERSION := $(shell git describe --always --dirty 2>/dev/null || echo dev)
QEMU    := /usr/bin/qemu-aarch64-static

# The production target: one static binary (DESIGN.md §1).
ARM64_ENV := CGO_ENABLED=0 GOOS=linux GOARCH=arm64

# Run prerequisites one after the other, in the order written, even with -j.
.NOTPARALLEL:

.PHONY: all build arm64 run test deps fmt vet test-host test-arm64 bench clean
.PHONY: bench-load bench-go

all: build

## build: host binary bin/sbcd
build:
	$(GO) build -ldflags "-X main.version=$(VERSION)" -o bin/sbcd ./cmd/sbcd

## arm64: static linux/arm64 binary bin/sbcd-arm64, and its size
arm64:
	$(ARM64_ENV) $(GO) build -trimpath -ldflags "-s -w -X main.version=$(VERSION)" -o bin/sbcd-arm64 ./cmd/sbcd
	@size=$$(stat -c %s bin/sbcd-arm64); \
	echo "bin/sbcd-arm64 ($(VERSION)): $$size bytes ($$((size / 1024)) KiB)"

## run: sbcd with the built-in defaults (loopback only)
run: build
	./bin/sbcd

## test: everything CI runs, stopping at the first failure
test: deps fmt vet test-host test-arm64

# deps: install what the tests need from Debian when it is missing:
# qemu-user-static for the arm64 tests, sip-tester (SIPp) for the real-peer
# call tests, openssh-client (scp, ssh) for the management end-to-end test,
# and a C toolchain for -race (cgo).
deps:
	@missing=""; \
	[ -x $(QEMU) ] || missing="$$missing qemu-user-static"; \
	command -v sipp >/dev/null 2>&1 || missing="$$missing sip-tester"; \
	command -v scp >/dev/null 2>&1 || missing="$$missing openssh-client"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	[ -e /usr/include/stdlib.h ] || missing="$$missing libc6-dev"; \
	if [ -z "$$missing" ]; then \
		echo "deps: all present"; \
	elif [ "$$(id -u)" -ne 0 ]; then \
		echo "deps: missing Debian packages:$$missing" >&2; \
		echo "deps: installing them needs root; run: sudo apt-get install -y --no-install-recommends$$missing" >&2; \
		exit 1; \
	else \
		echo "deps: installing$$missing"; \
		apt-get update && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $$missing; \
	fi

# fmt: gofmt over every tracked and untracked, non-ignored .go file.
fmt:
	@files=$$(git ls-files --cached --others --exclude-standard -- '*.go' 2>/dev/null) || \
		files=$$(find . -name '*.go' -not -path './.git/*'); \
	files=$$(for f in $$files; do [ -f "$$f" ] && echo "$$f"; done); \
	bad=$$(echo "$$files" | xargs -r gofmt -l) || { echo "fmt: gofmt failed" >&2; exit 1; }; \
	if [ -n "$$bad" ]; then \
		echo "fmt: not gofmt-formatted (run gofmt -w on them):" >&2; \
		echo "$$bad" >&2; \
		exit 1; \
	fi; \
	echo "fmt: $$(echo "$$files" | grep -c .) files formatted"

vet:
	$(GO) vet ./...
	$(ARM64_ENV) $(GO) vet ./...

test-host:
	$(GO) test -race -timeout 20m ./...

# The arm64 unit tests, run by user-mode qemu; -short skips the slow ones.
test-arm64:
	$(ARM64_ENV) $(GO) test -short -timeout 30m -exec $(QEMU) ./...

## bench: SIPp call load through Kamailio 5.6 and sbcd side by side, sbcd/Kamailio
## ratios in one table (bench/load.sh SUT=both; installs kamailio and sip-tester
## when missing; ~13 min per run and SUT; RUNS=3 for medians)
bench: build
	SUT=$${SUT:-both} bash bench/load.sh

## bench-go: every Go benchmark, with allocations
bench-go:
	$(GO) test -run '^$$' -bench . -benchmem -timeout 60m ./...

clean:
	rm -rf bin

## bench-load: SIPp load through a live sbcd on loopback (bench/load.sh; ~13 min per run, RUNS=3 for medians)
bench-load: build
	bash bench/load.sh
