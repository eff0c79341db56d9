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
}

impl TypeStats {
    /// Counts one rejection of `kind`.
    pub fn reject(&self, kind: &str) {
        if let Ok(mut m) = self.rejects.lock() {
            *m.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// Records the latest error.
    pub fn error(&self, text: impl Into<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(text.into());
        }
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

static FALLBACK: std::sync::LazyLock<TypeStats> = std::sync::LazyLock::new(TypeStats::default);

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
