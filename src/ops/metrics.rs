//! The Prometheus exposition: every metric family defined once in [`Metric`], rendered from a
//! [`Stats`] snapshot in the text format (0.0.4) with `# HELP` and `# TYPE` lines.
//!
//! Three scopes of families ([`Scope`]): the pipeline's (rendered when the state has configured
//! types), the process's (always) and the hot → cold migrator's (rendered when the state holds
//! [`MigrationStats`], i.e. when the migration loop runs in this process). A state with no types
//! and migration stats is the standalone `migrate` loop's: it exports no pipeline families,
//! whose zeros (and `ready 0`) would fire the service's alerts.
//!
//! Names and meanings used by the Python service's alerts and Grafana dashboards are kept
//! (`Origin::PythonService`); ours are marked `Origin::New`. Every series of one family carries the same
//! label names — the Python service mixed label sets under one name, which Prometheus accepts but
//! aggregations silently miscount.

use std::fmt::Write as _;

use crate::migrate::{MigTable, MigrationStats};
use crate::model::DataType;
use crate::pipeline::stats::{HistogramSnapshot, Stats};

use super::process::ProcessSample;

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Monotonic counter (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Buckets, sum and count.
    Histogram,
}

impl Kind {
    /// The word used on the `# TYPE` line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// Where a family's name and meaning come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Same name and meaning as the Python service's (its alerts and dashboards keep working).
    PythonService,
    /// New in this service.
    New,
}

/// What a family describes, which decides when it is rendered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// The ingest pipeline: rendered when the state has configured types.
    Pipeline,
    /// The process itself (CPU, memory, uptime): always rendered.
    Process,
    /// The hot → cold migrator: rendered when the state holds migration stats.
    Migration,
}

/// The definition of one family: the only place its name is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricDef {
    /// Full metric name.
    pub name: &'static str,
    /// Prometheus type.
    pub kind: Kind,
    /// Label names, in order, of every series (histograms add `le` to buckets).
    pub labels: &'static [&'static str],
    /// The `# HELP` text.
    pub help: &'static str,
    /// Python-service-compatible or new.
    pub origin: Origin,
    /// When the family is rendered.
    pub scope: Scope,
}

/// Every metric family the service exposes, in exposition order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Rows inserted per type.
    MessagesProcessed,
    /// Messages received per type.
    MessagesReceived,
    /// Dead letters per type (the Python service's "failed").
    MessagesFailed,
    /// Rejections per type and reason kind.
    ValidationErrors,
    /// failed / received × 100.
    ErrorRatePercent,
    /// Messages buffered or in flight per type.
    BatchQueueSize,
    /// Bytes buffered or in flight per type.
    BatchQueueBytes,
    /// Failed insert attempts per type.
    ClickhouseInsertErrors,
    /// Successful INSERTs per type.
    BatchInserts,
    /// Rows in inserted batches (all types).
    BatchSizeTotal,
    /// Average rows per inserted batch (all types).
    BatchSizeAvg,
    /// Unix time of the last message received.
    LastMessageTimestamp,
    /// Unix time of the last error recorded.
    LastErrorTimestamp,
    /// Process CPU.
    ProcessCpuPercent,
    /// Process resident memory.
    ProcessRssBytes,
    /// Messages pending on the durable consumer.
    ConsumerPending,
    /// Insert and ack retries.
    Retries,
    /// Dead letters per type.
    DeadLetters,
    /// Redeliveries skipped.
    RedeliveriesSkipped,
    /// Reader resynchronisations.
    Resyncs,
    /// Splits of batches into more INSERTs.
    InsertSplits,
    /// NATS connection state.
    NatsConnected,
    /// ClickHouse state.
    ClickhouseUp,
    /// Whether the consumer is bound.
    ConsumerBound,
    /// The `/ready` verdict.
    Ready,
    /// Unix time of the last successful insert per type.
    LastInsertTimestamp,
    /// Seconds since the process started.
    UptimeSeconds,
    /// INSERT duration histogram.
    InsertDuration,
    /// Rows per INSERT histogram.
    BatchRows,
    /// Publish → insert latency histogram.
    PublishToInsert,
    /// Per table: minutes between `now − window` and the end of cold's verified prefix.
    ColdReplicationLag,
    /// Rows copied into cold.
    ColdRowsMigrated,
    /// Chunks whose hot and cold fingerprints were compared equal.
    ColdChunksVerified,
    /// Chunks repaired (cold held part of them).
    ColdChunksRepaired,
    /// Chunks still different after repair attempts.
    ColdChunksMismatched,
    /// Unix time of the end of the last fully verified migration cycle.
    ColdLastSuccess,
    /// Late rows found in hot behind the watermark and copied into cold, per table.
    ColdLateRowsRepaired,
    /// Sequence gaps per market (data quality).
    QualityGaps,
    /// Ids missing in those gaps, per market.
    QualityMissingIds,
    /// Repeated sequential ids per market.
    QualityDuplicates,
    /// Crossed order books per market.
    QualityCrossedBooks,
    /// Seconds a market has been silent while a stale episode is open (0 otherwise).
    QualityStaleSeconds,
    /// Quality events of every kind, per type and kind.
    QualityEvents,
    /// Markets whose quality state was evicted (idle, or past the tracker's cap).
    QualityMarketsEvicted,
    /// Markets not exposed as per-market series (past [`MAX_MARKET_SERIES`]).
    QualitySeriesFolded,
}

/// Per-market series exposed per type and family. A flood of made-up symbols must not swamp
/// Prometheus: past this many markets, the rest are left out of the per-market families
/// (the per-type totals still count them) and `marketprism_storage_quality_series_folded`
/// says how many.
pub const MAX_MARKET_SERIES: usize = 1000;

