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
//! Shape: one `Run` per resync, in three named steps — `resync` (drain the writer, read the
//! floor and the journal, take the journal over, `Reset` downstream), `catch_up` (the recovery
//! read) and `consume` (the durable pull, one small step per event). Every step says
//! `Step::Go` or `Step::End(Flow)`, and every way out of a run that is not an error hands its
//! batches over in one place (`sync_and_consume`). The writer's `Progress` (a `watch`) is the
//! only thing the reader learns from downstream: what is stored (redeliveries up to it are
//! acked) and whether an ack was lost (the run ends in a resync). Errors are retried on the
//! retry policy; the stage ends with a `StageEnd`.
//!
//! Memory is bounded twice: pulls ask for at most `fetch_batch` messages and `fetch_max_bytes`
//! bytes, and the reader stops pulling while `max_queue` messages or `max_queue_bytes` payload
//! bytes of its type are received but not acked.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::AckPolicy, consumer::PullConsumer, consumer::pull};
use futures::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::ack::AckHandle;
use crate::batch::{Batcher, Limits};
use crate::model::DataType;
use crate::retry::{self, Failure, Verdict, retry_until};
use crate::source::journal::{Journal, JournalEntry, select, stream_epoch};
use crate::source::{ConsumerSpec, Delivery, SourceError, api_err, bind_consumer};

use super::decoder::{RawBatch, RawMsg, Reset, StageCmd};
use super::stats::LaneStats;
use super::stats::Stats;
use super::writer::Progress;
use super::{LaneCtx, StageEnd, sleep_until};
use crate::source::lease::LeaseGuard;

/// How long the recovery read waits for the next message before asking whether any is left.
const RECOVERY_IDLE: Duration = Duration::from_secs(5);

/// How often a quiet run of stored redeliveries gets its one ack.
const SKIP_ACK_EVERY: Duration = Duration::from_millis(250);

/// What the reader hands downstream (to the decoder, then the writer), in order.
pub(crate) type WriterCmd = StageCmd<RawBatch>;

/// Why a run ended without an error: what the reader does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Flow {
    /// Shutdown requested.
    Exit,
    /// Deliveries may have been lost or the stream broke: resynchronise.
    Resync(&'static str),
}

/// Why a run stopped short.
#[derive(Debug)]
enum Halt {
    /// NATS failed (retried after a backoff), or the durable cannot be used (never retried).
    Source(SourceError),
    /// The decoder (and so the writer) is gone: nothing can be handed over any more.
    Disconnected,
}

impl From<SourceError> for Halt {
    fn from(e: SourceError) -> Self {
        Halt::Source(e)
    }
}

