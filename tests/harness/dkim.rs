//! DKIM keys and the independent tools that check our signatures and sign mail for us:
//! openssl makes the keys, Debian's dkimpy signs and verifies.

#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

/// Debian's python, which has dkimpy (a pyenv one on PATH may not).
pub const PYTHON: &str = "/usr/bin/python3";

/// True when dkimpy (with PyNaCl for Ed25519) and openssl are there; else says why.
pub fn verifier_installed() -> bool {
    let ok = Command::new(PYTHON).args(["-c", "import dkim, nacl"]).output().is_ok_and(|o| o.status.success())
        && Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: needs python3-dkim, python3-nacl and openssl (apt-get install ...)");
    }
    ok
}

pub fn run(cmd: &mut Command) -> Vec<u8> {
    let out = cmd.output().expect("runs");
    assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    out.stdout
}

pub fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Makes `rsa.key` (PKCS#1 PEM, 2048 bits) and `ed.key` (PKCS#8 PEM) in `d`; returns the
/// public keys as DNS `p=` values.
pub fn keys(d: &Path) -> (String, String) {
    run(Command::new("openssl").args(["genrsa", "-traditional", "-out"]).arg(d.join("rsa.key")).arg("2048"));
    run(Command::new("openssl").args(["genpkey", "-algorithm", "ed25519", "-out"]).arg(d.join("ed.key")));
    let rsa = run(Command::new("openssl").args(["rsa", "-pubout", "-outform", "DER", "-in"]).arg(d.join("rsa.key")));
    let ed = run(Command::new("openssl").args(["pkey", "-pubout", "-outform", "DER", "-in"]).arg(d.join("ed.key")));
    (b64(&rsa), b64(&ed[ed.len() - 32..]))
}

/// `message` signed by dkimpy with `key` (PEM path) as `selector`._domainkey.`domain`,
/// covering From, To and Subject; CRLF line ends.
pub fn dkimpy_sign(key: &Path, selector: &str, domain: &str, message: &str) -> String {
    let script = r#"
import sys, dkim
key = open(sys.argv[1], 'rb').read()
msg = sys.stdin.buffer.read()
sig = dkim.sign(msg, sys.argv[2].encode(), sys.argv[3].encode(), key, include_headers=[b'From', b'To', b'Subject'])
sys.stdout.buffer.write(sig + msg)
"#;
    use std::io::Write;
    let mut child = Command::new(PYTHON)
        .args(["-c", script])
        .arg(key)
        .args([selector, domain])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("python3 runs");
    child.stdin.take().unwrap().write_all(message.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "dkimpy signs");
    String::from_utf8(out.stdout).unwrap().replace("\r\n", "\n").replace('\n', "\r\n")
}
