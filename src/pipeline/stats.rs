//! Counters the pipeline keeps per data type, read by the ops surface and the CLI.
//!
//! Atomics behind methods: stages record events (`record_insert`, `record_received`, …),
//! readers copy them ([`TypeStats::counters`]); no other module touches an atomic of these
//! counters. Metric names and HTTP shapes live in `ops`; this module knows nothing of HTTP.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use crate::model::DataType;
use crate::source::partition::LaneId;

/// Declares the scalar counters once: each becomes a private atomic of [`TypeStats`] and a
/// plain field of [`TypeCounters`], copied in both directions by `load` and `store`.
macro_rules! scalar_counters {
    ($($(#[doc = $doc:literal])* $name:ident: $atomic:ty => $plain:ty,)*) => {
        /// The atomics behind [`TypeCounters`].
        #[derive(Debug, Default)]
        struct Scalars {
            $($name: $atomic,)*
        }

        /// The scalar counters of one type at one moment (what [`TypeStats::counters`] reads).
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct TypeCounters {
            $($(#[doc = $doc])* pub $name: $plain,)*
        }

        impl Scalars {
            fn load(&self) -> TypeCounters {
                TypeCounters {
                    $($name: self.$name.load(Relaxed),)*
                }
            }

            fn store(&self, c: &TypeCounters) {
                $(self.$name.store(c.$name, Relaxed);)*
            }
        }
    };
}

scalar_counters! {
    /// Messages received from NATS (redeliveries of held messages excluded).
    received: AtomicU64 => u64,
    /// Rows inserted (acknowledged by ClickHouse).
    rows_inserted: AtomicU64 => u64,
    /// Dead letters inserted.
    dead_letters: AtomicU64 => u64,
    /// INSERT statements that succeeded.
    batches: AtomicU64 => u64,
    /// Failed insert attempts (each retry counts).
    insert_errors: AtomicU64 => u64,
    /// Retries of inserts and acks.
    retries: AtomicU64 => u64,
    /// Messages buffered or in flight (not yet acked).
    queued: AtomicU64 => u64,
    /// Estimated bytes buffered or in flight.
    queued_bytes: AtomicU64 => u64,
    /// Redelivered messages skipped because they were already held or stored.
    redeliveries_skipped: AtomicU64 => u64,
    /// Times the reader re-synchronised from the ack floor (start, lost deliveries, errors).
    resyncs: AtomicU64 => u64,
    /// Splits of batches into more INSERTs (by partition, in halves, bad-row isolation).
    insert_splits: AtomicU64 => u64,
    /// Unix ms of the last message received (0 = none yet).
    last_message_ms: AtomicI64 => i64,
    /// Unix ms of the last successful insert (0 = none yet).
    last_insert_ms: AtomicI64 => i64,
    /// Unix ms since when inserts have been failing (0 = not failing).
    failing_since_ms: AtomicI64 => i64,
    /// Messages pending on the consumer (server's count at the last check).
    consumer_pending: AtomicU64 => u64,
    /// Whether this instance holds the consumer (false: standby or not started).
    bound: AtomicBool => bool,
    /// Sum of publish→insert latency over inserted batches' first messages, ms.
    latency_ms_sum: AtomicU64 => u64,
    /// Last batch's publish→insert latency (oldest message), ms.
    last_latency_ms: AtomicU64 => u64,
    /// Quality events stored with this type's batches (`data_quality_events`).
    quality_events: AtomicU64 => u64,
    /// Unix ms of the last error recorded with [`TypeStats::error`] (0 = none yet).
    last_error_ms: AtomicI64 => i64,
}

/// Counters of one data type. The stages record events with the `record_*`/`set_*` methods,
/// readers take a [`TypeCounters`] copy with [`TypeStats::counters`]; the atomics stay private,
/// so one event is always counted the same way (Quickwit's `DocProcessorCounters`).
#[derive(Debug, Default)]
pub struct TypeStats {
    /// The scalar counters.
    c: Scalars,
    /// Why the type is not consuming right now while it recovers by itself (lease lost or
    /// being re-acquired, NATS unreachable); `None` while it runs. Shown by `/ready`.
    waiting: Mutex<Option<String>>,
    /// Why the type stopped for good and will not recover without a restart (a stage task
    /// died, the durable cannot be used); `None` while it can make progress. `/health` turns
    /// non-200 while any type is stuck, so an orchestrator restarts the process.
    stuck: Mutex<Option<String>>,
    /// Dead letters by reason kind.
    rejects: Mutex<BTreeMap<String, u64>>,
    /// Last error text (insert, ack or NATS).
    last_error: Mutex<Option<String>>,
    /// Insert duration, batch size and publish→insert latency distributions.
    histograms: TypeHistograms,
    /// How many of the type's lanes are bound here (`bound` is whether any is).
    bound_lanes: AtomicU64,
}

impl TypeStats {
    /// One message received: counted, queued (with its payload size) until acked or dropped,
    /// and its publish time kept as the last message's time.
    pub fn record_received(&self, bytes: u64, published_ms: i64) {
        self.c.received.fetch_add(1, Relaxed);
        self.c.queued.fetch_add(1, Relaxed);
        self.c.queued_bytes.fetch_add(bytes, Relaxed);
        self.c.last_message_ms.store(published_ms, Relaxed);
    }

    /// Messages that left the queue (acked, or dropped to be re-read); never below zero.
    pub fn release_queued(&self, count: u64, bytes: u64) {
        sub(&self.c.queued, count);
        sub(&self.c.queued_bytes, bytes);
    }

    /// Nothing is queued any more (a new run or a resync re-reads what was held).
    pub fn clear_queued(&self) {
        self.c.queued.store(0, Relaxed);
        self.c.queued_bytes.store(0, Relaxed);
    }

    /// Messages queued now (the reader's back-pressure reads it per pull).
    pub fn queued(&self) -> u64 {
        self.c.queued.load(Relaxed)
    }

    /// Payload bytes queued now.
    pub fn queued_bytes(&self) -> u64 {
        self.c.queued_bytes.load(Relaxed)
    }

    /// The server's count of messages pending on the consumer.
    pub fn set_consumer_pending(&self, pending: u64) {
        self.c.consumer_pending.store(pending, Relaxed);
    }

    /// Whether this instance holds the type's consumer.
    pub fn set_bound(&self, bound: bool) {
        self.c.bound.store(bound, Relaxed);
    }

    /// One of the type's lanes became bound (`true`) or unbound here.
    fn shift_bound_lanes(&self, bound: bool) {
        let step = |v: u64| Some(if bound { v + 1 } else { v.saturating_sub(1) });
        let prev = match self.bound_lanes.fetch_update(Relaxed, Relaxed, step) {
            Ok(v) | Err(v) => v,
        };
        let n = step(prev).unwrap_or(0);
        self.c.bound.store(n > 0, Relaxed);
    }

    /// One lane's pending count went from `old` to `new`.
    fn shift_consumer_pending(&self, old: u64, new: u64) {
        if new >= old {
            self.c.consumer_pending.fetch_add(new - old, Relaxed);
        } else {
            sub(&self.c.consumer_pending, old - new);
        }
    }

    /// Whether this instance holds the type's consumer.
    pub fn is_bound(&self) -> bool {
        self.c.bound.load(Relaxed)
    }

    /// One resynchronisation of the reader from the ack floor.
    pub fn record_resync(&self) {
        self.c.resyncs.fetch_add(1, Relaxed);
    }

    /// One redelivery skipped; returns how many were skipped so far, this one included.
    pub fn record_redelivery_skipped(&self) -> u64 {
        self.c.redeliveries_skipped.fetch_add(1, Relaxed) + 1
    }

    /// One retry of an insert or an ack.
    pub fn record_retry(&self) {
        self.c.retries.fetch_add(1, Relaxed);
    }

    /// One failed insert attempt: counted, its error kept, and the start of the failing run
    /// marked (what `/ready` reports after its bound).
    pub fn record_insert_failure(&self, error: impl Into<String>) {
        self.c.insert_errors.fetch_add(1, Relaxed);
        self.error(error);
        let _ = self
            .c
            .failing_since_ms
            .compare_exchange(0, now_ms(), Relaxed, Relaxed);
    }

    /// One successful insert of a batch at `now` (unix ms): `rows` rows and `dead_letters`
    /// dead letters stored in `duration`; `first_published_ms` (the batch's oldest message, if
    /// known) gives the publish→insert latency. Ends a failing run.
    pub fn record_insert(
        &self,
        rows: u64,
        dead_letters: u64,
        duration: std::time::Duration,
        first_published_ms: Option<i64>,
        now: i64,
    ) {
        self.c.failing_since_ms.store(0, Relaxed);
        self.c.rows_inserted.fetch_add(rows, Relaxed);
        self.c.dead_letters.fetch_add(dead_letters, Relaxed);
        self.c.batches.fetch_add(1, Relaxed);
        self.c.last_insert_ms.store(now, Relaxed);
        let latency = first_published_ms.map(|first| {
            let lat = u64::try_from(now.saturating_sub(first)).unwrap_or(0);
            self.c.last_latency_ms.store(lat, Relaxed);
            self.c.latency_ms_sum.fetch_add(lat, Relaxed);
            lat
        });
        self.observe_insert(duration, rows, latency);
    }

    /// Quality events stored with a batch.
    pub fn record_quality_events(&self, n: u64) {
        self.c.quality_events.fetch_add(n, Relaxed);
    }

    /// Splits of a batch into more INSERTs.
    pub fn record_splits(&self, n: u64) {
        self.c.insert_splits.fetch_add(n, Relaxed);
    }

    /// Counts one rejection of `kind`.
    pub fn reject(&self, kind: &str) {
        if let Ok(mut m) = self.rejects.lock() {
            *m.entry(kind.to_string()).or_default() += 1;
        }
    }

    /// Rejections by reason kind.
    pub fn rejects(&self) -> BTreeMap<String, u64> {
        self.rejects.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Records the latest error and its time.
    pub fn error(&self, text: impl Into<String>) {
        if let Ok(mut e) = self.last_error.lock() {
            *e = Some(text.into());
        }
        self.c.last_error_ms.store(now_ms(), Relaxed);
    }

    /// The latest error text, if any.
    pub fn last_error(&self) -> Option<String> {
        self.last_error.lock().ok().and_then(|e| e.clone())
    }

    /// Records the distributions of one successful insert: how long the INSERT took, how many
    /// rows it stored and, when known, the publish→insert latency of the batch's oldest
    /// message in ms.
    fn observe_insert(
        &self,
        duration: std::time::Duration,
        rows: u64,
        publish_to_insert_ms: Option<u64>,
    ) {
        let us = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.histograms.insert_duration_us.observe(us);
        self.histograms.batch_rows.observe(rows);
        if let Some(ms) = publish_to_insert_ms {
            self.histograms.publish_to_insert_ms.observe(ms);
        }
    }

    /// The insert distributions.
    pub fn histograms(&self) -> &TypeHistograms {
        &self.histograms
    }

    /// Sets (or clears, with `None`) why the type is waiting to recover.
    pub fn set_waiting(&self, why: Option<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = why;
        }
    }

    /// Marks the type stuck: it cannot make progress without a restart.
    pub fn set_stuck(&self, why: String) {
        if let Ok(mut s) = self.stuck.lock() {
            *s = Some(why);
        }
    }

    /// Why the type waits, if it does.
    pub fn waiting_reason(&self) -> Option<String> {
        self.waiting.lock().ok().and_then(|w| w.clone())
    }

    /// Why the type is stuck, if it is.
    pub fn stuck_reason(&self) -> Option<String> {
        self.stuck.lock().ok().and_then(|s| s.clone())
    }

    /// The scalar counters now (each read on its own: a copy, not a transaction).
    pub fn counters(&self) -> TypeCounters {
        self.c.load()
    }

    /// Overwrites the scalar counters with `c` — for fixtures (tests, the status-page
    /// screenshot) that show given values; the stages record events instead.
    pub fn restore(&self, c: &TypeCounters) {
        self.c.store(c);
    }

    /// Applies `f` to a copy of the counters and stores the result (fixtures; see
    /// [`TypeStats::restore`]).
    pub fn update(&self, f: impl FnOnce(&mut TypeCounters)) {
        let mut c = self.counters();
        f(&mut c);
        self.restore(&c);
    }
}

/// What this instance does with a lane.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum LaneRole {
    /// Not assigned here (another instance's), or not looked at yet.
    #[default]
    Elsewhere,
    /// Assigned here; waiting for the holder named to give it up (a hand-over, or a standby
    /// behind an instance of the same types).
    Standby(String),
    /// This instance holds its lease and runs its stages.
    Holder,
}

impl LaneRole {
    /// `holder`, `standby`, `elsewhere`.
    pub fn as_str(&self) -> &'static str {
        match self {
            LaneRole::Elsewhere => "elsewhere",
            LaneRole::Standby(_) => "standby",
            LaneRole::Holder => "holder",
        }
    }
}

/// One instance serving the streams, as the coordinator last saw the member list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberView {
    /// Its instance id.
    pub instance: String,
    /// The types it serves.
    pub types: Vec<DataType>,
    /// Whether it is this process.
    pub me: bool,
}

/// The state of one lane (one durable consumer of a type: its base, or one partition) in this
/// instance. The stages of a lane record through it: what is queued, whether it is bound, why
/// it waits; it keeps its type's aggregates ([`TypeStats`]) in step.
#[derive(Debug)]
pub struct LaneStats {
    /// Which lane.
    pub id: LaneId,
    ty: Arc<TypeStats>,
    bound: AtomicBool,
    queued: AtomicU64,
    queued_bytes: AtomicU64,
    consumer_pending: AtomicU64,
    /// Unix ms since when this instance holds it (0: not held).
    held_since_ms: AtomicI64,
    acquired: AtomicU64,
    lost: AtomicU64,
    released: AtomicU64,
    role: Mutex<LaneRole>,
    /// The instance the assignment gives it to (empty: not computed yet).
    owner: Mutex<String>,
    /// Who held its lease at the coordinator's last look (empty: nobody, or not looked yet).
    seen_holder: Mutex<String>,
    waiting: Mutex<Option<String>>,
    stuck: Mutex<Option<String>>,
}

/// A copy of a lane's state for the ops surface.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LaneView {
    /// Which lane.
    pub id: LaneId,
    /// What this instance does with it.
    pub role: LaneRole,
    /// Whose it is by the assignment.
    pub owner: String,
    /// Who held its lease at the coordinator's last look (empty: nobody).
    pub seen_holder: String,
    /// Whether its durable is bound here.
    pub bound: bool,
    /// Messages received and not acked.
    pub queued: u64,
    /// The durable's pending count at the last look.
    pub consumer_pending: u64,
    /// Unix ms since when it is held here (0: not held).
    pub held_since_ms: i64,
    /// Times its lease was taken by this instance.
    pub acquired: u64,
    /// Times it was lost (fenced: a failed refresh, the journal taken).
    pub lost: u64,
    /// Times it was handed over (released to its new owner, or at shutdown).
    pub released: u64,
    /// Why it waits, if it does.
    pub waiting: Option<String>,
    /// Why it is stuck, if it is.
    pub stuck: Option<String>,
}

