//! Inbound mail authentication the way KumoMTA's documentation writes it:
//! `policy-extras.mail_auth`'s `check` in `smtp_server_message_received`,
//! `kumo.spf.check_host` in `smtp_server_ehlo`, all answered from the policy's own test
//! zone (no real DNS). The DKIM signature is made by an independent signer (dkimpy).

mod harness;

use harness::dkim::{dkimpy_sign, keys, verifier_installed};
use harness::sink::{Sink, relay_to};
use harness::smtp::Client;
use std::time::Duration;

/// The zone: the client (127.0.0.2) may send for good.example (directly), inc.example
/// (through an include and an `a:`), not for bad.example or exists.example (whose
/// `exists:` names no address); good.example and bad.example publish `p=reject`;
/// 127.0.0.2 has a PTR name that resolves back to it.
fn zone(rsa: &str) -> String {
    let key: Vec<String> = format!("v=DKIM1; k=rsa; p={rsa}")
        .as_bytes()
        .chunks(200)
        .map(|c| format!("\"{}\"", String::from_utf8_lossy(c)))
        .collect();
    format!(
        r#"good.example. TXT "v=spf1 ip4:127.0.0.2 -all"
_dmarc.good.example. TXT "v=DMARC1; p=reject"
s2048._domainkey.good.example. TXT {key}
bad.example. TXT "v=spf1 ip4:192.0.2.1 -all"
_dmarc.bad.example. TXT "v=DMARC1; p=reject"
inc.example. TXT "v=spf1 include:_spf.inc.example -all"
_spf.inc.example. TXT "v=spf1 a:mta.inc.example -all"
mta.inc.example. A 127.0.0.2
exists.example. TXT "v=spf1 exists:%{{i}}.allow.exists.example -all"
other.example. MX 10 mx.other.example.
2.0.0.127.in-addr.arpa. PTR client.test.
client.test. A 127.0.0.2
"#,
        key = key.join(" ")
    )
}

