#!/usr/bin/env bash
# A provider blocks the sender for hours (issue 17): N messages of SIZE bytes wait in a
# suspended queue. Reports the server's memory per waiting message, then kill -9, the
# restart on the full spool (time until enumerated and accepting, memory), and the drain
# to the sink once the destination is back (msg/s, peak memory while draining).
#
#   bench/backlog.sh [MESSAGES] [SIZE]      (the spool goes under ${TMPDIR:-/tmp})
set -euo pipefail
messages="${1:-300000}"
size="${2:-32768}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
scratch="${TMPDIR:-/tmp}"
need_kib=$((messages * (size + 1024) / 1024 * 12 / 10))
free_kib="$(df -Pk "$scratch" | awk 'NR == 2 { print $4 }')"
if [ "$free_kib" -lt "$need_kib" ]; then
  echo "SKIPPED: $messages x $size bytes need about $((need_kib / 1024 / 1024)) GiB in $scratch, $((free_kib / 1024 / 1024)) GiB free" >&2
  exit 0
fi
build_release
server_workdir
sink=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; [ -n "$sink" ] && kill "$sink" 2>/dev/null; rm -rf "$work"' EXIT
local_policy 2531 8031 "kumo.on('get_queue_config', function()
  return kumo.make_queue_config { retry_interval = '10 seconds', protocol = { smtp = { mx_list = { '127.0.0.1:2594' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path { enable_tls = 'Disabled', connection_limit = 32 }
end)"
start() {
  (cd "$work" && RUST_LOG=info exec "$bin" serve --policy "$work/init.lua" 2>>"$work/stderr") &
  pid=$!
}
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
count() {
  curl -s http://127.0.0.1:8031/metrics.json | python3 -c '
import json, sys
print(json.load(sys.stdin)["message_count"]["value"])'
}

start
wait_port 2531
wait_port 8031
WASMTA_ENDPOINT=http://127.0.0.1:8031 "$bin" suspend --domain example.com --reason "provider block" --duration 10h >/dev/null
before="$(rss)"
t0=$(date +%s.%N)
"$bin" load --target 127.0.0.1:2531 --connections 50 --messages "$messages" --size "$size" --max-duration 2h | tail -1
t1=$(date +%s.%N)
sleep 2
after="$(rss)"
awk -v b="$before" -v a="$after" -v n="$messages" -v s="$size" -v t="$(echo "$t1 - $t0" | bc)" 'BEGIN {
  printf "waiting: %d x %d bytes injected in %.0f s; RSS %d -> %d KiB: %.0f bytes per waiting message\n", n, s, t, b, a, (a - b) * 1024 / n
}'
du -sh "$work/spool"
kill -9 "$pid"
wait "$pid" 2>/dev/null || true

# the destination is back; the restart drains the backlog
"$bin" sink --listen 127.0.0.1:2594 >/dev/null 2>&1 &
sink=$!
: >"$work/stderr"
t0=$(date +%s.%N)
start
wait_port 2531
t1=$(date +%s.%N)
grep -h "message(s) enumerated" "$work/stderr" || true
awk -v a="$t0" -v b="$t1" -v r="$(rss)" 'BEGIN { printf "restart: accepting after %.2f s, RSS %d KiB\n", b - a, r }'
wait_port 8031
peak=0
left="$(count)"
start_drain=$(date +%s.%N)
while [ "$left" -gt 0 ]; do
  sleep 2
  r="$(rss)"
  [ "$r" -gt "$peak" ] && peak="$r"
  left="$(count)"
  echo "  draining: $left left, RSS $r KiB"
done
end_drain=$(date +%s.%N)
awk -v a="$start_drain" -v b="$end_drain" -v n="$messages" -v p="$peak" 'BEGIN {
  printf "drain: %d messages in %.0f s = %.0f msg/s; peak RSS while draining %d KiB\n", n, b - a, n / (b - a), p
}'
