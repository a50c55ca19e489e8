#!/usr/bin/env bash
# Installs what the tests need and is missing: redis-server, nginx and faketime (apt), moto[server] in .venv (pip).
# Idempotent and quick when everything is present; `make test` runs it first.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
# The AWS emulator version the contract suites were written against.
MOTO_VERSION=5.2.5

say() { echo "ensure-test-deps: $*"; }

sudo_cmd() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

APT_UPDATED=0
apt_install() {
    if [ "$APT_UPDATED" -eq 0 ]; then
        sudo_cmd apt-get update -qq
        APT_UPDATED=1
    fi
    sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if command -v redis-server >/dev/null 2>&1; then
    say "redis-server present ($(redis-server --version | awk '{print $3}'))"
else
    say "installing redis-server with apt"
    apt_install redis-server
    # The package starts a system instance on 6379; the tests start their own on free ports.
    say "installed redis-server ($(redis-server --version | awk '{print $3}'))"
fi

# nginx: the proxy test runs the services behind it with its default upstream settings.
if command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ]; then
    say "nginx present ($( (nginx -v 2>&1 || /usr/sbin/nginx -v 2>&1) | sed 's/.*nginx\///'))"
else
    say "installing nginx-light with apt"
    apt_install nginx-light
    # The package may start a system instance on port 80; the tests start their own on free ports.
    say "installed nginx ($(/usr/sbin/nginx -v 2>&1 | sed 's/.*nginx\///'))"
fi

# libfaketime: the clock-skew test runs one orchestrator replica with its wall clock shifted.
if command -v faketime >/dev/null 2>&1 && ls /usr/lib/*/faketime/libfaketimeMT.so.1 >/dev/null 2>&1; then
    say "faketime present ($(dpkg-query -W -f='${Version}' faketime 2>/dev/null || echo unknown))"
else
    say "installing faketime (libfaketime) with apt"
    apt_install faketime
    say "installed faketime ($(dpkg-query -W -f='${Version}' faketime 2>/dev/null || echo unknown))"
fi

if [ -x "$VENV/bin/moto_server" ]; then
    say "moto_server present in $VENV"
else
    if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
        say "installing python3 and python3-venv with apt"
        apt_install python3 python3-venv ca-certificates
    fi
    if [ ! -x "$VENV/bin/pip" ]; then
        say "creating venv $VENV"
        python3 -m venv "$VENV"
    fi
    say "installing moto[server] into $VENV"
    "$VENV/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION"
    say "installed moto_server ($("$VENV/bin/python" -c 'import moto; print(moto.__version__)'))"
fi

# The S3 CSI driver's rules are enforced in tests by a FUSE filesystem (tests/src/mountpoint.rs). As root
# it mounts through mount(2); anyone else needs the setuid helper fusermount3 (package fuse3).
if [ ! -e /dev/fuse ]; then
    say "WARNING: /dev/fuse missing: the state tests (tests/tests/state_mountpoint.rs) and the fake cluster's S3 volumes will fail"
elif [ "$(id -u)" -ne 0 ] && ! command -v fusermount3 >/dev/null 2>&1; then
    say "installing fuse3 (fusermount3) with apt"
    apt_install fuse3
else
    say "FUSE present (/dev/fuse)"
fi

# cargo-nextest runs the suite (`make test`); installed from the Rust package registry when missing.
if cargo nextest --version >/dev/null 2>&1; then
    say "cargo-nextest present ($(cargo nextest --version 2>/dev/null | head -1 | awk '{print $2}'))"
else
    say "installing cargo-nextest with cargo install (a few minutes, once)"
    cargo install cargo-nextest --locked
fi
