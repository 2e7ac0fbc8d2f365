#!/usr/bin/env bash
# The newcomer's path: copy the README's whole-stack example into a new crate that depends on
# this workspace by path, build it, run it, and ask it for a page twice (a miss, then a hit).
# Usage: scripts/readme-example.sh            (from the workspace root; CI runs it)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
port=${README_EXAMPLE_PORT:-39180}
trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$work"' EXIT

# The example is the README's first ```rust block after the marker line.
awk '/<!-- readme-example -->/{found=1; next} found && /^```rust/{grab=1; next} grab && /^```/{exit} grab{print}' \
    "$root/README.md" >"$work/main.rs"
[ -s "$work/main.rs" ] || { echo "readme-example: no example after <!-- readme-example --> in README.md" >&2; exit 1; }
# The [dependencies] snippet, exactly as the README shows it, with the path to this checkout.
deps=$(awk '/<!-- readme-dependencies -->/{found=1; next} found && /^```toml/{grab=1; next} grab && /^```/{exit} grab{print}' "$root/README.md")
[ -n "$deps" ] || { echo "readme-example: no [dependencies] snippet after <!-- readme-dependencies -->" >&2; exit 1; }

mkdir -p "$work/newcomer/src"
mv "$work/main.rs" "$work/newcomer/src/main.rs"
{
    printf '[package]\nname = "newcomer"\nversion = "0.1.0"\nedition = "2021"\npublish = false\n\n[workspace]\n\n'
    # `phalanx = "0.1"` becomes a path dependency on this checkout; everything else is kept.
    printf '%s\n' "$deps" | sed -E "s|^phalanx = \"[^\"]*\"|phalanx = { path = \"$root\" }|"
} >"$work/newcomer/Cargo.toml"
grep -q "path = \"$root\"" "$work/newcomer/Cargo.toml" || { echo "readme-example: the snippet has no phalanx = \"…\" line" >&2; exit 1; }
# Same versions as the workspace, and its build cache.
cp "$root/Cargo.lock" "$work/newcomer/Cargo.lock"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$root/target}"
( cd "$work/newcomer" && cargo build --quiet )

BIND="127.0.0.1:$port" "$CARGO_TARGET_DIR/debug/newcomer" &
pid=$!
for _ in $(seq 1 100); do
    curl -s -o /dev/null "http://127.0.0.1:$port/" && break
    sleep 0.1
done
first=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/items/7")
second=$(curl -s -D - -o /dev/null "http://127.0.0.1:$port/items/7")
echo "$first" | grep -q "^HTTP/1.1 200" || { echo "readme-example: first request failed:"; echo "$first"; exit 1; } >&2
echo "$second" | grep -qi "^x-cache: HIT" || { echo "readme-example: second request was not a cache hit:"; echo "$second"; exit 1; } >&2
echo "$second" | grep -qi "^ratelimit:" || { echo "readme-example: no RateLimit field on the answer:"; echo "$second"; exit 1; } >&2
echo "readme-example: the README's stacked Router built, served, cached and rate-limited"
