//! The benchmark: raw ceilings and the service end to end, measured in one run on one machine.
//!
//! Consumes nothing of the pipeline's internals: it starts its own `nats-server` and embedded
//! ClickHouse, fills a backlog with the collector-shaped generator, measures
//! (1) the raw JetStream consume ceiling (async-nats pull consumer, no decoding, one ack per
//! pull batch), (2) the raw insert ceiling of the ClickHouse endpoint (pre-encoded Native
//! batches, nothing else), and (3) the service binary draining the same backlog, then its
//! publish→queryable latency at a fixed rate. Every end-to-end figure is reported as a ratio of
//! the smaller ceiling measured in the same run.
//!
//! [`scale`] is the `--instances N --partitions P` mode: the same ceilings, then N service
//! processes sharing a stream laid out for P partitions, with CPU per message per process.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull};
use futures::StreamExt;

use crate::embedded::{EmbeddedClickHouse, EmbeddedNats, Tools, free_port};
use crate::model::{DataType, Record};
use crate::publish::{self, Mix, PublishOptions, Rate, Transport};
use crate::schema;
use crate::sink::{self, Sink, SinkOptions};

pub mod scale;

/// Errors of the benchmark (it is a CLI tool: plain text is enough).
#[derive(Debug, thiserror::Error)]
#[error("bench: {0}")]
pub struct BenchError(pub String);

fn err<E: std::fmt::Display>(what: &'static str) -> impl FnOnce(E) -> BenchError {
    move |e| BenchError(format!("{what}: {e}"))
}

/// What to measure.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Trades in the backlog.
    pub trades: u64,
    /// Order books in the backlog.
    pub orderbooks: u64,
    /// Levels per side of each order book.
    pub depth: usize,
    /// Rate (msg/s) of the latency phase for trades.
    pub trade_rate: f64,
    /// Rate (msg/s) of the latency phase for order books.
    pub orderbook_rate: f64,
    /// Length of each latency phase.
    pub latency_secs: u64,
    /// The service binary to run (the current executable).
    pub binary: PathBuf,
    /// The tools venv.
    pub tools_dir: PathBuf,
    /// Where servers keep their data (a temp dir by default).
    pub work_dir: PathBuf,
    /// A YAML configuration for the service under test (batch sizes, fetch size, …).
    pub service_config: Option<PathBuf>,
}

/// Figures for one data type.
#[derive(Debug, Clone, Default)]
pub struct TypeFigures {
    /// Messages in the backlog.
    pub messages: u64,
    /// Average payload size.
    pub avg_bytes: f64,
    /// Raw JetStream consume ceiling, msg/s.
    pub raw_consume: f64,
    /// Raw insert ceiling, rows/s.
    pub raw_insert: f64,
    /// Service draining the backlog, msg/s.
    pub e2e: f64,
    /// Publish→queryable latency p50 at `latency_rate`, ms.
    pub p50_ms: f64,
    /// Publish→queryable latency p99, ms.
    pub p99_ms: f64,
    /// Rate of the latency phase actually achieved by the publisher, msg/s.
    pub latency_rate: f64,
    /// Peak RSS of the service, bytes.
    pub peak_rss: u64,
    /// CPU (`utime + stime`, clock ticks) the service spent from its start until the backlog
    /// was stored.
    pub service_ticks: u64,
}

impl TypeFigures {
    /// End-to-end throughput as a fraction of the ceiling.
    pub fn ratio(&self) -> f64 {
        ratio(self.e2e, self.raw_consume, self.raw_insert)
    }
}

struct Servers {
    nats: EmbeddedNats,
    ch: EmbeddedClickHouse,
    sink: Sink,
}

async fn start_servers(work_dir: &Path, tools: &Tools) -> Result<Servers, BenchError> {
    let port = free_port().map_err(err("free port"))?;
    let nats = EmbeddedNats::start(tools, &work_dir.join("nats"), port, None)
        .await
        .map_err(err("start nats-server"))?;
    let ch = EmbeddedClickHouse::start(tools, &work_dir.join("clickhouse"), "127.0.0.1:0")
        .await
        .map_err(err("start embedded clickhouse"))?;
    let mut sink = Sink::new(&SinkOptions::new(ch.url.clone(), "marketprism_hot"));
    let mut ddl = schema::database_ddl(
        "marketprism_hot",
        schema::Tier::Hot,
        &schema::Layout::Single,
    );
    ddl.extend(schema::database_ddl(
        "bench_raw",
        schema::Tier::Hot,
        &schema::Layout::Single,
    ));
    crate::sink::ddl::apply(&sink, &ddl)
        .await
        .map_err(err("create tables"))?;
    sink.detect_server().await.map_err(err("detect server"))?;
    Ok(Servers { nats, ch, sink })
}

