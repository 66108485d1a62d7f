//! Delivery: DNS and MX resolution, site names, and the dispatchers that carry a message
//! to the next hop: the SMTP client and maildir delivery.

pub mod client;
pub mod dispatcher;
pub mod dns;
pub mod maildir;
pub mod mx;
pub mod tls;
