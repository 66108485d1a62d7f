//! Two servers in one process keep apart: each answers DNS from its own policy's test
//! resolver, and each has its own `kumo.memoize` caches and configuration epoch. (Before
//! the runtime was a value, the policy side read a process-wide resolver the second
//! server never set, and every lookup answered NXDOMAIN.)

mod harness;

use harness::smtp::Client;

fn policy(dir: &std::path::Path, name: &str, mx: &str, value: &str) -> std::path::PathBuf {
    let text = format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.dns.configure_test_resolver [[
shared.example. 600 MX 10 {mx}.
]]
end)
local cached = kumo.memoize(function() return '{value}' end, {{ name = 'same-name', ttl = '1 hour', capacity = 10 }})
kumo.on('smtp_server_mail_from', function(sender)
  local mx = kumo.dns.lookup_mx('shared.example')
  kumo.reject(550, '5.7.1 mx=' .. mx.hosts[1] .. ' cached=' .. cached())
end)
"#
    );
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn two_servers_in_one_process_do_not_share_resolver_caches_or_epoch() {
    let dir = harness::temp_dir();
    let a = policy(dir.path(), "a.lua", "mx.a.example", "from-a");
    let b = policy(dir.path(), "b.lua", "mx.b.example", "from-b");
    let (_rt_a, addr_a) = harness::inproc::serve_policy(harness::inproc::reliable(), &[], Some(&a));
    let (_rt_b, addr_b) = harness::inproc::serve_policy(harness::inproc::reliable(), &[], Some(&b));
    for _ in 0..2 {
        let ra = Client::ehlo(&addr_a).cmd("MAIL FROM:<x@s.example>");
        assert!(ra.text.contains("mx=mx.a.example. cached=from-a"), "{}", ra.text);
        let rb = Client::ehlo(&addr_b).cmd("MAIL FROM:<x@s.example>");
        assert!(rb.text.contains("mx=mx.b.example. cached=from-b"), "{}", rb.text);
    }
}

#[test]
fn runtimes_are_values() {
    let one = wasmta::policy::Runtime::new();
    let two = wasmta::policy::Runtime::new();
    one.epoch.bump();
    one.shutdown.begin();
    assert_eq!((one.epoch.get(), two.epoch.get()), (1, 0));
    assert!(one.shutdown.is_set() && !two.shutdown.is_set());
}
