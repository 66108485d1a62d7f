//! `local sqlite = require 'sqlite'`: `sqlite.open(path, busy_timeout_ms)` and
//! `db:execute(sql, params...)` on a bundled SQLite (no system library). As KumoMTA
//! documents it: statements without result columns return the number of rows changed,
//! one-column results a flat list, others a list of rows keyed by column name; several
//! scalar arguments bind `?1, ?2, ...`, one table binds by name (`:name`) or position.
//! Queries run on the blocking pool, never on a session's thread.

use mlua::{Lua, Table, UserData, UserDataMethods, Value as LuaValue, Variadic};
use parking_lot::Mutex;
use rusqlite::types::Value as Sql;
use std::sync::Arc;

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// An open database.
pub struct Db(Arc<Mutex<rusqlite::Connection>>);

/// The parameters of one `execute`.
enum Params {
    Positional(Vec<Sql>),
    Named(Vec<(String, Sql)>),
}

fn to_sql(v: LuaValue) -> mlua::Result<Sql> {
    Ok(match v {
        LuaValue::Nil => Sql::Null,
        LuaValue::Boolean(b) => Sql::Integer(b as i64),
        LuaValue::Integer(i) => Sql::Integer(i),
        LuaValue::Number(n) => Sql::Real(n),
        LuaValue::String(s) => Sql::Text(s.to_str()?.to_string()),
        other => return Err(err(format!("sqlite: cannot bind a {}", other.type_name()))),
    })
}

fn params(args: Variadic<LuaValue>) -> mlua::Result<Params> {
    if let [LuaValue::Table(t)] = args.as_slice() {
        if t.raw_len() > 0 {
            return Ok(Params::Positional(
                t.sequence_values::<LuaValue>().map(|v| to_sql(v?)).collect::<mlua::Result<_>>()?,
            ));
        }
        let mut named = vec![];
        for pair in t.pairs::<String, LuaValue>() {
            let (k, v) = pair?;
            named.push((if k.starts_with([':', '@', '$']) { k } else { format!(":{k}") }, to_sql(v)?));
        }
        return Ok(Params::Named(named));
    }
    Ok(Params::Positional(args.into_iter().map(to_sql).collect::<mlua::Result<_>>()?))
}

/// What `execute` returns, before it becomes Lua.
enum Outcome {
    Changed(usize),
    Column(Vec<Sql>),
    Rows(Vec<Vec<(String, Sql)>>),
}

fn execute(conn: &rusqlite::Connection, sql: &str, params: Params) -> Result<Outcome, String> {
    let mut stmt = conn.prepare(sql).map_err(|e| e.to_string())?;
    let names: Vec<String> = stmt.column_names().map(str::to_string).collect();
    if names.is_empty() {
        let n = match params {
            Params::Positional(p) => stmt.execute(rusqlite::params_from_iter(p)),
            Params::Named(p) => {
                let refs: Vec<(&str, &dyn rusqlite::ToSql)> =
                    p.iter().map(|(k, v)| (k.as_str(), v as &dyn rusqlite::ToSql)).collect();
                stmt.execute(refs.as_slice())
            }
        };
        return n.map(Outcome::Changed).map_err(|e| e.to_string());
    }
    let read = |row: &rusqlite::Row<'_>| -> rusqlite::Result<Vec<Sql>> {
        (0..names.len()).map(|i| row.get::<_, Sql>(i)).collect()
    };
    let rows: Vec<Vec<Sql>> = match params {
        Params::Positional(p) => stmt.query_map(rusqlite::params_from_iter(p), read),
        Params::Named(p) => {
            let refs: Vec<(&str, &dyn rusqlite::ToSql)> =
                p.iter().map(|(k, v)| (k.as_str(), v as &dyn rusqlite::ToSql)).collect();
            stmt.query_map(refs.as_slice(), read)
        }
    }
    .and_then(|rows| rows.collect())
    .map_err(|e| e.to_string())?;
    if names.len() == 1 {
        return Ok(Outcome::Column(rows.into_iter().map(|mut r| r.remove(0)).collect()));
    }
    Ok(Outcome::Rows(rows.into_iter().map(|r| names.iter().cloned().zip(r).collect()).collect()))
}

