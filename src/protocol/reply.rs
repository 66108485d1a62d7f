//! SMTP replies: code, enhanced status code and text, formatted on the wire as single or
//! multi-line replies.

use std::fmt;

/// The longest reply line RFC 5321 (4.5.3.1.5) allows, CRLF included.
pub const MAX_REPLY_LINE: usize = 512;

/// An SMTP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// Three-digit reply code.
    pub code: u16,
    /// Enhanced status code (`5.7.1`), if any.
    pub enhanced: Option<EnhancedCode>,
    /// Text; several lines become a multi-line reply.
    pub text: String,
}

/// An RFC 3463 enhanced status code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EnhancedCode {
    /// Class: 2, 4 or 5.
    pub class: u8,
    /// Subject.
    pub subject: u16,
    /// Detail.
    pub detail: u16,
}

impl EnhancedCode {
    /// Parses `x.y.z`.
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split('.');
        let class: u8 = parts.next()?.parse().ok()?;
        let subject: u16 = parts.next()?.parse().ok()?;
        let detail: u16 = parts.next()?.parse().ok()?;
        if parts.next().is_some() || !matches!(class, 2 | 4 | 5) || subject > 999 || detail > 999 {
            return None;
        }
        Some(EnhancedCode { class, subject, detail })
    }
}

impl fmt::Display for EnhancedCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.class, self.subject, self.detail)
    }
}

impl Reply {
    /// A reply with an enhanced code given as text (`"5.7.1"`).
    pub fn new(code: u16, enhanced: &str, text: impl Into<String>) -> Self {
        Reply { code, enhanced: EnhancedCode::parse(enhanced), text: text.into() }
    }

    /// A reply without an enhanced code.
    pub fn plain(code: u16, text: impl Into<String>) -> Self {
        Reply { code, enhanced: None, text: text.into() }
    }

    /// Splits `"5.7.1 text"` into an enhanced code and text when the text starts with one.
    pub fn from_code_and_text(code: u16, text: &str) -> Self {
        if let Some((first, rest)) = text.split_once(' ')
            && let Some(enh) = EnhancedCode::parse(first)
        {
            return Reply { code, enhanced: Some(enh), text: rest.to_string() };
        }
        if let Some(enh) = EnhancedCode::parse(text) {
            return Reply { code, enhanced: Some(enh), text: String::new() };
        }
        Reply { code, enhanced: None, text: text.to_string() }
    }

    /// True for 4xx and 5xx.
    pub fn is_error(&self) -> bool {
        self.code >= 400
    }

    /// Appends the wire form to `out`. Every line stays within RFC 5321's 512 octets
    /// (code, separator, enhanced code, text, CRLF): longer text continues on more lines,
    /// broken at a space or comma where there is one.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        let prefix = match self.enhanced {
            Some(e) => 4 + e.to_string().len() + 1,
            None => 4,
        };
        let room = MAX_REPLY_LINE - prefix - 2;
        let mut lines: Vec<String> = vec![];
        for line in if self.text.is_empty() { vec![""] } else { self.text.lines().collect() } {
            let mut rest = line.replace('\r', " ");
            while rest.len() > room {
                let mut cut = room;
                while !rest.is_char_boundary(cut) {
                    cut -= 1;
                }
                let at = rest[..cut].rfind([' ', ',']).map(|i| i + 1).filter(|i| *i > room / 2).unwrap_or(cut);
                lines.push(rest[..at].trim_end().to_string());
                rest = rest[at..].to_string();
            }
            lines.push(rest);
        }
        for (i, line) in lines.iter().enumerate() {
            let sep = if i + 1 == lines.len() { ' ' } else { '-' };
            match self.enhanced {
                Some(e) => out.extend_from_slice(format!("{}{sep}{e} {line}\r\n", self.code).as_bytes()),
                None => out.extend_from_slice(format!("{}{sep}{line}\r\n", self.code).as_bytes()),
            }
        }
    }

    /// The single-line text form used in logs (`"550 5.7.1 relaying not permitted"`).
    pub fn to_line(&self) -> String {
        let text = self.text.replace(['\r', '\n'], " ");
        match self.enhanced {
            Some(e) => format!("{} {e} {text}", self.code),
            None => format!("{} {text}", self.code),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_single_and_multi_line() {
        let mut out = vec![];
        Reply::new(550, "5.7.1", "relaying not permitted").write_to(&mut out);
        assert_eq!(out, b"550 5.7.1 relaying not permitted\r\n");
        out.clear();
        Reply::plain(250, "host\nPIPELINING\nSMTPUTF8").write_to(&mut out);
        assert_eq!(out, b"250-host\r\n250-PIPELINING\r\n250 SMTPUTF8\r\n");
    }

    #[test]
    fn long_text_continues_on_lines_of_at_most_512_octets() {
        let ids: Vec<String> = (0..1024).map(|i| format!("{i:032x}")).collect();
        let mut out = vec![];
        Reply::new(250, "2.0.0", format!("OK ids={}", ids.join(","))).write_to(&mut out);
        let text = String::from_utf8(out).unwrap();
        let lines: Vec<&str> = text.split_inclusive("\r\n").collect();
        assert!(lines.len() > 60);
        assert!(lines.iter().all(|l| l.len() <= 512), "{:?}", lines.iter().map(|l| l.len()).max());
        assert!(lines[..lines.len() - 1].iter().all(|l| l.starts_with("250-2.0.0 ")));
        assert!(lines.last().unwrap().starts_with("250 2.0.0 "));
        let rejoined: String = lines.iter().map(|l| l[10..].trim_end()).collect::<Vec<_>>().join("");
        assert_eq!(rejoined, format!("OK ids={}", ids.join(",")), "nothing lost at the breaks");
        let mut out = vec![];
        Reply::new(550, "5.7.1", "x".repeat(2000)).write_to(&mut out);
        assert!(String::from_utf8(out).unwrap().split_inclusive("\r\n").all(|l| l.len() <= 512));
    }

    #[test]
    fn splits_enhanced_code_from_text() {
        let r = Reply::from_code_and_text(451, "4.7.1 try later");
        assert_eq!(r.enhanced, EnhancedCode::parse("4.7.1"));
        assert_eq!(r.text, "try later");
        assert_eq!(Reply::from_code_and_text(550, "no").enhanced, None);
        assert_eq!(EnhancedCode::parse("6.1.1"), None);
    }
}
