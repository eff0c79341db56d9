//! Counters the pipeline keeps per data type, read by the ops surface and the CLI.
//!
//! Plain atomics: stages bump them, readers snapshot them. Metric names and HTTP shapes live in
//! `ops`; this module knows nothing of HTTP.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};

use crate::model::DataType;

/// Counters of one data type.
#[derive(Debug, Default)]
pub struct TypeStats {
    /// Messages received from NATS (redeliveries of held messages excluded).
    pub received: AtomicU64,
    /// Rows inserted (acknowledged by ClickHouse).
    pub rows_inserted: AtomicU64,
    /// Dead letters inserted.
    pub dead_letters: AtomicU64,
    /// INSERT statements that succeeded.
    pub batches: AtomicU64,
    /// Failed insert attempts (each retry counts).
    pub insert_errors: AtomicU64,
    /// Retries of inserts and acks.
    pub retries: AtomicU64,
    /// Messages buffered or in flight (not yet acked).
    pub queued: AtomicU64,
    /// Estimated bytes buffered or in flight.
    pub queued_bytes: AtomicU64,
    /// Redelivered messages skipped because they were already held or stored.
    pub redeliveries_skipped: AtomicU64,
    /// Times the reader re-synchronised from the ack floor (start, lost deliveries, errors).
    pub resyncs: AtomicU64,
    /// Splits of batches into more INSERTs (by partition, in halves, bad-row isolation).
    pub insert_splits: AtomicU64,
    /// Unix ms of the last message received.
    pub last_message_ms: AtomicI64,
    /// Unix ms of the last successful insert.
    pub last_insert_ms: AtomicI64,
    /// Unix ms since when inserts have been failing (0 = not failing).
    pub failing_since_ms: AtomicI64,
    /// Messages pending on the consumer (server's count at the last check).
    pub consumer_pending: AtomicU64,
    /// Whether this instance holds the consumer (false: standby or not started).
    pub bound: AtomicBool,
    /// Why the type is not consuming right now while it recovers by itself (lease lost or
    /// being re-acquired, NATS unreachable); `None` while it runs. Shown by `/ready`.
    pub waiting: Mutex<Option<String>>,
    /// Why the type stopped for good and will not recover without a restart (a stage task
    /// died, the durable cannot be used); `None` while it can make progress. `/health` turns
    /// non-200 while any type is stuck, so an orchestrator restarts the process.
    pub stuck: Mutex<Option<String>>,
    /// Sum of publish→insert latency over inserted batches' first messages, ms.
    pub latency_ms_sum: AtomicU64,
    /// Last batch's publish→insert latency (oldest message), ms.
    pub last_latency_ms: AtomicU64,
    /// Quality events stored with this type's batches (`data_quality_events`).
    pub quality_events: AtomicU64,
    /// Dead letters by reason kind.
    pub rejects: Mutex<BTreeMap<String, u64>>,
    /// Last error text (insert, ack or NATS).
    pub last_error: Mutex<Option<String>>,
    /// Unix ms of the last error recorded with [`TypeStats::error`] (0 = none yet).
    pub last_error_ms: AtomicI64,
    /// Insert duration, batch size and publish→insert latency distributions.
    pub histograms: TypeHistograms,
}

impl TypeStats {
    /// Counts one rejection of `kind`.
    pub fn reject(&self, kind: &str) {
        if let Ok(mut m) = self.rejects.lock() {
            *m.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// Records the latest error and its time.
    pub fn error(&self, text: impl Into<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(text.into());
        }
        self.last_error_ms.store(now_ms(), Relaxed);
    }

    /// Records one successful insert: how long the INSERT took, how many rows it stored and,
    /// when known, the publish→insert latency of the batch's oldest message in ms.
    pub fn observe_insert(
        &self,
        duration: std::time::Duration,
        rows: u64,
        publish_to_insert_ms: Option<u64>,
    ) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.histograms.insert_duration_us.observe(us);
        self.histograms.batch_rows.observe(rows);
        if let Some(ms) = publish_to_insert_ms {
            self.histograms.publish_to_insert_ms.observe(ms);
        }
    }

    /// Sets (or clears, with `None`) why the type is waiting to recover.
    pub fn set_waiting(&self, why: Option<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = why;
        }
    }

    /// Marks the type stuck: it cannot make progress without a restart.
    pub fn set_stuck(&self, why: String) {
        if let Ok(mut s) = self.stuck.lock() {
            *s = Some(why);
        }
    }

    /// Why the type waits, if it does.
    pub fn waiting_reason(&self) -> Option<String> {
        self.waiting.lock().ok().and_then(|w| w.clone())
    }

    /// Why the type is stuck, if it is.
    pub fn stuck_reason(&self) -> Option<String> {
        self.stuck.lock().ok().and_then(|s| s.clone())
    }

    /// Subtracts from a counter, never below zero.
    pub fn sub(c: &AtomicU64, n: u64) {
        let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
    }

    /// Adds to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Relaxed);
    }
}

