//! Loading shaping files with KumoMTA's load options, and the server's store of loaded
//! data: one load per distinct (files, options), shared by every Lua context and engine.
//! The files are watched (inotify through `notify`, on their directories so editors that
//! replace files are seen); a change marks the data stale and bumps the configuration
//! epoch, so `Epoch` egress paths refresh within about a second. A reload that fails keeps
//! the last good data serving and logs why.

use super::file::ShapingFile;
use super::merge::{Issue, Shaping};
use crate::dns::Dns;
use crate::runtime::Epoch;
use parking_lot::Mutex;
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

/// The name of wasmta's default shaping file, built into the binary.
pub const DEFAULT_SHAPING: &str = "wasmta:default-shaping.toml";
const DEFAULT_SHAPING_TEXT: &str = include_str!("../../policy/shaping.toml");
/// Where KumoMTA installs its default shaping file; configs name it in `extra_files`.
pub const KUMOMTA_DEFAULT_SHAPING: &str = "/opt/kumomta/share/policy-extras/shaping.toml";

/// What a load option does with a kind of problem.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
pub enum Check {
    Ignore,
    Warn,
    Error,
}

/// `kumo.shaping.load(paths, options)`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LoadOptions {
    pub aliased_site: Check,
    pub dns_fail: Check,
    pub null_mx: Check,
    pub provider_overlap: Check,
    /// http(s) files (not fetched by wasmta).
    pub remote_load: Check,
    /// Local files that cannot be read or parsed.
    pub local_load: Check,
    pub skip_remote: bool,
    #[serde(with = "crate::config::units::opt_duration")]
    pub http_timeout: Option<std::time::Duration>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            aliased_site: Check::Warn,
            dns_fail: Check::Warn,
            null_mx: Check::Warn,
            provider_overlap: Check::Warn,
            remote_load: Check::Ignore,
            local_load: Check::Error,
            skip_remote: false,
            http_timeout: None,
        }
    }
}

/// Loaded shaping data.
pub struct Loaded {
    pub shaping: Shaping,
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
    /// CRC-32 of the files' text.
    pub hash: String,
    /// Local files it was read from.
    pub files: Vec<PathBuf>,
}

fn sort(level: Check, text: String, errors: &mut Vec<String>, warnings: &mut Vec<String>) {
    match level {
        Check::Ignore => {}
        Check::Warn => warnings.push(text),
        Check::Error => errors.push(text),
    }
}

/// Reads, parses and merges `paths` in order (no caching).
pub async fn load_uncached(paths: &[String], options: &LoadOptions, dns: &dyn Dns) -> Loaded {
    let (mut errors, mut warnings) = (vec![], vec![]);
    let mut files = vec![];
    let mut local = vec![];
    let mut hasher = crc32fast::Hasher::new();
    for path in paths {
        let text =
            if path == DEFAULT_SHAPING || (path == KUMOMTA_DEFAULT_SHAPING && !std::path::Path::new(path).exists()) {
                // KumoMTA's packaged default, where it is not installed: ours stands in
                DEFAULT_SHAPING_TEXT.to_string()
            } else if path.starts_with("http://") || path.starts_with("https://") {
                if !options.skip_remote {
                    let text = format!("{path}: remote shaping files are not fetched by wasmta (remote_load)");
                    sort(options.remote_load, text, &mut errors, &mut warnings);
                }
                continue;
            } else {
                local.push(PathBuf::from(path));
                match std::fs::read_to_string(path) {
                    Ok(t) => t,
                    Err(e) => {
                        sort(options.local_load, format!("{path}: {e}"), &mut errors, &mut warnings);
                        continue;
                    }
                }
            };
        hasher.update(text.as_bytes());
        match ShapingFile::parse(path, &text) {
            Ok(f) => files.push(f),
            Err(e) => {
                for e in e {
                    sort(options.local_load, e, &mut errors, &mut warnings);
                }
            }
        }
    }
    let mut shaping = Shaping::build(files, dns).await;
    for (issue, text) in std::mem::take(&mut shaping.issues) {
        let level = match issue {
            Issue::AliasedSite => options.aliased_site,
            Issue::DnsFail => options.dns_fail,
            Issue::NullMx => options.null_mx,
            Issue::ProviderOverlap => options.provider_overlap,
        };
        sort(level, text, &mut errors, &mut warnings);
    }
    Loaded { shaping, errors, warnings, hash: format!("{:08x}", hasher.finalize()), files: local }
}

struct Entry {
    data: Arc<Loaded>,
    stale: bool,
}

/// The loaded shaping data of one server, its file watcher, and the epoch it moves.
pub struct Store {
    epoch: Epoch,
    entries: Mutex<HashMap<String, Entry>>,
    watched: Mutex<Vec<PathBuf>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    latest: Mutex<Option<Arc<Loaded>>>,
    myself: Weak<Store>,
}

fn key(paths: &[String], options: &LoadOptions) -> String {
    format!("{}\n{}", paths.join("\n"), serde_json::to_string(options).unwrap_or_default())
}

impl Store {
    /// An empty store whose file changes move `epoch`.
    pub fn new(epoch: Epoch) -> Arc<Store> {
        Arc::new_cyclic(|myself| Store {
            epoch,
            entries: Mutex::default(),
            watched: Mutex::default(),
            watcher: Mutex::default(),
            latest: Mutex::default(),
            myself: myself.clone(),
        })
    }

