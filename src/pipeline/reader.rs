//! The reader of one data type: durable consumer → decode → batcher → writer.
//!
//! One in-order reader per durable (guarded by a lease). It (re)synchronises from the ack floor
//! at start and whenever deliveries may have been lost (a gap in consumer sequences, a stream
//! error, a reconnect): it waits until the writer has acked everything it holds, reads the
//! consumer's ack floor F and last delivered sequence D, reloads the journal, re-reads (F, D]
//! straight from the stream with an ordered consumer — cutting batches at the journaled
//! boundaries so in-doubt batches are re-sent with their original tokens — and only then pulls
//! new messages from the durable. A redelivered message that is already stored is acked; one
//! that is still held in memory is skipped.
//!
//! A stop or resync hands over the closed batches and the open one, except while a journaled
//! cut point is still ahead: then the open batch is a part of a journaled batch, which may only
//! be inserted whole under its token, so it is dropped (unacked) and re-read. Journal entries
//! of another stream incarnation (the stream was deleted and created again) are ignored, and
//! what is kept is written back before anything is re-read: the journal's revision changes, so
//! the writer of an earlier owner is fenced at its next journal write.
//!
//! Memory is bounded twice: pulls ask for at most `fetch_batch` messages and `fetch_max_bytes`
//! bytes, and the reader stops pulling while `max_queue` messages or `max_queue_bytes` payload
//! bytes of its type are received but not acked.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::pull};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::ack::AckHandle;
use crate::batch::{Batcher, Limits};
use crate::model::DataType;
use crate::source::journal::{Journal, JournalEntry, select, stream_epoch};
use crate::source::{ConsumerSpec, Delivery, SourceError, api_err, bind_consumer};

use super::decoder::{RawBatch, RawMsg, StageCmd};
use super::stats::Stats;

/// How long the recovery read waits for the next message before asking whether any is left.
const RECOVERY_IDLE: Duration = Duration::from_secs(5);

/// What the reader hands downstream (to the decoder, then the writer), in order.
pub(crate) type WriterCmd = StageCmd<RawBatch>;

