//! ClickHouse DDL for the hot and cold databases: the Python service's eight tables plus our own.
//!
//! Consumes nothing at run time but the database names; emits `CREATE … IF NOT EXISTS`
//! statements that are safe to run any number of times. Column names and order are the
//! Python service's (`config/clickhouse_schema.sql`); the only type changes are listed in
//! `docs/data-model.md` (the two open-interest columns widened to `Decimal128(8)`).
//! Skip indexes are part of `CREATE TABLE` instead of the Python service's non-idempotent
//! `ALTER TABLE … ADD INDEX`.

pub mod drift;

use crate::model::DataType;

/// One column of a table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Column {
    /// Column name.
    pub name: &'static str,
    /// ClickHouse type.
    pub ty: &'static str,
    /// `DEFAULT` expression, if any.
    pub default: Option<&'static str>,
    /// `CODEC(…)` contents.
    pub codec: &'static str,
    /// Whether the service writes this column (false: left to its DEFAULT, e.g. `created_at`).
    pub written: bool,
}

const fn col(name: &'static str, ty: &'static str, codec: &'static str) -> Column {
    Column {
        name,
        ty,
        default: None,
        codec,
        written: true,
    }
}

const TS: &str = "DateTime64(3, 'UTC')";
const LC: &str = "LowCardinality(String)";
const D64: &str = "Decimal64(8)";
const D128: &str = "Decimal128(8)";
const DZ: &str = "Delta, ZSTD";
const Z: &str = "ZSTD";

const DATA_SOURCE: Column = Column {
    name: "data_source",
    ty: LC,
    default: Some("'marketprism'"),
    codec: Z,
    written: true,
};
const CREATED_AT: Column = Column {
    name: "created_at",
    ty: TS,
    default: Some("now64(3)"),
    codec: DZ,
    written: false,
};

const ORDERBOOKS: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("last_update_id", "UInt64", DZ),
    col("bids_count", "UInt32", DZ),
    col("asks_count", "UInt32", DZ),
    col("best_bid_price", D64, Z),
    col("best_ask_price", D64, Z),
    col("best_bid_quantity", D64, Z),
    col("best_ask_quantity", D64, Z),
    col("bids", "String", Z),
    col("asks", "String", Z),
    DATA_SOURCE,
    CREATED_AT,
];

const TRADES: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("trade_id", "String", Z),
    col("price", D64, Z),
    col("quantity", D64, Z),
    col("side", LC, Z),
    Column {
        name: "is_maker",
        ty: "Bool",
        default: Some("false"),
        codec: Z,
        written: true,
    },
    col("trade_time", TS, DZ),
    DATA_SOURCE,
    CREATED_AT,
];

const FUNDING_RATES: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("funding_rate", D64, Z),
    col("funding_time", TS, DZ),
    col("next_funding_time", TS, DZ),
    col("mark_price", D64, Z),
    col("index_price", D64, Z),
    DATA_SOURCE,
    CREATED_AT,
];

const OPEN_INTERESTS: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("open_interest", D128, Z),
    col("open_interest_value", D128, Z),
    col("count", "UInt64", DZ),
    DATA_SOURCE,
    CREATED_AT,
];

const LIQUIDATIONS: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("side", LC, Z),
    col("price", D64, Z),
    col("quantity", D64, Z),
    col("liquidation_time", TS, DZ),
    DATA_SOURCE,
    CREATED_AT,
];

const LSR_TOP_POSITIONS: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("long_position_ratio", D64, Z),
    col("short_position_ratio", D64, Z),
    Column {
        name: "period",
        ty: LC,
        default: Some("'5m'"),
        codec: Z,
        written: true,
    },
    DATA_SOURCE,
    CREATED_AT,
];

const LSR_ALL_ACCOUNTS: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("long_account_ratio", D64, Z),
    col("short_account_ratio", D64, Z),
    Column {
        name: "period",
        ty: LC,
        default: Some("'5m'"),
        codec: Z,
        written: true,
    },
    DATA_SOURCE,
    CREATED_AT,
];

