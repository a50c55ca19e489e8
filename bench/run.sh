#!/usr/bin/env bash
# `make bench`: the benchmark suite of issue 8. Installs what is missing (wrk, nginx, redis-server,
# moto), builds the release binaries, runs every row beside its reference in this one run, writes
# bench/results/latest.md and prints the table. Loopback only; every process started is stopped.
# Knobs (env): BENCH_ONLY=1,2,... rows to run (written to bench/results/partial.md, not latest.md);
# BENCH_DURATION_S (8) per wrk run; BENCH_CONNECTIONS (32); BENCH_WAKES (100); BENCH_STORM (1000);
# BENCH_REGISTRY (10000); BENCH_KEEP=1 keeps the work dir.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

say() { echo "bench: $*"; }
sudo_cmd() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Tools install (apt, pip) while cargo builds: on a fresh machine each takes minutes.
deps_log="$(mktemp)"
(
    missing=()
    command -v wrk >/dev/null 2>&1 || missing+=(wrk)
    command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx-light)
    if [ "${#missing[@]}" -gt 0 ]; then
        say "installing ${missing[*]} with apt"
        sudo_cmd apt-get update -qq
        DEBIAN_FRONTEND=noninteractive sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
        # The Debian package may start a system nginx on :80; the benchmark runs its own on free ports.
    fi
    # redis-server and moto_server (.venv) for the Redis inbox and DynamoDB emulator rows.
    bash scripts/ensure-test-deps.sh
) >"$deps_log" 2>&1 &
deps_pid=$!

say "building release binaries (tools install meanwhile)"
# Without the orchestrator's `kube` and `s3` features: the bench runs the local runtime, and those
# SDKs are minutes of a cold build (`cargo build --release --timings`).
cargo build --release -p orchestrator -p router -p tenant-agent --no-default-features
deps_ok=0
wait "$deps_pid" || deps_ok=$?
cat "$deps_log"
rm -f "$deps_log"
if [ "$deps_ok" -ne 0 ]; then
    say "installing wrk, nginx, redis-server or moto failed (exit $deps_ok)"
    exit 1
fi
export PATH="$PATH:/usr/sbin"

# 1,000 agents plus their connections need more than the usual 1,024 descriptors.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
say "open files limit $(ulimit -n)"

exec python3 bench/bench.py
