//! The real SMTP listener in this process over a spool backend the test controls: for
//! fault injection and for checking what was stored against what was acknowledged.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use wasmta::message::SpoolId;
use wasmta::spool::{Spool, SpoolBackend, SpoolError};

/// A backend that never fails.
pub fn reliable() -> Arc<Faulty> {
    Faulty::new(usize::MAX, || SpoolError::Unhealthy)
}

/// Stores in memory; the first write of the `fail_at`th message fails with `fail_with`
/// (rewrites of stored messages, e.g. after a delivery attempt, do not count). An I/O error
/// latches the backend, as the journal does; a full disk does not.
pub struct Faulty {
    pub fail_at: usize,
    pub fail_with: fn() -> SpoolError,
    ids: parking_lot::Mutex<std::collections::HashSet<SpoolId>>,
    pub removed: parking_lot::Mutex<Vec<SpoolId>>,
    pub stored: AtomicUsize,
    pub broken: AtomicBool,
}

impl Faulty {
    pub fn new(fail_at: usize, fail_with: fn() -> SpoolError) -> Arc<Faulty> {
        Arc::new(Faulty {
            fail_at,
            fail_with,
            ids: Default::default(),
            removed: Default::default(),
            stored: AtomicUsize::new(0),
            broken: AtomicBool::new(false),
        })
    }

    /// Messages stored and not removed.
    pub fn live(&self) -> usize {
        self.stored.load(Ordering::Acquire) - self.removed.lock().len()
    }
}

#[async_trait::async_trait]
impl SpoolBackend for Faulty {
    async fn put(
        &self,
        id: SpoolId,
        _meta: &[u8],
        _prefix: &[u8],
        _body: &wasmta::message::Body,
    ) -> Result<(), SpoolError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(SpoolError::Unhealthy);
        }
        let mut ids = self.ids.lock();
        if ids.insert(id) {
            if ids.len() == self.fail_at {
                let e = (self.fail_with)();
                if matches!(e, SpoolError::Io(_)) {
                    self.broken.store(true, Ordering::Release);
                }
                return Err(e);
            }
            self.stored.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
    async fn remove(&self, id: SpoolId) -> Result<(), SpoolError> {
        self.removed.lock().push(id);
        Ok(())
    }
    fn healthy(&self) -> bool {
        !self.broken.load(Ordering::Acquire)
    }
}

/// Runs one listener on `backend` (deliveries stopped); returns the runtime and address.
pub fn serve(backend: Arc<Faulty>, listener: &[(&str, &str)]) -> (tokio::runtime::Runtime, String) {
    serve_policy(backend, listener, None)
}

/// Runs one listener on `backend`; with a Lua `policy` file, that policy routes and
/// deliveries run, without one there is no policy and nothing is delivered.
pub fn serve_policy(
    backend: Arc<Faulty>,
    listener: &[(&str, &str)],
    policy: Option<&std::path::Path>,
) -> (tokio::runtime::Runtime, String) {
    let dir = super::temp_dir();
    let spool = Spool::with_backend(backend, dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let addr = rt.block_on(async {
        // each server its own runtime: its resolver is the one its policy's init asked for
        let runtime = wasmta::policy::Runtime::new();
        let loaded = match policy {
            Some(path) => {
                Some(wasmta::policy::loader::load(path, false, Default::default(), &runtime).await.expect("policy"))
            }
            None => None,
        };
        let deliver = loaded.is_some();
        let dns = match &loaded {
            Some(l) => wasmta::dns::from_config(&l.init.dns).expect("resolver"),
            None => Arc::new(wasmta::dns::TestZones::default()),
        };
        runtime.set_dns(dns);
        let policy = match loaded {
            Some(l) => l.policy,
            None => wasmta::policy::Policy::new(vec![], runtime.clone()).unwrap(),
        };
        let logs = wasmta::logs::Logs::start(&[], &[], &[], "test-node".into(), None).unwrap();
        let queues = wasmta::queue::QueueManager::new(policy.clone(), spool.clone(), logs.clone(), "mx.test".into());
        if !deliver {
            queues.stop(); // no deliveries: the test is about reception
        }
        let sessions = wasmta::smtp::server::SessionBudget::new(10_000);
        let ctx = Arc::new(wasmta::smtp::server::ServerContext { policy, spool, logs, queues, sessions });
        let mut table = serde_json::Map::new();
        table.insert("listen".into(), "127.0.0.1:0".into());
        for (k, v) in listener {
            table.insert(k.to_string(), v.to_string().into());
        }
        let config = wasmta::config::listener::EsmtpListenerConfig::from_table(table).unwrap();
        let listener = wasmta::smtp::server::EsmtpListener::bind(config).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let (shutdown, rx) = tokio::sync::watch::channel(false);
        std::mem::forget(shutdown); // serve until the runtime is dropped
        tokio::spawn(listener.serve(ctx, rx));
        addr
    });
    std::mem::forget(dir);
    (rt, addr)
}
