//! The event catalogue: every policy event, declared once, with its name, whether it
//! takes one handler (Single) or a chain (Multiple), and its typed arguments. Both
//! engines bind to this; neither keeps its own list.

use super::conn_meta::ConnMeta;
use crate::message::{EnvelopeAddress, Message};

/// How many handlers an event takes (KumoMTA's rules).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Multiplicity {
    /// One handler; registering a second is an error.
    Single,
    /// Handlers run in order until one returns a value.
    Multiple,
}

macro_rules! catalogue {
    ($($variant:ident = $name:literal, $mult:ident;)*) => {
        /// A policy event.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Event {
            $(
                #[doc = concat!("`", $name, "`")]
                $variant,
            )*
        }

        impl Event {
            /// Every event.
            pub const ALL: &'static [Event] = &[$(Event::$variant),*];

            /// The name policies register it under.
            pub fn name(self) -> &'static str {
                match self { $(Event::$variant => $name,)* }
            }

            /// Single or Multiple.
            pub fn multiplicity(self) -> Multiplicity {
                match self { $(Event::$variant => Multiplicity::$mult,)* }
            }
        }
    };
}

catalogue! {
    Init = "init", Single;
    PreInit = "pre_init", Multiple;
    ValidateConfig = "validate_config", Multiple;
    Main = "main", Single;
    ShutdownLogging = "shutdown_logging", Single;
    SmtpServerGetDynamicParameters = "smtp_server_get_dynamic_parameters", Single;
    SmtpServerConnectionAccepted = "smtp_server_connection_accepted", Single;
    SmtpServerEhlo = "smtp_server_ehlo", Single;
    SmtpServerAuthPlain = "smtp_server_auth_plain", Single;
    SmtpServerMailFrom = "smtp_server_mail_from", Single;
    GetListenerDomain = "get_listener_domain", Single;
    SmtpServerRcptTo = "smtp_server_rcpt_to", Single;
    SmtpServerData = "smtp_server_data", Single;
    SmtpServerSplitTransaction = "smtp_server_split_transaction", Single;
    SmtpServerMessageReceived = "smtp_server_message_received", Single;
    SmtpServerMessageDeferredInject = "smtp_server_message_deferred_inject", Single;
    SmtpServerRewriteResponse = "smtp_server_rewrite_response", Single;
    HttpMessageGenerated = "http_message_generated", Single;
    HttpServerValidateAuthBasic = "http_server_validate_auth_basic", Single;
    HttpServerValidateAuthBearer = "http_server_validate_auth_bearer", Single;
    GetAclDefinition = "get_acl_definition", Multiple;
    GetQueueConfig = "get_queue_config", Multiple;
    GetEgressPool = "get_egress_pool", Single;
    GetEgressSource = "get_egress_source", Single;
    GetEgressPathConfig = "get_egress_path_config", Single;
    ThrottleInsertReadyQueue = "throttle_insert_ready_queue", Multiple;
    RequeueMessage = "requeue_message", Multiple;
    RebindMessage = "rebind_message", Single;
    SpoolMessageEnumerated = "spool_message_enumerated", Single;
    ShouldEnqueueLogRecord = "should_enqueue_log_record", Multiple;
    SmtpClientRewriteDeliveryStatus = "smtp_client_rewrite_delivery_status", Single;
    XferMessageReceived = "xfer_message_received", Single;
}

impl Event {
    /// Looks an event up by name.
    pub fn from_name(name: &str) -> Option<Event> {
        Event::ALL.iter().copied().find(|e| e.name() == name)
    }
}

/// The multiplicity of a name that may be a user-defined event (those are Single).
pub fn multiplicity_of(name: &str) -> Multiplicity {
    Event::from_name(name).map(Event::multiplicity).unwrap_or(Multiplicity::Single)
}

/// True for names KumoMTA lets policies define themselves: `custom_lua` constructors
/// and other dotted names, log disposition hooks.
pub fn is_user_defined_name(name: &str) -> bool {
    name.contains('.') || name.starts_with("log_disposition_")
}

