//! Shaping through `policy-extras.shaping` against the real binary: the files' values
//! reach live ready queues, and an edited file takes effect within seconds, no restart.

mod harness;

use harness::sink::Sink;
use harness::smtp::Client;
use std::time::{Duration, Instant};

fn shaping_file(port: &str, ehlo: &str) -> String {
    format!(
        "[\"{port}.smarthost.test\"]\nmx_rollup = false\nenable_tls = \"Disabled\"\nehlo_domain = \"{ehlo}\"\nmax_deliveries_per_connection = 1\n"
    )
}

fn helper_policy(port: &str, extra: &str) -> String {
    format!(
        r#"
local shaping = require 'policy-extras.shaping'
local shaper = shaping:setup_with_automation {{ no_default_files = true, extra_files = {{ '{{d}}/shaping.toml' }} }}
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
end)
kumo.on('get_queue_config', function(domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '127.0.0.1:{port}' }} }} }} }}
end)
kumo.on('get_egress_path_config', shaper.get_egress_path_config)
{extra}
"#
    )
}

#[test]
fn an_edited_shaping_file_changes_live_ready_queues_within_seconds() {
    let d = harness::temp_dir();
    let sink = Sink::start(d.path());
    let port = sink.addr.rsplit(':').next().unwrap().to_string();
    let dir = harness::temp_dir();
    let file = dir.path().join("shaping.toml");
    std::fs::write(&file, shaping_file(&port, "before.test")).unwrap();
    let text = helper_policy(&port, "").replace("{d}", &dir.path().display().to_string());
    let policy = dir.path().join("init.lua");
    std::fs::write(
        &policy,
        text.replacen(
            "kumo.on('init', function()",
            "kumo.on('init', function()\n  kumo.dns.configure_test_resolver ''",
            1,
        ),
    )
    .unwrap();
    let server = harness::Server::start(dir.path(), &policy);
    let to = format!("r@{port}.smarthost.test");
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: 1\r\n\r\nx").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(10)));
    assert_eq!(sink.messages()[0].ehlo, "before.test", "the shaping file's ehlo_domain was used");

    // edit the file the way editors do: write a new file and rename it over the old one
    let tmp = dir.path().join(".shaping.toml.swp");
    std::fs::write(&tmp, shaping_file(&port, "after.test")).unwrap();
    std::fs::rename(&tmp, &file).unwrap();
    let edited = Instant::now();
    assert!(server.wait_for_stderr("configuration epoch is now", Duration::from_secs(5)), "the change was seen");
    let seen = edited.elapsed();
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: 2\r\n\r\nx").code, 250);
    assert!(sink.wait_for(2, Duration::from_secs(10)));
    assert_eq!(sink.messages()[1].ehlo, "after.test", "the live ready queue took the new value");
    assert!(seen < Duration::from_secs(2), "noticed in {seen:?}");

    // a broken edit is refused: the last good data keeps serving
    std::fs::write(&file, "[\"x\"]\nconection_limit = 1\n").unwrap();
    std::thread::sleep(Duration::from_millis(1000));
    assert_eq!(c.send_mail("a@s.example", &[to.as_str()], "Subject: 3\r\n\r\nx").code, 250);
    assert!(sink.wait_for(3, Duration::from_secs(10)));
    assert_eq!(sink.messages()[2].ehlo, "after.test");
    assert!(server.stderr_text().contains("reload refused"), "the error was logged");
    assert!(server.stop().success());
}