const VOLATILITY_INDICES: &[Column] = &[
    col("timestamp", TS, DZ),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("index_value", D64, Z),
    col("underlying_asset", LC, Z),
    col("maturity_date", "Date", Z),
    DATA_SOURCE,
    CREATED_AT,
];

/// Columns of `dead_letters` (hot database only).
pub const DEAD_LETTERS: &[Column] = &[
    col("received_at", TS, DZ),
    col("subject", "String", Z),
    col("stream_seq", "UInt64", DZ),
    col("data_type", LC, Z),
    col("reason", "String", Z),
    col("payload", "String", Z),
];

/// The dead-letter table's name.
pub const DEAD_LETTERS_TABLE: &str = "dead_letters";

/// Columns of `data_quality_events` (hot and cold): one row per quality event
/// (`crate::quality`). `value` is a `Decimal64(8)` like every other decimal we store.
pub const QUALITY_EVENTS: &[Column] = &[
    col("detected_at", TS, DZ),
    col("event_time", TS, DZ),
    col("data_type", LC, Z),
    col("exchange", LC, Z),
    col("market_type", LC, Z),
    col("symbol", LC, Z),
    col("kind", LC, Z),
    col("first_missing", "UInt64", Z),
    col("last_missing", "UInt64", Z),
    col("missing", "UInt64", Z),
    col("span_ms", "UInt64", Z),
    col("value", D64, Z),
    col("detail", "String", Z),
];

/// The quality events' table name (same in hot and cold).
pub const QUALITY_EVENTS_TABLE: &str = "data_quality_events";

/// Hot TTL of the quality events: 3 days, like the rows they describe.
pub const QUALITY_EVENTS_TTL: &str = "toDateTime(event_time) + INTERVAL 3 DAY DELETE";

/// How many recent insert blocks every table remembers for `insert_deduplication_token`
/// (`non_replicated_deduplication_window`, or `replicated_deduplication_window` on clusters).
///
/// The worst case of the default configuration is the trade table: batches of 100,000 rows,
/// 4 in doubt plus 64 kept in the journal, 100 partitions per batch and 17 bisection levels:
/// `pipeline::window::required_window(100_000, 400_000)` = 68 × 100 × 18 = 122,400 blocks. 160,000 leaves a
/// 30 % margin. The cost is one block hash per entry (a local file and its in-memory index
/// per table; a znode per entry in Keeper on clusters). ClickHouse's own default is 0 on a
/// plain `MergeTree`, which turns deduplication off: `init` raises it on existing tables and
/// `run` refuses to start below it (`schema::drift`).
pub const DEDUP_WINDOW: u64 = 160_000;

/// `replicated_deduplication_window_seconds` on clusters: hashes older than this (relative to
/// the table's newest insert) are dropped even inside the window. ClickHouse 26.x defaults to
/// 3600 s; a replay older than that would insert twice, so clusters keep at least 7 days, and
/// at least twice the longest `max_age` of the streams ([`needed_window_seconds`]): a batch is
/// only ever re-sent from messages still in its stream, so no replay is older than that.
pub const DEDUP_WINDOW_SECONDS: u64 = 7 * 24 * 3600;

/// The `replicated_deduplication_window_seconds` a cluster's tables need for streams whose
/// messages live at most `max_ages`: twice the longest (a replay re-sends only messages still
/// in their stream, first inserted no earlier than they were published, so it is never older
/// than `max_age`; the factor 2 is the margin for the clocks of NATS and ClickHouse), and at
/// least [`DEDUP_WINDOW_SECONDS`]. `init` raises the tables to it and `run` refuses to start
/// below it (`drift`).
pub fn needed_window_seconds(max_ages: impl IntoIterator<Item = std::time::Duration>) -> u64 {
    max_ages
        .into_iter()
        .map(|a| {
            a.as_secs()
                .saturating_add(u64::from(a.subsec_nanos() > 0))
                .saturating_mul(2)
        })
        .fold(DEDUP_WINDOW_SECONDS, u64::max)
}

