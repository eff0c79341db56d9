//! The writer of one data type: journal → INSERT (rows, then dead letters) → confirmed ack.
//!
//! Takes `StageCmd`s from the decoder in order. For each batch it first makes sure the batch
//! is journaled (boundaries and token confirmed by NATS), then inserts it with that token,
//! retrying retriable ClickHouse errors forever (back-pressure: the reader blocks on the
//! bounded channel meanwhile), then acks. **Invariant:** no message is acked before the INSERT
//! holding it returned 200.
//!
//! A journaled batch is only ever inserted whole under its token: a batch that matches a journal
//! entry exactly (first, last, count) re-uses its token; the reader never hands over a part of
//! a journaled batch (it drops it at a stop or resync, to be re-read). The one exception is a
//! journaled batch that can never be re-formed because its messages are gone from the stream
//! (removed by limits): the part that is left is journaled and inserted under a token of its
//! own exact boundaries (ARCHITECTURE.md, "Exactly once", residual case).
//!
//! A piece the sink halves because it was too large is journaled (the batch entry's `halved`)
//! before its halves are sent, and every attempt makes the journaled halvings up front: a size
//! limit can change between attempts, and sending whole what an earlier attempt halved would
//! store the landed halves twice.
//!
//! Journal writes state the revision they replace (`Ledger`): when another owner rewrote the
//! entry since our reader loaded it (our lease was lost), the write fails and the writer ends
//! with `StageEnd::Fenced`; the type's supervisor drops everything this pipeline holds and
//! starts over.
//!
//! The writer tells its reader how far it got through one value it owns, `Progress`,
//! published on a `watch` channel: what is stored, and whether an ack was lost. Every wait
//! (journal writes, acks, a held batch) walks the one retry policy (`retry.*`).

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use crate::ack::{AckHandle, ack_until_confirmed};
use crate::model::DataType;
use crate::retry::{self, Failure, Verdict, retry_until};
use crate::sink::{self, Sink};
use crate::source::SourceError;
use crate::source::journal::{Journal, JournalEntry};
use crate::source::lease::LeaseGuard;

use super::StageEnd;
use super::decoder::{DecodedBatch, Reset, StageCmd};
use super::stats::{LaneStats, Stats, TypeStats, now_ms};

/// How many acked batches the journal keeps besides the ones in doubt.
///
/// A NATS server that is killed (not stopped) can come back with its consumer's ack floor a
/// little behind the acks it had confirmed: those messages are then delivered again. Keeping
/// the last batches' boundaries lets the reader cut them exactly as before, so they are re-sent
/// with their original tokens and ClickHouse drops them (the tables remember
/// `crate::schema::DEDUP_WINDOW` blocks, far more than these batches add).
pub const JOURNAL_HISTORY: usize = 64;

/// What the reason of a fenced writer says.
const FENCED: &str = "the journal was changed by another owner";

/// The writer's progress in one reader run, as its reader sees it: one value the writer owns
/// and publishes (a `watch` channel: the latest value wins; the reader never writes it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The reader run (its `Reset`) this describes; 0 before the first `Reset`.
    pub run: u64,
    /// Highest stream sequence stored in this run (the run's ack floor until a batch is).
    pub stored_through: u64,
    /// An ack of this run could not be confirmed: the writer drops batches until the next
    /// `Reset` (they are re-read) and the reader must resynchronise from the ack floor.
    pub ack_lost: bool,
}

/// The consumer's journal entry as this writer holds it: the recent batches, the revision the
/// next write replaces, and the floor and epoch of the last `Reset`.
struct Ledger {
    /// None in core mode: nothing is journaled.
    journal: Option<Journal>,
    durable: String,
    /// Recent journaled batches, oldest first: every batch above the ack floor, plus up to
    /// [`JOURNAL_HISTORY`] acked ones (see there).
    entries: Vec<JournalEntry>,
    /// The confirmed ack floor (stream sequence).
    floor: u64,
    /// The stream's epoch (from the last `Reset`; 0 without a stream, as in core mode).
    epoch: u64,
    /// Revision of the consumer's journal entry this writer last read or wrote.
    revision: u64,
    /// Set once a write was refused because another owner rewrote the entry.
    fenced: bool,
}

impl Ledger {
    /// Starts over from the journal as the reader loaded it.
    fn reset(&mut self, r: Reset) {
        self.entries = r.journaled;
        self.floor = r.floor;
        self.epoch = r.epoch;
        self.revision = r.revision;
    }

