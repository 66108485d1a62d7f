//! Inbound authentication for Lua: `kumo.spf.check_host`, `kumo.spf.check_msg`,
//! `kumo.dmarc.check_msg`, `kumo.dkim.verify(msg)` and the `policy-extras.mail_auth`
//! helper (`check`, `iprev`, `iprev_msg`), over [`crate::policy::mail_auth`]. A named
//! resolver argument (KumoMTA's `kumo.dns.define_resolver`, not supported here) is
//! refused with that reason rather than silently using another resolver.

use super::convert::{from_lua, to_lua};
use super::userdata::{LuaConnMeta, LuaMessage};
use crate::message::Message;
use crate::policy::Runtime;
use crate::policy::auth_dns::AuthDns;
use crate::policy::dkim_verify::{self, AuthResult};
use crate::policy::mail_auth::{self, SpfDisposition};
use mlua::{AnyUserData, Lua, Table, UserDataRef, Value as LuaValue};
use serde::Deserialize;
use std::net::IpAddr;
use std::sync::Arc;

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

fn runtime(lua: &Lua, what: &str) -> mlua::Result<Arc<Runtime>> {
    lua.app_data_ref::<Arc<Runtime>>().map(|r| r.clone()).ok_or_else(|| err(format!("{what}: no server here")))
}

pub(super) fn no_named_resolver(what: &str, resolver: &LuaValue) -> mlua::Result<()> {
    match resolver {
        LuaValue::Nil => Ok(()),
        other => Err(err(format!(
            "{what}: named resolvers (kumo.dns.define_resolver) are not supported; got {}: leave it out to use the \
             server's resolver",
            other.to_string().unwrap_or_default()
        ))),
    }
}

fn to_value<T: serde::Serialize>(lua: &Lua, v: &T) -> mlua::Result<LuaValue> {
    to_lua(lua, &serde_json::to_value(v).map_err(err)?)
}

fn meta_string(msg: &Message, key: &str) -> Option<String> {
    msg.get_meta(key).and_then(|v| v.as_str().map(str::to_string))
}

/// The client's address a message came from (`received_from` meta).
fn message_ip(msg: &Message, what: &str) -> mlua::Result<IpAddr> {
    let from = meta_string(msg, "received_from")
        .ok_or_else(|| err(format!("{what}: the message has no received_from meta (it was not received over SMTP)")))?;
    mail_auth::client_ip(&from).ok_or_else(|| err(format!("{what}: received_from {from:?} is not an address")))
}

fn our_hostname(msg: &Message) -> String {
    meta_string(msg, "hostname").unwrap_or_else(|| "localhost".into())
}

/// The envelope sender as text; empty for the null sender.
fn sender_text(msg: &Message) -> String {
    let sender = msg.sender();
    if sender.is_null() { String::new() } else { sender.email() }
}

/// SPF of a received message: its client address, EHLO domain and envelope sender.
async fn msg_spf(auth: &AuthDns, msg: &Message, what: &str) -> mlua::Result<SpfDisposition> {
    let ip = message_ip(msg, what)?;
    let helo = meta_string(msg, "ehlo_domain").unwrap_or_default();
    Ok(mail_auth::check_spf(auth, ip, &helo, &sender_text(msg), &our_hostname(msg)).await)
}

/// DMARC of a received message; the RFC 5321 domain is the sender's, or the EHLO domain
/// for the null sender.
async fn msg_dmarc(
    auth: &AuthDns,
    msg: &Message,
    dkim: &[AuthResult],
    spf: Option<&AuthResult>,
    what: &str,
) -> mlua::Result<SpfDisposition> {
    let data = msg.data().map_err(|e| err(format!("{what}: {e}")))?;
    let sender = msg.sender();
    let domain = if sender.is_null() {
        meta_string(msg, "ehlo_domain").unwrap_or_default()
    } else {
        sender.domain().to_string()
    };
    mail_auth::check_dmarc(auth, &data, dkim, spf, &domain).await.map_err(|e| err(format!("{what}: {e}")))
}

async fn spf_of(lua: &Lua, msg: &Message, what: &str) -> mlua::Result<SpfDisposition> {
    let auth = AuthDns::start(runtime(lua, what)?.dns()).await.map_err(err)?;
    msg_spf(&auth, msg, what).await
}

async fn iprev_of(lua: &Lua, ip: IpAddr) -> mlua::Result<AuthResult> {
    Ok(mail_auth::iprev(runtime(lua, "mail_auth.iprev")?.dns().as_ref(), ip).await)
}

pub(super) async fn dkim_of(lua: &Lua, msg: &Message, what: &str) -> mlua::Result<Vec<AuthResult>> {
    let data = msg.data().map_err(|e| err(format!("{what}: {e}")))?;
    let auth = AuthDns::start(runtime(lua, what)?.dns()).await.map_err(err)?;
    dkim_verify::verify(&data, &auth).await.map_err(err)
}

