#!/usr/bin/env bash
# Installs the pinned ZeroClaw release (a debug build from the Rust package registry) unless it is
# already there, and prints the path of its binary on stdout (messages go to stderr). The first run
# compiles ZeroClaw (about 8 minutes on 2 cores, see docs/operations.md); later runs return at once.
#   ZEROCLAW_ROOT  install root (default ~/.cache/zeroclaw-tenancy/zeroclaw-$ZEROCLAW_VERSION)
# docker/zeroclaw.Dockerfile pins the same version (tests/tests/dockerfiles.rs checks it).
set -euo pipefail

ZEROCLAW_VERSION="0.1.7"
ROOT_DIR="${ZEROCLAW_ROOT:-$HOME/.cache/zeroclaw-tenancy/zeroclaw-$ZEROCLAW_VERSION}"
BIN="$ROOT_DIR/bin/zeroclaw"

say() { echo "ensure-zeroclaw: $*" >&2; }

if [ -x "$BIN" ]; then
    say "zeroclaw $ZEROCLAW_VERSION present ($BIN)"
else
    command -v cargo >/dev/null 2>&1 || { say "cargo is required (https://rustup.rs)"; exit 1; }
    say "installing zeroclaw $ZEROCLAW_VERSION into $ROOT_DIR (first time only: several minutes)"
    started=$(date +%s)
    cargo install zeroclaw --version "$ZEROCLAW_VERSION" --locked --debug \
        --root "$ROOT_DIR" --target-dir "$HOME/.cache/zeroclaw-tenancy/build" >&2
    say "installed in $(( $(date +%s) - started )) s"
fi
"$BIN" --version >&2
echo "$BIN"
