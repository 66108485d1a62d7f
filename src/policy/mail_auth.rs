//! SPF (`kumo.spf.check_host`, `kumo.spf.check_msg`) and DMARC (`kumo.dmarc.check_msg`)
//! for received mail through the `mail-auth` crate, and iprev
//! (`policy-extras.mail_auth.iprev`), each giving KumoMTA's authentication result shape
//! ([`AuthResult`]). Lookups go through the server's resolver (by way of [`AuthDns`]
//! for mail-auth).

use super::auth_dns::AuthDns;
use super::dkim_verify::AuthResult;
use crate::dns::Dns;
use mail_auth::dkim::Signature;
use mail_auth::dmarc::Policy;
use mail_auth::spf::verify::SpfParameters;
use mail_auth::{
    AuthenticatedMessage, DkimOutput, DmarcResult, Parameters, SpfOutput, SpfResult, dmarc::verify::DmarcParameters,
};
use std::collections::BTreeMap;
use std::net::IpAddr;

/// An SPF verdict: KumoMTA's `{ disposition, result }`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SpfDisposition {
    pub disposition: String,
    pub result: AuthResult,
}

fn spf_name(r: SpfResult) -> &'static str {
    match r {
        SpfResult::Pass => "pass",
        SpfResult::Fail => "fail",
        SpfResult::SoftFail => "softfail",
        SpfResult::Neutral => "neutral",
        SpfResult::TempError => "temperror",
        SpfResult::PermError => "permerror",
        SpfResult::None => "none",
    }
}

fn spf_result(name: &str) -> Option<SpfResult> {
    Some(match name {
        "pass" => SpfResult::Pass,
        "fail" => SpfResult::Fail,
        "softfail" => SpfResult::SoftFail,
        "neutral" => SpfResult::Neutral,
        "temperror" => SpfResult::TempError,
        "permerror" => SpfResult::PermError,
        "none" => SpfResult::None,
        _ => return None,
    })
}

fn reason(result: SpfResult, domain: &str, explanation: Option<&str>) -> Option<String> {
    if let Some(e) = explanation {
        return Some(e.to_string());
    }
    Some(match result {
        SpfResult::None => format!("no SPF records found for {domain}"),
        SpfResult::TempError => format!("a lookup for the SPF policy of {domain} failed"),
        SpfResult::PermError => format!("the SPF policy of {domain} is invalid or needs too many lookups"),
        _ => return None,
    })
}

/// SPF for `ip`: the MAIL FROM identity `sender` when it has a domain, the HELO identity
/// `helo` otherwise (RFC 7208 section 2.3/2.4). `host` is our own name (the `%{r}` macro).
pub async fn check_spf(auth: &AuthDns, ip: IpAddr, helo: &str, sender: &str, host: &str) -> SpfDisposition {
    let sender_domain = sender.rsplit_once('@').map(|(_, d)| d).filter(|d| !d.is_empty());
    let (params, prop, identity) = match sender_domain {
        Some(_) => (SpfParameters::verify_mail_from(ip, helo, host, sender), "smtp.mailfrom", sender.to_string()),
        None => (SpfParameters::verify_ehlo(ip, helo, host), "smtp.helo", helo.to_string()),
    };
    let output = auth.authenticator().verify_spf(params).await;
    disposition(&output, prop, identity)
}

/// SPF for `domain` as `kumo.spf.check_host` asks it: the domain named (for example the
/// EHLO domain), the client's address, and the sender for the macros when there is one.
pub async fn check_host(auth: &AuthDns, ip: IpAddr, domain: &str, sender: Option<&str>, host: &str) -> SpfDisposition {
    let sender_text = sender.map(str::to_string).unwrap_or_else(|| format!("postmaster@{domain}"));
    let params = SpfParameters::new(ip, domain, domain, host, &sender_text);
    let output = auth.authenticator().check_host(Parameters::new(params)).await;
    match sender {
        Some(s) => disposition(&output, "smtp.mailfrom", s.to_string()),
        None => disposition(&output, "smtp.helo", domain.to_string()),
    }
}

fn disposition(output: &SpfOutput, prop: &str, identity: String) -> SpfDisposition {
    let name = spf_name(output.result());
    let mut props = BTreeMap::new();
    props.insert(prop.to_string(), identity);
    SpfDisposition {
        disposition: name.into(),
        result: AuthResult {
            method: "spf".into(),
            method_version: None,
            result: name.into(),
            reason: reason(output.result(), output.domain(), output.explanation()),
            props,
        },
    }
}

