//! The detectors: per (data type, exchange, market type, symbol) state, fed batch by batch.
//!
//! Consumes decoded rows (and, from the timer, the wall clock); emits [`QualityEvent`]s and
//! keeps per-market counters for the ops surface. Pure and IO-free: the same rows in the same
//! order give the same events. The hot path is O(1) per row and allocates nothing per row:
//! markets are found by a 64-bit hash of their three strings (verified against the stored
//! strings), and strings are only cloned into an event when there is one to report.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::time::Duration;

use crate::model::{DataType, OrderbookRow, Record, TradeRow};

use crate::model::{EventKind, QualityEvent};

/// Prices kept per market for the moving median of the price-jump check.
pub const PRICE_WINDOW: usize = 64;
/// Prices needed before the price-jump check starts (a fresh market has no reference yet).
pub const PRICE_MIN_SAMPLES: usize = 16;
/// The median is recomputed every this many prices (it moves slowly; this keeps the check
/// at a few ns per row).
const MEDIAN_EVERY: u8 = 8;
/// Latency histogram buckets: bucket 0 is < 1 ms, bucket `i` is `[2^(i-1), 2^i)` ms.
pub const LATENCY_BUCKETS: usize = 40;

/// What the detectors check, and their thresholds.
#[derive(Debug, Clone, PartialEq)]
pub struct QualitySettings {
    /// Where trade ids are sequential integers: `exchange` or `exchange/market_type` entries
    /// (default: `binance`, `okx`). Other markets get no continuity check.
    pub sequential_ids: Vec<String>,
    /// A price more than this fraction away from the recent median is a jump (default 0.10).
    pub price_jump: f64,
    /// How far back the start-up restore looks in the hot tables (default 1 h).
    pub restore_window: Duration,
    /// How often the timer looks for silent markets (default 5 s).
    pub tick: Duration,
}

/// Default of [`QualitySettings::price_jump`].
pub const DEFAULT_PRICE_JUMP: f64 = 0.10;
/// Default of [`QualitySettings::restore_window`].
pub const DEFAULT_RESTORE_WINDOW: Duration = Duration::from_secs(3600);
/// Default of [`QualitySettings::tick`].
pub const DEFAULT_TICK: Duration = Duration::from_secs(5);

impl Default for QualitySettings {
    fn default() -> Self {
        QualitySettings {
            sequential_ids: vec!["binance".into(), "okx".into()],
            price_jump: DEFAULT_PRICE_JUMP,
            restore_window: DEFAULT_RESTORE_WINDOW,
            tick: DEFAULT_TICK,
        }
    }
}

impl QualitySettings {
    /// Whether trade ids of this market are checked for continuity.
    pub fn is_sequential(&self, exchange: &str, market_type: &str) -> bool {
        self.sequential_ids.iter().any(|e| match e.split_once('/') {
            Some((ex, mt)) => ex == exchange && mt == market_type,
            None => e == exchange,
        })
    }
}

/// Silence after which a market of `t` is stale; `None` for liquidations (they are events,
/// not a feed: silence is normal).
pub fn stale_threshold(t: DataType) -> Option<Duration> {
    match t {
        DataType::Trade => Some(Duration::from_secs(60)),
        DataType::Orderbook => Some(Duration::from_secs(30)),
        DataType::Liquidation => None,
        DataType::FundingRate
        | DataType::OpenInterest
        | DataType::LsrTopPosition
        | DataType::LsrAllAccount
        | DataType::VolatilityIndex => Some(Duration::from_secs(600)),
    }
}

/// Markets one tracker keeps state for. A flood of made-up symbols (a hostile or broken
/// publisher) must not grow memory without bound: past this many, the least recently active
/// quarter is evicted at once (amortised O(1) per new market), their counters folded into the
/// tracker's totals. An evicted market that comes back starts afresh (no gap is reported
/// across the eviction).
pub const MAX_MARKETS: usize = 10_000;

/// Markets silent for longer than this are evicted by the tick (their counters folded).
pub const IDLE_EVICT: Duration = Duration::from_secs(24 * 3600);

/// Counters of one market since start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeyCounts {
    /// Rows observed.
    pub rows: u64,
    /// Events by kind, indexed by [`EventKind::index`].
    pub events: [u64; EventKind::ALL.len()],
    /// Ids missing in gaps, summed.
    pub missing: u64,
    /// Milliseconds of closed stale episodes, summed (data time).
    pub stale_ms: u64,
}

impl KeyCounts {
    /// Adds `o` to these counters.
    pub fn add(&mut self, o: &KeyCounts) {
        self.rows += o.rows;
        for (a, b) in self.events.iter_mut().zip(o.events.iter()) {
            *a += b;
        }
        self.missing += o.missing;
        self.stale_ms += o.stale_ms;
    }

    /// Events of one kind.
    pub fn of(&self, k: EventKind) -> u64 {
        self.events.get(k.index()).copied().unwrap_or(0)
    }
}

/// The state restored for one market from the stored rows (see `quality::restore`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    /// `exchange`.
    pub exchange: String,
    /// `market_type`.
    pub market_type: String,
    /// `symbol`.
    pub symbol: String,
    /// Highest sequential id stored (trade id, order book update id); 0 = none.
    pub last_id: u64,
    /// Exchange time of that id (trades), ms; 0 when unknown.
    pub last_id_time_ms: i64,
    /// Latest `timestamp` stored, ms.
    pub last_ts_ms: i64,
    /// Whether the latest stale event stored for the market is a `stale_open`.
    pub stale_open: bool,
}

