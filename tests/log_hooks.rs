//! Log hooks and webhooks, the way KumoMTA's documentation sets them up: every Delivery
//! and Bounce record reaches a real HTTP receiver at least once, through a receiver
//! outage (503, then connections refused), across a kill -9, in batches; the documented
//! hand-written form (`configure_log_hook`, `should_enqueue_log_record`, a `make.webhook`
//! constructor with `kumo.http.build_client`) works unchanged; mistakes are named.

mod harness;

use harness::sink::Sink;
use harness::smtp::Client;
use harness::webhook::{Mode, Webhook};
use harness::{Server, log_records, temp_dir, write_policy_text};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A policy written as KumoMTA's log hook documentation writes it: the helper first,
/// then a relay to the sink.
fn helper_policy(sink: &str, hook_options: &str) -> String {
    format!(
        r#"
local kumo = require 'kumo'
local log_hooks = require 'policy-extras.log_hooks'

log_hooks:new_json {{
  name = 'webhook',
  {hook_options}
  log_parameters = {{ headers = {{ 'Subject' }} }},
  queue_config = {{ retry_interval = '1s', max_retry_interval = '2s' }},
}}

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)

kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#
    )
}

/// Sends `n` messages on `clients` connections: every tenth to a recipient the sink
/// refuses (550), the rest accepted. Returns the recipients.
fn send(server: &Server, n: usize, clients: usize, tag: &str) -> Vec<String> {
    let addr = server.addr().to_string();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (addr, tag) = (addr.clone(), tag.to_string());
            std::thread::spawn(move || {
                let mut client = Client::ehlo(&addr);
                let mut sent = vec![];
                for i in (c..n).step_by(clients) {
                    let rcpt = match i % 10 {
                        9 => format!("permfail-{tag}{i}@dest.example"),
                        _ => format!("r-{tag}{i}@dest.example"),
                    };
                    let body = format!("Subject: hook {tag}{i}\r\n\r\nbody {i}\r\n");
                    assert_eq!(client.send_mail("a@s.example", &[&rcpt], &body).code, 250);
                    sent.push(rcpt);
                }
                sent
            })
        })
        .collect();
    threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
}

/// Per recipient, how many Delivery and Bounce records the receiver got.
fn outcomes(hook: &Webhook) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for r in hook.records() {
        if matches!(r["type"].as_str(), Some("Delivery" | "Bounce")) {
            *seen.entry(r["recipient"].as_str().unwrap_or_default().to_string()).or_default() += 1;
        }
    }
    seen
}

fn wait_for_outcomes(hook: &Webhook, rcpts: &[String], timeout: Duration) -> HashMap<String, usize> {
    let deadline = Instant::now() + timeout;
    loop {
        let seen = outcomes(hook);
        let missing = rcpts.iter().filter(|r| !seen.contains_key(*r)).count();
        if missing == 0 {
            return seen;
        }
        assert!(Instant::now() < deadline, "{missing} of {} outcomes never reached the webhook", rcpts.len());
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until the server's local logs hold `n` Delivery or Bounce records of relayed
/// messages (not of the hook's own messages).
fn wait_for_local_outcomes(dir: &std::path::Path, n: usize, deadline: Instant) {
    let done = |r: &serde_json::Value| {
        matches!(r["type"].as_str(), Some("Delivery" | "Bounce")) && r["queue"] != "webhook.log_hook"
    };
    while log_records(dir).iter().filter(|r| done(r)).count() < n {
        assert!(Instant::now() < deadline, "the {n} messages were not all delivered or bounced");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// 1,000 relayed messages (900 delivered, 100 bounced): the receiver answers 503 for 15 s
/// and then refuses connections for 15 s while mail flows. Every Delivery and Bounce
/// record arrives at least once; the hook queue retried instead of dropping (KumoMTA's
/// own new_json treats the 503 as permanent and loses those records).
#[test]
fn every_delivery_and_bounce_reaches_the_webhook_through_an_outage() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &helper_policy(&sink.addr, &format!("url = 'http://{}/log',", hook.addr)));
    let server = Server::start(dir.path(), &p);
    let first = send(&server, 300, 4, "a");
    hook.set_mode(Mode::Unavailable);
    let outage = Instant::now();
    let mut rcpts = send(&server, 350, 4, "b");
    while outage.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(100));
    }
    hook.set_mode(Mode::Down);
    rcpts.extend(send(&server, 350, 4, "c"));
    while outage.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    hook.set_mode(Mode::Up);
    rcpts.extend(first);
    assert_eq!(rcpts.len(), 1000);
    let seen = wait_for_outcomes(&hook, &rcpts, Duration::from_secs(90));
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    eprintln!("1000 outcomes reached the webhook; {duplicates} duplicate(s); {} requests", hook.requests());
    let records = hook.records();
    let bounced = records.iter().filter(|r| r["type"] == "Bounce").count();
    assert!(bounced >= 100, "the 100 refused recipients bounced: {bounced}");
    // headers were selected for the hook, and no record is about a hook delivery
    let delivery = records.iter().find(|r| r["type"] == "Delivery").unwrap();
    assert!(delivery["headers"]["Subject"].as_str().unwrap().starts_with("hook "), "{delivery}");
    assert!(
        records.iter().all(|r| r["queue"] != "webhook.log_hook"),
        "records about delivering records are not hooked again"
    );
    // the outage shows in the server's own logs as retries of the hook queue, not drops
    let local = log_records(dir.path());
    let retried = local.iter().filter(|r| r["type"] == "TransientFailure" && r["queue"] == "webhook.log_hook").count();
    assert!(retried > 0, "the hook queue retried during the outage");
    assert!(
        !local.iter().any(|r| r["type"] == "Bounce" && r["queue"] == "webhook.log_hook"),
        "no hook record was given up"
    );
    assert_eq!(server.metric("log_hook_records_dropped_total"), Some(0.0));
    assert!(server.stop().success());
}

