//! Policy: the event catalogue, the typed `Rejection`, and the dispatcher that applies
//! KumoMTA's Single/Multiple rules across engines. `policy::lua` is one engine; the Wasm
//! engine is another binding of the same catalogue.

pub mod amqp;
pub mod auth_dns;
pub mod conn_meta;
pub mod custom;
pub mod dkim;
pub mod dkim_verify;
pub mod events;
pub mod host;
pub mod http;
pub mod init_calls;
pub mod inject;
pub mod loader;
pub mod lua;
pub mod mail_auth;
pub mod monitor;
pub mod nats;
pub mod rejection;
pub mod reload;
pub mod runtime;
pub mod wasm;

pub use conn_meta::ConnMeta;
pub use events::{Args, Event, Multiplicity};
pub use rejection::{DisconnectMode, PolicyError, Rejection};
pub use runtime::Runtime;

use crate::config::egress::{EgressPathConfig, EgressPool, EgressSource};
use crate::config::queue::QueueConfig;
use crate::config::storage::ListenerDomain;
use crate::message::queue_name::QueueNameParts;
use crate::message::{EnvelopeAddress, Message};
use serde_json::{Map, Value};
use std::sync::Arc;

/// What every engine knows about itself: its name and the events it has handlers for.
pub struct EngineInfo {
    /// Engine name for errors and logs (`lua:policy/init.lua`, `wasm:plugin.wasm`).
    pub name: String,
    /// Events with a handler.
    pub handled: std::collections::HashSet<Event>,
    /// Latency histograms of the handled events, registered on first use.
    latency: std::sync::OnceLock<std::collections::HashMap<Event, Arc<crate::metrics::Histogram>>>,
}

impl EngineInfo {
    /// An engine named `name` with handlers for `handled`.
    pub fn new(name: String, handled: std::collections::HashSet<Event>) -> Self {
        EngineInfo { name, handled, latency: std::sync::OnceLock::new() }
    }

    /// The latency histogram of `event` on this engine (`policy_event_latency_seconds`).
    fn latency(&self, event: Event) -> Arc<crate::metrics::Histogram> {
        let register = |e: Event| {
            crate::metrics::histogram(
                "policy_event_latency_seconds",
                "Policy event handler latency by event and engine.",
                &[("event", e.name()), ("engine", &self.name)],
            )
        };
        let map = self.latency.get_or_init(|| self.handled.iter().map(|e| (*e, register(*e))).collect());
        map.get(&event).cloned().unwrap_or_else(|| register(event))
    }
}

/// A policy engine bound to the catalogue.
#[async_trait::async_trait]
pub trait Engine: Send + Sync {
    /// Name and handled events.
    fn info(&self) -> &EngineInfo;
    /// Engine name for errors and logs.
    fn name(&self) -> &str {
        &self.info().name
    }
    /// The files this engine was built from (policy texts, components): a change to one
    /// of them asks for a new generation.
    fn source_files(&self) -> Vec<std::path::PathBuf> {
        vec![]
    }
    /// True when a handler for `event` is registered.
    fn handles(&self, event: Event) -> bool {
        self.info().handled.contains(&event)
    }
    /// Calls the handlers of `event` (Multiple: in order until one returns a value).
    /// `Ok(None)`: no handler returned a value.
    async fn call(&self, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError>;
    /// Runs the handlers of an event the policy names itself (`log_disposition_<name>`);
    /// None when this engine has none.
    async fn call_user(
        &self,
        _label: &'static str,
        _name: &str,
        _args: Args<'_>,
    ) -> Result<Option<Value>, PolicyError> {
        Ok(None)
    }
    /// The constructor events (`make.webhook`) this engine can run for custom delivery.
    fn constructors(&self) -> Option<&dyn custom::CustomConstructors> {
        None
    }
}

/// One immutable generation of the policy: its engines, in order.
pub struct Generation {
    /// 1 for the policy loaded at start, then one more per reload.
    pub id: u64,
    engines: Vec<Arc<dyn Engine>>,
}

/// The policy: a handle on the current generation. A reload swaps the generation
/// atomically; a call holds the generation it started with until it finishes, and
/// [`Policy::snapshot`] pins one generation for a whole message.
#[derive(Clone)]
pub struct Policy {
    current: Arc<arc_swap::ArcSwap<Generation>>,
    runtime: Arc<Runtime>,
}

impl Policy {
    /// Combines engines; fails when two engines claim the same Single event.
    pub fn new(engines: Vec<Arc<dyn Engine>>, runtime: Arc<Runtime>) -> Result<Self, String> {
        for event in Event::ALL {
            if event.multiplicity() != Multiplicity::Single {
                continue;
            }
            let claimed: Vec<&str> = engines.iter().filter(|e| e.handles(*event)).map(|e| e.name()).collect();
            if claimed.len() > 1 {
                return Err(format!(
                    "{} event is handled by more than one engine: {}",
                    event.name(),
                    claimed.join(", ")
                ));
            }
        }
        Ok(Policy { current: Arc::new(arc_swap::ArcSwap::from_pointee(Generation { id: 1, engines })), runtime })
    }

