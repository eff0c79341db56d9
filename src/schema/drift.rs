//! Schema drift: what the existing tables lack for our guarantees, and the in-place changes
//! (`ALTER TABLE …`) that bring them up to it without losing a row.
//!
//! Consumes the server's `system.tables`, `system.columns` and `system.merge_tree_settings`
//! (read by `sink::ddl::read_server`) and the tables we expect ([`expected_tables`]); emits [`Drift`]s,
//! each with its [`Severity`] and, when it can be fixed in place, the statement that fixes
//! it. [`diff`] is pure; `init` applies the fixes (`sink::ddl::apply_fixes`), `init --check` and `run`
//! only report. Never drops, renames or rebuilds a table and never deletes a row.
//!
//! Errors (exactly-once or inserts break): a missing table, a deduplication window below
//! what a replay needs (ClickHouse's default on a plain `MergeTree` is 0: off), a column we
//! write that is missing or too narrow (the Python service's `Decimal64(8)` open interest,
//! which overflows on real notionals), an engine that collapses rows. Warnings (our
//! guarantees hold): another sort or partition key (the Python service's are fine), a missing
//! hot TTL or a TTL on cold, extra columns, a wider type than ours.

use std::collections::BTreeMap;
use std::fmt;

use crate::model::DataType;

use super::{
    Column, DEAD_LETTERS, DEAD_LETTERS_TABLE, DEDUP_WINDOW_SECONDS, Layout, MIGRATION_CHUNKS_TABLE,
    MIGRATION_STATE_TABLE, QUALITY_EVENTS, QUALITY_EVENTS_TABLE, Tier, columns, order_by,
    sharding_key,
};

/// What the deduplicated tables must remember: `blocks` entries (the window) and, on replicated
/// tables, hashes for `seconds` (`replicated_deduplication_window_seconds`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Windows {
    /// Blocks (`pipeline::window::needed_window`).
    pub blocks: u64,
    /// Seconds (`schema::needed_window_seconds`).
    pub seconds: u64,
}

impl From<u64> for Windows {
    /// `blocks` with the default age limit [`DEDUP_WINDOW_SECONDS`].
    fn from(blocks: u64) -> Self {
        Windows {
            blocks,
            seconds: DEDUP_WINDOW_SECONDS,
        }
    }
}

/// Setting name of the deduplication window of a plain `MergeTree`.
pub const NON_REPLICATED_WINDOW: &str = "non_replicated_deduplication_window";
/// Setting name of the deduplication window of a `Replicated*MergeTree`.
pub const REPLICATED_WINDOW: &str = "replicated_deduplication_window";
/// Setting name of the age limit of the deduplication hashes of a `Replicated*MergeTree`.
pub const REPLICATED_WINDOW_SECONDS: &str = "replicated_deduplication_window_seconds";

/// How bad a drift is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Exactly-once or inserts break: `init --check` exits non-zero, `run` refuses to start.
    Error,
    /// Our guarantees hold; reported so nobody is surprised.
    Warning,
}

impl Severity {
    /// `error` or `warning`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

/// One difference between a table as it exists and what the service needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drift {
    /// Database.
    pub database: String,
    /// Table.
    pub table: String,
    /// What differs: `table`, a setting name, `column <name>`, `engine`, `ORDER BY`, `TTL`.
    pub item: String,
    /// What the table has.
    pub found: String,
    /// What the service needs.
    pub needed: String,
    /// How bad it is.
    pub severity: Severity,
    /// Why it matters, in a few words.
    pub why: &'static str,
    /// The statement that fixes it in place, when there is one.
    pub fix: Option<String>,
}

impl fmt::Display for Drift {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{}: {} is {}, needs {} ({})",
            self.database, self.table, self.item, self.found, self.needed, self.why
        )
    }
}

/// A table the service expects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expected {
    /// Database.
    pub database: String,
    /// Table name on the server (`<t>_local` for the replicated tables of a cluster).
    pub table: String,
    /// Columns we rely on (empty: only its existence is checked).
    pub columns: &'static [Column],
    /// Our sorting key as `system.tables.sorting_key` shows it, if we have an opinion.
    pub sorting_key: Option<&'static str>,
    /// Whether inserts into it rely on `insert_deduplication_token`.
    pub dedup: bool,
    /// A cluster's routing table: its `Distributed` sharding key (the rows of a retry must go
    /// to the shards they went to).
    pub sharding_key: Option<&'static str>,
    /// `Some(true)`: rows must expire (hot); `Some(false)`: rows must stay (cold).
    pub ttl: Option<bool>,
    /// `ON CLUSTER` for the fixes.
    pub cluster: Option<String>,
    /// Whether the service runs without it (then a missing table is only a warning).
    pub optional: bool,
}

