//! Config → the hot → cold migrator: its options, its sinks, and the loop started inside the
//! service (`run --migrate`, `migration.enabled`) or by the `migrate` command.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::embedded::EmbeddedClickHouse;
use crate::migrate::exec::{self, NoProgress};
use crate::migrate::{Filters, MigTable, MigrationStats, Migrator, MigratorOptions, run_cycles};
use crate::ops;
use crate::pipeline::Stats;
use crate::retry::{self, Verdict};
use crate::sink::Sink;

use super::{ServiceError, build};

/// Chunk width of the grid, in minutes: whole hours.
pub const DEFAULT_CHUNK_MINUTES: u64 = 60;

/// The configured filters (`migration.symbol_prefix`, `exchange`, `market_type`; empty = none).
pub fn filters(cfg: &Config) -> Filters {
    let pick = |conf: &Option<String>| conf.clone().filter(|s| !s.is_empty());
    Filters {
        symbol_prefix: pick(&cfg.migration.symbol_prefix),
        exchange: pick(&cfg.migration.exchange),
        market_type: pick(&cfg.migration.market_type),
    }
}

/// The migrator options from the configuration alone: every migratable table (the eight
/// market-data tables and the quality events), hour chunks, the configured filters. What the
/// service runs; `migrate`'s flags override them.
pub fn options(cfg: &Config) -> MigratorOptions {
    MigratorOptions {
        window: cfg.migration.window,
        chunk: Duration::from_secs(DEFAULT_CHUNK_MINUTES * 60),
        batch_limit: cfg.migration.batch_limit.get(),
        filters: filters(cfg),
        dry_run: cfg.migration.dry_run,
        lag: cfg.migration.lag,
        recheck_windows: cfg.migration.recheck_windows,
        tables: MigTable::ALL.to_vec(),
        leaf_rows: exec::DEFAULT_LEAF_ROWS,
        recheck_all: false,
    }
}

/// Time between cycles: `migration.interval`, at least 1 s.
pub fn interval(cfg: &Config) -> Duration {
    cfg.migration.interval.max(Duration::from_secs(1))
}

/// The migrator's counters when `run` should migrate: `migration.enabled` or `run --migrate`
/// (unless `migration.dry_run`, which only `migrate --dry-run` can honour).
pub fn service_stats(cfg: &Config, flag: bool) -> Option<Arc<MigrationStats>> {
    if !(flag || cfg.migration.enabled) {
        return None;
    }
    if cfg.migration.dry_run {
        tracing::warn!(
            "migration.dry_run is set: the service does not migrate (use `migrate --dry-run`)"
        );
        return None;
    }
    Some(Arc::new(MigrationStats::new()))
}

/// Hot and cold sinks (server settings detected) and whether they share a server; starts the
/// embedded ClickHouse for the command when configured.
pub async fn sinks(
    cfg: &Config,
) -> Result<(Sink, Sink, bool, Option<EmbeddedClickHouse>), ServiceError> {
    let (mut hot, embedded) = build::one_shot_clickhouse(cfg).await?;
    let detected = |which: &'static str| move |source| ServiceError::Detect { which, source };
    hot.detect_server().await.map_err(detected("hot"))?;
    let same_server = cfg.cold_clickhouse.is_none();
    let mut cold = if same_server {
        hot.on_database(&cfg.clickhouse.cold_db)
    } else {
        build::sink_for(cfg, &cfg.cold_endpoint())
    };
    if !same_server {
        cold.detect_server().await.map_err(detected("cold"))?;
    }
    Ok((hot, cold, same_server, embedded))
}

/// A migrator over `hot` and `cold`; logs what it will do.
pub fn migrator(
    hot: Sink,
    cold: Sink,
    same_server: bool,
    opts: MigratorOptions,
    stats: Arc<MigrationStats>,
) -> Migrator {
    tracing::info!(
        hot = hot.database(),
        cold = cold.database(),
        same_server,
        window_s = opts.window.as_secs(),
        chunk_s = opts.chunk.as_secs(),
        batch_limit = opts.batch_limit,
        filters = %opts.filters.canonical(),
        dry_run = opts.dry_run,
        "migrate"
    );
    Migrator::new(hot, cold, same_server, opts, stats)
}