/// What one step of a run says.
enum Step {
    /// Keep reading.
    Go,
    /// The run is over: hand over what it holds, then do what `Flow` says.
    End(Flow),
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

/// A batcher that cuts the batches above `floor` exactly where the journal says they were cut
/// (and the gaps between them on their own), so in-doubt batches are re-formed whole.
fn replay_batcher(
    dt: DataType,
    limits: Limits,
    ack_all: bool,
    journaled: &[JournalEntry],
    floor: u64,
) -> Batcher<RawMsg, AckHandle> {
    let mut batcher = Batcher::new(dt, limits).keep_last_ack_only(ack_all);
    let mut prev_last = floor;
    for e in journaled.iter().filter(|e| e.last_seq > floor) {
        if e.first_seq > prev_last + 1 {
            batcher.cut_after(e.first_seq - 1);
        }
        batcher.cut_after(e.last_seq);
        prev_last = e.last_seq;
    }
    batcher
}

/// What one run of the reader (from one resync to the next) holds and has read.
struct Run {
    /// Names this run in `Reset`, so the writer's [`Progress`] of an earlier run is told apart.
    id: u64,
    consumer: PullConsumer,
    batcher: Batcher<RawMsg, AckHandle>,
    /// The ack floor the run started from (everything up to it is stored).
    floor: u64,
    /// The durable's last delivered stream sequence at the resync.
    delivered: u64,
    /// Highest stream sequence read: a delivery at or below it is a redelivery.
    last_seen: u64,
    /// The next consumer sequence the durable must deliver (another means deliveries lost).
    expected: u64,
    /// The newest stored redelivery not acked yet: one ack covers a run of them.
    skip_ack: Option<AckHandle>,
}

/// Where the recovery read stands.
#[derive(Debug, Clone, Copy)]
struct Recovery {
    /// The durable's last delivered sequence: the read covers up to it.
    delivered: u64,
    /// Highest sequence read so far (the floor before the first).
    last: u64,
    /// Messages read so far.
    read: u64,
    /// Messages of this type left in the stream after the last one read (the server's count).
    left: Option<u64>,
}

/// One type's reader stage (build with [`Reader::new`], run with [`Reader::run`]).
pub(crate) struct Reader {
    data_type: DataType,
    js: jetstream::Context,
    spec: ConsumerSpec,
    limits: Limits,
    fetch_batch: usize,
    /// Messages received but not yet acked above which the reader stops pulling.
    max_queue: usize,
    /// Payload bytes received but not yet acked above which the reader stops pulling.
    max_queue_bytes: u64,
    /// Most bytes one pull request may return.
    fetch_max_bytes: usize,
    /// Lanes running in this process: each pull asks for its share of `fetch_max_bytes`.
    lanes_here: Arc<std::sync::atomic::AtomicUsize>,
    journal: Journal,
    stats: Arc<Stats>,
    /// This lane's state (queued, bound): its back-pressure and what ops shows.
    lane: Arc<LaneStats>,
    /// The lane's lease as this instance's clock sees it: the resync's journal write-back
    /// (which fences any other writer) is made only under a lease this instance is sure of.
    guard: LeaseGuard,
    stop: CancellationToken,
    retry: retry::Policy,
    to_decoder: mpsc::Sender<WriterCmd>,
    /// The writer's progress (what it stored, whether an ack was lost).
    progress: watch::Receiver<Progress>,
}

impl Reader {
    /// The reader of the type `ctx` describes, stopping at `stop`, handing over to
    /// `to_decoder` and following the writer's `progress`.
    pub(super) fn new(
        ctx: &LaneCtx,
        (stop, guard): (CancellationToken, LeaseGuard),
        to_decoder: mpsc::Sender<WriterCmd>,
        progress: watch::Receiver<Progress>,
    ) -> Self {
        Reader {
            guard,
            data_type: ctx.data_type,
            js: ctx.js.clone(),
            spec: ctx.spec.clone(),
            limits: ctx.limits,
            fetch_batch: ctx.fetch_batch,
            max_queue: ctx.max_queue,
            max_queue_bytes: ctx.max_queue_bytes,
            fetch_max_bytes: ctx.fetch_max_bytes,
            lanes_here: ctx.lanes_here.clone(),
            journal: ctx.journal.clone(),
            stats: ctx.stats.clone(),
            lane: ctx.lane.clone(),
            stop,
            retry: ctx.retry,
            to_decoder,
            progress,
        }
    }

    /// Runs until shutdown: one run per resync; errors are logged and followed by a resync
    /// after a backoff (the retry policy). Ends [`StageEnd::Stopped`] at the stop,
    /// [`StageEnd::Stuck`] on a durable that cannot be used, [`StageEnd::Disconnected`] when the
    /// decoder is gone.
    pub async fn run(self) -> StageEnd {
        let mut backoff = self.retry.backoff();
        let mut runs = 0u64;
        loop {
            if self.stop.is_cancelled() {
                return StageEnd::Stopped;
            }
            let res = retry_until(
                &self.stop,
                &mut backoff,
                || {
                    runs += 1;
                    self.sync_and_consume(runs)
                },
                |e, _, delay| self.on_error(e, delay),
            )
            .await;
            match res {
                Ok(Flow::Exit) | Err(Failure::Stopped { .. }) => return StageEnd::Stopped,
                Ok(Flow::Resync(why)) => {
                    tracing::info!(data_type = %self.data_type, why, "resynchronising from the ack floor");
                }
                Err(Failure::GaveUp(Halt::Disconnected)) => return StageEnd::Disconnected,
                Err(Failure::GaveUp(Halt::Source(e))) => {
                    // Not something a retry fixes, and the durable is never changed by us.
                    tracing::error!(data_type = %self.data_type, error = %e, "durable cannot be used");
                    return StageEnd::Stuck(e.to_string());
                }
            }
        }
    }

