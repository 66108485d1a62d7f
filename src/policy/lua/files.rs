//! `kumo.glob`, `kumo.uncached_glob`, `kumo.read_dir` and their `kumo.fs.*` names, and
//! `kumo.time` (`now`, `sleep`, `start_timer`, `parse_duration`) as KumoMTA documents
//! them. Globs are cached for their `ttl` (default 60 s) per pattern and directory, as
//! KumoMTA's are; missing directories simply match nothing.

use mlua::{Lua, MetaMethod, Table, UserData, UserDataFields, UserDataMethods, Value as LuaValue};
use parking_lot::Mutex;
use std::collections::HashMap;
use std::time::{Duration, Instant};

fn err(e: impl std::fmt::Display) -> mlua::Error {
    mlua::Error::runtime(e.to_string())
}

/// Paths matching `pattern`, relative to `relative_to` unless the pattern is absolute.
fn glob_now(pattern: &str, relative_to: &str) -> Result<Vec<String>, String> {
    let full = if pattern.starts_with('/') { pattern.to_string() } else { format!("{relative_to}/{pattern}") };
    let mut out = vec![];
    for entry in glob::glob(&full).map_err(|e| format!("glob {pattern:?}: {e}"))? {
        match entry {
            Ok(path) => out.push(path.to_str().ok_or_else(|| format!("{}: not UTF-8", path.display()))?.to_string()),
            // an unreadable directory matches nothing, as a missing one does
            Err(_) => continue,
        }
    }
    Ok(out)
}

type GlobCache = Mutex<HashMap<(String, String), (Instant, Result<Vec<String>, String>)>>;

fn glob_cache() -> &'static GlobCache {
    static C: std::sync::OnceLock<GlobCache> = std::sync::OnceLock::new();
    C.get_or_init(Default::default)
}

fn cached_glob(pattern: String, relative_to: Option<String>, ttl: Option<f64>) -> Result<Vec<String>, String> {
    let relative_to = relative_to.unwrap_or_else(|| ".".into());
    let ttl = Duration::from_secs_f64(ttl.unwrap_or(60.0).max(0.0));
    let key = (pattern.clone(), relative_to.clone());
    if let Some((at, hit)) = glob_cache().lock().get(&key)
        && at.elapsed() < ttl
    {
        return hit.clone();
    }
    let result = glob_now(&pattern, &relative_to);
    glob_cache().lock().insert(key, (Instant::now(), result.clone()));
    result
}

fn read_dir(path: String) -> Result<Vec<String>, String> {
    let entries = std::fs::read_dir(&path).map_err(|e| format!("read_dir {path}: {e}"))?;
    let mut out = vec![];
    for e in entries {
        let e = e.map_err(|e| format!("read_dir {path}: {e}"))?;
        out.push(std::path::Path::new(&path).join(e.file_name()).to_string_lossy().into_owned());
    }
    Ok(out)
}

/// `kumo.time.start_timer(label)`: records its elapsed time in `user_lua_latency{label}`.
pub struct Timer {
    label: String,
    started: Instant,
    done: bool,
}

impl UserData for Timer {
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method_mut("done", |_, this, ()| {
            if this.done {
                return Ok(None);
            }
            this.done = true;
            let elapsed = this.started.elapsed();
            crate::metrics::histogram(
                "user_lua_latency",
                "Latency of code timed with kumo.time.start_timer, by label.",
                &[("label", &this.label)],
            )
            .observe(elapsed);
            Ok(Some(elapsed.as_secs_f64()))
        });
        m.add_meta_method_mut(MetaMethod::Close, |_, this, ()| {
            if !this.done {
                this.done = true;
                crate::metrics::histogram(
                    "user_lua_latency",
                    "Latency of code timed with kumo.time.start_timer, by label.",
                    &[("label", &this.label)],
                )
                .observe(this.started.elapsed());
            }
            Ok(())
        });
    }
}

/// A point in time (`kumo.time.now()`).
pub struct Time(chrono::DateTime<chrono::Utc>);

