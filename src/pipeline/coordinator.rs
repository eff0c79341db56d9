//! The coordinator: which lanes this instance runs, and handing lanes over as instances come
//! and go.
//!
//! Every [`TICK`] it looks at the streams (their partition layout and durables give the lanes,
//! `source::partition::lanes_of`) and at the lease bucket (the live members and who holds
//! which lease), computes the assignment ([`super::assign`]) — the same one every member
//! computes — and acts on it:
//! - a lane assigned here that does not run here is started: its supervisor takes the lease as
//!   soon as it is free (standing by while the previous holder drains and hands it over);
//! - a lane that runs here but is assigned to another live member is stopped: its stages drain
//!   (insert and ack what they hold) and the lease is released, so the new owner takes it at
//!   once;
//! - a lane nobody holds for [`ORPHAN_TICKS`] looks in a row (members disagree, its owner is
//!   stuck) is read here, if this instance serves its type, for at least [`ORPHAN_HOLD`].
//!
//! A member that dies stops refreshing its member key and its leases: both expire within
//! `LEASE_TTL`, the others' next look assigns its lanes anew and the new owners take the
//! leases as they expire. The member key is refreshed by its own task (`keep_member`) from
//! the registration on; a refresh that finds the key taken by another process of the same id
//! aborts every lane here at once (fencing: that process now acts under our id) and ends the
//! pipeline with `SourceError::DuplicateInstance`.
//!
//! Moving a lane is always safe: a lane is read only by its lease holder, each holder
//! resynchronises from the durable's ack floor and the journal, and the journal's
//! compare-and-set fences a previous holder's writer (see ARCHITECTURE.md, "Fencing").

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::TryStreamExt;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::assign::{Member, Placeable, assign};
use super::stats::{LaneRole, MemberView};
use super::{LaneCtx, Settings, Shared, run_lane};
use crate::model::DataType;
use crate::source::lease::{LEASE_REFRESH, Leases, Membership};
use crate::source::partition::{LaneId, Layout, lanes_of};
use crate::source::{ConsumerSpec, SourceError, api_err};

/// How often the coordinator looks at the streams and the members.
pub const TICK: Duration = Duration::from_secs(2);

/// Looks in a row a lane must be unheld before an instance it is not assigned to reads it.
pub const ORPHAN_TICKS: u32 = 3;

/// How long an instance keeps a lane it picked up as an orphan before handing it to its owner.
pub const ORPHAN_HOLD: Duration = Duration::from_secs(60);

/// How long leaving the member list at shutdown may take.
const LEAVE_TIMEOUT: Duration = Duration::from_secs(2);

/// A lane running here.
struct Running {
    stop: CancellationToken,
    task: JoinHandle<()>,
    /// Being handed over (its stop is cancelled; it drains and releases).
    releasing: bool,
}

/// What one look found.
struct View {
    lanes: Vec<Placeable>,
    members: Vec<Member>,
    held: BTreeMap<String, String>,
}

/// Runs the lanes assigned to this instance (see the module's docs).
pub(crate) struct Coordinator {
    settings: Settings,
    shared: Shared,
    /// Set by the member refresher when another process took this instance id.
    duplicate: watch::Receiver<Option<String>>,
    failed_looks: u64,
    running: BTreeMap<String, Running>,
    /// Lanes whose stage died here: stuck until the service restarts (never started again).
    dead: BTreeSet<String>,
    unheld: HashMap<String, u32>,
    picked_up: HashMap<String, Instant>,
}

impl Coordinator {
    pub(crate) fn new(
        settings: Settings,
        shared: Shared,
        duplicate: watch::Receiver<Option<String>>,
    ) -> Self {
        Coordinator {
            settings,
            shared,
            duplicate,
            failed_looks: 0,
            running: BTreeMap::new(),
            dead: BTreeSet::new(),
            unheld: HashMap::new(),
            picked_up: HashMap::new(),
        }
    }

