//! Delivery into a maildir (`protocol = { maildir_path = ... }`), the way qmail defined it:
//! the message is written to `tmp/` under a unique name, synced, and renamed into `new/`,
//! and `new/` is synced — a reader never sees a partial message and a crash never loses
//! one that was reported delivered. The path is a minijinja template rendered per
//! recipient with `user` (`local_part`), `domain`, `recipient`, `sender`, `id`, `queue`
//! and `meta`. The `maildir` crates on crates.io neither sync nor set modes, so the few
//! file operations are written here.

use super::client::MessageResult;
use crate::config::queue::MaildirProtocol;
use crate::message::Message;
use crate::protocol::Reply;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Default mode of directories made.
pub const DIR_MODE: u32 = 0o775;
/// Default mode of message files.
pub const FILE_MODE: u32 = 0o664;

/// The maildir of one recipient: the template rendered.
pub fn render(
    template: &str,
    message: &Message,
    recipient: &crate::message::EnvelopeAddress,
) -> Result<PathBuf, String> {
    let env = minijinja::Environment::new();
    let ctx = minijinja::context! {
        user => recipient.user(),
        local_part => recipient.user(),
        domain => recipient.domain(),
        recipient => recipient.email(),
        sender => message.sender().email(),
        id => message.id().to_string(),
        queue => message.queue_name(),
        meta => minijinja::Value::from(minijinja::value::Serde(message.meta())),
    };
    let path = env.render_str(template, ctx).map_err(|e| format!("maildir_path {template:?}: {e}"))?;
    if path.trim().is_empty() {
        return Err(format!("maildir_path {template:?} rendered empty"));
    }
    if path.split('/').any(|part| part == "..") {
        return Err(format!("maildir_path rendered {path:?}, which climbs out with '..'"));
    }
    Ok(PathBuf::from(path))
}

/// A name no other delivery (in this process or another) uses: time, id, counter, host.
fn unique_name(message: &Message) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let host = crate::config::listener::machine_hostname().replace(['/', ':'], "_");
    format!(
        "{}.M{}P{}Q{}_{}.{host}",
        now.as_secs(),
        now.subsec_micros(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed),
        message.id()
    )
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

/// Writes `data` into the maildir `dir` (made with `dir_mode` when missing); the file's path.
pub fn store(dir: &Path, name: &str, data: &[u8], dir_mode: u32, file_mode: u32) -> std::io::Result<PathBuf> {
    for sub in ["tmp", "new", "cur"] {
        std::fs::DirBuilder::new().recursive(true).mode(dir_mode).create(dir.join(sub))?;
    }
    let tmp = dir.join("tmp").join(name);
    let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(file_mode).open(&tmp)?;
    let written = f.write_all(data).and_then(|()| f.sync_all());
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let new = dir.join("new").join(name);
    std::fs::rename(&tmp, &new)?;
    sync_dir(&dir.join("new"))?;
    Ok(new)
}

/// The reply for a failed write: out of space is 452 4.3.1, anything else 451 4.3.0; both
/// transient (the operator can fix the directory).
fn failure(dir: &Path, e: &std::io::Error) -> Reply {
    let text = format!("KumoMTA internal: maildir {}: {e}", dir.display());
    match e.raw_os_error() {
        Some(libc::ENOSPC) | Some(libc::EDQUOT) => Reply::new(452, "4.3.1", text),
        _ => Reply::new(451, "4.3.0", text),
    }
}

/// Delivers `message` to each recipient's maildir.
pub async fn deliver(config: &MaildirProtocol, message: &Message) -> MessageResult {
    let data = match message.data() {
        Ok(d) => d,
        Err(e) => {
            let reply = crate::delivery::client::body_unreadable(&e);
            return MessageResult {
                recipients: message.recipients().into_iter().map(|r| (r, reply.clone(), "DATA")).collect(),
            };
        }
    };
    let (dir_mode, file_mode) = (config.dir_mode.unwrap_or(DIR_MODE), config.file_mode.unwrap_or(FILE_MODE));
    let mut recipients = vec![];
    for rcpt in message.recipients() {
        let reply = match render(&config.maildir_path, message, &rcpt) {
            Err(e) => Reply::new(451, "4.3.5", format!("KumoMTA internal: {e}")),
            Ok(dir) => {
                let (data, name) = (data.clone(), unique_name(message));
                let d = dir.clone();
                match tokio::task::spawn_blocking(move || store(&d, &name, &data, dir_mode, file_mode)).await {
                    Ok(Ok(path)) => Reply::new(250, "2.0.0", format!("delivered to {}", path.display())),
                    Ok(Err(e)) => failure(&dir, &e),
                    Err(e) => Reply::new(451, "4.3.0", format!("KumoMTA internal: maildir writer: {e}")),
                }
            }
        };
        recipients.push((rcpt, reply, "maildir"));
    }
    MessageResult { recipients }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EnvelopeAddress;

    #[test]
    fn a_message_lands_in_new_with_its_modes_and_nothing_stays_in_tmp() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().join("example.com/ann");
        let path = store(&dir, "1.x.host", b"Subject: x\r\n\r\nhi\r\n", 0o750, 0o640).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"Subject: x\r\n\r\nhi\r\n");
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o640);
        assert_eq!(std::fs::metadata(dir.join("cur")).unwrap().permissions().mode() & 0o777, 0o750);
        assert_eq!(std::fs::read_dir(dir.join("tmp")).unwrap().count(), 0);
        assert!(store(&dir, "1.x.host", b"again", 0o750, 0o640).is_ok(), "tmp name free again");
    }

    #[test]
    fn templates_render_per_recipient_and_refuse_to_climb() {
        let to = EnvelopeAddress::parse("Ann@Example.com").unwrap();
        let mut meta = serde_json::Map::new();
        meta.insert("tenant".into(), "acme".into());
        let m = Message::new(EnvelopeAddress::parse("s@x.example").unwrap(), vec![to.clone()], meta, b"x".to_vec());
        let p = render("/var/mail/{{ meta.tenant }}/{{ domain }}/{{ user }}", &m, &to).unwrap();
        assert_eq!(p, PathBuf::from("/var/mail/acme/Example.com/Ann"));
        m.set_meta("tenant", "../../etc".into());
        assert!(render("/var/mail/{{ meta.tenant }}/{{ user }}", &m, &to).is_err(), "a meta value cannot climb out");
        assert!(render("/var/mail/{{ unclosed", &m, &to).is_err());
    }
}
