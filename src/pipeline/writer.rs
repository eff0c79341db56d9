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
//! Journal writes state the revision they replace: when another owner rewrote the entry since
//! our reader loaded it (our lease was lost), the write fails, the writer cancels `fence` and
//! stops; the type's supervisor drops everything this pipeline holds and starts over.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::ack::{AckHandle, ack_until_confirmed};
use crate::model::DataType;
use crate::sink::{self, Sink};
use crate::source::SourceError;
use crate::source::journal::{Journal, JournalEntry};

use super::decoder::{DecodedBatch, StageCmd};

/// How many acked batches the journal keeps besides the ones in doubt.
///
/// A NATS server that is killed (not stopped) can come back with its consumer's ack floor a
/// little behind the acks it had confirmed: those messages are then delivered again. Keeping
/// the last batches' boundaries lets the reader cut them exactly as before, so they are re-sent
/// with their original tokens and ClickHouse drops them (the tables remember
/// `crate::schema::DEDUP_WINDOW` blocks, far more than these batches add).
pub const JOURNAL_HISTORY: usize = 64;

/// Pause before storing a batch again after an error that retrying cannot fix by itself.
const FATAL_PAUSE: Duration = Duration::from_secs(10);
use super::stats::{Stats, TypeStats, now_ms};

/// Everything one type's writer needs.
pub(crate) struct Writer {
    pub data_type: DataType,
    pub durable: String,
    pub sink: Arc<Sink>,
    pub journal: Option<Journal>,
    pub stats: Arc<Stats>,
    pub stop: CancellationToken,
    pub stored_through: Arc<AtomicU64>,
    /// Recent journaled batches, oldest first: every batch above the ack floor, plus up to
    /// [`JOURNAL_HISTORY`] acked ones (see there).
    pub journaled: Vec<JournalEntry>,
    /// The confirmed ack floor (stream sequence).
    pub floor: u64,
    /// Set when an ack could not be confirmed: the reader must resynchronise from the ack
    /// floor, and until its `Reset` arrives the writer drops batches (they will be re-read).
    pub needs_resync: Arc<std::sync::atomic::AtomicBool>,
    /// Whether batches are being dropped until the next `Reset`.
    pub broken: bool,
    /// The stream's epoch (from the last `Reset`; 0 without a stream, as in core mode).
    pub epoch: u64,
    /// Revision of the consumer's journal entry this writer last read or wrote.
    pub journal_rev: u64,
    /// Cancelled by the writer when its journal write was fenced (another owner wrote it).
    pub fence: CancellationToken,
}

/// Counts a failed insert attempt and marks since when the type's inserts have been failing
/// (what `/ready` reports after its bound).
fn note_insert_failure(st: &TypeStats, e: &sink::SinkError) {
    st.record_insert_failure(e.to_string());
}

impl Writer {
    /// Processes commands until the reader hangs up or a shutdown interrupts a retry loop.
    pub async fn run(mut self, mut rx: mpsc::Receiver<StageCmd<DecodedBatch>>) {
        while let Some(cmd) = rx.recv().await {
            let ok = match cmd {
                StageCmd::Reset {
                    journaled,
                    floor,
                    epoch,
                    revision,
                } => {
                    self.journaled = journaled;
                    self.floor = floor;
                    self.epoch = epoch;
                    self.journal_rev = revision;
                    self.broken = false;
                    true
                }
                StageCmd::Batch(b) if self.broken => {
                    // Dropped: re-read after the resync, and counted as queued again then.
                    let st = self.st();
                    st.release_queued(b.count, b.bytes as u64);
                    true
                }
                StageCmd::AckOnly(_) if self.broken => true,
                StageCmd::Sync(tx) => {
                    let _ = tx.send(());
                    true
                }
                StageCmd::AckOnly(h) => self.ack(&[h]).await,
                StageCmd::Batch(b) => self.write(b).await,
            };
            if !ok {
                // Shutdown interrupted a retry: what is not acked is re-read on the next start.
                return;
            }
        }
    }

    fn st(&self) -> &TypeStats {
        self.stats.of(self.data_type)
    }