    /// A failed run: retried after a backoff, except a durable that cannot be used or a
    /// decoder that is gone.
    fn on_error(&self, e: &Halt, delay: Duration) -> Verdict {
        let st = self.stats.of(self.data_type);
        let Halt::Source(e) = e else {
            return Verdict::GiveUp;
        };
        st.error(e.to_string());
        self.lane.set_bound(false);
        if matches!(e, SourceError::DurableUnusable { .. }) {
            return Verdict::GiveUp;
        }
        tracing::warn!(data_type = %self.data_type, error = %e, retry_in = ?delay, "reader error; resynchronising");
        Verdict::Retry
    }

    /// One run: resynchronise, re-read what is unacked, pull new messages; at every way out
    /// that is not an error, hand over what the run holds.
    async fn sync_and_consume(&self, id: u64) -> Result<Flow, Halt> {
        let mut run = self.resync(id).await?;
        let flow = match self.catch_up(&mut run).await? {
            Step::End(flow) => flow,
            Step::Go => self.consume(&mut run).await?,
        };
        self.hand_over(&mut run.batcher).await?;
        Ok(flow)
    }

    async fn send(&self, cmd: WriterCmd) -> Result<(), Halt> {
        self.to_decoder
            .send(cmd)
            .await
            .map_err(|_| Halt::Disconnected)
    }

    async fn send_closed(&self, batcher: &mut Batcher<RawMsg, AckHandle>) -> Result<(), Halt> {
        while let Some(b) = batcher.pop_closed() {
            self.send(StageCmd::Batch(b)).await?;
        }
        Ok(())
    }

    /// At a stop or resync: hands over the closed batches and the open one, unless a journaled
    /// cut point is still ahead. Then the open batch is (part of) a journaled batch that may
    /// only be inserted whole under its token: it is dropped, unacked, and re-read later.
    async fn hand_over(&self, batcher: &mut Batcher<RawMsg, AckHandle>) -> Result<(), Halt> {
        if batcher.has_pending_cuts() {
            if let Some(part) = batcher.discard_open() {
                self.lane.release_queued(part.count, part.bytes as u64);
                tracing::info!(data_type = %self.data_type, first = part.first_seq, last = part.last_seq,
                    count = part.count, "part of a journaled batch not sent (re-read later)");
            }
        } else {
            batcher.close();
        }
        self.send_closed(batcher).await
    }

    /// Waits until the writer has inserted and acked everything handed to it.
    async fn drain_writer(&self) -> Result<(), Halt> {
        let (tx, rx) = oneshot::channel();
        self.send(StageCmd::Sync(tx)).await?;
        rx.await.map_err(|_| Halt::Disconnected)
    }

    /// What the writer has stored in run `run` (its floor until the writer took its `Reset`).
    fn stored_through(&self, run: &Run) -> u64 {
        let p = *self.progress.borrow();
        if p.run == run.id {
            p.stored_through
        } else {
            run.floor
        }
    }