    /// The journaled entry that is exactly this batch (same first, last and count).
    fn entry_of(&self, (first, last, count): (u64, u64, u64)) -> Option<&JournalEntry> {
        self.entries
            .iter()
            .find(|e| e.first_seq == first && e.last_seq == last && e.count == count)
    }

    /// Writes the entries over the revision held (updated on success), retrying transient
    /// errors on the retry policy. Ends the writer on shutdown, or when the entry was changed by
    /// someone else since (fenced: the supervisor starts over).
    async fn put(
        &mut self,
        policy: &retry::Policy,
        stop: &CancellationToken,
        st: &TypeStats,
        data_type: DataType,
    ) -> Result<(), StageEnd> {
        let Some(journal) = &self.journal else {
            return Ok(());
        };
        let (durable, entries, rev) = (&self.durable, &self.entries, self.revision);
        let res = retry_until(
            stop,
            &mut policy.backoff(),
            || journal.put(durable, entries, rev),
            |e, _, delay| {
                st.error(e.to_string());
                if matches!(e, SourceError::Fenced { .. }) {
                    return Verdict::GiveUp;
                }
                tracing::warn!(%data_type, error = %e, retry_in = ?delay, "journal write failed; retrying");
                Verdict::Retry
            },
        )
        .await;
        match res {
            Ok(r) => {
                self.revision = r;
                Ok(())
            }
            Err(Failure::GaveUp(e)) => {
                // Someone else wrote the entry since we read it (or a write of ours that timed
                // out landed after all): what we hold may be cut differently from what the
                // journal says. Stop; the supervisor starts over from the journal.
                tracing::warn!(%data_type, error = %e,
                    "journal changed under this writer; dropping what it holds and starting over");
                self.fenced = true;
                Err(StageEnd::Fenced(FENCED.into()))
            }
            Err(Failure::Stopped { .. }) => Err(StageEnd::Stopped),
        }
    }
}

/// Counts a failed insert attempt and marks since when the type's inserts have been failing
/// (what `/ready` reports after its bound).
fn note_insert_failure(st: &TypeStats, e: &sink::SinkError) {
    st.record_insert_failure(e.to_string());
}

/// One type's writer stage (build with [`Writer::new`], run with [`Writer::run`]).
pub(crate) struct Writer {
    data_type: DataType,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    /// This lane's state (what is queued).
    lane: Arc<LaneStats>,
    /// The lane's lease as this instance's clock sees it: checked before every journal write,
    /// insert and ack, so a writer whose lease ran out writes nothing more (fencing).
    guard: LeaseGuard,
    stop: CancellationToken,
    retry: retry::Policy,
    ledger: Ledger,
    progress: Progress,
    to_reader: watch::Sender<Progress>,
}

impl Writer {
    /// A writer for `durable` (its journal entry's key and its tokens' prefix), and the receiver
    /// of its [`Progress`]. `journal` is None in core mode (nothing is journaled).
    #[allow(clippy::too_many_arguments)] // what one lane's writer owns, each from another place
    pub(super) fn new(
        data_type: DataType,
        durable: String,
        journal: Option<Journal>,
        sink: Arc<Sink>,
        (stats, lane, guard): (Arc<Stats>, Arc<LaneStats>, LeaseGuard),
        stop: CancellationToken,
        retry: retry::Policy,
    ) -> (Writer, watch::Receiver<Progress>) {
        let (to_reader, progress) = watch::channel(Progress::default());
        let writer = Writer {
            data_type,
            sink,
            stats,
            lane,
            guard,
            stop,
            retry,
            ledger: Ledger {
                journal,
                durable,
                entries: Vec::new(),
                floor: 0,
                epoch: 0,
                revision: 0,
                fenced: false,
            },
            progress: Progress::default(),
            to_reader,
        };
        (writer, progress)
    }

    /// Processes commands until the decoder hangs up ([`StageEnd::Drained`]), a shutdown
    /// interrupts a retry ([`StageEnd::Stopped`]: what is not acked is re-read on the next
    /// start) or the journal was taken ([`StageEnd::Fenced`]).
    pub async fn run(mut self, mut rx: mpsc::Receiver<StageCmd<DecodedBatch>>) -> StageEnd {
        while let Some(cmd) = rx.recv().await {
            if let Err(end) = self.handle(cmd).await {
                return end;
            }
        }
        StageEnd::Drained
    }

