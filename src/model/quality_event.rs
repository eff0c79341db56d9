//! The quality events the detectors emit: one row of `data_quality_events` each.
//!
//! Events are data, like rows: the decode stage produces them with every batch, the writer
//! inserts them under a token derived from the batch's, and the timer task inserts the
//! `stale_open` events it finds under a token derived from their content.

use crate::model::DataType;

/// What a quality event reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum EventKind {
    /// Sequential ids skipped: `first_missing..=last_missing` never arrived.
    Gap,
    /// The same sequential id arrived again (right after itself).
    Duplicate,
    /// A sequential id lower than the highest seen arrived.
    OutOfOrder,
    /// An order book's `last_update_id` went down.
    Regression,
    /// An order book's `last_update_id` repeated.
    Repeat,
    /// A row's `timestamp` is earlier than the previous row's of the same market.
    TimeBackwards,
    /// Best bid ≥ best ask while both sides have levels.
    CrossedBook,
    /// One side of an order book has no levels.
    EmptySide,
    /// A price moved beyond the configured fraction of the recent median.
    PriceJump,
    /// No row of this market for longer than the type's threshold (opened by the timer).
    StaleOpen,
    /// Rows resumed after a `stale_open`.
    StaleClose,
}

impl EventKind {
    /// Every kind, in column order of the reports.
    pub const ALL: [EventKind; 11] = [
        EventKind::Gap,
        EventKind::Duplicate,
        EventKind::OutOfOrder,
        EventKind::Regression,
        EventKind::Repeat,
        EventKind::TimeBackwards,
        EventKind::CrossedBook,
        EventKind::EmptySide,
        EventKind::PriceJump,
        EventKind::StaleOpen,
        EventKind::StaleClose,
    ];

    /// The `kind` column value.
    pub const fn as_str(self) -> &'static str {
        match self {
            EventKind::Gap => "gap",
            EventKind::Duplicate => "duplicate",
            EventKind::OutOfOrder => "out_of_order",
            EventKind::Regression => "regression",
            EventKind::Repeat => "repeat",
            EventKind::TimeBackwards => "time_backwards",
            EventKind::CrossedBook => "crossed_book",
            EventKind::EmptySide => "empty_side",
            EventKind::PriceJump => "price_jump",
            EventKind::StaleOpen => "stale_open",
            EventKind::StaleClose => "stale_close",
        }
    }

    /// Position in [`EventKind::ALL`] (for counter arrays).
    pub const fn index(self) -> usize {
        self as usize
    }

    /// Parses a `kind` column value.
    pub fn parse(s: &str) -> Option<EventKind> {
        EventKind::ALL.into_iter().find(|k| k.as_str() == s)
    }
}

impl std::fmt::Display for EventKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One row of `data_quality_events`. Field order = column order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QualityEvent {
    /// `detected_at`, UTC ms: for batch events the batch's first NATS receive time (so a
    /// replayed batch gives the same row), for `stale_open` the timer's clock.
    pub detected_at_ms: i64,
    /// `event_time`, UTC ms: the `timestamp` of the row that showed the problem (for
    /// `stale_open`: of the last row before the silence).
    pub event_time_ms: i64,
    /// `data_type`.
    pub data_type: DataType,
    /// `exchange`.
    pub exchange: String,
    /// `market_type`.
    pub market_type: String,
    /// `symbol`.
    pub symbol: String,
    /// `kind`.
    pub kind: EventKind,
    /// `first_missing`: gap: first id missing; out_of_order/regression/duplicate/repeat: the
    /// offending id; else 0.
    pub first_missing: u64,
    /// `last_missing`: gap: last id missing; out_of_order/regression: the highest id seen
    /// before; else 0.
    pub last_missing: u64,
    /// `missing`: gap: ids missing; else 0.
    pub missing: u64,
    /// `span_ms`: gap: exchange time between the rows around the hole; time_backwards: how far
    /// back; stale: the silence so far (open) or in total (close); else 0.
    pub span_ms: u64,
    /// `value` × 10^8: crossed_book: bid − ask (price); price_jump: (price − median) / median;
    /// else 0.
    pub value: i64,
    /// `detail`: a short human-readable explanation.
    pub detail: String,
}
