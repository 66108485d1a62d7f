//! Where a domain's mail goes: the MX hosts in preference order (or the explicit
//! `mx_list`, or an address literal, or the domain itself when it has no MX), and the
//! *site name* that groups domains sharing the same MX hosts into one ready queue.

use super::{Dns, MxAnswer};
use crate::config::queue::{MxEntry, SmtpProtocol};
use std::net::IpAddr;

/// A host to try, before address resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxHost {
    /// Host name (or address literal text).
    pub name: String,
    /// A fixed address, when known without DNS.
    pub addr: Option<IpAddr>,
    /// A port that overrides the egress path's `smtp_port`.
    pub port: Option<u16>,
}

/// The resolved destination of a domain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Site {
    /// Canonical site name (ready-queue grouping key).
    pub name: String,
    /// Hosts in the order to try them.
    pub hosts: Vec<MxHost>,
    /// True when the hosts came from DNS MX records (prohibited_hosts applies).
    pub from_dns: bool,
}

/// Why a domain has no usable destination.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SiteError {
    /// The domain publishes a null MX (RFC 7505): it accepts no mail.
    NullMx,
    /// The domain does not exist.
    NxDomain,
    /// DNS failed; try again later.
    Dns(String),
}

/// Factors host names into KumoMTA's site-name form: the common label suffix with the
/// differing prefixes as alternatives, `?` when one host is the bare suffix, e.g.
/// `(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com`.
pub fn site_name(hosts: &[String]) -> String {
    let mut names: Vec<String> = hosts.iter().map(|h| h.trim_end_matches('.').to_ascii_lowercase()).collect();
    names.sort();
    names.dedup();
    match names.len() {
        0 => return String::new(),
        1 => return names.remove(0),
        _ => {}
    }
    let labels: Vec<Vec<&str>> = names.iter().map(|n| n.split('.').rev().collect()).collect();
    let shortest = labels.iter().map(Vec::len).min().unwrap_or(0);
    let mut common = 0;
    while common < shortest && labels.iter().all(|l| l[common] == labels[0][common]) {
        common += 1;
    }
    // keep at least two labels of suffix (a registrable-looking name), else list them all
    if common < 2 {
        return names.join(",");
    }
    let suffix: Vec<&str> = labels[0][..common].iter().rev().copied().collect();
    let suffix = suffix.join(".");
    let mut optional = false;
    let mut prefixes = vec![];
    for l in &labels {
        let p: Vec<&str> = l[common..].iter().rev().copied().collect();
        if p.is_empty() {
            optional = true;
        } else {
            prefixes.push(p.join("."));
        }
    }
    match (prefixes.len(), optional) {
        (0, _) => suffix,
        (_, true) => format!("({})?.{suffix}", prefixes.join("|")),
        (_, false) => format!("({}).{suffix}", prefixes.join("|")),
    }
}

fn from_mx_list(list: &[MxEntry]) -> Site {
    let hosts = list
        .iter()
        .map(|e| MxHost { name: e.name.clone(), addr: e.addr.as_deref().unwrap_or(&e.name).parse().ok(), port: e.port })
        .collect();
    let labels: Vec<String> = list.iter().map(MxEntry::label).collect();
    Site { name: format!("mx_list:{}", labels.join(",")), hosts, from_dns: false }
}

/// Resolves the site of `domain` under the queue's SMTP protocol settings.
pub async fn resolve_site(dns: &dyn Dns, domain: &str, smtp: &SmtpProtocol) -> Result<Site, SiteError> {
    if !smtp.mx_list.is_empty() {
        return Ok(from_mx_list(&smtp.mx_list));
    }
    let domain = domain.trim_end_matches('.').to_ascii_lowercase();
    if let Some(lit) = domain.strip_prefix('[').and_then(|d| d.strip_suffix(']')) {
        let text = lit.strip_prefix("IPv6:").or_else(|| lit.strip_prefix("ipv6:")).unwrap_or(lit);
        let addr: IpAddr = text.parse().map_err(|_| SiteError::Dns(format!("invalid address literal {domain}")))?;
        return Ok(Site {
            name: domain.clone(),
            hosts: vec![MxHost { name: domain, addr: Some(addr), port: None }],
            from_dns: true,
        });
    }
    match dns.mx(&domain).await.map_err(SiteError::Dns)? {
        MxAnswer::NxDomain => Err(SiteError::NxDomain),
        MxAnswer::NoRecords => Ok(Site {
            name: domain.clone(),
            hosts: vec![MxHost { name: domain, addr: None, port: None }],
            from_dns: true,
        }),
        MxAnswer::Records(mut records) => {
            if records.len() == 1 && records[0].host.is_empty() {
                return Err(SiteError::NullMx);
            }
            records.retain(|r| !r.host.is_empty());
            records.sort_by(|a, b| a.preference.cmp(&b.preference).then_with(|| a.host.cmp(&b.host)));
            let names: Vec<String> = records.iter().map(|r| r.host.clone()).collect();
            let hosts = records.into_iter().map(|r| MxHost { name: r.host, addr: None, port: None }).collect();
            Ok(Site { name: site_name(&names), hosts, from_dns: true })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::TestZones;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn site_names_factor_like_kumomta() {
        let gmail = s(&[
            "alt3.gmail-smtp-in.l.google.com.",
            "alt4.gmail-smtp-in.l.google.com.",
            "gmail-smtp-in.l.google.com.",
            "alt1.gmail-smtp-in.l.google.com.",
            "alt2.gmail-smtp-in.l.google.com.",
        ]);
        assert_eq!(site_name(&gmail), "(alt1|alt2|alt3|alt4)?.gmail-smtp-in.l.google.com");
        assert_eq!(site_name(&s(&["mx1.example.com", "mx2.example.com"])), "(mx1|mx2).example.com");
        assert_eq!(site_name(&s(&["MX.example.com."])), "mx.example.com");
        assert_eq!(site_name(&s(&["a.one.example", "b.other.test"])), "a.one.example,b.other.test");
    }

    #[tokio::test]
    async fn resolves_mx_null_mx_fallback_and_literals() {
        let z = TestZones::parse(
            "a.example. MX 20 mx2.a.example.\na.example. MX 10 mx1.a.example.\nnull.example. MX 0 .\nbare.example. A 10.1.1.1\n",
        )
        .unwrap();
        let none = SmtpProtocol::default();
        let site = resolve_site(&z, "A.example", &none).await.unwrap();
        assert_eq!(site.name, "(mx1|mx2).a.example");
        assert_eq!(site.hosts[0].name, "mx1.a.example");
        assert_eq!(resolve_site(&z, "null.example", &none).await, Err(SiteError::NullMx));
        assert_eq!(resolve_site(&z, "gone.example", &none).await, Err(SiteError::NxDomain));
        let bare = resolve_site(&z, "bare.example", &none).await.unwrap();
        assert_eq!((bare.name.as_str(), bare.hosts[0].name.as_str()), ("bare.example", "bare.example"));
        let lit = resolve_site(&z, "[192.0.2.7]", &none).await.unwrap();
        assert_eq!(lit.hosts[0].addr, Some("192.0.2.7".parse().unwrap()));
        let listed =
            SmtpProtocol { mx_list: vec![MxEntry::parse("localhost:2525").unwrap()], treat_mx_list_as_secure: false };
        let site = resolve_site(&z, "anything.example", &listed).await.unwrap();
        assert_eq!(site.name, "mx_list:localhost:2525");
        assert_eq!(site.hosts[0].port, Some(2525));
        assert!(!site.from_dns);
    }
}
