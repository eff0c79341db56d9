//! `bench`: raw ceilings and the service end to end, with ratios, in one run.

use std::path::PathBuf;

use crate::bench::scale::{self, ScaleFigures, ScaleOptions};
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
    /// Service instances draining the backlog side by side; a list (`1,2,3`) runs each count
    /// in turn, on fresh servers. Anything but 1 (or `--partitions` above 1) selects the scaling
    /// mode: no latency phase, CPU per message per process, the lanes each instance held.
    #[arg(long, value_delimiter = ',', default_value = "1",
          value_parser = clap::value_parser!(u32).range(1..=16))]
    pub instances: Vec<u32>,
    /// Partitions of the high-frequency stream in the scaling mode (`nats.streams.high_frequency.partitions`).
    #[arg(long, default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=i64::from(crate::source::partition::MAX_PARTITIONS)))]
    pub partitions: u32,
}

impl BenchArgs {
    /// Whether the scaling mode is asked for (anything but one instance on one partition).
    pub fn scaling(&self) -> bool {
        self.instances != [1] || self.partitions != 1
    }
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
    if args.scaling() {
        return run_scale(cfg, args).await;
    }
    let (_tmp, o) = options(cfg, args)?;
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
            us(scale::us_per_msg(f.service_ticks, f.messages)),
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
            "service µs/msg",
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
         (first row to last row); service µs/msg = the service's CPU (utime+stime) from its start to the last row, per\n\
         message; latency = created_at − timestamp per row while publishing at the given rate;\n\
         the Python service = 10,000 trades/s and 2,500 100-level order books/s on this kind of machine.\n",
    );
    super::out(&out);
    Ok(())
}

/// The benchmark's options, and the temp dir that holds the servers' data unless `--work-dir`
/// is given (removed when dropped).
fn options(cfg: &Config, args: &BenchArgs) -> anyhow::Result<(tempfile::TempDir, BenchOptions)> {
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
    Ok((tmp, o))
}

/// `bench --instances N[,M…] --partitions P`: one row per configuration and type, then the
/// instances of each with the lanes they held.
async fn run_scale(cfg: &Config, args: &BenchArgs) -> anyhow::Result<()> {
    let (_tmp, bench) = options(cfg, args)?;
    let o = ScaleOptions {
        bench,
        instances: args.instances.clone(),
        partitions: args.partitions,
    };
    let started = std::time::Instant::now();
    let figures = scale::run(&o, |step| {
        eprintln!("[{:>5.1}s] {step}", started.elapsed().as_secs_f64())
    })
    .await?;
    let mut out = format!("machine: {}\n\n", machine());
    out.push_str(&scale_report(&figures));
    super::out(&out);
    Ok(())
}

/// `shown`, or `-` when `v` is 0 (the first look already found every row: no rate between the
/// first row and the last can be told; the wall figure still can).
fn or_dash(v: f64, shown: String) -> String {
    if v > 0.0 { shown } else { "-".into() }
}

/// How many of a run's lanes hold messages, of how many (`3/7`: base + 6 partitions).
fn busy_lanes(f: &ScaleFigures) -> String {
    let busy = f.lane_messages.iter().filter(|(_, n)| *n > 0).count();
    format!("{busy} of {}", f.lane_messages.len())
}

fn us(v: f64) -> String {
    format!("{v:.2}")
}

