//! One function per WIT event interface: converts the catalogue's typed arguments to the
//! component's, calls the export, and converts its answer to the JSON value the
//! dispatcher decodes (the same shape a Lua handler's table has).

use super::bindings::exports::wasmta::policy::{
    deferred_inject, egress, init, listener_domains, message_lifecycle, message_received, queue_config,
    smtp_connection, smtp_data, split_transaction,
};
use super::bindings::wasmta::policy::types;
use super::host::HostState;
use crate::message::{EnvelopeAddress, Message};
use crate::policy::{Args, ConnMeta, Event, PolicyError};
use serde_json::{Map, Value, json};
use wasmtime::Store;
use wasmtime::component::{Instance, Resource};

macro_rules! interfaces {
    ($($field:ident: $module:ident => [$($event:ident),*];)*) => {
        /// The export interfaces a component has (found once per component).
        #[derive(Default)]
        pub struct Exports {
            $(pub $field: Option<$module::GuestIndices>,)*
        }

        /// Those interfaces loaded for one instance (looked up once per instance).
        pub struct Guests {
            $(pub $field: Option<$module::Guest>,)*
        }

        impl Exports {
            /// Finds the interfaces a component exports.
            pub fn find(pre: &wasmtime::component::InstancePre<HostState>) -> Exports {
                Exports { $($field: $module::GuestIndices::new(pre).ok(),)* }
            }

            /// Loads the typed exports of an instance.
            pub fn load(&self, store: &mut Store<HostState>, instance: &Instance) -> wasmtime::Result<Guests> {
                Ok(Guests { $($field: self.$field.as_ref().map(|i| i.load(&mut *store, instance)).transpose()?,)* })
            }

            /// The events those interfaces cover.
            pub fn events(&self) -> Vec<Event> {
                let mut out = vec![];
                $(if self.$field.is_some() { out.extend([$(Event::$event),*]); })*
                out
            }
        }
    };
}

interfaces! {
    init: init => [Init];
    smtp_connection: smtp_connection => [
        SmtpServerGetDynamicParameters, SmtpServerConnectionAccepted, SmtpServerEhlo, SmtpServerMailFrom, SmtpServerRcptTo
    ];
    listener_domains: listener_domains => [GetListenerDomain];
    smtp_data: smtp_data => [SmtpServerData];
    split_transaction: split_transaction => [SmtpServerSplitTransaction];
    message_received: message_received => [SmtpServerMessageReceived];
    deferred_inject: deferred_inject => [SmtpServerMessageDeferredInject];
    queue_config: queue_config => [GetQueueConfig];
    egress: egress => [GetEgressPool, GetEgressSource, GetEgressPathConfig];
    message_lifecycle: message_lifecycle => [RequeueMessage, SpoolMessageEnumerated];
}

type Answer = Result<Option<Value>, types::Rejection>;

fn address(a: &EnvelopeAddress) -> types::EnvelopeAddress {
    types::EnvelopeAddress { user: a.user().to_string(), domain: a.domain().to_string(), email: a.email() }
}

fn put<T: serde::Serialize>(m: &mut Map<String, Value>, key: &str, v: Option<T>) {
    if let Some(v) = v {
        m.insert(key.into(), json!(v));
    }
}

fn disposition(d: types::LogDisposition) -> &'static str {
    match d {
        types::LogDisposition::Ignore => "Ignore",
        types::LogDisposition::LogThenRelay => "LogThenRelay",
        types::LogDisposition::LogThenDrop => "LogThenDrop",
    }
}

fn refresh(r: types::RefreshStrategy) -> &'static str {
    match r {
        types::RefreshStrategy::Ttl => "Ttl",
        types::RefreshStrategy::Epoch => "Epoch",
    }
}

fn listener_domain(d: types::ListenerDomain) -> Value {
    let mut m = Map::new();
    put(&mut m, "relay_to", d.relay_to);
    put(&mut m, "relay_from", d.relay_from);
    put(&mut m, "log_oob", d.log_oob.map(disposition));
    put(&mut m, "log_arf", d.log_arf.map(disposition));
    Value::Object(m)
}