/// Starts the migration loop inside the service when `stats` is given (see [`service_stats`]):
/// a cycle at once, then every `migration.interval`, until `stop`.
pub fn spawn(
    cfg: &Config,
    stats: Option<Arc<MigrationStats>>,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    let stats = stats?;
    let mut opts = options(cfg);
    opts.dry_run = false;
    let every = interval(cfg);
    let policy = cfg.retry.policy();
    let hot = build::sink_for(cfg, &cfg.hot_endpoint());
    // `None`: cold is a database on the hot server.
    let other_cold = cfg
        .cold_clickhouse
        .as_ref()
        .map(|_| build::sink_for(cfg, &cfg.cold_endpoint()));
    let cold_db = cfg.clickhouse.cold_db.clone();
    Some(tokio::spawn(async move {
        // ClickHouse may still be starting with the service: wait for it like the schema does.
        let Some(hot) = detect_until_stopped(hot, "hot", &policy, &stop).await else {
            return;
        };
        let same_server = other_cold.is_none();
        let cold = match other_cold {
            None => hot.on_database(&cold_db),
            Some(cold) => match detect_until_stopped(cold, "cold", &policy, &stop).await {
                Some(cold) => cold,
                None => return,
            },
        };
        let m = migrator(hot, cold, same_server, opts, stats);
        run_cycles(&m, every, &stop, &NoProgress).await;
        tracing::info!("migration stopped");
    }))
}

/// Detects the server's settings, retrying on the `retry.*` schedule; `None` when `stop` fired
/// first.
async fn detect_until_stopped(
    sink: Sink,
    which: &str,
    policy: &retry::Policy,
    stop: &CancellationToken,
) -> Option<Sink> {
    let mut backoff = policy.backoff();
    retry::retry_until(
        stop,
        &mut backoff,
        || {
            // Each attempt detects on its own handle (cheap: the client is shared), which it
            // hands back once the server answered.
            let mut s = sink.clone();
            async move { s.detect_server().await.map(|()| s) }
        },
        |e, _, delay| {
            tracing::warn!(error = %e, retry_in = ?delay, "migration: {which} clickhouse not answering");
            Verdict::Retry
        },
    )
    .await
    .ok()
}

/// The standalone `migrate` loop: the cycles, plus `/metrics` with only the migrator's counters
/// (and the process's) on `metrics` when given, until `stop`.
pub async fn run_standalone(
    cfg: &Config,
    migrator: &Migrator,
    every: Duration,
    metrics: Option<tokio::net::TcpListener>,
    progress: &dyn exec::Progress,
    stop: &CancellationToken,
) {
    let server = metrics.map(|l| serve_metrics(cfg, l, migrator.stats().clone(), stop.clone()));
    run_cycles(migrator, every, stop, progress).await;
    stop.cancel();
    if let Some(s) = server {
        let _ = s.await;
    }
}

/// Serves `/metrics` with only the migrator's counters (and the process's) until `stop`.
fn serve_metrics(
    cfg: &Config,
    listener: tokio::net::TcpListener,
    stats: Arc<MigrationStats>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    if let Ok(addr) = listener.local_addr() {
        tracing::info!(url = %format!("http://{addr}/metrics"), "migration metrics");
    }
    // No configured types: the state exports no pipeline families (see `ops::metrics`).
    let state = ops::OpsState::new(Arc::new(Stats::new(crate::pipeline::stats::now_ms())), [])
        .with_token(cfg.http.token.as_ref())
        .with_migration(stats);
    tokio::spawn(async move {
        if let Err(e) = ops::serve(listener, ops::metrics_router(state), stop).await {
            tracing::error!(error = %e, "migration metrics server stopped");
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_migrates_when_enabled_or_flagged_but_not_dry() {
        let mut cfg = Config::defaults().unwrap();
        assert!(service_stats(&cfg, false).is_none());
        assert!(service_stats(&cfg, true).is_some());
        cfg.migration.enabled = true;
        assert!(service_stats(&cfg, false).is_some());
        cfg.migration.dry_run = true;
        assert!(service_stats(&cfg, true).is_none());
    }

    #[test]
    fn options_follow_the_config() {
        let mut cfg = Config::defaults().unwrap();
        cfg.migration.exchange = Some("okx".into());
        cfg.migration.symbol_prefix = Some(String::new());
        let o = options(&cfg);
        assert_eq!(o.window, cfg.migration.window);
        assert_eq!(o.chunk, Duration::from_secs(3600));
        assert_eq!(o.tables, MigTable::ALL.to_vec());
        assert_eq!(o.filters.exchange.as_deref(), Some("okx"));
        assert_eq!(o.filters.symbol_prefix, None);
        assert!(!o.recheck_all);
    }
}
