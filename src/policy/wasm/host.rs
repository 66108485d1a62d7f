//! What a component can call: the message and connection-metadata resources, logging and
//! the other host imports. Every argument from the guest is checked; a bad one is an
//! error result, never a panic.

use super::bindings::wasmta::policy::{config, host, types};
use crate::config::InitConfig;
use crate::message::{EnvelopeAddress, Message, headers};
use crate::policy::ConnMeta;
use crate::policy::init_calls;
use std::time::Instant;
use wasmtime::component::{Resource, ResourceTable};
use wasmtime::{ResourceLimiter, StoreLimits};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// Per-store state.
pub struct HostState {
    pub table: ResourceTable,
    pub wasi: WasiCtx,
    pub limits: StoreLimits,
    /// When the current call must stop.
    pub deadline: Instant,
    /// Plugin name, for logs.
    pub plugin: String,
    /// What the `config` imports collect; present only while `init` runs.
    pub init: Option<InitConfig>,
    /// `--set` settings.
    pub settings: std::sync::Arc<crate::policy::loader::Settings>,
    /// The server's shared state.
    pub runtime: std::sync::Arc<crate::policy::Runtime>,
    /// Where `http` requests may go, and the client that makes them.
    pub http: std::sync::Arc<super::http::Access>,
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl HostState {
    pub fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limits
    }
}

fn address(a: &EnvelopeAddress) -> types::EnvelopeAddress {
    types::EnvelopeAddress { user: a.user().to_string(), domain: a.domain().to_string(), email: a.email() }
}

fn parse(text: &str) -> Result<EnvelopeAddress, String> {
    let t = text.trim();
    let r = if t.starts_with('<') { EnvelopeAddress::parse_path(t) } else { EnvelopeAddress::parse(t) };
    r.map_err(|e| format!("invalid address {t:?}: {}", e.0))
}

fn json(text: &str) -> Result<serde_json::Value, String> {
    serde_json::from_str(text).map_err(|e| format!("meta values are JSON: {e}"))
}

impl types::Host for HostState {}

impl types::HostMessage for HostState {
    fn id(&mut self, m: Resource<Message>) -> wasmtime::Result<String> {
        Ok(self.table.get(&m)?.id().to_string())
    }
    fn sender(&mut self, m: Resource<Message>) -> wasmtime::Result<types::EnvelopeAddress> {
        Ok(address(&self.table.get(&m)?.sender()))
    }
    fn set_sender(&mut self, m: Resource<Message>, a: String) -> wasmtime::Result<Result<(), String>> {
        let msg = self.table.get(&m)?;
        Ok(parse(&a).map(|a| msg.set_sender(a)))
    }
    fn recipient(&mut self, m: Resource<Message>) -> wasmtime::Result<Option<types::EnvelopeAddress>> {
        Ok(self.table.get(&m)?.recipient().as_ref().map(address))
    }
    fn recipient_list(&mut self, m: Resource<Message>) -> wasmtime::Result<Vec<types::EnvelopeAddress>> {
        Ok(self.table.get(&m)?.recipients().iter().map(address).collect())
    }
    fn set_recipient(&mut self, m: Resource<Message>, list: Vec<String>) -> wasmtime::Result<Result<(), String>> {
        let msg = self.table.get(&m)?;
        Ok(list.iter().map(|a| parse(a)).collect::<Result<Vec<_>, _>>().map(|l| msg.set_recipients(l)))
    }
    fn get_meta(&mut self, m: Resource<Message>, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.get_meta(&key).map(|v| v.to_string()))
    }
    fn set_meta(&mut self, m: Resource<Message>, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let msg = self.table.get(&m)?;
        Ok(json(&value).map(|v| msg.set_meta(&key, v)))
    }
    fn data_size(&mut self, m: Resource<Message>) -> wasmtime::Result<u64> {
        Ok(self.table.get(&m)?.size() as u64)
    }
    fn get_data(&mut self, m: Resource<Message>) -> wasmtime::Result<Vec<u8>> {
        Ok(self.table.get(&m)?.data()?.to_vec())
    }
    fn set_data(&mut self, m: Resource<Message>, data: Vec<u8>) -> wasmtime::Result<()> {
        self.table.get(&m)?.set_data(data);
        Ok(())
    }
    fn prepend_header(&mut self, m: Resource<Message>, name: String, value: String) -> wasmtime::Result<()> {
        self.table.get(&m)?.prepend_header(&name, &value);
        Ok(())
    }
    fn append_header(&mut self, m: Resource<Message>, name: String, value: String) -> wasmtime::Result<()> {
        self.table.get(&m)?.edit_data(|d| headers::append(d, &name, &value))?;
        Ok(())
    }
    fn get_first_named_header_value(&mut self, m: Resource<Message>, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&m)?.first_header(&name)?)
    }
    fn get_all_named_header_values(&mut self, m: Resource<Message>, name: String) -> wasmtime::Result<Vec<String>> {
        Ok(self.table.get(&m)?.all_headers_named(&name)?)
    }
    fn get_all_headers(&mut self, m: Resource<Message>) -> wasmtime::Result<Vec<types::Header>> {
        Ok(self.table.get(&m)?.all_headers()?.into_iter().map(|(name, value)| types::Header { name, value }).collect())
    }
    fn remove_all_named_headers(&mut self, m: Resource<Message>, name: String) -> wasmtime::Result<()> {
        self.table.get(&m)?.edit_data(|d| headers::remove_where(d, |n| n.eq_ignore_ascii_case(&name)))?;
        Ok(())
    }
    fn remove_x_headers(&mut self, m: Resource<Message>, keep: Vec<String>) -> wasmtime::Result<()> {
        let keep: Vec<String> = keep.iter().map(|k| k.to_ascii_lowercase()).collect();
        self.table.get(&m)?.edit_data(|d| {
            headers::remove_where(d, |n| {
                let l = n.to_ascii_lowercase();
                l.starts_with("x-") && !keep.contains(&l)
            })
        })?;
        Ok(())
    }
    fn import_x_headers(&mut self, m: Resource<Message>, names: Vec<String>) -> wasmtime::Result<()> {
        let names: Vec<String> = names.iter().map(|k| k.to_ascii_lowercase()).collect();
        let msg = self.table.get(&m)?;
        for (name, value) in msg.all_headers()? {
            let l = name.to_ascii_lowercase();
            if l.starts_with("x-") && (names.is_empty() || names.contains(&l)) {
                msg.set_meta(&l, serde_json::Value::String(value));
            }
        }
        Ok(())
    }
    fn num_attempts(&mut self, m: Resource<Message>) -> wasmtime::Result<u32> {
        Ok(self.table.get(&m)?.num_attempts())
    }
    fn queue_name(&mut self, m: Resource<Message>) -> wasmtime::Result<String> {
        Ok(self.table.get(&m)?.queue_name())
    }
    fn get_address_header(&mut self, m: Resource<Message>, name: String) -> wasmtime::Result<Vec<types::Mailbox>> {
        let value = self.table.get(&m)?.first_header(&name)?;
        let list = value.map(|v| crate::message::mailbox::parse(&v)).unwrap_or_default();
        Ok(list.into_iter().map(|b| types::Mailbox { name: b.name, address: b.address }).collect())
    }
    fn drop(&mut self, m: Resource<Message>) -> wasmtime::Result<()> {
        self.table.delete(m)?;
        Ok(())
    }
}

