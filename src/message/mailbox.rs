//! Addresses in message headers (`From:`, `To:`, any address header): display names,
//! groups and encoded words, parsed with `mail-parser`, for `msg:from_header()` and
//! friends.

/// One mailbox of an address header.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Mailbox {
    /// The display name, decoded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `user@domain`.
    pub address: String,
}

impl Mailbox {
    /// The local part.
    pub fn user(&self) -> &str {
        self.address.rsplit_once('@').map_or(self.address.as_str(), |(u, _)| u)
    }

    /// The domain.
    pub fn domain(&self) -> &str {
        self.address.rsplit_once('@').map_or("", |(_, d)| d)
    }
}

/// The mailboxes of an address header's value (groups flattened).
pub fn parse(value: &str) -> Vec<Mailbox> {
    let raw = format!("From: {value}\r\n\r\n");
    let Some(parsed) = mail_parser::MessageParser::default().parse_headers(raw.as_bytes()) else { return vec![] };
    let Some(list) = parsed.from() else { return vec![] };
    list.iter()
        .filter_map(|a| {
            let address = a.address.as_deref()?.to_string();
            Some(Mailbox { name: a.name.as_deref().map(str::to_string), address })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_groups_and_encoded_words() {
        let m = parse("\"Smith, John\" <john@example.com>, jane@example.org");
        assert_eq!(m.len(), 2);
        assert_eq!(m[0].name.as_deref(), Some("Smith, John"));
        assert_eq!((m[0].user(), m[0].domain()), ("john", "example.com"));
        assert_eq!(m[1].address, "jane@example.org");
        let g = parse("team: a@x.example, b@y.example;");
        assert_eq!(g.iter().map(|m| m.address.as_str()).collect::<Vec<_>>(), ["a@x.example", "b@y.example"]);
        assert_eq!(parse("=?UTF-8?Q?J=C3=B6rg?= <j@example.com>")[0].name.as_deref(), Some("Jörg"));
        assert!(parse("").is_empty());
    }
}