/// Fills the backlog of `t` with `n` generated messages. They go through JetStream with
/// acks (a window of outstanding PubAcks): core publishing as fast as the client can (≈600k/s
/// here) outruns the stream's ingest, and the server drops what it cannot take.
async fn fill(
    client: &async_nats::Client,
    t: DataType,
    n: u64,
    depth: usize,
) -> Result<f64, BenchError> {
    let js = jetstream::new(client.clone());
    let stored = || async {
        let mut s = js
            .get_stream("MARKET_DATA_HF")
            .await
            .map_err(err("stream"))?;
        let info = s.info().await.map_err(err("stream info"))?;
        Ok::<u64, BenchError>(info.state.messages)
    };
    let before = stored().await?;
    let opts = PublishOptions {
        mix: if t == DataType::Trade {
            Mix::trades_only()
        } else {
            Mix::orderbooks_only()
        },
        rate: Rate::Unlimited,
        duration: None,
        count: Some(n),
        types: Some(vec![t]),
        transport: Transport::JetStream,
        seed: 7,
        depth,
    };
    let st = publish::publish(client, &opts, |_| {})
        .await
        .map_err(err("publish backlog"))?;
    if st.js_errors > 0 {
        return Err(BenchError(format!(
            "{} backlog publishes failed: {}",
            st.js_errors,
            st.first_js_error.unwrap_or_default()
        )));
    }
    // Core publishes are fire-and-forget: wait until the stream holds them all.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let have = stored().await?.saturating_sub(before);
        if have >= n {
            break;
        }
        if Instant::now() > deadline {
            return Err(BenchError(format!(
                "stream holds {have} of {n} {t} messages (core NATS dropped some: slow consumer?)"
            )));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(st.bytes as f64 / st.total().max(1) as f64)
}

/// Reads the backlog of `t` (stored under `filter`: `<type>.>`, or `_mp.<type>.>` on a
/// partitioned stream) with one plain pull consumer: the JetStream ceiling.
async fn raw_consume(
    client: &async_nats::Client,
    t: DataType,
    filter: String,
    n: u64,
    fetch: usize,
) -> Result<f64, BenchError> {
    let js = jetstream::new(client.clone());
    let stream = js
        .get_stream("MARKET_DATA_HF")
        .await
        .map_err(err("stream"))?;
    let consumer = stream
        .create_consumer(pull::Config {
            durable_name: Some(format!("bench_raw_{t}")),
            filter_subject: filter,
            ack_policy: jetstream::consumer::AckPolicy::All,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .map_err(err("create raw consumer"))?;
    let mut msgs = consumer
        .stream()
        .max_messages_per_batch(fetch)
        .messages()
        .await
        .map_err(err("pull"))?;
    let started = Instant::now();
    let mut got = 0u64;
    while got < n {
        let m = match tokio::time::timeout(Duration::from_secs(30), msgs.next()).await {
            Ok(Some(Ok(m))) => m,
            Ok(Some(Err(e))) => return Err(BenchError(format!("pull: {e}"))),
            _ => return Err(BenchError(format!("raw consume stalled at {got} of {n}"))),
        };
        got += 1;
        if got.is_multiple_of(fetch as u64) || got == n {
            m.double_ack().await.map_err(err("ack"))?;
        }
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

/// Inserts pre-encoded batches into `bench_raw`: the ClickHouse endpoint's ceiling.
async fn raw_insert(
    sink: &Sink,
    t: DataType,
    n: u64,
    batch: usize,
    depth: usize,
) -> Result<f64, BenchError> {
    let mut g = publish::Generator::with_depth(11, depth);
    let now = chrono::Utc::now().timestamp_millis();
    let mut rows: Vec<Record> = Vec::with_capacity(batch);
    let mut bodies = Vec::new();
    for i in 0..n {
        let m = g.next(t, now);
        let r = crate::decode::decode(t, &m.subject, &m.payload, now)
            .map_err(|e| BenchError(format!("generated message rejected: {e}")))?;
        rows.push(r);
        if rows.len() == batch || i + 1 == n {
            let body = sink::encode_block(t, &rows).map_err(err("encode"))?;
            bodies.push((body, rows.len() as u64));
            rows.clear();
        }
    }
    let raw = sink.on_database("bench_raw");
    let started = Instant::now();
    for (i, (body, rows)) in bodies.into_iter().enumerate() {
        raw.insert(t.table(), body, rows, &format!("bench-{t}-{i}"))
            .await
            .map_err(err("insert"))?;
    }
    Ok(n as f64 / started.elapsed().as_secs_f64())
}

fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

struct ServiceChild(std::process::Child);

impl Drop for ServiceChild {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// One service process to start: its configuration file, its instance id (`None`: the
/// default), its ops port and where its log goes.
struct Instance<'a> {
    config: Option<&'a Path>,
    instance_id: Option<&'a str>,
    http_port: u16,
    log: &'a Path,
    /// `LOG_LEVEL` of the process (`warn` in the default benchmark; the scaling mode logs the
    /// lane hand-overs at `info`).
    log_level: &'a str,
}

fn spawn_service(
    o: &BenchOptions,
    s: &Servers,
    t: DataType,
    i: &Instance<'_>,
) -> Result<ServiceChild, BenchError> {
    let log = std::fs::File::create(i.log).map_err(err("service log"))?;
    let mut cmd = std::process::Command::new(&o.binary);
    if let Some(c) = i.config {
        cmd.env("MARKETPRISM_CONFIG", c);
    }
    cmd.arg("run");
    if let Some(id) = i.instance_id {
        cmd.arg("--instance-id").arg(id);
    }
    let child = cmd
        .env("MARKETPRISM_NATS_URL", &s.nats.url)
        .env("CLICKHOUSE_HOST", "127.0.0.1")
        .env("CLICKHOUSE_HTTP_PORT", s.ch.port.to_string())
        .env("MARKETPRISM_NATS_TYPES", t.as_str())
        .env("HOT_STORAGE_HTTP_PORT", i.http_port.to_string())
        .env("MARKETPRISM_TOOLS_DIR", &o.tools_dir)
        .env("LOG_LEVEL", i.log_level)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(err("spawn the service"))?;
    Ok(ServiceChild(child))
}

/// Waits until ClickHouse holds `n` rows of `t` (10 minutes at most); returns msg/s between
/// the first look that found a row and the one that found them all (0 when the first look
/// found them all).
async fn wait_stored(s: &Servers, t: DataType, n: u64) -> Result<f64, BenchError> {
    let table = format!("marketprism_hot.{}", t.table());
    let mut first: Option<(Instant, u64)> = None;
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let c = s
            .sink
            .fetch_count(&format!("SELECT count() FROM {table}"))
            .await
            .unwrap_or(0);
        let now = Instant::now();
        if c > 0 && first.is_none() {
            first = Some((now, c));
        }
        if c >= n {
            let (t0, c0) = first.unwrap_or((now, 0));
            let secs = now.duration_since(t0).as_secs_f64();
            return Ok(if secs > 0.0 {
                n.saturating_sub(c0) as f64 / secs
            } else {
                0.0
            });
        }
        if now > deadline {
            return Err(BenchError(format!(
                "the service stored {c} of {n} {t} rows in 10 minutes"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// End-to-end throughput as a fraction of the smaller of two ceilings (0 without one).
fn ratio(e2e: f64, raw_consume: f64, raw_insert: f64) -> f64 {
    let ceiling = raw_consume.min(raw_insert);
    if ceiling > 0.0 { e2e / ceiling } else { 0.0 }
}

/// Drains the backlog with the service; returns msg/s between the first and the last row.
async fn e2e(
    o: &BenchOptions,
    s: &Servers,
    t: DataType,
    n: u64,
    f: &mut TypeFigures,
) -> Result<ServiceChild, BenchError> {
    let log = o.work_dir.join(format!("service-{t}.log"));
    let instance = Instance {
        config: o.service_config.as_deref(),
        instance_id: None,
        http_port: free_port().map_err(err("free port"))?,
        log: &log,
        log_level: "warn",
    };
    let child = spawn_service(o, s, t, &instance)?;
    f.e2e = wait_stored(s, t, n).await?;
    f.peak_rss = peak_rss(child.0.id());
    f.service_ticks = scale::cpu_ticks(Some(child.0.id()));
    Ok(child)
}

#[allow(clippy::too_many_arguments)] // one call site; a struct would only rename the arguments
/// Publishes at a fixed rate to the running service and reads per-row latency from ClickHouse
/// (`created_at`, set when the INSERT is processed, minus `timestamp`, set by the publisher at
/// publish time).
async fn latency(
    client: &async_nats::Client,
    s: &Servers,
    t: DataType,
    rate: f64,
    secs: u64,
    depth: usize,
    before: u64,
    f: &mut TypeFigures,
) -> Result<(), BenchError> {
    let since = chrono::Utc::now().timestamp_millis();
    let opts = PublishOptions {
        mix: if t == DataType::Trade {
            Mix::trades_only()
        } else {
            Mix::orderbooks_only()
        },
        rate: Rate::Total(rate),
        duration: Some(Duration::from_secs(secs)),
        count: None,
        types: Some(vec![t]),
        transport: Transport::Core,
        seed: 99,
        depth,
    };
    let st = publish::publish(client, &opts, |_| {})
        .await
        .map_err(err("publish"))?;
    f.latency_rate = st.rate();
    let want = before + st.total();
    let table = format!("marketprism_hot.{}", t.table());
    let deadline = Instant::now() + Duration::from_secs(120);
    while s
        .sink
        .fetch_count(&format!("SELECT count() FROM {table}"))
        .await
        .unwrap_or(0)
        < want
    {
        if Instant::now() > deadline {
            return Err(BenchError("latency phase rows did not all arrive".into()));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let q = s
        .sink
        .query_bytes(
            &format!(
                "SELECT quantileExact(0.5)(toUnixTimestamp64Milli(created_at) - toUnixTimestamp64Milli(timestamp)), \
                 quantileExact(0.99)(toUnixTimestamp64Milli(created_at) - toUnixTimestamp64Milli(timestamp)) \
                 FROM {table} WHERE timestamp >= fromUnixTimestamp64Milli({since})"
            ),
            "TSV",
        )
        .await
        .map_err(err("latency query"))?;
    let text = String::from_utf8_lossy(&q);
    let mut it = text
        .split_whitespace()
        .map(|v| v.parse::<f64>().unwrap_or(0.0));
    f.p50_ms = it.next().unwrap_or(0.0);
    f.p99_ms = it.next().unwrap_or(0.0);
    Ok(())
}

/// Connects to the benchmark's nats-server and creates the streams as the built-in defaults
/// describe them, the high-frequency one laid out for `partitions`; returns the client and
/// that configuration.
async fn connect(
    s: &Servers,
    partitions: u32,
) -> Result<(async_nats::Client, crate::config::Config), BenchError> {
    let client = async_nats::connect(&s.nats.url)
        .await
        .map_err(err("connect nats"))?;
    let mut cfg = crate::config::Config::defaults().map_err(err("config"))?;
    cfg.nats.streams.high_frequency.partitions = partitions;
    let js = jetstream::new(client.clone());
    let never = tokio_util::sync::CancellationToken::new();
    never.cancel();
    crate::pipeline::ensure_streams(&js, &crate::service::stream_specs(&cfg), &never)
        .await
        .map_err(err("streams"))?;
    Ok((client, cfg))
}

/// Runs every measurement for trades and order books.
pub async fn run(
    o: &BenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<Vec<(DataType, TypeFigures)>, BenchError> {
    let tools = Tools::locate(&o.tools_dir).map_err(err("tools"))?;
    let s = start_servers(&o.work_dir, &tools).await?;
    let (client, cfg) = connect(&s, 1).await?;
    let fetch = cfg.nats.fetch_batch.get();
    let mut out = Vec::new();
    for (t, n, rate) in [
        (DataType::Trade, o.trades, o.trade_rate),
        (DataType::Orderbook, o.orderbooks, o.orderbook_rate),
    ] {
        if n == 0 {
            continue;
        }
        let mut f = TypeFigures {
            messages: n,
            ..Default::default()
        };
        progress(&format!("{t}: publishing a backlog of {n} messages"));
        f.avg_bytes = fill(&client, t, n, o.depth).await?;
        progress(&format!("{t}: raw JetStream consume"));
        f.raw_consume = raw_consume(&client, t, t.subject_filter(), n, fetch).await?;
        progress(&format!("{t}: raw ClickHouse insert"));
        let batch = cfg.batch.get(t).max_rows.get();
        f.raw_insert = raw_insert(&s.sink, t, n, batch, o.depth).await?;
        progress(&format!("{t}: the service draining the backlog"));
        let child = e2e(o, &s, t, n, &mut f).await?;
        progress(&format!(
            "{t}: latency at {rate} msg/s for {} s",
            o.latency_secs
        ));
        latency(&client, &s, t, rate, o.latency_secs, o.depth, n, &mut f).await?;
        f.peak_rss = f.peak_rss.max(peak_rss(child.0.id()));
        drop(child);
        out.push((t, f));
    }
    s.ch.stop().await;
    s.nats.stop().await;
    Ok(out)
}
