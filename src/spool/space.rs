//! Free-space guard: polls `statvfs` on the spool's filesystem and flags it low when
//! free bytes or inodes fall under `min_free_space` / `min_free_inodes`.

use crate::config::storage::MinFree;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Free-space state of one directory's filesystem.
pub struct DiskMonitor {
    path: PathBuf,
    min_space: MinFree,
    min_inodes: MinFree,
    low: AtomicBool,
}

/// Free and total bytes and inodes.
#[derive(Debug, Clone, Copy)]
pub struct Usage {
    /// Bytes available to unprivileged users.
    pub free_bytes: u64,
    /// Size of the filesystem.
    pub total_bytes: u64,
    /// Inodes available.
    pub free_inodes: u64,
    /// Inodes in all.
    pub total_inodes: u64,
}

/// Reads the usage of the filesystem holding `path`.
pub fn usage(path: &Path) -> std::io::Result<Usage> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(std::io::Error::other)?;
    // SAFETY: zeroed statvfs is a valid out-parameter; c is NUL-terminated.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c.as_ptr(), &mut st) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let frsize = st.f_frsize as u64;
    Ok(Usage {
        free_bytes: st.f_bavail as u64 * frsize,
        total_bytes: st.f_blocks as u64 * frsize,
        free_inodes: st.f_favail as u64,
        total_inodes: st.f_files as u64,
    })
}

impl DiskMonitor {
    /// A monitor; call [`DiskMonitor::start`] to keep it current.
    pub fn new(path: &Path, min_space: MinFree, min_inodes: MinFree) -> Arc<Self> {
        let m = Arc::new(DiskMonitor { path: path.to_path_buf(), min_space, min_inodes, low: AtomicBool::new(false) });
        m.refresh();
        m
    }

    /// Re-reads the filesystem.
    pub fn refresh(&self) {
        let low = match usage(&self.path) {
            Ok(u) => {
                u.free_bytes < self.min_space.threshold(u.total_bytes)
                    || (u.total_inodes > 0 && u.free_inodes < self.min_inodes.threshold(u.total_inodes))
            }
            Err(e) => {
                tracing::warn!("statvfs {}: {e}", self.path.display());
                false
            }
        };
        if low != self.low.swap(low, Ordering::Relaxed) {
            if low {
                tracing::error!(
                    "{}: free space is below min_free_space/min_free_inodes; refusing new messages",
                    self.path.display()
                );
            } else {
                tracing::info!("{}: free space recovered; accepting messages again", self.path.display());
            }
        }
    }

    /// Polls every second until the process ends.
    pub fn start(self: &Arc<Self>) {
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                me.refresh();
            }
        });
    }

    /// True when space is below the threshold.
    pub fn is_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds_flag_low_space() {
        let dir = tempfile::tempdir().unwrap();
        let ok = DiskMonitor::new(dir.path(), MinFree::Absolute(0), MinFree::Absolute(0));
        assert!(!ok.is_low());
        let impossible = DiskMonitor::new(dir.path(), MinFree::Percent(100.0), MinFree::Absolute(0));
        assert!(impossible.is_low());
    }
}
