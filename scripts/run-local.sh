#!/usr/bin/env bash
# `make run`: orchestrator and router on this machine with the embedded defaults (SQLite registry and
# inbox, in-process lock and cache, local agent processes, state in ./data). Ctrl-C stops everything,
# agents included. Expects the binaries to be built (`make run` builds them first).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/debug"
ORCH_PORT="${ORCH_PORT:-8080}"
ROUTER_PORT="${ROUTER_PORT:-9090}"
export DATA_DIR="${DATA_DIR:-$ROOT/data}"
ORCH_URL="http://localhost:$ORCH_PORT"
ROUTER_URL="http://localhost:$ROUTER_PORT"
# Where Telegram reaches the router. Only a public https URL (a tunnel) makes sense to Telegram, so
# webhooks are registered on create only when PUBLIC_BASE_URL is given; the local demo needs none.
PUBLIC_URL="${PUBLIC_BASE_URL:-$ROUTER_URL}"
ORCH_WEBHOOK_ENV=()
if [ -n "${PUBLIC_BASE_URL:-}" ]; then
    ORCH_WEBHOOK_ENV=(ROUTER_PUBLIC_URL="$PUBLIC_BASE_URL")
fi

for b in orchestrator router tenant-agent ztm; do
    [ -x "$BIN/$b" ] || { echo "run-local: $BIN/$b missing; run 'make run' (it builds first)" >&2; exit 1; }
done
for port in "$ORCH_PORT" "$ROUTER_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "run-local: port $port is already in use (another 'make run'?); set ORCH_PORT / ROUTER_PORT" >&2
        exit 1
    fi
done
mkdir -p "$DATA_DIR"

pids=()
stopping=0
stop() {
    # A Ctrl-C can arrive twice (terminal and a wrapper such as make or timeout): stop once, and let
    # no second signal cut the clean-up short.
    [ "$stopping" = 0 ] || return 0
    stopping=1
    trap '' INT TERM
    trap - EXIT
    echo
    echo "run-local: stopping router, orchestrator and agents..."
    for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
    # Agents the orchestrator did not stop itself: agents/{id}/agent.pid holds "pid port".
    for f in "$DATA_DIR"/agents/*/agent.pid; do
        [ -f "$f" ] || continue
        read -r pid _ <"$f" || continue
        if grep -qaE "tenant-agent|zeroclaw-launcher" "/proc/$pid/cmdline" 2>/dev/null; then
            kill -TERM "$pid" 2>/dev/null || true
        fi
    done
    echo "run-local: stopped (data kept in $DATA_DIR; 'make clean-data' removes it)"
}
trap stop INT TERM EXIT

start() {
    local name=$1
    shift
    # Own session: a Ctrl-C reaches this script only, which then stops the services in order.
    setsid env "$@" "$BIN/$name" >>"$DATA_DIR/$name.log" 2>&1 &
    pids+=("$!")
}

start orchestrator PORT="$ORCH_PORT" RUNTIME=local "${ORCH_WEBHOOK_ENV[@]}"
start router PORT="$ROUTER_PORT" ORCHESTRATOR_ADDR="$ORCH_URL" PUBLIC_BASE_URL="$PUBLIC_URL"

for url in "$ORCH_URL/readyz" "$ROUTER_URL/readyz"; do
    for _ in $(seq 1 100); do
        curl -fsS -o /dev/null "$url" 2>/dev/null && break
        for pid in "${pids[@]}"; do
            kill -0 "$pid" 2>/dev/null || { echo "run-local: a service exited; see $DATA_DIR/*.log" >&2; tail -n 20 "$DATA_DIR"/*.log >&2; exit 1; }
        done
        sleep 0.1
    done
    curl -fsS -o /dev/null "$url" || { echo "run-local: $url not ready; see $DATA_DIR/*.log" >&2; exit 1; }
done

cat <<EOF

  orchestrator  $ORCH_URL   (tenant API)
  router        $ROUTER_URL   (Telegram webhooks: $PUBLIC_URL/tg/{id}$( [ -n "${PUBLIC_BASE_URL:-}" ] || echo "; set PUBLIC_BASE_URL for a real bot"))
  data and logs $DATA_DIR

In another terminal:

  export ZTM_ORCHESTRATOR_URL=$ORCH_URL ZTM_ROUTER_URL=$ROUTER_URL
  export PATH="$BIN:\$PATH"      # or: make install-ztm
  ztm tenant create demo 123456:demo-token
  ztm chat demo hello

Ctrl-C stops the services and every agent. Logs follow.

EOF

tail -n 0 -F "$DATA_DIR/orchestrator.log" "$DATA_DIR/router.log" &
pids+=("$!")
# Returns when a service exits (or on Ctrl-C, through the trap).
wait -n "${pids[@]}" || true