impl Expected {
    /// A drift of this table.
    fn drift(
        &self,
        item: &str,
        found: String,
        needed: String,
        severity: Severity,
        why: &'static str,
        fix: Option<String>,
    ) -> Drift {
        Drift {
            database: self.database.clone(),
            table: self.table.clone(),
            item: item.to_string(),
            found,
            needed,
            severity,
            why,
            fix,
        }
    }
}

/// Name, columns, sorting key, TTL expectation of one table.
type TableShape = (
    &'static str,
    &'static [Column],
    Option<&'static str>,
    Option<bool>,
);

/// The tables of one database of `tier` as [`super::database_ddl`] creates them.
pub fn expected_tables(db: &str, tier: Tier, layout: &Layout) -> Vec<Expected> {
    let cluster = match layout {
        Layout::Single => None,
        Layout::Cluster(c) => Some(c.clone()),
    };
    let mut specs: Vec<TableShape> = DataType::ALL
        .iter()
        .map(|t| {
            (
                t.table(),
                columns(*t),
                Some(order_by(*t)),
                Some(tier == Tier::Hot),
            )
        })
        .collect();
    specs.push((
        QUALITY_EVENTS_TABLE,
        QUALITY_EVENTS,
        None,
        Some(tier == Tier::Hot),
    ));
    if tier == Tier::Hot {
        specs.push((DEAD_LETTERS_TABLE, DEAD_LETTERS, None, None));
    }
    let mut out = Vec::new();
    for (name, cols, key, ttl) in specs {
        let base = Expected {
            database: db.to_string(),
            table: name.to_string(),
            columns: cols,
            sorting_key: key,
            dedup: true,
            sharding_key: None,
            ttl,
            cluster: cluster.clone(),
            // Without it the pipeline runs with quality detection off (docs/quality.md).
            optional: name == QUALITY_EVENTS_TABLE,
        };
        if cluster.is_some() {
            // The replicated table stores and deduplicates; the Distributed one routes.
            out.push(Expected {
                table: format!("{name}_local"),
                ..base.clone()
            });
            out.push(Expected {
                sorting_key: None,
                dedup: false,
                sharding_key: Some(sharding_key(name)),
                ttl: None,
                ..base
            });
        } else {
            out.push(base);
        }
    }
    if tier == Tier::Cold {
        for name in [MIGRATION_STATE_TABLE, MIGRATION_CHUNKS_TABLE] {
            out.push(Expected {
                database: db.to_string(),
                table: name.to_string(),
                columns: &[],
                sorting_key: None,
                dedup: false,
                sharding_key: None,
                ttl: None,
                cluster: cluster.clone(),
                optional: false,
            });
        }
    }
    out
}

/// A column as `system.columns` shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct FoundColumn {
    /// Column name.
    pub name: String,
    /// Type as ClickHouse prints it (`Decimal(18, 8)` for `Decimal64(8)`).
    #[serde(rename = "type")]
    pub ty: String,
}

/// A table as `system.tables` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FoundTable {
    /// Engine name (`MergeTree`, `ReplicatedMergeTree`, `Distributed`, …).
    pub engine: String,
    /// Engine clause with keys, TTL and `SETTINGS`.
    pub engine_full: String,
    /// Sorting key.
    pub sorting_key: String,
    /// Columns in order.
    pub columns: Vec<FoundColumn>,
}

/// What exists on a server: tables by (database, name), and the server's MergeTree defaults
/// for the settings a table does not set itself.
#[derive(Debug, Clone, Default)]
pub struct ServerState {
    /// Tables by (database, name).
    pub tables: BTreeMap<(String, String), FoundTable>,
    /// `system.merge_tree_settings` values of the deduplication settings.
    pub defaults: BTreeMap<String, String>,
}

