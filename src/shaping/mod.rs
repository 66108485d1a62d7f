//! Traffic shaping: KumoMTA's shaping files (parse, merge, look up), the loaded-data store
//! that watches the files and bumps the configuration epoch when they change, automation
//! rules, GCRA throttles and named connection limits, in process or, for a fleet, in
//! Redis.

pub mod automation;
pub mod file;
pub mod limits;
pub mod merge;
pub mod redis;
pub mod shared_limits;
pub mod shared_throttle;
pub mod store;
pub mod throttle;
