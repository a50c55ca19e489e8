# The two commands a newcomer needs: `make run` and `make test`. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
BINS := orchestrator router tenant-agent ztm
IMAGE_PREFIX ?= zeroclaw-tenancy
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

.PHONY: run run-zeroclaw build test test-deps test-zeroclaw lint bench bench-warm images install-ztm clean-data help

help:
	@echo "make run          build and start orchestrator (:8080) and router (:9090) locally; Ctrl-C stops all"
	@echo "make test         run the whole test suite (unit, end-to-end, Redis/AWS emulator)"
	@echo "make run-zeroclaw like make run, with real ZeroClaw agents (installs ZeroClaw first; LLM_API_URL or a stand-in model)"
	@echo "make test-zeroclaw install the pinned ZeroClaw (cached) and run the end-to-end tests with it"
	@echo "make lint         rustfmt check and clippy -D warnings"
	@echo "make bench        run the benchmarks (bench/run.sh)"
	@echo "make images       build the Docker images in docker/"
	@echo "make install-ztm  install the ztm CLI into ~/.cargo/bin"

build:
	$(CARGO) build $(addprefix -p ,$(BINS))

run: build
	bash scripts/run-local.sh

# Real ZeroClaw agents: the launcher is the AGENT_COMMAND; the model is LLM_API_URL (any
# OpenAI-compatible /v1), else the stand-in model server of tests/ on STANDIN_MODEL_PORT.
STANDIN_MODEL_PORT ?= 8091
run-zeroclaw: build
	$(CARGO) build -p zeroclaw-launcher -p platform-tests --bin stand-in-model
	@set -euo pipefail; \
	zc="$$(bash scripts/ensure-zeroclaw.sh)"; \
	url="$${LLM_API_URL:-}"; \
	if [ -z "$$url" ]; then \
		target/debug/stand-in-model "$(STANDIN_MODEL_PORT)" & model=$$!; \
		trap 'kill $$model 2>/dev/null || true' EXIT; \
		url="http://127.0.0.1:$(STANDIN_MODEL_PORT)/v1"; \
		echo "run-zeroclaw: no LLM_API_URL, using the stand-in model at $$url"; \
	fi; \
	ZEROCLAW_BIN="$$zc" AGENT_COMMAND="$(CURDIR)/target/debug/zeroclaw-launcher" \
		LLM_API_URL="$$url" bash scripts/run-local.sh

test-deps:
	@if [ -f scripts/ensure-test-deps.sh ]; then bash scripts/ensure-test-deps.sh; fi

test: test-deps
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace $(NEXTEST_ARGS)

# The ZeroClaw suites (tests/tests/zeroclaw_*.rs, #[ignore]d in `make test`) with the pinned
# release; the first run installs it (see docs/operations.md for how long that takes).
test-zeroclaw: test-deps
	@set -euo pipefail; \
	zc="$$(bash scripts/ensure-zeroclaw.sh)"; \
	$(CARGO) build --workspace --bins; \
	ZEROCLAW_BIN="$$zc" $(CARGO) nextest run --workspace --run-ignored ignored-only \
		-E 'binary(/^zeroclaw_/)' $(NEXTEST_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p orchestrator --no-default-features --all-targets -- -D warnings

bench:
	@if [ -x bench/run.sh ] || [ -f bench/run.sh ]; then bash bench/run.sh; else echo "bench/run.sh not present yet"; fi

# Issue 20's row: warm hit vs cold start vs node-warm claim on the fake cluster (writes
# bench/results/warm-agents.md; BENCH_POD_START_MS, BENCH_AGENT_START_MS).
bench-warm:
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace --run-ignored ignored-only --no-capture \
		-E 'binary(k8s_warm_bench)' $(NEXTEST_ARGS)

images:
	@set -e; found=0; for f in docker/*.Dockerfile; do \
		[ -f "$$f" ] || continue; found=1; \
		name=$$(basename "$$f" .Dockerfile); \
		echo "docker build -f $$f -t $(IMAGE_PREFIX)/$$name:$(VERSION) ."; \
		docker build -f "$$f" -t "$(IMAGE_PREFIX)/$$name:$(VERSION)" .; \
	done; [ $$found = 1 ] || echo "no Dockerfiles in docker/ yet"

install-ztm:
	$(CARGO) install --path ztm --locked

clean-data:
	rm -rf ./data
