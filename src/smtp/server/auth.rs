//! SMTP AUTH (RFC 4954) with the PLAIN (RFC 4616) and LOGIN mechanisms, decided by the
//! policy's `smtp_server_auth_plain(authz, authc, password, conn_meta)`. Offered in EHLO
//! only after STARTTLS (the listener's `allow_auth_without_tls` allows it on plaintext for
//! trusted networks) and only when the policy handles the event. A success sets
//! `authn_id` and `authz_id` in the connection's meta (so the message's meta and its
//! records carry them); every failure counts toward the session's error budget, and the
//! third closes the connection. Credentials never reach a log line: a logged AUTH
//! command is cut to its mechanism, and SASL responses are never logged.

use super::session::{Next, Session};
use crate::policy::events::Event;
use crate::protocol::Reply;
use base64::Engine;

/// Failed attempts after which the connection is closed.
pub const MAX_AUTH_FAILURES: usize = 3;

/// Where a SASL exchange stands while the client owes a response line.
pub enum Sasl {
    /// PLAIN without an initial response: the next line is the response.
    Plain,
    /// LOGIN: the next line is the user name.
    LoginUser,
    /// LOGIN: the next line is the password.
    LoginPassword(String),
}

/// Mechanism names a log line may carry; any other word after AUTH could be a
/// credential typed in the wrong place.
const KNOWN_MECHANISMS: &[&str] =
    &["PLAIN", "LOGIN", "CRAM-MD5", "DIGEST-MD5", "XOAUTH2", "OAUTHBEARER", "GSSAPI", "NTLM"];

/// How a mechanism appears in log lines.
fn mechanism_for_log(m: &str) -> &str {
    if KNOWN_MECHANISMS.iter().any(|k| k.eq_ignore_ascii_case(m)) { m } else { "(unrecognized mechanism)" }
}

/// What may be logged of a command line: `AUTH <mechanism>` without what follows.
pub fn loggable(text: &str) -> String {
    let mut words = text.split_ascii_whitespace();
    match words.next() {
        Some(verb) if verb.eq_ignore_ascii_case("AUTH") => match words.next() {
            Some(m) => format!("{verb} {}", mechanism_for_log(m)),
            None => verb.to_string(),
        },
        _ => text.to_string(),
    }
}

fn decode(line: &str) -> Result<String, Reply> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(line.trim())
        .map_err(|_| Reply::new(501, "5.5.2", "cannot decode the response (base64 expected)"))?;
    String::from_utf8(bytes).map_err(|_| Reply::new(501, "5.5.2", "the response is not UTF-8"))
}

fn challenge(text: &str) -> Reply {
    Reply::plain(334, base64::engine::general_purpose::STANDARD.encode(text))
}

impl Session {
    /// True when EHLO offers AUTH on this connection now.
    pub fn auth_offered(&self) -> bool {
        (self.tls_active || self.settings.allow_auth_without_tls) && self.ctx.policy.handles(Event::SmtpServerAuthPlain)
    }

    /// `AUTH mechanism [initial-response]`.
    pub(super) async fn auth(&mut self, mechanism: String, initial: Option<String>, out: &mut Vec<u8>) -> Next {
        let logged = Some(format!("AUTH {}", mechanism_for_log(&mechanism)));
        let refuse = if self.authenticated.is_some() {
            Some(Reply::new(503, "5.5.1", "already authenticated"))
        } else if self.ehlo.is_none() {
            Some(Reply::new(503, "5.5.1", "EHLO first"))
        } else if self.tx.is_some() {
            Some(Reply::new(503, "5.5.1", "AUTH is not permitted during a mail transaction"))
        } else if !self.ctx.policy.handles(Event::SmtpServerAuthPlain) {
            Some(Reply::new(502, "5.5.1", "AUTH is not offered"))
        } else if !self.auth_offered() {
            // RFC 4954 §4 and RFC 3207: the credentials would travel in clear text
            Some(match self.has_tls() {
                true => Reply::new(530, "5.7.0", "Must issue a STARTTLS command first"),
                false => Reply::new(538, "5.7.11", "Encryption required for requested authentication mechanism"),
            })
        } else {
            None
        };
        if let Some(r) = refuse {
            self.reply(out, r, logged);
            return Next::Continue;
        }
        match (mechanism.as_str(), initial) {
            ("PLAIN", Some(response)) => self.plain(&response, out).await,
            ("PLAIN", None) => {
                self.sasl = Some(Sasl::Plain);
                challenge("").write_to(out);
                Next::Continue
            }
            ("LOGIN", Some(user)) => self.login_user(&user, out),
            ("LOGIN", None) => {
                self.sasl = Some(Sasl::LoginUser);
                challenge("Username:").write_to(out);
                Next::Continue
            }
            _ => {
                self.reply(out, Reply::new(504, "5.5.4", "unrecognized authentication type"), logged);
                Next::Continue
            }
        }
    }

