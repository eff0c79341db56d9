//! The decode stage of one data type: raw batches → rows and dead letters.
//!
//! Sits between the reader and the writer on its own task, so that pulling from NATS and the
//! CPU work of decoding (and later encoding) run on different cores. Commands other than
//! batches pass through in order, so the reader's `Sync` still means "everything before me is
//! stored and acked". Decoding is pure: the same raw batch always gives the same rows and dead
//! letters, which is what lets a replayed batch carry its original token.
//!
//! **Invariant:** a decoded batch spans at most [`MAX_PARTITIONS_PER_BATCH`] partitions of its
//! table: a raw batch over more is emitted as consecutive runs by stream sequence, each a batch
//! of its own (journaled and tokened on its exact boundaries by the writer), so the dedup window
//! (`schema::required_window`) holds whatever the payloads say. A raw batch that is exactly a
//! journaled batch is never cut: journaled batches are only inserted whole.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::ack::AckHandle;
use crate::batch::Batch;
use crate::decode;
use crate::model::{DataType, DeadLetterRow, Record};

use super::StageEnd;
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

/// Where a reader run starts: the decoder and the writer start over from it.
#[derive(Debug)]
pub struct Reset {
    /// The reader's run this starts (the writer's `Progress` names it back).
    pub run: u64,
    /// Every journaled batch of the current stream epoch (recent history included).
    pub journaled: Vec<crate::source::journal::JournalEntry>,
    /// The consumer's ack floor.
    pub floor: u64,
    /// The stream's epoch (`source::journal::stream_epoch`; 0 without a stream).
    pub epoch: u64,
    /// The journal entry's revision as read (a write must replace exactly this one).
    pub revision: u64,
}