impl LaneStats {
    fn new(id: LaneId, ty: Arc<TypeStats>) -> Self {
        LaneStats {
            id,
            ty,
            bound: AtomicBool::new(false),
            queued: AtomicU64::new(0),
            queued_bytes: AtomicU64::new(0),
            consumer_pending: AtomicU64::new(0),
            held_since_ms: AtomicI64::new(0),
            acquired: AtomicU64::new(0),
            lost: AtomicU64::new(0),
            released: AtomicU64::new(0),
            role: Mutex::new(LaneRole::Elsewhere),
            owner: Mutex::new(String::new()),
            seen_holder: Mutex::new(String::new()),
            waiting: Mutex::new(None),
            stuck: Mutex::new(None),
        }
    }

    /// Its type's counters.
    pub fn of_type(&self) -> &TypeStats {
        &self.ty
    }

    /// One message received (see [`TypeStats::record_received`]), queued in this lane too.
    pub fn record_received(&self, bytes: u64, published_ms: i64) {
        self.queued.fetch_add(1, Relaxed);
        self.queued_bytes.fetch_add(bytes, Relaxed);
        self.ty.record_received(bytes, published_ms);
    }

    /// Messages that left this lane's queue.
    pub fn release_queued(&self, count: u64, bytes: u64) {
        let c = take(&self.queued, count);
        let b = take(&self.queued_bytes, bytes);
        self.ty.release_queued(c, b);
    }