/// Whether a stream's `max_age` bounds the age of a replay on a cluster: 0 (no age limit)
/// does not, since a message kept for longer than the replicas keep its hashes would be stored
/// twice when re-sent. The reason is for the key's error message.
pub fn replay_fits_window(max_age: std::time::Duration) -> Result<(), String> {
    if max_age.is_zero() {
        return Err(format!(
            "must be set (not 0 = unlimited) with clickhouse.cluster: a replay older than the replicated tables' {} would be stored twice",
            drift::REPLICATED_WINDOW_SECONDS
        ));
    }
    Ok(())
}

/// The `Distributed` sharding key of a table: a function of the row alone, so a re-sent batch
/// sends each row to the shard it went to the first time and that shard's replicated table
/// recognises the token. Market tables (and the quality events) shard by market, so a market's
/// rows stay together on one shard; dead letters (no market columns) by subject.
pub fn sharding_key(table: &str) -> &'static str {
    if table == DEAD_LETTERS_TABLE {
        "cityHash64(subject)"
    } else {
        "cityHash64(exchange, market_type, symbol)"
    }
}

/// A ClickHouse string literal: `'…'` with `\` and `'` escaped (and control characters as
/// escapes), so any value is data, never SQL.
pub fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('\'');
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c => out.push(c),
        }
    }
    out.push('\'');
    out
}

/// Columns of a market-data table, in the Python service's order.
pub fn columns(t: DataType) -> &'static [Column] {
    match t {
        DataType::Orderbook => ORDERBOOKS,
        DataType::Trade => TRADES,
        DataType::FundingRate => FUNDING_RATES,
        DataType::OpenInterest => OPEN_INTERESTS,
        DataType::Liquidation => LIQUIDATIONS,
        DataType::LsrTopPosition => LSR_TOP_POSITIONS,
        DataType::LsrAllAccount => LSR_ALL_ACCOUNTS,
        DataType::VolatilityIndex => VOLATILITY_INDICES,
    }
}

/// `ORDER BY` key of a market-data table (the Python service's).
pub fn order_by(t: DataType) -> &'static str {
    match t {
        DataType::Orderbook => "timestamp, exchange, symbol, last_update_id",
        DataType::Trade => "timestamp, exchange, symbol, trade_id",
        DataType::LsrTopPosition | DataType::LsrAllAccount => "timestamp, exchange, symbol, period",
        _ => "timestamp, exchange, symbol",
    }
}

/// The Python service's minmax skip indexes (hot tables), as `INDEX` clauses.
fn skip_indexes(t: DataType) -> &'static [&'static str] {
    match t {
        DataType::Orderbook => {
            &["INDEX idx_price_range (best_bid_price, best_ask_price) TYPE minmax GRANULARITY 4"]
        }
        DataType::Trade => &[
            "INDEX idx_price_quantity (price, quantity) TYPE minmax GRANULARITY 4",
            "INDEX idx_trade_time (trade_time) TYPE minmax GRANULARITY 4",
        ],
        DataType::FundingRate => {
            &["INDEX idx_funding_rate (funding_rate) TYPE minmax GRANULARITY 4"]
        }
        DataType::OpenInterest => {
            &["INDEX idx_open_interest (open_interest) TYPE minmax GRANULARITY 4"]
        }
        DataType::Liquidation => &["INDEX idx_liquidation_price (price) TYPE minmax GRANULARITY 4"],
        DataType::LsrTopPosition => &[
            "INDEX idx_lsr_top_ratio (long_position_ratio, short_position_ratio) TYPE minmax GRANULARITY 4",
        ],
        DataType::LsrAllAccount => &[
            "INDEX idx_lsr_account_ratio (long_account_ratio, short_account_ratio) TYPE minmax GRANULARITY 4",
        ],
        DataType::VolatilityIndex => {
            &["INDEX idx_volatility_value (index_value) TYPE minmax GRANULARITY 4"]
        }
    }
}

