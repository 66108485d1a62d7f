//! The DATA receiver: a streaming state machine that removes dot-stuffing, finds the
//! end of data (only `CRLF . CRLF` ends it; no other sequence ever does, so one DATA
//! never yields two messages), applies the `invalid_line_endings` rule and enforces the
//! size and line-length limits with bounded memory. The result is the same for any
//! chunking of the input.

use serde::{Deserialize, Serialize};

/// What to do with bare CR or LF in message content (KumoMTA `invalid_line_endings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum LineEndings {
    /// Reject the message.
    #[default]
    Deny,
    /// Accept it as received.
    Allow,
    /// Normalize bare CR and LF to CRLF.
    Fix,
}

/// Why received data is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataError {
    /// Larger than `max_message_size`.
    TooBig,
    /// A line longer than `line_length_hard_limit`.
    LineTooLong,
    /// Bare CR or LF under `Deny`.
    InvalidLineEndings,
    /// A NUL byte under `Deny` (under `Allow` and `Fix` NULs are removed: a server
    /// downstream that drops them could read `NUL . CRLF` as the end of data).
    Nul,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    LineStart,
    Dot,
    DotCr,
    Mid,
}

/// Receives DATA content.
#[derive(Debug)]
pub struct DataReceiver {
    max_size: usize,
    line_limit: usize,
    endings: LineEndings,
    body: Vec<u8>,
    state: State,
    prev_canonical: bool,
    cr_pending: bool,
    line_len: usize,
    too_big: bool,
    too_long: bool,
    bad_endings: bool,
    nul: bool,
    done: bool,
}

impl DataReceiver {
    /// A receiver positioned right after the `DATA` command's CRLF.
    pub fn new(max_size: usize, line_limit: usize, endings: LineEndings) -> Self {
        DataReceiver {
            max_size,
            line_limit,
            endings,
            body: Vec::with_capacity(max_size.min(16 * 1024)),
            state: State::LineStart,
            prev_canonical: true,
            cr_pending: false,
            line_len: 0,
            too_big: false,
            too_long: false,
            bad_endings: false,
            nul: false,
            done: false,
        }
    }

    /// Feeds input. Returns `Some(n)` once the terminator has been seen, where `n` is how
    /// many bytes of `input` belonged to the data (terminator included); the rest is the
    /// next command.
    pub fn feed(&mut self, input: &[u8]) -> Option<usize> {
        let mut i = 0;
        while i < input.len() {
            if self.done {
                return Some(i);
            }
            if self.state == State::Mid && !self.cr_pending {
                // fast path: copy up to the next CR or LF in one go
                let end = memchr::memchr2(b'\r', b'\n', &input[i..]).map(|p| i + p).unwrap_or(input.len());
                if end > i {
                    self.content_run(&input[i..end]);
                    i = end;
                    continue;
                }
            }
            self.step(input[i]);
            i += 1;
        }
        if self.done { Some(i) } else { None }
    }

    /// The received body, or why it is refused. Call after `feed` returned `Some`.
    pub fn finish(self) -> Result<Vec<u8>, DataError> {
        debug_assert!(self.done);
        if self.too_big {
            Err(DataError::TooBig)
        } else if self.too_long {
            Err(DataError::LineTooLong)
        } else if self.bad_endings {
            Err(DataError::InvalidLineEndings)
        } else if self.nul {
            Err(DataError::Nul)
        } else {
            Ok(self.body)
        }
    }

    fn step(&mut self, b: u8) {
        if self.cr_pending {
            self.cr_pending = false;
            if b == b'\n' {
                self.emit(b"\r\n");
                self.end_line(true);
                return;
            }
            self.bare_cr();
        }
        match self.state {
            State::LineStart if b == b'.' && self.prev_canonical => {
                self.state = State::Dot;
                return;
            }
            State::LineStart => self.state = State::Mid,
            State::Dot if b == b'\r' => {
                self.state = State::DotCr;
                return;
            }
            State::Dot => {
                // a stuffed dot: drop it and go on with the line
                self.state = State::Mid;
                self.count_line(1);
            }
            State::DotCr if b == b'\n' => {
                self.done = true;
                return;
            }
            State::DotCr => {
                self.state = State::Mid;
                self.count_line(1);
                self.bare_cr();
            }
            State::Mid => {}
        }
        self.content(b);
    }

    fn content(&mut self, b: u8) {
        match b {
            b'\r' => self.cr_pending = true,
            b'\n' => match self.endings {
                LineEndings::Deny => {
                    self.bad_endings = true;
                    self.emit(b"\n");
                    self.end_line(false);
                }
                LineEndings::Allow => {
                    self.emit(b"\n");
                    self.end_line(false);
                }
                LineEndings::Fix => {
                    self.emit(b"\r\n");
                    self.end_line(false);
                }
            },
            _ => self.content_run(&[b]),
        }
    }

    fn content_run(&mut self, run: &[u8]) {
        self.state = State::Mid;
        self.count_line(run.len());
        if memchr::memchr(0, run).is_none() {
            return self.emit(run);
        }
        if self.endings == LineEndings::Deny {
            self.nul = true;
        }
        for part in run.split(|b| *b == 0) {
            self.emit(part);
        }
    }

    fn bare_cr(&mut self) {
        match self.endings {
            LineEndings::Deny => {
                self.bad_endings = true;
                self.emit(b"\r");
                self.count_line(1);
            }
            LineEndings::Allow => {
                self.emit(b"\r");
                self.count_line(1);
            }
            LineEndings::Fix => {
                self.emit(b"\r\n");
                self.end_line(false);
            }
        }
    }

