//! `smtp_client_rewrite_delivery_status`: before a delivery attempt's rejections are
//! acted on, the policy may give each a different status code (a full mailbox treated as
//! a bounce, say). A rewritten reply keeps its text with
//! `(kumomta: status was rewritten from 452 -> 500)` appended, as KumoMTA writes it, so
//! the log shows both codes.

use crate::delivery::client::MessageResult;
use crate::message::Message;
use crate::message::queue_name::QueueNameParts;
use crate::policy::Policy;
use crate::policy::events::Event;
use std::collections::HashMap;

/// Rewrites the non-2xx replies of `result` as the policy says; a failing handler leaves
/// the reply as the destination sent it (and is logged).
pub async fn apply(policy: &Policy, message: &Message, result: &mut MessageResult) {
    if !policy.handles(Event::SmtpClientRewriteDeliveryStatus)
        || result.recipients.iter().all(|(_, reply, _)| (200..300).contains(&reply.code))
    {
        return;
    }
    let parts = QueueNameParts::parse(&message.queue_name());
    // recipients of one transaction mostly share a reply: ask once per distinct reply
    let mut answers: HashMap<String, Option<u16>> = HashMap::new();
    for (_, reply, _) in result.recipients.iter_mut() {
        if (200..300).contains(&reply.code) {
            continue;
        }
        let line = reply.to_line();
        let answer = match answers.get(&line) {
            Some(a) => *a,
            None => {
                let a = match policy.rewrite_delivery_status(&line, &parts).await {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::error!("{}: {e}; the reply is kept as sent: {line}", message.id());
                        None
                    }
                };
                answers.insert(line, a);
                a
            }
        };
        if let Some(code) = answer.filter(|c| *c != reply.code) {
            reply.text = format!("{} (kumomta: status was rewritten from {} -> {code})", reply.text, reply.code);
            reply.code = code;
        }
    }
}