impl UserData for Time {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        use chrono::{Datelike, Timelike};
        f.add_field_method_get("year", |_, t| Ok(t.0.year()));
        f.add_field_method_get("month", |_, t| Ok(t.0.month()));
        f.add_field_method_get("day", |_, t| Ok(t.0.day()));
        f.add_field_method_get("hour", |_, t| Ok(t.0.hour()));
        f.add_field_method_get("minute", |_, t| Ok(t.0.minute()));
        f.add_field_method_get("second", |_, t| Ok(t.0.second()));
        f.add_field_method_get("unix_timestamp", |_, t| Ok(t.0.timestamp()));
        f.add_field_method_get("unix_timestamp_millis", |_, t| Ok(t.0.timestamp_millis()));
        f.add_field_method_get("rfc2822", |_, t| Ok(t.0.to_rfc2822()));
        f.add_field_method_get("rfc3339", |_, t| Ok(t.0.to_rfc3339()));
    }
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_method("format", |_, t, fmt: String| Ok(t.0.format(&fmt).to_string()));
        m.add_method("elapsed", |_, t, ()| Ok((chrono::Utc::now() - t.0).num_nanoseconds().unwrap_or(i64::MAX)));
        m.add_meta_method(MetaMethod::ToString, |_, t, ()| Ok(t.0.format("%Y-%m-%d %H:%M:%S UTC").to_string()));
    }
}

/// A length of time (`kumo.time.parse_duration`).
pub struct TimeDelta(Duration);

impl UserData for TimeDelta {
    fn add_fields<F: UserDataFields<Self>>(f: &mut F) {
        f.add_field_method_get("seconds", |_, d| Ok(d.0.as_secs_f64()));
        f.add_field_method_get("milliseconds", |_, d| Ok(d.0.as_millis() as u64));
        f.add_field_method_get("microseconds", |_, d| Ok(d.0.as_micros() as u64));
        f.add_field_method_get("nanoseconds", |_, d| Ok(d.0.as_nanos() as u64));
        f.add_field_method_get("human", |_, d| Ok(crate::config::units::format_duration(d.0)));
    }
    fn add_methods<M: UserDataMethods<Self>>(m: &mut M) {
        m.add_meta_method(MetaMethod::ToString, |_, d, ()| Ok(crate::config::units::format_duration(d.0)));
    }
}

/// Installs the file and time functions.
pub fn install(lua: &Lua, kumo: &Table) -> mlua::Result<()> {
    let glob = lua.create_function(|_, (p, rel, ttl): (String, Option<String>, Option<f64>)| {
        cached_glob(p, rel, ttl).map_err(err)
    })?;
    let uncached = lua.create_function(|_, (p, rel): (String, Option<String>)| {
        glob_now(&p, rel.as_deref().unwrap_or(".")).map_err(err)
    })?;
    let dir = lua.create_function(|_, path: String| read_dir(path).map_err(err))?;
    let fs = lua.create_table()?;
    for (name, f) in [("glob", &glob), ("uncached_glob", &uncached), ("read_dir", &dir)] {
        fs.set(name, f.clone())?;
        kumo.set(name, f.clone())?;
    }
    kumo.set("fs", fs)?;

    let time = lua.create_table()?;
    time.set("now", lua.create_function(|_, ()| Ok(Time(chrono::Utc::now())))?)?;
    time.set(
        "sleep",
        lua.create_async_function(|_, secs: f64| async move {
            tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
            Ok(())
        })?,
    )?;
    let timer = lua.create_function(|_, label: String| Ok(Timer { label, started: Instant::now(), done: false }))?;
    time.set("start_timer", timer)?;
    time.set(
        "parse_duration",
        lua.create_function(|_, v: LuaValue| {
            let d = match v {
                LuaValue::Integer(n) if n >= 0 => Duration::from_secs(n as u64),
                LuaValue::Number(f) if f >= 0.0 => Duration::from_secs_f64(f),
                LuaValue::String(s) => crate::config::units::parse_duration(&s.to_str()?).map_err(err)?,
                other => return Err(err(format!("kumo.time.parse_duration: expected a duration, got {other:?}"))),
            };
            Ok(TimeDelta(d))
        })?,
    )?;
    kumo.set("time", time)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_directories() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.toml"), "").unwrap();
        std::fs::write(dir.path().join("b.json"), "").unwrap();
        let rel = dir.path().to_str().unwrap().to_string();
        assert_eq!(glob_now("*.toml", &rel).unwrap(), vec![format!("{rel}/a.toml")]);
        assert!(glob_now("/nonexistent-dir-x/*.toml", &rel).unwrap().is_empty());
        let mut all = read_dir(rel.clone()).unwrap();
        all.sort();
        assert_eq!(all, vec![format!("{rel}/a.toml"), format!("{rel}/b.json")]);
        assert!(read_dir(format!("{rel}/missing")).is_err());
    }
}