/// The columns the service writes, comma-separated and back-quoted, for `INSERT INTO t (…)`.
pub fn insert_column_list(cols: &[Column]) -> String {
    cols.iter()
        .filter(|c| c.written)
        .map(|c| format!("`{}`", c.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Which flavour of DDL to produce.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// One server (or the embedded engine): plain `MergeTree` tables.
    Single,
    /// A cluster: `ReplicatedMergeTree` local tables `<t>_local` plus `Distributed` tables
    /// `<t>` sharded by market ([`sharding_key`]), all `ON CLUSTER <name>`.
    Cluster(String),
}

/// The tier a database plays: hot has the 3-day TTL and the dead letters, cold keeps forever.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// 3-day retention, written by the ingest pipeline.
    Hot,
    /// No TTL, written by the migrator.
    Cold,
}

/// How long hot keeps a row: the 3 days of [`HOT_TTL`] (the migrator compares every chunk hot
/// still holds inside it).
pub const HOT_RETENTION: std::time::Duration = std::time::Duration::from_secs(3 * 24 * 3600);

/// Hot TTL expression (the Python service's, valid on ClickHouse 23.8 where DateTime64 TTLs were not).
pub const HOT_TTL: &str = "toDateTime(timestamp) + INTERVAL 3 DAY DELETE";

/// Dead letters are kept for 30 days: long enough to investigate and replay them.
pub const DEAD_LETTER_TTL: &str = "toDateTime(received_at) + INTERVAL 30 DAY DELETE";

struct TableSpec<'a> {
    name: &'a str,
    columns: &'a [Column],
    indexes: &'a [&'a str],
    partition_by: &'a str,
    order_by: &'a str,
    ttl: Option<&'a str>,
}

fn column_lines(cols: &[Column]) -> Vec<String> {
    cols.iter()
        .map(|c| {
            let mut s = format!("    `{}` {}", c.name, c.ty);
            if let Some(d) = c.default {
                s.push_str(&format!(" DEFAULT {d}"));
            }
            s.push_str(&format!(" CODEC({})", c.codec));
            s
        })
        .collect()
}

fn create_table(db: &str, spec: &TableSpec<'_>, layout: &Layout) -> Vec<String> {
    let mut body = column_lines(spec.columns);
    body.extend(spec.indexes.iter().map(|i| format!("    {i}")));
    let body = body.join(",\n");
    let mut tail = String::new();
    if let Some(ttl) = spec.ttl {
        tail.push_str(&format!("\nTTL {ttl}"));
    }
    tail.push_str(&format!(
        "\nSETTINGS index_granularity = 8192, {}",
        match layout {
            Layout::Single => format!("non_replicated_deduplication_window = {DEDUP_WINDOW}"),
            Layout::Cluster(_) => format!(
                "replicated_deduplication_window = {DEDUP_WINDOW}, replicated_deduplication_window_seconds = {DEDUP_WINDOW_SECONDS}"
            ),
        }
    ));
    match layout {
        Layout::Single => vec![format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`{name}`\n(\n{body}\n)\nENGINE = MergeTree\nPARTITION BY {p}\nORDER BY ({o}){tail}",
            name = spec.name,
            p = spec.partition_by,
            o = spec.order_by,
        )],
        Layout::Cluster(cluster) => vec![
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`{name}_local` ON CLUSTER `{cluster}`\n(\n{body}\n)\nENGINE = ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/{name}_local', '{{replica}}')\nPARTITION BY {p}\nORDER BY ({o}){tail}",
                name = spec.name,
                p = spec.partition_by,
                o = spec.order_by,
            ),
            format!(
                "CREATE TABLE IF NOT EXISTS `{db}`.`{name}` ON CLUSTER `{cluster}` AS `{db}`.`{name}_local`\nENGINE = Distributed(`{cluster}`, `{db}`, `{name}_local`, {key})",
                name = spec.name,
                key = sharding_key(spec.name),
            ),
        ],
    }
}

