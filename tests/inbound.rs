//! Reception end to end: the real binary, a Lua policy, real sockets, real spool files
//! and log segments.

mod harness;

use harness::smtp::{Client, ids};
use harness::{log_records, spooled, start, start_policy_text, wait_for_record};
use std::time::Duration;

const BODY: &str = "Subject: hello\r\nFrom: <a@sender.example>\r\n\r\nHi there";

#[test]
fn trusted_relay_is_spooled_with_trace_headers_and_logged() {
    let (dir, server) = start(
        "trace_headers = { include_meta_names = { 'tenant' } },",
        r#"
kumo.on('smtp_server_message_received', function(msg, conn)
  msg:set_meta('tenant', 'acme')
  assert(conn:get_meta('received_from'))
  assert(msg:get_meta('received_via'))
end)
"#,
    );
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@sender.example", &["b@dest.example"], BODY);
    assert!(r.starts("250 2.0.0 OK ids="), "{r:?}");
    let id = ids(&r)[0].clone();
    c.cmd("QUIT");
    let rec =
        wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "Reception").expect("Reception record");
    assert_eq!(rec["id"], id.as_str());
    assert_eq!(rec["sender"], "a@sender.example");
    assert_eq!(rec["recipient"], "b@dest.example");
    assert_eq!(rec["queue"], "acme@dest.example");
    assert_eq!(rec["reception_protocol"], "ESMTP");
    assert_eq!(rec["peer_address"]["addr"], "127.0.0.1");
    assert_eq!(rec["response"]["code"], 250);
    assert!(server.stop().success());

    let msgs = spooled(dir.path());
    assert_eq!(msgs.len(), 1);
    let m = &msgs[0];
    assert_eq!(m.id().to_string(), id);
    let received = m.first_header("Received").unwrap().expect("Received header");
    assert!(received.contains("by mx.test") && received.contains(&id), "{received}");
    let kumo_ref = m.first_header("X-KumoRef").unwrap().expect("X-KumoRef header");
    use base64::Engine;
    let json: serde_json::Value =
        serde_json::from_slice(&base64::engine::general_purpose::STANDARD.decode(kumo_ref).unwrap()).unwrap();
    assert_eq!(json["_@_"], "\\_/");
    assert_eq!(json["recipient"], "b@dest.example");
    assert_eq!(json["tenant"], "acme");
    assert!(m.data().unwrap().ends_with(b"Hi there\r\n"));
}

#[test]
fn untrusted_peer_cannot_relay_but_listener_domains_can() {
    let (dir, server) = start(
        "relay_hosts = { '10.0.0.0/8' },",
        r#"
kumo.on('get_listener_domain', function(domain, listener, conn)
  if domain == 'ours.example' then
    return kumo.make_listener_domain { relay_to = true }
  end
end)
"#,
    );
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.cmd("MAIL FROM:<x@elsewhere.example>").code, 250);
    for foreign in [
        "<victim@foreign.example>",
        "<victim%foreign.example@foreign.example>",
        "<@ours.example:victim@foreign.example>",
        "<\"victim@foreign.example\"@foreign.example>",
        "<victim@[192.0.2.1]>",
    ] {
        let r = c.cmd(&format!("RCPT TO:{foreign}"));
        assert!(r.starts("550 5.7.1"), "{foreign}: {r:?}");
    }
    // percent hack and quoted local parts addressed to our own domain are ours to take
    assert_eq!(c.cmd("RCPT TO:<user@ours.example>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<a%b@OURS.example>").code, 250);
    assert!(c.cmd("DATA").code == 354);
    c.send(b"Subject: x\r\n\r\nbody\r\n.\r\n");
    assert_eq!(c.reply().code, 250);
    let rej =
        wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "Rejection").expect("Rejection record");
    assert_eq!(rej["response"]["code"], 550);
    assert_eq!(rej["response"]["enhanced_code"]["subject"], 7);
}

