//! `kumo.http` for Lua: `build_client{...}` returning a client whose `get`/`post`/
//! `put`/`patch`/`delete`/`head` make a request builder (`header`, `headers`,
//! `basic_auth`, `bearer_auth`, `body`, `form_url_encoded`, `timeout`, `send`), and the
//! response (`status_code`, `status_reason`, `status_is_*`, `headers`, `text`, `bytes`,
//! `content_length`); `build_url(url, params)`. The client itself is `policy::http`.

use super::convert::from_lua;
use crate::policy::http::{self, ClientOptions};
use mlua::{AnyUserData, Lua, Table, UserData, UserDataMethods, Value as LuaValue};
use parking_lot::Mutex;

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// Adds `build_client` and `build_url` to `kumo.http`.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let module: Table = match kumo.get::<Option<Table>>("http")? {
        Some(t) => t,
        None => lua.create_table()?,
    };
    module.set(
        "build_client",
        lua.create_function(|lua, options: LuaValue| {
            let options: ClientOptions = match options {
                LuaValue::Nil => ClientOptions::default(),
                v => {
                    crate::config::decode(from_lua(lua, v)?).map_err(|e| err(format!("kumo.http.build_client: {e}")))?
                }
            };
            Ok(Client(http::build_client(&options).map_err(err)?))
        })?,
    )?;
    module.set(
        "build_url",
        lua.create_function(|_, (url, params): (String, Option<Table>)| {
            let mut list = vec![];
            if let Some(t) = params {
                for pair in t.pairs::<String, LuaValue>() {
                    let (k, v) = pair?;
                    let v = match v {
                        LuaValue::String(s) => s.to_str()?.to_string(),
                        LuaValue::Integer(i) => i.to_string(),
                        LuaValue::Number(n) => n.to_string(),
                        LuaValue::Boolean(b) => b.to_string(),
                        other => {
                            return Err(err(format!(
                                "kumo.http.build_url: parameter {k}: expected a string or number, got {}",
                                other.type_name()
                            )));
                        }
                    };
                    list.push((k, v));
                }
                // pairs() order is not stable: keep URLs comparable
                list.sort();
            }
            http::build_url(&url, &list).map_err(err)
        })?,
    )?;
    kumo.set("http", module)?;
    Ok(())
}

/// A client (`kumo.http.build_client`): connections are reused across its requests.
struct Client(reqwest::Client);

impl UserData for Client {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        for (name, method) in [
            ("get", reqwest::Method::GET),
            ("post", reqwest::Method::POST),
            ("put", reqwest::Method::PUT),
            ("patch", reqwest::Method::PATCH),
            ("delete", reqwest::Method::DELETE),
            ("head", reqwest::Method::HEAD),
        ] {
            m.add_method(name, move |_, this, url: String| {
                let parsed =
                    reqwest::Url::parse(&url).map_err(|e| err(format!("kumo.http: {url:?} is not a URL: {e}")))?;
                let what = format!("{method} {url}");
                Ok(Request { builder: Mutex::new(Some(this.0.request(method.clone(), parsed))), what })
            });
        }
        // connections close when the client is collected
        m.add_method("close", |_, _, ()| Ok(()));
    }
}

/// A request being built; each builder method returns the request, so calls chain.
struct Request {
    builder: Mutex<Option<reqwest::RequestBuilder>>,
    what: String,
}

impl Request {
    fn apply(
        ud: &AnyUserData,
        edit: impl FnOnce(reqwest::RequestBuilder) -> mlua::Result<reqwest::RequestBuilder>,
    ) -> mlua::Result<()> {
        let this = ud.borrow::<Request>()?;
        let mut slot = this.builder.lock();
        let b = slot.take().ok_or_else(|| err(format!("kumo.http: {}: the request was already sent", this.what)))?;
        *slot = Some(edit(b)?);
        Ok(())
    }
}

fn bytes_of(v: LuaValue) -> mlua::Result<Vec<u8>> {
    match v {
        LuaValue::String(s) => Ok(s.as_bytes().to_vec()),
        LuaValue::UserData(ud) => match ud.borrow::<super::userdata::LuaMessage>() {
            Ok(m) => m.0.data().map(|d| d.to_vec()).map_err(err),
            Err(_) => Err(err("kumo.http: body: expected a string")),
        },
        other => Err(err(format!("kumo.http: body: expected a string, got {}", other.type_name()))),
    }
}

