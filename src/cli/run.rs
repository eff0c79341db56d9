//! `run`: the service. Embedded ClickHouse if none is configured, schema, NATS, pipeline.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::config::{Config, NatsMode, StreamConfig};
use crate::embedded::{EmbeddedClickHouse, Tools};
use crate::model::DataType;
use crate::ops;
use crate::pipeline::{self, Settings, Stats};
use crate::schema;
use crate::source::ConsumerSpec;
use crate::source::streams::StreamSpec;

/// Arguments of `run`.
#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Do not create missing databases and tables at start.
    #[arg(long)]
    pub no_init: bool,
    /// Instance id for consumer leases (default `<hostname>:<http port>`; keep it stable
    /// across restarts of the same instance, distinct between instances).
    #[arg(long, env = "MARKETPRISM_INSTANCE_ID")]
    pub instance_id: Option<String>,
    /// Also run the hot → cold migration loop in this process (same as `migration.enabled`).
    #[arg(long)]
    pub migrate: bool,
}

fn stream_spec(s: &StreamConfig) -> StreamSpec {
    StreamSpec {
        name: s.name.clone(),
        subjects: s.subjects.clone(),
        max_age: s.max_age,
        max_msgs: s.max_msgs,
        max_bytes: i64::try_from(s.max_bytes.get()).unwrap_or(i64::MAX),
        duplicate_window: s.duplicate_window,
        replicas: s.replicas.get(),
    }
}

/// The streams to ensure: the Python service's `MARKET_DATA` and our `MARKET_DATA_HF`.
pub fn stream_specs(cfg: &Config) -> Vec<StreamSpec> {
    vec![
        stream_spec(&cfg.nats.streams.market_data),
        stream_spec(&cfg.nats.streams.high_frequency),
    ]
}

/// Resolves the pipeline settings from the configuration.
pub fn settings(cfg: &Config, instance_id: String) -> Settings {
    let mut consumers = BTreeMap::new();
    let mut limits = BTreeMap::new();
    let mut max_queue = BTreeMap::new();
    let mut max_queue_bytes = BTreeMap::new();
    for t in DataType::ALL {
        let b = cfg.batch.get(t);
        max_queue.insert(t, b.max_queue.get());
        max_queue_bytes.insert(t, b.max_queue_bytes.get());
        limits.insert(
            t,
            Limits {
                max_rows: b.max_rows.get(),
                max_bytes: usize::try_from(b.max_bytes.get()).unwrap_or(usize::MAX),
                max_age: b.max_age,
            },
        );
        if let Some(stream) = cfg.nats.stream_for(t) {
            consumers.insert(
                t,
                ConsumerSpec {
                    data_type: t,
                    stream: stream.name.clone(),
                    durable: cfg.nats.durable_name(t),
                    ack_wait: cfg.nats.ack_wait,
                    max_ack_pending: i64::try_from(cfg.nats.max_ack_pending.get(t).get())
                        .unwrap_or(i64::MAX),
                },
            );
        }
    }
    Settings {
        types: cfg.nats.types.clone(),
        streams: stream_specs(cfg),
        consumers,
        limits,
        max_queue,
        max_queue_bytes,
        fetch_batch: cfg.nats.fetch_batch.get(),
        fetch_max_bytes: usize::try_from(cfg.nats.fetch_max_bytes.get()).unwrap_or(usize::MAX),
        journal_bucket: cfg.nats.journal_bucket.clone(),
        lease_bucket: format!("{}_leases", cfg.nats.journal_bucket),
        instance_id,
        retry: cfg.retry.policy(),
    }
}

fn default_instance_id(cfg: &Config) -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", cfg.http.port)
}

/// Cancels `stop` on the first SIGINT/SIGTERM; a second one exits at once.
fn spawn_signal_handler(stop: CancellationToken) -> anyhow::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::spawn(async move {
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::info!("shutdown requested: stop fetching, flush, insert, ack");
        stop.cancel();
        tokio::select! { _ = term.recv() => {}, _ = int.recv() => {} }
        tracing::warn!("second signal: exiting without flushing (the journal makes this safe)");
        std::process::exit(130);
    });
    Ok(())
}

