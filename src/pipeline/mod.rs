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

pub mod assign;
pub mod coordinator;
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
use crate::source::lease::{LEASE_REFRESH, Lease, LeaseGuard, Leases};
use crate::source::partition::Layout;
use crate::source::streams::{self, Ensured, StreamSpec};
use crate::source::{ConsumerSpec, SourceError};

pub use stats::{LaneRole, LaneStats, Stats, TypeStats};

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
    /// Replicas of the journal and lease buckets (`nats.kv_replicas`).
    pub kv_replicas: usize,
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
                layout,
                replicas,
            } => {
                tracing::info!(stream = %spec.name, messages, partitions = layout.partitions(), replicas, "stream exists; left unchanged");
                if *replicas < spec.replicas {
                    tracing::warn!(stream = %spec.name, replicas, configured = spec.replicas,
                        "existing stream has fewer replicas than nats.streams.*.replicas; it is left unchanged \
                         (streams are never changed by us): raise them with `nats stream edit {} --replicas {}`",
                        spec.name, spec.replicas);
                }
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
        if matches!(
            e,
            SourceError::DurableUnusable { .. } | SourceError::DuplicateInstance { .. }
        ) {
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
    journal: &Journal,
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
            || crate::source::bind_consumer(js, spec, Some(journal)),
        )
        .await?;
    }
    Ok(())
}

/// Runs the JetStream pipeline for every configured type until `stop` is set and every
/// lane has flushed (or given up on a retry because of the shutdown).
///
/// Before anything is read: the streams are ensured (and an existing stream's partition layout
/// must be the configured one), the journal and lease buckets opened, this process registered
/// as a member (a live process with the same instance id refuses the start) and every type's
/// base durable checked. Then the coordinator ([`coordinator`]) runs the lanes assigned here.
pub async fn run(
    settings: Settings,
    client: async_nats::Client,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    stop: CancellationToken,
) -> Result<(), SourceError> {
    let js = jetstream::new(client);
    let policy = settings.retry;
    let ensured = ensure_streams_with(&js, &settings.streams, &policy, &stop).await?;
    check_layouts(&settings.streams, &ensured)?;
    let journal = retry_nats(&stop, &policy, "open journal", || {
        Journal::open(&js, &settings.journal_bucket, settings.kv_replicas)
    })
    .await?;
    let leases = retry_nats(&stop, &policy, "open leases", || {
        Leases::open(
            &js,
            &settings.lease_bucket,
            &settings.instance_id,
            &settings.types,
            settings.kv_replicas,
        )
    })
    .await?;
    let membership = retry_nats(&stop, &policy, "register the instance", || {
        leases.register()
    })
    .await?;
    // The member key is kept alive from here on, also while the rest starts (a start can
    // take longer than the duplicate probe and the TTL).
    let member_done = CancellationToken::new();
    let (duplicate_tx, duplicate_rx) = tokio::sync::watch::channel(None);
    let member = tokio::spawn(coordinator::keep_member(
        leases.clone(),
        membership,
        member_done.clone(),
        duplicate_tx,
        stats.clone(),
    ));
    check_durables(&js, &journal, &settings, &stop).await?;
    // Restored before any stage starts, so no batch is checked against an empty state.
    let quality_timer =
        crate::quality::restore::start(sink.clone(), stats.quality.clone(), &settings.types, &stop)
            .await;
    let shared = Shared {
        js,
        journal,
        leases,
        sink,
        stats,
        stop,
        fetch_batch: settings.fetch_batch,
        fetch_max_bytes: settings.fetch_max_bytes,
        retry: policy,
        lanes_here: Arc::new(std::sync::atomic::AtomicUsize::new(0)),
    };
    let res = coordinator::Coordinator::new(settings, shared, duplicate_rx)
        .run()
        .await;
    member_done.cancel();
    let _ = member.await;
    if let Some(h) = quality_timer {
        let _ = h.await;
    }
    res
}

