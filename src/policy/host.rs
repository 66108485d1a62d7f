//! What policy code asks of the host, the same for every engine: DNS lookups through the
//! server's resolver (the test resolver in tests, never the network there) and the
//! egress path options the deployment's shaping files give. The Lua `kumo.*` functions,
//! the Wasm host imports and the dispatcher all call these.

use crate::dns::mx::{SiteError, resolve_site};
use crate::dns::{Dns, MxAnswer, ptr_name};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// `kumo.dns.lookup_mx`'s answer.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MxInfo {
    /// The name looked up, lower case, with a trailing dot.
    pub domain_name: String,
    /// Exchange hosts in preference order.
    pub hosts: Vec<String>,
    /// Hosts by preference.
    pub by_pref: BTreeMap<u16, Vec<String>>,
    /// KumoMTA's site name for the hosts.
    pub site_name: String,
    /// `[10.0.0.1]` and the like.
    pub is_domain_literal: bool,
    /// DNSSEC-validated (never, with wasmta's resolver).
    pub is_secure: bool,
    /// False when the domain has no MX and its own address stands in.
    pub is_mx: bool,
}

/// The MX hosts of `domain`; an error when it does not exist or has a null MX.
pub async fn lookup_mx(dns: &dyn Dns, domain: &str) -> Result<MxInfo, String> {
    let protocol = crate::config::queue::SmtpProtocol::default();
    let site = match resolve_site(dns, domain, &protocol).await {
        Ok(site) => site,
        Err(SiteError::NullMx) => return Err(format!("{domain}: null MX, accepts no mail")),
        Err(SiteError::NxDomain) => return Err(format!("{domain}: no such domain (NXDOMAIN)")),
        Err(SiteError::Dns(e)) => return Err(format!("{domain}: {e}")),
    };
    let domain_name = format!("{}.", domain.trim_end_matches('.').to_ascii_lowercase());
    let literal = domain.starts_with('[');
    let mut by_pref: BTreeMap<u16, Vec<String>> = BTreeMap::new();
    let is_mx = match dns.mx(domain).await? {
        MxAnswer::Records(records) if !literal => {
            for r in records {
                by_pref.entry(r.preference).or_default().push(fqdn(&r.host));
            }
            by_pref.values_mut().for_each(|v| v.sort());
            true
        }
        _ => {
            by_pref.insert(0, site.hosts.iter().map(|h| fqdn(&h.name)).collect());
            false
        }
    };
    Ok(MxInfo {
        domain_name,
        hosts: site.hosts.iter().map(|h| fqdn(&h.name)).collect(),
        by_pref,
        site_name: site.name,
        is_domain_literal: literal,
        is_secure: false,
        is_mx,
    })
}

/// The addresses of `name` (IPv4 and IPv6); an error when there are none.
pub async fn lookup_addr(dns: &dyn Dns, name: &str) -> Result<Vec<IpAddr>, String> {
    let mut addrs = dns.ip(name).await?;
    if addrs.is_empty() {
        return Err(format!("{name}: no addresses (NXDOMAIN or no A/AAAA records)"));
    }
    // IPv4 first, as KumoMTA answers (`{"127.0.0.1", "::1"}`); configs index [1]
    addrs.sort_by_key(|a| a.is_ipv6());
    Ok(addrs)
}

/// The TXT records of `name`; an error when the name does not exist.
pub async fn lookup_txt(dns: &dyn Dns, name: &str) -> Result<Vec<String>, String> {
    dns.txt(name).await?.ok_or_else(|| format!("{name}: no such name (NXDOMAIN)"))
}

/// The PTR names of an address.
pub async fn lookup_ptr(dns: &dyn Dns, ip: IpAddr) -> Result<Vec<String>, String> {
    Ok(dns.ptr(ip).await?.iter().map(|n| fqdn(n)).collect())
}

/// A host name as KumoMTA's lookups return it: lower case with the trailing dot; address
/// literals as they are.
fn fqdn(name: &str) -> String {
    if name.starts_with('[') || name.parse::<IpAddr>().is_ok() {
        return name.to_string();
    }
    format!("{}.", name.trim_end_matches('.').to_ascii_lowercase())
}