/// Counters of every data type.
#[derive(Debug)]
pub struct Stats {
    types: BTreeMap<DataType, TypeStats>,
    /// Whether the NATS connection is up.
    pub nats_connected: AtomicBool,
    /// Whether ClickHouse answered the last ping.
    pub clickhouse_up: AtomicBool,
    /// Process start, unix ms.
    pub started_ms: i64,
    /// The data-quality detectors; [`crate::quality::Quality::snapshot`] gives their per-market
    /// counters.
    pub quality: std::sync::Arc<crate::quality::Quality>,
}

impl Stats {
    /// Zeroed counters for all eight types.
    pub fn new(now_ms: i64) -> Self {
        Stats {
            types: DataType::ALL
                .into_iter()
                .map(|t| (t, TypeStats::default()))
                .collect(),
            nats_connected: AtomicBool::new(false),
            clickhouse_up: AtomicBool::new(false),
            started_ms: now_ms,
            quality: std::sync::Arc::new(crate::quality::Quality::default()),
        }
    }

    /// The counters of one type.
    pub fn of(&self, t: DataType) -> &TypeStats {
        // Every type is inserted in `new`; the fallback only satisfies the type checker.
        self.types.get(&t).unwrap_or_else(|| &FALLBACK)
    }

    /// All types with their counters.
    pub fn iter(&self) -> impl Iterator<Item = (DataType, &TypeStats)> {
        self.types.iter().map(|(t, s)| (*t, s))
    }
}

/// Upper bounds of the insert-duration buckets, microseconds (1 ms … 60 s).
pub const INSERT_DURATION_US_BOUNDS: &[u64] = &[
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Upper bounds of the batch-size buckets, rows.
pub const BATCH_ROWS_BOUNDS: &[u64] = &[
    1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// Upper bounds of the publish→insert latency buckets, milliseconds (10 ms … 15 min).
pub const PUBLISH_TO_INSERT_MS_BOUNDS: &[u64] = &[
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
];

/// A lock-free histogram over fixed buckets of integer values (Prometheus semantics: a value
/// lands in the first bucket whose upper bound is `>=` it, or in the overflow bucket).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Per-bucket (not cumulative) counts; one more than `bounds` for the overflow bucket.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A copy of a [`Histogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the finite buckets.
    pub bounds: &'static [u64],
    /// Cumulative counts: `cumulative[i]` = observations `<= bounds[i]`; the last entry (one
    /// past `bounds`) is the total count.
    pub cumulative: Vec<u64>,
    /// Sum of all observed values.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl Histogram {
    /// An empty histogram with these (ascending) bucket upper bounds.
    pub fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(value, Relaxed);
    }

    /// The current counts, cumulative as Prometheus wants them. The total is derived from the
    /// buckets, so `+Inf` and `_count` always agree even while others observe.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0u64;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc = acc.saturating_add(c.load(Relaxed));
                acc
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.load(Relaxed),
        }
    }
}

/// The distributions kept per data type, recorded by [`TypeStats::observe_insert`].
#[derive(Debug)]
pub struct TypeHistograms {
    /// Duration of successful INSERTs, microseconds.
    pub insert_duration_us: Histogram,
    /// Rows per successful INSERT.
    pub batch_rows: Histogram,
    /// Publish time of the batch's oldest message → insert done, milliseconds.
    pub publish_to_insert_ms: Histogram,
}

impl Default for TypeHistograms {
    fn default() -> Self {
        TypeHistograms {
            insert_duration_us: Histogram::new(INSERT_DURATION_US_BOUNDS),
            batch_rows: Histogram::new(BATCH_ROWS_BOUNDS),
            publish_to_insert_ms: Histogram::new(PUBLISH_TO_INSERT_MS_BOUNDS),
        }
    }
}

static FALLBACK: std::sync::LazyLock<TypeStats> = std::sync::LazyLock::new(TypeStats::default);

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = Histogram::new(&[1, 10, 100]);
        for v in [0, 1, 2, 10, 11, 100, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 4, 6, 7]);
        assert_eq!(s.count(), 7);
        assert_eq!(s.sum, 1124);
    }

    #[test]
    fn observe_insert_fills_the_three_histograms() {
        let t = TypeStats::default();
        t.observe_insert(std::time::Duration::from_millis(3), 500, Some(1_200));
        t.observe_insert(std::time::Duration::from_millis(3), 500, None);
        assert_eq!(t.histograms.insert_duration_us.snapshot().count(), 2);
        assert_eq!(t.histograms.batch_rows.snapshot().sum, 1000);
        assert_eq!(t.histograms.publish_to_insert_ms.snapshot().count(), 1);
    }

    #[test]
    fn error_records_its_time() {
        let t = TypeStats::default();
        assert_eq!(t.last_error_ms.load(Relaxed), 0);
        t.error("boom");
        assert!(t.last_error_ms.load(Relaxed) > 0);
    }
}