    /// One command, in order.
    async fn handle(&mut self, cmd: StageCmd<DecodedBatch>) -> Result<(), StageEnd> {
        match cmd {
            StageCmd::Reset(reset) => {
                self.publish(Progress {
                    run: reset.run,
                    stored_through: reset.floor,
                    ack_lost: false,
                });
                self.ledger.reset(reset);
            }
            StageCmd::Batch(b) if self.progress.ack_lost => {
                // Dropped: re-read after the resync, and counted as queued again then.
                self.lane.release_queued(b.count, b.bytes as u64);
            }
            StageCmd::AckOnly(_) if self.progress.ack_lost => {}
            StageCmd::Sync(tx) => {
                let _ = tx.send(());
            }
            StageCmd::AckOnly(h) => {
                self.check_lease("ack")?;
                self.ack(&[h]).await?
            }
            StageCmd::Batch(b) => self.write(b).await?,
        }
        Ok(())
    }

    fn st(&self) -> &TypeStats {
        self.stats.of(self.data_type)
    }

    fn publish(&mut self, progress: Progress) {
        self.progress = progress;
        self.to_reader.send_replace(progress);
    }

    /// Fencing by the lease's own clock: [`StageEnd::Fenced`] once this instance can no longer
    /// be sure it holds the lane (no confirmed refresh for `LEASE_TTL − LEASE_MARGIN`), before
    /// `what` is done. What the writer holds is then re-read by the lane's next holder.
    fn check_lease(&self, what: &str) -> Result<(), StageEnd> {
        if self.guard.valid() {
            return Ok(());
        }
        tracing::warn!(data_type = %self.data_type, durable = %self.ledger.durable, what,
            "lease lapsed by this instance's clock; writing nothing more (fenced)");
        Err(StageEnd::Fenced(format!(
            "lease of {} lapsed before the {what} (no confirmed refresh)",
            self.ledger.durable
        )))
    }

    /// Journals, stores and acks one batch.
    async fn write(&mut self, b: DecodedBatch) -> Result<(), StageEnd> {
        self.check_lease("journal write")?;
        let token = self.journal_batch(&b).await?;
        let t0 = std::time::Instant::now();
        self.check_lease("insert")?;
        let (inserted_rows, dead) = self.store_held(&b, &token).await?;
        let st = self.st();
        let first_published = (b.first_published_ms != i64::MAX).then_some(b.first_published_ms);
        st.record_insert(inserted_rows, dead, t0.elapsed(), first_published, now_ms());
        self.publish(Progress {
            stored_through: self.progress.stored_through.max(b.last_seq),
            ..self.progress
        });
        tracing::debug!(data_type = %self.data_type, first = b.first_seq, last = b.last_seq,
            rows = inserted_rows, dead, %token, "batch stored");
        let acked = match self.check_lease("ack") {
            Ok(()) => self.ack(&b.acks).await,
            Err(end) => Err(end),
        };
        self.lane.release_queued(b.count, b.bytes as u64);
        acked
    }

    /// Stores one batch, holding it through errors retrying cannot fix by itself.
    ///
    /// Such an error (a Fatal class: wrong credentials, a schema that does not match; a dead
    /// letter ClickHouse refuses) does not drop the batch either: it is logged, shown by
    /// `/ready` (the type's inserts are failing), and the whole store is tried again on the
    /// retry policy — capped at `retry.max_backoff` (10 s by default, the pause this replaced),
    /// so a fixed cause is noticed within that bound and a test's short `retry.*` holds
    /// briefly; the tokens make every repeat harmless — until an operator fixes the cause or
    /// stops us.
    async fn store_held(&mut self, b: &DecodedBatch, token: &str) -> Result<(u64, u64), StageEnd> {
        let (stop, stats, dt, policy) = (
            self.stop.clone(),
            self.stats.clone(),
            self.data_type,
            self.retry,
        );
        // `retry_until` runs an FnMut; each attempt needs the writer mutably (the journal of
        // its halvings), so the attempts borrow it in turn through an uncontended lock.
        let this = tokio::sync::Mutex::new((&mut *self, Landed::default()));
        let res = retry_until(
            &stop,
            &mut policy.backoff(),
            || async {
                let mut guard = this.lock().await;
                let (w, landed) = &mut *guard;
                w.store(b, token, landed).await
            },
            |e, _, delay| {
                // A halving not journaled: stopped or fenced (the ledger says which).
                if stop.is_cancelled() || matches!(e, sink::SinkError::Journal(_)) {
                    return Verdict::GiveUp;
                }
                note_insert_failure(stats.of(dt), e);
                tracing::error!(data_type = %dt, error = %e, retry_in = ?delay,
                    "insert failed and retrying will not fix it by itself; batch held, trying again");
                Verdict::Retry
            },
        )
        .await;
        match res {
            Ok(done) => Ok(done),
            Err(_) if self.ledger.fenced => Err(StageEnd::Fenced(FENCED.into())),
            Err(_) if !self.guard.valid() => Err(StageEnd::Fenced(format!(
                "lease of {} lapsed during the insert (no confirmed refresh)",
                self.ledger.durable
            ))),
            Err(_) => Err(StageEnd::Stopped),
        }
    }

