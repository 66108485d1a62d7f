//! DKIM verification of received mail (`msg:dkim_verify()`, `kumo.dkim.verify(msg)`) and
//! the `Authentication-Results` header (`msg:add_authentication_results`), through the
//! `mail-auth` crate. The public keys are looked up with the server's own resolver by way
//! of [`AuthDns`] (so `kumo.dns.configure_test_resolver` zones answer them, and tests need
//! no real DNS); mail-auth checks hashes and signatures.

use super::auth_dns::AuthDns;
use mail_auth::{AuthenticatedMessage, DkimResult, Parameters};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt::Write;

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

/// Verifies every DKIM signature of `data`: one result per signature, none when unsigned.
pub async fn verify(data: &[u8], auth: &AuthDns) -> Result<Vec<AuthResult>, String> {
    let message = AuthenticatedMessage::parse(data).ok_or("dkim_verify: the message could not be parsed")?;
    // KumoMTA's answer for an unsigned message: no results (mail_auth.check says `none`)
    if message.dkim_headers.is_empty() {
        return Ok(vec![]);
    }
    let outputs = auth.authenticator().verify_dkim(Parameters::new(&message)).await;
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