    /// Stores and acks one batch. Returns false when a shutdown interrupted it.
    ///
    /// An error that retrying cannot fix by itself (a Fatal class: wrong credentials, a schema
    /// that does not match) does not drop the batch either: it is logged, shown by `/ready`
    /// (the type's inserts are failing), and the whole store is tried again after a pause —
    /// the tokens make every repeat harmless — until an operator fixes the cause or stops us.
    async fn write(&mut self, b: DecodedBatch) -> bool {
        let Some(token) = self.journal_batch(&b).await else {
            return false;
        };
        let t0 = std::time::Instant::now();
        let (inserted_rows, dead) = loop {
            match self.store(&b, &token).await {
                Ok(done) => break done,
                Err(_) if self.stop.is_cancelled() || self.fence.is_cancelled() => return false,
                Err(e) => {
                    note_insert_failure(self.st(), &e);
                    tracing::error!(data_type = %self.data_type, error = %e,
                        "insert failed and retrying will not fix it by itself; batch held, trying again in 10 s");
                    tokio::select! {
                        _ = tokio::time::sleep(FATAL_PAUSE) => {}
                        _ = self.stop.cancelled() => return false,
                    }
                }
            }
        };
        let st = self.st();
        let first_published = (b.first_published_ms != i64::MAX).then_some(b.first_published_ms);
        st.record_insert(inserted_rows, dead, t0.elapsed(), first_published, now_ms());
        self.stored_through.fetch_max(b.last_seq, Relaxed);
        tracing::debug!(data_type = %self.data_type, first = b.first_seq, last = b.last_seq,
            rows = inserted_rows, dead, %token, "batch stored");
        let acked = self.ack(&b.acks).await;
        let st = self.st();
        st.release_queued(b.count, b.bytes as u64);
        acked
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
    async fn store(
        &mut self,
        b: &DecodedBatch,
        token: &str,
    ) -> Result<(u64, u64), sink::SinkError> {
        let dt = self.data_type;
        let halved: Vec<String> = self
            .journaled
            .iter()
            .find(|e| e.first_seq == b.first_seq && e.last_seq == b.last_seq && e.count == b.count)
            .map(|e| e.halved.clone())
            .unwrap_or_default();
        // The journal log of this batch's halvings (disjoint field borrows: the sink and the
        // stats are borrowed by the insert at the same time).
        macro_rules! halvings {
            () => {
                (
                    &halved[..],
                    &mut JournalHalvings {
                        journal: self.journal.as_ref(),
                        durable: &self.durable,
                        entries: &mut self.journaled,
                        rev: &mut self.journal_rev,
                        batch: (b.first_seq, b.last_seq, b.count),
                        stop: &self.stop,
                        fence: &self.fence,
                        st: self.stats.of(dt),
                        data_type: dt,
                    } as &mut dyn sink::HalvingLog,
                )
            };
        }
        let mut on_retry = |e: &sink::SinkError, attempt: u32, delay: Duration| {
            let st = self.stats.of(dt);
            st.record_retry();
            note_insert_failure(st, e);
            tracing::warn!(data_type = %dt, attempt, ?delay, error = %e, "insert failed; retrying");
        };
        // Quality events first: a crash after them re-detects the same events on replay (the
        // rows are not stored yet, so the restored state is the same) and the token drops them.
        if !b.quality.is_empty() {
            let qt = crate::quality::events_token(token);
            let iso = self
                .sink
                .insert_isolating(
                    crate::schema::QUALITY_EVENTS_TABLE,
                    &b.quality,
                    &qt,
                    sink::quality_event_partition,
                    sink::encode_quality_events,
                    halvings!(),
                    &self.stop,
                    &mut on_retry,
                )
                .await?;
            let stored = b.quality.len() - iso.rejected.len();
            self.stats.of(dt).record_quality_events(stored as u64);
            self.stats.of(dt).record_splits(iso.splits);
        }
        let isolation = self
            .sink
            .insert_isolating(
                dt.table(),
                &b.rows,
                token,
                sink::record_partition,
                |rows| sink::encode_block(dt, rows),
                halvings!(),
                &self.stop,
                &mut on_retry,
            )
            .await?;
        let inserted_rows = (b.rows.len() - isolation.rejected.len()) as u64;
        self.st().record_splits(isolation.splits);
        let mut dead = b.dead.clone();
        for rej in isolation.rejected {
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
        // Stream order, so a replay encodes the same rows in the same order.
        dead.sort_by_key(|d| d.stream_seq);
        if !dead.is_empty() {
            let iso = self
                .sink
                .insert_isolating(
                    crate::schema::DEAD_LETTERS_TABLE,
                    &dead,
                    &sink::dead_letter_token(token),
                    sink::dead_letter_partition,
                    sink::encode_dead_letters,
                    halvings!(),
                    &self.stop,
                    &mut on_retry,
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
        }
        Ok((inserted_rows, dead.len() as u64))
    }

    /// Finds the batch's journaled token, or journals it with a new one. None on shutdown or
    /// when the journal was fenced (then `fence` is cancelled).
    ///
    /// Only an exact match (same first, last and count) re-uses a journaled token. A batch that
    /// overlaps a journaled one without matching it is the residual case of a journaled batch
    /// whose messages are partly gone from the stream (the reader sends no other parts): the
    /// overlapped entries are replaced by the part's own boundaries and token.
    async fn journal_batch(&mut self, b: &DecodedBatch) -> Option<String> {
        if let Some(e) = self
            .journaled
            .iter()
            .find(|e| e.first_seq == b.first_seq && e.last_seq == b.last_seq && e.count == b.count)
        {
            return Some(e.token.clone());
        }
        let overlaps = |e: &JournalEntry| e.first_seq <= b.last_seq && b.first_seq <= e.last_seq;
        if let Some(e) = self.journaled.iter().find(|e| overlaps(e)) {
            tracing::warn!(data_type = %self.data_type, journaled_first = e.first_seq,
                journaled_last = e.last_seq, journaled_count = e.count, first = b.first_seq,
                last = b.last_seq, count = b.count,
                "journaled batch cannot be re-formed whole (messages gone from the stream); inserting the rest under its own token");
            self.journaled.retain(|e| !overlaps(e));
        }
        let token = if self.epoch == 0 {
            sink::batch_token(&self.durable, b.first_seq, b.last_seq, b.count)
        } else {
            sink::epoch_batch_token(&self.durable, self.epoch, b.first_seq, b.last_seq, b.count)
        };
        self.journaled.push(JournalEntry {
            first_seq: b.first_seq,
            last_seq: b.last_seq,
            count: b.count,
            token: token.clone(),
            epoch: (self.epoch != 0).then_some(self.epoch),
            halved: Vec::new(),
        });
        let Some(journal) = &self.journal else {
            return Some(token);
        };
        let written = put_journal(
            journal,
            &self.durable,
            &self.journaled,
            &mut self.journal_rev,
            &self.stop,
            &self.fence,
            self.stats.of(self.data_type),
            self.data_type,
        )
        .await;
        written.then_some(token)
    }

    /// Acks the handles (the last one confirmed) and drops journal entries they cover.
    async fn ack(&mut self, handles: &[AckHandle]) -> bool {
        let Some((last, rest)) = handles.split_last() else {
            return true;
        };
        for h in rest {
            // Explicit-ack consumers only: the confirmed ack of the last handle, sent after
            // these on the same connection, tells that the server has processed them too.
            let _ = crate::ack::ack_no_wait(h).await;
        }
        let st = self.stats.of(self.data_type);
        let dt = self.data_type;
        let res = ack_until_confirmed(last, &self.stop, |e| {
            st.record_retry();
            st.error(e.to_string());
            tracing::warn!(data_type = %dt, error = %e, "ack not confirmed; retrying");
        })
        .await;
        match res {
            Ok(()) => {
                self.floor = self.floor.max(last.stream_seq);
                let acked = self
                    .journaled
                    .iter()
                    .filter(|e| e.last_seq <= self.floor)
                    .count();
                let drop = acked.saturating_sub(JOURNAL_HISTORY);
                self.journaled.drain(..drop);
                true
            }
            Err(e) if self.stop.is_cancelled() => {
                tracing::warn!(data_type = %self.data_type, error = %e, "ack abandoned at shutdown");
                false
            }
            Err(e) => {
                // The rows are stored and journaled: re-read them from the ack floor (they are
                // re-cut at the same boundaries and deduplicated) rather than wait forever.
                tracing::warn!(data_type = %self.data_type, error = %e,
                    "ack not confirmed; resynchronising from the ack floor");
                self.broken = true;
                self.needs_resync.store(true, Relaxed);
                true
            }
        }
    }
}

/// Writes `entries` as the consumer's journal entry over revision `*rev` (updated on success),
/// retrying transient errors with backoff. False on shutdown, or when the entry was changed
/// by someone else since (fenced: `fence` is cancelled, the supervisor starts over).
#[allow(clippy::too_many_arguments)]
async fn put_journal(
    journal: &Journal,
    durable: &str,
    entries: &[JournalEntry],
    rev: &mut u64,
    stop: &CancellationToken,
    fence: &CancellationToken,
    st: &TypeStats,
    data_type: DataType,
) -> bool {
    let mut delay = Duration::from_millis(100);
    loop {
        match journal.put(durable, entries, *rev).await {
            Ok(r) => {
                *rev = r;
                return true;
            }
            Err(e @ SourceError::Fenced { .. }) => {
                // Someone else wrote the entry since we read it (or a write of ours that timed
                // out landed after all): what we hold may be cut differently from what the
                // journal says. Stop; the supervisor starts over from the journal.
                st.error(e.to_string());
                tracing::warn!(%data_type, error = %e,
                    "journal changed under this writer; dropping what it holds and starting over");
                fence.cancel();
                return false;
            }
            Err(e) => {
                st.error(e.to_string());
                tracing::warn!(%data_type, error = %e, "journal write failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return false,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Journals the size halvings of one batch: each key is appended to the batch's entry and
/// written (compare-and-set, like every journal write) before the halves are sent.
struct JournalHalvings<'a> {
    journal: Option<&'a Journal>,
    durable: &'a str,
    entries: &'a mut Vec<JournalEntry>,
    rev: &'a mut u64,
    /// The batch's (first, last, count).
    batch: (u64, u64, u64),
    stop: &'a CancellationToken,
    fence: &'a CancellationToken,
    st: &'a TypeStats,
    data_type: DataType,
}

impl sink::HalvingLog for JournalHalvings<'_> {
    fn record<'a>(
        &'a mut self,
        key: &'a str,
    ) -> futures::future::BoxFuture<'a, Result<(), sink::SinkError>> {
        Box::pin(async move {
            let (first, last, count) = self.batch;
            let Some(entry) = self
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
            let Some(journal) = self.journal else {
                return Ok(());
            };
            if put_journal(
                journal,
                self.durable,
                self.entries,
                self.rev,
                self.stop,
                self.fence,
                self.st,
                self.data_type,
            )
            .await
            {
                Ok(())
            } else {
                Err(sink::SinkError::Journal(format!(
                    "halving {key} of batch {first}-{last}"
                )))
            }
        })
    }
}
