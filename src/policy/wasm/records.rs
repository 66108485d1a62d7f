//! WIT records → the JSON the `config` types decode, the same shape a Lua handler's table
//! has. A record is serialized by the names bindgen gives its fields — the snake_case of
//! the WIT names, which are KumoMTA's option names — with absent options left out, so an
//! option is spelled once in WIT and once in `config` and nowhere between. Only the shapes
//! that differ are mapped by hand: named-limit lists (maps in KumoMTA), the delivery
//! protocol variant, `mx_list` entries, and the egress path's free-form `extra`.

use super::bindings::wasmta::policy::types;
use serde_json::{Map, Value, json};

/// `value` without its null members (at every depth).
fn without_nulls(value: Value) -> Value {
    match value {
        Value::Object(m) => {
            Value::Object(m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, without_nulls(v))).collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(without_nulls).collect()),
        other => other,
    }
}

/// A record's fields by name, absent options left out.
fn fields<T: serde::Serialize>(record: &T) -> Map<String, Value> {
    match serde_json::to_value(record).map(without_nulls) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    }
}

/// `listener-domain` → `kumo.make_listener_domain`'s table.
pub fn listener_domain(d: types::ListenerDomain) -> Value {
    Value::Object(fields(&d))
}

fn mx_entry(e: types::MxEntry) -> Value {
    match e.addr {
        Some(addr) => json!({"name": e.name, "addr": addr}),
        None => json!(e.name),
    }
}

/// `queue-config` → `kumo.make_queue_config`'s table.
pub fn queue_config(mut q: types::QueueConfig) -> Value {
    let protocol = q.protocol.take();
    let mut m = fields(&q);
    match protocol {
        Some(types::DeliveryProtocol::Smtp(list)) => {
            let list: Vec<Value> = list.into_iter().map(mx_entry).collect();
            m.insert("protocol".into(), json!({"smtp": {"mx_list": list}}));
        }
        Some(types::DeliveryProtocol::Maildir(path)) => {
            m.insert("protocol".into(), json!({"maildir_path": path}));
        }
        None => {}
    }
    Value::Object(m)
}

fn limits(list: Vec<types::NamedLimit>) -> Value {
    Value::Object(list.into_iter().map(|n| (n.name, Value::String(n.value))).collect())
}

/// `egress-path-config` → `kumo.make_egress_path`'s table; `extra` (a JSON object) holds
/// the options WIT does not list, and the listed ones win over it.
pub fn egress_path(mut p: types::EgressPathConfig) -> Result<Value, String> {
    let mut m = match p.extra.take() {
        Some(extra) => match serde_json::from_str(&extra).map_err(|e| format!("egress-path-config.extra: {e}"))? {
            Value::Object(m) => m,
            _ => return Err("egress-path-config.extra must be a JSON object".into()),
        },
        None => Map::new(),
    };
    let connection_limits = p.additional_connection_limits.take();
    let rate_throttles = p.additional_message_rate_throttles.take();
    m.extend(fields(&p));
    if let Some(l) = connection_limits {
        m.insert("additional_connection_limits".into(), limits(l));
    }
    if let Some(l) = rate_throttles {
        m.insert("additional_message_rate_throttles".into(), limits(l));
    }
    Ok(Value::Object(m))
}

/// `egress-source` → `kumo.make_egress_source`'s table.
pub fn egress_source(s: types::EgressSource) -> Value {
    Value::Object(fields(&s))
}