#[test]
fn kumo_reject_reaches_the_client_exactly_and_is_logged() {
    let (dir, server) = start(
        "",
        r#"
kumo.on('smtp_server_message_received', function(msg)
  if msg:get_first_named_header_value('Subject') == 'spam' then
    kumo.reject(552, '5.7.99 we do not want this')
  end
end)
kumo.on('smtp_server_mail_from', function(sender)
  if sender.domain == 'blocked.example' then
    kumo.reject(550, '5.7.1 sender ' .. tostring(sender) .. ' is blocked')
  end
end)
"#,
    );
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@sender.example", &["b@dest.example"], "Subject: spam\r\n\r\nbuy");
    assert_eq!(r.text.trim_end(), "552 5.7.99 we do not want this");
    let r = c.cmd("MAIL FROM:<bad@blocked.example>");
    assert_eq!(r.text.trim_end(), "550 5.7.1 sender bad@blocked.example is blocked");
    // the session goes on
    let r = c.send_mail("a@sender.example", &["b@dest.example"], "Subject: fine\r\n\r\nok");
    assert_eq!(r.code, 250, "{r:?}");
    let rej = wait_for_record(dir.path(), Duration::from_secs(5), |r| {
        r["type"] == "Rejection" && r["response"]["code"] == 552
    })
    .expect("Rejection record");
    assert_eq!(rej["response"]["content"], "we do not want this");
    assert_eq!(rej["response"]["enhanced_code"]["detail"], 99);
    assert_eq!(rej["response"]["command"], "DATA");
    assert!(server.stop().success());
    assert_eq!(spooled(dir.path()).len(), 1, "the rejected message was not spooled");
}

#[test]
fn lua_errors_and_runaway_handlers_tempfail_and_the_server_keeps_serving() {
    let (dir, server) = start(
        "",
        r#"
kumo.on('smtp_server_message_received', function(msg)
  local s = msg:get_first_named_header_value('Subject')
  if s == 'error' then error('boom') end
  if s == 'loop' then while true do end end
  if s == 'sleep' then kumo.sleep(30) end
  if s == 'memory' then local t = {} ; local x = string.rep('x', 1024 * 1024) ; for i = 1, 1e6 do t[i] = x .. i end end
end)
"#,
    );
    let mut c = Client::ehlo(server.addr());
    for subject in ["error", "loop", "sleep", "memory"] {
        let started = std::time::Instant::now();
        let r = c.send_mail("a@sender.example", &["b@dest.example"], &format!("Subject: {subject}\r\n\r\nx"));
        assert!(r.starts("451 4.3.0"), "{subject}: {r:?}");
        assert!(started.elapsed() < Duration::from_secs(10), "{subject} took {:?}", started.elapsed());
    }
    let r = c.send_mail("a@sender.example", &["b@dest.example"], "Subject: fine\r\n\r\nx");
    assert_eq!(r.code, 250, "{r:?}");
    assert!(server.stop().success());
    assert_eq!(spooled(dir.path()).len(), 1, "only the accepted message is in the spool");
}

#[test]
fn events_run_in_kumomta_order_with_their_arguments() {
    let (dir, server) = start(
        "",
        r#"
local function note(conn, name)
  local seen = conn:get_meta('seen') or ''
  conn:set_meta('seen', seen .. name .. ',')
end
kumo.on('smtp_server_get_dynamic_parameters', function(listener, conn)
  assert(listener:match('^127%.0%.0%.1:%d+$'), listener)
  note(conn, 'dyn')
  return { banner = 'dynamic banner' }
end)
kumo.on('smtp_server_connection_accepted', function(conn) note(conn, 'accepted') end)
kumo.on('smtp_server_ehlo', function(domain, conn, extensions)
  note(conn, 'ehlo:' .. domain)
  assert(#extensions > 0)
  table.insert(extensions, 'X-EXTRA')
  return extensions
end)
kumo.on('smtp_server_mail_from', function(sender, conn) note(conn, 'mail:' .. sender.email) end)
kumo.on('get_listener_domain', function(domain, listener, conn) note(conn, 'domain:' .. domain) end)
kumo.on('smtp_server_rcpt_to', function(rcpt, conn) note(conn, 'rcpt:' .. rcpt.user) end)
kumo.on('smtp_server_data', function(msg, conn)
  note(conn, 'data')
  msg:append_header('X-Data-Seen', 'yes')
end)
kumo.on('smtp_server_message_received', function(msg, conn)
  note(conn, 'received')
  msg:set_meta('seen', conn:get_meta('seen'))
  assert(msg:get_first_named_header_value('X-Data-Seen') == 'yes')
  assert(msg:recipient().domain == 'dest.example')
  assert(msg:sender().user == 'a')
end)
"#,
    );
    let mut c = Client::connect(server.addr());
    let banner = c.reply();
    assert_eq!(banner.text.trim_end(), "220 mx.test dynamic banner");
    let ehlo = c.cmd("EHLO client.test");
    assert!(ehlo.text.contains("X-EXTRA"), "{ehlo:?}");
    let r = c.send_mail("a@sender.example", &["b@dest.example"], "Subject: x\r\n\r\nx");
    assert_eq!(r.code, 250, "{r:?}");
    assert!(server.stop().success());
    let m = &spooled(dir.path())[0];
    assert_eq!(
        m.get_meta("seen").unwrap(),
        "dyn,accepted,ehlo:client.test,mail:a@sender.example,domain:sender.example,domain:dest.example,rcpt:b,data,received,"
    );
}

#[test]
fn null_queue_discards_after_reception() {
    let (dir, server) =
        start("", "kumo.on('smtp_server_message_received', function(msg) msg:set_meta('queue', 'null') end)");
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["b@d.example"], "Subject: x\r\n\r\nx").code, 250);
    let rec = wait_for_record(dir.path(), Duration::from_secs(5), |r| r["type"] == "Reception").unwrap();
    assert_eq!(rec["queue"], "null");
    assert!(server.stop().success());
    assert!(spooled(dir.path()).is_empty());
}

