//! DNS for delivery behind one trait: hickory-resolver for real lookups, and a resolver
//! fed from zone text (`kumo.dns.configure_test_resolver`) so tests never touch the
//! network.

pub mod mx;

use hickory_resolver::TokioResolver;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::rr::RData;
use std::collections::HashMap;
use std::net::IpAddr;

/// One MX record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MxRecord {
    /// Preference (lower first).
    pub preference: u16,
    /// Exchange host, lower case, without the trailing dot.
    pub host: String,
}

/// What an MX query found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MxAnswer {
    /// MX records.
    Records(Vec<MxRecord>),
    /// The name exists but has no MX (use its A/AAAA).
    NoRecords,
    /// The name does not exist.
    NxDomain,
}

/// A resolver.
#[async_trait::async_trait]
pub trait Dns: Send + Sync {
    /// MX records of `domain`.
    async fn mx(&self, domain: &str) -> Result<MxAnswer, String>;
    /// Addresses of `host`.
    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, String>;
    /// TXT records of `name` (each record's strings joined); `None` when the name does
    /// not exist.
    async fn txt(&self, name: &str) -> Result<Option<Vec<String>>, String>;
    /// PTR names of `ip`, without the trailing dot.
    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, String>;
}

/// The reverse-lookup name of an address (`1.0.0.127.in-addr.arpa`, nibbles and
/// `ip6.arpa` for IPv6), without the trailing dot.
pub fn ptr_name(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0])
        }
        IpAddr::V6(v6) => {
            let mut parts: Vec<String> = vec![];
            for b in v6.octets().iter().rev() {
                parts.push(format!("{:x}", b & 0xf));
                parts.push(format!("{:x}", b >> 4));
            }
            format!("{}.ip6.arpa", parts.join("."))
        }
    }
}

/// The resolver `init` asked for: its test zones, its name servers, or the system's.
pub fn from_config(config: &crate::config::DnsConfig) -> Result<std::sync::Arc<dyn Dns>, String> {
    use std::sync::Arc;
    if !config.zones.is_empty() {
        let mut zones = TestZones::default();
        for z in &config.zones {
            zones.merge(TestZones::parse(z)?);
        }
        tracing::info!("dns: answering from {} configured test zone(s)", config.zones.len());
        return Ok(Arc::new(zones));
    }
    if !config.name_servers.is_empty() {
        return Ok(Arc::new(HickoryDns::with_servers(&config.name_servers)?));
    }
    match HickoryDns::system() {
        Ok(d) => Ok(Arc::new(d)),
        Err(e) => {
            tracing::warn!("dns: {e}; using 127.0.0.1");
            Ok(Arc::new(HickoryDns::with_servers(&["127.0.0.1".parse().expect("ip")])?))
        }
    }
}

fn normalize(name: &str) -> String {
    name.trim_end_matches('.').to_ascii_lowercase()
}

/// The system (or configured) resolver.
pub struct HickoryDns(TokioResolver);

impl HickoryDns {
    /// From `/etc/resolv.conf`.
    pub fn system() -> Result<Self, String> {
        let builder =
            TokioResolver::builder_tokio().map_err(|e| format!("reading the system resolver configuration: {e}"))?;
        builder.build().map(HickoryDns).map_err(|e| e.to_string())
    }

    /// With explicit name servers (`kumo.dns.configure_resolver{name_servers = {...}}`).
    pub fn with_servers(servers: &[IpAddr]) -> Result<Self, String> {
        use hickory_resolver::config::{NameServerConfig, ResolverConfig};
        use hickory_resolver::net::runtime::TokioRuntimeProvider;
        let config =
            ResolverConfig::from_name_servers(servers.iter().map(|ip| NameServerConfig::udp_and_tcp(*ip)).collect());
        TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
            .build()
            .map(HickoryDns)
            .map_err(|e| e.to_string())
    }
}

fn no_records(e: &NetError) -> Option<bool> {
    match e {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => {
            Some(nr.response_code == hickory_resolver::proto::op::ResponseCode::NXDomain)
        }
        _ => None,
    }
}