    fn count_line(&mut self, n: usize) {
        self.line_len += n;
        if self.line_len > self.line_limit {
            self.too_long = true;
        }
    }

    fn end_line(&mut self, canonical: bool) {
        self.line_len = 0;
        self.state = State::LineStart;
        self.prev_canonical = canonical;
    }

    fn emit(&mut self, bytes: &[u8]) {
        if self.too_big || self.body.len() + bytes.len() > self.max_size {
            self.too_big = true;
            return;
        }
        self.body.extend_from_slice(bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nul_is_refused_when_strict_and_removed_otherwise() {
        let input = b"a\0b\r\n\0.\r\nafter\r\n.\r\n";
        assert_eq!(receive(input, LineEndings::Deny).0, Err(DataError::Nul));
        for mode in [LineEndings::Allow, LineEndings::Fix] {
            let (body, rest) = receive(input, mode);
            assert_eq!(body.unwrap(), b"ab\r\n.\r\nafter\r\n", "{mode:?}: one message, NULs gone");
            assert!(rest.is_empty());
        }
    }

    /// The body (or error) and the bytes after the terminator.
    type Outcome = (Result<Vec<u8>, DataError>, Vec<u8>);

    /// Runs `input` through a receiver in every chunk size; all must agree.
    fn receive(input: &[u8], endings: LineEndings) -> Outcome {
        let mut first: Option<Outcome> = None;
        for chunk in 1..=input.len().max(1) {
            let mut r = DataReceiver::new(1000, 40, endings);
            let mut consumed = None;
            let mut offset = 0;
            for part in input.chunks(chunk) {
                if let Some(n) = r.feed(part) {
                    consumed = Some(offset + n);
                    break;
                }
                offset += part.len();
            }
            let outcome = match consumed {
                Some(n) => (r.finish(), input[n..].to_vec()),
                None => (Err(DataError::TooBig), b"<unterminated>".to_vec()),
            };
            match &first {
                None => first = Some(outcome),
                Some(f) => assert_eq!(f, &outcome, "chunk size {chunk} disagrees"),
            }
        }
        first.unwrap()
    }

    #[test]
    fn unstuffs_and_finds_terminator() {
        let (body, rest) = receive(b"Subject: x\r\n\r\n..leading\r\n.\r\nQUIT\r\n", LineEndings::Deny);
        assert_eq!(body.unwrap(), b"Subject: x\r\n\r\n.leading\r\n");
        assert_eq!(rest, b"QUIT\r\n");
        let (body, _) = receive(b".\r\n", LineEndings::Deny);
        assert_eq!(body.unwrap(), b"");
        let (body, _) = receive(b"..\r\n.\r\n", LineEndings::Deny);
        assert_eq!(body.unwrap(), b".\r\n");
    }

    #[test]
    fn smuggling_variants_never_end_data() {
        // T-18: each would end DATA on a lenient server and start a second transaction.
        let smuggles: [&[u8]; 5] = [b"\n.\n", b"\n.\r\n", b"\r.\r\n", b"\r\n.\r", b"\r.\r"];
        for s in smuggles {
            let mut input = b"Subject: a\r\n\r\nbody".to_vec();
            input.extend_from_slice(s);
            input.extend_from_slice(b"MAIL FROM:<evil@example.com>\r\nRCPT TO:<v@example.com>\r\nDATA\r\nspoof\r\n");
            input.extend_from_slice(b"\r\n.\r\nQUIT\r\n");
            for endings in [LineEndings::Allow, LineEndings::Fix] {
                let (body, rest) = receive(&input, endings);
                let body = body.unwrap();
                assert!(
                    body.windows(10).any(|w| w == b"MAIL FROM:"),
                    "{s:?} {endings:?}: smuggled commands must stay in the body"
                );
                assert_eq!(rest, b"QUIT\r\n", "{s:?} {endings:?}");
            }
            let (body, rest) = receive(&input, LineEndings::Deny);
            assert_eq!(body, Err(DataError::InvalidLineEndings), "{s:?}");
            assert_eq!(rest, b"QUIT\r\n");
        }
    }

    #[test]
    fn fix_normalizes_bare_endings() {
        let (body, _) = receive(b"a\nb\rc\r\n.\r\n", LineEndings::Fix);
        assert_eq!(body.unwrap(), b"a\r\nb\r\nc\r\n");
        let (body, _) = receive(b"a\nb\r\n.\r\n", LineEndings::Allow);
        assert_eq!(body.unwrap(), b"a\nb\r\n");
    }

    #[test]
    fn limits() {
        let long = [b'x'; 41];
        let mut input = long.to_vec();
        input.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(receive(&input, LineEndings::Deny).0, Err(DataError::LineTooLong));
        let mut ok = [b'x'; 40].to_vec();
        ok.extend_from_slice(b"\r\n.\r\n");
        assert!(receive(&ok, LineEndings::Deny).0.is_ok());
        // a line of 40 that starts with a stuffed dot counts the dot
        let mut stuffed = vec![b'.'];
        stuffed.extend_from_slice(&[b'x'; 40]);
        stuffed.extend_from_slice(b"\r\n.\r\n");
        assert_eq!(receive(&stuffed, LineEndings::Deny).0, Err(DataError::LineTooLong));

        let mut r = DataReceiver::new(100, 1000, LineEndings::Deny);
        for _ in 0..1000 {
            assert_eq!(r.feed(&[b'y'; 30]), None);
            r.feed(b"\r\n");
        }
        assert!(r.body.len() <= 100, "memory stays bounded");
        assert!(r.feed(b".\r\n").is_some());
        assert_eq!(r.finish(), Err(DataError::TooBig));
    }
}