/// An existing stream must be laid out as configured: lanes of another layout would read
/// nothing while the stream's messages wait in partitions nobody reads.
fn check_layouts(specs: &[StreamSpec], ensured: &[(String, Ensured)]) -> Result<(), SourceError> {
    for (name, e) in ensured {
        let (Some(spec), Ensured::Existing { layout, .. }) =
            (specs.iter().find(|s| &s.name == name), e)
        else {
            continue;
        };
        let found = match layout {
            Layout::Foreign {
                source,
                destination,
            } => format!("a subject transform that is not ours ({source} → {destination})"),
            Layout::Partitioned(n) if *n != spec.partitions => format!("{n} partitions"),
            Layout::Unpartitioned if spec.partitions > 1 => "no partitions".to_string(),
            _ => continue,
        };
        return Err(SourceError::Layout {
            stream: name.clone(),
            which: spec.which.clone(),
            key: format!("nats.streams.{}.partitions", spec.which),
            found,
            configured: spec.partitions,
        });
    }
    Ok(())
}

/// What every lane of this process shares.
#[derive(Clone)]
pub(crate) struct Shared {
    js: jetstream::Context,
    journal: Journal,
    leases: Leases,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    /// The service's stop.
    stop: CancellationToken,
    fetch_batch: usize,
    fetch_max_bytes: usize,
    retry: retry::Policy,
    /// Lanes running in this process: their pulls share one connection, so each asks for its
    /// share of `fetch_max_bytes` (a server cuts a connection whose pending bytes pass its
    /// `max_pending`, 64 MiB by default).
    lanes_here: Arc<std::sync::atomic::AtomicUsize>,
}

/// Everything one lane's supervisor and stages need, for as long as it runs here.
pub(crate) struct LaneCtx {
    data_type: DataType,
    max_queue: usize,
    max_queue_bytes: u64,
    js: jetstream::Context,
    /// The lane's durable (its name, filter and settings).
    spec: ConsumerSpec,
    limits: Limits,
    fetch_batch: usize,
    fetch_max_bytes: usize,
    /// Lanes running in this process (see `Shared::lanes_here`).
    lanes_here: Arc<std::sync::atomic::AtomicUsize>,
    retry: retry::Policy,
    journal: Journal,
    leases: Leases,
    sink: Arc<Sink>,
    stats: Arc<Stats>,
    /// The lane's state.
    lane: Arc<LaneStats>,
    /// Ends the lane: the service's stop, or a hand-over to the lane's new owner (a child of
    /// the service's stop). Either way the stages drain and the lease is released.
    stop: CancellationToken,
}

/// How one run of a lane's stages (one lease) ended.
#[derive(Debug, PartialEq, Eq)]
enum TermEnd {
    /// Shutdown or hand-over: the stages drained (or the grace period cut them off).
    Stopped,
    /// The lease or the journal was taken from us, or NATS was unreachable long enough for a
    /// lease refresh to fail: the stages were aborted (what they held is dropped, unacked, and
    /// re-read); re-acquire and start over.
    Fenced(String),
    /// A stage ended by itself (a panic, or a state a retry cannot fix): stuck until restarted.
    Died(String),
}

/// What the end of stage `name` (outside a shutdown) means for the lane's run: fenced,
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

/// How soon a failed lease refresh is tried again (while the lease guard holds).
const LEASE_RETRY: Duration = Duration::from_secs(1);

/// How long the lease release at the end of a lane may take.
const RELEASE_TIMEOUT: Duration = Duration::from_secs(2);