    /// A policy with no handlers (every event takes its default).
    pub fn empty() -> Self {
        Policy::new(vec![], Runtime::new()).expect("no engines, no conflicts")
    }

    /// The server's shared state.
    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// The current generation's number.
    pub fn generation(&self) -> u64 {
        self.current.load().id
    }

    /// A policy pinned to the current generation (later reloads do not change it).
    pub fn snapshot(&self) -> Policy {
        Policy { current: Arc::new(arc_swap::ArcSwap::new(self.current.load_full())), runtime: self.runtime.clone() }
    }

    /// Makes `next`'s engines the new current generation; returns its number.
    pub fn replace(&self, next: &Policy) -> u64 {
        let engines = next.current.load().engines.clone();
        let id = self.generation() + 1;
        self.current.store(Arc::new(Generation { id, engines }));
        id
    }

    /// The component files of the current generation.
    pub fn component_paths(&self) -> Vec<std::path::PathBuf> {
        let generation = self.current.load();
        generation.engines.iter().filter_map(|e| e.name().strip_prefix("wasm:").map(std::path::PathBuf::from)).collect()
    }

    /// The Lua texts (policy and required modules) the current generation runs.
    pub fn source_files(&self) -> Vec<std::path::PathBuf> {
        self.current.load().engines.iter().flat_map(|e| e.source_files()).collect()
    }

    /// True when some engine handles `event`.
    pub fn handles(&self, event: Event) -> bool {
        self.current.load().engines.iter().any(|e| e.handles(event))
    }

    /// Dispatches one event by the catalogue's rules.
    pub async fn call(&self, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        match self.dispatch(event, args).await {
            Err(PolicyError::Failed { event, .. }) if self.runtime.shutdown.is_set() => {
                Err(PolicyError::Cancelled { event })
            }
            other => other,
        }
    }

    async fn dispatch(&self, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
        // the call keeps its generation alive until it returns, whatever reloads happen
        let generation = self.current.load_full();
        let mut handlers = generation.engines.iter().filter(|e| e.handles(event));
        match event.multiplicity() {
            Multiplicity::Single => match handlers.next() {
                Some(engine) => timed(engine.as_ref(), event, args).await,
                None => Ok(None),
            },
            Multiplicity::Multiple => {
                for engine in handlers {
                    if let Some(v) = timed(engine.as_ref(), event, args).await? {
                        return Ok(Some(v));
                    }
                }
                Ok(None)
            }
        }
    }

    /// `smtp_server_get_dynamic_parameters`: listener overrides for this connection.
    pub async fn dynamic_parameters(
        &self,
        listener: &str,
        conn: &ConnMeta,
    ) -> Result<Option<Map<String, Value>>, PolicyError> {
        let event = Event::SmtpServerGetDynamicParameters;
        match self.call(event, Args::DynamicParameters { listener, conn }).await? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(other) => Err(bad_result(event, "a table of listener parameters", &other)),
        }
    }

