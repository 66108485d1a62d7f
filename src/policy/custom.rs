//! Custom delivery (`protocol = { custom_lua = { constructor = 'make.webhook' } }`): the
//! constructor event returns a connection object the queue sends through. Each engine
//! that has a handler of that name makes one; `queue` sees only [`CustomSender`].

use super::{Policy, PolicyError};
use crate::message::Message;
use crate::message::queue_name::QueueNameParts;

/// The event name used in errors about custom delivery.
pub const EVENT: &str = "custom_lua";

/// A connection object made by a constructor event.
#[async_trait::async_trait]
pub trait CustomSender: Send {
    /// Sends one message; `Ok` carries the disposition text (logged with the Delivery),
    /// `Rejected` a 4xx (retry) or 5xx (bounce) answer, `Failed` a fault (retry).
    async fn send(&mut self, message: &Message) -> Result<String, PolicyError>;
    /// Sends several at once (`batch_size` > 1): one answer for all of them. An object
    /// without `send_batch` is sent to one message at a time.
    async fn send_batch(&mut self, messages: &[Message]) -> Result<String, PolicyError>;
    /// True when the object has `send_batch`.
    fn batches(&self) -> bool;
    /// False once a fault made the object unusable (a deadline overrun): the queue
    /// makes a new connection.
    fn usable(&self) -> bool;
    /// Calls the object's `close`, if it has one.
    async fn close(self: Box<Self>);
}

/// What an engine offers for custom delivery.
#[async_trait::async_trait]
pub trait CustomConstructors: Send + Sync {
    /// Runs the constructor `name` for the scheduled queue `parts`; `None` when `name` is
    /// not one of this engine's.
    async fn construct(&self, name: &str, parts: &QueueNameParts)
    -> Result<Option<Box<dyn CustomSender>>, PolicyError>;
}

impl Policy {
    /// A connection for a `custom_lua` queue, from the engine that handles `constructor`.
    pub async fn open_custom(
        &self,
        constructor: &str,
        parts: &QueueNameParts,
    ) -> Result<Box<dyn CustomSender>, PolicyError> {
        let generation = self.current.load_full();
        for engine in &generation.engines {
            if let Some(c) = engine.constructors()
                && let Some(sender) = c.construct(constructor, parts).await?
            {
                return Ok(sender);
            }
        }
        Err(PolicyError::Failed {
            event: EVENT,
            message: format!("no handler is registered for the constructor event '{constructor}'"),
        })
    }
}