/// Hook records waiting for a receiver that is down survive a kill -9 and are delivered
/// after the restart, batched as JSON arrays.
#[test]
fn queued_hook_records_survive_kill_9_and_arrive_in_batches() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    hook.set_mode(Mode::Down);
    let dir = temp_dir();
    let options = format!("url = 'http://{}/log', batch_size = 20, max_batch_latency = '200ms',", hook.addr);
    let p = write_policy_text(dir.path(), &helper_policy(&sink.addr, &options));
    let server = Server::start(dir.path(), &p);
    let rcpts = send(&server, 60, 2, "k");
    // the records are queued and have been tried (the receiver is down)
    let deadline = Instant::now() + Duration::from_secs(30);
    while !log_records(dir.path()).iter().any(|r| r["type"] == "TransientFailure" && r["queue"] == "webhook.log_hook") {
        assert!(Instant::now() < deadline, "no attempt to deliver a hook record");
        std::thread::sleep(Duration::from_millis(100));
    }
    // every outcome logged, and a moment for its record to be spooled: a record still on
    // its way to the spool when the process dies is lost (README)
    wait_for_local_outcomes(dir.path(), 60, deadline);
    std::thread::sleep(Duration::from_millis(500));
    server.kill9();
    hook.set_mode(Mode::Up);
    let server = Server::start(dir.path(), &p);
    wait_for_outcomes(&hook, &rcpts, Duration::from_secs(60));
    let batched = hook.bodies().iter().filter(|b| b.starts_with(b"[")).count();
    assert!(batched > 0, "records arrived as JSON arrays");
    assert!(hook.bodies().len() < hook.records().len(), "fewer requests than records: batching");
    assert!(server.stop().success());
}

