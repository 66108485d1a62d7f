#!/usr/bin/env bash
# The same injection workload against wasmta and against Postfix (Debian's package) on
# this machine, one after the other, and the ratio. Both accept mail with a durable queue
# (fsync before 250) and relay it to the same `wasmta sink`.
#
#   sudo bench/compare-postfix.sh [MESSAGES] [CONNECTIONS] [SIZE]
#
# Installs postfix (apt) on first use and runs a private instance (its own config and
# queue directory, 127.0.0.1:2527) that is stopped afterwards.
set -euo pipefail
messages="${1:-20000}"
connections="${2:-100}"
size="${3:-2048}"
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=bench/lib.sh
source "$root/bench/lib.sh"
build_release

if ! command -v postfix >/dev/null 2>&1; then
  echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postfix >/dev/null
fi

work="$(mktemp -d)"
chmod 755 "$work"
pids=()
cleanup() {
  postfix -c "$work/postfix" stop >/dev/null 2>&1 || true
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  rm -rf "$work"
}
trap cleanup EXIT

"$bin" sink --listen 127.0.0.1:2594 >/dev/null 2>&1 &
pids+=($!)


# --- wasmta: durable spool, relay to the sink
mkdir -p "$work/wasmta"
relay_policy "$work/wasmta" 2526 >"$work/wasmta/init.lua"
(cd "$work/wasmta" && RUST_LOG=warn exec "$bin" serve --policy "$work/wasmta/init.lua") &
pids+=($!)
wait_port 2526
wasmta_line="$("$bin" load --target 127.0.0.1:2526 --connections "$connections" --messages "$messages" --size "$size")"
echo "wasmta:  $wasmta_line"

# --- postfix: a private instance, queue on the same disk, relay to the sink
pf="$work/postfix"
mkdir -p "$pf" "$work/pfqueue" "$work/pfdata"
cp /etc/postfix/master.cf "$pf/master.cf"
sed -i 's/^smtp      inet  n       -       y       -       -       smtpd/127.0.0.1:2527 inet n - n - - smtpd/' "$pf/master.cf"
cat >"$pf/main.cf" <<CF
compatibility_level = 3.6
queue_directory = $work/pfqueue
data_directory = $work/pfdata
mail_owner = postfix
setgid_group = postdrop
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = bench.localhost
mydestination =
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:2594
smtpd_recipient_restrictions = permit_mynetworks, reject
default_process_limit = $((connections + 20))
smtpd_client_connection_count_limit = 0
smtpd_client_message_rate_limit = 0
smtp_tls_security_level = none
CF
chown postfix "$work/pfdata"
postfix -c "$pf" check || { echo "postfix rejected the bench configuration" >&2; exit 1; }
postfix -c "$pf" start >/dev/null
wait_port 2527
postfix_line="$("$bin" load --target 127.0.0.1:2527 --connections "$connections" --messages "$messages" --size "$size")"
echo "postfix: $postfix_line"

w="$(rate "$wasmta_line")"
p="$(rate "$postfix_line")"
awk -v w="$w" -v p="$p" 'BEGIN { printf "wasmta %d msg/s, postfix %d msg/s: ratio %.2fx\n", w, p, w / p }'
