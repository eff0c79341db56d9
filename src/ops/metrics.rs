//! The Prometheus exposition: every metric family defined once, in [`METRICS`] — name, type,
//! labels, help, origin, scope and how its value is read — and encoded from one copy of the
//! counters per scrape ([`Scrape`]) by the `prometheus-client` crate in the Prometheus text
//! format (0.0.4) with `# HELP` and `# TYPE` lines. A full scrape (8 types, 1,000 markets each:
//! 40k lines, 5 MB) takes 11–15 ms in a release build against 64–113 ms for the hand-written
//! writer the crate replaced (`cost::render_cost`, on the shared 2-core machine).
//!
//! Three scopes of families ([`Scope`]): the pipeline's (rendered when the state has configured
//! types), the process's (always) and the hot → cold migrator's (rendered when the state holds
//! [`MigrationStats`], i.e. when the migration loop runs in this process). A state with no types
//! and migration stats is the standalone `migrate` loop's: it exports no pipeline families,
//! whose zeros (and `ready 0`) would fire the service's alerts.
//!
//! Names and meanings used by the Python service's alerts and Grafana dashboards are kept
//! (`Origin::PythonService`); ours are marked `Origin::New`. Every series of one family carries
//! the same label names — the Python service mixed label sets under one name, which Prometheus
//! accepts but aggregations silently miscount.
//!
//! Adding a metric is one entry in [`METRICS`] (and its row in `docs/operations.md`, which a test
//! checks); a value the counters do not hold yet is one event method on `TypeStats` plus one
//! field of `TypeCounters`.

use std::collections::BTreeMap;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::migrate::{MigTable, MigrationCounters, MigrationStats};
use crate::model::DataType;
use crate::pipeline::stats::{HistogramSnapshot, LaneView, Stats, TypeCounters};
use crate::quality::{EventKind, QualitySnapshot};

use super::lanes;
use super::process::ProcessSample;

/// The `Content-Type` of the exposition (Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

    const fn metric_type(self) -> MetricType {
        match self {
            Kind::Counter => MetricType::Counter,
            Kind::Gauge => MetricType::Gauge,
            Kind::Histogram => MetricType::Histogram,
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
    /// The process itself (CPU, memory, uptime, build): always rendered.
    Process,
    /// The hot → cold migrator: rendered when the state holds migration stats.
    Migration,
}

/// A sample value: counts stay exact integers, the rest are floats (integral floats are
/// written without a decimal point: `10`, not `10.0`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    /// An exact count.
    Int(u64),
    /// A measurement.
    Real(f64),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::Int(v)
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Real(v)
    }
}

impl From<bool> for Value {
    fn from(b: bool) -> Self {
        Value::Int(u64::from(b))
    }
}

/// How a family's samples are read from one [`Scrape`].
#[derive(Clone, Copy)]
pub enum Read {
    /// One series per configured type (label `data_type`), from the type's counters.
    PerType(fn(&TypeScrape) -> Value),
    /// One series without labels; `None` leaves the family without a sample.
    Single(fn(&Scrape) -> Option<Value>),
    /// One histogram per configured type (label `data_type`): the snapshot and the divisor from
    /// stored to exposed units (dividing by a power of ten keeps bounds like `0.025` exact).
    Histogram(fn(&TypeScrape) -> &HistogramSnapshot, f64),
    /// Any number of series: label values in the family's label order, and the value.
    Series(fn(&Scrape, &mut Emit<'_>)),
}

/// Takes one sample: label values in the family's label order, and the value.
pub type Emit<'a> = dyn FnMut(&[&str], Value) + 'a;

impl std::fmt::Debug for Read {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Read::PerType(_) => "PerType",
            Read::Single(_) => "Single",
            Read::Histogram(..) => "Histogram",
            Read::Series(_) => "Series",
        })
    }
}