    fn push(&self, batcher: &mut Batcher<RawMsg, AckHandle>, d: Delivery, now: Instant) {
        let lane = &self.lane;
        // The server's receive time: no clock read per message.
        lane.record_received(d.payload.len() as u64, d.published_ms);
        lane.set_consumer_pending(d.pending);
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

    /// Step 1 of a run: with the writer drained, read where the durable stands and what the
    /// journal holds, take the journal over (fencing an earlier owner), and reset the decoder
    /// and the writer to the floor.
    async fn resync(&self, id: u64) -> Result<Run, Halt> {
        let dt = self.data_type;
        let st = self.stats.of(dt);
        st.record_resync();
        self.drain_writer().await?;
        // Nothing is in flight now: what a failed run still counted as unacked (a batcher
        // dropped with an error) is re-read from the ack floor, so it no longer counts.
        self.lane.clear_queued();

        let mut consumer = bind_consumer(&self.js, &self.spec, Some(&self.journal)).await?;
        let (epoch, stream_last) = self.stream_position().await?;
        let info = consumer
            .info()
            .await
            .map_err(api_err(format!("consumer {} info", self.spec.durable)))?
            .clone();
        let acked_floor = info.ack_floor.stream_sequence;
        let delivered = info.delivered.stream_sequence;
        let ack_all = info.config.ack_policy == AckPolicy::All;
        self.lane.set_consumer_pending(info.num_pending);
        self.lane.set_bound(true);

        let (journaled, floor, revision) =
            self.take_journal(epoch, stream_last, acked_floor).await?;
        let batcher = replay_batcher(dt, self.limits, ack_all, &journaled, floor);
        let in_doubt = journaled.iter().filter(|e| e.last_seq > floor).count();
        if in_doubt > 0 {
            tracing::info!(data_type = %dt, batches = in_doubt, floor, delivered,
                "re-forming journaled batches from the stream");
        }
        self.send(StageCmd::Reset(Reset {
            run: id,
            journaled,
            floor,
            epoch,
            revision,
        }))
        .await?;
        Ok(Run {
            id,
            consumer,
            batcher,
            floor,
            delivered,
            last_seen: floor,
            expected: info.delivered.consumer_sequence + 1,
            skip_ack: None,
        })
    }

    /// The stream's epoch (a recreated stream restarts its sequences at 1) and its last
    /// sequence (journal entries beyond it describe no message of this stream).
    async fn stream_position(&self) -> Result<(u64, u64), SourceError> {
        let mut stream = self
            .js
            .get_stream(&self.spec.stream)
            .await
            .map_err(api_err(format!("get stream {}", self.spec.stream)))?;
        let info = stream
            .info()
            .await
            .map_err(api_err(format!("stream {} info", self.spec.stream)))?;
        Ok((stream_epoch(info), info.state.last_sequence))
    }

    /// Loads the journal, keeps the entries of this stream incarnation, moves the floor past a
    /// journaled batch it lies inside, and writes the kept entries back. Returns (entries,
    /// floor, revision written).
    async fn take_journal(
        &self,
        epoch: u64,
        stream_last: u64,
        acked_floor: u64,
    ) -> Result<(Vec<JournalEntry>, u64, u64), SourceError> {
        let dt = self.data_type;
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
            .put(
                &self.spec.durable,
                &journaled,
                self.lease_checked(loaded.revision)?,
            )
            .await?;
        Ok((journaled, floor, revision))
    }

    /// `revision`, if the lane's lease still holds by this instance's clock.
    fn lease_checked(&self, revision: u64) -> Result<u64, SourceError> {
        if self.guard.valid() {
            Ok(revision)
        } else {
            Err(SourceError::Fenced {
                what: format!(
                    "lease of {} lapsed before the journal write-back",
                    self.spec.durable
                ),
            })
        }
    }

    /// Step 2 of a run: re-read everything delivered but not acked, straight from the stream,
    /// and close the batches whose journaled boundaries lie in the re-read range.
    async fn catch_up(&self, run: &mut Run) -> Result<Step, Halt> {
        if run.delivered > run.floor {
            let recovered = self
                .recover(&mut run.batcher, run.floor, run.delivered)
                .await?;
            run.last_seen = run.last_seen.max(recovered);
            if self.stop.is_cancelled() {
                return Ok(Step::End(Flow::Exit));
            }
        }
        run.last_seen = run.last_seen.max(run.delivered);
        // Journaled boundaries inside the re-read range that were not reached (their messages
        // are gone from the stream) close the batch now; later ones wait for the durable.
        run.batcher.pass_cuts_through(run.last_seen);
        self.send_closed(&mut run.batcher).await?;
        Ok(Step::Go)
    }

    /// Step 3 of a run: pull new messages from the durable until the run ends.
    async fn consume(&self, run: &mut Run) -> Result<Flow, Halt> {
        let mut messages = run
            .consumer
            .stream()
            .max_messages_per_batch(self.fetch_batch)
            .max_bytes_per_batch(pull_bytes(
                self.fetch_max_bytes,
                self.lanes_here.load(std::sync::atomic::Ordering::Relaxed),
            ))
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
            .map_err(api_err(format!("pull from {}", self.spec.durable)))?;
        let st = &self.lane;
        let mut progress = self.progress.clone();
        // Look at the writer's state once at the start: it may have lost an ack already.
        progress.mark_changed();
        let mut check = tokio::time::interval(SKIP_ACK_EVERY);
        loop {
            let deadline = run.batcher.deadline().map(tokio::time::Instant::from_std);
            // Back-pressure by count and bytes: above max_queue unacked messages or
            // max_queue_bytes unacked payload bytes, stop pulling (the server keeps the rest)
            // until the writer acks. Not while a journaled boundary is still ahead: that batch
            // cannot close before its messages arrive.
            // The budget is the type's, shared by its lanes running here (several partitions
            // of one type in one process stay within one type's memory).
            let ty = st.of_type();
            let over = |queued: u64, bytes: u64| {
                usize::try_from(queued).unwrap_or(usize::MAX) >= self.max_queue
                    || bytes >= self.max_queue_bytes
            };
            let full = (over(st.queued(), st.queued_bytes())
                || over(ty.queued(), ty.queued_bytes()))
                && !run.batcher.has_pending_cuts();
            let step = tokio::select! {
                biased;
                _ = self.stop.cancelled() => Step::End(Flow::Exit),
                _ = tokio::time::sleep(Duration::from_millis(5)), if full => Step::Go,
                changed = progress.changed() => self.on_progress(run, changed.is_ok())?,
                _ = check.tick() => self.flush_skip_ack(run).await?,
                _ = sleep_until(deadline) => {
                    run.batcher.poll_age(Instant::now());
                    self.send_closed(&mut run.batcher).await?;
                    Step::Go
                }
                next = messages.next(), if !full => self.on_delivery(run, next).await?,
            };
            if let Step::End(flow) = step {
                return Ok(flow);
            }
        }
    }

    /// The writer's progress changed: when it lost an ack of this run it drops batches until
    /// our next `Reset`, so the run ends (what it holds is dropped and re-read after the resync).
    fn on_progress(&self, run: &Run, writer_alive: bool) -> Result<Step, Halt> {
        if !writer_alive {
            return Err(Halt::Disconnected);
        }
        let p = *self.progress.borrow();
        if p.run == run.id && p.ack_lost {
            return Ok(Step::End(Flow::Resync("an ack was not confirmed")));
        }
        Ok(Step::Go)
    }

    /// A run of stored redeliveries that ended quietly still gets its one ack.
    async fn flush_skip_ack(&self, run: &mut Run) -> Result<Step, Halt> {
        if let Some(h) = run.skip_ack.take() {
            self.send(StageCmd::AckOnly(h)).await?;
        }
        Ok(Step::Go)
    }

    /// One pull result: a new message is batched, a redelivery skipped, a gap or a broken pull
    /// ends the run.
    async fn on_delivery(
        &self,
        run: &mut Run,
        next: Option<Result<jetstream::Message, pull::MessagesError>>,
    ) -> Result<Step, Halt> {
        let msg = match next {
            None => return Ok(Step::End(Flow::Resync("message stream ended"))),
            Some(Err(e)) => {
                self.stats.of(self.data_type).error(format!("pull: {e}"));
                return Ok(Step::End(Flow::Resync("pull error")));
            }
            Some(Ok(m)) => m,
        };
        let d = Delivery::from_jetstream(msg)?;
        if d.consumer_seq != run.expected {
            tracing::warn!(data_type = %self.data_type, expected = run.expected, got = d.consumer_seq,
                "deliveries lost in transit");
            return Ok(Step::End(Flow::Resync("consumer sequence gap")));
        }
        run.expected += 1;
        if d.stream_seq <= run.last_seen {
            return self.skip_redelivery(run, d).await;
        }
        self.flush_skip_ack(run).await?;
        run.last_seen = d.stream_seq;
        self.push(&mut run.batcher, d, Instant::now());
        self.send_closed(&mut run.batcher).await?;
        Ok(Step::Go)
    }

    /// A redelivery of a message this run already read: not batched again; acked when stored.
    async fn skip_redelivery(&self, run: &mut Run, d: Delivery) -> Result<Step, Halt> {
        let st = self.stats.of(self.data_type);
        let skipped = st.record_redelivery_skipped();
        // Under AckPolicy::All one ack covers every earlier message: ack only the newest
        // stored redelivery of a run (every 1000th, and the last).
        if let Some(a) = d.acker.filter(|_| d.stream_seq <= self.stored_through(run)) {
            run.skip_ack = Some(AckHandle::new(a, d.stream_seq));
        }
        if (skipped.is_multiple_of(1000) || d.pending == 0)
            && let Some(h) = run.skip_ack.take()
        {
            self.send(StageCmd::AckOnly(h)).await?;
        }
        Ok(Step::Go)
    }

    /// Whether the stream no longer holds any message up to `delivered` (removed by limits).
    async fn gone_before(&self, stream: &jetstream::stream::Stream, delivered: u64) -> bool {
        let mut s = stream.clone();
        match s.info().await {
            Ok(info) => info.state.first_sequence > delivered,
            Err(_) => false,
        }
    }

    /// The stream, an ordered consumer of this type's messages from `floor + 1` (no acks:
    /// the durable's ack floor covers what it reads) and how many such messages the stream
    /// held when it was created.
    async fn open_recovery(
        &self,
        floor: u64,
    ) -> Result<(jetstream::stream::Stream, pull::Ordered, u64), SourceError> {
        let stream = self
            .js
            .get_stream(&self.spec.stream)
            .await
            .map_err(api_err(format!("get stream {}", self.spec.stream)))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: self.spec.filter_subject.clone(),
                deliver_policy: jetstream::consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: floor + 1,
                },
                ..Default::default()
            })
            .await
            .map_err(api_err("create recovery consumer"))?;
        let pending = consumer.cached_info().num_pending;
        let msgs = consumer
            .messages()
            .await
            .map_err(api_err("read recovery consumer"))?;
        Ok((stream, msgs, pending))
    }

    /// The next message of the recovery read, or `None` when the read may end before
    /// `delivered`: only when the server says nothing is left (the tail was removed by the
    /// stream's limits). Every message up to `delivered` must be read — the caller treats all
    /// of them as held — so a stall is an error, and the resync retries.
    async fn next_recovered(
        &self,
        msgs: &mut pull::Ordered,
        stream: &jetstream::stream::Stream,
        at: &Recovery,
    ) -> Result<Option<jetstream::Message>, Halt> {
        let Recovery {
            delivered,
            last,
            read,
            left,
        } = *at;
        let failed = |detail: String| -> Halt {
            SourceError::Api {
                what: "recovery read".into(),
                detail,
            }
            .into()
        };
        let next = match tokio::time::timeout(RECOVERY_IDLE, msgs.next()).await {
            Ok(next) => next,
            Err(_) if left == Some(0) => return Ok(None),
            Err(_) if read == 0 && self.gone_before(stream, delivered).await => return Ok(None),
            Err(_) => {
                return Err(failed(format!(
                    "no message for {RECOVERY_IDLE:?} after sequence {last} (need up to {delivered})"
                )));
            }
        };
        match next {
            None if left == Some(0) => Ok(None),
            None => Err(failed(format!(
                "stream ended after sequence {last} (need up to {delivered})"
            ))),
            Some(Err(e)) => Err(failed(e.to_string())),
            Some(Ok(m)) => Ok(Some(m)),
        }
    }

    /// Reads stream sequences (floor, delivered] of this type with an ordered consumer.
    /// Returns the highest sequence read.
    async fn recover(
        &self,
        batcher: &mut Batcher<RawMsg, AckHandle>,
        floor: u64,
        delivered: u64,
    ) -> Result<u64, Halt> {
        let dt = self.data_type;
        let (stream, mut msgs, pending) = self.open_recovery(floor).await?;
        if pending == 0 {
            // No message of this type after the floor: nothing is held. A filtered durable can
            // report a delivered sequence past its ack floor without any message of its own
            // in between (seen on a cluster after its leader moved: the new leader's delivered
            // sequence had passed other types' messages, its ack floor had not), and waiting
            // for messages that do not exist would fail this read and every resync after it
            // until the type's next message arrives.
            tracing::info!(data_type = %dt, floor, delivered,
                "nothing to re-read: no message of this type after the ack floor");
            return Ok(floor);
        }
        let mut at = Recovery {
            delivered,
            last: floor,
            read: 0,
            left: None,
        };
        while let Some(msg) = self.next_recovered(&mut msgs, &stream, &at).await? {
            let mut d = Delivery::from_jetstream(msg)?;
            if d.stream_seq > delivered {
                break;
            }
            at.left = Some(d.pending);
            d.acker = None; // Ordered consumers do not ack; the durable's ack floor covers these.
            d.pending = 0;
            at.last = d.stream_seq;
            at.read += 1;
            self.push(batcher, d, Instant::now());
            self.send_closed(batcher).await?;
            if at.last >= delivered || self.stop.is_cancelled() {
                break;
            }
        }
        let (n, last) = (at.read, at.last);
        tracing::info!(data_type = %dt, messages = n, from = floor + 1, to = last, "recovered unacked messages");
        Ok(last)
    }
}

