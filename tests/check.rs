//! `wasmta check`: policy problems are reported with file, line and key, and exit
//! non-zero; a good policy passes without binding any port.

mod harness;

use std::process::Command;

fn check(lua: &str) -> (bool, String) {
    let dir = harness::temp_dir();
    let path = dir.path().join("policy.lua");
    std::fs::write(&path, lua).unwrap();
    let out = Command::new(harness::binary()).args(["check", "--policy"]).arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text)
}

#[test]
fn syntax_errors_name_file_and_line() {
    let (ok, text) = check("kumo.on('init', function()\n  local x = = 1\nend)\n");
    assert!(!ok);
    assert!(text.contains("policy.lua:2:"), "{text}");
}

#[test]
fn unknown_option_keys_name_file_line_and_key() {
    let (ok, text) = check(
        "kumo.on('init', function()\n  kumo.start_esmtp_listener {\n    listen = '127.0.0.1:0',\n    hostnme = 'x',\n  }\nend)\n",
    );
    assert!(!ok);
    assert!(
        text.contains("policy.lua:2:") && text.contains("start_esmtp_listener") && text.contains("hostnme"),
        "{text}"
    );
}

#[test]
fn wrong_types_name_the_key() {
    let (ok, text) = check(
        "kumo.on('init', function()\n\n  kumo.start_esmtp_listener { max_recipients_per_message = 'lots' }\nend)\n",
    );
    assert!(!ok);
    assert!(text.contains("policy.lua:3:") && text.contains("max_recipients_per_message"), "{text}");
    let (ok, text) = check(
        "kumo.on('init', function()\n  kumo.define_spool { name = 'data', path = '/tmp/x', kind = 'Floppy' }\nend)\n",
    );
    assert!(!ok);
    assert!(text.contains("policy.lua:2:") && text.contains("kind"), "{text}");
    let (ok, text) =
        check("kumo.on('init', function()\n  kumo.start_esmtp_listener { client_timeout = 'whenever' }\nend)\n");
    assert!(!ok);
    assert!(text.contains("client_timeout"), "{text}");
}

#[test]
fn unknown_events_and_double_single_handlers_are_errors() {
    let (ok, text) =
        check("kumo.on('init', function() end)\n\nkumo.on('smtp_server_mesage_received', function() end)\n");
    assert!(!ok);
    assert!(text.contains("policy.lua:3:") && text.contains("smtp_server_mesage_received"), "{text}");
    let (ok, text) = check("kumo.on('init', function() end)\nkumo.on('init', function() end)\n");
    assert!(!ok);
    assert!(
        text.contains("policy.lua:2:")
            && text.contains("already has a handler defined at")
            && text.contains("policy.lua:1"),
        "{text}"
    );
    // Multiple events take several handlers; dotted names are user-defined events
    let (ok, text) = check(
        "kumo.on('init', function() end)\nkumo.on('get_queue_config', function() end)\nkumo.on('get_queue_config', function() end)\nkumo.on('make.webhook', function() end)\n",
    );
    assert!(ok, "{text}");
}

#[test]
fn config_calls_outside_init_are_errors() {
    let (ok, text) = check("kumo.start_esmtp_listener { listen = '127.0.0.1:0' }\n");
    assert!(!ok);
    assert!(text.contains("policy.lua:1:") && text.contains("only be called from the init event"), "{text}");
}