    /// `smtp_server_connection_accepted`.
    pub async fn connection_accepted(&self, conn: &ConnMeta) -> Result<(), PolicyError> {
        self.call(Event::SmtpServerConnectionAccepted, Args::Conn(conn)).await.map(drop)
    }

    /// `smtp_server_ehlo`: an optional replacement extension list.
    pub async fn ehlo(
        &self,
        domain: &str,
        conn: &ConnMeta,
        extensions: &[String],
    ) -> Result<Option<Vec<String>>, PolicyError> {
        let event = Event::SmtpServerEhlo;
        match self.call(event, Args::Ehlo { domain, conn, extensions }).await? {
            None | Some(Value::Null) => Ok(None),
            Some(v) => match crate::config::decode::<Vec<String>>(v.clone()) {
                Ok(list) => Ok(Some(list)),
                Err(_) if v.as_object().is_some_and(|m| m.is_empty()) => Ok(Some(vec![])),
                Err(_) => Err(bad_result(event, "a list of extension strings", &v)),
            },
        }
    }

    /// `smtp_server_auth_plain`: true when the credentials are good. No handler: false.
    pub async fn auth_plain(
        &self,
        authz: &str,
        authc: &str,
        password: &str,
        conn: &ConnMeta,
    ) -> Result<bool, PolicyError> {
        let event = Event::SmtpServerAuthPlain;
        match self.call(event, Args::AuthPlain { authz, authc, password, conn }).await? {
            Some(Value::Bool(b)) => Ok(b),
            None | Some(Value::Null) => Ok(false),
            Some(v) => Err(bad_result(event, "true or false", &v)),
        }
    }

    /// `smtp_server_mail_from`.
    pub async fn mail_from(&self, address: &EnvelopeAddress, conn: &ConnMeta) -> Result<(), PolicyError> {
        self.call(Event::SmtpServerMailFrom, Args::Address { address, conn }).await.map(drop)
    }

    /// `smtp_server_rcpt_to`.
    pub async fn rcpt_to(&self, address: &EnvelopeAddress, conn: &ConnMeta) -> Result<(), PolicyError> {
        self.call(Event::SmtpServerRcptTo, Args::Address { address, conn }).await.map(drop)
    }

    /// `get_listener_domain`.
    pub async fn listener_domain(
        &self,
        domain: &str,
        listener: &str,
        conn: &ConnMeta,
    ) -> Result<Option<ListenerDomain>, PolicyError> {
        let event = Event::GetListenerDomain;
        match self.call(event, Args::ListenerDomain { domain, listener, conn }).await? {
            None | Some(Value::Null) => Ok(None),
            Some(v) => crate::config::decode(v.clone()).map(Some).map_err(|e| PolicyError::Failed {
                event: event.name(),
                message: format!("invalid listener domain: {e}"),
            }),
        }
    }

    /// `smtp_server_data`.
    pub async fn smtp_server_data(&self, message: &Message, conn: &ConnMeta) -> Result<(), PolicyError> {
        self.call(Event::SmtpServerData, Args::MessageConn { message, conn }).await.map(drop)
    }

    /// `smtp_server_split_transaction`: batches of recipients, or `None` for the
    /// listener's `batch_handling`.
    pub async fn split_transaction(
        &self,
        message: &Message,
        conn: &ConnMeta,
    ) -> Result<Option<Vec<Vec<EnvelopeAddress>>>, PolicyError> {
        let event = Event::SmtpServerSplitTransaction;
        match self.call(event, Args::MessageConn { message, conn }).await? {
            None | Some(Value::Null) => Ok(None),
            Some(v) => crate::config::decode::<Vec<Vec<EnvelopeAddress>>>(v.clone())
                .map(Some)
                .map_err(|_| bad_result(event, "an array of arrays of recipients", &v)),
        }
    }