/// `new_json` with batching puts a batch of records in one message (the spool and the
/// queue work once per batch, which is what keeps the hook's cost low; bench/loghook.sh):
/// messages of at least `min_batch_size` records while mail flows, POSTed as JSON arrays
/// of at most `batch_size` records. A receiver that refuses a batch gives up every record in it, and the
/// drop counter counts records, not messages.
#[test]
fn batched_records_travel_as_one_message_and_a_refused_batch_counts_each_record() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    let dir = temp_dir();
    let options =
        format!("url = 'http://{}/log', batch_size = 50, min_batch_size = 10, max_batch_latency = '2s',", hook.addr);
    let p = write_policy_text(dir.path(), &helper_policy(&sink.addr, &options));
    let server = Server::start(dir.path(), &p);
    let rcpts = send(&server, 100, 4, "m");
    wait_for_outcomes(&hook, &rcpts, Duration::from_secs(60));
    // 100 Reception, 90 Delivery, 10 Bounce records
    let deadline = Instant::now() + Duration::from_secs(20);
    while hook.records().len() < 200 {
        assert!(Instant::now() < deadline, "{} of 200 records arrived", hook.records().len());
        std::thread::sleep(Duration::from_millis(100));
    }
    let bodies = hook.bodies();
    assert!(bodies.iter().all(|b| b.starts_with(b"[")), "every POST is a JSON array");
    let local = log_records(dir.path());
    let hook_messages: Vec<_> =
        local.iter().filter(|r| r["type"] == "Delivery" && r["queue"] == "webhook.log_hook").collect();
    assert!(bodies.len() <= hook_messages.len(), "a POST carries one hook message or more");
    for body in &bodies {
        let records = serde_json::from_slice::<Vec<serde_json::Value>>(body).expect("a JSON array of records");
        assert!(!records.is_empty() && records.len() <= 50, "at most batch_size records per POST: {}", records.len());
    }
    assert!(
        hook_messages.len() <= 20,
        "200 records in at most 20 messages of 10 or more: {} messages",
        hook_messages.len()
    );
    assert_eq!(hook_messages[0]["recipient"], "log-records@webhook.log_hook", "{}", hook_messages[0]);

    // refused batches: each of their records counts as given up (20 messages: 20
    // Reception, 18 Delivery and 2 Bounce records)
    hook.set_mode(Mode::Refusing);
    send(&server, 20, 2, "x");
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut given_up = 0.0;
    while given_up < 40.0 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        given_up = server.metric("log_hook_records_dropped_total").unwrap_or(0.0);
    }
    assert!(server.wait_for_stderr("record(s)) given up (queue webhook.log_hook)", Duration::from_secs(5)));
    // the line names the records given up (type and message id), to find them in the logs
    let stderr = server.stderr_text();
    let line = stderr.lines().find(|l| l.contains("given up (queue webhook.log_hook)")).unwrap();
    let named = line.split("records: ").nth(1).unwrap_or_default();
    assert!(
        named.starts_with("Reception ") || named.starts_with("Delivery ") || named.starts_with("Bounce "),
        "{line}"
    );
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(server.metric("log_hook_records_dropped_total"), Some(40.0), "records, not messages, are counted");
    assert!(server.stop().success());
}

/// An ordinary restart loses no record: records waiting to fill a batch
/// (`min_batch_size` not reached, `max_batch_latency` a minute away) are spooled when the
/// server is stopped, and the restarted server delivers them.
#[test]
fn a_graceful_stop_spools_records_waiting_to_fill_a_batch() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    let dir = temp_dir();
    let options =
        format!("url = 'http://{}/log', batch_size = 100, min_batch_size = 100, max_batch_latency = '60s',", hook.addr);
    let p = write_policy_text(dir.path(), &helper_policy(&sink.addr, &options));
    let server = Server::start(dir.path(), &p);
    let rcpts = send(&server, 10, 1, "g");
    wait_for_local_outcomes(dir.path(), 10, Instant::now() + Duration::from_secs(20));
    std::thread::sleep(Duration::from_millis(500));
    assert!(hook.bodies().is_empty(), "20 records wait for a batch of 100");
    assert!(server.stop().success());
    let server = Server::start(dir.path(), &p);
    let seen = wait_for_outcomes(&hook, &rcpts, Duration::from_secs(30));
    assert_eq!(seen.len(), 10);
    assert_eq!(hook.records().len(), 20, "every Reception, Delivery and Bounce record, once");
    assert!(server.stop().success());
}