    /// Inserts the batch's quality events, rows and dead letters, each with its deterministic
    /// token (retriable errors are retried inside, shape errors split inside). Returns (rows
    /// inserted, dead letters).
    ///
    /// A row ClickHouse refuses on its own becomes a dead letter made from its message
    /// (subject, stream sequence, bytes as received). Dead letters are never dropped: one
    /// that ClickHouse refuses even alone fails the store ([`sink::SinkError::Refused`]), so
    /// the batch is held and stored again later, never acked without it.
    ///
    /// A piece halved because it was too large is journaled (appended to the batch's entry)
    /// before its halves are sent, and the halvings already journaled are made up front, so
    /// no attempt sends whole what an earlier one halved (see `sink::Splitter`).
    ///
    /// `landed` carries what earlier attempts of this store stored (the quality events, the
    /// rows with the dead letters they left): a held batch is tried again for as long as the
    /// cause lasts, and re-sending what landed would rely on its parts still being in the
    /// table's deduplication window, which the table's other lanes keep pushing.
    async fn store(
        &mut self,
        b: &DecodedBatch,
        token: &str,
        landed: &mut Landed,
    ) -> Result<(u64, u64), sink::SinkError> {
        let dt = self.data_type;
        // Every attempt (a held batch is tried again for as long as ClickHouse refuses it)
        // is made under a lease this instance is sure of.
        if self.check_lease("insert").is_err() {
            self.ledger.fenced = true;
            return Err(sink::SinkError::Journal("lease lapsed".into()));
        }
        let batch = (b.first_seq, b.last_seq, b.count);
        let halved: Vec<String> = self
            .ledger
            .entry_of(batch)
            .map(|e| e.halved.clone())
            .unwrap_or_default();
        // Quality events first: a crash after them re-detects the same events on replay (the
        // rows are not stored yet, so the restored state is the same) and the token drops them.
        if !b.quality.is_empty() && !landed.quality {
            let qt = crate::quality::events_token(token);
            let iso = self
                .insert_table(
                    crate::schema::QUALITY_EVENTS_TABLE,
                    &b.quality,
                    &qt,
                    sink::quality_event_partition,
                    sink::encode_quality_events,
                    (batch, &halved),
                )
                .await?;
            let stored = b.quality.len() - iso.rejected.len();
            self.stats.of(dt).record_quality_events(stored as u64);
            self.stats.of(dt).record_splits(iso.splits);
            landed.quality = true;
        }
        if let Some((inserted_rows, dead)) = &landed.rows {
            if !dead.is_empty() {
                self.store_dead_letters(dead, token, (batch, &halved))
                    .await?;
            }
            return Ok((*inserted_rows, dead.len() as u64));
        }
        let isolation = self
            .insert_table(
                dt.table(),
                &b.rows,
                token,
                sink::record_partition,
                |rows| sink::encode_block(dt, rows),
                (batch, &halved),
            )
            .await?;
        let inserted_rows = (b.rows.len() - isolation.rejected.len()) as u64;
        self.st().record_splits(isolation.splits);
        let dead = self.dead_letters_of(b, isolation.rejected);
        let landed_rows = landed.rows.insert((inserted_rows, dead));
        let dead = &landed_rows.1;
        if !dead.is_empty() {
            self.store_dead_letters(dead, token, (batch, &halved))
                .await?;
        }
        Ok((inserted_rows, dead.len() as u64))
    }