/// An address's octets (or nibbles) reversed, without a suffix: `127.0.0.1` → `1.0.0.127`.
pub fn reverse_ip(ip: IpAddr) -> String {
    let name = ptr_name(ip);
    name.trim_end_matches(".in-addr.arpa").trim_end_matches(".ip6.arpa").to_string()
}

/// Parses an address that may carry a port or brackets (`10.0.0.1:25`, `[::1]`).
pub fn parse_ip(text: &str) -> Result<IpAddr, String> {
    if let Ok(sa) = text.parse::<std::net::SocketAddr>() {
        return Ok(sa.ip());
    }
    text.trim_matches(['[', ']']).parse().map_err(|_| format!("{text:?} is not an IP address"))
}

/// A DNS block list lookup: the listed address and the TXT reason, or `None` when `ip`
/// is not listed under `base`.
pub async fn rbl_lookup(dns: &dyn Dns, ip: IpAddr, base: &str) -> Result<Option<(String, Option<String>)>, String> {
    let name = format!("{}.{}", reverse_ip(ip), base.trim_matches('.'));
    let addrs = dns.ip(&name).await?;
    let Some(listed) = addrs.first() else { return Ok(None) };
    let reason = dns.txt(&name).await?.and_then(|t| t.into_iter().next());
    Ok(Some((listed.to_string(), reason)))
}

/// The egress path options the deployment's core shaping files (`config.use-shaping`)
/// give `domain`/`source`/`site`; `None` when the deployment has none.
pub async fn shaped_egress_params(
    runtime: &super::Runtime,
    domain: &str,
    source: &str,
    site: &str,
) -> Result<Option<serde_json::Map<String, serde_json::Value>>, String> {
    let Some(files) = runtime.core_shaping() else { return Ok(None) };
    let options = crate::shaping::store::LoadOptions::default();
    let dns = runtime.dns();
    let loaded = runtime.shaping.load(&files, &options, dns.as_ref()).await.map_err(|e| format!("shaping: {e}"))?;
    Ok(Some(loaded.shaping.egress_path_params(domain, source, site, dns.as_ref()).await))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::TestZones;

    #[tokio::test]
    async fn lookups_through_the_test_resolver() {
        let z = TestZones::parse(
            "example.com. MX 10 mx1.example.com.\nexample.com. MX 20 mx2.example.com.\nmx1.example.com. A 10.0.0.1\nplain.example. A 10.0.0.9\n2.0.0.127.zen.test. A 127.0.0.2\n2.0.0.127.zen.test. TXT \"spam source\"\n",
        )
        .unwrap();
        let mx = lookup_mx(&z, "Example.com").await.unwrap();
        // KumoMTA's form: fully qualified, with the trailing dot
        assert_eq!(mx.hosts, ["mx1.example.com.", "mx2.example.com."]);
        assert_eq!(mx.by_pref[&20], ["mx2.example.com."]);
        assert_eq!(mx.domain_name, "example.com.");
        assert!(mx.is_mx);
        let plain = lookup_mx(&z, "plain.example").await.unwrap();
        assert!(!plain.is_mx);
        assert!(lookup_mx(&z, "missing.example").await.unwrap_err().contains("NXDOMAIN"));
        assert_eq!(lookup_addr(&z, "mx1.example.com").await.unwrap(), ["10.0.0.1".parse::<IpAddr>().unwrap()]);
        assert!(lookup_addr(&z, "nope.example").await.is_err());
        assert_eq!(reverse_ip("127.0.0.2".parse().unwrap()), "2.0.0.127");
        let hit = rbl_lookup(&z, parse_ip("127.0.0.2:25").unwrap(), "zen.test").await.unwrap();
        assert_eq!(hit, Some(("127.0.0.2".to_string(), Some("spam source".to_string()))));
        assert_eq!(rbl_lookup(&z, "127.0.0.3".parse().unwrap(), "zen.test").await.unwrap(), None);
    }
}
