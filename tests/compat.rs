//! KumoMTA policies as KumoMTA's documentation writes them (`local kumo = require 'kumo'`,
//! the `policy-extras` helpers by their documented `require` names and data files) run
//! unchanged, and do what they say: a queue helper file routes a tenant's mail, a sources
//! file binds a pool, sqlite reads a row, the classifier classifies a real 5xx.

mod harness;

use harness::sink::Sink;
use harness::smtp::Client;
use harness::{Server, wait_for_record};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

/// The `init` every test shares: spool, logs, a listener and the test resolver, in the
/// documented form.
fn init(dir: &Path, listener_extra: &str, zone: &str) -> String {
    init_with(dir, listener_extra, zone, "")
}

/// [`init`] with more lines at the end of the `init` handler.
fn init_with(dir: &Path, listener_extra: &str, zone: &str, body: &str) -> String {
    format!(
        r#"
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{d}/spool', kind = 'RocksDB' }}
  kumo.define_spool {{ name = 'meta', path = '{d}/meta', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{d}/logs' }}
  kumo.configure_accounting_db_path '{d}/accounting.db'
  kumo.dns.configure_test_resolver [[{zone}]]
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test', {listener_extra} }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
{body}
end)
"#,
        d = dir.display()
    )
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

fn check(policy: &Path) -> (bool, String) {
    let out = Command::new(harness::binary()).args(["check", "--policy"]).arg(policy).output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

#[test]
fn queue_and_sources_helpers_route_a_tenants_mail_through_its_pool() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    write(
        d,
        "sources.toml",
        r#"
[source."ip-1"]
source_address = "127.0.0.1"
ehlo_domain = "ip1.mta.example"

[source."ip-2"]
source_address = "127.0.0.1"
ehlo_domain = "ip2.mta.example"

[pool."BestReputation"]
[pool."BestReputation"."ip-1"]
weight = 1

[pool."Other"]
[pool."Other"."ip-2"]
"#,
    );
    write(
        d,
        "queues.toml",
        &format!(
            r#"
tenant_header = "X-Tenant"
remove_tenant_header = true
campaign_header = "X-Campaign"

[queue.default]
retry_interval = "1s"
egress_pool = "Other"
protocol = {{ smtp = {{ mx_list = ["{sink}"] }} }}

[tenant.'mytenant']
egress_pool = 'BestReputation'
"#,
            sink = sink.addr
        ),
    );
    let policy = format!(
        r#"local kumo = require 'kumo'
local sources = require 'policy-extras.sources'
sources:setup {{ '{d}/sources.toml' }}
local queue_module = require 'policy-extras.queue'
local queue_helper = queue_module:setup {{ '{d}/queues.toml' }}
{init}
kumo.on('smtp_server_message_received', function(msg)
  queue_helper:apply(msg)
end)
kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#,
        d = d.display(),
        init = init(d, "", "")
    );
    let path = write(d, "init.lua", &policy);
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    let body = "X-Tenant: mytenant\r\nX-Campaign: spring\r\nSubject: t\r\n\r\nhello\r\n";
    assert_eq!(c.send_mail("a@sender.example", &["u1@dest.example"], body).code, 250);
    assert_eq!(c.send_mail("a@sender.example", &["u2@dest.example"], "Subject: no tenant\r\n\r\nx\r\n").code, 250);
    assert!(sink.wait_for(2, Duration::from_secs(20)), "delivered: {}", sink.count());
    let got = sink.messages();
    let tenant_mail = got.iter().find(|m| m.to == ["u1@dest.example"]).expect("tenant message");
    assert_eq!(tenant_mail.ehlo, "ip1.mta.example", "the tenant's pool's source says EHLO");
    let text = String::from_utf8_lossy(&tenant_mail.data);
    assert!(!text.contains("X-Tenant"), "remove_tenant_header: {text}");
    let other = got.iter().find(|m| m.to == ["u2@dest.example"]).expect("default message");
    assert_eq!(other.ehlo, "ip2.mta.example", "the default queue's pool");

    let rec =
        wait_for_record(d, Duration::from_secs(5), |r| r["type"] == "Delivery" && r["recipient"] == "u1@dest.example")
            .expect("Delivery record");
    assert_eq!(rec["queue"], "spring:mytenant@dest.example", "{rec}");
    assert_eq!(rec["egress_pool"], "BestReputation", "{rec}");
    assert_eq!(rec["egress_source"], "ip-1", "{rec}");
    server.stop();
}

#[test]
fn a_queue_helper_file_with_an_error_fails_check_with_the_file_and_key() {
    let dir = harness::temp_dir();
    let d = dir.path();
    write(d, "queues.toml", "[tenant.'t1']\nmax_age = 'forever'\n");
    write(d, "sources.toml", "[pool.'p']\n[pool.'p'.'nosuch']\n");
    let policy = format!(
        "local kumo = require 'kumo'\nlocal sources = require 'policy-extras.sources'\nsources:setup {{ '{d}/sources.toml' }}\nlocal queue_module = require 'policy-extras.queue'\nlocal queue_helper = queue_module:setup {{ '{d}/queues.toml' }}\n{}",
        init(d, "", ""),
        d = d.display()
    );
    let path = write(d, "init.lua", &policy);
    let (ok, text) = check(&path);
    assert!(!ok, "{text}");
    assert!(text.contains("queues.toml") && text.contains("max_age"), "{text}");
    assert!(text.contains("nosuch"), "pool member that no source defines: {text}");
}

#[test]
fn listener_domains_file_decides_relaying() {
    let dir = harness::temp_dir();
    let d = dir.path();
    write(d, "listener_domains.toml", "[\"example.com\"]\nrelay_to = true\n\n[\"*.bulk.example\"]\nrelay_to = true\n");
    let policy = format!(
        r#"local kumo = require 'kumo'
local listener_domains = require 'policy-extras.listener_domains'
{init}
kumo.on('get_listener_domain', listener_domains:setup {{ '{d}/listener_domains.toml' }})
"#,
        d = d.display(),
        init = init(d, "relay_hosts = { '10.99.99.99' }", "")
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.cmd("MAIL FROM:<a@outside.example>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<u@example.com>").code, 250, "relay_to = true");
    assert_eq!(c.cmd("RCPT TO:<u@a.bulk.example>").code, 250, "wildcard entry");
    let refused = c.cmd("RCPT TO:<u@elsewhere.example>");
    assert_eq!(refused.code, 550, "not a listener domain, not a relay host: {:?}", refused.text);
    drop(c);
    server.stop();
}

#[test]
fn sqlite_reads_a_row_the_operator_wrote() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let db = rusqlite::Connection::open(d.join("senders.db")).unwrap();
    db.execute_batch(
        "CREATE TABLE senders (email TEXT PRIMARY KEY, tenant TEXT, blocked INTEGER);
         INSERT INTO senders VALUES ('good@s.example', 'acme', 0), ('bad@s.example', 'spammer', 1);",
    )
    .unwrap();
    drop(db);
    let policy = format!(
        r#"local kumo = require 'kumo'
local sqlite = require 'sqlite'
{init}
kumo.on('smtp_server_mail_from', function(sender)
  local db = sqlite.open('{d}/senders.db')
  local rows = db:execute('SELECT tenant, blocked FROM senders WHERE email = ?', tostring(sender))
  if #rows == 0 then
    kumo.reject(550, '5.7.1 unknown sender')
  end
  if rows[1].blocked == 1 then
    kumo.reject(550, '5.7.1 sender ' .. rows[1].tenant .. ' is blocked')
  end
  local count = db:execute('SELECT count(*) FROM senders')
  if count[1] ~= 2 then
    kumo.reject(451, '4.3.0 single-column results are a flat array, got ' .. kumo.json_encode(count))
  end
end)
"#,
        d = d.display(),
        init = init(d, "", "")
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.cmd("MAIL FROM:<good@s.example>").code, 250);
    c.cmd("RSET");
    let r = c.cmd("MAIL FROM:<bad@s.example>");
    assert_eq!(r.code, 550);
    assert!(r.text.contains("sender spammer is blocked"), "{:?}", r.text);
    let r = c.cmd("MAIL FROM:<nobody@s.example>");
    assert!(r.text.contains("unknown sender"), "{:?}", r.text);
    drop(c);
    server.stop();
}

#[test]
fn bounce_classifier_and_rewrite_delivery_status_classify_real_replies() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    // an operator's own rule file in KumoMTA's format, ahead of the IANA defaults
    write(d, "rules.toml", "[rules]\nQuotaIssues = [ 'you said permfail-full' ]\n");
    let policy = format!(
        r#"local kumo = require 'kumo'
{init}
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1h', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
kumo.on('smtp_client_rewrite_delivery_status', function(response, domain, tenant, campaign, routing_domain)
  if response:find('tempfail%-mailbox%-gone') then
    return 500
  end
end)
"#,
        sink = sink.addr,
        init = init_with(
            d,
            "",
            "",
            &format!(
                "  kumo.configure_bounce_classifier {{\n    files = {{ '{}/rules.toml', '/opt/kumomta/share/bounce_classifier/iana.toml' }},\n  }}",
                d.display()
            )
        )
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    for rcpt in ["permfail-user@dest.example", "permfail-full@dest.example", "tempfail-mailbox-gone@dest.example"] {
        assert_eq!(c.send_mail("a@s.example", &[rcpt], "Subject: x\r\n\r\nx\r\n").code, 250);
    }
    assert_eq!(c.send_mail("a@s.example", &["tempfail-other@dest.example"], "Subject: x\r\n\r\nx\r\n").code, 250);
    let bounce = |who: &str| {
        wait_for_record(d, Duration::from_secs(15), |r| r["type"] == "Bounce" && r["recipient"] == who)
            .unwrap_or_else(|| panic!("no Bounce for {who}: {:?}", harness::log_records(d)))
    };
    let r = bounce("permfail-user@dest.example");
    assert_eq!(r["bounce_classification"], "InvalidRecipient", "550 5.1.1 by the IANA rules: {r}");
    let r = bounce("permfail-full@dest.example");
    assert_eq!(r["bounce_classification"], "QuotaIssues", "the operator's rule wins: {r}");
    let r = bounce("tempfail-mailbox-gone@dest.example");
    assert_eq!(r["response"]["code"], 500, "{r}");
    let content = r["response"]["content"].as_str().unwrap_or_default();
    assert!(content.contains("(kumomta: status was rewritten from 451 -> 500)"), "{r}");
    let t = wait_for_record(d, Duration::from_secs(15), |r| {
        r["type"] == "TransientFailure" && r["recipient"] == "tempfail-other@dest.example"
    })
    .expect("a reply the handler leaves alone stays transient");
    assert_eq!(t["response"]["code"], 451);
    assert!(t["bounce_classification"].is_string(), "{t}");
    drop(c);
    server.stop();
}

#[test]
fn kumo_dns_answers_from_the_test_resolver() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let zone = "$ORIGIN example.com.\n@ 600 MX 10 mx1.example.com.\n@ 600 MX 20 mx2.example.com.\nmx1 600 A 192.0.2.10\nhost 600 A 192.0.2.1\nhost 600 AAAA 2001:db8::1\n@ 600 TXT \"v=spf1 -all\"\n$ORIGIN 2.0.192.in-addr.arpa.\n1 600 PTR host.example.com.\n$ORIGIN bl.example.\n2.0.0.127 600 A 127.0.0.2\n2.0.0.127 600 TXT \"listed for testing\"\n";
    let policy = format!(
        r#"local kumo = require 'kumo'
local dns = require 'kumo.dns'
{init}
kumo.on('smtp_server_mail_from', function(sender)
  local mx = kumo.dns.lookup_mx('example.com')
  -- IPv4 first, as KumoMTA answers: configs take addrs[1] as the IPv4 address
  local addrs = kumo.dns.lookup_addr('host.example.com')
  local txt = kumo.dns.lookup_txt('example.com')
  local ptr = dns.lookup_ptr('192.0.2.1')
  local listed, why = kumo.dns.rbl_lookup('127.0.0.2', 'bl.example')
  local clean = kumo.dns.rbl_lookup('127.0.0.3', 'bl.example')
  kumo.reject(550, string.format('5.7.1 mx=%s,%s addrs=%s txt=%s ptr=%s rbl=%s/%s clean=%s',
    mx.hosts[1], mx.hosts[2], table.concat(addrs, ','), txt[1], ptr[1], listed, why, tostring(clean)))
end)
"#,
        init = init(d, "", zone)
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    let r = c.cmd("MAIL FROM:<a@s.example>");
    let text = r.text;
    assert!(text.contains("mx=mx1.example.com.,mx2.example.com."), "{text}");
    assert!(text.contains("addrs=192.0.2.1,2001:db8::1"), "{text}");
    assert!(text.contains("txt=v=spf1 -all"), "{text}");
    assert!(text.contains("ptr=host.example.com."), "{text}");
    assert!(text.contains("rbl=127.0.0.2/listed for testing clean=nil"), "{text}");
    drop(c);
    server.stop();
}

#[test]
fn data_helpers_work_as_documented() {
    let dir = harness::temp_dir();
    let d = dir.path();
    write(d, "data.json", "{\n  // KumoMTA's json_load allows comments\n  \"limit\": 5\n}\n");
    write(d, "data.toml", "[site]\nname = 'x'\n");
    let policy = format!(
        r#"local kumo = require 'kumo'
{init}
local function check(cond, what)
  if not cond then kumo.reject(451, '4.3.0 failed: ' .. what) end
end
kumo.on('smtp_server_mail_from', function(sender)
  check(kumo.serde.json_parse('{{"a":[1,2]}}').a[2] == 2, 'json_parse')
  check(kumo.json_load('{d}/data.json').limit == 5, 'json_load with comments')
  check(kumo.serde.toml_load('{d}/data.toml').site.name == 'x', 'toml_load')
  check(kumo.serde.yaml_parse('a: [1, 2]').a[1] == 1, 'yaml_parse')
  check(kumo.serde.json_encode({{ b = 1 }}) == '{{"b":1}}', 'json_encode')
  local parts = kumo.string.split('a,b,,c', ',')
  check(#parts == 4 and parts[3] == '', 'split')
  check(kumo.string.trim('  x  ') == 'x', 'trim')
  check(kumo.string.replace('aXbX', 'X', '-') == 'a-b-', 'replace')
  check(kumo.encode.base64_encode('hello') == 'aGVsbG8=', 'base64')
  check(kumo.encode.hex_encode('hi') == '6869', 'hex')
  check(kumo.digest.sha256('abc').hex == 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 'sha256')
  check(#tostring(kumo.uuid.new_v4()) == 36, 'uuid v4')
  local v1 = tostring(kumo.uuid.new_v1())
  check(kumo.uuid.parse(v1).hyphenated == v1 and v1:sub(15, 15) == '1', 'uuid v1 and parse')
  check(not pcall(kumo.uuid.parse, 'not-a-uuid'), 'uuid parse refuses junk')
  local map = kumo.regex_set_map.new {{ ['^550 5\\.1\\.1'] = 'bad-user', ['quota'] = 'full' }}
  check(map['550 5.1.1 no such user'] == 'bad-user' and map['452 over quota'] == 'full', 'regex_set_map')
  local domains = kumo.domain_map.new {{ ['example.com'] = 'exact', ['*.example.com'] = 'sub' }}
  check(domains['example.com'] == 'exact' and domains['a.example.com'] == 'sub', 'domain_map')
  check(kumo.time.parse_duration('5 minutes').seconds == 300, 'parse_duration')
  check(#kumo.glob('{d}/*.json') == 1, 'glob')
  kumo.reject(550, '5.7.1 all helpers ok for ' .. tostring(sender))
end)
"#,
        d = d.display(),
        init = init(d, "", "")
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    let r = c.cmd("MAIL FROM:<a@s.example>");
    assert!(r.text.contains("550 5.7.1 all helpers ok for a@s.example"), "{:?}\n{}", r.text, server.stderr_text());
    drop(c);
    server.stop();
}

#[test]
fn set_scheduling_holds_a_message_until_its_first_attempt() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let policy = format!(
        r#"local kumo = require 'kumo'
{init}
kumo.on('smtp_server_message_received', function(msg)
  if msg:get_first_named_header_value('X-Later') then
    msg:set_scheduling {{ first_attempt = '2099-01-01T00:00:00Z' }}
  end
  -- a sender's JSON scheduling header, as KumoMTA reads it
  msg:import_scheduling_header('X-Schedule', true)
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#,
        sink = sink.addr,
        init = init(d, "", "")
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["later@dest.example"], "X-Later: 1\r\n\r\nx\r\n").code, 250);
    let header = "X-Schedule: {\"first_attempt\": \"2099-01-01T00:00:00Z\"}\r\n\r\nx\r\n";
    assert_eq!(c.send_mail("a@s.example", &["header@dest.example"], header).code, 250);
    assert_eq!(c.send_mail("a@s.example", &["now@dest.example"], "Subject: now\r\n\r\nx\r\n").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(15)));
    std::thread::sleep(Duration::from_secs(2));
    let got: Vec<Vec<String>> = sink.messages().into_iter().map(|m| m.to).collect();
    assert_eq!(got, vec![vec!["now@dest.example".to_string()]], "the scheduled ones wait");
    // the schedule is durable: both are still spooled with it after a restart
    server.stop();
    let spooled = harness::spooled(d);
    assert_eq!(spooled.len(), 2, "both scheduled messages stay spooled");
    let server = Server::start(d, &path);
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(sink.count(), 1, "still waiting after a restart");
    let received = harness::log_records(d);
    let header_rec = received
        .iter()
        .find(|r| r["type"] == "Reception" && r["recipient"] == "header@dest.example")
        .expect("reception");
    assert!(header_rec["headers"].get("X-Schedule").is_none(), "{header_rec}");
    server.stop();
}

#[test]
fn older_define_egress_api_binds_its_source() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let policy = format!(
        r#"local kumo = require 'kumo'
{init}
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ egress_pool = 'legacy-pool', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#,
        sink = sink.addr,
        init = init_with(
            d,
            "",
            "",
            "  kumo.define_egress_source { name = 'legacy-1', source_address = '127.0.0.1', ehlo_domain = 'legacy.mta.example' }\n  kumo.define_egress_pool { name = 'legacy-pool', entries = { { name = 'legacy-1' } } }"
        )
    );
    let path = write(d, "init.lua", &policy);
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["u@dest.example"], "Subject: x\r\n\r\nx\r\n").code, 250);
    assert!(sink.wait_for(1, Duration::from_secs(15)));
    assert_eq!(sink.messages()[0].ehlo, "legacy.mta.example");
    let rec = wait_for_record(d, Duration::from_secs(5), |r| r["type"] == "Delivery").unwrap();
    assert_eq!((rec["egress_pool"].as_str(), rec["egress_source"].as_str()), (Some("legacy-pool"), Some("legacy-1")));
    drop(c);
    server.stop();

    // misuse: a pool naming a source nobody defined is an error at its line
    let bad = policy.replace("{ name = 'legacy-1' }", "{ name = 'nosuch' }");
    let path = write(d, "bad.lua", &bad);
    let (ok, text) = check(&path);
    assert!(!ok);
    assert!(text.contains("bad.lua:") && text.contains("define_egress_pool") && text.contains("nosuch"), "{text}");
}

