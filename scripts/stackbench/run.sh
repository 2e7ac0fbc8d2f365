#!/usr/bin/env bash
# The one-route service (crates/phalanx-stackbench) bare, behind the whole Phalanx stack and
# behind the peer stack, each in its own process on a loopback port, driven by an
# out-of-process load generator; rounds alternate between the servers.
#
#   scripts/stackbench/run.sh                 # everything below, ~6 minutes
#   ROUNDS=5 DURATION=10 scripts/stackbench/run.sh
#
# 1. One client address: wrk, CONNS (1,000) keep-alive connections, GET /items/1, DURATION s per
#    round, ROUNDS rounds of MODES in turn. req/s per round and the ratio to bare of the same
#    round.
# 2. Many client addresses: the project's loadtest (closed loop, --think 0), CONNS users each
#    from its own 127.1.x.y address (wrk cannot bind source addresses), same rounds.
# 3. BIG (9,000) connections, closed loop, loadtest, bare vs stack: p99, timeouts, errors.
#
# Cores: with PIN=1 (default) the server runs on core 0 (taskset; tokio then starts one worker)
# and the generator on core 1, so the two never compete for a core. PIN=0 leaves both free to
# share both cores, as an unpinned user's run does.
#
# Raw outputs go to results/stackbench/<UTC stamp>/; a summary to summary.txt there. The whole
# measuring part holds /tmp/phalanx-load.lock.
set -euo pipefail

cd "$(dirname "$0")/../.."
ROOT=$PWD
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CONNS=${CONNS:-1000}
BIG=${BIG:-9000}
PIN=${PIN:-1}
MODES=${MODES:-"bare stack stack-miss stack-no-ratelimit-headers peer"}
MANY_MODES=${MANY_MODES:-"bare stack stack-miss peer"}
BIG_MODES=${BIG_MODES:-"bare stack"}
PARTS=${PARTS:-"one many big"}
PORT=${PORT:-3900}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
# The project's load generator.
LOADTEST_BUILD=(-p phalanx-loadtest)
LOADTEST=$TARGET/release/phalanx-loadtest

if [[ -z "${STACKBENCH_LOCKED:-}" ]]; then
    echo "building release binaries (outside the lock)" >&2
    cargo build --release -p phalanx-stackbench >&2
    if [[ " $PARTS " == *" many "* || " $PARTS " == *" big "* ]]; then
        cargo build --release "${LOADTEST_BUILD[@]}" >&2
    fi
    STACKBENCH_LOCKED=1 exec flock /tmp/phalanx-load.lock "$0" "$@"
fi

command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install -y wrk)" >&2; exit 1; }
SERVER=$TARGET/release/phalanx-stackbench
OUT=$ROOT/results/stackbench/$(date -u +%Y%m%dT%H%M%SZ)
mkdir -p "$OUT"
SUMMARY=$OUT/summary.txt
ulimit -n "$(ulimit -Hn)"

# Each in a session of its own, as when started from two terminals: with the kernel's
# autogroup scheduling a session shares the CPU with other sessions as one group.
if [[ $PIN == 1 ]]; then
    ON_SERVER=(setsid taskset -c 0)
    ON_CLIENT=(setsid --wait taskset -c 1)
    WRK_THREADS=1
else
    ON_SERVER=(setsid)
    ON_CLIENT=(setsid --wait)
    WRK_THREADS=2
fi

say() { echo "$*" | tee -a "$SUMMARY"; }

# Only GET /items/{id}, ids 1..1000 uniform: after the first thousand requests every request of
# a caching stack is a hit.
MIX=$OUT/mix.toml
cat >"$MIX" <<'EOF'
[[request]]
name = "item"
weight = 1
method = "GET"
path = "/items/{id}"
id = { min = 1, max = 1000, zipf = 0.0 }
EOF

SERVER_PID=
start() {
    "${ON_SERVER[@]}" "$SERVER" "$1" "127.0.0.1:$PORT" 2>>"$OUT/servers.log" &
    SERVER_PID=$!
    for _ in $(seq 100); do
        curl -fs "http://127.0.0.1:$PORT/items/1" -o /dev/null && return 0
        sleep 0.05
    done
    echo "server $1 did not come up" >&2
    return 1
}
stop() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop EXIT