/// The bytes one pull of a lane asks for: its share of `fetch_max_bytes` among the `lanes`
/// running in the process, never below 1 MiB (one message of NATS's default `max_payload`
/// must fit) nor above `fetch_max_bytes`.
fn pull_bytes(fetch_max_bytes: usize, lanes: usize) -> usize {
    const MIN: usize = 1 << 20;
    (fetch_max_bytes / lanes.max(1)).max(MIN.min(fetch_max_bytes))
}

#[cfg(test)]
mod pull_tests {
    #[test]
    fn lanes_share_the_pull_budget_down_to_one_message() {
        let mib = 1 << 20;
        assert_eq!(super::pull_bytes(16 * mib, 0), 16 * mib);
        assert_eq!(super::pull_bytes(16 * mib, 1), 16 * mib);
        assert_eq!(super::pull_bytes(16 * mib, 4), 4 * mib);
        assert_eq!(super::pull_bytes(16 * mib, 40), mib);
        assert_eq!(super::pull_bytes(mib / 2, 3), mib / 2);
    }
}

#[cfg(test)]
mod floor_tests {
    use super::{effective_floor, replay_batcher};
    use crate::batch::Limits;
    use crate::model::DataType;
    use crate::source::journal::JournalEntry;
    use std::time::{Duration, Instant};

