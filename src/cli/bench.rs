//! `bench`: raw ceilings and the service end to end, with ratios, in one run.

use std::path::PathBuf;

use crate::bench::{self, BenchOptions};
use crate::config::Config;
use crate::model::DataType;

/// The Python service's figures on this kind of machine (the brief): trades/s and 100-level books/s.
const PYTHON_TRADES: f64 = 10_000.0;
const PYTHON_ORDERBOOKS: f64 = 2_500.0;

/// Arguments of `bench`.
#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Trades in the backlog.
    #[arg(long, default_value_t = 1_000_000)]
    pub trades: u64,
    /// Order books (100 levels per side) in the backlog.
    #[arg(long, default_value_t = 100_000)]
    pub orderbooks: u64,
    /// Levels per side.
    #[arg(long, default_value_t = 100)]
    pub depth: usize,
    /// Publish rate of the trade latency phase, msg/s.
    #[arg(long, default_value_t = 50_000.0)]
    pub trade_rate: f64,
    /// Publish rate of the order-book latency phase, msg/s.
    #[arg(long, default_value_t = 5_000.0)]
    pub orderbook_rate: f64,
    /// Seconds of each latency phase.
    #[arg(long, default_value_t = 10)]
    pub latency_secs: u64,
    /// Keep the servers' data in this directory (default: a temp dir, removed).
    #[arg(long)]
    pub work_dir: Option<PathBuf>,
    /// YAML configuration for the service under test (default: the built-in defaults).
    #[arg(long)]
    pub service_config: Option<PathBuf>,
}

fn machine() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into());
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map_or(0, |kb| kb / 1024 / 1024);
    format!(
        "{cores} cores ({cpu}), {mem} GiB; nats-server, embedded ClickHouse (chDB 26.9) and the service share them"
    )
}

fn k(v: f64) -> String {
    if v >= 10_000.0 {
        format!("{:.0}k", v / 1000.0)
    } else {
        format!("{v:.0}")
    }
}

/// Runs the benchmark and prints the report.
pub async fn run(cfg: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let work_dir = args
        .work_dir
        .clone()
        .unwrap_or_else(|| tmp.path().to_path_buf());
    let o = BenchOptions {
        trades: args.trades,
        orderbooks: args.orderbooks,
        depth: args.depth,
        trade_rate: args.trade_rate,
        orderbook_rate: args.orderbook_rate,
        latency_secs: args.latency_secs,
        binary: std::env::current_exe()?,
        tools_dir: cfg.embedded.tools_dir.clone(),
        work_dir,
        service_config: args.service_config.clone(),
    };
    let started = std::time::Instant::now();
    let figures = bench::run(&o, |step| {
        eprintln!("[{:>5.1}s] {step}", started.elapsed().as_secs_f64())
    })
    .await?;
    let mut rows = Vec::new();
    for (t, f) in &figures {
        let python = if *t == DataType::Trade {
            PYTHON_TRADES
        } else {
            PYTHON_ORDERBOOKS
        };
        rows.push(vec![
            t.to_string(),
            f.messages.to_string(),
            format!("{:.0}", f.avg_bytes),
            k(f.raw_consume),
            k(f.raw_insert),
            k(f.e2e),
            format!("{:.1}", f.e2e * f.avg_bytes / 1e6),
            format!("{:.2}", f.ratio()),
            format!("{:.0}×", f.e2e / python),
            format!("{:.0}/{:.0}", f.p50_ms, f.p99_ms),
            k(f.latency_rate),
            format!("{:.0}", f.peak_rss as f64 / 1024.0 / 1024.0),
        ]);
    }
    let mut out = format!("machine: {}\n\n", machine());
    out.push_str(&super::table::render(
        &[
            "type",
            "backlog",
            "bytes/msg",
            "raw consume msg/s",
            "raw insert rows/s",
            "e2e msg/s",
            "e2e MB/s",
            "e2e/ceiling",
            "vs Python",
            "latency p50/p99 ms",
            "at msg/s",
            "peak RSS MiB",
        ],
        &rows,
    ));
    out.push_str(
        "\nceiling = min(raw consume, raw insert), measured in this run; e2e = the service binary draining the same backlog\n\
         (first row to last row); latency = created_at − timestamp per row while publishing at the given rate;\n\
         the Python service = 10,000 trades/s and 2,500 100-level order books/s on this kind of machine.\n",
    );
    super::out(&out);
    Ok(())
}
