//! Traffic shaping: KumoMTA's shaping files (parse, merge, look up), the loaded-data store
//! that watches the files and bumps the configuration epoch when they change, automation
//! rules, and GCRA throttles.

pub mod automation;
pub mod file;
pub mod limits;
pub mod merge;
pub mod store;
pub mod throttle;
