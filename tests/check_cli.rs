//! `wasmta check --show` (the effective configuration, postconf -n) and `check --domain`
//! (the routing events for one domain), on a policy written as KumoMTA's documentation
//! writes one; secrets never printed; the wrong uses next to the right ones.

mod harness;

use std::process::{Command, Output};

fn check(policy: &std::path::Path, args: &[&str]) -> Output {
    Command::new(harness::binary()).args(["check", "--policy"]).arg(policy).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

const POLICY: &str = r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{d}/spool' }
  kumo.configure_local_logs { log_dir = '{d}/logs', max_segment_duration = '10s' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:2599', hostname = 'mx.show.example' }
  kumo.start_http_listener { listen = '127.0.0.1:8099' }
  kumo.dns.configure_test_resolver [[
dest.example. MX 10 mx1.dest.example.
mx1.dest.example. A 192.0.2.10
]]
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'broken.example' then
    error('no queue for you')
  end
  return kumo.make_queue_config { egress_pool = 'pool-' .. (tenant or 'none'), retry_interval = '7 minutes' }
end)
kumo.on('get_egress_pool', function(name)
  return kumo.make_egress_pool { name = name, entries = { { name = 'ip-1' }, { name = 'ip-2', weight = 3 } } }
end)
kumo.on('get_egress_source', function(name)
  return kumo.make_egress_source { name = name, source_address = name == 'ip-1' and '192.0.2.1' or '192.0.2.2' }
end)
kumo.on('get_egress_path_config', function(routing_domain, egress_source, site_name)
  return kumo.make_egress_path {
    connection_limit = egress_source == 'ip-2' and 7 or 3,
    smtp_auth_plain_username = 'relay-user',
    smtp_auth_plain_password = 'hunter2-secret',
  }
end)
"#;

#[test]
fn show_and_domain_print_what_the_policy_configures_and_hide_secrets() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let policy = harness::write_policy_text(d, POLICY);

    let out = check(&policy, &["--show"]);
    let shown = text(&out);
    assert!(out.status.success(), "{shown}");
    for expected in ["127.0.0.1:2599", "mx.show.example", "127.0.0.1:8099", "/logs", "max_segment_duration"] {
        assert!(shown.contains(expected), "{expected} in {shown}");
    }

    let out = check(&policy, &["--domain", "dest.example", "--tenant", "acme"]);
    let routed = text(&out);
    assert!(out.status.success(), "{routed}");
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let json_start = stdout.find("{\n").expect("JSON after the verdict");
    let v: serde_json::Value = serde_json::from_str(&stdout[json_start..]).unwrap();
    assert_eq!(v["queue"], "acme@dest.example", "{v}");
    assert_eq!(v["queue_config"]["retry_interval"], "7m", "{v}");
    assert_eq!(v["egress_pool"]["name"], "pool-acme");
    assert_eq!(v["site"], "mx1.dest.example", "{v}");
    let sources = v["sources"].as_array().unwrap();
    assert_eq!(sources.len(), 2);
    assert_eq!(sources[1]["source"]["name"], "ip-2");
    assert_eq!(sources[1]["egress_path"]["connection_limit"], 7);
    assert_eq!(sources[0]["egress_path"]["connection_limit"], 3);
    assert_eq!(sources[0]["egress_path"]["smtp_auth_plain_username"], "relay-user");
    assert!(!routed.contains("hunter2"), "a password printed: {routed}");
    assert_eq!(sources[0]["egress_path"]["smtp_auth_plain_password"], "(hidden)");

    // a handler that fails is named, with its error, and the command fails
    let out = check(&policy, &["--domain", "broken.example"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("get_queue_config") && text(&out).contains("no queue for you"), "{}", text(&out));
    // --tenant means nothing without --domain
    let out = check(&policy, &["--tenant", "acme"]);
    assert!(!out.status.success() && text(&out).contains("--domain"), "{}", text(&out));
}