/// The definition of one family: the only place its name is written.
#[derive(Debug, Clone, Copy)]
pub struct MetricDef {
    /// Full metric name as exposed (counters end in `_total`).
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
    /// How its samples are read.
    pub read: Read,
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
const VERSION: &[&str] = &["version"];
/// Per lane: its type, its durable and its partition (`2/4`, or `base`). Bounded: a type has
/// its base lane and one per partition of its stream's layout (at most `MAX_PARTITIONS`), plus
/// the lanes of an earlier layout while they still exist.
const LANE: &[&str] = &["data_type", "lane", "partition"];
const LANE_ROLE: &[&str] = &["data_type", "lane", "partition", "role"];
const LANE_CHANGE: &[&str] = &["data_type", "lane", "partition", "change"];
const INSTANCE_ID: &[&str] = &["instance_id"];

use Kind::{Counter, Gauge, Histogram};
use Origin::{New, PythonService};
use Scope::{Migration, Pipeline, Process};

/// Every metric family the service exposes, in exposition order.
pub static METRICS: &[MetricDef] = &[
    MetricDef {
        name: "marketprism_storage_messages_processed_total",
        kind: Counter,
        labels: DT,
        help: "Rows inserted into ClickHouse (acknowledged by the server), per data type.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.rows_inserted.into()),
    },
    MetricDef {
        name: "marketprism_storage_messages_received_total",
        kind: Counter,
        labels: DT,
        help: "Messages received from NATS (redeliveries of held messages excluded).",
        origin: PythonService,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.received.into()),
    },
    MetricDef {
        name: "marketprism_storage_messages_failed_total",
        kind: Counter,
        labels: DT,
        help: "Messages that could not be stored as rows and went to dead_letters.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.dead_letters.into()),
    },
    MetricDef {
        name: "marketprism_storage_validation_errors_total",
        kind: Counter,
        labels: DT_REASON,
        help: "Messages rejected, by data type and reason kind.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            for t in &s.types {
                for (reason, n) in &t.rejects {
                    emit(&[t.data_type.as_str(), reason], (*n).into());
                }
            }
        }),
    },
    MetricDef {
        name: "marketprism_storage_error_rate_percent",
        kind: Gauge,
        labels: NONE,
        help: "Failed (dead-lettered) messages as a percentage of received messages, since start.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::Single(|s| {
            let (failed, received) = (s.sum(|c| c.dead_letters), s.sum(|c| c.received));
            Some(ratio(failed as f64 * 100.0, received).into())
        }),
    },
    MetricDef {
        name: "marketprism_storage_batch_queue_size",
        kind: Gauge,
        labels: DT,
        help: "Messages buffered or being inserted, not yet acknowledged.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.queued.into()),
    },
    MetricDef {
        name: "marketprism_storage_batch_queue_bytes",
        kind: Gauge,
        labels: DT,
        help: "Estimated bytes buffered or being inserted, not yet acknowledged.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.queued_bytes.into()),
    },
    MetricDef {
        name: "marketprism_storage_clickhouse_insert_errors_total",
        kind: Counter,
        labels: DT,
        help: "Failed INSERT attempts (each retry counts).",
        origin: PythonService,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.insert_errors.into()),
    },
    MetricDef {
        name: "marketprism_storage_batch_inserts_total",
        kind: Counter,
        labels: DT,
        help: "Successful INSERT statements.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.batches.into()),
    },
    MetricDef {
        name: "marketprism_storage_batch_size_total",
        kind: Counter,
        labels: NONE,
        help: "Rows in successfully inserted batches, all data types.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::Single(|s| Some(s.sum(|c| c.rows_inserted).into())),
    },
    MetricDef {
        name: "marketprism_storage_batch_size_avg",
        kind: Gauge,
        labels: NONE,
        help: "Average rows per successful INSERT since start, all data types.",
        origin: PythonService,
        scope: Pipeline,
        read: Read::Single(|s| {
            let (rows, batches) = (s.sum(|c| c.rows_inserted), s.sum(|c| c.batches));
            Some(ratio(rows as f64, batches).into())
        }),
    },
    MetricDef {
        name: "marketprism_storage_last_message_timestamp_seconds",
        kind: Gauge,
        labels: NONE,
        help: "Unix time of the last message received (0 = none yet).",
        origin: PythonService,
        scope: Pipeline,
        read: Read::Single(|s| Some(ms_to_s(s.max_ms(|c| c.last_message_ms)).into())),
    },
    MetricDef {
        name: "marketprism_storage_last_error_timestamp_seconds",
        kind: Gauge,
        labels: NONE,
        help: "Unix time of the last error recorded (0 = none yet).",
        origin: PythonService,
        scope: Pipeline,
        read: Read::Single(|s| Some(ms_to_s(s.max_ms(|c| c.last_error_ms)).into())),
    },
    MetricDef {
        name: "marketprism_storage_process_cpu_percent",
        kind: Gauge,
        labels: NONE,
        help: "Process CPU time over wall time since the previous sample, percent of one core.",
        origin: PythonService,
        scope: Process,
        read: Read::Single(|s| s.process.map(|p| p.cpu_percent.into())),
    },
    MetricDef {
        name: "marketprism_storage_process_rss_bytes",
        kind: Gauge,
        labels: NONE,
        help: "Current resident set size of the process (VmRSS), bytes.",
        origin: PythonService,
        scope: Process,
        read: Read::Single(|s| s.process.map(|p| p.rss_bytes.into())),
    },
    MetricDef {
        name: "marketprism_storage_consumer_pending_messages",
        kind: Gauge,
        labels: DT,
        help: "Messages pending on the durable consumer (server's count at the last check).",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.consumer_pending.into()),
    },
    MetricDef {
        name: "marketprism_storage_retries_total",
        kind: Counter,
        labels: DT,
        help: "Retries of inserts and acks.",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.retries.into()),
    },
    MetricDef {
        name: "marketprism_storage_dead_letters_total",
        kind: Counter,
        labels: DT,
        help: "Dead letters inserted into the dead_letters table.",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.dead_letters.into()),
    },
    MetricDef {
        name: "marketprism_storage_redeliveries_skipped_total",
        kind: Counter,
        labels: DT,
        help: "Redelivered messages skipped because they were already held or stored.",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.redeliveries_skipped.into()),
    },
    MetricDef {
        name: "marketprism_storage_resyncs_total",
        kind: Counter,
        labels: DT,
        help: "Times the reader re-synchronised from the consumer's ack floor.",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.resyncs.into()),
    },
    MetricDef {
        name: "marketprism_storage_insert_splits_total",
        kind: Counter,
        labels: DT,
        help: "Splits of a batch into more INSERTs (by partition, in halves, bad-row isolation).",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.insert_splits.into()),
    },
    MetricDef {
        name: "marketprism_storage_nats_connected",
        kind: Gauge,
        labels: NONE,
        help: "1 while the NATS connection is up.",
        origin: New,
        scope: Pipeline,
        read: Read::Single(|s| Some(s.nats_connected.into())),
    },
    MetricDef {
        name: "marketprism_storage_nats_auth_failures_total",
        kind: Counter,
        labels: NONE,
        help: "Times NATS refused the service's credentials (at start or on a reconnect).",
        origin: New,
        scope: Pipeline,
        read: Read::Single(|s| Some(s.nats_auth_failures.into())),
    },
    MetricDef {
        name: "marketprism_storage_clickhouse_up",
        kind: Gauge,
        labels: NONE,
        help: "1 while ClickHouse answers.",
        origin: New,
        scope: Pipeline,
        read: Read::Single(|s| Some(s.clickhouse_up.into())),
    },
    MetricDef {
        name: "marketprism_storage_consumer_bound",
        kind: Gauge,
        labels: DT,
        help: "1 while this instance holds the type's durable consumer.",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| t.c.bound.into()),
    },
    MetricDef {
        name: "marketprism_storage_instance_info",
        kind: Gauge,
        labels: INSTANCE_ID,
        help: "Always 1; the label carries this instance's id (its lease holder and member name), once the pipeline has set it.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            if let Some(id) = &s.instance {
                emit(&[id], 1u64.into());
            }
        }),
    },
    MetricDef {
        name: "marketprism_storage_members",
        kind: Gauge,
        labels: NONE,
        help: "Instances serving the streams as this one saw them at its coordinator's last look (itself included; 0 before the first look).",
        origin: New,
        scope: Pipeline,
        read: Read::Single(|s| Some((s.members as u64).into())),
    },
    MetricDef {
        name: "marketprism_storage_lane_held",
        kind: Gauge,
        labels: LANE,
        help: "1 while this instance holds the lane's lease (reads and stores it), 0 otherwise.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| s.per_lane(emit, |l| lanes::is_held(l).into())),
    },
    MetricDef {
        name: "marketprism_storage_lane_role",
        kind: Gauge,
        labels: LANE_ROLE,
        help: "1 for what this instance does with the lane (holder: assigned here and run here; standby: assigned here, waiting for its lease; elsewhere: not assigned here), 0 for the other two.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            s.per_lane_and(emit, &LANE_ROLES, |l, role| {
                (l.role.as_str() == role).into()
            })
        }),
    },
    MetricDef {
        name: "marketprism_storage_lease_changes_total",
        kind: Counter,
        labels: LANE_CHANGE,
        help: "Lease changes of the lane in this instance: acquired (taken), lost (fenced: a failed refresh, the journal taken), released (handed over, or at shutdown).",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            s.per_lane_and(emit, &["acquired", "lost", "released"], |l, change| {
                match change {
                    "acquired" => l.acquired,
                    "lost" => l.lost,
                    _ => l.released,
                }
                .into()
            })
        }),
    },
    MetricDef {
        name: "marketprism_storage_lane_pending_messages",
        kind: Gauge,
        labels: LANE,
        help: "Messages pending on the lane's durable consumer (the server's count at this instance's last check while it held the lane; 0 if it never did).",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| s.per_lane(emit, |l| l.consumer_pending.into())),
    },
    MetricDef {
        name: "marketprism_storage_ready",
        kind: Gauge,
        labels: NONE,
        help: "1 when /ready answers 200.",
        origin: New,
        scope: Pipeline,
        read: Read::Single(|s| Some(s.ready.into())),
    },
    MetricDef {
        name: "marketprism_storage_last_insert_timestamp_seconds",
        kind: Gauge,
        labels: DT,
        help: "Unix time of the last successful insert (0 = none yet).",
        origin: New,
        scope: Pipeline,
        read: Read::PerType(|t| ms_to_s(t.c.last_insert_ms).into()),
    },
    MetricDef {
        name: "marketprism_storage_uptime_seconds",
        kind: Gauge,
        labels: NONE,
        help: "Seconds since the service started.",
        origin: New,
        scope: Process,
        read: Read::Single(|s| Some(ms_to_s(s.uptime_ms).into())),
    },
    MetricDef {
        name: "marketprism_storage_insert_duration_seconds",
        kind: Histogram,
        labels: DT,
        help: "Time from the start of a batch's INSERT to its success, retries included.",
        origin: New,
        scope: Pipeline,
        read: Read::Histogram(|t| &t.insert_duration_us, 1e6),
    },
    MetricDef {
        name: "marketprism_storage_batch_rows",
        kind: Histogram,
        labels: DT,
        help: "Rows per successful INSERT.",
        origin: New,
        scope: Pipeline,
        read: Read::Histogram(|t| &t.batch_rows, 1.0),
    },
    MetricDef {
        name: "marketprism_storage_publish_to_insert_seconds",
        kind: Histogram,
        labels: DT,
        help: "Publish time of a batch's oldest message to the end of its INSERT.",
        origin: New,
        scope: Pipeline,
        read: Read::Histogram(|t| &t.publish_to_insert_ms, 1e3),
    },
    // Lag series exist only for tables measured by a cycle: before the first cycle there is no
    // value to report, and a 0 would claim "caught up".
    MetricDef {
        name: "marketprism_cold_replication_lag_minutes",
        kind: Gauge,
        labels: TABLE,
        help: "Minutes between now minus the migration window and the end of the verified prefix of cold, at the end of the last cycle (0 = caught up).",
        origin: PythonService,
        scope: Migration,
        read: Read::Series(|s, emit| {
            for (table, lag) in s.migration.iter().flat_map(|m| &m.lag_minutes) {
                if *lag >= 0 {
                    emit(&[table], (*lag as f64).into());
                }
            }
        }),
    },
    MetricDef {
        name: "marketprism_cold_rows_migrated_total",
        kind: Counter,
        labels: NONE,
        help: "Rows copied from hot into cold (repairs included).",
        origin: New,
        scope: Migration,
        read: Read::Single(|s| s.migration.as_ref().map(|m| m.c.rows_migrated.into())),
    },
    MetricDef {
        name: "marketprism_cold_chunks_verified_total",
        kind: Counter,
        labels: NONE,
        help: "Migration chunks whose hot and cold fingerprints were compared equal.",
        origin: New,
        scope: Migration,
        read: Read::Single(|s| s.migration.as_ref().map(|m| m.c.chunks_verified.into())),
    },
    MetricDef {
        name: "marketprism_cold_chunks_repaired_total",
        kind: Counter,
        labels: NONE,
        help: "Migration chunks cold held only part of, completed by copying the missing rows.",
        origin: New,
        scope: Migration,
        read: Read::Single(|s| s.migration.as_ref().map(|m| m.c.chunks_repaired.into())),
    },
    MetricDef {
        name: "marketprism_cold_chunks_mismatched_total",
        kind: Counter,
        labels: NONE,
        help: "Migration chunks still different between hot and cold after repair attempts.",
        origin: New,
        scope: Migration,
        read: Read::Single(|s| s.migration.as_ref().map(|m| m.c.chunks_mismatched.into())),
    },
    MetricDef {
        name: "marketprism_cold_last_success_timestamp_seconds",
        kind: Gauge,
        labels: NONE,
        help: "Unix time of the end of the last migration cycle in which every chunk verified (0 = none yet).",
        origin: New,
        scope: Migration,
        read: Read::Single(|s| {
            s.migration
                .as_ref()
                .map(|m| ms_to_s(m.c.last_success_ms).into())
        }),
    },
    MetricDef {
        name: "marketprism_cold_late_rows_repaired_total",
        kind: Counter,
        labels: TABLE,
        help: "Rows that landed in hot behind the migration watermark (late or back-filled) and were copied into cold before the hot TTL could delete them.",
        origin: New,
        scope: Migration,
        read: Read::Series(|s, emit| {
            for (table, n) in s.migration.iter().flat_map(|m| &m.late_rows_repaired) {
                emit(&[table], (*n).into());
            }
        }),
    },
    MetricDef {
        name: "marketprism_storage_gaps_total",
        kind: Counter,
        labels: MARKET,
        help: "Sequence gaps (trade ids, order book update ids) detected per market; see docs/quality.md.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| s.per_market(emit, |k| k.counts.of(EventKind::Gap).into())),
    },
    MetricDef {
        name: "marketprism_storage_missing_ids_total",
        kind: Counter,
        labels: MARKET,
        help: "Sequential ids missing in the detected gaps, per market.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| s.per_market(emit, |k| k.counts.missing.into())),
    },
    MetricDef {
        name: "marketprism_storage_duplicate_ids_total",
        kind: Counter,
        labels: MARKET,
        help: "Sequential ids that arrived again, per market.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            s.per_market(emit, |k| k.counts.of(EventKind::Duplicate).into())
        }),
    },
    MetricDef {
        name: "marketprism_storage_crossed_books_total",
        kind: Counter,
        labels: MARKET,
        help: "Order books whose best bid was at or above the best ask, per market.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            s.per_market(emit, |k| k.counts.of(EventKind::CrossedBook).into())
        }),
    },
    MetricDef {
        name: "marketprism_storage_stale_seconds",
        kind: Gauge,
        labels: MARKET,
        help: "Seconds a market has been silent while its stale episode is open; 0 when data flows.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            s.per_market(emit, |k| {
                let silent = if k.stale_open { k.silent_ms } else { 0 };
                (silent as f64 / 1000.0).into()
            })
        }),
    },
    MetricDef {
        name: "marketprism_storage_quality_events_total",
        kind: Counter,
        labels: DT_KIND,
        help: "Data-quality events detected, per type and kind (stored in data_quality_events).",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            for t in &s.quality.types {
                let totals = t.totals();
                for k in EventKind::ALL {
                    let n = totals.of(k);
                    if n > 0 {
                        emit(&[t.data_type.as_str(), k.as_str()], n.into());
                    }
                }
            }
        }),
    },
    MetricDef {
        name: "marketprism_storage_quality_markets_evicted_total",
        kind: Counter,
        labels: DT,
        help: "Markets whose data-quality state was evicted (silent for 24 h, or past 10,000 markets per type); their counts stay in the totals.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            for t in &s.quality.types {
                emit(&[t.data_type.as_str()], t.evicted.into());
            }
        }),
    },
    MetricDef {
        name: "marketprism_storage_quality_series_folded",
        kind: Gauge,
        labels: DT,
        help: "Markets left out of the per-market quality series (past 1,000 per type); the per-type totals include them.",
        origin: New,
        scope: Pipeline,
        read: Read::Series(|s, emit| {
            for t in &s.quality.types {
                let folded = t.keys.len().saturating_sub(MAX_MARKET_SERIES);
                emit(&[t.data_type.as_str()], (folded as u64).into());
            }
        }),
    },
    MetricDef {
        name: "marketprism_storage_build_info",
        kind: Gauge,
        labels: VERSION,
        help: "Always 1; the label carries the version of the running build.",
        origin: New,
        scope: Process,
        read: Read::Series(|_, emit| emit(&[env!("CARGO_PKG_VERSION")], 1u64.into())),
    },
];

