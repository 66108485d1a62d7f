//! Traffic shaping: throttles now; the TOML shaping files come later.

pub mod file;
pub mod merge;
pub mod throttle;
