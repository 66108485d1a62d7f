//! Connection metadata (`conn_meta` in KumoMTA): JSON values shared by the session and
//! the policy handlers it calls.

use parking_lot::Mutex;
use serde_json::{Map, Value};
use std::sync::Arc;

/// Shared connection metadata.
#[derive(Clone, Default)]
pub struct ConnMeta(Arc<Mutex<Map<String, Value>>>);

impl ConnMeta {
    /// Metadata preset with `initial`.
    pub fn new(initial: Map<String, Value>) -> Self {
        ConnMeta(Arc::new(Mutex::new(initial)))
    }

    /// One value.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.0.lock().get(key).cloned()
    }

    /// One value as a string.
    pub fn get_str(&self, key: &str) -> Option<String> {
        self.get(key).and_then(|v| v.as_str().map(str::to_string))
    }

    /// Sets (or with `Null`, removes) one value.
    pub fn set(&self, key: &str, value: Value) {
        let mut m = self.0.lock();
        if value.is_null() {
            m.remove(key);
        } else {
            m.insert(key.to_string(), value);
        }
    }

    /// A copy of everything.
    pub fn snapshot(&self) -> Map<String, Value> {
        self.0.lock().clone()
    }
}