/// What flows from the reader to the decoder, and from the decoder to the writer, in order.
#[derive(Debug)]
#[allow(clippy::large_enum_variant)] // one command per batch: boxing would buy nothing
pub enum StageCmd<B> {
    /// Start over from a new ack floor with the journal as loaded.
    Reset(Reset),
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

/// Most partitions one decoded batch spans: the sink's cap per INSERT
/// ([`crate::sink::MAX_PARTITIONS_PER_INSERT`]), so that one batch adds at most
/// [`crate::sink::max_blocks_per_batch`]`(rows, 100, rejected)` blocks to its table whatever its
/// rows say (`schema::required_window` sizes the dedup window from that).
pub const MAX_PARTITIONS_PER_BATCH: usize = crate::sink::MAX_PARTITIONS_PER_INSERT;

/// Where to cut a run of messages so that no piece spans more than `max` distinct keys.
///
/// `keys` has one entry per message in stream order: its row's partition key, or `None` for a
/// message that has no row (a dead letter, which does not touch the table's partitions).
/// Returns the exclusive end index of each consecutive piece (the last is `keys.len()`; empty
/// input gives no piece). Greedy: a piece closes right before the message that would bring the
/// `max + 1`-th key. A pure function of the keys, so the same messages are cut the same way.
pub fn partition_cuts<K: std::hash::Hash + Eq>(keys: &[Option<K>], max: usize) -> Vec<usize> {
    let max = max.max(1);
    let mut cuts = Vec::new();
    let mut seen: HashSet<&K> = HashSet::new();
    for (i, k) in keys.iter().enumerate() {
        if let Some(k) = k
            && !seen.contains(k)
        {
            if seen.len() >= max {
                cuts.push(i);
                seen.clear();
            }
            seen.insert(k);
        }
    }
    if !keys.is_empty() {
        cuts.push(keys.len());
    }
    cuts
}

/// Decodes a raw batch into consecutive decoded batches, each spanning at most
/// [`MAX_PARTITIONS_PER_BATCH`] partitions of its table (unless `whole`).
///
/// The pieces are runs of the raw batch by stream sequence (cut by [`partition_cuts`] over the
/// rows' partition keys), each with its own exact `(first, last, count)`: the writer journals
/// and tokens each on its own, so a replay re-cuts at those journaled boundaries and re-sends
/// each piece under its token. `whole` (a raw batch that is exactly a journaled batch, re-formed
/// on replay) keeps the batch as journaled: a journaled batch is only ever inserted whole.
///
/// Ack handles go to the piece holding their message; under `AckPolicy::All` only the raw
/// batch's last handle exists, so the earlier pieces carry none and the last piece's ack covers
/// them (as for re-read messages). Bytes are split exactly (the writer subtracts each piece's
/// count and bytes from the queued gauges). Quality events are observed piece by piece, in
/// order, each stamped with its piece's receive time, so a replay of one piece alone detects
/// the same events as the first attempt.
pub fn decode_batches(b: RawBatch, stats: &Stats, whole: bool) -> Vec<DecodedBatch> {
    let dt = b.data_type;
    let now = now_ms();
    let outcomes: Vec<Result<Record, DeadLetterRow>> =
        b.items.iter().map(|m| outcome(dt, m, stats, now)).collect();
    let cuts = if whole {
        vec![b.items.len()]
    } else {
        let keys: Vec<Option<(i64, &str)>> = outcomes
            .iter()
            .map(|o| o.as_ref().ok().map(crate::sink::record_partition))
            .collect();
        partition_cuts(&keys, MAX_PARTITIONS_PER_BATCH)
    };
    if cuts.len() <= 1 {
        return vec![assemble(
            dt,
            b.items,
            outcomes,
            b.acks,
            b.bytes,
            b.first_published_ms,
            (b.first_seq, b.last_seq, b.count),
            stats,
            now,
        )];
    }
    let mut out = Vec::with_capacity(cuts.len());
    let mut items = b.items.into_iter();
    let mut outcomes = outcomes.into_iter();
    let mut acks = b.acks.into_iter().peekable();
    let mut bytes_left = b.bytes;
    let mut start = 0;
    let pieces = cuts.len();
    for (n, end) in cuts.into_iter().enumerate() {
        let msgs: Vec<RawMsg> = items.by_ref().take(end - start).collect();
        let outs: Vec<_> = outcomes.by_ref().take(end - start).collect();
        start = end;
        let (Some(first), Some(last)) = (msgs.first(), msgs.last()) else {
            continue;
        };
        let (first_seq, last_seq) = (first.stream_seq, last.stream_seq);
        let last_piece = n + 1 == pieces;
        let mut piece_acks = Vec::new();
        while let Some(a) = acks.next_if(|a| last_piece || a.stream_seq <= last_seq) {
            piece_acks.push(a);
        }
        let bytes = if last_piece {
            bytes_left
        } else {
            let b: usize = msgs.iter().map(|m| m.payload.len()).sum();
            let b = b.min(bytes_left);
            bytes_left -= b;
            b
        };
        let published = msgs
            .iter()
            .map(|m| m.published_ms)
            .min()
            .unwrap_or(i64::MAX);
        let count = msgs.len() as u64;
        out.push(assemble(
            dt,
            msgs,
            outs,
            piece_acks,
            bytes,
            published,
            (first_seq, last_seq, count),
            stats,
            now,
        ));
    }
    out
}

/// One decoded batch from its messages and their outcomes.
#[allow(clippy::too_many_arguments)] // a private constructor: named fields at its two callers
fn assemble(
    dt: DataType,
    messages: Vec<RawMsg>,
    outcomes: Vec<Result<Record, DeadLetterRow>>,
    acks: Vec<AckHandle>,
    bytes: usize,
    first_published_ms: i64,
    (first_seq, last_seq, count): (u64, u64, u64),
    stats: &Stats,
    now: i64,
) -> DecodedBatch {
    let mut rows = Vec::with_capacity(outcomes.len());
    let mut row_messages = Vec::with_capacity(outcomes.len());
    let mut dead = Vec::new();
    for (i, o) in outcomes.into_iter().enumerate() {
        match o {
            Ok(r) => {
                rows.push(r);
                row_messages.push(i);
            }
            Err(d) => dead.push(d),
        }
    }
    // Stamped with the batch's receive time, not ours: a replay must produce the same events.
    let detected_at = if first_published_ms == i64::MAX {
        now
    } else {
        first_published_ms
    };
    let quality = stats.quality.observe(dt, &rows, detected_at, now);
    DecodedBatch {
        data_type: dt,
        quality,
        rows,
        row_messages,
        messages,
        dead,
        first_seq,
        last_seq,
        count,
        bytes,
        first_published_ms,
        acks,
    }
}

/// Batches smaller than this are decoded inline; larger ones on the blocking pool, so a
/// 100k-row batch never stalls the runtime's workers.
const INLINE_DECODE: usize = 2_000;

/// One type's decode stage (build with [`Decoder::new`], run with [`Decoder::run`]).
pub(crate) struct Decoder {
    stats: Arc<Stats>,
    /// Boundaries journaled when the stage was last reset: a raw batch that is exactly one of
    /// them is a journaled batch re-formed on replay and is decoded whole.
    journaled: HashSet<(u64, u64, u64)>,
}

impl Decoder {
    /// A decoder counting into `stats`.
    pub(super) fn new(stats: Arc<Stats>) -> Self {
        Decoder {
            stats,
            journaled: HashSet::new(),
        }
    }

