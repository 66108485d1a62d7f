//! KumoMTA's lookup maps for Lua, each a userdata indexed like a table:
//! `kumo.regex_set_map.new{ [pattern] = value }` (the first matching pattern wins; fixed
//! once made), `kumo.domain_map.new{ ['*.example.com'] = value }` (exact names, then the
//! most specific `*.` wildcard; settable) and `kumo.cidr.make_map{ ['10.0.0.0/8'] = value }`
//! (the most specific network containing the address; settable).

use super::convert::{from_lua, to_lua};
use ipnet::IpNet;
use mlua::{Lua, MetaMethod, Table, UserData, UserDataMethods, Value as LuaValue};
use serde_json::Value;
use std::collections::HashMap;

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// (key, value) pairs of a Lua table, keys as strings.
fn entries(lua: &Lua, t: Option<Table>) -> mlua::Result<Vec<(String, Value)>> {
    let Some(t) = t else { return Ok(vec![]) };
    let mut out = vec![];
    for pair in t.pairs::<String, LuaValue>() {
        let (k, v) = pair?;
        out.push((k, from_lua(lua, v)?));
    }
    // a stable order, so overlapping patterns always resolve the same way
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// `kumo.regex_set_map`.
pub struct RegexSetMap {
    set: regex::RegexSet,
    values: Vec<Value>,
}

impl UserData for RegexSetMap {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: String| match this.set.matches(&key).iter().next() {
            Some(i) => to_lua(lua, &this.values[i]),
            None => Ok(LuaValue::Nil),
        });
    }
}

/// `kumo.domain_map`.
#[derive(Default)]
pub struct DomainMap {
    exact: HashMap<String, Value>,
    /// `*.suffix` entries by suffix.
    wild: HashMap<String, Value>,
}

impl DomainMap {
    fn set(&mut self, key: &str, value: Value) {
        let key = key.trim_end_matches('.').to_ascii_lowercase();
        match key.strip_prefix("*.") {
            Some(suffix) => self.wild.insert(suffix.to_string(), value),
            None => self.exact.insert(key, value),
        };
    }

    /// The value for `domain`: its own entry, else the nearest `*.` wildcard above it.
    pub fn get(&self, domain: &str) -> Option<&Value> {
        let domain = domain.trim_end_matches('.').to_ascii_lowercase();
        if let Some(v) = self.exact.get(&domain) {
            return Some(v);
        }
        let mut rest = domain.as_str();
        while let Some((_, parent)) = rest.split_once('.') {
            if let Some(v) = self.wild.get(parent) {
                return Some(v);
            }
            rest = parent;
        }
        None
    }
}

impl UserData for DomainMap {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: String| match this.get(&key) {
            Some(v) => to_lua(lua, v),
            None => Ok(LuaValue::Nil),
        });
        m.add_meta_method_mut(MetaMethod::NewIndex, |lua, this, (key, value): (String, LuaValue)| {
            this.set(&key, from_lua(lua, value)?);
            Ok(())
        });
    }
}

/// `kumo.cidr.make_map`.
#[derive(Default)]
pub struct CidrMap(Vec<(IpNet, Value)>);

/// An address or network key: `10.0.0.0/8`, `10.1.2.3`, `10.1.2.3:25`, `[::1]`, `[::1]:25`.
fn parse_key(key: &str) -> Result<IpNet, String> {
    let k = key.trim();
    if let Ok(net) = k.parse::<IpNet>() {
        if net.trunc() != net {
            return Err(format!("{key} is not a valid CIDR: host bits are set (did you mean {}?)", net.trunc()));
        }
        return Ok(net);
    }
    if let Ok(addr) = k.parse::<std::net::SocketAddr>() {
        return Ok(IpNet::from(addr.ip()));
    }
    let bare = k.trim_start_matches('[').trim_end_matches(']');
    bare.parse::<std::net::IpAddr>().map(IpNet::from).map_err(|_| format!("{key} is not an IP address or CIDR"))
}

impl CidrMap {
    fn set(&mut self, key: &str, value: Value) -> Result<(), String> {
        let net = parse_key(key)?;
        self.0.retain(|(n, _)| *n != net);
        self.0.push((net, value));
        // most specific first
        self.0.sort_by_key(|(n, _)| std::cmp::Reverse(n.prefix_len()));
        Ok(())
    }

    /// The value of the most specific network containing `key`'s address.
    pub fn get(&self, key: &str) -> Result<Option<&Value>, String> {
        let net = parse_key(key)?;
        let ip = net.addr().to_canonical();
        Ok(self.0.iter().find(|(n, _)| n.contains(&ip)).map(|(_, v)| v))
    }
}

impl UserData for CidrMap {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: String| match this.get(&key).map_err(err)? {
            Some(v) => to_lua(lua, v),
            None => Ok(LuaValue::Nil),
        });
        m.add_meta_method_mut(MetaMethod::NewIndex, |lua, this, (key, value): (String, LuaValue)| {
            this.set(&key, from_lua(lua, value)?).map_err(err)
        });
    }
}

/// Installs `kumo.regex_set_map`, `kumo.domain_map` and `kumo.cidr`.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set(
        "new",
        lua.create_function(|lua, map: Option<Table>| {
            let pairs = entries(lua, map)?;
            let set = regex::RegexSet::new(pairs.iter().map(|(k, _)| k)).map_err(err)?;
            Ok(RegexSetMap { set, values: pairs.into_iter().map(|(_, v)| v).collect() })
        })?,
    )?;
    kumo.set("regex_set_map", t)?;
    let t = lua.create_table()?;
    t.set(
        "new",
        lua.create_function(|lua, map: Option<Table>| {
            let mut m = DomainMap::default();
            for (k, v) in entries(lua, map)? {
                m.set(&k, v);
            }
            Ok(m)
        })?,
    )?;
    kumo.set("domain_map", t)?;
    let t = lua.create_table()?;
    t.set(
        "make_map",
        lua.create_function(|lua, map: Option<Table>| {
            let mut m = CidrMap::default();
            for (k, v) in entries(lua, map)? {
                m.set(&k, v).map_err(err)?;
            }
            Ok(m)
        })?,
    )?;
    kumo.set("cidr", t)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn domain_map_prefers_exact_then_the_nearest_wildcard() {
        let mut m = DomainMap::default();
        m.set("*.example.com", json!(1));
        m.set("mail.example.com", json!(2));
        m.set("*.deep.example.com", json!(3));
        assert_eq!(m.get("example.com"), None, "a wildcard does not match its parent");
        assert_eq!(m.get("a.example.com"), Some(&json!(1)));
        assert_eq!(m.get("MAIL.example.com."), Some(&json!(2)));
        assert_eq!(m.get("x.deep.example.com"), Some(&json!(3)));
        assert_eq!(m.get("x.y.example.com"), Some(&json!(1)));
    }

    #[test]
    fn cidr_map_finds_the_most_specific_network() {
        let mut m = CidrMap::default();
        m.set("10.0.0.0/8", json!("wide")).unwrap();
        m.set("10.1.0.0/16", json!("narrow")).unwrap();
        assert_eq!(m.get("10.1.2.3").unwrap(), Some(&json!("narrow")));
        assert_eq!(m.get("10.2.2.3:25").unwrap(), Some(&json!("wide")));
        assert_eq!(m.get("192.0.2.1").unwrap(), None);
        assert!(m.set("10.0.0.1/24", json!(0)).unwrap_err().contains("did you mean 10.0.0.0/24"));
        assert!(m.get("not.an.ip").is_err());
    }
}
