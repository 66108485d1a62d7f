//! Header operations on raw RFC 5322 message bytes: find, read (unfolded), prepend,
//! append, remove. The body is never parsed or copied more than once per edit.

/// One header field as it stands in the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeaderField<'a> {
    /// Field name as written.
    pub name: &'a str,
    /// Raw value (after the colon, folding kept, trailing line ending removed).
    pub raw_value: &'a [u8],
    /// Byte range of the whole field, line endings included.
    pub span: std::ops::Range<usize>,
}

impl HeaderField<'_> {
    /// The value unfolded (CRLF + WSP becomes WSP) and trimmed.
    pub fn value(&self) -> String {
        let text = String::from_utf8_lossy(self.raw_value);
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.split('\n').enumerate() {
            let line = line.strip_suffix('\r').unwrap_or(line);
            if i > 0 {
                out.push(' ');
                out.push_str(line.trim_start());
            } else {
                out.push_str(line);
            }
        }
        out.trim().to_string()
    }
}

/// Where the header section ends: the offset of the blank line separating it from the
/// body (or the end of the data when there is no body).
pub fn header_end(data: &[u8]) -> usize {
    let mut pos = 0;
    while pos < data.len() {
        let eol = memchr::memchr(b'\n', &data[pos..]).map(|i| pos + i + 1).unwrap_or(data.len());
        let line = &data[pos..eol];
        if line == b"\r\n" || line == b"\n" {
            return pos;
        }
        pos = eol;
    }
    data.len()
}

/// Iterates the header fields of a message.
pub fn fields(data: &[u8]) -> Vec<HeaderField<'_>> {
    let end = header_end(data);
    let mut out = Vec::new();
    let mut pos = 0;
    while pos < end {
        let start = pos;
        // one field: first line plus continuation lines starting with WSP
        let mut eol = next_eol(data, pos, end);
        while eol < end && matches!(data[eol], b' ' | b'\t') {
            eol = next_eol(data, eol, end);
        }
        let field = &data[start..eol];
        pos = eol;
        let Some(colon) = memchr::memchr(b':', field) else {
            continue;
        };
        let Ok(name) = std::str::from_utf8(&field[..colon]) else {
            continue;
        };
        if name.is_empty() || name.contains([' ', '\t']) {
            continue;
        }
        let mut value = &field[colon + 1..];
        while let Some(rest) = value.strip_suffix(b"\n") {
            value = rest.strip_suffix(b"\r").unwrap_or(rest);
        }
        out.push(HeaderField { name, raw_value: value, span: start..eol });
    }
    out
}

fn next_eol(data: &[u8], pos: usize, end: usize) -> usize {
    memchr::memchr(b'\n', &data[pos..end]).map(|i| pos + i + 1).unwrap_or(end)
}

/// Formats a header field with CRLF, folding nothing (callers pass sane values).
pub fn format_field(name: &str, value: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(name.len() + value.len() + 4);
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
    out
}

/// The message with a header added before every other header.
pub fn prepend(data: &[u8], name: &str, value: &str) -> Vec<u8> {
    let mut out = format_field(name, value);
    out.extend_from_slice(data);
    out
}

/// The message with a header added after the last header.
pub fn append(data: &[u8], name: &str, value: &str) -> Vec<u8> {
    let end = header_end(data);
    let mut out = Vec::with_capacity(data.len() + name.len() + value.len() + 4);
    out.extend_from_slice(&data[..end]);
    if end > 0 && !data[..end].ends_with(b"\n") {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&format_field(name, value));
    if end == data.len() {
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(&data[end..]);
    out
}

/// The message without the fields for which `drop` returns true.
pub fn remove_where(data: &[u8], drop: impl Fn(&str) -> bool) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    let mut pos = 0;
    for f in fields(data) {
        if drop(f.name) {
            out.extend_from_slice(&data[pos..f.span.start]);
            pos = f.span.end;
        }
    }
    out.extend_from_slice(&data[pos..]);
    out
}

/// `bytes` with every bare LF made CRLF (messages travel and are stored with CRLF).
pub fn crlf(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len() + 16);
    let mut prev = 0u8;
    for &b in bytes {
        if b == b'\n' && prev != b'\r' {
            out.push(b'\r');
        }
        out.push(b);
        prev = b;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const MSG: &[u8] = b"Subject: hello\r\n there\r\nFrom: a@example.com\r\nX-Tag: 1\r\nx-other: 2\r\n\r\nbody\r\n";

    #[test]
    fn reads_unfolded_fields() {
        let f = fields(MSG);
        assert_eq!(f.len(), 4);
        assert_eq!(f[0].name, "Subject");
        assert_eq!(f[0].value(), "hello there");
        assert_eq!(f[1].value(), "a@example.com");
    }

    #[test]
    fn edits_keep_body() {
        let p = prepend(MSG, "Received", "from x");
        assert!(p.starts_with(b"Received: from x\r\nSubject"));
        let a = append(MSG, "X-New", "v");
        assert!(a.ends_with(b"x-other: 2\r\nX-New: v\r\n\r\nbody\r\n"));
        let r = remove_where(MSG, |n| n.to_ascii_lowercase().starts_with("x-"));
        assert_eq!(r, b"Subject: hello\r\n there\r\nFrom: a@example.com\r\n\r\nbody\r\n");
    }

    #[test]
    fn headers_only_message() {
        let m = b"Subject: x\r\n";
        assert_eq!(header_end(m), m.len());
        assert_eq!(append(m, "A", "b"), b"Subject: x\r\nA: b\r\n\r\n");
    }
}