/// Supervises one lane for as long as it is assigned here: acquire the lease, run the stages,
/// and whenever the lease (or NATS) is lost, fence the old stages and start over. Losing the
/// lease or NATS is a state to recover from, never an exit; only the lane's stop (shutdown,
/// hand-over) or a stage that died ends it.
async fn run_lane(ctx: LaneCtx) {
    let dt = ctx.data_type;
    let lane = ctx.lane.clone();
    let mut backoff = ctx.retry.backoff();
    loop {
        let Some(mut lease) = acquire_lease(&ctx).await else {
            lane.set_waiting(None);
            lane.set_role(LaneRole::Elsewhere);
            return;
        };
        lane.set_waiting(None);
        lane.record_acquired(stats::now_ms());
        tracing::info!(data_type = %dt, lane = %ctx.lane.id.label(), durable = %ctx.spec.durable,
            instance = ctx.leases.instance(), "lane lease held");
        let started = std::time::Instant::now();
        let end = run_term(&ctx, &mut lease).await;
        lane.set_bound(false);
        match end {
            TermEnd::Stopped => {
                // Bounded, and skipped with NATS down: the lease then simply expires.
                if ctx.stats.nats_connected() {
                    let _ = tokio::time::timeout(RELEASE_TIMEOUT, ctx.leases.release(lease)).await;
                }
                lane.record_released();
                // Not ours any more: what it showed as pending and queued leaves the totals.
                lane.set_consumer_pending(0);
                lane.clear_queued();
                tracing::info!(data_type = %dt, lane = %ctx.lane.id.label(), "lane stopped; lease released");
                return;
            }
            TermEnd::Fenced(why) => {
                lease.guard().revoke();
                lane.record_lost();
                if started.elapsed() > RUN_RESETS_BACKOFF {
                    backoff.reset();
                }
                let delay = backoff.next().unwrap_or(ctx.retry.cap);
                tracing::warn!(data_type = %dt, lane = %ctx.lane.id.label(), reason = %why, retry_in = ?delay,
                    "stages stopped and fenced (what they held is re-read); re-acquiring the lane");
                ctx.stats.of(dt).error(why.clone());
                lane.set_waiting(Some(format!("{why}; re-acquiring the consumer")));
                // Not `retry_until`: the next attempt is a whole new run of the stages, whose
                // success is only known once it has lasted (`RUN_RESETS_BACKOFF`).
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    _ = ctx.stop.cancelled() => {
                        lane.set_waiting(None);
                        lane.set_role(LaneRole::Elsewhere);
                        // The server may still hold the key in our name (the guard lapsed on a
                        // slow refresh): give it up, so the next owner need not wait the TTL.
                        // A lease another instance took is not ours to delete: the delete
                        // states our revision and fails then.
                        if ctx.stats.nats_connected() {
                            let _ = tokio::time::timeout(RELEASE_TIMEOUT, ctx.leases.release(lease)).await;
                        }
                        return;
                    }
                }
            }
            TermEnd::Died(why) => {
                tracing::error!(data_type = %dt, lane = %ctx.lane.id.label(), reason = %why,
                    "a stage stopped by itself; the lane cannot make progress until the service is restarted");
                if lane.stuck_reason().is_none() {
                    lane.set_stuck(why);
                }
                // Give the consumer up, so another instance (or our restart) takes over at once.
                let _ = tokio::time::timeout(RELEASE_TIMEOUT, ctx.leases.release(lease)).await;
                return;
            }
        }
    }
}

/// Takes the lane's lease: errors are retried on the retry policy; while another instance
/// holds it, it is asked again every refresh period (the holder's renewal rhythm, not a
/// backoff). `None` on the lane's stop.
async fn acquire_lease(ctx: &LaneCtx) -> Option<Lease> {
    let dt = ctx.data_type;
    let lane = &ctx.lane;
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
                tracing::warn!(data_type = %dt, lane = %lane.id.label(), error = %e, retry_in = ?delay, "lease not acquired; retrying");
                if lane.waiting_reason().is_none() {
                    lane.set_waiting(Some(format!("acquiring the consumer lease: {e}")));
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
                        tracing::info!(data_type = %dt, lane = %lane.id.label(), %holder,
                            "standby: another instance holds this lane");
                        said_standby = true;
                    }
                    lane.set_waiting(None);
                    lane.set_role(LaneRole::Standby(holder.clone()));
                }
                tokio::select! {
                    _ = tokio::time::sleep(STANDBY_POLL) => {}
                    _ = ctx.stop.cancelled() => return None,
                }
            }
        }
    }
}

/// How often a lane assigned here asks again for a lease another instance holds (a hand-over
/// is usually done within one drain; an expired lease is free at the server's next sweep).
const STANDBY_POLL: Duration = Duration::from_secs(1);

