//! Log hooks into message buses, written as KumoMTA's documentation writes them
//! (`log_hooks:new` with a constructor using `kumo.nats.connect` or
//! `kumo.amqp.build_client` / `kumo.amqp.basic_publish`): 1,000 records published and
//! counted at a real broker (Debian's nats-server with JetStream, rabbitmq-server), a
//! broker that is not there yet, and a publish no queue takes.

mod harness;

use harness::brokers::{Nats, RabbitMq};
use harness::sink::Sink;
use harness::smtp::Client;
use harness::{Server, log_records, temp_dir, wait_for_record, write_policy_text};
use std::collections::HashSet;
use std::time::{Duration, Instant};

fn relay(sink: &str, hooks: &str) -> String {
    format!(
        r#"
local kumo = require 'kumo'
local log_hooks = require 'policy-extras.log_hooks'
{hooks}
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', hostname = 'mx.test' }}
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

/// Relays `n` messages (Reception and Delivery records: 2n records).
fn send(server: &Server, n: usize) {
    let addr = server.addr().to_string();
    let threads: Vec<_> = (0..4)
        .map(|c| {
            let addr = addr.clone();
            std::thread::spawn(move || {
                let mut client = Client::ehlo(&addr);
                for i in (c..n).step_by(4) {
                    let rcpt = format!("r{i}@dest.example");
                    assert_eq!(client.send_mail("a@s.example", &[&rcpt], "Subject: bus\r\n\r\nbody\r\n").code, 250);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// (id, type) of each JSON record in `payloads`.
fn distinct(payloads: &[Vec<u8>]) -> HashSet<(String, String)> {
    payloads
        .iter()
        .map(|p| {
            let r: serde_json::Value = serde_json::from_slice(p).expect("a JSON record");
            (r["id"].as_str().unwrap().to_string(), r["type"].as_str().unwrap().to_string())
        })
        .collect()
}

/// Every message of a JetStream stream.
async fn stream_payloads(url: &str, stream: &str) -> Vec<Vec<u8>> {
    let client = async_nats::connect(url).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let mut s = js.get_stream(stream).await.unwrap();
    let n = s.info().await.unwrap().state.messages;
    let mut out = vec![];
    for seq in 1..=n {
        out.push(s.get_raw_message(seq).await.unwrap().payload.to_vec());
    }
    out
}

/// 500 relayed messages make 1,000 records, each published to a JetStream stream and
/// acknowledged by it. The broker is not running while the first half is relayed: those
/// records wait in the hook queue (TransientFailure, retried) and arrive once it is.
#[test]
fn a_thousand_records_reach_a_nats_stream_even_when_the_broker_starts_late() {
    let d = temp_dir();
    let Some(mut nats) = Nats::start(d.path()) else { return };
    let rt = runtime();
    rt.block_on(async {
        let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
        js.create_stream(async_nats::jetstream::stream::Config {
            name: "RECORDS".into(),
            subjects: vec!["mail.records".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
    nats.stop();
    let sink = Sink::start(d.path());
    let hooks = format!(
        r#"
log_hooks:new {{
  name = 'nats',
  queue_config = {{ retry_interval = '1s', max_retry_interval = '2s' }},
  constructor = function(domain, tenant, campaign)
    local connection = {{}}
    local client = kumo.nats.connect {{
      servers = {{ '{url}' }},
      name = 'wasmta-log-hook',
      connection_timeout = '2s',
    }}
    function connection:send(message)
      local ack = client:publish {{
        subject = 'mail.records', payload = message:get_data(),
        headers = {{ ['Nats-Msg-Id'] = message:id() }},
      }}
      return string.format('stream %s seq %d', ack.stream, ack.sequence)
    end
    function connection:close()
      client:close()
    end
    return connection
  end,
}}
"#,
        url = nats.url()
    );
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &relay(&sink.addr, &hooks));
    let server = Server::start(dir.path(), &p);
    send(&server, 250);
    let waiting = |r: &serde_json::Value| r["type"] == "TransientFailure" && r["queue"] == "nats.log_hook";
    let failure =
        wait_for_record(dir.path(), Duration::from_secs(30), waiting).expect("records wait while the broker is away");
    assert!(failure["response"]["content"].as_str().unwrap().contains("cannot connect"), "{failure}");
    nats.restart();
    send(&server, 250);
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let got = distinct(&rt.block_on(stream_payloads(&nats.url(), "RECORDS")));
        let kinds = |k: &str| got.iter().filter(|(_, t)| t == k).count();
        if kinds("Reception") == 500 && kinds("Delivery") == 500 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream holds {} Reception and {} Delivery records of 500 each",
            kinds("Reception"),
            kinds("Delivery")
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    let total = rt.block_on(stream_payloads(&nats.url(), "RECORDS")).len();
    eprintln!("1000 distinct records in the stream; {} duplicate(s)", total - 1000);
}

/// A wrong option is named, not ignored: the hook's deliveries fail with the key in the
/// reason (and the records wait rather than vanish).
#[test]
fn a_misspelt_nats_option_is_named() {
    let d = temp_dir();
    let Some(nats) = Nats::start(d.path()) else { return };
    let sink = Sink::start(d.path());
    let hooks = format!(
        r#"
log_hooks:new {{
  name = 'nats',
  constructor = function()
    local client = kumo.nats.connect {{ server = {{ '{url}' }}, name = 'x' }}
    return {{ send = function(self, m) client:publish {{ subject = 's', payload = m:get_data() }} end }}
  end,
}}
"#,
        url = nats.url()
    );
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &relay(&sink.addr, &hooks));
    let server = Server::start(dir.path(), &p);
    send(&server, 1);
    let failed = |r: &serde_json::Value| r["type"] == "TransientFailure" && r["queue"] == "nats.log_hook";
    let r =
        wait_for_record(dir.path(), Duration::from_secs(30), failed).expect("the misspelt option fails the delivery");
    let text = r["response"]["content"].as_str().unwrap();
    assert!(text.contains("unknown field `server`"), "{text}");
}

/// Messages in a RabbitMQ queue (declared durable), read by a passive declare.
async fn queue_depth(url: &str, queue: &str) -> u32 {
    let conn = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
    let ch = conn.create_channel().await.unwrap();
    let q = ch
        .queue_declare(
            queue.into(),
            lapin::options::QueueDeclareOptions { passive: true, ..Default::default() },
            Default::default(),
        )
        .await
        .unwrap();
    q.message_count()
}

/// 500 relayed messages: 1,000 records published through `build_client` (confirmed by
/// the broker) and 1,000 through `basic_publish`, counted in their queues. A third hook
/// publishes to a routing key no queue is bound to: KumoMTA's broker would ack and drop
/// those records; here the publish comes back unroutable and the records wait.
#[test]
fn a_thousand_records_reach_rabbitmq_and_an_unroutable_publish_is_not_lost() {
    let d = temp_dir();
    let Some(rabbit) = RabbitMq::start(d.path()) else { return };
    let rt = runtime();
    rt.block_on(async {
        let conn = lapin::Connection::connect(&rabbit.url(), lapin::ConnectionProperties::default()).await.unwrap();
        let ch = conn.create_channel().await.unwrap();
        for q in ["records", "records2"] {
            ch.queue_declare(
                q.into(),
                lapin::options::QueueDeclareOptions { durable: true, ..Default::default() },
                Default::default(),
            )
            .await
            .unwrap();
        }
    });
    let sink = Sink::start(d.path());
    let hooks = format!(
        r#"
log_hooks:new {{
  name = 'amqp',
  constructor = function(domain, tenant, campaign)
    local client = kumo.amqp.build_client '{url}'
    local connection = {{}}
    function connection:send(message)
      local confirm = client:publish {{ routing_key = 'records', payload = message:get_data() }}
      local result = confirm:wait()
      if result.status ~= 'Ack' and result.status ~= 'NotRequested' then
        kumo.reject(400, 'amqp said ' .. result.status)
      end
      return 'published'
    end
    function connection:close()
      client:close()
    end
    return connection
  end,
}}
log_hooks:new {{
  name = 'amqp2',
  constructor = function()
    return {{
      send = function(self, message)
        kumo.amqp.basic_publish {{
          routing_key = 'records2',
          payload = message:get_data(),
          connection = {{ host = '127.0.0.1', port = {port}, username = 'guest', password = 'guest' }},
        }}
        return 'published'
      end,
    }}
  end,
}}
log_hooks:new {{
  name = 'nowhere',
  queue_config = {{ retry_interval = '1s', max_retry_interval = '2s' }},
  constructor = function()
    return {{
      send = function(self, message)
        kumo.amqp.basic_publish {{
          routing_key = 'no-such-queue',
          payload = message:get_data(),
          connection = {{ host = '127.0.0.1', port = {port} }},
        }}
        return 'published'
      end,
    }}
  end,
}}
"#,
        url = rabbit.url(),
        port = rabbit.port
    );
    let dir = temp_dir();
    let p = write_policy_text(dir.path(), &relay(&sink.addr, &hooks));
    let server = Server::start(dir.path(), &p);
    send(&server, 500);
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (a, b) = rt.block_on(async {
            (queue_depth(&rabbit.url(), "records").await, queue_depth(&rabbit.url(), "records2").await)
        });
        if a >= 1000 && b >= 1000 {
            eprintln!("records: {a} in the build_client queue, {b} in the basic_publish queue (1000 each expected)");
            break;
        }
        assert!(Instant::now() < deadline, "the queues hold {a} and {b} records of 1000");
        std::thread::sleep(Duration::from_millis(500));
    }
    let records = log_records(dir.path());
    let unroutable = records
        .iter()
        .find(|r| r["type"] == "TransientFailure" && r["queue"] == "nowhere.log_hook")
        .expect("the unroutable publish failed the delivery");
    let text = unroutable["response"]["content"].as_str().unwrap();
    assert!(text.contains("could not route") && text.contains("NO_ROUTE"), "{text}");
    assert!(
        !records.iter().any(|r| r["type"] == "Delivery" && r["queue"] == "nowhere.log_hook"),
        "no record counts as delivered to a queue that does not exist"
    );
}