    /// The batch's dead letters: its rejected messages, and a dead letter made from the message
    /// of each row ClickHouse refused on its own, in stream order (a replay encodes the same
    /// rows in the same order).
    fn dead_letters_of(
        &self,
        b: &DecodedBatch,
        refused: Vec<sink::RejectedRow>,
    ) -> Vec<crate::model::DeadLetterRow> {
        let dt = self.data_type;
        let mut dead = b.dead.clone();
        for rej in refused {
            let msg = b
                .row_messages
                .get(rej.index)
                .and_then(|&i| b.messages.get(i));
            if let Some(m) = msg {
                self.st().reject("clickhouse_rejected");
                let reason = format!("clickhouse rejected the row: {}", rej.error);
                dead.push(super::decoder::dead_letter(dt, m, reason));
            }
        }
        dead.sort_by_key(|d| d.stream_seq);
        dead
    }

    /// Inserts the dead letters; one ClickHouse refuses even alone fails the store
    /// ([`sink::SinkError::Refused`]): the batch is held, never acked without it.
    async fn store_dead_letters(
        &mut self,
        dead: &[crate::model::DeadLetterRow],
        token: &str,
        halvings: ((u64, u64, u64), &[String]),
    ) -> Result<(), sink::SinkError> {
        let iso = self
            .insert_table(
                crate::schema::DEAD_LETTERS_TABLE,
                dead,
                &sink::dead_letter_token(token),
                sink::dead_letter_partition,
                sink::encode_dead_letters,
                halvings,
            )
            .await?;
        self.st().record_splits(iso.splits);
        if let Some(first) = iso.rejected.into_iter().next() {
            let rows = dead.len() - iso.inserted_rows as usize;
            return Err(sink::SinkError::Refused {
                table: crate::schema::DEAD_LETTERS_TABLE.to_owned(),
                rows,
                first: Box::new(first.error),
            });
        }
        Ok(())
    }

    /// One isolating insert of `rows` into `table` under `token`, its size halvings journaled
    /// in the entry of `batch` (`halved`: those journaled already), retriable errors counted and
    /// retried inside the sink.
    #[allow(clippy::too_many_arguments)] // the sink's own arguments, minus what the writer owns
    async fn insert_table<'r, R: Clone, K: Ord>(
        &mut self,
        table: &str,
        rows: &'r [R],
        token: &str,
        partition: impl Fn(&'r R) -> K,
        encode: impl Fn(&[R]) -> Result<bytes::Bytes, sink::EncodeError>,
        (batch, halved): ((u64, u64, u64), &[String]),
    ) -> Result<sink::Isolation, sink::SinkError> {
        let dt = self.data_type;
        let st = self.stats.of(dt);
        let mut log = JournalHalvings {
            ledger: &mut self.ledger,
            batch,
            policy: &self.retry,
            stop: &self.stop,
            st,
            data_type: dt,
            guard: &self.guard,
        };
        let on_retry = |e: &sink::SinkError, attempt: u32, delay: Duration| {
            st.record_retry();
            note_insert_failure(st, e);
            tracing::warn!(data_type = %dt, attempt, ?delay, error = %e, "insert failed; retrying");
        };
        self.sink
            .insert_isolating(
                table,
                rows,
                token,
                partition,
                encode,
                (halved, &mut log),
                &self.stop,
                on_retry,
            )
            .await
    }

    /// Finds the batch's journaled token, or journals it with a new one.
    ///
    /// Only an exact match (same first, last and count) re-uses a journaled token. A batch that
    /// overlaps a journaled one without matching it is the residual case of a journaled batch
    /// whose messages are partly gone from the stream (the reader sends no other parts): the
    /// overlapped entries are replaced by the part's own boundaries and token.
    async fn journal_batch(&mut self, b: &DecodedBatch) -> Result<String, StageEnd> {
        if let Some(e) = self.ledger.entry_of((b.first_seq, b.last_seq, b.count)) {
            return Ok(e.token.clone());
        }
        let ledger = &mut self.ledger;
        let overlaps = |e: &JournalEntry| e.first_seq <= b.last_seq && b.first_seq <= e.last_seq;
        if let Some(e) = ledger.entries.iter().find(|e| overlaps(e)) {
            tracing::warn!(data_type = %self.data_type, journaled_first = e.first_seq,
                journaled_last = e.last_seq, journaled_count = e.count, first = b.first_seq,
                last = b.last_seq, count = b.count,
                "journaled batch cannot be re-formed whole (messages gone from the stream); inserting the rest under its own token");
            ledger.entries.retain(|e| !overlaps(e));
        }
        let token = if ledger.epoch == 0 {
            sink::batch_token(&ledger.durable, b.first_seq, b.last_seq, b.count)
        } else {
            sink::epoch_batch_token(
                &ledger.durable,
                ledger.epoch,
                b.first_seq,
                b.last_seq,
                b.count,
            )
        };
        ledger.entries.push(JournalEntry {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            count: b.count,
            token: token.clone(),
            epoch: (ledger.epoch != 0).then_some(ledger.epoch),
            halved: Vec::new(),
        });
        let st = self.stats.of(self.data_type);
        ledger
            .put(&self.retry, &self.stop, st, self.data_type)
            .await?;
        Ok(token)
    }