const DT: &[&str] = &["data_type"];
const DT_REASON: &[&str] = &["data_type", "reason"];
const NONE: &[&str] = &[];
const TABLE: &[&str] = &["table"];
/// Per market. `market_type` is in the set because BTC-USDT spot and perpetual are different
/// sequences; `sum by (data_type, exchange, symbol)` gives the issue's coarser view.
const MARKET: &[&str] = &["data_type", "exchange", "market_type", "symbol"];
const DT_KIND: &[&str] = &["data_type", "kind"];

impl Metric {
    /// All families, in the order they are rendered.
    pub const ALL: [Metric; 45] = [
        Metric::MessagesProcessed,
        Metric::MessagesReceived,
        Metric::MessagesFailed,
        Metric::ValidationErrors,
        Metric::ErrorRatePercent,
        Metric::BatchQueueSize,
        Metric::BatchQueueBytes,
        Metric::ClickhouseInsertErrors,
        Metric::BatchInserts,
        Metric::BatchSizeTotal,
        Metric::BatchSizeAvg,
        Metric::LastMessageTimestamp,
        Metric::LastErrorTimestamp,
        Metric::ProcessCpuPercent,
        Metric::ProcessRssBytes,
        Metric::ConsumerPending,
        Metric::Retries,
        Metric::DeadLetters,
        Metric::RedeliveriesSkipped,
        Metric::Resyncs,
        Metric::InsertSplits,
        Metric::NatsConnected,
        Metric::ClickhouseUp,
        Metric::ConsumerBound,
        Metric::Ready,
        Metric::LastInsertTimestamp,
        Metric::UptimeSeconds,
        Metric::InsertDuration,
        Metric::BatchRows,
        Metric::PublishToInsert,
        Metric::ColdReplicationLag,
        Metric::ColdRowsMigrated,
        Metric::ColdChunksVerified,
        Metric::ColdChunksRepaired,
        Metric::ColdChunksMismatched,
        Metric::ColdLastSuccess,
        Metric::ColdLateRowsRepaired,
        Metric::QualityGaps,
        Metric::QualityMissingIds,
        Metric::QualityDuplicates,
        Metric::QualityCrossedBooks,
        Metric::QualityStaleSeconds,
        Metric::QualityEvents,
        Metric::QualityMarketsEvicted,
        Metric::QualitySeriesFolded,
    ];

    /// When the family is rendered.
    pub const fn scope(self) -> Scope {
        match self {
            Metric::ProcessCpuPercent | Metric::ProcessRssBytes | Metric::UptimeSeconds => {
                Scope::Process
            }
            Metric::ColdReplicationLag
            | Metric::ColdRowsMigrated
            | Metric::ColdChunksVerified
            | Metric::ColdChunksRepaired
            | Metric::ColdChunksMismatched
            | Metric::ColdLastSuccess
            | Metric::ColdLateRowsRepaired => Scope::Migration,
            _ => Scope::Pipeline,
        }
    }

