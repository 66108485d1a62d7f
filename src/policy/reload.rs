//! Hot reload: a new policy generation is built from the policy file (and the components
//! it loads) when one of those files changes (inotify through `notify`, debounced), on
//! `kumo.bump_config_epoch()`, on `POST /api/admin/bump-config-epoch` and on
//! `wasmta reload`. The new generation replaces the old one atomically; a generation that
//! fails to load or validate is refused, the old one keeps serving, and the error is
//! logged, counted and reported. `init` runs again to learn the new components, but the
//! running listeners, spool and logs stay as they are: changes there are reported as
//! needing a restart.

use super::Policy;
use super::loader::{self, Settings, is_component};
use crate::config::InitConfig;
use parking_lot::Mutex;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// The outcome of the latest reload.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Status {
    /// The generation serving now.
    pub generation: u64,
    /// Whether the latest attempt succeeded.
    pub ok: bool,
    /// Why the latest attempt was refused.
    pub error: Option<String>,
    /// What asked for it.
    pub reason: String,
    /// `init` settings that changed but only apply after a restart.
    pub restart_needed: Vec<String>,
    /// When (RFC 3339).
    pub at: String,
}

/// Rebuilds generations of one running policy.
pub struct Reloader {
    path: PathBuf,
    settings: Settings,
    policy: Policy,
    running: InitConfig,
    serial: tokio::sync::Mutex<()>,
    busy: AtomicBool,
    status: Mutex<Status>,
    watched: Mutex<Vec<PathBuf>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339()
}

/// The settings of two `init`s that differ, named.
fn init_changes(old: &InitConfig, new: &InitConfig) -> Vec<String> {
    let mut out = vec![];
    let differs = |a: &dyn std::fmt::Debug, b: &dyn std::fmt::Debug| format!("{a:?}") != format!("{b:?}");
    if differs(&old.listeners, &new.listeners) {
        out.push("esmtp listeners".to_string());
    }
    if differs(&old.spools, &new.spools) {
        out.push("spools".to_string());
    }
    if differs(&old.logs, &new.logs) {
        out.push("local logs".to_string());
    }
    if differs(&old.http_listeners, &new.http_listeners) {
        out.push("http listeners".to_string());
    }
    if old.shaping != new.shaping {
        out.push("core shaping files".to_string());
    }
    if differs(&old.log_hooks, &new.log_hooks) || differs(&old.log_disposition_hooks, &new.log_disposition_hooks) {
        out.push("log hooks".to_string());
    }
    if old.redis_throttles != new.redis_throttles {
        out.push("configure_redis_throttles".to_string());
    }
    out
}

impl Reloader {
    /// Sets up the server's reloader (in its runtime) and starts watching the policy's files.
    pub fn install(path: &Path, settings: Settings, policy: Policy, running: InitConfig) -> Arc<Reloader> {
        let r = Arc::new(Reloader {
            path: path.to_path_buf(),
            settings,
            policy: policy.clone(),
            running: running.clone(),
            serial: tokio::sync::Mutex::new(()),
            busy: AtomicBool::new(false),
            status: Mutex::new(Status {
                generation: policy.generation(),
                ok: true,
                error: None,
                reason: "start".into(),
                restart_needed: vec![],
                at: now(),
            }),
            watched: Mutex::new(vec![]),
            watcher: Mutex::new(None),
        });
        policy.runtime().set_reloader(&r);
        r.watch(&running);
        r
    }

    /// Asks for a new generation (ignored while one is being built).
    pub fn request(self: &Arc<Self>, reason: &str) {
        if !self.busy.load(Ordering::Acquire) {
            let (r, reason) = (self.clone(), reason.to_string());
            tokio::spawn(async move {
                r.reload(&reason).await;
            });
        }
    }

    /// The latest reload's outcome.
    pub fn status(&self) -> Status {
        self.status.lock().clone()
    }

