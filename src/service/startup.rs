//! Start-up against ClickHouse: check the configured cluster exists, apply the schema and check
//! the hot tables' drift (deduplication windows included), each retried
//! on the `retry.*` schedule while ClickHouse does not answer.

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::model::DataType;
use crate::retry::{self, Failure, Verdict};
use crate::schema::drift::{self, Drift, Windows};
use crate::schema::{self, Tier};
use crate::sink::ddl::DriftError;
use crate::sink::{Sink, SinkError};

use super::ServiceError;

/// The deduplication window the configured batch sizes need (`pipeline::window::needed_window`).
pub fn needed_window(cfg: &Config) -> u64 {
    crate::pipeline::window::needed_window(DataType::ALL.iter().map(|t| {
        let b = cfg.batch.get(*t);
        (b.max_rows.get() as u64, b.max_queue.get() as u64)
    }))
}

/// What the deduplicated tables must remember for this configuration: the block window of
/// [`needed_window`] and, on a cluster, the age limit that covers the oldest replay the streams
/// allow (`schema::needed_window_seconds`).
pub fn needed_windows(cfg: &Config) -> Windows {
    let s = &cfg.nats.streams;
    Windows {
        blocks: needed_window(cfg),
        seconds: schema::needed_window_seconds([s.market_data.max_age, s.high_frequency.max_age]),
    }
}

/// Refuses a `clickhouse.cluster` the server does not list in `system.clusters`, naming the
/// key and the clusters it has. Nothing to check on one server.
pub async fn check_cluster(
    cfg: &Config,
    sink: &Sink,
    stop: &CancellationToken,
) -> Result<(), ServiceError> {
    let Some(cluster) = &cfg.clickhouse.cluster else {
        return Ok(());
    };
    let known = until_answered(
        cfg,
        stop,
        "clickhouse not ready for the cluster check",
        || crate::sink::ddl::clusters(sink),
    )
    .await?;
    cluster_known(cluster, &known)
}

/// `Ok` when `cluster` is one of the server's `known` clusters; else the error naming the key.
pub fn cluster_known(cluster: &str, known: &[String]) -> Result<(), ServiceError> {
    if known.iter().any(|k| k == cluster) {
        return Ok(());
    }
    Err(ServiceError::UnknownCluster {
        cluster: cluster.to_string(),
        known: if known.is_empty() {
            "none".into()
        } else {
            known.join(", ")
        },
    })
}

/// The error of a loop that only ends by success or by `stop`.
fn last_error<E>(f: Failure<E>) -> E {
    match f {
        Failure::GaveUp(e) | Failure::Stopped { last: e, .. } => e,
    }
}

/// An error of a start-up call: whether it is a misconfiguration no wait fixes — ClickHouse
/// refusing our credentials, or a TLS handshake failing on a certificate — so the start fails
/// at once instead of retrying.
pub(crate) trait StartupFailure: std::fmt::Display {
    /// The sink error behind it, if any.
    fn sink_error(&self) -> Option<&SinkError>;

    /// Whether it is such a misconfiguration.
    fn misconfigured(&self) -> bool {
        self.sink_error()
            .is_some_and(|e| e.is_auth_failure() || e.tls_certificate_failure().is_some())
    }
}

impl StartupFailure for SinkError {
    fn sink_error(&self) -> Option<&SinkError> {
        Some(self)
    }
}

impl StartupFailure for DriftError {
    fn sink_error(&self) -> Option<&SinkError> {
        match self {
            DriftError::Sink(e) => Some(e),
            _ => None,
        }
    }
}

#[cfg(test)]
impl StartupFailure for String {
    fn sink_error(&self) -> Option<&SinkError> {
        None
    }
}

/// Runs `op` until it succeeds or `stop` fires (then its last error), logging each failure as
/// `what` with the wait that follows; a misconfiguration ([`StartupFailure`]) ends it at once.
async fn until_answered<T, E, Fut>(
    cfg: &Config,
    stop: &CancellationToken,
    what: &str,
    op: impl FnMut() -> Fut,
) -> Result<T, E>
where
    E: StartupFailure,
    Fut: std::future::Future<Output = Result<T, E>>,
{
    let mut backoff = cfg.retry.policy().backoff();
    retry::retry_until(stop, &mut backoff, op, |e: &E, _, delay| {
        if e.misconfigured() {
            return Verdict::GiveUp;
        }
        tracing::warn!(error = %e, retry_in = ?delay, "{what}");
        Verdict::Retry
    })
    .await
    .map_err(last_error)
}