#[test]
fn check_reports_unknown_kumo_names_and_lists_what_is_not_active() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let policy = format!(
        r#"local kumo = require 'kumo'
{init}
kumo.on('smtp_server_message_received', function(msg)
  -- a handler that has never run is checked too
  kumo.set_meta_everywhere(msg)
end)
"#,
        init = init_with(d, "", "", &format!("  kumo.aaa.configure_acct_log {{ log_dir = '{}/acct' }}", d.display()))
    );
    let line = policy.lines().position(|l| l.contains("set_meta_everywhere")).unwrap() + 1;
    let path = write(d, "init.lua", &policy);
    let (ok, text) = check(&path);
    assert!(!ok, "{text}");
    assert!(
        text.contains(&format!("init.lua:{line}: kumo.set_meta_everywhere is not a KumoMTA function wasmta knows")),
        "{text}"
    );
    assert!(text.contains("kumo.aaa.configure_acct_log is accepted but has no effect"), "{text}");
    // KumoMTA registers any event name: one it never calls is a note, not a failure; the
    // shaping helper's shaper has KumoMTA's should_enqueue_log_record
    let good = policy.replace("kumo.set_meta_everywhere(msg)", "msg:set_meta('x', 1)")
        + "kumo.on('http_request', function(request) end)\n"
        + "local shaping = require 'policy-extras.shaping'\n"
        + "local shaper = shaping:setup_with_automation { extra_files = { '/opt/kumomta/share/policy-extras/shaping.toml' } }\n"
        + "kumo.on('should_enqueue_log_record', shaper.should_enqueue_log_record)\n";
    let path = write(d, "good.lua", &good);
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    assert!(text.contains("note:") && text.contains("kumo.aaa.configure_acct_log"), "{text}");
    assert!(text.contains("'http_request' is not an event KumoMTA or wasmta calls"), "{text}");
    assert_eq!(text.matches("kumo.aaa.configure_acct_log").count(), 1, "listed once: {text}");
    // a handler that is not a function names the line, not `bad argument #2 to ?`
    let nil_handler = good.clone() + "kumo.on('smtp_server_ehlo', shaper.no_such_field)\n";
    let line = nil_handler.lines().count();
    let path = write(d, "nil.lua", &nil_handler);
    let (ok, text) = check(&path);
    assert!(!ok);
    assert!(
        text.contains(&format!("nil.lua:{line}: kumo.on('smtp_server_ehlo', ...): the handler is nil, not a function")),
        "{text}"
    );
}