fn mx_entry(e: types::MxEntry) -> Value {
    match e.addr {
        Some(addr) => json!({"name": e.name, "addr": addr}),
        None => json!(e.name),
    }
}

fn queue_config(q: types::QueueConfig) -> Value {
    let mut m = Map::new();
    put(&mut m, "retry_interval", q.retry_interval);
    put(&mut m, "max_retry_interval", q.max_retry_interval);
    put(&mut m, "max_age", q.max_age);
    put(&mut m, "egress_pool", q.egress_pool);
    put(&mut m, "max_message_rate", q.max_message_rate);
    put(&mut m, "reap_interval", q.reap_interval);
    put(&mut m, "refresh_interval", q.refresh_interval);
    put(&mut m, "refresh_strategy", q.refresh_strategy.map(refresh));
    put(&mut m, "provider_name", q.provider_name);
    match q.protocol {
        Some(types::DeliveryProtocol::Smtp(list)) => {
            m.insert(
                "protocol".into(),
                json!({"smtp": {"mx_list": list.into_iter().map(mx_entry).collect::<Vec<_>>()}}),
            );
        }
        Some(types::DeliveryProtocol::Maildir(path)) => {
            m.insert("protocol".into(), json!({"maildir_path": path}));
        }
        None => {}
    }
    Value::Object(m)
}

fn limits(list: Option<Vec<types::NamedLimit>>) -> Option<Map<String, Value>> {
    list.map(|l| l.into_iter().map(|n| (n.name, Value::String(n.value))).collect())
}

fn egress_path(p: types::EgressPathConfig) -> Result<Value, String> {
    let mut m = match p.extra {
        Some(extra) => match serde_json::from_str(&extra).map_err(|e| format!("egress-path-config.extra: {e}"))? {
            Value::Object(m) => m,
            _ => return Err("egress-path-config.extra must be a JSON object".into()),
        },
        None => Map::new(),
    };
    put(&mut m, "connection_limit", p.connection_limit);
    put(&mut m, "additional_connection_limits", limits(p.additional_connection_limits));
    put(&mut m, "max_connection_rate", p.max_connection_rate);
    put(&mut m, "max_message_rate", p.max_message_rate);
    put(&mut m, "additional_message_rate_throttles", limits(p.additional_message_rate_throttles));
    put(&mut m, "max_deliveries_per_connection", p.max_deliveries_per_connection);
    put(&mut m, "max_ready", p.max_ready);
    put(&mut m, "consecutive_connection_failures_before_delay", p.consecutive_connection_failures_before_delay);
    let tls = p.enable_tls.map(|t| match t {
        types::TlsMode::Opportunistic => "Opportunistic",
        types::TlsMode::OpportunisticInsecure => "OpportunisticInsecure",
        types::TlsMode::Required => "Required",
        types::TlsMode::RequiredInsecure => "RequiredInsecure",
        types::TlsMode::Disabled => "Disabled",
    });
    put(&mut m, "enable_tls", tls);
    put(&mut m, "enable_pipelining", p.enable_pipelining);
    put(&mut m, "enable_rset", p.enable_rset);
    put(&mut m, "smtp_port", p.smtp_port);
    put(&mut m, "ehlo_domain", p.ehlo_domain);
    put(&mut m, "prohibited_hosts", p.prohibited_hosts);
    put(&mut m, "skip_hosts", p.skip_hosts);
    for (k, v) in [
        ("connect_timeout", p.connect_timeout),
        ("banner_timeout", p.banner_timeout),
        ("ehlo_timeout", p.ehlo_timeout),
        ("mail_from_timeout", p.mail_from_timeout),
        ("rcpt_to_timeout", p.rcpt_to_timeout),
        ("data_timeout", p.data_timeout),
        ("data_dot_timeout", p.data_dot_timeout),
        ("idle_timeout", p.idle_timeout),
        ("rset_timeout", p.rset_timeout),
        ("starttls_timeout", p.starttls_timeout),
        ("refresh_interval", p.refresh_interval),
    ] {
        put(&mut m, k, v);
    }
    put(&mut m, "refresh_strategy", p.refresh_strategy.map(refresh));
    put(&mut m, "provider_name", p.provider_name);
    Ok(Value::Object(m))
}

