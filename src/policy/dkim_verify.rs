//! DKIM verification of received mail (`msg:dkim_verify()`, `kumo.dkim.verify(msg)`) and
//! the `Authentication-Results` header (`msg:add_authentication_results`), through the
//! `mail-auth` crate. The public keys are looked up with the server's own resolver (so
//! `kumo.dns.configure_test_resolver` zones answer them, and tests need no real DNS) and
//! handed to mail-auth as a filled cache; mail-auth checks hashes and signatures.

use crate::dns::Dns;
use mail_auth::common::parse::TxtRecordParser;
use mail_auth::common::verify::DomainKey;
use mail_auth::{
    AuthenticatedMessage, DkimResult, DnsError, Error, MessageAuthenticator, Parameters, ResolverCache, Txt,
};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use std::borrow::Borrow;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write;
use std::hash::Hash;
use std::sync::{Arc, OnceLock};

/// One authentication result, in KumoMTA's shape.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AuthResult {
    pub method: String,
    #[serde(default)]
    pub method_version: Option<u32>,
    pub result: String,
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub props: BTreeMap<String, String>,
}

/// The keys looked up for one message.
#[derive(Default)]
struct Keys(Mutex<HashMap<Box<str>, Txt>>);

impl ResolverCache<Box<str>, Txt> for Keys {
    fn get<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().get(name).cloned()
    }
    fn remove<Q>(&self, name: &Q) -> Option<Txt>
    where
        Box<str>: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.lock().remove(name)
    }
    fn insert(&self, key: Box<str>, value: Txt, _: std::time::Instant) {
        self.0.lock().insert(key, value);
    }
}

fn authenticator() -> Result<&'static MessageAuthenticator, String> {
    static A: OnceLock<Result<MessageAuthenticator, String>> = OnceLock::new();
    // every key it needs is in the cache this module fills; the resolver is not asked
    A.get_or_init(|| {
        MessageAuthenticator::new_system_conf()
            .or_else(|_| MessageAuthenticator::new_cloudflare())
            .map_err(|e| e.to_string())
    })
    .as_ref()
    .map_err(|e| format!("dkim_verify: {e}"))
}

fn result_name(r: &DkimResult) -> (&'static str, Option<String>) {
    match r {
        DkimResult::Pass => ("pass", None),
        DkimResult::Neutral(e) => ("neutral", Some(e.to_string())),
        DkimResult::Fail(e) => ("fail", Some(e.to_string())),
        DkimResult::PermError(e) => ("permerror", Some(e.to_string())),
        DkimResult::TempError(e) => ("temperror", Some(e.to_string())),
        DkimResult::None => ("none", None),
    }
}

/// Verifies every DKIM signature of `data`; one result per signature, or one `none`.
pub async fn verify(data: &[u8], dns: &dyn Dns) -> Result<Vec<AuthResult>, String> {
    let message = AuthenticatedMessage::parse(data).ok_or("dkim_verify: the message could not be parsed")?;
    let keys = Keys::default();
    let now = std::time::Instant::now() + std::time::Duration::from_secs(60);
    for h in &message.dkim_headers {
        let name = format!("{}._domainkey.{}", h.header.s, h.header.d).to_ascii_lowercase();
        let value = match dns.txt(&name).await {
            Ok(Some(strings)) => match DomainKey::parse(strings.concat().as_bytes()) {
                Ok(k) => Txt::DomainKey(Arc::new(k)),
                Err(e) => Txt::Error(e),
            },
            Ok(None) => Txt::Error(Error::Dns(DnsError::RecordNotFound(
                mail_auth::hickory_resolver::proto::op::ResponseCode::NXDomain,
            ))),
            Err(e) => Txt::Error(Error::Dns(DnsError::Resolver(e))),
        };
        keys.insert(format!("{name}.").into_boxed_str(), value, now);
    }
    if message.dkim_headers.is_empty() {
        return Ok(vec![AuthResult {
            method: "dkim".into(),
            method_version: None,
            result: "none".into(),
            reason: None,
            props: BTreeMap::new(),
        }]);
    }
    let outputs = authenticator()?.verify_dkim(Parameters::new(&message).with_txt_cache(&keys)).await;
    Ok(outputs
        .iter()
        .map(|o| {
            let (result, reason) = result_name(o.result());
            let mut props = BTreeMap::new();
            if let Some(s) = o.signature() {
                props.insert("header.d".into(), s.d.clone());
                props.insert("header.s".into(), s.s.clone());
                if !s.i.is_empty() {
                    props.insert("header.i".into(), s.i.clone());
                }
                use base64::Engine;
                let b = base64::engine::general_purpose::STANDARD.encode(&s.b);
                props.insert("header.b".into(), b.chars().take(8).collect());
            }
            AuthResult { method: "dkim".into(), method_version: None, result: result.into(), reason, props }
        })
        .collect())
}

/// The `Authentication-Results` value (RFC 8601) for these results.
pub fn header_value(serv_id: &str, results: &[AuthResult]) -> String {
    let mut out = serv_id.to_string();
    if results.is_empty() {
        out.push_str("; none");
    }
    for r in results {
        out.push_str(";\r\n\t");
        out.push_str(&r.method);
        if let Some(v) = r.method_version {
            let _ = write!(out, "/{v}");
        }
        out.push('=');
        out.push_str(&r.result);
        if let Some(reason) = &r.reason {
            let _ = write!(out, " reason=\"{}\"", reason.replace(['"', '\\'], ""));
        }
        for (k, v) in &r.props {
            let _ = write!(out, " {k}={v}");
        }
    }
    out
}
