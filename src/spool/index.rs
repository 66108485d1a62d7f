//! The journal's in-memory index: where each live message's newest Put record is, and per
//! segment how many live messages and live bytes it holds — what deletion and compaction
//! decide on.

use crate::message::SpoolId;
use std::collections::{BTreeMap, HashMap};

/// Where a record is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Segment number.
    pub seq: u64,
    /// Byte offset in the segment.
    pub offset: u64,
    /// Record length.
    pub len: u64,
}

/// One segment's accounting.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Segment {
    /// Live messages whose newest Put is here.
    pub messages: usize,
    /// Their bytes.
    pub live_bytes: u64,
    /// Bytes in the file.
    pub size: u64,
}

/// Live messages and segments.
#[derive(Default)]
pub struct Index {
    location: HashMap<SpoolId, Loc>,
    segments: BTreeMap<u64, Segment>,
}

impl Index {
    /// Starts accounting for a segment (no-op if known).
    pub fn open_segment(&mut self, seq: u64) {
        self.segments.entry(seq).or_default();
    }

    /// Records that segment `seq` now holds `size` bytes.
    pub fn set_size(&mut self, seq: u64, size: u64) {
        self.segments.entry(seq).or_default().size = size;
    }

    /// A Put for `id` at `loc`: it is now the live copy.
    pub fn put(&mut self, id: SpoolId, loc: Loc) {
        self.forget(id);
        let s = self.segments.entry(loc.seq).or_default();
        s.messages += 1;
        s.live_bytes += loc.len;
        self.location.insert(id, loc);
    }

    /// A Remove for `id`.
    pub fn remove(&mut self, id: SpoolId) {
        self.forget(id);
    }

    fn forget(&mut self, id: SpoolId) {
        if let Some(old) = self.location.remove(&id)
            && let Some(s) = self.segments.get_mut(&old.seq)
        {
            s.messages -= 1;
            s.live_bytes -= old.len;
        }
    }

    /// The oldest segment and its accounting.
    pub fn oldest(&self) -> Option<(u64, Segment)> {
        self.segments.first_key_value().map(|(k, v)| (*k, *v))
    }

    /// Forgets a deleted segment.
    pub fn drop_segment(&mut self, seq: u64) {
        self.segments.remove(&seq);
    }

    /// Dead bytes in every segment but `current`.
    pub fn dead_bytes_before(&self, current: u64) -> u64 {
        self.segments.range(..current).map(|(_, s)| s.size.saturating_sub(s.live_bytes)).sum()
    }

    /// The live messages whose newest Put is in segment `seq`, in file order.
    pub fn live_in(&self, seq: u64) -> Vec<(SpoolId, Loc)> {
        let mut v: Vec<(SpoolId, Loc)> =
            self.location.iter().filter(|(_, l)| l.seq == seq).map(|(id, l)| (*id, *l)).collect();
        v.sort_by_key(|(_, l)| l.offset);
        v
    }

    /// How many segments are accounted for.
    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }
}
