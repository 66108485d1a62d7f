#!/usr/bin/env bash
# Restart at scale (reliability-tests T-13): queue N messages of SIZE bytes, kill -9 the
# server, start it again and time how long until the spool is enumerated and the listener
# accepts; then check every message is queued exactly once (scheduled + ready = N).
#
#   bench/restart.sh [MESSAGES] [SIZE]
set -euo pipefail
messages="${1:-100000}"
size="${2:-1024}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
build_release
server_workdir
# nothing listens on port 9: every attempt is a transient failure, retried in an hour
local_policy 2529 8029 "kumo.on('get_queue_config', function()
  return kumo.make_queue_config { retry_interval = '1 hour', protocol = { smtp = { mx_list = { '127.0.0.1:9' } } } }
end)"
start() {
  (cd "$work" && RUST_LOG=info exec "$bin" serve --policy "$work/init.lua" 2>>"$work/stderr") &
  pid=$!
}
start
wait_port 2529
wait_port 8029
"$bin" load --target 127.0.0.1:2529 --connections 50 --messages "$messages" --size "$size"
sleep 1
kill -9 "$pid"
wait "$pid" 2>/dev/null || true
: >"$work/stderr"
t0=$(date +%s.%N)
start
wait_port 2529
t1=$(date +%s.%N)
grep -h "message(s) enumerated" "$work/stderr"
queued() {
  curl -s http://127.0.0.1:8029/metrics.json | python3 -c '
import json, sys
m = json.load(sys.stdin)
print(m["message_count"]["value"])'
}
wait_port 8029
total="$(queued)"
awk -v a="$t0" -v b="$t1" -v n="$messages" -v q="$total" 'BEGIN {
  printf "restart with %d spooled: listener accepting after %.2f s (%.0f msg/s enumerated); queued after restart: %d\n", n, b - a, n / (b - a), q
}'
[ "$total" -eq "$messages" ] || { echo "MISMATCH: $total queued, $messages spooled" >&2; exit 1; }