#[test]
fn real_world_init_calls_load_with_helpers_and_requires() {
    let dir = harness::temp_dir();
    std::fs::write(dir.path().join("helper.lua"), "return { answer = 42 }\n").unwrap();
    std::fs::write(dir.path().join("listeners.toml"), "[main]\nlisten = '127.0.0.1:0'\n").unwrap();
    let lua = format!(
        r#"
local helper = require 'helper'
local utils = require 'policy-extras.policy_utils'
utils.assert_eq(helper.answer, 42)
utils.assert_eq(utils.merge_into({{a = 1}}, {{b = 2}}), {{a = 1, b = 2}})
utils.assert_eq(utils.recursive_merge_into({{t = {{x = 1}}}}, {{t = {{y = 2}}}}), {{t = {{x = 1, y = 2}}}})
assert(utils.table_contains({{'a', 'b'}}, 'b'))
assert(utils.starts_with('hello', 'he') and utils.ends_with('hello', 'lo'))
assert(utils.table_is_empty({{}}))
local ip, port = utils.split_ip_port('[::1]:25')
assert(ip == '::1' and port == 25)
assert(kumo.json_parse(kumo.json_encode({{a = {{1, 2}}}})).a[2] == 2)
assert(kumo.toml_parse('x = 1').x == 1)
assert(os.getenv('HOME') ~= nil or true)
kumo.on('init', function()
  local listeners = utils.load_json_or_toml_file('{d}/listeners.toml')
  kumo.configure_accounting_db_path '/tmp/accounting.db'
  kumo.set_smtpsrv_threads(4)
  kumo.dns.configure_resolver {{ name_servers = {{ '1.1.1.1:53' }} }}
  kumo.set_max_lua_context_use_count(100)
  kumo.define_spool {{ name = 'data', path = '{d}/spool', kind = 'RocksDB', flush = true }}
  kumo.define_spool {{ name = 'meta', path = '{d}/meta', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{d}/logs', max_segment_duration = '10s', headers = {{ 'Subject' }}, meta = {{ 'tenant' }} }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0', trusted_hosts = {{ '127.0.0.1' }} }}
  kumo.start_esmtp_listener {{ listen = listeners.main.listen, relay_hosts = {{ '127.0.0.1' }}, deferred_queue = false, deferred_spool = false, tls_certificate = '/nope.pem', tls_private_key = '/nope.key', batch_handling = 'BatchByDomain', data_buffer_size = '128 KB', max_message_size = '20 MB', allow_xclient = false, require_proxy_protocol = false, meta = {{ x = 1 }} }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', deferred_queue = true }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {{ connection_limit = kumo.available_parallelism() }}
end)
"#,
        d = dir.path().display()
    );
    let path = dir.path().join("init.lua");
    std::fs::write(&path, lua).unwrap();
    let out = Command::new(harness::binary()).args(["check", "--policy"]).arg(&path).output().unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 esmtp listener(s), 2 spool(s), 1 log destination(s), 1 http listener(s)"), "{text}");
    assert!(text.contains("kumo.configure_accounting_db_path is accepted but has no effect"), "{text}");
}

#[test]
fn the_default_policy_checks() {
    let out = Command::new(harness::binary())
        .args(["check", "--policy", concat!(env!("CARGO_MANIFEST_DIR"), "/policy/init.lua")])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn validate_config_runs_and_can_fail_the_check() {
    let (ok, text) = check(
        "kumo.on('pre_init', function() PRE = true end)\nkumo.on('init', function() assert(PRE) end)\nkumo.on('validate_config', function()\n  kumo.validation_failed()\nend)\n",
    );
    assert!(!ok);
    assert!(text.contains("policy.lua:4:") && text.contains("validation_failed"), "{text}");
}

/// Log hook mistakes an operator makes, found before any record flows: a webhook URL that
/// is not one (KumoMTA finds out at the first POST) and a custom_lua queue whose
/// constructor event has no handler (its queue could never deliver).
#[test]
fn log_hook_mistakes_are_found_by_check() {
    let policy = |url: &str, constructor: &str| {
        format!(
            "local kumo = require 'kumo'\nlocal log_hooks = require 'policy-extras.log_hooks'\n\
             log_hooks:new_json {{ name = 'webhook', url = '{url}' }}\n\
             kumo.on('make.bus', function(domain, tenant, campaign) return {{ send = function() end }} end)\n\
             kumo.on('get_queue_config', function(domain)\n\
             \x20 return kumo.make_queue_config {{ protocol = {{ custom_lua = {{ constructor = '{constructor}' }} }} }}\n\
             end)\n"
        )
    };
    let (ok, text) = check(&policy("http://127.0.0.1:9/x", "make.bus"));
    assert!(ok, "{text}");
    let (ok, text) = check(&policy("hooks.example.com/x", "make.bus"));
    assert!(!ok);
    assert!(text.contains("policy.lua:3:") && text.contains("url:") && text.contains("not a URL"), "{text}");
    let (ok, text) = check(&policy("ftp://hooks.example.com/x", "make.bus"));
    assert!(!ok && text.contains("not an http:// or https:// URL"), "{text}");
    let (ok, text) = check(&policy("http://127.0.0.1:9/x", "make.buss"));
    assert!(!ok);
    assert!(text.contains("policy.lua:6: custom_lua constructor 'make.buss' has no handler"), "{text}");
    // batching options: a typo, a wrong type, an impossible pair, a bad duration, a second
    // hook of the same name, each named at the policy's own line
    let hook = |options: &str| {
        format!(
            "local kumo = require 'kumo'
local log_hooks = require 'policy-extras.log_hooks'
             log_hooks:new_json {{ name = 'webhook', url = 'http://127.0.0.1:9/x', {options} }}
"
        )
    };
    for (options, said) in [
        ("batchsize = 10", "unknown option batchsize"),
        ("batch_size = 'ten'", "batch_size must be a whole number of at least 1, not \"ten\" (a string)"),
        ("batch_size = 2.5", "batch_size must be a whole number of at least 1, not 2.5"),
        ("batch_size = 0", "batch_size must be a whole number"),
        ("batch_size = 10, min_batch_size = 20", "min_batch_size (20) must not exceed batch_size (10)"),
        ("batch_size = 10, max_batch_latency = 'soon'", "max_batch_latency must be a duration"),
    ] {
        let (ok, text) = check(&hook(options));
        assert!(!ok, "{options}: {text}");
        assert!(text.contains("policy.lua:3: log_hooks:new_json{name='webhook'}: ") && text.contains(said), "{text}");
    }
    let (ok, text) = check(&hook("batch_size = 10.0, min_batch_size = 2.0"));
    assert!(ok, "a whole number written 10.0 is 10: {text}");
    let twice = hook("batch_size = 10")
        + "log_hooks:new_json { name = 'webhook', url = 'http://127.0.0.1:9/y' }
";
    let (ok, text) = check(&twice);
    assert!(!ok && text.contains("policy.lua:4:") && text.contains("already defined"), "{text}");
}
