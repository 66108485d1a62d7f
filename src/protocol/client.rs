//! The client side of the protocol, sans-IO: reading server replies with bounded memory
//! (a hostile server cannot make us buffer without limit) and preparing message data for
//! the wire (CRLF line ends only, a dot stuffed after every line feed).

use super::reply::Reply;

/// Longest reply line accepted.
pub const MAX_REPLY_LINE: usize = 4096;
/// Most lines in one reply.
pub const MAX_REPLY_LINES: usize = 128;

/// A server reply that cannot be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReplyError {
    /// A line over [`MAX_REPLY_LINE`].
    LineTooLong,
    /// More than [`MAX_REPLY_LINES`] lines.
    TooManyLines,
    /// Not `ddd[ -]text`.
    Malformed(String),
}

/// Accumulates bytes from the server and yields complete replies.
#[derive(Default)]
pub struct ReplyReader {
    buf: Vec<u8>,
    lines: Vec<String>,
}

impl ReplyReader {
    /// Adds input.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Drops buffered input (after STARTTLS: nothing sent in plaintext may be read as a
    /// reply of the TLS session).
    pub fn discard(&mut self) -> usize {
        let n = self.buf.len();
        self.buf.clear();
        self.lines.clear();
        n
    }

    /// True when input is buffered that no reply read has taken yet (a complete or a
    /// partial line).
    pub fn has_pending(&self) -> bool {
        !self.buf.is_empty() || !self.lines.is_empty()
    }

    /// The next complete reply, if buffered.
    pub fn next_reply(&mut self) -> Option<Result<Reply, ReplyError>> {
        loop {
            let Some(i) = memchr::memchr(b'\n', &self.buf) else {
                if self.buf.len() > MAX_REPLY_LINE {
                    return Some(Err(ReplyError::LineTooLong));
                }
                return None;
            };
            if i > MAX_REPLY_LINE {
                return Some(Err(ReplyError::LineTooLong));
            }
            let raw: Vec<u8> = self.buf.drain(..=i).collect();
            let line = String::from_utf8_lossy(&raw).trim_end_matches(['\r', '\n']).to_string();
            let b = line.as_bytes();
            // RFC 5321 4.2: three digits, the first 2 to 5 (found by fuzzing: "750" passed)
            if b.len() < 3
                || !b[..3].iter().all(u8::is_ascii_digit)
                || !(b'2'..=b'5').contains(&b[0])
                || (b.len() > 3 && b[3] != b' ' && b[3] != b'-')
            {
                return Some(Err(ReplyError::Malformed(line)));
            }
            let more = b.len() > 3 && b[3] == b'-';
            self.lines.push(line);
            if self.lines.len() > MAX_REPLY_LINES {
                return Some(Err(ReplyError::TooManyLines));
            }
            if !more {
                let lines = std::mem::take(&mut self.lines);
                let code: u16 = lines[0][..3].parse().expect("digits");
                let text: Vec<&str> = lines.iter().map(|l| l.get(4..).unwrap_or("")).collect();
                // the enhanced code comes from the last line, as servers repeat it
                let last = Reply::from_code_and_text(code, text.last().copied().unwrap_or(""));
                let mut joined: Vec<String> = text[..text.len() - 1]
                    .iter()
                    .map(|t| match last.enhanced {
                        Some(e) => t.strip_prefix(&format!("{e} ")).unwrap_or(t).to_string(),
                        None => t.to_string(),
                    })
                    .collect();
                joined.push(last.text.clone());
                return Some(Ok(Reply { code, enhanced: last.enhanced, text: joined.join("\n") }));
            }
        }
    }
}

/// Message data as it goes on the wire after `354`: CRLF line ends only, a dot added to
/// every line that starts with one, and the `.` terminator.
pub fn dot_stuff(data: &[u8]) -> Vec<u8> {
    dot_stuff_parts(&[data])
}

