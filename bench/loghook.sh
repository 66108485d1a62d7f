#!/usr/bin/env bash
# What a JSON webhook log hook on every record costs a relay at full speed (issue 18):
# rounds alternate between the plain relay and the same relay with
# `log_hooks:new_json { batch_size = 100, max_batch_latency = '100ms' }` posting to a
# local receiver (`wasmta webhook-sink`). Each round injects MESSAGES of SIZE bytes on
# 100 connections and reports the end-to-end rate (until the sink holds them all) and,
# with the hook, how long until the receiver holds every Delivery record.
#
# MIN_BATCH sets the hook's min_batch_size (default 1: a batch takes the records waiting;
# 100: batches wait up to max_batch_latency to fill, fewer and larger POSTs).
#
#   SIZE=bytes MESSAGES=n MIN_BATCH=n bench/loghook.sh [ROUNDS]   (defaults 2048, 20000, 1, 3)
set -euo pipefail
rounds="${1:-3}" size="${SIZE:-2048}" messages="${MESSAGES:-20000}" min_batch="${MIN_BATCH:-1}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
build_release
results="$(mktemp)"
now() { date +%s.%N; }
hooked() { curl -s http://127.0.0.1:2600/ | python3 -c 'import json,sys; print(json.load(sys.stdin)["records"].get("Delivery", 0))'; }
one() { # LABEL HOOK(0|1)
  local w pid sink recv="" t0 t1 t2 out
  w="$(mktemp -d)"
  {
    echo "local kumo = require 'kumo'"
    if [ "$2" = 1 ]; then
      cat <<LUA
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new_json {
  name = 'webhook', url = 'http://127.0.0.1:2600/log',
  batch_size = 100, min_batch_size = $min_batch, max_batch_latency = '100ms',
  queue_config = { retry_interval = '1s', max_retry_interval = '5s' },
}
LUA
    fi
    relay_policy "$w" 2525
  } >"$w/init.lua"
  "$bin" sink --listen 127.0.0.1:2594 --exit-after "$messages" >/dev/null 2>&1 &
  sink=$!
  if [ "$2" = 1 ]; then
    "$bin" webhook-sink --listen 127.0.0.1:2600 &
    recv=$!
    wait_port 2600
  fi
  (cd "$w" && RUST_LOG=warn exec "$bin" serve --policy init.lua >"$w/server.log" 2>&1) &
  pid=$!
  wait_port 2525 || { cat "$w/server.log" >&2; exit 1; }
  t0="$(now)"
  out="$("$bin" load --target 127.0.0.1:2525 --connections 100 --messages "$messages" --size "$size" | tail -1)"
  wait "$sink" # it exits once it holds them all
  t1="$(now)"
  t2="$t1"
  if [ "$2" = 1 ]; then
    while [ "$(hooked)" -lt "$messages" ]; do sleep 0.05; done
    t2="$(now)"
  fi
  # the server's CPU time (utime + stime, clock ticks) over the whole round, per message
  cpu="$(awk -v n="$messages" -v hz="$(getconf CLK_TCK)" '{ printf "%.0f", ($14 + $15) / hz * 1e6 / n }' "/proc/$pid/stat")"
  kill "$pid" ${recv:+"$recv"} 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$w"
  awk -v l="$1" -v n="$messages" -v a="$t0" -v b="$t1" -v c="$t2" -v acc="$(rate "$out")" \
    -v cpu="$cpu" 'BEGIN { printf "%s %.0f %.2f %s %s\n", l, n / (b - a), c - b, acc, cpu }' | tee -a "$results"
}
for _ in $(seq "$rounds"); do
  one plain 0
  one hooked 1
done
python3 - "$results" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
med, cpu = {}, {}
for label in ("plain", "hooked"):
    r = [(float(a), float(b), float(c), float(d)) for l, a, b, c, d in rows if l == label]
    med[label] = statistics.median(x for x, _, _, _ in r)
    cpu[label] = statistics.median(w for _, _, _, w in r)
    print(f"{label}: median end-to-end {med[label]:.0f} msg/s (accepted {statistics.median(z for _, _, z, _ in r):.0f} msg/s), "
          f"server CPU {cpu[label]:.0f} µs/msg, "
          f"last Delivery record at the receiver {statistics.median(y for _, y, _, _ in r):.2f} s after the last delivery")
print(f"cost of the hook: {100 * (1 - med['hooked'] / med['plain']):.1f} % of end-to-end msg/s, "
      f"{100 * (cpu['hooked'] / cpu['plain'] - 1):.1f} % more server CPU per message")
PY
rm -f "$results"