/// iprev (RFC 8601 section 3): the client's address has a PTR name that resolves back to
/// it. Asked of the server's resolver directly: hickory's resolver answers every 127/8
/// reverse name itself (`localhost`, RFC 6761), which would hide a test zone's PTR.
pub async fn iprev(dns: &dyn Dns, ip: IpAddr) -> AuthResult {
    let (result, reason) = match dns.ptr(ip).await {
        Err(e) => ("temperror", format!("ip {ip} failed to resolve PTR: {e}")),
        Ok(names) if names.is_empty() => ("permerror", format!("ip {ip} has no PTR")),
        Ok(names) => {
            let mut verdict = ("fail", format!("no PTR name of ip {ip} resolves back to it"));
            // at most 10 names, as RFC 7208's ptr mechanism bounds the same walk
            for name in names.iter().take(10) {
                match dns.ip(name).await {
                    Ok(addrs) if addrs.contains(&ip) => {
                        verdict = ("pass", format!("ip {ip} <-> {name}"));
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => verdict = ("temperror", format!("failed to resolve {name}: {e}")),
                }
            }
            verdict
        }
    };
    let mut props = BTreeMap::new();
    props.insert("smtp.remote-ip".into(), ip.to_string());
    AuthResult { method: "iprev".into(), method_version: None, result: result.into(), reason: Some(reason), props }
}

/// A DMARC verdict: `{ disposition, result }` as for SPF, the policy in `result.props`.
pub type DmarcDisposition = SpfDisposition;

/// DMARC for a message from the DKIM results (`msg:dkim_verify()`) and the SPF result
/// (`kumo.spf.check_msg(msg).result`) already found; `mail_from_domain` is the envelope
/// sender's domain.
pub async fn check_dmarc(
    auth: &AuthDns,
    data: &[u8],
    dkim: &[AuthResult],
    spf: Option<&AuthResult>,
    mail_from_domain: &str,
) -> Result<DmarcDisposition, String> {
    let message = AuthenticatedMessage::parse(data).ok_or("the message could not be parsed")?;
    // alignment needs only the passing signatures' domains
    let signatures: Vec<Signature> = dkim
        .iter()
        .filter(|r| r.method == "dkim" && r.result == "pass")
        .filter_map(|r| {
            let d = r.props.get("header.d")?;
            Some(Signature {
                d: d.clone(),
                s: r.props.get("header.s").cloned().unwrap_or_default(),
                ..Default::default()
            })
        })
        .collect();
    let dkim_outputs: Vec<DkimOutput> = signatures.iter().map(|s| DkimOutput::pass().with_signature(s)).collect();
    let spf_domain = spf
        .and_then(|r| r.props.get("smtp.mailfrom").and_then(|m| m.rsplit_once('@').map(|(_, d)| d.to_string())))
        .or_else(|| spf.and_then(|r| r.props.get("smtp.helo").cloned()))
        .unwrap_or_else(|| mail_from_domain.to_string());
    let spf_outcome = match spf {
        Some(r) => {
            spf_result(&r.result).ok_or_else(|| format!("the SPF result '{}' is not an SPF result", r.result))?
        }
        None => SpfResult::None,
    };
    let spf_output = SpfOutput::new(spf_domain).with_result(spf_outcome);
    let params = DmarcParameters::new(&message, &dkim_outputs, mail_from_domain, &spf_output);
    let out = auth.authenticator().verify_dmarc(Parameters::new(params)).await;
    let (result, reason) = match out.result() {
        DmarcResult::Pass => ("pass", None),
        DmarcResult::Fail(e) => ("fail", Some(e.to_string())),
        DmarcResult::TempError(e) => ("temperror", Some(e.to_string())),
        DmarcResult::PermError(e) => ("permerror", Some(e.to_string())),
        DmarcResult::None if out.domain().is_empty() => ("none", Some("no single author domain in From".into())),
        DmarcResult::None => ("none", Some(format!("no DMARC records found for {}", out.domain()))),
    };
    let mut props = BTreeMap::new();
    if !out.domain().is_empty() {
        props.insert("header.from".into(), out.domain().to_string());
    }
    if out.dmarc_record().is_some() {
        let policy = match out.policy() {
            Policy::Reject => "reject",
            Policy::Quarantine => "quarantine",
            Policy::None | Policy::Unspecified => "none",
        };
        props.insert("policy.dmarc".into(), policy.into());
    }
    Ok(DmarcDisposition {
        disposition: result.into(),
        result: AuthResult { method: "dmarc".into(), method_version: None, result: result.into(), reason, props },
    })
}

/// The client's address from `received_from` meta (`ip:port` or `[v6]:port`).
pub fn client_ip(received_from: &str) -> Option<IpAddr> {
    received_from
        .parse::<std::net::SocketAddr>()
        .map(|a| a.ip())
        .ok()
        .or_else(|| received_from.trim_start_matches('[').trim_end_matches(']').parse().ok())
}
