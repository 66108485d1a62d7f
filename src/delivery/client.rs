//! The SMTP delivery client: one connection to one host. Banner, EHLO (HELO fallback),
//! STARTTLS per `enable_tls` (buffered plaintext is discarded after the handshake),
//! PIPELINING when offered, per-recipient replies, dot-stuffed CRLF-only data, and a
//! timeout on every step. Replies are read with bounded memory.

use super::tls;
use crate::config::egress::{EgressPathConfig, Tls};
use crate::message::{EnvelopeAddress, Message};
use crate::protocol::Reply;
use crate::protocol::client::{ReplyReader, dot_stuff_parts};
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

/// A failure of the connection itself (not a reply to a command); its reply is logged.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", reply.to_line())]
pub struct TransportError {
    /// The synthesized reply logged for it (`KumoMTA internal: ...` text).
    pub reply: Reply,
}

/// The reply for a message whose body the spool could not give back: `451` (retried
/// later) unless the body is gone for good (`550 5.3.0`).
pub fn body_unreadable(e: &crate::message::BodyError) -> Reply {
    match e.lost {
        true => Reply::new(550, "5.3.0", format!("KumoMTA internal: {e}")),
        false => Reply::new(451, "4.3.0", format!("KumoMTA internal: {e}")),
    }
}

impl TransportError {
    fn new(text: impl Into<String>) -> Self {
        TransportError { reply: Reply::new(421, "4.4.2", format!("KumoMTA internal: {}", text.into())) }
    }
}

/// What the server said to one message, per recipient.
#[derive(Debug, Clone)]
pub struct MessageResult {
    /// Each recipient and the reply that decides its fate.
    pub recipients: Vec<(EnvelopeAddress, Reply, &'static str)>,
}

/// An open SMTP connection.
pub struct Connection {
    stream: Box<dyn Stream>,
    reader: ReplyReader,
    /// The host's name (for logs).
    pub host: String,
    /// The host's address.
    pub addr: SocketAddr,
    pipelining: bool,
    /// TLS is active: (cipher suite, protocol version).
    pub tls: Option<(String, String)>,
    needs_rset: bool,
    starttls_offered: bool,
    /// Messages sent on this connection.
    pub deliveries: usize,
    /// For `trace-smtp-client`: this connection's id, its ready queue, and the recipient
    /// domains sent on it so far.
    trace_id: String,
    queue: String,
    domains: Vec<String>,
}

/// Where to connect from and what to call ourselves.
pub struct ConnectParams<'a> {
    /// Egress path settings.
    pub path: &'a EgressPathConfig,
    /// EHLO name.
    pub ehlo_domain: &'a str,
    /// Local address to bind.
    pub source_address: Option<IpAddr>,
    /// The ready queue connecting (for traces)...
    pub queue: &'a str,
    /// ...and the recipient domains of the mail waiting in it.
    pub domains: Vec<String>,
}

impl Connection {
    /// Publishes a trace event for `trace-smtp-client`, when someone listens.
    fn trace(&self, kind: &'static str, data: impl FnOnce() -> String) {
        crate::trace::client().publish(|| {
            let domain = format!("{} {} {}", self.queue, self.host, self.domains.join(","));
            crate::trace::event(&self.trace_id, &self.addr.to_string(), kind, data(), domain)
        });
    }

