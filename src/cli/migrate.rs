//! `migrate`: copy hot rows older than the window into cold, verified chunk by chunk.
//!
//! `--once` runs one cycle and exits (non-zero if a chunk stayed mismatched); otherwise a
//! cycle runs every `--interval` until SIGINT/SIGTERM, serving the migrator's counters on
//! `--metrics-port` if given. `--dry-run` prints what would move.
//!
//! The same loop runs inside the service (`run --migrate`, `migration.enabled`):
//! [`spawn_migration`] starts it with the counters the service's ops surface exports.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::migrate::exec::NoProgress;
use crate::migrate::plan::fmt_ms;
use crate::migrate::{
    Filters, MigTable, MigrationStats, Migrator, MigratorOptions, Progress, Report, Span, exec,
};
use crate::ops;
use crate::pipeline::Stats;

/// Arguments of `migrate` (flags override `MIGRATION_*` and the `migration.*` config keys).
#[derive(Debug, clap::Args)]
pub struct MigrateArgs {
    /// Run one cycle and exit.
    #[arg(long)]
    pub once: bool,
    /// Seconds between cycles (default `migration.interval`, 300).
    #[arg(long)]
    pub interval: Option<u64>,
    /// Rows older than this many hours are migrated (MIGRATION_WINDOW_HOURS, default 8).
    #[arg(long)]
    pub window_hours: Option<f64>,
    /// Only symbols starting with this (MIGRATION_SYMBOL_PREFIX).
    #[arg(long)]
    pub symbol_prefix: Option<String>,
    /// Only this exchange (MIGRATION_EXCHANGE).
    #[arg(long)]
    pub exchange: Option<String>,
    /// Only this market type (MIGRATION_MARKET_TYPE).
    #[arg(long)]
    pub market_type: Option<String>,
    /// Print what would move; write nothing (MIGRATION_DRY_RUN).
    #[arg(long)]
    pub dry_run: bool,
    /// Only these tables (repeatable; table or data-type names, or `data_quality_events`).
    #[arg(long = "table")]
    pub tables: Vec<String>,
    /// Max rows per copy (MIGRATION_BATCH_LIMIT, default 5,000,000).
    #[arg(long)]
    pub batch_limit: Option<u64>,
    /// Verify and repair every chunk hot still holds, not just those after the watermark.
    #[arg(long)]
    pub recheck_all: bool,
    /// Chunk width in minutes (the grid is aligned to the epoch, so 60 = whole hours).
    #[arg(long, default_value_t = DEFAULT_CHUNK_MINUTES)]
    pub chunk_minutes: u64,
    /// Without --once: serve /metrics (the marketprism_cold_* families) on this port, on
    /// `http.bind` (the Python service's cold service used 9095).
    #[arg(long)]
    pub metrics_port: Option<u16>,
}

/// Chunk width of the grid, in minutes: whole hours.
const DEFAULT_CHUNK_MINUTES: u64 = 60;

/// Parses `--table` values (`trades` or `trade`, `data_quality_events`); none = every
/// migratable table.
pub fn parse_tables(names: &[String]) -> anyhow::Result<Vec<MigTable>> {
    if names.is_empty() {
        return Ok(MigTable::ALL.to_vec());
    }
    names
        .iter()
        .map(|n| MigTable::parse(n).with_context(|| format!("unknown table {n:?}")))
        .collect()
}

/// The migration filters from the config, overridden by flags.
pub fn filters(
    cfg: &Config,
    symbol_prefix: &Option<String>,
    exchange: &Option<String>,
    market_type: &Option<String>,
) -> Filters {
    let pick = |flag: &Option<String>, conf: &Option<String>| {
        flag.clone()
            .or_else(|| conf.clone())
            .filter(|s| !s.is_empty())
    };
    Filters {
        symbol_prefix: pick(symbol_prefix, &cfg.migration.symbol_prefix),
        exchange: pick(exchange, &cfg.migration.exchange),
        market_type: pick(market_type, &cfg.migration.market_type),
    }
}

/// `--window-hours` or the configured window.
pub fn window(cfg: &Config, flag: Option<f64>) -> anyhow::Result<Duration> {
    match flag {
        None => Ok(cfg.migration.window),
        Some(h) if h.is_finite() && h > 0.0 => Ok(Duration::from_secs_f64(h * 3600.0)),
        Some(h) => anyhow::bail!("--window-hours must be > 0, got {h}"),
    }
}

