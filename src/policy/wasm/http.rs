//! The `http` import: a component's outbound requests, only to the URL prefixes the
//! deployment allowed (`kumo.wasm.load { http_allow = {...} }`, `config.allow-http`), on
//! the same client as `kumo.http` (`policy::http`). A component has no other network.

use super::bindings::wasmta::policy::http;
use super::host::HostState;
use std::sync::OnceLock;
use std::time::Duration;

/// An allowed prefix: scheme, host, port and the start of the path must all match.
#[derive(Debug, Clone)]
pub struct Prefix(reqwest::Url);

impl Prefix {
    /// Parses `http(s)://host[:port][/path]`.
    pub fn parse(text: &str) -> Result<Prefix, String> {
        let url = reqwest::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!("{text:?}: an allowed prefix is an http:// or https:// URL with a host"));
        }
        Ok(Prefix(url))
    }

    fn admits(&self, url: &reqwest::Url) -> bool {
        let p = &self.0;
        url.scheme() == p.scheme()
            && url.host_str() == p.host_str()
            && url.port_or_known_default() == p.port_or_known_default()
            && url.path().starts_with(p.path())
    }
}

/// One component's HTTP access.
#[derive(Default)]
pub struct Access {
    allow: Vec<Prefix>,
    client: OnceLock<Result<reqwest::Client, String>>,
}

impl Access {
    /// Access to these prefixes (each already checked by the config that named it).
    pub fn new(prefixes: &[String]) -> Result<Access, String> {
        let allow = prefixes.iter().map(|p| Prefix::parse(p)).collect::<Result<_, _>>()?;
        Ok(Access { allow, client: OnceLock::new() })
    }

    fn client(&self) -> Result<reqwest::Client, String> {
        self.client.get_or_init(|| crate::policy::http::build_client(&Default::default())).clone()
    }
}

impl http::Host for HostState {
    async fn send(&mut self, request: http::Request) -> wasmtime::Result<Result<http::Response, String>> {
        let url = match reqwest::Url::parse(&request.url) {
            Ok(u) => u,
            Err(e) => return Ok(Err(format!("http.send: {:?} is not a URL: {e}", request.url))),
        };
        if !self.http.allow.iter().any(|p| p.admits(&url)) {
            return Ok(Err(format!(
                "http.send: {url} is not allowed for {} (kumo.wasm.load {{ http_allow = {{ ... }} }} or config.allow-http)",
                self.plugin
            )));
        }
        let method = match reqwest::Method::from_bytes(request.method.to_ascii_uppercase().as_bytes()) {
            Ok(m) => m,
            Err(_) => return Ok(Err(format!("http.send: {:?} is not an HTTP method", request.method))),
        };
        let client = match self.http.client() {
            Ok(c) => c,
            Err(e) => return Ok(Err(e)),
        };
        // within the call's own budget
        let left = self.deadline.saturating_duration_since(std::time::Instant::now());
        let timeout = request.timeout_ms.map(|ms| Duration::from_millis(ms.into())).unwrap_or(left).min(left);
        let what = format!("{method} {url}");
        let mut builder = client.request(method, url).timeout(timeout).body(request.body);
        for (k, v) in request.headers {
            builder = builder.header(k, v);
        }
        Ok(match crate::policy::http::send(builder, &what).await {
            Ok(r) => Ok(http::Response { status: r.status.as_u16(), headers: r.headers, body: r.body.to_vec() }),
            Err(e) => Err(e),
        })
    }
}