    /// The (first, last, count) of the batches `replay_batcher(journaled, floor)` closes when
    /// the messages `seqs` are pushed (thresholds far away: only the cuts close batches), and
    /// whether a cut is still pending after them.
    fn replayed(
        journaled: &[JournalEntry],
        floor: u64,
        seqs: std::ops::RangeInclusive<u64>,
    ) -> (Vec<(u64, u64, u64)>, bool) {
        let limits = Limits {
            max_rows: 1_000_000,
            max_bytes: usize::MAX,
            max_age: Duration::from_secs(3600),
        };
        let mut b = replay_batcher(DataType::Trade, limits, true, journaled, floor);
        let now = Instant::now();
        for seq in seqs {
            let msg = super::RawMsg {
                subject: async_nats::Subject::from("trade.x.spot.BTC-USDT"),
                stream_seq: seq,
                published_ms: 0,
                payload: bytes::Bytes::from_static(b"{}"),
            };
            b.push(seq, msg, 2, 0, None, now);
        }
        let mut out = Vec::new();
        while let Some(c) = b.pop_closed() {
            out.push((c.first_seq, c.last_seq, c.count));
        }
        (out, b.has_pending_cuts())
    }

    #[test]
    fn replay_cuts_at_the_journaled_boundaries_above_the_floor() {
        // In-doubt batches re-formed whole, the gap before them on its own, the batch below
        // the floor ignored; after the last boundary the thresholds rule again.
        let j = [e(1, 10), e(14, 20), e(21, 30)];
        assert_eq!(
            replayed(&j, 10, 11..=35),
            (vec![(11, 13, 3), (14, 20, 7), (21, 30, 10)], false)
        );
        // Stopped inside a journaled batch: its cut is still ahead (the part is dropped).
        assert_eq!(
            replayed(&j, 10, 11..=25),
            (vec![(11, 13, 3), (14, 20, 7)], true)
        );
        // Nothing above the floor: no cut at all.
        assert_eq!(replayed(&j, 30, 31..=40), (vec![], false));
    }

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