/// Every statement that creates one database and its tables, in order.
pub fn database_ddl(db: &str, tier: Tier, layout: &Layout) -> Vec<String> {
    let on_cluster = match layout {
        Layout::Single => String::new(),
        Layout::Cluster(c) => format!(" ON CLUSTER `{c}`"),
    };
    let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS `{db}`{on_cluster}")];
    for t in DataType::ALL {
        let spec = TableSpec {
            name: t.table(),
            columns: columns(t),
            indexes: if tier == Tier::Hot {
                skip_indexes(t)
            } else {
                &[]
            },
            partition_by: "(toYYYYMM(timestamp), exchange)",
            order_by: order_by(t),
            ttl: (tier == Tier::Hot).then_some(HOT_TTL),
        };
        out.extend(create_table(db, &spec, layout));
    }
    let spec = TableSpec {
        name: QUALITY_EVENTS_TABLE,
        columns: QUALITY_EVENTS,
        indexes: &[],
        partition_by: "toYYYYMM(event_time)",
        order_by: "event_time, data_type, exchange, symbol, kind",
        ttl: (tier == Tier::Hot).then_some(QUALITY_EVENTS_TTL),
    };
    out.extend(create_table(db, &spec, layout));
    if tier == Tier::Cold {
        out.extend(migration_state_ddl(db, layout));
    }
    if tier == Tier::Hot {
        let spec = TableSpec {
            name: DEAD_LETTERS_TABLE,
            columns: DEAD_LETTERS,
            indexes: &[],
            partition_by: "toYYYYMM(received_at)",
            order_by: "received_at, data_type",
            ttl: Some(DEAD_LETTER_TTL),
        };
        out.extend(create_table(db, &spec, layout));
    }
    out
}

/// The migrator's watermark table in the cold database: one row per (table, filters), the
/// newest `updated_at` wins (`ReplacingMergeTree`; readers take `argMax`).
pub const MIGRATION_STATE_TABLE: &str = "migration_state";
/// The migrator's history in the cold database: one row per chunk handled.
pub const MIGRATION_CHUNKS_TABLE: &str = "migration_chunks";

/// `CREATE TABLE` statements for the migrator's state tables (cold database only).
pub fn migration_state_ddl(db: &str, layout: &Layout) -> Vec<String> {
    let (on_cluster, replacing, merge) = match layout {
        Layout::Single => (
            String::new(),
            "ReplacingMergeTree(updated_at)".to_string(),
            "MergeTree".to_string(),
        ),
        Layout::Cluster(c) => (
            format!(" ON CLUSTER `{c}`"),
            format!(
                "ReplicatedReplacingMergeTree('/clickhouse/tables/{{shard}}/{db}/{MIGRATION_STATE_TABLE}', '{{replica}}', updated_at)"
            ),
            format!(
                "ReplicatedMergeTree('/clickhouse/tables/{{shard}}/{db}/{MIGRATION_CHUNKS_TABLE}', '{{replica}}')"
            ),
        ),
    };
    vec![
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`{MIGRATION_STATE_TABLE}`{on_cluster}\n(\n    \
             `table` LowCardinality(String),\n    \
             `filters` String,\n    \
             `watermark` {TS},\n    \
             `verified_until` {TS},\n    \
             `updated_at` {TS} DEFAULT now64(3)\n)\n\
             ENGINE = {replacing}\nORDER BY (`table`, `filters`)"
        ),
        format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`{MIGRATION_CHUNKS_TABLE}`{on_cluster}\n(\n    \
             `table` LowCardinality(String),\n    \
             `chunk_start` {TS},\n    \
             `chunk_end` {TS},\n    \
             `filters` String,\n    \
             `rows_hot` UInt64,\n    \
             `rows_cold` UInt64,\n    \
             `fingerprint_hot` UInt64,\n    \
             `fingerprint_cold` UInt64,\n    \
             `rows_copied` UInt64,\n    \
             `status` LowCardinality(String),\n    \
             `at` {TS} DEFAULT now64(3)\n)\n\
             ENGINE = {merge}\nPARTITION BY toYYYYMM(chunk_start)\nORDER BY (`table`, `chunk_start`, `at`)"
        ),
    ]
}