/// Connects to NATS, retrying forever in the background (the service starts even when NATS is
/// not up yet), and keeps `stats.nats_connected` current.
///
/// The client never gives up: `max_reconnects(None)` means unlimited attempts (async-nats waits
/// 0 ms, then 2^n ms capped at 4 s between them), so after an outage of any length it is back
/// within ~4 s of the server; the pipeline re-acquires its leases and resynchronises then.
pub async fn connect_nats(cfg: &Config, stats: Arc<Stats>) -> anyhow::Result<async_nats::Client> {
    let s = stats.clone();
    let client = async_nats::ConnectOptions::new()
        .name("marketprism-storage")
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        .event_callback(move |ev| {
            let s = s.clone();
            async move {
                match ev {
                    async_nats::Event::Connected => {
                        s.nats_connected.store(true, Relaxed);
                        tracing::info!("nats connected");
                    }
                    async_nats::Event::Disconnected => {
                        s.nats_connected.store(false, Relaxed);
                        tracing::warn!("nats disconnected; reconnecting");
                    }
                    other => tracing::debug!(event = %other, "nats event"),
                }
            }
        })
        .connect(cfg.nats.url())
        .await?;
    Ok(client)
}

/// Applies the schema, retrying until ClickHouse answers or `stop` fires.
async fn init_schema(
    cfg: &Config,
    sink: &crate::sink::Sink,
    stop: &CancellationToken,
) -> anyhow::Result<()> {
    let ddl = schema::full_ddl(
        &cfg.clickhouse.hot_db,
        &cfg.clickhouse.cold_db,
        &schema::Layout::Single,
    );
    let mut delay = Duration::from_millis(200);
    loop {
        match schema::apply(sink, &ddl).await {
            Ok(_) => return Ok(()),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "clickhouse not ready for the schema");
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Err(e.into()),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the service until SIGINT/SIGTERM.
pub async fn run(cfg: &Config, args: &RunArgs) -> anyhow::Result<()> {
    let stop = CancellationToken::new();
    spawn_signal_handler(stop.clone())?;
    let stats = Arc::new(Stats::new(pipeline::stats::now_ms()));
    serve(cfg, args, stats, stop).await
}

/// The service body, with the stats and the stop token supplied by the caller (the demo and
/// the benchmark run it in-process).
pub async fn serve(
    cfg: &Config,
    args: &RunArgs,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    let mut embedded = None;
    if cfg.clickhouse.is_embedded() {
        let tools = Tools::locate(&cfg.embedded.tools_dir)?;
        let dir = cfg.embedded.data_dir.join("clickhouse");
        let ch = EmbeddedClickHouse::start(&tools, &dir, &cfg.embedded.listen.to_string()).await?;
        tracing::info!(url = %ch.url, data = %dir.display(), "embedded clickhouse started");
        embedded = Some(ch);
    }
    let result = serve_with_clickhouse(cfg, args, stats, stop).await;
    if let Some(ch) = embedded {
        ch.stop().await;
    }
    result
}

/// Binds the ops HTTP surface (and the optional metrics port) and serves it until `ops_stop`.
async fn start_ops(
    cfg: &Config,
    stats: Arc<Stats>,
    migration: Option<Arc<crate::migrate::MigrationStats>>,
    stop: CancellationToken,
    ops_stop: CancellationToken,
    started: ops::Latch,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let state = ops::OpsState::from_config(stats, cfg)
        .with_startup(started)
        .with_stop(stop)
        .with_migration(migration);
    let mut tasks = Vec::new();
    let listener = ops::bind(cfg.http.addr()).await?;
    tracing::info!(url = %format!("http://{}/", cfg.http.addr()), "status page, /health, /ready, /stats, /metrics");
    let router = ops::router(state.clone());
    let s = ops_stop.clone();
    tasks.push(tokio::spawn(async move {
        if let Err(e) = ops::serve(listener, router, s).await {
            tracing::error!(error = %e, "ops server stopped");
        }
    }));
    if let Some(addr) = cfg.http.metrics_addr() {
        let listener = ops::bind(addr).await?;
        let router = ops::metrics_router(state);
        tasks.push(tokio::spawn(async move {
            if let Err(e) = ops::serve(listener, router, ops_stop).await {
                tracing::error!(error = %e, "metrics server stopped");
            }
        }));
    }
    Ok(tasks)
}

/// Pings ClickHouse every 2 s (for `/ready`) and logs a summary line every 30 s.
fn spawn_watchers(sink: Arc<crate::sink::Sink>, stats: Arc<Stats>, stop: CancellationToken) {
    let s = stats.clone();
    let st = stop.clone();
    tokio::spawn(async move {
        loop {
            let up = tokio::time::timeout(Duration::from_secs(2), sink.ping())
                .await
                .is_ok_and(|r| r.is_ok());
            if s.clickhouse_up.swap(up, Relaxed) != up {
                if up {
                    tracing::info!("clickhouse answering")
                } else {
                    tracing::warn!("clickhouse not answering")
                }
            }
            tokio::select! { _ = tokio::time::sleep(Duration::from_secs(2)) => {}, _ = st.cancelled() => return }
        }
    });
    tokio::spawn(async move {
        let every = Duration::from_secs(30);
        let mut prev = ops::Snapshot::take(&stats);
        loop {
            tokio::select! { _ = tokio::time::sleep(every) => {}, _ = stop.cancelled() => return }
            tracing::info!("{}", ops::summary_line(&stats, &prev, every));
            prev = ops::Snapshot::take(&stats);
        }
    });
}

async fn serve_with_clickhouse(
    cfg: &Config,
    args: &RunArgs,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> anyhow::Result<()> {
    // The ops server outlives the pipeline's stop so `/ready` says "shutting down" while
    // batches drain; it is cancelled last.
    let ops_stop = CancellationToken::new();
    let started = ops::Latch::new();
    let migration = super::migrate::service_stats(cfg, args.migrate);
    let ops_tasks = start_ops(
        cfg,
        stats.clone(),
        migration.clone(),
        stop.clone(),
        ops_stop.clone(),
        started.clone(),
    )
    .await?;
    let migrator = super::migrate::spawn_migration(cfg, migration, stop.clone());
    let result = serve_pipeline(cfg, args, stats, stop, started).await;
    if let Some(m) = migrator {
        // After a stop the loop has already returned; a pipeline that failed on its own has not
        // cancelled `stop`, so the migration is aborted here (safe at any point: its copies are
        // idempotent).
        m.abort();
        let _ = m.await;
    }
    ops_stop.cancel();
    for t in ops_tasks {
        let _ = t.await;
    }
    result
}

async fn serve_pipeline(
    cfg: &Config,
    args: &RunArgs,
    stats: Arc<Stats>,
    stop: CancellationToken,
    started: ops::Latch,
) -> anyhow::Result<()> {
    stats
        .quality
        .configure(cfg.quality.enabled, cfg.quality.settings());
    let mut sink = super::sink_for(cfg, &cfg.hot_endpoint());
    if !args.no_init {
        init_schema(cfg, &sink, &stop).await?;
    }
    super::init::startup_check(cfg, &sink, &stop).await?;
    if sink.detect_server().await.is_ok() {
        stats.clickhouse_up.store(true, Relaxed);
    }
    let sink = Arc::new(sink);
    spawn_watchers(sink.clone(), stats.clone(), stop.clone());
    let client = connect_nats(cfg, stats.clone()).await?;
    if cfg.nats.mode == NatsMode::Core {
        tracing::warn!(
            "nats.mode core: at-most-once (messages published while the service is down or buffered at a crash are lost)"
        );
        let s = settings(cfg, String::new());
        let types = s
            .types
            .iter()
            .filter_map(|t| s.limits.get(t).map(|l| (*t, *l)))
            .collect();
        let run = pipeline::core::run(types, s.retry, client.clone(), sink, stats, stop.clone());
        started.open();
        tokio::pin!(run);
        tokio::select! {
            r = &mut run => r?,
            _ = stop.cancelled() => { let _ = tokio::time::timeout(cfg.shutdown_grace, &mut run).await; }
        }
        flush_bounded(&client).await;
        return Ok(());
    }
    let instance = args
        .instance_id
        .clone()
        .unwrap_or_else(|| default_instance_id(cfg));
    let settings = settings(cfg, instance);
    tracing::info!(types = ?settings.types, instance = %settings.instance_id, "starting pipeline");
    let grace = cfg.shutdown_grace;
    let pipeline = pipeline::run(settings, client.clone(), sink, stats, stop.clone());
    started.open();
    tokio::pin!(pipeline);
    tokio::select! {
        r = &mut pipeline => r?,
        _ = stop.cancelled() => {
            match tokio::time::timeout(grace, &mut pipeline).await {
                Ok(r) => r?,
                Err(_) => tracing::warn!(?grace, "grace period over; exiting with batches unacked (they are re-read on the next start)"),
            }
        }
    }
    flush_bounded(&client).await;
    tracing::info!("stopped");
    Ok(())
}

/// How long the last flush of the NATS connection may take at exit.
const EXIT_FLUSH: Duration = Duration::from_secs(2);

/// Flushes what the client still buffers, but never waits on NATS for long: with NATS down a
/// flush waits for the reconnect (which may never come), and the shutdown must stay bounded.
/// What is not flushed is acks, whose messages are re-read and deduplicated on the next start.
async fn flush_bounded(client: &async_nats::Client) {
    if client.connection_state() != async_nats::connection::State::Connected {
        tracing::warn!("nats not connected at exit; nothing flushed");
        return;
    }
    if tokio::time::timeout(EXIT_FLUSH, client.flush())
        .await
        .is_err()
    {
        tracing::warn!(timeout = ?EXIT_FLUSH, "nats flush at exit did not finish (nats down?); exiting anyway");
    }
}