/// `wasmta webhook-sink`, the receiver an operator tries a hook with: it counts what the
/// hook POSTs by type; answering 503 it makes the hook retry, and after a restart with 200
/// every record arrives (refused records are not counted as received); a body that is not
/// records gets 400.
#[test]
fn the_webhook_sink_counts_records_and_can_refuse_them() {
    let start_sink = |port: u16, answer: &str| {
        let child = std::process::Command::new(harness::binary())
            .args(["webhook-sink", "--listen", &format!("127.0.0.1:{port}"), "--answer", answer])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "webhook-sink never listened");
            std::thread::sleep(Duration::from_millis(50));
        }
        child
    };
    let counts = |port: u16| -> serde_json::Value {
        serde_json::from_str(&harness::http_get(&format!("127.0.0.1:{port}"), "/").1).unwrap()
    };
    let port = harness::brokers::free_port();
    let mut receiver = start_sink(port, "503");
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let dir = temp_dir();
    let options = format!("url = 'http://127.0.0.1:{port}/log', batch_size = 10, max_batch_latency = '50ms',");
    let p = write_policy_text(dir.path(), &helper_policy(&sink.addr, &options));
    let server = Server::start(dir.path(), &p);
    send(&server, 20, 2, "w");
    let deadline = Instant::now() + Duration::from_secs(20);
    while counts(port)["refused"].as_u64().unwrap_or(0) == 0 {
        assert!(Instant::now() < deadline, "the hook never posted");
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counts(port)["records"], serde_json::json!({}), "refused records are not counted as received");
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    let mut receiver = start_sink(port, "200");
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts(port)["records"]["Delivery"].as_u64().unwrap_or(0) < 18
        || counts(port)["records"]["Bounce"].as_u64().unwrap_or(0) < 2
    {
        assert!(Instant::now() < deadline, "records after the 503s: {}", counts(port));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(counts(port)["records"]["Reception"].as_u64().unwrap_or(0) >= 20, "{}", counts(port));
    assert_eq!(server.metric("log_hook_records_dropped_total"), Some(0.0));
    let raw_post = |body: &str| {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        let head =
            format!("POST /log HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", body.len());
        c.write_all(format!("{head}{body}").as_bytes()).unwrap();
        let mut answer = String::new();
        c.read_to_string(&mut answer).unwrap();
        answer
    };
    // not records: refused and counted
    let answer = raw_post("nope");
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
    assert_eq!(counts(port)["invalid"], 1);
    // a record whose type is one of the sink's own counters is only a record type
    let answer = raw_post(r#"{"type":"invalid"}"#);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert_eq!(counts(port)["invalid"], 1);
    assert_eq!(counts(port)["records"]["invalid"], 1);
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    assert!(server.stop().success());
}

/// KumoMTA's documented hand-written webhook: configure_log_hook in init,
/// should_enqueue_log_record choosing the queue, a custom_lua queue whose make.webhook
/// constructor posts with kumo.http. A receiver that refuses (400) makes the hook
/// message bounce (the documented kumo.reject(500)); a handler that forgets the queue
/// is named in the log and counted, never sent to the recipient's domain by SMTP.
#[test]
fn the_documented_hand_written_webhook_works_and_mistakes_are_named() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    let dir = temp_dir();
    let text = format!(
        r#"
local kumo = require 'kumo'

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  kumo.configure_log_hook {{ name = 'webhook', headers = {{ 'Subject', 'X-Customer-ID' }} }}
end)

kumo.on('should_enqueue_log_record', function(msg, hook_name)
  local log_record = msg:get_meta 'log_record'
  if log_record.queue == 'webhook' then
    return false
  end
  if log_record.recipient == 'noqueue@dest.example' then
    return true -- a mistake: no queue set
  end
  msg:set_meta('queue', 'webhook')
  return true
end)

kumo.on('make.webhook', function(domain, tenant, campaign)
  local connection = {{}}
  local client = kumo.http.build_client {{}}
  function connection:send(message)
    local response = client:post(kumo.http.build_url('http://{hook}/log', {{ source = 'wasmta' }}))
      :header('Content-Type', 'application/json')
      :body(message:get_data())
      :send()
    local disposition = string.format('%d %s: %s', response:status_code(), response:status_reason(), response:text())
    if response:status_is_success() then
      return disposition
    end
    kumo.reject(500, disposition)
  end
  return connection
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'webhook' then
    return kumo.make_queue_config {{ protocol = {{ custom_lua = {{ constructor = 'make.webhook' }} }} }}
  end
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
"#,
        hook = hook.addr,
        sink = sink.addr
    );
    let p = write_policy_text(dir.path(), &text);
    let server = Server::start(dir.path(), &p);
    let mut c = Client::ehlo(server.addr());
    let body = "Subject: documented\r\nX-Customer-ID: 42\r\n\r\nhi\r\n";
    assert_eq!(c.send_mail("a@s.example", &["one@dest.example"], body).code, 250);
    let seen = wait_for_outcomes(&hook, &["one@dest.example".to_string()], Duration::from_secs(20));
    assert_eq!(seen.len(), 1);
    let delivery = hook.records().into_iter().find(|r| r["type"] == "Delivery").unwrap();
    assert_eq!(delivery["headers"]["X-Customer-ID"], "42", "{delivery}");
    // the hook delivery itself is logged locally with the receiver's answer
    let logged = harness::wait_for_record(dir.path(), Duration::from_secs(10), |r| {
        r["type"] == "Delivery" && r["queue"] == "webhook"
    })
    .expect("the hook message's Delivery record");
    assert_eq!(logged["delivery_protocol"], "Lua");
    assert!(logged["response"]["content"].as_str().unwrap().starts_with("200 OK"), "{logged}");

    // a receiver that refuses: the documented kumo.reject(500) bounces the hook message
    hook.set_mode(Mode::Refusing);
    assert_eq!(c.send_mail("a@s.example", &["two@dest.example"], "Subject: refused\r\n\r\nx\r\n").code, 250);
    let bounced = harness::wait_for_record(dir.path(), Duration::from_secs(20), |r| {
        r["type"] == "Bounce" && r["queue"] == "webhook"
    })
    .expect("the refused hook message bounces");
    assert!(bounced["response"]["content"].as_str().unwrap().contains("400 Bad Request"), "{bounced}");
    // a record that will never arrive is said on the console and counted, not only logged
    assert!(server.wait_for_stderr("given up (queue webhook)", Duration::from_secs(5)), "{}", server.stderr_text());
    // (both of its records, Reception and Delivery, were refused)
    let given_up = server.metric("log_hook_records_dropped_total").unwrap_or(0.0);
    assert!(given_up >= 1.0, "{given_up}");
    hook.set_mode(Mode::Up);

    // the mistake: no queue set; the record is dropped with a reason, nothing goes by SMTP
    assert_eq!(c.send_mail("a@s.example", &["noqueue@dest.example"], "Subject: q\r\n\r\nx\r\n").code, 250);
    assert!(
        server.wait_for_stderr("without setting the queue meta", Duration::from_secs(10)),
        "{}",
        server.stderr_text()
    );
    // the counter is raised before the line is written (CI once read it in between)
    assert!(server.metric("log_hook_records_dropped_total").unwrap_or(0.0) > given_up);
    let to_sink = sink.messages().iter().filter(|m| m.from.is_empty() || m.data.starts_with(b"{")).count();
    assert_eq!(to_sink, 0, "no log record message reached the SMTP destination");
    assert!(server.stop().success());
}

