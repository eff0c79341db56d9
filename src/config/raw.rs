//! The raw shape of the YAML file: every key optional, unknown keys refused.
//!
//! This is step one of two (step two is `resolve`): it only checks the shape and the scalar
//! syntax (durations, sizes, ports). It also accepts the keys of the Python service's
//! `hot_storage_config.yaml`: those that mean something for us are mapped in `resolve`; those
//! that do not are listed in [`PYTHON_IGNORED`] and produce a warning.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;
use serde::de::IgnoredAny;

use super::value::{DurationValue, PortValue, SizeValue};

/// Keys of the Python service's shipped file that have no meaning here, with the reason given in the warning.
pub(crate) const PYTHON_IGNORED: &[(&str, &str)] = &[
    (
        "nats.max_reconnect_attempts",
        "we reconnect to NATS forever",
    ),
    (
        "nats.reconnect_time_wait",
        "we reconnect with backoff (retry.*)",
    ),
    (
        "batch.high_freq_types",
        "every type is consumed from JetStream; streams are set in nats.streams",
    ),
    (
        "hot_storage.clickhouse_tcp_port",
        "we use the HTTP interface only",
    ),
    (
        "hot_storage.retention_days",
        "retention is the tables' TTL (schema)",
    ),
    (
        "hot_storage.batch_size",
        "the Python service ignored it too; use batch.*",
    ),
    (
        "hot_storage.flush_interval",
        "the Python service ignored it too; use batch.*",
    ),
    (
        "hot_storage.connection_pool",
        "connections are pooled by the HTTP client",
    ),
    (
        "hot_storage.performance",
        "compression is clickhouse.compression; other settings do not apply",
    ),
    (
        "hot_storage.tables",
        "tables are always created from the built-in schema",
    ),
    ("logging.output", "logs always go to stderr"),
    (
        "monitoring",
        "health is computed continuously; metrics are served on request",
    ),
    ("performance", "the Python service did not read it"),
    (
        "security",
        "the Python service did not read it; use clickhouse.secure and http.token",
    ),
];

