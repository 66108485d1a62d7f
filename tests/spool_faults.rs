//! A fault-injecting spool backend under the real SMTP server (in process, real sockets):
//! an fsync error answers 451 for that message, latches the spool unhealthy, and every
//! later transaction is refused at MAIL until a restart; nothing gets a 250 without being
//! stored.

mod harness;

use harness::smtp::Client;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use wasmta::message::SpoolId;
use wasmta::spool::{Spool, SpoolBackend, SpoolError};

/// Stores in memory; the first write of the `fail_at`th message fails like an fsync error
/// and latches (rewrites of stored messages, e.g. after a delivery attempt, do not count).
struct Faulty {
    fail_at: usize,
    ids: parking_lot::Mutex<std::collections::HashSet<SpoolId>>,
    stored: AtomicUsize,
    broken: AtomicBool,
}

#[async_trait::async_trait]
impl SpoolBackend for Faulty {
    async fn put(&self, id: SpoolId, _meta: &[u8], _data: &[u8]) -> Result<(), SpoolError> {
        if self.broken.load(Ordering::Acquire) {
            return Err(SpoolError::Unhealthy);
        }
        let mut ids = self.ids.lock();
        if ids.insert(id) {
            if ids.len() == self.fail_at {
                self.broken.store(true, Ordering::Release);
                return Err(SpoolError::Io("injected: fdatasync failed (EIO)".into()));
            }
            self.stored.fetch_add(1, Ordering::AcqRel);
        }
        Ok(())
    }
    async fn remove(&self, _id: SpoolId) -> Result<(), SpoolError> {
        Ok(())
    }
    fn healthy(&self) -> bool {
        !self.broken.load(Ordering::Acquire)
    }
}

#[test]
fn an_fsync_error_answers_451_and_latches_the_spool() {
    let dir = harness::temp_dir();
    let backend = Arc::new(Faulty {
        fail_at: 3,
        ids: Default::default(),
        stored: AtomicUsize::new(0),
        broken: AtomicBool::new(false),
    });
    let spool = Spool::with_backend(backend.clone(), dir.path());
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (_shutdown, rx) = tokio::sync::watch::channel(false);
    let addr = rt.block_on(async {
        let policy = wasmta::policy::Policy::empty();
        let logs = wasmta::logs::Logs::start(&[], "test-node".into()).unwrap();
        let dns: Arc<dyn wasmta::delivery::dns::Dns> = Arc::new(wasmta::delivery::dns::TestZones::default());
        let queues =
            wasmta::queue::QueueManager::new(policy.clone(), spool.clone(), logs.clone(), dns, "mx.test".into());
        queues.stop(); // no deliveries: this test is about reception
        let ctx = Arc::new(wasmta::smtp::server::ServerContext { policy, spool, logs, queues });
        let mut table = serde_json::Map::new();
        table.insert("listen".into(), "127.0.0.1:0".into());
        let config = wasmta::config::listener::EsmtpListenerConfig::from_table(table).unwrap();
        let listener = wasmta::smtp::server::EsmtpListener::bind(config).await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(listener.serve(ctx, rx));
        addr
    });
    let mut c = Client::ehlo(&addr);
    for i in 0..2 {
        let r = c.send_mail("a@s.example", &["r@dest.example"], &format!("Subject: {i}\r\n\r\nx"));
        assert_eq!(r.code, 250, "{r:?}");
    }
    let r = c.send_mail("a@s.example", &["r@dest.example"], "Subject: fails\r\n\r\nx");
    assert!(r.starts("451 4.3.0"), "the failed write is a temporary failure: {r:?}");
    // latched: later transactions are refused up front
    let r = c.cmd("MAIL FROM:<a@s.example>");
    assert_eq!(r.code, 451, "{r:?}");
    let mut c2 = Client::ehlo(&addr);
    assert_eq!(c2.cmd("MAIL FROM:<b@s.example>").code, 451, "a new connection too");
    assert_eq!(backend.stored.load(Ordering::Acquire), 2, "exactly the two acknowledged messages were stored");
    drop(rt);
}