    /// The family's definition.
    pub const fn def(self) -> MetricDef {
        use Kind::{Counter, Gauge, Histogram};
        use Origin::{New, PythonService};
        let (name, kind, labels, help, origin) = match self {
            Metric::MessagesProcessed => (
                "marketprism_storage_messages_processed_total",
                Counter,
                DT,
                "Rows inserted into ClickHouse (acknowledged by the server), per data type.",
                PythonService,
            ),
            Metric::MessagesReceived => (
                "marketprism_storage_messages_received_total",
                Counter,
                DT,
                "Messages received from NATS (redeliveries of held messages excluded).",
                PythonService,
            ),
            Metric::MessagesFailed => (
                "marketprism_storage_messages_failed_total",
                Counter,
                DT,
                "Messages that could not be stored as rows and went to dead_letters.",
                PythonService,
            ),
            Metric::ValidationErrors => (
                "marketprism_storage_validation_errors_total",
                Counter,
                DT_REASON,
                "Messages rejected, by data type and reason kind.",
                PythonService,
            ),
            Metric::ErrorRatePercent => (
                "marketprism_storage_error_rate_percent",
                Gauge,
                NONE,
                "Failed (dead-lettered) messages as a percentage of received messages, since start.",
                PythonService,
            ),
            Metric::BatchQueueSize => (
                "marketprism_storage_batch_queue_size",
                Gauge,
                DT,
                "Messages buffered or being inserted, not yet acknowledged.",
                PythonService,
            ),
            Metric::BatchQueueBytes => (
                "marketprism_storage_batch_queue_bytes",
                Gauge,
                DT,
                "Estimated bytes buffered or being inserted, not yet acknowledged.",
                PythonService,
            ),
            Metric::ClickhouseInsertErrors => (
                "marketprism_storage_clickhouse_insert_errors_total",
                Counter,
                DT,
                "Failed INSERT attempts (each retry counts).",
                PythonService,
            ),
            Metric::BatchInserts => (
                "marketprism_storage_batch_inserts_total",
                Counter,
                DT,
                "Successful INSERT statements.",
                PythonService,
            ),
            Metric::BatchSizeTotal => (
                "marketprism_storage_batch_size_total",
                Counter,
                NONE,
                "Rows in successfully inserted batches, all data types.",
                PythonService,
            ),
            Metric::BatchSizeAvg => (
                "marketprism_storage_batch_size_avg",
                Gauge,
                NONE,
                "Average rows per successful INSERT since start, all data types.",
                PythonService,
            ),
            Metric::LastMessageTimestamp => (
                "marketprism_storage_last_message_timestamp_seconds",
                Gauge,
                NONE,
                "Unix time of the last message received (0 = none yet).",
                PythonService,
            ),
            Metric::LastErrorTimestamp => (
                "marketprism_storage_last_error_timestamp_seconds",
                Gauge,
                NONE,
                "Unix time of the last error recorded (0 = none yet).",
                PythonService,
            ),
            Metric::ProcessCpuPercent => (
                "marketprism_storage_process_cpu_percent",
                Gauge,
                NONE,
                "Process CPU time over wall time since the previous sample, percent of one core.",
                PythonService,
            ),
            Metric::ProcessRssBytes => (
                "marketprism_storage_process_rss_bytes",
                Gauge,
                NONE,
                "Current resident set size of the process (VmRSS), bytes.",
                PythonService,
            ),
            Metric::ConsumerPending => (
                "marketprism_storage_consumer_pending_messages",
                Gauge,
                DT,
                "Messages pending on the durable consumer (server's count at the last check).",
                New,
            ),
            Metric::Retries => (
                "marketprism_storage_retries_total",
                Counter,
                DT,
                "Retries of inserts and acks.",
                New,
            ),
            Metric::DeadLetters => (
                "marketprism_storage_dead_letters_total",
                Counter,
                DT,
                "Dead letters inserted into the dead_letters table.",
                New,
            ),
            Metric::RedeliveriesSkipped => (
                "marketprism_storage_redeliveries_skipped_total",
                Counter,
                DT,
                "Redelivered messages skipped because they were already held or stored.",
                New,
            ),
            Metric::Resyncs => (
                "marketprism_storage_resyncs_total",
                Counter,
                DT,
                "Times the reader re-synchronised from the consumer's ack floor.",
                New,
            ),
            Metric::InsertSplits => (
                "marketprism_storage_insert_splits_total",
                Counter,
                DT,
                "Splits of a batch into more INSERTs (by partition, in halves, bad-row isolation).",
                New,
            ),
            Metric::NatsConnected => (
                "marketprism_storage_nats_connected",
                Gauge,
                NONE,
                "1 while the NATS connection is up.",
                New,
            ),
            Metric::ClickhouseUp => (
                "marketprism_storage_clickhouse_up",
                Gauge,
                NONE,
                "1 while ClickHouse answers.",
                New,
            ),
            Metric::ConsumerBound => (
                "marketprism_storage_consumer_bound",
                Gauge,
                DT,
                "1 while this instance holds the type's durable consumer.",
                New,
            ),
            Metric::Ready => (
                "marketprism_storage_ready",
                Gauge,
                NONE,
                "1 when /ready answers 200.",
                New,
            ),
            Metric::LastInsertTimestamp => (
                "marketprism_storage_last_insert_timestamp_seconds",
                Gauge,
                DT,
                "Unix time of the last successful insert (0 = none yet).",
                New,
            ),
            Metric::UptimeSeconds => (
                "marketprism_storage_uptime_seconds",
                Gauge,
                NONE,
                "Seconds since the service started.",
                New,
            ),
            Metric::InsertDuration => (
                "marketprism_storage_insert_duration_seconds",
                Histogram,
                DT,
                "Time from the start of a batch's INSERT to its success, retries included.",
                New,
            ),
            Metric::BatchRows => (
                "marketprism_storage_batch_rows",
                Histogram,
                DT,
                "Rows per successful INSERT.",
                New,
            ),
            Metric::PublishToInsert => (
                "marketprism_storage_publish_to_insert_seconds",
                Histogram,
                DT,
                "Publish time of a batch's oldest message to the end of its INSERT.",
                New,
            ),
            Metric::ColdReplicationLag => (
                "marketprism_cold_replication_lag_minutes",
                Gauge,
                TABLE,
                "Minutes between now minus the migration window and the end of the verified prefix of cold, at the end of the last cycle (0 = caught up).",
                PythonService,
            ),
            Metric::ColdRowsMigrated => (
                "marketprism_cold_rows_migrated_total",
                Counter,
                NONE,
                "Rows copied from hot into cold (repairs included).",
                New,
            ),
            Metric::ColdChunksVerified => (
                "marketprism_cold_chunks_verified_total",
                Counter,
                NONE,
                "Migration chunks whose hot and cold fingerprints were compared equal.",
                New,
            ),
            Metric::ColdChunksRepaired => (
                "marketprism_cold_chunks_repaired_total",
                Counter,
                NONE,
                "Migration chunks cold held only part of, completed by copying the missing rows.",
                New,
            ),
            Metric::ColdChunksMismatched => (
                "marketprism_cold_chunks_mismatched_total",
                Counter,
                NONE,
                "Migration chunks still different between hot and cold after repair attempts.",
                New,
            ),
            Metric::ColdLastSuccess => (
                "marketprism_cold_last_success_timestamp_seconds",
                Gauge,
                NONE,
                "Unix time of the end of the last migration cycle in which every chunk verified (0 = none yet).",
                New,
            ),
            Metric::ColdLateRowsRepaired => (
                "marketprism_cold_late_rows_repaired_total",
                Counter,
                TABLE,
                "Rows that landed in hot behind the migration watermark (late or back-filled) and were copied into cold before the hot TTL could delete them.",
                New,
            ),
            Metric::QualityGaps => (
                "marketprism_storage_gaps_total",
                Counter,
                MARKET,
                "Sequence gaps (trade ids, order book update ids) detected per market; see docs/quality.md.",
                New,
            ),
            Metric::QualityMissingIds => (
                "marketprism_storage_missing_ids_total",
                Counter,
                MARKET,
                "Sequential ids missing in the detected gaps, per market.",
                New,
            ),
            Metric::QualityDuplicates => (
                "marketprism_storage_duplicate_ids_total",
                Counter,
                MARKET,
                "Sequential ids that arrived again, per market.",
                New,
            ),
            Metric::QualityCrossedBooks => (
                "marketprism_storage_crossed_books_total",
                Counter,
                MARKET,
                "Order books whose best bid was at or above the best ask, per market.",
                New,
            ),
            Metric::QualityStaleSeconds => (
                "marketprism_storage_stale_seconds",
                Gauge,
                MARKET,
                "Seconds a market has been silent while its stale episode is open; 0 when data flows.",
                New,
            ),
            Metric::QualityMarketsEvicted => (
                "marketprism_storage_quality_markets_evicted_total",
                Counter,
                DT,
                "Markets whose data-quality state was evicted (silent for 24 h, or past 10,000 markets per type); their counts stay in the totals.",
                New,
            ),
            Metric::QualitySeriesFolded => (
                "marketprism_storage_quality_series_folded",
                Gauge,
                DT,
                "Markets left out of the per-market quality series (past 1,000 per type); the per-type totals include them.",
                New,
            ),
            Metric::QualityEvents => (
                "marketprism_storage_quality_events_total",
                Counter,
                DT_KIND,
                "Data-quality events detected, per type and kind (stored in data_quality_events).",
                New,
            ),
        };
        MetricDef {
            name,
            kind,
            labels,
            help,
            origin,
            scope: self.scope(),
        }
    }
}