/// The values of the `role` label of `marketprism_storage_lane_role`: the words of
/// `LaneRole::as_str` (a test checks they agree).
const LANE_ROLES: [&str; 3] = ["holder", "standby", "elsewhere"];

/// The `partition` label of a lane: `2/4`, or `base`.
fn part_label(l: &LaneView) -> String {
    lanes::partition(l).unwrap_or_else(|| "base".to_string())
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

/// One type's counters as read for one scrape.
#[derive(Debug)]
pub struct TypeScrape {
    /// The type.
    pub data_type: DataType,
    /// Its scalar counters.
    pub c: TypeCounters,
    /// Rejections by reason kind.
    pub rejects: BTreeMap<String, u64>,
    /// INSERT durations, µs.
    pub insert_duration_us: HistogramSnapshot,
    /// Rows per INSERT.
    pub batch_rows: HistogramSnapshot,
    /// Publish → insert latency, ms.
    pub publish_to_insert_ms: HistogramSnapshot,
}

/// The migrator's counters as read for one scrape.
#[derive(Debug)]
pub struct MigrationScrape {
    /// The scalar counters.
    pub c: MigrationCounters,
    /// Lag per table name (-1: not measured yet).
    pub lag_minutes: Vec<(&'static str, i64)>,
    /// Late rows repaired per table name.
    pub late_rows_repaired: Vec<(&'static str, u64)>,
}

/// Every value one scrape exposes, read once (the data-quality snapshot included) before
/// anything is encoded; owned, as `prometheus-client` collectors are.
#[derive(Debug)]
pub struct Scrape {
    /// The configured types, in order; empty: no pipeline families.
    pub types: Vec<TypeScrape>,
    /// The data-quality trackers of the configured types.
    pub quality: QualitySnapshot,
    /// The migrator's counters, when it runs in this process.
    pub migration: Option<MigrationScrape>,
    /// Process CPU and memory, if readable.
    pub process: Option<ProcessSample>,
    /// The `/ready` verdict.
    pub ready: bool,
    /// Whether the NATS connection is up.
    pub nats_connected: bool,
    /// Times NATS refused the credentials.
    pub nats_auth_failures: u64,
    /// Whether ClickHouse answers.
    pub clickhouse_up: bool,
    /// Since the service started, ms.
    pub uptime_ms: i64,
    /// The lanes of the configured types, in order (`ops::lanes::lanes`).
    pub lanes: Vec<LaneView>,
    /// Instances serving the streams, as last seen.
    pub members: usize,
    /// This instance's id, once set.
    pub instance: Option<String>,
    defs: &'static [MetricDef],
}

impl Scrape {
    /// Reads every counter the families need, once.
    pub fn read(i: &ScrapeInput<'_>) -> Scrape {
        let mut quality = i.stats.quality.snapshot(i.now_ms);
        quality.types.retain(|t| i.types.contains(&t.data_type));
        Scrape {
            types: i
                .types
                .iter()
                .map(|t| {
                    let s = i.stats.of(*t);
                    let h = s.histograms();
                    TypeScrape {
                        data_type: *t,
                        c: s.counters(),
                        rejects: s.rejects(),
                        insert_duration_us: h.insert_duration_us.snapshot(),
                        batch_rows: h.batch_rows.snapshot(),
                        publish_to_insert_ms: h.publish_to_insert_ms.snapshot(),
                    }
                })
                .collect(),
            quality,
            migration: i.migration.map(|m| MigrationScrape {
                c: m.counters(),
                lag_minutes: MigTable::ALL
                    .iter()
                    .map(|t| (t.name(), m.lag_minutes(*t)))
                    .collect(),
                late_rows_repaired: MigTable::ALL
                    .iter()
                    .map(|t| (t.name(), m.late_rows_repaired(*t)))
                    .collect(),
            }),
            process: i.process,
            ready: i.ready,
            nats_connected: i.stats.nats_connected(),
            nats_auth_failures: i.stats.nats_auth_failures(),
            clickhouse_up: i.stats.clickhouse_up(),
            uptime_ms: i.now_ms - i.stats.started_ms,
            lanes: lanes::lanes(i.stats, i.types),
            members: i.stats.members().len(),
            instance: i.stats.instance(),
            defs: METRICS,
        }
    }

    fn shows(&self, scope: Scope) -> bool {
        match scope {
            Scope::Pipeline => !self.types.is_empty(),
            Scope::Process => true,
            Scope::Migration => self.migration.is_some(),
        }
    }

    fn sum(&self, f: fn(&TypeCounters) -> u64) -> u64 {
        self.types.iter().map(|t| f(&t.c)).sum()
    }

    fn max_ms(&self, f: fn(&TypeCounters) -> i64) -> i64 {
        self.types.iter().map(|t| f(&t.c)).max().unwrap_or(0)
    }

    /// One series per lane, labelled [`LANE`].
    fn per_lane(&self, emit: &mut Emit<'_>, value: fn(&LaneView) -> Value) {
        for l in &self.lanes {
            let part = part_label(l);
            emit(&[l.id.data_type.as_str(), &l.id.durable, &part], value(l));
        }
    }

    /// One series per lane and value of its fourth label (`kinds`), labelled [`LANE`] + that
    /// label.
    fn per_lane_and(
        &self,
        emit: &mut Emit<'_>,
        kinds: &[&str],
        value: fn(&LaneView, &str) -> Value,
    ) {
        for l in &self.lanes {
            let part = part_label(l);
            for kind in kinds {
                emit(
                    &[l.id.data_type.as_str(), &l.id.durable, &part, kind],
                    value(l, kind),
                );
            }
        }
    }

    /// One series per market, the first [`MAX_MARKET_SERIES`] of each type.
    fn per_market(&self, emit: &mut Emit<'_>, value: fn(&crate::quality::KeySnapshot) -> Value) {
        for t in &self.quality.types {
            for k in t.keys.iter().take(MAX_MARKET_SERIES) {
                let labels = [
                    t.data_type.as_str(),
                    k.exchange.as_str(),
                    k.market_type.as_str(),
                    k.symbol.as_str(),
                ];
                emit(&labels, value(k));
            }
        }
    }
}

/// Renders every family of [`METRICS`] in order, leaving out the scopes that do not apply
/// (see [`Scope`]).
pub fn render(input: &ScrapeInput<'_>) -> String {
    encode(Scrape::read(input))
}

fn encode(scrape: Scrape) -> String {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(scrape));
    let mut out = String::new();
    // Writing into a String cannot fail, and our collector returns no error of its own.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut out, &registry);
    out
}

impl Collector for Scrape {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        for d in self.defs.iter().filter(|d| self.shows(d.scope)) {
            // The crate appends `_total` to counters; our names carry it.
            let name = match d.kind {
                Kind::Counter => d.name.strip_suffix("_total").unwrap_or(d.name),
                _ => d.name,
            };
            let mut family = encoder.encode_descriptor(name, d.help, None, d.kind.metric_type())?;
            if let Read::Histogram(f, per_unit) = d.read {
                for t in &self.types {
                    histogram(&mut family, d, t.data_type.as_str(), f(t), per_unit)?;
                }
                continue;
            }
            let mut result = Ok(());
            let mut emit = |values: &[&str], v: Value| {
                if result.is_ok() {
                    result = sample(&mut family, d, values, v);
                }
            };
            match d.read {
                Read::PerType(f) => {
                    for t in &self.types {
                        emit(&[t.data_type.as_str()], f(t));
                    }
                }
                Read::Single(f) => {
                    if let Some(v) = f(self) {
                        emit(&[], v);
                    }
                }
                Read::Series(f) => f(self, &mut emit),
                Read::Histogram(..) => {}
            }
            result?;
        }
        Ok(())
    }
}

/// Pairs the family's label names with `values` (at most four labels: no allocation).
fn with_labels<'a>(
    d: &MetricDef,
    values: &[&'a str],
    out: &'a mut [(&'a str, &'a str); 4],
) -> &'a [(&'a str, &'a str)] {
    let mut n = 0;
    for (slot, (k, v)) in out.iter_mut().zip(d.labels.iter().zip(values)) {
        *slot = (k, v);
        n += 1;
    }
    &out[..n]
}

