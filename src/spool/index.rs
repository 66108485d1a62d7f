//! The journal's in-memory index: where each live record is (a message's newest Ref or
//! Put, and every shared Body some live message names), how many live messages name each
//! Body, and per segment how many live records and live bytes it holds — what deletion and
//! compaction decide on. A Body dies with the last message that names it.

use crate::message::{IdMap, SpoolId};
use std::collections::BTreeMap;

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
    /// Live records here: messages' newest records and the bodies they name.
    pub records: usize,
    /// Their bytes.
    pub live_bytes: u64,
    /// Bytes in the file.
    pub size: u64,
}

/// Live records and segments.
#[derive(Default)]
pub struct Index {
    location: IdMap<Loc>,
    segments: BTreeMap<u64, Segment>,
    /// Message -> the Body it names.
    body_of: IdMap<SpoolId>,
    /// Body -> how many live messages name it.
    refs: IdMap<usize>,
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

    /// A message record (Ref naming `body`, or a whole Put) for `id` at `loc`: it is now
    /// the live copy.
    pub fn put(&mut self, id: SpoolId, loc: Loc, body: Option<SpoolId>) {
        // count the new name first, so re-naming the same body never kills it
        if let Some(b) = body {
            *self.refs.entry(b).or_default() += 1;
        }
        self.forget_message(id);
        if let Some(b) = body {
            self.body_of.insert(id, b);
        }
        self.place(id, loc);
    }

    /// A Body record at `loc`: live while a message names it (see [`Index::sweep_bodies`]
    /// for bodies met before any message named them).
    pub fn put_body(&mut self, id: SpoolId, loc: Loc) {
        self.unplace(id);
        self.place(id, loc);
    }

    /// True when the record `id` (a message or a body) is live.
    pub fn is_live(&self, id: SpoolId) -> bool {
        self.location.contains_key(&id)
    }

    /// Where the live record `id` is.
    pub fn location(&self, id: SpoolId) -> Option<Loc> {
        self.location.get(&id).copied()
    }

    /// Forgets a record placed during a replay that turned out not to be one.
    pub fn forget_record(&mut self, id: SpoolId) {
        self.unplace(id);
    }

    /// A live record moved (compaction): same liveness, new place.
    pub fn relocate(&mut self, id: SpoolId, loc: Loc) {
        if self.unplace(id) {
            self.place(id, loc);
        }
    }

    /// A Remove for `id`.
    pub fn remove(&mut self, id: SpoolId) {
        self.forget_message(id);
    }

    /// Forgets bodies no live message names (after a replay).
    pub fn sweep_bodies(&mut self, bodies: impl IntoIterator<Item = SpoolId>) {
        for b in bodies {
            if self.refs.get(&b).copied().unwrap_or(0) == 0 {
                self.refs.remove(&b);
                self.unplace(b);
            }
        }
    }

    fn place(&mut self, id: SpoolId, loc: Loc) {
        let s = self.segments.entry(loc.seq).or_default();
        s.records += 1;
        s.live_bytes += loc.len;
        self.location.insert(id, loc);
    }

    /// Drops `id`'s location; false if it had none.
    fn unplace(&mut self, id: SpoolId) -> bool {
        let Some(old) = self.location.remove(&id) else { return false };
        if let Some(s) = self.segments.get_mut(&old.seq) {
            s.records -= 1;
            s.live_bytes -= old.len;
        }
        true
    }

    fn forget_message(&mut self, id: SpoolId) {
        self.unplace(id);
        if let Some(b) = self.body_of.remove(&id)
            && let Some(n) = self.refs.get_mut(&b)
        {
            *n -= 1;
            if *n == 0 {
                self.refs.remove(&b);
                self.unplace(b);
            }
        }
    }

    /// The oldest segment and its accounting.
    pub fn oldest(&self) -> Option<(u64, Segment)> {
        self.segments.first_key_value().map(|(k, v)| (*k, *v))
    }

    /// Segments other than `current` that hold no bytes at all (a start that wrote
    /// nothing): deleting one can never lose a record, wherever it lies.
    pub fn empty_segments(&self, current: u64) -> Vec<u64> {
        self.segments.iter().filter(|(k, s)| **k != current && s.size == 0 && s.records == 0).map(|(k, _)| *k).collect()
    }

    /// Forgets a deleted segment.
    pub fn drop_segment(&mut self, seq: u64) {
        self.segments.remove(&seq);
    }

    /// Dead bytes in every segment but `current`.
    pub fn dead_bytes_before(&self, current: u64) -> u64 {
        self.segments.range(..current).map(|(_, s)| s.size.saturating_sub(s.live_bytes)).sum()
    }

    /// The live records in segment `seq`, in file order.
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

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Loc {
        Loc { seq: 1, offset, len: 10 }
    }

    #[test]
    fn a_body_lives_while_a_message_names_it() {
        let mut ix = Index::default();
        let (body, m1, m2) = (SpoolId::new(), SpoolId::new(), SpoolId::new());
        ix.put_body(body, at(0));
        ix.put(m1, at(10), Some(body));
        ix.put(m2, at(20), Some(body));
        assert_eq!(ix.refs.get(&body), Some(&2));
        ix.put(m1, at(30), Some(body));
        assert!(ix.is_live(body), "re-naming the same body keeps it");
        ix.remove(m1);
        assert!(ix.is_live(body));
        ix.remove(m2);
        assert!(!ix.is_live(body), "the last name gone, the body is dead");
        assert_eq!(ix.oldest().unwrap().1.records, 0);
        let orphan = SpoolId::new();
        ix.put_body(orphan, at(40));
        ix.sweep_bodies([orphan]);
        assert!(!ix.is_live(orphan));
    }
}