    /// Runs the stage until the reader hangs up ([`StageEnd::Drained`]), the writer is gone
    /// ([`StageEnd::Disconnected`]) or a decode task failed ([`StageEnd::Stuck`]).
    pub async fn run(
        mut self,
        mut rx: mpsc::Receiver<StageCmd<RawBatch>>,
        tx: mpsc::Sender<StageCmd<DecodedBatch>>,
    ) -> StageEnd {
        while let Some(cmd) = rx.recv().await {
            let out = match cmd {
                StageCmd::Batch(b) => match self.decode(b).await {
                    Ok(decoded) => decoded,
                    Err(end) => return end,
                },
                StageCmd::Reset(reset) => {
                    self.journaled = reset
                        .journaled
                        .iter()
                        .map(|e| (e.first_seq, e.last_seq, e.count))
                        .collect();
                    vec![StageCmd::Reset(reset)]
                }
                StageCmd::AckOnly(h) => vec![StageCmd::AckOnly(h)],
                StageCmd::Sync(s) => vec![StageCmd::Sync(s)],
            };
            for cmd in out {
                if tx.send(cmd).await.is_err() {
                    return StageEnd::Disconnected;
                }
            }
        }
        StageEnd::Drained
    }

    /// One raw batch → its decoded batches (inline when small, on the blocking pool when large).
    async fn decode(&self, b: RawBatch) -> Result<Vec<StageCmd<DecodedBatch>>, StageEnd> {
        let dt = b.data_type;
        let whole = self.journaled.contains(&(b.first_seq, b.last_seq, b.count));
        let decoded = if b.items.len() <= INLINE_DECODE {
            decode_batches(b, &self.stats, whole)
        } else {
            let st = self.stats.clone();
            match tokio::task::spawn_blocking(move || decode_batches(b, &st, whole)).await {
                Ok(d) => d,
                Err(e) => {
                    // A panic in decode is a bug; the batch stays unacked and is re-read after
                    // a restart.
                    tracing::error!(data_type = %dt, error = %e, "decode task failed");
                    self.stats.of(dt).error(format!("decode task failed: {e}"));
                    return Err(StageEnd::Stuck(format!("decode task failed: {e}")));
                }
            }
        };
        if decoded.len() > 1 {
            tracing::debug!(data_type = %dt, pieces = decoded.len(),
                "batch spans more than {MAX_PARTITIONS_PER_BATCH} partitions; cut by stream sequence");
        }
        Ok(decoded.into_iter().map(StageCmd::Batch).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// A trade payload on `exchange` at `ts_ms`, id `id`.
    fn trade(id: u64, exchange: &str, ts_ms: i64) -> Bytes {
        Bytes::from(format!(
            r#"{{"symbol":"BTC-USDT","price":"66990.5","quantity":"0.012","side":"buy","trade_id":"{id}","exchange":"{exchange}","market_type":"perpetual","data_source":"marketprism","data_type":"trade","ts_ms":{ts_ms}}}"#
        ))
    }

    /// A raw batch of `(seq, payload)` messages, as the reader closes it.
    fn raw(msgs: Vec<(u64, Bytes)>) -> RawBatch {
        let bytes = msgs.iter().map(|(_, p)| p.len()).sum();
        let items: Vec<RawMsg> = msgs
            .into_iter()
            .map(|(seq, payload)| RawMsg {
                subject: async_nats::Subject::from("trade.x.perpetual.BTC-USDT"),
                stream_seq: seq,
                published_ms: 1_761_040_800_000 + seq as i64,
                payload,
            })
            .collect();
        Batch {
            data_type: DataType::Trade,
            first_seq: items.first().map_or(0, |m| m.stream_seq),
            last_seq: items.last().map_or(0, |m| m.stream_seq),
            count: items.len() as u64,
            bytes,
            first_published_ms: items
                .iter()
                .map(|m| m.published_ms)
                .min()
                .unwrap_or(i64::MAX),
            items,
            acks: Vec::new(),
            opened_at: Instant::now(),
        }
    }

    fn partitions(d: &DecodedBatch) -> usize {
        d.rows
            .iter()
            .map(crate::sink::record_partition)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Checks the pieces: consecutive, covering the raw batch exactly, each ≤ 100 partitions.
    fn check_pieces(out: &[DecodedBatch], first: u64, last: u64, count: u64, bytes: usize) {
        let mut next = first;
        for d in out {
            assert_eq!(d.first_seq, next);
            assert_eq!(d.count as usize, d.messages.len());
            assert_eq!(d.count as usize, d.rows.len() + d.dead.len());
            assert!(
                partitions(d) <= MAX_PARTITIONS_PER_BATCH,
                "{}",
                partitions(d)
            );
            next = d.last_seq + 1;
        }
        assert_eq!(next, last + 1);
        assert_eq!(out.iter().map(|d| d.count).sum::<u64>(), count);
        assert_eq!(out.iter().map(|d| d.bytes).sum::<usize>(), bytes);
    }

    fn bounds(out: &[DecodedBatch]) -> Vec<(u64, u64, u64)> {
        out.iter()
            .map(|d| (d.first_seq, d.last_seq, d.count))
            .collect()
    }

    #[test]
    fn cuts_are_greedy_and_ignore_messages_without_rows() {
        let keys = [
            Some(1),
            Some(2),
            None,
            Some(1),
            Some(3),
            Some(3),
            None,
            Some(4),
        ];
        assert_eq!(partition_cuts(&keys, 2), vec![4, 8]);
        assert_eq!(partition_cuts(&keys, 1), vec![1, 3, 4, 7, 8]);
        assert_eq!(partition_cuts(&keys, 4), vec![8]);
        assert_eq!(partition_cuts::<u8>(&[], 4), Vec::<usize>::new());
        assert_eq!(partition_cuts(&[None::<u8>, None], 1), vec![2]);
        assert_eq!(
            partition_cuts(&[Some(1), Some(2)], 0),
            vec![1, 2],
            "0 is taken as 1"
        );
    }

    #[test]
    fn batch_over_250_exchanges_is_cut_into_pieces_of_at_most_100_partitions() {
        let stats = Stats::new(0);
        let msgs = || {
            (1..=1_000u64)
                .map(|s| (s, trade(s, &format!("ex{}", s % 250), 1_761_040_800_000)))
                .collect::<Vec<_>>()
        };
        let b = raw(msgs());
        let (count, bytes) = (b.count, b.bytes);
        let out = decode_batches(b, &stats, false);
        check_pieces(&out, 1, 1_000, count, bytes);
        // 250 exchanges round-robin: every piece is a run of 100 messages.
        assert_eq!(out.len(), 10);
        assert!(out.iter().all(|d| partitions(d) == 100));
        // Deterministic: the same messages give the same boundaries.
        let again = decode_batches(raw(msgs()), &Stats::new(0), false);
        assert_eq!(bounds(&out), bounds(&again));
    }

    #[test]
    fn back_fill_over_150_months_is_cut_and_a_journaled_piece_is_not_cut_again() {
        let stats = Stats::new(0);
        // 2014-01 onwards, one month (≈ 31 days) per 10 messages, one exchange; a dead letter
        // every 7th message.
        let month = 31 * 86_400_000i64;
        let msgs = || {
            (1..=1_500u64)
                .map(|s| {
                    let p = if s % 7 == 0 {
                        Bytes::from_static(b"not json")
                    } else {
                        trade(s, "binance", 1_388_534_400_000 + (s as i64 / 10) * month)
                    };
                    (s + 100, p)
                })
                .collect::<Vec<_>>()
        };
        let b = raw(msgs());
        let (count, bytes) = (b.count, b.bytes);
        let out = decode_batches(b, &stats, false);
        check_pieces(&out, 101, 1_600, count, bytes);
        assert!(out.len() >= 2, "{}", out.len());
        // The pieces as a replay re-forms them (cut at their journaled boundaries) stay whole.
        let all = msgs();
        for d in &out {
            let part: Vec<_> = all
                .iter()
                .filter(|(s, _)| (d.first_seq..=d.last_seq).contains(s))
                .cloned()
                .collect();
            let replayed = decode_batches(raw(part), &Stats::new(0), false);
            assert_eq!(bounds(&replayed), bounds(std::slice::from_ref(d)));
        }
        // A journaled batch re-formed on replay is decoded whole, whatever it spans.
        let whole = decode_batches(raw(msgs()), &Stats::new(0), true);
        assert_eq!(bounds(&whole), vec![(101, 1_600, 1_500)]);
    }

    #[test]
    fn batch_within_100_partitions_is_left_alone() {
        let b = raw((1..=500u64)
            .map(|s| (s, trade(s, &format!("ex{}", s % 100), 1_761_040_800_000)))
            .collect());
        let out = decode_batches(b, &Stats::new(0), false);
        assert_eq!(bounds(&out), vec![(1, 500, 500)]);
    }
}