/// Hot and cold sinks (server settings detected) and whether they share a server; starts the
/// embedded ClickHouse for the command when configured.
pub async fn sinks(
    cfg: &Config,
) -> anyhow::Result<(
    crate::sink::Sink,
    crate::sink::Sink,
    bool,
    Option<crate::embedded::EmbeddedClickHouse>,
)> {
    let (mut hot, embedded) = super::one_shot_clickhouse(cfg).await?;
    hot.detect_server().await.context("hot clickhouse")?;
    let same_server = cfg.cold_clickhouse.is_none();
    let mut cold = if same_server {
        hot.on_database(&cfg.clickhouse.cold_db)
    } else {
        super::sink_for(cfg, &cfg.cold_endpoint())
    };
    if !same_server {
        cold.detect_server().await.context("cold clickhouse")?;
    }
    Ok((hot, cold, same_server, embedded))
}

/// The migrator options from the configuration alone: every migratable table (the eight
/// market-data tables and the quality events), hour chunks, the
/// configured filters. What the service runs; `migrate`'s flags override them.
pub fn config_options(cfg: &Config) -> MigratorOptions {
    MigratorOptions {
        window: cfg.migration.window,
        chunk: Duration::from_secs(DEFAULT_CHUNK_MINUTES * 60),
        batch_limit: cfg.migration.batch_limit.get(),
        filters: filters(cfg, &None, &None, &None),
        dry_run: cfg.migration.dry_run,
        lag: cfg.migration.lag,
        recheck_windows: cfg.migration.recheck_windows,
        tables: MigTable::ALL.to_vec(),
        leaf_rows: exec::DEFAULT_LEAF_ROWS,
        recheck_all: false,
    }
}

/// Time between cycles: `migration.interval`, at least 1 s.
fn config_interval(cfg: &Config) -> Duration {
    cfg.migration.interval.max(Duration::from_secs(1))
}

fn log_start(
    opts: &MigratorOptions,
    hot: &crate::sink::Sink,
    cold: &crate::sink::Sink,
    same_server: bool,
) {
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
}

/// Runs `migrate`.
pub async fn run(cfg: &Config, args: &MigrateArgs) -> anyhow::Result<()> {
    let defaults = config_options(cfg);
    let opts = MigratorOptions {
        window: window(cfg, args.window_hours)?,
        chunk: Duration::from_secs(args.chunk_minutes.max(1) * 60),
        batch_limit: args.batch_limit.unwrap_or(defaults.batch_limit).max(1),
        filters: filters(cfg, &args.symbol_prefix, &args.exchange, &args.market_type),
        dry_run: args.dry_run || defaults.dry_run,
        tables: parse_tables(&args.tables)?,
        recheck_all: args.recheck_all,
        ..defaults
    };
    let interval = args
        .interval
        .map(Duration::from_secs)
        .unwrap_or(cfg.migration.interval)
        .max(Duration::from_secs(1));
    let looping = !(args.once || opts.dry_run);
    // Bound before any ClickHouse work, so a busy port fails the start at once.
    let metrics = match args.metrics_port.filter(|_| looping) {
        Some(port) => Some(ops::bind(SocketAddr::new(cfg.http.bind, port)).await?),
        None => None,
    };
    let (hot, cold, same_server, embedded) = sinks(cfg).await?;
    let stats = Arc::new(MigrationStats::new());
    let dry_run = opts.dry_run;
    log_start(&opts, &hot, &cold, same_server);
    let migrator = Migrator::new(hot, cold, same_server, opts, stats.clone());
    let result = if looping {
        let stop = CancellationToken::new();
        spawn_stop_on_signal(stop.clone())?;
        let server = metrics.map(|listener| serve_metrics(cfg, listener, stats, stop.clone()));
        let r = cycle_loop(&migrator, interval, &stop, true).await;
        stop.cancel();
        if let Some(s) = server {
            let _ = s.await;
        }
        Ok(r)
    } else {
        once(&migrator, dry_run).await
    };
    if let Some(s) = embedded {
        s.stop().await;
    }
    result
}

/// Cancels `stop` on SIGINT/SIGTERM.
fn spawn_stop_on_signal(stop: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        stop.cancel();
    });
    Ok(())
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

