//! The resolver the `mail-auth` checks (DKIM, SPF, DMARC, iprev) look names up through.
//!
//! mail-auth resolves with its own hickory resolver; wasmta's lookups go through the
//! server's [`Dns`] (test zones from `kumo.dns.configure_test_resolver`, configured name
//! servers, the system's). To give mail-auth the server's answers without a second DNS
//! configuration, each check gets a responder on a loopback UDP port, alive only while
//! that check runs, that answers the questions of mail-auth's resolver from [`Dns`]; the
//! resolver asks nothing else. No crate serves DNS from an async function this small
//! (hickory-server is a whole authoritative server with zone stores), so this module
//! reads the question and writes the answer with hickory-proto's message types and
//! nothing more: one question per message, A/AAAA/MX/TXT/PTR, the rest NOTIMP. Datagrams
//! from anywhere but loopback are dropped. Answers larger than the 1,232 bytes the
//! resolver asks for are truncated (the resolver's retry over TCP is not served, so such
//! a record is a temperror).

use crate::dns::{Dns, MxAnswer};
use mail_auth::MessageAuthenticator;
use mail_auth::hickory_resolver::config::{
    ConnectionConfig, NameServerConfig, ResolveHosts, ResolverConfig, ResolverOpts,
};
use mail_auth::hickory_resolver::proto::op::{Message, MessageType, OpCode, ResponseCode};
use mail_auth::hickory_resolver::proto::rr::rdata::{A, AAAA, MX, PTR, TXT};
use mail_auth::hickory_resolver::proto::rr::{Name, RData, Record, RecordType};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;

/// Largest answer sent over UDP (what hickory's resolver advertises with EDNS).
const MAX_UDP: usize = 1232;

/// A mail-auth authenticator answering from the server's resolver while it lives.
pub struct AuthDns {
    authenticator: MessageAuthenticator,
    responder: tokio::task::JoinHandle<()>,
}

impl Drop for AuthDns {
    fn drop(&mut self) {
        self.responder.abort();
    }
}

impl AuthDns {
    /// Starts a responder for `dns` and an authenticator that asks only it.
    pub async fn start(dns: Arc<dyn Dns>) -> Result<AuthDns, String> {
        let socket = UdpSocket::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))
            .await
            .map_err(|e| format!("mail authentication: a loopback port for its lookups: {e}"))?;
        let port = socket.local_addr().map_err(|e| e.to_string())?.port();
        let mut udp = ConnectionConfig::udp();
        udp.port = port;
        let server = NameServerConfig::new(IpAddr::V4(Ipv4Addr::LOCALHOST), true, vec![udp]);
        let mut opts = ResolverOpts::default();
        opts.ndots = 0;
        opts.attempts = 1;
        opts.timeout = Duration::from_secs(10);
        // every answer comes fresh from `dns`, which keeps its own cache
        opts.cache_size = 0;
        // and nothing from /etc/hosts: the server's resolver is the only source
        opts.use_hosts_file = ResolveHosts::Never;
        let authenticator = MessageAuthenticator::new(ResolverConfig::from_name_servers(vec![server]), opts)
            .map_err(|e| format!("mail authentication: its resolver: {e}"))?;
        let responder = tokio::spawn(serve(socket, dns));
        Ok(AuthDns { authenticator, responder })
    }

    /// The authenticator.
    pub fn authenticator(&self) -> &MessageAuthenticator {
        &self.authenticator
    }
}

async fn serve(socket: UdpSocket, dns: Arc<dyn Dns>) {
    let socket = Arc::new(socket);
    let mut buf = vec![0u8; 4096];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { return };
        if !from.ip().is_loopback() {
            continue;
        }
        let Ok(query) = Message::from_vec(&buf[..n]) else { continue };
        // A and AAAA are asked together: answer each on its own task
        let (socket, dns) = (socket.clone(), dns.clone());
        tokio::spawn(async move {
            if let Some(reply) = answer(&query, &*dns).await {
                let _ = socket.send_to(&reply, from).await;
            }
        });
    }
}

