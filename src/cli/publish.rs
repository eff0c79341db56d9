//! `publish`: the collector-shaped generator against any NATS, for testing deployments.

use std::time::Duration;

use crate::config::Config;
use crate::model::DataType;
use crate::publish::{self, Mix, PublishOptions, PublishStats, Rate, Transport};

/// Arguments of `publish`.
#[derive(Debug, clap::Args)]
pub struct PublishArgs {
    /// Total messages per second (0 = as fast as possible); default: the mix's own rates.
    #[arg(long)]
    pub rate: Option<f64>,
    /// The mix: `realistic`, `trades`, `orderbooks`, or `trade=5000,orderbook=500,…`.
    #[arg(long, default_value = "realistic")]
    pub mix: String,
    /// Only these types (comma-separated, e.g. `trade,orderbook`).
    #[arg(long, value_delimiter = ',')]
    pub types: Option<Vec<String>>,
    /// Stop after this long (e.g. `30s`, `5m`); default 10s unless --count is given.
    #[arg(long, value_parser = parse_duration)]
    pub duration: Option<Duration>,
    /// Stop after this many messages.
    #[arg(long)]
    pub count: Option<u64>,
    /// Everything on core NATS.
    #[arg(long, conflicts_with_all = ["jetstream"])]
    pub core: bool,
    /// Everything through JetStream (needs streams capturing every subject).
    #[arg(long)]
    pub jetstream: bool,
    /// Order-book levels per side.
    #[arg(long, default_value_t = publish::DEFAULT_DEPTH)]
    pub depth: usize,
    /// Generator seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// The configuration's duration syntax (`500ms`, `30s`, `5m`, `2h`, bare seconds), for flags.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    crate::config::parse_duration(s)
}

/// Builds publisher options from the flags.
pub fn options(args: &PublishArgs) -> anyhow::Result<PublishOptions> {
    let mix = match args.mix.as_str() {
        "realistic" => Mix::realistic(),
        "trades" => Mix::trades_only(),
        "orderbooks" => Mix::orderbooks_only(),
        other => Mix::parse(other)?,
    };
    let types = match &args.types {
        None => None,
        Some(v) => Some(
            v.iter()
                .map(|t| {
                    DataType::parse(t.trim())
                        .ok_or_else(|| anyhow::anyhow!("unknown data type {t:?}"))
                })
                .collect::<anyhow::Result<Vec<_>>>()?,
        ),
    };
    Ok(PublishOptions {
        mix,
        rate: args.rate.map_or(Rate::Mix, Rate::from_total),
        duration: match (args.duration, args.count) {
            (Some(d), _) => Some(d),
            (None, Some(_)) => None,
            (None, None) => Some(Duration::from_secs(10)),
        },
        count: args.count,
        types,
        transport: if args.core {
            Transport::Core
        } else if args.jetstream {
            Transport::JetStream
        } else {
            Transport::Collector
        },
        seed: args.seed,
        depth: args.depth,
    })
}

/// A per-type table of what was published.
pub fn report(stats: &PublishStats) -> String {
    let mut rows: Vec<Vec<String>> = DataType::ALL
        .iter()
        .filter(|t| stats.count(**t) > 0)
        .map(|t| vec![t.to_string(), stats.count(*t).to_string()])
        .collect();
    rows.push(vec!["total".into(), stats.total().to_string()]);
    let mut out = super::table::render(&["data type", "published"], &rows);
    out.push_str(&format!(
        "{:.1} s, {:.0} msg/s, {:.1} MB\n",
        stats.elapsed.as_secs_f64(),
        stats.rate(),
        stats.bytes as f64 / 1e6
    ));
    if stats.js_errors > 0 {
        out.push_str(&format!(
            "{} JetStream publishes failed (first: {})\n",
            stats.js_errors,
            stats.first_js_error.as_deref().unwrap_or("?")
        ));
    }
    out
}

/// Publishes until the duration/count is reached or Ctrl-C.
pub async fn run(cfg: &Config, args: &PublishArgs) -> anyhow::Result<()> {
    let opts = options(args)?;
    let client =
        crate::service::nats::connect_once(&cfg.nats, "marketprism-storage publish").await?;
    let line = super::progress::Progress::stderr();
    let text = |s: &PublishStats| {
        format!(
            "published {:>10} messages, {:>9.0} msg/s",
            s.total(),
            s.rate()
        )
    };
    let progress = |s: &PublishStats| line.update(|| text(s));
    let stats = tokio::select! {
        r = publish::publish(&client, &opts, progress) => r?,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    };
    line.finish(None);
    super::out(&report(&stats));
    if stats.js_errors > 0 {
        anyhow::bail!("{} JetStream publishes failed", stats.js_errors);
    }
    Ok(())
}