/// One sample. Integral values are written as integers (`12345`, not `12345.0`), like the
/// Python service's and our own exposition before the crate.
fn sample(
    family: &mut MetricEncoder<'_>,
    d: &MetricDef,
    values: &[&str],
    v: Value,
) -> Result<(), std::fmt::Error> {
    let mut buf = [("", ""); 4];
    let labels = with_labels(d, values, &mut buf);
    let mut series = family.encode_family(&labels)?;
    let counter = d.kind == Kind::Counter;
    match v {
        Value::Int(n) if counter => series.encode_counter::<NoLabelSet, _, u64>(&n, None),
        Value::Int(n) => series.encode_gauge(&n),
        Value::Real(f) if f.fract() == 0.0 && f.abs() < 1e15 => {
            if counter {
                series.encode_counter::<NoLabelSet, _, u64>(&(f as u64), None)
            } else {
                series.encode_gauge(&(f as i64))
            }
        }
        Value::Real(f) if counter => series.encode_counter::<NoLabelSet, _, u64>(&f, None),
        Value::Real(f) => series.encode_gauge(&f),
    }
}

/// Buckets, sum and count of one type's histogram, in exposed units.
fn histogram(
    family: &mut MetricEncoder<'_>,
    d: &MetricDef,
    data_type: &str,
    h: &HistogramSnapshot,
    per_unit: f64,
) -> Result<(), std::fmt::Error> {
    let mut buf = [("", ""); 4];
    let labels = with_labels(d, &[data_type], &mut buf);
    let mut prev = 0;
    let buckets: Vec<(f64, u64)> = h
        .bounds
        .iter()
        .zip(&h.cumulative)
        .map(|(b, c)| {
            let n = c.saturating_sub(prev);
            prev = *c;
            (*b as f64 / per_unit, n)
        })
        .collect();
    family
        .encode_family(&labels)?
        .encode_histogram::<NoLabelSet>(h.sum as f64 / per_unit, h.count(), &buckets, None)
}

