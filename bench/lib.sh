# Helpers the bench scripts share (sourced after setting $root to the repository).

# The servers a bench starts guard their spool with an absolute floor, not KumoMTA's 10 %
# free: on a build host whose disk is 90 % taken they would answer 452 to every message
# and the bench would wait for deliveries that never come (see WASMTA_MIN_FREE_SPACE).
export WASMTA_MIN_FREE_SPACE="${WASMTA_MIN_FREE_SPACE:-64MB}"

# Builds the release binary; sets $bin to it.
build_release() {
  cargo build --quiet --release --manifest-path "$root/Cargo.toml" --target-dir "$root/target"
  bin="$root/target/release/wasmta"
}

# Waits until 127.0.0.1:$1 accepts connections (at most 30 s).
wait_port() {
  for _ in $(seq 300); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "port $1 never opened" >&2
  return 1
}

# The msg/s figure of a `wasmta load` result line.
rate() { sed -n 's/.*rate=\([0-9]*\) msg\/s.*/\1/p' <<<"$1"; }

# A policy that spools under DIR, listens on 127.0.0.1:PORT (relaying for localhost) and
# relays everything to the sink on 127.0.0.1:2594; EXTRA_INIT goes inside init, EXTRA
# after it.   relay_policy DIR PORT [EXTRA_INIT] [EXTRA]
relay_policy() {
  cat <<LUA
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '$1/spool' }
  kumo.configure_local_logs { log_dir = '$1/logs' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:$2', relay_hosts = { '127.0.0.1' } }
  ${3:-}
end)
kumo.on('get_queue_config', function()
  return kumo.make_queue_config { protocol = { smtp = { mx_list = { '127.0.0.1:2594' } } } }
end)
kumo.on('get_egress_path_config', function()
  return kumo.make_egress_path { enable_tls = 'Disabled', connection_limit = 32 }
end)
${4:-}
LUA
}

# A scratch directory in $work, removed at exit together with the server whose pid is in
# $pid (if any).
server_workdir() {
  work="$(mktemp -d)"
  pid=""
  trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"' EXIT
}

# Writes $work/init.lua: spool and logs under $work, SMTP on 127.0.0.1:$1 relaying for
# localhost, HTTP on 127.0.0.1:$2; $3 is appended after init.
#   local_policy SMTP_PORT HTTP_PORT [EXTRA]
local_policy() {
  cat >"$work/init.lua" <<LUA
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '$work/spool' }
  kumo.configure_local_logs { log_dir = '$work/logs' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:$1', relay_hosts = { '127.0.0.1' } }
  kumo.start_http_listener { listen = '127.0.0.1:$2' }
end)
${3:-}
LUA
}
