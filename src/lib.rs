//! wasmta: a mail transfer agent with KumoMTA-compatible Lua policy and WebAssembly
//! component policy. See `docs/design.md` for the plan of the rooms below.

pub mod cli;
pub mod config;
pub mod delivery;
pub mod dirlock;
pub mod dns;
pub mod fuzzing;
pub mod gobind;
pub mod http;
pub mod log_filter;
pub mod logs;
pub mod message;
pub mod metrics;
pub mod policy;
pub mod protocol;
pub mod queue;
pub mod runtime;
pub mod shaping;
pub mod smtp;
pub mod spool;
pub mod tls;
pub mod trace;