    /// Builds and installs a new generation, or refuses it.
    pub async fn reload(self: &Arc<Self>, reason: &str) -> Status {
        let _serial = self.serial.lock().await;
        self.busy.store(true, Ordering::Release);
        let started = std::time::Instant::now();
        let loaded = loader::load(&self.path, false, self.settings.clone(), self.policy.runtime()).await;
        self.busy.store(false, Ordering::Release);
        let status = match loaded {
            Ok(loaded) => {
                for p in &loaded.problems {
                    tracing::warn!("{p}");
                }
                let generation = self.policy.replace(&loaded.policy);
                let restart_needed = init_changes(&self.running, &loaded.init);
                if !restart_needed.is_empty() {
                    tracing::warn!(
                        "policy reload: {} changed in the start-up configuration (init, pre_init); they apply after a restart",
                        restart_needed.join(", ")
                    );
                }
                tracing::info!(
                    "policy generation {generation} serving ({reason}; built in {:.0} ms)",
                    started.elapsed().as_secs_f64() * 1e3
                );
                self.watch(&loaded.init);
                crate::metrics::core::reloads().fetch_add(1, Ordering::Relaxed);
                crate::metrics::core::policy_generation().store(generation as i64, Ordering::Relaxed);
                self.policy.runtime().epoch.bump();
                Status { generation, ok: true, error: None, reason: reason.into(), restart_needed, at: now() }
            }
            Err(e) => {
                tracing::error!("policy reload refused, generation {} keeps serving: {e}", self.policy.generation());
                crate::metrics::core::reload_failures().fetch_add(1, Ordering::Relaxed);
                Status {
                    generation: self.policy.generation(),
                    ok: false,
                    error: Some(e),
                    reason: reason.into(),
                    restart_needed: vec![],
                    at: now(),
                }
            }
        };
        *self.status.lock() = status.clone();
        status
    }

    /// Watches the policy file's directory (its `.lua` files: the policy and what it
    /// requires) and every component file.
    fn watch(self: &Arc<Self>, init: &InitConfig) {
        use notify::Watcher;
        let mut dirs: Vec<PathBuf> = vec![];
        let policy = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        dirs.extend(policy.parent().map(Path::to_path_buf));
        for w in &init.wasm {
            let p = std::path::absolute(&w.path).unwrap_or_else(|_| PathBuf::from(&w.path));
            dirs.extend(p.parent().map(Path::to_path_buf));
        }
        // modules required from other directories
        for f in self.policy.source_files() {
            let p = std::path::absolute(&f).unwrap_or(f);
            dirs.extend(p.parent().map(Path::to_path_buf));
        }
        let mut watched = self.watched.lock();
        let mut guard = self.watcher.lock();
        if guard.is_none() {
            let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<PathBuf>();
            let created = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
                if let Ok(event) = event
                    && !matches!(event.kind, notify::EventKind::Access(_))
                {
                    for p in event.paths {
                        let _ = tx.send(p);
                    }
                }
            });
            match created {
                Ok(w) => *guard = Some(w),
                Err(e) => {
                    tracing::warn!("policy: cannot watch files ({e}); reload with `wasmta reload`");
                    return;
                }
            }
            tokio::spawn(debounce(Arc::downgrade(self), rx));
        }
        let Some(w) = guard.as_mut() else { return };
        for d in dirs {
            if !watched.contains(&d) {
                if let Err(e) = w.watch(&d, notify::RecursiveMode::NonRecursive) {
                    tracing::warn!("policy: cannot watch {} ({e})", d.display());
                }
                watched.push(d);
            }
        }
    }

    /// Whether a changed path belongs to the policy.
    fn relevant(&self, path: &Path) -> bool {
        let is_lua = path.extension().is_some_and(|e| e == "lua");
        let policy = std::path::absolute(&self.path).unwrap_or_else(|_| self.path.clone());
        if is_lua && path.parent() == policy.parent() {
            return true;
        }
        if is_lua && self.policy.source_files().iter().any(|f| std::path::absolute(f).ok().as_deref() == Some(path)) {
            return true;
        }
        if is_component(path) {
            let status_init = self.components();
            return status_init.iter().any(|c| std::path::absolute(c).ok().as_deref() == Some(path)) || path == policy;
        }
        false
    }

    fn components(&self) -> Vec<PathBuf> {
        // the components of the serving generation, by name (`wasm:<path>`)
        self.policy.component_paths()
    }
}

/// Collects bursts of file events and reloads once they settle: 100 ms without another
/// change to a policy file, and never later than 500 ms after the first (files written
/// all the time beside the policy neither count nor hold a reload back).
async fn debounce(reloader: std::sync::Weak<Reloader>, mut rx: tokio::sync::mpsc::UnboundedReceiver<PathBuf>) {
    const QUIET: Duration = Duration::from_millis(100);
    const AT_MOST: Duration = Duration::from_millis(500);
    while let Some(first) = rx.recv().await {
        let Some(r) = reloader.upgrade() else { return };
        if !r.relevant(&first) {
            continue;
        }
        let deadline = tokio::time::Instant::now() + AT_MOST;
        let mut quiet_until = tokio::time::Instant::now() + QUIET;
        loop {
            match tokio::time::timeout_at(quiet_until.min(deadline), rx.recv()).await {
                Ok(Some(p)) if r.relevant(&p) => quiet_until = tokio::time::Instant::now() + QUIET,
                Ok(Some(_)) => {}
                Ok(None) => return,
                Err(_) => break,
            }
        }
        r.reload(&format!("{} changed", first.display())).await;
    }
}