fn ratio(num: f64, den: u64) -> f64 {
    if den == 0 { 0.0 } else { num / den as f64 }
}

fn ms_to_s(ms: i64) -> f64 {
    if ms <= 0 { 0.0 } else { ms as f64 / 1000.0 }
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
        let names: BTreeSet<_> = METRICS.iter().map(|d| d.name).collect();
        assert_eq!(names.len(), METRICS.len());
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
            let def = METRICS.iter().find(|d| d.name == name);
            assert_eq!(def.map(|d| d.origin), Some(Origin::PythonService), "{name}");
        }
        for d in METRICS {
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
        let build = format!(
            "marketprism_storage_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        assert!(text.lines().any(|l| l == build), "{text}");
        assert!(text.contains("# TYPE marketprism_storage_build_info gauge\n"));
    }

    #[test]
    fn empty_stats_render_zeros_not_nan() {
        let stats = Stats::new(0);
        let text = render(&input(&stats, &DataType::ALL));
        check_exposition(&text);
        assert!(text.contains("marketprism_storage_error_rate_percent 0\n"));
        assert!(!text.contains("NaN"));
    }

    /// A migrator that has run: two tables measured, one lagging, one mismatch, late rows.
    pub(crate) fn migration_stats() -> MigrationStats {
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
        m.add_late_rows_repaired(DataType::Trade, 7);
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
                "marketprism_storage_build_info",
            ])
        );
        assert!(text.contains("marketprism_cold_rows_migrated_total 60000\n"));
    }

    /// A family that shows the value and label formats.
    static FORMATS: &[MetricDef] = &[MetricDef {
        name: "formats",
        kind: Kind::Gauge,
        labels: &["v"],
        help: "Value formats.",
        origin: Origin::New,
        scope: Scope::Process,
        read: Read::Series(|_, emit| {
            emit(&["int"], 12345u64.into());
            emit(&["integral"], 12345.0.into());
            emit(&["negative"], (-5.0).into());
            emit(&["fraction"], 0.25.into());
            emit(&["inf"], f64::INFINITY.into());
            emit(&["a\\b\"c\nd"], 1u64.into());
        }),
    }];

    #[test]
    fn values_format_like_prometheus() {
        let stats = Stats::new(0);
        let mut scrape = Scrape::read(&input(&stats, &[]));
        scrape.defs = FORMATS;
        let text = encode(scrape);
        check_exposition(&text);
        for line in [
            "formats{v=\"int\"} 12345",
            "formats{v=\"integral\"} 12345",
            "formats{v=\"negative\"} -5",
            "formats{v=\"fraction\"} 0.25",
            "formats{v=\"inf\"} +Inf",
            "formats{v=\"a\\\\b\\\"c\\nd\"} 1",
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
    }

    #[test]
    fn lane_families_render_one_series_per_lane() {
        let now = 1_700_000_000_000;
        let stats = crate::ops::lanes::tests::fixture(now);
        let types = [DataType::Trade, DataType::Orderbook];
        let mut i = input(&stats, &types);
        i.now_ms = now;
        let text = render(&i);
        check_exposition(&text);
        let p0 = r#"data_type="trade",lane="trade_c_p0of4",partition="0/4""#;
        let p1 = r#"data_type="trade",lane="trade_c_p1of4",partition="1/4""#;
        let base = r#"data_type="trade",lane="trade_c",partition="base""#;
        let book = r#"data_type="orderbook",lane="orderbook_c",partition="base""#;
        for line in [
            r#"marketprism_storage_instance_info{instance_id="a"} 1"#.to_string(),
            "marketprism_storage_members 3".to_string(),
            format!("marketprism_storage_lane_held{{{base}}} 1"),
            format!("marketprism_storage_lane_held{{{p0}}} 1"),
            format!("marketprism_storage_lane_held{{{p1}}} 0"),
            format!("marketprism_storage_lane_held{{{book}}} 0"),
            format!(r#"marketprism_storage_lane_role{{{p0},role="holder"}} 1"#),
            format!(r#"marketprism_storage_lane_role{{{p0},role="standby"}} 0"#),
            format!(r#"marketprism_storage_lane_role{{{p1},role="standby"}} 1"#),
            format!(r#"marketprism_storage_lane_role{{{p1},role="holder"}} 0"#),
            format!(r#"marketprism_storage_lane_role{{{book},role="elsewhere"}} 1"#),
            format!(r#"marketprism_storage_lease_changes_total{{{p0},change="acquired"}} 2"#),
            format!(r#"marketprism_storage_lease_changes_total{{{p0},change="lost"}} 1"#),
            format!(r#"marketprism_storage_lease_changes_total{{{p0},change="released"}} 0"#),
            format!(r#"marketprism_storage_lease_changes_total{{{book},change="released"}} 1"#),
            format!("marketprism_storage_lane_pending_messages{{{p0}}} 12"),
            format!("marketprism_storage_lane_pending_messages{{{base}}} 0"),
            "# TYPE marketprism_storage_lease_changes_total counter".to_string(),
        ] {
            assert!(
                text.lines().any(|l| l == line),
                "missing {line:?} in\n{text}"
            );
        }
        // Bounded: one series per lane (three roles, three changes each); 6 lanes.
        assert_eq!(text.matches("marketprism_storage_lane_held{").count(), 6);
        assert_eq!(text.matches("marketprism_storage_lane_role{").count(), 18);
        assert_eq!(
            text.matches("marketprism_storage_lease_changes_total{")
                .count(),
            18
        );
        // Only configured types' lanes.
        let mut i = input(&stats, &[DataType::Orderbook]);
        i.now_ms = now;
        let text = render(&i);
        assert_eq!(text.matches("marketprism_storage_lane_held{").count(), 1);
    }

    #[test]
    fn lane_role_labels_are_the_pipeline_words() {
        use crate::pipeline::stats::LaneRole;
        let words = [
            LaneRole::Holder.as_str(),
            LaneRole::Standby("b".into()).as_str(),
            LaneRole::Elsewhere.as_str(),
        ];
        assert_eq!(LANE_ROLES, words);
    }

    #[test]
    fn no_lanes_and_no_instance_render_no_lane_series() {
        let stats = Stats::new(0);
        let text = render(&input(&stats, &DataType::ALL));
        check_exposition(&text);
        assert!(text.contains("marketprism_storage_members 0\n"), "{text}");
        assert!(text.contains("# TYPE marketprism_storage_lane_held gauge\n"));
        assert!(!text.contains("marketprism_storage_lane_held{"), "{text}");
        assert!(
            !text.contains("marketprism_storage_instance_info{"),
            "{text}"
        );
    }

    #[test]
    fn per_type_and_histogram_families_are_labelled_by_data_type() {
        for d in METRICS {
            if matches!(d.read, Read::PerType(_) | Read::Histogram(..)) {
                assert_eq!(d.labels, DT, "{}", d.name);
            }
            if matches!(d.read, Read::Histogram(..)) {
                assert_eq!(d.kind, Kind::Histogram, "{}", d.name);
            }
        }
    }
}

#[cfg(test)]
mod deploy_tests {
    use super::METRICS;
    use std::collections::BTreeSet;

    /// Every `marketprism_storage_*` and `marketprism_cold_*` name in the shipped alerts and
    /// dashboard is one we expose, so renaming a metric cannot silently break them.
    #[test]
    fn deploy_files_use_defined_metrics() {
        let defined: BTreeSet<&str> = METRICS.iter().map(|d| d.name).collect();
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

#[cfg(test)]
mod doc_tests {
    use super::METRICS;

    /// Every family has its row in the metrics table of `docs/operations.md`, with its type.
    #[test]
    fn every_metric_has_its_row_in_operations_md() {
        let doc = include_str!("../../docs/operations.md");
        for d in METRICS {
            let row = format!("| `{}` | {} |", d.name, d.kind.as_str());
            assert!(doc.contains(&row), "docs/operations.md lacks the row {row}");
        }
    }
}

#[cfg(test)]
mod cost {
    use super::*;
    use crate::model::{Common, Record, TradeRow};

    /// A full scrape: eight types, [`MAX_MARKET_SERIES`] markets each in the quality series.
    pub(crate) fn loaded() -> Stats {
        let stats = Stats::new(0);
        let now = 1_761_040_800_000;
        for t in DataType::ALL {
            let rows: Vec<Record> = (0..MAX_MARKET_SERIES)
                .flat_map(|k| {
                    [1u64, 2, 4].map(|id| {
                        Record::Trade(TradeRow {
                            common: Common {
                                timestamp_ms: now,
                                exchange: "binance".into(),
                                market_type: "spot".into(),
                                symbol: format!("SYM{k}-USDT"),
                                data_source: "marketprism".into(),
                            },
                            trade_id: id.to_string(),
                            price: 1,
                            quantity: 1,
                            side: "buy".into(),
                            is_maker: false,
                            trade_time_ms: now,
                        })
                    })
                })
                .collect();
            stats.quality.observe(t, &rows, now, now);
            let s = stats.of(t);
            s.record_insert(
                500,
                1,
                std::time::Duration::from_millis(7),
                Some(now - 900),
                now,
            );
            s.reject("invalid_json");
        }
        stats
    }

    #[test]
    #[ignore = "measures the render cost; run with --release -- --ignored --nocapture"]
    fn render_cost() {
        let stats = loaded();
        let m = MigrationStats::new();
        let input = ScrapeInput {
            stats: &stats,
            types: &DataType::ALL,
            migration: Some(&m),
            process: None,
            ready: true,
            now_ms: 1_761_040_800_000,
        };
        let text = render(&input);
        let n = 20;
        let t0 = std::time::Instant::now();
        for _ in 0..n {
            std::hint::black_box(render(&input));
        }
        let per = t0.elapsed() / n;
        eprintln!(
            "render: {} lines, {} bytes, {per:?} per scrape",
            text.lines().count(),
            text.len()
        );
    }
}
