//! Delivery: DNS and MX resolution, site names, and the SMTP client that carries a
//! message to the next hop.

pub mod client;
pub mod dns;
pub mod mx;
pub mod tls;
