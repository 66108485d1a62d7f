//! After DATA: build the message, run `smtp_server_data`, split the transaction, add
//! trace headers, run `smtp_server_message_received` (or route to the deferred queue),
//! make every resulting message durable, log Reception, queue it — and only then 250.
//! All within `data_processing_timeout`; any failure answers for the whole transaction.

use super::session::Session;
use crate::config::listener::BatchHandling;
use crate::message::{EnvelopeAddress, Message};
use crate::policy::{DisconnectMode, Policy, PolicyError, Rejection};
use crate::protocol::Reply;
use crate::queue::{DEFERRED_QUEUE, InsertReason, admit};
use crate::spool::SpoolError;
use base64::Engine as _;
use serde_json::Value;
use std::time::Instant;

/// Processes a received message and returns the reply for the DATA command.
pub async fn accept(session: &mut Session, body: Vec<u8>) -> Reply {
    let Some(tx) = session.tx.take() else {
        return Reply::new(503, "5.5.1", "no transaction");
    };
    let started = Instant::now();
    let budget = session.settings.data_processing_timeout;
    let mut meta = session.conn.snapshot();
    meta.entry("reception_protocol").or_insert_with(|| "ESMTP".into());
    let message = Message::new(tx.sender, tx.recipients, meta, body);

    // one generation decides on the whole message, whatever reloads happen meanwhile
    let policy = session.ctx.policy.snapshot();
    let generation = policy.generation();
    let messages = match tokio::time::timeout(budget, run_policy(session, &policy, &message)).await {
        Ok(Ok(m)) => m,
        Ok(Err(e)) => return e.reply(),
        Err(_) => return Reply::new(451, "4.4.5", "data_processing_timeout exceeded (rx)"),
    };

    // deferred_spool: kept in memory until the first transient failure (see the README)
    let remaining = budget.saturating_sub(started.elapsed());
    if !session.settings.deferred_spool {
        match tokio::time::timeout(remaining, admit::store(&session.ctx.spool, &messages)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::error!("spool write failed: {e}");
                if matches!(e, SpoolError::NoSpace(_)) {
                    return Reply::new(452, "4.3.1", "insufficient system storage (spool)");
                }
                return Reply::new(451, "4.3.0", "temporary failure storing the message (spool)");
            }
            Err(_) => {
                // the writes may still land: remove them once they do, so the client's
                // retry does not make a duplicate
                let spool = session.ctx.spool.clone();
                let ids: Vec<_> = messages.iter().map(|m| m.id()).collect();
                tokio::spawn(async move {
                    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                    for id in ids {
                        let _ = spool.remove(id).await;
                    }
                });
                return Reply::new(451, "4.4.5", "data_processing_timeout exceeded (spool)");
            }
        }
    }

    let peer = session.peer_address();
    let (tls_cipher, tls_version) = (session.conn.get_str("tls_cipher"), session.conn.get_str("tls_protocol_version"));
    admit::record_and_queue(
        &session.ctx.logs,
        &session.ctx.queues,
        &messages,
        InsertReason::Received,
        Some("DATA"),
        |r| {
            r.peer_address = Some(peer.clone());
            r.session_id = Some(session.session_id.clone());
            r.policy_generation = Some(generation);
            r.tls_cipher = tls_cipher.clone();
            r.tls_protocol_version = tls_version.clone();
        },
    )
    .await;
    let ids: Vec<String> = messages.iter().map(|m| m.id().to_string()).collect();
    session.message_accepted();
    Reply::new(250, "2.0.0", format!("OK ids={}", ids.join(",")))
}