/// Starts the migration loop inside the service when `stats` is given (see [`service_stats`]):
/// a cycle at once, then every `migration.interval`, until `stop`. A failed cycle is logged
/// and retried at the next interval; a cycle cut by `stop` is safe to cut (every copy carries
/// a deterministic token, see `docs/migration.md`).
pub fn spawn_migration(
    cfg: &Config,
    stats: Option<Arc<MigrationStats>>,
    stop: CancellationToken,
) -> Option<JoinHandle<()>> {
    let stats = stats?;
    let mut opts = config_options(cfg);
    opts.dry_run = false;
    let interval = config_interval(cfg);
    let mut hot = super::sink_for(cfg, &cfg.hot_endpoint());
    // `None`: cold is a database on the hot server.
    let other_cold = cfg
        .cold_clickhouse
        .as_ref()
        .map(|_| super::sink_for(cfg, &cfg.cold_endpoint()));
    let cold_db = cfg.clickhouse.cold_db.clone();
    Some(tokio::spawn(async move {
        // ClickHouse may still be starting with the service: wait for it like the schema does.
        if !detect_until_stopped(&mut hot, "hot", &stop).await {
            return;
        }
        let same_server = other_cold.is_none();
        let cold = match other_cold {
            None => hot.on_database(&cold_db),
            Some(mut cold) => {
                if !detect_until_stopped(&mut cold, "cold", &stop).await {
                    return;
                }
                cold
            }
        };
        log_start(&opts, &hot, &cold, same_server);
        let migrator = Migrator::new(hot, cold, same_server, opts, stats);
        cycle_loop(&migrator, interval, &stop, false).await;
        tracing::info!("migration stopped");
    }))
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

/// Detects the server's settings, retrying with backoff; false when `stop` fired first.
async fn detect_until_stopped(
    sink: &mut crate::sink::Sink,
    which: &str,
    stop: &CancellationToken,
) -> bool {
    let mut delay = Duration::from_millis(200);
    loop {
        match sink.detect_server().await {
            Ok(()) => return true,
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "migration: {which} clickhouse not answering");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = stop.cancelled() => return false,
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

async fn once(migrator: &Migrator, dry_run: bool) -> anyhow::Result<()> {
    let progress = TermProgress::new();
    let started = Instant::now();
    let now = chrono::Utc::now().timestamp_millis();
    let report = migrator.run_once(now, &progress).await;
    progress.finish();
    let report = report?;
    if dry_run {
        super::out(&render_dry_run(&report));
        return Ok(());
    }
    super::out(&render_report(&report, started.elapsed()));
    if !report.all_verified() {
        anyhow::bail!(
            "some chunks still differ between hot and cold (see the report and migration_chunks)"
        );
    }
    Ok(())
}

/// A cycle every `interval` until `stop` (which also cuts a running cycle). `terminal`: show
/// the progress on stderr (the standalone command); the service logs only the cycle's end.
async fn cycle_loop(
    migrator: &Migrator,
    interval: Duration,
    stop: &CancellationToken,
    terminal: bool,
) {
    loop {
        let started = Instant::now();
        let now = chrono::Utc::now().timestamp_millis();
        let term = terminal.then(TermProgress::new);
        let progress: &dyn Progress = match &term {
            Some(p) => p,
            None => &NoProgress,
        };
        let result = tokio::select! {
            r = migrator.run_once(now, progress) => r,
            () = stop.cancelled() => return,
        };
        if let Some(p) = &term {
            p.finish();
        }
        match result {
            Ok(r) => {
                let copied: u64 = r.tables.iter().map(|t| t.rows_copied).sum();
                let mismatched: usize = r.tables.iter().map(|t| t.chunks_mismatched).sum();
                let late: u64 = r.tables.iter().map(|t| t.late_rows).sum();
                tracing::info!(
                    cutoff = %fmt_ms(r.cutoff_ms),
                    rows_copied = copied,
                    late_rows = late,
                    chunks_mismatched = mismatched,
                    secs = started.elapsed().as_secs_f64(),
                    "migration cycle done"
                );
            }
            Err(e) => tracing::error!(error = %e, "migration cycle failed; retrying next interval"),
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            () = stop.cancelled() => return,
        }
    }
}

fn rate(rows: u64, secs: f64) -> String {
    if secs <= 0.0 {
        return "-".into();
    }
    format!("{:.0}", rows as f64 / secs)
}

fn render_report(r: &Report, elapsed: Duration) -> String {
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.to_string(),
                t.chunks.to_string(),
                t.chunks_changed.to_string(),
                t.chunks_repaired.to_string(),
                t.chunks_mismatched.to_string(),
                t.rows_hot.to_string(),
                t.rows_copied.to_string(),
                t.late_rows.to_string(),
                t.watermark.1.map(fmt_ms).unwrap_or_else(|| "-".into()),
                format!("{:.1}", t.elapsed.as_secs_f64()),
                rate(t.rows_copied, t.elapsed.as_secs_f64()),
            ]
        })
        .collect();
    let copied: u64 = r.tables.iter().map(|t| t.rows_copied).sum();
    format!(
        "{}migrated everything older than {}: {copied} rows copied in {:.1} s ({} rows/s)\n",
        super::table::render(
            &[
                "table",
                "chunks",
                "changed",
                "repaired",
                "mismatch",
                "rows_hot",
                "copied",
                "late",
                "watermark",
                "secs",
                "rows/s"
            ],
            &rows
        ),
        fmt_ms(r.cutoff_ms),
        elapsed.as_secs_f64(),
        rate(copied, elapsed.as_secs_f64())
    )
}