/// `egress-pool` → `kumo.make_egress_pool`'s table (an entry without a weight weighs 1).
pub fn egress_pool(p: types::EgressPool) -> Value {
    Value::Object(fields(&p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, egress, queue, storage};

    /// Every field of `record` is a field of `T` (the config types refuse unknown keys), and
    /// its value comes back out of `T`.
    fn maps_to<T: serde::de::DeserializeOwned + serde::Serialize>(table: Value) {
        let decoded: T = config::decode(table.clone()).unwrap_or_else(|e| panic!("{e}: {table}"));
        let back = serde_json::to_value(&decoded).unwrap();
        for (k, v) in table.as_object().unwrap() {
            assert!(back.get(k).is_some(), "{k} does not come back out of the config type: {back}");
            if v.is_boolean() {
                assert_eq!(&back[k], v, "{k}");
            }
            if let (Some(sent), Some(got)) = (v.as_str(), back[k].as_str()) {
                // durations come back in their canonical spelling ("1 hour" -> "1h")
                match (config::units::parse_duration(sent), config::units::parse_duration(got)) {
                    (Ok(a), Ok(b)) => assert_eq!(a, b, "{k}"),
                    _ => assert_eq!(got, sent, "{k}"),
                }
            }
        }
    }

    #[test]
    fn every_wit_record_field_is_a_config_field_and_comes_back() {
        // struct literals: a field added to the WIT fails to compile here until it is mapped
        maps_to::<storage::ListenerDomain>(listener_domain(types::ListenerDomain {
            relay_to: Some(true),
            relay_from: Some(vec!["10.0.0.0/8".into()]),
            log_oob: Some(types::LogDisposition::LogThenRelay),
            log_arf: Some(types::LogDisposition::LogThenDrop),
        }));
        maps_to::<queue::QueueConfig>(queue_config(types::QueueConfig {
            retry_interval: Some("2 minutes".into()),
            max_retry_interval: Some("1 hour".into()),
            max_age: Some("2 days".into()),
            egress_pool: Some("pool-1".into()),
            max_message_rate: Some("10/s".into()),
            protocol: Some(types::DeliveryProtocol::Smtp(vec![
                types::MxEntry { name: "mx.example".into(), addr: None },
                types::MxEntry { name: "b.example".into(), addr: Some("10.0.0.1".into()) },
            ])),
            reap_interval: Some("5 minutes".into()),
            refresh_interval: Some("30 seconds".into()),
            refresh_strategy: Some(types::RefreshStrategy::Epoch),
            provider_name: Some("p".into()),
        }));
        let maildir = queue_config(types::QueueConfig {
            retry_interval: None,
            max_retry_interval: None,
            max_age: None,
            egress_pool: None,
            max_message_rate: None,
            protocol: Some(types::DeliveryProtocol::Maildir("/var/mail/{{ user }}".into())),
            reap_interval: None,
            refresh_interval: None,
            refresh_strategy: None,
            provider_name: None,
        });
        maps_to::<queue::QueueConfig>(maildir);
        let limit = |n: &str, v: &str| types::NamedLimit { name: n.into(), value: v.into() };
        maps_to::<egress::EgressPathConfig>(
            egress_path(types::EgressPathConfig {
                connection_limit: Some("10".into()),
                additional_connection_limits: Some(vec![limit("shared", "5")]),
                max_connection_rate: Some("100/min".into()),
                max_message_rate: Some("50/s".into()),
                additional_message_rate_throttles: Some(vec![limit("t", "10/s")]),
                max_deliveries_per_connection: Some(7),
                max_ready: Some(99),
                consecutive_connection_failures_before_delay: Some(3),
                enable_tls: Some(types::TlsMode::RequiredInsecure),
                enable_pipelining: Some(false),
                enable_rset: Some(false),
                smtp_port: Some(2525),
                ehlo_domain: Some("ehlo.example".into()),
                prohibited_hosts: Some(vec!["127.0.0.0/8".into()]),
                skip_hosts: Some(vec!["10.0.0.0/8".into()]),
                connect_timeout: Some("5s".into()),
                banner_timeout: Some("5s".into()),
                ehlo_timeout: Some("5s".into()),
                mail_from_timeout: Some("5s".into()),
                rcpt_to_timeout: Some("5s".into()),
                data_timeout: Some("5s".into()),
                data_dot_timeout: Some("5s".into()),
                idle_timeout: Some("5s".into()),
                rset_timeout: Some("5s".into()),
                starttls_timeout: Some("5s".into()),
                refresh_interval: Some("1m".into()),
                refresh_strategy: Some(types::RefreshStrategy::Ttl),
                provider_name: Some("prov".into()),
                extra: Some(r#"{"max_recipients_per_batch": 50}"#.into()),
            })
            .unwrap(),
        );
        maps_to::<egress::EgressSource>(egress_source(types::EgressSource {
            name: "ip-1".into(),
            source_address: Some("10.0.0.1".into()),
            ehlo_domain: Some("a.example".into()),
            remote_port: Some(2525),
            ttl: Some("1 minute".into()),
        }));
        let pool = egress_pool(types::EgressPool {
            name: "p".into(),
            entries: vec![
                types::PoolEntry { name: "ip-1".into(), weight: Some(3) },
                types::PoolEntry { name: "ip-2".into(), weight: None },
            ],
            ttl: Some("1 minute".into()),
        });
        let decoded: egress::EgressPool = config::decode(pool.clone()).unwrap();
        assert_eq!(decoded.entries.iter().map(|e| e.weight).collect::<Vec<_>>(), [3, 1]);
        maps_to::<egress::EgressPool>(pool);
    }

    #[test]
    fn extra_holds_the_rest_and_listed_options_win() {
        let mut p: types::EgressPathConfig = serde_json::from_value(json!({})).unwrap();
        p.extra = Some(r#"{"smtp_port": 1, "max_recipients_per_batch": 5}"#.into());
        p.smtp_port = Some(2525);
        let v = egress_path(p).unwrap();
        assert_eq!((v["smtp_port"].as_u64(), v["max_recipients_per_batch"].as_u64()), (Some(2525), Some(5)));
        let mut bad: types::EgressPathConfig = serde_json::from_value(json!({})).unwrap();
        bad.extra = Some("[1]".into());
        assert!(egress_path(bad).is_err());
    }
}
