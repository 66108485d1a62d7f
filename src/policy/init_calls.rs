//! The `init`-only configuration calls (`kumo.start_esmtp_listener`, `define_spool`,
//! `configure_local_logs`, `start_http_listener`, `dns.configure_test_resolver`) applied to
//! an [`InitConfig`] from their JSON option tables. The Lua `kumo` module and the Wasm
//! `config` import both go through here, so both check options the same way.

use crate::config::listener::EsmtpListenerConfig;
use crate::config::{InitConfig, decode, storage};
use serde_json::Value;

fn object(value: Value) -> Result<serde_json::Map<String, Value>, String> {
    match value {
        Value::Object(m) => Ok(m),
        Value::Null => Ok(Default::default()),
        other => Err(format!("expected a table of options, got {other}")),
    }
}

/// `kumo.start_esmtp_listener{...}`.
pub fn start_esmtp_listener(init: &mut InitConfig, options: Value) -> Result<(), String> {
    let listener = EsmtpListenerConfig::from_table(object(options)?)?;
    init.listeners.push(listener);
    Ok(())
}

/// `kumo.define_spool{...}`.
pub fn define_spool(init: &mut InitConfig, options: Value) -> Result<(), String> {
    let spool: storage::SpoolConfig = decode(options)?;
    init.spools.push(spool);
    Ok(())
}

/// `kumo.configure_local_logs{...}`; returns the `filter_event` it names, if any.
pub fn configure_local_logs(init: &mut InitConfig, options: Value) -> Result<Option<String>, String> {
    let logs: storage::LocalLogsConfig = decode(options)?;
    let filter = logs.filter_event.clone();
    init.logs.push(logs);
    Ok(filter)
}

/// `kumo.configure_log_hook{...}`: names are unique.
pub fn configure_log_hook(init: &mut InitConfig, options: Value) -> Result<(), String> {
    let hook: storage::LogHookConfig = decode(options)?;
    if hook.name.is_empty() {
        return Err("name: a log hook needs a name".into());
    }
    if init.log_hooks.iter().any(|h| h.name == hook.name) {
        return Err(format!("name: a log hook named {:?} is already configured", hook.name));
    }
    if hook.queue.as_deref() == Some("") {
        return Err("queue: must name a queue (or be left out to call should_enqueue_log_record)".into());
    }
    let (n, min) = (hook.records_per_message, hook.min_records_per_message);
    if n == 0 || min == 0 || min > n {
        return Err(format!(
            "records_per_message: need 1 <= min_records_per_message ({min}) <= records_per_message ({n})"
        ));
    }
    if n > 1 && hook.queue.is_none() {
        return Err("records_per_message: records are put together only with queue set".into());
    }
    init.log_hooks.push(hook);
    Ok(())
}

/// `kumo.configure_log_disposition_hook{...}`: names are unique.
pub fn configure_log_disposition_hook(init: &mut InitConfig, options: Value) -> Result<(), String> {
    let hook: storage::LogDispositionHookConfig = decode(options)?;
    if hook.name.is_empty() {
        return Err("name: a log disposition hook needs a name".into());
    }
    if init.log_disposition_hooks.iter().any(|h| h.name == hook.name) {
        return Err(format!("name: a log disposition hook named {:?} is already configured", hook.name));
    }
    init.log_disposition_hooks.push(hook);
    Ok(())
}

/// `kumo.start_http_listener{...}`.
pub fn start_http_listener(init: &mut InitConfig, options: Value) -> Result<(), String> {
    let http: storage::HttpListenerConfig = decode(options)?;
    crate::config::listener::check_listen(&http.listen)?;
    crate::config::cidr::CidrSet::parse(&http.trusted_hosts).map_err(|e| format!("trusted_hosts: {e}"))?;
    init.http_listeners.push(http);
    Ok(())
}

/// `kumo.configure_bounce_classifier{ files = {...}, ... }` (the tuning keys are accepted).
pub fn configure_bounce_classifier(init: &mut InitConfig, options: Value) -> Result<(), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Params {
        files: Vec<String>,
        #[serde(default)]
        back_pressure: Option<u64>,
        #[serde(default)]
        pool_size: Option<u64>,
        #[serde(default)]
        cache_size: Option<u64>,
        #[serde(default)]
        uncategorized_cache_size: Option<u64>,
    }
    let p: Params = decode(options)?;
    crate::logs::classify::Classifier::load(&p.files).map_err(|e| format!("files: {e}"))?;
    init.bounce_classifier = p.files;
    Ok(())
}

