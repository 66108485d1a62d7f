//! `wasmta serve`: load the policy, open the spool and logs, enumerate spooled messages,
//! bind the listeners, print `initialization complete`, and run until SIGTERM/SIGINT.

use crate::http::HttpListener;
use crate::logs::Logs;
use crate::queue::{InsertReason, QueueManager};
use crate::smtp::server::{EsmtpListener, ServerContext, SessionBudget};
use crate::spool::Spool;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::signal::unix::{SignalKind, signal};

fn node_id(spool_dir: &Path) -> String {
    let path = spool_dir.join("nodeid");
    if let Ok(id) = std::fs::read_to_string(&path) {
        return id.trim().to_string();
    }
    let id = uuid::Uuid::new_v4().to_string();
    let _ = std::fs::write(&path, &id);
    id
}

/// Raises the soft limit on open descriptors to the hard limit (each connection needs one;
/// 1,024 is a common soft default) and logs both; returns the limit in force.
fn raise_descriptor_limit() -> u64 {
    // SAFETY: getrlimit/setrlimit with a valid rlimit struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) != 0 {
            tracing::warn!("getrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
            return 1024;
        }
        let soft = lim.rlim_cur;
        if lim.rlim_cur < lim.rlim_max {
            let raised = libc::rlimit { rlim_cur: lim.rlim_max, rlim_max: lim.rlim_max };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                lim.rlim_cur = lim.rlim_max;
            } else {
                tracing::warn!("setrlimit(RLIMIT_NOFILE): {}", std::io::Error::last_os_error());
            }
        }
        tracing::info!("open descriptors: soft limit {soft}, hard limit {}; using {}", lim.rlim_max, lim.rlim_cur);
        lim.rlim_cur as u64
    }
}

