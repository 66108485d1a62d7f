//! `kumo.memoize(fn, { name, ttl, capacity, invalidate_with_epoch })`: a cache per `name`,
//! shared by every Lua context and policy generation of the server (it lives in the
//! server's runtime), as in KumoMTA. Keys are
//! the arguments as JSON; only plain values (nil, booleans, numbers, strings and tables of
//! them) are cached — anything else (userdata, functions) is returned uncached, so a cached
//! call never returns something different in kind from an uncached one. Entries expire after
//! `ttl`, the least recently used goes when `capacity` is reached, and with
//! `invalidate_with_epoch` a configuration epoch bump empties the cache.

use super::convert::{from_lua, to_lua};
use crate::runtime::Epoch;
use mlua::{Function, Lua, MultiValue, Value as LuaValue};
use parking_lot::Mutex;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The options table.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Options {
    name: String,
    #[serde(with = "crate::config::units::duration")]
    ttl: Duration,
    capacity: usize,
    #[serde(default)]
    invalidate_with_epoch: bool,
    // accepted for compatibility; a populate is never abandoned here
    #[serde(default)]
    populate_timeout: Option<Value>,
    #[serde(default)]
    retry_on_populate_timeout: Option<Value>,
    #[serde(default)]
    allow_stale_reads: Option<Value>,
}

struct Entry {
    values: Vec<Value>,
    expires: Instant,
    epoch: u64,
    used: u64,
}

struct Cache {
    ttl: Duration,
    capacity: usize,
    invalidate_with_epoch: bool,
    entries: HashMap<String, Entry>,
    clock: u64,
}

impl Cache {
    fn get(&mut self, key: &str, epoch: u64) -> Option<Vec<Value>> {
        self.clock += 1;
        let clock = self.clock;
        let fresh = |e: &Entry| e.expires > Instant::now() && (!self.invalidate_with_epoch || e.epoch == epoch);
        match self.entries.get_mut(key) {
            Some(e) if fresh(e) => {
                e.used = clock;
                Some(e.values.clone())
            }
            Some(_) => {
                self.entries.remove(key);
                None
            }
            None => None,
        }
    }

    fn put(&mut self, key: String, values: Vec<Value>, epoch: u64) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&key) {
            let now = Instant::now();
            self.entries.retain(|_, e| e.expires > now);
            if self.entries.len() >= self.capacity
                && let Some(oldest) = self.entries.iter().min_by_key(|(_, e)| e.used).map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.clock += 1;
        let entry = Entry { values, expires: Instant::now() + self.ttl, epoch, used: self.clock };
        self.entries.insert(key, entry);
    }
}

/// The caches of one server, by name.
#[derive(Default)]
pub struct Caches(Mutex<HashMap<String, Arc<Mutex<Cache>>>>);

/// The cache called `name`, made (or re-sized) with these options.
fn cache(caches: &Caches, o: &Options) -> Arc<Mutex<Cache>> {
    let mut all = caches.0.lock();
    let c = all.entry(o.name.clone()).or_insert_with(|| {
        Arc::new(Mutex::new(Cache {
            ttl: o.ttl,
            capacity: o.capacity,
            invalidate_with_epoch: o.invalidate_with_epoch,
            entries: HashMap::new(),
            clock: 0,
        }))
    });
    {
        // a reloaded policy may change the options of an existing cache
        let mut g = c.lock();
        g.ttl = o.ttl;
        g.capacity = o.capacity;
        g.invalidate_with_epoch = o.invalidate_with_epoch;
    }
    c.clone()
}

/// True when `v` converts to JSON and back without changing kind.
fn plain(v: &LuaValue, depth: usize) -> bool {
    match v {
        LuaValue::Nil | LuaValue::Boolean(_) | LuaValue::Integer(_) | LuaValue::Number(_) | LuaValue::String(_) => true,
        LuaValue::Table(t) if depth < 32 => t.pairs::<LuaValue, LuaValue>().all(|p| match p {
            Ok((k, v)) => matches!(k, LuaValue::String(_) | LuaValue::Integer(_)) && plain(&v, depth + 1),
            Err(_) => false,
        }),
        _ => false,
    }
}

/// `kumo.memoize`.
pub fn memoize(lua: &Lua, runtime: &crate::policy::Runtime, (f, opts): (Function, LuaValue)) -> mlua::Result<Function> {
    let options: Options =
        serde_json::from_value(from_lua(lua, opts)?).map_err(|e| mlua::Error::runtime(format!("kumo.memoize: {e}")))?;
    let _ = (&options.populate_timeout, &options.retry_on_populate_timeout, &options.allow_stale_reads);
    let cache = cache(&runtime.memoize, &options);
    let epoch: Epoch = runtime.epoch.clone();
    lua.create_async_function(move |lua, args: MultiValue| {
        let (f, cache, epoch) = (f.clone(), cache.clone(), epoch.get());
        async move {
            let key = if args.iter().all(|a| plain(a, 0)) {
                let list: mlua::Result<Vec<Value>> = args.iter().map(|a| from_lua(&lua, a.clone())).collect();
                list.ok().map(|l| Value::Array(l).to_string())
            } else {
                None
            };
            if let Some(k) = &key
                && let Some(values) = cache.lock().get(k, epoch)
            {
                return values.iter().map(|v| to_lua(&lua, v)).collect::<mlua::Result<MultiValue>>();
            }
            let result: MultiValue = f.call_async(args).await?;
            if let Some(k) = key
                && result.iter().all(|v| plain(v, 0))
            {
                let values: mlua::Result<Vec<Value>> = result.iter().map(|v| from_lua(&lua, v.clone())).collect();
                if let Ok(values) = values {
                    cache.lock().put(k, values, epoch);
                }
            }
            Ok(result)
        }
    })
}
