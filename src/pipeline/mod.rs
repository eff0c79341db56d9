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
//!
//! Each stage is a small actor built by its constructor (`Reader::new`, `Decoder::new`,
//! `Writer::new`) and run on its own task; it reports how it ended as a `StageEnd`, which
//! the supervisor turns into the type's next state. Downstream the stages talk only through
//! the ordered command channel (`decoder::StageCmd`); upstream the writer publishes one value it
//! owns, `writer::Progress` (what it stored, whether an ack was lost), on a `watch` channel.
//! Every wait for NATS or ClickHouse walks the one retry policy (`retry.*`, [`Settings::retry`]).

pub mod core;
pub mod decoder;
pub mod reader;
pub mod stats;
pub mod window;
pub mod writer;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::Limits;
use crate::model::DataType;
use crate::retry::{self, Failure, Verdict, retry_until};
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
    /// The schedule of every retry of the stages and their supervisor (`retry.*`): NATS
    /// calls, journal writes, acks, lease re-acquisition, a held batch.
    pub retry: retry::Policy,
}

/// How a stage's task ended: what its supervisor decides the type's next state on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StageEnd {
    /// Its input ended and everything received was handled (the end of a drain).
    Drained,
    /// A shutdown ended it before it handled everything: what it held is not acked and is
    /// re-read at the next start.
    Stopped,
    /// The next stage hung up (it ended first, for a reason of its own).
    Disconnected,
    /// The journal was rewritten by another owner: nothing the stages hold may be journaled,
    /// inserted or acked any more (fenced).
    Fenced(String),
    /// It cannot make progress until the service is restarted (a durable that cannot be used,
    /// a failed decode task).
    Stuck(String),
}

/// Sleeps until `deadline` (a batch's age limit); never wakes without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Ensures the streams, logging what was found, retrying on the default retry policy until
/// it works or `stop` is set (see [`ensure_streams_with`] for a configured one).
pub async fn ensure_streams(
    js: &jetstream::Context,
    specs: &[StreamSpec],
    stop: &CancellationToken,
) -> Result<Vec<(String, Ensured)>, SourceError> {
    ensure_streams_with(js, specs, &retry::Policy::default(), stop).await
}