async fn dmarc_of(
    lua: &Lua,
    msg: &Message,
    dkim: &[AuthResult],
    spf: Option<&AuthResult>,
) -> mlua::Result<SpfDisposition> {
    let what = "kumo.dmarc.check_msg";
    let auth = AuthDns::start(runtime(lua, what)?.dns()).await.map_err(err)?;
    msg_dmarc(&auth, msg, dkim, spf, what).await
}

fn results(lua: &Lua, value: LuaValue, what: &str) -> mlua::Result<Vec<AuthResult>> {
    match value {
        LuaValue::Nil => Ok(vec![]),
        v => crate::config::decode(from_lua(lua, v)?).map_err(|e| err(format!("{what}: {e}"))),
    }
}

/// Adds `kumo.spf`, `kumo.dmarc` and `kumo.dkim.verify`.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let spf = lua.create_table()?;
    spf.set(
        "check_host",
        lua.create_async_function(
            |lua, (domain, conn, sender, resolver): (String, AnyUserData, Option<String>, LuaValue)| async move {
                let what = "kumo.spf.check_host";
                no_named_resolver(what, &resolver)?;
                let conn = conn
                    .borrow::<LuaConnMeta>()
                    .map_err(|_| err(format!("{what}: the second argument is conn_meta")))?;
                let from = conn.0.get("received_from").and_then(|v| v.as_str().map(str::to_string));
                let host = conn.0.get("hostname").and_then(|v| v.as_str().map(str::to_string));
                drop(conn);
                let from = from.ok_or_else(|| err(format!("{what}: conn_meta has no received_from")))?;
                let ip = mail_auth::client_ip(&from)
                    .ok_or_else(|| err(format!("{what}: received_from {from:?} is not an address")))?;
                let auth = AuthDns::start(runtime(&lua, what)?.dns()).await.map_err(err)?;
                let host = host.unwrap_or_else(|| "localhost".into());
                let out = mail_auth::check_host(&auth, ip, &domain, sender.as_deref(), &host).await;
                to_value(&lua, &out)
            },
        )?,
    )?;
    spf.set(
        "check_msg",
        lua.create_async_function(|lua, (msg, resolver): (UserDataRef<LuaMessage>, LuaValue)| {
            let msg = msg.0.clone();
            async move {
                no_named_resolver("kumo.spf.check_msg", &resolver)?;
                let out = spf_of(&lua, &msg, "kumo.spf.check_msg").await?;
                to_value(&lua, &out)
            }
        })?,
    )?;
    kumo.set("spf", spf)?;

    let dmarc = lua.create_table()?;
    dmarc.set(
        "check_msg",
        lua.create_async_function(
            |lua, (msg, dkim, spf, resolver): (UserDataRef<LuaMessage>, LuaValue, LuaValue, LuaValue)| {
                let msg = msg.0.clone();
                async move {
                    let what = "kumo.dmarc.check_msg";
                    no_named_resolver(what, &resolver)?;
                    let dkim = results(&lua, dkim, what)?;
                    let spf: Option<AuthResult> = match spf {
                        LuaValue::Nil => None,
                        v => Some(crate::config::decode(from_lua(&lua, v)?).map_err(|e| err(format!("{what}: {e}")))?),
                    };
                    let out = dmarc_of(&lua, &msg, &dkim, spf.as_ref()).await?;
                    to_value(&lua, &out)
                }
            },
        )?,
    )?;
    kumo.set("dmarc", dmarc)?;

    let dkim: Table = kumo.get("dkim")?;
    dkim.set(
        "verify",
        lua.create_async_function(|lua, (msg, resolver): (UserDataRef<LuaMessage>, LuaValue)| {
            let msg = msg.0.clone();
            async move {
                no_named_resolver("kumo.dkim.verify", &resolver)?;
                let out = dkim_of(&lua, &msg, "kumo.dkim.verify").await?;
                to_value(&lua, &out)
            }
        })?,
    )?;
    Ok(())
}

/// `mail_auth.check`'s options (KumoMTA's `MailAuthConfig`; unknown keys are errors).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CheckConfig {
    #[serde(default = "yes")]
    dkim: bool,
    #[serde(default = "yes")]
    spf: bool,
    #[serde(default = "yes")]
    iprev: bool,
    #[serde(default = "yes")]
    smtp_auth: bool,
    #[serde(default = "yes")]
    dmarc: bool,
    /// ARC is not verified here: `arc = true` (the default) adds no result; see the docs.
    #[serde(default = "yes")]
    #[allow(dead_code)]
    arc: bool,
    #[serde(default = "yes")]
    add_auth_results_header: bool,
    #[serde(default)]
    server_id: Option<String>,
    #[serde(default)]
    resolver: Option<serde_json::Value>,
}