#[derive(Debug)]
struct KeyState {
    hash: u64,
    exchange: String,
    market_type: String,
    symbol: String,
    sequential: bool,
    /// Restored from storage and no newer row seen yet: rows at or below the restored point
    /// are a replay of stored rows (an in-doubt batch re-sent after a restart), not news.
    tentative: bool,
    has_id: bool,
    last_id: u64,
    last_id_time_ms: i64,
    has_ts: bool,
    last_ts_ms: i64,
    last_arrival_ms: i64,
    stale_open: bool,
    prices: [i64; PRICE_WINDOW],
    price_len: usize,
    price_pos: usize,
    median: i64,
    since_median: u8,
    counts: KeyCounts,
}

impl KeyState {
    fn new(hash: u64, exchange: &str, market_type: &str, symbol: &str, sequential: bool) -> Self {
        KeyState {
            hash,
            exchange: exchange.to_owned(),
            market_type: market_type.to_owned(),
            symbol: symbol.to_owned(),
            sequential,
            tentative: false,
            has_id: false,
            last_id: 0,
            last_id_time_ms: 0,
            has_ts: false,
            last_ts_ms: 0,
            last_arrival_ms: 0,
            stale_open: false,
            prices: [0; PRICE_WINDOW],
            price_len: 0,
            price_pos: 0,
            median: 0,
            since_median: 0,
            counts: KeyCounts::default(),
        }
    }

    fn is(&self, exchange: &str, market_type: &str, symbol: &str) -> bool {
        self.exchange == exchange && self.market_type == market_type && self.symbol == symbol
    }
}

/// One market's counters in a [`TrackerSnapshot`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeySnapshot {
    /// `exchange`.
    pub exchange: String,
    /// `market_type`.
    pub market_type: String,
    /// `symbol`.
    pub symbol: String,
    /// Counters since start.
    pub counts: KeyCounts,
    /// Whether a stale episode is open now.
    pub stale_open: bool,
    /// Milliseconds since the last row arrived (wall clock).
    pub silent_ms: u64,
}

/// A copy of one tracker's counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackerSnapshot {
    /// The type.
    pub data_type: DataType,
    /// Per market, in first-seen order.
    pub keys: Vec<KeySnapshot>,
    /// Counters of the markets evicted since start (see [`MAX_MARKETS`], [`IDLE_EVICT`]).
    pub folded: KeyCounts,
    /// Markets evicted since start.
    pub evicted: u64,
    /// Exchange → collector latency histogram (see [`LATENCY_BUCKETS`]).
    pub latency: [u64; LATENCY_BUCKETS],
    /// Rows whose exchange time is after their collector time (clock skew).
    pub negative_latency: u64,
}

impl TrackerSnapshot {
    /// The counters of every market ever seen: those kept plus those evicted.
    pub fn totals(&self) -> KeyCounts {
        let mut t = self.folded;
        for k in &self.keys {
            t.add(&k.counts);
        }
        t
    }

    /// Latency quantile `q` (0..=1) from the histogram: the upper bound of the bucket, ms.
    /// `None` when no latency was recorded.
    pub fn latency_quantile(&self, q: f64) -> Option<u64> {
        latency_quantile(&self.latency, q)
    }
}

/// The quantile `q` of a latency histogram as the upper bound of its bucket, in ms.
pub fn latency_quantile(h: &[u64; LATENCY_BUCKETS], q: f64) -> Option<u64> {
    let total: u64 = h.iter().sum();
    if total == 0 {
        return None;
    }
    let rank = ((total as f64) * q.clamp(0.0, 1.0)).ceil().max(1.0) as u64;
    let mut seen = 0;
    for (i, n) in h.iter().enumerate() {
        seen += n;
        if seen >= rank {
            return Some(if i == 0 { 1 } else { 1u64 << i });
        }
    }
    None
}