impl types::HostConnMeta for HostState {
    fn get_meta(&mut self, c: Resource<ConnMeta>, key: String) -> wasmtime::Result<Option<String>> {
        Ok(self.table.get(&c)?.get(&key).map(|v| v.to_string()))
    }
    fn set_meta(&mut self, c: Resource<ConnMeta>, key: String, value: String) -> wasmtime::Result<Result<(), String>> {
        let conn = self.table.get(&c)?;
        Ok(json(&value).map(|v| conn.set(&key, v)))
    }
    fn drop(&mut self, c: Resource<ConnMeta>) -> wasmtime::Result<()> {
        self.table.delete(c)?;
        Ok(())
    }
}

impl host::Host for HostState {
    fn log(&mut self, level: host::Level, text: String) -> wasmtime::Result<()> {
        let text: String = text.chars().take(8192).collect();
        let p = &self.plugin;
        match level {
            host::Level::Trace => tracing::trace!(target: "wasm", "{p}: {text}"),
            host::Level::Debug => tracing::debug!(target: "wasm", "{p}: {text}"),
            host::Level::Info => tracing::info!(target: "wasm", "{p}: {text}"),
            host::Level::Warn => tracing::warn!(target: "wasm", "{p}: {text}"),
            host::Level::Error => tracing::error!(target: "wasm", "{p}: {text}"),
        }
        Ok(())
    }
    fn available_parallelism(&mut self) -> wasmtime::Result<u32> {
        Ok(std::thread::available_parallelism().map(|n| n.get() as u32).unwrap_or(1))
    }
    async fn lookup_mx(&mut self, domain: String) -> wasmtime::Result<Result<host::MxAnswer, String>> {
        if domain.len() > 255 {
            return Ok(Err("lookup-mx: a domain name is at most 255 octets".into()));
        }
        let dns = self.runtime.dns();
        Ok(crate::policy::host::lookup_mx(&*dns, &domain)
            .await
            .map(|mx| host::MxAnswer { site_name: mx.site_name, hosts: mx.hosts })
            .map_err(|e| format!("lookup-mx({domain}): {e}")))
    }
    fn dkim_sign(
        &mut self,
        m: Resource<Message>,
        algorithm: String,
        params: String,
    ) -> wasmtime::Result<Result<(), String>> {
        use crate::policy::dkim;
        let algorithm = match algorithm.as_str() {
            "rsa-sha256" => dkim::Algorithm::RsaSha256,
            "ed25519-sha256" => dkim::Algorithm::Ed25519Sha256,
            other => {
                return Ok(Err(format!("dkim-sign: algorithm {other:?} is neither rsa-sha256 nor ed25519-sha256")));
            }
        };
        let msg = self.table.get(&m)?.clone();
        let signed = json(&params)
            .map_err(|e| format!("dkim-sign: params: {e}"))
            .and_then(|v| dkim::params(v).map_err(|e| format!("dkim-sign: {e}")))
            .and_then(|p| dkim::signer(algorithm, p).map_err(|e| format!("dkim-sign: {e}")))
            .and_then(|signer| dkim::sign_message(&msg, &signer));
        Ok(signed)
    }
    async fn throttle(&mut self, name: String, spec: String) -> wasmtime::Result<Result<Option<u64>, String>> {
        if name.len() > 1024 {
            return Ok(Err("throttle: a name is at most 1024 bytes".into()));
        }
        let spec = match crate::shaping::throttle::ThrottleSpec::parse(&spec) {
            Ok(s) => s,
            Err(e) => return Ok(Err(format!("throttle: {e}"))),
        };
        Ok(Ok(match self.runtime.throttles.acquire(&name, spec).await {
            Ok(()) => None,
            Err(wait) => Some(wait.as_millis().max(1) as u64),
        }))
    }
    async fn shaped_egress_path_config(
        &mut self,
        domain: String,
        source: String,
        site: String,
    ) -> wasmtime::Result<Option<String>> {
        let Ok(Some(params)) = crate::policy::host::shaped_egress_params(&self.runtime, &domain, &source, &site).await
        else {
            return Ok(None);
        };
        Ok(Some(serde_json::Value::Object(params).to_string()))
    }
    fn parse_address(&mut self, text: String) -> wasmtime::Result<Result<types::EnvelopeAddress, String>> {
        Ok(parse(&text).map(|a| address(&a)))
    }
}

