//! SMTP command parsing (RFC 5321 §4.1): one line in, one typed command or a reply-ready
//! error out. Rejects invalid UTF-8 and NULs before looking at the verb.

use super::address::EnvelopeAddress;
use super::reply::Reply;

/// An ESMTP parameter (`SIZE=1000`, `BODY=8BITMIME`, `SMTPUTF8`).
pub type Param = (String, Option<String>);

/// A parsed command.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `EHLO domain`
    Ehlo(String),
    /// `HELO domain`
    Helo(String),
    /// `MAIL FROM:<path> params`
    MailFrom(EnvelopeAddress, Vec<Param>),
    /// `RCPT TO:<path> params`
    RcptTo(EnvelopeAddress, Vec<Param>),
    /// `RCPT TO:<Postmaster>` (no domain; RFC 5321 §4.5.1 says it must be accepted)
    RcptToPostmaster(Vec<Param>),
    /// `DATA`
    Data,
    /// `RSET`
    Rset,
    /// `NOOP [text]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY text`
    Vrfy,
    /// `HELP [topic]`
    Help,
    /// `STARTTLS`
    StartTls,
    /// `AUTH mechanism [initial-response]` (the mechanism upper-cased).
    Auth(String, Option<String>),
}

/// Parses one command line (without its line ending).
pub fn parse(line: &[u8]) -> Result<Command, Reply> {
    if line.contains(&0) {
        return Err(Reply::new(501, "5.5.2", "NUL characters are not allowed in commands"));
    }
    let line = std::str::from_utf8(line).map_err(|_| Reply::new(501, "5.5.2", "command is not valid UTF-8"))?;
    let (verb, rest) = match line.find(' ') {
        Some(i) => (&line[..i], &line[i + 1..]),
        None => (line, ""),
    };
    let verb = verb.to_ascii_uppercase();
    let no_args = |cmd: Command| {
        if rest.trim().is_empty() {
            Ok(cmd)
        } else {
            Err(Reply::new(501, "5.5.4", format!("{verb} takes no arguments")))
        }
    };
    match verb.as_str() {
        "EHLO" | "HELO" => {
            let domain = rest.trim();
            if domain.is_empty() || domain.contains(char::is_whitespace) || domain.chars().any(char::is_control) {
                return Err(Reply::new(501, "5.5.4", format!("{verb} requires a domain or address literal")));
            }
            Ok(if verb == "EHLO" { Command::Ehlo(domain.to_string()) } else { Command::Helo(domain.to_string()) })
        }
        "MAIL" => {
            let (addr, params) = parse_path_arg(rest, "FROM:")?;
            Ok(Command::MailFrom(addr, params))
        }
        "RCPT" => {
            if let Some(params) = postmaster(rest) {
                return Ok(Command::RcptToPostmaster(params));
            }
            let (addr, params) = parse_path_arg(rest, "TO:")?;
            if addr.is_null() {
                return Err(Reply::new(501, "5.1.3", "null recipient is not allowed"));
            }
            Ok(Command::RcptTo(addr, params))
        }
        "DATA" => no_args(Command::Data),
        "RSET" => no_args(Command::Rset),
        "QUIT" => no_args(Command::Quit),
        "STARTTLS" => no_args(Command::StartTls),
        "NOOP" => Ok(Command::Noop),
        "VRFY" => Ok(Command::Vrfy),
        "HELP" => Ok(Command::Help),
        "AUTH" => {
            let mut words = rest.split_ascii_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some(m), initial, None) => Ok(Command::Auth(m.to_ascii_uppercase(), initial.map(str::to_string))),
                _ => Err(Reply::new(501, "5.5.4", "syntax: AUTH mechanism [initial-response]")),
            }
        }
        "" => Err(Reply::new(500, "5.5.2", "empty command")),
        _ => Err(Reply::new(500, "5.5.1", "command unrecognized")),
    }
}

/// The parameters of `TO:<Postmaster>` (any case), if that is the path.
fn postmaster(rest: &str) -> Option<Vec<Param>> {
    let after = rest.get(..3).filter(|k| k.eq_ignore_ascii_case("TO:")).map(|_| rest[3..].trim_start())?;
    after.get(..12).filter(|p| p.eq_ignore_ascii_case("<postmaster>"))?;
    Some(params(&after[12..]))
}