#[test]
fn spf_dkim_dmarc_and_iprev_from_the_policys_zone() {
    if !verifier_installed() {
        return;
    }
    let dir = harness::temp_dir();
    let d = dir.path();
    let (rsa, _) = keys(d);
    let sink = Sink::start(d);
    let policy = format!(
        r#"local kumo = require 'kumo'
local mail_auth = require 'policy-extras.mail_auth'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{{d}}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{{d}}/logs' }}
  kumo.dns.configure_test_resolver [[
{zone}]]
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.0/8' }}, hostname = 'mx.test' }}
end)
kumo.on('smtp_server_ehlo', function(domain, conn_meta)
  local result = kumo.spf.check_host(domain, conn_meta)
  if result.disposition == 'fail' then
    kumo.reject(550, '5.7.23 SPF says ' .. domain .. ' does not send from here')
  end
end)
kumo.on('smtp_server_message_received', function(msg, conn_meta)
  local case = msg:get_first_named_header_value('Subject')
  if case == 'typo' then
    mail_auth.check(msg, {{ spff = false }})
  end
  if case == 'resolver' then
    kumo.spf.check_msg(msg, 'my-resolver')
  end
  local r = mail_auth.check(msg)
  if r.dmarc.result == 'fail' and r.dmarc.props['policy.dmarc'] == 'reject' then
    kumo.reject(550, '5.7.1 DMARC policy of ' .. r.dmarc.props['header.from'] .. ' says reject')
  end
end)
{relay}
"#,
        zone = zone(&rsa),
        relay = relay_to(&sink.addr, "", "")
    );
    let path = harness::write_policy_text(d, &policy);
    let server = harness::Server::start(d, &path);

    // the EHLO identity is checked by check_host: bad.example may not send from 127.0.0.2
    // from 127.0.0.2: hickory answers 127.0.0.1's reverse name itself (localhost)
    let mut c = Client::open_from(server.addr(), "127.0.0.2");
    let r = c.cmd("EHLO bad.example");
    assert!(r.starts("550 5.7.23"), "{r:?}");
    let r = c.cmd("EHLO good.example");
    assert_eq!(r.code, 250, "{r:?}");

    let send = |c: &mut Client, from: &str, header_from: &str, subject: &str| {
        c.send_mail(from, &["r@dest.example"], &format!("From: <{header_from}>\r\nSubject: {subject}\r\n\r\nhi"))
    };
    // SPF pass and aligned: DMARC pass
    assert_eq!(send(&mut c, "a@good.example", "a@good.example", "spf-pass").code, 250);
    // include: and a: resolved through the zone
    assert_eq!(send(&mut c, "a@inc.example", "a@inc.example", "include").code, 250);
    // exists: for a name with no address is no match: fail (never a pass for forged mail)
    assert_eq!(send(&mut c, "a@exists.example", "a@exists.example", "exists").code, 250);
    // SPF fail and p=reject: the policy refuses it
    let r = send(&mut c, "a@bad.example", "a@bad.example", "forged");
    assert!(r.starts("550 5.7.1 DMARC policy of bad.example says reject"), "{r:?}");
    // no SPF for other.example, but a valid good.example signature: DMARC passes on DKIM
    let signed = dkimpy_sign(
        &d.join("rsa.key"),
        "s2048",
        "good.example",
        "From: <news@good.example>\r\nTo: <r@dest.example>\r\nSubject: signed\r\n\r\nhello\r\n",
    );
    let r = c.send_mail("bounce@other.example", &["r@dest.example"], signed.trim_end_matches("\r\n"));
    assert_eq!(r.code, 250, "{r:?}");
    // the same signed mail changed on the way: DKIM fails, SPF none, p=reject
    let changed = signed.replace("hello", "HELLO");
    let r = c.send_mail("bounce@other.example", &["r@dest.example"], changed.trim_end_matches("\r\n"));
    assert!(r.starts("550 5.7.1 DMARC policy of good.example says reject"), "{r:?}");
    // misuse: an unknown option and a named resolver are errors that name them
    for (subject, needle) in [("typo", "spff"), ("resolver", "define_resolver")] {
        let r = send(&mut c, "a@good.example", "a@good.example", subject);
        assert!(r.code >= 400, "{subject}: {r:?}");
        assert!(server.wait_for_stderr(needle, Duration::from_secs(10)), "{subject}: {}", server.stderr_text());
    }

    assert!(sink.wait_for(4, Duration::from_secs(20)));
    let headers: Vec<(String, String)> = sink
        .messages()
        .iter()
        .map(|m| {
            let text = String::from_utf8_lossy(&m.data).to_string();
            let subject = text.split("Subject: ").nth(1).unwrap().split("\r\n").next().unwrap().to_string();
            let at = text.find("Authentication-Results: mx.test;").expect("header added");
            (subject, text[at..].split("\r\n\r\n").next().unwrap().to_string())
        })
        .collect();
    assert_eq!(headers.len(), 4, "{headers:?}");
    for (subject, header) in &headers {
        let expected: &[&str] = match subject.as_str() {
            "spf-pass" => &[
                "spf=pass",
                "smtp.mailfrom=a@good.example",
                "dmarc=pass",
                "dkim=none",
                "iprev=pass reason=\"ip 127.0.0.2 <-> client.test\"",
            ],
            "include" => &["spf=pass", "smtp.mailfrom=a@inc.example", "dmarc=none"],
            "exists" => &["spf=fail", "smtp.mailfrom=a@exists.example"],
            "signed" => &["dkim=pass", "header.d=good.example", "spf=none", "dmarc=pass", "header.from=good.example"],
            other => panic!("unexpected message {other}"),
        };
        for e in expected {
            assert!(header.contains(e), "{subject}: {e} expected in {header}");
        }
        assert!(header.contains("auth=none"), "{header}");
    }
    server.stop();
}
