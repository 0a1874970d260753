# muxmed: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
LIBTORCH_PREFIX ?= $(or $(MUXMED_LIBTORCH_PREFIX),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/muxmed/libtorch-2.13.0-cpu)
export MUXMED_LIBTORCH_PREFIX := $(LIBTORCH_PREFIX)
BIN := target/release/muxmed

.PHONY: setup build test test-fast lint ci demo search-demo bench clean-libtorch

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

# The main job on the built-in synthetic dataset (see scripts/demo.sh).
demo: build
	@bash scripts/demo.sh

# A small architecture search on the synthetic dataset (see scripts/search_demo.sh).
search-demo: build
	@bash scripts/search_demo.sh

# Benchmarks that print figures (release build): model speed, data pipeline against the
# PIL baseline, manifest build on the real metadata.
bench: build
	$(BIN) bench model --arch muxnet_m --batch 32 --resolution 224
	bash benches/run_data_bench.sh
	$(BIN) bench manifest --set data.root=../shared/data/nih

clean-libtorch:
	rm -rf "$(LIBTORCH_PREFIX)" .libtorch
