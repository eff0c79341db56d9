//! The sink's schema calls: runs DDL, reads the server's tables, columns and deduplication
//! settings, and applies the in-place fixes `schema::drift` computes.
//!
//! `schema` stays pure (DDL text, expected tables, the drift diff); everything that talks to
//! the server about the schema is here, next to the other ClickHouse calls.

use crate::schema;
use crate::schema::drift::{
    Drift, Expected, FoundColumn, FoundTable, NON_REPLICATED_WINDOW, REPLICATED_WINDOW,
    REPLICATED_WINDOW_SECONDS, ServerState, Windows, diff,
};

use super::{Sink, SinkError};

/// Applies statements in order through the sink; returns how many created something new
/// (counted from `system.tables`/`system.databases` before and after).
pub async fn apply(sink: &Sink, statements: &[String]) -> Result<usize, SinkError> {
    // The configured database may not exist yet: run the DDL from `system`.
    let sink = sink.on_database("system");
    let objects = "SELECT count() FROM (SELECT name FROM system.tables UNION ALL SELECT name FROM system.databases)";
    let before = sink.fetch_count(objects).await?;
    for st in statements {
        sink.execute(st).await?;
    }
    let after = sink.fetch_count(objects).await?;
    Ok(usize::try_from(after.saturating_sub(before)).unwrap_or(usize::MAX))
}

/// A failed read of the server's state.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DriftError {
    /// A ClickHouse call failed.
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// An answer of `system.*` could not be parsed.
    #[error("unexpected answer from {what}: {detail}")]
    Parse {
        /// The table asked.
        what: &'static str,
        /// The parse error.
        detail: String,
    },
}

fn quote_list(dbs: &[&str]) -> String {
    dbs.iter()
        .map(|d| schema::quote(d))
        .collect::<Vec<_>>()
        .join(", ")
}

async fn json_rows<T: serde::de::DeserializeOwned>(
    sink: &Sink,
    what: &'static str,
    sql: &str,
) -> Result<Vec<T>, DriftError> {
    let bytes = sink.query_bytes(sql, "JSONEachRow").await?;
    bytes
        .split(|b| *b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| {
            serde_json::from_slice(l).map_err(|e| DriftError::Parse {
                what,
                detail: e.to_string(),
            })
        })
        .collect()
}

/// Reads the tables of `databases` and the server's deduplication defaults.
pub async fn read_server(sink: &Sink, databases: &[&str]) -> Result<ServerState, DriftError> {
    #[derive(serde::Deserialize)]
    struct T {
        database: String,
        name: String,
        engine: String,
        engine_full: String,
        sorting_key: String,
    }
    #[derive(serde::Deserialize)]
    struct C {
        database: String,
        table: String,
        name: String,
        #[serde(rename = "type")]
        ty: String,
    }
    #[derive(serde::Deserialize)]
    struct S {
        name: String,
        value: String,
    }
    let sink = sink.on_database("system");
    let dbs = quote_list(databases);
    let mut state = ServerState::default();
    let tables: Vec<T> = json_rows(
        &sink,
        "system.tables",
        &format!("SELECT database, name, engine, engine_full, sorting_key FROM system.tables WHERE database IN ({dbs})"),
    )
    .await?;
    for t in tables {
        state.tables.insert(
            (t.database, t.name),
            FoundTable {
                engine: t.engine,
                engine_full: t.engine_full,
                sorting_key: t.sorting_key,
                columns: Vec::new(),
            },
        );
    }
    let cols: Vec<C> = json_rows(
        &sink,
        "system.columns",
        &format!("SELECT database, table, name, type FROM system.columns WHERE database IN ({dbs}) ORDER BY database, table, position"),
    )
    .await?;
    for c in cols {
        if let Some(t) = state.tables.get_mut(&(c.database, c.table)) {
            t.columns.push(FoundColumn {
                name: c.name,
                ty: c.ty,
            });
        }
    }
    let settings: Vec<S> = json_rows(
        &sink,
        "system.merge_tree_settings",
        &format!(
            "SELECT name, value FROM system.merge_tree_settings WHERE name IN ('{NON_REPLICATED_WINDOW}', '{REPLICATED_WINDOW}', '{REPLICATED_WINDOW_SECONDS}')"
        ),
    )
    .await?;
    state.defaults = settings.into_iter().map(|s| (s.name, s.value)).collect();
    Ok(state)
}

/// Reads the server and compares it with `expected`; `windows` is what the deduplicated tables
/// must remember (a block count converts with the default age limit).
pub async fn check(
    sink: &Sink,
    expected: &[Expected],
    windows: impl Into<Windows>,
) -> Result<Vec<Drift>, DriftError> {
    let window = windows.into();
    let mut dbs: Vec<&str> = expected.iter().map(|e| e.database.as_str()).collect();
    dbs.sort_unstable();
    dbs.dedup();
    let state = read_server(sink, &dbs).await?;
    Ok(diff(expected, &state, window))
}

/// The `(database, table)`s of `tables` the server does not have.
pub async fn missing_tables(
    sink: &Sink,
    tables: &[(String, String)],
) -> Result<Vec<(String, String)>, DriftError> {
    #[derive(serde::Deserialize)]
    struct T {
        database: String,
        name: String,
    }
    let mut dbs: Vec<&str> = tables.iter().map(|(d, _)| d.as_str()).collect();
    dbs.sort_unstable();
    dbs.dedup();
    let found: Vec<T> = json_rows(
        &sink.on_database("system"),
        "system.tables",
        &format!(
            "SELECT database, name FROM system.tables WHERE database IN ({})",
            quote_list(&dbs)
        ),
    )
    .await?;
    Ok(tables
        .iter()
        .filter(|(d, t)| !found.iter().any(|f| &f.database == d && &f.name == t))
        .cloned()
        .collect())
}

/// The names of the clusters the server knows (`system.clusters`), sorted.
pub async fn clusters(sink: &Sink) -> Result<Vec<String>, DriftError> {
    #[derive(serde::Deserialize)]
    struct C {
        cluster: String,
    }
    let rows: Vec<C> = json_rows(
        &sink.on_database("system"),
        "system.clusters",
        "SELECT DISTINCT cluster FROM system.clusters ORDER BY cluster",
    )
    .await?;
    Ok(rows.into_iter().map(|c| c.cluster).collect())
}

/// Runs the fix of every drift that has one, in order, each statement once (widened columns
/// of a table share one), each logged; returns the drifts fixed. Every fix is an
/// `ALTER TABLE` that keeps every row.
pub async fn apply_fixes(sink: &Sink, drifts: &[Drift]) -> Result<Vec<Drift>, SinkError> {
    let sink = sink.on_database("system");
    let mut done = Vec::new();
    let mut ran: Vec<&str> = Vec::new();
    for d in drifts {
        let Some(sql) = &d.fix else { continue };
        tracing::warn!(
            database = %d.database, table = %d.table, item = %d.item, found = %d.found, needed = %d.needed,
            "schema upgrade: {sql}"
        );
        if !ran.contains(&sql.as_str()) {
            sink.execute(sql).await?;
            ran.push(sql);
        }
        done.push(d.clone());
    }
    Ok(done)
}
