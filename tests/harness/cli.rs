//! Running the `wasmta` CLI against a test server and reading what it printed.

#![allow(dead_code)]

use super::Server;
use std::io::Write;
use std::process::{Command, Output, Stdio};

/// Runs `wasmta ARGS --endpoint <server>`.
pub fn cli(server: &Server, args: &[&str]) -> Output {
    Command::new(super::binary())
        .args(args)
        .args(["--endpoint", &format!("http://{}", server.http[0])])
        .output()
        .unwrap()
}

pub fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

pub fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// `wasmta ARGS --endpoint <server>` with `input` on its standard input.
pub fn cli_stdin(server: &Server, args: &[&str], input: &str) -> Output {
    let mut child = Command::new(super::binary())
        .args(args)
        .args(["--endpoint", &format!("http://{}", server.http[0])])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}
