//! Maildir delivery (`protocol = { maildir_path = ... }`, as KumoMTA's documentation writes
//! it): the message lands in `new/` of the rendered maildir, the Delivery record says
//! `Maildir`, a directory that cannot be written is a transient failure that keeps the
//! message, and a misspelt option is an error, not silence.

mod harness;

use harness::smtp::Client;
use harness::{Server, wait_for_record};
use std::process::Command;
use std::time::Duration;

fn policy(d: &std::path::Path, protocol: &str) -> String {
    format!(
        r#"local kumo = require 'kumo'
kumo.on('init', function()
  kumo.define_spool {{ name = 'data', path = '{d}/spool' }}
  kumo.configure_local_logs {{ log_dir = '{d}/logs' }}
  kumo.dns.configure_test_resolver ''
  kumo.start_esmtp_listener {{ listen = '127.0.0.1:0', relay_hosts = {{ '127.0.0.1' }} }}
end)
kumo.on('smtp_server_message_received', function(msg)
  msg:set_meta('tenant', 'acme')
end)
kumo.on('get_queue_config', function(domain, tenant, campaign, routing_domain)
  if domain == 'maildir.example.com' then
    -- Store this domain into a maildir, rather than attempting to deliver via SMTP
    return kumo.make_queue_config {{ retry_interval = '1s', protocol = {protocol} }}
  end
  return kumo.make_queue_config {{}}
end)
"#,
        d = d.display()
    )
}

fn new_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir.join("new")).map(|r| r.map(|e| e.unwrap().path()).collect()).unwrap_or_default()
}

#[test]
fn maildir_delivery_end_to_end_and_an_unwritable_maildir_keeps_the_message() {
    let dir = harness::temp_dir();
    let d = dir.path();
    // the tenant's tree exists as a plain file at first: nothing can be made under it
    std::fs::write(d.join("blocked"), "not a directory").unwrap();
    let protocol = format!(
        "{{ maildir_path = '{}/mail/{{{{ meta.tenant }}}}/{{{{ user }}}}', dir_mode = '0750', file_mode = '0640' }}",
        d.display()
    );
    let path = d.join("init.lua");
    std::fs::write(&path, policy(d, &protocol)).unwrap();
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    // the client dot-stuffs; the maildir holds the line as written
    let body = "Subject: to a maildir\r\n\r\nline one\r\n..dot line";
    assert_eq!(c.send_mail("a@s.example", &["ann@maildir.example.com", "bob@maildir.example.com"], body).code, 250);
    let rec = wait_for_record(d, Duration::from_secs(10), |r| r["type"] == "Delivery").expect("Delivery record");
    assert_eq!(rec["delivery_protocol"], "Maildir", "{rec}");
    assert_eq!(rec["response"]["code"], 250, "{rec}");
    for user in ["ann", "bob"] {
        let md = d.join("mail/acme").join(user);
        let files = new_files(&md);
        assert_eq!(files.len(), 1, "{user}: {files:?}");
        let data = std::fs::read_to_string(&files[0]).unwrap();
        assert!(data.contains("Subject: to a maildir\r\n\r\nline one\r\n.dot line\r\n"), "{data}");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&files[0]).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::read_dir(md.join("tmp")).unwrap().count(), 0);
    }

    // a maildir that cannot be written: transient, the message stays spooled and is
    // delivered once the operator fixes the directory
    std::fs::create_dir_all(d.join("mail")).unwrap();
    std::os::unix::fs::symlink(d.join("blocked"), d.join("mail/blocked-tenant")).unwrap();
    let protocol = format!("{{ maildir_path = '{}/mail/blocked-tenant/{{{{ user }}}}' }}", d.display());
    std::fs::write(&path, policy(d, &protocol)).unwrap();
    server.stop();
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["cat@maildir.example.com"], body).code, 250);
    let t = wait_for_record(d, Duration::from_secs(10), |r| {
        r["type"] == "TransientFailure" && r["recipient"] == "cat@maildir.example.com"
    })
    .expect("TransientFailure");
    assert_eq!(t["response"]["code"], 451, "{t}");
    assert!(t["response"]["content"].as_str().unwrap().contains("maildir"), "{t}");
    std::fs::remove_file(d.join("mail/blocked-tenant")).unwrap();
    let rec = wait_for_record(d, Duration::from_secs(15), |r| {
        r["type"] == "Delivery" && r["recipient"] == "cat@maildir.example.com"
    })
    .expect("delivered after the fix");
    assert_eq!(rec["delivery_protocol"], "Maildir");
    assert_eq!(new_files(&d.join("mail/blocked-tenant/cat")).len(), 1);
    drop(c);
    server.stop();
    assert!(harness::spooled(d).is_empty(), "delivered messages leave the spool");
}

#[test]
fn a_misspelt_maildir_option_is_an_error() {
    let dir = harness::temp_dir();
    let d = dir.path();
    let path = d.join("init.lua");
    std::fs::write(&path, policy(d, "{ maildir_path = '/tmp/x', dir_mod = 448 }")).unwrap();
    // get_queue_config runs at delivery time: the queue config is refused then, with the key
    let server = Server::start(d, &path);
    let mut c = Client::ehlo(server.addr());
    assert_eq!(c.send_mail("a@s.example", &["u@maildir.example.com"], "Subject: x\r\n\r\nx\r\n").code, 250);
    let t = wait_for_record(d, Duration::from_secs(10), |r| r["type"] == "TransientFailure").expect("refused");
    assert!(t["response"]["content"].as_str().unwrap().contains("dir_mod"), "{t}");
    drop(c);
    server.stop();
    let _ = Command::new(harness::binary()).arg("--version").output();
}