/// The same webhook as a component (`plugins/rust/webhook`, world `delivery`): it chooses
/// the queue of each record (`should-enqueue-log-record`) and is the `make.webhook`
/// constructor of that queue, posting batches through the `http` import. A URL outside
/// the deployment's `http_allow` is refused by the host: the records wait and retry, the
/// reason in every TransientFailure, nothing leaves.
#[test]
fn a_component_is_the_webhook_and_reaches_only_allowed_urls() {
    let wasm = harness::plugins::component("webhook");
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    let text = |allow: &str| {
        format!(
            r#"
local kumo = require 'kumo'

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  kumo.configure_log_hook {{ name = 'webhook' }}
  kumo.wasm.load {{ path = '{wasm}', http_allow = {{ '{allow}' }} }}
end)

kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'webhook' then
    return kumo.make_queue_config {{
      retry_interval = '1s', max_retry_interval = '2s',
      protocol = {{ custom_lua = {{ constructor = 'make.webhook', batch_size = 10, max_batch_latency = '100ms' }} }},
    }}
  end
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
"#,
            wasm = wasm.display(),
            sink = sink.addr
        )
    };
    let url = format!("webhook_url=http://{}/log", hook.addr);
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &text(&format!("http://{}/", hook.addr)));
    let server = Server::start_args(dir.path(), &p, &["--set", &url]);
    let rcpts = send(&server, 40, 2, "w");
    wait_for_outcomes(&hook, &rcpts, Duration::from_secs(30));
    assert!(hook.records().iter().any(|r| r["type"] == "Bounce"), "bounces are hooked too");
    let logged = harness::wait_for_record(dir.path(), Duration::from_secs(10), |r| {
        r["type"] == "Delivery" && r["queue"] == "webhook"
    })
    .expect("the hook delivery is logged");
    assert_eq!(logged["delivery_protocol"], "Lua", "{logged}");
    assert!(server.stop().success());

    // the same component, a URL the deployment did not allow
    let before = hook.bodies().len();
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &text("http://127.0.0.1:9/"));
    let server = Server::start_args(dir.path(), &p, &["--set", &url]);
    send(&server, 3, 1, "x");
    let refused = harness::wait_for_record(dir.path(), Duration::from_secs(20), |r| {
        r["type"] == "TransientFailure" && r["queue"] == "webhook"
    })
    .expect("the hook queue tempfails");
    let why = refused["response"]["content"].as_str().unwrap();
    assert!(why.contains("is not allowed"), "{refused}");
    assert_eq!(hook.bodies().len(), before, "nothing reached the receiver");
    assert!(server.stop().success());
}

