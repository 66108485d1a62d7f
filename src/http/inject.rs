//! `POST /api/inject/v1` (KumoMTA's injection API): raw RFC 5322 `content` or the
//! builder form (`text_body`, `html_body`, `headers`, `from`, `subject`, `reply_to`),
//! per-recipient `substitutions` and `metadata`, `{{ name }}` placeholders, the
//! `http_message_generated` event, then the same durable path as SMTP: spool (fsync),
//! Reception record with `reception_protocol = "HTTP"`, scheduled queue.

use super::AppState;
use crate::message::{EnvelopeAddress, Message};
use crate::queue::InsertReason;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Map, Value, json};

pub fn routes() -> axum::Router<AppState> {
    axum::Router::new().route("/api/inject/v1", axum::routing::post(inject))
}

#[derive(Deserialize)]
struct Recipient {
    email: String,
    name: Option<String>,
    #[serde(default)]
    substitutions: Map<String, Value>,
    #[serde(default)]
    metadata: Map<String, Value>,
}

#[derive(Deserialize)]
struct Address {
    email: String,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Builder {
    text_body: Option<String>,
    html_body: Option<String>,
    #[serde(default)]
    headers: Map<String, Value>,
    from: Option<Address>,
    subject: Option<String>,
    reply_to: Option<Address>,
    #[serde(default)]
    attachments: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum Content {
    Raw(String),
    Built(Builder),
}

#[derive(Deserialize)]
struct InjectRequest {
    envelope_sender: String,
    recipients: Vec<Recipient>,
    content: Content,
    #[serde(default)]
    substitutions: Map<String, Value>,
}

/// Replaces `{{ key }}` (spaces optional) with the value of `key`.
fn substitute(text: &str, vars: &Map<String, Value>) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(start) = rest.find("{{") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find("}}") else {
            out.push_str(&rest[start..]);
            return out;
        };
        let key = rest[start + 2..start + end].trim();
        match vars.get(key) {
            Some(Value::String(s)) => out.push_str(s),
            Some(v) => out.push_str(&v.to_string()),
            None => out.push_str(&rest[start..start + end + 2]),
        }
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    out
}

fn mailbox(a: &Address) -> String {
    match &a.name {
        Some(n) if !n.is_empty() => format!("\"{}\" <{}>", n.replace('"', ""), a.email),
        _ => format!("<{}>", a.email),
    }
}

/// The builder form as an RFC 5322 message.
fn build(b: &Builder, to: &Recipient, sender: &str) -> Result<String, String> {
    if !b.attachments.is_empty() {
        return Err("attachments are not supported by wasmta's builder yet; send raw content".into());
    }
    let mut h = vec![];
    let from = b.from.as_ref().map(mailbox).unwrap_or_else(|| format!("<{sender}>"));
    h.push(format!("From: {from}"));
    h.push(format!("To: {}", mailbox(&Address { email: to.email.clone(), name: to.name.clone() })));
    if let Some(s) = &b.subject {
        h.push(format!("Subject: {s}"));
    }
    if let Some(r) = &b.reply_to {
        h.push(format!("Reply-To: {}", mailbox(r)));
    }
    h.push(format!("Date: {}", chrono::Utc::now().to_rfc2822()));
    h.push(format!("Message-ID: <{}@wasmta>", uuid::Uuid::new_v4()));
    for (k, v) in &b.headers {
        let v = v.as_str().map(str::to_string).unwrap_or_else(|| v.to_string());
        if k.contains([':', '\r', '\n']) || v.contains(['\r', '\n']) {
            return Err(format!("headers: {k:?} is not a valid header"));
        }
        h.push(format!("{k}: {v}"));
    }
    h.push("MIME-Version: 1.0".into());
    let body = match (&b.text_body, &b.html_body) {
        (Some(t), None) => format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{t}"),
        (None, Some(html)) => format!("Content-Type: text/html; charset=utf-8\r\n\r\n{html}"),
        (Some(t), Some(html)) => {
            let b = format!("wasmta-{}", uuid::Uuid::new_v4().simple());
            format!(
                "Content-Type: multipart/alternative; boundary=\"{b}\"\r\n\r\n--{b}\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n{t}\r\n--{b}\r\nContent-Type: text/html; charset=utf-8\r\n\r\n{html}\r\n--{b}--"
            )
        }
        (None, None) => return Err("content needs text_body or html_body".into()),
    };
    Ok(format!("{}\r\n{body}\r\n", h.join("\r\n")))
}

async fn inject(State(state): State<AppState>, Json(req): Json<InjectRequest>) -> (StatusCode, Json<Value>) {
    let (code, body) = run(&state, &req).await;
    (code, Json(body))
}

/// Runs one injection request: its HTTP status and KumoMTA's response body.
async fn run(state: &AppState, req: &InjectRequest) -> (StatusCode, Value) {
    let sender = match EnvelopeAddress::parse(&req.envelope_sender) {
        Ok(s) => s,
        Err(e) => return (StatusCode::BAD_REQUEST, json!({ "error": format!("envelope_sender: {}", e.0) })),
    };
    let (mut ok, mut failed, mut errors) = (0, vec![], vec![]);
    for rcpt in &req.recipients {
        match inject_one(state, req, &sender, rcpt).await {
            Ok(()) => ok += 1,
            Err(e) => {
                failed.push(rcpt.email.clone());
                errors.push(format!("{}: {e}", rcpt.email));
            }
        }
    }
    let body =
        json!({ "success_count": ok, "fail_count": failed.len(), "failed_recipients": failed, "errors": errors });
    let code = if ok == 0 && !req.recipients.is_empty() { StatusCode::BAD_REQUEST } else { StatusCode::OK };
    (code, body)
}

async fn inject_one(
    state: &AppState,
    req: &InjectRequest,
    sender: &EnvelopeAddress,
    rcpt: &Recipient,
) -> Result<(), String> {
    let to = EnvelopeAddress::parse(&rcpt.email).map_err(|e| format!("invalid recipient: {}", e.0))?;
    let mut vars = req.substitutions.clone();
    vars.extend(rcpt.substitutions.clone());
    vars.entry("email").or_insert_with(|| Value::String(rcpt.email.clone()));
    if let Some(n) = &rcpt.name {
        vars.entry("name").or_insert_with(|| Value::String(n.clone()));
    }
    let text = match &req.content {
        Content::Raw(raw) => raw.clone(),
        Content::Built(b) => build(b, rcpt, &req.envelope_sender)?,
    };
    let data = crate::message::headers::crlf(substitute(&text, &vars).as_bytes());
    let mut meta = rcpt.metadata.clone();
    meta.insert("reception_protocol".into(), Value::String("HTTP".into()));
    let message = Message::new(sender.clone(), vec![to], meta, data);
    state.policy.http_message_generated(&message).await.map_err(|e| e.reply().to_line())?;
    accept(state, message, "HTTP").await
}

/// The durable tail of every injection: spool (fsync), Reception record, queue.
async fn accept(state: &AppState, message: Message, protocol: &str) -> Result<(), String> {
    let messages = [message];
    crate::queue::admit::store(&state.spool, &messages)
        .await
        .map_err(|e| format!("451 4.3.0 temporary failure storing the message: {e}"))?;
    let generation = state.policy.generation();
    crate::queue::admit::record_and_queue(&state.logs, &state.queues, &messages, InsertReason::Injected, None, |r| {
        r.reception_protocol = Some(protocol.into());
        r.policy_generation = Some(generation);
    })
    .await;
    Ok(())
}

/// `kumo.inject_message` and `kumo.api.inject.inject_v1` for policy code.
pub struct PolicyInjector(pub AppState);

#[async_trait::async_trait]
impl crate::policy::inject::Injector for PolicyInjector {
    async fn inject_message(&self, message: Message) -> Result<(), String> {
        if message.recipients().is_empty() {
            return Err("the message has no recipients".into());
        }
        accept(&self.0, message, "Lua").await
    }

