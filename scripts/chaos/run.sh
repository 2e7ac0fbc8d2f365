#!/usr/bin/env bash
# The demo on PostgreSQL + Redis under load while a dependency fails, one line per case.
#
#   scripts/chaos/run.sh [CASE ...]      cases: steady redis-kill redis-hang pg-restart overload
#                                        overload-limited (default: all, in that order)
#
# Everything runs on loopback with private servers (a redis-server and a PostgreSQL cluster made in
# a temporary directory), so the machine's shared Redis and PostgreSQL are never touched. Each case
# is bounded in time and the script stops everything it started on exit. Environment:
#   STEADY_USERS (10000)     users of the steady case (think time 1 s, default mix)
#   USERS (default 2000)     users of the failure cases (think time 1 s)
#   OVERLOAD_USERS (10000)   users of the closed-loop case (think time 0)
#   PORT_BASE (17900)        demo, admin, Redis and PostgreSQL take PORT_BASE..PORT_BASE+3
#   OUT (results/chaos)      where the JSON reports and the summary go
#   LOADTEST_ARGS            extra arguments for every load generator run
#   NO_REDIS=1               the demo without Redis (L1 only, in-process limiter): a baseline
set -euo pipefail
cd "$(dirname "$0")/../.."

CASES=${*:-steady redis-kill redis-hang pg-restart overload overload-limited}
USERS=${USERS:-2000}
STEADY_USERS=${STEADY_USERS:-10000}
OVERLOAD_USERS=${OVERLOAD_USERS:-10000}
PORT_BASE=${PORT_BASE:-17900}
OUT=${OUT:-results/chaos}
LOADTEST_ARGS=${LOADTEST_ARGS:-}
DEMO=127.0.0.1:$PORT_BASE
ADMIN=127.0.0.1:$((PORT_BASE + 1))
REDIS_PORT=$((PORT_BASE + 2))
PG_PORT=$((PORT_BASE + 3))
PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

mkdir -p "$OUT"
if [ -z "${NO_BUILD:-}" ]; then
    cargo build --release --example demo >&2
    cargo build --release -p phalanx-loadtest >&2
fi
RELEASE=$(realpath -m "${CARGO_TARGET_DIR:-target}")/release
BIN=$RELEASE/examples
LOADTEST=$RELEASE/phalanx-loadtest
WORK=$(mktemp -d /tmp/phalanx-chaos.XXXXXX)
chmod 755 "$WORK"
REDIS_PID=
DEMO_PID=

say() { printf '%s\n' "$*" | tee -a "$OUT/summary.txt"; }
log() { printf '[chaos] %s\n' "$*" >&2; }

cleanup() {
    [ -n "$DEMO_PID" ] && kill "$DEMO_PID" 2>/dev/null || true
    [ -n "$REDIS_PID" ] && { kill -CONT "$REDIS_PID" 2>/dev/null; kill -9 "$REDIS_PID" 2>/dev/null; } || true
    runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -m immediate stop >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    # The demo's warnings (what failed and why), the last 2,000 lines.
    cat "$WORK/demo-earlier.log" "$WORK/demo.log" 2>/dev/null | grep -v ' INFO ' | tail -n 2000 >"$OUT/demo.log" || true
    rm -rf "$WORK"
}
trap cleanup EXIT

start_redis() {
    redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --save "" --appendonly no >"$WORK/redis.log" 2>&1 &
    REDIS_PID=$!
    for _ in $(seq 1 100); do redis-cli -p "$REDIS_PORT" ping >/dev/null 2>&1 && return 0; sleep 0.05; done
    log "redis did not start"; return 1
}

pg() { runuser -u postgres -- "$PG_BIN/pg_ctl" -D "$WORK/pg" -l "$WORK/sock/pg.log" "$@" >/dev/null; }

start_pg() {
    if [ ! -d "$WORK/pg" ]; then
        mkdir -p "$WORK/pg" "$WORK/sock"
        chown postgres "$WORK/pg" "$WORK/sock"
        runuser -u postgres -- "$PG_BIN/initdb" -D "$WORK/pg" -U postgres --auth=trust >/dev/null
    fi
    pg -o "-p $PG_PORT -k $WORK/sock -c listen_addresses=127.0.0.1 -c max_connections=200" -w start
}

