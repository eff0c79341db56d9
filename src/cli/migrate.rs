//! `migrate`: copy hot rows older than the window into cold, verified chunk by chunk.
//!
//! `--once` runs one cycle and exits (non-zero if a chunk stayed mismatched); otherwise a
//! cycle runs every `--interval` until SIGINT/SIGTERM, serving the migrator's counters on
//! `--metrics-port` if given. `--dry-run` prints what would move.
//!
//! The loop is the library's (`migrate::run_cycles`, assembled by `service::migration`, which
//! also runs it inside the service); this command turns flags into options and prints the
//! progress and the report.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::migrate::plan::fmt_ms;
use crate::migrate::{
    Filters, MigTable, MigrationStats, Migrator, MigratorOptions, Progress, Report, Span,
};
use crate::ops;
use crate::service::migration::{self, DEFAULT_CHUNK_MINUTES};

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
    let conf = migration::filters(cfg);
    // A flag wins even when empty (`--exchange ''` clears the configured filter).
    let pick = |flag: &Option<String>, conf: Option<String>| match flag {
        Some(f) => Some(f.clone()).filter(|s| !s.is_empty()),
        None => conf,
    };
    Filters {
        symbol_prefix: pick(symbol_prefix, conf.symbol_prefix),
        exchange: pick(exchange, conf.exchange),
        market_type: pick(market_type, conf.market_type),
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

/// Runs `migrate`.
pub async fn run(cfg: &Config, args: &MigrateArgs) -> anyhow::Result<()> {
    let defaults = migration::options(cfg);
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
    let (hot, cold, same_server, embedded) = migration::sinks(cfg).await?;
    let stats = Arc::new(MigrationStats::new());
    let dry_run = opts.dry_run;
    let migrator = migration::migrator(hot, cold, same_server, opts, stats);
    let result = if looping {
        let stop = CancellationToken::new();
        spawn_stop_on_signal(stop.clone())?;
        // The loop runs as a service: a progress line on a terminal, and off one only the
        // end-of-cycle log (a "migrating" event every 10 s of every cycle would flood its log).
        let term = std::io::IsTerminal::is_terminal(&std::io::stderr()).then(TermProgress::new);
        let progress: &dyn crate::migrate::exec::Progress = match &term {
            Some(p) => p,
            None => &crate::migrate::exec::NoProgress,
        };
        migration::run_standalone(cfg, &migrator, interval, metrics, progress, &stop).await;
        Ok(())
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
    started: Instant,
    table: String,
    index: usize,
    of: usize,
    span: Option<Span>,
    rows: u64,
}

impl ProgressState {
    fn fresh() -> ProgressState {
        ProgressState {
            started: Instant::now(),
            table: String::new(),
            index: 0,
            of: 0,
            span: None,
            rows: 0,
        }
    }
}

/// Progress on stderr ([`super::progress::Progress`]): one updating line on a terminal, a log
/// event every 10 s (and at each new table) otherwise.
struct TermProgress {
    line: super::progress::Progress,
    state: Mutex<ProgressState>,
}

impl TermProgress {
    fn new() -> TermProgress {
        TermProgress {
            line: super::progress::Progress::stderr(),
            state: Mutex::new(ProgressState::fresh()),
        }
    }

    fn show(&self, s: &ProgressState, force: bool) {
        let secs = s.started.elapsed().as_secs_f64();
        let span = s.span.map(|x| x.to_string()).unwrap_or_default();
        self.line.update_with(
            force,
            || {
                format!(
                    "{} chunk {}/{} {span}  {} rows  {} rows/s",
                    s.table,
                    s.index,
                    s.of,
                    s.rows,
                    rate(s.rows, secs)
                )
            },
            |_| {
                tracing::info!(
                    table = %s.table,
                    chunk = %format!("{}/{}", s.index, s.of),
                    span = %span,
                    rows = s.rows,
                    rows_per_s = %rate(s.rows, secs),
                    "migrating"
                );
            },
        );
    }

    fn finish(&self) {
        self.line.finish(None);
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
            self.show(&s, new_table);
        }
    }

    fn copied(&self, _table: &str, rows: u64) {
        if let Ok(mut s) = self.state.lock() {
            s.rows += rows;
            self.show(&s, false);
        }
    }

    fn cycle_started(&self) {
        if let Ok(mut s) = self.state.lock() {
            *s = ProgressState::fresh();
        }
    }

    fn cycle_ended(&self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

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
    fn a_flag_overrides_the_configured_filter_and_an_empty_one_clears_it() {
        let mut cfg = Config::defaults().unwrap();
        cfg.migration.exchange = Some("okx".into());
        cfg.migration.market_type = Some("perpetual".into());
        let f = filters(&cfg, &Some("BTC".into()), &Some(String::new()), &None);
        assert_eq!(f.symbol_prefix.as_deref(), Some("BTC"));
        assert_eq!(f.exchange, None);
        assert_eq!(f.market_type.as_deref(), Some("perpetual"));
        assert_eq!(filters(&cfg, &None, &None, &None), migration::filters(&cfg));
    }
}
