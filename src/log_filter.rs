//! The diagnostic log (tracing to stderr) and its filter, which can change while the
//! server runs: `wasmta set-log-filter`, the admin API's
//! `/api/admin/set_diagnostic_log_filter/v1` and `kumo.set_diagnostic_log_filter`.
//! The filter syntax is tracing's `EnvFilter` (`info,wasmta::smtp=debug`); `RUST_LOG`
//! sets the first one.

use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Registry, reload};

static HANDLE: OnceLock<reload::Handle<EnvFilter, Registry>> = OnceLock::new();

/// Installs the diagnostic log (once per process).
pub fn init() {
    use std::io::IsTerminal;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let (layer, handle) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer().with_writer(std::io::stderr).with_ansi(std::io::stderr().is_terminal());
    if tracing_subscriber::registry().with(layer).with(fmt).try_init().is_ok() {
        let _ = HANDLE.set(handle);
    }
}

/// Replaces the filter; an unparsable one is an error naming what is wrong, and the old
/// filter stays.
pub fn set(text: &str) -> Result<(), String> {
    if text.trim().is_empty() {
        return Err("an empty log filter would silence the diagnostic log: say \"info\" for the default".into());
    }
    let filter = EnvFilter::try_new(text).map_err(|e| format!("log filter {text:?}: {e}"))?;
    // a process without our diagnostic log (a test embedding the server) has nothing to change
    let Some(handle) = HANDLE.get() else { return Ok(()) };
    handle.reload(filter).map_err(|e| e.to_string())?;
    tracing::info!("diagnostic log filter is now {text:?}");
    Ok(())
}