/// Identity hasher for keys that are already hashes.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8) | u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// FNV-1a over the three strings with separators: stable across runs and versions.
pub fn market_hash(exchange: &str, market_type: &str, symbol: &str) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in [exchange, market_type, symbol] {
        for b in part.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        h ^= 0xff;
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The detectors of one data type.
#[derive(Debug)]
pub struct QualityTracker {
    data_type: DataType,
    settings: QualitySettings,
    /// `price_jump` in parts per million, for integer comparisons.
    jump_ppm: i128,
    stale_after_ms: Option<i64>,
    keys: Vec<KeyState>,
    /// Market hash → slot of the first market with that hash (see [`QualityTracker::slot`]).
    index: HashMap<u64, usize, BuildHasherDefault<IdHasher>>,
    /// Counters of evicted markets.
    folded: KeyCounts,
    /// Markets evicted since start.
    evicted: u64,
    latency: [u64; LATENCY_BUCKETS],
    negative_latency: u64,
}

impl QualityTracker {
    /// An empty tracker for `data_type`.
    pub fn new(data_type: DataType, settings: QualitySettings) -> Self {
        let jump_ppm = (settings.price_jump.max(0.0) * 1e6).round() as i128;
        QualityTracker {
            data_type,
            jump_ppm,
            stale_after_ms: stale_threshold(data_type)
                .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            settings,
            keys: Vec::new(),
            index: HashMap::default(),
            folded: KeyCounts::default(),
            evicted: 0,
            latency: [0; LATENCY_BUCKETS],
            negative_latency: 0,
        }
    }

    /// The tracker's type.
    pub fn data_type(&self) -> DataType {
        self.data_type
    }

    /// The slot of a market, created on first sight: one hash lookup. A 64-bit collision
    /// (the index names another market) falls back to a scan, so it costs time, never
    /// correctness; a market whose hash is not in the index is new without any scan.
    fn slot(&mut self, exchange: &str, market_type: &str, symbol: &str) -> usize {
        let h = market_hash(exchange, market_type, symbol);
        if let Some(&i) = self.index.get(&h) {
            if self
                .keys
                .get(i)
                .is_some_and(|k| k.is(exchange, market_type, symbol))
            {
                return i;
            }
            if let Some(i) = self
                .keys
                .iter()
                .position(|k| k.hash == h && k.is(exchange, market_type, symbol))
            {
                return i;
            }
        }
        if self.keys.len() >= MAX_MARKETS {
            self.evict_least_recent();
        }
        let sequential = self.settings.is_sequential(exchange, market_type);
        self.keys
            .push(KeyState::new(h, exchange, market_type, symbol, sequential));
        let i = self.keys.len() - 1;
        self.index.entry(h).or_insert(i);
        i
    }

    /// Evicts the least recently active quarter of the markets (folding their counters).
    fn evict_least_recent(&mut self) {
        let mut order: Vec<(i64, usize)> = self
            .keys
            .iter()
            .enumerate()
            .map(|(i, k)| (k.last_arrival_ms, i))
            .collect();
        let n = (order.len() / 4 + 1).min(order.len());
        if n == 0 {
            return;
        }
        order.select_nth_unstable(n - 1);
        let mut gone = vec![false; self.keys.len()];
        for &(_, i) in order.iter().take(n) {
            if let Some(g) = gone.get_mut(i) {
                *g = true;
            }
        }
        let mut slot = 0;
        self.evict_where(|_| {
            slot += 1;
            gone.get(slot - 1).copied().unwrap_or(false)
        });
    }

    /// Removes the markets `gone` selects, folds their counters, and rebuilds the index.
    fn evict_where(&mut self, mut gone: impl FnMut(&KeyState) -> bool) {
        let before = self.keys.len();
        let folded = &mut self.folded;
        self.keys.retain(|k| {
            if gone(k) {
                folded.add(&k.counts);
                false
            } else {
                true
            }
        });
        let evicted = before - self.keys.len();
        if evicted == 0 {
            return;
        }
        self.evicted += evicted as u64;
        self.index.clear();
        for (i, k) in self.keys.iter().enumerate() {
            self.index.entry(k.hash).or_insert(i);
        }
    }

    /// Markets state is kept for.
    pub fn markets(&self) -> usize {
        self.keys.len()
    }

    /// Seeds the state of markets from the stored rows (start-up). A restored market is
    /// tentative until a row newer than the restored point arrives: older rows are a replay.
    pub fn restore(&mut self, restored: &[Restored], now_ms: i64) {
        for r in restored {
            let i = self.slot(&r.exchange, &r.market_type, &r.symbol);
            if let Some(k) = self.keys.get_mut(i) {
                k.tentative = true;
                k.has_id = r.last_id > 0;
                k.last_id = r.last_id;
                k.last_id_time_ms = r.last_id_time_ms;
                k.has_ts = true;
                k.last_ts_ms = r.last_ts_ms;
                k.last_arrival_ms = now_ms;
                k.stale_open = r.stale_open;
            }
        }
    }

    /// Runs every detector over one batch of rows of this tracker's type, appending events to
    /// `out`. `detected_at_ms` stamps the events (a deterministic function of the batch);
    /// `now_ms` is the wall clock, for the silence timer.
    pub fn observe(
        &mut self,
        rows: &[Record],
        detected_at_ms: i64,
        now_ms: i64,
        out: &mut Vec<QualityEvent>,
    ) {
        for r in rows {
            let c = r.common();
            let i = self.slot(&c.exchange, &c.market_type, &c.symbol);
            let jump_ppm = self.jump_ppm;
            let Some(k) = self.keys.get_mut(i) else {
                continue;
            };
            let ts = c.timestamp_ms;
            k.counts.rows += 1;
            k.last_arrival_ms = now_ms;
            let id = match r {
                Record::Trade(t) if k.sequential => t.trade_id.parse::<u64>().ok(),
                Record::Orderbook(o) if o.last_update_id > 0 => Some(o.last_update_id),
                _ => None,
            };
            if k.tentative {
                let replay = match id {
                    Some(id) if k.has_id => id <= k.last_id,
                    _ => ts <= k.last_ts_ms,
                };
                if replay {
                    continue;
                }
                k.tentative = false;
            }
            let mut ev = Emitter {
                k,
                dt: self.data_type,
                detected_at_ms,
                ts,
                out,
            };
            if ev.k.stale_open {
                ev.k.stale_open = false;
                let span = u64::try_from(ts.saturating_sub(ev.k.last_ts_ms)).unwrap_or(0);
                ev.k.counts.stale_ms += span;
                ev.emit(EventKind::StaleClose, 0, 0, 0, span, 0, || {
                    "rows resumed".to_string()
                });
            }
            if ev.k.has_ts && ts < ev.k.last_ts_ms {
                let back = u64::try_from(ev.k.last_ts_ms - ts).unwrap_or(0);
                let last = ev.k.last_ts_ms;
                ev.emit(EventKind::TimeBackwards, 0, 0, 0, back, 0, || {
                    format!("timestamp {ts} after {last}")
                });
            } else {
                ev.k.last_ts_ms = ts;
            }
            ev.k.has_ts = true;
            match r {
                Record::Trade(t) => {
                    ev.trade(t, id);
                    ev.price(t.price, jump_ppm);
                    latency(
                        &mut self.latency,
                        &mut self.negative_latency,
                        ts - t.trade_time_ms,
                    );
                }
                Record::Orderbook(o) => {
                    ev.orderbook(o, id);
                    if o.bids_count > 0 && o.asks_count > 0 && o.best_bid_price < o.best_ask_price {
                        let mid = (i128::from(o.best_bid_price) + i128::from(o.best_ask_price)) / 2;
                        ev.price(i64::try_from(mid).unwrap_or(i64::MAX), jump_ppm);
                    }
                }
                Record::Liquidation(l) => latency(
                    &mut self.latency,
                    &mut self.negative_latency,
                    ts - l.liquidation_time_ms,
                ),
                _ => {}
            }
        }
    }

    /// Opens a stale episode for every market silent for longer than the type's threshold
    /// (wall clock since its last row), appending `stale_open` events to `out`.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<QualityEvent>) {
        let idle = i64::try_from(IDLE_EVICT.as_millis()).unwrap_or(i64::MAX);
        self.evict_where(|k| now_ms.saturating_sub(k.last_arrival_ms) > idle);
        let Some(after) = self.stale_after_ms else {
            return;
        };
        for k in &mut self.keys {
            let silent = now_ms.saturating_sub(k.last_arrival_ms);
            if k.stale_open || !k.has_ts || silent <= after {
                continue;
            }
            k.stale_open = true;
            k.counts.events[EventKind::StaleOpen.index()] += 1;
            out.push(QualityEvent {
                detected_at_ms: now_ms,
                event_time_ms: k.last_ts_ms,
                data_type: self.data_type,
                exchange: k.exchange.clone(),
                market_type: k.market_type.clone(),
                symbol: k.symbol.clone(),
                kind: EventKind::StaleOpen,
                first_missing: 0,
                last_missing: 0,
                missing: 0,
                span_ms: u64::try_from(silent).unwrap_or(0),
                value: 0,
                detail: format!(
                    "no row for {} s (threshold {} s)",
                    silent / 1000,
                    after / 1000
                ),
            });
        }
    }

    /// A copy of the counters.
    pub fn snapshot(&self, now_ms: i64) -> TrackerSnapshot {
        TrackerSnapshot {
            data_type: self.data_type,
            keys: self
                .keys
                .iter()
                .map(|k| KeySnapshot {
                    exchange: k.exchange.clone(),
                    market_type: k.market_type.clone(),
                    symbol: k.symbol.clone(),
                    counts: k.counts,
                    stale_open: k.stale_open,
                    silent_ms: u64::try_from(now_ms.saturating_sub(k.last_arrival_ms)).unwrap_or(0),
                })
                .collect(),
            folded: self.folded,
            evicted: self.evicted,
            latency: self.latency,
            negative_latency: self.negative_latency,
        }
    }
}

