//! Lua views of wasmta objects: the message, connection metadata, envelope addresses and
//! the config objects returned by `kumo.make_*`.

use super::convert::{from_lua, to_lua};
use crate::message::mailbox::{self, Mailbox};
use crate::message::scheduling::Scheduling;
use crate::message::{EnvelopeAddress, Message, conformance, headers};
use crate::policy::ConnMeta;
use mlua::{Lua, MetaMethod, UserData, UserDataFields, UserDataMethods, Value as LuaValue};
use serde_json::Value;

/// `message` in handlers.
pub struct LuaMessage(pub Message);

/// `conn_meta` in handlers.
pub struct LuaConnMeta(pub ConnMeta);

/// An envelope address (`sender`, `recipient`).
pub struct LuaAddress(pub EnvelopeAddress);

/// An object made by `kumo.make_*`: a validated option table.
pub struct ConfigObject {
    /// Which constructor made it.
    pub kind: &'static str,
    /// Its options.
    pub value: Value,
}

/// Reads an address argument: a string or an address object.
pub fn address_arg(v: &LuaValue) -> mlua::Result<EnvelopeAddress> {
    match v {
        LuaValue::String(s) => {
            let s = s.to_str()?;
            let text = s.trim();
            let parsed =
                if text.starts_with('<') { EnvelopeAddress::parse_path(text) } else { EnvelopeAddress::parse(text) };
            parsed.map_err(|e| mlua::Error::runtime(format!("invalid address {text:?}: {}", e.0)))
        }
        LuaValue::UserData(ud) => Ok(ud.borrow::<LuaAddress>()?.0.clone()),
        other => Err(mlua::Error::runtime(format!("expected an address, got {}", other.type_name()))),
    }
}

fn address_list(v: &LuaValue) -> mlua::Result<Vec<EnvelopeAddress>> {
    match v {
        LuaValue::Table(t) => t.sequence_values::<LuaValue>().map(|a| address_arg(&a?)).collect(),
        other => Ok(vec![address_arg(other)?]),
    }
}

fn header_names(v: Option<mlua::Table>) -> mlua::Result<Vec<String>> {
    match v {
        None => Ok(vec![]),
        Some(t) => t.sequence_values::<String>().map(|s| s.map(|s| s.to_ascii_lowercase())).collect(),
    }
}

