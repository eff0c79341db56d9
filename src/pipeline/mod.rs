//! Wires the stages for every data type and supervises them until shutdown.
//!
//! Per type: a lease (one active reader per durable), a `reader::Reader` (durable consumer →
//! batcher of raw messages), a [`decoder`] task (raw batch → rows and dead letters) and a
//! `writer::Writer` (journal → insert → ack), joined by bounded channels of capacity one, so
//! the three run on different cores and at most one batch waits at each step: when ClickHouse
//! slows down the reader blocks, stops pulling, and JetStream keeps the rest.
//! Shutdown: stop pulling → close the open batch → insert → ack → exit.

pub mod core;
pub mod decoder;
pub mod reader;
pub mod stats;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::model::DataType;
use crate::sink::Sink;
use crate::source::journal::Journal;
use crate::source::lease::{LEASE_REFRESH, Leases};
use crate::source::streams::{self, Ensured, StreamSpec};
use crate::source::{ConsumerSpec, SourceError};

pub use stats::{Stats, TypeStats};

/// Everything the pipeline needs, resolved from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Data types this instance consumes.
    pub types: Vec<DataType>,
    /// Streams to ensure (created when missing, never changed).
    pub streams: Vec<StreamSpec>,
    /// The durable consumer of each type.
    pub consumers: BTreeMap<DataType, ConsumerSpec>,
    /// Batch thresholds of each type.
    pub limits: BTreeMap<DataType, Limits>,
    /// Unacked messages per type above which its reader stops pulling.
    pub max_queue: BTreeMap<DataType, usize>,
    /// Messages per pull request.
    pub fetch_batch: usize,
    /// Key-value bucket of the batch journal.
    pub journal_bucket: String,
    /// Key-value bucket of the consumer leases.
    pub lease_bucket: String,
    /// This instance's id (stable across restarts of the same instance).
    pub instance_id: String,
}

/// Ensures the streams, logging what was found. Retries until it works or `stop` is set.
pub async fn ensure_streams(
    js: &jetstream::Context,
    specs: &[StreamSpec],
    stop: &CancellationToken,
) -> Result<Vec<(String, Ensured)>, SourceError> {
    let mut out = Vec::new();
    for spec in specs {
        let ensured = retry_nats(stop, &format!("ensure stream {}", spec.name), || {
            streams::ensure(js, spec)
        })
        .await?;
        match &ensured {
            Ensured::Created => {
                tracing::info!(stream = %spec.name, subjects = ?spec.subjects, "created stream")
            }
            Ensured::Existing {
                uncovered,
                messages,
            } => {
                tracing::info!(stream = %spec.name, messages, "stream exists; left unchanged");
                if !uncovered.is_empty() {
                    tracing::warn!(stream = %spec.name, ?uncovered,
                        "existing stream does not capture these subjects; their messages are not persisted");
                }
            }
        }
        out.push((spec.name.clone(), ensured));
    }
    Ok(out)
}

