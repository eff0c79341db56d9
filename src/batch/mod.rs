//! Per-table batching: a pure state machine that closes a batch on messages, bytes or age.
//!
//! Consumes deliveries one at a time (stream sequence, the item, its size); emits closed
//! [`Batch`]es whose boundaries are a function of the input alone, so that after a crash the
//! same messages can be cut at the same place again (see `source::journal`). It never does IO,
//! never acks and never reads the clock: the caller passes `now`. Batches hold raw messages:
//! decoding happens in the next stage, on another task, so that pulling from NATS and decoding
//! run on different cores.

use std::time::{Duration, Instant};

use crate::model::DataType;

/// Flush thresholds for one table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Close when this many messages (rows + dead letters) are buffered.
    pub max_rows: usize,
    /// Close when the messages' payloads reach this many bytes.
    pub max_bytes: usize,
    /// Close when the first message of the batch is this old.
    pub max_age: Duration,
}

/// A closed batch: a contiguous run of one consumer's messages.
#[derive(Debug)]
pub struct Batch<T, A> {
    /// The table's data type.
    pub data_type: DataType,
    /// The messages, in stream order.
    pub items: Vec<T>,
    /// Stream sequence of the first message.
    pub first_seq: u64,
    /// Stream sequence of the last message.
    pub last_seq: u64,
    /// Number of messages.
    pub count: u64,
    /// Bytes of the messages (as the caller measured them).
    pub bytes: usize,
    /// Earliest JetStream publish time in the batch (UTC ms), for latency metrics.
    pub first_published_ms: i64,
    /// The ack handles of the batch (see `ack`): consumed only after the insert succeeded.
    pub acks: Vec<A>,
    /// When the first message was added.
    pub opened_at: Instant,
}