/// The whole file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawConfig {
    pub nats: RawNats,
    pub clickhouse: RawClickHouse,
    pub cold_clickhouse: RawColdClickHouse,
    pub embedded: RawEmbedded,
    pub batch: RawBatch,
    pub retry: RawRetry,
    pub http: RawHttp,
    pub log: RawLog,
    pub migration: RawMigration,
    pub quality: RawQuality,
    pub shutdown: RawShutdown,
    /// Python service: the HTTP port → `http.port`.
    pub http_port: Option<PortValue>,
    /// Python service: the metrics port → `http.metrics_port`.
    pub metrics_port: Option<PortValue>,
    /// Python service: ClickHouse connection → `clickhouse.*`.
    pub hot_storage: PythonHotStorage,
    /// Python service: enabled types → `nats.types`.
    pub subscriptions: PythonSubscriptions,
    /// Python service: log settings → `log.*`.
    pub logging: PythonLogging,
    pub monitoring: Option<PythonMonitoring>,
    pub performance: Option<PythonPerformance>,
    pub security: Option<PythonSecurity>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawNats {
    pub url: Option<String>,
    /// Python service: a list of server URLs.
    pub servers: Option<Vec<String>>,
    pub mode: Option<String>,
    pub streams: RawStreams,
    pub consumer_prefix: Option<String>,
    pub ack_wait: Option<DurationValue>,
    pub max_ack_pending: Option<u64>,
    pub fetch_batch: Option<u64>,
    pub fetch_max_bytes: Option<SizeValue>,
    pub journal_bucket: Option<String>,
    pub types: Option<Vec<String>>,
    pub max_reconnect_attempts: Option<IgnoredAny>,
    pub reconnect_time_wait: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStreams {
    pub market_data: RawStream,
    pub high_frequency: RawStream,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawStream {
    pub name: Option<String>,
    pub subjects: Option<Vec<String>>,
    pub max_age: Option<DurationValue>,
    pub max_msgs: Option<i64>,
    pub max_bytes: Option<SizeValue>,
    pub duplicate_window: Option<DurationValue>,
    pub storage: Option<String>,
    pub discard: Option<String>,
    pub replicas: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawClickHouse {
    pub host: Option<String>,
    pub http_port: Option<PortValue>,
    pub secure: Option<bool>,
    pub hot_db: Option<String>,
    pub cold_db: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub compression: Option<String>,
    pub insert_timeout: Option<DurationValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawColdClickHouse {
    pub host: Option<String>,
    pub http_port: Option<PortValue>,
    pub secure: Option<bool>,
    pub user: Option<String>,
    pub password: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawEmbedded {
    pub data_dir: Option<PathBuf>,
    pub tools_dir: Option<PathBuf>,
    pub listen: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawBatch {
    pub max_rows: Option<u64>,
    pub max_bytes: Option<SizeValue>,
    pub max_age: Option<DurationValue>,
    /// Per data type (or table name, as in the Python service README's table).
    pub types: BTreeMap<String, RawTypeBatch>,
    /// Python service: orderbook rows per flush → `batch.types.orderbook.max_rows`.
    pub max_batch_size: Option<u64>,
    /// Python service: trade rows per flush → `batch.types.trade.max_rows`.
    pub trade_batch_size: Option<u64>,
    /// Python service: low-frequency rows per flush → `max_rows` of the six low-frequency types.
    pub low_freq_batch_size: Option<u64>,
    /// Python service: trade flush timer → `batch.types.trade.max_age`.
    pub flush_interval: Option<DurationValue>,
    /// Python service: orderbook flush timer → `batch.types.orderbook.max_age`.
    pub orderbook_flush_interval: Option<DurationValue>,
    pub high_freq_types: Option<IgnoredAny>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawTypeBatch {
    /// Also `batch_size` (the Python service README's column name).
    #[serde(alias = "batch_size")]
    pub max_rows: Option<u64>,
    pub max_bytes: Option<SizeValue>,
    /// Also `timeout` (the Python service README's column name).
    #[serde(alias = "timeout")]
    pub max_age: Option<DurationValue>,
    pub max_queue: Option<u64>,
    pub max_queue_bytes: Option<SizeValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawRetry {
    pub initial_backoff: Option<DurationValue>,
    pub max_backoff: Option<DurationValue>,
    pub multiplier: Option<f64>,
    /// Python service: accepted and ignored (we retry retriable errors forever).
    pub max_retries: Option<u64>,
    /// Python service: first delay → `retry.initial_backoff`.
    pub delay_seconds: Option<DurationValue>,
    /// Python service → `retry.multiplier`.
    pub backoff_multiplier: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawHttp {
    pub port: Option<PortValue>,
    pub bind: Option<String>,
    pub token: Option<String>,
    pub metrics_port: Option<PortValue>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawLog {
    pub level: Option<String>,
    pub format: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawMigration {
    pub enabled: Option<bool>,
    pub window_hours: Option<f64>,
    pub batch_limit: Option<u64>,
    pub symbol_prefix: Option<String>,
    pub exchange: Option<String>,
    pub market_type: Option<String>,
    pub dry_run: Option<bool>,
    pub interval: Option<DurationValue>,
    pub lag: Option<DurationValue>,
    pub recheck_windows: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawQuality {
    pub enabled: Option<bool>,
    pub price_jump: Option<f64>,
    pub sequential_ids: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawShutdown {
    pub grace_period: Option<DurationValue>,
}

/// The Python service's `hot_storage` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PythonHotStorage {
    pub clickhouse_host: Option<String>,
    pub clickhouse_http_port: Option<PortValue>,
    pub clickhouse_user: Option<String>,
    pub clickhouse_password: Option<String>,
    pub clickhouse_database: Option<String>,
    pub clickhouse_tcp_port: Option<IgnoredAny>,
    pub retention_days: Option<IgnoredAny>,
    pub batch_size: Option<IgnoredAny>,
    pub flush_interval: Option<IgnoredAny>,
    pub connection_pool: Option<PythonConnectionPool>,
    pub performance: Option<PythonHotPerformance>,
    pub tables: Option<PythonTables>,
}

// The fields are only there to accept the Python service's keys; they are never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PythonConnectionPool {
    size: Option<IgnoredAny>,
    max_retries: Option<IgnoredAny>,
    timeout: Option<IgnoredAny>,
}

// The fields are only there to accept the Python service's keys; they are never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PythonHotPerformance {
    enable_compression: Option<IgnoredAny>,
    compression_method: Option<IgnoredAny>,
    compression_level: Option<IgnoredAny>,
    max_insert_threads: Option<IgnoredAny>,
    insert_quorum: Option<IgnoredAny>,
}

// The fields are only there to accept the Python service's keys; they are never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PythonTables {
    schema_file: Option<IgnoredAny>,
    auto_create: Option<IgnoredAny>,
    auto_optimize: Option<IgnoredAny>,
}

/// The Python service's `subscriptions` section: which types it consumed.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PythonSubscriptions {
    pub orderbook_enabled: Option<bool>,
    pub trade_enabled: Option<bool>,
    pub funding_rate_enabled: Option<bool>,
    pub open_interest_enabled: Option<bool>,
    pub liquidation_enabled: Option<bool>,
    /// Both long/short-ratio types.
    pub lsr_enabled: Option<bool>,
    pub volatility_index_enabled: Option<bool>,
}

/// The Python service's `logging` section.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct PythonLogging {
    pub level: Option<String>,
    pub format: Option<String>,
    pub output: Option<IgnoredAny>,
}

// The fields are only there to accept the Python service's keys; they are never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PythonMonitoring {
    health_check_interval: Option<IgnoredAny>,
    metrics_collection_interval: Option<IgnoredAny>,
}

// The fields are only there to accept the Python service's keys; they are never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PythonPerformance {
    max_concurrent_transfers: Option<IgnoredAny>,
    transfer_timeout_minutes: Option<IgnoredAny>,
    connection_pool_size: Option<IgnoredAny>,
}

// The fields are only there to accept the Python service's keys; they are never read.
#[allow(dead_code)]
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PythonSecurity {
    enable_ssl: Option<IgnoredAny>,
    verify_checksums: Option<IgnoredAny>,
    encrypt_transfers: Option<IgnoredAny>,
}

/// Whether the dotted `key` is present in the parsed document.
pub(crate) fn has_key(doc: &serde_yaml::Value, key: &str) -> bool {
    let mut node = doc;
    for part in key.split('.') {
        match node.get(part) {
            Some(next) => node = next,
            None => return false,
        }
    }
    true
}