    /// Nothing is queued in this lane any more (a new run re-reads what was held).
    pub fn clear_queued(&self) {
        let c = self.queued.swap(0, Relaxed);
        let b = self.queued_bytes.swap(0, Relaxed);
        self.ty.release_queued(c, b);
    }

    /// Messages queued in this lane (its reader's back-pressure).
    pub fn queued(&self) -> u64 {
        self.queued.load(Relaxed)
    }

    /// Payload bytes queued in this lane.
    pub fn queued_bytes(&self) -> u64 {
        self.queued_bytes.load(Relaxed)
    }

    /// The server's count of messages pending on this lane's durable; its type's count is the
    /// sum over its lanes.
    pub fn set_consumer_pending(&self, pending: u64) {
        let old = self.consumer_pending.swap(pending, Relaxed);
        self.ty.shift_consumer_pending(old, pending);
    }

    /// Whether this instance has its durable bound; its type is bound while any lane is.
    pub fn set_bound(&self, bound: bool) {
        if self.bound.swap(bound, Relaxed) != bound {
            self.ty.shift_bound_lanes(bound);
        }
    }

    /// Whether its durable is bound here.
    pub fn is_bound(&self) -> bool {
        self.bound.load(Relaxed)
    }

    /// Its lease was taken by this instance.
    pub fn record_acquired(&self, now_ms: i64) {
        self.acquired.fetch_add(1, Relaxed);
        self.held_since_ms.store(now_ms, Relaxed);
        self.set_role(LaneRole::Holder);
    }