fn latency(h: &mut [u64; LATENCY_BUCKETS], negative: &mut u64, ms: i64) {
    if ms < 0 {
        *negative += 1;
        return;
    }
    let b = (64 - ms.leading_zeros()) as usize;
    if let Some(slot) = h.get_mut(b.min(LATENCY_BUCKETS - 1)) {
        *slot += 1;
    }
}

/// Appends events for one row of one market.
struct Emitter<'a> {
    k: &'a mut KeyState,
    dt: DataType,
    detected_at_ms: i64,
    ts: i64,
    out: &'a mut Vec<QualityEvent>,
}

impl Emitter<'_> {
    #[allow(clippy::too_many_arguments)] // one call site per kind, each naming its values
    fn emit(
        &mut self,
        kind: EventKind,
        first_missing: u64,
        last_missing: u64,
        missing: u64,
        span_ms: u64,
        value: i64,
        detail: impl FnOnce() -> String,
    ) {
        if let Some(c) = self.k.counts.events.get_mut(kind.index()) {
            *c += 1;
        }
        self.out.push(QualityEvent {
            detected_at_ms: self.detected_at_ms,
            event_time_ms: self.ts,
            data_type: self.dt,
            exchange: self.k.exchange.clone(),
            market_type: self.k.market_type.clone(),
            symbol: self.k.symbol.clone(),
            kind,
            first_missing,
            last_missing,
            missing,
            span_ms,
            value,
            detail: detail(),
        });
    }

    /// Trade-id continuity (sequential markets only; `id` is None otherwise).
    fn trade(&mut self, t: &TradeRow, id: Option<u64>) {
        let Some(id) = id else { return };
        if !self.k.has_id {
            self.k.has_id = true;
            self.k.last_id = id;
            self.k.last_id_time_ms = t.trade_time_ms;
            return;
        }
        let last = self.k.last_id;
        if id == last {
            self.emit(EventKind::Duplicate, id, id, 0, 0, 0, || {
                format!("trade id {id} again")
            });
        } else if id < last {
            self.emit(EventKind::OutOfOrder, id, last, 0, 0, 0, || {
                format!("trade id {id} after {last}")
            });
        } else {
            if id > last + 1 {
                let missing = id - last - 1;
                let span = u64::try_from(t.trade_time_ms.saturating_sub(self.k.last_id_time_ms))
                    .unwrap_or(0);
                self.k.counts.missing += missing;
                self.emit(EventKind::Gap, last + 1, id - 1, missing, span, 0, || {
                    format!("trade ids {}..={} missing", last + 1, id - 1)
                });
            }
            self.k.last_id = id;
            self.k.last_id_time_ms = t.trade_time_ms;
        }
    }

    /// `last_update_id` monotonicity (0 = unknown, skipped) and the book's shape.
    fn orderbook(&mut self, o: &OrderbookRow, id: Option<u64>) {
        if let Some(id) = id {
            let last = self.k.last_id;
            if !self.k.has_id || id > last {
                self.k.has_id = true;
                self.k.last_id = id;
            } else if id == last {
                self.emit(EventKind::Repeat, id, id, 0, 0, 0, || {
                    format!("last_update_id {id} again")
                });
            } else {
                self.emit(EventKind::Regression, id, last, 0, 0, 0, || {
                    format!("last_update_id {id} after {last}")
                });
            }
        }
        if o.bids_count == 0 || o.asks_count == 0 {
            let side = if o.bids_count == 0 && o.asks_count == 0 {
                "both sides"
            } else if o.bids_count == 0 {
                "bids"
            } else {
                "asks"
            };
            self.emit(EventKind::EmptySide, 0, 0, 0, 0, 0, || {
                format!("{side} empty")
            });
        } else if o.best_bid_price >= o.best_ask_price {
            let (bid, ask) = (o.best_bid_price, o.best_ask_price);
            self.emit(
                EventKind::CrossedBook,
                0,
                0,
                0,
                0,
                bid.saturating_sub(ask),
                || format!("best bid {bid} >= best ask {ask} (x1e-8)"),
            );
        }
    }

    /// Price jump against the moving median of the last [`PRICE_WINDOW`] prices. The price
    /// joins the window either way: a lasting move stops being flagged once it is the median.
    fn price(&mut self, p: i64, jump_ppm: i128) {
        if p <= 0 {
            return;
        }
        let k = &mut *self.k;
        if k.price_len >= PRICE_MIN_SAMPLES && k.median > 0 && jump_ppm > 0 {
            let med = i128::from(k.median);
            let diff = i128::from(p) - med;
            if diff.abs() * 1_000_000 > jump_ppm * med {
                let value = i64::try_from(diff * 100_000_000 / med).unwrap_or(i64::MAX);
                let median = k.median;
                self.emit(EventKind::PriceJump, 0, 0, 0, 0, value, || {
                    format!("price {p} vs median {median} (x1e-8)")
                });
            }
        }
        let k = &mut *self.k;
        if let Some(slot) = k.prices.get_mut(k.price_pos) {
            *slot = p;
        }
        k.price_pos = (k.price_pos + 1) % PRICE_WINDOW;
        k.price_len = (k.price_len + 1).min(PRICE_WINDOW);
        k.since_median += 1;
        if k.since_median >= MEDIAN_EVERY || k.price_len <= PRICE_MIN_SAMPLES {
            k.since_median = 0;
            let mut w = k.prices;
            let n = k.price_len;
            if let Some(s) = w.get_mut(..n) {
                let (_, m, _) = s.select_nth_unstable(n / 2);
                k.median = *m;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{Common, LiquidationRow, OrderbookRow, TradeRow};
    use proptest::prelude::*;

    fn common(ex: &str, ts: i64) -> Common {
        Common {
            timestamp_ms: ts,
            exchange: ex.into(),
            market_type: "spot".into(),
            symbol: "BTC-USDT".into(),
            data_source: "marketprism".into(),
        }
    }

    /// A binance spot trade with id `id` at `ts` (exchange time 100 ms earlier), price 100.
    fn trade(id: u64, ts: i64) -> Record {
        trade_at(id, ts, 100_0000_0000)
    }

    fn trade_at(id: u64, ts: i64, price: i64) -> Record {
        Record::Trade(TradeRow {
            common: common("binance", ts),
            trade_id: id.to_string(),
            price,
            quantity: 1,
            side: "buy".into(),
            is_maker: false,
            trade_time_ms: ts - 100,
        })
    }

    fn book(uid: u64, ts: i64, bid: i64, ask: i64, nb: u32, na: u32) -> Record {
        Record::Orderbook(OrderbookRow {
            common: common("binance", ts),
            last_update_id: uid,
            bids_count: nb,
            asks_count: na,
            best_bid_price: bid,
            best_ask_price: ask,
            ..Default::default()
        })
    }

    /// (kind, first_missing, last_missing, missing, span_ms) of every event.
    type Brief = (EventKind, u64, u64, u64, u64);

    fn run(t: DataType, rows: &[Record]) -> (QualityTracker, Vec<QualityEvent>) {
        let mut tr = QualityTracker::new(t, QualitySettings::default());
        let mut out = Vec::new();
        tr.observe(rows, 7, 1_000, &mut out);
        (tr, out)
    }

    fn check(t: DataType, rows: &[Record], expected: &[Brief]) {
        let (_, out) = run(t, rows);
        let got: Vec<Brief> = out
            .iter()
            .map(|e| {
                (
                    e.kind,
                    e.first_missing,
                    e.last_missing,
                    e.missing,
                    e.span_ms,
                )
            })
            .collect();
        assert_eq!(got, expected, "{out:#?}");
    }

    #[test]
    fn complete_sequence_reports_nothing() {
        let rows: Vec<Record> = (1..=500).map(|i| trade(i, 1000 + i as i64)).collect();
        check(DataType::Trade, &rows, &[]);
    }

    #[test]
    fn holes_become_gaps_with_ids_count_and_span() {
        use EventKind::*;
        let rows = [
            trade(10, 1000),
            trade(11, 1001),
            trade(15, 1050), // 12..=14 missing, 49 ms of exchange time
            trade(16, 1051),
            trade(18, 1060), // 17 missing
        ];
        check(
            DataType::Trade,
            &rows,
            &[(Gap, 12, 14, 3, 49), (Gap, 17, 17, 1, 9)],
        );
        let (tr, out) = run(DataType::Trade, &rows);
        let e = &out[0];
        assert_eq!(
            (
                e.detected_at_ms,
                e.event_time_ms,
                e.data_type,
                e.exchange.as_str()
            ),
            (7, 1050, DataType::Trade, "binance")
        );
        assert_eq!(e.detail, "trade ids 12..=14 missing");
        let k = &tr.snapshot(1_000).keys[0];
        assert_eq!(
            (k.counts.of(Gap), k.counts.missing, k.counts.rows),
            (2, 4, 5)
        );
    }

    #[test]
    fn repeats_are_duplicates_and_lower_ids_out_of_order() {
        use EventKind::*;
        let rows = [
            trade(1, 1000),
            trade(2, 1001),
            trade(2, 1001),
            trade(3, 1002),
            trade(1, 1003),
            trade(4, 1004),
        ];
        check(
            DataType::Trade,
            &rows,
            &[(Duplicate, 2, 2, 0, 0), (OutOfOrder, 1, 3, 0, 0)],
        );
    }

    #[test]
    fn only_configured_exchanges_are_sequential() {
        let mut r = trade(1, 1000);
        let mut s = trade(5, 1001);
        for x in [&mut r, &mut s] {
            if let Record::Trade(t) = x {
                t.common.exchange = "deribit".into();
            }
        }
        check(DataType::Trade, &[r, s], &[]);
        let set = QualitySettings {
            sequential_ids: vec!["okx/perpetual".into()],
            ..Default::default()
        };
        assert!(set.is_sequential("okx", "perpetual"));
        assert!(!set.is_sequential("okx", "spot"));
        assert!(!set.is_sequential("binance", "spot"));
    }

    #[test]
    fn timestamps_going_backwards() {
        check(
            DataType::Trade,
            &[trade(1, 1000), trade(2, 990), trade(3, 995), trade(4, 1001)],
            &[
                (EventKind::TimeBackwards, 0, 0, 0, 10),
                (EventKind::TimeBackwards, 0, 0, 0, 5),
            ],
        );
    }

    #[test]
    fn orderbook_regressions_repeats_crossed_and_empty_sides() {
        use EventKind::*;
        let p = 100_0000_0000;
        let rows = [
            book(100, 1000, p, p + 1, 5, 5),
            book(101, 1001, p, p + 1, 5, 5),
            book(101, 1002, p, p + 1, 5, 5), // repeat
            book(99, 1003, p, p + 1, 5, 5),  // regression
            book(0, 1004, p, p + 1, 5, 5),   // unknown id (OKX): skipped
            book(0, 1005, p, p + 1, 5, 5),   // still skipped
            book(102, 1006, p + 2, p, 5, 5), // crossed by 2e-8
            book(103, 1007, p, p, 5, 5),     // locked: crossed by 0
            book(104, 1008, 0, p, 0, 5),     // bids empty
            book(105, 1009, p, 0, 5, 0),     // asks empty
        ];
        check(
            DataType::Orderbook,
            &rows,
            &[
                (Repeat, 101, 101, 0, 0),
                (Regression, 99, 101, 0, 0),
                (CrossedBook, 0, 0, 0, 0),
                (CrossedBook, 0, 0, 0, 0),
                (EmptySide, 0, 0, 0, 0),
                (EmptySide, 0, 0, 0, 0),
            ],
        );
        let (_, out) = run(DataType::Orderbook, &rows);
        assert_eq!(out[2].value, 2);
        assert_eq!(out[4].detail, "bids empty");
        assert_eq!(out[5].detail, "asks empty");
    }

    #[test]
    fn price_jumps_against_the_recent_median_are_flagged_once_warm() {
        let p = 100_0000_0000;
        // A jump before 16 prices are known is not flagged: no reference yet.
        let mut rows = vec![trade_at(1, 1000, p), trade_at(2, 1001, p * 2)];
        check(DataType::Trade, &rows, &[]);
        rows = (1..=20).map(|i| trade_at(i, 1000 + i as i64, p)).collect();
        rows.push(trade_at(21, 1030, p + p / 20)); // +5 %: fine
        rows.push(trade_at(22, 1031, p + p / 5)); // +20 %: jump
        rows.push(trade_at(23, 1032, p - p / 5)); // −20 %: jump
        let (_, out) = run(DataType::Trade, &rows);
        let jumps: Vec<i64> = out
            .iter()
            .filter(|e| e.kind == EventKind::PriceJump)
            .map(|e| e.value)
            .collect();
        assert_eq!(jumps, vec![20_000_000, -20_000_000]);
    }

    #[test]
    fn silence_opens_stale_once_and_data_closes_it() {
        let mut tr = QualityTracker::new(DataType::Trade, QualitySettings::default());
        let mut out = Vec::new();
        tr.observe(&[trade(1, 5_000)], 5_000, 10_000, &mut out);
        tr.tick(70_000, &mut out); // 60 s exactly: not yet
        assert!(out.is_empty());
        tr.tick(70_001, &mut out);
        tr.tick(80_000, &mut out); // already open: nothing new
        assert_eq!(out.len(), 1);
        assert_eq!(
            (
                out[0].kind,
                out[0].event_time_ms,
                out[0].span_ms,
                out[0].detected_at_ms
            ),
            (EventKind::StaleOpen, 5_000, 60_001, 70_001)
        );
        tr.observe(&[trade(2, 95_000)], 95_000, 95_000, &mut out);
        assert_eq!(out.len(), 2);
        assert_eq!(
            (out[1].kind, out[1].event_time_ms, out[1].span_ms),
            (EventKind::StaleClose, 95_000, 90_000)
        );
        let k = &tr.snapshot(95_000).keys[0];
        assert_eq!(
            (
                k.counts.of(EventKind::StaleOpen),
                k.counts.stale_ms,
                k.stale_open
            ),
            (1, 90_000, false)
        );
        // Liquidations are events: never stale.
        let mut liq = QualityTracker::new(DataType::Liquidation, QualitySettings::default());
        let l = Record::Liquidation(LiquidationRow {
            common: common("binance", 1),
            liquidation_time_ms: 1,
            ..Default::default()
        });
        liq.observe(&[l], 1, 1, &mut out);
        liq.tick(i64::MAX / 2, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn restored_state_skips_the_replay_and_sees_the_boundary() {
        let restored = Restored {
            exchange: "binance".into(),
            market_type: "spot".into(),
            symbol: "BTC-USDT".into(),
            last_id: 10,
            last_id_time_ms: 900,
            last_ts_ms: 1000,
            stale_open: false,
        };
        // The in-doubt batch (ids 9, 10, already stored) is re-sent, then 11: nothing to say.
        let mut tr = QualityTracker::new(DataType::Trade, QualitySettings::default());
        tr.restore(std::slice::from_ref(&restored), 0);
        let mut out = Vec::new();
        tr.observe(
            &[trade(9, 999), trade(10, 1000), trade(11, 1001)],
            0,
            0,
            &mut out,
        );
        assert!(out.is_empty(), "{out:#?}");
        // A real hole across the restart is found.
        let mut tr = QualityTracker::new(DataType::Trade, QualitySettings::default());
        tr.restore(std::slice::from_ref(&restored), 0);
        tr.observe(&[trade(13, 1002)], 0, 0, &mut out);
        assert_eq!(
            out.iter()
                .map(|e| (e.kind, e.first_missing, e.last_missing))
                .collect::<Vec<_>>(),
            vec![(EventKind::Gap, 11, 12)]
        );
        // A stale episode open before the restart is closed, not reopened.
        let mut tr = QualityTracker::new(DataType::Trade, QualitySettings::default());
        tr.restore(
            &[Restored {
                stale_open: true,
                ..restored
            }],
            0,
        );
        let mut out = Vec::new();
        tr.tick(10_000_000, &mut out);
        assert!(out.is_empty());
        tr.observe(&[trade(11, 5000)], 0, 0, &mut out);
        assert_eq!(
            out.iter().map(|e| e.kind).collect::<Vec<_>>(),
            vec![EventKind::StaleClose]
        );
    }

    #[test]
    fn latency_histogram_quantiles() {
        let rows: Vec<Record> = (1..=100).map(|i| trade(i, 1000 + i as i64)).collect();
        let (tr, _) = run(DataType::Trade, &rows);
        let s = tr.snapshot(0);
        // Every trade is 100 ms late: bucket [64, 128).
        assert_eq!(s.latency_quantile(0.5), Some(128));
        assert_eq!(s.latency_quantile(0.99), Some(128));
        assert_eq!(s.negative_latency, 0);
    }

    #[test]
    fn markets_are_kept_apart() {
        let mut a = trade(1, 1000);
        if let Record::Trade(t) = &mut a {
            t.common.symbol = "ETH-USDT".into();
        }
        // Different symbols: 1 then 5 are not a gap of either.
        check(DataType::Trade, &[trade(5, 1000), a, trade(6, 1001)], &[]);
    }

    proptest! {
        /// Any increasing id sequence: the gaps' missing counts add up to the ids skipped,
        /// each gap's bounds are exactly the missing ids, and nothing else is reported.
        #[test]
        fn gaps_account_for_every_missing_id(steps in proptest::collection::vec(1u64..5, 1..200)) {
            let mut id = 1000;
            let mut rows = vec![trade(id, 0)];
            for s in &steps {
                id += s;
                rows.push(trade(id, 0));
            }
            let (_, out) = run(DataType::Trade, &rows);
            let skipped: u64 = steps.iter().map(|s| s - 1).sum();
            prop_assert!(out.iter().all(|e| e.kind == EventKind::Gap));
            prop_assert_eq!(out.iter().map(|e| e.missing).sum::<u64>(), skipped);
            prop_assert_eq!(out.len(), steps.iter().filter(|s| **s > 1).count());
            for e in &out {
                prop_assert_eq!(e.last_missing - e.first_missing + 1, e.missing);
            }
        }

        /// Splitting the rows into batches never changes the events.
        #[test]
        fn batch_boundaries_do_not_matter(ids in proptest::collection::vec(0u64..50, 1..100), cut in 0usize..100) {
            let rows: Vec<Record> = ids.iter().enumerate().map(|(i, id)| trade(*id, i as i64)).collect();
            let (_, whole) = run(DataType::Trade, &rows);
            let cut = cut.min(rows.len());
            let mut tr = QualityTracker::new(DataType::Trade, QualitySettings::default());
            let mut parts = Vec::new();
            tr.observe(&rows[..cut], 7, 1_000, &mut parts);
            tr.observe(&rows[cut..], 7, 1_000, &mut parts);
            prop_assert_eq!(whole, parts);
        }
    }

    fn trade_of(symbol: &str, id: u64, ts: i64) -> Record {
        let mut r = trade(id, ts);
        if let Record::Trade(t) = &mut r {
            t.common.symbol = symbol.to_string();
        }
        r
    }

    #[test]
    fn random_symbol_flood_keeps_quality_state_bounded() {
        // 50,000 made-up markets, each seen once: the tracker keeps at most MAX_MARKETS and
        // folds the rest, so every row is still counted. (Before eviction, the state grew with
        // every symbol and each new market scanned all known ones: quadratic time.)
        let mut tr = QualityTracker::new(DataType::Trade, QualitySettings::default());
        let mut out = Vec::new();
        let n = 5 * MAX_MARKETS as u64;
        for batch in (0..n).collect::<Vec<_>>().chunks(1000) {
            let rows: Vec<Record> = batch
                .iter()
                .map(|i| trade_of(&format!("FAKE{i}-USDT"), 1, *i as i64))
                .collect();
            // The arrival clock moves with the batches, so the oldest markets are evicted.
            tr.observe(&rows, 0, batch[0] as i64, &mut out);
            assert!(tr.markets() <= MAX_MARKETS, "{} markets kept", tr.markets());
        }
        let snap = tr.snapshot(n as i64);
        assert_eq!(snap.totals().rows, n);
        assert_eq!(snap.keys.len() as u64 + snap.evicted, n);
        assert!(snap.evicted >= n - MAX_MARKETS as u64);
        // The newest market is kept and still found: its next id continues its sequence.
        let last = format!("FAKE{}-USDT", n - 1);
        tr.observe(&[trade_of(&last, 3, n as i64)], 0, n as i64, &mut out);
        assert_eq!(out.len(), 1, "{out:?}");
        assert_eq!((out[0].kind, out[0].missing), (EventKind::Gap, 1));
    }

    #[test]
    fn idle_markets_are_evicted_by_the_tick_and_counts_folded() {
        let mut tr = QualityTracker::new(DataType::Trade, QualitySettings::default());
        let mut out = Vec::new();
        tr.observe(
            &[trade_of("OLD", 1, 0), trade_of("OLD", 3, 1)],
            0,
            0,
            &mut out,
        );
        let day = i64::try_from(IDLE_EVICT.as_millis()).unwrap();
        tr.observe(&[trade_of("NEW", 1, day)], 0, day, &mut out);
        out.clear();
        tr.tick(day + 1, &mut out);
        let snap = tr.snapshot(day + 1);
        assert_eq!(snap.keys.len(), 1);
        assert_eq!(snap.keys[0].symbol, "NEW");
        assert_eq!((snap.evicted, snap.totals().rows), (1, 3));
        assert_eq!(snap.totals().of(EventKind::Gap), 1);
    }

    /// Release-mode micro-measurement: `cargo test --release --lib tracker_ns_per_row -- --ignored --nocapture`.
    #[test]
    #[ignore]
    #[allow(clippy::print_stdout)]
    fn tracker_ns_per_row() {
        const N: usize = 1_000_000;
        let symbols = ["BTC-USDT", "ETH-USDT", "SOL-USDT", "XRP-USDT", "DOGE-USDT"];
        let exchanges = ["binance", "okx"];
        let mut ids = [0u64; 10];
        let rows: Vec<Record> = (0..N)
            .map(|i| {
                let m = i % 10;
                ids[m] += if i % 997 == 0 { 3 } else { 1 };
                Record::Trade(TradeRow {
                    common: Common {
                        timestamp_ms: 1_761_040_800_000 + i as i64,
                        exchange: exchanges[m % 2].into(),
                        market_type: "spot".into(),
                        symbol: symbols[m / 2].into(),
                        data_source: "marketprism".into(),
                    },
                    trade_id: ids[m].to_string(),
                    price: 100_0000_0000 + (i as i64 % 100) * 1_000_000,
                    quantity: 1,
                    side: "buy".into(),
                    is_maker: false,
                    trade_time_ms: 1_761_040_800_000 + i as i64 - 150,
                })
            })
            .collect();
        let q = crate::quality::Quality::default();
        let start = std::time::Instant::now();
        let mut events = 0;
        for batch in rows.chunks(5_000) {
            events += q.observe(DataType::Trade, batch, 0, 0).len();
        }
        let el = start.elapsed();
        println!(
            "quality tracker: {N} trade rows in {:?} = {:.1} ns/row ({events} events)",
            el,
            el.as_nanos() as f64 / N as f64
        );
    }
}
