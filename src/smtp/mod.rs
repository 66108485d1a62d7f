//! SMTP: the sans-IO protocol layer and the ESMTP server built on it.

pub mod protocol;
pub mod server;
