//! `demo`: the whole product on one machine — embedded NATS and ClickHouse, the service, and a
//! publisher emitting all eight types in the collector's shapes — with a live progress line
//! and a summary.

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::embedded::{EmbeddedNats, Tools};
use crate::model::DataType;
use crate::pipeline::{Stats, stats::now_ms};
use crate::publish::{self, Mix, PublishOptions, Rate, Transport};

/// Arguments of `demo`.
#[derive(Debug, clap::Args)]
pub struct DemoArgs {
    /// Stop after this long (e.g. `20s`, `5m`); default: until Ctrl-C.
    #[arg(long, value_parser = super::publish::parse_duration)]
    pub duration: Option<Duration>,
    /// Total messages per second across the eight types (the collector's realistic mix,
    /// scaled).
    #[arg(long, default_value_t = 2000.0)]
    pub rate: f64,
    /// Client port of the embedded NATS (its monitoring port is `--nats-monitor-port`).
    #[arg(long, default_value_t = 4222)]
    pub nats_port: u16,
    /// Monitoring port of the embedded NATS (`curl localhost:8222/jsz`).
    #[arg(long, default_value_t = 8222)]
    pub nats_monitor_port: u16,
    /// Address of the embedded ClickHouse (default: `embedded.listen`, 127.0.0.1:8123).
    #[arg(long)]
    pub clickhouse_listen: Option<std::net::SocketAddr>,
    /// Port of the status page and /health, /ready, /stats, /metrics (default: `http.port`).
    #[arg(long)]
    pub http_port: Option<u16>,
}

/// Stream size limits of the demo's embedded NATS (see `run`).
const DEMO_HF_MAX_BYTES: std::num::NonZeroU64 = match std::num::NonZeroU64::new(2 << 30) {
    Some(n) => n,
    None => std::num::NonZeroU64::MIN,
};
const DEMO_MD_MAX_BYTES: std::num::NonZeroU64 = match std::num::NonZeroU64::new(256 << 20) {
    Some(n) => n,
    None => std::num::NonZeroU64::MIN,
};

const EXAMPLES: [(&str, &str); 3] = [
    (
        "latest trade price per market",
        "SELECT exchange, market_type, symbol, argMax(price, timestamp) AS last_price, count() AS trades FROM trades GROUP BY exchange, market_type, symbol ORDER BY exchange, market_type, symbol",
    ),
    (
        "1-second OHLCV bars for BTC-USDT on binance spot",
        "SELECT toStartOfSecond(timestamp) AS t, argMin(price, timestamp) AS open, max(price) AS high, min(price) AS low, argMax(price, timestamp) AS close, sum(quantity) AS volume FROM trades WHERE exchange = 'binance' AND market_type = 'spot' AND symbol = 'BTC-USDT' GROUP BY t ORDER BY t DESC LIMIT 10",
    ),
    (
        "spread of the latest order books",
        "SELECT exchange, market_type, symbol, argMax(best_ask_price - best_bid_price, timestamp) AS spread, max(timestamp) AS at FROM orderbooks GROUP BY exchange, market_type, symbol ORDER BY spread",
    ),
];

fn progress_line(stats: &Stats, started: Instant, published: u64) -> String {
    let mut parts = Vec::new();
    for t in DataType::ALL {
        let n = stats.of(t).counters().rows_inserted;
        parts.push(format!("{}={n}", t.table()));
    }
    format!(
        "[{:>4}s] published {published}; stored {}",
        started.elapsed().as_secs(),
        parts.join(" ")
    )
}

