//! The deferred queue's second half (`deferred_smtp_inject.kumomta.internal`): its
//! ready queue, and the injection of each message — `smtp_server_message_deferred_inject`,
//! then a `DeferredInjectionRebind` into the message's own queue, a Bounce for a permanent
//! refusal, or a retry.

use super::InsertReason;
use super::manager::{At, Shared};
use super::ready::{ReadyKind, ReadyQueue, ReadySpec};
use super::scheduled::ScheduledQueue;
use crate::config::egress::EgressSource;
use crate::dns::mx::Site;
use crate::logs::RecordType;
use crate::message::Message;
use crate::policy::PolicyError;
use crate::protocol::Reply;
use serde_json::Value;
use std::sync::Arc;

impl Shared {
    /// Promotion for `deferred_smtp_inject.kumomta.internal`: the `unspecified` source and a
    /// ready queue drained by the deferred injector.
    pub(super) async fn promote_deferred(self: &Arc<Self>, queue: &Arc<ScheduledQueue>, message: Message) {
        let deferred = super::DEFERRED_QUEUE.to_string();
        let name = format!("unspecified->{deferred}@defersmtpinject");
        let site = Site { name: deferred.clone(), hosts: vec![], from_dns: false };
        let spec = ReadySpec {
            name,
            kind: ReadyKind::DeferredInjection,
            site,
            source: EgressSource::unspecified(),
            pool: "unspecified".into(),
            routing_domain: deferred,
            maildir: None,
            custom: None,
        };
        let made = self.ready_queue(spec).await;
        match made {
            Ok(rq) => self.insert_ready(queue, &rq, message).await,
            Err(e) => {
                let reply = Reply::new(451, "4.3.0", format!("KumoMTA internal: get_egress_path_config: {e}"));
                self.transient(At::default(), message, &reply, "").await
            }
        }
    }

    /// Runs `smtp_server_message_deferred_inject` for one message and acts on the answer:
    /// rebind into its normal queue, bounce (5xx rejection) or retry (anything else).
    pub(crate) async fn deferred_inject(self: &Arc<Self>, rq: &ReadyQueue, message: Message) {
        message.set_meta("queue", Value::Null);
        let conn = crate::policy::ConnMeta::new(message.meta());
        let at = At { rq: Some(rq), peer: None };
        match self.policy.deferred_inject(&message, &conn).await {
            Ok(()) => {
                let reply = Reply::plain(250, "ok");
                let r =
                    self.record(RecordType::DeferredInjectionRebind, &message, &message.recipients(), &reply, "", at);
                self.logs.log(r, Some(&message));
                message.set_due(None);
                self.persist(&message).await;
                self.insert(message, InsertReason::Received);
            }
            Err(PolicyError::Rejected(r)) if r.is_permanent() => {
                let reply = r.reply();
                let rec = self.record(RecordType::Bounce, &message, &message.recipients(), &reply, "", at);
                self.fail(rec, &message).await;
            }
            Err(e) => {
                message.set_meta("queue", super::DEFERRED_QUEUE.into());
                let reply = match e {
                    PolicyError::Rejected(r) => r.reply(),
                    PolicyError::Failed { message: text, .. } => Reply::plain(450, text),
                    cancelled @ PolicyError::Cancelled { .. } => Reply::plain(450, cancelled.to_string()),
                };
                self.transient(at, message, &reply, "").await;
            }
        }
    }
}
