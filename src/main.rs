//! The `wasmta` command: wiring only (see `cli`).

fn main() -> std::process::ExitCode {
    wasmta::cli::main()
}