/// `kumo.configure_redis_throttles{...}`: once.
pub fn configure_redis_throttles(init: &mut InitConfig, options: Value) -> Result<(), String> {
    let config: crate::config::redis::RedisThrottlesConfig = decode(options)?;
    config.check()?;
    if init.redis_throttles.is_some() {
        return Err("configure_redis_throttles was already called".into());
    }
    init.redis_throttles = Some(config);
    Ok(())
}

/// `kumo.dns.configure_test_resolver(zone_text)`.
pub fn configure_test_resolver(init: &mut InitConfig, zone: &str) -> Result<(), String> {
    crate::dns::TestZones::parse(zone)?;
    init.dns.zones.push(zone.to_string());
    Ok(())
}

impl InitConfig {
    /// Adds what another engine's `init` configured (a component's, after Lua's).
    pub fn merge(&mut self, other: InitConfig) {
        self.listeners.extend(other.listeners);
        self.spools.extend(other.spools);
        self.logs.extend(other.logs);
        self.log_hooks.extend(other.log_hooks);
        self.log_disposition_hooks.extend(other.log_disposition_hooks);
        self.http_listeners.extend(other.http_listeners);
        self.dns.zones.extend(other.dns.zones);
        self.dns.name_servers.extend(other.dns.name_servers);
        self.wasm.extend(other.wasm);
        self.shaping.extend(other.shaping);
        self.bounce_classifier.extend(other.bounce_classifier);
        self.suspend_delivery_when_spool_unhealthy &= other.suspend_delivery_when_spool_unhealthy;
        if other.redis_throttles.is_some() {
            self.redis_throttles = other.redis_throttles;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn options_are_checked_by_key() {
        let mut init = InitConfig::default();
        start_esmtp_listener(&mut init, json!({"listen": "127.0.0.1:2525"})).unwrap();
        assert_eq!(init.listeners.len(), 1);
        let e = start_esmtp_listener(&mut init, json!({"listen": "127.0.0.1:2525", "no_such_key": 1})).unwrap_err();
        assert!(e.contains("no_such_key"), "{e}");
        let e = define_spool(&mut init, json!({"name": "data"})).unwrap_err();
        assert!(e.contains("path"), "{e}");
        assert!(start_esmtp_listener(&mut init, json!("nonsense")).is_err());
    }

    #[test]
    fn a_log_hook_needs_a_unique_name_and_known_keys() {
        let mut init = InitConfig::default();
        configure_log_hook(&mut init, json!({"name": "webhook", "headers": ["Subject"], "meta": "tenant"})).unwrap();
        assert_eq!(init.log_hooks[0].meta, ["tenant"]);
        assert_eq!(init.log_hooks[0].back_pressure, 128_000);
        let e = configure_log_hook(&mut init, json!({"name": "webhook"})).unwrap_err();
        assert!(e.contains("already configured"), "{e}");
        let e = configure_log_hook(&mut init, json!({"headers": ["Subject"]})).unwrap_err();
        assert!(e.contains("name"), "{e}");
        let e = configure_log_hook(&mut init, json!({"name": "x", "per_recrd": {}})).unwrap_err();
        assert!(e.contains("per_recrd"), "{e}");
        // wasmta's own keys: a queue, and records put together only where there is one
        let batched =
            json!({"name": "b", "queue": "b.log_hook", "records_per_message": 100, "max_batch_latency": "100ms"});
        configure_log_hook(&mut init, batched).unwrap();
        assert_eq!(init.log_hooks[1].max_batch_latency, std::time::Duration::from_millis(100));
        for (bad, key) in [
            (json!({"name": "c", "records_per_message": 10}), "queue set"),
            (json!({"name": "c", "queue": "q", "records_per_message": 0}), "records_per_message"),
            (json!({"name": "c", "queue": "q", "records_per_message": 2, "min_records_per_message": 3}), "min_"),
            (json!({"name": "c", "queue": ""}), "queue:"),
            (json!({"name": "c", "queue": "q", "max_batch_latency": "soon"}), "max_batch_latency"),
        ] {
            let e = configure_log_hook(&mut init, bad).unwrap_err();
            assert!(e.contains(key), "{e}");
        }
    }

    #[test]
    fn redis_throttles_are_configured_once() {
        let mut init = InitConfig::default();
        configure_redis_throttles(&mut init, json!({"node": "redis://127.0.0.1:6379"})).unwrap();
        let e = configure_redis_throttles(&mut init, json!({"node": "redis://127.0.0.1:6380"})).unwrap_err();
        assert!(e.contains("already"), "{e}");
        assert_eq!(init.redis_throttles.unwrap().node.urls(), ["redis://127.0.0.1:6379"]);
    }
}
