module wasmta.local/plugins

go 1.24