    /// A response line of a SASL exchange (never logged).
    pub(super) async fn sasl_line(&mut self, state: Sasl, line: &[u8], out: &mut Vec<u8>) -> Next {
        let logged = Some("AUTH (response)".to_string());
        let text = String::from_utf8_lossy(line);
        if text.trim() == "*" {
            self.reply(out, Reply::new(501, "5.0.0", "authentication cancelled"), logged);
            return Next::Continue;
        }
        match state {
            Sasl::Plain => self.plain(&text, out).await,
            Sasl::LoginUser => self.login_user(&text, out),
            Sasl::LoginPassword(user) => match decode(&text) {
                Ok(password) => self.check(String::new(), user, password, out).await,
                Err(r) => {
                    self.reply(out, r, logged);
                    Next::Continue
                }
            },
        }
    }

    /// LOGIN's user name (base64): asks for the password next.
    fn login_user(&mut self, encoded: &str, out: &mut Vec<u8>) -> Next {
        match decode(encoded) {
            Ok(user) => {
                self.sasl = Some(Sasl::LoginPassword(user));
                challenge("Password:").write_to(out);
            }
            Err(r) => self.reply(out, r, Some("AUTH LOGIN".to_string())),
        }
        Next::Continue
    }

    /// A PLAIN response: `authz NUL authc NUL password`.
    async fn plain(&mut self, response: &str, out: &mut Vec<u8>) -> Next {
        let logged = Some("AUTH PLAIN".to_string());
        let decoded = match decode(response) {
            Ok(d) => d,
            Err(r) => {
                self.reply(out, r, logged);
                return Next::Continue;
            }
        };
        let mut parts = decoded.splitn(3, '\0');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(authz), Some(authc), Some(password)) => {
                self.check(authz.to_string(), authc.to_string(), password.to_string(), out).await
            }
            _ => {
                let r = Reply::new(501, "5.5.2", "PLAIN response must be authzid NUL authcid NUL password");
                self.reply(out, r, logged);
                Next::Continue
            }
        }
    }

    /// Asks the policy; an empty authz is the authc (as KumoMTA does).
    async fn check(&mut self, authz: String, authc: String, password: String, out: &mut Vec<u8>) -> Next {
        let authz = if authz.is_empty() { authc.clone() } else { authz };
        let logged = Some("AUTH".to_string());
        match self.ctx.policy.auth_plain(&authz, &authc, &password, &self.conn).await {
            Ok(true) => {
                self.conn.set("authn_id", authc.clone().into());
                self.conn.set("authz_id", authz.clone().into());
                self.authenticated = Some((authc, authz));
                self.reply(out, Reply::new(235, "2.7.0", "Authentication successful"), None);
                Next::Continue
            }
            Ok(false) => {
                self.auth_failures += 1;
                self.reply(out, Reply::new(535, "5.7.8", "Authentication credentials invalid"), logged);
                if self.auth_failures >= MAX_AUTH_FAILURES {
                    let r =
                        Reply::new(421, "4.7.0", format!("{} too many failed authentications", self.settings.hostname));
                    self.reply(out, r, None);
                    return Next::Close;
                }
                Next::Continue
            }
            Err(e) => self.policy_reply(out, e, "AUTH"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mechanism_of_an_auth_line_is_loggable() {
        assert_eq!(loggable("AUTH PLAIN AHVzZXIAc2VjcmV0"), "AUTH PLAIN");
        assert_eq!(loggable("auth login dXNlcg=="), "auth login");
        assert_eq!(loggable("AUTH"), "AUTH");
        // a password typed where the mechanism goes stays out of the log
        assert_eq!(loggable("AUTH hunter2"), "AUTH (unrecognized mechanism)");
        assert_eq!(loggable("MAIL FROM:<a@b>"), "MAIL FROM:<a@b>");
    }
}