fn yes() -> bool {
    true
}

/// What `mail_auth.check` returns.
#[derive(serde::Serialize)]
struct CheckResult {
    dkim: Vec<AuthResult>,
    spf: Option<AuthResult>,
    iprev: Option<AuthResult>,
    smtp_auth: Option<AuthResult>,
    dmarc: Option<AuthResult>,
    auth_results: Vec<AuthResult>,
}

async fn check(lua: &Lua, msg: &Message, config: CheckConfig) -> mlua::Result<CheckResult> {
    let what = "mail_auth.check";
    if let Some(r) = &config.resolver {
        return Err(err(format!(
            "{what}: resolver = {r}: named resolvers (kumo.dns.define_resolver) are not supported; leave it out to \
             use the server's resolver"
        )));
    }
    let data = msg.data().map_err(|e| err(format!("{what}: {e}")))?;
    let auth = AuthDns::start(runtime(lua, what)?.dns()).await.map_err(err)?;
    let mut all = vec![];
    let mut out =
        CheckResult { dkim: vec![], spf: None, iprev: None, smtp_auth: None, dmarc: None, auth_results: vec![] };
    if config.dkim {
        out.dkim = dkim_verify::verify(&data, &auth).await.map_err(err)?;
        if out.dkim.is_empty() {
            out.dkim.push(AuthResult {
                method: "dkim".into(),
                method_version: None,
                result: "none".into(),
                reason: Some("message was not signed".into()),
                props: Default::default(),
            });
        }
        all.extend(out.dkim.iter().cloned());
    }
    let sender_text = sender_text(msg);
    if config.spf {
        let spf = msg_spf(&auth, msg, what).await?.result;
        all.push(spf.clone());
        out.spf = Some(spf);
    }
    if config.iprev {
        let r = iprev_of(lua, message_ip(msg, what)?).await?;
        all.push(r.clone());
        out.iprev = Some(r);
    }
    if config.smtp_auth {
        let mut props = std::collections::BTreeMap::new();
        props.insert("smtp.mailfrom".to_string(), sender_text.clone());
        let authn = meta_string(msg, "authn_id");
        let result = if let Some(id) = authn {
            props.insert("smtp.auth".into(), id);
            "pass"
        } else {
            "none"
        };
        let r = AuthResult { method: "auth".into(), method_version: None, result: result.into(), reason: None, props };
        all.push(r.clone());
        out.smtp_auth = Some(r);
    }
    if config.dmarc {
        let r = msg_dmarc(&auth, msg, &out.dkim, out.spf.as_ref(), what).await?.result;
        all.push(r.clone());
        out.dmarc = Some(r);
    }
    if config.add_auth_results_header {
        let server_id = config.server_id.clone().unwrap_or_else(|| our_hostname(msg));
        msg.prepend_header("Authentication-Results", &dkim_verify::header_value(&server_id, &all));
    }
    out.auth_results = all;
    Ok(out)
}

/// The `policy-extras.mail_auth` module table.
pub fn module(lua: &Lua) -> mlua::Result<Table> {
    let m = lua.create_table()?;
    m.set(
        "check",
        lua.create_async_function(|lua, (msg, config): (UserDataRef<LuaMessage>, LuaValue)| {
            let msg = msg.0.clone();
            async move {
                let config: CheckConfig = match config {
                    LuaValue::Nil => crate::config::decode(serde_json::json!({})),
                    v => crate::config::decode(from_lua(&lua, v)?),
                }
                .map_err(|e| err(format!("mail_auth.check: {e}")))?;
                let out = check(&lua, &msg, config).await?;
                to_value(&lua, &out)
            }
        })?,
    )?;
    m.set(
        "iprev",
        lua.create_async_function(|lua, (ip, resolver): (String, LuaValue)| async move {
            no_named_resolver("mail_auth.iprev", &resolver)?;
            let ip: IpAddr = ip.parse().map_err(|_| err(format!("mail_auth.iprev: {ip:?} is not an IP address")))?;
            let out = iprev_of(&lua, ip).await?;
            to_value(&lua, &out)
        })?,
    )?;
    m.set(
        "iprev_msg",
        lua.create_async_function(|lua, (msg, resolver): (UserDataRef<LuaMessage>, LuaValue)| {
            let msg = msg.0.clone();
            async move {
                no_named_resolver("mail_auth.iprev_msg", &resolver)?;
                let ip = message_ip(&msg, "mail_auth.iprev_msg")?;
                let out = iprev_of(&lua, ip).await?;
                to_value(&lua, &out)
            }
        })?,
    )?;
    Ok(m)
}