/// Everything one scrape needs besides the counters.
#[derive(Debug, Clone)]
pub struct ScrapeInput<'a> {
    /// The counters.
    pub stats: &'a Stats,
    /// The configured data types (one series per type); none: no pipeline families.
    pub types: &'a [DataType],
    /// The migrator's counters, when the migration loop runs in this process.
    pub migration: Option<&'a MigrationStats>,
    /// Process CPU and memory, if readable.
    pub process: Option<ProcessSample>,
    /// The `/ready` verdict.
    pub ready: bool,
    /// Now, unix ms.
    pub now_ms: i64,
}

/// Renders every family in [`Metric::ALL`] order, leaving out the scopes that do not apply
/// (see [`Scope`]).
pub fn render(input: &ScrapeInput<'_>) -> String {
    let mut out = Exposition::default();
    for m in Metric::ALL {
        let shown = match m.scope() {
            Scope::Pipeline => !input.types.is_empty(),
            Scope::Process => true,
            Scope::Migration => input.migration.is_some(),
        };
        if shown {
            out.header(m);
            samples(m, input, &mut out);
        }
    }
    out.text
}

fn ms_to_s(ms: i64) -> f64 {
    if ms <= 0 { 0.0 } else { ms as f64 / 1000.0 }
}

/// The samples of one family; the exhaustive match is what ties a name to its value.
fn samples(m: Metric, i: &ScrapeInput<'_>, out: &mut Exposition) {
    let per_type = |out: &mut Exposition, f: &dyn Fn(&crate::pipeline::TypeStats) -> f64| {
        for t in i.types {
            out.sample(m, &[t.as_str()], f(i.stats.of(*t)));
        }
    };
    let sum = |f: &dyn Fn(&crate::pipeline::TypeStats) -> u64| -> u64 {
        i.types.iter().map(|t| f(i.stats.of(*t))).sum()
    };
    match m {
        Metric::MessagesProcessed => per_type(out, &|s| s.counters().rows_inserted as f64),
        Metric::MessagesReceived => per_type(out, &|s| s.counters().received as f64),
        Metric::MessagesFailed | Metric::DeadLetters => {
            per_type(out, &|s| s.counters().dead_letters as f64)
        }
        Metric::ValidationErrors => {
            for t in i.types {
                for (reason, n) in i.stats.of(*t).rejects() {
                    out.sample(m, &[t.as_str(), &reason], n as f64);
                }
            }
        }
        Metric::ErrorRatePercent => {
            let received = sum(&|s| s.counters().received);
            let failed = sum(&|s| s.counters().dead_letters);
            let rate = if received == 0 {
                0.0
            } else {
                failed as f64 * 100.0 / received as f64
            };
            out.sample(m, &[], rate);
        }
        Metric::BatchQueueSize => per_type(out, &|s| s.counters().queued as f64),
        Metric::BatchQueueBytes => per_type(out, &|s| s.counters().queued_bytes as f64),
        Metric::ClickhouseInsertErrors => per_type(out, &|s| s.counters().insert_errors as f64),
        Metric::BatchInserts => per_type(out, &|s| s.counters().batches as f64),
        Metric::BatchSizeTotal => out.sample(m, &[], sum(&|s| s.counters().rows_inserted) as f64),
        Metric::BatchSizeAvg => {
            let batches = sum(&|s| s.counters().batches);
            let rows = sum(&|s| s.counters().rows_inserted);
            let avg = if batches == 0 {
                0.0
            } else {
                rows as f64 / batches as f64
            };
            out.sample(m, &[], avg);
        }
        Metric::LastMessageTimestamp => {
            let last = i
                .types
                .iter()
                .map(|t| i.stats.of(*t).counters().last_message_ms);
            out.sample(m, &[], ms_to_s(last.max().unwrap_or(0)));
        }
        Metric::LastErrorTimestamp => {
            let last = i
                .types
                .iter()
                .map(|t| i.stats.of(*t).counters().last_error_ms);
            out.sample(m, &[], ms_to_s(last.max().unwrap_or(0)));
        }
        Metric::ProcessCpuPercent => {
            if let Some(p) = i.process {
                out.sample(m, &[], p.cpu_percent);
            }
        }
        Metric::ProcessRssBytes => {
            if let Some(p) = i.process {
                out.sample(m, &[], p.rss_bytes as f64);
            }
        }
        Metric::ConsumerPending => per_type(out, &|s| s.counters().consumer_pending as f64),
        Metric::Retries => per_type(out, &|s| s.counters().retries as f64),
        Metric::RedeliveriesSkipped => per_type(out, &|s| s.counters().redeliveries_skipped as f64),
        Metric::Resyncs => per_type(out, &|s| s.counters().resyncs as f64),
        Metric::InsertSplits => per_type(out, &|s| s.counters().insert_splits as f64),
        Metric::NatsConnected => out.sample(m, &[], flag(i.stats.nats_connected())),
        Metric::ClickhouseUp => out.sample(m, &[], flag(i.stats.clickhouse_up())),
        Metric::ConsumerBound => per_type(out, &|s| flag(s.is_bound())),
        Metric::Ready => out.sample(m, &[], flag(i.ready)),
        Metric::LastInsertTimestamp => per_type(out, &|s| ms_to_s(s.counters().last_insert_ms)),
        Metric::UptimeSeconds => out.sample(m, &[], ms_to_s(i.now_ms - i.stats.started_ms)),
        Metric::InsertDuration => {
            for t in i.types {
                let h = i.stats.of(*t).histograms().insert_duration_us.snapshot();
                out.histogram(m, t.as_str(), &h, 1e6);
            }
        }
        Metric::BatchRows => {
            for t in i.types {
                let h = i.stats.of(*t).histograms().batch_rows.snapshot();
                out.histogram(m, t.as_str(), &h, 1.0);
            }
        }
        Metric::PublishToInsert => {
            for t in i.types {
                let h = i.stats.of(*t).histograms().publish_to_insert_ms.snapshot();
                out.histogram(m, t.as_str(), &h, 1e3);
            }
        }
        Metric::ColdReplicationLag
        | Metric::ColdRowsMigrated
        | Metric::ColdChunksVerified
        | Metric::ColdChunksRepaired
        | Metric::ColdChunksMismatched
        | Metric::ColdLastSuccess
        | Metric::ColdLateRowsRepaired => {
            if let Some(ms) = i.migration {
                migration_samples(m, ms, out);
            }
        }
        Metric::QualityGaps
        | Metric::QualityMissingIds
        | Metric::QualityDuplicates
        | Metric::QualityCrossedBooks
        | Metric::QualityStaleSeconds
        | Metric::QualityEvents
        | Metric::QualityMarketsEvicted
        | Metric::QualitySeriesFolded => quality_samples(m, i, out),
    }
}

