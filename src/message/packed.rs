//! The waiting form of a message's envelope and prefix: one compact allocation (the
//! envelope as JSON, then this copy's prefix) in place of a map, strings and vectors —
//! most of what a queued message costs while it waits. The first access opens it again;
//! an opened message that was only read keeps its packed bytes and packs again without
//! being serialised (a restart's enumeration reads every message once).

use super::Envelope;

/// A message's envelope and prefix, in use.
pub(crate) struct Open {
    pub envelope: Envelope,
    /// Lines prepended to this copy only.
    pub prefix: Vec<u8>,
    /// The packed bytes it was opened from, while it has only been read.
    clean: Option<Box<[u8]>>,
}

/// Open, or packed while the message waits.
pub(crate) enum Held {
    Open(Box<Open>),
    /// JSON length (u32 LE), the envelope JSON, the prefix.
    Packed(Box<[u8]>),
}

impl Held {
    pub fn new(envelope: Envelope, prefix: Vec<u8>) -> Held {
        Held::Open(Box::new(Open { envelope, prefix, clean: None }))
    }

    /// A spool record's packed form, opened (and so checked) at once: the envelope
    /// JSON must parse. Packing it again (while only read) costs no serialisation.
    pub fn recovered(packed: Box<[u8]>) -> Result<Held, serde_json::Error> {
        let (json, prefix) = split_record(&packed);
        let envelope = serde_json::from_slice(json)?;
        let prefix = prefix.to_vec();
        Ok(Held::Open(Box::new(Open { envelope, prefix, clean: Some(packed) })))
    }

    /// The envelope and prefix to read, opened if packed.
    pub fn read(&mut self) -> &Open {
        if let Held::Packed(bytes) = self {
            let bytes = std::mem::take(bytes);
            let (envelope, prefix) = unpack(&bytes);
            *self = Held::Open(Box::new(Open { envelope, prefix, clean: Some(bytes) }));
        }
        match self {
            Held::Open(o) => o,
            Held::Packed(_) => unreachable!("opened above"),
        }
    }

    /// `f` of the envelope; a packed one is read into a temporary copy and stays packed.
    pub fn peek<R>(&self, f: impl FnOnce(&Envelope) -> R) -> R {
        match self {
            Held::Open(o) => f(&o.envelope),
            Held::Packed(bytes) => f(&unpack(bytes).0),
        }
    }

    /// The envelope and prefix to change, opened if packed.
    pub fn open(&mut self) -> &mut Open {
        self.read();
        match self {
            Held::Open(o) => {
                o.clean = None;
                o
            }
            Held::Packed(_) => unreachable!("opened above"),
        }
    }

    /// Packs it (the message waits); left open if it cannot be.
    pub fn pack(&mut self) {
        if let Held::Open(o) = self {
            if let Some(bytes) = o.clean.take() {
                *self = Held::Packed(bytes);
                return;
            }
            match serde_json::to_vec(&o.envelope) {
                Ok(json) => *self = Held::Packed(pack_record(&json, &o.prefix)),
                Err(e) => tracing::warn!("a waiting message stays unpacked: {e}"),
            }
        }
    }

    /// The prefix's length, without opening.
    pub fn prefix_len(&self) -> usize {
        match self {
            Held::Open(o) => o.prefix.len(),
            Held::Packed(b) => b.len() - 4 - json_len(b),
        }
    }
}

/// The packed form of a spool record's envelope JSON and prefix (recovery builds waiting
/// messages straight from their records, without opening them).
pub fn pack_record(meta: &[u8], prefix: &[u8]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(4 + meta.len() + prefix.len());
    out.extend_from_slice(&(meta.len() as u32).to_le_bytes());
    out.extend_from_slice(meta);
    out.extend_from_slice(prefix);
    out.into_boxed_slice()
}

/// (envelope JSON, prefix) of a packed form.
pub fn split_record(packed: &[u8]) -> (&[u8], &[u8]) {
    let n = json_len(packed);
    (&packed[4..4 + n], &packed[4 + n..])
}

fn json_len(bytes: &[u8]) -> usize {
    u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize
}

fn unpack(bytes: &[u8]) -> (Envelope, Vec<u8>) {
    let (json, prefix) = split_record(bytes);
    // written by `pack` from an Envelope, or opened once by `recovered`
    let envelope = serde_json::from_slice(json).expect("a packed envelope reads back");
    (envelope, prefix.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EnvelopeAddress;

    #[test]
    fn packs_and_opens_to_the_same_envelope_and_prefix() {
        let mut meta = serde_json::Map::new();
        meta.insert("tenant".into(), "t1".into());
        meta.insert("n".into(), serde_json::json!({"deep": [1, 2.5, null, "x"], "big": u64::MAX}));
        let envelope = Envelope {
            sender: EnvelopeAddress::parse("a@x.example").unwrap(),
            recipients: vec![EnvelopeAddress::parse("\"odd one\"@y.example").unwrap()],
            meta,
            num_attempts: 3,
            due: Some(1_900_000_000),
            scheduling: None,
            last_response: Some("451 4.3.0 try later".into()),
            admin_hold: true,
        };
        let mut held = Held::new(envelope.clone(), b"Received: by mx\r\n".to_vec());
        held.pack();
        assert!(matches!(held, Held::Packed(_)));
        assert_eq!(held.prefix_len(), 17);
        let open = held.open();
        assert_eq!(serde_json::to_value(&open.envelope).unwrap(), serde_json::to_value(&envelope).unwrap());
        assert_eq!(open.prefix, b"Received: by mx\r\n");
    }

    #[test]
    fn a_message_only_read_packs_to_its_own_bytes_and_a_changed_one_is_serialised() {
        let json =
            br#"{"sender":"a@x.example","recipients":["b@y.example"],"meta":{"k":"v"},"num_attempts":2,"due":null}"#;
        let record = pack_record(json, b"P: 1\r\n");
        let mut held = Held::recovered(record.clone()).unwrap();
        assert_eq!(held.read().envelope.num_attempts, 2);
        held.pack();
        // the very bytes it came from (serialising would reorder and drop `due: null`)
        assert!(matches!(&held, Held::Packed(b) if *b == record));
        held.open().envelope.num_attempts = 3;
        held.pack();
        let Held::Packed(b) = &held else { panic!("packed") };
        assert_ne!(*b, record);
        assert_eq!(held.read().envelope.num_attempts, 3);
        assert!(Held::recovered(pack_record(b"{\"sender\":", b"")).is_err(), "a torn envelope is refused");
    }
}
