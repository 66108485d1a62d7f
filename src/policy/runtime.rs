//! One server's shared state, built once by `serve` (or by a test) and handed to the policy
//! engines, the queue manager and the HTTP layer through [`crate::policy::Policy`]: the
//! configuration epoch, shutdown, the resolver, the shaping store and core shaping files,
//! throttles and named connection limits, the reloader, the injector, the config monitor's
//! globs and the `kumo.memoize` caches. Nothing of it is process-wide, so two servers in
//! one process keep apart.

use super::inject::Injector;
use super::reload::Reloader;
use crate::dns::{Dns, TestZones};
use crate::runtime::{Epoch, Shutdown};
use crate::shaping::limits::NamedLimits;
use crate::shaping::redis::Redis;
use crate::shaping::store::Store;
use crate::shaping::throttle::{Throttler, Throttles};
use parking_lot::Mutex;
use std::sync::{Arc, OnceLock, Weak};

/// The shared state of one server.
pub struct Runtime {
    /// The configuration epoch.
    pub epoch: Epoch,
    /// Set when the server begins to stop.
    pub shutdown: Shutdown,
    /// Loaded shaping files (watched; changes move the epoch).
    pub shaping: Arc<Store>,
    /// Rate limits by name.
    pub throttles: Arc<dyn Throttler>,
    /// Connection limits by name (`additional_connection_limits`).
    pub named_limits: Arc<NamedLimits>,
    dns: OnceLock<Arc<dyn Dns>>,
    system_dns: OnceLock<Arc<dyn Dns>>,
    core_shaping: OnceLock<Vec<String>>,
    reloader: OnceLock<Weak<Reloader>>,
    injector: OnceLock<Weak<dyn Injector>>,
    pub(crate) monitor_globs: Mutex<Option<Vec<String>>>,
    pub(crate) memoize: super::lua::memoize::Caches,
    fleet: OnceLock<Arc<Redis>>,
}

impl Runtime {
    /// A fresh runtime: epoch 0, in-process throttles, no resolver yet (the system's
    /// answers until [`Runtime::set_dns`]).
    pub fn new() -> Arc<Runtime> {
        let epoch = Epoch::default();
        Arc::new(Runtime {
            shaping: Store::new(epoch.clone()),
            epoch,
            shutdown: Shutdown::default(),
            throttles: Arc::new(Throttles::default()),
            named_limits: Arc::new(NamedLimits::default()),
            dns: OnceLock::new(),
            system_dns: OnceLock::new(),
            core_shaping: OnceLock::new(),
            reloader: OnceLock::new(),
            injector: OnceLock::new(),
            monitor_globs: Mutex::new(None),
            memoize: Default::default(),
            fleet: OnceLock::new(),
        })
    }

    /// Shares throttles, connection limits and automation rules with every node using
    /// `redis` (`configure_redis_throttles`); `node` names this node's leases.
    pub fn share_through(&self, redis: Arc<Redis>, node: &str) {
        if self.fleet.set(redis.clone()).is_err() {
            tracing::warn!("configure_redis_throttles: already sharing; the first configuration stays");
            return;
        }
        self.throttles.share(redis.clone());
        self.named_limits.share(crate::shaping::shared_limits::SharedLimits::new(redis, node));
    }

    /// The fleet's Redis, when configured.
    pub fn fleet(&self) -> Option<&Arc<Redis>> {
        self.fleet.get()
    }

    /// Sets the resolver (once the `init` configuration is known); the first call wins.
    pub fn set_dns(&self, dns: Arc<dyn Dns>) {
        let _ = self.dns.set(dns);
    }

    /// The resolver: the configured one; before `init` has configured one (lookups made
    /// by `init` itself, `wasmta check`), the system's, as KumoMTA's would be.
    pub fn dns(&self) -> Arc<dyn Dns> {
        if let Some(d) = self.dns.get() {
            return d.clone();
        }
        self.system_dns
            .get_or_init(|| match crate::dns::HickoryDns::system() {
                Ok(d) => Arc::new(d),
                Err(e) => {
                    tracing::warn!("dns: no system resolver ({e}); lookups answer NXDOMAIN");
                    Arc::new(TestZones::default())
                }
            })
            .clone()
    }

    /// Sets the deployment's shaping files (`config.use-shaping`); the first call wins.
    pub fn set_core_shaping(&self, files: Vec<String>) {
        if !files.is_empty() {
            let _ = self.core_shaping.set(files);
        }
    }

    /// The deployment's shaping files, if any.
    pub fn core_shaping(&self) -> Option<Vec<String>> {
        self.core_shaping.get().cloned()
    }

    /// Installs the reloader (by `serve`).
    pub fn set_reloader(&self, reloader: &Arc<Reloader>) {
        let _ = self.reloader.set(Arc::downgrade(reloader));
    }

    /// The reloader, once `serve` installed one.
    pub fn reloader(&self) -> Option<Arc<Reloader>> {
        self.reloader.get().and_then(Weak::upgrade)
    }

    /// Asks for a new policy generation (ignored without a reloader, or while one is
    /// being built).
    pub fn request_reload(&self, reason: &str) {
        if let Some(r) = self.reloader() {
            r.request(reason);
        }
    }

    /// Installs the injector policy code hands its messages to (by `serve`, which keeps
    /// it alive).
    pub fn set_injector(&self, injector: &Arc<dyn Injector>) {
        let _ = self.injector.set(Arc::downgrade(injector));
    }

    /// The injector, or why there is none.
    pub fn injector(&self) -> Result<Arc<dyn Injector>, String> {
        self.injector
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "messages can only be injected by a running server (wasmta serve)".into())
    }
}