/// The data-quality families, from one snapshot of the trackers.
fn quality_samples(m: Metric, i: &ScrapeInput<'_>, out: &mut Exposition) {
    use crate::quality::EventKind;
    let snap = i.stats.quality.snapshot(i.now_ms);
    if m == Metric::QualityEvents {
        for t in snap.types.iter().filter(|t| i.types.contains(&t.data_type)) {
            let totals = t.totals();
            for k in EventKind::ALL {
                let n = totals.of(k);
                if n > 0 {
                    out.sample(m, &[t.data_type.as_str(), k.as_str()], n as f64);
                }
            }
        }
        return;
    }
    let types = || snap.types.iter().filter(|t| i.types.contains(&t.data_type));
    if m == Metric::QualityMarketsEvicted {
        for t in types() {
            out.sample(m, &[t.data_type.as_str()], t.evicted as f64);
        }
        return;
    }
    if m == Metric::QualitySeriesFolded {
        for t in types() {
            let folded = t.keys.len().saturating_sub(MAX_MARKET_SERIES);
            out.sample(m, &[t.data_type.as_str()], folded as f64);
        }
        return;
    }
    let shown = types().flat_map(|t| {
        t.keys
            .iter()
            .take(MAX_MARKET_SERIES)
            .map(move |k| (t.data_type, k))
    });
    for (t, mk) in shown {
        let labels = [
            t.as_str(),
            mk.exchange.as_str(),
            mk.market_type.as_str(),
            mk.symbol.as_str(),
        ];
        let v = match m {
            Metric::QualityGaps => mk.counts.of(EventKind::Gap) as f64,
            Metric::QualityMissingIds => mk.counts.missing as f64,
            Metric::QualityDuplicates => mk.counts.of(EventKind::Duplicate) as f64,
            Metric::QualityCrossedBooks => mk.counts.of(EventKind::CrossedBook) as f64,
            Metric::QualityStaleSeconds if mk.stale_open => mk.silent_ms as f64 / 1000.0,
            _ => 0.0,
        };
        out.sample(m, &labels, v);
    }
}

