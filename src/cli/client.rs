//! The admin HTTP client the CLI's server commands use (`--endpoint`, or
//! `WASMTA_ENDPOINT`, default `http://127.0.0.1:8000` as kcli's): one request per call,
//! HTTP/1.1 over hyper, JSON in and out.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

/// Where the server's HTTP listener is.
#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// Base URL of wasmta's HTTP listener.
    #[arg(long, env = "WASMTA_ENDPOINT", default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
}

/// Sends `method path` with an optional JSON body; returns the status and the body text.
pub async fn call(endpoint: &str, method: &str, path: &str, body: Option<&Value>) -> Result<(u16, String), String> {
    let authority = endpoint
        .strip_prefix("http://")
        .ok_or_else(|| format!("--endpoint {endpoint}: only http:// endpoints are supported"))?
        .trim_end_matches('/');
    let stream = tokio::net::TcpStream::connect(authority)
        .await
        .map_err(|e| format!("cannot reach wasmta at {endpoint}: {e}"))?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("{endpoint}{path}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}