    async fn inject_v1(&self, request: Value) -> Result<Value, String> {
        let req: InjectRequest = serde_json::from_value(request).map_err(|e| format!("invalid request: {e}"))?;
        match run(&self.0, &req).await {
            (StatusCode::OK, body) => Ok(body),
            (_, body) if body.get("error").is_some() => Err(body["error"].as_str().unwrap_or_default().to_string()),
            // every recipient failed: the body says which and why, as KumoMTA returns it
            (_, body) => Ok(body),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn substitutions_fill_placeholders() {
        let vars: Map<String, Value> = serde_json::from_str(r#"{"name": "Ann", "n": 3}"#).unwrap();
        assert_eq!(substitute("Hi {{ name }}, {{n}} new, {{ missing }}", &vars), "Hi Ann, 3 new, {{ missing }}");
        assert_eq!(substitute("{{ unterminated", &vars), "{{ unterminated");
    }

    #[test]
    fn builder_makes_a_message_and_refuses_header_injection() {
        let b: Builder = serde_json::from_value(json!({"text_body": "t", "html_body": "<p>h</p>", "subject": "S",
            "from": {"email": "a@x", "name": "A"}, "headers": {"X-Campaign": "c"}}))
        .unwrap();
        let r = Recipient { email: "r@y".into(), name: None, substitutions: Map::new(), metadata: Map::new() };
        let m = build(&b, &r, "a@x").unwrap();
        assert!(m.contains("From: \"A\" <a@x>\r\nTo: <r@y>\r\nSubject: S\r\n"), "{m}");
        assert!(m.contains("multipart/alternative") && m.contains("X-Campaign: c"), "{m}");
        let bad: Builder =
            serde_json::from_value(json!({"text_body": "t", "headers": {"X-A": "v\r\nBcc: e@v"}})).unwrap();
        assert!(build(&bad, &r, "a@x").is_err());
    }
}
