//! Envelope addresses (`MAIL FROM` / `RCPT TO`): parsing of the RFC 5321 path forms,
//! including the null sender, quoted local parts and source routes (which are dropped).

use std::fmt;

/// An envelope address: `user@domain`, or the null sender (empty).
#[derive(Clone, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct EnvelopeAddress {
    user: String,
    domain: String,
}

/// Why an address was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct AddressError(pub &'static str);

impl EnvelopeAddress {
    /// The null reverse path `<>`.
    pub fn null() -> Self {
        Self::default()
    }

    /// Parses `user@domain` (no angle brackets). Quoted local parts may hold `@`.
    pub fn parse(text: &str) -> Result<Self, AddressError> {
        if text.is_empty() {
            return Ok(Self::null());
        }
        if text.chars().any(|c| c.is_control() || c == ' ' && !text.starts_with('"')) {
            return Err(AddressError("address contains invalid characters"));
        }
        let at = if let Some(rest) = text.strip_prefix('"') {
            // quoted local part: find the closing quote, skipping escapes
            let mut escaped = false;
            let mut close = None;
            for (i, c) in rest.char_indices() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c == '"' {
                    close = Some(i + 1);
                    break;
                }
            }
            let close = close.ok_or(AddressError("unterminated quoted local part"))?;
            if text.as_bytes().get(close + 1) != Some(&b'@') {
                return Err(AddressError("missing domain"));
            }
            close + 1
        } else {
            let at = text.rfind('@').ok_or(AddressError("missing domain"))?;
            if text[..at].contains('@') {
                return Err(AddressError("too many @ signs"));
            }
            at
        };
        let (user, domain) = (&text[..at], &text[at + 1..]);
        if user.is_empty() || domain.is_empty() {
            return Err(AddressError("empty local part or domain"));
        }
        if !valid_domain(domain) {
            return Err(AddressError("invalid domain"));
        }
        Ok(EnvelopeAddress { user: user.to_string(), domain: domain.to_string() })
    }

    /// Parses a path as it appears after `FROM:`/`TO:`: `<...>`, with an optional
    /// source route (`<@a,@b:user@domain>`) that is ignored (RFC 5321 §3.6.1).
    pub fn parse_path(path: &str) -> Result<Self, AddressError> {
        let inner = path
            .strip_prefix('<')
            .and_then(|p| p.strip_suffix('>'))
            .ok_or(AddressError("address must be enclosed in <>"))?;
        let inner = if inner.starts_with('@') {
            let colon = inner.find(':').ok_or(AddressError("bad source route"))?;
            &inner[colon + 1..]
        } else {
            inner
        };
        Self::parse(inner)
    }

    /// True for the null sender.
    pub fn is_null(&self) -> bool {
        self.user.is_empty() && self.domain.is_empty()
    }

    /// The local part.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The domain as written.
    pub fn domain(&self) -> &str {
        &self.domain
    }

    /// `user@domain`, or empty for the null sender.
    pub fn email(&self) -> String {
        self.to_string()
    }
}

fn valid_domain(domain: &str) -> bool {
    if let Some(lit) = domain.strip_prefix('[') {
        return lit.ends_with(']') && lit.len() > 1;
    }
    domain.split('.').all(|label| {
        !label.is_empty() && label.len() <= 63 && label.chars().all(|c| c.is_alphanumeric() || c == '-' || c == '_')
    }) && domain.len() <= 255
}

impl fmt::Display for EnvelopeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_null() { Ok(()) } else { write!(f, "{}@{}", self.user, self.domain) }
    }
}

impl fmt::Debug for EnvelopeAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "<{self}>")
    }
}

impl From<EnvelopeAddress> for String {
    fn from(a: EnvelopeAddress) -> String {
        a.to_string()
    }
}

impl TryFrom<String> for EnvelopeAddress {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        EnvelopeAddress::parse(&s).map_err(|e| e.0.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_path_forms() {
        let a = EnvelopeAddress::parse_path("<user@example.com>").unwrap();
        assert_eq!((a.user(), a.domain()), ("user", "example.com"));
        assert!(EnvelopeAddress::parse_path("<>").unwrap().is_null());
        let routed = EnvelopeAddress::parse_path("<@relay.example,@b.example:u@dest.example>");
        assert_eq!(routed.unwrap().domain(), "dest.example");
        let quoted = EnvelopeAddress::parse_path("<\"a@b\"@ours.example>").unwrap();
        assert_eq!(quoted.domain(), "ours.example");
        assert_eq!(quoted.user(), "\"a@b\"");
        let percent = EnvelopeAddress::parse_path("<a%b@ours.example>").unwrap();
        assert_eq!(percent.domain(), "ours.example");
        assert_eq!(EnvelopeAddress::parse_path("<u@[10.0.0.1]>").unwrap().domain(), "[10.0.0.1]");
    }

    #[test]
    fn refuses_bad_forms() {
        for bad in ["user@example.com", "<a@b@c>", "<user>", "<@x>", "<u@>", "<u@bad..dom>", "<a\u{0}b@c>"] {
            assert!(EnvelopeAddress::parse_path(bad).is_err(), "{bad:?}");
        }
    }
}
