//! A scheduled queue: messages of one `campaign:tenant@domain!routing_domain` waiting
//! for their due time. One task per queue sleeps until the earliest due message (or a
//! new arrival) and hands due messages to the manager for promotion to a ready queue.

use crate::message::Message;
use crate::message::queue_name::QueueNameParts;
use parking_lot::Mutex;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use tokio::sync::Notify;
use tokio::time::Instant;

struct Entry {
    due: Instant,
    seq: u64,
    message: Message,
    /// Waiting for a suspension to end rather than for its retry time.
    held: bool,
}

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Entry {}
impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Entry {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

/// A message due sooner than this keeps its body in memory and its envelope open...
const KEEP_BODY_WITHIN: std::time::Duration = std::time::Duration::from_secs(1);
/// ...unless this many messages wait before it (its ready queue is full)...
const KEEP_BODY_QUEUED: usize = 8192;
/// ...or about this many bytes of messages.
const KEEP_BODY_BYTES: usize = 32 << 20;

/// One scheduled queue.
pub struct ScheduledQueue {
    /// Queue name.
    pub name: String,
    /// Its parts (for `get_queue_config`).
    pub parts: QueueNameParts,
    heap: Mutex<(BinaryHeap<Reverse<Entry>>, u64)>,
    notify: Notify,
    /// Suspended: what it holds waits (see [`ScheduledQueue::set_holding`]).
    holding: std::sync::atomic::AtomicBool,
}

impl ScheduledQueue {
    /// An empty queue.
    pub fn new(name: &str) -> Arc<Self> {
        Arc::new(ScheduledQueue {
            name: name.to_string(),
            parts: QueueNameParts::parse(name),
            heap: Mutex::new((BinaryHeap::new(), 0)),
            notify: Notify::new(),
            holding: Default::default(),
        })
    }

    /// Adds a message due at `due`.
    pub fn insert(&self, message: Message, due: Instant) {
        self.push(message, due, false);
    }

    /// Adds a message held by a suspension until `until` (see [`ScheduledQueue::release_held`]).
    pub fn insert_held(&self, message: Message, until: Instant) {
        self.push(message, until, true);
    }

    fn push(&self, message: Message, due: Instant, held: bool) {
        {
            let mut h = self.heap.lock();
            // a message that waits keeps its body in the spool only; one about to move on
            // to its ready queue keeps it in memory
            let queued = h.0.len();
            if held
                || self.holding.load(std::sync::atomic::Ordering::Relaxed)
                || due > Instant::now() + KEEP_BODY_WITHIN
                || queued >= KEEP_BODY_QUEUED
                || queued.saturating_mul(message.size()) >= KEEP_BODY_BYTES
            {
                message.set_waiting();
            }
            h.1 += 1;
            let seq = h.1;
            h.0.push(Reverse(Entry { due, seq, message, held }));
        }
        self.notify.notify_one();
    }

    /// Makes every message a suspension holds due now (the suspension was cancelled);
    /// messages waiting for their retry time keep it. Returns how many were released.
    pub fn release_held(&self) -> usize {
        let released = {
            let mut h = self.heap.lock();
            let now = Instant::now();
            let mut n = 0;
            let entries: Vec<Entry> = std::mem::take(&mut h.0)
                .into_iter()
                .map(|Reverse(mut e)| {
                    if e.held {
                        e.due = now;
                        e.held = false;
                        n += 1;
                    }
                    e
                })
                .collect();
            h.0 = entries.into_iter().map(Reverse).collect();
            n
        };
        if released > 0 {
            self.notify.notify_one();
        }
        released
    }

    /// The queue is suspended (or not): while it is, every message in it, and every one
    /// that arrives, waits with its body in the spool only.
    pub fn set_holding(&self, on: bool) {
        if self.holding.swap(on, std::sync::atomic::Ordering::Relaxed) == on || !on {
            return;
        }
        for e in self.heap.lock().0.iter() {
            e.0.message.set_waiting();
        }
    }

    /// Waits `at_most`, or less if woken ([`ScheduledQueue::wake`], or a new message).
    pub async fn nap(&self, at_most: std::time::Duration) {
        let _ = tokio::time::timeout(at_most, self.notify.notified()).await;
    }

    /// Wakes the queue's task (a suspension ended).
    pub fn wake(&self) {
        self.notify.notify_one();
    }

    /// Takes every waiting message.
    pub fn drain(&self) -> Vec<Message> {
        self.heap.lock().0.drain().map(|e| e.0.message).collect()
    }

    /// Takes the waiting messages `take` picks (an operator's per-message action).
    pub fn take_where(&self, take: impl Fn(&Message) -> bool) -> Vec<Message> {
        let mut h = self.heap.lock();
        let (taken, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut h.0).into_iter().partition(|e| take(&e.0.message));
        h.0 = kept.into_iter().collect();
        taken.into_iter().map(|e| e.0.message).collect()
    }

    /// The waiting messages (clones of the handles).
    pub fn messages(&self) -> Vec<Message> {
        self.heap.lock().0.iter().map(|e| e.0.message.clone()).collect()
    }

    /// Messages waiting.
    pub fn len(&self) -> usize {
        self.heap.lock().0.len()
    }

    /// True when no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Waits until at least one message is due and returns every due message.
    pub async fn next_due(&self) -> Vec<Message> {
        loop {
            let notified = self.notify.notified();
            let next = {
                let mut h = self.heap.lock();
                let now = Instant::now();
                let mut due = vec![];
                while h.0.peek().is_some_and(|e| e.0.due <= now) {
                    due.push(h.0.pop().expect("peeked").0.message);
                }
                if !due.is_empty() {
                    return due;
                }
                h.0.peek().map(|e| e.0.due)
            };
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at) => {}
                        _ = notified => {}
                    }
                }
                None => notified.await,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::EnvelopeAddress;
    use std::time::Duration;

    fn msg() -> Message {
        Message::new(
            EnvelopeAddress::null(),
            vec![EnvelopeAddress::parse("a@b.example").unwrap()],
            Default::default(),
            vec![],
        )
    }

    #[tokio::test(start_paused = true)]
    async fn releases_messages_at_their_due_time_in_order() {
        let q = ScheduledQueue::new("b.example");
        let start = Instant::now();
        let (m1, m2, m3) = (msg(), msg(), msg());
        q.insert(m2.clone(), start + Duration::from_secs(120));
        q.insert(m1.clone(), start + Duration::from_secs(60));
        q.insert(m3.clone(), start + Duration::from_secs(120));
        let first = q.next_due().await;
        assert_eq!(first.iter().map(Message::id).collect::<Vec<_>>(), vec![m1.id()]);
        assert_eq!(Instant::now() - start, Duration::from_secs(60));
        let second = q.next_due().await;
        assert_eq!(second.iter().map(Message::id).collect::<Vec<_>>(), vec![m2.id(), m3.id()]);
        assert_eq!(Instant::now() - start, Duration::from_secs(120));
        assert!(q.is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_earlier_message_wakes_the_queue() {
        let q = ScheduledQueue::new("b.example");
        let start = Instant::now();
        q.insert(msg(), start + Duration::from_secs(3600));
        let q2 = q.clone();
        let waiter = tokio::spawn(async move { q2.next_due().await.len() });
        tokio::time::sleep(Duration::from_secs(1)).await;
        q.insert(msg(), Instant::now());
        assert_eq!(waiter.await.unwrap(), 1);
        assert!(Instant::now() - start < Duration::from_secs(2));
    }

    #[tokio::test(start_paused = true)]
    async fn releasing_held_messages_makes_them_due_now_and_leaves_retries_alone() {
        let q = ScheduledQueue::new("b.example");
        let start = Instant::now();
        let (held, retry) = (msg(), msg());
        q.insert_held(held.clone(), start + Duration::from_secs(600));
        q.insert(retry.clone(), start + Duration::from_secs(300));
        tokio::time::sleep(Duration::from_secs(4)).await;
        assert_eq!(q.release_held(), 1);
        let due = q.next_due().await;
        assert_eq!(due.iter().map(Message::id).collect::<Vec<_>>(), vec![held.id()]);
        assert_eq!(Instant::now() - start, Duration::from_secs(4), "released at once, not after 600 s");
        assert_eq!(q.release_held(), 0, "the retry is not a held message");
        q.next_due().await;
        assert_eq!(Instant::now() - start, Duration::from_secs(300));
    }
}