fn params(text: &str) -> Vec<Param> {
    text.split_whitespace()
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (k.to_ascii_uppercase(), Some(v.to_string())),
            None => (p.to_ascii_uppercase(), None),
        })
        .collect()
}

fn parse_path_arg(rest: &str, keyword: &str) -> Result<(EnvelopeAddress, Vec<Param>), Reply> {
    let syntax = || Reply::new(501, "5.5.4", format!("syntax: {keyword}<address>"));
    // `get`, not indexing: the keyword's length may end inside a multi-byte character
    // (cargo-fuzz found `RCPT TO\u{1bc}...` panicking here)
    if !rest.get(..keyword.len()).is_some_and(|head| head.eq_ignore_ascii_case(keyword)) {
        return Err(syntax());
    }
    let after = rest[keyword.len()..].trim_start();
    if !after.starts_with('<') {
        return Err(syntax());
    }
    let close = find_path_end(after).ok_or_else(syntax)?;
    let path = &after[..=close];
    let addr =
        EnvelopeAddress::parse_path(path).map_err(|e| Reply::new(501, "5.1.3", format!("invalid address: {}", e.0)))?;
    Ok((addr, params(&after[close + 1..])))
}

/// The index of the `>` closing a path, honouring quoted local parts.
fn find_path_end(s: &str) -> Option<usize> {
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_multibyte_character_where_the_keyword_ends_is_a_syntax_error() {
        let r = parse("RCPT TO\u{1bc}\"x\r\n".as_bytes()).unwrap_err();
        assert_eq!(r.code, 501);
        assert_eq!(parse("MAIL FR\u{e9}:<a@b>".as_bytes()).unwrap_err().code, 501);
    }

    fn addr(s: &str) -> EnvelopeAddress {
        EnvelopeAddress::parse(s).unwrap()
    }

    #[test]
    fn parses_commands() {
        let cases: Vec<(&[u8], Command)> = vec![
            (b"EHLO client.example", Command::Ehlo("client.example".into())),
            (b"helo [127.0.0.1]", Command::Helo("[127.0.0.1]".into())),
            (b"MAIL FROM:<a@b.example>", Command::MailFrom(addr("a@b.example"), vec![])),
            (
                b"mail from: <> SIZE=100 BODY=8BITMIME",
                Command::MailFrom(
                    EnvelopeAddress::null(),
                    vec![("SIZE".into(), Some("100".into())), ("BODY".into(), Some("8BITMIME".into()))],
                ),
            ),
            (
                b"RCPT TO:<\"x>y\"@c.example> NOTIFY=NEVER",
                Command::RcptTo(addr("\"x>y\"@c.example"), vec![("NOTIFY".into(), Some("NEVER".into()))]),
            ),
            (b"DATA", Command::Data),
            (b"NOOP anything", Command::Noop),
            (b"QUIT", Command::Quit),
            (b"STARTTLS", Command::StartTls),
            (b"RCPT TO:<Postmaster>", Command::RcptToPostmaster(vec![])),
            (b"rcpt to: <POSTMASTER> X=1", Command::RcptToPostmaster(vec![("X".into(), Some("1".into()))])),
        ];
        for (line, want) in cases {
            assert_eq!(parse(line).unwrap(), want, "{}", String::from_utf8_lossy(line));
        }
    }

    #[test]
    fn errors_carry_codes() {
        let code = |l: &[u8]| {
            let r = parse(l).unwrap_err();
            (r.code, r.enhanced.map(|e| e.to_string()).unwrap_or_default())
        };
        assert_eq!(code(b"\x80\x81"), (501, "5.5.2".into()));
        assert_eq!(code(b"MAIL FROM:<a\0b@c>"), (501, "5.5.2".into()));
        assert_eq!(code(b"BOGUS"), (500, "5.5.1".into()));
        assert_eq!(code(b"MAIL FROM:a@b"), (501, "5.5.4".into()));
        assert_eq!(code(b"RCPT TO:<>"), (501, "5.1.3".into()));
        assert_eq!(code(b"RCPT TO:<a@b@c>"), (501, "5.1.3".into()));
        assert_eq!(code(b"DATA now"), (501, "5.5.4".into()));
        assert_eq!(code(b"EHLO"), (501, "5.5.4".into()));
    }
}