/// Why a consume loop ended.
enum Flow {
    /// Shutdown requested.
    Exit,
    /// Deliveries may have been lost or the stream broke: resynchronise.
    Resync(&'static str),
}

/// The ack floor as far as batching is concerned: the consumer's floor, or the end of the
/// journaled batch it lies inside.
///
/// The durable's floor only stops inside a journaled batch when a redelivered message was
/// acked out of batch order (the reader does that only for messages at or below what the
/// writer has stored, and the writer stores batches whole and in order), or when a killed
/// `nats-server` comes back with its floor behind such an ack. Either way that batch was
/// stored whole: its messages above the floor are redeliveries of stored rows. Re-cutting them
/// from the floor would form a part of the batch under a token of its own — inserted again,
/// a duplicate of every row of it.
pub(crate) fn effective_floor(floor: u64, journaled: &[JournalEntry]) -> u64 {
    journaled
        .iter()
        .filter(|e| e.first_seq <= floor && floor < e.last_seq)
        .map(|e| e.last_seq)
        .fold(floor, u64::max)
}

/// Everything one type's reader needs.
pub(crate) struct Reader {
    pub data_type: DataType,
    pub js: jetstream::Context,
    pub spec: ConsumerSpec,
    pub limits: Limits,
    pub fetch_batch: usize,
    /// Messages received but not yet acked above which the reader stops pulling.
    pub max_queue: usize,
    /// Payload bytes received but not yet acked above which the reader stops pulling.
    pub max_queue_bytes: u64,
    /// Most bytes one pull request may return.
    pub fetch_max_bytes: usize,
    pub journal: Journal,
    pub stats: Arc<Stats>,
    pub stop: CancellationToken,
    pub to_writer: mpsc::Sender<WriterCmd>,
    /// Highest stream sequence the writer has inserted (shared with it).
    pub stored_through: Arc<AtomicU64>,
    /// Set by the writer when an ack could not be confirmed: resynchronise.
    pub needs_resync: Arc<std::sync::atomic::AtomicBool>,
}

impl Reader {
    /// Runs until shutdown; errors are logged and followed by a resync after a backoff.
    pub async fn run(mut self) {
        let mut backoff = Duration::from_millis(200);
        loop {
            if self.stop.is_cancelled() {
                return;
            }
            match self.sync_and_consume().await {
                Ok(Flow::Exit) => return,
                Ok(Flow::Resync(why)) => {
                    tracing::info!(data_type = %self.data_type, why, "resynchronising from the ack floor");
                    backoff = Duration::from_millis(200);
                }
                Err(e @ SourceError::DurableUnusable { .. }) => {
                    // Not something a retry fixes, and the durable is never changed by us.
                    tracing::error!(data_type = %self.data_type, error = %e, "durable cannot be used");
                    let st = self.stats.of(self.data_type);
                    st.error(e.to_string());
                    st.set_bound(false);
                    st.set_stuck(e.to_string());
                    return;
                }
                Err(e) => {
                    tracing::warn!(data_type = %self.data_type, error = %e, "reader error; resynchronising");
                    self.stats.of(self.data_type).error(e.to_string());
                    self.stats.of(self.data_type).set_bound(false);
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = self.stop.cancelled() => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    async fn send(&self, cmd: WriterCmd) -> Result<(), SourceError> {
        self.to_writer
            .send(cmd)
            .await
            .map_err(|_| SourceError::Api {
                what: "hand a batch to the writer".into(),
                detail: "writer stopped".into(),
            })
    }

    async fn send_closed(
        &self,
        batcher: &mut Batcher<RawMsg, AckHandle>,
    ) -> Result<(), SourceError> {
        while let Some(b) = batcher.pop_closed() {
            self.send(StageCmd::Batch(b)).await?;
        }
        Ok(())
    }

    /// At a stop or resync: hands over the closed batches and the open one, unless a journaled
    /// cut point is still ahead. Then the open batch is (part of) a journaled batch that may
    /// only be inserted whole under its token: it is dropped, unacked, and re-read later.
    async fn hand_over(&self, batcher: &mut Batcher<RawMsg, AckHandle>) -> Result<(), SourceError> {
        if batcher.has_pending_cuts() {
            if let Some(part) = batcher.discard_open() {
                let st = self.stats.of(self.data_type);
                st.release_queued(part.count, part.bytes as u64);
                tracing::info!(data_type = %self.data_type, first = part.first_seq, last = part.last_seq,
                    count = part.count, "part of a journaled batch not sent (re-read later)");
            }
        } else {
            batcher.close();
        }
        self.send_closed(batcher).await
    }

    /// Waits until the writer has inserted and acked everything handed to it.
    async fn drain_writer(&self) -> Result<(), SourceError> {
        let (tx, rx) = oneshot::channel();
        self.send(StageCmd::Sync(tx)).await?;
        rx.await.map_err(|_| SourceError::Api {
            what: "wait for the writer".into(),
            detail: "writer stopped".into(),
        })
    }

    fn push(&self, batcher: &mut Batcher<RawMsg, AckHandle>, d: Delivery, now: Instant) {
        let st = self.stats.of(self.data_type);
        // The server's receive time: no clock read per message.
        st.record_received(d.payload.len() as u64, d.published_ms);
        st.set_consumer_pending(d.pending);
        let ack = d.acker.map(|a| AckHandle::new(a, d.stream_seq));
        let bytes = d.payload.len();
        let raw = RawMsg {
            subject: d.subject,
            stream_seq: d.stream_seq,
            published_ms: d.published_ms,
            payload: d.payload,
        };
        batcher.push(raw.stream_seq, raw, bytes, d.published_ms, ack, now);
    }

    async fn sync_and_consume(&mut self) -> Result<Flow, SourceError> {
        let dt = self.data_type;
        let st = self.stats.of(dt);
        st.record_resync();
        self.drain_writer().await?;
        // Nothing is in flight now: what a failed run still counted as unacked (a batcher
        // dropped with an error) is re-read from the ack floor, so it no longer counts.
        st.clear_queued();

        let mut consumer = bind_consumer(&self.js, &self.spec).await?;
        // The stream's epoch (a recreated stream restarts its sequences at 1) and its last
        // sequence (journal entries beyond it describe no message of this stream).
        let (epoch, stream_last) = {
            let mut stream = self
                .js
                .get_stream(&self.spec.stream)
                .await
                .map_err(api_err(format!("get stream {}", self.spec.stream)))?;
            let info = stream
                .info()
                .await
                .map_err(api_err(format!("stream {} info", self.spec.stream)))?;
            (stream_epoch(info), info.state.last_sequence)
        };
        let info = consumer
            .info()
            .await
            .map_err(api_err(format!("consumer {} info", self.spec.durable)))?
            .clone();
        let acked_floor = info.ack_floor.stream_sequence;
        let delivered = info.delivered.stream_sequence;
        let ack_all = info.config.ack_policy == AckPolicy::All;
        st.set_consumer_pending(info.num_pending);
        st.set_bound(true);

        let loaded = self.journal.get(&self.spec.durable).await?;
        let sel = select(loaded.entries, epoch, loaded.written_ns, stream_last);
        if sel.other_epoch + sel.older_stream + sel.beyond_stream > 0 {
            tracing::warn!(data_type = %dt, stream = %self.spec.stream, epoch, stream_last,
                other_epoch = sel.other_epoch, older_stream = sel.older_stream,
                beyond_stream = sel.beyond_stream,
                "journal entries of an earlier incarnation of the stream ignored (the stream was recreated)");
        }
        let journaled = sel.entries;
        let floor = effective_floor(acked_floor, &journaled);
        if floor != acked_floor {
            tracing::info!(data_type = %dt, acked_floor, floor,
                "ack floor inside a journaled batch: that batch was stored whole; its other messages are redeliveries");
        }
        // Write what we keep back, replacing the revision we read: the revision changes, so a
        // writer of an earlier owner (ours before a pause, or another instance's) still
        // holding the old revision is fenced at its next journal write instead of fencing us
        // (reading alone changes nothing). Also rewrites ignored entries away for good.
        let revision = self
            .journal
            .put(&self.spec.durable, &journaled, loaded.revision)
            .await?;
        // Batches above the floor must be re-cut exactly where they were cut before.
        let entries: Vec<&JournalEntry> = journaled.iter().filter(|e| e.last_seq > floor).collect();
        let mut batcher = Batcher::new(dt, self.limits).keep_last_ack_only(ack_all);
        let mut prev_last = floor;
        for e in &entries {
            if e.first_seq > prev_last + 1 {
                batcher.cut_after(e.first_seq - 1);
            }
            batcher.cut_after(e.last_seq);
            prev_last = e.last_seq;
        }

        if !entries.is_empty() {
            tracing::info!(data_type = %dt, batches = entries.len(), floor, delivered,
                "re-forming journaled batches from the stream");
        }
        self.stored_through.store(floor, Relaxed);
        self.send(StageCmd::Reset {
            journaled,
            floor,
            epoch,
            revision,
        })
        .await?;

        // Re-read everything delivered but not acked, straight from the stream.
        let mut last_seen = floor;
        if delivered > floor {
            let recovered = self.recover(&mut batcher, floor, delivered).await?;
            last_seen = last_seen.max(recovered);
            if self.stop.is_cancelled() {
                self.hand_over(&mut batcher).await?;
                return Ok(Flow::Exit);
            }
        }
        last_seen = last_seen.max(delivered);
        // Journaled boundaries inside the re-read range that were not reached (their messages
        // are gone from the stream) close the batch now; later ones wait for the durable.
        batcher.pass_cuts_through(last_seen);
        self.send_closed(&mut batcher).await?;

        // Pull new messages from the durable.
        let mut expected = info.delivered.consumer_sequence + 1;
        let mut messages = consumer
            .stream()
            .max_messages_per_batch(self.fetch_batch)
            .max_bytes_per_batch(self.fetch_max_bytes)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(api_err(format!("pull from {}", self.spec.durable)))?;
        let stop = self.stop.clone();
        let mut skip_ack: Option<AckHandle> = None;
        let mut check = tokio::time::interval(Duration::from_millis(250));
        loop {
            let deadline = batcher.deadline().map(tokio::time::Instant::from_std);
            // Back-pressure by count and bytes: above max_queue unacked messages or
            // max_queue_bytes unacked payload bytes, stop pulling (the server keeps the rest)
            // until the writer acks. Not while a journaled boundary is still ahead: that batch
            // cannot close before its messages arrive.
            let full = (usize::try_from(st.queued()).unwrap_or(usize::MAX) >= self.max_queue
                || st.queued_bytes() >= self.max_queue_bytes)
                && !batcher.has_pending_cuts();
            tokio::select! {
                biased;
                _ = stop.cancelled() => {
                    self.hand_over(&mut batcher).await?;
                    return Ok(Flow::Exit);
                }
                _ = tokio::time::sleep(Duration::from_millis(5)), if full => {}
                _ = check.tick() => {
                    // A run of stored redeliveries that ended quietly still gets its one ack.
                    if let Some(h) = skip_ack.take() {
                        self.send(StageCmd::AckOnly(h)).await?;
                    }
                    if self.needs_resync.swap(false, Relaxed) {
                        // The writer drops batches until our Reset: hand over what we hold
                        // (dropped, re-read after the resync) and start over.
                        self.hand_over(&mut batcher).await?;
                        return Ok(Flow::Resync("an ack was not confirmed"));
                    }
                }
                _ = async { if let Some(d) = deadline { tokio::time::sleep_until(d).await } else { std::future::pending::<()>().await } } => {
                    batcher.poll_age(Instant::now());
                    self.send_closed(&mut batcher).await?;
                }
                next = messages.next(), if !full => {
                    let msg = match next {
                        None => {
                            self.hand_over(&mut batcher).await?;
                            return Ok(Flow::Resync("message stream ended"));
                        }
                        Some(Err(e)) => {
                            self.hand_over(&mut batcher).await?;
                            st.error(format!("pull: {e}"));
                            return Ok(Flow::Resync("pull error"));
                        }
                        Some(Ok(m)) => m,
                    };
                    let d = Delivery::from_jetstream(msg)?;
                    if d.consumer_seq != expected {
                        tracing::warn!(data_type = %dt, expected, got = d.consumer_seq,
                            "deliveries lost in transit");
                        self.hand_over(&mut batcher).await?;
                        return Ok(Flow::Resync("consumer sequence gap"));
                    }
                    expected += 1;
                    if d.stream_seq <= last_seen {
                        let skipped = st.record_redelivery_skipped();
                        // Under AckPolicy::All one ack covers every earlier message: ack only
                        // the newest stored redelivery of a run (every 1000th, and the last).
                        if let Some(a) = d.acker.filter(|_| d.stream_seq <= self.stored_through.load(Relaxed)) {
                            skip_ack = Some(AckHandle::new(a, d.stream_seq));
                        }
                        if (skipped.is_multiple_of(1000) || d.pending == 0)
                            && let Some(h) = skip_ack.take()
                        {
                            self.send(StageCmd::AckOnly(h)).await?;
                        }
                        continue;
                    }
                    if let Some(h) = skip_ack.take() {
                        self.send(StageCmd::AckOnly(h)).await?;
                    }
                    last_seen = d.stream_seq;
                    self.push(&mut batcher, d, Instant::now());
                    self.send_closed(&mut batcher).await?;
                }
            }
        }
    }

    /// Whether the stream no longer holds any message up to `delivered` (removed by limits).
    async fn gone_before(&self, stream: &jetstream::stream::Stream, delivered: u64) -> bool {
        let mut s = stream.clone();
        match s.info().await {
            Ok(info) => info.state.first_sequence > delivered,
            Err(_) => false,
        }
    }

    /// Reads stream sequences (floor, delivered] of this type with an ordered consumer.
    /// Returns the highest sequence read.
    async fn recover(
        &self,
        batcher: &mut Batcher<RawMsg, AckHandle>,
        floor: u64,
        delivered: u64,
    ) -> Result<u64, SourceError> {
        let dt = self.data_type;
        let stream = self
            .js
            .get_stream(&self.spec.stream)
            .await
            .map_err(api_err(format!("get stream {}", self.spec.stream)))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: dt.subject_filter(),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: floor + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(api_err("create recovery consumer"))?;
        let mut msgs = consumer
            .messages()
            .await
            .map_err(api_err("read recovery consumer"))?;
        let mut last = floor;
        let mut n = 0u64;
        // Messages of this type left in the stream after the last one read (the server's count).
        let mut left: Option<u64> = None;
        loop {
            // Every message up to `delivered` must be read: the caller treats all of them as
            // held. The read may only end early when the server says nothing is left (the tail
            // was removed by the stream's limits); a stall is an error and the resync retries.
            let next = match tokio::time::timeout(RECOVERY_IDLE, msgs.next()).await {
                Ok(n) => n,
                Err(_) if left == Some(0) => break,
                Err(_) if n == 0 && self.gone_before(&stream, delivered).await => break,
                Err(_) => {
                    return Err(SourceError::Api {
                        what: "recovery read".into(),
                        detail: format!(
                            "no message for {RECOVERY_IDLE:?} after sequence {last} (need up to {delivered})"
                        ),
                    });
                }
            };
            let msg = match next {
                None if left == Some(0) => break,
                None => {
                    return Err(SourceError::Api {
                        what: "recovery read".into(),
                        detail: format!(
                            "stream ended after sequence {last} (need up to {delivered})"
                        ),
                    });
                }
                Some(Err(e)) => {
                    return Err(SourceError::Api {
                        what: "recovery read".into(),
                        detail: e.to_string(),
                    });
                }
                Some(Ok(m)) => m,
            };
            let mut d = Delivery::from_jetstream(msg)?;
            if d.stream_seq > delivered {
                break;
            }
            left = Some(d.pending);
            d.acker = None; // Ordered consumers do not ack; the durable's ack floor covers these.
            d.pending = 0;
            last = d.stream_seq;
            n += 1;
            self.push(batcher, d, Instant::now());
            self.send_closed(batcher).await?;
            if last >= delivered || self.stop.is_cancelled() {
                break;
            }
        }
        tracing::info!(data_type = %dt, messages = n, from = floor + 1, to = last, "recovered unacked messages");
        Ok(last)
    }
}

#[cfg(test)]
mod floor_tests {
    use super::effective_floor;
    use crate::source::journal::JournalEntry;

    fn e(first: u64, last: u64) -> JournalEntry {
        JournalEntry {
            first_seq: first,
            last_seq: last,
            count: last - first + 1,
            token: format!("t{first}"),
            epoch: None,
            halved: Vec::new(),
        }
    }

    #[test]
    fn a_floor_inside_a_journaled_batch_moves_to_its_end() {
        // The incident: batch 5001..=10000 stored, a redelivery of 6170 acked; after a crash
        // the floor was 6170 and 6171..=10000 was re-cut under a new token: 3,830 duplicates.
        let j = [e(1, 5000), e(5001, 10000), e(10001, 15000)];
        assert_eq!(effective_floor(6170, &j), 10000);
        assert_eq!(
            effective_floor(5000, &j),
            5000,
            "a floor at a batch end stays"
        );
        assert_eq!(effective_floor(10000, &j), 10000);
        assert_eq!(effective_floor(0, &j), 0);
        assert_eq!(effective_floor(5001, &j), 10000);
        assert_eq!(effective_floor(20000, &j), 20000);
        assert_eq!(effective_floor(7, &[]), 7);
    }
}
