//! The HTTP listener's connections: accepted here, each served by hyper in a task of its
//! own (HTTPS handshakes too, so a slow client never holds up the others), with the
//! limits a listener open to a network needs: at most `max_connections` at once (more are
//! answered `503` and closed), `client_timeout` for a request's header (which also ends a
//! keep-alive connection idle that long) and for its body.

use crate::config::storage::HttpListenerConfig;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// Counts a connection while it lives.
struct Open(Arc<AtomicUsize>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Accepts and serves connections until `shutdown` flips.
pub async fn serve(
    socket: TcpListener,
    config: HttpListenerConfig,
    tls: Option<TlsAcceptor>,
    app: Router<()>,
    mut shutdown: watch::Receiver<bool>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    loop {
        let (stream, peer) = tokio::select! {
            a = socket.accept() => match a {
                Ok(x) => x,
                Err(e) => {
                    tracing::warn!("http accept on {}: {e}", config.listen);
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let now = open.fetch_add(1, Ordering::AcqRel) + 1;
        let guard = Open(open.clone());
        if now > config.max_connections {
            tokio::spawn(async move {
                let _guard = guard;
                refuse(stream).await;
            });
            continue;
        }
        let limits = Limits { timeout: config.client_timeout, body: config.request_body_limit as usize };
        let (app, tls, shutdown) = (app.clone(), tls.clone(), shutdown.clone());
        tokio::spawn(async move {
            let _guard = guard;
            match tls {
                None => connection(stream, peer, app, limits, shutdown).await,
                Some(acceptor) => match tokio::time::timeout(limits.timeout, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => connection(tls, peer, app, limits, shutdown).await,
                    Ok(Err(e)) => tracing::debug!("https handshake with {peer}: {e}"),
                    Err(_) => tracing::debug!("https handshake with {peer} timed out"),
                },
            }
        });
    }
}

async fn refuse(mut stream: tokio::net::TcpStream) {
    let body = "too many connections to this HTTP listener; try again later\n";
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nRetry-After: 1\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.write_all(response.as_bytes())).await;
    let _ = stream.shutdown().await;
}

/// A listener's per-request limits.
#[derive(Clone, Copy)]
struct Limits {
    /// For the header, the body, and between requests.
    timeout: Duration,
    /// Largest body (`request_body_limit`).
    body: usize,
}

/// Serves one connection: requests carry the peer address (for the trust check), each
/// request's header must arrive within the timeout (hyper starts that clock as soon as it
/// waits for a request, so it is also the keep-alive idle limit), and so must its body,
/// which may not be larger than `request_body_limit`.
async fn connection<S>(
    stream: S,
    peer: SocketAddr,
    app: Router<()>,
    limits: Limits,
    mut shutdown: watch::Receiver<bool>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        let app = app.clone();
        async move {
            let (parts, body) = request.into_parts();
            // the whole body within the timeout: a client that stops half-way is let go
            let limited = http_body_util::Limited::new(body, limits.body);
            let body = match tokio::time::timeout(limits.timeout, http_body_util::BodyExt::collect(limited)).await {
                Ok(Ok(b)) => axum::body::Body::from(b.to_bytes()),
                Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
                    return Ok(status(
                        413,
                        &format!("the request body is over request_body_limit ({})\n", limits.body),
                    ));
                }
                Ok(Err(e)) => return Ok(status(400, &format!("reading the request body: {e}\n"))),
                Err(_) => return Ok(status(408, "the request body did not arrive in time\n")),
            };
            app.oneshot(hyper::Request::from_parts(parts, body)).await
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder.timer(TokioTimer::new()).header_read_timeout(limits.timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!("http connection from {peer}: {e}");
            }
        }
        _ = shutdown.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(2), conn).await;
        }
    }
}

fn status(code: u16, text: &str) -> axum::response::Response {
    let code = axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_REQUEST);
    axum::response::IntoResponse::into_response((code, text.to_string()))
}