    /// Its lease was lost (fenced).
    pub fn record_lost(&self) {
        self.lost.fetch_add(1, Relaxed);
        self.held_since_ms.store(0, Relaxed);
    }

    /// Its lease was given up (hand-over or shutdown).
    pub fn record_released(&self) {
        self.released.fetch_add(1, Relaxed);
        self.held_since_ms.store(0, Relaxed);
        self.set_role(LaneRole::Elsewhere);
    }

    /// Sets what this instance does with it.
    pub fn set_role(&self, role: LaneRole) {
        if let Ok(mut r) = self.role.lock() {
            *r = role;
        }
    }

    /// What this instance does with it.
    pub fn role(&self) -> LaneRole {
        self.role.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// Records whose it is by the assignment.
    pub fn set_owner(&self, owner: &str) {
        if let Ok(mut o) = self.owner.lock()
            && *o != owner
        {
            *o = owner.to_string();
        }
    }

    /// Records who held its lease at the coordinator's last look (empty: nobody).
    pub fn set_seen_holder(&self, holder: &str) {
        if let Ok(mut h) = self.seen_holder.lock()
            && *h != holder
        {
            *h = holder.to_string();
        }
    }

    /// Sets (or clears) why it waits to recover.
    pub fn set_waiting(&self, why: Option<String>) {
        if let Ok(mut w) = self.waiting.lock() {
            *w = why;
        }
    }

    /// Why it waits, if it does.
    pub fn waiting_reason(&self) -> Option<String> {
        self.waiting.lock().ok().and_then(|w| w.clone())
    }

    /// Marks it stuck (its type too): it cannot make progress without a restart.
    pub fn set_stuck(&self, why: String) {
        if let Ok(mut s) = self.stuck.lock() {
            *s = Some(why.clone());
        }
        if self.ty.stuck_reason().is_none() {
            self.ty.set_stuck(format!("{}: {why}", self.id.label()));
        }
    }

    /// Why it is stuck, if it is.
    pub fn stuck_reason(&self) -> Option<String> {
        self.stuck.lock().ok().and_then(|s| s.clone())
    }

    /// A copy of its state.
    pub fn view(&self) -> LaneView {
        LaneView {
            id: self.id.clone(),
            role: self.role(),
            owner: self.owner.lock().map(|o| o.clone()).unwrap_or_default(),
            seen_holder: self
                .seen_holder
                .lock()
                .map(|h| h.clone())
                .unwrap_or_default(),
            bound: self.is_bound(),
            queued: self.queued(),
            consumer_pending: self.consumer_pending.load(Relaxed),
            held_since_ms: self.held_since_ms.load(Relaxed),
            acquired: self.acquired.load(Relaxed),
            lost: self.lost.load(Relaxed),
            released: self.released.load(Relaxed),
            waiting: self.waiting_reason(),
            stuck: self.stuck_reason(),
        }
    }
}

/// Subtracts up to `n` from a counter (never below zero); returns what was subtracted.
fn take(c: &AtomicU64, n: u64) -> u64 {
    match c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n))) {
        Ok(v) | Err(v) => v.min(n),
    }
}

