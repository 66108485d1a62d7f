#!/usr/bin/env bash
# What DKIM signing costs injection (issue 20): rounds alternate between accepting
# MESSAGES of SIZE bytes on 100 connections without signing and with an RSA-2048
# `kumo.dkim.rsa_sha256_signer` signature on every message (in
# smtp_server_message_received, as KumoMTA's documentation writes it). Reports the
# acceptance rate (`wasmta load`) and the server's CPU per message.
#
#   SIZE=bytes MESSAGES=n bench/dkim.sh [ROUNDS]      (defaults 2048, 20000, 3)
set -euo pipefail
rounds="${1:-3}" size="${SIZE:-2048}" messages="${MESSAGES:-20000}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
build_release
keys="$(mktemp -d)"
trap 'rm -rf "$keys"' EXIT
openssl genrsa -traditional -out "$keys/rsa.key" 2048 2>/dev/null
cpu() { awk '{ print ($14 + $15) / 100 }' "/proc/$1/stat"; }
one() { # LABEL SIGN(0|1)
  local w pid out c0 c1 sign=""
  w="$(mktemp -d)"
  [ "$2" = 1 ] && sign="msg:dkim_sign(kumo.dkim.rsa_sha256_signer { domain = 'example.com', selector = 's1',
    headers = { 'From', 'To', 'Subject', 'Date', 'Message-ID' }, key = '$keys/rsa.key' })"
  cat >"$w/init.lua" <<LUA
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '$w/spool' }
  kumo.configure_local_logs { log_dir = '$w/logs' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:2525', relay_hosts = { '127.0.0.1' } }
end)
kumo.on('smtp_server_message_received', function(msg)
  $sign
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config { protocol = { smtp = { mx_list = { '127.0.0.1:9' } } }, retry_interval = '1h' }
end)
LUA
  (cd "$w" && RUST_LOG=warn exec "$bin" serve --policy init.lua >"$w/server.log" 2>&1) &
  pid=$!
  wait_port 2525 || { cat "$w/server.log" >&2; exit 1; }
  c0="$(cpu "$pid")"
  out="$("$bin" load --target 127.0.0.1:2525 --connections 100 --messages "$messages" --size "$size" | tail -1)"
  c1="$(cpu "$pid")"
  kill -9 "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$w"
  awk -v l="$1" -v n="$messages" -v c="$c0" -v d="$c1" -v acc="$(rate "$out")" \
    'BEGIN { printf "%-9s accepted %6s msg/s  %5.0f us CPU/msg\n", l, acc, (d - c) * 1e6 / n }'
}
for _ in $(seq "$rounds"); do
  one unsigned 0
  one signed 1
done
