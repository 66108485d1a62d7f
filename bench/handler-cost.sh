#!/usr/bin/env bash
# What a policy handler on every message costs end to end: `wasmta load` -> wasmta -> `wasmta
# sink`, all on this machine, durable spool, 2 KiB messages, 100 connections. Variants:
#   none  no smtp_server_message_received handler
#   lua   part (c) of plugins/example-policy.lua in Lua
#   rust  the same as the component plugins/rust/message-policy
#   go    the same as the component plugins/go/message-policy
#   lua-min / rust-min  a handler that only looks up one header (Lua; plugins/rust/hostile)
# Runs ROUNDS rounds of every variant, alternating, and prints injected msg/s, latency
# percentiles and the server's CPU time per message (user+system from /proc, steadier than
# throughput when other jobs share the cores; counted until the server is idle again, so it
# includes the deliveries to the sink), then the medians.
# MODE=inject measures injection only: the destination domain is suspended through the
# admin API, so messages are spooled and held, not delivered.
#
#   bench/handler-cost.sh [ROUNDS] [MESSAGES]      (VARIANTS="none rust-min" to choose)
set -euo pipefail
rounds="${1:-3}"
messages="${2:-20000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
build_release
cargo build --quiet --release --target wasm32-wasip2 --manifest-path "$root/plugins/Cargo.toml" --target-dir "$root/plugins/target"
"$root/plugins/go/build.sh" "$root/plugins/go/message-policy" >/dev/null
rust_wasm="$root/plugins/target/wasm32-wasip2/release/message_policy.wasm"
min_wasm="$root/plugins/target/wasm32-wasip2/release/hostile.wasm"
variants="${VARIANTS:-none lua rust go lua-min rust-min}"
mode="${MODE:-relay}"
go_wasm="$root/plugins/go/target/message-policy.wasm"
lua_policy="$(sed -n '/^-- (c)/,/^-- (a)/p' "$root/plugins/example-policy.lua")"

work="$(mktemp -d)"
sink_pid=""
cleanup() { [ -n "$sink_pid" ] && kill "$sink_pid" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
"$bin" sink --listen 127.0.0.1:2594 >/dev/null 2>&1 &
sink_pid=$!
ticks="$(getconf CLK_TCK)"

policy() { # variant dir
  local load="" lua=""
  case "$1" in
    rust) load="kumo.wasm.load { path = '$rust_wasm' }" ;;
    go) load="kumo.wasm.load { path = '$go_wasm' }" ;;
    lua) lua="$lua_policy" ;;
    rust-min) load="kumo.wasm.load { path = '$min_wasm' }" ;;
    lua-min) lua="kumo.on('smtp_server_message_received', function(msg) msg:get_first_named_header_value('X-Hostile') end)" ;;
  esac
  relay_policy "$2" 2525 "$load
  kumo.start_http_listener { listen = '127.0.0.1:8030' }" "$lua"
}

cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }

results="$work/results"
for round in $(seq "$rounds"); do
  for variant in $variants; do
    dir="$work/$variant-$round"
    mkdir -p "$dir"
    policy "$variant" "$dir" >"$dir/init.lua"
    (cd "$dir" && RUST_LOG=warn exec "$bin" serve --policy "$dir/init.lua" 2>"$dir/stderr") &
    pid=$!
    wait_port 2525
    wait_port 8030
    if [ "$mode" = inject ]; then
      WASMTA_ENDPOINT=http://127.0.0.1:8030 "$bin" suspend --domain example.com --reason bench --duration 1h >/dev/null
    fi
    before="$(cpu "$pid")"
    line="$("$bin" load --target 127.0.0.1:2525 --connections 100 --messages "$messages" --size 2048)"
    # deliveries go on after the last 250: count CPU until the server is idle
    after="$(cpu "$pid")"
    while sleep 0.5; now="$(cpu "$pid")"; [ "$now" != "$after" ]; do after="$now"; done
    kill -TERM "$pid"
    wait "$pid" || true
    rate="$(rate "$line")"
    us="$(awk -v a="$after" -v b="$before" -v t="$ticks" -v n="$messages" 'BEGIN { printf "%.1f", (a - b) / t * 1e6 / n }')"
    printf '%-8s round %d: %6s msg/s  %6s µs CPU/msg   (%s)\n' "$variant" "$round" "$rate" "$us" "$line"
    p50="$(sed -n 's/.*p50=\([0-9.]*\)ms.*/\1/p' <<<"$line")"
    p99="$(sed -n 's/.*p99=\([0-9.]*\)ms.*/\1/p' <<<"$line")"
    echo "$variant $rate $us $p50 $p99" >>"$results"
  done
done
echo
echo "medians over $rounds rounds ($mode):"
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
for variant in $variants; do
  rate="$(awk -v v="$variant" '$1 == v { print $2 }' "$results" | median)"
  us="$(awk -v v="$variant" '$1 == v { print $3 }' "$results" | median)"
  p50="$(awk -v v="$variant" '$1 == v { print $4 }' "$results" | median)"
  p99="$(awk -v v="$variant" '$1 == v { print $5 }' "$results" | median)"
  printf '%-8s %6s msg/s  %6s µs CPU/msg  p50 %s ms  p99 %s ms\n' "$variant" "$rate" "$us" "$p50" "$p99"
done