/// Subtracts from a counter, never below zero.
fn sub(c: &AtomicU64, n: u64) {
    let _ = c.fetch_update(Relaxed, Relaxed, |v| Some(v.saturating_sub(n)));
}

/// Counters of every data type.
#[derive(Debug)]
pub struct Stats {
    types: BTreeMap<DataType, Arc<TypeStats>>,
    /// The lanes this instance knows of (held, standing by, or owned elsewhere), by durable.
    lanes: Mutex<BTreeMap<String, Arc<LaneStats>>>,
    /// The instances serving the streams as this one saw them at its last look.
    members: Mutex<Vec<MemberView>>,
    /// Whether the NATS connection is up.
    nats_connected: AtomicBool,
    /// Times NATS refused the credentials or a permission (`service::nats`).
    nats_auth_failures: AtomicU64,
    /// The last permission NATS denied (what, unix ms), for `/ready`.
    nats_denied: Mutex<Option<(String, i64)>>,
    /// Whether ClickHouse answered the last ping.
    clickhouse_up: AtomicBool,
    /// This instance's id (lease holder and member name), once the pipeline set it.
    instance: Mutex<Option<String>>,
    /// The NATS server the connection is on (name and address), as the client last saw it.
    nats_server: Mutex<Option<String>>,
    /// Process start, unix ms.
    pub started_ms: i64,
    /// The data-quality detectors; [`crate::quality::Quality::snapshot`] gives their per-market
    /// counters.
    pub quality: std::sync::Arc<crate::quality::Quality>,
}