#[async_trait::async_trait]
impl Dns for HickoryDns {
    async fn mx(&self, domain: &str) -> Result<MxAnswer, String> {
        match self.0.mx_lookup(format!("{}.", normalize(domain))).await {
            Ok(lookup) => {
                let mut out = vec![];
                for r in lookup.answers() {
                    if let RData::MX(mx) = &r.data {
                        out.push(MxRecord { preference: mx.preference, host: normalize(&mx.exchange.to_string()) });
                    }
                }
                Ok(if out.is_empty() { MxAnswer::NoRecords } else { MxAnswer::Records(out) })
            }
            Err(e) => match no_records(&e) {
                Some(true) => Ok(MxAnswer::NxDomain),
                Some(false) => Ok(MxAnswer::NoRecords),
                None => Err(format!("MX lookup for {domain}: {e}")),
            },
        }
    }

    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        match self.0.lookup_ip(format!("{}.", normalize(host))).await {
            Ok(l) => Ok(l.iter().collect()),
            Err(e) if no_records(&e).is_some() => Ok(vec![]),
            Err(e) => Err(format!("address lookup for {host}: {e}")),
        }
    }

    async fn txt(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        match self.0.txt_lookup(format!("{}.", normalize(name))).await {
            Ok(lookup) => Ok(Some(
                lookup
                    .answers()
                    .iter()
                    .filter_map(|r| match &r.data {
                        RData::TXT(t) => {
                            Some(t.txt_data.iter().map(|d| String::from_utf8_lossy(d).into_owned()).collect())
                        }
                        _ => None,
                    })
                    .collect(),
            )),
            Err(e) => match no_records(&e) {
                Some(true) => Ok(None),
                Some(false) => Ok(Some(vec![])),
                None => Err(format!("TXT lookup for {name}: {e}")),
            },
        }
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, String> {
        match self.0.reverse_lookup(ip).await {
            Ok(lookup) => Ok(lookup
                .answers()
                .iter()
                .filter_map(|r| match &r.data {
                    RData::PTR(p) => Some(normalize(&p.to_string())),
                    _ => None,
                })
                .collect()),
            Err(e) if no_records(&e).is_some() => Ok(vec![]),
            Err(e) => Err(format!("PTR lookup for {ip}: {e}")),
        }
    }
}

/// A resolver answering from zone text.
#[derive(Default, Debug)]
pub struct TestZones {
    mx: HashMap<String, Vec<MxRecord>>,
    addrs: HashMap<String, Vec<IpAddr>>,
    txt: HashMap<String, Vec<String>>,
    ptr: HashMap<String, Vec<String>>,
}

/// A zone-file line without its `;` comment; a `;` inside a quoted string (every DKIM,
/// SPF and DMARC record has them) is text, not a comment.
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            ';' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

impl TestZones {
    /// Parses zone text: `$ORIGIN`, `@`, relative and absolute names, optional TTL and
    /// class, and MX, A, AAAA, TXT (quoted strings, joined) and PTR records (other types
    /// are ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let mut z = TestZones::default();
        let mut origin = String::new();
        let mut last_name = String::new();
        for (n, raw) in text.lines().enumerate() {
            let line = strip_comment(raw).trim_end();
            if line.trim().is_empty() {
                continue;
            }
            let mut toks: Vec<&str> = line.split_whitespace().collect();
            if toks[0] == "$ORIGIN" {
                origin = normalize(toks.get(1).ok_or(format!("line {}: $ORIGIN needs a name", n + 1))?);
                continue;
            }
            if toks[0].starts_with('$') {
                continue;
            }
            let absolute = |name: &str| -> String {
                if name == "@" {
                    origin.clone()
                } else if name.ends_with('.') || origin.is_empty() {
                    normalize(name)
                } else {
                    format!("{}.{origin}", normalize(name))
                }
            };
            let name = if raw.starts_with([' ', '\t']) { last_name.clone() } else { absolute(toks.remove(0)) };
            last_name = name.clone();
            while let Some(t) = toks.first() {
                if t.chars().all(|c| c.is_ascii_digit()) || t.eq_ignore_ascii_case("IN") {
                    toks.remove(0);
                } else {
                    break;
                }
            }
            let bad = || format!("line {}: cannot parse {raw:?}", n + 1);
            match toks.first().map(|t| t.to_ascii_uppercase()).as_deref() {
                Some("MX") => {
                    let pref = toks.get(1).and_then(|p| p.parse().ok()).ok_or_else(bad)?;
                    let host = toks.get(2).ok_or_else(bad)?;
                    let host = if *host == "." { String::new() } else { absolute(host) };
                    z.mx.entry(name).or_default().push(MxRecord { preference: pref, host });
                }
                Some("A") | Some("AAAA") => {
                    let ip: IpAddr = toks.get(1).and_then(|a| a.parse().ok()).ok_or_else(bad)?;
                    z.addrs.entry(name).or_default().push(ip);
                }
                Some("TXT") => {
                    let at = line.find(['"']).ok_or_else(bad)?;
                    let text: String = line[at..].split('"').skip(1).step_by(2).collect();
                    z.txt.entry(name).or_default().push(text);
                }
                Some("PTR") => {
                    let target = toks.get(1).ok_or_else(bad)?;
                    z.ptr.entry(name).or_default().push(absolute(target));
                }
                _ => {}
            }
        }
        Ok(z)
    }

    /// Adds another zone's records.
    pub fn merge(&mut self, other: TestZones) {
        for (k, v) in other.mx {
            self.mx.entry(k).or_default().extend(v);
        }
        for (k, v) in other.addrs {
            self.addrs.entry(k).or_default().extend(v);
        }
        for (k, v) in other.txt {
            self.txt.entry(k).or_default().extend(v);
        }
        for (k, v) in other.ptr {
            self.ptr.entry(k).or_default().extend(v);
        }
    }

    fn exists(&self, name: &str) -> bool {
        self.mx.contains_key(name) || self.addrs.contains_key(name) || self.txt.contains_key(name)
    }
}