#[test]
fn multi_recipient_transactions_split_per_batch_handling() {
    let (_dir, server) = start("", "");
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["one@x.example", "two@x.example", "three@y.example"], "Subject: x\r\n\r\nx");
    assert_eq!(ids(&r).len(), 3, "BifurcateAlways: one message per recipient: {r:?}");
    assert!(server.stop().success());

    let (dir, server) = start("batch_handling = 'BatchByDomain',", "");
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["one@x.example", "two@x.example", "three@y.example"], "Subject: x\r\n\r\nx");
    assert_eq!(ids(&r).len(), 2, "BatchByDomain: one message per domain: {r:?}");
    assert!(server.stop().success());
    let recs = log_records(dir.path());
    let x = recs.iter().find(|r| r["queue"] == "x.example").expect("x.example reception");
    assert_eq!(x["recipient"], serde_json::json!(["one@x.example", "two@x.example"]));
}

#[test]
fn low_free_space_refuses_mail_with_452() {
    let (_dir, server) = start_policy_text(
        "kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{d}/spool', min_free_space = '100%' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)",
    );
    let mut c = Client::ehlo(server.addr());
    let r = c.cmd("MAIL FROM:<a@s.example>");
    assert!(r.starts("452 4.3.1"), "{r:?}");
    drop(server);
}

#[test]
fn peer_and_via_blocks_override_listener_settings() {
    let (_dir, server) = start(
        "max_recipients_per_message = 10, peer = { ['127.0.0.0/8'] = { max_recipients_per_message = 1 } }, via = { ['127.0.0.1'] = { banner = 'via banner' } },",
        "",
    );
    let mut c = Client::connect(server.addr());
    assert_eq!(c.reply().text.trim_end(), "220 mx.test via banner");
    c.cmd("EHLO x");
    c.cmd("MAIL FROM:<a@s.example>");
    assert_eq!(c.cmd("RCPT TO:<b@d.example>").code, 250);
    assert!(c.cmd("RCPT TO:<c@d.example>").starts("452 4.5.3"));
}

#[test]
fn too_many_connections_get_421() {
    let (_dir, server) = start_policy_text(
        "kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{d}/spool' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', max_connections = 2 }
end)",
    );
    let _a = Client::open(server.addr());
    let _b = Client::open(server.addr());
    let mut extra = Client::connect(server.addr());
    let r = extra.reply();
    assert!(r.starts("421 4.3.2"), "{r:?}");
    assert!(r.text.contains("too many concurrent sessions"));
    assert!(extra.closed());
}

#[test]
fn sigterm_shuts_down_cleanly() {
    let (_dir, server) = start("", "");
    let mut idle = Client::ehlo(server.addr());
    let status = server.stop();
    assert!(status.success(), "{status:?}");
    let r = idle.reply();
    assert!(r.code == 421 || r.code == 0, "{r:?}");
}

