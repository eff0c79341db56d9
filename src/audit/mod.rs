//! `audit`: the proof of exactly-once — what the streams hold against what ClickHouse stores.
//!
//! Consumes a range of each type's stream (read with an ack-less ephemeral consumer, never
//! the service's durables) and the hot (or cold) database; emits an [`AuditReport`] with exact
//! numbers per type and market `(exchange, market_type, symbol)`: messages, rows, dead
//! letters, missing rows (with the first stream sequences and keys), duplicated rows,
//! unexplained rows, missing and duplicated dead letters. It never writes anywhere.
//!
//! How (details and the edge rule in `docs/audit.md`):
//! 1. plan: resolve the range per type (`--from/--to` publish times or stream sequences;
//!    by default the whole stream up to the service's ack floor, which the exactly-once
//!    invariant says is stored) and load the type's dead letters by stream sequence;
//! 2. read ([`read`]): every message, plus `margin` of publish time on both sides as edge
//!    context, decoded with the service's own `decode::decode` on worker threads;
//! 3. compare ([`compare`]): a message with a dead letter is a dead letter; a rejection
//!    without one is a missing dead letter; a row lands in a `(market, bucket)` cell of
//!    count and wrapping sum of `sipHash64(key)` ([`key`]). ClickHouse computes the same
//!    cells over exactly each market's span ([`store`]); only cells that differ are fetched
//!    key by key and resolved into missing / duplicated / unexplained;
//! 4. report: [`AuditReport`], exact numbers per type and market plus msgs/s (the CLI
//!    renders it as tables or JSON).

pub mod compare;
pub mod key;
pub mod read;
pub mod store;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use async_nats::jetstream;

use crate::model::DataType;
use crate::sink::Sink;

pub use compare::{ExtraKey, MissingRow};
pub use read::{Lower, Range, Upper};

/// Default bucket width of the fingerprint cells: one minute of `timestamp`.
pub const DEFAULT_BUCKET_MS: i64 = 60_000;
/// Default edge margin: five minutes of publish time read on each side of the range.
pub const DEFAULT_MARGIN_MS: i64 = 300_000;
/// Default messages per pull request.
pub const DEFAULT_FETCH_BATCH: usize = 10_000;

/// Errors of an audit (a difference is not an error: it is in the report).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuditError {
    /// Reading the stream failed.
    #[error("stream: {0}")]
    Stream(String),
    /// Querying ClickHouse failed.
    #[error("clickhouse: {0}")]
    ClickHouse(String),
}

/// Where the audit starts reading.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// The stream's first retained message.
    Beginning,
    /// Messages published at or after this time (UTC ms).
    Time(i64),
    /// Messages at or after this stream sequence.
    Seq(u64),
}

/// Where the audit stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The service's ack floor for the type (everything at or below it must be stored); the
    /// stream's last message when the type has no durable.
    AckFloor,
    /// The stream's last message when the audit starts.
    Last,
    /// Messages published before this time (UTC ms).
    Time(i64),
    /// Messages up to and including this stream sequence.
    Seq(u64),
}

/// One type to audit and where its messages live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditTarget {
    /// The type.
    pub data_type: DataType,
    /// Its stream.
    pub stream: String,
    /// The service's durable consumer of it (for [`End::AckFloor`]).
    pub durable: Option<String>,
}

/// What to audit and how.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    /// Types, in report order.
    pub targets: Vec<AuditTarget>,
    /// Start of the range.
    pub start: Start,
    /// End of the range.
    pub end: End,
    /// Edge context read on each side, ms of publish time.
    pub margin_ms: i64,
    /// Width of a fingerprint cell, ms of `timestamp`.
    pub bucket_ms: i64,
    /// Messages per pull request.
    pub fetch_batch: usize,
    /// Decode worker threads.
    pub workers: usize,
    /// "Now" for the decoder's timestamp bound (UTC ms).
    pub now_ms: i64,
}

impl AuditOptions {
    /// Defaults for `targets`: whole streams up to the ack floors.
    pub fn new(targets: Vec<AuditTarget>, now_ms: i64) -> AuditOptions {
        AuditOptions {
            targets,
            start: Start::Beginning,
            end: End::AckFloor,
            margin_ms: DEFAULT_MARGIN_MS,
            bucket_ms: DEFAULT_BUCKET_MS,
            fetch_batch: DEFAULT_FETCH_BATCH,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            now_ms,
        }
    }
}