    /// `smtp_server_message_received`.
    pub async fn message_received(&self, message: &Message, conn: &ConnMeta) -> Result<(), PolicyError> {
        self.call(Event::SmtpServerMessageReceived, Args::MessageConn { message, conn }).await.map(drop)
    }

    /// `get_queue_config`: the scheduled queue's configuration (defaults without a handler).
    pub async fn queue_config(&self, parts: &QueueNameParts) -> Result<QueueConfig, PolicyError> {
        let args = Args::QueueConfig {
            domain: Some(parts.domain.as_str()),
            tenant: parts.tenant.as_deref(),
            campaign: parts.campaign.as_deref(),
            routing_domain: parts.routing_domain.as_deref(),
        };
        self.decoded(Event::GetQueueConfig, args).await
    }

    /// `get_egress_pool`; `unspecified` needs no handler.
    pub async fn egress_pool(&self, name: &str) -> Result<EgressPool, PolicyError> {
        self.named(Event::GetEgressPool, name, EgressPool::unspecified).await
    }

    /// `get_egress_source`; `unspecified` needs no handler.
    pub async fn egress_source(&self, name: &str) -> Result<EgressSource, PolicyError> {
        self.named(Event::GetEgressSource, name, EgressSource::unspecified).await
    }

    /// An object a handler defines by name; `unspecified` has a built-in definition.
    async fn named<T: serde::de::DeserializeOwned>(
        &self,
        event: Event,
        name: &str,
        unspecified: fn() -> T,
    ) -> Result<T, PolicyError> {
        match self.call(event, Args::Name(name)).await? {
            Some(v) if !v.is_null() => decode_value(event, v),
            _ if name == "unspecified" => Ok(unspecified()),
            _ => Err(PolicyError::Failed {
                event: event.name(),
                message: format!("no {} handler defines {name:?}", event.name()),
            }),
        }
    }

    /// `get_egress_path_config` (defaults without a handler). With core shaping files
    /// (`config.use-shaping`) the shaped options come first and the handler's answer is
    /// laid over them.
    pub async fn egress_path_config(
        &self,
        routing_domain: &str,
        source: &str,
        site: &str,
    ) -> Result<EgressPathConfig, PolicyError> {
        let event = Event::GetEgressPathConfig;
        let shaped = host::shaped_egress_params(&self.runtime, routing_domain, source, site)
            .await
            .map_err(|message| PolicyError::Failed { event: event.name(), message })?;
        let Some(mut params) = shaped else {
            return self.decoded(event, Args::EgressPath { routing_domain, source, site }).await;
        };
        match self.call(event, Args::EgressPath { routing_domain, source, site }).await? {
            Some(Value::Object(over)) => crate::shaping::merge::merge_params(&mut params, &over),
            None | Some(Value::Null) => {}
            Some(other) => return Err(bad_result(event, "an egress path", &other)),
        }
        decode_value(event, Value::Object(params))
    }

    /// `requeue_message`: the message's meta may be changed to re-route it.
    pub async fn requeue_message(
        &self,
        message: &Message,
        response: &str,
        context: &[String],
        increment_attempts: bool,
        delay: Option<f64>,
    ) -> Result<(), PolicyError> {
        let args = Args::Requeue { message, response, context, increment_attempts, delay };
        self.call(Event::RequeueMessage, args).await.map(drop)
    }

    /// `smtp_client_rewrite_delivery_status`: the status code the policy wants a
    /// destination's rejection treated as (`None`: as it is).
    pub async fn rewrite_delivery_status(
        &self,
        response: &str,
        parts: &crate::message::queue_name::QueueNameParts,
    ) -> Result<Option<u16>, PolicyError> {
        let event = Event::SmtpClientRewriteDeliveryStatus;
        let args = Args::DeliveryStatus {
            response,
            domain: &parts.domain,
            tenant: parts.tenant.as_deref(),
            campaign: parts.campaign.as_deref(),
            routing_domain: parts.routing_domain.as_deref(),
        };
        match self.call(event, args).await? {
            None | Some(Value::Null) => Ok(None),
            Some(Value::Number(n)) => match n.as_u64().filter(|c| (200..=599).contains(c)) {
                Some(code) => Ok(Some(code as u16)),
                None => Err(bad_result(event, "a status code from 200 to 599", &Value::Number(n))),
            },
            Some(other) => Err(bad_result(event, "a status code or nil", &other)),
        }
    }