#[test]
fn config_monitor_globs_bump_the_epoch_when_a_data_file_changes() {
    let dir = harness::temp_dir();
    let d = dir.path();
    std::fs::create_dir(d.join("etc")).unwrap();
    write(d, "etc/limits.toml", "limit = 1\n");
    let policy = format!(
        r#"local kumo = require 'kumo'
{init}
kumo.on('smtp_server_mail_from', function(sender)
  local files = kumo.eval_config_monitor_globs()
  kumo.reject(550, '5.7.1 monitoring ' .. #files .. ' file(s)')
end)
"#,
        init = init_with(
            d,
            "",
            "",
            &format!("  kumo.set_config_monitor_globs {{ '{}/etc/**/*.{{toml,json}}' }}", d.display())
        )
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert!(c.cmd("MAIL FROM:<a@s.example>").text.contains("monitoring 1 file(s)"));
    drop(c);
    write(d, "etc/limits.toml", "limit = 2\n");
    assert!(server.wait_for_stderr("configuration epoch is now", Duration::from_secs(30)), "{}", server.stderr_text());
    server.stop();
}

#[test]
fn policy_made_mail_is_injected_durably() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let policy = format!(
        r#"local kumo = require 'kumo'
{init}
kumo.on('smtp_server_message_received', function(msg)
  if msg:get_first_named_header_value('X-Copy-To') then
    local copy = kumo.make_message('copies@mta.example', msg:get_first_named_header_value('X-Copy-To'),
      'Subject: copy\n\nA copy was made.\n')
    copy:set_meta('tenant', 'copies')
    kumo.inject_message(copy)
    local ok, err = pcall(kumo.make_message, 'not an address', 'x@y.example', 'x')
    if ok or not tostring(err):find('sender') then
      kumo.reject(451, '4.3.0 make_message accepted a bad sender')
    end
    local result = kumo.api.inject.inject_v1 {{
      envelope_sender = 'notify@mta.example',
      content = 'Subject: hello {{{{ name }}}}\r\n\r\nhi\r\n',
      recipients = {{ {{ email = 'notify@dest.example', substitutions = {{ name = 'Ann' }} }} }},
    }}
    if result.success_count ~= 1 then
      kumo.reject(451, '4.3.0 inject_v1: ' .. kumo.json_encode(result))
    end
  end
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#,
        sink = sink.addr,
        init = init(d, "", "")
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["orig@dest.example"], "X-Copy-To: copy@dest.example\r\n\r\nx\r\n");
    assert_eq!(r.code, 250, "{}\n{}", r.text, server.stderr_text());
    assert!(sink.wait_for(3, Duration::from_secs(20)), "delivered {}", sink.count());
    let got = sink.messages();
    let copy = got.iter().find(|m| m.to == ["copy@dest.example"]).expect("the copy");
    assert_eq!(copy.from, "copies@mta.example");
    assert!(String::from_utf8_lossy(&copy.data).contains("Subject: copy\r\n\r\nA copy was made.\r\n"));
    let notify = got.iter().find(|m| m.to == ["notify@dest.example"]).expect("inject_v1");
    assert!(String::from_utf8_lossy(&notify.data).contains("Subject: hello Ann"));
    let records = harness::log_records(d);
    let reception = |who: &str| {
        records.iter().find(|r| r["type"] == "Reception" && r["recipient"] == who).cloned().expect("Reception")
    };
    assert_eq!(reception("copy@dest.example")["reception_protocol"], "Lua");
    assert_eq!(reception("copy@dest.example")["queue"], "copies@dest.example");
    assert_eq!(reception("notify@dest.example")["reception_protocol"], "HTTP");
    drop(c);
    server.stop();
}

#[test]
fn rollup_reroutes_by_mx_host_suffix() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let zone = "$ORIGIN dest.example.\n@ 600 MX 10 dest-example.olc.protection.outlook.com.\n$ORIGIN other.example.\n@ 600 MX 10 mx.other.example.\n";
    let policy = format!(
        r#"local kumo = require 'kumo'
local rollup = require 'policy-extras.rollup'
{init}
kumo.on('smtp_server_message_received', function(msg)
  rollup.reroute_based_on_mx_host_suffix(msg, {{ ['.olc.protection.outlook.com.'] = 'outlook.com' }})
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1h' }}
end)
"#,
        init = init(d, "", zone)
    );
    let path = write(d, "init.lua", &policy);
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["u@dest.example"], "Subject: x\r\n\r\nx\r\n").code, 250);
    assert_eq!(c.send_mail("a@s.example", &["u@other.example"], "Subject: x\r\n\r\nx\r\n").code, 250);
    let records = harness::log_records(d);
    let queue = |who: &str| {
        records.iter().find(|r| r["type"] == "Reception" && r["recipient"] == who).map(|r| r["queue"].clone())
    };
    assert_eq!(queue("u@dest.example"), Some("dest.example!outlook.com".into()), "{records:?}");
    assert_eq!(queue("u@other.example"), Some("other.example".into()));
    drop(c);
    server.stop();
}