/// Progress callbacks (the CLI draws them on stderr).
pub trait Progress: Sync {
    /// `messages` of `data_type` read so far, of about `of`.
    fn read(&self, data_type: DataType, messages: u64, of: u64);
}

/// No progress output.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoProgress;

impl Progress for NoProgress {
    fn read(&self, _: DataType, _: u64, _: u64) {}
}

/// Counts that add up per market, per type and in total.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// In-range stream messages.
    pub messages: u64,
    /// Rows those messages should have become (messages − dead letters − missing dead letters).
    pub rows_expected: u64,
    /// Rows stored for them and found: `rows_expected − missing`.
    pub rows_matched: u64,
    /// Rows stored in the audited span: `rows_matched + duplicated + unexplained`.
    pub rows: u64,
    /// Messages matched by a dead letter.
    pub dead_letters: u64,
    /// Rows expected but not stored.
    pub missing: u64,
    /// Rows stored more often than the stream holds them.
    pub duplicated: u64,
    /// Stored rows no message read explains.
    pub unexplained: u64,
    /// Rejected messages with no dead letter.
    pub missing_dead_letters: u64,
    /// Dead letters beyond the first of one message.
    pub duplicated_dead_letters: u64,
}

impl Counts {
    /// Every kind of difference, summed (0: exactly once).
    pub fn differences(&self) -> u64 {
        self.missing
            + self.duplicated
            + self.unexplained
            + self.missing_dead_letters
            + self.duplicated_dead_letters
    }

    fn add(&mut self, o: &Counts) {
        self.messages += o.messages;
        self.rows_expected += o.rows_expected;
        self.rows_matched += o.rows_matched;
        self.rows += o.rows;
        self.dead_letters += o.dead_letters;
        self.missing += o.missing;
        self.duplicated += o.duplicated;
        self.unexplained += o.unexplained;
        self.missing_dead_letters += o.missing_dead_letters;
        self.duplicated_dead_letters += o.duplicated_dead_letters;
    }
}

/// One market of one type.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MarketReport {
    /// Exchange.
    pub exchange: String,
    /// Market type.
    pub market_type: String,
    /// Symbol.
    pub symbol: String,
    /// The numbers.
    #[serde(flatten)]
    pub counts: Counts,
    /// The first missing rows (stream sequence and key).
    pub first_missing: Vec<MissingRow>,
    /// The first duplicated keys.
    pub first_duplicated: Vec<ExtraKey>,
    /// The first unexplained keys.
    pub first_unexplained: Vec<ExtraKey>,
    /// The first stream sequences of rejected messages without a dead letter.
    pub first_missing_dead_letters: Vec<u64>,
}

/// One rejected message without a dead letter.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MissingDeadLetter {
    /// Stream sequence.
    pub seq: u64,
    /// The decoder's reason.
    pub reason: String,
}

/// One type.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct TypeReport {
    /// The type (`trade`, …).
    pub data_type: String,
    /// Its table.
    pub table: String,
    /// Its stream.
    pub stream: String,
    /// First in-range stream sequence (0: none).
    pub first_seq: u64,
    /// Last in-range stream sequence.
    pub last_seq: u64,
    /// Edge-context messages read besides.
    pub context_messages: u64,
    /// Totals over the markets.
    #[serde(flatten)]
    pub counts: Counts,
    /// In-range messages the decoder accepts now that the service dead-lettered (counted as
    /// dead letters: one outcome per message).
    pub dead_lettered_rows: u64,
    /// In-range messages whose row ClickHouse refused, matched to its dead letter (a dead
    /// letter without a stream sequence whose payload is the decoded row); counted in
    /// `dead_letters`.
    pub refused_rows: u64,
    /// The first rejected messages without a dead letter, with the reason.
    pub first_missing_dead_letters: Vec<MissingDeadLetter>,
    /// Cells of the fingerprint pass, and how many had to be resolved key by key.
    pub cells: u64,
    /// Cells resolved key by key.
    pub cells_differing: u64,
    /// Per market, sorted.
    pub markets: Vec<MarketReport>,
    /// Seconds spent on this type.
    pub elapsed_s: f64,
    /// Messages read (range and context) per second of reading and decoding.
    pub read_messages_per_s: f64,
}

/// The whole audit.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct AuditReport {
    /// No difference anywhere.
    pub ok: bool,
    /// The database whose rows were audited.
    pub database: String,
    /// Totals over every type.
    pub totals: Counts,
    /// Per type.
    pub types: Vec<TypeReport>,
    /// Seconds for the whole audit.
    pub elapsed_s: f64,
    /// In-range messages per second of the whole audit (read, decode, compare).
    pub messages_per_s: f64,
}