/// The scaling report: the runs, then each run's instances and lanes.
fn scale_report(figures: &[ScaleFigures]) -> String {
    let type_of = |f: &ScaleFigures| f.data_type.map_or_else(String::new, |t| t.to_string());
    let rows: Vec<Vec<String>> = figures
        .iter()
        .map(|f| {
            vec![
                type_of(f),
                f.instances.to_string(),
                f.partitions.to_string(),
                f.messages.to_string(),
                k(f.raw_consume),
                k(f.raw_insert),
                or_dash(f.e2e, k(f.e2e)),
                k(f.wall),
                or_dash(f.e2e, format!("{:.2}", f.ratio())),
                us(f.service_us()),
                us(scale::us_per_msg(f.nats_ticks, f.messages)),
                us(scale::us_per_msg(f.clickhouse_ticks, f.messages)),
                us(scale::us_per_msg(f.bench_ticks, f.messages)),
                us(f.all_us()),
                busy_lanes(f),
                f.moves.to_string(),
                format!("{:.1}", f.settled_secs),
            ]
        })
        .collect();
    let mut out = super::table::render(
        &[
            "type",
            "instances",
            "partitions",
            "backlog",
            "raw consume msg/s",
            "raw insert rows/s",
            "e2e msg/s",
            "wall msg/s",
            "e2e/ceiling",
            "service µs/msg",
            "nats µs/msg",
            "CH µs/msg",
            "bench µs/msg",
            "all µs/msg",
            "lanes with messages",
            "lease moves",
            "last move s",
        ],
        &rows,
    );
    let mut per = Vec::new();
    for f in figures {
        let size: std::collections::BTreeMap<&str, u64> = f
            .lane_messages
            .iter()
            .map(|(l, n)| (l.as_str(), *n))
            .collect();
        for i in &f.per_instance {
            let lanes: Vec<String> = i
                .lanes
                .iter()
                .map(|l| {
                    format!(
                        "{l} ({})",
                        k(size.get(l.as_str()).copied().unwrap_or(0) as f64)
                    )
                })
                .collect();
            per.push(vec![
                type_of(f),
                f.instances.to_string(),
                f.partitions.to_string(),
                i.id.clone(),
                if lanes.is_empty() {
                    "-".into()
                } else {
                    lanes.join(", ")
                },
                i.inserted.to_string(),
                format!(
                    "{:.0} %",
                    i.inserted as f64 * 100.0 / f.messages.max(1) as f64
                ),
                format!("{:.2}", i.ticks as f64 / crate::ops::process::USER_HZ),
                us(scale::us_per_msg(i.ticks, i.inserted)),
            ]);
        }
    }
    out.push('\n');
    out.push_str(&super::table::render(
        &[
            "type",
            "instances",
            "partitions",
            "instance",
            "lanes held at the end (messages in each)",
            "rows inserted",
            "share",
            "CPU s",
            "µs/row",
        ],
        &per,
    ));
    out.push_str(
        "\nceiling = min(raw consume, raw insert), measured in the same run on the same backlog (one pull consumer\n\
         over all partitions; pre-encoded inserts); e2e = first row to last row stored; wall = from starting the\n\
         instances to the last row (start-up and lane hand-overs included). CPU = utime+stime from /proc/<pid>/stat\n\
         over the drain: service = all instances (each from its start) per message; nats, CH (the embedded\n\
         ClickHouse) and bench (this process, polling) separately; all = their sum, what the machine spent per\n\
         message. Lanes with messages: of the base lane and the P partitions (a market always hashes to the same\n\
         partition, so few markets can leave some empty). share = an instance's part of the backlog; µs/row = its\n\
         CPU over the rows it inserted. A lease move = a lane taken over by another instance.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::scale::InstanceFigures;
    use clap::Parser;

    #[derive(Debug, clap::Parser)]
    struct Cli {
        #[command(flatten)]
        bench: BenchArgs,
    }

    #[test]
    fn instances_take_a_list_and_one_on_one_is_the_default_benchmark() {
        let a = Cli::parse_from(["x"]).bench;
        assert_eq!(a.instances, [1]);
        assert!(!a.scaling());
        let a = Cli::parse_from(["x", "--instances", "1,2,3", "--partitions", "4"]).bench;
        assert_eq!(a.instances, [1, 2, 3]);
        assert!(a.scaling());
        assert!(Cli::parse_from(["x", "--partitions", "2"]).bench.scaling());
        assert!(Cli::try_parse_from(["x", "--instances", "0"]).is_err());
        assert!(Cli::try_parse_from(["x", "--partitions", "257"]).is_err());
    }

    #[test]
    fn the_scale_report_has_a_row_per_run_and_one_per_instance() {
        let f = ScaleFigures {
            data_type: Some(DataType::Trade),
            instances: 2,
            partitions: 4,
            messages: 1_000_000,
            raw_consume: 400_000.0,
            raw_insert: 1_600_000.0,
            e2e: 200_000.0,
            wall: 150_000.0,
            per_instance: vec![
                InstanceFigures {
                    id: "bench-trade-1".into(),
                    ticks: 150,
                    inserted: 600_000,
                    lanes: vec!["base".into(), "0/4".into(), "2/4".into()],
                },
                InstanceFigures {
                    id: "bench-trade-2".into(),
                    ticks: 100,
                    inserted: 400_000,
                    lanes: vec!["1/4".into(), "3/4".into()],
                },
            ],
            nats_ticks: 50,
            lane_messages: vec![
                ("base".into(), 0),
                ("0/4".into(), 375_000),
                ("1/4".into(), 250_000),
                ("2/4".into(), 225_000),
                ("3/4".into(), 150_000),
            ],
            moves: 2,
            settled_secs: 4.0,
            ..Default::default()
        };
        let r = scale_report(&[f]);
        let lines: Vec<&str> = r.lines().collect();
        assert!(lines[0].starts_with("type   instances  partitions  backlog"));
        // ratio 200k / min(400k, 1600k) = 0.50; 250 ticks = 2.5 s over 1M messages = 2.50 µs.
        let row: Vec<&str> = lines[2].split_whitespace().collect();
        assert_eq!(
            row,
            [
                "trade", "2", "4", "1000000", "400k", "1600k", "200k", "150k", "0.50", "2.50",
                "0.50", "0.00", "0.00", "3.00", "4", "of", "5", "2", "4.0"
            ]
        );
        assert!(r.contains("bench-trade-1"));
        assert!(r.contains("base (0), 0/4 (375k), 2/4 (225k)"));
        assert!(r.contains("1/4 (250k), 3/4 (150k)"));
        // 1.5 s over 600k rows = 2.50 µs/row; 1 s over 400k = 2.50.
        let inst: Vec<&str> = lines
            .iter()
            .find(|l| l.starts_with("trade") && l.contains("bench-trade-2"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            inst[inst.len() - 5..],
            ["400000", "40", "%", "1.00", "2.50"]
        );
    }
}
