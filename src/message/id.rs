//! Spool ids: 32 hex digits, time-ordered (8 bytes of creation time in microseconds,
//! 8 random bytes), so the creation time can be read back from the id.

use std::fmt;

/// A map keyed by spool ids: their random half makes a fast hasher safe (nobody
/// outside chooses an id), and a spool's index holds several per message.
pub type IdMap<V> = foldhash::HashMap<SpoolId, V>;

/// The id of a message in the spool.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpoolId([u8; 16]);

impl SpoolId {
    /// A fresh id stamped with the current time.
    pub fn new() -> Self {
        let micros = chrono::Utc::now().timestamp_micros() as u64;
        let mut bytes = [0u8; 16];
        bytes[..8].copy_from_slice(&micros.to_be_bytes());
        bytes[8..].copy_from_slice(&rand::random::<[u8; 8]>());
        SpoolId(bytes)
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }

    /// Rebuilds an id from raw bytes.
    pub fn from_bytes(bytes: [u8; 16]) -> Self {
        SpoolId(bytes)
    }

    /// Parses the 32-hex-digit form.
    pub fn parse(text: &str) -> Option<Self> {
        if text.len() != 32 {
            return None;
        }
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
        }
        Some(SpoolId(bytes))
    }

    /// When the id was made.
    pub fn created(&self) -> chrono::DateTime<chrono::Utc> {
        let micros = u64::from_be_bytes(self.0[..8].try_into().expect("8 bytes"));
        chrono::DateTime::from_timestamp_micros(micros as i64).unwrap_or_default()
    }
}

impl Default for SpoolId {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpoolId({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_orders_by_time() {
        let a = SpoolId::new();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = SpoolId::new();
        assert!(a < b);
        let text = a.to_string();
        assert_eq!(text.len(), 32);
        assert_eq!(SpoolId::parse(&text), Some(a));
        assert!(SpoolId::parse("zz").is_none());
        let age = chrono::Utc::now() - a.created();
        assert!(age.num_seconds() < 5);
    }
}