# start_demo [CONFIG]: the demo on its embedded configuration, or on CONFIG.
start_demo() {
    local redis=(REDIS_URL="redis://127.0.0.1:$REDIS_PORT") config=()
    [ -n "${NO_REDIS:-}" ] && redis=()
    [ -n "${1:-}" ] && config=(PHALANX_CONFIG="$1")
    env BIND="$DEMO" ADMIN_BIND="$ADMIN" "${config[@]}" \
        DATABASE_URL="postgres://postgres@127.0.0.1:$PG_PORT/postgres" "${redis[@]}" \
        "$BIN/demo" >"$WORK/demo.log" 2>&1 &
    DEMO_PID=$!
    for _ in $(seq 1 600); do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://$DEMO/readyz")" = 200 ] && return 0
        sleep 0.1
    done
    log "demo did not become ready"; tail -n 20 "$WORK/demo.log" >&2; return 1
}

# loadtest NAME USERS THINK WARMUP DURATION MIX [extra args...]: runs in the background.
loadtest() {
    local name=$1 users=$2 think=$3 warmup=$4 duration=$5 mix=$6
    shift 6
    # shellcheck disable=SC2086
    "$LOADTEST" --users "$users" --think "$think" --warmup "$warmup" --duration "$duration" \
        --mix "$mix" --progress 0 --json "$OUT/$name.json" $LOADTEST_ARGS "$@" \
        "http://$DEMO" >"$OUT/$name.txt" 2>&1 &
}

field() { jq -r "$2" "$OUT/$1.json"; }

# Reads Redis has served (keyspace hits + misses): a rise means the cache consults L2 again.
redis_reads() {
    redis-cli -p "$REDIS_PORT" info stats 2>/dev/null |
        awk -F: '/^keyspace_(hits|misses)/ { n += $2 } END { print n + 0 }'
}

# Seconds from now until Redis sees new reads from the demo, checked every 100 ms (at most 30 s).
time_to_l2_reads() {
    local start before now
    start=$(date +%s.%N)
    before=$(redis_reads)
    for _ in $(seq 1 300); do
        sleep 0.1
        now=$(redis_reads)
        if [ "$now" -gt "$before" ]; then
            echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.1f'
            return
        fi
        before=$now
    done
    echo "never (30 s)"
}

summary_line() {
    local name=$1 label=$2 extra=$3
    local total s5 p99 hits
    total=$(field "$name" '.responses')
    s5=$(field "$name" '.status["5xx"] + .errors.timeout + .errors.connect + .errors.io')
    p99=$(field "$name" '.latency_ms.p99')
    hits=$(field "$name" 'if .cache_hit_ratio == null then "n/a" else (.cache_hit_ratio * 100 | floor | tostring) + " %" end')
    say "$label | GET: $s5 5xx or failed of $total | p99 $p99 ms | hits $hits | $extra"
}

# The rate limiter's decisions by outcome, summed over policies, from the admin /metrics.
decisions() {
    curl -s "http://$ADMIN/metrics" |
        awk -v want="$1" '/^phalanx_ratelimit_decisions_total/ && $0 ~ "outcome=\"" want "\"" { n += $NF } END { printf "%d", n }'
}

# CPU seconds (user + system) a process and its exited children have used so far.
cpu_seconds() {
    local pid total=0 ticks
    ticks=$(getconf CLK_TCK)
    for pid in "$@"; do
        [ -r "/proc/$pid/stat" ] || continue
        total=$(awk -v t="$total" '{ sub(/^.*\) /, ""); print t + $12 + $13 + $14 + $15 }' "/proc/$pid/stat")
    done
    echo "$total / $ticks" | bc -l
}

# The PostgreSQL cluster's processes: the postmaster and its backends.
pg_pids() {
    local master
    master=$(head -n 1 "$WORK/pg/postmaster.pid" 2>/dev/null) || return 0
    echo "$master" $(pgrep -P "$master")
}

# Redis commands served so far, by command, as "name calls" lines.
redis_calls() {
    redis-cli -p "$REDIS_PORT" info commandstats 2>/dev/null |
        awk -F'[:=,]' '/^cmdstat_/ { sub(/^cmdstat_/, "", $1); print $1, $3 }'
}