fn render_dry_run(r: &Report) -> String {
    let rows: Vec<Vec<String>> = r
        .tables
        .iter()
        .map(|t| {
            vec![
                t.table.to_string(),
                t.chunks_changed.to_string(),
                t.rows_copied.to_string(),
            ]
        })
        .collect();
    format!(
        "dry run: would migrate rows older than {} (nothing written)\n{}",
        fmt_ms(r.cutoff_ms),
        super::table::render(&["table", "chunks", "rows"], &rows)
    )
}

struct ProgressState {
    table: String,
    index: usize,
    of: usize,
    span: Option<Span>,
    rows: u64,
    last_log: Instant,
}

/// Progress on stderr: one updating line on a terminal, a log line every 10 s otherwise.
struct TermProgress {
    tty: bool,
    started: Instant,
    state: Mutex<ProgressState>,
}

impl TermProgress {
    fn new() -> TermProgress {
        TermProgress {
            tty: std::io::stderr().is_terminal(),
            started: Instant::now(),
            state: Mutex::new(ProgressState {
                table: String::new(),
                index: 0,
                of: 0,
                span: None,
                rows: 0,
                last_log: Instant::now(),
            }),
        }
    }

    fn show(&self, s: &mut ProgressState, force: bool) {
        let secs = self.started.elapsed().as_secs_f64();
        let span = s.span.map(|x| x.to_string()).unwrap_or_default();
        if self.tty {
            let line = format!(
                "\r\x1b[2K{} chunk {}/{} {span}  {} rows  {} rows/s",
                s.table,
                s.index,
                s.of,
                s.rows,
                rate(s.rows, secs)
            );
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(line.as_bytes());
            let _ = e.flush();
        } else if force || s.last_log.elapsed() >= Duration::from_secs(10) {
            s.last_log = Instant::now();
            tracing::info!(
                table = %s.table,
                chunk = %format!("{}/{}", s.index, s.of),
                span = %span,
                rows = s.rows,
                rows_per_s = %rate(s.rows, secs),
                "migrating"
            );
        }
    }

    fn finish(&self) {
        if self.tty {
            let mut e = std::io::stderr().lock();
            let _ = e.write_all(b"\r\x1b[2K");
            let _ = e.flush();
        }
    }
}

impl Progress for TermProgress {
    fn chunk(&self, table: &str, index: usize, of: usize, span: Span, _rows_hot: u64) {
        if let Ok(mut s) = self.state.lock() {
            let new_table = s.table != table;
            s.table = table.to_string();
            s.index = index;
            s.of = of;
            s.span = Some(span);
            self.show(&mut s, new_table);
        }
    }

    fn copied(&self, _table: &str, rows: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.rows += rows;
            self.show(&mut s, false);
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

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
    fn run_migrate_flag_and_metrics_port_parse() {
        let cli =
            crate::cli::Cli::try_parse_from(["marketprism-storage", "run", "--migrate"]).unwrap();
        assert!(matches!(cli.command, crate::cli::Command::Run(a) if a.migrate));
        let cli = crate::cli::Cli::try_parse_from([
            "marketprism-storage",
            "migrate",
            "--metrics-port",
            "9095",
        ])
        .unwrap();
        assert!(
            matches!(cli.command, crate::cli::Command::Migrate(a) if a.metrics_port == Some(9095))
        );
    }

    #[test]
    fn table_selection_includes_the_quality_events_but_not_the_dead_letters() {
        let all = parse_tables(&[]).unwrap();
        assert_eq!(all.len(), 9);
        assert_eq!(all.last(), Some(&MigTable::QualityEvents));
        let some = parse_tables(&["data_quality_events".into(), "trade".into()]).unwrap();
        assert_eq!(
            some,
            [
                MigTable::QualityEvents,
                MigTable::Data(crate::model::DataType::Trade)
            ]
        );
        assert!(parse_tables(&["dead_letters".into()]).is_err());
    }

    #[test]
    fn config_options_follow_the_config() {
        let mut cfg = Config::defaults().unwrap();
        cfg.migration.exchange = Some("okx".into());
        let o = config_options(&cfg);
        assert_eq!(o.window, cfg.migration.window);
        assert_eq!(o.chunk, Duration::from_secs(3600));
        assert_eq!(o.tables, MigTable::ALL.to_vec());
        assert_eq!(o.filters.exchange.as_deref(), Some("okx"));
        assert!(!o.recheck_all);
    }
}