/// Retries a NATS operation with capped backoff until it succeeds or `stop` is set.
async fn retry_nats<T, F, Fut>(
    stop: &CancellationToken,
    what: &str,
    mut f: F,
) -> Result<T, SourceError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, SourceError>>,
{
    let mut delay = Duration::from_millis(200);
    loop {
        match f().await {
            Ok(v) => return Ok(v),
            Err(e) => {
                tracing::warn!(error = %e, retry_in = ?delay, "{what} failed");
                if stop.is_cancelled() {
                    return Err(e);
                }
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = stop.cancelled() => return Err(e),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Runs the JetStream pipeline for every configured type until `stop` is set and every
/// type has flushed (or given up on a retry because of the shutdown).
pub async fn run(
    settings: Settings,
    client: async_nats::Client,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    let js = jetstream::new(client);
    ensure_streams(&js, &settings.streams, &stop).await?;
    let journal = retry_nats(&stop, "open journal", || {
        Journal::open(&js, &settings.journal_bucket)
    })
    .await?;
    let leases = retry_nats(&stop, "open leases", || {
        Leases::open(&js, &settings.lease_bucket, &settings.instance_id)
    })
    .await?;
    // Restored before any stage starts, so no batch is checked against an empty state.
    let quality_timer =
        crate::quality::restore::start(sink.clone(), stats.quality.clone(), &settings.types, &stop)
            .await;
    let mut tasks = Vec::new();
    for t in settings.types.iter().copied() {
        let (Some(spec), Some(limits)) = (settings.consumers.get(&t), settings.limits.get(&t))
        else {
            continue;
        };
        let max_queue = settings.max_queue.get(&t).copied().unwrap_or(usize::MAX);
        tasks.push(tokio::spawn(run_type(TypeCtx {
            data_type: t,
            max_queue,
            js: js.clone(),
            spec: spec.clone(),
            limits: *limits,
            fetch_batch: settings.fetch_batch,
            journal: journal.clone(),
            leases: leases.clone(),
            sink: sink.clone(),
            stats: stats.clone(),
            stop: stop.clone(),
        })));
    }
    for t in tasks {
        let _ = t.await;
    }
    if let Some(h) = quality_timer {
        let _ = h.await;
    }
    Ok(())
}

struct TypeCtx {
    data_type: DataType,
    max_queue: usize,
    js: jetstream::Context,
    spec: ConsumerSpec,
    limits: Limits,
    fetch_batch: usize,
    journal: Journal,
    leases: Leases,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

async fn run_type(ctx: TypeCtx) {
    let dt = ctx.data_type;
    let stop = ctx.stop.clone();
    let mut said_standby = false;
    let mut lease = loop {
        match ctx.leases.acquire(&ctx.spec.durable).await {
            Ok(l) => break l,
            Err(SourceError::Leased { holder, .. }) => {
                if !said_standby {
                    tracing::info!(data_type = %dt, %holder, "standby: another instance holds this consumer");
                    said_standby = true;
                }
            }
            Err(e) => tracing::warn!(data_type = %dt, error = %e, "lease not acquired; retrying"),
        }
        tokio::select! {
            _ = tokio::time::sleep(LEASE_REFRESH) => {}
            _ = stop.cancelled() => return,
        }
    };
    tracing::info!(data_type = %dt, durable = %ctx.spec.durable, instance = ctx.leases.instance(), "consumer lease held");

    // Cancelled on shutdown (parent) or when the lease is lost (this type only).
    let type_stop = stop.child_token();
    let stored_through = Arc::new(AtomicU64::new(0));
    let needs_resync = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (tx, rx) = mpsc::channel(1);
    let (dtx, drx) = mpsc::channel(1);
    let writer = writer::Writer {
        data_type: dt,
        durable: ctx.spec.durable.clone(),
        sink: ctx.sink.clone(),
        journal: Some(ctx.journal.clone()),
        stats: ctx.stats.clone(),
        stop: type_stop.clone(),
        stored_through: stored_through.clone(),
        journaled: Vec::new(),
        floor: 0,
        needs_resync: needs_resync.clone(),
        broken: false,
    };
    let reader = reader::Reader {
        data_type: dt,
        js: ctx.js.clone(),
        spec: ctx.spec.clone(),
        limits: ctx.limits,
        fetch_batch: ctx.fetch_batch,
        max_queue: ctx.max_queue,
        journal: ctx.journal.clone(),
        stats: ctx.stats.clone(),
        stop: type_stop.clone(),
        to_writer: tx,
        stored_through,
        needs_resync,
    };
    let wh = tokio::spawn(writer.run(drx));
    let dh = tokio::spawn(decoder::run(rx, dtx, ctx.stats.clone()));
    let mut rh = tokio::spawn(reader.run());
    let mut lease_ok = true;
    let mut reader_done = false;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(LEASE_REFRESH) => {
                if let Err(e) = ctx.leases.refresh(&mut lease).await {
                    tracing::error!(data_type = %dt, error = %e, "consumer lease lost; this instance stops reading the type");
                    ctx.stats.of(dt).error(e.to_string());
                    lease_ok = false;
                    type_stop.cancel();
                    break;
                }
            }
            _ = stop.cancelled() => {
                type_stop.cancel();
                break;
            }
            _ = &mut rh => {
                reader_done = true;
                break;
            }
        }
    }
    if !reader_done {
        let _ = rh.await;
    }
    let _ = dh.await;
    let _ = wh.await;
    ctx.stats.of(dt).bound.store(false, Relaxed);
    if lease_ok {
        ctx.leases.release(lease).await;
    }
    tracing::info!(data_type = %dt, "stopped");
}