fn from_sql(lua: &Lua, v: Sql) -> mlua::Result<LuaValue> {
    Ok(match v {
        Sql::Null => LuaValue::Nil,
        Sql::Integer(i) => LuaValue::Integer(i),
        Sql::Real(f) => LuaValue::Number(f),
        Sql::Text(t) => LuaValue::String(lua.create_string(t)?),
        Sql::Blob(b) => LuaValue::String(lua.create_string(b)?),
    })
}

impl UserData for Db {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_async_method("execute", |lua, this, (sql, args): (String, Variadic<LuaValue>)| async move {
            let params = params(args)?;
            let conn = this.0.clone();
            let outcome = tokio::task::spawn_blocking(move || execute(&conn.lock(), &sql, params))
                .await
                .map_err(err)?
                .map_err(|e| err(format!("sqlite: {e}")))?;
            match outcome {
                Outcome::Changed(n) => Ok(LuaValue::Integer(n as i64)),
                Outcome::Column(values) => {
                    let t = lua.create_table()?;
                    for (i, v) in values.into_iter().enumerate() {
                        t.raw_set(i + 1, from_sql(&lua, v)?)?;
                    }
                    Ok(LuaValue::Table(t))
                }
                Outcome::Rows(rows) => {
                    let t = lua.create_table()?;
                    for row in rows {
                        let r = lua.create_table()?;
                        for (k, v) in row {
                            r.set(k, from_sql(&lua, v)?)?;
                        }
                        t.raw_push(r)?;
                    }
                    Ok(LuaValue::Table(t))
                }
            }
        });
    }
}

/// Registers `require 'sqlite'`.
pub fn install(lua: &Lua) -> mlua::Result<()> {
    let module = lua.create_table()?;
    module.set(
        "open",
        lua.create_async_function(|_, (path, busy): (String, Option<u64>)| async move {
            let conn = tokio::task::spawn_blocking(move || {
                let conn = rusqlite::Connection::open(&path).map_err(|e| format!("sqlite.open({path:?}): {e}"))?;
                conn.busy_timeout(std::time::Duration::from_millis(busy.unwrap_or(500))).map_err(|e| e.to_string())?;
                Ok::<_, String>(conn)
            })
            .await
            .map_err(err)?
            .map_err(err)?;
            Ok(Db(Arc::new(Mutex::new(conn))))
        })?,
    )?;
    let loaded: Table = lua.globals().get::<Table>("package")?.get("loaded")?;
    loaded.set("sqlite", module)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_take_kumomtas_shapes() {
        let c = rusqlite::Connection::open_in_memory().unwrap();
        let run = |sql: &str, p: Params| execute(&c, sql, p).unwrap();
        assert!(matches!(run("CREATE TABLE t (a INTEGER, b TEXT)", Params::Positional(vec![])), Outcome::Changed(0)));
        let ins = run(
            "INSERT INTO t VALUES (?1, ?2), (2, 'two')",
            Params::Positional(vec![Sql::Integer(1), Sql::Text("one".into())]),
        );
        assert!(matches!(ins, Outcome::Changed(2)));
        let Outcome::Column(c1) = run("SELECT a FROM t ORDER BY a", Params::Positional(vec![])) else { panic!() };
        assert_eq!(c1, vec![Sql::Integer(1), Sql::Integer(2)]);
        let Outcome::Rows(rows) =
            run("SELECT a, b FROM t WHERE a = :a", Params::Named(vec![(":a".into(), Sql::Integer(2))]))
        else {
            panic!()
        };
        assert_eq!(rows, vec![vec![("a".to_string(), Sql::Integer(2)), ("b".to_string(), Sql::Text("two".into()))]]);
        assert!(execute(&c, "SELEC nonsense", Params::Positional(vec![])).is_err());
    }
}