#[async_trait::async_trait]
impl Dns for TestZones {
    async fn mx(&self, domain: &str) -> Result<MxAnswer, String> {
        let d = normalize(domain);
        Ok(match self.mx.get(&d) {
            Some(r) => MxAnswer::Records(r.clone()),
            None if self.exists(&d) => MxAnswer::NoRecords,
            None => MxAnswer::NxDomain,
        })
    }

    async fn ip(&self, host: &str) -> Result<Vec<IpAddr>, String> {
        Ok(self.addrs.get(&normalize(host)).cloned().unwrap_or_default())
    }

    async fn txt(&self, name: &str) -> Result<Option<Vec<String>>, String> {
        let n = normalize(name);
        Ok(match self.txt.get(&n) {
            Some(t) => Some(t.clone()),
            None if self.exists(&n) => Some(vec![]),
            None => None,
        })
    }

    async fn ptr(&self, ip: IpAddr) -> Result<Vec<String>, String> {
        Ok(self.ptr.get(&ptr_name(ip)).cloned().unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn zone_text_answers_queries() {
        let z = TestZones::parse(
            "$ORIGIN example.com.\n@ 300 IN MX 10 mx1\n  IN MX 20 mx2.example.com.\nmx1 IN A 10.0.0.1\nmx2 A 10.0.0.2\nplain.example.net. A ::1\nnull.example. MX 0 .\n",
        )
        .unwrap();
        let MxAnswer::Records(r) = z.mx("Example.COM").await.unwrap() else { panic!() };
        assert_eq!(
            r,
            vec![
                MxRecord { preference: 10, host: "mx1.example.com".into() },
                MxRecord { preference: 20, host: "mx2.example.com".into() }
            ]
        );
        assert_eq!(z.ip("mx2.example.com.").await.unwrap(), vec!["10.0.0.2".parse::<IpAddr>().unwrap()]);
        assert_eq!(z.mx("plain.example.net").await.unwrap(), MxAnswer::NoRecords);
        assert_eq!(z.mx("missing.example").await.unwrap(), MxAnswer::NxDomain);
        let MxAnswer::Records(null) = z.mx("null.example").await.unwrap() else { panic!() };
        assert_eq!(null[0].host, "");
        let z = TestZones::parse(
            "example.com. TXT \"v=spf1 \" \"-all\"\n2.0.0.127.zen.example. A 127.0.0.2\n2.0.0.127.zen.example. TXT \"listed\"\n1.0.0.127.in-addr.arpa. PTR localhost.\n",
        )
        .unwrap();
        assert_eq!(z.txt("example.com").await.unwrap(), Some(vec!["v=spf1 -all".to_string()]));
        assert_eq!(z.txt("nothing.example").await.unwrap(), None);
        // a `;` in quotes is text (DKIM, SPF, DMARC records); outside them, a comment
        let k = TestZones::parse("k._domainkey.example. TXT \"v=DKIM1; k=rsa; p=AB\" ; the key\n").unwrap();
        assert_eq!(k.txt("k._domainkey.example").await.unwrap(), Some(vec!["v=DKIM1; k=rsa; p=AB".to_string()]));
        assert_eq!(z.ptr("127.0.0.1".parse().unwrap()).await.unwrap(), vec!["localhost".to_string()]);
        assert_eq!(ptr_name("::1".parse().unwrap()).len(), "x.".len() * 32 + "ip6.arpa".len());
    }
}
