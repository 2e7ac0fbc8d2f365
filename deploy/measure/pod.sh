#!/usr/bin/env bash
# Measures one demo pod on PostgreSQL + Redis: its start-to-ready time (process start →
# /readyz 200, migrations and warm-up included, on a database already migrated and seeded, as a
# new replica finds it) and its capacity (the open-model load stepped up until the latency
# targets break: p99 < 500 ms and the service's own p99 ≤ 15 ms), with the pod's CPU and RSS at
# each step. Prints a table and the `rps,mean_ms,p99_ms` curve for deploy/hpa/pod.csv.
#
#   cargo build --release --example demo && cargo build --release -p phalanx-loadtest   # outside the lock
#   NO_BUILD=1 flock /tmp/phalanx-load.lock deploy/measure/pod.sh [RATE ...]
#
# Ports: PORT_BASE (default 17500): demo on +1, private redis-server on +10. PostgreSQL: the
# local server, database phalanx_scale (created if missing).
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT_BASE=${PORT_BASE:-17500}
DEMO_PORT=$((PORT_BASE + 1)) REDIS_PORT=$((PORT_BASE + 10))
PG=${PG:-postgres://postgres@127.0.0.1:5432}
DB=${DB:-phalanx_scale}
STEP_S=${STEP_S:-20}
RATES=("$@")
((${#RATES[@]})) || RATES=(1000 2000 4000 6000 8000 10000 12000 14000)

[[ -n ${NO_BUILD:-} ]] || { cargo build -q --release --example demo && cargo build -q --release -p phalanx-loadtest; }
RELEASE=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
BIN=$RELEASE/examples
LOADTEST=$RELEASE/phalanx-loadtest
work=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >"$work/redis.log" 2>&1 &
pids+=($!)
psql "$PG/postgres" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 ||
    psql "$PG/postgres" -qc "CREATE DATABASE $DB"

start_demo() {
    local t0 t1
    t0=$(date +%s.%N)
    ADMIN_BIND=127.0.0.1:$((DEMO_PORT + 1)) BIND=127.0.0.1:$DEMO_PORT DATABASE_URL=$PG/$DB REDIS_URL=redis://127.0.0.1:$REDIS_PORT \
        RUST_LOG=warn "$BIN/demo" >>"$work/demo.log" 2>&1 &
    DEMO_PID=$!
    pids+=("$DEMO_PID")
    until curl -fs -o /dev/null "http://127.0.0.1:$DEMO_PORT/readyz"; do
        kill -0 "$DEMO_PID" 2>/dev/null || { cat "$work/demo.log"; exit 1; }
        sleep 0.02
    done
    t1=$(date +%s.%N)
    START_S=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
}

stop_demo() { kill -TERM "$DEMO_PID"; wait "$DEMO_PID" 2>/dev/null || true; }

# The first start migrates and seeds an empty database; later starts are what a new replica sees.
start_demo; first=$START_S; stop_demo
starts=()
for _ in 1 2 3; do start_demo; starts+=("$START_S"); stop_demo; done
echo "start-to-ready: first start (migrate + seed) ${first} s; later starts ${starts[*]} s"

start_demo
cpu_ticks() { awk '{print $14 + $15}' "/proc/$DEMO_PID/stat"; }
rss_mb() { awk '/VmRSS/ {printf "%.0f", $2 / 1024}' "/proc/$DEMO_PID/status"; }
hz=$(getconf CLK_TCK)
printf '%s\n' "| offered (req/s) | achieved (req/s) | avg (ms) | p50 | p99 | service p99 | errors | pod CPU (cores) | pod RSS (MiB) | targets met |" \
    "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
curve=()
for rate in "${RATES[@]}"; do
    c0=$(cpu_ticks); s0=$(date +%s.%N)
    "$LOADTEST" --users "$rate" --think 1s --duration "${STEP_S}s" --warmup 5s \
        --json "$work/r.json" "http://127.0.0.1:$DEMO_PORT" >/dev/null 2>&1 || true
    c1=$(cpu_ticks); s1=$(date +%s.%N)
    line=$(python3 - "$work/r.json" "$rate" "$c0" "$c1" "$s0" "$s1" "$hz" "$(rss_mb)" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
rate, c0, c1, s0, s1, hz, rss = sys.argv[2:]
cores = (float(c1) - float(c0)) / float(hz) / (float(s1) - float(s0))
l, s = r["latency_ms"], r["service_latency_ms"]
ok = l["p99"] < 500 and s["p99"] <= 15 and r["errors"]["total"] <= 0.001 * max(r["requests"], 1)
e = r["errors"]
kinds = ", ".join(f"{k} {e[k]}" for k in ("connect", "timeout", "io", "status_429", "status_503") if e[k])
print(f"| {rate} | {r['rps']:.0f} | {l['avg']:.1f} | {l['p50']:.1f} | {l['p99']:.1f} | {s['p99']:.1f} | {e['total']}{' (' + kinds + ')' if kinds else ''} | {cores:.2f} | {rss} | {'yes' if ok else 'no'} |"
      f"\t{r['rps']:.0f},{l['avg']:.2f},{l['p99']:.2f}")
PY
)
    printf '%s\n' "${line%%$'\t'*}"
    curve+=("${line##*$'\t'}")
done
echo
echo "rps,mean_ms,p99_ms"
printf '%s\n' "${curve[@]}"