/// Handles for the resources of one call, deleted afterwards.
struct Handles {
    message: Option<Resource<Message>>,
    conn: Option<Resource<ConnMeta>>,
}

impl Handles {
    fn new(
        store: &mut Store<HostState>,
        message: Option<&Message>,
        conn: Option<&ConnMeta>,
    ) -> wasmtime::Result<Handles> {
        let table = &mut store.data_mut().table;
        let message = message.map(|m| table.push(m.clone())).transpose()?;
        let conn = conn.map(|c| table.push(c.clone())).transpose()?;
        Ok(Handles { message, conn })
    }
    fn msg(&self) -> Resource<Message> {
        Resource::new_borrow(self.message.as_ref().expect("message handle").rep())
    }
    fn conn(&self) -> Resource<ConnMeta> {
        Resource::new_borrow(self.conn.as_ref().expect("conn handle").rep())
    }
    fn release(self, store: &mut Store<HostState>) -> wasmtime::Result<()> {
        let table = &mut store.data_mut().table;
        if let Some(m) = self.message {
            table.delete(m)?;
        }
        if let Some(c) = self.conn {
            table.delete(c)?;
        }
        Ok(())
    }
}

/// Calls `event` on the component. The outer error is a trap or host failure; the
/// inner result is the policy's answer.
pub async fn call(
    guests: &Guests,
    store: &mut Store<HostState>,
    event: Event,
    args: Args<'_>,
) -> wasmtime::Result<Result<Option<Value>, PolicyError>> {
    use Event::*;
    let (message, conn) = match args {
        Args::MessageConn { message, conn } => (Some(message), Some(conn)),
        Args::Message(m) | Args::Requeue { message: m, .. } => (Some(m), None),
        Args::Conn(c) | Args::DynamicParameters { conn: c, .. } | Args::Ehlo { conn: c, .. } => (None, Some(c)),
        Args::Address { conn: c, .. } | Args::ListenerDomain { conn: c, .. } => (None, Some(c)),
        _ => (None, None),
    };
    let h = Handles::new(store, message, conn)?;
    let answer: Answer = match (event, args) {
        (SmtpServerGetDynamicParameters, Args::DynamicParameters { listener, .. }) => {
            let g = guests.smtp_connection.as_ref().expect("handled");
            match g.call_smtp_server_get_dynamic_parameters(&mut *store, listener, h.conn()).await? {
                Ok(Some(text)) => Ok(Some(serde_json::from_str(&text).unwrap_or(Value::String(text)))),
                other => other.map(|_| None),
            }
        }
        (SmtpServerConnectionAccepted, Args::Conn(_)) => {
            let g = guests.smtp_connection.as_ref().expect("handled");
            g.call_smtp_server_connection_accepted(&mut *store, h.conn()).await?.map(|()| None)
        }
        (SmtpServerEhlo, Args::Ehlo { domain, extensions, .. }) => {
            let g = guests.smtp_connection.as_ref().expect("handled");
            g.call_smtp_server_ehlo(&mut *store, domain, h.conn(), extensions).await?.map(|l| l.map(|l| json!(l)))
        }
        (SmtpServerMailFrom | SmtpServerRcptTo, Args::Address { address: a, .. }) => {
            let g = guests.smtp_connection.as_ref().expect("handled");
            let a = address(a);
            let r = if event == SmtpServerMailFrom {
                g.call_smtp_server_mail_from(&mut *store, &a, h.conn()).await?
            } else {
                g.call_smtp_server_rcpt_to(&mut *store, &a, h.conn()).await?
            };
            r.map(|()| None)
        }
        (GetListenerDomain, Args::ListenerDomain { domain, listener, .. }) => {
            let g = guests.listener_domains.as_ref().expect("handled");
            g.call_get_listener_domain(&mut *store, domain, listener, h.conn()).await?.map(|d| d.map(listener_domain))
        }
        (SmtpServerData, Args::MessageConn { .. }) => {
            let g = guests.smtp_data.as_ref().expect("handled");
            g.call_smtp_server_data(&mut *store, h.msg(), h.conn()).await?.map(|()| None)
        }
        (SmtpServerSplitTransaction, Args::MessageConn { .. }) => {
            let g = guests.split_transaction.as_ref().expect("handled");
            g.call_smtp_server_split_transaction(&mut *store, h.msg(), h.conn()).await?.map(|b| b.map(|b| json!(b)))
        }
        (SmtpServerMessageReceived, Args::MessageConn { .. }) => {
            let g = guests.message_received.as_ref().expect("handled");
            g.call_smtp_server_message_received(&mut *store, h.msg(), h.conn()).await?.map(|()| None)
        }
        (SmtpServerMessageDeferredInject, Args::MessageConn { .. }) => {
            let g = guests.deferred_inject.as_ref().expect("handled");
            g.call_smtp_server_message_deferred_inject(&mut *store, h.msg(), h.conn()).await?.map(|()| None)
        }
        (GetQueueConfig, Args::QueueConfig { domain, tenant, campaign, routing_domain }) => {
            let g = guests.queue_config.as_ref().expect("handled");
            let s = |v: Option<&str>| v.map(str::to_string);
            let parts = types::QueueNameParts {
                domain: s(domain),
                tenant: s(tenant),
                campaign: s(campaign),
                routing_domain: s(routing_domain),
            };
            g.call_get_queue_config(&mut *store, &parts).await?.map(|c| c.map(queue_config))
        }
        (GetEgressPool | GetEgressSource, Args::Name(name)) => {
            let g = guests.egress.as_ref().expect("handled");
            if event == GetEgressPool {
                g.call_get_egress_pool(&mut *store, name).await?.map(|p| {
                    p.map(|p| {
                        let entries: Vec<Value> = p
                            .entries
                            .into_iter()
                            .map(|e| json!({"name": e.name, "weight": e.weight.unwrap_or(1)}))
                            .collect();
                        let mut m = Map::new();
                        m.insert("name".into(), json!(p.name));
                        m.insert("entries".into(), json!(entries));
                        put(&mut m, "ttl", p.ttl);
                        Value::Object(m)
                    })
                })
            } else {
                g.call_get_egress_source(&mut *store, name).await?.map(|s| {
                    s.map(|s| {
                        let mut m = Map::new();
                        m.insert("name".into(), json!(s.name));
                        put(&mut m, "source_address", s.source_address);
                        put(&mut m, "ehlo_domain", s.ehlo_domain);
                        put(&mut m, "remote_port", s.remote_port);
                        put(&mut m, "ttl", s.ttl);
                        Value::Object(m)
                    })
                })
            }
        }
        (GetEgressPathConfig, Args::EgressPath { routing_domain, source, site }) => {
            let g = guests.egress.as_ref().expect("handled");
            match g.call_get_egress_path_config(&mut *store, routing_domain, source, site).await? {
                Ok(Some(p)) => match egress_path(p) {
                    Ok(v) => Ok(Some(v)),
                    Err(e) => {
                        h.release(store)?;
                        return Ok(Err(PolicyError::Failed { event: event.name(), message: e }));
                    }
                },
                other => other.map(|_| None),
            }
        }
        (RequeueMessage, Args::Requeue { response, context, increment_attempts, delay, .. }) => {
            let g = guests.message_lifecycle.as_ref().expect("handled");
            g.call_requeue_message(&mut *store, h.msg(), response, context, increment_attempts, delay)
                .await?
                .map(|()| None)
        }
        (SpoolMessageEnumerated, Args::Message(_)) => {
            let g = guests.message_lifecycle.as_ref().expect("handled");
            g.call_spool_message_enumerated(&mut *store, h.msg()).await?.map(|()| None)
        }
        _ => Ok(None),
    };
    h.release(store)?;
    Ok(answer.map_err(super::rejection))
}