/// `Decimal32/64/128/256(S)` → `Decimal(P, S)`, as `system.columns` prints types.
pub fn normalize_type(ty: &str) -> String {
    for (alias, p) in [
        ("Decimal32(", 9),
        ("Decimal64(", 18),
        ("Decimal128(", 38),
        ("Decimal256(", 76),
    ] {
        if let Some(rest) = ty.strip_prefix(alias)
            && let Some(scale) = rest.strip_suffix(')')
        {
            return format!("Decimal({p}, {})", scale.trim());
        }
    }
    ty.to_string()
}

/// `(precision, scale)` of a `Decimal(P, S)` type.
fn decimal(ty: &str) -> Option<(u32, u32)> {
    let inner = normalize_type(ty);
    let inner = inner.strip_prefix("Decimal(")?.strip_suffix(')')?;
    let (p, s) = inner.split_once(',')?;
    Some((p.trim().parse().ok()?, s.trim().parse().ok()?))
}

/// The value of `name` in the `SETTINGS` clause of an `engine_full`.
pub fn table_setting(engine_full: &str, name: &str) -> Option<String> {
    let settings = engine_full.rsplit_once(" SETTINGS ")?.1;
    settings.split(", ").find_map(|kv| {
        let (k, v) = kv.split_once(" = ")?;
        (k.trim() == name).then(|| v.trim().to_string())
    })
}

fn is_replicated(engine: &str) -> bool {
    engine.starts_with("Replicated") || engine.starts_with("Shared")
}

fn collapses_rows(engine: &str) -> bool {
    [
        "Replacing",
        "Collapsing",
        "Summing",
        "Aggregating",
        "Coalescing",
        "Graphite",
    ]
    .iter()
    .any(|k| engine.contains(k))
}

fn column_def(c: &Column) -> String {
    let mut s = format!("`{}` {}", c.name, c.ty);
    if let Some(d) = c.default {
        s.push_str(&format!(" DEFAULT {d}"));
    }
    s.push_str(&format!(" CODEC({})", c.codec));
    s
}

fn alter(e: &Expected, action: &str) -> String {
    let on = e
        .cluster
        .as_ref()
        .map(|c| format!(" ON CLUSTER `{c}`"))
        .unwrap_or_default();
    format!("ALTER TABLE `{}`.`{}`{on} {action}", e.database, e.table)
}