/// The policy stages: `smtp_server_data`, splitting, trace headers, message_received.
async fn run_policy(session: &Session, policy: &Policy, message: &Message) -> Result<Vec<Message>, PolicyError> {
    policy.smtp_server_data(message, &session.conn).await?;
    let batches = match policy.split_transaction(message, &session.conn).await? {
        Some(b) => b.into_iter().filter(|b| !b.is_empty()).collect(),
        None => default_batches(message.recipients(), session.settings.batch_handling),
    };
    let whole = batches.len() == 1 && batches[0] == message.recipients();
    let mut out = Vec::with_capacity(batches.len());
    for batch in batches {
        let m = if whole { message.clone() } else { message.split_for(batch) };
        if session.settings.trace_headers.received_header {
            let value = received_header(session, &m);
            m.prepend_header("Received", &value);
        }
        if session.settings.deferred_queue {
            m.set_meta("queue", DEFERRED_QUEUE.into());
        } else {
            policy.message_received(&m, &session.conn).await?;
        }
        // as KumoMTA does: the policy may have changed the envelope, so check relaying again
        let sender_domain = m.sender().domain().to_ascii_lowercase();
        for rcpt in m.recipients() {
            if !session.relay_allowed(&sender_domain, &rcpt.domain().to_ascii_lowercase()).await? {
                let r = Rejection::new(550, "5.7.1 relaying not permitted", DisconnectMode::If421).expect("valid code");
                return Err(PolicyError::Rejected(r));
            }
        }
        if session.settings.trace_headers.supplemental_header {
            let value = supplemental_header(session, &m);
            let name = session.settings.trace_headers.header_name.clone();
            m.prepend_header(&name, &value);
        }
        out.push(m);
    }
    Ok(out)
}

fn default_batches(recipients: Vec<EnvelopeAddress>, handling: BatchHandling) -> Vec<Vec<EnvelopeAddress>> {
    match handling {
        BatchHandling::BifurcateAlways => recipients.into_iter().map(|r| vec![r]).collect(),
        BatchHandling::BatchByDomain => {
            let mut groups: Vec<(String, Vec<EnvelopeAddress>)> = Vec::new();
            for r in recipients {
                let d = r.domain().to_ascii_lowercase();
                match groups.iter_mut().find(|(k, _)| *k == d) {
                    Some((_, g)) => g.push(r),
                    None => groups.push((d, vec![r])),
                }
            }
            groups.into_iter().map(|(_, g)| g).collect()
        }
    }
}

fn received_header(session: &Session, m: &Message) -> String {
    let ehlo = session.ehlo.clone().unwrap_or_else(|| "unknown".into());
    let with = if session.tls_active { "ESMTPS" } else { "ESMTP" };
    let rcpt = m.recipient().map(|r| format!("\r\n\tfor <{r}>")).unwrap_or_default();
    format!(
        "from {ehlo} ({ip})\r\n\tby {host} (wasmta {ver}) with {with} id {id}{rcpt};\r\n\t{date}",
        ip = session.peer.ip(),
        host = session.settings.hostname,
        ver = env!("CARGO_PKG_VERSION"),
        id = m.id(),
        date = chrono::Utc::now().to_rfc2822(),
    )
}

fn supplemental_header(session: &Session, m: &Message) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("_@_".into(), Value::String("\\_/".into()));
    let rcpt = m.recipients();
    obj.insert(
        "recipient".into(),
        match rcpt.as_slice() {
            [one] => Value::String(one.email()),
            many => Value::Array(many.iter().map(|r| Value::String(r.email())).collect()),
        },
    );
    for name in &session.settings.trace_headers.include_meta_names {
        if let Some(v) = m.get_meta(name) {
            obj.insert(name.clone(), v);
        }
    }
    base64::engine::general_purpose::STANDARD.encode(Value::Object(obj).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_by_rule() {
        let r: Vec<EnvelopeAddress> =
            ["a@x.example", "b@y.example", "c@X.example"].iter().map(|s| EnvelopeAddress::parse(s).unwrap()).collect();
        assert_eq!(default_batches(r.clone(), BatchHandling::BifurcateAlways).len(), 3);
        let by_domain = default_batches(r, BatchHandling::BatchByDomain);
        assert_eq!(by_domain.len(), 2);
        assert_eq!(by_domain[0].len(), 2);
    }
}
