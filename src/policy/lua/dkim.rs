//! `kumo.dkim.rsa_sha256_signer{...}` and `kumo.dkim.ed25519_signer{...}`: signer objects
//! for `msg:dkim_sign(signer)` (see [`crate::policy::dkim`]). A bad parameter or an
//! unreadable key is an error naming it, raised where the signer is made.

use super::convert::from_lua;
use crate::policy::dkim::{self, Algorithm, Signer};
use mlua::{Lua, Table, UserData, Value as LuaValue};
use std::sync::Arc;

/// A signer in Lua.
pub struct LuaSigner(pub Arc<Signer>);

impl UserData for LuaSigner {
    fn add_methods<M: mlua::UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(mlua::MetaMethod::ToString, |_, this, ()| Ok(format!("{:?}", this.0)));
    }
}

/// Adds the signer functions to `kumo.dkim` (kept: `set_signing_threads`).
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let module: Table = match kumo.get::<Option<Table>>("dkim")? {
        Some(t) => t,
        None => lua.create_table()?,
    };
    for (name, algorithm) in [("rsa_sha256_signer", Algorithm::RsaSha256), ("ed25519_signer", Algorithm::Ed25519Sha256)]
    {
        let f = lua.create_function(move |lua, params: LuaValue| {
            let fail = |e: String| mlua::Error::runtime(format!("kumo.dkim.{name}: {e}"));
            let params = dkim::params(from_lua(lua, params)?).map_err(fail)?;
            dkim::signer(algorithm, params).map(LuaSigner).map_err(fail)
        })?;
        module.set(name, f)?;
    }
    kumo.set("dkim", module)
}
