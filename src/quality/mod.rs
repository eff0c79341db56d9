//! Data-quality detection: gaps, duplicates, regressions, crossed books, jumps, silences.
//!
//! Consumes every decoded batch (one call per batch from the decode stage) and the wall clock
//! (a timer task); emits [`QualityEvent`]s that the writer stores in `data_quality_events`
//! exactly once (token `<batch token>/q`, inserted before the batch's rows and before its ack),
//! and per-market counters for the ops surface ([`Quality::snapshot`]). It never drops,
//! patches or reorders a row: quality is labelled, not repaired.
//!
//! - [`tracker`]: the pure detectors (IO-free, unit-tested).
//! - the event row and its kinds are a model row ([`crate::model::QualityEvent`]), with the others.
//! - [`restore`]: start-up state from the hot tables, and the silence timer (the only IO).
//! - [`report`]: the SQL behind `marketprism-storage quality`, computed from the stored rows.

pub mod report;
pub mod restore;
pub mod tracker;

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};

pub use crate::model::{EventKind, QualityEvent};
pub use tracker::{
    KeyCounts, KeySnapshot, QualitySettings, QualityTracker, Restored, TrackerSnapshot,
    stale_threshold,
};

use crate::model::{DataType, Record};

pub use crate::schema::QUALITY_EVENTS_TABLE;

/// The dedup token of a batch's quality events: `<batch token>/q`.
pub fn events_token(batch_token: &str) -> String {
    format!("{batch_token}/q")
}

/// Errors of the quality module's IO (start-up restore).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QualityError {
    /// ClickHouse failed.
    #[error("quality restore: {0}")]
    Sink(#[from] crate::sink::SinkError),
    /// A result line could not be parsed.
    #[error("quality restore: unexpected result line {0:?}")]
    Parse(String),
}

/// The shared detectors of all eight types: one [`QualityTracker`] per type behind its own
/// mutex, locked once per batch. Lives in `pipeline::Stats` so that every stage and the ops
/// surface reach it without new wiring.
#[derive(Debug)]
pub struct Quality {
    enabled: AtomicBool,
    trackers: Vec<Mutex<QualityTracker>>,
    settings: Mutex<QualitySettings>,
}

impl Default for Quality {
    fn default() -> Self {
        Quality::new(true, QualitySettings::default())
    }
}

fn type_index(t: DataType) -> usize {
    DataType::ALL.iter().position(|x| *x == t).unwrap_or(0)
}

impl Quality {
    /// Detectors for all types with `settings`; `enabled = false` makes every call a no-op.
    pub fn new(enabled: bool, settings: QualitySettings) -> Self {
        Quality {
            enabled: AtomicBool::new(enabled),
            trackers: DataType::ALL
                .into_iter()
                .map(|t| Mutex::new(QualityTracker::new(t, settings.clone())))
                .collect(),
            settings: Mutex::new(settings),
        }
    }

    /// Replaces the settings and resets every tracker (call before the pipeline starts).
    pub fn configure(&self, enabled: bool, settings: QualitySettings) {
        self.enabled.store(enabled, Relaxed);
        for (t, m) in DataType::ALL.into_iter().zip(&self.trackers) {
            if let Ok(mut tr) = m.lock() {
                *tr = QualityTracker::new(t, settings.clone());
            }
        }
        if let Ok(mut s) = self.settings.lock() {
            *s = settings;
        }
    }

    /// Whether detection runs.
    pub fn is_enabled(&self) -> bool {
        self.enabled.load(Relaxed)
    }

    /// The current settings.
    pub fn settings(&self) -> QualitySettings {
        self.settings.lock().map(|s| s.clone()).unwrap_or_default()
    }

    /// Runs the detectors over one decoded batch (one lock); returns its events (an empty,
    /// unallocated `Vec` when there are none or detection is off).
    pub fn observe(
        &self,
        t: DataType,
        rows: &[Record],
        detected_at_ms: i64,
        now_ms: i64,
    ) -> Vec<QualityEvent> {
        let mut out = Vec::new();
        if !self.is_enabled() || rows.is_empty() {
            return out;
        }
        if let Some(Ok(mut tr)) = self.trackers.get(type_index(t)).map(|m| m.lock()) {
            tr.observe(rows, detected_at_ms, now_ms, &mut out);
        }
        out
    }

    /// The silence check of every type: `stale_open` events for markets silent too long.
    pub fn tick(&self, now_ms: i64) -> Vec<QualityEvent> {
        let mut out = Vec::new();
        if !self.is_enabled() {
            return out;
        }
        for m in &self.trackers {
            if let Ok(mut tr) = m.lock() {
                tr.tick(now_ms, &mut out);
            }
        }
        out
    }

    /// Seeds one type's state from stored rows.
    pub fn restore(&self, t: DataType, restored: &[Restored], now_ms: i64) {
        if let Some(Ok(mut tr)) = self.trackers.get(type_index(t)).map(|m| m.lock()) {
            tr.restore(restored, now_ms);
        }
    }

    /// A copy of every type's per-market counters (for `/metrics`: gaps, missing ids,
    /// duplicates, crossed books, stale state and seconds, latency histogram).
    pub fn snapshot(&self, now_ms: i64) -> QualitySnapshot {
        QualitySnapshot {
            enabled: self.is_enabled(),
            types: self
                .trackers
                .iter()
                .filter_map(|m| m.lock().ok().map(|tr| tr.snapshot(now_ms)))
                .collect(),
        }
    }
}

/// Every type's counters at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualitySnapshot {
    /// Whether detection is on.
    pub enabled: bool,
    /// Per type, in [`DataType::ALL`] order.
    pub types: Vec<TrackerSnapshot>,
}

impl QualitySnapshot {
    /// Every market of every type: `(data_type, market)`.
    pub fn markets(&self) -> impl Iterator<Item = (DataType, &KeySnapshot)> {
        self.types
            .iter()
            .flat_map(|t| t.keys.iter().map(move |k| (t.data_type, k)))
    }
}