    /// Reads one whole reply within `timeout` (a server trickling a byte at a time gets
    /// the same time as one sending the reply at once).
    async fn read_reply(&mut self, timeout: Duration, what: &str) -> Result<Reply, TransportError> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            if let Some(r) = self.reader.next_reply() {
                let r = r.map_err(|e| TransportError::new(format!("invalid reply to {what}: {e:?}")))?;
                self.trace("recv", || {
                    let mut out = vec![];
                    r.write_to(&mut out);
                    crate::trace::text(&out)
                });
                return Ok(r);
            }
            let n = match tokio::time::timeout_at(deadline, self.stream.read(&mut buf)).await {
                Ok(Ok(0)) => {
                    return Err(TransportError::new(format!("connection closed by {} waiting for {what}", self.host)));
                }
                Ok(Ok(n)) => n,
                Ok(Err(e)) => return Err(TransportError::new(format!("reading {what} reply from {}: {e}", self.host))),
                Err(_) => {
                    return Err(TransportError::new(format!(
                        "timed out after {timeout:?} waiting for {what} from {}",
                        self.host
                    )));
                }
            };
            self.reader.push(&buf[..n]);
        }
    }

    /// True when the server has sent input that no command asked for: buffered beyond
    /// the replies read, or waiting on the socket now (polled once, without waiting). A
    /// close or a read error is not input; it surfaces at the next command.
    async fn unsolicited_input(&mut self) -> bool {
        if self.reader.has_pending() {
            return true;
        }
        let mut buf = [0u8; 1024];
        use futures::FutureExt;
        match self.stream.read(&mut buf).now_or_never() {
            Some(Ok(n)) if n > 0 => {
                self.reader.push(&buf[..n]);
                true
            }
            _ => false,
        }
    }

    /// Fails on unsolicited input: every later reply would be matched to the wrong command
    /// (a refusal credited to the next message as a delivery), so the connection is given
    /// up and what is in flight is retried.
    async fn ensure_quiet(&mut self, after: &str) -> Result<(), TransportError> {
        if !self.unsolicited_input().await {
            return Ok(());
        }
        Err(TransportError::new(format!(
            "{} sent input no command asked for (after {after}); its replies can no longer be matched to commands",
            self.host
        )))
    }

    async fn write(&mut self, bytes: &[u8], timeout: Duration, what: &str) -> Result<(), TransportError> {
        if crate::trace::client().active() {
            if what == "message data" {
                self.trace("send", || format!("(message data: {} bytes)", bytes.len()));
            } else {
                for line in bytes.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    let domain = String::from_utf8_lossy(line).to_ascii_lowercase();
                    if let Some(d) = domain.strip_prefix("rcpt to:").and_then(|a| a.split('@').nth(1)) {
                        let d = d.trim_end_matches(['>', '\r']).split('>').next().unwrap_or_default().to_string();
                        if !self.domains.contains(&d) {
                            self.domains.push(d);
                        }
                    }
                }
                self.trace("send", || {
                    bytes
                        .split(|b| *b == b'\n')
                        .filter(|l| !l.is_empty())
                        .map(crate::trace::command_text)
                        .collect::<Vec<_>>()
                        .join("\n")
                });
            }
        }
        match tokio::time::timeout(timeout, self.stream.write_all(bytes)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(TransportError::new(format!("writing {what} to {}: {e}", self.host))),
            Err(_) => Err(TransportError::new(format!("timed out writing {what} to {}", self.host))),
        }
    }

    /// Sends one command and reads its reply; nothing else may be waiting before or after.
    async fn command(&mut self, line: &str, timeout: Duration) -> Result<Reply, TransportError> {
        self.ensure_quiet(line).await?;
        self.write(format!("{line}\r\n").as_bytes(), timeout, line).await?;
        let reply = self.read_reply(timeout, line).await?;
        // more than one reply to one command
        if self.reader.has_pending() {
            self.ensure_quiet(line).await?;
        }
        Ok(reply)
    }

    /// Connects, reads the banner, says EHLO and negotiates STARTTLS. An error reply at
    /// banner, EHLO or STARTTLS comes back as `Err(reply)` in the transport error.
    pub async fn open(host: &str, addr: SocketAddr, params: &ConnectParams<'_>) -> Result<Connection, TransportError> {
        let path = params.path;
        let socket = if addr.is_ipv4() { TcpSocket::new_v4() } else { TcpSocket::new_v6() }
            .map_err(|e| TransportError::new(format!("socket: {e}")))?;
        if let Some(src) = params.source_address {
            socket
                .bind(SocketAddr::new(src, 0))
                .map_err(|e| TransportError::new(format!("binding source address {src}: {e}")))?;
        }
        let tcp: TcpStream = match tokio::time::timeout(path.connect_timeout, socket.connect(addr)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => return Err(TransportError::new(format!("failed to connect to {host} ({addr}): {e}"))),
            Err(_) => return Err(TransportError::new(format!("timed out connecting to {host} ({addr})"))),
        };
        let _ = tcp.set_nodelay(true);
        let mut conn = Connection {
            stream: Box::new(tcp),
            reader: ReplyReader::default(),
            host: host.to_string(),
            addr,
            pipelining: false,
            tls: None,
            needs_rset: false,
            starttls_offered: false,
            deliveries: 0,
            trace_id: uuid::Uuid::new_v4().to_string(),
            queue: params.queue.to_string(),
            domains: params.domains.clone(),
        };
        tracing::debug!("smtp client: connected to {host} ({addr}) for {}", params.queue);
        conn.trace("connect", || {
            format!("to {host} from {}", params.source_address.map(|a| a.to_string()).unwrap_or_else(|| "any".into()))
        });
        let banner = conn.read_reply(path.banner_timeout, "banner").await?;
        if banner.code != 220 {
            return Err(TransportError { reply: banner });
        }
        conn.hello(params).await?;
        conn.starttls(params).await?;
        Ok(conn)
    }

    async fn hello(&mut self, params: &ConnectParams<'_>) -> Result<(), TransportError> {
        let timeout = params.path.ehlo_timeout;
        let ehlo = self.command(&format!("EHLO {}", params.ehlo_domain), timeout).await?;
        let caps: Vec<String> = if ehlo.code == 250 {
            ehlo.text.lines().skip(1).map(|l| l.trim().to_ascii_uppercase()).collect()
        } else {
            let helo = self.command(&format!("HELO {}", params.ehlo_domain), timeout).await?;
            if helo.code != 250 {
                return Err(TransportError { reply: helo });
            }
            vec![]
        };
        self.pipelining = params.path.enable_pipelining && caps.iter().any(|c| c == "PIPELINING");
        self.needs_rset = false;
        if self.tls.is_none() {
            self.starttls_offered = caps.iter().any(|c| c == "STARTTLS");
        }
        Ok(())
    }

    async fn starttls(&mut self, params: &ConnectParams<'_>) -> Result<(), TransportError> {
        let mode = params.path.enable_tls;
        if mode == Tls::Disabled {
            return Ok(());
        }
        if !self.starttls_offered {
            if mode.required() {
                return Err(TransportError {
                    reply: Reply::new(
                        451,
                        "4.7.10",
                        format!("KumoMTA internal: TLS is required but {} does not offer STARTTLS", self.host),
                    ),
                });
            }
            return Ok(());
        }
        // not `command`: bytes after the 220 are an injection attempt, discarded below
        self.ensure_quiet("STARTTLS").await?;
        self.write(b"STARTTLS\r\n", params.path.starttls_timeout, "STARTTLS").await?;
        let r = self.read_reply(params.path.starttls_timeout, "STARTTLS").await?;
        if r.code != 220 {
            if mode.required() {
                return Err(TransportError { reply: r });
            }
            return Ok(());
        }
        let dropped = self.reader.discard();
        if dropped > 0 {
            tracing::warn!("{}: discarded {dropped} plaintext bytes received after STARTTLS", self.host);
        }
        let name = rustls::pki_types::ServerName::try_from(self.host.trim_matches(['[', ']']).to_string())
            .map_err(|e| TransportError::new(format!("invalid TLS server name {}: {e}", self.host)))?;
        let connector = tls::connector(mode.insecure());
        let plain = std::mem::replace(&mut self.stream, Box::new(tokio::io::duplex(1).0));
        let handshake = tokio::time::timeout(params.path.starttls_timeout, connector.connect(name, plain)).await;
        match handshake {
            Ok(Ok(tls)) => {
                let (_, session) = tls.get_ref();
                let cipher = session.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite())).unwrap_or_default();
                let version = session.protocol_version().map(|v| format!("{v:?}")).unwrap_or_default();
                self.stream = Box::new(tls);
                self.tls = Some((cipher, version));
                self.hello(params).await
            }
            Ok(Err(e)) => Err(TransportError::new(format!("TLS handshake with {} failed: {e}", self.host))),
            Err(_) => Err(TransportError::new(format!("TLS handshake with {} timed out", self.host))),
        }
    }

    /// Sends one message; replies decide each recipient. A transport error means the
    /// connection is unusable and nothing is known of this message.
    pub async fn send(&mut self, message: &Message, path: &EgressPathConfig) -> Result<MessageResult, TransportError> {
        if self.needs_rset && path.enable_rset {
            let r = self.command("RSET", path.rset_timeout).await?;
            if r.code != 250 {
                return Err(TransportError { reply: r });
            }
        }
        self.needs_rset = true;
        let (mail, recipients) =
            message.with_envelope(|env| (format!("MAIL FROM:<{}>", env.sender.email()), env.recipients.clone()));
        let rcpts: Vec<String> = recipients.iter().map(|r| format!("RCPT TO:<{}>", r.email())).collect();
        let (mail_reply, rcpt_replies, data_reply) = if self.pipelining {
            let mut batch = format!("{mail}\r\n");
            for r in &rcpts {
                batch.push_str(r);
                batch.push_str("\r\n");
            }
            batch.push_str("DATA\r\n");
            self.ensure_quiet("the previous transaction").await?;
            self.write(batch.as_bytes(), path.mail_from_timeout, "MAIL/RCPT/DATA").await?;
            let mail_reply = self.read_reply(path.mail_from_timeout, "MAIL FROM").await?;
            let mut rcpt_replies = vec![];
            for _ in &rcpts {
                rcpt_replies.push(self.read_reply(path.rcpt_to_timeout, "RCPT TO").await?);
            }
            let data_reply = self.read_reply(path.data_timeout, "DATA").await?;
            // more replies than the group asked for: none of them can be trusted
            if self.reader.has_pending() {
                self.ensure_quiet("the pipelined MAIL/RCPT/DATA").await?;
            }
            (mail_reply, rcpt_replies, Some(data_reply))
        } else {
            let mail_reply = self.command(&mail, path.mail_from_timeout).await?;
            let mut rcpt_replies = vec![];
            if mail_reply.code == 250 {
                for r in &rcpts {
                    rcpt_replies.push(self.command(r, path.rcpt_to_timeout).await?);
                }
            }
            let any = rcpt_replies.iter().any(|r| r.code == 250 || r.code == 251);
            let data_reply = if any { Some(self.command("DATA", path.data_timeout).await?) } else { None };
            (mail_reply, rcpt_replies, data_reply)
        };
        let mut outcome: Vec<(EnvelopeAddress, Reply, &'static str)> = Vec::new();
        if mail_reply.code != 250 {
            if data_reply.as_ref().is_some_and(|d| d.code == 354) {
                self.write(b".\r\n", path.data_dot_timeout, "end of data").await?;
                self.read_reply(path.data_dot_timeout, "end of data").await?;
            }
            return Ok(MessageResult {
                recipients: recipients.into_iter().map(|r| (r, mail_reply.clone(), "MAIL FROM")).collect(),
            });
        }
        let mut accepted = vec![];
        for (r, reply) in recipients.iter().zip(rcpt_replies) {
            if reply.code == 250 || reply.code == 251 {
                accepted.push(r.clone());
            } else {
                outcome.push((r.clone(), reply, "RCPT TO"));
            }
        }
        let data_reply = match data_reply {
            Some(d) => d,
            None => return Ok(MessageResult { recipients: outcome }),
        };
        if accepted.is_empty() {
            if data_reply.code == 354 {
                self.write(b".\r\n", path.data_dot_timeout, "end of data").await?;
                self.read_reply(path.data_dot_timeout, "end of data").await?;
            }
            return Ok(MessageResult { recipients: outcome });
        }
        if data_reply.code != 354 {
            outcome.extend(accepted.into_iter().map(|r| (r, data_reply.clone(), "DATA")));
            return Ok(MessageResult { recipients: outcome });
        }
        let (prefix, body) = message.parts();
        let bytes = body.read().map_err(|e| TransportError { reply: body_unreadable(&e) })?;
        let wire = dot_stuff_parts(&[&prefix, &bytes]);
        self.ensure_quiet("DATA").await?;
        self.write(&wire, path.data_timeout, "message data").await?;
        let final_reply = self.read_reply(path.data_dot_timeout, "end of data").await?;
        // a reply beyond the one awaited makes this one uncertain too: retried, not trusted
        self.ensure_quiet("the end of data").await?;
        if final_reply.code == 250 {
            self.needs_rset = false;
        }
        self.deliveries += 1;
        outcome.extend(accepted.into_iter().map(|r| (r, final_reply.clone(), "DATA")));
        Ok(MessageResult { recipients: outcome })
    }

    /// Says QUIT (best effort) and closes.
    pub async fn quit(mut self, timeout: Duration) {
        self.trace("send", || "QUIT".into());
        self.trace("close", String::new);
        let _ = tokio::time::timeout(timeout, async {
            let _ = self.stream.write_all(b"QUIT\r\n").await;
            let mut buf = [0u8; 512];
            let _ = self.stream.read(&mut buf).await;
            let _ = self.stream.shutdown().await;
        })
        .await;
    }
}