rps_of_wrk() { awk '/^Requests\/sec:/ { printf "%.0f", $2 }' "$1"; }
json() { python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(eval(sys.argv[2], {}, {'d': d}))" "$@"; }

say "stackbench $(date -u +%FT%TZ), commit $(git -C "$ROOT" rev-parse --short HEAD), $(nproc) cores, PIN=$PIN" \
    "(server: ${ON_SERVER[*]:-any core}, generator: ${ON_CLIENT[*]:-any core}), $CONNS connections, ${DURATION}s rounds"

declare -A ONE MANY
if [[ " $PARTS " == *" one "* ]]; then
    say ""
    say "== one client address: wrk -t$WRK_THREADS -c$CONNS -d${DURATION}s http://127.0.0.1:$PORT/items/1"
    for r in $(seq "$ROUNDS"); do
        line="round $r:"
        for m in $MODES; do
            start "$m"
            # Warm-up: connections, the cache entry, the allocator.
            "${ON_CLIENT[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d2s "http://127.0.0.1:$PORT/items/1" >/dev/null
            f=$OUT/wrk-$m-r$r.txt
            "${ON_CLIENT[@]}" wrk -t"$WRK_THREADS" -c"$CONNS" -d"${DURATION}s" --latency \
                "http://127.0.0.1:$PORT/items/1" >"$f"
            stop
            ONE[$m,$r]=$(rps_of_wrk "$f")
            line+=" $m ${ONE[$m,$r]}"
        done
        say "$line"
    done
    for m in $MODES; do
        ratios=""
        for r in $(seq "$ROUNDS"); do
            ratios+=" $(awk -v a="${ONE[$m,$r]}" -v b="${ONE[bare,$r]}" 'BEGIN { printf "%.3f", a / b }')"
        done
        say "  $m: req/s per round$(for r in $(seq "$ROUNDS"); do printf ' %s' "${ONE[$m,$r]}"; done); ratio to bare per round:$ratios"
    done
fi

loadtest() { # mode users seconds file
    "${ON_CLIENT[@]}" "$LOADTEST" --users "$2" --think 0 --duration "${3}s" --warmup 2s --timeout 10s \
        --mix "$MIX" --no-server-metrics --json "$4" "http://127.0.0.1:$PORT" >"${4%.json}.txt" 2>&1
}

if [[ " $PARTS " == *" many "* ]]; then
    say ""
    say "== $CONNS client addresses (127.1.x.y): loadtest --users $CONNS --think 0 --duration ${DURATION}s, GET /items/{1..1000}"
    for r in $(seq "$ROUNDS"); do
        line="round $r:"
        for m in $MANY_MODES; do
            start "$m"
            f=$OUT/many-$m-r$r.json
            loadtest "$m" "$CONNS" "$DURATION" "$f"
            stop
            MANY[$m,$r]=$(json "$f" 'round(d["rps"])')
            line+=" $m ${MANY[$m,$r]} (errors $(json "$f" 'd["errors"]["total"]'))"
        done
        say "$line"
    done
    for m in $MANY_MODES; do
        ratios=""
        for r in $(seq "$ROUNDS"); do
            ratios+=" $(awk -v a="${MANY[$m,$r]}" -v b="${MANY[bare,$r]}" 'BEGIN { printf "%.3f", a / b }')"
        done
        say "  $m: req/s per round$(for r in $(seq "$ROUNDS"); do printf ' %s' "${MANY[$m,$r]}"; done); ratio to bare per round:$ratios"
    done
fi

if [[ " $PARTS " == *" big "* ]]; then
    say ""
    say "== $BIG connections, closed loop, one address each: loadtest --users $BIG --think 0 --duration 20s"
    for r in $(seq 2); do
        for m in $BIG_MODES; do
            start "$m"
            f=$OUT/big-$m-r$r.json
            loadtest "$m" "$BIG" 20 "$f"
            stop
            say "round $r $m: $(json "$f" '"%d req/s, p50 %.1f ms, p99 %.1f ms, max %.1f ms, timeouts %d, errors %d, connect errors %d, peak connections %d" % (d["rps"], d["latency_ms"]["p50"], d["latency_ms"]["p99"], d["latency_ms"]["max"], d["errors"]["timeout"], d["errors"]["total"], d["errors"]["connect"], d["connections"]["peak"])')"
        done
    done
fi
say ""
say "raw outputs: $OUT"
