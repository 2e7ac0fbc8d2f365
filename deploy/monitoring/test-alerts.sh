#!/usr/bin/env bash
# Runs the demo (SQLite, no Redis), sends it a cache-friendly workload, scrapes /metrics twice,
# and runs `promtool test rules` on tests built from the scraped series
# (deploy/monitoring/alert_tests.py). ALERT_TEST_PORT (default 17520) and the port after it (the admin listener) must be free.
set -euo pipefail
cd "$(dirname "$0")/../.."
PORT=${ALERT_TEST_PORT:-17520}
ADMIN_PORT=$((PORT + 1))
DEMO=${DEMO_BIN:-}
if [[ -z $DEMO ]]; then
    cargo build -q --example demo
    DEMO=${CARGO_TARGET_DIR:-$PWD/target}/debug/examples/demo
fi
work=$(mktemp -d)
pid=
cleanup() { [[ -n $pid ]] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
(cd "$work" && BIND=127.0.0.1:$PORT ADMIN_BIND=127.0.0.1:$ADMIN_PORT RUST_LOG=warn exec "$DEMO" >"$work/demo.log" 2>&1) &
pid=$!
for _ in $(seq 1 300); do
    curl -fs -o /dev/null "http://127.0.0.1:$PORT/readyz" && break
    kill -0 "$pid" 2>/dev/null || { cat "$work/demo.log"; exit 1; }
    sleep 0.2
done
base=http://127.0.0.1:$PORT
# /metrics is served on the admin listener only.
admin=http://127.0.0.1:$ADMIN_PORT
# Work through the whole stack (cache, limiter, admission, breaker, pools, upstream), so that
# every family is exported.
# Each batch comes from its own loopback address, so that the per-client limit lets it through.
urls() {
    for i in $(seq 1 "$1"); do printf 'url = "%s/items/%d"\noutput = /dev/null\n' "$base" $((i % 5 + 1)); done
    printf 'url = "%s/items"\noutput = /dev/null\nurl = "%s/upstream/quote"\noutput = /dev/null\n' "$base" "$base"
}
send() { for k in $(seq 2 "$((1 + $1 / 40))"); do urls 40 | curl -s --interface "127.0.0.$k" -K -; done; }
send 80
curl -s "$admin/metrics" >"$work/before.prom"
t0=$(date +%s.%N)
sleep 1
send 400
curl -s "$admin/metrics" >"$work/after.prom"
t1=$(date +%s.%N)
gap=$(python3 -c "print($t1 - $t0)")
python3 deploy/monitoring/alert_tests.py "$work/before.prom" "$work/after.prom" "$gap" \
    deploy/monitoring/alerts.yaml deploy/monitoring/grafana-dashboard.json >"$work/tests.yaml"
# promtool resolves rule_files relative to the test file.
cp deploy/monitoring/alerts.yaml "$work/"
sed -i "s|deploy/monitoring/alerts.yaml|alerts.yaml|" "$work/tests.yaml"
promtool test rules "$work/tests.yaml"
