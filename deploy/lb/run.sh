#!/usr/bin/env bash
# N demo nodes on PostgreSQL + a private Redis behind nginx (least_conn) or HAProxy
# (leastconn), started from the repo's configs with the ports rewritten. Runs the load
# generator through the balancer, prints each node's share and the largest deviation from the
# mean, then rolls every node (SIGTERM, wait for exit, start, wait for /readyz) under load and
# prints the failed requests.
#
#   cargo build --release --example demo && cargo build --release -p phalanx-loadtest   # outside the lock
#   NO_BUILD=1 flock /tmp/phalanx-load.lock deploy/lb/run.sh nginx|haproxy
#
# Environment: NODES (4), USERS (2000), DURATION (20s), WARMUP (3s), PORT_BASE (17600: nodes on
# +1..+N, balancer on +50, Redis on +40), PG (postgres://postgres@127.0.0.1:5432), DB
# (phalanx_scale), NO_REDIS=1 (nodes without Redis: L1 only, each node its own limiter),
# NO_ROLL=1 (skip the rolling restart), OUT (a directory: keep the JSON reports there).
set -euo pipefail
cd "$(dirname "$0")/../.."
LB=${1:?usage: run.sh nginx|haproxy}
NODES=${NODES:-4} USERS=${USERS:-2000} DURATION=${DURATION:-20s} WARMUP=${WARMUP:-3s}
PORT_BASE=${PORT_BASE:-17600}
LB_PORT=$((PORT_BASE + 50)) REDIS_PORT=$((PORT_BASE + 40))
PG=${PG:-postgres://postgres@127.0.0.1:5432} DB=${DB:-phalanx_scale}
command -v "$LB" >/dev/null || { apt-get update -q >/dev/null; DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$LB" >/dev/null; }
[[ -n ${NO_BUILD:-} ]] || { cargo build -q --release --example demo && cargo build -q --release -p phalanx-loadtest; }
RELEASE=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
BIN=$RELEASE/examples
LOADTEST=$RELEASE/phalanx-loadtest
work=$(mktemp -d)
declare -A node_pid
other_pids=()
cleanup() {
    for p in "${node_pid[@]}" "${other_pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

redis_env=(REDIS_URL=redis://127.0.0.1:$REDIS_PORT)
if [[ -n ${NO_REDIS:-} ]]; then
    redis_env=()
else
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no --dir "$work" >/dev/null 2>&1 &
    other_pids+=($!)
fi
psql "$PG/postgres" -qtAc "SELECT 1 FROM pg_database WHERE datname = '$DB'" | grep -q 1 ||
    psql "$PG/postgres" -qc "CREATE DATABASE $DB"

# The nodes believe the balancer's X-Forwarded-For (it connects from 127.0.0.1), so the per-client
# limit sees each simulated user's own address, as behind a real ingress.
sed 's|^trusted_proxies = \[\]|trusted_proxies = ["127.0.0.1/32"]|' examples/demo/demo.toml >"$work/demo.toml"
grep -q '^trusted_proxies = \["127.0.0.1/32"\]' "$work/demo.toml" || { echo "demo.toml: trusted_proxies not found" >&2; exit 1; }

start_node() {
    local n=$1 port=$((PORT_BASE + $1))
    PHALANX_CONFIG=$work/demo.toml ADMIN_BIND=127.0.0.1:$((port + 20)) BIND=127.0.0.1:$port DATABASE_URL=$PG/$DB RUST_LOG=warn \
        env "${redis_env[@]}" "$BIN/demo" >>"$work/node$n.log" 2>&1 &
    node_pid[$n]=$!
    until curl -fs -o /dev/null "http://127.0.0.1:$port/readyz"; do
        kill -0 "${node_pid[$n]}" 2>/dev/null || { cat "$work/node$n.log"; exit 1; }
        sleep 0.05
    done
}
# The first node migrates and seeds alone; the others find the database ready.
start_node 1
for n in $(seq 2 "$NODES"); do start_node "$n"; done

# The repo's balancer config with this run's ports.
servers_nginx="" servers_haproxy=""
for n in $(seq 1 "$NODES"); do
    servers_nginx+="        server 127.0.0.1:$((PORT_BASE + n)) max_fails=3 fail_timeout=5s;\n"
    servers_haproxy+="    server demo$n 127.0.0.1:$((PORT_BASE + n)) check\n"
done
if [[ $LB == nginx ]]; then
    sed -e '/^\s*server 127\.0\.0\.1:300[0-9]/d' \
        -e "s|least_conn;|least_conn;\n$servers_nginx|" \
        -e "s|listen 127.0.0.1:8080|listen 127.0.0.1:$LB_PORT|" \
        -e "s|pid /tmp/phalanx-nginx.pid;|pid $work/nginx.pid;|" deploy/lb/nginx.conf >"$work/lb.conf"
    nginx -t -q -c "$work/lb.conf"
    nginx -c "$work/lb.conf" -g 'daemon off;' 2>>"$work/lb.log" &
else
    # maxconn within this shell's open-file limit (HAProxy needs about 2 descriptors per connection).
    maxconn=$(( $(ulimit -Hn) / 2 - 100 )); ((maxconn < 40000)) || maxconn=40000
    sed -e '/^\s*server demo[0-9] 127\.0\.0\.1:300[0-9]/d' -e "s|maxconn 40000|maxconn $maxconn|" \
        -e "s|bind 127.0.0.1:8081|bind 127.0.0.1:$LB_PORT|" deploy/lb/haproxy.cfg >"$work/lb.conf"
    printf "%b" "$servers_haproxy" >>"$work/lb.conf"
    haproxy -c -q -f "$work/lb.conf"
    haproxy -db -f "$work/lb.conf" 2>>"$work/lb.log" &
fi
other_pids+=($!)
lb_pid=${other_pids[-1]}
until curl -fs -o /dev/null "http://127.0.0.1:$LB_PORT/readyz"; do
    kill -0 "$lb_pid" 2>/dev/null || { cat "$work/lb.log"; exit 1; }
    sleep 0.05
done

# Requests a node answered on the API routes (not the balancer's health checks).
served() {
    curl -fs "http://127.0.0.1:$((PORT_BASE + $1 + 20))/metrics" |
        awk '/^http_server_request_duration_seconds_count/ && !/http_route="\/(metrics|readyz|healthz|status)"/ { s += $NF } END { printf "%d", s }'
}
load() {
    "$LOADTEST" --users "$USERS" --think 1s --duration "$1" --warmup "$WARMUP" \
        --no-server-metrics --json "$2" "http://127.0.0.1:$LB_PORT" >"$2.txt" 2>&1 || true
}

echo "== $LB, $NODES nodes, $([[ -n ${NO_REDIS:-} ]] && echo 'no Redis' || echo 'one Redis'), $USERS users x 1 req/s for $DURATION after $WARMUP warm-up"
declare -A before
for n in $(seq 1 "$NODES"); do before[$n]=$(served "$n"); done
load "$DURATION" "$work/even.json"
shares=()
for n in $(seq 1 "$NODES"); do shares+=($(($(served "$n") - ${before[$n]}))); done
[[ -s $work/even.json ]] || { tail -5 "$work/even.json.txt"; exit 1; }
python3 - "$work/even.json" "${shares[@]}" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
shares = [int(x) for x in sys.argv[2:]]
mean = sum(shares) / len(shares)
dev = max(abs(s - mean) / mean for s in shares) * 100
e = r["errors"]
kinds = ", ".join(f"{k} {e[k]}" for k in ("connect", "timeout", "io", "status_429", "status_503") if e[k])
lat = r["latency_ms"]
hits = "n/a" if r.get("cache_hit_ratio") is None else f"{r['cache_hit_ratio'] * 100:.1f} %"
print(f"throughput {r['rps']:.0f} req/s, avg {lat['avg']:.1f} ms, p99 {lat['p99']:.1f} ms, p99.9 {lat['p999']:.1f} ms, errors {e['total']}" + (f" ({kinds})" if kinds else "") + f", cache hits {hits}")
print("requests per node: " + " / ".join(f"{s:,}" for s in shares) + f"; max deviation from the mean {dev:.2f} %")
PY

if [[ -n ${OUT:-} ]]; then mkdir -p "$OUT" && cp "$work/even.json" "$OUT/$LB-$NODES-nodes$([[ -n ${NO_REDIS:-} ]] && echo -no-redis).json"; fi
[[ -n ${NO_ROLL:-} ]] && exit 0
echo "== rolling every node under load"
roll_for=$((NODES * 6 + 10))
load "${roll_for}s" "$work/roll.json" &
load_pid=$!
sleep 5
for n in $(seq 1 "$NODES"); do
    t0=$(date +%s.%N)
    kill -TERM "${node_pid[$n]}"
    wait "${node_pid[$n]}" 2>/dev/null || true
    start_node "$n"
    python3 -c "print(f'node $n: stopped, restarted and ready in {$(date +%s.%N) - $t0:.1f} s')"
done
wait "$load_pid" || true
python3 - "$work/roll.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
e = r["errors"]
print(f"while rolling: {r['requests_total']:,} requests, failed {e['total']} (connect {e['connect']}, timeout {e['timeout']}, io {e['io']}, 5xx {e['status_5xx']}, 429 {e['status_429']}), p99 {r['latency_ms']['p99']:.1f} ms")
PY
