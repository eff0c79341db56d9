//! The decode stage of one data type: raw batches → rows and dead letters.
//!
//! Sits between the reader and the writer on its own task, so that pulling from NATS and the
//! CPU work of decoding (and later encoding) run on different cores. Commands other than
//! batches pass through in order, so the reader's `Sync` still means "everything before me is
//! stored and acked". Decoding is pure: the same raw batch always gives the same rows and dead
//! letters, which is what lets a replayed batch carry its original token.

use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::ack::AckHandle;
use crate::batch::Batch;
use crate::decode;
use crate::model::{DataType, DeadLetterRow, Record};

use super::stats::{Stats, now_ms};

/// A message as the reader keeps it until it is decoded.
#[derive(Debug)]
pub struct RawMsg {
    /// Subject it arrived on.
    pub subject: async_nats::Subject,
    /// Stream sequence (a local counter in core mode).
    pub stream_seq: u64,
    /// Server receive time, UTC ms.
    pub published_ms: i64,
    /// Body.
    pub payload: Bytes,
}

/// A batch of raw messages, as the reader closes it.
pub type RawBatch = Batch<RawMsg, AckHandle>;

/// A decoded batch: what the writer inserts.
#[derive(Debug)]
pub struct DecodedBatch {
    /// The table's data type.
    pub data_type: DataType,
    /// Valid rows, in stream order.
    pub rows: Vec<Record>,
    /// For each row, the index of its message in `messages`.
    pub row_messages: Vec<usize>,
    /// The batch's messages, kept until the batch is stored (payloads are shared `Bytes`,
    /// not copies): a row ClickHouse refuses becomes a dead letter with its message's
    /// subject, stream sequence, receive time and bytes.
    pub messages: Vec<RawMsg>,
    /// Rejected messages, in stream order.
    pub dead: Vec<DeadLetterRow>,
    /// Stream sequence of the first message.
    pub first_seq: u64,
    /// Stream sequence of the last message.
    pub last_seq: u64,
    /// Messages in the batch.
    pub count: u64,
    /// Payload bytes of the batch's messages (for the unacked-bytes budget).
    pub bytes: usize,
    /// Earliest publish time, UTC ms.
    pub first_published_ms: i64,
    /// Ack handles, consumed after the insert.
    pub acks: Vec<AckHandle>,
    /// Quality events found in `rows` (stored before the rows, token `<token>/q`).
    pub quality: Vec<crate::quality::QualityEvent>,
}

/// What flows from the reader to the decoder, and from the decoder to the writer, in order.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one command per batch: boxing would buy nothing
pub enum StageCmd<B> {
    /// Start over from a new ack floor with the journal as loaded.
    Reset {
        /// Every journaled batch of the current stream epoch (recent history included).
        journaled: Vec<crate::source::journal::JournalEntry>,
        /// The consumer's ack floor.
        floor: u64,
        /// The stream's epoch (`source::journal::stream_epoch`; 0 without a stream).
        epoch: u64,
        /// The journal entry's revision as read (a write must replace exactly this one).
        revision: u64,
    },
    /// A batch to decode / to insert then ack.
    Batch(B),
    /// A redelivered message already stored: ack it (moves the floor past recovered batches).
    AckOnly(AckHandle),
    /// Reply once everything before this command is inserted and acked.
    Sync(tokio::sync::oneshot::Sender<()>),
}

/// Decodes one message into a row or a dead letter, counting rejections.
pub fn outcome(dt: DataType, m: &RawMsg, stats: &Stats, now: i64) -> Result<Record, DeadLetterRow> {
    decode::decode(dt, m.subject.as_str(), &m.payload, now).map_err(|rej| {
        stats.of(dt).reject(rej.kind.as_str());
        dead_letter(dt, m, rej.reason)
    })
}

/// The dead letter of message `m` (`reason` says why it is not a row): its subject, stream
/// sequence and payload bytes as received, and the server's receive time, not ours, so a
/// replay produces the same row. Used for decode rejections and for rows ClickHouse refused.
pub fn dead_letter(dt: DataType, m: &RawMsg, reason: String) -> DeadLetterRow {
    DeadLetterRow {
        received_at_ms: m.published_ms,
        subject: m.subject.to_string(),
        stream_seq: m.stream_seq,
        data_type: dt.as_str().to_string(),
        reason,
        payload: m.payload.clone(),
    }
}

/// Decodes a whole batch.
pub fn decode_batch(b: RawBatch, stats: &Stats) -> DecodedBatch {
    let dt = b.data_type;
    let now = now_ms();
    let mut rows = Vec::with_capacity(b.items.len());
    let mut row_messages = Vec::with_capacity(b.items.len());
    let mut dead = Vec::new();
    for (i, m) in b.items.iter().enumerate() {
        match outcome(dt, m, stats, now) {
            Ok(r) => {
                rows.push(r);
                row_messages.push(i);
            }
            Err(d) => dead.push(d),
        }
    }
    // Stamped with the batch's receive time, not ours: a replay must produce the same events.
    let detected_at = if b.first_published_ms == i64::MAX {
        now
    } else {
        b.first_published_ms
    };
    let quality = stats.quality.observe(dt, &rows, detected_at, now);
    DecodedBatch {
        data_type: dt,
        quality,
        rows,
        row_messages,
        messages: b.items,
        dead,
        first_seq: b.first_seq,
        last_seq: b.last_seq,
        count: b.count,
        bytes: b.bytes,
        first_published_ms: b.first_published_ms,
        acks: b.acks,
    }
}

/// Batches smaller than this are decoded inline; larger ones on the blocking pool, so a
/// 100k-row batch never stalls the runtime's workers.
const INLINE_DECODE: usize = 2_000;

/// Runs the stage until the reader hangs up or the writer is gone.
pub async fn run(
    mut rx: mpsc::Receiver<StageCmd<RawBatch>>,
    tx: mpsc::Sender<StageCmd<DecodedBatch>>,
    stats: Arc<Stats>,
) {
    while let Some(cmd) = rx.recv().await {
        let out = match cmd {
            StageCmd::Batch(b) => {
                let dt = b.data_type;
                let decoded = if b.items.len() <= INLINE_DECODE {
                    decode_batch(b, &stats)
                } else {
                    let st = stats.clone();
                    match tokio::task::spawn_blocking(move || decode_batch(b, &st)).await {
                        Ok(d) => d,
                        Err(e) => {
                            // A panic in decode is a bug; the batch stays unacked and is
                            // re-read after a restart.
                            tracing::error!(data_type = %dt, error = %e, "decode task failed");
                            stats.of(dt).error(format!("decode task failed: {e}"));
                            return;
                        }
                    }
                };
                StageCmd::Batch(decoded)
            }
            StageCmd::Reset {
                journaled,
                floor,
                epoch,
                revision,
            } => StageCmd::Reset {
                journaled,
                floor,
                epoch,
                revision,
            },
            StageCmd::AckOnly(h) => StageCmd::AckOnly(h),
            StageCmd::Sync(s) => StageCmd::Sync(s),
        };
        if tx.send(out).await.is_err() {
            return;
        }
    }
}
