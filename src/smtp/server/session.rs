//! One SMTP session: the command state machine (EHLO/HELO, MAIL, RCPT, DATA, RSET, NOOP,
//! QUIT, VRFY, HELP, STARTTLS, AUTH in `super::auth`) over any `AsyncRead + AsyncWrite` stream. Replies to
//! pipelined commands are written in order, once the input buffer is drained. After
//! STARTTLS the plaintext buffer is discarded and the session starts over (RFC 3207).

use super::ServerContext;
use super::auth::{self, Sasl};
use super::{header_limits, reception};
use crate::config::cidr::CidrSet;
use crate::config::listener::ListenerSettings;
use crate::logs::{LogRecord, PeerAddress, RecordType, Response};
use crate::message::EnvelopeAddress;
use crate::policy::{ConnMeta, PolicyError};
use crate::protocol::{Command, DataReceiver, Line, LineSplitter, Reply, command};
use crate::spool::SpoolError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

/// Consecutive error replies before the session is closed.
const MAX_ERRORS: usize = 20;

/// `452 4.5.3 too many recipients` replies not counted as errors (Postfix's
/// `smtpd_recipient_overshoot_limit`).
const MAX_EXCESS_RECIPIENTS: usize = 1000;

/// Checks `MAIL FROM` parameters: `SIZE=<digits>`, `BODY=7BIT|8BITMIME`, `SMTPUTF8`;
/// returns the declared size. Anything else is `555 5.5.4` (RFC 5321 §4.1.1.11).
fn mail_params(params: &[command::Param]) -> Result<Option<u64>, Reply> {
    let bad = |what: String| Err(Reply::new(555, "5.5.4", what));
    let mut size = None;
    for (name, value) in params {
        match (name.as_str(), value.as_deref()) {
            ("SIZE", Some(v)) if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) => {
                size = Some(v.parse::<u64>().unwrap_or(u64::MAX));
            }
            ("SIZE", v) => return bad(format!("SIZE={} is not a number of octets", v.unwrap_or(""))),
            ("BODY", Some(v)) if v.eq_ignore_ascii_case("7BIT") || v.eq_ignore_ascii_case("8BITMIME") => {}
            ("BODY", v) => return bad(format!("BODY={} is not supported (7BIT, 8BITMIME)", v.unwrap_or(""))),
            ("SMTPUTF8", None) => {}
            (other, _) => return bad(format!("MAIL FROM parameter {other} not recognized")),
        }
    }
    Ok(size)
}

/// The open transaction.
pub(super) struct Transaction {
    pub sender: EnvelopeAddress,
    pub recipients: Vec<EnvelopeAddress>,
}

/// What one read from the client brought.
enum Read {
    /// Bytes (0 at end of stream).
    Bytes(usize),
    /// Nothing within `client_timeout`.
    Idle,
    /// The session reached `max_session_duration`.
    Expired,
}

/// One read, bounded by `client_timeout` and by the session's `deadline`
/// (`max_session_duration`).
async fn read_some<S>(
    stream: &mut S,
    buf: &mut [u8],
    client_timeout: Duration,
    deadline: Instant,
) -> std::io::Result<Read>
where
    S: AsyncRead + Unpin,
{
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Ok(Read::Expired);
    }
    match tokio::time::timeout(client_timeout.min(left), stream.read(buf)).await {
        Ok(r) => Ok(Read::Bytes(r?)),
        Err(_) if Instant::now() >= deadline => Ok(Read::Expired),
        Err(_) => Ok(Read::Idle),
    }
}

/// What the session does after a command.
pub(super) enum Next {
    Continue,
    Data,
    StartTls,
    Close,
}

/// Session state.
pub(super) struct Session {
    pub ctx: Arc<ServerContext>,
    pub listener: String,
    pub settings: ListenerSettings,
    relay: CidrSet,
    pub conn: ConnMeta,
    pub peer: SocketAddr,
    pub session_id: String,
    pub ehlo: Option<String>,
    pub tls_active: bool,
    tls: Option<TlsAcceptor>,
    pub tx: Option<Transaction>,
    /// A SASL exchange waiting for the client's response line.
    pub(super) sasl: Option<Sasl>,
    /// (authn_id, authz_id) after a successful AUTH.
    pub(super) authenticated: Option<(String, String)>,
    pub(super) auth_failures: usize,
    messages: usize,
    errors: usize,
    excess_recipients: usize,
    deadline: Instant,
    shutdown: tokio::sync::watch::Receiver<bool>,
}