    fn me(&self) -> &str {
        &self.settings.instance_id
    }

    /// Looks and acts every [`TICK`] until the service's stop, then waits for the lanes to
    /// drain. A duplicate instance id reported by the member refresher (`keep_member`) aborts
    /// every lane at once and ends with that error.
    pub(crate) async fn run(mut self) -> Result<(), SourceError> {
        let stop = self.shared.stop.clone();
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = self.duplicate.changed() => {
                    let detail = self.duplicate.borrow().clone();
                    if let Some(detail) = detail {
                        let e = SourceError::DuplicateInstance {
                            instance: self.settings.instance_id.clone(),
                            detail,
                        };
                        tracing::error!(error = %e, "another process took this instance id over; stopping every lane at once");
                        for (_, r) in std::mem::take(&mut self.running) {
                            r.task.abort();
                            let _ = r.task.await;
                        }
                        return Err(e);
                    }
                }
                _ = tick.tick() => {}
            }
            let looked = tokio::select! {
                r = self.look() => Some(r),
                _ = stop.cancelled() => None,
            };
            match looked {
                None => break,
                Some(Ok(view)) => {
                    self.failed_looks = 0;
                    self.act(view);
                }
                Some(Err(e)) => {
                    self.failed_looks += 1;
                    if self.failed_looks % 15 == 5 {
                        tracing::warn!(error = %e, looks = self.failed_looks,
                            "coordinator cannot look at the streams and members; lanes keep running, none is started or handed over");
                    } else {
                        tracing::debug!(error = %e, "coordinator could not look; next look in {TICK:?}");
                    }
                }
            }
            self.reap();
        }
        for (_, r) in std::mem::take(&mut self.running) {
            let _ = r.task.await;
        }
        Ok(())
    }

    /// The live members, the held leases, and the lanes of every type any member serves (not
    /// only ours: every member must place the same lanes, or members serving different types
    /// would disagree about who owns what).
    async fn look(&self) -> Result<View, SourceError> {
        let (members, held) = tokio::time::timeout(TICK, self.shared.leases.survey())
            .await
            .map_err(|_| SourceError::Api {
                what: "survey the lease bucket".into(),
                detail: "timed out".into(),
            })??;
        let mut members: Vec<Member> = members
            .into_iter()
            .map(|m| Member {
                instance: m.instance,
                types: m.types,
            })
            .collect();
        if !members.iter().any(|m| m.instance == self.me()) {
            members.push(Member {
                instance: self.me().to_string(),
                types: self.settings.types.clone(),
            });
        }
        let served: BTreeSet<DataType> = members
            .iter()
            .flat_map(|m| m.types.iter().copied())
            .collect();
        let mut streams: HashMap<String, (u32, Vec<String>)> = HashMap::new();
        let mut lanes = Vec::new();
        for t in DataType::ALL.into_iter().filter(|t| served.contains(t)) {
            let Some(spec) = self.settings.consumers.get(&t) else {
                continue;
            };
            if !streams.contains_key(&spec.stream) {
                let found = tokio::time::timeout(TICK, stream_lanes(&self.shared.js, &spec.stream))
                    .await
                    .map_err(|_| SourceError::Api {
                        what: format!("look at stream {}", spec.stream),
                        detail: "timed out".into(),
                    })??;
                streams.insert(spec.stream.clone(), found);
            }
            let Some((n, durables)) = streams.get(&spec.stream) else {
                continue;
            };
            lanes.extend(
                lanes_of(t, &spec.durable, *n, durables)
                    .into_iter()
                    .map(|id| {
                        let busy = match id.part {
                            Some(p) => p.of == *n,
                            None => *n < 2,
                        };
                        Placeable { id, busy }
                    }),
            );
        }
        let held = held.into_iter().map(|h| (h.key, h.instance)).collect();
        Ok(View {
            lanes,
            members,
            held,
        })
    }

    /// Starts the lanes assigned here, hands over the ones assigned elsewhere.
    fn act(&mut self, view: View) {
        let plan = assign(&view.lanes, &view.members);
        let stats = self.shared.stats.clone();
        let mut shown: Vec<MemberView> = view
            .members
            .iter()
            .map(|m| MemberView {
                instance: m.instance.clone(),
                types: m.types.clone(),
                me: m.instance == self.me(),
            })
            .collect();
        shown.sort_by(|a, b| a.instance.cmp(&b.instance));
        stats.set_members(shown);
        let live: BTreeSet<&str> = view.members.iter().map(|m| m.instance.as_str()).collect();
        for p in &view.lanes {
            let name = p.id.durable.as_str();
            let lane = stats.lane(&p.id);
            let owner = plan.get(name).map(String::as_str);
            lane.set_owner(owner.unwrap_or(""));
            lane.set_seen_holder(view.held.get(name).map_or("", String::as_str));
            let serves = self.settings.types.contains(&p.id.data_type);
            let mut wanted = owner == Some(self.me());
            let is_running = self.running.contains_key(name);
            if !wanted && serves && !is_running && !view.held.contains_key(name) {
                let n = self.unheld.entry(name.to_string()).or_insert(0);
                *n += 1;
                if *n >= ORPHAN_TICKS {
                    tracing::warn!(lane = %p.id.label(), owner = owner.unwrap_or("nobody"),
                        "no instance holds this lane; reading it here until its owner does");
                    self.picked_up.insert(name.to_string(), Instant::now());
                    wanted = true;
                }
            } else {
                self.unheld.remove(name);
            }
            if wanted && !is_running && !self.dead.contains(name) {
                self.start(&p.id);
                continue;
            }
            if !wanted && !is_running && lane.role() != LaneRole::Elsewhere {
                lane.set_role(LaneRole::Elsewhere);
            }
            let kept_as_orphan = self
                .picked_up
                .get(name)
                .is_some_and(|at| at.elapsed() < ORPHAN_HOLD);
            let me = self.settings.instance_id.as_str();
            let elsewhere = owner.is_some_and(|o| o != me && live.contains(o));
            if let Some(r) = self.running.get_mut(name)
                && !wanted
                && !r.releasing
                && !kept_as_orphan
                && elsewhere
            {
                tracing::info!(lane = %p.id.label(), to = owner.unwrap_or(""),
                    "handing the lane over to its new owner (drain, then release)");
                r.releasing = true;
                r.stop.cancel();
            }
        }
        // A lane of an earlier layout whose durable was removed: stop it (drain, release)
        // rather than let its reader create the durable again.
        let present: BTreeSet<&str> = view.lanes.iter().map(|p| p.id.durable.as_str()).collect();
        for (name, r) in self.running.iter_mut() {
            if !present.contains(name.as_str()) && !r.releasing {
                tracing::info!(durable = %name, "the lane's durable is gone; stopping the lane");
                r.releasing = true;
                r.stop.cancel();
            }
        }
    }

    /// Starts the supervisor of lane `id` here.
    fn start(&mut self, id: &LaneId) {
        let t = id.data_type;
        let (Some(base), Some(limits)) = (
            self.settings.consumers.get(&t),
            self.settings.limits.get(&t),
        ) else {
            return;
        };
        let spec = ConsumerSpec {
            durable: id.durable.clone(),
            filter_subject: id.filter(),
            ..base.clone()
        };
        let lane = self.shared.stats.lane(id);
        lane.set_role(LaneRole::Standby(String::new()));
        let stop = self.shared.stop.child_token();
        let ctx = LaneCtx {
            data_type: t,
            max_queue: queue_of(&self.settings.max_queue, t, usize::MAX),
            max_queue_bytes: queue_of(&self.settings.max_queue_bytes, t, u64::MAX),
            js: self.shared.js.clone(),
            spec,
            limits: *limits,
            fetch_batch: self.shared.fetch_batch,
            fetch_max_bytes: self.shared.fetch_max_bytes,
            lanes_here: self.shared.lanes_here.clone(),
            retry: self.shared.retry,
            journal: self.shared.journal.clone(),
            leases: self.shared.leases.clone(),
            sink: self.shared.sink.clone(),
            stats: self.shared.stats.clone(),
            lane,
            stop: stop.clone(),
        };
        tracing::info!(lane = %id.label(), durable = %id.durable, "lane assigned here; starting it");
        self.shared
            .lanes_here
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.running.insert(
            id.durable.clone(),
            Running {
                stop,
                task: tokio::spawn(run_lane(ctx)),
                releasing: false,
            },
        );
    }

    /// Forgets the lanes whose supervisor ended (handed over, or died: then never again).
    fn reap(&mut self) {
        let done: Vec<String> = self
            .running
            .iter()
            .filter(|(_, r)| r.task.is_finished())
            .map(|(k, _)| k.clone())
            .collect();
        for name in done {
            self.running.remove(&name);
            let _ = self.shared.lanes_here.fetch_update(
                std::sync::atomic::Ordering::Relaxed,
                std::sync::atomic::Ordering::Relaxed,
                |n| Some(n.saturating_sub(1)),
            );
            self.picked_up.remove(&name);
            let stuck = self
                .shared
                .stats
                .lanes()
                .iter()
                .any(|l| l.id.durable == name && l.stuck_reason().is_some());
            if stuck {
                self.dead.insert(name);
            }
        }
    }
}