impl Stats {
    /// Zeroed counters for all eight types.
    pub fn new(now_ms: i64) -> Self {
        Stats {
            types: DataType::ALL
                .into_iter()
                .map(|t| (t, Arc::new(TypeStats::default())))
                .collect(),
            lanes: Mutex::new(BTreeMap::new()),
            members: Mutex::new(Vec::new()),
            nats_connected: AtomicBool::new(false),
            nats_auth_failures: AtomicU64::new(0),
            nats_denied: Mutex::new(None),
            clickhouse_up: AtomicBool::new(false),
            instance: Mutex::new(None),
            nats_server: Mutex::new(None),
            started_ms: now_ms,
            quality: std::sync::Arc::new(crate::quality::Quality::default()),
        }
    }

    /// The counters of one type.
    pub fn of(&self, t: DataType) -> &TypeStats {
        // Every type is inserted in `new`; the fallback only satisfies the type checker.
        self.types
            .get(&t)
            .map(|a| a.as_ref())
            .unwrap_or_else(|| &FALLBACK)
    }

    /// All types with their counters.
    pub fn iter(&self) -> impl Iterator<Item = (DataType, &TypeStats)> {
        self.types.iter().map(|(t, s)| (*t, s.as_ref()))
    }

    /// The state of lane `id`, registered at its first use.
    pub fn lane(&self, id: &LaneId) -> Arc<LaneStats> {
        let ty = self
            .types
            .get(&id.data_type)
            .cloned()
            .unwrap_or_else(|| Arc::new(TypeStats::default()));
        let Ok(mut lanes) = self.lanes.lock() else {
            return Arc::new(LaneStats::new(id.clone(), ty));
        };
        lanes
            .entry(id.durable.clone())
            .or_insert_with(|| Arc::new(LaneStats::new(id.clone(), ty)))
            .clone()
    }

    /// Every lane known, by durable name.
    pub fn lanes(&self) -> Vec<Arc<LaneStats>> {
        self.lanes
            .lock()
            .map(|l| l.values().cloned().collect())
            .unwrap_or_default()
    }

    /// The lanes of type `t`.
    pub fn lanes_of(&self, t: DataType) -> Vec<Arc<LaneStats>> {
        let mut v = self.lanes();
        v.retain(|l| l.id.data_type == t);
        v
    }

    /// Records the instances serving the streams (the coordinator's last look).
    pub fn set_members(&self, members: Vec<MemberView>) {
        if let Ok(mut m) = self.members.lock() {
            *m = members;
        }
    }

    /// The instances serving the streams, as last seen.
    pub fn members(&self) -> Vec<MemberView> {
        self.members.lock().map(|m| m.clone()).unwrap_or_default()
    }

    /// Whether the NATS connection is up.
    pub fn nats_connected(&self) -> bool {
        self.nats_connected.load(Relaxed)
    }

    /// Records the NATS connection state.
    pub fn set_nats_connected(&self, up: bool) {
        self.nats_connected.store(up, Relaxed);
    }

    /// Counts one refusal by NATS: the credentials (at a connect or reconnect) or a
    /// permission.
    pub fn record_nats_auth_failure(&self) {
        self.nats_auth_failures.fetch_add(1, Relaxed);
    }

    /// Records a permission NATS denied (`what`: the server's words, e.g. `Publish to "…"`),
    /// counted as a refusal too.
    pub fn record_nats_denied(&self, what: String, now_ms: i64) {
        self.record_nats_auth_failure();
        if let Ok(mut d) = self.nats_denied.lock() {
            *d = Some((what, now_ms));
        }
    }

    /// The last permission NATS denied and when (unix ms), if any.
    pub fn nats_denied(&self) -> Option<(String, i64)> {
        self.nats_denied.lock().ok().and_then(|d| d.clone())
    }

    /// Refusals by NATS since the start (credentials or permissions).
    pub fn nats_auth_failures(&self) -> u64 {
        self.nats_auth_failures.load(Relaxed)
    }