impl Session {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        ctx: Arc<ServerContext>,
        listener: String,
        settings: ListenerSettings,
        conn: ConnMeta,
        peer: SocketAddr,
        tls: Option<TlsAcceptor>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Self {
        Session {
            ctx,
            listener,
            relay: settings.relay_set(),
            deadline: Instant::now() + settings.max_session_duration,
            settings,
            conn,
            peer,
            session_id: uuid::Uuid::new_v4().to_string(),
            ehlo: None,
            tls_active: false,
            tls,
            tx: None,
            sasl: None,
            authenticated: None,
            auth_failures: 0,
            messages: 0,
            errors: 0,
            excess_recipients: 0,
            shutdown,
        }
    }

    /// Runs the session to its end, upgrading to TLS when asked.
    pub async fn run<S>(mut self, stream: S, banner: Reply)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        self.trace("connect", || format!("session on {}", self.listener));
        tracing::debug!("session {} from {} on {}: started", self.session_id, self.peer, self.listener);
        self.run_inner(stream, banner).await;
        tracing::debug!("session {} from {}: ended after {} message(s)", self.session_id, self.peer, self.messages);
        self.trace("close", String::new);
    }

    /// Publishes a trace event for `trace-smtp-server`, when someone listens.
    fn trace(&self, kind: &'static str, data: impl FnOnce() -> String) {
        crate::trace::server().publish(|| {
            let domain = self.ehlo.clone().unwrap_or_default();
            crate::trace::event(&self.session_id, &self.peer.to_string(), kind, data(), domain)
        });
    }

    /// Writes `out` to the client (and to a listening trace).
    async fn flush<S: AsyncWrite + Unpin>(&self, stream: &mut S, out: &[u8]) -> std::io::Result<()> {
        self.trace("send", || crate::trace::text(out));
        stream.write_all(out).await
    }

    async fn run_inner<S>(&mut self, stream: S, banner: Reply)
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let upgrade = match self.drive(stream, Some(banner)).await {
            Ok(Some(plain)) => plain,
            Ok(None) => return,
            Err(e) => {
                tracing::debug!("session {} with {}: {e}", self.session_id, self.peer);
                return;
            }
        };
        let Some(acceptor) = self.tls.clone() else {
            return;
        };
        // the handshake gets client_timeout, and never more than the session has left
        let limit = self.settings.client_timeout.min(self.deadline.saturating_duration_since(Instant::now()));
        let handshake = match tokio::time::timeout(limit, acceptor.accept(upgrade)).await {
            Ok(h) => h,
            Err(_) => {
                tracing::info!("TLS handshake with {} took longer than {limit:?}; disconnected", self.peer);
                return;
            }
        };
        match handshake {
            Ok(tls) => {
                self.tls_active = true;
                self.ehlo = None;
                self.tx = None;
                // RFC 3207 §4.2: nothing learnt before TLS carries over
                self.authenticated = None;
                self.sasl = None;
                let (_, conn) = tls.get_ref();
                if let Some(suite) = conn.negotiated_cipher_suite() {
                    self.conn.set("tls_cipher", format!("{:?}", suite.suite()).into());
                }
                if let Some(v) = conn.protocol_version() {
                    self.conn.set("tls_protocol_version", format!("{v:?}").into());
                }
                if let Err(e) = self.drive(tls, None).await {
                    tracing::debug!("session {} with {} (TLS): {e}", self.session_id, self.peer);
                }
            }
            Err(e) => tracing::debug!("TLS handshake with {} failed: {e}", self.peer),
        }
    }

    /// Reads commands and writes replies until the session ends; returns the stream when
    /// STARTTLS was accepted.
    async fn drive<S>(&mut self, mut stream: S, banner: Option<Reply>) -> std::io::Result<Option<S>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let mut lines = LineSplitter::new(self.settings.line_length_hard_limit);
        let mut out = Vec::with_capacity(1024);
        let mut buf = vec![0u8; (self.settings.data_buffer_size as usize).clamp(4096, 1 << 20)];
        if let Some(b) = banner {
            b.write_to(&mut out);
        }
        loop {
            while let Some(line) = lines.next_line() {
                let next = match line {
                    Line::TooLong => {
                        self.reply(&mut out, Reply::new(500, "5.5.2", "line too long"), None);
                        Next::Continue
                    }
                    Line::Complete(l) => {
                        // a SASL exchange's response lines are credentials
                        let hidden = self.sasl.is_some();
                        self.trace("recv", || match hidden {
                            true => "(SASL response hidden)".into(),
                            false => crate::trace::command_text(&l),
                        });
                        self.command(&l, &mut out).await
                    }
                };
                match next {
                    Next::Continue => {}
                    Next::Close => {
                        self.flush(&mut stream, &out).await?;
                        let _ = stream.shutdown().await;
                        return Ok(None);
                    }
                    Next::StartTls => {
                        self.flush(&mut stream, &out).await?;
                        // RFC 3207: whatever the client sent after STARTTLS is discarded
                        let injected = lines.take_rest();
                        if !injected.is_empty() {
                            tracing::warn!(
                                "{}: discarded {} bytes sent after STARTTLS before the handshake",
                                self.peer,
                                injected.len()
                            );
                        }
                        return Ok(Some(stream));
                    }
                    Next::Data => {
                        self.flush(&mut stream, &out).await?;
                        out.clear();
                        let rest = lines.take_rest();
                        let leftover = match self.receive_data(&mut stream, rest, &mut buf, &mut out).await? {
                            Some(l) => l,
                            None => return Ok(None),
                        };
                        lines.push(&leftover);
                    }
                }
                if self.errors >= MAX_ERRORS {
                    Reply::new(421, "4.7.0", format!("{} too many errors, closing connection", self.settings.hostname))
                        .write_to(&mut out);
                    self.flush(&mut stream, &out).await?;
                    return Ok(None);
                }
            }
            if !out.is_empty() {
                self.flush(&mut stream, &out).await?;
                out.clear();
            }
            let n = tokio::select! {
                r = read_some(&mut stream, &mut buf, self.settings.client_timeout, self.deadline) => match r? {
                    Read::Bytes(n) => n,
                    Read::Idle => {
                        let r = Reply::new(421, "4.4.2", format!("{} idle too long, closing connection", self.settings.hostname));
                        self.reply(&mut out, r, None);
                        self.flush(&mut stream, &out).await?;
                        return Ok(None);
                    }
                    Read::Expired => {
                        self.reply(&mut out, self.expired_reply(), None);
                        self.flush(&mut stream, &out).await?;
                        return Ok(None);
                    }
                },
                _ = self.shutdown.changed() => {
                    Reply::new(421, "4.3.2", format!("{} shutting down", self.settings.hostname)).write_to(&mut out);
                    self.flush(&mut stream, &out).await?;
                    return Ok(None);
                }
            };
            if n == 0 {
                return Ok(None);
            }
            lines.push(&buf[..n]);
        }
    }

    /// Reads DATA content, processes the message, and returns the bytes that followed the
    /// terminator (pipelined commands), or `None` when the connection ended.
    async fn receive_data<S>(
        &mut self,
        stream: &mut S,
        first: Vec<u8>,
        buf: &mut [u8],
        out: &mut Vec<u8>,
    ) -> std::io::Result<Option<Vec<u8>>>
    where
        S: AsyncRead + AsyncWrite + Unpin + Send,
    {
        let s = &self.settings;
        let mut rx = DataReceiver::new(s.max_message_size as usize, s.line_length_hard_limit, s.invalid_line_endings);
        let mut pending = first;
        let leftover = loop {
            if let Some(n) = rx.feed(&pending) {
                break pending.split_off(n);
            }
            let n = match read_some(stream, buf, self.settings.client_timeout, self.deadline).await? {
                Read::Bytes(n) => n,
                Read::Idle => {
                    let r = Reply::new(421, "4.4.2", format!("{} timed out waiting for data", self.settings.hostname));
                    self.reply(out, r, Some("DATA".into()));
                    self.flush(stream, out).await?;
                    return Ok(None);
                }
                Read::Expired => {
                    self.reply(out, self.expired_reply(), Some("DATA".into()));
                    self.flush(stream, out).await?;
                    return Ok(None);
                }
            };
            if n == 0 {
                return Ok(None);
            }
            pending = buf[..n].to_vec();
        };
        let finished = rx.finish();
        if let Ok(body) = &finished {
            self.trace("recv", || format!("(message data: {} bytes)", body.len()));
        }
        let reply = match finished {
            Ok(body) => match header_limits::check(&body, &self.settings) {
                Some(refusal) => {
                    self.tx = None;
                    refusal
                }
                None => reception::accept(self, body).await,
            },
            Err(e) => {
                self.tx = None;
                match e {
                    crate::protocol::DataError::TooBig => {
                        Reply::new(552, "5.3.4", "message size exceeds fixed maximum message size")
                    }
                    crate::protocol::DataError::LineTooLong => Reply::new(500, "5.5.2", "line too long"),
                    crate::protocol::DataError::InvalidLineEndings => {
                        Reply::new(550, "5.5.2", "message data must use CRLF line endings (bare CR or LF found)")
                    }
                    crate::protocol::DataError::Nul => {
                        Reply::new(550, "5.6.0", "message data must not contain NUL characters")
                    }
                }
            }
        };
        self.reply(out, reply, Some("DATA".into()));
        Ok(Some(leftover))
    }

    fn expired_reply(&self) -> Reply {
        Reply::new(
            421,
            "4.3.2",
            format!("{} session exceeded max_session_duration, closing connection", self.settings.hostname),
        )
    }

    /// Records a reply: writes it, counts errors, logs a Rejection for 4xx/5xx.
    pub fn reply(&mut self, out: &mut Vec<u8>, reply: Reply, command: Option<String>) {
        reply.write_to(out);
        if reply.is_error() {
            self.errors += 1;
            self.log_rejection(&reply, command);
        } else {
            self.errors = 0;
        }
    }

    fn log_rejection(&self, reply: &Reply, command: Option<String>) {
        let mut r = LogRecord::new(RecordType::Rejection, Response::from_reply(reply, command));
        if let Some(tx) = &self.tx {
            r.sender = tx.sender.email();
        }
        r.peer_address = Some(self.peer_address());
        r.meta = self.conn.snapshot();
        r.reception_protocol = Some("ESMTP".into());
        r.session_id = Some(self.session_id.clone());
        self.ctx.logs.log(r, None);
    }

    pub fn peer_address(&self) -> PeerAddress {
        PeerAddress { name: self.ehlo.clone().unwrap_or_default(), addr: self.peer.ip().to_string() }
    }

    /// True when the listener can do STARTTLS.
    pub(super) fn has_tls(&self) -> bool {
        self.tls.is_some()
    }

    pub(super) fn policy_reply(&mut self, out: &mut Vec<u8>, err: PolicyError, command: &str) -> Next {
        let reply = err.reply();
        if matches!(err, PolicyError::Cancelled { .. }) {
            // the hook was cancelled by the shutdown (T-54): 421 and close
            self.reply(out, reply, Some(command.to_string()));
            return Next::Close;
        }
        self.reply(out, reply, Some(command.to_string()));
        match err {
            PolicyError::Rejected(r) if r.closes_connection() => {
                if r.disconnect == crate::policy::DisconnectMode::FollowWith421 {
                    Reply::new(421, "4.3.2", format!("{} closing connection", self.settings.hostname)).write_to(out);
                }
                Next::Close
            }
            _ => Next::Continue,
        }
    }

    async fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Next {
        if let Some(state) = self.sasl.take() {
            return self.sasl_line(state, line, out).await;
        }
        // an AUTH line's credentials never reach a log record
        let text = auth::loggable(&String::from_utf8_lossy(line));
        let cmd = match command::parse(line) {
            Ok(c) => c,
            Err(reply) => {
                self.reply(out, reply, Some(text));
                return Next::Continue;
            }
        };
        let ok = |code: u16, enh: &str, t: &str| Reply::new(code, enh, t);
        match cmd {
            Command::Ehlo(domain) | Command::Helo(domain) => {
                let esmtp = line.len() >= 4 && line[..4].eq_ignore_ascii_case(b"EHLO");
                self.hello(domain, esmtp, out, &text).await
            }
            Command::MailFrom(sender, params) => self.mail_from(sender, params, out, &text).await,
            Command::RcptTo(_, params) | Command::RcptToPostmaster(params) if !params.is_empty() => {
                // no RCPT extension (DSN's NOTIFY/ORCPT) is offered
                let names: Vec<&str> = params.iter().map(|(k, _)| k.as_str()).collect();
                let r = Reply::new(555, "5.5.4", format!("RCPT TO parameters not recognized: {}", names.join(" ")));
                self.reply(out, r, Some(text));
                Next::Continue
            }
            Command::RcptTo(rcpt, _) => self.rcpt_to(rcpt, false, out, &text).await,
            Command::RcptToPostmaster(_) => {
                // RFC 5321 §4.5.1: accepted whatever the relay rules say, for this host
                match EnvelopeAddress::parse(&format!("postmaster@{}", self.settings.hostname)) {
                    Ok(postmaster) => self.rcpt_to(postmaster, true, out, &text).await,
                    Err(_) => {
                        let r = Reply::new(550, "5.1.1", "no postmaster address for this listener's hostname");
                        self.reply(out, r, Some(text));
                        Next::Continue
                    }
                }
            }
            Command::Data => {
                match &self.tx {
                    None => self.reply(out, Reply::new(503, "5.5.1", "MAIL FROM first"), Some(text)),
                    Some(tx) if tx.recipients.is_empty() => {
                        self.reply(out, Reply::new(503, "5.5.1", "RCPT TO first"), Some(text))
                    }
                    Some(_) => {
                        self.reply(out, Reply::plain(354, "Send message content; end with <CRLF>.<CRLF>"), None);
                        return Next::Data;
                    }
                }
                Next::Continue
            }
            Command::Rset => {
                self.tx = None;
                self.reply(out, ok(250, "2.0.0", "OK"), None);
                Next::Continue
            }
            Command::Noop => {
                self.reply(out, ok(250, "2.0.0", "OK"), None);
                Next::Continue
            }
            Command::Vrfy => {
                self.reply(
                    out,
                    ok(252, "2.5.0", "Cannot VRFY user, but will accept message and attempt delivery"),
                    None,
                );
                Next::Continue
            }
            Command::Help => {
                self.reply(
                    out,
                    ok(214, "2.0.0", "Commands: EHLO HELO MAIL RCPT DATA RSET NOOP QUIT VRFY HELP STARTTLS AUTH"),
                    None,
                );
                Next::Continue
            }
            Command::Quit => {
                self.reply(out, ok(221, "2.0.0", &format!("{} closing connection", self.settings.hostname)), None);
                Next::Close
            }
            Command::StartTls => {
                if self.tls_active {
                    self.reply(out, Reply::new(503, "5.5.1", "TLS is already active"), Some(text));
                    Next::Continue
                } else if self.tls.is_none() {
                    self.reply(out, Reply::new(454, "4.7.0", "TLS not available"), Some(text));
                    Next::Continue
                } else {
                    self.reply(out, ok(220, "2.0.0", "Ready to start TLS"), None);
                    Next::StartTls
                }
            }
            Command::Auth(mechanism, initial) => self.auth(mechanism, initial, out).await,
        }
    }

    async fn hello(&mut self, domain: String, esmtp: bool, out: &mut Vec<u8>, text: &str) -> Next {
        self.tx = None;
        self.conn.set("ehlo_domain", domain.clone().into());
        let mut extensions: Vec<String> = vec![
            "PIPELINING".into(),
            "ENHANCEDSTATUSCODES".into(),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            format!("SIZE {}", self.settings.max_message_size),
        ];
        if !self.tls_active && self.tls.is_some() {
            extensions.push("STARTTLS".into());
        }
        if self.auth_offered() && self.authenticated.is_none() {
            extensions.push("AUTH PLAIN LOGIN".into());
        }
        match self.ctx.policy.ehlo(&domain, &self.conn, &extensions).await {
            Ok(Some(replacement)) => extensions = replacement,
            Ok(None) => {}
            Err(e) => return self.policy_reply(out, e, text),
        }
        self.ehlo = Some(domain.clone());
        let mut lines = vec![format!("{} Hello {domain}", self.settings.hostname)];
        if esmtp {
            lines.extend(extensions);
        }
        self.reply(out, Reply::plain(250, lines.join("\n")), None);
        Next::Continue
    }

    async fn mail_from(
        &mut self,
        sender: EnvelopeAddress,
        params: Vec<command::Param>,
        out: &mut Vec<u8>,
        text: &str,
    ) -> Next {
        let refuse = if self.ehlo.is_none() {
            Some(Reply::new(503, "5.5.1", "EHLO or HELO first"))
        } else if self.tx.is_some() {
            Some(Reply::new(503, "5.5.1", "nested MAIL command"))
        } else if self.messages >= self.settings.max_messages_per_connection {
            Some(Reply::new(451, "4.5.3", "too many messages on this connection, reconnect and try again"))
        } else {
            match self.ctx.spool.accepting() {
                Err(SpoolError::LowSpace) => Some(Reply::new(452, "4.3.1", "insufficient system storage")),
                Err(_) => Some(Reply::new(451, "4.3.0", "spool is unavailable, try again later")),
                Ok(()) => None,
            }
        };
        let refuse = refuse.or_else(|| match mail_params(&params) {
            Err(r) => Some(r),
            Ok(Some(size)) if size > self.settings.max_message_size => {
                Some(Reply::new(552, "5.3.4", "message size exceeds fixed maximum message size"))
            }
            Ok(_) => None,
        });
        if let Some(r) = refuse {
            self.reply(out, r, Some(text.to_string()));
            return Next::Continue;
        }
        if let Err(e) = self.ctx.policy.mail_from(&sender, &self.conn).await {
            return self.policy_reply(out, e, text);
        }
        self.tx = Some(Transaction { sender, recipients: vec![] });
        self.reply(out, Reply::new(250, "2.1.0", "OK"), None);
        Next::Continue
    }

    async fn rcpt_to(&mut self, rcpt: EnvelopeAddress, postmaster: bool, out: &mut Vec<u8>, text: &str) -> Next {
        let Some(tx) = &self.tx else {
            self.reply(out, Reply::new(503, "5.5.1", "MAIL FROM first"), Some(text.to_string()));
            return Next::Continue;
        };
        if tx.recipients.len() >= self.settings.max_recipients_per_message {
            // the client sends the rest in another transaction: not an error to count
            // (as Postfix, up to a thousand of them)
            self.excess_recipients += 1;
            let r = Reply::new(452, "4.5.3", "too many recipients");
            if self.excess_recipients > MAX_EXCESS_RECIPIENTS {
                self.reply(out, r, Some(text.to_string()));
            } else {
                r.write_to(out);
                self.log_rejection(&r, Some(text.to_string()));
            }
            return Next::Continue;
        }
        let sender_domain = tx.sender.domain().to_ascii_lowercase();
        match self.relay_allowed(&sender_domain, &rcpt.domain().to_ascii_lowercase()).await {
            Ok(_) if postmaster => {}
            Ok(true) => {}
            Ok(false) => {
                self.reply(out, Reply::new(550, "5.7.1", "relaying not permitted"), Some(text.to_string()));
                return Next::Continue;
            }
            Err(e) => return self.policy_reply(out, e, text),
        }
        if let Err(e) = self.ctx.policy.rcpt_to(&rcpt, &self.conn).await {
            return self.policy_reply(out, e, text);
        }
        if let Some(tx) = self.tx.as_mut() {
            tx.recipients.push(rcpt);
        }
        self.reply(out, Reply::new(250, "2.1.5", "OK"), None);
        Next::Continue
    }

    /// KumoMTA's relay rule: the peer is in `relay_hosts`, or the recipient's listener
    /// domain has `relay_to` (or OOB/ARF handling), or the sender's listener domain lists
    /// the peer in `relay_from` or the session's authorization identity in
    /// `relay_from_authz`.
    pub async fn relay_allowed(&self, sender_domain: &str, rcpt_domain: &str) -> Result<bool, PolicyError> {
        let policy = &self.ctx.policy;
        let from = if sender_domain.is_empty() {
            None
        } else {
            policy.listener_domain(sender_domain, &self.listener, &self.conn).await?
        };
        let to = policy.listener_domain(rcpt_domain, &self.listener, &self.conn).await?;
        if self.relay.contains(self.peer.ip()) {
            return Ok(true);
        }
        use crate::config::storage::LogDisposition::Ignore;
        if let Some(to) = to
            && (to.relay_to || to.log_oob != Ignore || to.log_arf != Ignore)
        {
            return Ok(true);
        }
        if let Some(from) = from {
            if from.relay_from.set().contains(self.peer.ip()) {
                return Ok(true);
            }
            if let Some((_, authz)) = &self.authenticated
                && from.relay_from_authz.iter().any(|a| a == authz)
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Counts an accepted message.
    pub fn message_accepted(&mut self) {
        self.messages += 1;
    }
}