/// The arguments of one event call, typed.
#[derive(Clone, Copy)]
pub enum Args<'a> {
    /// No arguments (`init`, `pre_init`).
    None,
    /// `smtp_server_get_dynamic_parameters(listener, conn_meta)`.
    DynamicParameters {
        /// `"ip:port"` of the listener.
        listener: &'a str,
        /// Connection metadata.
        conn: &'a ConnMeta,
    },
    /// Events taking only `conn_meta`.
    Conn(&'a ConnMeta),
    /// `smtp_server_ehlo(domain, conn_meta, extensions)`.
    Ehlo {
        /// EHLO argument.
        domain: &'a str,
        /// Connection metadata.
        conn: &'a ConnMeta,
        /// Extensions we would advertise.
        extensions: &'a [String],
    },
    /// `smtp_server_auth_plain(authz, authc, password, conn_meta)`.
    AuthPlain {
        /// The identity to act as (the authc when the client gave none).
        authz: &'a str,
        /// The identity the password belongs to.
        authc: &'a str,
        /// The password.
        password: &'a str,
        /// Connection metadata.
        conn: &'a ConnMeta,
    },
    /// `smtp_server_mail_from` / `smtp_server_rcpt_to`.
    Address {
        /// The address.
        address: &'a EnvelopeAddress,
        /// Connection metadata.
        conn: &'a ConnMeta,
    },
    /// `get_listener_domain(domain, listener, conn_meta)`.
    ListenerDomain {
        /// The domain.
        domain: &'a str,
        /// `"ip:port"` of the listener.
        listener: &'a str,
        /// Connection metadata.
        conn: &'a ConnMeta,
    },
    /// Events taking `(message, conn_meta)`.
    MessageConn {
        /// The message.
        message: &'a Message,
        /// Connection metadata.
        conn: &'a ConnMeta,
    },
    /// Events taking only a message.
    Message(&'a Message),
    /// A message and a name (`should_enqueue_log_record`'s hook name).
    MessageName { message: &'a Message, name: &'a str },
    /// A message and a log record (`log_disposition_<name>`).
    MessageRecord { message: &'a Message, record: &'a serde_json::Value },
    /// `get_queue_config(domain, tenant, campaign, routing_domain)`.
    QueueConfig {
        /// Recipient domain.
        domain: Option<&'a str>,
        /// Tenant.
        tenant: Option<&'a str>,
        /// Campaign.
        campaign: Option<&'a str>,
        /// Routing domain.
        routing_domain: Option<&'a str>,
    },
    /// Events taking one name (`get_egress_pool`, `get_egress_source`).
    Name(&'a str),
    /// `smtp_client_rewrite_delivery_status(response, domain, tenant, campaign, routing_domain)`.
    DeliveryStatus {
        /// The destination's reply as one line.
        response: &'a str,
        /// Recipient domain.
        domain: &'a str,
        /// Tenant.
        tenant: Option<&'a str>,
        /// Campaign.
        campaign: Option<&'a str>,
        /// Routing domain.
        routing_domain: Option<&'a str>,
    },
    /// `get_egress_path_config(routing_domain, egress_source, site_name)`.
    EgressPath {
        /// Routing domain.
        routing_domain: &'a str,
        /// Egress source name.
        source: &'a str,
        /// Site name.
        site: &'a str,
    },
    /// Events taking strings (`http_server_validate_auth_basic(user, password)`,
    /// `http_server_validate_auth_bearer(token)`).
    Strings(&'a [&'a str]),
    /// `requeue_message(message, smtp_response, insert_context, increment_attempts, delay)`.
    Requeue {
        /// The message.
        message: &'a Message,
        /// The response that caused the requeue, one line.
        response: &'a str,
        /// Reasons.
        context: &'a [String],
        /// Whether attempts are incremented.
        increment_attempts: bool,
        /// Delay in seconds, when known.
        delay: Option<f64>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_rules_hold() {
        for e in Event::ALL {
            assert_eq!(Event::from_name(e.name()), Some(*e));
        }
        assert_eq!(Event::GetQueueConfig.multiplicity(), Multiplicity::Multiple);
        assert_eq!(Event::SmtpServerMessageReceived.multiplicity(), Multiplicity::Single);
        assert_eq!(multiplicity_of("make.webhook"), Multiplicity::Single);
        assert!(is_user_defined_name("make.webhook"));
        assert!(!is_user_defined_name("smtp_server_mesage_received"));
    }
}