#[test]
fn the_message_object_api_works_as_in_kumomta() {
    let (dir, server) = start(
        "",
        r#"
local utils = require 'policy-extras.policy_utils'
kumo.on('smtp_server_message_received', function(msg, conn)
  utils.assert_eq(#msg:id(), 32)
  utils.assert_eq(msg:sender().email, 'a@sender.example')
  utils.assert_eq(tostring(msg:recipient()), 'b@dest.example')
  utils.assert_eq(#msg:recipient_list(), 1)
  utils.assert_eq(msg:num_attempts(), 0)
  utils.assert_eq(msg:queue_name(), 'dest.example')
  utils.assert_eq(msg:get_first_named_header_value('subject'), 'folded subject')
  utils.assert_eq(msg:get_all_named_header_values('X-Multi'), { 'one', 'two' })
  local headers = msg:get_all_headers()
  utils.assert_eq(headers[1][1], 'Received')
  utils.assert_eq(msg:from_header().email, 'author@sender.example')
  utils.assert_eq(msg:from_header().name, 'The Author')
  utils.assert_eq(msg:to_header().domain, 'dest.example')
  msg:import_x_headers({ 'x-campaign' })
  utils.assert_eq(msg:get_meta('x-campaign'), 'spring')
  utils.assert_eq(msg:get_meta('x-multi'), nil)
  msg:remove_x_headers({ 'x-keep' })
  utils.assert_eq(msg:get_first_named_header_value('X-Multi'), nil)
  utils.assert_eq(msg:get_first_named_header_value('X-Keep'), 'yes')
  msg:remove_all_named_headers('X-Keep')
  msg:append_header('X-Appended', 'last')
  msg:prepend_header('X-Prepended', 'first')
  msg:set_meta('tenant', 'acme')
  msg:set_meta('campaign', 'spring')
  msg:set_meta('routing_domain', 'route.example')
  msg:set_meta('complex', { list = { 1, 2 }, flag = true })
  utils.assert_eq(msg:get_meta('complex').list[2], 2)
  utils.assert_eq(msg:queue_name(), 'spring:acme@dest.example!route.example')
  msg:set_sender('new@sender.example')
  msg:set_recipient('c@dest.example')
  utils.assert_eq(msg:recipient().user, 'c')
  local data = msg:get_data()
  assert(data:find('body text', 1, true))
  msg:set_data(data .. 'appended line\r\n')
end)
"#,
    );
    let mut c = Client::ehlo(server.addr());
    let body = "Subject: folded\r\n subject\r\nFrom: The Author <author@sender.example>\r\nTo: <b@dest.example>\r\nX-Multi: one\r\nX-Multi: two\r\nX-Keep: yes\r\nX-Campaign: spring\r\n\r\nbody text";
    let r = c.send_mail("a@sender.example", &["b@dest.example"], body);
    assert_eq!(r.code, 250, "{r:?}");
    assert!(server.stop().success());
    let m = &spooled(dir.path())[0];
    assert_eq!(m.sender().email(), "new@sender.example");
    assert_eq!(m.recipient().unwrap().email(), "c@dest.example");
    assert_eq!(m.get_meta("complex").unwrap()["flag"], true);
    let data = String::from_utf8_lossy(&m.data().unwrap()).to_string();
    assert!(data.starts_with("X-KumoRef: "), "{data}");
    assert!(data.contains("X-Prepended: first\r\nReceived: "), "{data}");
    assert!(data.contains("X-Appended: last\r\n\r\nbody text"), "{data}");
    assert!(!data.contains("X-Keep"), "{data}");
    assert!(data.ends_with("appended line\r\n"), "{data}");
}

#[test]
fn disconnect_closes_the_connection_and_421_rejections_too() {
    let (_dir, server) = start(
        "",
        r#"
kumo.on('smtp_server_rcpt_to', function(rcpt)
  if rcpt.user == 'drop' then kumo.disconnect(550, '5.7.1 go away') end
  if rcpt.user == 'busy' then kumo.reject(421, '4.3.2 come back later') end
  if rcpt.user == 'nope' then kumo.reject(550, '5.1.1 no such user') end
end)
"#,
    );
    for (user, line) in [("drop", "550 5.7.1 go away"), ("busy", "421 4.3.2 come back later")] {
        let mut c = Client::ehlo(server.addr());
        c.cmd("MAIL FROM:<a@s.example>");
        let r = c.cmd(&format!("RCPT TO:<{user}@d.example>"));
        assert_eq!(r.text.trim_end(), line);
        assert!(c.closed(), "{user}: the connection is closed");
    }
    let mut c = Client::ehlo(server.addr());
    c.cmd("MAIL FROM:<a@s.example>");
    assert_eq!(c.cmd("RCPT TO:<nope@d.example>").text.trim_end(), "550 5.1.1 no such user");
    assert_eq!(c.cmd("NOOP").code, 250, "a plain rejection keeps the session");
}

#[test]
fn relaying_is_checked_again_after_message_received() {
    let (_dir, server) = start(
        "relay_hosts = {},",
        r#"
kumo.on('get_listener_domain', function(domain)
  if domain == 'ours.example' then return kumo.make_listener_domain { relay_to = true } end
end)
kumo.on('smtp_server_message_received', function(msg)
  if msg:get_first_named_header_value('Subject') == 'redirect' then
    msg:set_recipient('victim@foreign.example')
  end
end)
"#,
    );
    let mut c = Client::ehlo(server.addr());
    let r = c.send_mail("a@s.example", &["u@ours.example"], "Subject: redirect\r\n\r\nx");
    assert!(r.starts("550 5.7.1"), "{r:?}");
    assert_eq!(c.send_mail("a@s.example", &["u@ours.example"], "Subject: stay\r\n\r\nx").code, 250);
}

#[test]
fn log_records_carry_the_configured_headers_and_meta() {
    let (dir, server) = start_policy_text(
        "kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{d}/spool' }
  kumo.configure_local_logs { log_dir = '{d}/logs', headers = { 'Subject', 'X-Id' }, meta = { 'tenant' },
    per_record = { Rejection = { enable = false } } }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0' }
end)
kumo.on('smtp_server_message_received', function(msg) msg:set_meta('tenant', 'acme') end)",
    );
    let mut c = Client::ehlo(server.addr());
    c.cmd("BOGUS");
    assert_eq!(
        c.send_mail("a@s.example", &["b@d.example"], "Subject: logged\r\nX-Id: 7\r\nX-Other: no\r\n\r\nx").code,
        250
    );
    assert!(server.stop().success());
    let recs: Vec<_> = log_records(dir.path()).into_iter().filter(|r| r["type"] != "TransientFailure").collect();
    assert_eq!(recs.len(), 1, "Rejection records are disabled by per_record: {recs:?}");
    assert_eq!(recs[0]["headers"]["Subject"], "logged");
    assert_eq!(recs[0]["headers"]["X-Id"], "7");
    assert!(recs[0]["headers"].get("X-Other").is_none());
    assert_eq!(recs[0]["meta"]["tenant"], "acme");
}

#[test]
fn several_listeners_and_the_http_liveness_check() {
    let (_dir, server) = start_policy_text(
        "kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{d}/spool' }
  kumo.start_http_listener { listen = '127.0.0.1:0' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', banner = 'first' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', banner = 'second' }
end)",
    );
    assert_eq!(server.smtp.len(), 2);
    let banners: Vec<String> = server.smtp.iter().map(|a| Client::connect(a).reply().text).collect();
    assert!(banners[0].contains("first") && banners[1].contains("second"), "{banners:?}");
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(&server.http[0]).unwrap();
    s.write_all(b"GET /api/check-liveness/v1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.1 200"), "{resp}");
    assert!(server.stop().success());
}