/// Compares what exists with what we expect. `windows` is what every deduplicated table must
/// remember: the block window (at least [`super::DEDUP_WINDOW`]; see
/// `pipeline::window::needed_window`) and, on replicated tables, the age limit (at least
/// [`DEDUP_WINDOW_SECONDS`]; see [`super::needed_window_seconds`]).
pub fn diff(expected: &[Expected], state: &ServerState, windows: impl Into<Windows>) -> Vec<Drift> {
    let Windows {
        blocks: window,
        seconds: window_seconds,
    } = windows.into();
    let mut out = Vec::new();
    for e in expected {
        let drift = |item: &str, found, needed, severity, why, fix| {
            e.drift(item, found, needed, severity, why, fix)
        };
        let Some(t) = state.tables.get(&(e.database.clone(), e.table.clone())) else {
            let (severity, why) = if e.optional {
                (
                    Severity::Warning,
                    "data-quality detection runs off; `init` creates it",
                )
            } else {
                (
                    Severity::Error,
                    "rows of this table cannot be stored; `init` creates it",
                )
            };
            out.push(drift(
                "table",
                "missing".into(),
                "present".into(),
                severity,
                why,
                None,
            ));
            continue;
        };
        if t.engine == "Distributed" && e.dedup {
            // A cluster's routing table where we expected a plain table (a configuration
            // without `clickhouse.cluster`): the local tables deduplicate, and only the
            // cluster layout checks them and sends the foreground-insert settings.
            out.push(drift(
                "engine",
                t.engine.clone(),
                "MergeTree".into(),
                Severity::Warning,
                "a cluster's table: set clickhouse.cluster, so that inserts wait for the shards and `init --check` checks the local tables",
                None,
            ));
            out.extend(column_drift(e, t));
            continue;
        }
        if e.dedup && (collapses_rows(&t.engine) || !t.engine.contains("MergeTree")) {
            out.push(drift(
                "engine",
                t.engine.clone(),
                if e.cluster.is_some() {
                    "ReplicatedMergeTree".into()
                } else {
                    "MergeTree".into()
                },
                Severity::Error,
                "this engine merges distinct rows away or cannot deduplicate inserts; rebuild the table (not done in place)",
                None,
            ));
        }
        if e.dedup && t.engine.contains("MergeTree") {
            let (name, seconds) = if is_replicated(&t.engine) {
                (REPLICATED_WINDOW, true)
            } else {
                (NON_REPLICATED_WINDOW, false)
            };
            let found = setting_value(t, state, name);
            if found.is_none_or(|v| v < window) {
                out.push(drift(
                    name,
                    found.map_or("unknown".into(), |v| v.to_string()),
                    format!(">= {window}"),
                    Severity::Error,
                    "a replayed batch would be inserted twice",
                    Some(alter(e, &format!("MODIFY SETTING {name} = {window}"))),
                ));
            }
            if seconds {
                let found = setting_value(t, state, REPLICATED_WINDOW_SECONDS);
                if found.is_none_or(|v| v < window_seconds) {
                    out.push(drift(
                        REPLICATED_WINDOW_SECONDS,
                        found.map_or("unknown".into(), |v| v.to_string()),
                        format!(">= {window_seconds}"),
                        Severity::Error,
                        "a replay older than this (up to twice the streams' max_age) would be inserted twice",
                        Some(alter(
                            e,
                            &format!(
                                "MODIFY SETTING {REPLICATED_WINDOW_SECONDS} = {window_seconds}"
                            ),
                        )),
                    ));
                }
            }
        }
        if let Some(key) = e.sharding_key {
            out.extend(sharding_drift(e, t, key));
        }
        out.extend(column_drift(e, t));
        if let Some(key) = e.sorting_key
            && !t.sorting_key.is_empty()
            && t.sorting_key != key
        {
            out.push(drift(
                "ORDER BY",
                t.sorting_key.clone(),
                key.to_string(),
                Severity::Warning,
                "fine: rows and deduplication do not depend on the sort key, only query speed",
                None,
            ));
        }
        let has_ttl = t.engine_full.contains(" TTL ");
        match e.ttl {
            Some(true) if !has_ttl => out.push(drift(
                "TTL",
                "none".into(),
                "3-day DELETE".into(),
                Severity::Warning,
                "hot keeps every row: disk grows without bound",
                None,
            )),
            Some(false) if has_ttl && t.engine_full.contains("DELETE") => out.push(drift(
                "TTL",
                "DELETE".into(),
                "none".into(),
                Severity::Warning,
                "cold deletes rows after the TTL",
                None,
            )),
            _ => {}
        }
    }
    out
}

/// A routing table that is not `Distributed`, or whose sharding key is not a function of the
/// row (`rand()`), breaks retries: a re-sent row could land on another shard, whose replicas
/// have never seen the token. Another deterministic key only moves rows between shards.
fn sharding_drift(e: &Expected, t: &FoundTable, key: &str) -> Vec<Drift> {
    let drift = |item: &str, found, needed, severity, why| {
        e.drift(item, found, needed, severity, why, None)
    };
    if t.engine != "Distributed" {
        return vec![drift(
            "engine",
            t.engine.clone(),
            "Distributed".into(),
            Severity::Error,
            "the writer inserts here with distributed_foreground_insert; the rows must reach the replicated <table>_local tables",
        )];
    }
    let found = distributed_sharding_key(&t.engine_full).unwrap_or_default();
    if found == key {
        return Vec::new();
    }
    let nondeterministic = ["rand", "now", "generateUUID", "randCanonical"]
        .iter()
        .any(|f| found.contains(f));
    if found.is_empty() || nondeterministic {
        vec![drift(
            "sharding key",
            if found.is_empty() {
                "none".into()
            } else {
                found
            },
            key.to_string(),
            Severity::Error,
            "a retried row may go to another shard, which has not seen its token: stored twice; recreate the Distributed table (it holds no rows)",
        )]
    } else {
        vec![drift(
            "sharding key",
            found,
            key.to_string(),
            Severity::Warning,
            "fine while it is a function of the row only and never changes while batches are in doubt",
        )]
    }
}

