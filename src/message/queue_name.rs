//! Scheduled-queue names from message meta, as KumoMTA forms them:
//! `campaign:tenant@domain!routing_domain` and its shorter variants; `queue` meta wins.

/// The parts a queue name is built from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueNameParts {
    /// `campaign` meta.
    pub campaign: Option<String>,
    /// `tenant` meta.
    pub tenant: Option<String>,
    /// The recipient domain.
    pub domain: String,
    /// `routing_domain` meta.
    pub routing_domain: Option<String>,
}

impl QueueNameParts {
    /// Formats the name.
    pub fn format(&self) -> String {
        let mut name = String::new();
        match (&self.campaign, &self.tenant) {
            (Some(c), Some(t)) => name.push_str(&format!("{c}:{t}@")),
            (Some(c), None) => name.push_str(&format!("{c}:@")),
            (None, Some(t)) => name.push_str(&format!("{t}@")),
            (None, None) => {}
        }
        name.push_str(&self.domain);
        if let Some(r) = &self.routing_domain {
            name.push('!');
            name.push_str(r);
        }
        name
    }

    /// Splits a queue name back into its parts: split at the first `@` (the prefix
    /// `campaign:tenant` at its first `:`), then the domain at `!`.
    pub fn parse(name: &str) -> Self {
        let (prefix, rest) = match name.split_once('@') {
            Some((p, r)) => (Some(p), r),
            None => (None, name),
        };
        let (campaign, tenant) = match prefix {
            Some(p) => match p.split_once(':') {
                Some((c, t)) => (non_empty(c), non_empty(t)),
                None => (None, non_empty(p)),
            },
            None => (None, None),
        };
        let (domain, routing_domain) = match rest.split_once('!') {
            Some((d, r)) => (d.to_string(), non_empty(r)),
            None => (rest.to_string(), None),
        };
        QueueNameParts { campaign, tenant, domain, routing_domain }
    }
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

/// The queue a message belongs in, from its meta and recipient domain.
pub fn queue_name(meta: &serde_json::Map<String, serde_json::Value>, recipient_domain: &str) -> String {
    let text = |k: &str| meta.get(k).and_then(|v| v.as_str()).filter(|s| !s.is_empty()).map(str::to_string);
    if let Some(q) = text("queue") {
        return q;
    }
    QueueNameParts {
        campaign: text("campaign"),
        tenant: text("tenant"),
        domain: recipient_domain.to_ascii_lowercase(),
        routing_domain: text("routing_domain"),
    }
    .format()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_from_meta() {
        let cases = [
            (json!({}), "example.com"),
            (json!({"tenant": "t"}), "t@example.com"),
            (json!({"campaign": "c"}), "c:@example.com"),
            (json!({"campaign": "c", "tenant": "t"}), "c:t@example.com"),
            (json!({"routing_domain": "r.example"}), "example.com!r.example"),
            (json!({"campaign": "c", "tenant": "t", "routing_domain": "r"}), "c:t@example.com!r"),
            (json!({"queue": "null", "tenant": "t"}), "null"),
        ];
        for (meta, want) in cases {
            let got = queue_name(meta.as_object().unwrap(), "Example.COM");
            assert_eq!(got, want, "{meta}");
            if want != "null" {
                assert_eq!(QueueNameParts::parse(want).format(), want);
            }
        }
        let p = QueueNameParts::parse("c:t@example.com!r");
        assert_eq!(p.campaign.as_deref(), Some("c"));
        assert_eq!(p.tenant.as_deref(), Some("t"));
        assert_eq!(p.routing_domain.as_deref(), Some("r"));
    }
}