/// The lane's three stages, each on its own task, wired downstream first (writer, decoder,
/// reader) over channels of capacity one; and the name of each task.
fn spawn_stages(
    ctx: &LaneCtx,
    lane_stop: &CancellationToken,
    guard: LeaseGuard,
) -> (
    tokio::task::JoinSet<StageEnd>,
    HashMap<tokio::task::Id, &'static str>,
) {
    let (writer, progress) = writer::Writer::new(
        ctx.data_type,
        ctx.spec.durable.clone(),
        Some(ctx.journal.clone()),
        ctx.sink.clone(),
        (ctx.stats.clone(), ctx.lane.clone(), guard.clone()),
        lane_stop.clone(),
        ctx.retry,
    );
    let (dtx, drx) = mpsc::channel(1);
    let decoder = decoder::Decoder::new(ctx.stats.clone());
    let (tx, rx) = mpsc::channel(1);
    let reader = reader::Reader::new(ctx, (lane_stop.clone(), guard.clone()), tx, progress);
    let mut stages = tokio::task::JoinSet::new();
    let mut names = HashMap::new();
    names.insert(stages.spawn(writer.run(drx)).id(), "writer");
    names.insert(stages.spawn(decoder.run(rx, dtx)).id(), "decoder");
    names.insert(stages.spawn(reader.run()).id(), "reader");
    (stages, names)
}

/// Runs the lane's three stages under one lease until its stop, fencing or a stage's end.
async fn run_term(ctx: &LaneCtx, lease: &mut Lease) -> TermEnd {
    let stop = &ctx.stop;
    // Cancelled on the lane's stop (parent): the stages drain.
    let lane_stop = stop.child_token();
    // A new run holds nothing yet: what an aborted run held (and never acked) is re-read.
    ctx.lane.clear_queued();
    let (mut stages, names) = spawn_stages(ctx, &lane_stop, lease.guard());
    let mut next_refresh = LEASE_REFRESH;
    let end = loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break TermEnd::Stopped,
            _ = tokio::time::sleep(next_refresh) => {
                let res = tokio::select! {
                    r = ctx.leases.refresh(lease) => r,
                    _ = stop.cancelled() => break TermEnd::Stopped,
                };
                match res {
                    Ok(()) => next_refresh = LEASE_REFRESH,
                    // A refresh that failed without the lease being taken (NATS unreachable, a
                    // leader election in a cluster) is tried again every second while the
                    // lease guard still vouches for the lease: the writer stops by itself at
                    // the guard's deadline, and no one else can take the lease before it.
                    Err(e) if !matches!(e, SourceError::Fenced { .. }) && lease.guard().valid() => {
                        tracing::warn!(data_type = %ctx.data_type, lane = %ctx.lane.id.label(), error = %e,
                            "lease refresh failed; trying again while the lease holds");
                        next_refresh = LEASE_RETRY;
                    }
                    Err(e) => break TermEnd::Fenced(format!("consumer lease lost ({e})")),
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
            // caller's grace period). The lease is kept refreshed meanwhile, so the writer's
            // guard stays valid through a long drain; a refresh that fails fences the rest.
            lane_stop.cancel();
            loop {
                tokio::select! {
                    done = stages.join_next() => if done.is_none() { break },
                    _ = tokio::time::sleep(LEASE_REFRESH) => {
                        if tokio::time::timeout(RELEASE_TIMEOUT, ctx.leases.refresh(lease)).await.is_err() {
                            lease.guard().revoke();
                        }
                    }
                }
            }
        }
        TermEnd::Fenced(_) | TermEnd::Died(_) => {
            // Fencing: nothing the old stages hold may be journaled, inserted or acked any
            // more. Aborting them is a crash of this lane only, which the journal makes safe:
            // what they held is unacked and re-read, cut at the journaled boundaries.
            // Abort before cancelling: a cancelled reader hands its open batch over, and a
            // writer woken by it could start a journal write or an ack before the abort lands.
            lease.guard().revoke();
            stages.abort_all();
            lane_stop.cancel();
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
