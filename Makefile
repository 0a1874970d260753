# muxmed: the two commands of the README are `make demo` and `make test`.
SHELL := /bin/bash
CARGO ?= cargo
LIBTORCH_PREFIX ?= $(or $(MUXMED_LIBTORCH_PREFIX),$(or $(XDG_CACHE_HOME),$(HOME)/.cache)/muxmed/libtorch-2.13.0-cpu)
export MUXMED_LIBTORCH_PREFIX := $(LIBTORCH_PREFIX)
BIN := target/release/muxmed
# A cold `cargo build --release` measured on a 2-core AMD EPYC (see README).
FIRST_BUILD := about 12 minutes (22 CPU-minutes)

.PHONY: setup build test test-fast test-avx2 lint ci demo search-demo bench clean-libtorch test-real

# Installs the pinned CPU libtorch into the user cache (once) and points .libtorch at it.
setup:
	@bash scripts/setup-libtorch.sh
	@ln -sfn "$(LIBTORCH_PREFIX)/torch" .libtorch

build: setup
	@[ -x $(BIN) ] || echo "muxmed: first build: compiling about 300 crates (polars, libtorch bindings), $(FIRST_BUILD) on 2 cores; later builds take seconds"
	$(CARGO) build --release

# Tests that need no libtorch first (config, data, metrics, reports), then the whole suite.
test-fast:
	$(CARGO) test --no-default-features

test: setup test-fast
	$(CARGO) test
	@$(MAKE) --no-print-directory test-avx2

# The fixture tests again on libtorch's, oneDNN's and MKL's AVX2 kernels (which they honour on
# any newer CPU): users' CPUs often lack AVX-512, and a tolerance that held on one kernel
# family only fails here. Model parity, Grad-CAM, checkpoint import, the folded models, the
# DICOM fixtures and the export round trip (inside the evaluate/predict end-to-end test).
AVX2 := ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2
test-avx2: setup
	$(AVX2) $(CARGO) test --test suite -- model_parity:: gradcam:: dicom:: model_weights:: cli_model:: model_layout:: tolerance::
	$(AVX2) $(CARGO) test --test e2e -- evaluate::evaluate_report_and_predict_a_trained_run

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

# Benchmarks that print figures (release build): models against PyTorch eager in the same run
# (installs torch + torchvision into a venv the first time), data pipeline against the PIL
# baseline, manifest build on the real metadata. benches/against_commit.sh compares with an
# earlier commit (model speed, demo time).
bench: build
	bash benches/run_model_bench.sh
	bash benches/run_data_bench.sh
	$(BIN) bench manifest --set data.root=../shared/data/nih
	@bash scripts/bench-chexpert-manifest.sh "$(BIN)" "$(REAL_LABELS)"

clean-libtorch:
	rm -rf "$(LIBTORCH_PREFIX)" .libtorch

# The readers on the complete real label files (CheXpert 223,414 rows, VinBigData 67,914,
# RSNA 30,227), extracted from a torchxrayvision snapshot (`fetch github:mlmed/torchxrayvision`)
# into the user cache, never into the repository.
TXV_SNAPSHOT ?= /work/.mirror/mlmed+torchxrayvision/repo
REAL_LABELS ?= $(or $(XDG_CACHE_HOME),$(HOME)/.cache)/muxmed/real-labels
test-real:
	@bash scripts/real-labels.sh "$(TXV_SNAPSHOT)" "$(REAL_LABELS)"
	MUXMED_REAL_LABELS="$(REAL_LABELS)" $(CARGO) test --release --no-default-features --test suite manifest_formats -- --ignored
