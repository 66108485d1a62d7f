//! Outbound HTTP for policy code (`kumo.http` in Lua; the same client serves both
//! engines): a `reqwest` client on rustls (ring, the web PKI roots), connections kept and
//! reused per client, and whole responses read into memory for the policy to inspect.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// `kumo.http.build_client{...}` options (KumoMTA's names).
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientOptions {
    /// `User-Agent` of every request.
    #[serde(default)]
    pub user_agent: Option<String>,
    /// Log each connection's traffic at trace level.
    #[serde(default)]
    pub connection_verbose: bool,
    /// How long an idle connection is kept for reuse (default 90 s).
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub pool_idle_timeout: Option<Duration>,
    /// Whole-request deadline (default 60 s: a hung receiver must not hold a queue).
    #[serde(default, with = "crate::config::units::opt_duration")]
    pub timeout: Option<Duration>,
}

/// The default whole-request deadline.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

fn tls() -> rustls::ClientConfig {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("ring supports the default TLS versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        Arc::new(config)
    });
    (**config).clone()
}

/// A client with these options.
pub fn build_client(options: &ClientOptions) -> Result<reqwest::Client, String> {
    let mut b = reqwest::Client::builder()
        .use_preconfigured_tls(tls())
        .timeout(options.timeout.unwrap_or(DEFAULT_TIMEOUT))
        .connection_verbose(options.connection_verbose)
        .pool_idle_timeout(options.pool_idle_timeout.unwrap_or(Duration::from_secs(90)));
    if let Some(ua) = &options.user_agent {
        b = b.user_agent(ua.clone());
    }
    b.build().map_err(|e| format!("kumo.http.build_client: {}", chain(&e)))
}

/// An error with its causes (`error sending request: connection refused`).
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = s.source();
    }
    text
}

/// A response read whole.
pub struct Response {
    /// Status code.
    pub status: reqwest::StatusCode,
    /// Headers (names lower-case).
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: bytes::Bytes,
}

/// The largest response body read (a policy inspects answers; it does not download).
pub const MAX_BODY: usize = 16 << 20;

/// Sends a request and reads the whole response (at most [`MAX_BODY`]); `what` names it
/// in errors (`POST http://x/y`).
pub async fn send(request: reqwest::RequestBuilder, what: &str) -> Result<Response, String> {
    let failed = |e: reqwest::Error| format!("kumo.http: {what}: {}", chain(&e));
    let mut response = request.send().await.map_err(failed)?;
    let status = response.status();
    let headers = response
        .headers()
        .iter()
        .map(|(k, v)| (k.as_str().to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
        .collect();
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = response.chunk().await.map_err(failed)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(format!("kumo.http: {what}: the response body is larger than {MAX_BODY} bytes"));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(Response { status, headers, body: body.freeze() })
}

/// `kumo.http.build_url(url, params)`: the URL with the query parameters appended,
/// encoded.
pub fn build_url(url: &str, params: &[(String, String)]) -> Result<String, String> {
    let url = reqwest::Url::parse_with_params(url, params)
        .map_err(|e| format!("kumo.http.build_url: {url:?} is not a URL: {e}"))?;
    Ok(url.to_string())
}