    /// Whether ClickHouse answered the last ping.
    pub fn clickhouse_up(&self) -> bool {
        self.clickhouse_up.load(Relaxed)
    }

    /// Records whether ClickHouse answers; returns the previous state.
    pub fn set_clickhouse_up(&self, up: bool) -> bool {
        self.clickhouse_up.swap(up, Relaxed)
    }

    /// Records this instance's id (the lease holder and member name).
    pub fn set_instance(&self, id: &str) {
        if let Ok(mut i) = self.instance.lock() {
            *i = Some(id.to_string());
        }
    }

    /// This instance's id, once set.
    pub fn instance(&self) -> Option<String> {
        self.instance.lock().ok().and_then(|i| i.clone())
    }

    /// Records the NATS server the connection is on (`None`: not known).
    pub fn set_nats_server(&self, server: Option<String>) {
        if let Ok(mut s) = self.nats_server.lock()
            && *s != server
        {
            *s = server;
        }
    }

    /// The NATS server the connection is on, as last seen.
    pub fn nats_server(&self) -> Option<String> {
        self.nats_server.lock().ok().and_then(|s| s.clone())
    }
}

/// Upper bounds of the insert-duration buckets, microseconds (1 ms … 60 s).
pub const INSERT_DURATION_US_BOUNDS: &[u64] = &[
    1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000, 1_000_000, 2_500_000,
    5_000_000, 10_000_000, 30_000_000, 60_000_000,
];

/// Upper bounds of the batch-size buckets, rows.
pub const BATCH_ROWS_BOUNDS: &[u64] = &[
    1, 10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000,
];

/// Upper bounds of the publish→insert latency buckets, milliseconds (10 ms … 15 min).
pub const PUBLISH_TO_INSERT_MS_BOUNDS: &[u64] = &[
    10, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 900_000,
];

/// A lock-free histogram over fixed buckets of integer values (Prometheus semantics: a value
/// lands in the first bucket whose upper bound is `>=` it, or in the overflow bucket).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [u64],
    /// Per-bucket (not cumulative) counts; one more than `bounds` for the overflow bucket.
    counts: Box<[AtomicU64]>,
    sum: AtomicU64,
}

/// A copy of a [`Histogram`] at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// Upper bounds of the finite buckets.
    pub bounds: &'static [u64],
    /// Cumulative counts: `cumulative[i]` = observations `<= bounds[i]`; the last entry (one
    /// past `bounds`) is the total count.
    pub cumulative: Vec<u64>,
    /// Sum of all observed values.
    pub sum: u64,
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.cumulative.last().copied().unwrap_or(0)
    }
}

impl Histogram {
    /// An empty histogram with these (ascending) bucket upper bounds.
    pub fn new(bounds: &'static [u64]) -> Self {
        Histogram {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum: AtomicU64::new(0),
        }
    }

    /// Records one value.
    pub fn observe(&self, value: u64) {
        let i = self.bounds.partition_point(|b| *b < value);
        if let Some(c) = self.counts.get(i) {
            c.fetch_add(1, Relaxed);
        }
        self.sum.fetch_add(value, Relaxed);
    }

    /// The current counts, cumulative as Prometheus wants them. The total is derived from the
    /// buckets, so `+Inf` and `_count` always agree even while others observe.
    pub fn snapshot(&self) -> HistogramSnapshot {
        let mut acc = 0u64;
        let cumulative = self
            .counts
            .iter()
            .map(|c| {
                acc = acc.saturating_add(c.load(Relaxed));
                acc
            })
            .collect();
        HistogramSnapshot {
            bounds: self.bounds,
            cumulative,
            sum: self.sum.load(Relaxed),
        }
    }
}

/// The distributions kept per data type, recorded by [`TypeStats::record_insert`].
#[derive(Debug)]
pub struct TypeHistograms {
    /// Duration of successful INSERTs, microseconds.
    pub insert_duration_us: Histogram,
    /// Rows per successful INSERT.
    pub batch_rows: Histogram,
    /// Publish time of the batch's oldest message → insert done, milliseconds.
    pub publish_to_insert_ms: Histogram,
}

impl Default for TypeHistograms {
    fn default() -> Self {
        TypeHistograms {
            insert_duration_us: Histogram::new(INSERT_DURATION_US_BOUNDS),
            batch_rows: Histogram::new(BATCH_ROWS_BOUNDS),
            publish_to_insert_ms: Histogram::new(PUBLISH_TO_INSERT_MS_BOUNDS),
        }
    }
}

static FALLBACK: std::sync::LazyLock<TypeStats> = std::sync::LazyLock::new(TypeStats::default);

