//! What a ready queue's delivery task talks to (KumoMTA's queue dispatcher): `queue`
//! decides which message goes when; a [`Dispatcher`] carries it — an SMTP connection, a
//! maildir. A custom (Lua) dispatcher for log hooks and webhooks plugs in here.

use super::client::{Connection, MessageResult, TransportError};
use super::maildir;
use crate::config::egress::EgressPathConfig;
use crate::config::queue::MaildirProtocol;
use crate::message::Message;

/// One open channel to a destination.
#[async_trait::async_trait]
pub trait Dispatcher: Send {
    /// The log records' `delivery_protocol` (`ESMTP`, `Maildir`).
    fn protocol(&self) -> &'static str;
    /// The peer's name and address, for network destinations.
    fn peer(&self) -> Option<(String, String)>;
    /// TLS in use: (cipher suite, protocol version).
    fn tls(&self) -> Option<(String, String)>;
    /// Messages carried so far.
    fn deliveries(&self) -> usize;
    /// Carries one message: a reply per recipient. A transport error means the channel
    /// is unusable and nothing is known of this message.
    async fn send(&mut self, message: &Message, path: &EgressPathConfig) -> Result<MessageResult, TransportError>;
    /// Closes the channel (SMTP: QUIT, best effort).
    async fn close(self: Box<Self>, path: &EgressPathConfig);
}

#[async_trait::async_trait]
impl Dispatcher for Connection {
    fn protocol(&self) -> &'static str {
        "ESMTP"
    }

    fn peer(&self) -> Option<(String, String)> {
        Some((self.host.clone(), self.addr.ip().to_string()))
    }

    fn tls(&self) -> Option<(String, String)> {
        self.tls.clone()
    }

    fn deliveries(&self) -> usize {
        self.deliveries
    }

    async fn send(&mut self, message: &Message, path: &EgressPathConfig) -> Result<MessageResult, TransportError> {
        Connection::send(self, message, path).await
    }

    async fn close(self: Box<Self>, path: &EgressPathConfig) {
        self.quit(path.rset_timeout).await
    }
}

/// Delivery into maildirs: always open.
pub struct Maildir {
    config: MaildirProtocol,
    deliveries: usize,
}

impl Maildir {
    /// A dispatcher for this configuration.
    pub fn new(config: MaildirProtocol) -> Self {
        Maildir { config, deliveries: 0 }
    }
}

#[async_trait::async_trait]
impl Dispatcher for Maildir {
    fn protocol(&self) -> &'static str {
        "Maildir"
    }

    fn peer(&self) -> Option<(String, String)> {
        None
    }

    fn tls(&self) -> Option<(String, String)> {
        None
    }

    fn deliveries(&self) -> usize {
        self.deliveries
    }

    async fn send(&mut self, message: &Message, _path: &EgressPathConfig) -> Result<MessageResult, TransportError> {
        self.deliveries += 1;
        Ok(maildir::deliver(&self.config, message).await)
    }

    async fn close(self: Box<Self>, _path: &EgressPathConfig) {}
}
