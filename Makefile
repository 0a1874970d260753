# muxmed: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
LIBTORCH_PREFIX ?= $(or $(MUXMED_LIBTORCH_PREFIX),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/muxmed/libtorch-2.13.0-cpu)
export MUXMED_LIBTORCH_PREFIX := $(LIBTORCH_PREFIX)
BIN := target/release/muxmed

.PHONY: setup build test test-fast lint ci demo bench clean-libtorch

# Installs the pinned CPU libtorch into the user cache (once) and points .libtorch at it.
setup:
	@bash scripts/setup-libtorch.sh
	@ln -sfn "$(LIBTORCH_PREFIX)/torch" .libtorch

build: setup
	$(CARGO) build --release

# Tests that need no libtorch first (config, data, metrics, reports), then the whole suite.
test-fast:
	$(CARGO) test --no-default-features

test: setup test-fast
	$(CARGO) test

lint: setup
	$(CARGO) fmt --check
	$(CARGO) clippy --all-targets -- -D warnings
	$(CARGO) clippy --all-targets --no-default-features -- -D warnings

ci: test lint

demo: build
	@echo "The built-in synthetic dataset is not there yet; running 'muxmed doctor' instead."
	$(BIN) doctor

bench: build
	$(BIN) bench model --arch muxnet_m --batch 32 --resolution 224

clean-libtorch:
	rm -rf "$(LIBTORCH_PREFIX)" .libtorch