/// Current time in unix milliseconds.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn histogram_buckets_are_inclusive_and_cumulative() {
        let h = Histogram::new(&[1, 10, 100]);
        for v in [0, 1, 2, 10, 11, 100, 1000] {
            h.observe(v);
        }
        let s = h.snapshot();
        assert_eq!(s.cumulative, vec![2, 4, 6, 7]);
        assert_eq!(s.count(), 7);
        assert_eq!(s.sum, 1124);
    }

    #[test]
    fn record_insert_counts_rows_latency_and_fills_the_three_histograms() {
        let t = TypeStats::default();
        t.record_insert_failure("Code: 241");
        assert!(t.counters().failing_since_ms > 0);
        t.record_insert(500, 2, Duration::from_millis(3), Some(8_800), 10_000);
        t.record_insert(500, 0, Duration::from_millis(3), None, 10_500);
        let c = t.counters();
        assert_eq!(
            (c.rows_inserted, c.dead_letters, c.batches, c.insert_errors),
            (1000, 2, 2, 1)
        );
        assert_eq!((c.last_insert_ms, c.failing_since_ms), (10_500, 0));
        assert_eq!((c.last_latency_ms, c.latency_ms_sum), (1_200, 1_200));
        let h = t.histograms();
        assert_eq!(h.insert_duration_us.snapshot().count(), 2);
        assert_eq!(h.batch_rows.snapshot().sum, 1000);
        assert_eq!(h.publish_to_insert_ms.snapshot().count(), 1);
    }

    #[test]
    fn the_queue_follows_receive_and_release_and_never_goes_negative() {
        let t = TypeStats::default();
        t.record_received(100, 7);
        t.record_received(50, 9);
        let c = t.counters();
        assert_eq!((c.received, c.queued, c.queued_bytes), (2, 2, 150));
        assert_eq!(c.last_message_ms, 9);
        t.release_queued(1, 100);
        assert_eq!((t.queued(), t.queued_bytes()), (1, 50));
        t.release_queued(5, 500);
        assert_eq!((t.queued(), t.queued_bytes()), (0, 0));
        t.record_received(10, 11);
        t.clear_queued();
        assert_eq!(
            (t.queued(), t.queued_bytes(), t.counters().received),
            (0, 0, 3)
        );
    }

    #[test]
    fn the_failing_run_starts_at_the_first_failure() {
        let t = TypeStats::default();
        t.record_insert_failure("first");
        let since = t.counters().failing_since_ms;
        t.update(|c| c.failing_since_ms = 5);
        t.record_insert_failure("second");
        assert!(since > 0);
        assert_eq!(t.counters().failing_since_ms, 5);
        assert_eq!(t.counters().insert_errors, 2);
        assert_eq!(t.last_error().as_deref(), Some("second"));
    }

    #[test]
    fn restore_round_trips_the_counters() {
        let t = TypeStats::default();
        let c = TypeCounters {
            received: 1,
            rows_inserted: 2,
            dead_letters: 3,
            batches: 4,
            insert_errors: 5,
            retries: 6,
            queued: 7,
            queued_bytes: 8,
            redeliveries_skipped: 9,
            resyncs: 10,
            insert_splits: 11,
            last_message_ms: 12,
            last_insert_ms: 13,
            failing_since_ms: 14,
            consumer_pending: 15,
            bound: true,
            latency_ms_sum: 16,
            last_latency_ms: 17,
            quality_events: 18,
            last_error_ms: 19,
        };
        t.restore(&c);
        assert_eq!(t.counters(), c);
    }

    #[test]
    fn error_records_its_time() {
        let t = TypeStats::default();
        assert_eq!(t.counters().last_error_ms, 0);
        t.error("boom");
        assert!(t.counters().last_error_ms > 0);
    }

    #[test]
    fn connection_flags() {
        let s = Stats::new(0);
        assert!(!s.nats_connected() && !s.clickhouse_up());
        s.set_nats_connected(true);
        assert!(!s.set_clickhouse_up(true));
        assert!(s.set_clickhouse_up(true));
        assert!(s.nats_connected() && s.clickhouse_up());
        assert_eq!((s.instance(), s.nats_server()), (None, None));
        s.set_instance("host:8081");
        s.set_nats_server(Some("n1 (127.0.0.1:4222)".into()));
        assert_eq!(s.instance().as_deref(), Some("host:8081"));
        assert_eq!(s.nats_server().as_deref(), Some("n1 (127.0.0.1:4222)"));
    }
}
