//! KumoMTA's text helpers for Lua: `kumo.string` (plain, non-pattern string operations,
//! public-suffix lookups, minijinja templates, header wrapping), `kumo.encode` (base32,
//! base64 and hex in their padded, unpadded and URL forms), `kumo.digest` (SHA-1, SHA-2,
//! SHA-3, CRC-32 and HMACs, as objects with `hex`, `base64`, ... fields) and `kumo.uuid`.

use super::convert::from_lua;
use data_encoding::Encoding;
use mlua::{Lua, MetaMethod, Table, UserData, UserDataFields, UserDataMethods, Value as LuaValue, Variadic};

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

fn install_string(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("replace", lua.create_function(|_, (s, from, to): (String, String, String)| Ok(s.replace(&from, &to)))?)?;
    t.set(
        "replacen",
        lua.create_function(|_, (s, from, to, n): (String, String, String, usize)| Ok(s.replacen(&from, &to, n)))?,
    )?;
    t.set(
        "split",
        lua.create_function(|_, (s, p): (String, String)| Ok(s.split(&p).map(str::to_string).collect::<Vec<_>>()))?,
    )?;
    t.set(
        "rsplit",
        lua.create_function(|_, (s, p): (String, String)| Ok(s.rsplit(&p).map(str::to_string).collect::<Vec<_>>()))?,
    )?;
    t.set(
        "splitn",
        lua.create_function(|_, (s, n, p): (String, usize, String)| {
            Ok(s.splitn(n, &p).map(str::to_string).collect::<Vec<_>>())
        })?,
    )?;
    t.set(
        "rsplitn",
        lua.create_function(|_, (s, n, p): (String, usize, String)| {
            Ok(s.rsplitn(n, &p).map(str::to_string).collect::<Vec<_>>())
        })?,
    )?;
    t.set(
        "split_whitespace",
        lua.create_function(|_, s: String| Ok(s.split_whitespace().map(str::to_string).collect::<Vec<_>>()))?,
    )?;
    t.set(
        "split_ascii_whitespace",
        lua.create_function(|_, s: String| Ok(s.split_ascii_whitespace().map(str::to_string).collect::<Vec<_>>()))?,
    )?;
    t.set("trim", lua.create_function(|_, s: String| Ok(s.trim().to_string()))?)?;
    t.set("trim_start", lua.create_function(|_, s: String| Ok(s.trim_start().to_string()))?)?;
    t.set("trim_end", lua.create_function(|_, s: String| Ok(s.trim_end().to_string()))?)?;
    t.set("starts_with", lua.create_function(|_, (s, p): (String, String)| Ok(s.starts_with(&p)))?)?;
    t.set("ends_with", lua.create_function(|_, (s, p): (String, String)| Ok(s.ends_with(&p)))?)?;
    t.set(
        "psl_domain",
        lua.create_function(|_, s: String| {
            Ok(psl::domain(s.as_bytes()).map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned()))
        })?,
    )?;
    t.set(
        "psl_suffix",
        lua.create_function(|_, s: String| {
            Ok(psl::suffix(s.as_bytes()).map(|d| String::from_utf8_lossy(d.as_bytes()).into_owned()))
        })?,
    )?;
    t.set(
        "psl_domain_is_known",
        lua.create_function(|_, s: String| Ok(psl::domain(s.as_bytes()).is_some_and(|d| d.suffix().is_known())))?,
    )?;
    t.set(
        "psl_suffix_is_known",
        lua.create_function(|_, s: String| Ok(psl::suffix(s.as_bytes()).is_some_and(|d| d.is_known())))?,
    )?;
    t.set(
        "eval_template",
        lua.create_function(|lua, (name, source, context, dialect): (String, String, LuaValue, Option<String>)| {
            if dialect.as_deref().is_some_and(|d| d != "Jinja") {
                return Err(err(format!(
                    "kumo.string.eval_template: dialect {dialect:?} is not supported by wasmta (Jinja only)"
                )));
            }
            let mut env = minijinja::Environment::new();
            env.add_template(&name, &source).map_err(err)?;
            let context = from_lua(lua, context)?;
            env.get_template(&name)
                .and_then(|t| t.render(minijinja::Value::from(minijinja::value::Serde(context))))
                .map_err(err)
        })?,
    )?;
    t.set(
        "wrap",
        lua.create_function(|_, (text, soft, hard): (String, Option<usize>, Option<usize>)| {
            Ok(wrap(&text, soft.unwrap_or(75), hard.unwrap_or(900)))
        })?,
    )?;
    kumo.set("string", t)
}