/// Single-table tiering for one server with two disks: the eight tables once, in `db`, with
/// `TTL … TO VOLUME 'cold'` moving parts older than 3 days to the `cold` volume of storage
/// policy `policy` (which the server's configuration must define; see `docs/migration.md`).
/// No migrator, no second database; rows are never deleted.
pub fn tiered_ddl(db: &str, policy: &str) -> Vec<String> {
    let mut out = vec![format!("CREATE DATABASE IF NOT EXISTS `{db}`")];
    for t in DataType::ALL {
        let mut body = column_lines(columns(t));
        body.extend(skip_indexes(t).iter().map(|i| format!("    {i}")));
        out.push(format!(
            "CREATE TABLE IF NOT EXISTS `{db}`.`{name}`\n(\n{body}\n)\nENGINE = MergeTree\nPARTITION BY (toYYYYMM(timestamp), exchange)\nORDER BY ({o})\nTTL toDateTime(timestamp) + INTERVAL 3 DAY TO VOLUME 'cold'\nSETTINGS index_granularity = 8192, storage_policy = '{policy}', non_replicated_deduplication_window = {DEDUP_WINDOW}",
            name = t.table(),
            body = body.join(",\n"),
            o = order_by(t),
        ));
    }
    out.push(format!(
        "CREATE TABLE IF NOT EXISTS `{db}`.`{QUALITY_EVENTS_TABLE}`\n(\n{body}\n)\nENGINE = MergeTree\nPARTITION BY toYYYYMM(event_time)\nORDER BY (event_time, data_type, exchange, symbol, kind)\nTTL toDateTime(event_time) + INTERVAL 3 DAY TO VOLUME 'cold'\nSETTINGS index_granularity = 8192, storage_policy = '{policy}', non_replicated_deduplication_window = {DEDUP_WINDOW}",
        body = column_lines(QUALITY_EVENTS).join(",\n"),
    ));
    out
}

/// The full DDL: hot database then cold database.
pub fn full_ddl(hot_db: &str, cold_db: &str, layout: &Layout) -> Vec<String> {
    let mut out = database_ddl(hot_db, Tier::Hot, layout);
    out.extend(database_ddl(cold_db, Tier::Cold, layout));
    out
}

/// Renders statements as one SQL script (`;` + blank line between statements).
pub fn render_script(statements: &[String]) -> String {
    let mut s = String::new();
    for st in statements {
        s.push_str(st);
        s.push_str(";\n\n");
    }
    s
}