/// The fourth argument of `Distributed(cluster, db, table, key[, policy])` in an `engine_full`.
pub fn distributed_sharding_key(engine_full: &str) -> Option<String> {
    let args = engine_full.strip_prefix("Distributed(")?;
    let mut depth = 0usize;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in args.char_indices() {
        match c {
            '(' => depth += 1,
            ')' if depth == 0 => {
                parts.push(args.get(start..i)?.trim());
                break;
            }
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(args.get(start..i)?.trim());
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.get(3).map(|s| s.to_string())
}

fn setting_value(t: &FoundTable, state: &ServerState, name: &str) -> Option<u64> {
    table_setting(&t.engine_full, name)
        .or_else(|| state.defaults.get(name).cloned())
        .and_then(|v| v.trim_matches('\'').parse().ok())
}

fn column_drift(e: &Expected, t: &FoundTable) -> Vec<Drift> {
    let mut out = Vec::new();
    let drift = |c: &str, found, needed, severity, why, fix| {
        e.drift(&format!("column {c}"), found, needed, severity, why, fix)
    };
    let mut modify = Vec::new();
    let mut modified: Vec<(String, String, String)> = Vec::new();
    for (i, c) in e.columns.iter().enumerate() {
        let want = normalize_type(c.ty);
        let Some(f) = t.columns.iter().find(|f| f.name == c.name) else {
            let place = match i.checked_sub(1).and_then(|p| e.columns.get(p)) {
                Some(prev) => format!(" AFTER `{}`", prev.name),
                None => " FIRST".to_string(),
            };
            out.push(drift(
                c.name,
                "missing".into(),
                c.ty.to_string(),
                Severity::Error,
                "inserts name this column and fail",
                Some(alter(
                    e,
                    &format!("ADD COLUMN IF NOT EXISTS {}{place}", column_def(c)),
                )),
            ));
            continue;
        };
        let found = normalize_type(&f.ty);
        if found == want {
            continue;
        }
        match (decimal(&found), decimal(&want)) {
            (Some((fp, fs)), Some((wp, ws))) if fs == ws && fp < wp => {
                // Widening keeps every stored value; the fix is one statement per table.
                modify.push(format!("MODIFY COLUMN {}", column_def(c)));
                modified.push((c.name.to_string(), f.ty.clone(), c.ty.to_string()));
                continue;
            }
            (Some((fp, fs)), Some((wp, ws))) if fs == ws && fp >= wp => {
                out.push(drift(
                    c.name,
                    f.ty.clone(),
                    c.ty.to_string(),
                    Severity::Warning,
                    "wider than ours: holds every value we write",
                    None,
                ));
                continue;
            }
            _ => {}
        }
        let lc = |s: &str| format!("LowCardinality({s})");
        let severity = if lc(&found) == want || found == lc(&want) {
            (Severity::Warning, "same values, different storage")
        } else {
            (
                Severity::Error,
                "inserts of our type may fail; change it by hand (not done in place)",
            )
        };
        out.push(drift(
            c.name,
            f.ty.clone(),
            c.ty.to_string(),
            severity.0,
            severity.1,
            None,
        ));
    }
    if !modify.is_empty() {
        // One ALTER for all the widened columns of the table (one mutation rewrites them).
        let fix = alter(
            e,
            &format!("{} SETTINGS mutations_sync = 2", modify.join(", ")),
        );
        for (name, found, needed) in modified {
            out.push(drift(
                &name,
                found,
                needed,
                Severity::Error,
                "notionals of 1e10 and more overflow it: such rows fail to insert and become dead letters",
                Some(fix.clone()),
            ));
        }
    }
    if !e.columns.is_empty() {
        for f in &t.columns {
            if !e.columns.iter().any(|c| c.name == f.name) {
                out.push(drift(
                    &f.name,
                    f.ty.clone(),
                    "absent".into(),
                    Severity::Warning,
                    "not ours: left to its default",
                    None,
                ));
            }
        }
    }
    out
}

/// Whether any drift breaks exactly-once or inserts.
pub fn has_errors(drifts: &[Drift]) -> bool {
    drifts.iter().any(|d| d.severity == Severity::Error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::DEDUP_WINDOW;

    /// A table of `engine` with our columns `cols`.
    fn found(engine: &str, engine_full: String, cols: &[Column]) -> FoundTable {
        FoundTable {
            engine: engine.into(),
            engine_full,
            sorting_key: String::new(),
            columns: cols
                .iter()
                .map(|c| FoundColumn {
                    name: c.name.into(),
                    ty: normalize_type(c.ty),
                })
                .collect(),
        }
    }

    /// A server holding only `h.trades_local`, replicated, with `settings` in its engine.
    fn replicated_trades(settings: &str) -> ServerState {
        let mut s = ServerState::default();
        s.tables.insert(
            ("h".into(), "trades_local".into()),
            FoundTable {
                sorting_key: order_by(DataType::Trade).into(),
                ..found(
                    "ReplicatedMergeTree",
                    format!("ReplicatedMergeTree('/p', '{{replica}}') ORDER BY x TTL t SETTINGS {settings}"),
                    columns(DataType::Trade),
                )
            },
        );
        s
    }

    /// The state a fresh `init` leaves, built from our own column list.
    fn ours(db: &str, tier: Tier) -> ServerState {
        let mut s = ServerState::default();
        s.defaults.insert(NON_REPLICATED_WINDOW.into(), "0".into());
        for e in expected_tables(db, tier, &Layout::Single) {
            s.tables.insert(
                (e.database.clone(), e.table.clone()),
                FoundTable {
                    engine: "MergeTree".into(),
                    engine_full: format!(
                        "MergeTree ORDER BY x{} SETTINGS index_granularity = 8192, {NON_REPLICATED_WINDOW} = {DEDUP_WINDOW}",
                        if e.ttl == Some(true) { " TTL toDateTime(timestamp) + toIntervalDay(3)" } else { "" }
                    ),
                    sorting_key: e.sorting_key.unwrap_or("").into(),
                    columns: e
                        .columns
                        .iter()
                        .map(|c| FoundColumn {
                            name: c.name.into(),
                            ty: normalize_type(c.ty),
                        })
                        .collect(),
                },
            );
        }
        s
    }

    #[test]
    fn our_own_tables_have_no_drift() {
        for tier in [Tier::Hot, Tier::Cold] {
            let e = expected_tables("d", tier, &Layout::Single);
            assert_eq!(diff(&e, &ours("d", tier), DEDUP_WINDOW), vec![]);
        }
    }

    #[test]
    fn python_service_tables_drift_on_window_and_open_interest_only_errors() {
        let e = expected_tables("h", Tier::Hot, &Layout::Single);
        let mut s = ours("h", Tier::Hot);
        s.tables.remove(&("h".into(), DEAD_LETTERS_TABLE.into()));
        for t in s.tables.values_mut() {
            // No SETTINGS for the window: the server default (0) applies.
            t.engine_full = "MergeTree PARTITION BY x ORDER BY y TTL toDateTime(timestamp) + toIntervalDay(3) SETTINGS index_granularity = 8192".into();
        }
        let oi = s
            .tables
            .get_mut(&("h".into(), "open_interests".into()))
            .unwrap();
        for c in &mut oi.columns {
            if c.name.starts_with("open_interest") {
                c.ty = "Decimal(18, 8)".into();
            }
        }
        oi.sorting_key = "timestamp, symbol".into();
        let d = diff(&e, &s, DEDUP_WINDOW);
        let errors: Vec<String> = d
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .map(|d| format!("{} {} {} {}", d.table, d.item, d.found, d.needed))
            .collect();
        let mut want: Vec<String> = DataType::ALL
            .iter()
            .map(|t| t.table())
            .chain([QUALITY_EVENTS_TABLE])
            .map(|t| format!("{t} {NON_REPLICATED_WINDOW} 0 >= {DEDUP_WINDOW}"))
            .collect();
        want.insert(
            3,
            "open_interests column open_interest Decimal(18, 8) Decimal128(8)".into(),
        );
        want.insert(
            4,
            "open_interests column open_interest_value Decimal(18, 8) Decimal128(8)".into(),
        );
        want.push("dead_letters table missing present".into());
        let mut sorted_errors = errors.clone();
        sorted_errors.sort();
        want.sort();
        assert_eq!(sorted_errors, want);
        // One statement widens both columns, keeping every value.
        let widen = "ALTER TABLE `h`.`open_interests` MODIFY COLUMN `open_interest` Decimal128(8) CODEC(ZSTD), MODIFY COLUMN `open_interest_value` Decimal128(8) CODEC(ZSTD) SETTINGS mutations_sync = 2";
        let fixes: Vec<&str> = d
            .iter()
            .filter(|d| d.table == "open_interests")
            .filter_map(|d| d.fix.as_deref())
            .collect();
        assert_eq!(
            fixes,
            [
                format!("ALTER TABLE `h`.`open_interests` MODIFY SETTING {NON_REPLICATED_WINDOW} = {DEDUP_WINDOW}").as_str(),
                widen,
                widen,
            ]
        );
        // The sort key is only a warning.
        let w: Vec<&Drift> = d
            .iter()
            .filter(|d| d.severity == Severity::Warning)
            .collect();
        assert_eq!(w.len(), 1);
        assert_eq!(w[0].item, "ORDER BY");
    }

    #[test]
    fn replicated_tables_need_the_window_and_its_seconds() {
        let e = expected_tables("h", Tier::Hot, &Layout::Cluster("mp".into()));
        assert!(e.iter().any(|x| x.table == "trades_local" && x.dedup));
        assert!(e.iter().any(|x| x.table == "trades" && !x.dedup));
        let mut s = replicated_trades("index_granularity = 8192");
        s.defaults.insert(REPLICATED_WINDOW.into(), "10000".into());
        s.defaults
            .insert(REPLICATED_WINDOW_SECONDS.into(), "3600".into());
        let only: Vec<Expected> = e
            .into_iter()
            .filter(|x| x.table == "trades_local")
            .collect();
        let d = diff(&only, &s, DEDUP_WINDOW);
        let items: Vec<(&str, &str, Option<&str>)> = d
            .iter()
            .map(|d| (d.item.as_str(), d.found.as_str(), d.fix.as_deref()))
            .collect();
        assert_eq!(
            items,
            [
                (
                    REPLICATED_WINDOW,
                    "10000",
                    Some(format!("ALTER TABLE `h`.`trades_local` ON CLUSTER `mp` MODIFY SETTING {REPLICATED_WINDOW} = {DEDUP_WINDOW}").as_str())
                ),
                (
                    REPLICATED_WINDOW_SECONDS,
                    "3600",
                    Some(format!("ALTER TABLE `h`.`trades_local` ON CLUSTER `mp` MODIFY SETTING {REPLICATED_WINDOW_SECONDS} = {DEDUP_WINDOW_SECONDS}").as_str())
                ),
            ]
        );
    }

    #[test]
    fn replicated_tables_need_twice_the_longest_stream_age() {
        let e: Vec<Expected> = expected_tables("h", Tier::Hot, &Layout::Cluster("mp".into()))
            .into_iter()
            .filter(|x| x.table == "trades_local")
            .collect();
        let s = replicated_trades(&format!(
            "{REPLICATED_WINDOW} = {DEDUP_WINDOW}, {REPLICATED_WINDOW_SECONDS} = {DEDUP_WINDOW_SECONDS}"
        ));
        assert_eq!(diff(&e, &s, DEDUP_WINDOW), vec![]);
        // Streams keeping messages 5 days need 10 days of hashes: `init` raises it.
        let w = Windows {
            blocks: DEDUP_WINDOW,
            seconds: 864_000,
        };
        let d = diff(&e, &s, w);
        assert_eq!(d.len(), 1, "{d:?}");
        assert_eq!(d[0].item, REPLICATED_WINDOW_SECONDS);
        assert_eq!(d[0].severity, Severity::Error);
        assert_eq!(
            d[0].fix.as_deref(),
            Some(format!("ALTER TABLE `h`.`trades_local` ON CLUSTER `mp` MODIFY SETTING {REPLICATED_WINDOW_SECONDS} = 864000").as_str())
        );
    }

    #[test]
    fn a_routing_table_must_shard_by_a_function_of_the_row() {
        let e: Vec<Expected> = expected_tables("h", Tier::Hot, &Layout::Cluster("mp".into()))
            .into_iter()
            .filter(|x| x.table == "trades" || x.table == DEAD_LETTERS_TABLE)
            .collect();
        let state = |trades_key: &str, dl_engine: &str| {
            let mut s = ServerState::default();
            s.tables.insert(
                ("h".into(), "trades".into()),
                found(
                    "Distributed",
                    format!("Distributed('mp', 'h', 'trades_local', {trades_key})"),
                    columns(DataType::Trade),
                ),
            );
            s.tables.insert(
                ("h".into(), DEAD_LETTERS_TABLE.into()),
                found(
                    dl_engine,
                    "Distributed('mp', 'h', 'dead_letters_local', cityHash64(subject))".into(),
                    DEAD_LETTERS,
                ),
            );
            s
        };
        let ours = state("cityHash64(exchange, market_type, symbol)", "Distributed");
        assert_eq!(diff(&e, &ours, DEDUP_WINDOW), vec![]);
        let got = |s: &ServerState| -> Vec<(String, String, Severity)> {
            diff(&e, s, DEDUP_WINDOW)
                .into_iter()
                .map(|d| (d.table, d.item, d.severity))
                .collect()
        };
        let t = |t: &str, i: &str, s| (t.to_string(), i.to_string(), s);
        assert_eq!(
            got(&state("rand()", "Distributed")),
            [t("trades", "sharding key", Severity::Error)]
        );
        assert_eq!(
            got(&state("cityHash64(exchange, symbol)", "MergeTree")),
            [
                t("trades", "sharding key", Severity::Warning),
                t(DEAD_LETTERS_TABLE, "engine", Severity::Error)
            ]
        );
        assert_eq!(
            distributed_sharding_key("Distributed('mp', 'h', 't', cityHash64(a, b), 'policy')"),
            Some("cityHash64(a, b)".into())
        );
        assert_eq!(
            distributed_sharding_key("Distributed('mp', 'h', 't')"),
            None
        );
    }

    #[test]
    fn missing_columns_collapsing_engines_and_odd_types() {
        let e = expected_tables("h", Tier::Hot, &Layout::Single);
        let mut s = ours("h", Tier::Hot);
        let t = s.tables.get_mut(&("h".into(), "trades".into())).unwrap();
        t.columns.retain(|c| c.name != "is_maker");
        t.columns.push(FoundColumn {
            name: "extra".into(),
            ty: "String".into(),
        });
        t.engine = "ReplacingMergeTree".into();
        let f = s
            .tables
            .get_mut(&("h".into(), "funding_rates".into()))
            .unwrap();
        for c in &mut f.columns {
            if c.name == "exchange" {
                c.ty = "String".into();
            }
            if c.name == "funding_rate" {
                c.ty = "Float64".into();
            }
            if c.name == "mark_price" {
                c.ty = "Decimal(38, 8)".into();
            }
        }
        let d = diff(&e, &s, DEDUP_WINDOW);
        let got: Vec<(String, String, Severity, bool)> = d
            .iter()
            .map(|d| (d.table.clone(), d.item.clone(), d.severity, d.fix.is_some()))
            .collect();
        let s = |t: &str, i: &str, sev, fix| (t.to_string(), i.to_string(), sev, fix);
        assert_eq!(
            got,
            vec![
                s("trades", "engine", Severity::Error, false),
                s("trades", "column is_maker", Severity::Error, true),
                s("trades", "column extra", Severity::Warning, false),
                s("funding_rates", "column exchange", Severity::Warning, false),
                s(
                    "funding_rates",
                    "column funding_rate",
                    Severity::Error,
                    false
                ),
                s(
                    "funding_rates",
                    "column mark_price",
                    Severity::Warning,
                    false
                ),
            ]
        );
        let add = d.iter().find_map(|d| d.fix.clone()).unwrap();
        assert_eq!(
            add,
            "ALTER TABLE `h`.`trades` ADD COLUMN IF NOT EXISTS `is_maker` Bool DEFAULT false CODEC(ZSTD) AFTER `side`"
        );
    }

    #[test]
    fn missing_quality_events_is_a_warning_missing_dead_letters_an_error() {
        let e = expected_tables("h", Tier::Hot, &Layout::Single);
        let mut s = ours("h", Tier::Hot);
        s.tables.remove(&("h".into(), QUALITY_EVENTS_TABLE.into()));
        s.tables.remove(&("h".into(), DEAD_LETTERS_TABLE.into()));
        let d = diff(&e, &s, DEDUP_WINDOW);
        let got: Vec<(&str, Severity)> = d.iter().map(|d| (d.table.as_str(), d.severity)).collect();
        assert_eq!(
            got,
            [
                (QUALITY_EVENTS_TABLE, Severity::Warning),
                (DEAD_LETTERS_TABLE, Severity::Error)
            ]
        );
    }

    #[test]
    fn helpers() {
        assert_eq!(normalize_type("Decimal64(8)"), "Decimal(18, 8)");
        assert_eq!(normalize_type("Decimal128(8)"), "Decimal(38, 8)");
        assert_eq!(normalize_type("String"), "String");
        assert_eq!(
            table_setting(
                "MergeTree ORDER BY a SETTINGS index_granularity = 8192, non_replicated_deduplication_window = 5",
                NON_REPLICATED_WINDOW
            ),
            Some("5".into())
        );
        assert_eq!(
            table_setting("MergeTree ORDER BY a", NON_REPLICATED_WINDOW),
            None
        );
    }
}