    async fn decoded<T: serde::de::DeserializeOwned + Default>(
        &self,
        event: Event,
        args: Args<'_>,
    ) -> Result<T, PolicyError> {
        match self.call(event, args).await? {
            None | Some(Value::Null) => Ok(T::default()),
            Some(v) => decode_value(event, v),
        }
    }

    /// `http_server_validate_auth_basic(user, password)` / `..._bearer(token)`: whether the
    /// credentials are good (no handler: no).
    pub async fn http_auth(&self, basic: Option<(&str, &str)>, bearer: Option<&str>) -> Result<bool, PolicyError> {
        let answer = match (basic, bearer) {
            (Some((user, password)), _) => {
                self.call(Event::HttpServerValidateAuthBasic, Args::Strings(&[user, password])).await?
            }
            (None, Some(token)) => self.call(Event::HttpServerValidateAuthBearer, Args::Strings(&[token])).await?,
            (None, None) => None,
        };
        Ok(matches!(answer, Some(Value::Bool(true))))
    }

    /// `http_message_generated` (no handler means success).
    pub async fn http_message_generated(&self, message: &Message) -> Result<(), PolicyError> {
        self.call(Event::HttpMessageGenerated, Args::Message(message)).await.map(drop)
    }

    /// `smtp_server_message_deferred_inject` (no handler means success).
    pub async fn deferred_inject(&self, message: &Message, conn: &ConnMeta) -> Result<(), PolicyError> {
        self.call(Event::SmtpServerMessageDeferredInject, Args::MessageConn { message, conn }).await.map(drop)
    }

    /// `should_enqueue_log_record(message, hook_name)`: true queues the record's message
    /// (the handler set its `queue`); no handler, or none answering true, drops it.
    pub async fn should_enqueue_log_record(&self, message: &Message, hook: &str) -> Result<bool, PolicyError> {
        let answer = self.call(Event::ShouldEnqueueLogRecord, Args::MessageName { message, name: hook }).await?;
        Ok(matches!(answer, Some(Value::Bool(true))))
    }

    /// `log_disposition_<hook>(message, log_record)` of every engine that has it.
    pub async fn log_disposition(&self, hook: &str, message: &Message, record: &Value) -> Result<(), PolicyError> {
        let generation = self.current.load_full();
        let name = format!("log_disposition_{hook}");
        for engine in &generation.engines {
            let args = Args::MessageRecord { message, record };
            engine.call_user("log_disposition", &name, args).await?;
        }
        Ok(())
    }

    /// `spool_message_enumerated`.
    pub async fn spool_message_enumerated(&self, message: &Message) -> Result<(), PolicyError> {
        self.call(Event::SpoolMessageEnumerated, Args::Message(message)).await.map(drop)
    }
}

/// One engine call, its latency recorded per event and engine
/// (`policy_event_latency_seconds`; KumoMTA's `lua_event_latency` covers Lua only).
async fn timed(engine: &dyn Engine, event: Event, args: Args<'_>) -> Result<Option<Value>, PolicyError> {
    let started = std::time::Instant::now();
    let result = engine.call(event, args).await;
    // the handle is cached per engine: no label formatting or registry lookup per call
    engine.info().latency(event).observe(started.elapsed());
    result
}

fn decode_value<T: serde::de::DeserializeOwned>(event: Event, v: Value) -> Result<T, PolicyError> {
    crate::config::decode(v)
        .map_err(|e| PolicyError::Failed { event: event.name(), message: format!("invalid result: {e}") })
}

fn bad_result(event: Event, wanted: &str, got: &Value) -> PolicyError {
    PolicyError::Failed { event: event.name(), message: format!("handler returned {got}, expected {wanted}") }
}