impl<T, A> Batch<T, A> {
    fn new(data_type: DataType, now: Instant) -> Self {
        Batch {
            data_type,
            items: Vec::new(),
            first_seq: 0,
            last_seq: 0,
            count: 0,
            bytes: 0,
            first_published_ms: i64::MAX,
            acks: Vec::new(),
            opened_at: now,
        }
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// Accumulates one table's messages and says when to flush.
///
/// Closed batches queue inside the batcher (at most two at once: a forced cut can close the
/// previous batch while the new message fills the next); drain them with [`Batcher::pop_closed`]
/// after every [`Batcher::push`] or [`Batcher::poll_age`].
#[derive(Debug)]
pub struct Batcher<T, A> {
    data_type: DataType,
    limits: Limits,
    current: Option<Batch<T, A>>,
    closed: std::collections::VecDeque<Batch<T, A>>,
    /// Stream sequences after which a batch must close, ascending (journal replay).
    cuts: std::collections::VecDeque<u64>,
    /// Under `AckPolicy::All` the last message's ack covers the batch: keep only that handle.
    keep_last_ack_only: bool,
}

impl<T, A> Batcher<T, A> {
    /// A batcher for one table.
    pub fn new(data_type: DataType, limits: Limits) -> Self {
        Batcher {
            data_type,
            limits,
            current: None,
            closed: std::collections::VecDeque::new(),
            cuts: std::collections::VecDeque::new(),
            keep_last_ack_only: false,
        }
    }

    /// Keeps only the newest ack handle per batch (`AckPolicy::All`).
    pub fn keep_last_ack_only(mut self, yes: bool) -> Self {
        self.keep_last_ack_only = yes;
        self
    }

    /// Forces a batch to close right after stream sequence `seq`, whatever the thresholds say
    /// (used to re-form journaled batches after a crash). Call in ascending order; while a cut
    /// is pending, thresholds and age are ignored so the journaled boundaries are reproduced.
    pub fn cut_after(&mut self, seq: u64) {
        if self.cuts.back().is_none_or(|&last| seq > last) {
            self.cuts.push_back(seq);
        }
    }

    /// Adds one message; a batch it closes is queued for [`Batcher::pop_closed`].
    ///
    /// `ack` is the message's ack handle; pass `None` where the ack of a later message covers
    /// this one (`AckPolicy::All`) and only the last handle is kept. `bytes` is the item's
    /// size for the byte threshold.
    pub fn push(
        &mut self,
        seq: u64,
        item: T,
        bytes: usize,
        published_ms: i64,
        ack: Option<A>,
        now: Instant,
    ) {
        // A cut point before this message closes the batch first (the journaled last message
        // may be gone from the stream, or the cut marks the start of a journaled batch).
        while self.cuts.front().is_some_and(|&cut| cut < seq) {
            self.cuts.pop_front();
            self.close();
        }
        let b = self
            .current
            .get_or_insert_with(|| Batch::new(self.data_type, now));
        if b.count == 0 {
            b.first_seq = seq;
            b.opened_at = now;
        }
        b.last_seq = seq;
        b.count += 1;
        b.first_published_ms = b.first_published_ms.min(published_ms);
        b.bytes += bytes;
        b.items.push(item);
        if let Some(a) = ack {
            if self.keep_last_ack_only {
                b.acks.clear();
            }
            b.acks.push(a);
        }
        let full = b.count as usize >= self.limits.max_rows || b.bytes >= self.limits.max_bytes;
        match self.cuts.front() {
            Some(&cut) if cut == seq => {
                self.cuts.pop_front();
                self.close();
            }
            Some(_) => {}
            None if full => self.close(),
            None => {}
        }
    }

    /// Closes the current batch if it is older than `max_age` (and no cut is pending).
    pub fn poll_age(&mut self, now: Instant) {
        if !self.cuts.is_empty() {
            return;
        }
        if self.deadline().is_some_and(|d| now >= d) {
            self.close();
        }
    }

    /// The next closed batch, oldest first.
    pub fn pop_closed(&mut self) -> Option<Batch<T, A>> {
        self.closed.pop_front()
    }

    /// When the current batch will reach `max_age`, if there is one.
    pub fn deadline(&self) -> Option<Instant> {
        self.current
            .as_ref()
            .filter(|b| b.count > 0)
            .map(|b| b.opened_at + self.limits.max_age)
    }

    /// Closes whatever is buffered (shutdown, resync), ignoring a pending cut.
    pub fn close(&mut self) {
        if let Some(b) = self.current.take().filter(|b| b.count > 0) {
            self.closed.push_back(b);
        }
    }

    /// Takes the open batch away without closing it (a stop or resync while a journaled cut
    /// is pending: the part must not be inserted; its messages are re-read later).
    pub fn discard_open(&mut self) -> Option<Batch<T, A>> {
        self.current.take().filter(|b| b.count > 0)
    }

    /// Whether journaled cut points are still ahead.
    pub fn has_pending_cuts(&self) -> bool {
        !self.cuts.is_empty()
    }

    /// Declares that every message up to `seq` has been pushed: cut points at or below it that
    /// were not reached (their messages are gone from the stream) close the batch now. Cut points
    /// above `seq` stay: their messages are still to come.
    pub fn pass_cuts_through(&mut self, seq: u64) {
        let mut passed = false;
        while self.cuts.front().is_some_and(|&c| c <= seq) {
            self.cuts.pop_front();
            passed = true;
        }
        if passed {
            self.close();
        }
    }

    /// Messages currently buffered, open and closed.
    pub fn buffered(&self) -> usize {
        self.current.as_ref().map_or(0, |b| b.count as usize)
            + self.closed.iter().map(|b| b.count as usize).sum::<usize>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A stand-in message: its sequence number.
    fn trade(id: u64) -> u64 {
        id
    }

    /// Pushes a one-byte item.
    trait PushItem {
        fn push_item(
            &mut self,
            seq: u64,
            item: u64,
            published: i64,
            ack: Option<u64>,
            now: Instant,
        );
    }

    impl PushItem for Batcher<u64, u64> {
        fn push_item(
            &mut self,
            seq: u64,
            item: u64,
            published: i64,
            ack: Option<u64>,
            now: Instant,
        ) {
            self.push(seq, item, 1, published, ack, now);
        }
    }

    fn limits(rows: usize) -> Limits {
        Limits {
            max_rows: rows,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(1),
        }
    }

    #[test]
    fn closes_on_rows_and_keeps_sequence_range() {
        let now = Instant::now();
        let mut b: Batcher<u64, u64> = Batcher::new(DataType::Trade, limits(3));
        b.push_item(10, trade(1), 5, None, now);
        b.push_item(12, trade(2), 4, None, now);
        assert!(b.pop_closed().is_none());
        b.push_item(15, trade(3), 6, Some(15), now);
        let batch = b.pop_closed().unwrap();
        assert_eq!((batch.first_seq, batch.last_seq, batch.count), (10, 15, 3));
        assert_eq!(batch.first_published_ms, 4);
        assert_eq!(batch.acks, vec![15]);
        assert_eq!(b.buffered(), 0);
    }

    #[test]
    fn closes_on_age_only_after_max_age() {
        let t0 = Instant::now();
        let mut b: Batcher<u64, u64> = Batcher::new(DataType::Trade, limits(100));
        b.push_item(1, trade(1), 0, None, t0);
        b.poll_age(t0 + Duration::from_millis(999));
        assert!(b.pop_closed().is_none());
        assert_eq!(b.deadline(), Some(t0 + Duration::from_secs(1)));
        b.poll_age(t0 + Duration::from_secs(1));
        let batch = b.pop_closed().unwrap();
        assert_eq!(batch.count, 1);
        assert!(b.deadline().is_none());
    }

    #[test]
    fn closes_on_bytes() {
        let now = Instant::now();
        let mut b: Batcher<u64, u64> = Batcher::new(
            DataType::Trade,
            Limits {
                max_rows: 1000,
                max_bytes: 1,
                max_age: Duration::from_secs(1),
            },
        );
        b.push_item(1, trade(1), 0, None, now);
        assert_eq!(b.pop_closed().unwrap().count, 1);
    }

    #[test]
    fn cut_reproduces_journaled_boundary_regardless_of_thresholds() {
        let now = Instant::now();
        let mut b: Batcher<u64, u64> = Batcher::new(DataType::Trade, limits(2));
        b.cut_after(5);
        // Thresholds say 2 rows, but the journal says the batch was 1..=5.
        for s in 1..5 {
            b.push_item(s, trade(s), 0, None, now);
            assert!(b.pop_closed().is_none(), "seq {s}");
        }
        b.poll_age(now + Duration::from_secs(10));
        assert!(b.pop_closed().is_none(), "age must wait for the cut");
        b.push_item(5, trade(5), 0, None, now);
        let batch = b.pop_closed().unwrap();
        assert_eq!((batch.first_seq, batch.last_seq, batch.count), (1, 5, 5));
    }

    #[test]
    fn cut_point_missing_from_stream_closes_on_next_message() {
        let now = Instant::now();
        let mut b: Batcher<u64, u64> = Batcher::new(DataType::Trade, limits(100));
        b.cut_after(5);
        b.push_item(3, trade(3), 0, None, now);
        b.push_item(7, trade(7), 0, None, now);
        let batch = b.pop_closed().unwrap();
        assert_eq!((batch.first_seq, batch.last_seq), (3, 3));
        assert_eq!(b.buffered(), 1);
    }

    #[test]
    fn several_cuts_reproduce_several_journaled_batches() {
        let now = Instant::now();
        let mut b: Batcher<u64, u64> =
            Batcher::new(DataType::Trade, limits(100)).keep_last_ack_only(true);
        // Journal: batches (3..=5) and (6..=9); seq 1..2 were never journaled.
        b.cut_after(2);
        b.cut_after(5);
        b.cut_after(9);
        for s in 1..=12 {
            b.push_item(s, trade(s), 0, Some(s), now);
        }
        let got: Vec<_> = std::iter::from_fn(|| b.pop_closed())
            .map(|x| (x.first_seq, x.last_seq, x.acks.clone()))
            .collect();
        assert_eq!(got, vec![(1, 2, vec![2]), (3, 5, vec![5]), (6, 9, vec![9])]);
        assert_eq!(b.buffered(), 3);
        assert!(!b.has_pending_cuts());
    }

    #[test]
    fn cuts_past_the_replayed_range_wait_for_later_messages() {
        let now = Instant::now();
        let mut b: Batcher<u64, u64> = Batcher::new(DataType::Trade, limits(2));
        b.cut_after(4);
        b.cut_after(8);
        for s in 1..=3 {
            b.push_item(s, trade(s), 0, None, now);
        }
        // The replay ended at 6 (4 is gone from the stream): close at 3, keep the cut at 8.
        b.pass_cuts_through(6);
        assert_eq!(
            b.pop_closed().map(|x| (x.first_seq, x.last_seq)),
            Some((1, 3))
        );
        for s in 7..=8 {
            b.push_item(s, trade(s), 0, None, now);
        }
        assert_eq!(
            b.pop_closed().map(|x| (x.first_seq, x.last_seq)),
            Some((7, 8))
        );
    }

    #[test]
    fn bytes_accumulate_and_items_keep_stream_order() {
        let now = Instant::now();
        let mut b: Batcher<u64, u64> = Batcher::new(
            DataType::Trade,
            Limits {
                max_rows: 100,
                max_bytes: 10,
                max_age: Duration::from_secs(1),
            },
        );
        b.push(1, 7, 4, 0, None, now);
        b.push(2, 8, 4, 0, None, now);
        assert!(b.pop_closed().is_none());
        b.push(3, 9, 4, 0, None, now);
        let batch = b.pop_closed().unwrap();
        assert_eq!((batch.items, batch.bytes), (vec![7, 8, 9], 12));
    }

    proptest! {
        /// Every pushed message ends up in exactly one batch, batches are contiguous and in
        /// order, and none exceeds max_rows.
        #[test]
        fn batches_partition_the_input(n in 1usize..400, max_rows in 1usize..50, cut in proptest::option::of(1u64..400)) {
            let now = Instant::now();
            let mut b: Batcher<u64, u64> = Batcher::new(DataType::Trade, limits(max_rows));
            if let Some(c) = cut { b.cut_after(c); }
            let mut out = Vec::new();
            for s in 1..=n as u64 {
                b.push_item(s, trade(s), 0, None, now);
                while let Some(x) = b.pop_closed() { out.push(x); }
            }
            b.close();
            while let Some(x) = b.pop_closed() { out.push(x); }
            let mut next = 1u64;
            for x in &out {
                prop_assert_eq!(x.first_seq, next);
                prop_assert_eq!(x.count, x.last_seq - x.first_seq + 1);
                next = x.last_seq + 1;
            }
            prop_assert_eq!(next, n as u64 + 1);
            if let Some(c) = cut {
                if c <= n as u64 {
                    prop_assert!(out.iter().any(|x| x.last_seq == c), "cut {} not honoured", c);
                    prop_assert!(out.iter().filter(|x| x.last_seq > c).all(|x| x.count as usize <= max_rows));
                }
            } else {
                prop_assert!(out.iter().all(|x| x.count as usize <= max_rows));
            }
        }
    }
}