    /// The shaping data for `paths` and `options`: loaded once, reloaded after a file
    /// changed. Errors come back only when there is no earlier good load to keep serving.
    pub async fn load(&self, paths: &[String], options: &LoadOptions, dns: &dyn Dns) -> Result<Arc<Loaded>, String> {
        let k = key(paths, options);
        let previous = {
            let entries = self.entries.lock();
            match entries.get(&k) {
                Some(e) if !e.stale => return Ok(e.data.clone()),
                Some(e) => Some(e.data.clone()),
                None => None,
            }
        };
        let fresh = load_uncached(paths, options, dns).await;
        self.watch(&fresh.files);
        if !fresh.errors.is_empty() {
            let text = fresh.errors.join("; ");
            if let Some(old) = previous {
                tracing::error!("shaping: reload refused, the previous data keeps serving: {text}");
                crate::metrics::core::shaping_reload_failures().fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                self.entries.lock().insert(k, Entry { data: old.clone(), stale: false });
                return Ok(old);
            }
            return Err(text);
        }
        for w in &fresh.warnings {
            tracing::warn!("shaping: {w}");
        }
        if previous.is_some() {
            tracing::info!("shaping: reloaded {} (hash {})", paths.join(", "), fresh.hash);
        }
        let data = Arc::new(fresh);
        self.entries.lock().insert(k, Entry { data: data.clone(), stale: false });
        *self.latest.lock() = Some(data.clone());
        Ok(data)
    }

    /// The most recently loaded shaping data: where the automation rules come from.
    pub fn latest(&self) -> Option<Arc<Loaded>> {
        self.latest.lock().clone()
    }

    /// Marks every load that read `path` stale and moves the configuration epoch.
    fn changed(&self, path: &std::path::Path) {
        let mut hit = false;
        for e in self.entries.lock().values_mut() {
            if e.data.files.iter().any(|f| f == path) {
                e.stale = true;
                hit = true;
            }
        }
        if hit {
            tracing::info!("shaping: {} changed", path.display());
            self.epoch.bump();
        }
    }

    /// Starts watching the directories of `files` (once per file).
    fn watch(&self, files: &[PathBuf]) {
        use notify::Watcher;
        let mut watched = self.watched.lock();
        let new: Vec<PathBuf> = files
            .iter()
            .map(|f| std::path::absolute(f).unwrap_or_else(|_| f.clone()))
            .filter(|f| !watched.contains(f))
            .collect();
        if new.is_empty() {
            return;
        }
        let mut guard = self.watcher.lock();
        if guard.is_none() {
            let store = self.myself.clone();
            let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let (Ok(event), Some(store)) = (event, store.upgrade())
                    && !matches!(event.kind, notify::EventKind::Access(_))
                {
                    for p in &event.paths {
                        store.changed(p);
                    }
                }
            });
            match watcher {
                Ok(w) => *guard = Some(w),
                Err(e) => {
                    tracing::warn!("shaping: cannot watch files ({e}); changes need a restart");
                    return;
                }
            }
        }
        let Some(w) = guard.as_mut() else { return };
        for f in new {
            let dir = f.parent().map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            if !watched.iter().any(|p| p.parent() == Some(dir.as_path()))
                && let Err(e) = w.watch(&dir, notify::RecursiveMode::NonRecursive)
            {
                tracing::warn!("shaping: cannot watch {} ({e})", dir.display());
            }
            watched.push(f);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn load_options_sort_problems() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[\"unresolvable.example\"]\nconnection_limit = 6\n").unwrap();
        let paths = vec![path.display().to_string(), "https://tsa.example/shaping.toml".to_string()];
        let dns = crate::dns::TestZones::default();
        let warn = load_uncached(&paths, &LoadOptions::default(), &dns).await;
        assert!(warn.errors.is_empty(), "{:?}", warn.errors);
        assert!(warn.warnings.iter().any(|w| w.contains("dns_fail")), "{:?}", warn.warnings);
        let strict = LoadOptions { dns_fail: Check::Error, remote_load: Check::Error, ..Default::default() };
        let e = load_uncached(&paths, &strict, &dns).await;
        assert!(e.errors.iter().any(|w| w.contains("dns_fail")), "{:?}", e.errors);
        assert!(e.errors.iter().any(|w| w.contains("remote_load")), "{:?}", e.errors);
        let missing = vec!["/nonexistent/s.toml".to_string()];
        assert!(!load_uncached(&missing, &LoadOptions::default(), &dns).await.errors.is_empty(), "local_load = Error");
    }

    #[tokio::test]
    async fn a_broken_edit_keeps_the_last_good_data() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s.toml");
        std::fs::write(&path, "[\"x.example\"]\nmx_rollup = false\nconnection_limit = 3\n").unwrap();
        let paths = vec![path.display().to_string()];
        let opts = LoadOptions::default();
        let dns = crate::dns::TestZones::default();
        let store = Store::new(Epoch::default());
        let first = store.load(&paths, &opts, &dns).await.unwrap();
        std::fs::write(&path, "[\"x.example\"]\nmx_rollup = false\nconection_limit = 4\n").unwrap();
        store.changed(&std::path::absolute(&path).unwrap());
        let kept = store.load(&paths, &opts, &dns).await.unwrap();
        assert!(Arc::ptr_eq(&first, &kept), "the broken file was refused");
        std::fs::write(&path, "[\"x.example\"]\nmx_rollup = false\nconnection_limit = 5\n").unwrap();
        store.changed(&std::path::absolute(&path).unwrap());
        let next = store.load(&paths, &opts, &dns).await.unwrap();
        assert_eq!(next.shaping.egress_path_params("x.example", "s", "x.example", &dns).await["connection_limit"], 5);
    }
}