/// Runs the server.
pub async fn run(policy_path: PathBuf, spool_dir: PathBuf, settings: crate::policy::loader::Settings) -> ExitCode {
    match start(policy_path, spool_dir, settings).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn start(
    policy_path: PathBuf,
    spool_dir: PathBuf,
    settings: crate::policy::loader::Settings,
) -> Result<(), String> {
    // before anything else: a stop asked for during start-up is a clean shutdown, not a kill
    let mut term = signal(SignalKind::terminate()).map_err(|e| e.to_string())?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| e.to_string())?;
    crate::config::storage::MinFree::check_env()?;
    let descriptors = raise_descriptor_limit();
    // this server's shared state: epoch, shutdown, resolver, shaping, throttles, reloader
    let runtime = crate::policy::Runtime::new();
    let loaded = crate::policy::loader::load(&policy_path, false, settings.clone(), &runtime).await?;
    for p in &loaded.problems {
        tracing::warn!("{p}");
    }
    for n in &loaded.notices {
        tracing::warn!("{n}");
    }
    for c in &loaded.components {
        tracing::info!("wasm policy component {c}");
    }
    let (policy, init) = (loaded.policy, loaded.init);
    crate::metrics::core::register();
    crate::metrics::core::policy_generation().store(policy.generation() as i64, Ordering::Relaxed);
    runtime.set_core_shaping(init.shaping.clone());
    let _reloader = crate::policy::reload::Reloader::install(&policy_path, settings, policy.clone(), init.clone());
    crate::policy::monitor::start(&runtime, crate::policy::monitor::POLL_INTERVAL);

    let (mut spool, startup) = Spool::open(&init.spools, &spool_dir).map_err(|e| e.to_string())?;
    spool.set_suspend_delivery_when_unhealthy(init.suspend_delivery_when_spool_unhealthy);
    let classifier = match init.bounce_classifier.is_empty() {
        true => None,
        false => Some(Arc::new(crate::logs::classify::Classifier::load(&init.bounce_classifier)?)),
    };
    let logs = Logs::start(&init.logs, &init.log_hooks, &init.log_disposition_hooks, node_id(spool.path()), classifier)
        .map_err(|e| format!("starting logs: {e}"))?;
    for c in init.logs.iter().filter(|c| c.min_free_space.is_some() || c.min_free_inodes.is_some()) {
        use crate::config::storage::MinFree;
        let none = MinFree::Absolute(0);
        spool.also_guard(Path::new(&c.log_dir), c.min_free_space.unwrap_or(none), c.min_free_inodes.unwrap_or(none));
    }
    let dns = crate::dns::from_config(&init.dns)?;
    runtime.set_dns(dns.clone());
    if let Some(config) = &init.redis_throttles {
        let redis = crate::shaping::redis::Redis::open(config)?;
        runtime.share_through(redis.clone(), &node_id(spool.path()));
        let reached = redis.query::<String>("PING", &redis::cmd("PING")).await.is_ok();
        if reached {
            match runtime.named_limits.reclaim().await {
                Ok(0) => {}
                Ok(n) => tracing::info!("redis: gave back {n} connection lease(s) an earlier run of this node held"),
                Err(e) => {
                    tracing::warn!("redis: could not give back an earlier run's leases (they lapse by themselves): {e}")
                }
            }
        }
        tracing::info!(
            "configure_redis_throttles: throttles, connection limits and automation rules shared through {}{}",
            config.node.urls().join(", "),
            if reached { "" } else { " (not answering yet: shared limits wait for it)" }
        );
    }
    if let Some(files) = runtime.core_shaping() {
        let loaded = runtime.shaping.load(&files, &Default::default(), dns.as_ref()).await?;
        tracing::info!("shaping: {} loaded (hash {})", files.join(", "), loaded.hash);
    }
    let hostname = crate::config::listener::machine_hostname();
    let queues = QueueManager::new(policy.clone(), spool.clone(), logs.clone(), hostname);
    queues.share_automation(&node_id(spool.path()));
    let mut hook_sink = None;
    if !logs.hooks().is_empty() || !init.log_disposition_hooks.is_empty() {
        let sink = crate::queue::log_hook::Sink::new(&queues, logs.hooks());
        hook_sink = Some(sink.clone());
        logs.set_hook_sink(sink);
    }
    let state = crate::http::AppState::new(spool.clone(), queues.clone(), policy.clone(), logs.clone());
    let injector: Arc<dyn crate::policy::inject::Injector> = Arc::new(crate::http::inject::PolicyInjector(state));
    runtime.set_injector(&injector);
    // the HTTP listeners answer from here on: liveness and metrics say how far recovery is
    let recovery = Arc::new(crate::http::Recovery::default());
    let (shutdown_tx, shutdown_rx) = tokio::sync::watch::channel(false);
    let mut http_tasks = Vec::new();
    for config in init.http_listeners {
        let listener = HttpListener::bind(config).await?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("http listener on {addr}");
        let state = crate::http::AppState::new(spool.clone(), queues.clone(), policy.clone(), logs.clone())
            .recovering(recovery.clone());
        http_tasks.push(tokio::spawn(listener.serve(state, shutdown_rx.clone())));
    }
    let found = startup.len();
    recovery.total.store(found, Ordering::Relaxed);
    let (mut enumerated, mut quarantined) = (0, startup.quarantined);
    let started = std::time::Instant::now();
    let mut last_progress = started;
    for (done, message) in startup.messages().enumerate() {
        // a large spool takes a while: say how far recovery is
        recovery.done.store(done, Ordering::Relaxed);
        if last_progress.elapsed() >= Duration::from_secs(1) {
            last_progress = std::time::Instant::now();
            let rate = done as f64 / started.elapsed().as_secs_f64().max(0.001);
            tracing::info!("spool: recovered {done} of {found} message(s) ({rate:.0}/s)");
        }
        let message = match message {
            Ok(m) => m,
            Err(e) => {
                tracing::error!("{e}");
                quarantined += 1;
                continue;
            }
        };
        let id = message.id();
        policy
            .spool_message_enumerated(&message)
            .await
            .map_err(|e| format!("spool_message_enumerated failed for {id}: {e}"))?;
        queues.insert(message, InsertReason::Enumerated);
        enumerated += 1;
    }
    tracing::info!(
        "spool: {enumerated} message(s) enumerated, {quarantined} record(s) quarantined ({:.2?})",
        started.elapsed()
    );
    crate::metrics::core::quarantined().fetch_add(quarantined as i64, Ordering::Relaxed);
    spool.start();
    recovery.finished.store(true, Ordering::Relaxed);
    return_freed_memory();

    let sessions = SessionBudget::for_descriptors(descriptors);
    tracing::info!("inbound sessions: at most {} at once across listeners (descriptor budget)", sessions.limit());
    let ctx =
        Arc::new(ServerContext { policy, spool: spool.clone(), logs: logs.clone(), queues: queues.clone(), sessions });
    let mut sessions = Vec::new();
    for config in init.listeners {
        let listener = EsmtpListener::bind(config).await?;
        let addr = listener.local_addr().map_err(|e| e.to_string())?;
        tracing::info!("esmtp listener on {addr}");
        sessions.push(tokio::spawn(listener.serve(ctx.clone(), shutdown_rx.clone())));
    }
    if sessions.is_empty() {
        tracing::warn!("the policy started no esmtp listener");
    }
    tracing::info!("initialization complete");

    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    runtime.shutdown.begin();
    let _ = shutdown_tx.send(true);
    queues.stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    for task in sessions {
        if let Ok(active) = task.await {
            while active.load(Ordering::Acquire) > 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    for t in http_tasks {
        let _ = tokio::time::timeout(Duration::from_secs(2), t).await;
    }
    // deliveries in flight finish (their outcome logged, the spool told) before the log
    // writers close; one still running at the deadline is repeated after the restart
    while queues.in_between().1 > 0 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if runtime.fleet().is_some() {
        // the fleet gets this node's connection leases back now, not when they lapse
        match tokio::time::timeout(Duration::from_secs(2), runtime.named_limits.reclaim()).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => tracing::warn!("redis: connection leases not given back (they lapse by themselves): {e}"),
            Err(_) => tracing::warn!("redis: connection leases not given back within 2 s (they lapse by themselves)"),
        }
    }
    if let Some(sink) = hook_sink {
        // records waiting to fill a batch or to be offered are spooled now, not lost
        if tokio::time::timeout(Duration::from_secs(5), sink.flush()).await.is_err() {
            tracing::warn!("log hooks: records still being queued after 5 s; those not spooled yet are lost");
        }
    }
    let logs_done = tokio::task::spawn_blocking(move || logs.close());
    let _ = tokio::time::timeout(Duration::from_secs(5), logs_done).await;
    tracing::info!("shutdown complete");
    Ok(())
}

/// Gives memory freed by the allocator back to the system every few seconds. Bodies of
/// waiting messages leave memory (issue 17), but glibc keeps freed chunks between
/// long-lived small allocations (the waiting envelopes) resident: without this a backlog
/// of large messages kept ~0.7 KB more per message than one of small messages.
fn return_freed_memory() {
    #[cfg(target_env = "gnu")]
    std::thread::Builder::new()
        .name("malloc-trim".into())
        .spawn(|| {
            loop {
                std::thread::sleep(Duration::from_secs(5));
                // SAFETY: malloc_trim only releases free pages; it is safe to call at any time
                unsafe {
                    libc::malloc_trim(0);
                }
            }
        })
        .map(|_| ())
        .unwrap_or_else(|e| tracing::warn!("not returning freed memory to the system: {e}"));
}