/// Applies the schema (`ON CLUSTER` when `clickhouse.cluster` is set), retrying until
/// ClickHouse answers or `stop` fires.
///
/// On a cluster only when a table is missing on the node we talk to: `ON CLUSTER` DDL waits for
/// every host of the cluster (`distributed_ddl_task_timeout`, 180 s by default, then fails),
/// so running it at every start would keep the service from starting while any replica is
/// down, for tables that exist. `init` always runs it (a new replica gets its tables).
pub async fn init_schema(
    cfg: &Config,
    sink: &Sink,
    stop: &CancellationToken,
) -> Result<(), ServiceError> {
    let layout = cfg.clickhouse.layout();
    let ddl = schema::full_ddl(&cfg.clickhouse.hot_db, &cfg.clickhouse.cold_db, &layout);
    if let schema::Layout::Cluster(cluster) = &layout {
        let tables: Vec<(String, String)> = [
            (&cfg.clickhouse.hot_db, Tier::Hot),
            (&cfg.clickhouse.cold_db, Tier::Cold),
        ]
        .into_iter()
        .flat_map(|(db, tier)| drift::expected_tables(db, tier, &layout))
        .map(|e| (e.database, e.table))
        .collect();
        let missing = until_answered(cfg, stop, "clickhouse not ready for the schema", || {
            crate::sink::ddl::missing_tables(sink, &tables)
        })
        .await?;
        if missing.is_empty() {
            tracing::info!(%cluster, "every table exists on this node: ON CLUSTER DDL skipped (`init` runs it)");
            return Ok(());
        }
        let names: Vec<String> = missing.iter().map(|(d, t)| format!("{d}.{t}")).collect();
        tracing::info!(%cluster, missing = %names.join(", "), "creating the schema ON CLUSTER");
    }
    until_answered(cfg, stop, "clickhouse not ready for the schema", || {
        crate::sink::ddl::apply(sink, &ddl)
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
    let expected =
        drift::expected_tables(&cfg.clickhouse.hot_db, Tier::Hot, &cfg.clickhouse.layout());
    let window = needed_windows(cfg);
    let found = until_answered(
        cfg,
        stop,
        "clickhouse not ready for the schema check",
        || crate::sink::ddl::check(sink, &expected, window),
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

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::time::Duration;

    use super::*;

    fn fast(cfg: &mut Config) {
        cfg.retry.initial_backoff = Duration::from_millis(1);
        cfg.retry.max_backoff = Duration::from_millis(2);
    }

    #[tokio::test]
    async fn until_answered_retries_until_the_server_answers() {
        let mut cfg = Config::defaults().unwrap();
        fast(&mut cfg);
        let calls = Cell::new(0u32);
        let stop = CancellationToken::new();
        let out: Result<u32, String> = until_answered(&cfg, &stop, "not ready", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            async move {
                if n < 3 {
                    Err(format!("down {n}"))
                } else {
                    Ok(n)
                }
            }
        })
        .await;
        assert_eq!(out, Ok(3));
    }

    #[tokio::test]
    async fn until_answered_returns_the_last_error_at_the_stop() {
        let cfg = Config::defaults().unwrap();
        let stop = CancellationToken::new();
        let calls = Cell::new(0u32);
        let out: Result<(), String> = until_answered(&cfg, &stop, "not ready", || {
            calls.set(calls.get() + 1);
            let n = calls.get();
            if n == 2 {
                stop.cancel();
            }
            async move { Err(format!("down {n}")) }
        })
        .await;
        assert_eq!(out, Err("down 2".to_string()));
    }

    #[test]
    fn an_unknown_cluster_refuses_the_start_naming_the_key() {
        let known = vec!["default".to_string(), "mp".to_string()];
        assert!(cluster_known("mp", &known).is_ok());
        let text = cluster_known("mp2", &known).unwrap_err().to_string();
        assert!(text.starts_with("clickhouse.cluster: "), "{text}");
        assert!(
            text.contains("\"mp2\"") && text.contains("default, mp"),
            "{text}"
        );
        let text = cluster_known("mp", &[]).unwrap_err().to_string();
        assert!(text.contains("(it has: none)"), "{text}");
    }

    #[test]
    fn cluster_windows_cover_twice_the_longest_stream_age() {
        let mut cfg = Config::defaults().unwrap();
        // The defaults (48 h streams) fit in the 7 days the DDL sets.
        assert_eq!(needed_windows(&cfg).seconds, schema::DEDUP_WINDOW_SECONDS);
        cfg.nats.streams.market_data.max_age = Duration::from_secs(5 * 24 * 3600);
        assert_eq!(needed_windows(&cfg).seconds, 10 * 24 * 3600);
        assert_eq!(needed_windows(&cfg).blocks, needed_window(&cfg));
    }

    #[test]
    fn an_error_drift_refuses_the_start_naming_it() {
        let d = |severity| Drift {
            database: "marketprism_hot".into(),
            table: "trades".into(),
            item: "non_replicated_deduplication_window".into(),
            found: "0".into(),
            needed: ">= 160000".into(),
            severity,
            why: "a replay would insert twice",
            fix: None,
        };
        assert!(refuse_on_errors(&[d(drift::Severity::Warning)]).is_ok());
        let e = refuse_on_errors(&[d(drift::Severity::Error)]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.starts_with("refusing to start, exactly-once cannot hold: "),
            "{text}"
        );
        assert!(text.contains("trades"), "{text}");
        assert!(text.contains("run `marketprism-storage init`"), "{text}");
    }
}