/// The migrator's families. Lag series exist only for tables measured by a cycle: before the
/// first cycle there is no value to report, and a 0 would claim "caught up".
fn migration_samples(m: Metric, s: &MigrationStats, out: &mut Exposition) {
    let c = s.counters();
    match m {
        Metric::ColdReplicationLag => {
            for t in MigTable::ALL {
                let lag = s.lag_minutes(t);
                if lag >= 0 {
                    out.sample(m, &[t.name()], lag as f64);
                }
            }
        }
        Metric::ColdRowsMigrated => out.sample(m, &[], c.rows_migrated as f64),
        Metric::ColdChunksVerified => out.sample(m, &[], c.chunks_verified as f64),
        Metric::ColdChunksRepaired => out.sample(m, &[], c.chunks_repaired as f64),
        Metric::ColdChunksMismatched => out.sample(m, &[], c.chunks_mismatched as f64),
        Metric::ColdLastSuccess => out.sample(m, &[], ms_to_s(c.last_success_ms)),
        Metric::ColdLateRowsRepaired => {
            for t in MigTable::ALL {
                out.sample(m, &[t.name()], s.late_rows_repaired(t) as f64);
            }
        }
        _ => {}
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The text being built.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn header(&mut self, m: Metric) {
        let d = m.def();
        let _ = writeln!(self.text, "# HELP {} {}", d.name, d.help);
        let _ = writeln!(self.text, "# TYPE {} {}", d.name, d.kind.as_str());
    }

    /// One sample; `values` pair up with the family's label names.
    fn sample(&mut self, m: Metric, values: &[&str], value: f64) {
        let d = m.def();
        self.line(d.name, "", d.labels, values, None, value);
    }

    /// Buckets, sum and count of one series; stored units ÷ `per_unit` = exposed units (dividing
    /// by a power of ten keeps bounds like `0.025` exact, where multiplying by `1e-6` would not).
    fn histogram(&mut self, m: Metric, data_type: &str, h: &HistogramSnapshot, per_unit: f64) {
        let d = m.def();
        let values = [data_type];
        for (i, c) in h.cumulative.iter().enumerate() {
            let le = match h.bounds.get(i) {
                Some(b) => format_value(*b as f64 / per_unit),
                None => "+Inf".to_string(),
            };
            self.line(d.name, "_bucket", d.labels, &values, Some(&le), *c as f64);
        }
        self.line(
            d.name,
            "_sum",
            d.labels,
            &values,
            None,
            h.sum as f64 / per_unit,
        );
        self.line(d.name, "_count", d.labels, &values, None, h.count() as f64);
    }

    fn line(
        &mut self,
        name: &str,
        suffix: &str,
        labels: &[&str],
        values: &[&str],
        le: Option<&str>,
        value: f64,
    ) {
        let _ = write!(self.text, "{name}{suffix}");
        let mut pairs: Vec<(&str, &str)> =
            labels.iter().copied().zip(values.iter().copied()).collect();
        if let Some(le) = le {
            pairs.push(("le", le));
        }
        if !pairs.is_empty() {
            self.text.push('{');
            for (k, (name, v)) in pairs.iter().enumerate() {
                if k > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{name}=\"{}\"", escape_label(v));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", format_value(value));
    }
}

/// Integers without a decimal point (`12345`), others in the shortest exact form.
fn format_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn escape_label(v: &str) -> String {
    let mut s = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    /// A minimal parser of the text format: every sample's family has HELP and TYPE, no family
    /// is declared twice, and every series of a family has the same label names.
    pub(crate) fn check_exposition(text: &str) -> BTreeMap<String, Vec<(String, f64)>> {
        let mut help = BTreeSet::new();
        let mut types: BTreeMap<String, String> = BTreeMap::new();
        let mut label_sets: BTreeMap<String, BTreeSet<Vec<String>>> = BTreeMap::new();
        let mut samples: BTreeMap<String, Vec<(String, f64)>> = BTreeMap::new();
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# HELP ") {
                let name = rest.split(' ').next().unwrap().to_string();
                assert!(help.insert(name.clone()), "HELP twice for {name}");
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let mut it = rest.split(' ');
                let name = it.next().unwrap().to_string();
                let kind = it.next().unwrap().to_string();
                assert!(
                    ["counter", "gauge", "histogram"].contains(&kind.as_str()),
                    "{line}"
                );
                assert!(
                    types.insert(name.clone(), kind).is_none(),
                    "TYPE twice for {name}"
                );
            } else {
                assert!(
                    !line.starts_with('#') && !line.is_empty(),
                    "stray line {line:?}"
                );
                let (series, value) = line.rsplit_once(' ').unwrap();
                let value: f64 = value.parse().unwrap_or_else(|_| panic!("value in {line}"));
                let (name, labels) = match series.split_once('{') {
                    Some((n, l)) => (n, l.strip_suffix('}').unwrap()),
                    None => (series, ""),
                };
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| {
                        name.strip_suffix(s)
                            .filter(|f| types.get(*f).is_some_and(|k| k == "histogram"))
                    })
                    .unwrap_or(name);
                assert!(help.contains(family), "no HELP for {name}");
                assert!(types.contains_key(family), "no TYPE for {name}");
                let names: Vec<String> = if labels.is_empty() {
                    vec![]
                } else {
                    labels
                        .split(',')
                        .map(|kv| kv.split_once('=').unwrap().0.to_string())
                        .filter(|k| k != "le")
                        .collect()
                };
                label_sets
                    .entry(family.to_string())
                    .or_default()
                    .insert(names);
                samples
                    .entry(name.to_string())
                    .or_default()
                    .push((labels.to_string(), value));
            }
        }
        for (family, sets) in label_sets {
            assert_eq!(sets.len(), 1, "{family} has mixed label sets: {sets:?}");
        }
        samples
    }

    fn input<'a>(stats: &'a Stats, types: &'a [DataType]) -> ScrapeInput<'a> {
        ScrapeInput {
            stats,
            types,
            migration: None,
            process: Some(ProcessSample {
                cpu_percent: 12.5,
                rss_bytes: 1 << 20,
            }),
            ready: true,
            now_ms: stats.started_ms + 10_000,
        }
    }

    #[test]
    fn quality_counters_are_exported_per_market() {
        use crate::model::{Common, Record, TradeRow};
        let stats = Stats::new(1_000_000);
        let now = chrono::Utc::now().timestamp_millis();
        let trade = |id: u64| {
            Record::Trade(TradeRow {
                common: Common {
                    timestamp_ms: now - 1000 + id as i64,
                    exchange: "binance".into(),
                    market_type: "spot".into(),
                    symbol: "BTC-USDT".into(),
                    data_source: "marketprism".into(),
                },
                trade_id: id.to_string(),
                price: 6_700_000_000_000,
                quantity: 100_000,
                side: "buy".into(),
                is_maker: false,
                trade_time_ms: now - 1000 + id as i64,
            })
        };
        // Ids 1..=10 without 4..=6: one gap of three ids; 9 twice: one duplicate.
        let rows: Vec<Record> = [1, 2, 3, 7, 8, 9, 9, 10].into_iter().map(trade).collect();
        let events = stats.quality.observe(DataType::Trade, &rows, now, now);
        assert!(!events.is_empty());
        let mut i = input(&stats, &[DataType::Trade]);
        i.now_ms = now;
        let text = render(&i);
        let m = r#"{data_type="trade",exchange="binance",market_type="spot",symbol="BTC-USDT"}"#;
        for want in [
            format!("marketprism_storage_gaps_total{m} 1"),
            format!("marketprism_storage_missing_ids_total{m} 3"),
            format!("marketprism_storage_duplicate_ids_total{m} 1"),
            format!("marketprism_storage_crossed_books_total{m} 0"),
            format!("marketprism_storage_stale_seconds{m} 0"),
            r#"marketprism_storage_quality_events_total{data_type="trade",kind="gap"} 1"#
                .to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == want),
                "missing {want:?} in\n{text}"
            );
        }
        check_exposition(&text);
    }

    #[test]
    fn a_symbol_flood_is_capped_in_the_per_market_series() {
        use crate::model::{Common, Record, TradeRow};
        let stats = Stats::new(0);
        let now = 1_761_040_800_000;
        let n = MAX_MARKET_SERIES + 500;
        let rows: Vec<Record> = (0..n)
            .map(|k| {
                Record::Trade(TradeRow {
                    common: Common {
                        timestamp_ms: now,
                        exchange: "binance".into(),
                        market_type: "spot".into(),
                        symbol: format!("FAKE{k}-USDT"),
                        data_source: "marketprism".into(),
                    },
                    trade_id: "1".into(),
                    price: 1,
                    quantity: 1,
                    side: "buy".into(),
                    is_maker: false,
                    trade_time_ms: now,
                })
            })
            .collect();
        stats.quality.observe(DataType::Trade, &rows, now, now);
        let mut i = input(&stats, &[DataType::Trade]);
        i.now_ms = now;
        let text = render(&i);
        check_exposition(&text);
        assert_eq!(
            text.matches("marketprism_storage_gaps_total{").count(),
            MAX_MARKET_SERIES
        );
        assert!(
            text.lines()
                .any(|l| l == r#"marketprism_storage_quality_series_folded{data_type="trade"} 500"#),
            "{text}"
        );
        assert!(
            text.lines().any(|l| l
                == r#"marketprism_storage_quality_markets_evicted_total{data_type="trade"} 0"#)
        );
    }

    #[test]
    fn every_name_is_defined_once_and_python_service_names_are_kept() {
        let names: BTreeSet<_> = Metric::ALL.iter().map(|m| m.def().name).collect();
        assert_eq!(names.len(), Metric::ALL.len());
        for name in [
            "marketprism_storage_messages_processed_total",
            "marketprism_storage_messages_failed_total",
            "marketprism_storage_error_rate_percent",
            "marketprism_storage_batch_queue_size",
            "marketprism_storage_batch_size_total",
            "marketprism_storage_clickhouse_insert_errors_total",
            "marketprism_storage_last_message_timestamp_seconds",
            "marketprism_storage_process_cpu_percent",
            "marketprism_storage_process_rss_bytes",
        ] {
            let def = Metric::ALL.iter().map(|m| m.def()).find(|d| d.name == name);
            assert_eq!(def.map(|d| d.origin), Some(Origin::PythonService), "{name}");
        }
        for m in Metric::ALL {
            let d = m.def();
            assert_eq!(
                d.kind == Kind::Counter,
                d.name.ends_with("_total"),
                "{}",
                d.name
            );
        }
    }

    #[test]
    fn rendered_text_parses_with_consistent_label_sets() {
        let stats = Stats::new(1_700_000_000_000);
        let trade = stats.of(DataType::Trade);
        trade.record_insert(
            500,
            0,
            std::time::Duration::from_millis(4),
            Some(1_700_000_000_000),
            1_700_000_001_500,
        );
        trade.update(|c| {
            c.rows_inserted = 12345;
            c.received = 12400;
            c.dead_letters = 55;
        });
        trade.reject("invalid_json");
        trade.reject("missing \"field\"");
        let types = [DataType::Trade, DataType::Orderbook];
        let text = render(&input(&stats, &types));
        let samples = check_exposition(&text);
        assert!(
            text.contains(
                "marketprism_storage_messages_processed_total{data_type=\"trade\"} 12345\n"
            )
        );
        assert!(
            text.contains(
                "marketprism_storage_messages_processed_total{data_type=\"orderbook\"} 0\n"
            )
        );
        assert!(text.contains(
            "marketprism_storage_validation_errors_total{data_type=\"trade\",reason=\"missing \\\"field\\\"\"} 1\n"
        ));
        assert!(text.contains("marketprism_storage_batch_size_total 12345\n"));
        assert!(text.contains(
            "marketprism_storage_insert_duration_seconds_bucket{data_type=\"trade\",le=\"0.005\"} 1\n"
        ));
        assert!(text.contains(
            "marketprism_storage_insert_duration_seconds_bucket{data_type=\"trade\",le=\"0.0025\"} 0\n"
        ));
        assert!(text.contains(
            "marketprism_storage_insert_duration_seconds_bucket{data_type=\"trade\",le=\"0.025\"} 1\n"
        ));
        assert!(text.contains(
            "marketprism_storage_publish_to_insert_seconds_sum{data_type=\"trade\"} 1.5\n"
        ));
        assert!(text.contains("marketprism_storage_batch_rows_count{data_type=\"trade\"} 1\n"));
        let rate = &samples["marketprism_storage_error_rate_percent"][0].1;
        assert!((rate - 55.0 * 100.0 / 12400.0).abs() < 1e-9);
        assert!(text.contains("marketprism_storage_process_cpu_percent 12.5\n"));
        assert!(text.contains("marketprism_storage_uptime_seconds 10\n"));
    }

    #[test]
    fn empty_stats_render_zeros_not_nan() {
        let stats = Stats::new(0);
        let text = render(&input(&stats, &DataType::ALL));
        check_exposition(&text);
        assert!(text.contains("marketprism_storage_error_rate_percent 0\n"));
        assert!(!text.contains("NaN"));
    }

    fn migration_stats() -> MigrationStats {
        let m = MigrationStats::new();
        m.restore(&crate::migrate::MigrationCounters {
            rows_migrated: 60_000,
            chunks_verified: 52,
            chunks_repaired: 3,
            chunks_mismatched: 1,
            last_success_ms: 1_700_000_123_500,
        });
        m.set_lag_minutes(DataType::Trade, 0);
        m.set_lag_minutes(DataType::Orderbook, 42);
        m
    }

    #[test]
    fn migration_families_render_exact_lines() {
        let stats = Stats::new(1_700_000_000_000);
        let m = migration_stats();
        let types = [DataType::Trade];
        let mut i = input(&stats, &types);
        i.migration = Some(&m);
        let text = render(&i);
        check_exposition(&text);
        for line in [
            "# HELP marketprism_cold_replication_lag_minutes Minutes between now minus the migration window and the end of the verified prefix of cold, at the end of the last cycle (0 = caught up).",
            "# TYPE marketprism_cold_replication_lag_minutes gauge",
            "marketprism_cold_replication_lag_minutes{table=\"trades\"} 0",
            "marketprism_cold_replication_lag_minutes{table=\"orderbooks\"} 42",
            "# TYPE marketprism_cold_rows_migrated_total counter",
            "marketprism_cold_rows_migrated_total 60000",
            "marketprism_cold_chunks_verified_total 52",
            "marketprism_cold_chunks_repaired_total 3",
            "marketprism_cold_chunks_mismatched_total 1",
            "# TYPE marketprism_cold_last_success_timestamp_seconds gauge",
            "marketprism_cold_last_success_timestamp_seconds 1700000123.5",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Tables not measured yet have no lag series (not a 0 that would claim "caught up").
        assert_eq!(
            text.matches("marketprism_cold_replication_lag_minutes{")
                .count(),
            2
        );
        // The pipeline's families are still there.
        assert!(
            text.contains("marketprism_storage_messages_processed_total{data_type=\"trade\"} 0\n")
        );
    }

    #[test]
    fn quality_events_lag_is_exported_under_its_table_name() {
        let stats = Stats::new(1_700_000_000_000);
        let m = MigrationStats::new();
        m.set_lag_minutes(MigTable::QualityEvents, 5);
        let mut i = input(&stats, &[]);
        i.migration = Some(&m);
        let text = render(&i);
        check_exposition(&text);
        assert!(
            text.lines().any(|l| l
                == "marketprism_cold_replication_lag_minutes{table=\"data_quality_events\"} 5"),
            "{text}"
        );
    }

    #[test]
    fn migration_families_only_with_migration_stats() {
        let stats = Stats::new(0);
        let text = render(&input(&stats, &DataType::ALL));
        assert!(!text.contains("marketprism_cold_"), "{text}");
        let fresh = MigrationStats::new();
        let mut i = input(&stats, &DataType::ALL);
        i.migration = Some(&fresh);
        let text = render(&i);
        assert!(text.contains("marketprism_cold_rows_migrated_total 0\n"));
        assert!(text.contains("marketprism_cold_last_success_timestamp_seconds 0\n"));
        assert!(!text.contains("marketprism_cold_replication_lag_minutes{"));
    }

    #[test]
    fn no_types_means_no_pipeline_families() {
        // The standalone migrator's state: process and migration families only.
        let stats = Stats::new(1_700_000_000_000);
        let m = migration_stats();
        let mut i = input(&stats, &[]);
        i.migration = Some(&m);
        let text = render(&i);
        let samples = check_exposition(&text);
        assert!(!text.contains("marketprism_storage_ready"), "{text}");
        assert!(
            !text.contains("marketprism_storage_nats_connected"),
            "{text}"
        );
        let families: BTreeSet<&str> = samples
            .keys()
            .map(|k| k.as_str())
            .filter(|k| k.starts_with("marketprism_storage_"))
            .collect();
        assert_eq!(
            families,
            BTreeSet::from([
                "marketprism_storage_process_cpu_percent",
                "marketprism_storage_process_rss_bytes",
                "marketprism_storage_uptime_seconds",
            ])
        );
        assert!(text.contains("marketprism_cold_rows_migrated_total 60000\n"));
    }

    #[test]
    fn values_format_like_prometheus() {
        assert_eq!(format_value(12345.0), "12345");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(f64::INFINITY), "+Inf");
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::Metric;
    use std::collections::BTreeSet;

    /// Every `marketprism_storage_*` and `marketprism_cold_*` name in the shipped alerts and
    /// dashboard is one we expose, so renaming a metric cannot silently break them.
    #[test]
    fn deploy_files_use_defined_metrics() {
        let defined: BTreeSet<&str> = Metric::ALL.iter().map(|m| m.def().name).collect();
        for (file, text) in [
            (
                "alerts.yml",
                include_str!("../../deploy/prometheus/alerts.yml"),
            ),
            (
                "marketprism-storage.json",
                include_str!("../../deploy/grafana/marketprism-storage.json"),
            ),
        ] {
            let mut used = 0;
            let starts = text
                .match_indices("marketprism_storage_")
                .chain(text.match_indices("marketprism_cold_"));
            for (at, _) in starts {
                let name: String = text[at..]
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_')
                    .collect();
                let family = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|f| defined.contains(f)))
                    .unwrap_or(&name);
                assert!(
                    defined.contains(family),
                    "{file} uses undefined metric {name}"
                );
                used += 1;
            }
            assert!(used > 5, "{file} uses {used} metrics");
        }
    }
}