/// Folds a header value: breaks (`\r\n\t`) at whitespace to keep lines under `soft`,
/// and cuts words longer than `hard`.
pub fn wrap(text: &str, soft: usize, hard: usize) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / soft.max(1) * 3);
    let mut line = 0;
    for word in text.split_whitespace() {
        let mut word = word;
        if line > 0 && line + 1 + word.len() > soft {
            out.push_str("\r\n\t");
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        while word.len() > hard {
            let mut cut = hard;
            while !word.is_char_boundary(cut) {
                cut -= 1;
            }
            out.push_str(&word[..cut]);
            out.push_str("\r\n\t");
            word = &word[cut..];
        }
        out.push_str(word);
        line += word.len();
    }
    out
}

const ENCODINGS: [(&str, Encoding); 9] = [
    ("base32", data_encoding::BASE32),
    ("base32_nopad", data_encoding::BASE32_NOPAD),
    ("base32hex", data_encoding::BASE32HEX),
    ("base32hex_nopad", data_encoding::BASE32HEX_NOPAD),
    ("base64", data_encoding::BASE64),
    ("base64_nopad", data_encoding::BASE64_NOPAD),
    ("base64url", data_encoding::BASE64URL),
    ("base64url_nopad", data_encoding::BASE64URL_NOPAD),
    ("hex", data_encoding::HEXLOWER_PERMISSIVE),
];

fn install_encode(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    for (name, enc) in ENCODINGS {
        let e = enc.clone();
        t.set(
            format!("{name}_encode"),
            lua.create_function(move |_, s: LuaValue| match s {
                LuaValue::String(s) => Ok(e.encode(&s.as_bytes())),
                _ => Err(err("parameter must be a string")),
            })?,
        )?;
        t.set(
            format!("{name}_decode"),
            lua.create_function(move |lua, s: mlua::LuaString| {
                let bytes = enc.decode(&s.as_bytes()).map_err(|e| err(format!("{name}_decode: {e}")))?;
                lua.create_string(bytes)
            })?,
        )?;
    }
    kumo.set("encode", t)
}

/// A digest or HMAC result, with KumoMTA's fields (`hex`, `base64`, `bytes`, ...).
pub struct Digest(Vec<u8>);

impl UserData for Digest {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        f.add_field_method_get("bytes", |lua, this| lua.create_string(&this.0));
        for (name, enc) in ENCODINGS {
            f.add_field_method_get(name, move |_, this| Ok(enc.encode(&this.0)));
        }
    }
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(data_encoding::HEXLOWER.encode(&this.0)));
    }
}

/// The bytes a digest argument contributes: strings as they are, anything else as JSON.
fn digest_input(lua: &Lua, v: LuaValue) -> mlua::Result<Vec<u8>> {
    match v {
        LuaValue::String(s) => Ok(s.as_bytes().to_vec()),
        other => Ok(serde_json::to_vec(&from_lua(lua, other)?).map_err(err)?),
    }
}

fn hash<D: sha2::Digest>(lua: &Lua, args: Variadic<LuaValue>) -> mlua::Result<Digest> {
    let mut h = D::new();
    for a in args {
        h.update(digest_input(lua, a)?);
    }
    Ok(Digest(h.finalize().to_vec()))
}

fn hmac_of<M: hmac::Mac + hmac::digest::KeyInit>(key: &[u8], msg: &[u8]) -> mlua::Result<Digest> {
    let mut mac = <M as hmac::digest::KeyInit>::new_from_slice(key).map_err(err)?;
    mac.update(msg);
    Ok(Digest(mac.finalize().into_bytes().to_vec()))
}

/// An HMAC key: inline `{ key_data = '...' }` or a file path.
fn key_bytes(key: LuaValue) -> mlua::Result<Vec<u8>> {
    match key {
        LuaValue::String(path) => std::fs::read(&*path.to_str()?).map_err(|e| err(format!("reading the key: {e}"))),
        LuaValue::Table(t) => match t.get::<Option<mlua::LuaString>>("key_data")? {
            Some(data) => Ok(data.as_bytes().to_vec()),
            None => Err(err("an HMAC key is { key_data = '...' } or a file path (vault keys are not supported yet)")),
        },
        other => Err(err(format!("an HMAC key is {{ key_data = '...' }} or a file path, got {}", other.type_name()))),
    }
}