#[test]
fn memoize_caches_plain_results_across_contexts_until_the_ttl() {
    // math.random stands for an expensive lookup: equal values mean one computation
    let (dir, server) = start(
        "",
        r#"
local lookup = kumo.memoize(function(key)
  return key .. ':' .. tostring(math.random(1, 1000000000)), { n = 1 }
end, { name = 'test-lookup', ttl = '3 seconds', capacity = 2 })
local uncacheable = kumo.memoize(function()
  return kumo.make_listener_domain { relay_to = true }
end, { name = 'test-userdata', ttl = '1 hour', capacity = 10 })
kumo.on('smtp_server_message_received', function(msg)
  local value, extra = lookup(msg:get_first_named_header_value('X-Key'))
  assert(extra.n == 1, 'every result comes back')
  assert(uncacheable() ~= nil)
  msg:append_header('X-Memo', value)
end)
"#,
    );
    let mut clients: Vec<Client> = (0..3).map(|_| Client::ehlo(server.addr())).collect();
    let mut send = |i: usize, key: &str| {
        let body = format!("X-Key: {key}\r\nSubject: m\r\n\r\nx");
        assert_eq!(clients[i % 3].send_mail("a@s.example", &["b@d.example"], &body).code, 250);
    };
    for i in 0..6 {
        send(i, "a"); // concurrent connections use different Lua contexts
    }
    send(0, "b");
    // past the ttl (the sends before it need the ttl's room on a loaded machine)
    std::thread::sleep(Duration::from_millis(3300));
    send(1, "a"); // expired
    assert!(server.stop().success());
    let mut memo: Vec<(wasmta::message::SpoolId, String)> =
        spooled(dir.path()).iter().map(|m| (m.id(), m.first_header("X-Memo").unwrap().expect("header"))).collect();
    memo.sort();
    let values: Vec<&str> = memo.iter().map(|(_, v)| v.as_str()).collect();
    assert_eq!(values.len(), 8);
    assert!(values[..6].iter().all(|v| *v == values[0] && v.starts_with("a:")), "{values:?}");
    assert!(values[6].starts_with("b:"));
    assert!(values[7].starts_with("a:") && values[7] != values[0], "recomputed after the ttl: {values:?}");
}