fn queue_of<T: Copy>(m: &BTreeMap<DataType, T>, t: DataType, or: T) -> T {
    m.get(&t).copied().unwrap_or(or)
}

/// A stream's partition count (1: unpartitioned or a foreign transform) and its consumers'
/// names.
async fn stream_lanes(
    js: &jetstream::Context,
    stream: &str,
) -> Result<(u32, Vec<String>), SourceError> {
    let mut s = js
        .get_stream(stream)
        .await
        .map_err(api_err(format!("get stream {stream}")))?;
    let info = s
        .info()
        .await
        .map_err(api_err(format!("stream {stream} info")))?;
    let n = match crate::source::streams::layout(&info.config) {
        Layout::Partitioned(n) => n,
        Layout::Unpartitioned | Layout::Foreign { .. } => 1,
    };
    let names: Vec<String> = s
        .consumer_names()
        .try_collect()
        .await
        .map_err(api_err(format!("list consumers of {stream}")))?;
    Ok((n, names))
}

/// Keeps this process's member key alive from its registration on (every [`LEASE_REFRESH`],
/// also while the pipeline is still starting), until `done`; then leaves the member list
/// (bounded, skipped with NATS down). Another process taking the id over is reported on
/// `duplicate` and ends the refresher.
pub(crate) async fn keep_member(
    leases: Leases,
    mut m: Membership,
    done: CancellationToken,
    duplicate: watch::Sender<Option<String>>,
    stats: std::sync::Arc<super::Stats>,
) {
    loop {
        tokio::select! {
            _ = done.cancelled() => break,
            _ = tokio::time::sleep(LEASE_REFRESH) => {}
        }
        match tokio::time::timeout(TICK, leases.refresh_member(&mut m)).await {
            Ok(Ok(())) => {}
            Ok(Err(SourceError::DuplicateInstance { detail, .. })) => {
                let _ = duplicate.send(Some(detail));
                return;
            }
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "member refresh failed (NATS?); lanes keep their own leases")
            }
            Err(_) => {
                tracing::warn!("member refresh timed out (NATS?); lanes keep their own leases")
            }
        }
    }
    if stats.nats_connected() {
        let _ = tokio::time::timeout(LEAVE_TIMEOUT, leases.leave(m)).await;
    }
}
