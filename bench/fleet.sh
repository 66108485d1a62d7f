#!/usr/bin/env bash
# What sharing limits through Redis costs a relay (issue 19): rounds alternate between a
# path whose rate and connection limit are held in process (`local:`) and the same path
# with `kumo.configure_redis_throttles` (one GCRA script per message, one lease per
# connection, in a local redis-server). The rate is high enough never to hold anything
# back, so the difference is the cost of asking Redis. Reports end-to-end msg/s (until the
# sink holds them all) and the server's CPU per message.
#
#   SIZE=bytes MESSAGES=n bench/fleet.sh [ROUNDS]      (defaults 2048, 20000, 3)
set -euo pipefail
rounds="${1:-3}" size="${SIZE:-2048}" messages="${MESSAGES:-20000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
build_release
command -v redis-server >/dev/null || { echo "needs redis-server (apt-get install redis-server)" >&2; exit 1; }
rdir="$(mktemp -d)"
redis-server --port 2679 --bind 127.0.0.1 --save '' --appendonly no --dir "$rdir" >/dev/null &
redis=$!
trap 'kill $redis 2>/dev/null; rm -rf "$rdir"' EXIT
wait_port 2679
now() { date +%s.%N; }
cpu() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
one() { # LABEL SHARED(0|1)
  local w pid sink t0 t1 out c0 c1 scope="local:"
  w="$(mktemp -d)"
  [ "$2" = 1 ] && scope=""
  cat >"$w/init.lua" <<LUA
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '$w/spool' }
  kumo.configure_local_logs { log_dir = '$w/logs' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:2525', relay_hosts = { '127.0.0.1' } }
  $([ "$2" = 1 ] && echo "kumo.configure_redis_throttles { node = 'redis://127.0.0.1:2679' }")
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config { protocol = { smtp = { mx_list = { '127.0.0.1:2594' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path {
    enable_tls = 'Disabled', connection_limit = '${scope}32', max_message_rate = '${scope}1000000/s',
  }
end)
LUA
  "$bin" sink --listen 127.0.0.1:2594 --exit-after "$messages" >/dev/null 2>&1 &
  sink=$!
  (cd "$w" && RUST_LOG=warn exec "$bin" serve --policy init.lua >"$w/server.log" 2>&1) &
  pid=$!
  wait_port 2525 || { cat "$w/server.log" >&2; exit 1; }
  c0="$(cpu "$pid")"
  t0="$(now)"
  out="$("$bin" load --target 127.0.0.1:2525 --connections 100 --messages "$messages" --size "$size" | tail -1)"
  wait "$sink"
  t1="$(now)"
  c1="$(cpu "$pid")"
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$w"
  awk -v l="$1" -v n="$messages" -v a="$t0" -v b="$t1" -v c="$c0" -v d="$c1" -v acc="$(rate "$out")" \
    'BEGIN { printf "%-6s %6.0f msg/s end-to-end  %4.0f us CPU/msg  (accepted %s msg/s)\n", l, n / (b - a), (d - c) * 1e6 / n, acc }'
}
for _ in $(seq "$rounds"); do
  one local 0
  one redis 1
done