/// Runs the demo until `--duration` or Ctrl-C, then prints the summary.
pub async fn run(cfg: &Config, args: &DemoArgs) -> anyhow::Result<()> {
    let tools = Tools::locate(&cfg.embedded.tools_dir)?;
    let nats = EmbeddedNats::start(
        &tools,
        &cfg.embedded.data_dir.join("nats"),
        args.nats_port,
        Some(args.nats_monitor_port),
    )
    .await
    .map_err(|e| {
        anyhow::anyhow!(
            "{e} (is another NATS on port {}? use --nats-port)",
            args.nats_port
        )
    })?;
    let cfg = demo_config(cfg, args, &nats.url);
    super::out(&banner(&cfg, args, &nats.url));

    let stop = CancellationToken::new();
    let stats = Arc::new(Stats::new(now_ms()));
    let service = {
        let (cfg, stats, stop) = (cfg.clone(), stats.clone(), stop.clone());
        tokio::spawn(async move {
            crate::service::Service::new(cfg, crate::service::RunOptions::default())
                .with_stats(stats)
                .run(stop)
                .await
        })
    };
    let client = crate::service::nats::connect_once(&cfg.nats, "marketprism-storage demo").await?;
    if let Err(e) = wait_for_streams(&cfg, &client, &service).await {
        stop.cancel();
        let r = service.await;
        anyhow::bail!("{e}: {r:?}");
    }
    let started = Instant::now();
    let published = publish_until_done(&client, args, &stats, started).await;
    stop.cancel();
    match service.await {
        Ok(r) => r?,
        Err(e) => anyhow::bail!("service task failed: {e}"),
    }
    summary(&cfg, published, started).await?;
    nats.stop().await;
    Ok(())
}

/// The configuration of the demo's service: the embedded NATS, the ports asked for, and stream
/// limits that fit the machine.
fn demo_config(cfg: &Config, args: &DemoArgs, nats_url: &str) -> Config {
    let mut cfg = cfg.clone();
    cfg.nats.urls = vec![nats_url.to_string()];
    // The demo's own nats-server has no auth and no TLS: the configured ones are another
    // server's.
    cfg.nats.auth = crate::config::NatsAuth::None;
    cfg.nats.tls = crate::config::NatsTls::default();
    // The demo's own nats-server holds only the demo's traffic. JetStream refuses a stream whose
    // max_bytes exceeds its store (75 % of the free disk by default), so the production sizes
    // (20 GiB + 2 GiB) would fail on a machine with less than ~30 GB free. Were the service ever
    // 2 GiB behind, the oldest messages would go (discard old): a demo can afford that.
    let hf = &mut cfg.nats.streams.high_frequency.max_bytes;
    *hf = (*hf).min(DEMO_HF_MAX_BYTES);
    let md = &mut cfg.nats.streams.market_data.max_bytes;
    *md = (*md).min(DEMO_MD_MAX_BYTES);
    if let Some(l) = args.clickhouse_listen {
        cfg.embedded.listen = l;
    }
    if let Some(p) = args.http_port {
        cfg.http.port = p;
    }
    cfg
}

/// Where everything is, printed first.
fn banner(cfg: &Config, args: &DemoArgs, nats_url: &str) -> String {
    format!(
        "MarketPrism Storage demo\n  status page http://{}/\n  NATS        {} (monitoring http://127.0.0.1:{}/jsz)\n  ClickHouse  {} ({})\n  data        {}\n  Ctrl-C to stop{}\n\n",
        cfg.http.addr(),
        nats_url,
        args.nats_monitor_port,
        cfg.clickhouse.base_url(&cfg.embedded),
        if cfg.clickhouse.is_embedded() {
            "embedded"
        } else {
            "configured server"
        },
        cfg.embedded.data_dir.display(),
        args.duration
            .map(|d| format!(" (or after {d:?})"))
            .unwrap_or_default(),
    )
}

