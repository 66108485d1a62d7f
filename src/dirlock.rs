//! One server per directory: an exclusive advisory lock (`flock`) on a `.lock` file in a
//! spool or log directory, holding the owner's pid for the error a second server prints.
//! The kernel drops the lock when the process dies, however it dies, so a stale file of a
//! crashed server never blocks a restart (Postfix's `master.lock`, RocksDB's `LOCK`).

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside the directory it guards.
pub const LOCK_FILE: &str = ".lock";

/// A held lock; dropping it releases the directory.
#[derive(Debug)]
pub struct DirLock {
    _file: File,
    path: PathBuf,
}

/// Why a directory could not be locked.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error(
        "{dir} is in use by another wasmta (pid {pid}); a spool or log directory serves one server at a time: stop that server or give this one its own directory"
    )]
    Held {
        /// The directory.
        dir: String,
        /// The holder's pid as it wrote it, or "unknown".
        pid: String,
    },
    /// The lock file could not be opened or locked.
    #[error("locking {dir}: {error}")]
    Io {
        /// The directory.
        dir: String,
        /// What failed.
        error: String,
    },
}

impl DirLock {
    /// Takes the lock on `dir` (created if missing) without waiting.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io = |e: std::io::Error| LockError::Io { dir: dir.display().to_string(), error: e.to_string() };
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        let mut file =
            OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // SAFETY: flock(2) on a descriptor this function owns.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            let e = std::io::Error::last_os_error();
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                let pid = text.trim();
                let pid = if pid.is_empty() { "unknown".to_string() } else { pid.to_string() };
                return Err(LockError::Held { dir: dir.display().to_string(), pid });
            }
            return Err(io(e));
        }
        file.set_len(0).and_then(|_| file.rewind()).map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file, path })
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_lock_is_refused_naming_the_holder_and_freed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(dir.path()).unwrap();
        let err = DirLock::acquire(dir.path()).unwrap_err();
        let text = err.to_string();
        assert!(text.contains(&dir.path().display().to_string()), "{text}");
        assert!(text.contains(&format!("pid {}", std::process::id())), "{text}");
        drop(held);
        let again = DirLock::acquire(dir.path()).unwrap();
        assert_eq!(std::fs::read_to_string(again.path()).unwrap().trim(), std::process::id().to_string());
    }
}