#[test]
fn log_hooks_and_dkim_sign_load_in_their_documented_form() {
    let dir = harness::temp_dir();
    let d = dir.path();
    std::fs::create_dir_all(d.join("dkim/example.com")).unwrap();
    write(
        d,
        "dkim/example.com/default.key",
        "-----BEGIN PRIVATE KEY-----\nnot a real key\n-----END PRIVATE KEY-----\n",
    );
    write(
        d,
        "dkim_data.toml",
        &format!(
            "[base]\nselector = 'default'\nheaders = ['From', 'To', 'Subject']\n\n[domain.'example.com']\nfilename = '{}/dkim/example.com/default.key'\n",
            d.display()
        ),
    );
    let policy = format!(
        r#"local kumo = require 'kumo'
local log_hooks = require 'policy-extras.log_hooks'
log_hooks:new_json {{
  name = 'webhook',
  url = 'http://127.0.0.1:4242/log',
  log_parameters = {{ headers = {{ 'Subject' }} }},
}}
local dkim_sign = require 'policy-extras.dkim_sign'
local dkim_signer = dkim_sign:setup {{ '{d}/dkim_data.toml' }}
{init}
kumo.on('smtp_server_message_received', function(msg)
  dkim_signer(msg)
end)
"#,
        d = d.display(),
        init = init(d, "", "")
    );
    let path = write(d, "init.lua", &policy);
    let (ok, text) = check(&path);
    assert!(ok, "{text}");
    // signing is live: nothing in the policy is "accepted but has no effect"
    assert!(!text.contains("kumo.dkim"), "{text}");
    // the log hook is live now (tests/log_hooks.rs): check has nothing to say about it
    assert!(!text.contains("configure_log_hook") && !text.contains("should_enqueue_log_record"), "{text}");
    // misuse: a data file with a key the helper does not know fails with the file named
    write(d, "dkim_data.toml", "[base]\nselectr = 'typo'\n");
    let (ok, text) = check(&path);
    assert!(!ok, "{text}");
    assert!(text.contains("dkim_data.toml") && text.contains("selectr"), "{text}");
}
