#!/usr/bin/env bash
# How response size weighs on the demo: one load-generator run per payload size (about 1 KB,
# 64 KB and 1 MB, GET /payload/{bytes}), one line per size.
#
#   scripts/payload/run.sh [SIZE ...]     sizes: 1k 64k 1m (default: all three)
#
# Builds the release demo and load generator (outside the lock), starts the demo on its embedded
# defaults (SQLite in a temporary directory, no Redis) on a loopback port, then runs each size
# under flock /tmp/phalanx-load.lock with the mix crates/phalanx-loadtest/mixes/payload-SIZE.toml
# and writes OUT/SIZE.json. Environment:
#   USERS (500)          users of every run (one loopback address each)
#   THINK (1s)           mean think time
#   WARMUP (5s)          warm-up of every run
#   DURATION (20s)       measured time of every run
#   PORT_BASE (17950)    the demo on PORT_BASE, its admin listener on PORT_BASE + 1
#   OUT (results/payload)
#   NO_BUILD=1           use the binaries already built
#   LOADTEST_ARGS        extra arguments for every load generator run
set -euo pipefail
cd "$(dirname "$0")/../.."

SIZES=${*:-1k 64k 1m}
USERS=${USERS:-500} THINK=${THINK:-1s} WARMUP=${WARMUP:-5s} DURATION=${DURATION:-20s}
PORT_BASE=${PORT_BASE:-17950}
OUT=${OUT:-results/payload}
LOADTEST_ARGS=${LOADTEST_ARGS:-}
DEMO=127.0.0.1:$PORT_BASE
ADMIN=127.0.0.1:$((PORT_BASE + 1))
BIN=$(realpath "${CARGO_TARGET_DIR:-target}")/release

if [ -z "${NO_BUILD:-}" ]; then
    cargo build -q --release --example demo
    cargo build -q --release -p phalanx-loadtest
fi
# The measured part holds the machine's load lock (one timing-sensitive run at a time).
if [ -z "${PHALANX_LOAD_LOCKED:-}" ]; then
    PHALANX_LOAD_LOCKED=1 NO_BUILD=1 exec flock /tmp/phalanx-load.lock "$0" "$@"
fi

mkdir -p "$OUT"
OUT=$(realpath "$OUT")
WORK=$(mktemp -d /tmp/phalanx-payload.XXXXXX)
DEMO_PID=
cleanup() {
    [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# Embedded defaults; only the listeners move to their own ports, and the SQLite file to $WORK.
(cd "$WORK" && exec env BIND="$DEMO" ADMIN_BIND="$ADMIN" "$BIN/examples/demo" >"$WORK/demo.log" 2>&1) &
DEMO_PID=$!
for _ in $(seq 1 600); do
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$DEMO/readyz")" = 200 ] && break
    sleep 0.1
done
[ "$(curl -s -o /dev/null -w '%{http_code}' "http://$DEMO/readyz")" = 200 ] ||
    { echo "the demo did not become ready" >&2; tail -n 20 "$WORK/demo.log" >&2; exit 1; }

# CPU seconds the demo has used so far (utime + stime of /proc/PID/stat, 100 ticks a second).
demo_cpu() { awk '{ sub(/^.*\) /, ""); printf "%.2f", ($12 + $13) / 100 }' "/proc/$DEMO_PID/stat"; }

printf '%-5s %9s %9s %9s %9s %9s %9s %8s %11s %11s\n' \
    size req/s avg_ms p50_ms p99_ms p99.9_ms MB/s errors demo_cores gen_cores
for size in $SIZES; do
    mix=crates/phalanx-loadtest/mixes/payload-$size.toml
    [ -f "$mix" ] || { echo "no mix $mix (sizes: 1k 64k 1m)" >&2; exit 2; }
    cpu0=$(demo_cpu) t0=$(date +%s.%N)
    # shellcheck disable=SC2086
    "$BIN/phalanx-loadtest" --users "$USERS" --think "$THINK" --warmup "$WARMUP" --duration "$DURATION" \
        --mix "$mix" --quiet --json "$OUT/$size.json" $LOADTEST_ARGS "http://$DEMO" >"$WORK/$size.txt"
    demo_cores=$(echo "($(demo_cpu) - $cpu0) / ($(date +%s.%N) - $t0)" | bc -l | xargs printf '%.2f')
    jq -r --arg size "$size" --arg demo "$demo_cores" '[$size, (.rps | floor), .latency_ms.avg, .latency_ms.p50,
            .latency_ms.p99, .latency_ms.p999, .response_body_mb_per_s, .errors.total, $demo, .generator.cpu_cores]
        | "\(.[0]) \(.[1]) \(.[2] * 1000 | round / 1000) \(.[3]) \(.[4]) \(.[5]) \(.[6] * 10 | round / 10) \(.[7]) \(.[8]) \(.[9] * 100 | round / 100)"' \
        "$OUT/$size.json" | xargs printf '%-5s %9s %9s %9s %9s %9s %9s %8s %11s %11s\n'
done