/// Every table of the hot (`hot = true`) or cold database, as created by [`database_ddl`]
/// (both hold `data_quality_events`).
pub fn table_names(hot: bool) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = DataType::ALL.iter().map(|t| t.table()).collect();
    v.push(QUALITY_EVENTS_TABLE);
    if hot {
        v.push(DEAD_LETTERS_TABLE);
    } else {
        v.push(MIGRATION_STATE_TABLE);
        v.push(MIGRATION_CHUNKS_TABLE);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_golden(name: &str, actual: &str) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src/schema/golden")
            .join(name);
        if std::env::var_os("UPDATE_GOLDEN").is_some() {
            std::fs::write(&path, actual).unwrap();
        }
        let expected = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            expected == actual,
            "{} differs from the generated DDL; rerun with UPDATE_GOLDEN=1 and review the diff",
            path.display()
        );
    }

    #[test]
    fn single_server_ddl_matches_golden_file() {
        let ddl = full_ddl("marketprism_hot", "marketprism_cold", &Layout::Single);
        check_golden("single.sql", &render_script(&ddl));
    }

    #[test]
    fn cluster_ddl_matches_golden_file() {
        let ddl = full_ddl(
            "marketprism_hot",
            "marketprism_cold",
            &Layout::Cluster("mp".into()),
        );
        check_golden("cluster.sql", &render_script(&ddl));
    }

    /// The Python service's golden DDL sharded every table by `cityHash64(exchange, symbol)`,
    /// which `dead_letters` has no columns for: its `ON CLUSTER` statement could never run.
    #[test]
    fn every_sharding_key_names_columns_of_its_table() {
        for tier in [Tier::Hot, Tier::Cold] {
            for st in database_ddl("h", tier, &Layout::Cluster("mp".into())) {
                let Some((head, engine)) = st.split_once("\nENGINE = Distributed(") else {
                    continue;
                };
                let table = head.split('`').nth(3).unwrap_or_default().to_string();
                let key = sharding_key(&table);
                assert!(engine.ends_with(&format!(", {key})")), "{st}");
                let cols: Vec<&str> = match table.as_str() {
                    DEAD_LETTERS_TABLE => DEAD_LETTERS.iter().map(|c| c.name).collect(),
                    QUALITY_EVENTS_TABLE => QUALITY_EVENTS.iter().map(|c| c.name).collect(),
                    t => DataType::ALL
                        .iter()
                        .find(|d| d.table() == t)
                        .map(|d| columns(*d).iter().map(|c| c.name).collect())
                        .unwrap_or_default(),
                };
                let args = key
                    .strip_prefix("cityHash64(")
                    .and_then(|k| k.strip_suffix(')'))
                    .unwrap_or_default();
                for a in args.split(", ") {
                    assert!(cols.contains(&a), "{table}: {a} is not a column");
                }
            }
        }
    }

    #[test]
    fn replays_fit_the_window_only_with_a_bounded_stream_age() {
        use std::time::Duration;
        assert!(replay_fits_window(Duration::ZERO).is_err());
        assert!(replay_fits_window(Duration::from_secs(1)).is_ok());
        let day = Duration::from_secs(86_400);
        assert_eq!(needed_window_seconds([]), DEDUP_WINDOW_SECONDS);
        assert_eq!(needed_window_seconds([2 * day, day]), DEDUP_WINDOW_SECONDS);
        assert_eq!(
            needed_window_seconds([2 * day, 4 * day]),
            8 * 86_400,
            "twice the longest"
        );
        assert_eq!(
            needed_window_seconds([Duration::from_millis(3_500_000_500)]),
            2 * 3_500_001
        );
    }

    #[test]
    fn tiered_ddl_matches_golden_file() {
        let ddl = tiered_ddl("marketprism", "hot_cold");
        check_golden("tiered.sql", &render_script(&ddl));
    }

    #[test]
    fn every_statement_is_idempotent_and_hot_has_ttl_cold_has_none() {
        let hot = database_ddl("h", Tier::Hot, &Layout::Single);
        let cold = database_ddl("c", Tier::Cold, &Layout::Single);
        assert_eq!(hot.len(), 1 + 8 + 1 + 1);
        assert_eq!(cold.len(), 1 + 8 + 1 + 2);
        for s in hot.iter().chain(&cold) {
            assert!(s.contains("IF NOT EXISTS"), "{s}");
            assert!(!s.contains("ALTER"), "{s}");
        }
        assert!(hot[1..].iter().all(|s| s.contains("TTL ")));
        assert!(cold.iter().all(|s| !s.contains("TTL ")));
        assert!(cold[10..].iter().all(|s| s.contains("migration_")));
        assert!(hot[9].contains("data_quality_events") && cold[9].contains("data_quality_events"));
        assert!(
            hot[1..]
                .iter()
                .chain(&cold[1..10])
                .all(|s| s.contains(&format!(
                    "non_replicated_deduplication_window = {DEDUP_WINDOW}"
                )))
        );
    }

    #[test]
    fn dedup_window_is_in_every_table() {
        for ddl in [
            render_script(&full_ddl("h", "c", &Layout::Single)),
            render_script(&full_ddl("h", "c", &Layout::Cluster("mp".into()))),
            render_script(&tiered_ddl("h", "p")),
        ] {
            assert!(ddl.contains(&format!("deduplication_window = {DEDUP_WINDOW}")));
            assert!(!ddl.contains("deduplication_window = 1000,"));
        }
    }

    #[test]
    fn hot_retention_is_the_ttl() {
        assert!(HOT_TTL.contains(&format!("{} DAY", HOT_RETENTION.as_secs() / 86_400)));
    }

    #[test]
    fn insert_columns_skip_created_at() {
        let cols = insert_column_list(columns(DataType::Trade));
        assert_eq!(
            cols,
            "`timestamp`, `exchange`, `market_type`, `symbol`, `trade_id`, `price`, `quantity`, `side`, `is_maker`, `trade_time`, `data_source`"
        );
    }
}