    /// Acks the handles (the last one confirmed, retried on the retry policy) and drops
    /// journal entries they cover. An ack that stays unconfirmed is not waited on forever: the
    /// writer marks its [`Progress`] `ack_lost` (the reader resynchronises from the ack floor)
    /// and drops batches until the reader's `Reset`.
    async fn ack(&mut self, handles: &[AckHandle]) -> Result<(), StageEnd> {
        let Some((last, rest)) = handles.split_last() else {
            return Ok(());
        };
        for h in rest {
            // Explicit-ack consumers only: the confirmed ack of the last handle, sent after
            // these on the same connection, tells that the server has processed them too.
            let _ = crate::ack::ack_no_wait(h).await;
        }
        let st = self.stats.of(self.data_type);
        let dt = self.data_type;
        let res = ack_until_confirmed(last, &self.stop, &self.retry, |e| {
            st.record_retry();
            st.error(e.to_string());
            tracing::warn!(data_type = %dt, error = %e, "ack not confirmed; retrying");
        })
        .await;
        match res {
            Ok(()) => {
                let ledger = &mut self.ledger;
                ledger.floor = ledger.floor.max(last.stream_seq);
                let acked = ledger
                    .entries
                    .iter()
                    .filter(|e| e.last_seq <= ledger.floor)
                    .count();
                let drop = acked.saturating_sub(JOURNAL_HISTORY);
                ledger.entries.drain(..drop);
                Ok(())
            }
            Err(e) if self.stop.is_cancelled() => {
                tracing::warn!(data_type = %self.data_type, error = %e, "ack abandoned at shutdown");
                Err(StageEnd::Stopped)
            }
            Err(e) => {
                // The rows are stored and journaled: re-read them from the ack floor (they are
                // re-cut at the same boundaries and deduplicated) rather than wait forever.
                tracing::warn!(data_type = %self.data_type, error = %e,
                    "ack not confirmed; resynchronising from the ack floor");
                self.publish(Progress {
                    ack_lost: true,
                    ..self.progress
                });
                Ok(())
            }
        }
    }
}

/// What earlier attempts of one batch's store have stored (see `Writer::store`).
#[derive(Debug, Default)]
struct Landed {
    /// The quality events are stored.
    quality: bool,
    /// The rows are stored: how many, and the dead letters left to store.
    rows: Option<(u64, Vec<crate::model::DeadLetterRow>)>,
}

/// Journals the size halvings of one batch: each key is appended to the batch's entry and
/// written (compare-and-set, like every journal write) before the halves are sent.
struct JournalHalvings<'a> {
    ledger: &'a mut Ledger,
    /// The batch's (first, last, count).
    batch: (u64, u64, u64),
    policy: &'a retry::Policy,
    stop: &'a CancellationToken,
    st: &'a TypeStats,
    data_type: DataType,
    /// The lane's lease: no piece is sent once it lapsed.
    guard: &'a LeaseGuard,
}

impl sink::HalvingLog for JournalHalvings<'_> {
    fn may_send(&self) -> bool {
        self.guard.valid()
    }

    fn record<'a>(
        &'a mut self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), sink::SinkError>> {
        Box::pin(async move {
            let (first, last, count) = self.batch;
            let Some(entry) = self
                .ledger
                .entries
                .iter_mut()
                .find(|e| e.first_seq == first && e.last_seq == last && e.count == count)
            else {
                return Ok(());
            };
            if entry.halved.iter().any(|k| k == key) {
                return Ok(());
            }
            entry.halved.push(key.to_owned());
            tracing::info!(data_type = %self.data_type, first, last, key, "piece too large: halving journaled before its halves are sent");
            self.ledger
                .put(self.policy, self.stop, self.st, self.data_type)
                .await
                .map_err(|_| {
                    sink::SinkError::Journal(format!("halving {key} of batch {first}-{last}"))
                })
        })
    }
}
