//! Wires the stages for every data type and supervises them until shutdown.
//!
//! Per type: a lease (one active reader per durable), a `reader::Reader` (durable consumer →
//! batcher of raw messages), a [`decoder`] task (raw batch → rows and dead letters) and a
//! `writer::Writer` (journal → insert → ack), joined by bounded channels of capacity one, so
//! the three run on different cores and at most one batch waits at each step: when ClickHouse
//! slows down the reader blocks, stops pulling, and JetStream keeps the rest.
//! Shutdown: stop pulling → close the open batch → insert → ack → exit; except that an open
//! batch that is part of a journaled batch (a journaled cut point still ahead) is not closed
//! but dropped unacked and re-read at the next start, since a journaled batch is only ever
//! inserted whole under its token. The drain is bounded by the caller's grace period.
//!
//! Supervision: losing the lease (a refresh fails: NATS unreachable, or the lease expired and
//! was taken) or the journal (another owner rewrote it) is a state to recover from, never an
//! exit: the type's stages are aborted — fenced: nothing they hold is journaled, inserted or
//! acked any more, it is re-read — and the lease is re-acquired with backoff, after which the
//! reader resynchronises from the ack floor; `/ready` names the type and the reason meanwhile.
//! A stage that ends by itself (a panic) marks the type stuck, and `/health` fails.

pub mod core;
pub mod decoder;
pub mod reader;
pub mod stats;
pub mod window;
pub mod writer;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::model::DataType;
use crate::sink::Sink;
use crate::source::journal::Journal;
use crate::source::lease::{LEASE_REFRESH, Lease, Leases};
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
    /// Unacked payload bytes per type above which its reader stops pulling.
    pub max_queue_bytes: BTreeMap<DataType, u64>,
    /// Messages per pull request.
    pub fetch_batch: usize,
    /// Most bytes one pull request may return.
    pub fetch_max_bytes: usize,
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

