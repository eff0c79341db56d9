//! Readiness: one pure function from the counters (and two latches) to a verdict with the
//! reasons in words, shared by `/ready`, `/health`, `/api/v1/status` and the `ready` metric.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::time::Duration;

use crate::model::DataType;
use crate::pipeline::stats::{LaneRole, Stats};

/// Default bound on how long a table may keep failing inserts before the service is not ready.
pub const DEFAULT_FAILING_BOUND: Duration = Duration::from_secs(60);

/// A one-way flag shared between the part of the service that opens it and the ops surface that
/// reads it (linkerd2-proxy's readiness latch). Clones share the flag.
#[derive(Debug, Clone, Default)]
pub struct Latch(Arc<AtomicBool>);

impl Latch {
    /// A closed latch.
    pub fn new() -> Self {
        Latch::default()
    }

    /// A latch that is already open.
    pub fn opened() -> Self {
        let l = Latch::new();
        l.open();
        l
    }

    /// Opens it (idempotent; it never closes again).
    pub fn open(&self) {
        self.0.store(true, Relaxed);
    }

    /// Whether it has been opened.
    pub fn is_open(&self) -> bool {
        self.0.load(Relaxed)
    }
}

/// How long a permission NATS denied keeps the service not ready: a denied operation is
/// retried (a pull every fetch wait), so a denial that stays is seen again well within it,
/// and one fixed on the server clears by itself.
pub const DENIED_WINDOW_MS: i64 = 30_000;

/// What readiness is judged on besides the counters.
#[derive(Debug, Clone)]
pub struct ReadyInputs<'a> {
    /// The counters.
    pub stats: &'a Stats,
    /// Types whose consumer must be bound.
    pub types: &'a [DataType],
    /// Longest tolerated run of failing inserts per table.
    pub failing_bound: Duration,
    /// Startup finished (schema ensured, pipeline started).
    pub started: bool,
    /// A stop signal was received (draining).
    pub stopping: bool,
    /// Now, unix ms.
    pub now_ms: i64,
}

/// The verdict: ready when `reasons` is empty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Why the service is not ready, one sentence each.
    pub reasons: Vec<String>,
}

impl Readiness {
    /// Whether nothing stands in the way.
    pub fn is_ready(&self) -> bool {
        self.reasons.is_empty()
    }

    /// `"ready"` or the reasons joined with `"; "`.
    pub fn summary(&self) -> String {
        if self.is_ready() {
            "ready".to_string()
        } else {
            self.reasons.join("; ")
        }
    }
}

/// Judges readiness: NATS connected, ClickHouse answering, startup done, not stopping, every
/// type's consumer bound, and no table failing inserts for longer than the bound.
pub fn check(i: &ReadyInputs<'_>) -> Readiness {
    let mut reasons = Vec::new();
    if i.stopping {
        reasons.push("service: shutting down".to_string());
    }
    if !i.started {
        reasons.push("service: starting".to_string());
    }
    if !i.stats.nats_connected() {
        reasons.push("nats: not connected".to_string());
    }
    if let Some((what, at)) = i.stats.nats_denied()
        && i.now_ms - at < DENIED_WINDOW_MS
    {
        // A denied pull looks like an empty one to the reader: only the server's word says
        // that a type is not being consumed.
        reasons.push(format!(
            "nats: permission denied: {what} (docs/security.md, \"NATS\": minimal permissions)"
        ));
    }
    if !i.stats.clickhouse_up() {
        reasons.push("clickhouse: not answering".to_string());
    }
    for t in i.types {
        let s = i.stats.of(*t);
        let lanes = i.stats.lanes_of(*t);
        if let Some(why) = s.stuck_reason() {
            reasons.push(format!("{t}: stuck (restart needed): {why}"));
        } else if lanes.is_empty() {
            // Before the coordinator's first look (or a fixture without lanes).
            if let Some(why) = s.waiting_reason() {
                reasons.push(format!("{t}: {why}"));
            } else if !s.is_bound() {
                reasons.push(format!("{t}: consumer not bound"));
            }
        } else {
            // A lane held elsewhere, or assigned here and standing by behind its holder, is
            // doing its job; one assigned here that waits to recover, or whose lease is not
            // taken yet, is not.
            for l in &lanes {
                let label = l.id.label();
                match l.role() {
                    LaneRole::Standby(h) if h.is_empty() => {
                        reasons.push(format!("{label}: acquiring the consumer lease"));
                    }
                    LaneRole::Holder | LaneRole::Standby(_) => {
                        if let Some(why) = l.waiting_reason() {
                            reasons.push(format!("{label}: {why}"));
                        } else if l.role() == LaneRole::Holder && !l.is_bound() {
                            reasons.push(format!("{label}: consumer not bound"));
                        }
                    }
                    LaneRole::Elsewhere => {}
                }
            }
        }
        let since = s.counters().failing_since_ms;
        if since > 0 {
            let failing_ms = u64::try_from(i.now_ms.saturating_sub(since)).unwrap_or(0);
            if Duration::from_millis(failing_ms) > i.failing_bound {
                let err = s
                    .last_error()
                    .unwrap_or_else(|| "no error text".to_string());
                reasons.push(format!(
                    "{t}: inserts failing for {} s: {err}",
                    failing_ms / 1000
                ));
            }
        }
    }
    Readiness { reasons }
}