case_steady() {
    log "steady: $STEADY_USERS users, think 1 s, default mix (reads and writes), warm-up 20 s, 60 s measured"
    local open0 all0 open1 all1
    open0=$(decisions fail_open)
    all0=$(( $(decisions allowed) + $(decisions limited) + open0 + $(decisions fail_closed) ))
    loadtest steady "$STEADY_USERS" 1s 20s "${STEADY_DURATION:-60s}" crates/phalanx-loadtest/mixes/default.toml
    local lt=$!
    # CPU and Redis commands over the measured window (the warm-up excluded).
    sleep 20
    local demo0 redis0 pg0 gen0 calls0 t0
    demo0=$(cpu_seconds "$DEMO_PID"); redis0=$(cpu_seconds "$REDIS_PID"); pg0=$(cpu_seconds $(pg_pids))
    gen0=$(cpu_seconds "$lt"); calls0=$(redis_calls); t0=$(date +%s.%N)
    sleep 10
    curl -s "http://$ADMIN/status" >"$OUT/steady-status.json" || true
    local measured=${STEADY_DURATION:-60s}
    sleep $(( ${measured%s} - 12 ))
    local demo1 redis1 pg1 gen1 t1 span
    demo1=$(cpu_seconds "$DEMO_PID"); redis1=$(cpu_seconds "$REDIS_PID"); pg1=$(cpu_seconds $(pg_pids))
    gen1=$(cpu_seconds "$lt"); t1=$(date +%s.%N)
    span=$(echo "$t1 - $t0" | bc -l)
    { echo "# Redis commands during the measured window (calls), and the cores each process used"
      join -a 2 <(echo "$calls0" | sort) <(redis_calls | sort) |
          awk 'NF == 2 { print $1, $2 } NF == 3 { print $1, $3 - $2 }' | sort -k2 -n -r
      printf 'cores demo %.2f redis %.2f postgresql %.2f generator %.2f over %.0f s\n' \
          "$(echo "($demo1 - $demo0) / $span" | bc -l)" "$(echo "($redis1 - $redis0) / $span" | bc -l)" \
          "$(echo "($pg1 - $pg0) / $span" | bc -l)" "$(echo "($gen1 - $gen0) / $span" | bc -l)" "$span"
    } >"$OUT/steady-resources.txt"
    wait "$lt" || true
    open1=$(decisions fail_open)
    all1=$(( $(decisions allowed) + $(decisions limited) + open1 + $(decisions fail_closed) ))
    say "steady ($STEADY_USERS users, think 1 s) | $(field steady '.rps | floor') req/s | avg $(field steady '.latency_ms.avg') ms | p99 $(field steady '.latency_ms.p99') ms | p99.9 $(field steady '.latency_ms.p999') ms | errors $(field steady '.errors.total') of $(field steady '.responses') | hits $(field steady '.cache_hit_ratio * 1000 | floor / 10') % | limiter fail-open $((open1 - open0)) of $((all1 - all0)) decisions"
}

# redis_outage NAME STOP START LABEL: Redis stopped with STOP when measurement starts, brought
# back with START after 20 s.
redis_outage() {
    local name=$1 stop=$2 start=$3 label=$4
    log "$name: $USERS users; Redis stopped ($stop) when measurement starts, back ($start) after 20 s"
    loadtest "$name" "$USERS" 1s 15s 30s scripts/chaos/get.toml
    local lt=$!
    sleep 15
    $stop
    sleep 20
    $start
    local back
    back=$(time_to_l2_reads)
    wait "$lt" || true
    summary_line "$name" "$label" "L2 read again ${back} s after it is back"
}

redis_kill() { kill -9 "$REDIS_PID"; wait "$REDIS_PID" 2>/dev/null || true; }
redis_stop() { kill -STOP "$REDIS_PID"; }
redis_cont() { kill -CONT "$REDIS_PID"; }

case_redis_kill() { redis_outage redis-kill redis_kill start_redis "redis-kill (SIGKILL 20 s, window: outage + 10 s)"; }
case_redis_hang() { redis_outage redis-hang redis_stop redis_cont "redis-hang (SIGSTOP 20 s, window: hang + 10 s)"; }

case_pg_restart() {
    log "pg-restart: $USERS readers and 20 writers; PostgreSQL stopped for 10 s when measurement starts"
    loadtest pg-restart "$USERS" 1s 15s 30s scripts/chaos/get.toml
    local lt=$!
    loadtest pg-restart-writes 20 1s 15s 30s scripts/chaos/put.toml
    local lw=$!
    sleep 15
    pg -m fast -w stop
    sleep 10
    pg -o "-p $PG_PORT -k $WORK/sock -c listen_addresses=127.0.0.1 -c max_connections=200" -w start
    local start recovered=never
    start=$(date +%s.%N)
    for _ in $(seq 1 300); do
        code=$(curl -s -o /dev/null -w '%{http_code}' -X PUT "http://$DEMO/items/1" \
            -H 'content-type: application/json' -H 'x-api-key: demo-writer-key' \
            -d '{"name":"item 1","price_cents":1,"stock":5}')
        if [ "$code" = 200 ]; then
            recovered=$(echo "$(date +%s.%N) - $start" | bc -l | xargs printf '%.1f')
            break
        fi
        sleep 0.1
    done
    wait "$lt" "$lw" || true
    local w503 wtotal wp99
    w503=$(field pg-restart-writes '.errors.status_503')
    wtotal=$(field pg-restart-writes '.responses')
    wp99=$(field pg-restart-writes '.latency_ms.p99')
    summary_line pg-restart "pg-restart (stopped 10 s, window: outage + 20 s)" \
        "PUT: $w503 of $wtotal answered 503, p99 $wp99 ms | writes succeed ${recovered} s after PostgreSQL is back"
}

