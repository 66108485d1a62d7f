//! SMTP: the ESMTP server (the sans-IO protocol layer it is built on is `crate::protocol`).

pub mod server;
