//! The metrics every deployment has, by KumoMTA's names where KumoMTA has one. Each is
//! registered by [`register`] when the server starts, so a dashboard or an alert sees it
//! at 0 before the first event instead of "no data".

use super::{Kind, family, gauge};
use std::sync::Arc;
use std::sync::atomic::AtomicI64;

macro_rules! core_counter {
    ($(#[$doc:meta])* $fn:ident, $name:literal, $help:literal) => {
        $(#[$doc])*
        pub fn $fn() -> &'static Arc<AtomicI64> {
            crate::static_counter!($name, $help)
        }
    };
}

core_counter!(
    /// `total_messages_received`.
    received,
    "total_messages_received",
    "Messages received (SMTP and HTTP injection)."
);
core_counter!(
    /// `total_messages_delivered`.
    delivered,
    "total_messages_delivered",
    "Messages delivered."
);
core_counter!(
    /// `total_messages_fail`: bounces, expirations and admin bounces.
    failed,
    "total_messages_fail",
    "Messages (recipients) that failed permanently: bounced, expired or bounced by an administrator."
);
core_counter!(
    /// `total_messages_transfail`.
    transfailed,
    "total_messages_transfail",
    "Transient delivery failures."
);
core_counter!(
    /// Records quarantined at start-up.
    quarantined,
    "spool_quarantined_records_total",
    "Spool records found torn or corrupt at start-up and moved to the corrupt/ directory."
);
core_counter!(
    /// Log hook records not queued because of a fault (encoding, policy, spool).
    log_hook_dropped,
    "log_hook_records_dropped_total",
    "Log hook records dropped by a fault: the record could not be encoded, should_enqueue_log_record failed or set no queue, the spool refused it, or its delivery was refused permanently or expired."
);
core_counter!(
    /// Policy reloads installed.
    reloads,
    "policy_reloads_total",
    "Policy generations installed by reloads."
);
core_counter!(
    /// Policy reloads refused.
    reload_failures,
    "policy_reload_failures_total",
    "Policy reloads refused."
);
core_counter!(
    /// Automation actions applied.
    automation_actions,
    "automation_actions_total",
    "Automation rule actions applied."
);
core_counter!(
    /// Log records that could not be written and were given up.
    log_records_dropped,
    "log_records_dropped_total",
    "Log records given up: their log directory could not be written for too long, or at shutdown."
);
core_counter!(
    /// Failed log writes (the records are kept and retried).
    log_write_failures,
    "log_write_failures_total",
    "Failed attempts to write log records (the records are kept and retried)."
);
core_counter!(
    /// Shaping reloads refused.
    shaping_reload_failures,
    "shaping_reload_failures_total",
    "Shaping reloads refused because of errors."
);

/// `connection_count{service=...}`: open connections of a service (`esmtp_listener`
/// inbound, `smtp_client` outbound).
pub fn connections(service: &'static str) -> &'static Arc<AtomicI64> {
    static IN: std::sync::OnceLock<Arc<AtomicI64>> = std::sync::OnceLock::new();
    static OUT: std::sync::OnceLock<Arc<AtomicI64>> = std::sync::OnceLock::new();
    let cell = if service == "esmtp_listener" { &IN } else { &OUT };
    cell.get_or_init(|| gauge("connection_count", "Open connections by service.", &[("service", service)]))
}

/// Help texts of the queue gauges (refreshed from the queues at every scrape).
pub const SCHEDULED_HELP: &str = "Messages in scheduled queues, waiting for their due time.";
/// See [`SCHEDULED_HELP`].
pub const READY_HELP: &str = "Messages in ready queues, due and waiting for a connection.";
/// See [`SCHEDULED_HELP`].
pub const SCHEDULED_TOTAL_HELP: &str = "Messages in all scheduled queues (0 when there are none).";
/// See [`SCHEDULED_HELP`].
pub const READY_TOTAL_HELP: &str = "Messages in all ready queues (0 when there are none).";
/// See [`SCHEDULED_HELP`].
pub const TRANSIT_HELP: &str =
    "Messages between queues: due and being routed, or waiting for room in a full ready queue.";
/// See [`SCHEDULED_HELP`].
pub const DELIVERING_HELP: &str = "Messages in a delivery attempt (or a deferred injection) right now.";
/// See [`SCHEDULED_HELP`].
pub const HELD_HELP: &str =
    "Messages the queues hold: scheduled_count + ready_count + transit_count + delivering_count.";

/// Registers every core metric at 0.
pub fn register() {
    for f in [
        received,
        delivered,
        failed,
        transfailed,
        quarantined,
        reloads,
        reload_failures,
        automation_actions,
        shaping_reload_failures,
        log_records_dropped,
        log_write_failures,
        log_hook_dropped,
    ] {
        f();
    }
    connections("esmtp_listener");
    connections("smtp_client");
    family("scheduled_count", Kind::Gauge, SCHEDULED_HELP);
    family("ready_count", Kind::Gauge, READY_HELP);
    for (name, help) in [
        ("scheduled_count_total", SCHEDULED_TOTAL_HELP),
        ("ready_count_total", READY_TOTAL_HELP),
        ("transit_count", TRANSIT_HELP),
        ("delivering_count", DELIVERING_HELP),
        ("message_count", HELD_HELP),
    ] {
        gauge(name, help, &[]);
    }
    policy_generation();
}

/// `policy_generation`.
pub fn policy_generation() -> Arc<AtomicI64> {
    gauge("policy_generation", "The policy generation serving.", &[])
}