/// The reply to one query, encoded.
async fn answer(query: &Message, dns: &dyn Dns) -> Option<Vec<u8>> {
    let id = query.metadata.id;
    let op = query.metadata.op_code;
    let [question] = query.queries.as_slice() else {
        return Message::error_msg(id, op, ResponseCode::FormErr).to_vec().ok();
    };
    if query.metadata.message_type != MessageType::Query || op != OpCode::Query {
        return Message::error_msg(id, op, ResponseCode::NotImp).to_vec().ok();
    }
    let name = question.name().clone();
    let text = name.to_ascii();
    let records = match question.query_type() {
        RecordType::A | RecordType::AAAA => addresses(dns, &text, question.query_type()).await,
        RecordType::MX => match dns.mx(&text).await {
            Ok(MxAnswer::Records(mx)) => Ok(Some(
                mx.iter().filter_map(|r| Some(RData::MX(MX::new(r.preference, fqdn(&r.host)?)))).collect::<Vec<_>>(),
            )),
            Ok(MxAnswer::NoRecords) => Ok(Some(vec![])),
            Ok(MxAnswer::NxDomain) => Ok(None),
            Err(e) => Err(e),
        },
        RecordType::TXT => dns
            .txt(&text)
            .await
            .map(|found| found.map(|records| records.iter().map(|r| RData::TXT(TXT::new(chunks(r)))).collect())),
        RecordType::PTR => match reverse_ip(&text) {
            Some(ip) => dns
                .ptr(ip)
                .await
                .map(|names| Some(names.iter().filter_map(|n| Some(RData::PTR(PTR(fqdn(n)?)))).collect::<Vec<_>>())),
            None => Ok(None),
        },
        _ => return Message::error_msg(id, op, ResponseCode::NotImp).to_vec().ok(),
    };
    let mut reply = Message::response(id, op);
    reply.metadata.recursion_desired = query.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.add_query(question.clone());
    match records {
        Ok(Some(rdata)) => {
            for r in rdata {
                reply.add_answer(Record::from_rdata(name.clone(), 60, r));
            }
        }
        Ok(None) => reply.metadata.response_code = ResponseCode::NXDomain,
        Err(e) => {
            tracing::debug!("mail authentication lookup of {text} {:?}: {e}", question.query_type());
            reply.metadata.response_code = ResponseCode::ServFail;
        }
    }
    let bytes = reply.to_vec().ok()?;
    if bytes.len() <= MAX_UDP {
        return Some(bytes);
    }
    let mut cut = Message::response(id, op);
    cut.metadata.truncation = true;
    cut.add_query(question.clone());
    cut.to_vec().ok()
}

/// The addresses of one family; `None` (NXDOMAIN) when the name has none of either.
async fn addresses(dns: &dyn Dns, name: &str, kind: RecordType) -> Result<Option<Vec<RData>>, String> {
    let all = dns.ip(name).await?;
    if all.is_empty() {
        return Ok(None);
    }
    Ok(Some(
        all.into_iter()
            .filter_map(|ip| match (ip, kind) {
                (IpAddr::V4(v4), RecordType::A) => Some(RData::A(A(v4))),
                (IpAddr::V6(v6), RecordType::AAAA) => Some(RData::AAAA(AAAA(v6))),
                _ => None,
            })
            .collect(),
    ))
}

fn fqdn(host: &str) -> Option<Name> {
    Name::from_ascii(format!("{}.", host.trim_end_matches('.'))).ok()
}

/// A TXT record's text as character-strings of at most 255 bytes.
fn chunks(text: &str) -> Vec<String> {
    let mut out = vec![];
    let mut rest = text;
    while rest.len() > 255 {
        let mut cut = 255;
        while !rest.is_char_boundary(cut) {
            cut -= 1;
        }
        out.push(rest[..cut].to_string());
        rest = &rest[cut..];
    }
    out.push(rest.to_string());
    out
}

/// The address of a reverse-lookup name (`4.3.2.1.in-addr.arpa.`, nibbles under `ip6.arpa.`).
fn reverse_ip(name: &str) -> Option<IpAddr> {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    if let Some(v4) = name.strip_suffix(".in-addr.arpa") {
        let mut o: Vec<u8> = v4.split('.').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        if o.len() != 4 {
            return None;
        }
        o.reverse();
        return Some(IpAddr::from([o[0], o[1], o[2], o[3]]));
    }
    let v6 = name.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> =
        v6.split('.').map(|p| u8::from_str_radix(p, 16).ok().filter(|_| p.len() == 1)).collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut bytes = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        bytes[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::from(bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reverse_names_read_back() {
        for ip in ["192.0.2.7", "2001:db8::1", "::1"] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(reverse_ip(&format!("{}.", crate::dns::ptr_name(ip))), Some(ip), "{ip}");
        }
        assert_eq!(reverse_ip("1.2.3.in-addr.arpa."), None);
        assert_eq!(reverse_ip("x.example."), None);
    }

    #[test]
    fn long_txt_records_are_split_into_strings() {
        let long = "v=DKIM1; p=".to_string() + &"A".repeat(600);
        let parts = chunks(&long);
        assert!(parts.iter().all(|p| p.len() <= 255));
        assert_eq!(parts.concat(), long);
    }
}
