# Helpers the bench scripts share (sourced after setting $root to the repository).

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
