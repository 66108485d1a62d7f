#!/usr/bin/env bash
# A/B of two builds on the same machine in the same minutes: rounds alternate between the
# binaries, each a 100-connection run of 20,000 messages of 2 KiB, and the medians of
# msg/s and the server's CPU per message (user+system until it is idle again) are printed.
#   MODE=relay  through `wasmta sink` (default)
#   MODE=inject injection only: the destination suspended, messages spooled and held
#
#   SIZE=bytes MESSAGES=n  (defaults 2048 and 20000)
#
#   bench/ab.sh BASE_BIN NEW_BIN [ROUNDS]
set -euo pipefail
base="$(realpath "$1")" new="$(realpath "$2")" rounds="${3:-5}" mode="${MODE:-relay}"
size="${SIZE:-2048}" messages="${MESSAGES:-20000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
results="$(mktemp)"
one() { # BIN LABEL
  local w sink="" pid c0 c1 prev out
  w="$(mktemp -d)"
  relay_policy "$w" 2525 "kumo.start_http_listener { listen = '127.0.0.1:8030' }" "" >"$w/init.lua"
  if [ "$mode" = relay ]; then
    "$1" sink --listen 127.0.0.1:2594 >/dev/null 2>&1 &
    sink=$!
  fi
  (cd "$w" && RUST_LOG=warn exec "$1" serve --policy init.lua >"$w/server.log" 2>&1) &
  pid=$!
  if ! wait_port 2525 || ! wait_port 8030; then
    cat "$w/server.log" >&2
    exit 1
  fi
  if [ "$mode" = inject ]; then
    WASMTA_ENDPOINT=http://127.0.0.1:8030 "$1" suspend --domain example.com --reason ab --duration 1h >/dev/null
  fi
  c0="$(awk '{print $14 + $15}' "/proc/$pid/stat")"
  out="$("$1" load --target 127.0.0.1:2525 --connections 100 --messages "$messages" --size "$size" | tail -1)"
  prev=-1
  while c1="$(awk '{print $14 + $15}' "/proc/$pid/stat")" && [ "$c1" != "$prev" ]; do prev="$c1"; sleep 1; done
  kill "$pid" ${sink:+"$sink"} 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$w"
  echo "$2 $(rate "$out") $(((c1 - c0) * 1000000 / $(getconf CLK_TCK) / messages))" | tee -a "$results"
}
for _ in $(seq "$rounds"); do
  one "$base" base
  one "$new" new
done
python3 - "$results" "$mode" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
for label in ("base", "new"):
    r = [(int(a), int(b)) for l, a, b in rows if l == label]
    print(f"{sys.argv[2]} {label}: median {statistics.median(x for x, _ in r):.0f} msg/s, "
          f"{statistics.median(y for _, y in r):.0f} us CPU/msg over {len(r)} rounds")
PY
rm -f "$results"
