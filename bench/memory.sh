#!/usr/bin/env bash
# Memory per queued message: inject N messages of SIZE bytes into a suspended queue (the
# admin API holds them in their scheduled queue) and compare the server's resident memory
# before and after. Waiting bodies stay in the spool: the figure should not follow SIZE.
#
#   bench/memory.sh [MESSAGES] [SIZE]
set -euo pipefail
messages="${1:-100000}"
size="${2:-1024}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
build_release
server_workdir
local_policy 2528 8028
(cd "$work" && RUST_LOG=warn exec "$bin" serve --policy "$work/init.lua") &
pid=$!
wait_port 2528
wait_port 8028
WASMTA_ENDPOINT=http://127.0.0.1:8028 "$bin" suspend --domain example.com --reason "memory bench" --duration 1h >/dev/null
rss() { awk '/VmRSS/ { print $2 }' "/proc/$pid/status"; }
before="$(rss)"
"$bin" load --target 127.0.0.1:2528 --connections 50 --messages "$messages" --size "$size" >/dev/null
# the server returns freed memory to the system every 5 s
sleep 6
after="$(rss)"
awk -v b="$before" -v a="$after" -v n="$messages" -v s="$size" 'BEGIN {
  per = (a - b) * 1024 / n
  printf "RSS %d KiB -> %d KiB for %d queued messages of %d bytes: %.0f bytes each\n", b, a, n, s, per
}'