/// Two policy mistakes an operator reported: a misspelt queue in
/// `should_enqueue_log_record` (the documented loop guard then never matches) and a
/// catch-all `get_queue_config` registered before the log hook helper. Either made the
/// hook's records go by SMTP to the recipients of the messages they describe, and the
/// misspelling made records of records without end (1,100 mails from 2 messages). Now a
/// record message never leaves by SMTP (it waits, with the reason), and records about
/// record messages are not hooked again.
#[test]
fn a_misrouted_hook_never_mails_records_and_never_multiplies() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    let dir = temp_dir();
    let text = format!(
        r#"
local kumo = require 'kumo'

kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool', kind = 'RocksDB' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
  kumo.start_http_listener {{ listen = '127.0.0.1:0' }}
  kumo.configure_log_hook {{ name = 'webhook' }}
end)

-- registered first: answers for every queue, the hook's included
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ retry_interval = '1s', protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)

kumo.on('should_enqueue_log_record', function(msg, hook_name)
  local log_record = msg:get_meta 'log_record'
  if log_record.queue == 'webhook' then
    return false
  end
  msg:set_meta('queue', 'webhok') -- misspelt
  return true
end)
"#,
        sink = sink.addr
    );
    let p = write_policy_text(dir.path(), &text);
    let server = Server::start(dir.path(), &p);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["one@dest.example"], "Subject: a\r\n\r\nx\r\n").code, 250);
    assert_eq!(c.send_mail("a@s.example", &["permfail-two@dest.example"], "Subject: b\r\n\r\nx\r\n").code, 250);
    assert!(server.wait_for_stderr("log record messages are delivered by a custom_lua queue", Duration::from_secs(10)));
    std::thread::sleep(Duration::from_secs(4));
    let mailed = sink.messages();
    assert_eq!(mailed.len(), 1, "only the real message reached the SMTP destination");
    assert!(!mailed[0].data.starts_with(b"{"), "and it is not a log record");
    // the records of the two messages became at most four record messages, which wait
    let waiting: std::collections::HashSet<String> = log_records(dir.path())
        .into_iter()
        .filter(|r| r["queue"] == "webhok")
        .map(|r| r["id"].as_str().unwrap_or_default().to_string())
        .collect();
    assert!(!waiting.is_empty() && waiting.len() <= 4, "records of records were not made: {}", waiting.len());
    assert!(hook.bodies().is_empty());
    assert!(server.stop().success());
}

