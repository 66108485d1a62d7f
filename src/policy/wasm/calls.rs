//! One function per WIT event interface: converts the catalogue's typed arguments to the
//! component's, calls the export, and converts its answer to the JSON value the
//! dispatcher decodes (the same shape a Lua handler's table has).

use super::bindings::exports::wasmta::policy::{
    custom_delivery, deferred_inject, egress, init, listener_domains, log_hooks, message_lifecycle, message_received,
    queue_config, smtp_auth, smtp_connection, smtp_data, split_transaction,
};
use super::bindings::wasmta::policy::types;
use super::host::HostState;
use super::records;
use crate::message::{EnvelopeAddress, Message};
use crate::policy::{Args, ConnMeta, Event, PolicyError};
use serde_json::{Value, json};
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
                $(if self.$field.is_some() { out.extend::<[Event; _]>([$(Event::$event),*]); })*
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
    smtp_auth: smtp_auth => [SmtpServerAuthPlain];
    listener_domains: listener_domains => [GetListenerDomain];
    smtp_data: smtp_data => [SmtpServerData];
    split_transaction: split_transaction => [SmtpServerSplitTransaction];
    message_received: message_received => [SmtpServerMessageReceived];
    deferred_inject: deferred_inject => [SmtpServerMessageDeferredInject];
    queue_config: queue_config => [GetQueueConfig];
    egress: egress => [GetEgressPool, GetEgressSource, GetEgressPathConfig];
    message_lifecycle: message_lifecycle => [RequeueMessage, SpoolMessageEnumerated];
    log_hooks: log_hooks => [ShouldEnqueueLogRecord];
    // no catalogue event: `custom_lua` constructors are opened through `CustomConstructors`
    custom_delivery: custom_delivery => [];
}

type Answer = Result<Option<Value>, types::Rejection>;

fn address(a: &EnvelopeAddress) -> types::EnvelopeAddress {
    types::EnvelopeAddress { user: a.user().to_string(), domain: a.domain().to_string(), email: a.email() }
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
        Args::Message(m) | Args::Requeue { message: m, .. } | Args::MessageName { message: m, .. } => (Some(m), None),
        Args::Conn(c) | Args::DynamicParameters { conn: c, .. } | Args::Ehlo { conn: c, .. } => (None, Some(c)),
        Args::AuthPlain { conn: c, .. } => (None, Some(c)),
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
        (SmtpServerAuthPlain, Args::AuthPlain { authz, authc, password, .. }) => {
            let g = guests.smtp_auth.as_ref().expect("handled");
            g.call_smtp_server_auth_plain(&mut *store, authz, authc, password, h.conn())
                .await?
                .map(|ok| Some(json!(ok)))
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
            g.call_get_listener_domain(&mut *store, domain, listener, h.conn())
                .await?
                .map(|d| d.map(records::listener_domain))
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
            g.call_get_queue_config(&mut *store, &parts).await?.map(|c| c.map(records::queue_config))
        }
        (GetEgressPool | GetEgressSource, Args::Name(name)) => {
            let g = guests.egress.as_ref().expect("handled");
            if event == GetEgressPool {
                g.call_get_egress_pool(&mut *store, name).await?.map(|p| p.map(records::egress_pool))
            } else {
                g.call_get_egress_source(&mut *store, name).await?.map(|s| s.map(records::egress_source))
            }
        }
        (GetEgressPathConfig, Args::EgressPath { routing_domain, source, site }) => {
            let g = guests.egress.as_ref().expect("handled");
            match g.call_get_egress_path_config(&mut *store, routing_domain, source, site).await? {
                Ok(Some(p)) => match records::egress_path(p) {
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
        (ShouldEnqueueLogRecord, Args::MessageName { name, .. }) => {
            let g = guests.log_hooks.as_ref().expect("handled");
            g.call_should_enqueue_log_record(&mut *store, h.msg(), name).await?.map(|b| b.map(Value::Bool))
        }
        _ => Ok(None),
    };
    h.release(store)?;
    Ok(answer.map_err(super::rejection))
}