restart_demo() {
    kill "$DEMO_PID" 2>/dev/null || true
    wait "$DEMO_PID" 2>/dev/null || true
    cat "$WORK/demo.log" >>"$WORK/demo-earlier.log" 2>/dev/null || true
    start_demo "$@"
}

# The demo's configuration with its per-client limits in shadow mode (decided and counted, never
# enforced), and the premium tier allowed to ask for critical priority.
overload_config() {
    python3 - "$WORK/overload.toml" <<'PY'
import sys
text = open("examples/demo/demo.toml").read()
for old, new in [("shadow = false", "shadow = true"), ('premium = "high"', 'premium = "critical"')]:
    assert text.count(old) == 1, old
    text = text.replace(old, new)
open(sys.argv[1], "w").write(text)
PY
    echo "$WORK/overload.toml"
}

# Closed-loop users hammer as fast as they are answered, so each is far over its own per-client
# limit; with the limits enforced most answers are that limit's 429s (case overload-limited).
# This case measures the server's own overload protection (admission, coalescing, the cache):
# the limits in shadow mode; the peak is the best of 64, 256 and 1,024 closed-loop users; 50
# premium users send critical requests (think 100 ms) alongside the overload.
case_overload() {
    log "overload: limits in shadow mode; peak with 64/256/1024 closed-loop users, then $OVERLOAD_USERS + 50 critical"
    restart_demo "$(overload_config)"
    local peak=0 n rate
    for n in 64 256 1024; do
        loadtest "overload-peak-$n" "$n" 0 5s 10s scripts/chaos/get.toml
        wait $! || true
        rate=$(field "overload-peak-$n" '.status["2xx"] / .duration_s | floor')
        log "  $n users: $rate 2xx/s"
        [ "$rate" -gt "$peak" ] && peak=$rate
    done
    loadtest overload "$OVERLOAD_USERS" 0 10s 20s scripts/chaos/get.toml --timeout 5s
    local lo=$!
    loadtest overload-critical 50 100ms 10s 20s scripts/chaos/critical.toml --timeout 5s
    local lc=$!
    sleep 20
    curl -s "http://$ADMIN/status" >"$OUT/overload-status.json" || true
    wait "$lo" "$lc" || true
    local good ratio critical
    good=$(field overload '.status["2xx"] / .duration_s')
    ratio=$(echo "$good / $peak" | bc -l | xargs printf '%.2f')
    critical=$(field overload-critical '"\(.status["2xx"]) of \(.responses) (\(.status["2xx"] / .responses * 1000 | floor / 10) %)"')
    summary_line overload "overload ($OVERLOAD_USERS users, think 0, limits in shadow mode)" \
        "goodput $(printf '%.0f' "$good") 2xx/s = $ratio x the peak $peak 2xx/s | critical: $critical answered 2xx"
    restart_demo
}

# The same overload with the per-client limits enforced: most answers are 429s, fast.
case_overload_limited() {
    log "overload-limited: $OVERLOAD_USERS closed-loop users, the demo's limits enforced"
    loadtest overload-limited "$OVERLOAD_USERS" 0 10s 20s scripts/chaos/get.toml --timeout 5s
    wait $! || true
    local good s429
    good=$(field overload-limited '.status["2xx"] / .duration_s | floor')
    s429=$(field overload-limited '.errors.status_429')
    summary_line overload-limited "overload-limited ($OVERLOAD_USERS users, think 0, limits enforced)" \
        "$good 2xx/s; $s429 answered 429 by the per-client limit"
}

: >"$OUT/summary.txt"
start_redis
start_pg
start_demo
say "# $(date -u +%F) demo on PostgreSQL + Redis (private, loopback); demo, Redis, PostgreSQL and the generator share $(nproc) cores"
for c in $CASES; do
    case "$c" in
        steady) case_steady ;;
        redis-kill) case_redis_kill ;;
        redis-hang) case_redis_hang ;;
        pg-restart) case_pg_restart ;;
        overload) case_overload ;;
        overload-limited) case_overload_limited ;;
        *) log "unknown case $c"; exit 2 ;;
    esac
done
