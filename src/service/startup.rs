//! Start-up against ClickHouse: apply the schema and check the hot tables' drift, each retried
//! on the `retry.*` schedule while ClickHouse does not answer.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::DataType;
use crate::retry::{self, Failure, Verdict};
use crate::schema::drift::{self, Drift};
use crate::schema::{self, Layout, Tier};
use crate::sink::Sink;

use super::ServiceError;

/// The deduplication window the configured batch sizes need (`schema::drift::needed_window`).
pub fn needed_window(cfg: &Config) -> u64 {
    drift::needed_window(DataType::ALL.iter().map(|t| {
        let b = cfg.batch.get(*t);
        (b.max_rows.get() as u64, b.max_queue.get() as u64)
    }))
}

/// The error of a loop that only ends by success or by `stop`.
fn last_error<E>(f: Failure<E>) -> E {
    match f {
        Failure::GaveUp(e) | Failure::Stopped { last: e, .. } => e,
    }
}

/// Runs `op` until it succeeds or `stop` fires (then its last error), logging each failure as
/// `what` with the wait that follows.
async fn until_answered<T, E, Fut>(
    cfg: &Config,
    stop: &CancellationToken,
    what: &str,
    op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: std::fmt::Display,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = cfg.retry.policy().backoff();
    retry::retry_until(stop, &mut backoff, op, |e: &E, _, delay| {
        tracing::warn!(error = %e, retry_in = ?delay, "{what}");
        Verdict::Retry
    })
    .await
    .map_err(last_error)
}

/// Applies the schema, retrying until ClickHouse answers or `stop` fires.
pub async fn init_schema(
    cfg: &Config,
    sink: &Sink,
    stop: &CancellationToken,
) -> Result<(), ServiceError> {
    let ddl = schema::full_ddl(
        &cfg.clickhouse.hot_db,
        &cfg.clickhouse.cold_db,
        &Layout::Single,
    );
    until_answered(cfg, stop, "clickhouse not ready for the schema", || {
        schema::apply(sink, &ddl)
    })
    .await?;
    Ok(())
}

/// `run`'s start-up check of the hot tables: logs warnings, and refuses to start (naming the
/// table and the setting or column) when a drift breaks exactly-once or inserts. Retries
/// while ClickHouse does not answer, until `stop`.
pub async fn startup_check(
    cfg: &Config,
    sink: &Sink,
    stop: &CancellationToken,
) -> Result<(), ServiceError> {
    let expected = drift::expected_tables(&cfg.clickhouse.hot_db, Tier::Hot, &Layout::Single);
    let window = needed_window(cfg);
    let found = until_answered(
        cfg,
        stop,
        "clickhouse not ready for the schema check",
        || drift::check(sink, &expected, window),
    )
    .await?;
    refuse_on_errors(&found)
}

/// Logs the harmless drift; an error-level drift refuses the start.
fn refuse_on_errors(found: &[Drift]) -> Result<(), ServiceError> {
    for d in found
        .iter()
        .filter(|d| d.severity == drift::Severity::Warning)
    {
        tracing::warn!(database = %d.database, table = %d.table, item = %d.item, found = %d.found, needed = %d.needed, "schema drift (harmless): {}", d.why);
    }
    let errors: Vec<String> = found
        .iter()
        .filter(|d| d.severity == drift::Severity::Error)
        .map(ToString::to_string)
        .collect();
    if errors.is_empty() {
        return Ok(());
    }
    Err(ServiceError::Drift(errors.join("; ")))
}