/// [`dot_stuff`] over data kept in parts (a message's own prefix and its shared body),
/// without putting them together first. Runs between line ends are copied whole.
pub fn dot_stuff_parts(parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + len / 64 + 8);
    let mut at_line_start = true;
    // a CR at the end of one part whose LF starts the next
    let mut cr_pending = false;
    for part in parts {
        let mut rest: &[u8] = part;
        if cr_pending && rest.first() == Some(&b'\n') {
            rest = &rest[1..];
        }
        cr_pending = false;
        while !rest.is_empty() {
            if at_line_start && rest[0] == b'.' {
                out.push(b'.');
            }
            match memchr::memchr2(b'\r', b'\n', rest) {
                None => {
                    out.extend_from_slice(rest);
                    at_line_start = false;
                    break;
                }
                Some(i) => {
                    out.extend_from_slice(&rest[..i]);
                    out.extend_from_slice(b"\r\n");
                    at_line_start = true;
                    let skip = if rest[i] == b'\r' && rest.get(i + 1) == Some(&b'\n') { 2 } else { 1 };
                    cr_pending = rest[i] == b'\r' && i + 1 == rest.len();
                    rest = &rest[i + skip..];
                }
            }
        }
    }
    if !at_line_start {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(b".\r\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_parts_is_the_same_as_the_whole() {
        let whole = b"a\r\n.b\r\n\r\n..c\rd\n.\r\ne";
        for at in 0..=whole.len() {
            assert_eq!(dot_stuff_parts(&[&whole[..at], &whole[at..]]), dot_stuff(whole), "split at {at}");
        }
    }

    #[test]
    fn reply_codes_start_with_2_to_5() {
        for (line, ok) in [("750 no\r\n", false), ("150 no\r\n", false), ("250 ok\r\n", true), ("599 x\r\n", true)] {
            let mut r = ReplyReader::default();
            r.push(line.as_bytes());
            assert_eq!(r.next_reply().unwrap().is_ok(), ok, "{line}");
        }
    }

    #[test]
    fn reads_single_and_multiline_replies_in_any_chunking() {
        let input = b"250-mx.example\r\n250-PIPELINING\r\n250 STARTTLS\r\n550 5.1.1 no such user\r\n";
        for chunk in 1..input.len() {
            let mut r = ReplyReader::default();
            let mut got = vec![];
            for part in input.chunks(chunk) {
                r.push(part);
                while let Some(reply) = r.next_reply() {
                    got.push(reply.unwrap());
                }
            }
            assert_eq!(got.len(), 2);
            assert_eq!(got[0].text, "mx.example\nPIPELINING\nSTARTTLS");
            assert_eq!(got[1].to_line(), "550 5.1.1 no such user");
        }
    }

    #[test]
    fn hostile_replies_are_bounded() {
        let mut r = ReplyReader::default();
        r.push(&vec![b'2'; MAX_REPLY_LINE + 10]);
        assert_eq!(r.next_reply(), Some(Err(ReplyError::LineTooLong)));
        let mut r = ReplyReader::default();
        for _ in 0..=MAX_REPLY_LINES {
            r.push(b"250-more\r\n");
        }
        assert_eq!(r.next_reply(), Some(Err(ReplyError::TooManyLines)));
        let mut r = ReplyReader::default();
        r.push(b"hello there\r\n");
        assert!(matches!(r.next_reply(), Some(Err(ReplyError::Malformed(_)))));
    }

    #[test]
    fn dot_stuffing_and_line_ends() {
        assert_eq!(dot_stuff(b"a\r\n.b\r\n"), b"a\r\n..b\r\n.\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n.\r\n");
        // T-20: a dot after a bare LF is stuffed too, and bare LF/CR become CRLF
        assert_eq!(dot_stuff(b"x\n.\r\nMAIL FROM:<a@b>\r\n"), b"x\r\n..\r\nMAIL FROM:<a@b>\r\n.\r\n");
        assert_eq!(dot_stuff(b"x\r.y"), b"x\r\n..y\r\n.\r\n");
        assert_eq!(dot_stuff(b"no newline"), b"no newline\r\n.\r\n");
        assert_eq!(dot_stuff(b""), b".\r\n");
    }
}