impl AuditReport {
    /// Every difference, summed (0: exactly once).
    pub fn differences(&self) -> u64 {
        self.totals.differences()
    }
}

fn per_s(n: u64, secs: f64) -> f64 {
    if secs > 0.0 { n as f64 / secs } else { 0.0 }
}

/// Runs the audit: `rows` is the database audited (hot or cold), `dead_letters` the hot one.
pub async fn run(
    opts: &AuditOptions,
    js: &jetstream::Context,
    rows: &Sink,
    dead_letters: &Sink,
    progress: &dyn Progress,
) -> Result<AuditReport, AuditError> {
    let started = Instant::now();
    // Types run concurrently: each waits mostly on its own stream and queries, and a small
    // type's fixed cost (consumer, three queries) then hides behind the big ones.
    let types = futures::future::try_join_all(
        opts.targets
            .iter()
            .map(|target| audit_type(opts, target, js, rows, dead_letters, progress)),
    )
    .await?;
    let mut totals = Counts::default();
    for t in &types {
        totals.add(&t.counts);
    }
    let elapsed = started.elapsed().as_secs_f64();
    Ok(AuditReport {
        ok: totals.differences() == 0,
        database: rows.database().to_string(),
        totals,
        types,
        elapsed_s: elapsed,
        messages_per_s: per_s(totals.messages, elapsed),
    })
}

async fn resolve_range(
    opts: &AuditOptions,
    target: &AuditTarget,
    js: &jetstream::Context,
) -> Result<Range, AuditError> {
    let lower = match opts.start {
        Start::Beginning => Lower::Beginning,
        Start::Time(t) => Lower::Time(t),
        Start::Seq(s) => Lower::Seq(s),
    };
    let mut stream = js
        .get_stream(&target.stream)
        .await
        .map_err(|e| AuditError::Stream(format!("get stream {}: {e}", target.stream)))?;
    // The stream's last sequence now: reading past the range (the end margin) stops there, so
    // an audit of a live stream never waits for messages published after it started.
    let last = stream
        .info()
        .await
        .map_err(|e| AuditError::Stream(format!("stream info {}: {e}", target.stream)))?
        .state
        .last_sequence;
    let upper = match (opts.end, &target.durable) {
        (End::Time(t), _) => Upper::Time(t),
        (End::Seq(s), _) => Upper::Seq(s),
        (End::AckFloor, Some(d)) => Upper::Seq(lanes_floor(&mut stream, d, last).await?),
        (End::AckFloor | End::Last, _) => Upper::Seq(last),
    };
    Ok(Range {
        lower,
        upper,
        margin_ms: opts.margin_ms.max(0),
        read_until: last,
    })
}

/// How far every lane of the type whose base durable is `base` has stored: the lowest ack
/// floor among its lanes (the base durable and its partitions' `<base>_p<k>of<n>`), a lane with
/// nothing pending and nothing unacked counting as caught up (`last`). `last` when the type
/// has no durable yet.
async fn lanes_floor(
    stream: &mut jetstream::stream::Stream,
    base: &str,
    last: u64,
) -> Result<u64, AuditError> {
    use futures::TryStreamExt;
    let names: Vec<String> = stream
        .consumer_names()
        .try_collect()
        .await
        .map_err(|e| AuditError::Stream(format!("list consumers: {e}")))?;
    let mut floor = last;
    for name in names.iter().filter(|n| {
        n.as_str() == base || crate::source::partition::parse_partition_durable(base, n).is_some()
    }) {
        let info = match stream.consumer_info(name).await {
            Ok(info) => info,
            // Removed between the listing and now: nothing of it to wait for.
            Err(e) if e.to_string().contains("not found") => continue,
            Err(e) => return Err(AuditError::Stream(format!("consumer info {name}: {e}"))),
        };
        if info.num_pending > 0 || info.num_ack_pending > 0 {
            floor = floor.min(info.ack_floor.stream_sequence);
        }
    }
    Ok(floor)
}

