//! Traffic shaping: throttles now; the TOML shaping files come later.

pub mod throttle;
