//! The admin HTTP client the CLI's server commands use (`--endpoint`, or
//! `WASMTA_ENDPOINT`, default `http://127.0.0.1:8000` as kcli's): one request per call,
//! HTTP/1.1 over hyper, JSON in and out; `https://` endpoints over rustls (certificates
//! checked against the webpki roots unless `--insecure`).

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

/// Where the server's HTTP listener is.
#[derive(clap::Args, Clone)]
pub struct Endpoint {
    /// Base URL of wasmta's HTTP listener.
    #[arg(long, env = "WASMTA_ENDPOINT", default_value = "http://127.0.0.1:8000")]
    pub endpoint: String,
    /// Accept any certificate from an https:// endpoint (e.g. the self-signed one
    /// `use_tls` makes when no certificate is configured).
    #[arg(long, env = "WASMTA_INSECURE")]
    pub insecure: bool,
}

/// A connection to the endpoint, plain or TLS.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Io for T {}

async fn connect(endpoint: &Endpoint) -> Result<(Box<dyn Io>, String), String> {
    let url = endpoint.endpoint.as_str();
    let (tls, rest) = match (url.strip_prefix("http://"), url.strip_prefix("https://")) {
        (Some(rest), _) => (false, rest),
        (_, Some(rest)) => (true, rest),
        _ => return Err(format!("--endpoint {url}: expected an http:// or https:// URL")),
    };
    let authority = rest.trim_end_matches('/').to_string();
    let stream =
        tokio::net::TcpStream::connect(&authority).await.map_err(|e| format!("cannot reach wasmta at {url}: {e}"))?;
    if !tls {
        return Ok((Box::new(stream), authority));
    }
    let host = authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(&authority);
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_string())
        .map_err(|e| format!("--endpoint {url}: {e}"))?;
    let connector = tokio_rustls::TlsConnector::from(crate::delivery::tls::client_config(endpoint.insecure));
    let stream = connector.connect(name, stream).await.map_err(|e| format!("TLS with {url}: {e}"))?;
    Ok((Box::new(stream), authority))
}

/// How long a command waits for the server's whole answer.
const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(120);

/// Sends `method path` with an optional JSON body; returns the status and the body text.
/// A server that does not answer within two minutes is an error, not a hang.
pub async fn call(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    match tokio::time::timeout(ANSWER_TIMEOUT, exchange(endpoint, method, path, body)).await {
        Ok(r) => r,
        Err(_) => Err(format!("{}{path}: no answer within {ANSWER_TIMEOUT:?}", endpoint.endpoint)),
    }
}

async fn exchange(
    endpoint: &Endpoint,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> Result<(u16, String), String> {
    let (stream, authority) = connect(endpoint).await?;
    let endpoint = &endpoint.endpoint;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("{endpoint}: {e}"))?;
    tokio::spawn(conn);
    let bytes = body.map(|b| b.to_string()).unwrap_or_default();
    let request = hyper::Request::builder()
        .method(method)
        .uri(path)
        .header("host", &authority)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(bytes)))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("{endpoint}{path}: {e}"))?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// Sends the request and returns the answer as JSON; an error status is an error with the
/// server's text.
pub async fn json_call(endpoint: &Endpoint, method: &str, path: &str, body: Option<&Value>) -> Result<Value, String> {
    let (status, text) = call(endpoint, method, path, body).await?;
    if !(200..300).contains(&status) {
        return Err(format!("the server answered {status}: {}", text.trim()));
    }
    serde_json::from_str(&text).map_err(|e| format!("{path}: {e}"))
}

/// Sends `GET path` and calls `each` with every line of the answer as it arrives, until
/// the server ends it (no overall timeout: for streams such as the live traces). An
/// error status is an error with the server's text.
pub async fn stream_lines(endpoint: &Endpoint, path: &str, mut each: impl FnMut(&str)) -> Result<(), String> {
    let (stream, authority) = connect(endpoint).await?;
    let base = &endpoint.endpoint;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
        .await
        .map_err(|e| format!("{base}: {e}"))?;
    tokio::spawn(conn);
    let request = hyper::Request::builder()
        .method("GET")
        .uri(path)
        .header("host", &authority)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let response = sender.send_request(request).await.map_err(|e| format!("{base}{path}: {e}"))?;
    let status = response.status().as_u16();
    let mut body = response.into_body();
    if status != 200 {
        let text = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
        return Err(format!("the server answered {status}: {}", String::from_utf8_lossy(&text).trim()));
    }
    let mut pending: Vec<u8> = vec![];
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| format!("{base}{path}: {e}"))?;
        if let Some(data) = frame.data_ref() {
            pending.extend_from_slice(data);
            while let Some(at) = pending.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = pending.drain(..=at).collect();
                each(String::from_utf8_lossy(&line).trim_end());
            }
        }
    }
    Ok(())
}
