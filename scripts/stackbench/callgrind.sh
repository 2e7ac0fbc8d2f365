#!/usr/bin/env bash
# Instructions per request, in process (no sockets), under callgrind: each mode of
# crates/phalanx-stackbench (the routers of `STACK_LOOP` in benches/stack.rs) is run for N1 and N2
# requests and (I(N2) - I(N1)) / (N2 - N1) is reported, so start-up and the first misses that fill
# the cache do not count.
#
#   scripts/stackbench/callgrind.sh                       # the default modes, 1,000 peer addresses
#   ADDRESSES=1 scripts/stackbench/callgrind.sh stack     # one client address
set -euo pipefail
cd "$(dirname "$0")/../.."
TARGET=${CARGO_TARGET_DIR:-$PWD/target}
N1=${N1:-1000}
N2=${N2:-6000}
ADDRESSES=${ADDRESSES:-1000}
MODES=("$@")
if [[ ${#MODES[@]} == 0 ]]; then
    MODES=(bare stack stack-miss stack-no-ratelimit-headers peer
        layer-metrics layer-timeout layer-classify layer-ratelimit layer-ratelimit-no-headers layer-cache-hit
        layer-cache-pass layer-admission layer-breaker
        layer-peer-metrics layer-peer-governor layer-peer-cache layer-peer-loadshed)
fi
if [[ -z "${STACKBENCH_LOCKED:-}" ]]; then
    cargo build --release -p phalanx-stackbench >&2
    STACKBENCH_LOCKED=1 exec flock /tmp/phalanx-load.lock "$0" "$@"
fi
BIN=$TARGET/release/phalanx-stackbench
OUT=${OUT:-$PWD/results/stackbench/callgrind-$(date -u +%Y%m%dT%H%M%SZ)}
mkdir -p "$OUT"
count() { # mode requests
    local f=$OUT/$1-$2.out
    valgrind --tool=callgrind --callgrind-out-file="$f" "$BIN" loop "$1" "$2" "$ADDRESSES" 2>"$f.log" >/dev/null
    awk '/^summary:/ { print $2 }' "$f"
}
bare=
echo "mode instructions/request (over bare), $ADDRESSES addresses, ($N2 - $N1) requests" | tee "$OUT/summary.txt"
for m in "${MODES[@]}"; do
    a=$(count "$m" "$N1")
    b=$(count "$m" "$N2")
    per=$(( (b - a) / (N2 - N1) ))
    [[ $m == bare ]] && bare=$per
    echo "$m $per${bare:+ (+$((per - bare)))}" | tee -a "$OUT/summary.txt"
done
