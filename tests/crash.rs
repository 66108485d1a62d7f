//! Nothing acknowledged is lost: `kill -9` while 20 clients inject; after a restart every
//! message that got a 250 is enumerated from the spool, and none twice.

mod harness;

use harness::{Server, policy, temp_dir};
use std::collections::HashSet;
use std::process::{Command, Stdio};
use std::time::Duration;

#[test]
fn kill_9_under_load_loses_no_acknowledged_message() {
    let dir = temp_dir();
    let p = policy(
        dir.path(),
        "",
        "kumo.on('spool_message_enumerated', function(msg) kumo.log_info('enumerated ' .. msg:id()) end)",
    );
    let mut acknowledged: HashSet<String> = HashSet::new();
    // 3 in `cargo test`; `WASMTA_CRASH_ROUNDS=20 cargo test --test crash` for the long run
    let rounds: usize = std::env::var("WASMTA_CRASH_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
    for round in 0..rounds {
        let server = Server::start(dir.path(), &p);
        let ledger = dir.path().join(format!("ledger-{round}.txt"));
        let load = Command::new(harness::binary())
            .args(["load", "--connections", "20", "--messages", "1000000", "--size", "1024", "--max-duration", "3s"])
            .arg("--target")
            .arg(server.addr())
            .arg("--ledger")
            .arg(&ledger)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(600 + 300 * round as u64));
        server.kill9();
        let out = load.wait_with_output().unwrap();
        assert!(out.status.success());
        let ids: Vec<String> = std::fs::read_to_string(&ledger).unwrap().lines().map(str::to_string).collect();
        assert!(
            !ids.is_empty(),
            "round {round}: no message was acknowledged: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        acknowledged.extend(ids);
    }

    let server = Server::start(dir.path(), &p);
    let log = server.stderr_text();
    let enumerated: Vec<&str> = log.lines().filter_map(|l| l.split("enumerated ").nth(1)).map(str::trim).collect();
    let unique: HashSet<&str> = enumerated.iter().copied().collect();
    assert_eq!(unique.len(), enumerated.len(), "a message was enumerated twice");
    let missing: Vec<&String> = acknowledged.iter().filter(|id| !unique.contains(id.as_str())).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged messages were lost: {:?}",
        missing.len(),
        acknowledged.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(log.contains(&format!("{} message(s) enumerated", enumerated.len())), "{log}");
    eprintln!("{} acknowledged, {} enumerated after {rounds} kill -9 rounds", acknowledged.len(), enumerated.len());
    assert!(server.stop().success());
    // no 250 goes out before its Reception record is in the log file: a kill -9 right
    // after the reply cannot lose the record
    let logged: HashSet<String> = harness::log_records(dir.path())
        .into_iter()
        .filter(|r| r["type"] == "Reception")
        .filter_map(|r| r["id"].as_str().map(str::to_string))
        .collect();
    let unlogged: Vec<&String> = acknowledged.iter().filter(|id| !logged.contains(*id)).collect();
    assert!(
        unlogged.is_empty(),
        "{} acknowledged message(s) without a Reception record: {:?}",
        unlogged.len(),
        &unlogged[..unlogged.len().min(5)]
    );
}
