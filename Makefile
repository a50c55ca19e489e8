# The two commands a newcomer needs: `make run` and `make test`. See README.md.
SHELL := /bin/bash
CARGO ?= cargo
BINS := orchestrator router tenant-agent ztm
IMAGE_PREFIX ?= zeroclaw-tenancy
VERSION ?= $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

.PHONY: run build test test-deps lint bench images install-ztm clean-data help

help:
	@echo "make run          build and start orchestrator (:8080) and router (:9090) locally; Ctrl-C stops all"
	@echo "make test         run the whole test suite (unit, end-to-end, Redis/AWS emulator)"
	@echo "make lint         rustfmt check and clippy -D warnings"
	@echo "make bench        run the benchmarks (bench/run.sh)"
	@echo "make images       build the Docker images in docker/"
	@echo "make install-ztm  install the ztm CLI into ~/.cargo/bin"

build:
	$(CARGO) build $(addprefix -p ,$(BINS))

run: build
	bash scripts/run-local.sh

test-deps:
	@if [ -f scripts/ensure-test-deps.sh ]; then bash scripts/ensure-test-deps.sh; fi

test: test-deps
	$(CARGO) build --workspace --bins
	$(CARGO) nextest run --workspace $(NEXTEST_ARGS)

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) clippy -p orchestrator --no-default-features --all-targets -- -D warnings

bench:
	@if [ -x bench/run.sh ] || [ -f bench/run.sh ]; then bash bench/run.sh; else echo "bench/run.sh not present yet"; fi

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
