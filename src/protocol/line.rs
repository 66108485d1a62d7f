//! Splits command input into lines with a hard length cap. A line over the cap is
//! discarded as it streams in (memory stays bounded) and reported once at its end.

/// What the splitter yields.
#[derive(Debug, PartialEq, Eq)]
pub enum Line {
    /// A complete line without its line ending.
    Complete(Vec<u8>),
    /// A line that went over the limit; its bytes were dropped.
    TooLong,
}

/// Accumulates bytes and yields lines ended by LF (an optional CR before it is removed).
#[derive(Debug)]
pub struct LineSplitter {
    buf: Vec<u8>,
    limit: usize,
    overflowed: bool,
}

impl LineSplitter {
    /// `limit` counts the octets of a line without its CRLF.
    pub fn new(limit: usize) -> Self {
        LineSplitter { buf: Vec::new(), limit, overflowed: false }
    }

    /// Changes the limit (per-connection overrides).
    pub fn set_limit(&mut self, limit: usize) {
        self.limit = limit;
    }

    /// Adds input.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line, if the buffer holds one.
    pub fn next_line(&mut self) -> Option<Line> {
        match memchr::memchr(b'\n', &self.buf) {
            Some(i) => {
                let mut line: Vec<u8> = self.buf.drain(..=i).collect();
                line.pop();
                if line.last() == Some(&b'\r') {
                    line.pop();
                }
                if std::mem::take(&mut self.overflowed) || line.len() > self.limit {
                    return Some(Line::TooLong);
                }
                Some(Line::Complete(line))
            }
            None => {
                // keep one spare byte for a CR that may precede the LF
                if self.buf.len() > self.limit + 1 {
                    self.buf.clear();
                    self.overflowed = true;
                }
                None
            }
        }
    }

    /// Takes whatever unparsed input remains (DATA content that followed the command, or
    /// plaintext after STARTTLS that must be discarded).
    pub fn take_rest(&mut self) -> Vec<u8> {
        self.overflowed = false;
        std::mem::take(&mut self.buf)
    }

    /// True when no unparsed input is buffered.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty() && !self.overflowed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_in_every_chunking() {
        let input = b"EHLO a\r\nNOOP\nQUIT\r\n";
        for chunk in 1..input.len() {
            let mut s = LineSplitter::new(100);
            let mut got = vec![];
            for part in input.chunks(chunk) {
                s.push(part);
                while let Some(l) = s.next_line() {
                    got.push(l);
                }
            }
            assert_eq!(
                got,
                vec![
                    Line::Complete(b"EHLO a".to_vec()),
                    Line::Complete(b"NOOP".to_vec()),
                    Line::Complete(b"QUIT".to_vec())
                ]
            );
        }
    }

    #[test]
    fn long_lines_are_bounded_and_reported_once() {
        let mut s = LineSplitter::new(10);
        s.push(&[b'x'; 10]);
        s.push(b"\r\n");
        assert_eq!(s.next_line(), Some(Line::Complete(vec![b'x'; 10])));
        for _ in 0..1000 {
            s.push(&[b'y'; 1000]);
            assert_eq!(s.next_line(), None);
            assert!(s.buf.len() <= 1011);
        }
        s.push(b"\r\nNOOP\r\n");
        assert_eq!(s.next_line(), Some(Line::TooLong));
        assert_eq!(s.next_line(), Some(Line::Complete(b"NOOP".to_vec())));
        s.push(&[b'z'; 11]);
        s.push(b"\r\n");
        assert_eq!(s.next_line(), Some(Line::TooLong));
    }
}
