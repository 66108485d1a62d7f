//! KumoMTA's `null` queue discards what is put into it, wherever the `queue` meta is set:
//! at SMTP reception, by `http_message_generated`, by `requeue_message` after a transient
//! failure. It must never become a scheduled queue named "null" that retries until
//! `max_age` and holds spool space.

mod harness;

use harness::sink::Sink;
use harness::smtp::Client;
use harness::{Server, http_get, http_request, wait_for_record};
use std::time::Duration;

fn scheduled_null(server: &Server) -> serde_json::Value {
    let (_, body) = http_get(&server.http[0], "/metrics.json");
    let m: serde_json::Value = serde_json::from_str(&body).unwrap();
    m["scheduled_count"]["value"]["queue"]["null"].clone()
}

#[test]
fn null_queue_discards_from_http_injection_and_from_requeue() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let sink = Sink::start(d);
    let policy = format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{d}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{d}/logs' }}
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
end)
kumo.on('http_message_generated', function(msg)
  msg:set_meta('queue', 'null')
end)
kumo.on('requeue_message', function(msg, response)
  msg:set_meta('queue', 'null')
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, egress_source, site_name)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#,
        d = d.display(),
        sink = sink.addr
    );
    let path = d.join("init.lua");
    std::fs::write(&path, policy).unwrap();
    let server = Server::start(d, &path);

    let req = r#"{"envelope_sender": "a@s.example", "content": "Subject: x\r\n\r\nx\r\n", "recipients": [{"email": "u@dest.example"}]}"#;
    let (code, body) = http_request(&server.http[0], "POST", "/api/inject/v1", Some(req), &[]);
    assert_eq!(code, 200, "{body}");
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["tempfail@dest.example"], "Subject: y\r\n\r\ny\r\n").code, 250);
    assert!(wait_for_record(d, Duration::from_secs(10), |r| r["type"] == "TransientFailure").is_some());
    std::thread::sleep(Duration::from_millis(500));
    assert!(scheduled_null(&server).is_null(), "no scheduled queue named null: {}", scheduled_null(&server));
    server.stop();
    assert_eq!(harness::spooled(d).len(), 0, "discarded messages leave the spool");
    assert_eq!(sink.count(), 0);
}