fn install_digest(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("sha1", lua.create_function(hash::<sha1::Sha1>)?)?;
    t.set("sha224", lua.create_function(hash::<sha2::Sha224>)?)?;
    t.set("sha256", lua.create_function(hash::<sha2::Sha256>)?)?;
    t.set("sha384", lua.create_function(hash::<sha2::Sha384>)?)?;
    t.set("sha512", lua.create_function(hash::<sha2::Sha512>)?)?;
    t.set("sha512_256", lua.create_function(hash::<sha2::Sha512_256>)?)?;
    t.set("sha3_256", lua.create_function(hash::<sha3::Sha3_256>)?)?;
    t.set("sha3_384", lua.create_function(hash::<sha3::Sha3_384>)?)?;
    t.set("sha3_512", lua.create_function(hash::<sha3::Sha3_512>)?)?;
    t.set(
        "crc32",
        lua.create_function(|lua, args: Variadic<LuaValue>| {
            let mut h = crc32fast::Hasher::new();
            for a in args {
                h.update(&digest_input(lua, a)?);
            }
            Ok(Digest(h.finalize().to_be_bytes().to_vec()))
        })?,
    )?;
    macro_rules! hmac_fn {
        ($name:literal, $d:ty) => {
            t.set(
                $name,
                lua.create_function(|_, (key, msg): (LuaValue, mlua::LuaString)| {
                    hmac_of::<hmac::Hmac<$d>>(&key_bytes(key)?, &msg.as_bytes())
                })?,
            )?;
        };
    }
    hmac_fn!("hmac_sha1", sha1::Sha1);
    hmac_fn!("hmac_sha224", sha2::Sha224);
    hmac_fn!("hmac_sha256", sha2::Sha256);
    hmac_fn!("hmac_sha384", sha2::Sha384);
    hmac_fn!("hmac_sha512", sha2::Sha512);
    kumo.set("digest", t)
}

/// A UUID with KumoMTA's fields.
pub struct LuaUuid(uuid::Uuid);

impl UserData for LuaUuid {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        f.add_field_method_get("hyphenated", |_, this| Ok(this.0.hyphenated().to_string()));
        f.add_field_method_get("simple", |_, this| Ok(this.0.simple().to_string()));
        f.add_field_method_get("braced", |_, this| Ok(this.0.braced().to_string()));
        f.add_field_method_get("urn", |_, this| Ok(this.0.urn().to_string()));
        f.add_field_method_get("bytes", |lua, this| lua.create_string(this.0.as_bytes()));
    }
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(this.0.hyphenated().to_string()));
    }
}

/// The node id for time-based UUIDs: random, chosen once per process.
fn node_id() -> [u8; 6] {
    static NODE: std::sync::OnceLock<[u8; 6]> = std::sync::OnceLock::new();
    *NODE.get_or_init(|| {
        let mut n: [u8; 6] = rand::random();
        n[0] |= 0x01; // the multicast bit marks a node id that is not a MAC address
        n
    })
}

fn install_uuid(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let t = lua.create_table()?;
    t.set("new_v1", lua.create_function(|_, ()| Ok(LuaUuid(uuid::Uuid::now_v1(&node_id()))))?)?;
    t.set("new_v4", lua.create_function(|_, ()| Ok(LuaUuid(uuid::Uuid::new_v4())))?)?;
    t.set("new_v6", lua.create_function(|_, ()| Ok(LuaUuid(uuid::Uuid::now_v6(&node_id()))))?)?;
    t.set("new_v7", lua.create_function(|_, ()| Ok(LuaUuid(uuid::Uuid::now_v7())))?)?;
    t.set(
        "parse",
        lua.create_function(|_, s: String| {
            uuid::Uuid::try_parse(&s).map(LuaUuid).map_err(|e| err(format!("kumo.uuid.parse({s:?}): {e}")))
        })?,
    )?;
    kumo.set("uuid", t)
}

/// Installs `kumo.string`, `kumo.encode`, `kumo.digest` and `kumo.uuid`.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    install_string(lua, kumo)?;
    install_encode(lua, kumo)?;
    install_digest(lua, kumo)?;
    install_uuid(lua, kumo)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wraps_at_whitespace_and_cuts_long_words() {
        assert_eq!(wrap("a b c", 3, 900), "a b\r\n\tc");
        assert_eq!(wrap(&"x".repeat(10), 75, 4), "xxxx\r\n\txxxx\r\n\txx");
        assert_eq!(wrap("  short  ", 75, 900), "short");
    }
}