impl UserData for LuaMessage {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("id", |_, this, ()| Ok(this.0.id().to_string()));
        m.add_method("sender", |_, this, ()| Ok(LuaAddress(this.0.sender())));
        m.add_method("set_sender", |_, this, v: LuaValue| {
            this.0.set_sender(address_arg(&v)?);
            Ok(())
        });
        m.add_method("recipient", |_, this, ()| Ok(this.0.recipient().map(LuaAddress)));
        m.add_method("recipient_list", |_, this, ()| {
            Ok(this.0.recipients().into_iter().map(LuaAddress).collect::<Vec<_>>())
        });
        m.add_method("set_recipient", |_, this, v: LuaValue| {
            this.0.set_recipients(address_list(&v)?);
            Ok(())
        });
        m.add_method("get_meta", |lua, this, key: String| match this.0.get_meta(&key) {
            Some(v) => to_lua(lua, &v),
            None => Ok(LuaValue::Nil),
        });
        m.add_method("set_meta", |lua, this, (key, value): (String, LuaValue)| {
            this.0.set_meta(&key, from_lua(lua, value)?);
            Ok(())
        });
        m.add_method("get_data", |lua, this, ()| {
            lua.create_string(this.0.data().map_err(mlua::Error::external)?.as_slice())
        });
        m.add_method("set_data", |_, this, data: mlua::LuaString| {
            this.0.set_data(data.as_bytes().to_vec());
            Ok(())
        });
        m.add_method("prepend_header", |_, this, (name, value): (String, String)| {
            this.0.prepend_header(&name, &value);
            Ok(())
        });
        m.add_method("append_header", |_, this, (name, value): (String, String)| {
            this.0.edit_data(|d| headers::append(d, &name, &value)).map_err(mlua::Error::external)?;
            Ok(())
        });
        m.add_method("get_first_named_header_value", |_, this, name: String| {
            this.0.first_header(&name).map_err(mlua::Error::external)
        });
        m.add_method("get_all_named_header_values", |_, this, name: String| {
            this.0.all_headers_named(&name).map_err(mlua::Error::external)
        });
        m.add_method("get_all_headers", |lua, this, ()| {
            let out = lua.create_table()?;
            for (name, value) in this.0.all_headers().map_err(mlua::Error::external)? {
                out.raw_push(lua.create_sequence_from([name, value])?)?;
            }
            Ok(out)
        });
        m.add_method("remove_all_named_headers", |_, this, name: String| {
            this.0
                .edit_data(|d| headers::remove_where(d, |n| n.eq_ignore_ascii_case(&name)))
                .map_err(mlua::Error::external)?;
            Ok(())
        });
        m.add_method("remove_x_headers", |_, this, keep: Option<mlua::Table>| {
            let keep = header_names(keep)?;
            this.0
                .edit_data(|d| {
                    headers::remove_where(d, |n| {
                        let lower = n.to_ascii_lowercase();
                        lower.starts_with("x-") && !keep.contains(&lower)
                    })
                })
                .map_err(mlua::Error::external)?;
            Ok(())
        });
        m.add_method("import_x_headers", |_, this, only: Option<mlua::Table>| {
            let only = header_names(only)?;
            for (name, value) in this.0.all_headers().map_err(mlua::Error::external)? {
                let lower = name.to_ascii_lowercase();
                if lower.starts_with("x-") && (only.is_empty() || only.contains(&lower)) {
                    this.0.set_meta(&lower, Value::String(value));
                }
            }
            Ok(())
        });
        m.add_method("from_header", |_, this, ()| {
            Ok(AddressHeader::of(this.0.first_header("From").map_err(mlua::Error::external)?))
        });
        m.add_method("to_header", |_, this, ()| {
            Ok(AddressHeader::of(this.0.first_header("To").map_err(mlua::Error::external)?))
        });
        m.add_method("get_address_header", |_, this, name: String| {
            Ok(AddressHeader::of(this.0.first_header(&name).map_err(mlua::Error::external)?))
        });
        m.add_method("num_attempts", |_, this, ()| Ok(this.0.num_attempts()));
        m.add_method("increment_num_attempts", |_, this, ()| {
            this.0.set_num_attempts(this.0.num_attempts() + 1);
            Ok(())
        });
        m.add_method("set_scheduling", |lua, this, params: LuaValue| {
            if params.is_nil() {
                this.0.set_scheduling(None);
                return Ok(LuaValue::Nil);
            }
            let value = from_lua(lua, params)?;
            let s =
                Scheduling::parse(value.clone()).map_err(|e| mlua::Error::runtime(format!("set_scheduling: {e}")))?;
            this.0.set_scheduling(Some(s));
            to_lua(lua, &value)
        });
        m.add_method("import_scheduling_header", |lua, this, (name, remove): (String, Option<bool>)| {
            let Some(text) = this.0.first_header(&name).map_err(mlua::Error::external)? else {
                return Ok(LuaValue::Nil);
            };
            let value: Value = serde_json::from_str(&text)
                .map_err(|e| mlua::Error::runtime(format!("import_scheduling_header: {name}: {e}")))?;
            let s = Scheduling::parse(value.clone())
                .map_err(|e| mlua::Error::runtime(format!("import_scheduling_header: {name}: {e}")))?;
            this.0.set_scheduling(Some(s));
            if remove.unwrap_or(false) {
                this.0
                    .edit_data(|d| headers::remove_where(d, |n| n.eq_ignore_ascii_case(&name)))
                    .map_err(mlua::Error::external)?;
            }
            to_lua(lua, &value)
        });
        m.add_method("check_fix_conformance", |_, this, (checks, fixes): (String, Option<String>)| {
            let bad = |e: String| mlua::Error::runtime(format!("check_fix_conformance: {e}"));
            let checks = conformance::flags(&checks).map_err(bad)?;
            let fixes = conformance::flags(fixes.as_deref().unwrap_or("")).map_err(bad)?;
            let data = this.0.data().map_err(mlua::Error::external)?;
            let failing: Vec<&str> = conformance::issues(&data).into_iter().filter(|i| checks.contains(i)).collect();
            if !failing.is_empty() {
                return Ok(Some(format!("Message has conformance issues: {}", failing.join(", "))));
            }
            if !fixes.is_empty() {
                let hostname = crate::config::listener::machine_hostname();
                let fixed = conformance::fix(&data, &fixes, &hostname).map_err(bad)?;
                if fixed[..] != data[..] {
                    this.0.set_data(fixed);
                }
            }
            Ok(None)
        });
        m.add_method("dkim_sign", |_, this, signer: LuaValue| -> mlua::Result<()> {
            let LuaValue::UserData(ud) = signer else {
                return Err(mlua::Error::runtime("dkim_sign: expected a signer from kumo.dkim.*_signer"));
            };
            let signer = ud.borrow::<super::dkim::LuaSigner>()?.0.clone();
            crate::policy::dkim::sign_message(&this.0, &signer).map_err(mlua::Error::runtime)
        });
        m.add_async_method("dkim_verify", |lua, this, resolver: LuaValue| async move {
            super::mail_auth::no_named_resolver("msg:dkim_verify", &resolver)?;
            let results = super::mail_auth::dkim_of(&lua, &this.0, "msg:dkim_verify").await?;
            let value = serde_json::to_value(results).map_err(mlua::Error::external)?;
            super::convert::to_lua(&lua, &value)
        });
        m.add_method("add_authentication_results", |lua, this, (serv_id, results): (String, LuaValue)| {
            let value = super::convert::from_lua(lua, results)?;
            let results: Vec<crate::policy::dkim_verify::AuthResult> = crate::config::decode(value)
                .map_err(|e| mlua::Error::runtime(format!("add_authentication_results: {e}")))?;
            let header = crate::policy::dkim_verify::header_value(&serv_id, &results);
            this.0.prepend_header("Authentication-Results", &header);
            Ok(())
        });
        m.add_method("queue_name", |_, this, ()| Ok(this.0.queue_name()));
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(format!("Message({})", this.0.id())));
    }
}

