//! Delivery: the dispatchers that carry a message to the next hop: the SMTP client and
//! maildir delivery.

pub mod client;
pub mod dispatcher;
pub mod maildir;
pub mod tls;
