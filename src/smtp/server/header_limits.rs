//! Limits on a received message's header section, checked once after DATA and before any
//! policy runs: too many `Received:` fields is a mail loop (RFC 5321 §6.3), and a header
//! section over `max_header_size` is refused. One linear pass over the header section.

use crate::config::listener::ListenerSettings;
use crate::message::headers;
use crate::protocol::Reply;

/// The reply refusing `data`, or `None` when its header section is within the limits.
pub fn check(data: &[u8], settings: &ListenerSettings) -> Option<Reply> {
    let end = headers::header_end(data);
    if end as u64 > settings.max_header_size {
        return Some(Reply::new(
            552,
            "5.3.4",
            format!("header section exceeds the {} byte limit (max_header_size)", settings.max_header_size),
        ));
    }
    let received = received_count(&data[..end]);
    if received > settings.max_received_headers {
        return Some(Reply::new(
            554,
            "5.4.6",
            format!("too many Received headers ({received}): mail loop suspected (max_received_headers)"),
        ));
    }
    None
}

/// How many header lines (not continuation lines) start with `Received:`.
fn received_count(header: &[u8]) -> usize {
    let mut count = 0;
    let mut pos = 0;
    while pos < header.len() {
        let line = &header[pos..];
        if line.len() >= 9 && line[..9].eq_ignore_ascii_case(b"received:") {
            count += 1;
        }
        pos = memchr::memchr(b'\n', line).map(|i| pos + i + 1).unwrap_or(header.len());
    }
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_received_fields_not_continuations_or_body() {
        let msg = b"Received: a\r\n received: folded\r\nRECEIVED:b\r\nX-Received: c\r\n\r\nReceived: body\r\n";
        assert_eq!(received_count(&msg[..headers::header_end(msg)]), 2);
    }

    #[test]
    fn limits_apply_at_their_boundaries() {
        let s = ListenerSettings { max_received_headers: 2, max_header_size: 40, ..Default::default() };
        assert!(check(b"Received: a\r\nReceived: b\r\n\r\nbody", &s).is_none());
        let r = check(b"Received: a\r\nReceived: b\r\nReceived: c\r\n\r\n", &s).expect("loop");
        assert_eq!((r.code, r.enhanced.map(|e| e.to_string())), (554, Some("5.4.6".into())));
        let r = check(b"Subject: 0123456789012345678901234567890123456789\r\n\r\n", &s).expect("size");
        assert_eq!(r.code, 552);
    }
}