/// Binds (creating when missing) every type's durable once before anything starts, so an
/// existing durable that cannot be used (not `AckPolicy::All`) fails the start with a clear
/// error instead of being misused. Other errors are retried until `stop`.
async fn check_durables(
    js: &jetstream::Context,
    settings: &Settings,
    stop: &CancellationToken,
) -> Result<(), SourceError> {
    for t in &settings.types {
        let Some(spec) = settings.consumers.get(t) else {
            continue;
        };
        let mut delay = Duration::from_millis(200);
        loop {
            match crate::source::bind_consumer(js, spec).await {
                Ok(_) => break,
                Err(e @ SourceError::DurableUnusable { .. }) => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, retry_in = ?delay, "bind durable {} failed", spec.durable);
                    tokio::select! {
                        _ = tokio::time::sleep(delay) => {}
                        _ = stop.cancelled() => return Err(e),
                    }
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
    Ok(())
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
    check_durables(&js, &settings, &stop).await?;
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
        let max_queue_bytes = settings
            .max_queue_bytes
            .get(&t)
            .copied()
            .unwrap_or(u64::MAX);
        tasks.push(tokio::spawn(run_type(TypeCtx {
            data_type: t,
            max_queue,
            max_queue_bytes,
            fetch_max_bytes: settings.fetch_max_bytes,
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
    max_queue_bytes: u64,
    js: jetstream::Context,
    spec: ConsumerSpec,
    limits: Limits,
    fetch_batch: usize,
    fetch_max_bytes: usize,
    journal: Journal,
    leases: Leases,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

/// How one run of a type's stages (one lease) ended.
enum TermEnd {
    /// Shutdown: the stages drained (or the grace period cut them off).
    Stopped,
    /// The lease or the journal was taken from us, or NATS was unreachable long enough for a
    /// lease refresh to fail: the stages were aborted (what they held is dropped, unacked, and
    /// re-read); re-acquire and start over.
    Fenced(String),
    /// A stage ended by itself (a panic, or a state a retry cannot fix): stuck until restarted.
    Died(String),
}

/// Supervises one type for the life of the process: acquire the lease, run the stages,
/// and whenever the lease (or NATS) is lost, fence the old stages and start over. Losing the
/// lease or NATS is a state to recover from, never an exit; only a shutdown or a stage that
/// died ends it.
async fn run_type(ctx: TypeCtx) {
    let dt = ctx.data_type;
    let st = ctx.stats.of(dt);
    let mut backoff = Duration::from_millis(200);
    loop {
        let Some(mut lease) = acquire_lease(&ctx).await else {
            st.set_waiting(None);
            return;
        };
        st.set_waiting(None);
        tracing::info!(data_type = %dt, durable = %ctx.spec.durable, instance = ctx.leases.instance(), "consumer lease held");
        let started = std::time::Instant::now();
        let end = run_term(&ctx, &mut lease).await;
        st.set_bound(false);
        match end {
            TermEnd::Stopped => {
                // Bounded, and skipped with NATS down: the lease then simply expires.
                if ctx.stats.nats_connected() {
                    let _ = tokio::time::timeout(Duration::from_secs(2), ctx.leases.release(lease))
                        .await;
                }
                tracing::info!(data_type = %dt, "stopped");
                return;
            }
            TermEnd::Fenced(why) => {
                tracing::warn!(data_type = %dt, reason = %why,
                    "stages stopped and fenced (what they held is re-read); re-acquiring the consumer");
                st.error(why.clone());
                st.set_waiting(Some(format!("{why}; re-acquiring the consumer")));
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(200);
                }
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = ctx.stop.cancelled() => { st.set_waiting(None); return; }
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
            TermEnd::Died(why) => {
                tracing::error!(data_type = %dt, reason = %why,
                    "a stage stopped by itself; the type cannot make progress until the service is restarted");
                if st.stuck_reason().is_none() {
                    st.set_stuck(why);
                }
                // Give the consumer up, so a standby (or our restart) takes over at once.
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), ctx.leases.release(lease)).await;
                return;
            }
        }
    }
}

/// Takes the type's lease, retrying with backoff (another holder: every refresh period).
/// `None` on shutdown.
async fn acquire_lease(ctx: &TypeCtx) -> Option<Lease> {
    let dt = ctx.data_type;
    let st = ctx.stats.of(dt);
    let mut said_standby = false;
    let mut delay = Duration::from_millis(200);
    loop {
        let res = tokio::select! {
            r = ctx.leases.acquire(&ctx.spec.durable) => r,
            _ = ctx.stop.cancelled() => return None,
        };
        let wait = match res {
            Ok(l) => return Some(l),
            Err(SourceError::Leased { holder, .. }) => {
                if !said_standby {
                    tracing::info!(data_type = %dt, %holder, "standby: another instance holds this consumer");
                    said_standby = true;
                }
                st.set_waiting(Some(format!(
                    "standby: consumer lease held by instance {holder}"
                )));
                LEASE_REFRESH
            }
            Err(e) => {
                tracing::warn!(data_type = %dt, error = %e, retry_in = ?delay, "lease not acquired; retrying");
                if st.waiting_reason().is_none() {
                    st.set_waiting(Some(format!("acquiring the consumer lease: {e}")));
                }
                let d = delay;
                delay = (delay * 2).min(Duration::from_secs(5));
                d
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = ctx.stop.cancelled() => return None,
        }
    }
}

/// Runs the type's three stages under one lease until shutdown, fencing or a stage's end.
async fn run_term(ctx: &TypeCtx, lease: &mut Lease) -> TermEnd {
    let dt = ctx.data_type;
    let stop = &ctx.stop;
    // Cancelled on shutdown (parent): the stages drain.
    let type_stop = stop.child_token();
    // Cancelled by the writer when its journal write was refused (another owner).
    let fence = CancellationToken::new();
    // A new run holds nothing yet: what an aborted run held (and never acked) is re-read.
    let st = ctx.stats.of(dt);
    st.clear_queued();
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
        epoch: 0,
        journal_rev: 0,
        fence: fence.clone(),
    };
    let reader = reader::Reader {
        data_type: dt,
        js: ctx.js.clone(),
        spec: ctx.spec.clone(),
        limits: ctx.limits,
        fetch_batch: ctx.fetch_batch,
        fetch_max_bytes: ctx.fetch_max_bytes,
        max_queue: ctx.max_queue,
        max_queue_bytes: ctx.max_queue_bytes,
        journal: ctx.journal.clone(),
        stats: ctx.stats.clone(),
        stop: type_stop.clone(),
        to_writer: tx,
        stored_through,
        needs_resync,
    };
    let mut stages = tokio::task::JoinSet::new();
    let mut names = std::collections::HashMap::new();
    names.insert(stages.spawn(writer.run(drx)).id(), "writer");
    names.insert(
        stages.spawn(decoder::run(rx, dtx, ctx.stats.clone())).id(),
        "decoder",
    );
    names.insert(stages.spawn(reader.run()).id(), "reader");
    let end = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break TermEnd::Stopped,
            _ = fence.cancelled() => {
                break TermEnd::Fenced("the journal was changed by another owner".into());
            }
            _ = tokio::time::sleep(LEASE_REFRESH) => {
                let res = tokio::select! {
                    r = ctx.leases.refresh(lease) => r,
                    _ = stop.cancelled() => break TermEnd::Stopped,
                };
                if let Err(e) = res {
                    break TermEnd::Fenced(format!("consumer lease lost ({e})"));
                }
            }
            Some(done) = stages.join_next_with_id() => {
                let (id, what) = match &done {
                    Ok((id, ())) => (*id, "ended".to_string()),
                    Err(e) if e.is_panic() => (e.id(), format!("panicked: {e}")),
                    Err(e) => (e.id(), format!("was cancelled: {e}")),
                };
                let name = names.get(&id).copied().unwrap_or("stage");
                if stop.is_cancelled() {
                    break TermEnd::Stopped;
                }
                if fence.is_cancelled() {
                    break TermEnd::Fenced("the journal was changed by another owner".into());
                }
                break TermEnd::Died(format!("{name} task {what}"));
            }
        }
    };
    match end {
        TermEnd::Stopped => {
            // Drain: the reader closes its batch, the writer inserts and acks (bounded by the
            // caller's grace period).
            type_stop.cancel();
            while stages.join_next().await.is_some() {}
        }
        TermEnd::Fenced(_) | TermEnd::Died(_) => {
            // Fencing: nothing the old stages hold may be journaled, inserted or acked any
            // more. Aborting them is a crash of this type only, which the journal makes safe:
            // what they held is unacked and re-read, cut at the journaled boundaries.
            // Abort before cancelling: a cancelled reader hands its open batch over, and a
            // writer woken by it could start a journal write or an ack before the abort lands.
            stages.abort_all();
            type_stop.cancel();
            while stages.join_next().await.is_some() {}
        }
    }
    end
}