/// Liveness: why the process cannot make progress by itself (a type whose stage task died, or
/// whose durable cannot be used), one sentence per type. Empty while every type either runs or
/// recovers on its own (a NATS outage, a lost lease, a ClickHouse outage are not in here:
/// restarting would not help). `/health` answers 503 while this is not empty, so an
/// orchestrator restarts the process.
pub fn stuck(stats: &Stats, types: &[DataType]) -> Vec<String> {
    types
        .iter()
        .filter_map(|t| {
            stats
                .of(*t)
                .stuck_reason()
                .map(|why| format!("{t}: stuck (restart needed): {why}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn healthy(now: i64) -> Stats {
        let s = Stats::new(now);
        s.set_nats_connected(true);
        s.set_clickhouse_up(true);
        for t in DataType::ALL {
            s.of(t).set_bound(true);
        }
        s
    }

    fn check_reasons(stats: &Stats, now: i64, expected: &[&str]) {
        let r = check(&ReadyInputs {
            stats,
            types: &[DataType::Trade, DataType::Orderbook],
            failing_bound: DEFAULT_FAILING_BOUND,
            started: true,
            stopping: false,
            now_ms: now,
        });
        assert_eq!(r.reasons, expected);
    }

    #[test]
    fn healthy_is_ready() {
        check_reasons(&healthy(0), 1000, &[]);
    }

    #[test]
    fn each_reason_is_named() {
        let now = 1_000_000;
        let s = healthy(0);
        s.set_nats_connected(false);
        s.set_clickhouse_up(false);
        s.of(DataType::Orderbook).set_bound(false);
        s.of(DataType::Trade)
            .update(|c| c.failing_since_ms = now - 75_000);
        s.of(DataType::Trade)
            .error("Code: 241. MEMORY_LIMIT_EXCEEDED");
        check_reasons(
            &s,
            now,
            &[
                "nats: not connected",
                "clickhouse: not answering",
                "trade: inserts failing for 75 s: Code: 241. MEMORY_LIMIT_EXCEEDED",
                "orderbook: consumer not bound",
            ],
        );
    }

    #[test]
    fn a_permission_nats_denied_keeps_it_not_ready_until_it_stops_being_denied() {
        let now = 1_000_000;
        let s = healthy(0);
        s.record_nats_denied(
            r#"Publish to "$JS.API.CONSUMER.MSG.NEXT.MARKET_DATA.x""#.into(),
            now - 5_000,
        );
        check_reasons(
            &s,
            now,
            &[
                r#"nats: permission denied: Publish to "$JS.API.CONSUMER.MSG.NEXT.MARKET_DATA.x" (docs/security.md, "NATS": minimal permissions)"#,
            ],
        );
        assert_eq!(s.nats_auth_failures(), 1);
        // Fixed on the server: no denial for longer than the window.
        check_reasons(&s, now - 5_000 + DENIED_WINDOW_MS, &[]);
    }

    #[test]
    fn failing_within_the_bound_is_still_ready() {
        let now = 1_000_000;
        let s = healthy(0);
        s.of(DataType::Trade)
            .update(|c| c.failing_since_ms = now - 59_000);
        check_reasons(&s, now, &[]);
    }

    #[test]
    fn waiting_and_stuck_types_name_the_reason() {
        let s = healthy(0);
        s.of(DataType::Trade).set_bound(false);
        s.of(DataType::Trade).set_waiting(Some(
            "consumer lease lost (refresh lease x: timed out); re-acquiring".into(),
        ));
        s.of(DataType::Orderbook)
            .set_stuck("writer task died".into());
        check_reasons(
            &s,
            1000,
            &[
                "trade: consumer lease lost (refresh lease x: timed out); re-acquiring",
                "orderbook: stuck (restart needed): writer task died",
            ],
        );
        assert_eq!(
            stuck(&s, &[DataType::Trade, DataType::Orderbook]),
            ["orderbook: stuck (restart needed): writer task died"]
        );
        assert!(stuck(&s, &[DataType::Trade]).is_empty());
    }

    #[test]
    fn unconfigured_types_do_not_count() {
        let s = healthy(0);
        s.of(DataType::VolatilityIndex).set_bound(false);
        check_reasons(&s, 1000, &[]);
    }

    #[test]
    fn latch_opens_once_and_is_shared() {
        let l = Latch::new();
        let c = l.clone();
        assert!(!c.is_open());
        l.open();
        assert!(c.is_open());
        assert!(Latch::opened().is_open());
    }
}