/// An address header (`msg:from_header()`): `user`, `domain`, `email` and `name` when it
/// holds exactly one mailbox (an error otherwise, as KumoMTA), `list` always.
pub struct AddressHeader(Vec<Mailbox>);

impl AddressHeader {
    fn of(value: Option<String>) -> Option<AddressHeader> {
        value.map(|v| AddressHeader(mailbox::parse(&v)))
    }

    fn single(&self) -> mlua::Result<&Mailbox> {
        match self.0.as_slice() {
            [one] => Ok(one),
            list => Err(mlua::Error::runtime(format!("the header holds {} addresses, not one: use .list", list.len()))),
        }
    }
}

fn mailbox_table(lua: &Lua, m: &Mailbox) -> mlua::Result<mlua::Table> {
    let t = lua.create_table()?;
    t.set("user", m.user())?;
    t.set("domain", m.domain())?;
    t.set("email", m.address.clone())?;
    t.set("name", m.name.clone())?;
    Ok(t)
}

impl UserData for AddressHeader {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        f.add_field_method_get("user", |_, this| Ok(this.single()?.user().to_string()));
        f.add_field_method_get("domain", |_, this| Ok(this.single()?.domain().to_string()));
        f.add_field_method_get("email", |_, this| Ok(this.single()?.address.clone()));
        f.add_field_method_get("name", |_, this| Ok(this.single()?.name.clone()));
        f.add_field_method_get("list", |lua, this| {
            this.0.iter().map(|m| mailbox_table(lua, m)).collect::<mlua::Result<Vec<_>>>()
        });
    }
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| {
            let v = match this.0.as_slice() {
                [one] => serde_json::to_string(one),
                many => serde_json::to_string(many),
            };
            v.map_err(|e| mlua::Error::runtime(e.to_string()))
        });
    }
}

impl UserData for LuaConnMeta {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("get_meta", |lua, this, key: String| match this.0.get(&key) {
            Some(v) => to_lua(lua, &v),
            None => Ok(LuaValue::Nil),
        });
        m.add_method("set_meta", |lua, this, (key, value): (String, LuaValue)| {
            this.0.set(&key, from_lua(lua, value)?);
            Ok(())
        });
    }
}

impl UserData for LuaAddress {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        f.add_field_method_get("user", |_, this| Ok(this.0.user().to_string()));
        f.add_field_method_get("domain", |_, this| Ok(this.0.domain().to_string()));
        f.add_field_method_get("email", |_, this| Ok(this.0.email()));
    }
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(this.0.email()));
        m.add_meta_method(MetaMethod::Eq, |_, this, other: mlua::AnyUserData| {
            Ok(other.borrow::<LuaAddress>().map(|o| o.0 == this.0).unwrap_or(false))
        });
    }
}

impl UserData for ConfigObject {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::Index, |lua, this, key: String| match this.value.get(&key) {
            Some(v) => to_lua(lua, v),
            None => Ok(LuaValue::Nil),
        });
        m.add_meta_method(MetaMethod::ToString, |_, this, ()| Ok(format!("{}({})", this.kind, this.value)));
    }
}

/// `kumo.make_throttle(name, spec)`: a named throttle shared by the whole server.
pub struct LuaThrottle {
    pub name: String,
    pub spec: crate::shaping::throttle::ThrottleSpec,
    pub throttles: std::sync::Arc<dyn crate::shaping::throttle::Throttler>,
}

impl LuaThrottle {
    async fn take(&self) -> Option<std::time::Duration> {
        self.throttles.acquire(&self.name, self.spec).await.err()
    }
}

impl UserData for LuaThrottle {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        // KumoMTA's result: { throttled, limit, retry_after (seconds) }
        m.add_async_method("throttle", |lua, this, ()| async move {
            let wait = this.take().await;
            let t = lua.create_table()?;
            t.set("throttled", wait.is_some())?;
            t.set("limit", this.spec.limit)?;
            t.set("retry_after", wait.map(|w| w.as_secs_f64()))?;
            Ok(t)
        });
        m.add_async_method("sleep_if_throttled", |_, this, ()| async move {
            let mut slept = false;
            while let Some(wait) = this.take().await {
                slept = true;
                tokio::time::sleep(wait).await;
            }
            Ok(slept)
        });
    }
}
