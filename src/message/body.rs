//! A message's shared bytes and where they live. A body is in memory while a message
//! needs it (just received, or about to be delivered) and only in the spool while it
//! waits: a million queued messages cost their envelopes, not their bodies. Loading is
//! explicit and fallible — a body the spool cannot give back is an error the caller
//! reports, never an empty message.

use super::SpoolId;
use parking_lot::Mutex;
use std::sync::Arc;

/// Reads a stored body back (the spool implements it).
pub trait BodySource: Send + Sync {
    /// The bytes stored under `id`.
    fn read_body(&self, id: SpoolId) -> Result<Vec<u8>, BodyError>;

    /// The header section of the body stored under `id` (up to the blank line), checked
    /// like [`BodySource::read_body`] but without holding the rest in memory.
    fn read_header_section(&self, id: SpoolId) -> Result<Vec<u8>, BodyError> {
        let mut all = self.read_body(id)?;
        all.truncate(super::headers::header_end(&all));
        Ok(all)
    }
}

/// A body could not be read back.
#[derive(Debug, Clone, thiserror::Error)]
#[error("message body {id}: {reason}")]
pub struct BodyError {
    /// The body's id.
    pub id: SpoolId,
    /// What went wrong.
    pub reason: String,
    /// The bytes are gone for good (corrupt, or no longer stored): retrying cannot help.
    pub lost: bool,
}

impl BodyError {
    /// A failure that may pass (an I/O error, a record moving under compaction).
    pub fn io(id: SpoolId, reason: impl Into<String>) -> BodyError {
        BodyError { id, reason: reason.into(), lost: false }
    }

    /// The bytes are gone for good.
    pub fn lost(id: SpoolId, reason: impl Into<String>) -> BodyError {
        BodyError { id, reason: reason.into(), lost: true }
    }
}

struct Cell {
    /// The bytes, while in memory.
    bytes: Mutex<Option<Arc<Vec<u8>>>>,
    /// Where they can be read again once stored.
    source: Mutex<Option<Arc<dyn BodySource>>>,
}

/// Bytes several messages may share, with the id the spool keeps them under. Clones
/// share one cell: loading for one loads for all of them.
#[derive(Clone)]
pub struct Body {
    /// The spool id of the shared bytes.
    pub id: SpoolId,
    len: usize,
    cell: Arc<Cell>,
}

impl Body {
    /// New bytes under a fresh id. A buffer much larger than its content (a receive
    /// buffer) is copied to one of the right size and freed whole: shrinking it in place
    /// would leave a hole in the heap beside every queued message.
    pub fn new(mut bytes: Vec<u8>) -> Body {
        if bytes.capacity() - bytes.len() > bytes.len() / 8 + 64 {
            bytes = bytes.as_slice().to_vec();
        }
        Body::in_memory(SpoolId::new(), Arc::new(bytes))
    }

    /// Bytes already shared under a known id.
    pub fn in_memory(id: SpoolId, bytes: Arc<Vec<u8>>) -> Body {
        let len = bytes.len();
        let cell = Cell { bytes: Mutex::new(Some(bytes)), source: Mutex::new(None) };
        Body { id, len, cell: Arc::new(cell) }
    }

    /// A body of `len` bytes that is only in `source` (found at start-up).
    pub fn stored(id: SpoolId, len: usize, source: Arc<dyn BodySource>) -> Body {
        let cell = Cell { bytes: Mutex::new(None), source: Mutex::new(Some(source)) };
        Body { id, len, cell: Arc::new(cell) }
    }

    /// Its size.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for an empty body.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The bytes if they are in memory now.
    pub fn loaded(&self) -> Option<Arc<Vec<u8>>> {
        self.cell.bytes.lock().clone()
    }

    /// The bytes, read from the spool for this caller only if they are not in memory
    /// (an admin inspect or a policy read of a waiting message does not pin its body).
    pub fn read(&self) -> Result<Arc<Vec<u8>>, BodyError> {
        match self.loaded() {
            Some(b) => Ok(b),
            None => self.fetch().map(Arc::new),
        }
    }

    /// The bytes, read from the spool if they are not in memory and kept there until
    /// [`Body::unload`] (ahead of a delivery).
    pub fn load(&self) -> Result<Arc<Vec<u8>>, BodyError> {
        if let Some(b) = self.loaded() {
            return Ok(b);
        }
        let read = Arc::new(self.fetch()?);
        // another reader may have loaded it meanwhile: keep one copy
        let mut slot = self.cell.bytes.lock();
        Ok(slot.get_or_insert(read).clone())
    }

    fn fetch(&self) -> Result<Vec<u8>, BodyError> {
        let source = self.cell.source.lock().clone();
        let Some(source) = source else {
            return Err(BodyError::lost(self.id, "neither in memory nor stored"));
        };
        let read = source.read_body(self.id)?;
        if read.len() != self.len {
            return Err(BodyError::lost(
                self.id,
                format!("read back {} bytes where {} were stored", read.len(), self.len),
            ));
        }
        Ok(read)
    }

    /// The header section: from memory if the bytes are there, else read from the spool
    /// without holding the body text (a policy reading headers of a waiting message).
    pub fn header_section(&self) -> Result<Vec<u8>, BodyError> {
        if let Some(b) = self.loaded() {
            return Ok(b[..super::headers::header_end(&b)].to_vec());
        }
        let source = self.cell.source.lock().clone();
        match source {
            Some(source) => source.read_header_section(self.id),
            None => Err(BodyError::lost(self.id, "neither in memory nor stored")),
        }
    }

    /// Notes where the bytes can be read again (the spool has them now).
    pub fn set_source(&self, source: Arc<dyn BodySource>) {
        *self.cell.source.lock() = Some(source);
    }

    /// True when the bytes can be dropped from memory and read again.
    pub fn is_stored(&self) -> bool {
        self.cell.source.lock().is_some()
    }

    /// Drops the bytes from memory if the spool can give them back; true if it did (or
    /// they were not in memory).
    pub fn unload(&self) -> bool {
        if !self.is_stored() {
            return false;
        }
        self.cell.bytes.lock().take();
        true
    }

    /// True if `self` and `other` are one body (one cell).
    pub fn same_as(&self, other: &Body) -> bool {
        Arc::ptr_eq(&self.cell, &other.cell)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Disk(Vec<u8>);
    impl BodySource for Disk {
        fn read_body(&self, id: SpoolId) -> Result<Vec<u8>, BodyError> {
            if self.0.is_empty() {
                return Err(BodyError::lost(id, "gone"));
            }
            Ok(self.0.clone())
        }
    }

    #[test]
    fn unloads_only_what_can_be_read_again_and_shares_one_load() {
        let b = Body::new(b"hello".to_vec());
        assert!(!b.unload(), "not stored: stays");
        assert_eq!(&b.read().unwrap()[..], b"hello");
        b.set_source(Arc::new(Disk(b"hello".to_vec())));
        let twin = b.clone();
        assert!(b.unload());
        assert!(twin.loaded().is_none(), "one cell for both");
        assert!(twin.read().is_ok() && b.loaded().is_none(), "a read does not pin the body");
        let x = twin.load().unwrap();
        assert!(Arc::ptr_eq(&x, &b.loaded().unwrap()), "a load for one is a load for all");

        let gone = Body::stored(SpoolId::new(), 5, Arc::new(Disk(vec![])));
        assert!(gone.read().unwrap_err().to_string().contains("gone"));
        let short = Body::stored(SpoolId::new(), 9, Arc::new(Disk(b"hello".to_vec())));
        assert!(short.load().unwrap_err().to_string().contains("read back 5 bytes where 9"));
    }
}