/// A custom_lua queue's connections count against the path's
/// `additional_connection_limits` like SMTP connections do: two custom queues of up to 4
/// connections each, sharing a named limit of 1, never send at the same time.
#[test]
fn custom_queues_share_additional_connection_limits() {
    let dir = temp_dir();
    let text = r#"
local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool { name = 'data', path = '{d}/spool' }
  kumo.configure_local_logs { log_dir = '{d}/logs' }
  kumo.start_esmtp_listener { listen = '127.0.0.1:0', hostname = 'mx.test' }
end)
kumo.on('smtp_server_message_received', function(msg)
  if msg:recipient().user:sub(1, 1) == 'a' then
    msg:set_meta('queue', 'bus-a')
  else
    msg:set_meta('queue', 'bus-b')
  end
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config { protocol = { custom_lua = { constructor = 'make.bus' } } }
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path { connection_limit = 4, idle_timeout = '1s', additional_connection_limits = { bus = 1 } }
end)
kumo.on('make.bus', function(domain, tenant, campaign)
  return {
    send = function(self, message)
      local t0 = kumo.time.now().unix_timestamp_millis
      kumo.sleep(0.25)
      return string.format('sent %d %d', t0, kumo.time.now().unix_timestamp_millis)
    end,
  }
end)
"#;
    let p = write_policy_text(dir.path(), text);
    let server = Server::start(dir.path(), &p);
    // all 24 are queued within moments, long before the first sends finish
    let mut client = Client::ehlo(server.addr());
    for i in 0..24 {
        let rcpt = format!("{}{i}@dest.example", if i % 2 == 0 { "a" } else { "b" });
        assert_eq!(client.send_mail("s@s.example", &[&rcpt], "Subject: x\r\n\r\nx\r\n").code, 250);
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    let spans: Vec<(i64, i64)> = loop {
        let spans: Vec<(i64, i64)> = log_records(dir.path())
            .iter()
            .filter(|r| r["type"] == "Delivery")
            .filter_map(|r| {
                let text = r["response"]["content"].as_str()?.to_string();
                let mut parts = text.split_whitespace().skip_while(|w| *w != "sent").skip(1);
                Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
            })
            .collect();
        if spans.len() == 24 {
            break spans;
        }
        assert!(Instant::now() < deadline, "{} of 24 delivered", spans.len());
        std::thread::sleep(Duration::from_millis(200));
    };
    let peak = spans.iter().map(|(s, _)| spans.iter().filter(|(a, b)| a <= s && s < b).count()).max().unwrap();
    assert_eq!(peak, 1, "two custom queues of 4 connections each shared a limit of 1");
}

/// `log_hooks:new_disposition_hook`, as KumoMTA's NDR example registers it: the hook gets
/// the originating message and its record for each disposition, before the code that
/// logged it goes on, so a bounced message's data is still readable in the hook.
#[test]
fn a_disposition_hook_sees_each_message_and_its_record_while_it_is_still_there() {
    let d = temp_dir();
    let sink = Sink::start(d.path());
    let hook = Webhook::start();
    let dir = temp_dir();
    let text = format!(
        r#"
local kumo = require 'kumo'
local log_hooks = require 'policy-extras.log_hooks'
local function report(msg, log_record)
  local client = kumo.http.build_client {{}}
  local text = string.format('%s|%s|%s|%d', log_record.type, log_record.recipient,
    msg:get_first_named_header_value('Subject') or '-', #msg:get_data())
  client:post('http://{addr}/disposition'):body(text):send()
end
log_hooks:new_disposition_hook {{ name = 'report', hook = report }}
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  return kumo.make_queue_config {{ protocol = {{ smtp = {{ mx_list = {{ '{sink}' }} }} }} }}
end)
kumo.on('get_egress_path_config', function(domain, source, site)
  return kumo.make_egress_path {{ enable_tls = 'Disabled' }}
end)
"#,
        addr = hook.addr,
        sink = sink.addr
    );
    let p = write_policy_text(dir.path(), &text);
    let server = Server::start(dir.path(), &p);
    let mut client = Client::ehlo(server.addr());
    for rcpt in ["ok@dest.example", "permfail@dest.example"] {
        let body = format!("Subject: to {rcpt}\r\n\r\nbody\r\n");
        assert_eq!(client.send_mail("a@s.example", &[rcpt], &body).code, 250);
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let seen = loop {
        let seen: Vec<String> = hook.bodies().iter().map(|b| String::from_utf8_lossy(b).to_string()).collect();
        if seen.iter().any(|s| s.starts_with("Delivery|")) && seen.iter().any(|s| s.starts_with("Bounce|")) {
            break seen;
        }
        assert!(Instant::now() < deadline, "the hook saw {seen:?}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let line = |kind: &str| seen.iter().find(|s| s.starts_with(kind)).unwrap().clone();
    assert!(line("Reception|").contains("|to "), "{seen:?}");
    assert!(line("Delivery|").starts_with("Delivery|ok@dest.example|to ok@dest.example|"), "{seen:?}");
    let bounce = line("Bounce|");
    assert!(bounce.starts_with("Bounce|permfail@dest.example|to permfail@dest.example|"), "{seen:?}");
    let size: usize = bounce.rsplit('|').next().unwrap().parse().unwrap();
    assert!(size > 20, "the bounced message's data was still there: {bounce}");
    assert!(!server.stderr_text().contains("handler failed"), "{}", server.stderr_text());
}
