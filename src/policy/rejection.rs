//! The one typed refusal a policy can give (`kumo.reject` / `kumo.disconnect` in Lua,
//! `rejection` in WIT), and the error type every policy call returns.

use crate::protocol::{EnhancedCode, Reply};
use std::fmt;

/// What happens to the connection after a rejection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DisconnectMode {
    /// Send the reply, then close.
    ForceDisconnect,
    /// Send the reply, then a 421, then close.
    FollowWith421,
    /// Close only when the code is 421 (what `kumo.reject` does).
    If421,
}

impl DisconnectMode {
    /// Parses KumoMTA's names.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "ForceDisconnect" => Some(Self::ForceDisconnect),
            "FollowWith421" => Some(Self::FollowWith421),
            "If421" => Some(Self::If421),
            _ => None,
        }
    }
}

/// A policy refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// SMTP code (400–599).
    pub code: u16,
    /// Enhanced status code, when the text began with one.
    pub enhanced_code: Option<EnhancedCode>,
    /// Reply text.
    pub text: String,
    /// Connection handling.
    pub disconnect: DisconnectMode,
}

impl Rejection {
    /// Builds from a code and a text that may begin with an enhanced code
    /// (`kumo.reject(550, '5.7.1 no thanks')`).
    pub fn new(code: u16, text: &str, disconnect: DisconnectMode) -> Result<Self, String> {
        if !(400..=599).contains(&code) {
            return Err(format!("rejection code must be 4xx or 5xx, got {code}"));
        }
        let reply = Reply::from_code_and_text(code, text);
        Ok(Rejection { code, enhanced_code: reply.enhanced, text: reply.text, disconnect })
    }

    /// The SMTP reply.
    pub fn reply(&self) -> Reply {
        Reply { code: self.code, enhanced: self.enhanced_code, text: self.text.clone() }
    }

    /// True when the connection must close after the reply.
    pub fn closes_connection(&self) -> bool {
        match self.disconnect {
            DisconnectMode::ForceDisconnect | DisconnectMode::FollowWith421 => true,
            DisconnectMode::If421 => self.code == 421,
        }
    }

    /// True for a permanent (5xx) refusal.
    pub fn is_permanent(&self) -> bool {
        self.code >= 500
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.reply().to_line())
    }
}

impl std::error::Error for Rejection {}

/// Why a policy call did not produce a value; each kind has its own wire reply.
#[derive(Debug, Clone, thiserror::Error)]
pub enum PolicyError {
    /// The policy refused.
    #[error("rejected: {0}")]
    Rejected(Rejection),
    /// The handler failed (runtime error, trap, deadline): fail closed and temporary.
    #[error("{event} failed: {message}")]
    Failed {
        /// Event name.
        event: &'static str,
        /// What went wrong, naming the engine and handler.
        message: String,
    },
    /// The call was cancelled because the server is stopping.
    #[error("{event} cancelled: the server is stopping")]
    Cancelled {
        /// Event name.
        event: &'static str,
    },
}

impl PolicyError {
    /// The reply a client gets for this error during SMTP reception.
    pub fn reply(&self) -> Reply {
        match self {
            PolicyError::Rejected(r) => r.reply(),
            // a hook cancelled by the shutdown (T-54): come back later, elsewhere
            PolicyError::Cancelled { .. } => Reply::new(421, "4.3.2", "shutting down, policy call cancelled"),
            PolicyError::Failed { .. } => Reply::new(451, "4.3.0", "temporary policy failure, try again later"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_enhanced_code_from_text() {
        let r = Rejection::new(550, "5.7.1 go away", DisconnectMode::If421).unwrap();
        assert_eq!(r.reply().to_line(), "550 5.7.1 go away");
        assert!(!r.closes_connection());
        let r = Rejection::new(421, "bye", DisconnectMode::If421).unwrap();
        assert!(r.closes_connection());
        assert!(Rejection::new(250, "ok", DisconnectMode::If421).is_err());
        let f = PolicyError::Failed { event: "x", message: "boom".into() };
        assert_eq!(f.reply().to_line(), "451 4.3.0 temporary policy failure, try again later");
    }
}