impl HostState {
    /// Runs an `init`-only configuration call on its JSON options.
    fn configure(
        &mut self,
        call: &str,
        params: &str,
        apply: impl FnOnce(&mut InitConfig, serde_json::Value) -> Result<(), String>,
    ) -> Result<(), String> {
        let Some(init) = self.init.as_mut() else {
            return Err(format!("config.{call} may only be called from init"));
        };
        let value: serde_json::Value =
            serde_json::from_str(params).map_err(|e| format!("config.{call}: options are a JSON object: {e}"))?;
        apply(init, value).map_err(|e| format!("config.{call}: {e}"))
    }
}

impl config::Host for HostState {
    fn start_esmtp_listener(&mut self, params: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.configure("start-esmtp-listener", &params, init_calls::start_esmtp_listener))
    }
    fn define_spool(&mut self, params: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.configure("define-spool", &params, init_calls::define_spool))
    }
    fn configure_local_logs(&mut self, params: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.configure("configure-local-logs", &params, |i, v| init_calls::configure_local_logs(i, v).map(|_| ())))
    }
    fn start_http_listener(&mut self, params: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.configure("start-http-listener", &params, init_calls::start_http_listener))
    }
    fn configure_redis_throttles(&mut self, params: String) -> wasmtime::Result<Result<(), String>> {
        Ok(self.configure("configure-redis-throttles", &params, init_calls::configure_redis_throttles))
    }
    fn configure_test_resolver(&mut self, zone: String) -> wasmtime::Result<Result<(), String>> {
        let Some(init) = self.init.as_mut() else {
            return Ok(Err("config.configure-test-resolver may only be called from init".into()));
        };
        Ok(init_calls::configure_test_resolver(init, &zone).map_err(|e| format!("config.configure-test-resolver: {e}")))
    }
    fn use_shaping(&mut self, files: Vec<String>) -> wasmtime::Result<Result<(), String>> {
        let Some(init) = self.init.as_mut() else {
            return Ok(Err("config.use-shaping may only be called from init".into()));
        };
        for f in &files {
            let local = f != crate::shaping::store::DEFAULT_SHAPING && !f.contains("://");
            if local && !std::path::Path::new(f).exists() {
                return Ok(Err(format!("config.use-shaping: {f} does not exist")));
            }
        }
        init.shaping.extend(files);
        Ok(Ok(()))
    }
    fn allow_http(&mut self, prefixes: Vec<String>) -> wasmtime::Result<Result<(), String>> {
        let Some(init) = self.init.as_mut() else {
            return Ok(Err("config.allow-http may only be called from init".into()));
        };
        for p in &prefixes {
            if let Err(e) = super::http::Prefix::parse(p) {
                return Ok(Err(format!("config.allow-http: {e}")));
            }
        }
        init.wasm_http_allow.extend(prefixes);
        Ok(Ok(()))
    }
    fn setting(&mut self, name: String) -> wasmtime::Result<Option<String>> {
        Ok(self.settings.get(&name).cloned())
    }
}
