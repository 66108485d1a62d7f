//! CIDR sets and maps (`relay_hosts`, `trusted_hosts`, listener `peer`/`via` blocks).

use ipnet::IpNet;
use std::net::IpAddr;

/// Parses `"10.0.0.0/8"`, `"::1"` or `"127.0.0.1"` into a network.
pub fn parse_net(text: &str) -> Result<IpNet, String> {
    let t = text.trim();
    if let Ok(net) = t.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    t.parse::<IpAddr>().map(IpNet::from).map_err(|_| format!("invalid CIDR or IP address {text:?}"))
}

/// A set of networks.
#[derive(Debug, Clone, Default)]
pub struct CidrSet(Vec<IpNet>);

impl CidrSet {
    /// Builds a set, failing on the first bad entry.
    pub fn parse(entries: &[String]) -> Result<Self, String> {
        entries.iter().map(|e| parse_net(e)).collect::<Result<_, _>>().map(CidrSet)
    }

    /// True when `ip` is in any network of the set.
    pub fn contains(&self, ip: IpAddr) -> bool {
        let ip = ip.to_canonical();
        self.0.iter().any(|net| net.contains(&ip))
    }
}

/// A list of networks as a configuration writes it (`{'10.0.0.0/8', '::1'}`), checked
/// when it is read and kept parsed.
#[derive(Debug, Clone, Default)]
pub struct CidrList {
    entries: Vec<String>,
    set: CidrSet,
}

impl CidrList {
    /// A list from entries known to be valid (defaults).
    pub fn of(entries: &[&str]) -> CidrList {
        let entries: Vec<String> = entries.iter().map(|e| e.to_string()).collect();
        let set = CidrSet::parse(&entries).expect("valid built-in networks");
        CidrList { entries, set }
    }

    /// The parsed set.
    pub fn set(&self) -> &CidrSet {
        &self.set
    }

    /// The entries as written.
    pub fn entries(&self) -> &[String] {
        &self.entries
    }
}

impl serde::Serialize for CidrList {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.entries.serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for CidrList {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let entries = super::units::string_list::deserialize(d)?;
        let set = CidrSet::parse(&entries).map_err(serde::de::Error::custom)?;
        Ok(CidrList { entries, set })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_v4_v6_and_mapped() {
        let set = CidrSet::parse(&["127.0.0.1".into(), "::1".into(), "10.0.0.0/8".into()]).unwrap();
        assert!(set.contains("127.0.0.1".parse().unwrap()));
        assert!(set.contains("::ffff:10.1.2.3".parse().unwrap()));
        assert!(set.contains("::1".parse().unwrap()));
        assert!(!set.contains("192.0.2.1".parse().unwrap()));
        assert!(CidrSet::parse(&["nonsense".into()]).is_err());
        let list: CidrList = crate::config::decode(serde_json::json!(["10.0.0.0/8"])).unwrap();
        assert!(list.set().contains("10.9.9.9".parse().unwrap()));
        let err = crate::config::decode::<CidrList>(serde_json::json!(["10.0.0.0/99"])).unwrap_err();
        assert!(err.contains("10.0.0.0/99"), "{err}");
    }
}