impl UserData for Request {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_function("header", |_, (ud, k, v): (AnyUserData, String, String)| {
            Request::apply(&ud, |b| Ok(b.header(k, v)))?;
            Ok(ud)
        });
        m.add_function("headers", |_, (ud, t): (AnyUserData, Table)| {
            let mut list = vec![];
            for pair in t.pairs::<String, String>() {
                list.push(pair?);
            }
            Request::apply(&ud, |mut b| {
                for (k, v) in list {
                    b = b.header(k, v);
                }
                Ok(b)
            })?;
            Ok(ud)
        });
        m.add_function("basic_auth", |_, (ud, user, password): (AnyUserData, String, Option<String>)| {
            Request::apply(&ud, |b| Ok(b.basic_auth(user, password)))?;
            Ok(ud)
        });
        m.add_function("bearer_auth", |_, (ud, token): (AnyUserData, String)| {
            Request::apply(&ud, |b| Ok(b.bearer_auth(token)))?;
            Ok(ud)
        });
        m.add_function("body", |_, (ud, body): (AnyUserData, LuaValue)| {
            let body = bytes_of(body)?;
            Request::apply(&ud, |b| Ok(b.body(body)))?;
            Ok(ud)
        });
        m.add_function("form_url_encoded", |_, (ud, t): (AnyUserData, Table)| {
            let mut list: Vec<(String, String)> = vec![];
            for pair in t.pairs::<String, String>() {
                list.push(pair?);
            }
            list.sort();
            let encoded = reqwest::Url::parse_with_params("http://x/", &list).map_err(err)?;
            let body = encoded.query().unwrap_or_default().to_string();
            Request::apply(&ud, |b| Ok(b.header("Content-Type", "application/x-www-form-urlencoded").body(body)))?;
            Ok(ud)
        });
        m.add_function("timeout", |_, (ud, d): (AnyUserData, LuaValue)| {
            let text = match d {
                LuaValue::String(s) => s.to_str()?.to_string(),
                LuaValue::Integer(i) => i.to_string(),
                LuaValue::Number(n) => n.to_string(),
                other => {
                    return Err(err(format!("kumo.http: timeout: expected a duration, got {}", other.type_name())));
                }
            };
            let d = crate::config::units::parse_duration(&text).map_err(|e| err(format!("kumo.http: timeout: {e}")))?;
            Request::apply(&ud, |b| Ok(b.timeout(d)))?;
            Ok(ud)
        });
        m.add_async_function("send", |_, ud: AnyUserData| async move {
            let (builder, what) = {
                let this = ud.borrow::<Request>()?;
                let b = this.builder.lock().take();
                (b, this.what.clone())
            };
            let b = builder.ok_or_else(|| err(format!("kumo.http: {what}: the request was already sent")))?;
            http::send(b, &what).await.map(Response).map_err(err)
        });
    }
}

/// A response, read whole.
struct Response(http::Response);

impl UserData for Response {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("status_code", |_, this, ()| Ok(this.0.status.as_u16()));
        m.add_method("status_reason", |_, this, ()| Ok(this.0.status.canonical_reason().unwrap_or("").to_string()));
        m.add_method("status_is_informational", |_, this, ()| Ok(this.0.status.is_informational()));
        m.add_method("status_is_success", |_, this, ()| Ok(this.0.status.is_success()));
        m.add_method("status_is_redirection", |_, this, ()| Ok(this.0.status.is_redirection()));
        m.add_method("status_is_client_error", |_, this, ()| Ok(this.0.status.is_client_error()));
        m.add_method("status_is_server_error", |_, this, ()| Ok(this.0.status.is_server_error()));
        m.add_method("content_length", |_, this, ()| Ok(this.0.body.len()));
        m.add_method("text", |lua, this, ()| lua.create_string(String::from_utf8_lossy(&this.0.body).as_bytes()));
        m.add_method("bytes", |lua, this, ()| lua.create_string(&this.0.body[..]));
        m.add_method("headers", |lua, this, ()| {
            // names are lower-case; a lookup by any case finds them
            let t = lua.create_table()?;
            for (k, v) in &this.0.headers {
                let joined = match t.raw_get::<Option<String>>(k.as_str())? {
                    Some(prev) => format!("{prev}, {v}"),
                    None => v.clone(),
                };
                t.raw_set(k.as_str(), joined)?;
            }
            let meta = lua.create_table()?;
            meta.set(
                "__index",
                lua.create_function(|_, (t, k): (Table, String)| t.raw_get::<LuaValue>(k.to_ascii_lowercase()))?,
            )?;
            t.set_metatable(Some(meta))?;
            Ok(t)
        });
    }
}