/// Ensures the streams, logging what was found. Retries on `policy` until it works or `stop`
/// is set.
pub async fn ensure_streams_with(
    js: &jetstream::Context,
    specs: &[StreamSpec],
    policy: &retry::Policy,
    stop: &CancellationToken,
) -> Result<Vec<(String, Ensured)>, SourceError> {
    let mut out = Vec::new();
    for spec in specs {
        let ensured = retry_nats(
            stop,
            policy,
            &format!("ensure stream {}", spec.name),
            || streams::ensure(js, spec),
        )
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

/// Retries a NATS operation on `policy` until it succeeds or `stop` is set. A durable that
/// cannot be used (`SourceError::DurableUnusable`) is returned at once: no retry fixes it, and
/// we never change a durable.
async fn retry_nats<T, Fut>(
    stop: &CancellationToken,
    policy: &retry::Policy,
    what: &str,
    op: impl FnMut() -> Fut,
) -> Result<T, SourceError>
where
    Fut: std::future::Future<Output = Result<T, SourceError>>,
{
    retry_until(stop, &mut policy.backoff(), op, |e, _, delay| {
        if matches!(e, SourceError::DurableUnusable { .. }) {
            return Verdict::GiveUp;
        }
        tracing::warn!(error = %e, retry_in = ?delay, "{what} failed");
        Verdict::Retry
    })
    .await
    .map_err(|f| match f {
        Failure::GaveUp(e) | Failure::Stopped { last: e, .. } => e,
    })
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
        retry_nats(
            stop,
            &settings.retry,
            &format!("bind durable {}", spec.durable),
            || crate::source::bind_consumer(js, spec),
        )
        .await?;
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
    let policy = settings.retry;
    ensure_streams_with(&js, &settings.streams, &policy, &stop).await?;
    let journal = retry_nats(&stop, &policy, "open journal", || {
        Journal::open(&js, &settings.journal_bucket)
    })
    .await?;
    let leases = retry_nats(&stop, &policy, "open leases", || {
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
            retry: policy,
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

/// Everything one type's supervisor and stages need, for the life of the process.
struct TypeCtx {
    data_type: DataType,
    max_queue: usize,
    max_queue_bytes: u64,
    js: jetstream::Context,
    spec: ConsumerSpec,
    limits: Limits,
    fetch_batch: usize,
    fetch_max_bytes: usize,
    retry: retry::Policy,
    journal: Journal,
    leases: Leases,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
}

/// How one run of a type's stages (one lease) ended.
#[derive(Debug, PartialEq, Eq)]
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

/// What the end of stage `name` (outside a shutdown) means for the type's run: fenced,
/// dead, or `None` while it only saw a neighbour end and `others_running` — that neighbour's
/// own end, next from the set, says why.
fn term_of(name: &str, end: StageEnd, others_running: bool) -> Option<TermEnd> {
    match end {
        StageEnd::Fenced(why) => Some(TermEnd::Fenced(why)),
        StageEnd::Stuck(why) => Some(TermEnd::Died(why)),
        StageEnd::Drained | StageEnd::Stopped | StageEnd::Disconnected if others_running => None,
        other => Some(TermEnd::Died(format!("{name} task ended ({other:?})"))),
    }
}

/// A run of the stages that lasted this long counts as a success: the next fencing starts the
/// re-acquire backoff from its first delay again.
const RUN_RESETS_BACKOFF: Duration = Duration::from_secs(30);

/// Supervises one type for the life of the process: acquire the lease, run the stages,
/// and whenever the lease (or NATS) is lost, fence the old stages and start over. Losing the
/// lease or NATS is a state to recover from, never an exit; only a shutdown or a stage that
/// died ends it.
async fn run_type(ctx: TypeCtx) {
    let dt = ctx.data_type;
    let st = ctx.stats.of(dt);
    let mut backoff = ctx.retry.backoff();
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
                if started.elapsed() > RUN_RESETS_BACKOFF {
                    backoff.reset();
                }
                let delay = backoff.next().unwrap_or(ctx.retry.cap);
                tracing::warn!(data_type = %dt, reason = %why, retry_in = ?delay,
                    "stages stopped and fenced (what they held is re-read); re-acquiring the consumer");
                st.error(why.clone());
                st.set_waiting(Some(format!("{why}; re-acquiring the consumer")));
                // Not `retry_until`: the next attempt is a whole new run of the stages, whose
                // success is only known once it has lasted (`RUN_RESETS_BACKOFF`).
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.stop.cancelled() => { st.set_waiting(None); return; }
                }
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

/// Takes the type's lease: errors are retried on the retry policy; while another instance
/// holds it, it is asked again every refresh period (the holder's renewal rhythm, not a
/// backoff). `None` on shutdown.
async fn acquire_lease(ctx: &TypeCtx) -> Option<Lease> {
    let dt = ctx.data_type;
    let st = ctx.stats.of(dt);
    let mut said_standby = false;
    let mut backoff = ctx.retry.backoff();
    loop {
        let res = retry_until(
            &ctx.stop,
            &mut backoff,
            || async {
                tokio::select! {
                    r = ctx.leases.acquire(&ctx.spec.durable) => r.map(Some),
                    _ = ctx.stop.cancelled() => Ok(None),
                }
            },
            |e, _, delay| {
                if matches!(e, SourceError::Leased { .. }) {
                    return Verdict::GiveUp;
                }
                tracing::warn!(data_type = %dt, error = %e, retry_in = ?delay, "lease not acquired; retrying");
                if st.waiting_reason().is_none() {
                    st.set_waiting(Some(format!("acquiring the consumer lease: {e}")));
                }
                Verdict::Retry
            },
        )
        .await;
        match res {
            Ok(lease) => return lease,
            Err(Failure::Stopped { .. }) => return None,
            Err(Failure::GaveUp(e)) => {
                // Waiting for another holder is not a failure: the next error starts the
                // schedule over.
                backoff.reset();
                if let SourceError::Leased { holder, .. } = &e {
                    if !said_standby {
                        tracing::info!(data_type = %dt, %holder, "standby: another instance holds this consumer");
                        said_standby = true;
                    }
                    st.set_waiting(Some(format!(
                        "standby: consumer lease held by instance {holder}"
                    )));
                }
                tokio::select! {
                    _ = tokio::time::sleep(LEASE_REFRESH) => {}
                    _ = ctx.stop.cancelled() => return None,
                }
            }
        }
    }
}

/// The type's three stages, each on its own task, wired downstream first (writer, decoder,
/// reader) over channels of capacity one; and the name of each task.
fn spawn_stages(
    ctx: &TypeCtx,
    type_stop: &CancellationToken,
) -> (
    tokio::task::JoinSet<StageEnd>,
    HashMap<tokio::task::Id, &'static str>,
) {
    let (writer, progress) = writer::Writer::new(
        ctx.data_type,
        ctx.spec.durable.clone(),
        Some(ctx.journal.clone()),
        ctx.sink.clone(),
        ctx.stats.clone(),
        type_stop.clone(),
        ctx.retry,
    );
    let (dtx, drx) = mpsc::channel(1);
    let decoder = decoder::Decoder::new(ctx.stats.clone());
    let (tx, rx) = mpsc::channel(1);
    let reader = reader::Reader::new(ctx, type_stop.clone(), tx, progress);
    let mut stages = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    names.insert(stages.spawn(writer.run(drx)).id(), "writer");
    names.insert(stages.spawn(decoder.run(rx, dtx)).id(), "decoder");
    names.insert(stages.spawn(reader.run()).id(), "reader");
    (stages, names)
}

/// Runs the type's three stages under one lease until shutdown, fencing or a stage's end.
async fn run_term(ctx: &TypeCtx, lease: &mut Lease) -> TermEnd {
    let dt = ctx.data_type;
    let stop = &ctx.stop;
    // Cancelled on shutdown (parent): the stages drain.
    let type_stop = stop.child_token();
    // A new run holds nothing yet: what an aborted run held (and never acked) is re-read.
    let st = ctx.stats.of(dt);
    st.clear_queued();
    let (mut stages, names) = spawn_stages(ctx, &type_stop);
    let end = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break TermEnd::Stopped,
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
                if stop.is_cancelled() {
                    break TermEnd::Stopped;
                }
                let (id, end) = match done {
                    Ok((id, end)) => (id, end),
                    Err(e) => {
                        let name = names.get(&e.id()).copied().unwrap_or("stage");
                        let what = if e.is_panic() { "panicked" } else { "was cancelled" };
                        break TermEnd::Died(format!("{name} task {what}: {e}"));
                    }
                };
                let name = names.get(&id).copied().unwrap_or("stage");
                if let Some(term) = term_of(name, end, !stages.is_empty()) {
                    break term;
                }
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

#[cfg(test)]
mod tests {
    use super::{StageEnd, TermEnd, term_of};

    #[test]
    fn a_stage_end_names_the_cause_not_the_echo() {
        let fenced = || StageEnd::Fenced("the journal was changed by another owner".into());
        assert_eq!(
            term_of("writer", fenced(), true),
            Some(TermEnd::Fenced(
                "the journal was changed by another owner".into()
            ))
        );
        assert_eq!(
            term_of("reader", StageEnd::Stuck("durable x unusable".into()), true),
            Some(TermEnd::Died("durable x unusable".into()))
        );
        // A neighbour hung up: wait for its own end.
        assert_eq!(term_of("reader", StageEnd::Disconnected, true), None);
        assert_eq!(term_of("writer", StageEnd::Drained, true), None);
        // ...unless nothing is left to say why.
        assert_eq!(
            term_of("decoder", StageEnd::Drained, false),
            Some(TermEnd::Died("decoder task ended (Drained)".into()))
        );
    }
}