async fn audit_type(
    opts: &AuditOptions,
    target: &AuditTarget,
    js: &jetstream::Context,
    rows: &Sink,
    dead_letters: &Sink,
    progress: &dyn Progress,
) -> Result<TypeReport, AuditError> {
    let started = Instant::now();
    let dt = target.data_type;
    let range = resolve_range(opts, target, js).await?;
    let dead = Arc::new(store::dead_letters(dead_letters, dt, 0).await?);
    let refused = store::refused(dead_letters, dt).await?;
    let refused = (!refused.is_empty()).then(|| Arc::new(compare::Refused::new(refused)));
    let job = read::ReadJob {
        stream: &target.stream,
        data_type: dt,
        range,
        fetch_batch: opts.fetch_batch,
        workers: opts.workers,
        bucket_ms: opts.bucket_ms,
        dead,
        refused,
        now_ms: opts.now_ms,
        progress,
    };
    let (side, stats) = read::read_type(js, job).await?;
    let spans = side.spans();
    let stored = store::cells(rows, dt, &spans, side.bucket_ms).await?;
    let first = compare::compare_buckets(&side, &stored);
    let fetched = store::keys(rows, dt, &spans, &first.differing, side.bucket_ms).await?;
    let mut diffs = compare::resolve(&side, &first.differing, &fetched);
    fill_missing_keys(js, &target.stream, dt, &mut diffs, opts.now_ms).await;
    let mut markets = Vec::new();
    let mut counts = Counts::default();
    for (name, acc) in &side.markets {
        let (exchange, market_type, symbol) = key::split_market(name);
        let expected: u64 = acc.cells.values().map(|c| c.count).sum();
        let d = diffs.remove(name).unwrap_or_default();
        let matched = first.matched.get(name).copied().unwrap_or(0) + d.matched;
        let c = Counts {
            messages: acc.messages,
            rows_expected: expected,
            rows_matched: matched,
            rows: matched + d.duplicated + d.unexplained,
            dead_letters: acc.dead_letters,
            missing: d.missing,
            duplicated: d.duplicated,
            unexplained: d.unexplained,
            missing_dead_letters: acc.missing_dead_letters.len() as u64,
            duplicated_dead_letters: 0,
        };
        counts.add(&c);
        markets.push(MarketReport {
            exchange: exchange.to_string(),
            market_type: market_type.to_string(),
            symbol: symbol.to_string(),
            counts: c,
            first_missing: d.first_missing,
            first_duplicated: d.first_duplicated,
            first_unexplained: d.first_unexplained,
            first_missing_dead_letters: acc
                .missing_dead_letters
                .iter()
                .take(compare::LISTED)
                .copied()
                .collect(),
        });
    }
    counts.duplicated_dead_letters = side.duplicated_dead_letters;
    markets.sort_by(|a, b| {
        (&a.exchange, &a.market_type, &a.symbol).cmp(&(&b.exchange, &b.market_type, &b.symbol))
    });
    let read_secs = stats.elapsed.as_secs_f64();
    Ok(TypeReport {
        data_type: dt.as_str().to_string(),
        table: dt.table().to_string(),
        stream: target.stream.clone(),
        first_seq: stats.first_seq,
        last_seq: stats.last_seq,
        context_messages: side.context_messages,
        counts,
        dead_lettered_rows: side.dead_lettered_rows,
        refused_rows: side.refused_rows,
        first_missing_dead_letters: side
            .missing_dead_letter_reasons
            .iter()
            .map(|(seq, reason)| MissingDeadLetter {
                seq: *seq,
                reason: reason.clone(),
            })
            .collect(),
        cells: side.markets.values().map(|a| a.cells.len() as u64).sum(),
        cells_differing: first.differing.len() as u64,
        markets,
        elapsed_s: started.elapsed().as_secs_f64(),
        read_messages_per_s: per_s(side.messages + side.context_messages, read_secs),
    })
}

/// Names the keys of the listed missing rows: each is fetched from the stream by sequence and
/// decoded again (a handful of direct reads, only when something is missing).
async fn fill_missing_keys(
    js: &jetstream::Context,
    stream_name: &str,
    dt: DataType,
    diffs: &mut BTreeMap<String, compare::MarketDiff>,
    now_ms: i64,
) {
    if diffs.values().all(|d| d.first_missing.is_empty()) {
        return;
    }
    let Ok(stream) = js.get_stream(stream_name).await else {
        return;
    };
    let mut buf = String::new();
    for d in diffs.values_mut() {
        for m in &mut d.first_missing {
            if let Ok(raw) = stream.get_raw_message(m.seq).await
                && let Ok(r) = crate::decode::decode(dt, raw.subject.as_str(), &raw.payload, now_ms)
            {
                key::write_key(&r, &mut buf);
                m.key = buf.clone();
            }
        }
    }
}