/// Publish only once the streams exist, or core-published trades and books are lost.
async fn wait_for_streams(
    cfg: &Config,
    client: &async_nats::Client,
    service: &tokio::task::JoinHandle<Result<(), crate::service::ServiceError>>,
) -> anyhow::Result<()> {
    let js = async_nats::jetstream::new(client.clone());
    let ready = Instant::now();
    while js
        .get_stream(&cfg.nats.streams.high_frequency.name)
        .await
        .is_err()
        || js
            .get_stream(&cfg.nats.streams.market_data.name)
            .await
            .is_err()
    {
        if ready.elapsed() > Duration::from_secs(60) || service.is_finished() {
            anyhow::bail!("the service did not create its streams within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(())
}

/// Publishes the collector's mix with a live progress line until `--duration`, or Ctrl-C;
/// then (unless interrupted) gives the last batches up to 5 s to land. Returns how many
/// messages were published.
async fn publish_until_done(
    client: &async_nats::Client,
    args: &DemoArgs,
    stats: &Stats,
    started: Instant,
) -> u64 {
    let opts = PublishOptions {
        mix: Mix::realistic(),
        rate: Rate::Total(args.rate),
        duration: args.duration,
        count: None,
        types: None,
        transport: Transport::Collector,
        seed: now_ms().unsigned_abs(),
        depth: publish::DEFAULT_DEPTH,
    };
    let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let publisher = {
        let client = client.clone();
        let published = published.clone();
        tokio::spawn(async move {
            publish::publish(&client, &opts, |s| published.store(s.total(), Relaxed)).await
        })
    };
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let line = super::progress::Progress::stderr();
    let mut interrupted = false;
    loop {
        tokio::select! {
            _ = tick.tick() => line.update(|| progress_line(stats, started, published.load(Relaxed))),
            _ = tokio::signal::ctrl_c() => { interrupted = true; break; }
            _ = async { while !publisher.is_finished() { tokio::time::sleep(Duration::from_millis(100)).await } } => break,
        }
    }
    publisher.abort();
    if let Ok(Ok(Ok(s))) = tokio::time::timeout(Duration::from_secs(1), publisher).await {
        published.store(s.total(), Relaxed);
    }
    let total = published.load(Relaxed);
    // Let the last batches land (max_age) before stopping: the summary should show them.
    if !interrupted {
        let until = Instant::now() + Duration::from_secs(5);
        while Instant::now() < until {
            let stored: u64 = DataType::ALL
                .iter()
                .map(|t| {
                    let c = stats.of(*t).counters();
                    c.rows_inserted + c.dead_letters
                })
                .sum();
            if stored >= total {
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    line.finish(Some(progress_line(stats, started, total)));
    total
}

/// Rows per table and three queries to paste, from the stored data.
async fn summary(cfg: &Config, published: u64, started: Instant) -> anyhow::Result<()> {
    // The service stopped its embedded ClickHouse: reopen it for the summary.
    let (sink, embedded) = crate::service::one_shot_clickhouse(cfg).await?;
    let mut rows = Vec::new();
    let mut total = 0u64;
    for t in DataType::ALL {
        let n = sink
            .fetch_count(&format!("SELECT count() FROM {}", t.table()))
            .await?;
        total += n;
        rows.push(vec![t.table().to_string(), n.to_string()]);
    }
    let dead = sink.fetch_count("SELECT count() FROM dead_letters").await?;
    rows.push(vec!["dead_letters".into(), dead.to_string()]);
    let mut out = format!(
        "\npublished {published} messages in {:.0} s; {total} rows stored\n\n",
        started.elapsed().as_secs_f64()
    );
    out.push_str(&super::table::render(&["table", "rows"], &rows));
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| {
            let cwd = std::env::current_dir().ok()?;
            p.strip_prefix(&cwd)
                .ok()
                .map(|r| format!("./{}", r.display()))
        })
        .unwrap_or_else(|| "marketprism-storage".into());
    out.push_str(
        "\nThe data stays in the embedded ClickHouse; `query` starts it for the question. Try:\n",
    );
    for (what, sql) in EXAMPLES {
        out.push_str(&format!("\n  # {what}\n  {exe} query \"{sql}\"\n"));
    }
    super::out(&out);
    if let Some(s) = embedded {
        s.stop().await;
    }
    Ok(())
}
