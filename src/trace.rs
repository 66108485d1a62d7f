//! Live protocol tracing (`wasmta trace-smtp-server`, `trace-smtp-client`, as kcli's):
//! SMTP sessions publish what they read and write to a broadcast channel, only while
//! someone listens (one relaxed atomic load otherwise: the channel's own receiver count
//! takes a lock every SMTP line would contend on). Message content is never published
//! (only its size), nor SASL credentials. One tracer per direction per process.

use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use tokio::sync::broadcast;

/// One traced event.
#[derive(Debug, Clone, Serialize)]
pub struct TraceEvent {
    /// RFC 3339 time.
    pub when: String,
    /// The session (server) or connection (client) it belongs to.
    pub session: String,
    /// The other side's address.
    pub peer: String,
    /// `connect`, `recv`, `send` or `close`.
    pub kind: &'static str,
    /// The line(s), or a description (`(message data: 1234 bytes)`).
    pub data: String,
    /// Server: the EHLO domain once said. Client: the ready queue and MX host, and the
    /// recipient domains sent on this connection so far.
    pub domain: String,
}

/// Where one direction's events go.
pub struct Tracer {
    tx: broadcast::Sender<Arc<TraceEvent>>,
    listeners: AtomicUsize,
}

/// One listener: events as they come; counted while it lives.
pub struct Subscription<'a> {
    /// The events (it misses some when it falls more than 4,096 behind).
    pub rx: broadcast::Receiver<Arc<TraceEvent>>,
    tracer: &'a Tracer,
}

impl Drop for Subscription<'_> {
    fn drop(&mut self) {
        self.tracer.listeners.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Tracer {
    fn new() -> Tracer {
        Tracer { tx: broadcast::channel(4096).0, listeners: AtomicUsize::new(0) }
    }

    /// True while someone listens.
    pub fn active(&self) -> bool {
        self.listeners.load(Ordering::Relaxed) > 0
    }

    /// Publishes the event `make` builds, if someone listens.
    pub fn publish(&self, make: impl FnOnce() -> TraceEvent) {
        if self.active() {
            let _ = self.tx.send(Arc::new(make()));
        }
    }

    /// A listener.
    pub fn subscribe(&self) -> Subscription<'_> {
        self.listeners.fetch_add(1, Ordering::Relaxed);
        Subscription { rx: self.tx.subscribe(), tracer: self }
    }
}

/// The SMTP server's sessions.
pub fn server() -> &'static Tracer {
    static T: OnceLock<Tracer> = OnceLock::new();
    T.get_or_init(Tracer::new)
}

/// The SMTP client's connections.
pub fn client() -> &'static Tracer {
    static T: OnceLock<Tracer> = OnceLock::new();
    T.get_or_init(Tracer::new)
}

/// An event now.
pub fn event(session: &str, peer: &str, kind: &'static str, data: String, domain: String) -> TraceEvent {
    TraceEvent {
        when: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        session: session.to_string(),
        peer: peer.to_string(),
        kind,
        data,
        domain,
    }
}

/// Protocol bytes as trace text: CRLF-separated lines joined by newlines, trailing
/// line end dropped, invalid UTF-8 replaced.
pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).trim_end_matches(['\r', '\n']).replace("\r\n", "\n")
}

/// A command line as it may be shown: AUTH keeps its mechanism only.
pub fn command_text(line: &[u8]) -> String {
    let t = text(line);
    let upper = t.to_ascii_uppercase();
    if upper.starts_with("AUTH ") {
        let mech = t.split_whitespace().nth(1).unwrap_or_default();
        return format!("AUTH {mech} (credentials hidden)");
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_not_traced() {
        assert_eq!(command_text(b"AUTH PLAIN AGRhbmllbAB0aWdlcg==\r\n"), "AUTH PLAIN (credentials hidden)");
        assert_eq!(command_text(b"MAIL FROM:<a@b>\r\n"), "MAIL FROM:<a@b>");
    }

    #[test]
    fn nothing_is_built_without_a_listener() {
        let t = Tracer::new();
        t.publish(|| panic!("built without a listener"));
        let mut sub = t.subscribe();
        t.publish(|| event("s", "p", "recv", "x".into(), String::new()));
        assert_eq!(sub.rx.try_recv().unwrap().data, "x");
        drop(sub);
        t.publish(|| panic!("built after the listener went"));
    }
}
